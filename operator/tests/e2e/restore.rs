//! Restores on a real cluster, under continuous reads and orders through
//! the gateway: Beside (the shop keeps serving, writes pause for the
//! switch), its undo, InPlace for comparison, and kills at the steps that
//! matter (the operator's leader, the new database's pod, the switch
//! agent). Runs alone: `make e2e E2E_TEST=restores_keep_the_shop_open`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use foodapp_operator::crd::{FoodAppBackup, FoodAppRestore, FoodAppRestoreStatus, RestorePhase};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use super::traffic::{Report, Shop, Traffic, open_shop};
use super::{Cluster, apply_foodapp, backup_done, example, install, setting};

const APP: &str = "grill";
/// The FoodApp a clone of grill goes into.
const STAGING: &str = "grill-staging";

/// The S3 store's credentials Secret `e2e-s3` in the test's namespace.
pub(super) async fn with_backups_to(c: &Cluster, discovery: &kube::Discovery) {
    let credentials = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "e2e-s3", "namespace": c.ns},
        "stringData": {"AWS_ACCESS_KEY_ID": setting("FOODAPP_E2E_S3_ACCESS_KEY", ""),
                       "AWS_SECRET_ACCESS_KEY": setting("FOODAPP_E2E_S3_SECRET_KEY", "")}});
    c.apply_value(discovery, &credentials, &c.ns).await;
}

/// Backups into the test's S3 store (no schedule that fires during a run).
pub(super) fn backup_spec(endpoint: &str) -> foodapp_operator::crd::BackupSpec {
    serde_json::from_value(json!({
    "schedule": "0 3 * * *",
    "s3": {"endpoint": endpoint, "region": setting("FOODAPP_E2E_S3_REGION", "us-east-1"),
           "bucket": setting("FOODAPP_E2E_S3_BUCKET", "foodapp-e2e"), "prefix": "e2e",
           "forcePathStyle": true, "credentialsSecret": "e2e-s3"}}))
    .unwrap()
}

pub(super) async fn restore_status(
    c: &Cluster,
    name: &str,
) -> Result<FoodAppRestoreStatus, String> {
    c.api::<FoodAppRestore>()
        .get(name)
        .await
        .map_err(|e| e.to_string())?
        .status
        .ok_or_else(|| "no status".to_owned())
}

async fn create_restore(c: &Cluster, name: &str, spec: Value) {
    let mut spec = spec;
    spec["foodAppRef"] = json!(APP);
    let obj = json!({"apiVersion": "foodapp.io/v1alpha1", "kind": "FoodAppRestore",
        "metadata": {"name": name, "namespace": c.ns}, "spec": spec});
    c.api::<FoodAppRestore>()
        .create(&Default::default(), &serde_json::from_value(obj).unwrap())
        .await
        .unwrap();
}

