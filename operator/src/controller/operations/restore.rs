//! The FoodAppRestore controller: the step runner, the checks made before
//! anything changes (Pending), and the InPlace steps. Beside steps are in
//! `beside`, point-in-time recovery in `recovery`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, ResourceQuota, Secret};
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use super::super::conditions::Reason;
use super::super::validate::{self, JobState};
use super::super::{Context, Error, instrumented, requeue_normal};
use super::{Next, Run, beside, clone, lock, now_rfc3339, pods_of, recovery, run_job};
use crate::build::restore::{migrate_job_name, restore_job_name};
use crate::build::{backup, migration, names};
use crate::crd::{
    BackupSpec, Engine, FoodApp, FoodAppBackup, FoodAppRestore, PreviousDatabase, RestoreMode,
    RestorePhase,
};

/// How long the API may take to stop before an InPlace restore gives up
/// (and the API comes back).
const API_STOP_DEADLINE: Duration = Duration::from_secs(600);

/// Longest name a Job may have (its pods carry it in a 63-character label).
const MAX_JOB_NAME: usize = 63;

/// Steps run back to back in one reconcile before the status is written.
const STEPS_PER_RECONCILE: usize = 8;

/// What must hold before anything changes: the restore's Jobs can be
/// created. Pure.
pub fn check_names(restore: &str) -> Result<(), String> {
    for job in crate::build::restore::job_names(restore) {
        if job.len() > MAX_JOB_NAME {
            return Err(format!(
                "Job name {job} would be longer than {MAX_JOB_NAME} characters: use a restore name of at most {} characters",
                MAX_JOB_NAME - "-restore".len()
            ));
        }
    }
    Ok(())
}

pub async fn reconcile(restore: Arc<FoodAppRestore>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Boxed, as every step below: the steps hold large Kubernetes objects
    // and would otherwise overflow small task stacks.
    instrumented(
        restore.as_ref(),
        &ctx,
        Box::pin(reconcile_inner(&restore, &ctx)),
    )
    .await
}

async fn reconcile_inner(restore: &FoodAppRestore, ctx: &Context) -> Result<Action, Error> {
    let status = restore.status.clone().unwrap_or_default();
    if status.phase.is_some_and(RestorePhase::is_final) {
        return Ok(requeue_normal());
    }
    let mut run = Run {
        ctx,
        restore,
        status,
    };
    let ns = run.ns();
    let apps: Api<FoodApp> = Api::namespaced(ctx.client.clone(), &ns);
    for _ in 0..STEPS_PER_RECONCILE {
        // Read again at each step: the previous one may have changed it.
        let Some(app) = apps
            .get_opt(&restore.spec.food_app_ref)
            .await
            .map_err(Error::Dereference)?
        else {
            let message = format!(
                "FoodApp {} not found in namespace {ns}",
                restore.spec.food_app_ref
            );
            let clone = clone::target(&run).await?;
            return run
                .end(false, Reason::FoodAppNotFound, message, clone.as_ref())
                .await;
        };
        let next = if let Some(to) = restore.spec.upgrade_to {
            let phase = run.phase().unwrap_or(RestorePhase::Pending);
            Box::pin(super::upgrade::step(&mut run, &app, to, phase)).await?
        } else {
            let Some(backup_spec) = app.spec.backup.clone() else {
                let message = format!(
                    "FoodApp {} has no spec.backup: no bucket to restore from or to export to",
                    app.name_any()
                );
                return run
                    .end(false, Reason::InvalidRestore, message, Some(&app))
                    .await;
            };
            if let Some(target) = &restore.spec.target {
                Box::pin(clone::step(&mut run, &app, &backup_spec, target)).await?
            } else {
                // A restore the previous release started has a phase and no
                // mode: that release restored in place only.
                let mode = match (run.phase(), run.status.mode) {
                    (_, Some(mode)) => mode,
                    (None | Some(RestorePhase::Pending), None) => RestoreMode::default(),
                    (Some(_), None) => RestoreMode::InPlace,
                };
                match (run.phase(), mode) {
                    (None | Some(RestorePhase::Pending), _) => {
                        Box::pin(start(&mut run, &app, &backup_spec)).await?
                    }
                    (Some(phase), RestoreMode::InPlace) => {
                        Box::pin(in_place(&mut run, &app, &backup_spec, phase)).await?
                    }
                    (Some(phase), RestoreMode::Beside) => {
                        Box::pin(beside::step(&mut run, &app, &backup_spec, phase)).await?
                    }
                }
            }
        };
        match next {
            Next::Wait(after) => {
                run.save().await?;
                return Ok(Action::requeue(after));
            }
            Next::Phase(phase) => {
                run.status.phase = Some(phase);
                ctx.note(
                    restore,
                    EventType::Normal,
                    &format!("{phase:?}"),
                    "Restore",
                    phase_note(phase, &run),
                )
                .await;
            }
            Next::End {
                ok,
                reason,
                message,
            } => {
                if restore.spec.target.is_some() {
                    // A clone held the FoodApp it goes into, not this one.
                    let clone = clone::target(&run).await?;
                    return run.end(ok, reason, message, clone.as_ref()).await;
                }
                if !ok {
                    Box::pin(beside::on_failure(&mut run, &app)).await?;
                    Box::pin(recovery::on_failure(&run, &app)).await?;
                }
                return run.end(ok, reason, message, Some(&app)).await;
            }
        }
    }
    run.save().await?;
    Ok(Action::requeue(Duration::from_secs(1)))
}

