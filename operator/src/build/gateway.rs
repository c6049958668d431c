//! The nginx gateway: ConfigMap with the generated nginx.conf, a Deployment
//! that rolls when the config changes, and a Service of the chosen type.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, ExecAction,
    HTTPGetAction, Lifecycle, LifecycleHandler, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SecretVolumeSource, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::api::PRE_STOP_SECONDS;
use super::nginx::{self, GatewayConfig};
use super::{
    API_PORT, GATEWAY_PORT, GATEWAY_TLS_PORT, Model, container_security, labels, meta, names,
    pod_security, selector_labels, short_hash,
};
use crate::crd::foreign::{CertIssuerRef, Certificate, CertificateSpec};
use crate::crd::{Hsts, ServiceType, TrafficPolicy};

const COMPONENT: &str = "gateway";
/// The nginx user of the official image.
const NGINX_UID: i64 = 101;
const CONFIG_DIR: &str = "/etc/nginx/foodapp";
const TLS_DIR: &str = "/etc/nginx/tls";
/// Plain HTTP for the kubelet's probes, whatever the public ports speak.
const HEALTH_PORT: i32 = 8081;
/// The DigitalOcean load balancer sends the PROXY protocol when this is "true".
pub const DO_PROXY_PROTOCOL_ANNOTATION: &str =
    "service.beta.kubernetes.io/do-loadbalancer-enable-proxy-protocol";
pub const CONFIG_HASH_ANNOTATION: &str = "foodapp.io/config-hash";
/// Pod-template annotation with a hash of the gateway's certificate.
pub const TLS_HASH_ANNOTATION: &str = "foodapp.io/tls-hash";

/// One nginx worker per CPU the pod may use: its CPU limit, else its
/// request, rounded up, at most 16; two when neither is set. (`auto` would
/// start one per CPU of the node, however small the pod.)
pub fn workers(resources: Option<&ResourceRequirements>) -> u32 {
    let cpu = |m: Option<&std::collections::BTreeMap<String, Quantity>>| {
        m.and_then(|m| m.get("cpu"))
            .and_then(|q| crate::quantity::millicores(&q.0))
    };
    let millis =
        resources.and_then(|r| cpu(r.limits.as_ref()).or_else(|| cpu(r.requests.as_ref())));
    match millis {
        Some(m) => u32::try_from(m.div_ceil(1000)).unwrap_or(16).clamp(1, 16),
        None => 2,
    }
}

pub fn config(model: &Model) -> GatewayConfig {
    let g = &model.spec.gateway;
    let api_service = format!(
        "{}.{}.svc:{API_PORT}",
        names::api(&model.name),
        model.namespace
    );
    GatewayConfig {
        listen: GATEWAY_PORT.to_string(),
        workers: workers(g.resources.as_ref()),
        // Relative to the cluster's DNS domain (the pod's resolv.conf search
        // list completes it), which is not always cluster.local.
        // The API's Service twice: nginx sends a request that may be
        // repeated to its "next" server when the first attempt broke, which
        // is then a new connection to the Service (another pod, or the
        // same one if it still serves).
        upstreams: vec![api_service.clone(), api_service],
        requests_per_second: g.rate_limit.requests_per_second,
        burst: g.rate_limit.burst,
        max_body_kb: 64,
        temp_dir: "/tmp".to_owned(),
        access_log: "/dev/stdout".to_owned(),
        error_log: "/dev/stderr".to_owned(),
        health_listen: Some(HEALTH_PORT.to_string()),
        tls: g.tls.as_ref().map(|t| nginx::Tls {
            listen: GATEWAY_TLS_PORT.to_string(),
            certificate: format!("{TLS_DIR}/tls.crt"),
            key: format!("{TLS_DIR}/tls.key"),
            redirect_http: t.redirect_http,
            hsts: hsts(&t.hsts),
        }),
        proxy_protocol: g.proxy_protocol,
        trusted_proxies: g.trusted_proxies.clone(),
    }
}

fn hsts(h: &Hsts) -> Option<String> {
    (h.max_age_seconds > 0).then(|| {
        let mut v = format!("max-age={}", h.max_age_seconds);
        if h.include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if h.preload {
            v.push_str("; preload");
        }
        v
    })
}

/// The Secret holding the gateway's certificate: the user's, or the one
/// cert-manager fills for the Certificate below.
pub fn tls_secret(model: &Model) -> Option<String> {
    let tls = model.spec.gateway.tls.as_ref()?;
    Some(
        tls.secret_name
            .clone()
            .unwrap_or_else(|| names::gateway_tls(&model.name)),
    )
}

/// A cert-manager Certificate, when the spec names an issuer.
pub fn certificate(model: &Model) -> Option<Certificate> {
    let tls = model.spec.gateway.tls.as_ref()?;
    let issuer = tls.issuer_ref.as_ref()?;
    Some(Certificate {
        metadata: meta(model, names::gateway_tls(&model.name), COMPONENT),
        spec: CertificateSpec {
            secret_name: names::gateway_tls(&model.name),
            dns_names: tls.dns_names.clone(),
            issuer_ref: CertIssuerRef {
                name: issuer.name.clone(),
                kind: issuer.kind.clone(),
                group: issuer.group.clone(),
            },
        },
    })
}

