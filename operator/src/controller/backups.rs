//! FoodAppBackups: runs on-demand backups as Jobs, marks backups whose Job
//! failed without reporting, and turns recorded backups into metrics and
//! events (so failed backups do not go unnoticed).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use super::dereference::Observed;
use super::validate::{self, JobState, job_state};
use super::{Context, Error, apply, requeue_normal};
use crate::build::backup;
use crate::crd::{BackupSource, FoodApp, FoodAppBackup, FoodAppBackupStatus, JobPhase};

/// Names of backups already counted, so each outcome is counted once.
#[derive(Default)]
pub struct Seen(Mutex<HashSet<String>>);

impl Seen {
    fn first_time(&self, key: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_owned())
    }
}

async fn set_status(
    ctx: &Context,
    b: &FoodAppBackup,
    status: &FoodAppBackupStatus,
) -> Result<(), Error> {
    let api: Api<FoodAppBackup> =
        Api::namespaced(ctx.client.clone(), &b.namespace().unwrap_or_default());
    api.patch_status(
        &b.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({ "status": status })),
    )
    .await
    .map_err(Error::Status)?;
    Ok(())
}

fn failed(message: String) -> FoodAppBackupStatus {
    FoodAppBackupStatus {
        phase: Some(JobPhase::Failed),
        completed_at: Some(k8s_openapi::jiff::Timestamp::now().to_string()),
        error: Some(message),
        ..Default::default()
    }
}

pub async fn reconcile(b: Arc<FoodAppBackup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = b.namespace().unwrap_or_default();
    let name = b.name_any();
    let phase = b.status.as_ref().and_then(|s| s.phase);
    let apps: Api<FoodApp> = Api::namespaced(ctx.client.clone(), &ns);
    let app = apps
        .get_opt(&b.spec.food_app_ref)
        .await
        .map_err(Error::Dereference)?;

    match phase {
        Some(JobPhase::Succeeded) | Some(JobPhase::Failed) => {
            observe_outcome(&b, app.as_ref(), &ctx).await;
            return Ok(requeue_normal());
        }
        _ if b.spec.source == BackupSource::Scheduled => return Ok(requeue_normal()),
        _ => {}
    }

    // An on-demand backup: run it as a Job.
    let Some(app) = app else {
        set_status(
            &ctx,
            &b,
            &failed(format!(
                "FoodAppNotFound: FoodApp {} not found in namespace {ns}",
                b.spec.food_app_ref
            )),
        )
        .await?;
        return Ok(requeue_normal());
    };
    let Some(backup_spec) = app.spec.backup.as_ref() else {
        set_status(
            &ctx,
            &b,
            &failed(format!(
                "NotConfigured: FoodApp {} has no spec.backup: nowhere to store a backup",
                app.name_any()
            )),
        )
        .await?;
        return Ok(requeue_normal());
    };
    let model = validate::model(&app, &Observed::default(), &ctx.agent_image)?;
    let job = backup::on_demand_backup_job(&model, backup_spec, &name);
    match apply::create_once(&ctx.client, &ns, &job).await? {
        None => {
            if phase.is_none() {
                set_status(
                    &ctx,
                    &b,
                    &FoodAppBackupStatus {
                        phase: Some(JobPhase::Pending),
                        ..Default::default()
                    },
                )
                .await?;
            }
            ctx.event(
                &*b,
                EventType::Normal,
                "BackupStarted",
                "Backup",
                format!("running backup Job {name}"),
            )
            .await;
        }
        Some(job) => {
            if let JobState::Failed { reason, message } = job_state(&job) {
                // The agent could not report (it never started, or was killed).
                set_status(
                    &ctx,
                    &b,
                    &failed(format!(
                        "JobFailed: the backup Job failed ({reason}): {message}"
                    )),
                )
                .await?;
            }
        }
    }
    Ok(Action::requeue(std::time::Duration::from_secs(15)))
}

/// Metrics and events for a finished backup, once.
async fn observe_outcome(b: &FoodAppBackup, app: Option<&FoodApp>, ctx: &Context) {
    let Some(status) = &b.status else { return };
    let key = format!("{}/{}", b.namespace().unwrap_or_default(), b.name_any());
    if !ctx.backup_seen.first_time(&key) {
        return;
    }
    let labels = crate::metrics::AppLabels {
        namespace: b.namespace().unwrap_or_default(),
        foodapp: b.spec.food_app_ref.clone(),
    };
    match status.phase {
        Some(JobPhase::Succeeded) => {
            let completed = status
                .completed_at
                .as_deref()
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
            let started = status
                .started_at
                .as_deref()
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
            if let Some(c) = completed {
                let gauge = ctx.metrics.backup_last_success.get_or_create(&labels);
                let seconds = c.as_second();
                if seconds > gauge.get() {
                    gauge.set(seconds);
                }
                if let Some(s) = started {
                    let secs = c.duration_since(s).as_secs_f64();
                    ctx.metrics.backup_duration.get_or_create(&labels).set(secs);
                }
            }
            ctx.metrics
                .backup_size
                .get_or_create(&labels)
                .set(status.size_bytes.unwrap_or(0));
            if let Some(app) = app {
                let note = format!(
                    "backup {} stored as {} ({} bytes, verified: {})",
                    b.name_any(),
                    status.object_key.as_deref().unwrap_or("?"),
                    status.size_bytes.unwrap_or(0),
                    status.verified.unwrap_or(false)
                );
                ctx.event(app, EventType::Normal, "BackupSucceeded", "Backup", note)
                    .await;
            }
        }
        Some(JobPhase::Failed) => {
            let error = status.error.clone().unwrap_or_default();
            let reason = error
                .split(':')
                .next()
                .unwrap_or("Unknown")
                .trim()
                .to_owned();
            ctx.metrics
                .backup_failures
                .get_or_create(&crate::metrics::FailureLabels {
                    namespace: labels.namespace,
                    foodapp: labels.foodapp,
                    reason,
                })
                .inc();
            if let Some(app) = app {
                ctx.event(
                    app,
                    EventType::Warning,
                    "BackupFailed",
                    "Backup",
                    format!("backup {} failed: {error}", b.name_any()),
                )
                .await;
            }
        }
        _ => {}
    }
}

pub fn error_policy(_b: Arc<FoodAppBackup>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %error, "backup reconcile failed");
    Action::requeue(std::time::Duration::from_secs(30))
}
