//! The FoodApp controller: a straight pipeline per reconcile —
//! dereference → validate → build → apply → status — where only the ends
//! talk to the API server. A finalizer decides, at deletion time, what
//! happens to the data. Backups and restores share the same instrumentation,
//! backoff and jitter (`instrumented`, `error_policy`).

pub mod apply;
pub mod backups;
pub mod conditions;
pub mod dereference;
pub mod finalize;
pub mod operations;
pub mod ownership;
pub mod status;
pub mod upgrade;
pub mod validate;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::{Api, Client, Resource, ResourceExt};
use rand::Rng;
use tracing::{info, instrument, warn};

use crate::build::{self, MANAGER};
use crate::crd::{FoodApp, FoodAppStatus};
use crate::metrics::Metrics;
use conditions::Reason;

/// Held on every FoodApp until its deletion was handled (deletionPolicy).
pub const FINALIZER: &str = "foodapp.io/cleanup";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the FoodApp's dependencies: {0}")]
    Dereference(#[source] kube::Error),
    #[error("invalid FoodApp: {0}")]
    Validate(#[from] validate::Error),
    #[error(transparent)]
    Apply(#[from] apply::Error),
    #[error("{count} component(s) could not be applied; first: {first}")]
    Components { count: usize, first: String },
    #[error("updating the status: {0}")]
    Status(#[source] kube::Error),
    #[error("cleaning up after deletion: {0}")]
    Cleanup(#[source] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    /// Objects of derived names that are not this FoodApp's.
    #[error("{0}")]
    Conflict(String),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Dereference(_) => "dereference",
            Error::Validate(_) => "validate",
            Error::Apply(_) | Error::Components { .. } => "apply",
            Error::Conflict(_) => "conflict",
            Error::Status(_) => "status",
            Error::Cleanup(_) => "cleanup",
            Error::Finalizer(e) => match e.as_ref() {
                finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => {
                    inner.metric_label()
                }
                _ => "finalizer",
            },
        }
    }
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// The operator's own image, run by backup and restore Jobs.
    pub agent_image: String,
    /// Signs the ownership records of objects nothing owns (`ownership`).
    pub key: ownership::Key,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, agent_image: String) -> Self {
        let reporter = Reporter {
            controller: build::MANAGER.to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            agent_image,
            key: ownership::Key::random(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// This context with the operator's signing key (loaded from its
    /// Secret at start; a random one otherwise, valid while it runs).
    pub fn with_key(mut self, key: ownership::Key) -> Self {
        self.key = key;
        self
    }

    /// An event whose type follows its reason (Warning for failures).
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        reason: Reason,
        action: &str,
        note: String,
    ) {
        let type_ = if reason.is_warning() {
            EventType::Warning
        } else {
            EventType::Normal
        };
        self.note(obj, type_, reason.as_str(), action, note).await;
    }

    /// Events are best effort: failing to record one never fails a
    /// reconcile. This form takes a reason that is not a condition's.
    pub async fn note<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            warn!(error = %e, reason, "could not record an event");
        }
    }
}

/// Sets (or, with None, removes) one annotation on `obj` with a merge patch.
pub async fn annotate<K>(
    ctx: &Context,
    obj: &K,
    key: &str,
    value: Option<&str>,
) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(
        ctx.client.clone(),
        obj.meta().namespace.as_deref().unwrap_or_default(),
    );
    let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
    api.patch(
        obj.meta().name.as_deref().unwrap_or_default(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::Status)?;
    Ok(())
}

fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

fn jitter(base: Duration, spread: f64) -> Duration {
    let f = rand::rng().random_range((1.0 - spread)..(1.0 + spread));
    base.mul_f64(f)
}

/// Nothing pending: look again in about five minutes (children's changes
/// wake the controller before that).
pub fn requeue_normal() -> Action {
    Action::requeue(jitter(Duration::from_secs(300), 0.1))
}

/// Something is in progress: look again in about `seconds`.
pub fn requeue_soon(seconds: u64) -> Action {
    Action::requeue(jitter(Duration::from_secs(seconds), 0.2))
}

/// Runs one reconcile of any kind with the same metrics: duration, outcome,
/// error label; a success resets the object's backoff.
pub async fn instrumented<K, F>(obj: &K, ctx: &Context, fut: F) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()>,
    F: Future<Output = Result<Action, Error>>,
{
    let start = Instant::now();
    let kind = K::kind(&()).into_owned();
    let result = fut.await;
    ctx.metrics
        .reconcile_duration
        .observe(start.elapsed().as_secs_f64());
    match &result {
        Ok(_) => {
            ctx.metrics.outcome(&kind, "success");
            ctx.failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key(obj));
        }
        Err(e) => {
            ctx.metrics.outcome(&kind, "error");
            ctx.metrics.error(&kind, e.metric_label());
        }
    }
    result
}