pub fn config_map(model: &Model) -> ConfigMap {
    ConfigMap {
        metadata: meta(model, names::gateway(&model.name), COMPONENT),
        data: Some(BTreeMap::from([(
            "nginx.conf".to_owned(),
            nginx::render(&config(model)),
        )])),
        ..Default::default()
    }
}

pub fn deployment(model: &Model) -> Deployment {
    let g = &model.spec.gateway;
    let conf = nginx::render(&config(model));
    let probe = |period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz".to_owned()),
            port: IntOrString::String("health".to_owned()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Default::default()
    };
    let port = |name: &str, number: i32| ContainerPort {
        name: Some(name.to_owned()),
        container_port: number,
        ..Default::default()
    };
    let mut ports = vec![port("http", GATEWAY_PORT), port("health", HEALTH_PORT)];
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..Default::default()
    };
    let mut mounts = vec![
        mount("config", CONFIG_DIR, true),
        mount("tmp", "/tmp", false),
    ];
    let mut volumes = vec![
        Volume {
            name: "config".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::gateway(&model.name),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "tmp".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ];
    if let Some(secret) = tls_secret(model) {
        ports.push(port("https", GATEWAY_TLS_PORT));
        mounts.push(mount("tls", TLS_DIR, true));
        volumes.push(Volume {
            name: "tls".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    Deployment {
        metadata: meta(model, names::gateway(&model.name), COMPONENT),
        spec: Some(DeploymentSpec {
            replicas: super::scaling::replicas(g.replicas, g.autoscaling.as_ref()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(model, COMPONENT)),
                ..Default::default()
            },
            strategy: Some(super::surge_one()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(model, COMPONENT)),
                    // A config change, or a renewed certificate, changes the
                    // pod template: pods roll.
                    annotations: Some(
                        [(CONFIG_HASH_ANNOTATION.to_owned(), short_hash(&conf))]
                            .into_iter()
                            .chain(
                                model
                                    .tls_fingerprint
                                    .clone()
                                    .map(|h| (TLS_HASH_ANNOTATION.to_owned(), h)),
                            )
                            .collect(),
                    ),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    // It never calls the Kubernetes API: no token to steal.
                    automount_service_account_token: Some(false),
                    containers: vec![Container {
                        name: "nginx".to_owned(),
                        image: Some(g.image.clone()),
                        // Bypass the image's entrypoint scripts: they rewrite
                        // files under /etc/nginx, and the root is read-only.
                        command: Some(vec![
                            "nginx".to_owned(),
                            "-c".to_owned(),
                            format!("{CONFIG_DIR}/nginx.conf"),
                        ]),
                        ports: Some(ports),
                        readiness_probe: Some(probe(5)),
                        liveness_probe: Some(probe(10)),
                        // Told to stop, a gateway keeps serving until the
                        // endpoints no longer name it, then quits gracefully
                        // (nginx takes SIGTERM as "stop now", SIGQUIT as
                        // "finish the requests first") and waits for it.
                        lifecycle: Some(Lifecycle {
                            pre_stop: Some(LifecycleHandler {
                                exec: Some(ExecAction {
                                    command: Some(vec![
                                        "/bin/sh".to_owned(),
                                        "-c".to_owned(),
                                        format!(
                                            "sleep {PRE_STOP_SECONDS}; nginx -c {CONFIG_DIR}/nginx.conf -s quit; while [ -e /tmp/nginx.pid ]; do sleep 0.2; done"
                                        ),
                                    ]),
                                }),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        resources: g.resources.clone(),
                        security_context: Some(container_security(NGINX_UID)),
                        volume_mounts: Some(mounts),
                        ..Default::default()
                    }],
                    security_context: Some(pod_security(NGINX_UID)),
                    // The pause, then nginx's 25 s worker_shutdown_timeout.
                    termination_grace_period_seconds: Some(PRE_STOP_SECONDS + 30),
                    enable_service_links: Some(false),
                    topology_spread_constraints: Some(super::scaling::spread(model, COMPONENT)),
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn service(model: &Model) -> Service {
    let g = &model.spec.gateway;
    let service_type = g.service_type;
    // Traffic from outside the cluster stays on the node that received it,
    // so nginx sees (and rate-limits) the customer's address, not a node's,
    // unless the spec says otherwise.
    let external = matches!(
        service_type,
        ServiceType::LoadBalancer | ServiceType::NodePort
    );
    let traffic_policy = external.then(|| {
        g.external_traffic_policy
            .unwrap_or(TrafficPolicy::Local)
            .as_str()
            .to_owned()
    });
    let mut annotations = g.service_annotations.clone();
    if g.proxy_protocol {
        annotations
            .entry(DO_PROXY_PROTOCOL_ANNOTATION.to_owned())
            .or_insert_with(|| "true".to_owned());
    }
    let port = |name: &str, number: i32| ServicePort {
        name: Some(name.to_owned()),
        port: number,
        target_port: Some(IntOrString::String(name.to_owned())),
        ..Default::default()
    };
    let mut ports = vec![port("http", 80)];
    if g.tls.is_some() {
        ports.push(port("https", 443));
    }
    let mut metadata = meta(model, names::gateway(&model.name), COMPONENT);
    metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(service_type.as_str().to_owned()),
            external_traffic_policy: traffic_policy,
            selector: Some(selector_labels(model, COMPONENT)),
            ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::testing::model;

    fn pod_annotations(m: &Model) -> BTreeMap<String, String> {
        deployment(m)
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()
    }

    fn config_hash(m: &Model) -> String {
        pod_annotations(m)[CONFIG_HASH_ANNOTATION].clone()
    }

    #[test]
    fn cluster_ip_gateways_keep_the_default_traffic_policy() {
        assert_eq!(
            service(&model()).spec.unwrap().external_traffic_policy,
            None
        );
    }

    #[test]
    fn nginx_workers_follow_the_pods_cpu() {
        let r = |key: &str, cpu: &str| ResourceRequirements {
            limits: (key == "limits").then(|| [("cpu".to_owned(), Quantity(cpu.into()))].into()),
            requests: (key == "requests")
                .then(|| [("cpu".to_owned(), Quantity(cpu.into()))].into()),
            ..Default::default()
        };
        assert_eq!(workers(None), 2);
        assert_eq!(workers(Some(&r("limits", "500m"))), 1);
        assert_eq!(workers(Some(&r("limits", "1500m"))), 2);
        assert_eq!(workers(Some(&r("requests", "3"))), 3);
        assert_eq!(workers(Some(&r("limits", "200"))), 16);
    }

    #[test]
    fn a_config_change_rolls_the_gateway() {
        let mut m = model();
        let before = config_hash(&m);
        m.spec.gateway.rate_limit.requests_per_second = 35;
        assert_ne!(config_hash(&m), before);
        assert!(config_map(&m).data.unwrap()["nginx.conf"].contains("rate=35r/s"));
    }

    #[test]
    fn tls_mounts_the_certificate_and_a_renewed_one_rolls_the_gateway() {
        let mut m = model();
        m.spec.gateway.tls = Some(crate::crd::TlsSpec {
            secret_name: None,
            issuer_ref: Some(crate::crd::IssuerRef {
                name: "letsencrypt".into(),
                kind: "ClusterIssuer".into(),
                group: "cert-manager.io".into(),
            }),
            dns_names: vec!["shop.example".into()],
            redirect_http: true,
            hsts: Default::default(),
        });
        m.spec.gateway.proxy_protocol = true;
        let cert = certificate(&m).unwrap();
        assert_eq!(cert.spec.secret_name, "shop-gateway-tls");
        assert_eq!(cert.spec.dns_names, ["shop.example"]);
        let d = deployment(&m);
        let pod = d.spec.as_ref().unwrap().template.spec.clone().unwrap();
        let secret = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "tls")
            .unwrap();
        assert_eq!(
            secret.secret.unwrap().secret_name.as_deref(),
            Some("shop-gateway-tls")
        );
        let probe = pod.containers[0].readiness_probe.clone().unwrap();
        assert_eq!(
            probe.http_get.unwrap().port,
            IntOrString::String("health".into()),
            "probes speak neither TLS nor the PROXY protocol"
        );
        m.tls_fingerprint = Some("aaaa".into());
        let first = pod_annotations(&m);
        m.tls_fingerprint = Some("bbbb".into());
        assert_ne!(pod_annotations(&m), first);
        let svc = service(&m);
        assert_eq!(
            svc.metadata.annotations.unwrap()[DO_PROXY_PROTOCOL_ANNOTATION],
            "true"
        );
        let ports: Vec<i32> = svc
            .spec
            .unwrap()
            .ports
            .unwrap()
            .iter()
            .map(|p| p.port)
            .collect();
        assert_eq!(ports, [80, 443]);
    }

    #[test]
    fn the_gateway_proxies_to_the_api_service_and_uses_the_chosen_service_type() {
        let mut m = model();
        m.spec.gateway.service_type = ServiceType::LoadBalancer;
        assert_eq!(
            service(&m).spec.unwrap().type_.as_deref(),
            Some("LoadBalancer")
        );
        assert_eq!(
            service(&m).spec.unwrap().external_traffic_policy.as_deref(),
            Some("Local"),
            "rate limits must see the customer's address"
        );
        let conf = &config_map(&m).data.unwrap()["nginx.conf"];
        assert!(conf.contains("server shop-api.food.svc:8080"), "{conf}");
        assert!(!conf.contains("cluster.local"));
        let d = deployment(&m).spec.unwrap().template.spec.unwrap();
        assert_eq!(
            d.containers[0]
                .security_context
                .as_ref()
                .unwrap()
                .run_as_user,
            Some(101)
        );
    }
}
