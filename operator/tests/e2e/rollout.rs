//! Rollouts under continuous traffic through the gateway's Service (what a
//! load balancer sees): a new API image with its migration, then a gateway
//! setting that changes nginx.conf. Goal: no failed request (429 aside).
//! Runs alone: `make e2e E2E_TEST=rollouts_drop_nothing`.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::json;

use super::traffic::{Seen, Traffic, open_shop_behind_service};
use super::{Cluster, apply_foodapp, example, install, setting};

const APP: &str = "bakery";

/// Deployment `name` has rolled: every replica updated and available, none
/// of the old ones left.
async fn rolled(c: &Cluster, name: &str) -> Result<(), String> {
    let d = c
        .api::<Deployment>()
        .get(name)
        .await
        .map_err(|e| e.to_string())?;
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let s = d.status.clone().unwrap_or_default();
    let done = s.observed_generation >= d.metadata.generation
        && s.updated_replicas == Some(want)
        && s.available_replicas == Some(want)
        && s.replicas == Some(want);
    if done {
        Ok(())
    } else {
        Err(format!("{name}: want {want}, {s:?}"))
    }
}

fn generation(d: &Deployment) -> i64 {
    d.metadata.generation.unwrap_or(0)
}

/// Merges `spec` into the FoodApp, waits until Deployment `<app>-<component>`
/// has rolled onto it, then watches 10 s more.
async fn change_and_roll(c: &Cluster, spec: serde_json::Value, component: &str) {
    let name = format!("{APP}-{component}");
    let deployments = c.api::<Deployment>();
    let before = generation(&deployments.get(&name).await.unwrap());
    c.merge(APP, json!({ "spec": spec })).await.unwrap();
    c.eventually(
        &format!("{name} rolls onto the change"),
        Duration::from_secs(300),
        || async {
            let d = deployments.get(&name).await.map_err(|e| e.to_string())?;
            if generation(&d) == before {
                return Err("not started".into());
            }
            rolled(c, &name).await
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
}

/// A failure that is not a 429 (the gateway's rate limit, which a client
/// is told to slow down by).
fn failures(seen: &Seen) -> usize {
    seen.failed
        .iter()
        .filter(|(k, _)| !k.starts_with("429"))
        .map(|(_, n)| n)
        .sum()
}

/// The API image to roll to: the one running under another name
/// (`FOODAPP_E2E_API_IMAGE_NEXT`, or a tag made here with containerd's
/// `ctr` on the local cluster's node).
fn next_api_image(current: &str) -> String {
    let next = setting("FOODAPP_E2E_API_IMAGE_NEXT", &format!("{current}-rollout"));
    let tagged = std::process::Command::new("ctr")
        .args(["-n", "k8s.io", "images", "tag", "--force", current, &next])
        .status();
    if !tagged.is_ok_and(|s| s.success()) {
        println!("note: could not tag {next} with ctr; it must exist on the node");
    }
    next
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e with FOODAPP_E2E_KUBECONFIG"]
async fn rollouts_drop_nothing() {
    let ns = setting("FOODAPP_E2E_ROLLOUT_NAMESPACE", "foodapp-e2e-rollout");
    let Some((c, _discovery, _client, _)) = install(&ns).await else {
        return;
    };
    let minute = Duration::from_secs(60);
    c.ensure_namespace(&ns).await;
    let mut bakery = example("foodapp.yaml", &c.ns);
    bakery.metadata.name = Some(APP.to_owned());
    bakery.spec.api.replicas = 2;
    bakery.spec.gateway.replicas = 2;
    bakery.spec.gateway.rate_limit.requests_per_second = 5000;
    bakery.spec.gateway.rate_limit.burst = 10000;
    let first_image = bakery.spec.api.image.clone();
    apply_foodapp(&c, &bakery).await;
    c.eventually("FoodApp bakery is Ready", 5 * minute, || c.ready(APP))
        .await;
    let shop = open_shop_behind_service(&c, APP, "bakery-customer@example.com").await;

    let traffic = Traffic::start(shop.clone(), 2, 2);
    tokio::time::sleep(Duration::from_secs(8)).await;

    // 1. A new API image: its migration Job, then the API pods roll.
    let api_start = Instant::now();
    let next = next_api_image(&first_image);
    change_and_roll(&c, json!({"api": {"image": next}}), "api").await;
    let api_end = Instant::now();
    // 2. A gateway setting that changes nginx.conf: the gateway pods roll.
    change_and_roll(
        &c,
        json!({"gateway": {"rateLimit": {"requestsPerSecond": 4000}}}),
        "gateway",
    )
    .await;
    let gateway_end = Instant::now();
    let report = traffic.stop().await;

    let mut failed = 0;
    for (what, from, to) in [
        ("API image rollout", api_start, api_end),
        ("gateway rollout", api_end, gateway_end),
    ] {
        let (reads, writes) = (report.seen(false, from, to), report.seen(true, from, to));
        c.log(&format!(
            "{what} ({:.0}s): reads: {reads}; writes: {writes}",
            (to - from).as_secs_f64()
        ));
        failed += failures(&reads) + failures(&writes);
    }
    assert_eq!(failed, 0, "requests failed while pods rolled (see above)");

    c.remove_app_and_namespace(APP).await;
    c.log("all rollout checks passed");
}
