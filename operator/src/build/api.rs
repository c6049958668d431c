//! The ordering API: Deployment (rolling, never below the wanted replicas)
//! and its ClusterIP Service.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction, PodSpec, PodTemplateSpec, Probe,
    Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::postgres::{database_url_env, env, secret_env};
use super::{
    API_PORT, API_UID, Model, container_security, labels, meta, names, pod_security,
    selector_labels,
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

/// The API Deployment running `image` (the newest image whose migrations succeeded).
pub fn deployment(model: &Model, image: &str) -> Deployment {
    let api = &model.spec.api;
    let mut env_vars = vec![
        database_url_env(model),
        secret_env("JWT_SECRET", &names::api_secret(&model.name), "JWT_SECRET"),
        env("LISTEN_ADDR", &format!("0.0.0.0:{API_PORT}")),
        env("ORDER_AUTO_REJECT_AFTER", &api.auto_reject_after),
        env("RUST_LOG", "info"),
    ];
    // User variables come last so they can override ours.
    env_vars.extend(api.env.iter().cloned());
    let replicas = if model.restoring { 0 } else { api.replicas };
    Deployment {
        metadata: meta(model, names::api(&model.name), COMPONENT),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(model, COMPONENT)),
                ..Default::default()
            },
            strategy: Some(super::surge_one()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(model, COMPONENT)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
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
                        volume_mounts: Some(vec![VolumeMount {
                            name: "tmp".to_owned(),
                            mount_path: "/tmp".to_owned(),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }],
                    security_context: Some(pod_security(API_UID)),
                    termination_grace_period_seconds: Some(30),
                    enable_service_links: Some(false),
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
        assert_eq!(
            env.last().unwrap().value.as_deref(),
            Some("debug"),
            "user env comes last and wins"
        );
        assert!(
            env.iter()
                .any(|e| e.name == "ORDER_AUTO_REJECT_AFTER" && e.value.as_deref() == Some("5m"))
        );
    }

    #[test]
    fn a_restore_scales_the_api_to_zero() {
        let mut m = model();
        m.restoring = true;
        assert_eq!(deployment(&m, "img:1").spec.unwrap().replicas, Some(0));
    }
}
