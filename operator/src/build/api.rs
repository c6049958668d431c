//! The ordering API: Deployment (rolling, never below the wanted replicas)
//! and its ClusterIP Service.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction, Lifecycle,
    LifecycleHandler, PodSpec, PodTemplateSpec, Probe, Service, ServicePort, ServiceSpec,
    SleepAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::postgres::{database_url_env, env, secret_env};
use super::{
    API_PORT, API_UID, Model, container_security, credentials_annotation, labels, meta, names,
    pod_security, selector_labels,
};

const COMPONENT: &str = "api";

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// The container's environment: ours, with each of the user's variables
/// replacing ours of the same name in place, or added at the end. Names stay
/// unique (the API server refuses duplicates in a server-side apply).
pub fn merge_env(ours: Vec<EnvVar>, user: &[EnvVar]) -> Vec<EnvVar> {
    let mut out = ours;
    for var in user {
        match out.iter_mut().find(|e| e.name == var.name) {
            Some(existing) => *existing = var.clone(),
            None => out.push(var.clone()),
        }
    }
    out
}

/// The API Deployment running `image` (the newest image whose migrations succeeded).
/// How long a stopping API or gateway pod keeps serving before it shuts
/// down: longer than the endpoints take to drop it.
pub const PRE_STOP_SECONDS: i64 = 5;

/// The credentials hash and, once a restore switched databases, the
/// database in use: a switch rolls the API onto it (a FoodApp that never
/// switched keeps the pod template it had).
fn pod_annotations(model: &Model) -> std::collections::BTreeMap<String, String> {
    let mut a = credentials_annotation(model);
    let in_use = match &model.external_database {
        Some(database) => Some(database.clone()),
        None => (model.db_cluster != names::db(&model.name)).then(|| model.db_cluster.clone()),
    };
    if let Some(db) = in_use {
        a.insert(super::DATABASE_IN_USE_ANNOTATION.to_owned(), db);
    }
    a
}

