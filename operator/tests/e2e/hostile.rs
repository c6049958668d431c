//! A hostile tenant on a real API server (issue 21 point 2): objects made
//! in advance under the names the operator derives are refused with the
//! condition `Conflict`, and nothing of them is used.

use std::time::Duration;

use foodapp_operator::build::names;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::DeleteParams;
use kube::discovery::Discovery;
use serde_json::{Value, json};

use super::{Cluster, apply_foodapp, example, setting};

async fn conflict(c: &Cluster, app: &str) -> Result<String, String> {
    let fa = c
        .api::<foodapp_operator::crd::FoodApp>()
        .get(app)
        .await
        .map_err(|e| e.to_string())?;
    let cond = fa
        .status
        .ok_or("no status")?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Conflict")
        .ok_or("no Conflict condition")?;
    match cond.status.as_str() {
        "True" => Ok(cond.message),
        _ => Err(format!("Conflict is {}: {}", cond.status, cond.message)),
    }
}

pub async fn hostile_tenant(c: &Cluster, discovery: &Discovery) {
    let minute = Duration::from_secs(60);
    let image = setting(
        "FOODAPP_E2E_API_IMAGE",
        foodapp_operator::crd::DEFAULT_API_IMAGE,
    );
    let labels = json!({"app.kubernetes.io/instance": "tenant"});
    // A Service that would take the customers' traffic, a ServiceAccount
    // whose token would reach the backup image, and the first migration
    // Job, finished without migrating anything.
    let planted: Vec<Value> = vec![
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "tenant-gateway", "namespace": c.ns, "labels": labels},
            "spec": {"selector": {"app": "attacker"}, "ports": [{"port": 80}]}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "tenant-backup", "namespace": c.ns, "labels": labels}}),
        json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": names::migration_job("tenant", &image, None), "namespace": c.ns, "labels": labels},
            "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "m", "image": setting("FOODAPP_E2E_POSTGRES_IMAGE", "postgres:16"),
                    "command": ["true"]}]}}}}),
        // A Secret with a signing key the attacker knows.
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "rogue-api", "namespace": c.ns},
            "stringData": {"JWT_SECRET": "known-to-the-attacker"}}),
    ];
    for obj in &planted {
        c.apply_value(discovery, obj, &c.ns).await;
    }
    let job = names::migration_job("tenant", &image, None);
    c.eventually("the planted migration Job completes", minute, || async {
        let j = c.api::<Job>().get(&job).await.map_err(|e| e.to_string())?;
        match j.status.and_then(|s| s.succeeded) {
            Some(1) => Ok(()),
            other => Err(format!("succeeded: {other:?}")),
        }
    })
    .await;

    let mut tenant = example("foodapp.yaml", &c.ns);
    tenant.metadata.name = Some("tenant".into());
    tenant.spec.backup = Some(
        serde_json::from_value(json!({"schedule": "0 3 * * *", "s3": {"bucket": "foodapp-e2e",
            "credentialsSecret": "spaces-credentials", "endpoint": "http://10.244.0.1:9000", "region": "us-east-1"}}))
        .unwrap(),
    );
    let mut rogue = example("foodapp.yaml", &c.ns);
    rogue.metadata.name = Some("rogue".into());
    apply_foodapp(c, &tenant).await;
    apply_foodapp(c, &rogue).await;

    let message = c
        .eventually(
            "tenant's Conflict names what was planted",
            2 * minute,
            || async {
                let m = conflict(c, "tenant").await?;
                let all = [
                    "Service tenant-gateway",
                    "ServiceAccount tenant-backup",
                    &format!("Job {job}"),
                ];
                match all.iter().find(|n| !m.contains(*n)) {
                    None => Ok(m),
                    Some(n) => Err(format!("{n} not named yet: {m}")),
                }
            },
        )
        .await;
    c.log(&format!("ok: tenant Conflict: {message}"));
    // Let the operator settle with the database up: still nothing used.
    c.eventually("tenant's database runs", 3 * minute, || async {
        let s = c
            .api::<StatefulSet>()
            .get("tenant-db")
            .await
            .map_err(|e| e.to_string())?;
        match s.status.and_then(|s| s.ready_replicas) {
            Some(1) => Ok(()),
            other => Err(format!("ready: {other:?}")),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let service = c.api::<Service>().get("tenant-gateway").await.unwrap();
    assert_eq!(
        service.spec.unwrap().selector.unwrap()["app"],
        "attacker",
        "the planted Service is not applied over"
    );
    assert!(service.metadata.owner_references.is_none());
    assert!(
        c.api::<CronJob>()
            .get_opt("tenant-backup")
            .await
            .unwrap()
            .is_none(),
        "no backup pod runs as the planted ServiceAccount"
    );
    assert!(
        c.api::<Deployment>()
            .get_opt("tenant-api")
            .await
            .unwrap()
            .is_none(),
        "the API never rolls out on a migration Job it did not run"
    );
    c.log("ok: tenant: the planted Service, ServiceAccount and migration Job are used for nothing");

    let message = c
        .eventually(
            "rogue's Conflict names the planted Secret",
            minute,
            || async {
                let m = conflict(c, "rogue").await?;
                if m.contains("Secret rogue-api") {
                    Ok(m)
                } else {
                    Err(m)
                }
            },
        )
        .await;
    assert!(message.contains("foodapp.io/owner-uid="), "{message}");
    for name in ["rogue-api", "rogue-gateway"] {
        assert!(
            c.api::<Deployment>().get_opt(name).await.unwrap().is_none(),
            "{name}: nothing runs with the planted signing key"
        );
    }
    assert!(
        c.api::<StatefulSet>()
            .get_opt("rogue-db")
            .await
            .unwrap()
            .is_none()
    );
    let secret = c.api::<Secret>().get("rogue-api").await.unwrap();
    assert!(
        !secret
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("foodapp.io/owner-uid"),
        "the planted Secret is not adopted"
    );
    // Gone: the operator makes its own, and the conflict clears.
    c.api::<Secret>()
        .delete("rogue-api", &DeleteParams::default())
        .await
        .unwrap();
    c.eventually("rogue's Conflict clears", 2 * minute, || async {
        match conflict(c, "rogue").await {
            Err(e) if e.starts_with("Conflict is False") => Ok(()),
            Err(e) => Err(e),
            Ok(m) => Err(m),
        }
    })
    .await;
    let own = c.api::<Secret>().get("rogue-api").await.unwrap();
    let uid = c
        .api::<foodapp_operator::crd::FoodApp>()
        .get("rogue")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    assert_eq!(
        own.metadata.annotations.unwrap()["foodapp.io/owner-uid"],
        uid,
        "the operator's own Secret carries its record"
    );
    c.log("ok: rogue: the planted API Secret is never used; deleted, the operator makes its own");
    for app in ["tenant", "rogue"] {
        let _ = c
            .api::<foodapp_operator::crd::FoodApp>()
            .delete(app, &DeleteParams::default())
            .await;
    }
    for obj in &planted {
        let name = obj["metadata"]["name"].as_str().unwrap();
        let _ = match obj["kind"].as_str().unwrap() {
            "Service" => c
                .api::<Service>()
                .delete(name, &DeleteParams::default())
                .await
                .map(|_| ()),
            "Job" => c
                .api::<Job>()
                .delete(name, &DeleteParams::background())
                .await
                .map(|_| ()),
            "ServiceAccount" => c
                .api::<k8s_openapi::api::core::v1::ServiceAccount>()
                .delete(name, &DeleteParams::default())
                .await
                .map(|_| ()),
            _ => Ok(()),
        };
    }
}