fn phase_note(phase: RestorePhase, run: &Run<'_>) -> String {
    let db = run.status.database.clone().unwrap_or_default();
    match phase {
        RestorePhase::Restoring => match run.status.mode {
            Some(RestoreMode::InPlace) => "stopping the API, then restoring in place".to_owned(),
            _ => format!("restoring into {db} while the shop serves from the live database"),
        },
        RestorePhase::Verifying => format!("checking {db} against the backup's manifest"),
        RestorePhase::Migrating => "running the migrations of the API image in use".to_owned(),
        RestorePhase::Switching => {
            format!("pausing writes, exporting what would be discarded, switching to {db}")
        }
        other => format!("{other:?}"),
    }
}

/// A Pending restore: everything is checked before anything changes; then
/// the FoodApp is taken and the first phase begins.
async fn start(run: &mut Run<'_>, app: &FoodApp, backup_spec: &BackupSpec) -> Result<Next, Error> {
    let ctx = run.ctx;
    let ns = run.ns();
    let name = run.name();
    let spec = &run.restore.spec;
    let mode = spec.mode();
    // One operation per FoodApp at a time.
    if let Some(holder) = lock::holder(app).filter(|h| *h != name) {
        run.status.phase = Some(RestorePhase::Pending);
        let message = format!("restore {holder} of this FoodApp is in progress");
        run.set("Started", false, Reason::WaitingForRestore, message);
        return Ok(Next::Wait(Duration::from_secs(15)));
    }
    if let Err(message) = check_names(&name) {
        return Ok(Next::fail(Reason::InvalidRestore, message));
    }
    if let Some(next) = check_credentials(run, app, backup_spec).await? {
        return Ok(next);
    }
    let engine = app.spec.database.engine;
    if spec.target_time.is_some() && engine != Engine::CloudNativePG {
        return Ok(Next::fail(
            Reason::InvalidRestore,
            format!(
                "targetTime needs database.engine CloudNativePG (continuous WAL archiving); FoodApp {} uses {engine:?}: restore one of its backups (backupRef, objectKey or latest) instead; nothing was changed",
                app.name_any(),
            ),
        ));
    }
    if spec.target_database.is_some() && engine != Engine::External {
        return Ok(Next::fail(
            Reason::InvalidRestore,
            format!(
                "targetDatabase is for database.engine External; FoodApp {} uses {engine:?}; nothing was changed",
                app.name_any()
            ),
        ));
    }
    if let Some(target) = &spec.target_time
        && let Some(next) = recovery::precheck(run, app, target).await?
    {
        return Ok(next);
    }
    let source = match resolve_source(run, app, backup_spec).await? {
        Ok(source) => source,
        Err(next) => return Ok(next),
    };
    let plan = match mode {
        RestoreMode::InPlace => None,
        RestoreMode::Beside => match beside::plan(run, app).await? {
            Ok(plan) => Some(plan),
            Err(next) => return Ok(next),
        },
    };
    // Storage for the second database, checked against the namespace's
    // quotas before anything is made.
    if let Some(plan) = &plan
        && let Some(size) = &plan.new_volume
        && let Some(message) = quota_refusal(
            &Api::<ResourceQuota>::namespaced(ctx.client.clone(), &ns)
                .list(&ListParams::default())
                .await
                .map_err(Error::Dereference)?
                .items,
            size,
            app.spec.database.storage.storage_class_name.as_deref(),
        )
    {
        return Ok(Next::fail(
            Reason::InsufficientQuota,
            format!(
                "{message}; nothing was changed: raise the quota, or restore with mode InPlace (one copy of the data)"
            ),
        ));
    }
    if !lock::take(ctx, app, &name, mode == RestoreMode::InPlace).await? {
        return Ok(Next::Wait(Duration::from_secs(2)));
    }
    run.status.mode = Some(mode);
    run.status.started_at = Some(now_rfc3339());
    run.status.object_key = Some(source);
    if let Some(plan) = plan {
        run.status.database = Some(plan.target);
        run.status.previous = Some(PreviousDatabase {
            name: plan.current,
            ..Default::default()
        });
    }
    let message = match mode {
        RestoreMode::InPlace => "stopping the API".to_owned(),
        RestoreMode::Beside => format!(
            "restoring into {} beside the live database; the shop keeps serving",
            run.status.database.clone().unwrap_or_default()
        ),
    };
    run.set("Started", true, Reason::Started, message.clone());
    ctx.event(run.restore, Reason::Started, "Restore", message)
        .await;
    Ok(Next::Phase(RestorePhase::Restoring))
}

