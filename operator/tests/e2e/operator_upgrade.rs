//! Upgrading the operator from the previous release of this repository:
//! that release's CRDs, chart and images installed, a FoodApp with data
//! under traffic through its gateway Service, then this checkout's CRDs and
//! chart applied over them (as `helm upgrade` would). No database pod may
//! restart and no request may fail; the pod-template changes this release
//! brings wait for the FoodApp's maintenance window, and go when it opens.
//! Needs a checkout of the previous release and its images
//! (`FOODAPP_E2E_PREVIOUS_REPO`, `FOODAPP_E2E_PREVIOUS_OPERATOR_IMAGE`,
//! `FOODAPP_E2E_PREVIOUS_API_IMAGE`; README "End-to-end tests"). Runs
//! alone: `make e2e E2E_TEST=operator_upgrades_restart_nothing`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use foodapp_operator::crd::FoodApp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use super::traffic::{Seen, Traffic, open_shop_behind_service};
use super::{Cluster, install_from, repo, setting};

const APP: &str = "corner";

/// Every pod of the FoodApp, by name: its uid.
async fn pods(c: &Cluster) -> BTreeMap<String, String> {
    c.api::<Pod>()
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={APP}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            p.labels()
                .get("app.kubernetes.io/component")
                .is_some_and(|c| ["database", "api", "gateway"].contains(&c.as_str()))
        })
        .map(|p| (p.name_any(), p.metadata.uid.unwrap_or_default()))
        .collect()
}

fn failures(seen: &Seen) -> usize {
    seen.failed
        .iter()
        .filter(|(k, _)| !k.starts_with("429"))
        .map(|(_, n)| n)
        .sum()
}

async fn condition(c: &Cluster, type_: &str) -> Result<(String, String, String), String> {
    let a = c
        .api::<FoodApp>()
        .get(APP)
        .await
        .map_err(|e| e.to_string())?;
    a.status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == type_))
        .map(|c| (c.status, c.reason, c.message))
        .ok_or_else(|| format!("no {type_} condition yet"))
}

