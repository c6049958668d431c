//! Resident memory of the controller with 100 FoodApps reconciled against
//! kube-fake-client's in-memory API (which lives in the same process, so its
//! copy of every object is counted too), and the cost of a no-op reconcile.
//! Run: `cargo bench -p foodapp-operator --bench reconcile_memory` (or `make bench`).

use std::sync::Arc;
use std::time::Instant;

use foodapp_operator::controller::{self, Context};
use foodapp_operator::crd::{FoodApp, FoodAppBackup, FoodAppRestore};
use foodapp_operator::metrics::Metrics;
use kube::Api;
use kube::api::ListParams;
use kube_fake_client::ClientBuilder;

const APPS: usize = 100;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main(worker_threads = 2)]
async fn main() {
    let start_rss = status_kib("VmRSS:");
    let apps: Vec<FoodApp> = (0..APPS)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "foodapp.io/v1alpha1", "kind": "FoodApp",
                "metadata": {"name": format!("shop{i}"), "namespace": format!("ns{}", i % 10)},
                "spec": {"api": {"replicas": 2}},
            }))
            .unwrap()
        })
        .collect();
    let client = ClientBuilder::new()
        .with_resource::<FoodApp>()
        .with_status_subresource::<FoodApp>()
        .with_resource::<FoodAppBackup>()
        .with_resource::<FoodAppRestore>()
        .with_objects(apps)
        .build()
        .await
        .unwrap();
    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::new(Metrics::default()),
        "agent:bench".into(),
    ));
    let all: Api<FoodApp> = Api::all(client.clone());

    let t = Instant::now();
    let mut reconciles = 0;
    for _ in 0..3 {
        for app in all.list(&ListParams::default()).await.unwrap() {
            controller::reconcile(Arc::new(app), ctx.clone())
                .await
                .unwrap();
            reconciles += 1;
        }
    }
    let first = t.elapsed();
    let writes_before = ctx.metrics.writes.get();
    let t = Instant::now();
    for app in all.list(&ListParams::default()).await.unwrap() {
        controller::reconcile(Arc::new(app), ctx.clone())
            .await
            .unwrap();
    }
    let noop = t.elapsed();
    let noop_writes = ctx.metrics.writes.get() - writes_before;

    println!(
        "FoodApps: {APPS}, reconciles: {reconciles} in {:.2} s (until stable)",
        first.as_secs_f64()
    );
    println!(
        "no-op pass over all {APPS}: {:.1} ms ({:.2} ms per FoodApp), writes: {noop_writes}",
        noop.as_secs_f64() * 1e3,
        noop.as_secs_f64() * 1e3 / APPS as f64
    );
    println!(
        "resident memory: {:.1} MiB now, {:.1} MiB peak, {:.1} MiB at start (goal <= 30 MiB; includes the in-memory API's objects)",
        status_kib("VmRSS:") as f64 / 1024.0,
        status_kib("VmHWM:") as f64 / 1024.0,
        start_rss as f64 / 1024.0
    );
    assert_eq!(noop_writes, 0, "an unchanged FoodApp must cost no writes");
}
