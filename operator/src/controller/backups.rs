//! FoodAppBackups: runs on-demand backups as Jobs, marks backups whose Job
//! failed without reporting, and turns recorded backups into metrics and
//! events (so failed backups do not go unnoticed). Each outcome is announced
//! once, ever: the FoodAppBackup carries an annotation once it was, so an
//! operator restart does not repeat the Events of every past backup.

use std::sync::Arc;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::conditions::Reason;
use super::validate::{self, JobState, job_state};
use super::{Context, Error, apply, instrumented, requeue_normal, requeue_soon};
use crate::build::backup;
use crate::crd::{BackupSource, FoodApp, FoodAppBackup, FoodAppBackupStatus, JobPhase};

/// Set on a FoodAppBackup once its outcome was announced (Event, metric).
pub const ANNOUNCED_ANNOTATION: &str = "foodapp.io/announced";

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

fn failed(reason: Reason, message: String) -> FoodAppBackupStatus {
    FoodAppBackupStatus {
        phase: Some(JobPhase::Failed),
        completed_at: Some(k8s_openapi::jiff::Timestamp::now().to_string()),
        error: Some(message),
        reason: Some(reason.as_str().to_owned()),
        ..Default::default()
    }
}

pub async fn reconcile(b: Arc<FoodAppBackup>, ctx: Arc<Context>) -> Result<Action, Error> {
    instrumented(b.as_ref(), &ctx, reconcile_inner(&b, &ctx)).await
}

async fn reconcile_inner(b: &Arc<FoodAppBackup>, ctx: &Arc<Context>) -> Result<Action, Error> {
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
            observe_outcome(b, app.as_ref(), ctx).await?;
            return Ok(requeue_normal());
        }
        _ if b.spec.source == BackupSource::Scheduled => return Ok(requeue_normal()),
        _ => {}
    }

    // An on-demand backup: run it as a Job.
    let Some(app) = app else {
        set_status(
            ctx,
            b,
            &failed(
                Reason::FoodAppNotFound,
                format!(
                    "FoodApp {} not found in namespace {ns}",
                    b.spec.food_app_ref
                ),
            ),
        )
        .await?;
        return Ok(requeue_normal());
    };
    let Some(backup_spec) = app.spec.backup.as_ref() else {
        set_status(
            ctx,
            b,
            &failed(
                Reason::NotConfigured,
                format!(
                    "FoodApp {} has no spec.backup: nowhere to store a backup",
                    app.name_any()
                ),
            ),
        )
        .await?;
        return Ok(requeue_normal());
    };
    let model = validate::job_model(&app, &ctx.agent_image)?;
    let job = backup::on_demand_backup_job(&model, backup_spec, &name);
    match apply::create_once(&ctx.client, &ns, &job).await? {
        None => {
            if phase.is_none() {
                set_status(
                    ctx,
                    b,
                    &FoodAppBackupStatus {
                        phase: Some(JobPhase::Pending),
                        ..Default::default()
                    },
                )
                .await?;
            }
            ctx.event(
                b.as_ref(),
                Reason::Started,
                "Backup",
                format!("running backup Job {name}"),
            )
            .await;
        }
        Some(job) => {
            if let JobState::Failed { reason, message } = job_state(&job) {
                // The agent could not report (it never started, or was killed).
                set_status(
                    ctx,
                    b,
                    &failed(
                        Reason::JobFailed,
                        format!("the backup Job failed ({reason}): {message}"),
                    ),
                )
                .await?;
            }
        }
    }
    Ok(requeue_soon(15))
}

fn announced(b: &FoodAppBackup) -> bool {
    b.annotations().contains_key(ANNOUNCED_ANNOTATION)
}

