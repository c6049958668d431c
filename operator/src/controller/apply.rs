//! Server-side apply with one field manager, component by component: a
//! failure of one is recorded and the others still go through. An object is
//! applied unless the live one was applied from the same desired state (the
//! hash annotation) and still matches it, so an unchanged FoodApp costs no
//! writes, drift is corrected, and a field removed from the spec is removed
//! from the object (the apply no longer carries it). Jobs are created once.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::build::{
    BackupObjects, BackupSchedule, DatabaseObjects, Desired, INPUTS_ANNOTATION, MANAGER, Scaling,
    cnpg, instance_selector, names, short_hash,
};
use crate::crd::PendingRollout;
use crate::crd::foreign::{Certificate, Cluster, ObjectStore, ScheduledBackup};

use super::ownership::{NotOurs, Owners};

/// Annotation with a hash of what the operator last applied to an object.
pub const APPLIED_HASH_ANNOTATION: &str = "foodapp.io/applied-hash";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("applying {kind} {name}: {source}")]
    Api {
        kind: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// An object of the derived name exists and is not this FoodApp's
    /// (`ownership`): it is neither applied over nor used.
    #[error("{0}")]
    NotOurs(String),
    /// Not applied: what it would use is not this FoodApp's.
    #[error("not applied while {0} is not this FoodApp's (condition Conflict)")]
    Blocked(String),
}

impl Error {
    pub fn is_not_ours(&self) -> bool {
        matches!(self, Error::NotOurs(_))
    }
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
    move |source| Error::Api {
        kind: kind.clone(),
        name: name.clone(),
        source: Box::new(source),
    }
}

/// The parts of a FoodApp applied on their own; each has a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Database,
    Migration,
    Api,
    Gateway,
    Backup,
    Network,
}

/// What applying did.
#[derive(Debug, Default)]
pub struct Applied {
    pub writes: u32,
    /// Whether the migration Job was created by this pass.
    pub migration_job_created: bool,
    /// The components the API server refused, with why.
    pub failures: Vec<(Component, Error)>,
    /// Workloads kept on their live pod template until the window opens.
    pub pending: Vec<PendingRollout>,
}

/// Whether pod-template changes that only the operator's own code brings
/// (the same inputs, another template) may roll now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// The maintenance window is open, or `applyImmediately` is set.
    pub open: bool,
    /// The FoodApp's spec was already reconciled (`status.observedGeneration`
    /// is its generation): a live workload without the inputs annotation,
    /// applied by a release that did not record it, was built from this
    /// spec, so a different template is the new operator's.
    pub reconciled: bool,
}

fn annotation_of<'a, K: Object>(obj: &'a K, key: &str) -> Option<&'a str> {
    obj.meta()
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// Whether two inputs annotations say the same things were built from:
/// the same observed state, and the same spec (the same generation, or,
/// across a spec change that did not touch the workload, the same hash).
fn same_inputs(live: &str, desired: &str) -> bool {
    fn parts(s: &str) -> Option<(&str, &str, &str)> {
        let mut it = s.splitn(3, '/');
        Some((it.next()?, it.next()?, it.next()?))
    }
    match (parts(live), parts(desired)) {
        (Some((lg, ls, lr)), Some((dg, ds, dr))) => lr == dr && (lg == dg || ls == ds),
        _ => false,
    }
}

/// The paths under `prefix` where `desired` sets something `live` does not
/// have (containers and other named list items by their name), at most 8.
fn changed_paths(desired: &Value, live: &Value, prefix: &str) -> Vec<String> {
    fn walk(d: &Value, l: Option<&Value>, path: String, out: &mut Vec<String>) {
        if out.len() >= 8 || d.is_null() || l.is_some_and(|l| is_subset(d, l)) {
            return;
        }
        match (d, l) {
            (Value::Object(d), Some(Value::Object(l))) => {
                for (k, v) in d {
                    walk(v, l.get(k), format!("{path}.{k}"), out);
                }
            }
            (Value::Array(d), Some(Value::Array(l))) if d.len() == l.len() => {
                for (i, (dv, lv)) in d.iter().zip(l).enumerate() {
                    let key = dv
                        .get("name")
                        .and_then(Value::as_str)
                        .map_or_else(|| i.to_string(), str::to_owned);
                    walk(dv, Some(lv), format!("{path}[{key}]"), out);
                }
            }
            _ => out.push(path),
        }
    }
    let mut out = Vec::new();
    walk(desired, Some(live), prefix.to_owned(), &mut out);
    out
}

