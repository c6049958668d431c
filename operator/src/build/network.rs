//! NetworkPolicies: who may open a connection to what. The database takes
//! connections only from the pods that need it (API, migration, backup,
//! restore); the API only from the gateway and from metrics scrapers in
//! namespaces the spec names; the gateway, the public entry point, from
//! anywhere on its ports (so a namespace's default-deny leaves it open).
//! They act only where the network plugin enforces NetworkPolicies.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{API_PORT, GATEWAY_PORT, Model, meta, names, selector_labels};
use crate::crd::Engine;

/// The components whose pods connect to the database.
pub const DATABASE_CLIENTS: [&str; 4] = ["api", "migration", "backup", "restore"];

/// CloudNativePG's instance manager answers the CloudNativePG operator here.
const CNPG_STATUS_PORT: i32 = 8000;
/// CloudNativePG's PostgreSQL metrics exporter.
const CNPG_METRICS_PORT: i32 = 9187;

fn port(number: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some("TCP".to_owned()),
        ..Default::default()
    }
}

fn pods(labels: BTreeMap<String, String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(labels),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn policy(
    model: &Model,
    name: String,
    component: &str,
    selected: BTreeMap<String, String>,
    ingress: Vec<NetworkPolicyIngressRule>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: meta(model, name, component),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selected),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(ingress),
            ..Default::default()
        }),
    }
}

/// The pods of this FoodApp that use the database.
fn database_clients(model: &Model) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "app.kubernetes.io/instance".to_owned(),
                model.name.clone(),
            )])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "app.kubernetes.io/component".to_owned(),
                operator: "In".to_owned(),
                values: Some(DATABASE_CLIENTS.map(str::to_owned).to_vec()),
            }]),
        }),
        ..Default::default()
    }
}