/// A window of the whole day around now (UTC), or one that opened an
/// hour ago and closes in an hour.
fn window_open_now() -> String {
    let now = chrono::Utc::now();
    let hm = |t: chrono::DateTime<chrono::Utc>| t.format("%H:%M").to_string();
    format!(
        "daily {}-{}",
        hm(now - chrono::Duration::hours(1)),
        hm(now + chrono::Duration::hours(1))
    )
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e with FOODAPP_E2E_KUBECONFIG"]
async fn operator_upgrades_restart_nothing() {
    let Ok(previous) = std::env::var("FOODAPP_E2E_PREVIOUS_REPO") else {
        println!(
            "SKIPPED: FOODAPP_E2E_PREVIOUS_REPO (a checkout of the previous release) is not set"
        );
        return;
    };
    let previous = std::path::PathBuf::from(previous);
    let ns = setting(
        "FOODAPP_E2E_OPERATOR_UPGRADE_NAMESPACE",
        "foodapp-e2e-operator-upgrade",
    );
    let old_operator = setting(
        "FOODAPP_E2E_PREVIOUS_OPERATOR_IMAGE",
        "ghcr.io/foodapp/foodapp-operator:previous",
    );
    let old_api = setting(
        "FOODAPP_E2E_PREVIOUS_API_IMAGE",
        "ghcr.io/foodapp/foodapp-api:previous",
    );
    let Some((c, _discovery, _client, _)) = install_from(&ns, &previous, &old_operator).await
    else {
        return;
    };
    let minute = Duration::from_secs(60);
    c.ensure_namespace(&ns).await;
    // The previous release's own example, on its own images.
    let text = std::fs::read_to_string(previous.join("examples/foodapp.yaml")).unwrap();
    let mut app: Value = yaml_serde::from_str(&text).unwrap();
    app["metadata"]["name"] = json!(APP);
    app["metadata"]["namespace"] = json!(ns);
    app["spec"]["api"]["image"] = json!(old_api);
    app["spec"]["api"]["replicas"] = json!(2);
    app["spec"]["database"]["image"] = json!(setting("FOODAPP_E2E_POSTGRES_IMAGE", "postgres:16"));
    app["spec"]["gateway"]["image"] = json!(setting("FOODAPP_E2E_NGINX_IMAGE", "nginx:1.27"));
    app["spec"]["gateway"]["replicas"] = json!(2);
    app["spec"]["gateway"]["rateLimit"] = json!({"requestsPerSecond": 5000, "burst": 10000});
    let obj: FoodApp = serde_json::from_value(app).unwrap();
    c.api::<FoodApp>()
        .create(&Default::default(), &obj)
        .await
        .unwrap();
    c.eventually(
        "FoodApp corner is Ready under the previous release",
        5 * minute,
        || c.ready(APP),
    )
    .await;
    let shop = open_shop_behind_service(&c, APP, "corner-customer@example.com").await;
    // The previous release may still be rolling its own API (its first
    // migration done): compare from where it settled, a database pod and
    // two API and two gateway pods, none terminating.
    let before = c
        .eventually("the previous release has settled", 3 * minute, || async {
            let now = pods(&c).await;
            let terminating = c
                .api::<Pod>()
                .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={APP}")))
                .await
                .map_err(|e| e.to_string())?
                .items
                .iter()
                .any(|p| p.metadata.deletion_timestamp.is_some());
            if now.len() == 5 && !terminating {
                Ok(now)
            } else {
                Err(format!("{} pods, terminating: {terminating}", now.len()))
            }
        })
        .await;
    c.log(&format!("pods before the upgrade: {}", before.len()));

    // The upgrade, under traffic.
    let traffic = Traffic::start(shop.clone(), 2, 2);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let start = Instant::now();
    let new_operator = setting(
        "FOODAPP_E2E_OPERATOR_IMAGE",
        foodapp_operator::crd::DEFAULT_OPERATOR_IMAGE,
    );
    install_from(&ns, &repo(), &new_operator).await.unwrap();
    let operators: Api<Deployment> = Api::namespaced(c.client.clone(), &c.system_ns);
    c.eventually("the new operator has rolled out", 3 * minute, || async {
        let d = operators
            .get("foodapp-foodapp-operator")
            .await
            .map_err(|e| e.to_string())?;
        let image = d
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        let s = d.status.unwrap_or_default();
        if image == new_operator
            && s.updated_replicas == Some(2)
            && s.available_replicas == Some(2)
            && s.replicas == Some(2)
        {
            Ok(())
        } else {
            Err(format!("{image}: {s:?}"))
        }
    })
    .await;
    let (status, reason, message) = c
        .eventually(
            "the new operator holds its pod-template changes",
            3 * minute,
            || async {
                let (status, reason, message) = condition(&c, "RolloutPending").await?;
                if status == "True" {
                    Ok((status, reason, message))
                } else {
                    Err(format!("{status} {reason}"))
                }
            },
        )
        .await;
    c.log(&format!("RolloutPending={status} ({reason}): {message}"));
    // A minute of the new operator reconciling.
    tokio::time::sleep(minute).await;
    let upgraded = Instant::now();
    let after = pods(&c).await;
    assert_eq!(after, before, "no pod of the FoodApp restarted");
    c.eventually("corner is Ready under this release", minute, || {
        c.ready(APP)
    })
    .await;

    // The maintenance window opens: the held changes go.
    c.merge(
        APP,
        json!({"spec": {"maintenance": {"window": window_open_now()}}}),
    )
    .await
    .unwrap();
    c.eventually(
        "the held rollouts are applied in the window",
        5 * minute,
        || async {
            let (status, reason, _) = condition(&c, "RolloutPending").await?;
            if status == "False" && reason == "UpToDate" {
                c.ready(APP).await
            } else {
                Err(format!("{status} {reason}"))
            }
        },
    )
    .await;
    let window_end = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let report = traffic.stop().await;
    let (reads, writes) = (
        report.seen(false, start, upgraded),
        report.seen(true, start, upgraded),
    );
    c.log(&format!(
        "operator upgrade ({:.0}s): reads: {reads}; writes: {writes}",
        (upgraded - start).as_secs_f64()
    ));
    let rolled = pods(&c).await;
    let restarted = before
        .keys()
        .filter(|k| rolled.get(*k) != before.get(*k))
        .count();
    let (wr, ww) = (
        report.seen(false, upgraded, window_end),
        report.seen(true, upgraded, window_end),
    );
    c.log(&format!(
        "in the window ({:.0}s): {restarted} of {} pods replaced; reads: {wr}; writes: {ww}",
        (window_end - upgraded).as_secs_f64(),
        before.len()
    ));
    assert_eq!(
        failures(&reads) + failures(&writes),
        0,
        "requests failed while the operator was upgraded (see above)"
    );
    c.remove_app_and_namespace(APP).await;
    c.log("all operator upgrade checks passed");
}