/// Waits until restore `name` ends; its status.
async fn finished(c: &Cluster, name: &str) -> FoodAppRestoreStatus {
    c.eventually(
        &format!("restore {name} ends"),
        Duration::from_secs(600),
        || async {
            let s = restore_status(c, name).await?;
            match s.phase {
                Some(p) if p.is_final() => Ok(s),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

async fn wait_phase(c: &Cluster, name: &str, phase: RestorePhase) {
    c.eventually(
        &format!("restore {name} reaches {phase:?}"),
        Duration::from_secs(300),
        || async {
            let s = restore_status(c, name).await?;
            if s.phase == Some(phase) {
                Ok(())
            } else {
                Err(format!("{:?}", s.phase))
            }
        },
    )
    .await;
}

/// The ids of every order of the customer, as the shop's database holds
/// them now.
pub(super) async fn order_ids(
    c: &Cluster,
    app: &str,
    token: &str,
) -> Result<BTreeSet<String>, String> {
    let mut ids = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(k) => format!("/api/v1/orders?limit=100&cursor={k}"),
            None => "/api/v1/orders?limit=100".to_owned(),
        };
        let (status, body, _) = c.gateway(app, "GET", &path, None, Some(token)).await;
        if status != 200 {
            return Err(format!("{status}: {body}"));
        }
        for o in body["items"].as_array().into_iter().flatten() {
            ids.insert(o["id"].as_str().unwrap_or_default().to_owned());
        }
        match body["next_cursor"].as_str() {
            Some(k) => cursor = Some(k.to_owned()),
            None => return Ok(ids),
        }
    }
}

/// The order ids of an export of what a restore discarded.
pub(super) async fn exported_orders(key: &str) -> BTreeSet<String> {
    let store = foodapp_operator::agent::StoreArgs {
        database_url: String::new(),
        s3_endpoint: std::env::var("FOODAPP_E2E_S3_ENDPOINT").ok(),
        s3_region: setting("FOODAPP_E2E_S3_REGION", "us-east-1"),
        s3_bucket: setting("FOODAPP_E2E_S3_BUCKET", "foodapp-e2e"),
        s3_prefix: "e2e".to_owned(),
        s3_force_path_style: true,
        s3_checksums: foodapp_operator::agent::Checksums::WhenRequired,
        aws_access_key_id: Some(setting("FOODAPP_E2E_S3_ACCESS_KEY", "")),
        aws_secret_access_key: Some(setting("FOODAPP_E2E_S3_SECRET_KEY", "")),
        foodapp: APP.to_owned(),
        namespace: String::new(),
        pg_bin: None,
    };
    let client = foodapp_operator::agent::s3::client(&store).await;
    let bytes = foodapp_operator::agent::s3::get_bytes(&client, &store.s3_bucket, key)
        .await
        .unwrap();
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["kind"] == "order")
        .map(|l| l["row"]["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

struct Measured {
    name: String,
    seconds: f64,
    reads: super::traffic::Seen,
    writes: super::traffic::Seen,
    status: FoodAppRestoreStatus,
}

/// Runs restore `name` under traffic; what the traffic saw while it ran.
async fn under_traffic(c: &Cluster, shop: &Shop, name: &str, spec: Value) -> (Measured, Report) {
    let traffic = Traffic::start(shop.clone(), 2, 2);
    // Orders after the backup, on the live database.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let start = Instant::now();
    create_restore(c, name, spec).await;
    let status = finished(c, name).await;
    let end = Instant::now();
    // Writes resume and the API finishes rolling: watch a little longer.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let report = traffic.stop().await;
    let m = Measured {
        name: name.to_owned(),
        seconds: (end - start).as_secs_f64(),
        reads: report.seen(false, start, end + Duration::from_secs(10)),
        writes: report.seen(true, start, end + Duration::from_secs(10)),
        status,
    };
    let started = m
        .status
        .started_at
        .as_deref()
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
    let steps: Vec<String> = m
        .status
        .conditions
        .iter()
        .map(|c| match started {
            Some(s) => format!(
                "{} +{}s",
                c.type_,
                c.last_transition_time.0.duration_since(s).as_secs()
            ),
            None => c.type_.clone(),
        })
        .collect();
    c.log(&format!(
        "{}: {:?} in {:.0}s (write pause {:?}s, paused at {:?}, discarded {:?}; {}); reads: {}; writes: {}",
        m.name,
        m.status.phase,
        m.seconds,
        m.status.write_pause_seconds,
        m.status.writes_paused_at,
        m.status.discarded.as_ref().map(|d| d.orders),
        steps.join(", "),
        m.reads,
        m.writes
    ));
    (m, report)
}

/// A write refused during a switch is a 503 with a code a client retries on
/// (`restoring`, `unavailable`), never another error.
fn only_retry_laters(m: &Measured) {
    let other: Vec<&String> = m
        .writes
        .failed
        .keys()
        .filter(|k| !(k.starts_with("503 restoring") || k.starts_with("503 unavailable")))
        .collect();
    assert!(
        other.is_empty(),
        "{}: writes failed otherwise than 503: {}",
        m.name,
        m.writes
    );
}

/// Every order acknowledged is in the database, or in the export of what
/// the restore discarded — exactly those, and as many as it counted.
async fn every_order_accounted_for(
    c: &Cluster,
    token: &str,
    acknowledged: &BTreeSet<String>,
    m: &Measured,
) -> BTreeSet<String> {
    let present = c
        .eventually(
            "the customer's orders are listed",
            Duration::from_secs(60),
            || order_ids(c, APP, token),
        )
        .await;
    let missing: BTreeSet<String> = acknowledged.difference(&present).cloned().collect();
    let d = m.status.discarded.clone().unwrap_or_default();
    let exported = match &d.object_key {
        Some(key) => exported_orders(key).await,
        None => BTreeSet::new(),
    };
    let lost: Vec<&String> = missing.difference(&exported).collect();
    assert!(
        lost.is_empty(),
        "{}: acknowledged orders neither in the database nor exported: {lost:?}",
        m.name
    );
    assert_eq!(
        usize::try_from(d.orders).unwrap(),
        exported.len(),
        "{}: the count is the export",
        m.name
    );
    c.log(&format!(
        "ok: {}: of {} acknowledged orders, {} are in the restored database and {} were discarded, every one of them in {}",
        m.name,
        acknowledged.len(),
        acknowledged.len() - missing.len(),
        missing.len(),
        d.object_key.unwrap_or_default()
    ));
    present
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e with FOODAPP_E2E_KUBECONFIG"]
async fn restores_keep_the_shop_open() {
    let ns = setting("FOODAPP_E2E_RESTORE_NAMESPACE", "foodapp-e2e-restore");
    let Some((c, discovery, client, _)) = install(&ns).await else {
        return;
    };
    let Ok(endpoint) = std::env::var("FOODAPP_E2E_S3_ENDPOINT") else {
        c.log("restore checks SKIPPED: FOODAPP_E2E_S3_ENDPOINT is not set");
        return;
    };
    let minute = Duration::from_secs(60);
    c.ensure_namespace(&ns).await;
    with_backups_to(&c, &discovery).await;
    let mut grill = example("foodapp.yaml", &c.ns);
    grill.metadata.name = Some(APP.to_owned());
    grill.spec.api.replicas = 2;
    grill.spec.gateway.replicas = 1;
    // Every request of the test comes from one address (the port-forward).
    grill.spec.gateway.rate_limit.requests_per_second = 5000;
    grill.spec.gateway.rate_limit.burst = 10000;
    grill.spec.backup = Some(backup_spec(&endpoint));
    apply_foodapp(&c, &grill).await;
    c.eventually("FoodApp grill is Ready", 5 * minute, || c.ready(APP))
        .await;

    // A menu, a customer, a few orders, a backup.
    let shop = open_shop(&c, APP, "grill-customer@example.com").await;
    let token = shop.customer_token.clone();
    let login = json!({"email": "grill-customer@example.com", "password": "correct horse battery"});
    let warm = Traffic::start(shop.clone(), 1, 1);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before_backup = warm.stop().await;
    let obj = json!({"apiVersion": "foodapp.io/v1alpha1", "kind": "FoodAppBackup",
        "metadata": {"name": "grill-b1", "namespace": c.ns}, "spec": {"foodAppRef": APP}});
    c.api::<FoodAppBackup>()
        .create(&Default::default(), &serde_json::from_value(obj).unwrap())
        .await
        .unwrap();
    c.eventually("grill's backup succeeds", 5 * minute, || {
        backup_done(&c, "grill-b1")
    })
    .await;
    let mut acknowledged: BTreeSet<String> = before_backup
        .acknowledged()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert!(!acknowledged.is_empty(), "orders before the backup");
    let in_backup = acknowledged.clone();

    // 1. Beside, under traffic: reads never fail, writes pause for seconds.
    let (beside, report) =
        under_traffic(&c, &shop, "beside-1", json!({"backupRef": "grill-b1"})).await;
    assert_eq!(
        beside.status.phase,
        Some(RestorePhase::Succeeded),
        "{:?}",
        beside.status.error
    );
    assert!(
        beside.reads.failed.is_empty(),
        "every read succeeds: {}",
        beside.reads
    );
    assert!(
        beside.writes.longest_gap <= Duration::from_secs(10),
        "writes paused at most 10 s: {}",
        beside.writes
    );
    only_retry_laters(&beside);
    acknowledged.extend(report.acknowledged().into_iter().map(|(id, _)| id));
    every_order_accounted_for(&c, &token, &acknowledged, &beside).await;
    let kept = beside.status.previous.clone().unwrap();
    assert_eq!(kept.name, "grill-db");
    let old = c.api::<StatefulSet>().get("grill-db").await.unwrap();
    assert_eq!(
        old.spec.unwrap().replicas,
        Some(0),
        "the replaced database is kept, scaled to zero"
    );

    // 2. Undo, the same way: the discarded orders are back.
    let (undo, report) = under_traffic(&c, &shop, "undo-1", json!({"revert": "beside-1"})).await;
    assert_eq!(
        undo.status.phase,
        Some(RestorePhase::Succeeded),
        "{:?}",
        undo.status.error
    );
    assert!(
        undo.reads.failed.is_empty(),
        "every read succeeds: {}",
        undo.reads
    );
    assert!(
        undo.writes.longest_gap <= Duration::from_secs(10),
        "{}",
        undo.writes
    );
    assert_eq!(
        restore_status(&c, "beside-1").await.unwrap().phase,
        Some(RestorePhase::Reverted)
    );
    acknowledged.extend(report.acknowledged().into_iter().map(|(id, _)| id));
    every_order_accounted_for(&c, &token, &acknowledged, &undo).await;

    // 3. InPlace, for comparison: the API stops for the whole restore.
    let (in_place, _) = under_traffic(
        &c,
        &shop,
        "inplace-1",
        json!({"backupRef": "grill-b1", "mode": "InPlace"}),
    )
    .await;
    assert_eq!(
        in_place.status.phase,
        Some(RestorePhase::Succeeded),
        "{:?}",
        in_place.status.error
    );
    c.eventually(
        "grill is Ready after the InPlace restore",
        5 * minute,
        || c.ready(APP),
    )
    .await;

    // 4. A clone with anonymisation into a new FoodApp, while grill serves:
    // grill is not touched, the clone holds the backup's orders and nobody's
    // email, its administrator logs in with its own Secret.
    let clone = clone_anonymised(&c, &shop, &in_backup, &login).await;

    // 5. Kills at the steps that matter: the restore completes, or the
    // shop serves from the database it had — never a mix.
    kill_the_leader_mid_restore(&c, &client, &shop).await;
    kill_the_new_database_mid_restore(&c, &shop).await;
    kill_the_switch_agent(&c, &shop).await;

    c.log(&format!(
        "clone: {:.0}s into a new FoodApp (anonymised), grill meanwhile: reads failed {}, writes failed {}, longest write gap {:.2}s",
        clone.seconds,
        clone.reads.total - clone.reads.ok,
        clone.writes.total - clone.writes.ok,
        clone.writes.longest_gap.as_secs_f64(),
    ));
    c.log(&format!(
        "summary: Beside {:.0}s, write pause {:.2}s (longest gap seen {:.2}s), reads failed {}; undo {:.0}s, write pause {:.2}s; InPlace {:.0}s, reads failed {}, longest read gap {:.2}s, longest write gap {:.2}s",
        beside.seconds,
        beside.status.write_pause_seconds.unwrap_or_default(),
        beside.writes.longest_gap.as_secs_f64(),
        beside.reads.total - beside.reads.ok,
        undo.seconds,
        undo.status.write_pause_seconds.unwrap_or_default(),
        in_place.seconds,
        in_place.reads.total - in_place.reads.ok,
        in_place.reads.longest_gap.as_secs_f64(),
        in_place.writes.longest_gap.as_secs_f64(),
    ));
    c.remove_app_and_namespace(APP).await;
    c.log("all restore checks passed");
}

/// Clones grill's backup into a new FoodApp, anonymised, under traffic on
/// grill; what grill's traffic saw.
async fn clone_anonymised(
    c: &Cluster,
    shop: &Shop,
    in_backup: &BTreeSet<String>,
    login: &Value,
) -> Measured {
    let minute = Duration::from_secs(60);
    let (clone, _) = under_traffic(
        c,
        shop,
        "clone-1",
        json!({"backupRef": "grill-b1", "target": {"foodApp": STAGING, "anonymize": true}}),
    )
    .await;
    assert_eq!(
        clone.status.phase,
        Some(RestorePhase::Succeeded),
        "{:?}",
        clone.status.error
    );
    assert!(
        clone.reads.failed.is_empty() && clone.writes.failed.is_empty(),
        "grill serves as before while it is cloned: reads {}, writes {}",
        clone.reads,
        clone.writes
    );
    assert!(
        c.api::<foodapp_operator::crd::FoodApp>()
            .get(APP)
            .await
            .unwrap()
            .annotations()
            .get("foodapp.io/restore")
            .is_none(),
        "grill was never held"
    );
    c.eventually("the clone is Ready", 5 * minute, || c.ready(STAGING))
        .await;
    let admin = c
        .eventually(
            "the clone's administrator logs in with its own Secret",
            2 * minute,
            || c.admin_token(STAGING),
        )
        .await;
    let ids = c
        .eventually("the clone lists its orders", minute, || {
            order_ids(c, STAGING, &admin)
        })
        .await;
    assert_eq!(
        &ids, in_backup,
        "the clone holds exactly the backup's orders"
    );
    let (status, users, _) = c
        .gateway(
            STAGING,
            "GET",
            "/api/v1/users?limit=100",
            None,
            Some(&admin),
        )
        .await;
    assert_eq!(status, 200, "{users}");
    let emails: Vec<&str> = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["email"].as_str())
        .collect();
    assert!(
        emails
            .iter()
            .all(|e| e.ends_with("@anonymized.invalid") || *e == "admin@foodapp.local"),
        "{emails:?}"
    );
    assert!(emails.iter().any(|e| e.ends_with("@anonymized.invalid")));
    let (status, body, _) = c
        .gateway(
            STAGING,
            "POST",
            "/api/v1/auth/token",
            Some(login.clone()),
            None,
        )
        .await;
    assert_eq!(
        status, 401,
        "grill's customer cannot log in to the clone: {body}"
    );
    let (status, body, _) = c
        .gateway(APP, "POST", "/api/v1/auth/token", Some(login.clone()), None)
        .await;
    assert_eq!(status, 200, "on grill they still can: {body}");
    clone
}

/// Writes and reads work, and the FoodApp uses `database`.
async fn serving_from(c: &Cluster, shop: &Shop, database: &str) {
    let t = Traffic::start(shop.clone(), 1, 1);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let r = t.stop().await;
    let (reads, writes) = (
        r.seen(
            false,
            Instant::now() - Duration::from_secs(3),
            Instant::now(),
        ),
        r.seen(
            true,
            Instant::now() - Duration::from_secs(3),
            Instant::now(),
        ),
    );
    assert!(
        reads.ok > 0 && writes.ok > 0,
        "the shop serves: {reads}; {writes}"
    );
    let app = c
        .api::<foodapp_operator::crd::FoodApp>()
        .get(APP)
        .await
        .unwrap();
    assert_eq!(foodapp_operator::build::db_cluster(&app), database);
}

async fn in_use(c: &Cluster) -> String {
    let app = c
        .api::<foodapp_operator::crd::FoodApp>()
        .get(APP)
        .await
        .unwrap();
    foodapp_operator::build::db_cluster(&app)
}

/// The outcome of a restore that was disturbed: Succeeded on its database,
/// or Failed with the shop on the one it had.
async fn whole_or_untouched(c: &Cluster, shop: &Shop, name: &str, before: &str) {
    let s = finished(c, name).await;
    let expected = match s.phase {
        Some(RestorePhase::Succeeded) => s.database.clone().unwrap(),
        _ => before.to_owned(),
    };
    c.eventually(
        &format!("grill is Ready after {name}"),
        Duration::from_secs(300),
        || c.ready(APP),
    )
    .await;
    serving_from(c, shop, &expected).await;
    c.log(&format!(
        "ok: {name}: {:?}; the shop serves from {expected}{}",
        s.phase,
        s.error.map(|e| format!(" ({e})")).unwrap_or_default()
    ));
}

async fn kill_the_leader_mid_restore(c: &Cluster, client: &kube::Client, shop: &Shop) {
    let before = in_use(c).await;
    create_restore(c, "kill-leader", json!({"backupRef": "grill-b1"})).await;
    wait_phase(c, "kill-leader", RestorePhase::Restoring).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &c.system_ns);
    let leader = leases
        .get("foodapp-operator-leader")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &c.system_ns);
    pods.delete(&leader, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    c.log(&format!(
        "killed the operator's leader {leader} while kill-leader restores"
    ));
    whole_or_untouched(c, shop, "kill-leader", &before).await;
}

async fn kill_the_new_database_mid_restore(c: &Cluster, shop: &Shop) {
    let before = in_use(c).await;
    create_restore(c, "kill-db", json!({"backupRef": "grill-b1"})).await;
    let target = c
        .eventually(
            "kill-db names its database",
            Duration::from_secs(120),
            || async {
                restore_status(c, "kill-db")
                    .await?
                    .database
                    .ok_or_else(|| "not yet".to_owned())
            },
        )
        .await;
    c.eventually(
        "kill-db's restore Job runs",
        Duration::from_secs(300),
        || async {
            let pods = c
                .api::<Pod>()
                .list(&ListParams::default().labels("batch.kubernetes.io/job-name=kill-db-restore"))
                .await
                .map_err(|e| e.to_string())?;
            if pods.items.is_empty() {
                Err("no pod".into())
            } else {
                Ok(())
            }
        },
    )
    .await;
    c.api::<Pod>()
        .delete(
            &format!("{target}-0"),
            &DeleteParams::default().grace_period(0),
        )
        .await
        .unwrap();
    c.log(&format!("killed {target}-0 while kill-db restores into it"));
    whole_or_untouched(c, shop, "kill-db", &before).await;
}

async fn kill_the_switch_agent(c: &Cluster, shop: &Shop) {
    let before = in_use(c).await;
    create_restore(c, "kill-switch", json!({"backupRef": "grill-b1"})).await;
    wait_phase(c, "kill-switch", RestorePhase::Switching).await;
    let pods = c
        .api::<Pod>()
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=kill-switch-switch"))
        .await
        .unwrap();
    for p in pods.items {
        let _ = c
            .api::<Pod>()
            .delete(&p.name_any(), &DeleteParams::default().grace_period(0))
            .await;
        c.log(&format!("killed the switch agent {}", p.name_any()));
    }
    whole_or_untouched(c, shop, "kill-switch", &before).await;
}
