//! Server-side apply with one field manager, skipping objects that already
//! match (so an unchanged FoodApp costs no writes), never overwriting
//! generated Secrets, and pruning what the spec no longer wants.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, Secret, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::build::{BackupObjects, Desired, MANAGER, instance_selector, names};

#[derive(Debug, thiserror::Error)]
#[error("applying {kind} {name}: {source}")]
pub struct Error {
    pub kind: String,
    pub name: String,
    #[source]
    pub source: kube::Error,
}

/// A namespaced Kubernetes object the operator applies.
pub trait Object:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
{
}

impl<K> Object for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug
{
}

/// The error for `kind`/`name`, for `map_err`.
pub fn failed(kind: &str, name: &str) -> impl Fn(kube::Error) -> Error + use<> {
    let (kind, name) = (kind.to_owned(), name.to_owned());
    move |source| Error {
        kind: kind.clone(),
        name: name.clone(),
        source,
    }
}

/// What applying changed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Applied {
    pub writes: u32,
    /// Whether the migration Job was created by this pass.
    pub migration_job_created: bool,
}

/// True when every field set in `desired` has the same value in `actual`:
/// the API server adds defaults and status, which must not count as drift.
pub fn is_subset(desired: &Value, actual: &Value) -> bool {
    match (desired, actual) {
        (Value::Object(d), Value::Object(a)) => d
            .iter()
            .all(|(k, v)| v.is_null() || a.get(k).is_some_and(|av| is_subset(v, av))),
        (Value::Array(d), Value::Array(a)) => {
            d.len() == a.len() && d.iter().zip(a).all(|(x, y)| is_subset(x, y))
        }
        _ => desired == actual,
    }
}

/// Applies `obj` server-side with the operator's field manager.
async fn server_side_apply<K: Object>(client: &Client, ns: &str, obj: &K) -> Result<(), Error> {
    let name = obj.meta().name.clone().unwrap_or_default();
    Api::<K>::namespaced(client.clone(), ns)
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await
        .map_err(failed(&K::kind(&()), &name))?;
    Ok(())
}

/// Creates or updates `obj`; an object that already matches is left alone.
/// True when it wrote.
async fn ensure<K: Object>(
    client: &Client,
    ns: &str,
    obj: &K,
    applied: &mut Applied,
) -> Result<bool, Error> {
    if let Some(current) = create_once(client, ns, obj).await? {
        let desired = serde_json::to_value(obj).unwrap_or_default();
        let actual = serde_json::to_value(&current).unwrap_or_default();
        if is_subset(&desired, &actual) {
            return Ok(false);
        }
        server_side_apply(client, ns, obj).await?;
    }
    applied.writes += 1;
    Ok(true)
}

/// Creates `obj` unless an object of that name exists, which is returned
/// instead and left untouched: generated Secrets (never rewritten) and the
/// Jobs of backups and restores (immutable once running).
pub async fn create_once<K: Object>(
    client: &Client,
    ns: &str,
    obj: &K,
) -> Result<Option<K>, Error> {
    let name = obj.meta().name.clone().unwrap_or_default();
    let existing = Api::<K>::namespaced(client.clone(), ns)
        .get_opt(&name)
        .await
        .map_err(failed(&K::kind(&()), &name))?;
    if existing.is_none() {
        server_side_apply(client, ns, obj).await?;
    }
    Ok(existing)
}

async fn secret(
    client: &Client,
    ns: &str,
    secret: &Secret,
    applied: &mut Applied,
) -> Result<(), Error> {
    if create_once(client, ns, secret).await?.is_none() {
        applied.writes += 1;
    }
    Ok(())
}

/// volumeClaimTemplates cannot change after creation: keep the existing
/// ones, and tend the claim itself (its size and who owns it).
async fn statefulset(
    client: &Client,
    ns: &str,
    app: &str,
    desired: &StatefulSet,
    applied: &mut Applied,
) -> Result<(), Error> {
    let name = desired.metadata.name.clone().unwrap_or_default();
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let current = api
        .get_opt(&name)
        .await
        .map_err(failed("StatefulSet", &name))?;
    let wanted = desired_claim(app, desired, current.is_some());
    let mut desired = desired.clone();
    if let (Some(spec), Some(current_spec)) = (
        desired.spec.as_mut(),
        current.as_ref().and_then(|c| c.spec.as_ref()),
    ) {
        spec.volume_claim_templates = current_spec.volume_claim_templates.clone();
    }
    Box::pin(ensure(client, ns, &desired, applied)).await?;
    Box::pin(claim(client, ns, &wanted, applied)).await
}

/// What the data claim should look like.
struct ClaimWanted {
    name: String,
    /// Size the spec asks for, when the StatefulSet already existed (a new
    /// one creates its claim at the right size).
    size: Option<Quantity>,
    /// The FoodApp's reference, and whether the claim should carry it.
    owner: Option<OwnerReference>,
    owned: bool,
}

/// The storage a claim (or claim template) requests.
fn requested_storage(spec: Option<&PersistentVolumeClaimSpec>) -> Option<&Quantity> {
    spec?.resources.as_ref()?.requests.as_ref()?.get("storage")
}

fn desired_claim(app: &str, desired: &StatefulSet, existed: bool) -> ClaimWanted {
    let spec = desired.spec.as_ref();
    let size = requested_storage(
        spec.and_then(|s| s.volume_claim_templates.as_ref())
            .and_then(|t| t.first())
            .and_then(|t| t.spec.as_ref()),
    )
    .cloned();
    let owned = spec
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref())
        .and_then(|p| p.when_deleted.as_deref())
        == Some("Delete");
    let owner = desired
        .metadata
        .owner_references
        .as_ref()
        .and_then(|o| o.first())
        .map(|o| OwnerReference {
            controller: Some(false),
            block_owner_deletion: Some(false),
            ..o.clone()
        });
    ClaimWanted {
        name: names::db_pvc(app),
        size: size.filter(|_| existed),
        owner,
        owned,
    }
}

