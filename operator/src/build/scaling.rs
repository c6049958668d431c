//! Availability of the stateless parts (API and gateway): a
//! HorizontalPodAutoscaler when the spec asks for one, a
//! PodDisruptionBudget whenever more than one pod runs, and pods spread
//! across nodes and zones.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Model, meta, selector_labels};
use crate::crd::Autoscaling;

/// The replicas a Deployment is given by the operator: None while an
/// autoscaler owns the number.
pub fn replicas(fixed: i32, autoscaling: Option<&Autoscaling>) -> Option<i32> {
    match autoscaling {
        Some(_) => None,
        None => Some(fixed),
    }
}

/// The fewest pods that run in normal operation.
pub fn min_pods(fixed: i32, autoscaling: Option<&Autoscaling>) -> i32 {
    autoscaling.map_or(fixed, |a| a.min_replicas)
}

/// An autoscaler for the Deployment `name` on average CPU use.
pub fn hpa(model: &Model, name: &str, component: &str, a: &Autoscaling) -> HorizontalPodAutoscaler {
    HorizontalPodAutoscaler {
        metadata: meta(model, name.to_owned(), component),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: name.to_owned(),
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_owned(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_owned(),
                    target: MetricTarget {
                        type_: "Utilization".to_owned(),
                        average_utilization: Some(a.target_cpu_utilization_percentage),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// At most one pod of the component away at a time during voluntary
/// disruptions (node drains, upgrades), when there are pods to spare.
pub fn pdb(
    model: &Model,
    name: &str,
    component: &str,
    min_pods: i32,
) -> Option<PodDisruptionBudget> {
    (min_pods > 1).then(|| PodDisruptionBudget {
        metadata: meta(model, name.to_owned(), component),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(model, component)),
                ..Default::default()
            }),
            // A pod that never became ready may be evicted: it serves nothing.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Spread a component's pods over nodes, then zones, as evenly as the
/// cluster allows (never blocking scheduling on a small cluster).
pub fn spread(model: &Model, component: &str) -> Vec<TopologySpreadConstraint> {
    ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
        .into_iter()
        .map(|key| TopologySpreadConstraint {
            max_skew: 1,
            topology_key: key.to_owned(),
            when_unsatisfiable: "ScheduleAnyway".to_owned(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(model, component)),
                ..Default::default()
            }),
            // Count only the pods of the same revision during a rollout.
            match_label_keys: Some(vec!["pod-template-hash".to_owned()]),
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::testing::model;

    fn autoscaling() -> Autoscaling {
        Autoscaling {
            min_replicas: 3,
            max_replicas: 8,
            target_cpu_utilization_percentage: 60,
        }
    }

    #[test]
    fn an_autoscaler_owns_the_replicas() {
        assert_eq!(replicas(2, None), Some(2));
        assert_eq!(replicas(2, Some(&autoscaling())), None);
        assert_eq!(min_pods(2, Some(&autoscaling())), 3);
        let h = hpa(&model(), "shop-api", "api", &autoscaling())
            .spec
            .unwrap();
        assert_eq!(h.scale_target_ref.name, "shop-api");
        assert_eq!((h.min_replicas, h.max_replicas), (Some(3), 8));
        let metric = &h.metrics.unwrap()[0];
        let target = &metric.resource.as_ref().unwrap().target;
        assert_eq!(target.average_utilization, Some(60));
    }

    #[test]
    fn a_budget_only_when_a_pod_can_be_spared() {
        let m = model();
        assert!(pdb(&m, "shop-api", "api", 1).is_none());
        let b = pdb(&m, "shop-api", "api", 2).unwrap().spec.unwrap();
        assert_eq!(b.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(
            b.selector.unwrap().match_labels.unwrap()["app.kubernetes.io/component"],
            "api"
        );
    }

    #[test]
    fn pods_spread_over_nodes_without_blocking() {
        let s = spread(&model(), "gateway");
        assert_eq!(s[0].topology_key, "kubernetes.io/hostname");
        assert!(s.iter().all(|c| c.when_unsatisfiable == "ScheduleAnyway"));
    }
}