/// The bucket's credentials Secret exists; else the restore ends before
/// anything changes.
pub async fn check_credentials(
    run: &Run<'_>,
    app: &FoodApp,
    backup_spec: &BackupSpec,
) -> Result<Option<Next>, Error> {
    let credentials = Api::<Secret>::namespaced(run.ctx.client.clone(), &run.ns())
        .get_opt(&backup_spec.s3.credentials_secret)
        .await
        .map_err(Error::Dereference)?;
    Ok(credentials.is_none().then(|| {
        Next::fail(
            Reason::CredentialsSecretMissing,
            format!(
                "Secret {} (backup.s3.credentials_secret of FoodApp {}) was not found; nothing was changed",
                backup_spec.s3.credentials_secret,
                app.name_any()
            ),
        )
    }))
}

/// The object key (or `latest`, or the point in time, or the restore
/// reverted) the restore takes its data from; a failure ends the restore
/// before anything changes.
pub async fn resolve_source(
    run: &Run<'_>,
    app: &FoodApp,
    backup_spec: &BackupSpec,
) -> Result<Result<String, Next>, Error> {
    let spec = &run.restore.spec;
    let ns = run.ns();
    if let Some(target) = &spec.target_time {
        return Ok(Ok(format!("{} at {target}", crate::build::db_cluster(app))));
    }
    if let Some(reverted) = &spec.revert {
        return Ok(Ok(format!("revert of {reverted}")));
    }
    match (&spec.backup_ref, &spec.object_key) {
        (Some(b), _) => {
            let fab = Api::<FoodAppBackup>::namespaced(run.ctx.client.clone(), &ns)
                .get_opt(b)
                .await
                .map_err(Error::Dereference)?
                // Another FoodApp's backup is not this one's to restore.
                .filter(|f| f.spec.food_app_ref == app.name_any());
            Ok(fab
                .and_then(|f| f.status)
                .filter(|s| s.phase == Some(crate::crd::JobPhase::Succeeded))
                .and_then(|s| s.object_key)
                .ok_or_else(|| Next::fail(
                    Reason::BackupNotFound,
                    format!("FoodAppBackup {b} does not exist, is not a backup of FoodApp {}, or did not succeed; nothing was changed", app.name_any()),
                )))
        }
        (None, Some(key)) => {
            let own = crate::agent::key_prefix(&backup_spec.s3.prefix, &ns, &app.name_any());
            if crate::agent::is_own_dump(&own, key) {
                Ok(Ok(key.clone()))
            } else {
                Ok(Err(Next::fail(
                    Reason::InvalidRestore,
                    format!(
                        "objectKey {key} is not a backup of FoodApp {}: its backups are {own}<time>.dump; nothing was changed",
                        app.name_any()
                    ),
                )))
            }
        }
        (None, None) => Ok(Ok("latest".to_owned())),
    }
}

