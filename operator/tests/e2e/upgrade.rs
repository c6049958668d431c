//! PostgreSQL major upgrades of a live FoodApp under continuous traffic
//! through the gateway's Service: Beside (writes paused while the data is
//! copied, reads served), a downgrade refused with the database untouched,
//! the undo, then InPlace (pg_upgrade --link, the shop closed meanwhile).
//! Every acknowledged order must be in the database afterwards. Needs the
//! S3 settings and a PostgreSQL image of a newer major than the data's
//! (`FOODAPP_E2E_POSTGRES_IMAGE_NEXT`, default postgres:18; on the local
//! cluster `scripts/e2e-pg18-images` makes it). Runs alone:
//! `make e2e E2E_TEST=postgres_upgrades_keep_every_order`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use foodapp_operator::crd::{FoodApp, FoodAppRestore, RestorePhase, UpgradePhase};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde_json::json;

use super::restore::{backup_spec, exported_orders, order_ids, restore_status, with_backups_to};
use super::traffic::{Report, Seen, Shop, Traffic, open_shop_behind_service};
use super::{Cluster, apply_foodapp, example, install, setting};

const APP: &str = "cellar";

async fn app(c: &Cluster) -> Result<FoodApp, String> {
    c.api::<FoodApp>().get(APP).await.map_err(|e| e.to_string())
}

async fn major(c: &Cluster) -> Option<i32> {
    app(c).await.ok()?.status?.database_major
}

/// The condition DatabaseUpgrade's reason and message.
async fn upgrade_condition(c: &Cluster) -> Result<(String, String), String> {
    let a = app(c).await?;
    let cond = a
        .status
        .and_then(|s| {
            s.conditions
                .into_iter()
                .find(|c| c.type_ == "DatabaseUpgrade")
        })
        .ok_or("no DatabaseUpgrade condition")?;
    Ok((cond.reason, cond.message))
}

/// The pod of the database in use, and its image.
async fn database_pod(c: &Cluster) -> Result<(String, String), String> {
    let a = app(c).await?;
    let sts = foodapp_operator::build::db_cluster(&a);
    let pod = c
        .api::<Pod>()
        .get(&format!("{sts}-0"))
        .await
        .map_err(|e| e.to_string())?;
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    Ok((pod.metadata.uid.unwrap_or_default(), image))
}

/// Sets the database image (and upgrade settings), waits until the upgrade
/// to it succeeded and the shop is Ready on the new major, under traffic.
async fn upgrade(
    c: &Cluster,
    shop: &Shop,
    what: &str,
    database: serde_json::Value,
    to: i32,
) -> (f64, Report, Instant, Instant) {
    let traffic = Traffic::start(shop.clone(), 2, 2);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let start = Instant::now();
    c.merge(APP, json!({"spec": {"database": database}}))
        .await
        .unwrap();
    c.eventually(
        &format!("{what}: the upgrade to PostgreSQL {to} succeeds"),
        Duration::from_secs(900),
        || async {
            let a = app(c).await?;
            let s = a.status.clone().unwrap_or_default();
            let up = s.database_upgrade.clone().ok_or("no upgrade yet")?;
            if up.phase == UpgradePhase::Failed {
                panic!("{what}: the upgrade failed: {:?}", up.message);
            }
            if up.phase == UpgradePhase::Succeeded && s.database_major == Some(to) {
                c.ready(APP).await
            } else {
                Err(format!("{:?}: {:?}", up.phase, up.message))
            }
        },
    )
    .await;
    let end = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let report = traffic.stop().await;
    let seconds = (end - start).as_secs_f64();
    (seconds, report, start, end + Duration::from_secs(10))
}

fn not_429(seen: &Seen) -> usize {
    seen.failed
        .iter()
        .filter(|(k, _)| !k.starts_with("429"))
        .map(|(_, n)| n)
        .sum()
}