/// Grows the claim when the spec asks for more (never shrinks it), and makes
/// deletionPolicy hold without a finalizer: with Delete the FoodApp owns the
/// claim, so the garbage collector removes it with the FoodApp; with Retain
/// it does not, and the data survives.
async fn claim(
    client: &Client,
    ns: &str,
    wanted: &ClaimWanted,
    applied: &mut Applied,
) -> Result<(), Error> {
    let err = failed("PersistentVolumeClaim", &wanted.name);
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let Some(pvc) = api.get_opt(&wanted.name).await.map_err(&err)? else {
        return Ok(());
    };
    let mut patch = serde_json::Map::new();
    let current_size =
        requested_storage(pvc.spec.as_ref()).and_then(|q| crate::quantity::bytes(&q.0));
    if let Some(size) = &wanted.size
        && let (Some(cur), Some(new)) = (current_size, crate::quantity::bytes(&size.0))
        && new > cur
    {
        patch.insert(
            "spec".into(),
            serde_json::json!({"resources": {"requests": {"storage": size.0}}}),
        );
    }
    if let Some(owner) = &wanted.owner {
        let refs = pvc.metadata.owner_references.clone().unwrap_or_default();
        let has = refs.iter().any(|r| r.uid == owner.uid);
        if has != wanted.owned {
            let mut new_refs: Vec<OwnerReference> =
                refs.into_iter().filter(|r| r.uid != owner.uid).collect();
            if wanted.owned {
                new_refs.push(owner.clone());
            }
            patch.insert(
                "metadata".into(),
                serde_json::json!({"ownerReferences": new_refs}),
            );
        }
    }
    if !patch.is_empty() {
        api.patch(
            &wanted.name,
            &PatchParams::default(),
            &Patch::Merge(&Value::Object(patch)),
        )
        .await
        .map_err(err)?;
        applied.writes += 1;
    }
    Ok(())
}

pub async fn apply(
    client: &Client,
    ns: &str,
    app: &str,
    desired: &Desired,
) -> Result<Applied, Error> {
    let mut applied = Applied::default();
    let Desired {
        db_secret,
        api_secret,
        db_statefulset,
        db_service,
        db_headless_service,
        migration_job,
        api_deployment,
        api_service,
        gateway_config,
        gateway_deployment,
        gateway_service,
        backup,
    } = desired;
    secret(client, ns, db_secret, &mut applied).await?;
    secret(client, ns, api_secret, &mut applied).await?;
    ensure(client, ns, db_headless_service, &mut applied).await?;
    ensure(client, ns, db_service, &mut applied).await?;
    statefulset(client, ns, app, db_statefulset, &mut applied).await?;
    if let Some(job) = migration_job {
        applied.migration_job_created = ensure(client, ns, job, &mut applied).await?;
    }
    ensure(client, ns, api_service, &mut applied).await?;
    if let Some(deployment) = api_deployment {
        ensure(client, ns, deployment, &mut applied).await?;
    }
    ensure(client, ns, gateway_config, &mut applied).await?;
    ensure(client, ns, gateway_service, &mut applied).await?;
    ensure(client, ns, gateway_deployment, &mut applied).await?;
    match backup {
        Some(BackupObjects {
            service_account,
            role,
            role_binding,
            cron_job,
        }) => {
            ensure(client, ns, service_account, &mut applied).await?;
            ensure(client, ns, role, &mut applied).await?;
            ensure(client, ns, role_binding, &mut applied).await?;
            ensure(client, ns, cron_job, &mut applied).await?;
        }
        None => prune_backup(client, ns, app, &mut applied).await?,
    }
    Ok(applied)
}

async fn prune<K>(client: &Client, ns: &str, app: &str, applied: &mut Applied) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let selector = format!(
        "{},app.kubernetes.io/component=backup",
        instance_selector(app)
    );
    let err = failed(&K::kind(&()), &selector);
    for obj in api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(&err)?
        .items
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        api.delete(&name, &DeleteParams::background())
            .await
            .map_err(&err)?;
        applied.writes += 1;
    }
    Ok(())
}

/// Backups were turned off: remove the CronJob and its RBAC.
async fn prune_backup(
    client: &Client,
    ns: &str,
    app: &str,
    applied: &mut Applied,
) -> Result<(), Error> {
    prune::<CronJob>(client, ns, app, applied).await?;
    prune::<RoleBinding>(client, ns, app, applied).await?;
    prune::<Role>(client, ns, app, applied).await?;
    prune::<ServiceAccount>(client, ns, app, applied).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_added_by_the_server_are_not_drift() {
        let desired = json!({"spec": {"replicas": 2, "template": {"containers": [{"name": "a", "image": "x"}]}}});
        let actual = json!({"spec": {"replicas": 2, "revisionHistoryLimit": 10,
            "template": {"containers": [{"name": "a", "image": "x", "imagePullPolicy": "IfNotPresent"}]}},
            "status": {"readyReplicas": 2}});
        assert!(is_subset(&desired, &actual));
    }

    #[test]
    fn changed_or_missing_fields_are_drift() {
        let desired = json!({"spec": {"replicas": 2, "ports": [1, 2]}});
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"replicas": 3, "ports": [1, 2]}})
        ));
        assert!(!is_subset(&desired, &json!({"spec": {"ports": [1, 2]}})));
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"replicas": 2, "ports": [1]}})
        ));
    }
}