/// Gauges for every finished backup (idempotent, so they survive a
/// restart); Events and the failure counter once per backup, recorded on it.
async fn observe_outcome(
    b: &FoodAppBackup,
    app: Option<&FoodApp>,
    ctx: &Context,
) -> Result<(), Error> {
    let Some(status) = &b.status else {
        return Ok(());
    };
    let first_time = !announced(b);
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
            if let Some(app) = app.filter(|_| first_time) {
                let note = format!(
                    "backup {} stored as {} ({} bytes, verified: {})",
                    b.name_any(),
                    status.object_key.as_deref().unwrap_or("?"),
                    status.size_bytes.unwrap_or(0),
                    status.verified.unwrap_or(false)
                );
                ctx.note(
                    app,
                    kube::runtime::events::EventType::Normal,
                    "BackupSucceeded",
                    "Backup",
                    note,
                )
                .await;
            }
        }
        Some(JobPhase::Failed) if first_time => {
            let error = status.error.clone().unwrap_or_default();
            let reason = status
                .reason
                .clone()
                .unwrap_or_else(|| "Unknown".to_owned());
            ctx.metrics
                .backup_failures
                .get_or_create(&crate::metrics::FailureLabels {
                    namespace: labels.namespace,
                    foodapp: labels.foodapp,
                    reason: reason.clone(),
                })
                .inc();
            if let Some(app) = app {
                ctx.note(
                    app,
                    kube::runtime::events::EventType::Warning,
                    "BackupFailed",
                    "Backup",
                    format!("backup {} failed ({reason}): {error}", b.name_any()),
                )
                .await;
            }
        }
        _ => {}
    }
    if first_time {
        super::annotate(ctx, b, ANNOUNCED_ANNOTATION, Some("true")).await?;
    }
    Ok(())
}

/// The FoodAppBackups to delete so that the cluster keeps what the bucket
/// keeps: the newest `keep` succeeded ones, and as many failed ones (the
/// recent failures stay visible). Running and pending ones stay. Pure.
pub fn expired(backups: &[FoodAppBackup], keep: usize) -> Vec<String> {
    let mut out = Vec::new();
    for phase in [JobPhase::Succeeded, JobPhase::Failed] {
        let mut done: Vec<&FoodAppBackup> = backups
            .iter()
            .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(phase))
            .collect();
        // Newest first; a backup without a completion time counts as oldest.
        done.sort_by_key(|b| std::cmp::Reverse(completed(b)));
        out.extend(done.iter().skip(keep).map(|b| b.name_any()));
    }
    out
}

fn completed(b: &FoodAppBackup) -> String {
    b.status
        .as_ref()
        .and_then(|s| s.completed_at.clone())
        .unwrap_or_default()
}

/// Deletes the FoodAppBackups retention let go of; returns how many.
pub async fn apply_retention(
    ctx: &Context,
    ns: &str,
    backups: &[FoodAppBackup],
    keep: usize,
) -> Result<u32, Error> {
    let api: Api<FoodAppBackup> = Api::namespaced(ctx.client.clone(), ns);
    let mut deleted = 0;
    for name in expired(backups, keep) {
        match api.delete(&name, &Default::default()).await {
            Ok(_) => deleted += 1,
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(Error::Cleanup(e)),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(name: &str, phase: JobPhase, completed: &str) -> FoodAppBackup {
        let mut b = FoodAppBackup::new(name, Default::default());
        b.status = Some(FoodAppBackupStatus {
            phase: Some(phase),
            completed_at: Some(completed.to_owned()),
            ..Default::default()
        });
        b
    }

    #[test]
    fn the_cluster_keeps_what_the_bucket_keeps() {
        let backups = vec![
            backup("s1", JobPhase::Succeeded, "2026-11-01T03:00:00Z"),
            backup("s3", JobPhase::Succeeded, "2026-11-03T03:00:00Z"),
            backup("s2", JobPhase::Succeeded, "2026-11-02T03:00:00Z"),
            backup("f1", JobPhase::Failed, "2026-11-01T04:00:00Z"),
            backup("f2", JobPhase::Failed, "2026-11-02T04:00:00Z"),
            backup("f3", JobPhase::Failed, "2026-11-03T04:00:00Z"),
            backup("r", JobPhase::Running, ""),
        ];
        assert_eq!(expired(&backups, 2), ["s1", "f1"]);
        assert!(expired(&backups, 3).is_empty());
    }
}