/// What to apply for a workload: `obj`, or — when the window is closed and
/// only the operator's code changed its pod template since it was last
/// applied — `obj` with the live pod template (None: apply `obj`), recorded
/// in `pending` with the paths that wait. A template someone else changed
/// is drift, and corrected.
fn hold_template<K: Object>(
    obj: &K,
    live: Option<&K>,
    legacy_inputs: Option<&str>,
    hold: Hold,
    pending: &mut Vec<PendingRollout>,
) -> Option<K> {
    let live = live.filter(|_| !hold.open)?;
    let d = serde_json::to_value(obj).ok()?;
    let l = serde_json::to_value(live).ok()?;
    let (dt, lt) = (d.pointer("/spec/template")?, l.pointer("/spec/template")?);
    if is_subset(dt, lt)
        || annotation_of(&stamped(obj), APPLIED_HASH_ANNOTATION)
            == annotation_of(live, APPLIED_HASH_ANNOTATION)
    {
        return None;
    }
    let operator_only = match (
        annotation_of(live, INPUTS_ANNOTATION),
        annotation_of(obj, INPUTS_ANNOTATION),
    ) {
        (Some(l), Some(d)) => {
            same_inputs(l, d) || legacy_inputs.is_some_and(|legacy| same_inputs(l, legacy))
        }
        (None, Some(_)) => hold.reconciled,
        _ => false,
    };
    if !operator_only {
        return None;
    }
    let changes = changed_paths(dt, lt, "spec.template");
    let mut held = d.clone();
    held["spec"]["template"] = lt.clone();
    let held = serde_json::from_value(held).ok()?;
    pending.push(PendingRollout {
        kind: K::kind(&()).into_owned(),
        name: obj.meta().name.clone().unwrap_or_default(),
        changes,
    });
    Some(held)
}

/// The live object of `obj`'s name, if any.
async fn live_of<K: Object>(client: &Client, ns: &str, obj: &K) -> Result<Option<K>, Error> {
    let name = obj.meta().name.clone().unwrap_or_default();
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(&name)
        .await
        .map_err(failed(&K::kind(&()), &name))
}

impl Applied {
    pub fn failure(&self, component: Component) -> Option<&Error> {
        self.failures
            .iter()
            .find(|(c, _)| *c == component)
            .map(|(_, e)| e)
    }

    /// Whether the component failed on an object that is not this FoodApp's.
    pub fn conflict(&self, component: Component) -> bool {
        self.failure(component).is_some_and(Error::is_not_ours)
    }

    /// What is not this FoodApp's, one message per object.
    pub fn conflicts(&self) -> Vec<String> {
        self.failures
            .iter()
            .filter(|(_, e)| e.is_not_ours())
            .map(|(_, e)| e.to_string())
            .collect()
    }