/// Why the namespace's ResourceQuotas would refuse another claim of
/// `size`, if they would. Pure.
pub fn quota_refusal(
    quotas: &[ResourceQuota],
    size: &str,
    storage_class: Option<&str>,
) -> Option<String> {
    let need = crate::quantity::bytes(size)?;
    let mut keys = vec![
        ("requests.storage".to_owned(), need),
        ("persistentvolumeclaims".to_owned(), 1.0),
    ];
    if let Some(class) = storage_class {
        keys.push((
            format!("{class}.storageclass.storage.k8s.io/requests.storage"),
            need,
        ));
        keys.push((
            format!("{class}.storageclass.storage.k8s.io/persistentvolumeclaims"),
            1.0,
        ));
    }
    for q in quotas {
        let (Some(hard), used) = (
            q.status
                .as_ref()
                .and_then(|s| s.hard.as_ref())
                .or(q.spec.as_ref().and_then(|s| s.hard.as_ref())),
            q.status.as_ref().and_then(|s| s.used.as_ref()),
        ) else {
            continue;
        };
        for (key, amount) in &keys {
            let Some(limit) = hard.get(key).and_then(|v| crate::quantity::bytes(&v.0)) else {
                continue;
            };
            let in_use = used
                .and_then(|u| u.get(key))
                .and_then(|v| crate::quantity::bytes(&v.0))
                .unwrap_or(0.0);
            if in_use + *amount > limit {
                return Some(format!(
                    "ResourceQuota {} allows {key} {} and {} is in use: the second database needs {}",
                    q.name_any(),
                    hard[key].0,
                    used.and_then(|u| u.get(key)).map_or("0", |v| v.0.as_str()),
                    if key.ends_with("persistentvolumeclaims") {
                        "one more claim".to_owned()
                    } else {
                        size.to_owned()
                    },
                ));
            }
        }
    }
    None
}

/// The size of the live built-in volume, when it grew beyond the spec.
pub async fn live_claim_size(
    run: &Run<'_>,
    statefulset: &str,
) -> Result<Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>, Error> {
    Ok(
        Api::<PersistentVolumeClaim>::namespaced(run.ctx.client.clone(), &run.ns())
            .get_opt(&names::claim_of(statefulset))
            .await
            .map_err(Error::Dereference)?
            .and_then(|c| c.status?.capacity?.get("storage").cloned()),
    )
}