fn database(model: &Model) -> Option<NetworkPolicy> {
    let clients = NetworkPolicyIngressRule {
        from: Some(vec![database_clients(model)]),
        ports: Some(vec![port(5432)]),
    };
    let (selected, ingress) = match model.spec.database.engine {
        Engine::BuiltIn => (selector_labels(model, "database"), vec![clients]),
        Engine::CloudNativePG => {
            // Every Cluster of this FoodApp: the one in use, one being
            // recovered, and the one a restore kept (its login still works).
            let clusters = BTreeMap::from([
                (super::cnpg::APP_LABEL.to_owned(), model.name.clone()),
                ("foodapp.io/component".to_owned(), "database".to_owned()),
            ]);
            let operator = NetworkPolicyPeer {
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "kubernetes.io/metadata.name".to_owned(),
                        model.spec.database.cnpg().operator_namespace,
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let mut ingress = vec![
                clients,
                // Streaming replication and recovery between the instances,
                // and the CloudNativePG operator (its own namespace only),
                // which also asks each instance manager for its status.
                NetworkPolicyIngressRule {
                    from: Some(vec![pods(clusters.clone()), operator.clone()]),
                    ports: Some(vec![port(5432)]),
                },
                NetworkPolicyIngressRule {
                    from: Some(vec![operator]),
                    ports: Some(vec![port(CNPG_STATUS_PORT)]),
                },
            ];
            // PostgreSQL's metrics exporter, for the scrapers.
            ingress.extend(scrapers(model).map(|s| NetworkPolicyIngressRule {
                from: Some(vec![s]),
                ports: Some(vec![port(CNPG_METRICS_PORT)]),
            }));
            (clusters, ingress)
        }
        Engine::External => return None,
    };
    Some(policy(
        model,
        names::db(&model.name),
        "database",
        selected,
        ingress,
    ))
}

/// The namespaces allowed to scrape metrics, by their labels. None when no
/// label is given: an empty selector would be every namespace (admission
/// refuses an empty map now; one of the previous release scrapes nothing).
fn scrapers(model: &Model) -> Option<NetworkPolicyPeer> {
    let labels = &model.spec.network_policy.metrics_namespace_labels;
    (!labels.is_empty()).then(|| NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(labels.clone()),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn api(model: &Model) -> NetworkPolicy {
    let from = std::iter::once(pods(selector_labels(model, "gateway")))
        .chain(scrapers(model))
        .collect();
    policy(
        model,
        names::api(&model.name),
        "api",
        selector_labels(model, "api"),
        vec![NetworkPolicyIngressRule {
            from: Some(from),
            ports: Some(vec![port(API_PORT)]),
        }],
    )
}

fn gateway(model: &Model) -> NetworkPolicy {
    let mut ports = vec![port(GATEWAY_PORT)];
    if model.spec.gateway.tls.is_some() {
        ports.push(port(super::GATEWAY_TLS_PORT));
    }
    policy(
        model,
        names::gateway(&model.name),
        "gateway",
        selector_labels(model, "gateway"),
        vec![NetworkPolicyIngressRule {
            from: None,
            ports: Some(ports),
        }],
    )
}

/// Every NetworkPolicy of the FoodApp; none when they are switched off.
pub fn policies(model: &Model) -> Vec<NetworkPolicy> {
    if !model.spec.network_policy.enabled {
        return Vec::new();
    }
    let mut out: Vec<NetworkPolicy> = database(model).into_iter().collect();
    out.push(api(model));
    out.push(gateway(model));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::testing::model;

    fn ingress(p: &NetworkPolicy) -> &Vec<NetworkPolicyIngressRule> {
        p.spec.as_ref().unwrap().ingress.as_ref().unwrap()
    }

    #[test]
    fn the_database_takes_connections_only_from_its_clients() {
        let all = policies(&model());
        assert_eq!(all.len(), 3);
        let db = &all[0];
        assert_eq!(db.metadata.name.as_deref(), Some("shop-db"));
        let rules = ingress(db);
        assert_eq!(rules.len(), 1);
        let from = &rules[0].from.as_ref().unwrap()[0];
        let selector = from.pod_selector.as_ref().unwrap();
        assert_eq!(
            selector.match_labels.as_ref().unwrap()["app.kubernetes.io/instance"],
            "shop"
        );
        let values = selector.match_expressions.as_ref().unwrap()[0]
            .values
            .clone()
            .unwrap();
        assert_eq!(values, ["api", "migration", "backup", "restore"]);
        assert!(from.namespace_selector.is_none(), "same namespace only");
    }

    #[test]
    fn the_api_takes_connections_from_the_gateway_and_scrapers() {
        let all = policies(&model());
        let rules = ingress(&all[1]);
        let from = rules[0].from.as_ref().unwrap();
        assert_eq!(
            from[0]
                .pod_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["app.kubernetes.io/component"],
            "gateway"
        );
        assert_eq!(
            from[1]
                .namespace_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["foodapp.io/metrics"],
            "true"
        );
    }

    #[test]
    fn no_label_for_scrapers_opens_the_api_to_no_namespace() {
        let mut m = model();
        m.spec.network_policy.metrics_namespace_labels.clear();
        m.spec.database.engine = Engine::CloudNativePG;
        for p in policies(&m) {
            for rule in ingress(&p) {
                for peer in rule.from.iter().flatten() {
                    assert!(
                        peer.namespace_selector
                            .as_ref()
                            .is_none_or(|s| s.match_labels.as_ref().is_some_and(|l| !l.is_empty())),
                        "an empty namespace selector (every namespace) in {}",
                        p.metadata.name.clone().unwrap_or_default()
                    );
                }
            }
        }
        let all = policies(&m);
        let api = all
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some("shop-api"))
            .unwrap();
        assert_eq!(
            ingress(api)[0].from.as_ref().unwrap().len(),
            1,
            "the gateway only"
        );
    }

    #[test]
    fn each_engine_gets_its_database_policy_and_they_can_be_switched_off() {
        let mut m = model();
        m.spec.database.engine = Engine::External;
        assert_eq!(policies(&m).len(), 2, "no database pods to protect");
        m.spec.database.engine = Engine::CloudNativePG;
        let all = policies(&m);
        let selected = all[0]
            .spec
            .as_ref()
            .unwrap()
            .pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .clone()
            .unwrap();
        // Every Cluster of the FoodApp, whichever is in use.
        assert_eq!(selected["foodapp.io/app"], "shop");
        assert!(!selected.contains_key("cnpg.io/cluster"), "{selected:?}");
        m.spec.network_policy.enabled = false;
        assert!(policies(&m).is_empty());
    }

    #[test]
    fn cloudnativepg_ports_open_to_the_operator_namespace_and_scrapers_only() {
        let mut m = model();
        m.spec.database.engine = Engine::CloudNativePG;
        let all = policies(&m);
        let rules = ingress(&all[0]);
        let namespace = |p: &NetworkPolicyPeer| {
            p.namespace_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone())
                .unwrap_or_default()
        };
        let by_port = |n: i32| {
            rules
                .iter()
                .filter(|r| {
                    r.ports
                        .iter()
                        .flatten()
                        .any(|p| p.port == Some(IntOrString::Int(n)))
                })
                .collect::<Vec<_>>()
        };
        for rule in rules.iter() {
            assert!(
                rule.from.is_some(),
                "no port is open to every source: {rule:?}"
            );
        }
        let status = by_port(CNPG_STATUS_PORT);
        assert_eq!(status.len(), 1);
        assert_eq!(
            namespace(&status[0].from.as_ref().unwrap()[0])["kubernetes.io/metadata.name"],
            "cnpg-system"
        );
        let metrics = by_port(CNPG_METRICS_PORT);
        assert_eq!(
            namespace(&metrics[0].from.as_ref().unwrap()[0])["foodapp.io/metrics"],
            "true"
        );
        m.spec.database.cloud_native_pg = Some(crate::crd::CloudNativePgSpec {
            operator_namespace: "postgres-operator".into(),
            ..Default::default()
        });
        let all = policies(&m);
        let rules = ingress(&all[0]);
        assert!(rules.iter().flat_map(|r| r.from.iter().flatten()).any(|p| {
            namespace(p)
                .get("kubernetes.io/metadata.name")
                .map(String::as_str)
                == Some("postgres-operator")
        }));
    }
}