    fn record(&mut self, component: Component, result: Result<(), Error>) {
        if let Err(e) = result {
            tracing::warn!(?component, error = %e, "apply failed");
            self.failures.push((component, e));
        }
    }
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

/// `obj` with the hash of its own desired state in an annotation.
fn stamped<K: Object>(obj: &K) -> K {
    let mut obj = obj.clone();
    let hash = short_hash(&serde_json::to_string(&obj).unwrap_or_default());
    obj.meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(APPLIED_HASH_ANNOTATION.to_owned(), hash);
    obj
}

/// Whether `live` needs no apply: applied from the same desired state, and
/// nobody changed a field the operator sets since.
fn up_to_date<K: Object>(desired: &K, live: &K) -> bool {
    let hash = |o: &K| {
        o.meta()
            .annotations
            .as_ref()
            .and_then(|a| a.get(APPLIED_HASH_ANNOTATION))
            .cloned()
    };
    hash(desired).is_some()
        && hash(desired) == hash(live)
        && is_subset(
            &serde_json::to_value(desired).unwrap_or_default(),
            &serde_json::to_value(live).unwrap_or_default(),
        )
}

tokio::task_local! {
    /// The warnings the API server returned on the applies of one reconcile.
    static WARNINGS: std::cell::RefCell<Vec<String>>;
    /// Who may own the objects `apply` meets (set for the whole of it).
    static OWNERS: Owners;
}

/// Whether `live` is this FoodApp's (always, outside `apply`: the
/// operations that create objects check their own).
fn check_ours<K: Object>(live: &K) -> Result<(), Error> {
    OWNERS
        .try_with(|o| o.check(&K::kind(&()), live.meta()))
        .unwrap_or(Ok(()))
        .map_err(|NotOurs(why)| Error::NotOurs(why))
}

/// `obj` with this FoodApp's ownership record when nothing owns it (a
/// Cluster kept under `Retain`): what `ownership` finds it again by.
fn recorded<K: Object>(obj: &K) -> K {
    let mut obj = obj.clone();
    if obj.meta().owner_references.is_none() {
        let name = obj.meta().name.clone().unwrap_or_default();
        if let Ok(record) = OWNERS.try_with(|o| o.record(&K::kind(&()), &name)) {
            obj.meta_mut()
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .extend(record);
        }
    }
    obj
}

/// Runs `f`, collecting the warnings the API server returns on its applies
/// (`Warning` headers: CloudNativePG's webhook deprecations, fields the
/// server dropped), each as `<kind> <name>: <text>`.
pub async fn collecting_warnings<F: Future>(f: F) -> (F::Output, Vec<String>) {
    WARNINGS
        .scope(std::cell::RefCell::new(Vec::new()), async move {
            let out = f.await;
            (out, WARNINGS.with(|w| w.take()))
        })
        .await
}

/// The text of a `Warning` header (`299 - "text"`, RFC 7234).
pub fn warning_text(header: &str) -> String {
    let rest = header
        .trim()
        .strip_prefix("299")
        .map(|r| r.trim_start().trim_start_matches('-').trim_start())
        .unwrap_or(header.trim());
    rest.strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .map(|r| r.replace("\\\"", "\""))
        .unwrap_or_else(|| rest.to_owned())
}

/// Applies `obj` server-side with the operator's field manager, keeping
/// the API server's warnings for `collecting_warnings`.
pub async fn server_side_apply<K: Object>(client: &Client, ns: &str, obj: &K) -> Result<(), Error> {
    use http_body_util::BodyExt;
    let name = obj.meta().name.clone().unwrap_or_default();
    let err = failed(&K::kind(&()), &name);
    let request = kube::core::Request::new(K::url_path(&(), Some(ns)))
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(obj),
        )
        .map_err(|e| err(kube::Error::BuildRequest(e)))?;
    let response = client
        .send(request.map(kube::client::Body::from))
        .await
        .map_err(&err)?;
    let warnings: Vec<String> = response
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|w| format!("{} {name}: {}", K::kind(&()), warning_text(w)))
        .collect();
    if !warnings.is_empty() {
        tracing::warn!(?warnings, "the API server warned");
        let _ = WARNINGS.try_with(|w| w.borrow_mut().extend(warnings));
    }
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(&err)?
        .to_bytes();
    if status.is_client_error() || status.is_server_error() {
        let status = serde_json::from_slice::<kube::core::Status>(&body).unwrap_or_else(|_| {
            kube::core::Status::failure(
                &String::from_utf8_lossy(&body),
                "Failed to parse error data",
            )
            .with_code(status.as_u16())
        });
        return Err(err(kube::Error::Api(status.boxed())));
    }
    Ok(())
}

/// Applies `obj` unless the live object is up to date; true when it wrote.
async fn ensure<K: Object>(
    client: &Client,
    ns: &str,
    obj: &K,
    writes: &mut u32,
) -> Result<bool, Error> {
    let live = live_of(client, ns, obj).await?;
    ensure_against(client, ns, obj, live.as_ref(), writes).await
}

/// `ensure` with the live object already read.
async fn ensure_against<K: Object>(
    client: &Client,
    ns: &str,
    obj: &K,
    live: Option<&K>,
    writes: &mut u32,
) -> Result<bool, Error> {
    if let Some(live) = live {
        check_ours(live)?;
    }
    let desired = stamped(&recorded(obj));
    if live.is_some_and(|l| up_to_date(&desired, l)) {
        return Ok(false);
    }
    server_side_apply(client, ns, &desired).await?;
    *writes += 1;
    Ok(true)
}

/// Creates `obj` unless an object of that name exists, which is returned
/// instead and left untouched: Jobs (immutable once running). Within
/// `apply`, an existing one that is not this FoodApp's is refused.
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
    match &existing {
        Some(live) => check_ours(live)?,
        None => server_side_apply(client, ns, obj).await?,
    }
    Ok(existing)
}