/// Waits until the API is stopped (the FoodApp reconcile scales it to zero
/// while the restore holds it with `api-stopped`) and its pods are gone: a
/// terminating pod still runs the auto-reject sweeper. None once stopped.
pub async fn stop_api(run: &mut Run<'_>, app: &FoodApp) -> Result<Option<Next>, Error> {
    let selector = format!(
        "app.kubernetes.io/instance={},app.kubernetes.io/component=api",
        app.name_any()
    );
    let pods =
        Api::<k8s_openapi::api::core::v1::Pod>::namespaced(run.ctx.client.clone(), &run.ns())
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(Error::Dereference)?
            .items
            .len();
    if pods > 0 {
        if super::waited_longer_than(&run.status, API_STOP_DEADLINE) {
            return Ok(Some(Next::fail(
                Reason::Timeout,
                format!(
                    "{pods} API pod(s) of FoodApp {} did not stop within {API_STOP_DEADLINE:?}; nothing was restored",
                    app.name_any()
                ),
            )));
        }
        run.set(
            "ApiStopped",
            false,
            Reason::ScalingDown,
            format!("waiting for {pods} API pod(s) to be gone"),
        );
        return Ok(Some(Next::Wait(Duration::from_secs(5))));
    }
    run.set(
        "ApiStopped",
        true,
        Reason::Stopped,
        "the API is stopped; the gateway answers 503 maintenance".to_owned(),
    );
    Ok(None)
}

/// InPlace: stop the API, restore into the live database in one
/// transaction (or recover a new Cluster to a point in time), migrate,
/// bring the API back.
async fn in_place(
    run: &mut Run<'_>,
    app: &FoodApp,
    backup_spec: &BackupSpec,
    phase: RestorePhase,
) -> Result<Next, Error> {
    let ctx = run.ctx;
    let name = run.name();
    match phase {
        RestorePhase::Restoring => {
            if let Some(next) = stop_api(run, app).await? {
                return Ok(next);
            }
            if let Some(target) = run.restore.spec.target_time.clone() {
                return recovery::in_place(run, app, &target).await;
            }
            let model = validate::job_model(app, &ctx.agent_image)?;
            let source = run
                .status
                .object_key
                .clone()
                .unwrap_or_else(|| "latest".to_owned());
            let mut job =
                backup::restore_job(&model, backup_spec, restore_job_name(&name), &source);
            job.metadata.owner_references = Some(vec![run.owner()]);
            match run_job(run, &job).await? {
                None | Some(JobState::Running) => {
                    Ok(run.waiting("Restored", format!("restoring {source}"), 10))
                }
                Some(JobState::Failed { reason, message }) => Ok(Next::fail(
                    Reason::Failed,
                    format!(
                        "the restore Job failed ({reason}: {message}); the previous data is intact"
                    ),
                )),
                Some(JobState::Succeeded) => {
                    run.set(
                        "Restored",
                        true,
                        Reason::Succeeded,
                        format!("{source} restored"),
                    );
                    Ok(Next::Phase(RestorePhase::Migrating))
                }
            }
        }
        RestorePhase::Migrating => migrating(run, app).await,
        other => Ok(Next::fail(
            Reason::InvalidRestore,
            format!("phase {other:?} is not one of an InPlace restore"),
        )),
    }
}