/// Requeue with exponential backoff (5 s doubling to 5 min) and jitter, for
/// every kind.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let attempts = {
        let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key(obj.as_ref())).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let backoff = Duration::from_secs(5u64.saturating_mul(1 << attempts.min(6)).min(300));
    warn!(kind = %K::kind(&()), name = obj.meta().name.as_deref().unwrap_or_default(), error = %error, attempts, ?backoff, "reconcile failed");
    Action::requeue(jitter(backoff, 0.2))
}

#[instrument(skip(app, ctx), fields(name = %app.name_any(), namespace = app.namespace().unwrap_or_default()))]
pub async fn reconcile(app: Arc<FoodApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<FoodApp> =
        Api::namespaced(ctx.client.clone(), &app.namespace().unwrap_or_default());
    let run = finalizer(&api, FINALIZER, app.clone(), |event| async {
        match event {
            finalizer::Event::Apply(app) => Box::pin(reconcile_inner(&app, &ctx)).await,
            finalizer::Event::Cleanup(app) => finalize::cleanup(&app, &ctx).await,
        }
    });
    // Boxed: the pipeline's future holds many large Kubernetes objects and
    // would otherwise overflow small task stacks.
    instrumented(app.as_ref(), &ctx, async {
        Box::pin(run).await.map_err(|e| match e {
            finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
            other => Error::Finalizer(Box::new(other)),
        })
    })
    .await
}

async fn reconcile_inner(app: &FoodApp, ctx: &Context) -> Result<Action, Error> {
    let ns = app.namespace().unwrap_or_else(|| "default".to_owned());
    let name = app.name_any();
    let observed = Box::pin(dereference::observe(&ctx.client, app, &ctx.key))
        .await
        .map_err(Error::Dereference)?;
    if !observed.conflicts.is_empty() {
        // A generated Secret is someone else's: nothing is built from it.
        let (new_status, checks) = status::conflicted(app, &observed.conflicts, Time(jiff_now()));
        let old_status = app.status.clone().unwrap_or_default();
        if new_status != old_status {
            announce(app, ctx, &old_status, &checks).await;
            write_status(ctx, app, &new_status).await?;
        }
        return Err(Error::Conflict(observed.conflicts.join("; ")));
    }
    if release_abandoned_restore(app, &observed, ctx).await? {
        // The patch wakes the next pass, which brings the API back.
        return Ok(requeue_soon(1));
    }
    if let Some((key, value)) = database_in_use_record(app, &observed) {
        // A FoodApp re-created over data kept under Retain: the database a
        // restore switched to is the one with the data.
        annotate(ctx, app, key, Some(&value)).await?;
        return Ok(requeue_soon(1));
    }
    let upgrade = upgrade::plan(app, &observed);
    let mut model = match validate::model(app, &observed, &ctx.agent_image) {
        Ok(model) => model,
        Err(e) => {
            ctx.event(app, Reason::Failed, "Validate", e.to_string())
                .await;
            return Err(e.into());
        }
    };
    // The database keeps the image its data runs on until an upgrade moved it.
    model.spec.database.image = upgrade.image.clone();
    model.database_stopped = upgrade.stop_database;
    if let Some(create) = &upgrade.create {
        Box::pin(upgrade::create(ctx, app, create)).await?;
    }
    let desired = build::build(&model);
    let now = jiff_now();
    let window = crate::maintenance::State::of(app.spec.maintenance.as_ref(), now);
    let hold = apply::Hold {
        open: window.is_open(),
        reconciled: app.status.as_ref().and_then(|s| s.observed_generation)
            == app.metadata.generation,
    };
    let (applied, warnings) = apply::collecting_warnings(Box::pin(apply::apply(
        &ctx.client,
        &ns,
        &name,
        &desired,
        hold,
        &observed.owners,
    )))
    .await;
    ctx.metrics.writes.inc_by(u64::from(applied.writes));
    // What the API server (or a webhook such as CloudNativePG's) warned
    // about on an apply: deprecations a person has to act on.
    for warning in warnings {
        ctx.note(
            app,
            EventType::Warning,
            "ApiServerWarning",
            "Apply",
            warning,
        )
        .await;
    }
    if let Some(backup) = &app.spec.backup {
        let keep = usize::try_from(backup.retention.keep_last).unwrap_or(1);
        let deleted = backups::apply_retention(ctx, &ns, &observed.backups, keep).await?;
        ctx.metrics.writes.inc_by(u64::from(deleted));
    }
    if applied.migration_job_created {
        ctx.event(
            app,
            Reason::Running,
            "Migrate",
            format!("running the migrations of {}", app.spec.api.image),
        )
        .await;
    }

    status::record_cnpg_metrics(&ctx.metrics, &model, &observed);
    // The status is written on every pass that changes it, failures included.
    let (new_status, checks) = status::compute(
        app,
        &observed,
        &model,
        &applied,
        &upgrade,
        &window,
        Time(now),
    );
    let old_status = app.status.clone().unwrap_or_default();
    if new_status != old_status {
        announce(app, ctx, &old_status, &checks).await;
        write_status(ctx, app, &new_status).await?;
        info!(phase = ?new_status.phase, "status updated");
    }
    if let Some((_, first)) = applied.failures.first() {
        return Err(Error::Components {
            count: applied.failures.len(),
            first: first.to_string(),
        });
    }
    let settled = conditions::is_true(&new_status.conditions, status::READY);
    let action = if settled {
        requeue_normal()
    } else {
        requeue_soon(15)
    };
    // A held rollout goes when its window opens, not up to a requeue later.
    let opens_in = window
        .next_open(now)
        .filter(|_| !applied.pending.is_empty())
        .and_then(|at| Duration::try_from(now.duration_until(at)).ok());
    Ok(match opens_in {
        Some(wait) if wait < Duration::from_secs(300) => {
            Action::requeue(wait + Duration::from_secs(1))
        }
        _ => action,
    })
}