/// volumeClaimTemplates cannot change after creation: keep the existing
/// ones, and grow the claim itself when the spec asks for more.
async fn statefulset(
    client: &Client,
    ns: &str,
    desired: &StatefulSet,
    legacy_inputs: Option<&str>,
    hold: Hold,
    writes: &mut u32,
    pending: &mut Vec<PendingRollout>,
) -> Result<(), Error> {
    let name = desired.metadata.name.clone().unwrap_or_default();
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let current = api
        .get_opt(&name)
        .await
        .map_err(failed("StatefulSet", &name))?;
    let desired = hold_template(desired, current.as_ref(), legacy_inputs, hold, pending)
        .unwrap_or_else(|| desired.clone());
    let wanted_size = current.as_ref().and_then(|_| {
        requested_storage(
            desired
                .spec
                .as_ref()
                .and_then(|s| s.volume_claim_templates.as_ref())
                .and_then(|t| t.first())
                .and_then(|t| t.spec.as_ref()),
        )
        .cloned()
    });
    let mut desired = desired.clone();
    if let (Some(spec), Some(current_spec)) = (
        desired.spec.as_mut(),
        current.as_ref().and_then(|c| c.spec.as_ref()),
    ) {
        spec.volume_claim_templates = current_spec.volume_claim_templates.clone();
    }
    Box::pin(ensure_against(
        client,
        ns,
        &desired,
        current.as_ref(),
        writes,
    ))
    .await?;
    match wanted_size {
        Some(size) => {
            Box::pin(grow_claim(
                client,
                ns,
                &names::claim_of(&name),
                &size,
                writes,
            ))
            .await
        }
        None => Ok(()),
    }
}

/// The storage a claim (or claim template) requests.
fn requested_storage(spec: Option<&PersistentVolumeClaimSpec>) -> Option<&Quantity> {
    spec?.resources.as_ref()?.requests.as_ref()?.get("storage")
}