pub fn deployment(model: &Model, image: &str) -> Deployment {
    let api = &model.spec.api;
    let ours = vec![
        database_url_env(model),
        secret_env("JWT_SECRET", &names::api_secret(&model.name), "JWT_SECRET"),
        secret_env("ADMIN_EMAIL", &model.admin_secret, "email"),
        secret_env("ADMIN_PASSWORD", &model.admin_secret, "password"),
        env("LISTEN_ADDR", &format!("0.0.0.0:{API_PORT}")),
        env("ORDER_AUTO_REJECT_AFTER", &api.auto_reject_after),
        env("RUST_LOG", "info"),
    ];
    let env_vars = merge_env(ours, &api.env);
    // A restore stops the API whatever scales it (an autoscaler leaves a
    // Deployment at zero alone).
    let replicas = if model.restoring {
        Some(0)
    } else {
        super::scaling::replicas(api.replicas, api.autoscaling.as_ref())
    };
    Deployment {
        metadata: meta(model, names::api(&model.name), COMPONENT),
        spec: Some(DeploymentSpec {
            replicas,
            selector: LabelSelector {
                match_labels: Some(selector_labels(model, COMPONENT)),
                ..Default::default()
            },
            strategy: Some(super::surge_one()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(model, COMPONENT)),
                    annotations: Some(pod_annotations(model)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    // It never calls the Kubernetes API: no token to steal.
                    automount_service_account_token: Some(false),
                    containers: vec![Container {
                        name: "api".to_owned(),
                        image: Some(image.to_owned()),
                        args: Some(vec!["serve".to_owned()]),
                        env: Some(env_vars),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".to_owned()),
                            container_port: API_PORT,
                            ..Default::default()
                        }]),
                        startup_probe: Some(http_probe("/healthz", 2, 30)),
                        readiness_probe: Some(http_probe("/readyz", 5, 2)),
                        liveness_probe: Some(http_probe("/healthz", 10, 3)),
                        resources: api.resources.clone(),
                        security_context: Some(container_security(API_UID)),
                        // A pod that is told to stop keeps serving until the
                        // endpoints no longer name it (kube-proxy and the
                        // gateway's connections catch up): a rollout, such as
                        // the one after a restore's switch, fails no request.
                        lifecycle: Some(Lifecycle {
                            pre_stop: Some(LifecycleHandler {
                                sleep: Some(SleepAction {
                                    seconds: PRE_STOP_SECONDS,
                                }),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        volume_mounts: Some(vec![VolumeMount {
                            name: "tmp".to_owned(),
                            mount_path: "/tmp".to_owned(),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }],
                    security_context: Some(pod_security(API_UID)),
                    // The pause, then the API's own 25 s to finish requests.
                    termination_grace_period_seconds: Some(PRE_STOP_SECONDS + 30),
                    enable_service_links: Some(false),
                    topology_spread_constraints: Some(super::scaling::spread(model, COMPONENT)),
                    volumes: Some(vec![Volume {
                        name: "tmp".to_owned(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn service(model: &Model) -> Service {
    Service {
        metadata: meta(model, names::api(&model.name), COMPONENT),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(model, COMPONENT)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: API_PORT,
                target_port: Some(IntOrString::String("http".to_owned())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::testing::model;

    #[test]
    fn the_deployment_runs_serve_with_probes_and_a_read_only_root() {
        let mut m = model();
        m.spec.api.replicas = 3;
        m.spec.api.env = vec![env("RUST_LOG", "debug")];
        let d = deployment(&m, "img:1");
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(
            spec.strategy
                .unwrap()
                .rolling_update
                .unwrap()
                .max_unavailable,
            Some(IntOrString::Int(0))
        );
        let c = &spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(c.image.as_deref(), Some("img:1"));
        assert_eq!(c.args.as_deref(), Some(&["serve".to_owned()][..]));
        let pause = c.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
        assert_eq!(pause.sleep.as_ref().unwrap().seconds, PRE_STOP_SECONDS);
        assert!(
            spec.template
                .spec
                .as_ref()
                .unwrap()
                .termination_grace_period_seconds
                > Some(PRE_STOP_SECONDS + 25),
            "the pause and the API's own grace both fit"
        );
        assert_eq!(
            c.readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/readyz")
        );
        assert_eq!(
            c.liveness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/healthz")
        );
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(
            (sc.read_only_root_filesystem, sc.run_as_non_root),
            (Some(true), Some(true))
        );
        let env = c.env.as_ref().unwrap();
        let rust_log: Vec<_> = env.iter().filter(|e| e.name == "RUST_LOG").collect();
        assert_eq!(rust_log.len(), 1, "one entry per name: {env:?}");
        assert_eq!(
            rust_log[0].value.as_deref(),
            Some("debug"),
            "the user's value wins"
        );
        assert!(
            env.iter()
                .any(|e| e.name == "ORDER_AUTO_REJECT_AFTER" && e.value.as_deref() == Some("5m"))
        );
    }

    #[test]
    fn user_variables_replace_ours_by_name_and_new_ones_are_added() {
        let ours = vec![env("A", "1"), env("B", "2")];
        let merged = merge_env(ours, &[env("B", "user"), env("C", "3"), env("C", "4")]);
        let pairs: Vec<(&str, &str)> = merged
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_deref().unwrap()))
            .collect();
        assert_eq!(pairs, [("A", "1"), ("B", "user"), ("C", "4")]);
    }

    #[test]
    fn the_api_gets_the_administrator_and_restarts_on_a_new_password() {
        let m = model();
        let d = deployment(&m, "img:1");
        let t = d.spec.unwrap().template;
        let c = &t.spec.as_ref().unwrap().containers[0];
        let admin = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "ADMIN_PASSWORD")
            .unwrap();
        let from = admin
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (from.name.as_str(), from.key.as_str()),
            ("shop-admin", "password")
        );
        let mut changed = model();
        changed.db_password = "another".into();
        let changed_t = deployment(&changed, "img:1").spec.unwrap().template;
        assert_ne!(
            t.metadata.unwrap().annotations,
            changed_t.metadata.unwrap().annotations
        );
    }

    #[test]
    fn a_restore_scales_the_api_to_zero() {
        let mut m = model();
        m.restoring = true;
        assert_eq!(deployment(&m, "img:1").spec.unwrap().replicas, Some(0));
    }
}