/// A restore holds the FoodApp but is gone or finished (its FoodAppRestore
/// was deleted mid-way, say): let go once none of its Job pods is left, so
/// a stopped API never comes back while a restore might still write. True
/// when the lock was released.
async fn release_abandoned_restore(
    app: &FoodApp,
    observed: &dereference::Observed,
    ctx: &Context,
) -> Result<bool, Error> {
    let Some(holder) = operations::lock::holder(app) else {
        return Ok(false);
    };
    let active = observed.restores.iter().any(|r| {
        r.name_any() == holder
            && !r
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(crate::crd::RestorePhase::is_final)
    });
    if active {
        return Ok(false);
    }
    let ns = app.namespace().unwrap_or_default();
    let left = operations::restore::pods_left(ctx, &ns, holder).await?;
    if left > 0 {
        info!(
            restore = holder,
            pods = left,
            "waiting for the pods of an abandoned restore to end"
        );
        return Ok(false);
    }
    let holder = holder.to_owned();
    operations::lock::release(ctx, app, &holder).await?;
    ctx.event(
        app,
        Reason::Stopped,
        "Restore",
        format!("restore {holder} is gone and none of its pods is left: the FoodApp is free again"),
    )
    .await;
    Ok(true)
}

/// The database a restore switched to, as recorded on the API Secret (which
/// outlives the FoodApp under Retain), when the FoodApp does not say it.
fn database_in_use_record(
    app: &FoodApp,
    observed: &dereference::Observed,
) -> Option<(&'static str, String)> {
    let key = match app.spec.database.engine {
        crate::crd::Engine::External => build::DATABASE_NAME_ANNOTATION,
        _ => build::DATABASE_CLUSTER_ANNOTATION,
    };
    if app.annotations().contains_key(key) {
        return None;
    }
    // CloudNativePG: the Cluster labelled in use (every switch moves the
    // label) outranks the Secret's record, and outlives the Secret.
    if let Some(labelled) = observed
        .cnpg
        .as_ref()
        .and_then(|c| c.labelled_in_use.clone())
    {
        return (labelled != build::db_cluster(app)).then_some((key, labelled));
    }
    let recorded = observed.api_secret.as_ref()?.annotations().get(key)?;
    Some((key, recorded.clone()))
}

/// The whole status, by server-side apply with the operator's field
/// manager: a field left out is removed, with no list of keys to clear.
async fn write_status(ctx: &Context, app: &FoodApp, status: &FoodAppStatus) -> Result<(), Error> {
    let api: Api<FoodApp> =
        Api::namespaced(ctx.client.clone(), &app.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "foodapp.io/v1alpha1",
        "kind": "FoodApp",
        "status": status,
    });
    api.patch_status(
        &app.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Status)?;
    Ok(())
}

/// One event per condition whose status or reason changed, so `kubectl
/// describe` tells the story; failures are Warnings.
async fn announce(
    app: &FoodApp,
    ctx: &Context,
    old: &FoodAppStatus,
    checks: &[conditions::Wanted],
) {
    for c in checks {
        let before = conditions::find(&old.conditions, c.type_);
        let same =
            before.is_some_and(|b| (b.status == "True") == c.ok && b.reason == c.reason.as_str());
        if !same {
            ctx.event(app, c.reason, c.type_, c.message.clone()).await;
        }
    }
}

fn jiff_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}