/// Grows the claim when the spec asks for more (never shrinks it). Who owns
/// the claim is not decided here: nobody does, and the FoodApp's finalizer
/// deletes it under deletionPolicy Delete.
async fn grow_claim(
    client: &Client,
    ns: &str,
    name: &str,
    size: &Quantity,
    writes: &mut u32,
) -> Result<(), Error> {
    let err = failed("PersistentVolumeClaim", name);
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let Some(pvc) = api.get_opt(name).await.map_err(&err)? else {
        return Ok(());
    };
    let current = requested_storage(pvc.spec.as_ref()).and_then(|q| crate::quantity::bytes(&q.0));
    let grows = matches!(
        (current, crate::quantity::bytes(&size.0)),
        (Some(cur), Some(new)) if new > cur
    );
    if grows {
        let patch = serde_json::json!({"spec": {"resources": {"requests": {"storage": size.0}}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(err)?;
        *writes += 1;
    }
    Ok(())
}

/// Applies every component on its own: a refused object fails its component
/// only, and the others still converge. An object of a derived name that is
/// not this FoodApp's (`owners`) fails its component with `NotOurs`: it is
/// neither applied over nor deleted.
pub async fn apply(
    client: &Client,
    ns: &str,
    app: &str,
    desired: &Desired,
    hold: Hold,
    owners: &Owners,
) -> Applied {
    OWNERS
        .scope(
            owners.clone(),
            Box::pin(apply_all(client, ns, app, desired, hold)),
        )
        .await
}

async fn apply_all(client: &Client, ns: &str, app: &str, desired: &Desired, hold: Hold) -> Applied {
    let mut applied = Applied::default();
    let mut writes = 0;
    let mut pending = Vec::new();
    let Desired {
        database,
        migration_job,
        api_deployment,
        api_service,
        api_scaling,
        gateway_config,
        gateway_deployment,
        gateway_service,
        gateway_scaling,
        gateway_certificate,
        network_policies,
        backup,
        legacy_inputs,
    } = desired;

    let db = async {
        match database {
            DatabaseObjects::BuiltIn {
                statefulset: sts,
                service,
                headless_service,
            } => {
                ensure(client, ns, headless_service.as_ref(), &mut writes).await?;
                ensure(client, ns, service.as_ref(), &mut writes).await?;
                Box::pin(statefulset(
                    client,
                    ns,
                    sts,
                    legacy_inputs.database.as_deref(),
                    hold,
                    &mut writes,
                    &mut pending,
                ))
                .await
            }
            DatabaseObjects::CloudNativePG {
                cluster,
                object_store,
                connection,
            } => {
                // The object store first: the Cluster's plugin reads it.
                // Without the plugin's CRD there is none; BackupScheduled
                // says what to install.
                match object_store {
                    Some(store) => match ensure(client, ns, store.as_ref(), &mut writes).await {
                        Err(e) if kind_missing(&e) => {}
                        other => {
                            other?;
                        }
                    },
                    None => {
                        prune_except::<ObjectStore>(
                            client,
                            ns,
                            app,
                            Some("backup"),
                            &[],
                            &mut writes,
                        )
                        .await?
                    }
                }
                // Without CloudNativePG's CRDs there is nothing to apply to;
                // the DatabaseReady condition says what to install.
                match ensure(client, ns, cluster.as_ref(), &mut writes).await {
                    Err(e) if kind_missing(&e) => {}
                    other => {
                        other?;
                        let in_use = cluster.metadata.name.as_deref().unwrap_or_default();
                        release_in_use_label(client, ns, app, in_use, &mut writes).await?;
                    }
                }
                if let Some(secret) = connection {
                    ensure(client, ns, secret, &mut writes).await?;
                }
                Ok(())
            }
            DatabaseObjects::External { connection } => {
                if let Some(secret) = connection {
                    ensure(client, ns, secret, &mut writes).await?;
                }
                Ok(())
            }
        }
    }
    .await;
    applied.record(Component::Database, db);

    let policies = async {
        for policy in network_policies {
            ensure(client, ns, policy, &mut writes).await?;
        }
        let keep: Vec<&str> = network_policies
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        prune_except::<NetworkPolicy>(client, ns, app, None, &keep, &mut writes).await
    }
    .await;
    applied.record(Component::Network, policies);

    // Nothing that would connect to the database (with its password) is
    // applied while a database object is someone else's: the Service of
    // that name would receive the connections.
    if applied.conflict(Component::Database) {
        for c in [
            Component::Migration,
            Component::Api,
            Component::Gateway,
            Component::Backup,
        ] {
            applied.record(c, Err(Error::Blocked("the database".to_owned())));
        }
        applied.writes = writes;
        applied.pending = pending;
        return applied;
    }

    // Migrations wait until the database's objects (its connection Secret)
    // are in place.
    if let Some(job) = migration_job
        .as_ref()
        .filter(|_| applied.failure(Component::Database).is_none())
    {
        match create_once(client, ns, job).await {
            Ok(None) => {
                writes += 1;
                applied.migration_job_created = true;
            }
            Ok(Some(_)) => {}
            Err(e) => applied.record(Component::Migration, Err(e)),
        }
    }

    let api = async {
        ensure(client, ns, api_service, &mut writes).await?;
        if let Some(deployment) = api_deployment {
            let live = live_of(client, ns, deployment).await?;
            let held = hold_template(
                deployment,
                live.as_ref(),
                legacy_inputs.api.as_deref(),
                hold,
                &mut pending,
            );
            deployment_with_scaling(
                client,
                ns,
                held.as_ref().unwrap_or(deployment),
                live.as_ref(),
                api_scaling,
                &mut writes,
            )
            .await?;
        }
        Ok(())
    }
    .await;
    applied.record(Component::Api, api);

    // The gateway sends customers' requests to the API's Service.
    let gateway = async {
        if applied.conflict(Component::Api) {
            return Err(Error::Blocked("the API".to_owned()));
        }
        // A held gateway keeps its configuration too: a pod that restarts
        // meanwhile gets the nginx.conf its template was made for.
        let live = live_of(client, ns, gateway_deployment).await?;
        let held = hold_template(gateway_deployment, live.as_ref(), None, hold, &mut pending);
        if held.is_none() {
            ensure(client, ns, gateway_config, &mut writes).await?;
        }
        match gateway_certificate {
            Some(certificate) => {
                ensure(client, ns, certificate, &mut writes).await?;
            }
            None => {
                prune_except::<Certificate>(client, ns, app, Some("gateway"), &[], &mut writes)
                    .await?
            }
        }
        ensure(client, ns, gateway_service, &mut writes).await?;
        deployment_with_scaling(
            client,
            ns,
            held.as_ref().unwrap_or(gateway_deployment),
            live.as_ref(),
            gateway_scaling,
            &mut writes,
        )
        .await
    }
    .await;
    applied.record(Component::Gateway, gateway);

    let backups = async {
        match backup {
            Some(BackupObjects {
                service_account,
                role,
                role_binding,
                schedule,
            }) => {
                ensure(client, ns, service_account, &mut writes).await?;
                ensure(client, ns, role, &mut writes).await?;
                ensure(client, ns, role_binding, &mut writes).await?;
                match schedule {
                    BackupSchedule::Dump(cron_job) => {
                        ensure(client, ns, cron_job.as_ref(), &mut writes).await?;
                    }
                    BackupSchedule::CloudNativePG(scheduled) => {
                        let applied = match scheduled {
                            Some(scheduled) => {
                                match ensure(client, ns, scheduled.as_ref(), &mut writes).await {
                                    Err(e) if kind_missing(&e) => None,
                                    other => {
                                        other?;
                                        scheduled.metadata.name.clone()
                                    }
                                }
                            }
                            None => Some(String::new()),
                        };
                        // One per Cluster: the schedule of a Cluster no
                        // longer in use (a restore switched) goes.
                        if let Some(name) = applied {
                            prune_except::<ScheduledBackup>(
                                client,
                                ns,
                                app,
                                Some("backup"),
                                &[name.as_str()],
                                &mut writes,
                            )
                            .await?;
                        }
                    }
                }
                Ok(())
            }
            None => prune_backup(client, ns, app, &mut writes).await,
        }
    }
    .await;
    applied.record(Component::Backup, backups);
    applied.writes = writes;
    applied.pending = pending;
    applied
}

/// A 404 from applying a kind of another project: its CRD is not installed.
fn kind_missing(e: &Error) -> bool {
    matches!(e, Error::Api { source, .. } if matches!(&**source, kube::Error::Api(e) if e.code == 404))
}

/// A Deployment with its autoscaler and disruption budget. When an
/// autoscaler takes over, the operator stops applying `replicas`; so that
/// giving up the field does not reset it to 1, the current count is first
/// handed to another field manager, which the autoscaler then overrides.
async fn deployment_with_scaling(
    client: &Client,
    ns: &str,
    deployment: &Deployment,
    live: Option<&Deployment>,
    scaling: &Scaling,
    writes: &mut u32,
) -> Result<(), Error> {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let Scaling { hpa, pdb } = scaling;
    let scaled_by_hpa = deployment
        .spec
        .as_ref()
        .is_some_and(|s| s.replicas.is_none());
    if let (true, Some(hpa)) = (scaled_by_hpa, hpa) {
        let min = hpa.spec.as_ref().and_then(|s| s.min_replicas).unwrap_or(1);
        if let Some(live) = live {
            hand_over_replicas(client, ns, live, min, writes).await?;
        }
    }
    ensure_against(client, ns, deployment, live, writes).await?;
    match hpa {
        Some(hpa) => {
            ensure(client, ns, hpa, writes).await?;
        }
        None => remove::<HorizontalPodAutoscaler>(client, ns, &name, writes).await?,
    }
    match pdb {
        Some(pdb) => {
            ensure(client, ns, pdb, writes).await?;
        }
        None => remove::<PodDisruptionBudget>(client, ns, &name, writes).await?,
    }
    Ok(())
}

/// Field manager that holds `replicas` between the operator and an autoscaler.
pub const HANDOVER_MANAGER: &str = "foodapp-operator-handover";

/// When the operator's own apply still owns `spec.replicas`, applies the
/// current count (at least `min`: a Deployment at zero, after a restore,
/// would leave the autoscaler disabled) under the handover manager.
async fn hand_over_replicas(
    client: &Client,
    ns: &str,
    live: &Deployment,
    min: i32,
    writes: &mut u32,
) -> Result<(), Error> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let name = live.metadata.name.as_deref().unwrap_or_default();
    let ours = live.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(MANAGER)
            && m.operation.as_deref() == Some("Apply")
            && m.fields_v1.as_ref().is_some_and(|f| {
                f.0.get("f:spec")
                    .and_then(|s| s.get("f:replicas"))
                    .is_some()
            })
    });
    if !ours {
        return Ok(());
    }
    let current = live.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let patch = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": current.max(min)},
    });
    api.patch(
        name,
        &PatchParams::apply(HANDOVER_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(failed("Deployment", name))?;
    *writes += 1;
    Ok(())
}

/// Deletes the object `name` of kind K if it exists and the operator made it.
async fn remove<K: Object>(
    client: &Client,
    ns: &str,
    name: &str,
    writes: &mut u32,
) -> Result<(), Error> {
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let err = failed(&K::kind(&()), name);
    let Some(live) = api.get_opt(name).await.map_err(&err)? else {
        return Ok(());
    };
    let ours = live
        .meta()
        .labels
        .as_ref()
        .and_then(|l| l.get("app.kubernetes.io/managed-by"))
        .is_some_and(|m| m == MANAGER);
    if ours && check_ours(&live).is_ok() {
        api.delete(name, &DeleteParams::background())
            .await
            .map_err(&err)?;
        *writes += 1;
    }
    Ok(())
}

/// Deletes this FoodApp's objects of kind K (of one component, or all)
/// whose names are not in `keep`.
async fn prune_except<K: Object>(
    client: &Client,
    ns: &str,
    app: &str,
    component: Option<&str>,
    keep: &[&str],
    writes: &mut u32,
) -> Result<(), Error> {
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let selector = match component {
        Some(c) => format!("{},app.kubernetes.io/component={c}", instance_selector(app)),
        None => instance_selector(app),
    };
    let err = failed(&K::kind(&()), &selector);
    let listed = match api.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => list.items,
        // The kind is not served (cert-manager not installed): nothing to prune.
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    for obj in listed {
        let name = obj.meta().name.clone().unwrap_or_default();
        if !keep.contains(&name.as_str()) && check_ours(&obj).is_ok() {
            api.delete(&name, &DeleteParams::background())
                .await
                .map_err(&err)?;
            *writes += 1;
        }
    }
    Ok(())
}

async fn prune<K: Object>(
    client: &Client,
    ns: &str,
    app: &str,
    writes: &mut u32,
) -> Result<(), Error> {
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
        .into_iter()
        .filter(|o| check_ours(o).is_ok())
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        api.delete(&name, &DeleteParams::background())
            .await
            .map_err(&err)?;
        *writes += 1;
    }
    Ok(())
}

