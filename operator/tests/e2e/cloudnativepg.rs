//! Engine CloudNativePG on a real API server that has CloudNativePG's and
//! the Barman Cloud Plugin's CRDs (v1.30, v0.14.0) but neither operator:
//! the API server checks every object the operator makes under their
//! schemas and CEL rules (transition rules included, on updates), the test
//! plays CloudNativePG's part by setting status, and the operator must not
//! fight over a field once idle. Runs alone:
//! `make e2e E2E_TEST=cloudnativepg_on_a_real_api_server`.

use std::collections::BTreeMap;
use std::time::Duration;

use foodapp_operator::build::cnpg;
use foodapp_operator::crd::foreign::{
    Backup, Cluster as CnpgCluster, ObjectStore, ScheduledBackup,
};
use foodapp_operator::crd::{FoodApp, FoodAppRestore};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::{SignedDuration, Timestamp, Unit};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{Cluster, MANAGER, apply_foodapp, database_condition, example, install, setting};

const APP: &str = "diner";

fn ago(seconds: i64) -> String {
    (Timestamp::now() - SignedDuration::from_secs(seconds))
        .round(Unit::Second)
        .unwrap()
        .to_string()
}

async fn install_crd(c: &Cluster, file: std::path::PathBuf) {
    let crd: CustomResourceDefinition =
        yaml_serde::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    Api::<CustomResourceDefinition>::all(c.client.clone())
        .patch(
            &crd.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
}

async fn remove_crds(c: &Cluster) {
    let crds: Api<CustomResourceDefinition> = Api::all(c.client.clone());
    for name in [
        "backups.postgresql.cnpg.io",
        "clusters.postgresql.cnpg.io",
        "poolers.postgresql.cnpg.io",
        "scheduledbackups.postgresql.cnpg.io",
        "objectstores.barmancloud.cnpg.io",
    ] {
        let _ = crds.delete(name, &DeleteParams::default()).await;
    }
}

async fn condition(c: &Cluster, type_: &str) -> Result<(String, String, String), String> {
    let app = c
        .api::<FoodApp>()
        .get(APP)
        .await
        .map_err(|e| e.to_string())?;
    let found = app
        .status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == type_))
        .ok_or(format!("no {type_}"))?;
    Ok((found.status, found.reason, found.message))
}

async fn clusters(c: &Cluster) -> Vec<CnpgCluster> {
    c.api::<CnpgCluster>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
}

/// What CloudNativePG would report on Cluster `name`: ready, archiving, and
/// its app login.
async fn play_cloudnativepg(c: &Cluster, name: &str) {
    c.api::<CnpgCluster>()
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {
                "instances": 3, "readyInstances": 3, "phase": "Cluster in healthy state",
                "latestGeneratedNode": 3,
                "conditions": [{"type": "ContinuousArchiving", "status": "True",
                    "reason": "ContinuousArchivingSuccess", "message": "Continuous archiving is working",
                    "lastTransitionTime": ago(60)}]}})),
        )
        .await
        .unwrap();
    let login: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("{name}-app"), "namespace": c.ns},
        "stringData": {"username": "foodapp", "password": format!("{name}-pw"), "dbname": "foodapp"}}))
    .unwrap();
    c.api::<Secret>()
        .patch(
            &format!("{name}-app"),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&login),
        )
        .await
        .unwrap();
}

/// The resourceVersion of every object this FoodApp has under those CRDs.
async fn versions(c: &Cluster) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for cl in clusters(c).await {
        out.insert(
            format!("Cluster/{}", cl.name_any()),
            cl.resource_version().unwrap_or_default(),
        );
    }
    for s in c
        .api::<ScheduledBackup>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        out.insert(
            format!("ScheduledBackup/{}", s.name_any()),
            s.resource_version().unwrap_or_default(),
        );
    }
    for s in c
        .api::<ObjectStore>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        out.insert(
            format!("ObjectStore/{}", s.name_any()),
            s.resource_version().unwrap_or_default(),
        );
    }
    for p in c
        .api::<NetworkPolicy>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        out.insert(
            format!("NetworkPolicy/{}", p.name_any()),
            p.resource_version().unwrap_or_default(),
        );
    }
    let connection = c.api::<Secret>().get(&format!("{APP}-db-connection")).await;
    if let Ok(s) = connection {
        out.insert(
            "Secret/db-connection".into(),
            s.resource_version().unwrap_or_default(),
        );
    }
    out
}