/// InPlace, last: the migrations of the API image in use on the database
/// restored (or upgraded) in place; then the API comes back.
pub async fn migrating(run: &mut Run<'_>, app: &FoodApp) -> Result<Next, Error> {
    {
        {
            if run.restore.spec.target_time.is_some() {
                if let Some(next) = recovery::await_connection(run, app).await? {
                    return Ok(next);
                }
                let cluster = crate::build::db_cluster(app);
                if let Some(next) = recovery::hand_over(run, &cluster).await? {
                    return Ok(next);
                }
            }
            let job = in_place_migration(run, app).await?;
            let source = run.status.object_key.clone().unwrap_or_default();
            match run_job(run, &job).await? {
                None | Some(JobState::Running) => Ok(run.waiting(
                    "Migrated",
                    "running the migrations on the restored database".to_owned(),
                    10,
                )),
                Some(JobState::Failed { reason, message }) => {
                    run.set("Migrated", false, Reason::Failed, message.clone());
                    Ok(Next::fail(
                        Reason::Failed,
                        format!("restored, but the migrations failed ({reason}: {message})"),
                    ))
                }
                Some(JobState::Succeeded) => {
                    run.set(
                        "Migrated",
                        true,
                        Reason::Succeeded,
                        "migrations applied".to_owned(),
                    );
                    let done = match run.restore.spec.upgrade_to {
                        Some(to) => format!("upgraded to PostgreSQL {to} and migrated"),
                        None => format!("{source} restored and migrated"),
                    };
                    Ok(Next::End {
                        ok: true,
                        reason: Reason::Succeeded,
                        message: format!("{done}; the API is coming back"),
                    })
                }
            }
        }
    }
}

/// The migrations of the API image `app` runs (or is about to run), on
/// its own database restored in place, as this restore's Job.
pub async fn in_place_migration(
    run: &Run<'_>,
    app: &FoodApp,
) -> Result<k8s_openapi::api::batch::v1::Job, Error> {
    let mut model = validate::job_model(app, &run.ctx.agent_image)?;
    if let Some(image) = validate::deployed_image(app, &Default::default()) {
        model.spec.api.image = image;
    }
    let mut job = migration::job(&model);
    job.metadata.name = Some(migrate_job_name(&run.name()));
    job.metadata.owner_references = Some(vec![run.owner()]);
    Ok(job)
}

/// Pods of a restore's Jobs still there: an abandoned restore lets go of
/// the FoodApp only once they are gone.
pub async fn pods_left(ctx: &Context, ns: &str, restore: &str) -> Result<usize, Error> {
    pods_of(ctx, ns, &crate::build::restore::job_names(restore)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ResourceQuotaSpec, ResourceQuotaStatus};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn quota(hard: &[(&str, &str)], used: &[(&str, &str)]) -> ResourceQuota {
        let map = |l: &[(&str, &str)]| {
            l.iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect()
        };
        ResourceQuota {
            metadata: kube::api::ObjectMeta {
                name: Some("storage".into()),
                ..Default::default()
            },
            spec: Some(ResourceQuotaSpec {
                hard: Some(map(hard)),
                ..Default::default()
            }),
            status: Some(ResourceQuotaStatus {
                hard: Some(map(hard)),
                used: Some(map(used)),
            }),
        }
    }

    #[test]
    fn a_second_database_that_the_quota_cannot_hold_is_refused_before_anything_changes() {
        let q = quota(
            &[("requests.storage", "15Gi")],
            &[("requests.storage", "10Gi")],
        );
        let message = quota_refusal(std::slice::from_ref(&q), "10Gi", None).unwrap();
        assert!(message.contains("requests.storage 15Gi"), "{message}");
        assert!(quota_refusal(&[q], "5Gi", None).is_none());
        let claims = quota(
            &[("persistentvolumeclaims", "1")],
            &[("persistentvolumeclaims", "1")],
        );
        assert!(
            quota_refusal(&[claims], "1Gi", None)
                .unwrap()
                .contains("one more claim")
        );
        let class = quota(
            &[("fast.storageclass.storage.k8s.io/requests.storage", "10Gi")],
            &[("fast.storageclass.storage.k8s.io/requests.storage", "10Gi")],
        );
        assert!(quota_refusal(std::slice::from_ref(&class), "1Gi", Some("fast")).is_some());
        assert!(quota_refusal(&[class], "1Gi", Some("slow")).is_none());
        assert!(quota_refusal(&[], "100Ti", None).is_none());
    }

    #[test]
    fn every_job_name_fits_its_label() {
        assert!(check_names(&"r".repeat(55)).is_ok());
        assert!(check_names(&"r".repeat(56)).is_err());
    }
}