/// Every order the traffic saw acknowledged is in the database now.
async fn every_order_kept(c: &Cluster, shop: &Shop, acknowledged: &BTreeSet<String>, what: &str) {
    let present = c
        .eventually(
            "the customer's orders are listed",
            Duration::from_secs(120),
            || order_ids(c, APP, &shop.customer_token),
        )
        .await;
    let lost: Vec<&String> = acknowledged.difference(&present).collect();
    assert!(
        lost.is_empty(),
        "{what}: acknowledged orders missing after the upgrade: {lost:?}"
    );
    c.log(&format!(
        "ok: {what}: all {} acknowledged orders are in the database ({} in all)",
        acknowledged.len(),
        present.len()
    ));
}

fn ids(report: &Report) -> BTreeSet<String> {
    report
        .acknowledged()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e with FOODAPP_E2E_KUBECONFIG"]
async fn postgres_upgrades_keep_every_order() {
    let ns = setting("FOODAPP_E2E_UPGRADE_NAMESPACE", "foodapp-e2e-upgrade");
    let Some((c, discovery, _client, _)) = install(&ns).await else {
        return;
    };
    let Ok(endpoint) = std::env::var("FOODAPP_E2E_S3_ENDPOINT") else {
        c.log("upgrade checks SKIPPED: FOODAPP_E2E_S3_ENDPOINT is not set");
        return;
    };
    let next = setting("FOODAPP_E2E_POSTGRES_IMAGE_NEXT", "postgres:18");
    let minute = Duration::from_secs(60);
    c.ensure_namespace(&ns).await;
    with_backups_to(&c, &discovery).await;
    let mut cellar = example("foodapp.yaml", &c.ns);
    cellar.metadata.name = Some(APP.to_owned());
    cellar.spec.api.replicas = 2;
    cellar.spec.gateway.replicas = 2;
    cellar.spec.gateway.rate_limit.requests_per_second = 5000;
    cellar.spec.gateway.rate_limit.burst = 10000;
    cellar.spec.backup = Some(backup_spec(&endpoint));
    cellar.spec.database.image = setting(
        "FOODAPP_E2E_POSTGRES_IMAGE_FROM",
        &cellar.spec.database.image,
    );
    let first = cellar.spec.database.image.clone();
    apply_foodapp(&c, &cellar).await;
    c.eventually("FoodApp cellar is Ready", 5 * minute, || c.ready(APP))
        .await;
    let from = c
        .eventually(
            "cellar reports its data's PostgreSQL major",
            minute,
            || async { major(&c).await.ok_or("not yet".to_owned()) },
        )
        .await;
    let to: i32 = foodapp_operator::build::upgrade::image_major(&next)
        .and_then(|m| i32::try_from(m).ok())
        .expect("FOODAPP_E2E_POSTGRES_IMAGE_NEXT names its major");
    assert!(to > from, "{next} is newer than the data's {from}");
    c.log(&format!(
        "ok: cellar's data is PostgreSQL {from} ({first}); upgrading to {next}"
    ));
    let shop = open_shop_behind_service(&c, APP, "cellar-customer@example.com").await;
    let warm = Traffic::start(shop.clone(), 1, 1);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut acknowledged = ids(&warm.stop().await);

    // 1. Beside: reads go on, writes wait while the data is copied.
    let (seconds, report, t0, t1) = upgrade(&c, &shop, "Beside", json!({"image": next}), to).await;
    let (reads, writes) = (report.seen(false, t0, t1), report.seen(true, t0, t1));
    c.log(&format!(
        "Beside {from} -> {to}: {seconds:.0}s; reads: {reads}; writes: {writes}"
    ));
    assert_eq!(not_429(&reads), 0, "every read succeeds: {reads}");
    let beside_summary = format!(
        "Beside {seconds:.0}s, reads failed {}, longest write gap {:.1}s",
        not_429(&reads),
        writes.longest_gap.as_secs_f64()
    );
    let other: Vec<&String> = writes
        .failed
        .keys()
        .filter(|k| !(k.starts_with("503 restoring") || k.starts_with("503 unavailable")))
        .collect();
    assert!(
        other.is_empty(),
        "writes refused only with 503 to retry: {writes}"
    );
    acknowledged.extend(ids(&report));
    every_order_kept(&c, &shop, &acknowledged, "Beside").await;
    let beside = app(&c)
        .await
        .unwrap()
        .status
        .unwrap()
        .database_upgrade
        .unwrap();
    let upgrade_restore = beside.restore.clone().unwrap();
    let (uid, image) = database_pod(&c).await.unwrap();
    assert_eq!(image, next);

    // 2. A downgrade is refused; the database pod is untouched.
    c.merge(APP, json!({"spec": {"database": {"image": first}}}))
        .await
        .unwrap();
    let (_, message) = c
        .eventually("the downgrade is refused", minute, || async {
            let (reason, message) = upgrade_condition(&c).await?;
            if reason == "DowngradeRefused" {
                Ok((reason, message))
            } else {
                Err(reason)
            }
        })
        .await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(
        database_pod(&c).await.unwrap(),
        (uid.clone(), next.clone()),
        "the database pod kept running"
    );
    c.log(&format!("ok: downgrade refused: {message}"));

    // 3. The undo: back to the PostgreSQL {from} database the upgrade kept.
    let undo = "cellar-undo";
    let obj = json!({"apiVersion": "foodapp.io/v1alpha1", "kind": "FoodAppRestore",
        "metadata": {"name": undo, "namespace": c.ns},
        "spec": {"foodAppRef": APP, "revert": upgrade_restore}});
    c.api::<FoodAppRestore>()
        .create(&Default::default(), &serde_json::from_value(obj).unwrap())
        .await
        .unwrap();
    let undone = c
        .eventually("the undo ends", 10 * minute, || async {
            let s = restore_status(&c, undo).await?;
            match s.phase {
                Some(p) if p.is_final() => Ok(s),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    assert_eq!(
        undone.phase,
        Some(RestorePhase::Succeeded),
        "{:?}",
        undone.error
    );
    c.eventually(
        "cellar is back on its first major and Ready",
        5 * minute,
        || async {
            if major(&c).await != Some(from) {
                return Err(format!("major {:?}", major(&c).await));
            }
            c.ready(APP).await
        },
    )
    .await;
    let present = order_ids(&c, APP, &shop.customer_token).await.unwrap();
    let exported = match undone.discarded.as_ref().and_then(|d| d.object_key.clone()) {
        Some(key) => exported_orders(&key).await,
        None => BTreeSet::new(),
    };
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !present.contains(*id) && !exported.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "undo: orders neither kept nor exported: {lost:?}"
    );
    c.log(&format!(
        "ok: undo: back on PostgreSQL {from}; {} orders kept, {} placed on {to} exported",
        present.len(),
        exported.len()
    ));
    let acknowledged: BTreeSet<String> = present;

    // 4. InPlace: pg_upgrade --link on the volume, the shop closed meanwhile.
    let (seconds, report, t0, t1) = upgrade(
        &c,
        &shop,
        "InPlace",
        json!({"image": next, "upgrade": {"method": "InPlace"}}),
        to,
    )
    .await;
    let (reads, writes) = (report.seen(false, t0, t1), report.seen(true, t0, t1));
    c.log(&format!(
        "InPlace {from} -> {to}: {seconds:.0}s; reads: {reads}; writes: {writes}"
    ));
    let mut all = acknowledged;
    all.extend(ids(&report));
    every_order_kept(&c, &shop, &all, "InPlace").await;
    let sts = foodapp_operator::build::db_cluster(&app(&c).await.unwrap());
    let s = c.api::<StatefulSet>().get(&sts).await.unwrap();
    c.log(&format!(
        "ok: InPlace: {} runs {next} on its own volume",
        s.name_any()
    ));
    c.log(&format!(
        "summary: {beside_summary}; InPlace {seconds:.0}s, reads failed {}, longest read gap {:.1}s, longest write gap {:.1}s",
        not_429(&reads),
        reads.longest_gap.as_secs_f64(),
        writes.longest_gap.as_secs_f64()
    ));
    c.remove_app_and_namespace(APP).await;
    c.log("all upgrade checks passed");
}
