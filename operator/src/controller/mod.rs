//! The FoodApp controller: a straight pipeline per reconcile —
//! dereference → validate → build → apply → status — where only the ends
//! talk to the API server.

pub mod apply;
pub mod backups;
pub mod dereference;
pub mod restores;
pub mod status;
pub mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use rand::Rng;
use tracing::{info, instrument, warn};

use crate::build;
use crate::crd::{FoodApp, FoodAppStatus};
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the FoodApp's dependencies: {0}")]
    Dereference(#[source] kube::Error),
    #[error("invalid FoodApp: {0}")]
    Validate(#[from] validate::Error),
    #[error(transparent)]
    Apply(#[from] apply::Error),
    #[error("updating the FoodApp status: {0}")]
    Status(#[source] kube::Error),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Dereference(_) => "dereference",
            Error::Validate(_) => "validate",
            Error::Apply(_) => "apply",
            Error::Status(_) => "status",
        }
    }
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// The operator's own image, run by backup and restore Jobs.
    pub agent_image: String,
    failures: Mutex<HashMap<String, u32>>,
    pub backup_seen: backups::Seen,
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
            failures: Mutex::new(HashMap::new()),
            backup_seen: backups::Seen::default(),
        }
    }

    /// Events are best effort: failing to record one never fails a reconcile.
    pub async fn event<K: Resource<DynamicType = ()>>(
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

fn jitter(base: Duration, spread: f64) -> Duration {
    let f = rand::rng().random_range((1.0 - spread)..(1.0 + spread));
    base.mul_f64(f)
}

/// Nothing pending: look again in about five minutes (children's changes
/// wake the controller before that).
pub fn requeue_normal() -> Action {
    Action::requeue(jitter(Duration::from_secs(300), 0.1))
}

#[instrument(skip(app, ctx), fields(name = %app.name_any(), namespace = app.namespace().unwrap_or_default()))]
pub async fn reconcile(app: Arc<FoodApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    // Boxed: the pipeline's future holds many large Kubernetes objects and
    // would otherwise overflow small task stacks.
    let result = Box::pin(reconcile_inner(&app, &ctx)).await;
    ctx.metrics
        .reconcile_duration
        .observe(start.elapsed().as_secs_f64());
    let key = format!("{}/{}", app.namespace().unwrap_or_default(), app.name_any());
    match &result {
        Ok(_) => {
            ctx.metrics.outcome("FoodApp", "success");
            ctx.failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        }
        Err(e) => {
            ctx.metrics.outcome("FoodApp", "error");
            ctx.metrics.error("FoodApp", e.metric_label());
        }
    }
    result
}

async fn reconcile_inner(app: &FoodApp, ctx: &Context) -> Result<Action, Error> {
    let ns = app.namespace().unwrap_or_else(|| "default".to_owned());
    let name = app.name_any();
    let observed = Box::pin(dereference::observe(&ctx.client, app))
        .await
        .map_err(Error::Dereference)?;
    let model = validate::model(app, &observed, &ctx.agent_image)?;
    let desired = build::build(&model);
    let applied = Box::pin(apply::apply(&ctx.client, &ns, &name, &desired)).await?;
    ctx.metrics.writes.inc_by(u64::from(applied.writes));
    if applied.migration_job_created {
        ctx.event(
            app,
            EventType::Normal,
            "MigrationStarted",
            "Migrate",
            format!("running the migrations of {}", app.spec.api.image),
        )
        .await;
    }

    let new_status = status::compute(app, &observed, &model, Time(jiff_now()));
    let old_status = app.status.clone().unwrap_or_default();
    if new_status != old_status {
        announce(app, ctx, &old_status, &new_status).await;
        let api: Api<FoodApp> = Api::namespaced(ctx.client.clone(), &ns);
        let mut patch = serde_json::json!({ "status": new_status });
        // Merge patches keep absent fields: clear the ones that went away.
        for key in ["gatewayEndpoint", "apiImage", "lastBackup"] {
            if patch["status"].get(key).is_none() {
                patch["status"][key] = serde_json::Value::Null;
            }
        }
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::Status)?;
        info!(phase = ?new_status.phase, "status updated");
    }
    let settled = status::condition(&new_status, status::READY).is_some_and(|c| c.status == "True");
    Ok(if settled {
        requeue_normal()
    } else {
        Action::requeue(jitter(Duration::from_secs(15), 0.2))
    })
}

/// One event per condition that changed, so `kubectl describe` tells the story.
async fn announce(app: &FoodApp, ctx: &Context, old: &FoodAppStatus, new: &FoodAppStatus) {
    for c in &new.conditions {
        let before = status::condition(old, &c.type_);
        if before.is_some_and(|b| b.status == c.status && b.reason == c.reason) {
            continue;
        }
        let warning = matches!(
            c.reason.as_str(),
            "MigrationFailed" | "CredentialsSecretMissing" | "Unavailable"
        );
        let type_ = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.event(app, type_, &c.reason, &c.type_, c.message.clone())
            .await;
    }
}

fn jiff_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

/// Requeue with exponential backoff (5 s doubling to 5 min) and jitter.
pub fn error_policy(app: Arc<FoodApp>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = format!("{}/{}", app.namespace().unwrap_or_default(), app.name_any());
    let attempts = {
        let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let backoff = Duration::from_secs(5u64.saturating_mul(1 << attempts.min(6)).min(300));
    warn!(error = %error, attempts, ?backoff, "reconcile failed");
    Action::requeue(jitter(backoff, 0.2))
}