/// Backups were turned off: remove the schedule and the agent's RBAC.
/// Takes `foodapp.io/in-use` off this FoodApp's other Clusters: the one a
/// restore switched from is kept, but is no longer the one in use.
async fn release_in_use_label(
    client: &Client,
    ns: &str,
    app: &str,
    in_use: &str,
    writes: &mut u32,
) -> Result<(), Error> {
    let api: Api<Cluster> = Api::namespaced(client.clone(), ns);
    let selector = format!("{}={app},{}=true", cnpg::APP_LABEL, cnpg::IN_USE_LABEL);
    let err = failed("Cluster", &selector);
    let listed = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(&err)?;
    for other in listed.items {
        let name = other.metadata.name.clone().unwrap_or_default();
        if name != in_use {
            let patch = serde_json::json!({"metadata": {"labels": {cnpg::IN_USE_LABEL: null}}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(&err)?;
            *writes += 1;
        }
    }
    Ok(())
}

async fn prune_backup(client: &Client, ns: &str, app: &str, writes: &mut u32) -> Result<(), Error> {
    prune_except::<ScheduledBackup>(client, ns, app, Some("backup"), &[], writes).await?;
    prune_except::<ObjectStore>(client, ns, app, Some("backup"), &[], writes).await?;
    prune::<CronJob>(client, ns, app, writes).await?;
    prune::<RoleBinding>(client, ns, app, writes).await?;
    prune::<Role>(client, ns, app, writes).await?;
    prune::<ServiceAccount>(client, ns, app, writes).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The database as the release before keyed hashes built it from the
    /// same inputs: unkeyed credentials and inputs hashes.
    fn unkeyed(m: &crate::build::Model) -> StatefulSet {
        let DatabaseObjects::BuiltIn { statefulset, .. } = crate::build::build(m).database else {
            unreachable!("the model is built in")
        };
        let mut old = *statefulset;
        let meta = old.metadata.annotations.get_or_insert_default();
        meta.insert(
            INPUTS_ANNOTATION.into(),
            m.legacy_inputs(crate::build::Workload::Database),
        );
        meta.insert(APPLIED_HASH_ANNOTATION.into(), "older".into());
        let template = old
            .spec
            .as_mut()
            .unwrap()
            .template
            .metadata
            .as_mut()
            .unwrap();
        template.annotations.get_or_insert_default().insert(
            crate::build::CREDENTIALS_HASH_ANNOTATION.into(),
            short_hash(&m.db_password),
        );
        old
    }

    #[test]
    fn unkeyed_hashes_of_a_previous_release_wait_for_the_window_and_a_new_password_does_not() {
        let m = crate::build::testing::model();
        let old = unkeyed(&m);
        let desired = crate::build::build(&m);
        let DatabaseObjects::BuiltIn { statefulset, .. } = &desired.database else {
            unreachable!()
        };
        let closed = Hold {
            open: false,
            reconciled: true,
        };
        let legacy = desired.legacy_inputs.database.as_deref();
        let mut pending = Vec::new();
        let held = hold_template(
            statefulset.as_ref(),
            Some(&old),
            legacy,
            closed,
            &mut pending,
        )
        .expect("same inputs: held");
        assert_eq!(
            held.spec.unwrap().template,
            old.spec.clone().unwrap().template
        );
        assert!(
            pending[0]
                .changes
                .iter()
                .any(|c| c.contains("foodapp.io/credentials-hash")),
            "{pending:?}"
        );
        // Without the legacy form the new hashes would read as new inputs.
        assert!(
            hold_template(statefulset.as_ref(), Some(&old), None, closed, &mut pending).is_none()
        );
        // A password changed meanwhile is new input: it rolls now.
        let mut changed = m.clone();
        changed.db_password = "changed".into();
        let desired = crate::build::build(&changed);
        let DatabaseObjects::BuiltIn { statefulset, .. } = &desired.database else {
            unreachable!()
        };
        let legacy = desired.legacy_inputs.database.as_deref();
        assert!(
            hold_template(
                statefulset.as_ref(),
                Some(&old),
                legacy,
                closed,
                &mut pending
            )
            .is_none()
        );
    }

    #[test]
    fn a_warning_header_gives_its_text() {
        assert_eq!(
            warning_text(
                r#"299 - "Native support for Barman Cloud backups and recovery is deprecated""#
            ),
            "Native support for Barman Cloud backups and recovery is deprecated"
        );
        assert_eq!(
            warning_text(r#"299 - "unknown field \"spec.instancez\"""#),
            r#"unknown field "spec.instancez""#
        );
        assert_eq!(warning_text("plain"), "plain");
    }

    #[tokio::test]
    async fn warnings_are_collected_per_reconcile_and_nowhere_else() {
        let ((), collected) = collecting_warnings(async {
            let _ = WARNINGS.try_with(|w| w.borrow_mut().push("Cluster a: x".into()));
        })
        .await;
        assert_eq!(collected, ["Cluster a: x"]);
        // Outside a reconcile there is nowhere to keep them: no panic.
        assert!(WARNINGS.try_with(|_| ()).is_err());
    }

    #[test]
    fn defaults_added_by_the_server_are_not_drift() {
        let desired = json!({"spec": {"replicas": 2, "template": {"containers": [{"name": "a", "image": "x"}]}}});
        let actual = json!({"spec": {"replicas": 2, "revisionHistoryLimit": 10,
            "template": {"containers": [{"name": "a", "image": "x", "imagePullPolicy": "IfNotPresent"}]}},
            "status": {"readyReplicas": 2}});
        assert!(is_subset(&desired, &actual));
    }

    #[test]
    fn a_changed_desired_state_is_applied_even_when_the_live_object_holds_more() {
        use k8s_openapi::api::core::v1::ConfigMap;
        let mut desired = ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some("c".into()),
                ..Default::default()
            },
            data: Some([("a".to_owned(), "1".to_owned())].into()),
            ..Default::default()
        };
        let live = stamped(&desired);
        assert!(up_to_date(&stamped(&desired), &live));
        // A key removed from the spec: the live object is still a superset,
        // but it was applied from another desired state.
        desired.data = Some(BTreeMap::new());
        assert!(!up_to_date(&stamped(&desired), &live));
        // Someone edited a field the operator sets.
        let mut edited = live.clone();
        edited.data = Some([("a".to_owned(), "2".to_owned())].into());
        assert!(!up_to_date(&live, &edited));
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