async fn restore_done(c: &Cluster, name: &str) -> Result<FoodAppRestore, String> {
    let r = c
        .api::<FoodAppRestore>()
        .get(name)
        .await
        .map_err(|e| e.to_string())?;
    let phase = r.status.as_ref().and_then(|s| s.phase);
    match phase {
        Some(p) if p.is_final() => Ok(r),
        other => Err(format!(
            "{other:?}: {:?}",
            r.status.and_then(|s| s.conditions.last().cloned())
        )),
    }
}

fn complete(r: &FoodAppRestore) -> (String, String) {
    let c = r
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Complete")
        .unwrap();
    (c.reason.clone(), c.message.clone())
}

/// The 37-character cap on CloudNativePG FoodApp names, as the API server
/// evaluates its rule (`optionalOldSelf`): a new one is refused, one made
/// before the cap (made here with the rule taken out of the CRD for a
/// moment, as the previous release's CRD had none) stays editable.
async fn name_cap(c: &Cluster, diner: &FoodApp) {
    let long = "a".repeat(38);
    let mut app = diner.clone();
    app.metadata.name = Some(long.clone());
    let mut value = serde_json::to_value(&app).unwrap();
    value.as_object_mut().unwrap().remove("status");
    let apps = c.api::<FoodApp>();
    let refused = apps
        .patch(
            &long,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&value),
        )
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("at most 37 characters"),
        "{refused}"
    );
    let crds = Api::<CustomResourceDefinition>::all(c.client.clone());
    let original = crds.get("foodapps.foodapp.io").await.unwrap();
    let mut without = original.clone();
    without.metadata.managed_fields = None;
    without.metadata.resource_version = None;
    let schema = without.spec.versions[0]
        .schema
        .as_mut()
        .unwrap()
        .open_api_v3_schema
        .as_mut()
        .unwrap();
    schema
        .x_kubernetes_validations
        .as_mut()
        .unwrap()
        .retain(|r| !r.rule.contains("size() <= 37"));
    crds.patch(
        "foodapps.foodapp.io",
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&without),
    )
    .await
    .unwrap();
    c.eventually(
        "a long name is admitted without the rule",
        Duration::from_secs(60),
        || async {
            apps.patch(
                &long,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&value),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        },
    )
    .await;
    let mut back = original.clone();
    back.metadata.managed_fields = None;
    back.metadata.resource_version = None;
    crds.patch(
        "foodapps.foodapp.io",
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&back),
    )
    .await
    .unwrap();
    c.eventually(
        "the rule is back: a new long name is refused",
        Duration::from_secs(60),
        || async {
            // A create, in a dry run: an apply to an object that exists is
            // an update, which the rule lets through.
            let mut other = app.clone();
            other.metadata.name = Some("b".repeat(38));
            let dry_run = PostParams {
                dry_run: true,
                ..Default::default()
            };
            match apps.create(&dry_run, &other).await {
                Err(e) if e.to_string().contains("at most 37") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    c.merge(
        &long,
        json!({"spec": {"database": {"cloudNativePG": {"instances": 2}}}}),
    )
    .await
    .expect("a FoodApp made before the cap stays editable");
    apps.delete(&long, &DeleteParams::default()).await.unwrap();
    c.eventually(
        "the long-named FoodApp is gone",
        Duration::from_secs(120),
        || async {
            match apps.get_opt(&long).await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(_) => Err("still there".to_owned()),
            }
        },
    )
    .await;
    c.log("ok: a new 38-character CloudNativePG FoodApp is refused at admission; one made before the cap is edited and deleted");
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e with FOODAPP_E2E_KUBECONFIG"]
async fn cloudnativepg_on_a_real_api_server() {
    let ns = setting("FOODAPP_E2E_CNPG_NAMESPACE", "foodapp-e2e-cnpg");
    let Some((c, discovery, _client, _)) = install(&ns).await else {
        return;
    };
    let minute = Duration::from_secs(60);
    c.ensure_namespace(&ns).await;
    remove_crds(&c).await;
    let credentials = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "spaces-credentials", "namespace": c.ns},
        "stringData": {"AWS_ACCESS_KEY_ID": "e2e", "AWS_SECRET_ACCESS_KEY": "e2e-never-used"}});
    c.apply_value(&discovery, &credentials, &c.ns).await;
    let mut diner = example("foodapp-cloudnativepg.yaml", &c.ns);
    // No cert-manager here.
    diner.spec.gateway.tls = None;
    name_cap(&c, &diner).await;
    apply_foodapp(&c, &diner).await;

    // 1. Without CloudNativePG: what to install.
    let (_, _, message) = c
        .eventually("diner says CloudNativePG is missing", minute, || async {
            match database_condition(&c, APP).await? {
                (s, r, m) if s == "False" && r == "CloudNativePGMissing" => Ok((s, r, m)),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    assert!(message.contains("CloudNativePG 1.30"), "{message}");
    c.log("ok: without CloudNativePG, DatabaseReady is False, CloudNativePGMissing");

    // 2. CloudNativePG without the plugin: a Cluster without archiving, and
    //    BackupScheduled says what to install.
    for kind in ["backups", "clusters", "poolers", "scheduledbackups"] {
        install_crd(
            &c,
            super::common::cnpg_crds_dir().join(format!("postgresql.cnpg.io_{kind}.yaml")),
        )
        .await;
    }
    c.eventually("the API server accepts diner-db", 2 * minute, || async {
        let cl = c
            .api::<CnpgCluster>()
            .get_opt("diner-db")
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no Cluster diner-db")?;
        let (_, reason, _) = condition(&c, "BackupScheduled").await?;
        (cl.spec.plugins.is_empty() && reason == "BarmanCloudPluginMissing")
            .then_some(())
            .ok_or(format!("{reason}: {:?}", cl.spec.plugins))
    })
    .await;
    assert!(
        c.api::<ScheduledBackup>()
            .get_opt("diner-db-backup")
            .await
            .unwrap()
            .is_none(),
        "no schedule before the plugin"
    );
    c.log("ok: CloudNativePG without the plugin: diner-db accepted, not archiving, BackupScheduled=False BarmanCloudPluginMissing");

    // 3. The plugin's CRD: the ObjectStore, and the Cluster updated to
    //    archive through it (an update, under the transition rules).
    install_crd(&c, super::common::foreign_crd("ObjectStore")).await;
    let server = c
        .eventually(
            "diner-db archives through the plugin",
            2 * minute,
            || async {
                let cl = c
                    .api::<CnpgCluster>()
                    .get("diner-db")
                    .await
                    .map_err(|e| e.to_string())?;
                c.api::<ObjectStore>()
                    .get_opt("diner-archive")
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("no ObjectStore")?;
                let sb = c
                    .api::<ScheduledBackup>()
                    .get_opt("diner-db-backup")
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("no ScheduledBackup")?;
                let p = cl.spec.plugins.first().ok_or("no plugin")?;
                (p.is_wal_archiver == Some(true) && sb.spec.method.as_deref() == Some("plugin"))
                    .then(|| cnpg::live_server_name(&cl))
                    .ok_or(format!("{:?}", cl.spec.plugins))
            },
        )
        .await;
    assert!(
        server.starts_with("diner-db-") && server.len() == "diner-db-".len() + 8,
        "{server}"
    );
    c.log(&format!("ok: the ObjectStore, the Cluster's plugin (serverName {server}) and the plugin's ScheduledBackup were accepted"));

    // 4. CloudNativePG's part: ready, archived, a base backup two hours ago.
    play_cloudnativepg(&c, "diner-db").await;
    c.api::<ObjectStore>()
        .patch_status(
            "diner-archive",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"serverRecoveryWindow": {&server: {
                "firstRecoverabilityPoint": ago(7200), "lastSuccessfulBackupTime": ago(7000)}}}})),
        )
        .await
        .unwrap();
    let backup: Backup = serde_json::from_value(json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Backup",
        "metadata": {"name": "diner-db-backup-1", "namespace": c.ns},
        "spec": {"cluster": {"name": "diner-db"}, "method": "plugin",
                 "pluginConfiguration": {"name": cnpg::BARMAN_CLOUD_PLUGIN}}}))
    .unwrap();
    c.api::<Backup>()
        .create(&PostParams::default(), &backup)
        .await
        .unwrap();
    c.api::<Backup>()
        .patch_status(
            "diner-db-backup-1",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"phase": "completed", "startedAt": ago(7200), "stoppedAt": ago(7000)}})),
        )
        .await
        .unwrap();
    c.eventually(
        "BackupScheduled reads the recovery window",
        2 * minute,
        || async {
            match condition(&c, "BackupScheduled").await? {
                (s, _, m) if s == "True" && m.contains("recoverable from: 20") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    c.log("ok: BackupScheduled=True with the recovery window from the ObjectStore's status");

    // 5. A point in time the archive cannot hold yet: refused, nothing made.
    let restore = |name: &str, target: String| {
        serde_json::from_value::<FoodAppRestore>(json!({
            "apiVersion": "foodapp.io/v1alpha1", "kind": "FoodAppRestore",
            "metadata": {"name": name, "namespace": c.ns},
            "spec": {"foodAppRef": APP, "targetTime": target, "deadlineMinutes": 30}}))
        .unwrap()
    };
    let restores = c.api::<FoodAppRestore>();
    restores
        .create(&PostParams::default(), &restore("too-recent", ago(60)))
        .await
        .unwrap();
    let done = c
        .eventually("the too-recent restore ends", 2 * minute, || {
            restore_done(&c, "too-recent")
        })
        .await;
    let (reason, message) = complete(&done);
    assert_eq!(reason, "TargetNotRecoverable", "{message}");
    assert!(message.contains("less than 5 minutes ago"), "{message}");
    assert_eq!(clusters(&c).await.len(), 1, "no Cluster was made");
    c.log(&format!("ok: refused before anything changed: {message}"));

    // 6. A recovery whose Job fails: the restore ends Failed and the
    //    half-recovered Cluster goes; diner stays on diner-db.
    restores
        .create(&PostParams::default(), &restore("pitr", ago(3600)))
        .await
        .unwrap();
    let new = c
        .eventually(
            "the API server accepts the recovered Cluster",
            2 * minute,
            || async {
                clusters(&c)
                    .await
                    .into_iter()
                    .filter_map(|cl| cl.metadata.name)
                    .find(|n| n != "diner-db")
                    .ok_or("not yet".to_owned())
            },
        )
        .await;
    let recovered = c.api::<CnpgCluster>().get(&new).await.unwrap();
    let origin = recovered.spec.external_clusters[0].plugin.clone().unwrap();
    assert_eq!(origin.parameters["serverName"], server);
    assert_ne!(
        cnpg::live_server_name(&recovered),
        server,
        "a folder of its own"
    );
    let failing: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": format!("{new}-1-full-recovery"), "namespace": c.ns},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "full-recovery", "image": "debian:bookworm-slim",
                "command": ["sh", "-c", "echo 'no target backup found' >&2; exit 1"]}]}}}}))
    .unwrap();
    c.api::<Job>()
        .create(&PostParams::default(), &failing)
        .await
        .unwrap();
    let done = c
        .eventually("the failed recovery ends the restore", 3 * minute, || {
            restore_done(&c, "pitr")
        })
        .await;
    let (reason, message) = complete(&done);
    assert_eq!(reason, "Failed", "{message}");
    assert!(
        message.contains(&format!("{new}-1-full-recovery failed")),
        "{message}"
    );
    c.eventually("the half-recovered Cluster is deleted", minute, || async {
        let left: Vec<String> = clusters(&c)
            .await
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        (left == ["diner-db"])
            .then_some(())
            .ok_or(format!("{left:?}"))
    })
    .await;
    c.log(&format!("ok: a failed recovery Job: {message}"));

    // 7. A recovery that succeeded, as the restore leaves it: the recovered
    //    Cluster under the restore's manager, the FoodApp switched to it.
    let app = c.api::<FoodApp>().get(APP).await.unwrap();
    let model = foodapp_operator::controller::validate::job_model(&app, "agent").unwrap();
    let switched = foodapp_operator::build::names::recovered_cluster(APP, "e2e-switch");
    let desired = cnpg::recovered_cluster(&model, &switched, &server, &ago(3600));
    c.api::<CnpgCluster>()
        .patch(
            &switched,
            &PatchParams::apply(cnpg::RESTORE_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
        .unwrap();
    play_cloudnativepg(&c, &switched).await;
    c.merge(
        APP,
        json!({"metadata": {"annotations": {"foodapp.io/database-cluster": switched}}}),
    )
    .await
    .unwrap();
    c.eventually(
        "the FoodApp takes over the recovered Cluster",
        2 * minute,
        || async {
            let sb = c
                .api::<ScheduledBackup>()
                .get_opt(&format!("{switched}-backup"))
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no schedule yet")?;
            let old_schedule = c
                .api::<ScheduledBackup>()
                .get_opt("diner-db-backup")
                .await
                .map_err(|e| e.to_string())?;
            let old = c
                .api::<CnpgCluster>()
                .get("diner-db")
                .await
                .map_err(|e| e.to_string())?;
            let new = c
                .api::<CnpgCluster>()
                .get(&switched)
                .await
                .map_err(|e| e.to_string())?;
            let in_use = |cl: &CnpgCluster| cl.labels().get(cnpg::IN_USE_LABEL).cloned();
            let url = c
                .api::<Secret>()
                .get(&format!("{APP}-db-connection"))
                .await
                .map_err(|e| e.to_string())?
                .data
                .and_then(|d| {
                    d.get("DATABASE_URL")
                        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                })
                .unwrap_or_default();
            let ok = sb.spec.cluster.name == switched
                && old_schedule.is_none()
                && in_use(&old).is_none()
                && in_use(&new).as_deref() == Some("true")
                && url.contains(&format!("@{switched}-rw."));
            ok.then_some(()).ok_or(format!(
                "schedule {:?}, old schedule {}, in use old {:?} new {:?}, url host {}",
                sb.spec.cluster.name,
                old_schedule.is_some(),
                in_use(&old),
                in_use(&new),
                url.split('@').nth(1).unwrap_or_default()
            ))
        },
    )
    .await;
    let new = c.api::<CnpgCluster>().get(&switched).await.unwrap();
    assert!(
        new.spec.bootstrap.as_ref().unwrap().recovery.is_some(),
        "the FoodApp left the bootstrap alone"
    );
    // What the restore's hand-over applies once the FoodApp applied the
    // Cluster: its manager keeps only the bootstrap and the origin. A field
    // then dropped from the FoodApp leaves the Cluster (server-side apply
    // prunes what no manager applies any more).
    assert!(new.spec.resources.is_some(), "the example sets resources");
    c.api::<CnpgCluster>()
        .patch(
            &switched,
            &PatchParams::apply(cnpg::RESTORE_MANAGER).force(),
            &Patch::Apply(&cnpg::recovery_fields(&new)),
        )
        .await
        .unwrap();
    c.merge(APP, json!({"spec": {"database": {"resources": null}}}))
        .await
        .unwrap();
    c.eventually(
        "the dropped resources leave the recovered Cluster",
        2 * minute,
        || async {
            let cl = c
                .api::<CnpgCluster>()
                .get(&switched)
                .await
                .map_err(|e| e.to_string())?;
            match (&cl.spec.resources, &cl.spec.bootstrap) {
                (None, Some(b)) if b.recovery.is_some() => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    c.log("ok: after the hand-over a field dropped from the FoodApp left the recovered Cluster, its bootstrap stayed");
    let policy = c
        .api::<NetworkPolicy>()
        .get(&format!("{APP}-db"))
        .await
        .unwrap();
    let selector = policy
        .spec
        .unwrap()
        .pod_selector
        .unwrap()
        .match_labels
        .unwrap();
    assert_eq!(
        selector[cnpg::APP_LABEL],
        APP,
        "every Cluster of the FoodApp: {selector:?}"
    );
    c.log(&format!("ok: after the switch to {switched}: its own ScheduledBackup accepted, diner-db's pruned, the in-use label moved, the connection names it"));

    // 8. Idle: nothing fights over a field.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let before = versions(&c).await;
    let passes = 6;
    for _ in 0..passes {
        // Each change of the FoodApp wakes its reconcile at once.
        c.merge(
            APP,
            json!({"metadata": {"annotations": {"e2e/poke": ago(0)}}}),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let after = versions(&c).await;
    let changed: Vec<&String> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, _)| k)
        .collect();
    assert!(changed.is_empty(), "written while idle: {changed:?}");
    c.log(&format!(
        "ok: {passes} reconciles over 60s wrote to none of {} objects ({})",
        before.len(),
        before.keys().cloned().collect::<Vec<_>>().join(", ")
    ));

    // 9. A warning the API server returns on an apply reaches the FoodApp
    //    as an Event (here the API server's own deprecation of a version,
    //    as CloudNativePG's webhook warns of the in-tree Barman Cloud).
    let crds = Api::<CustomResourceDefinition>::all(c.client.clone());
    let mut crd = crds.get("clusters.postgresql.cnpg.io").await.unwrap();
    crd.spec.versions[0].deprecated = Some(true);
    crd.spec.versions[0].deprecation_warning =
        Some("e2e: postgresql.cnpg.io/v1 Cluster is going away".into());
    crd.metadata.managed_fields = None;
    crds.patch(
        &crd.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    c.merge(
        APP,
        json!({"spec": {"database": {"cloudNativePG": {"instances": 2}}}}),
    )
    .await
    .unwrap();
    c.eventually(
        "the warning is an Event on the FoodApp",
        2 * minute,
        || async {
            let events =
                Api::<k8s_openapi::api::events::v1::Event>::namespaced(c.client.clone(), &c.ns)
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
            events
                .items
                .iter()
                .find(|e| {
                    e.reason.as_deref() == Some("ApiServerWarning")
                        && e.note
                            .as_deref()
                            .is_some_and(|n| n.contains("is going away"))
                })
                .map(|e| e.note.clone().unwrap_or_default())
                .ok_or("no ApiServerWarning Event yet".to_owned())
        },
    )
    .await;
    c.log("ok: the API server's warning on applying the Cluster is an ApiServerWarning Event on the FoodApp");

    c.remove_app_and_namespace(APP).await;
    if setting("FOODAPP_E2E_KEEP", "0") != "1" {
        c.eventually("diner is gone", 2 * minute, || async {
            match c
                .api::<FoodApp>()
                .get_opt(APP)
                .await
                .map_err(|e| e.to_string())?
            {
                None => Ok(()),
                Some(_) => Err("still there".to_owned()),
            }
        })
        .await;
        remove_crds(&c).await;
    }
    c.log("all CloudNativePG checks passed");
}
