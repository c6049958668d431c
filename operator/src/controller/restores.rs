//! FoodAppRestores: one at a time per FoodApp, in a fixed sequence — stop
//! the API (the FoodApp reconcile scales it to zero while a restore is
//! Running; the gateway answers 503 maintenance), run the restore Job, run
//! the migrations, finish (the API comes back). Each step is a condition.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::conditions::{self, Reason, wanted};
use super::dereference::Observed;
use super::validate::{self, JobState, job_state};
use super::{Context, Error, apply, instrumented, requeue_normal};
use crate::build::{
    DATABASE_CLUSTER_ANNOTATION, RESTORE_ANNOTATION, backup, cnpg, migration, names,
};
use crate::crd::foreign::Cluster;
use crate::crd::{Engine, FoodApp, FoodAppBackup, FoodAppRestore, FoodAppRestoreStatus, JobPhase};
use crate::metrics::RestoreLabels;

pub fn restore_job_name(restore: &str) -> String {
    format!("{restore}-restore")
}

pub fn migrate_job_name(restore: &str) -> String {
    format!("{restore}-migrate")
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// How long the API may take to stop before the restore gives up (and the
/// API comes back).
const API_STOP_DEADLINE: Duration = Duration::from_secs(600);

/// The restore holding the FoodApp, if any.
pub fn lock_holder(app: &FoodApp) -> Option<&str> {
    app.metadata
        .annotations
        .as_ref()?
        .get(RESTORE_ANNOTATION)
        .map(String::as_str)
}

/// Names `restore` on the FoodApp, unless it changed since it was read (a
/// restore created at the same moment may have taken it): true when taken.
async fn take_lock(ctx: &Context, app: &FoodApp, restore: &str) -> Result<bool, Error> {
    let api: Api<FoodApp> =
        Api::namespaced(ctx.client.clone(), &app.namespace().unwrap_or_default());
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": app.metadata.resource_version,
        "annotations": {RESTORE_ANNOTATION: restore},
    }});
    match api
        .patch(
            &app.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(Error::Dereference(e)),
    }
}

/// Lets go of the FoodApp if `restore` holds it: the API comes back.
pub async fn release_lock(ctx: &Context, app: &FoodApp, restore: &str) -> Result<(), Error> {
    if lock_holder(app) != Some(restore) {
        return Ok(());
    }
    super::annotate(ctx, app, RESTORE_ANNOTATION, None).await
}

/// Whether the restore started longer than `limit` ago.
fn waited_longer_than(status: &FoodAppRestoreStatus, limit: Duration) -> bool {
    status
        .started_at
        .as_deref()
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .is_some_and(|t| {
            k8s_openapi::jiff::Timestamp::now()
                .duration_since(t)
                .as_secs() as u64
                > limit.as_secs()
        })
}

/// The restore's Jobs belong to the FoodAppRestore, not the FoodApp:
/// deleting the restore stops its Jobs (the agent rolls back), and the
/// FoodApp brings its API back only once their pods are gone.
fn owned_by_restore(job: &mut Job, restore: &FoodAppRestore) {
    job.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "foodapp.io/v1alpha1".to_owned(),
        kind: "FoodAppRestore".to_owned(),
        name: restore.name_any(),
        uid: restore.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
}

/// Longest name a Job may have (its pods carry it in a 63-character label).
const MAX_JOB_NAME: usize = 63;

/// What must hold before anything is stopped: the restore's Jobs can be
/// created. Pure.
pub fn check_names(restore: &str) -> Result<(), String> {
    for job in [restore_job_name(restore), migrate_job_name(restore)] {
        if job.len() > MAX_JOB_NAME {
            return Err(format!(
                "Job name {job} would be longer than {MAX_JOB_NAME} characters: use a restore name of at most {} characters",
                MAX_JOB_NAME - "-restore".len()
            ));
        }
    }
    Ok(())
}

struct Step<'a> {
    ctx: &'a Context,
    restore: &'a FoodAppRestore,
    status: FoodAppRestoreStatus,
}

impl Step<'_> {
    fn set(&mut self, type_: &'static str, ok: bool, reason: Reason, message: String) {
        conditions::set(
            &mut self.status.conditions,
            &wanted(type_, ok, reason, message),
            self.restore.metadata.generation,
            &now(),
        );
    }

    async fn save(&self) -> Result<(), Error> {
        if Some(&self.status) == self.restore.status.as_ref() {
            return Ok(());
        }
        let api: Api<FoodAppRestore> = Api::namespaced(
            self.ctx.client.clone(),
            &self.restore.namespace().unwrap_or_default(),
        );
        api.patch_status(
            &self.restore.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({ "status": self.status })),
        )
        .await
        .map_err(Error::Status)?;
        Ok(())
    }

    async fn finish(
        self,
        ok: bool,
        message: String,
        app: Option<&FoodApp>,
    ) -> Result<Action, Error> {
        self.finish_because(
            if ok {
                Reason::Succeeded
            } else {
                Reason::Failed
            },
            ok,
            message,
            app,
        )
        .await
    }

    async fn finish_because(
        mut self,
        reason: Reason,
        ok: bool,
        message: String,
        app: Option<&FoodApp>,
    ) -> Result<Action, Error> {
        self.status.phase = Some(if ok {
            JobPhase::Succeeded
        } else {
            JobPhase::Failed
        });
        self.status.completed_at = Some(now().0.to_string());
        if !ok {
            self.status.error = Some(message.clone());
        }
        if let Some(app) = app {
            release_lock(self.ctx, app, &self.restore.name_any()).await?;
        }
        self.set("Complete", ok, reason, message.clone());
        self.save().await?;
        let outcome = if ok { "succeeded" } else { "failed" };
        self.ctx
            .metrics
            .restores
            .get_or_create(&RestoreLabels {
                namespace: self.restore.namespace().unwrap_or_default(),
                foodapp: self.restore.spec.food_app_ref.clone(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.ctx
            .event(self.restore, reason, "Restore", message.clone())
            .await;
        if let Some(app) = app {
            self.ctx
                .event(
                    app,
                    reason,
                    "Restore",
                    format!("restore {}: {message}", self.restore.name_any()),
                )
                .await;
        }
        Ok(requeue_normal())
    }
}

/// Starts the Job unless it exists; its state when it already did.
async fn run_job(ctx: &Context, ns: &str, job: &Job) -> Result<Option<JobState>, Error> {
    Ok(apply::create_once(&ctx.client, ns, job)
        .await?
        .map(|existing| job_state(&existing)))
}

pub async fn reconcile(restore: Arc<FoodAppRestore>, ctx: Arc<Context>) -> Result<Action, Error> {
    instrumented(restore.as_ref(), &ctx, reconcile_inner(&restore, &ctx)).await
}

async fn reconcile_inner(
    restore: &Arc<FoodAppRestore>,
    ctx: &Arc<Context>,
) -> Result<Action, Error> {
    let ns = restore.namespace().unwrap_or_default();
    let name = restore.name_any();
    let status = restore.status.clone().unwrap_or_default();
    if matches!(status.phase, Some(JobPhase::Succeeded | JobPhase::Failed)) {
        return Ok(requeue_normal());
    }
    let mut step = Step {
        ctx,
        restore,
        status,
    };
    let app = Api::<FoodApp>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&restore.spec.food_app_ref)
        .await
        .map_err(Error::Dereference)?;
    let Some(app) = app else {
        return step
            .finish_because(
                Reason::FoodAppNotFound,
                false,
                format!(
                    "FoodApp {} not found in namespace {ns}",
                    restore.spec.food_app_ref
                ),
                None,
            )
            .await;
    };
    let Some(backup_spec) = app.spec.backup.clone() else {
        return step
            .finish(
                false,
                format!(
                    "FoodApp {} has no spec.backup: no bucket to restore from",
                    app.name_any()
                ),
                Some(&app),
            )
            .await;
    };

    if step.status.phase != Some(JobPhase::Running) {
        // One restore per FoodApp at a time: the FoodApp names the restore
        // that holds it (taken below, with a resourceVersion precondition).
        if let Some(holder) = lock_holder(&app).filter(|h| *h != name) {
            step.status.phase = Some(JobPhase::Pending);
            step.set(
                "Started",
                false,
                Reason::WaitingForRestore,
                format!("restore {holder} of this FoodApp is in progress"),
            );
            step.save().await?;
            return Ok(super::requeue_soon(15));
        }
        // Everything is checked before the API is stopped.
        if let Err(message) = check_names(&name) {
            return step
                .finish_because(Reason::InvalidRestore, false, message, Some(&app))
                .await;
        }
        let secret = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&backup_spec.s3.credentials_secret)
            .await
            .map_err(Error::Dereference)?;
        if secret.is_none() {
            return step
                .finish_because(
                    Reason::CredentialsSecretMissing,
                    false,
                    format!(
                        "Secret {} (backup.s3.credentials_secret of FoodApp {}) was not found; nothing was stopped",
                        backup_spec.s3.credentials_secret,
                        app.name_any()
                    ),
                    Some(&app),
                )
                .await;
        }
        // A point in time needs a WAL archive: CloudNativePG's.
        if restore.spec.target_time.is_some() && app.spec.database.engine != Engine::CloudNativePG {
            return step
                .finish_because(
                    Reason::InvalidRestore,
                    false,
                    format!(
                        "targetTime needs database.engine CloudNativePG (continuous WAL archiving); FoodApp {} uses {:?}: restore one of its backups (backupRef, objectKey or latest) instead; nothing was stopped",
                        app.name_any(),
                        app.spec.database.engine
                    ),
                    Some(&app),
                )
                .await;
        }
        // Resolve what to restore before stopping anything.
        let source = match (&restore.spec.backup_ref, &restore.spec.object_key) {
            _ if restore.spec.target_time.is_some() => format!(
                "{} at {}",
                crate::build::db_cluster(&app),
                restore.spec.target_time.as_deref().unwrap_or_default()
            ),
            (Some(b), _) => {
                let fab = Api::<FoodAppBackup>::namespaced(ctx.client.clone(), &ns)
                    .get_opt(b)
                    .await
                    .map_err(Error::Dereference)?
                    // Another FoodApp's backup is not this one's to restore.
                    .filter(|f| f.spec.food_app_ref == app.name_any());
                match fab
                    .and_then(|f| f.status)
                    .filter(|s| s.phase == Some(JobPhase::Succeeded))
                    .and_then(|s| s.object_key)
                {
                    Some(key) => key,
                    None => {
                        return step
                            .finish_because(
                                Reason::BackupNotFound,
                                false,
                                format!("FoodAppBackup {b} does not exist, is not a backup of FoodApp {}, or did not succeed; nothing was stopped", app.name_any()),
                                Some(&app),
                            )
                            .await;
                    }
                }
            }
            (None, Some(key)) => {
                let own = crate::agent::key_prefix(&backup_spec.s3.prefix, &ns, &app.name_any());
                if !crate::agent::is_own_dump(&own, key) {
                    return step
                        .finish_because(
                            Reason::InvalidRestore,
                            false,
                            format!("objectKey {key} is not a backup of FoodApp {}: its backups are {own}<time>.dump; nothing was stopped", app.name_any()),
                            Some(&app),
                        )
                        .await;
                }
                key.clone()
            }
            (None, None) => "latest".to_owned(),
        };
        // Take the FoodApp: from here its API stays stopped (and its
        // migrations wait) until this restore lets go.
        if !take_lock(ctx, &app, &name).await? {
            return Ok(super::requeue_soon(5));
        }
        step.status.phase = Some(JobPhase::Running);
        step.status.started_at = Some(now().0.to_string());
        step.status.object_key = Some(source);
        step.set(
            "Started",
            true,
            Reason::Started,
            "stopping the API".to_owned(),
        );
        step.save().await?;
        ctx.event(
            restore.as_ref(),
            Reason::Started,
            "Restore",
            "stopping the API".to_owned(),
        )
        .await;
        return Ok(Action::requeue(Duration::from_secs(5)));
    }

    // 1. The API is stopped (the FoodApp reconcile scales it to zero), and
    // its pods are gone: a terminating pod still runs the auto-reject sweeper.
    let selector = format!(
        "app.kubernetes.io/instance={},app.kubernetes.io/component=api",
        app.name_any()
    );
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::Dereference)?
        .items
        .len();
    if pods > 0 {
        if waited_longer_than(&step.status, API_STOP_DEADLINE) {
            return step
                .finish_because(
                    Reason::Timeout,
                    false,
                    format!("{pods} API pod(s) did not stop within {API_STOP_DEADLINE:?}; nothing was restored"),
                    Some(&app),
                )
                .await;
        }
        step.set(
            "ApiStopped",
            false,
            Reason::ScalingDown,
            format!("waiting for {pods} API pod(s) to be gone"),
        );
        step.save().await?;
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    step.set(
        "ApiStopped",
        true,
        Reason::Stopped,
        "the API is stopped; the gateway answers 503 maintenance".to_owned(),
    );

    // 2. The restore Job, or for a point in time a recovered Cluster.
    let model = validate::job_model(&app, &ctx.agent_image)?;
    if let Some(target) = restore.spec.target_time.as_deref() {
        if let Some(action) = recover(&mut step, &app, &backup_spec, target).await? {
            return Ok(action);
        }
        return migrate(step, restore, &app, model, &name, &ns).await;
    }
    let source = step
        .status
        .object_key
        .clone()
        .unwrap_or_else(|| "latest".to_owned());
    let mut restore_job =
        backup::restore_job(&model, &backup_spec, restore_job_name(&name), &source);
    owned_by_restore(&mut restore_job, restore);
    match run_job(ctx, &ns, &restore_job).await? {
        None | Some(JobState::Running) => {
            step.set(
                "Restored",
                false,
                Reason::Running,
                format!("restoring {source}"),
            );
            step.save().await?;
            return Ok(Action::requeue(Duration::from_secs(10)));
        }
        Some(JobState::Failed { reason, message }) => {
            return step
                .finish(
                    false,
                    format!(
                        "the restore Job failed ({reason}: {message}); the previous data is intact"
                    ),
                    Some(&app),
                )
                .await;
        }
        Some(JobState::Succeeded) => step.set(
            "Restored",
            true,
            Reason::Succeeded,
            format!("{source} restored"),
        ),
    }

    migrate(step, restore, &app, model, &name, &ns).await
}

/// Step 3: the migrations of the running API image, on the restored
/// schema; then the API comes back.
async fn migrate(
    mut step: Step<'_>,
    restore: &FoodAppRestore,
    app: &FoodApp,
    model: crate::build::Model,
    name: &str,
    ns: &str,
) -> Result<Action, Error> {
    let ctx = step.ctx;
    let source = step.status.object_key.clone().unwrap_or_default();
    let app = app.clone();
    let mut migrated_model = model;
    if let Some(image) = validate::deployed_image(&app, &Observed::default()) {
        migrated_model.spec.api.image = image;
    }
    let mut migrate = migration::job(&migrated_model);
    migrate.metadata.name = Some(migrate_job_name(name));
    owned_by_restore(&mut migrate, restore);
    match run_job(ctx, ns, &migrate).await? {
        None | Some(JobState::Running) => {
            step.set(
                "Migrated",
                false,
                Reason::Running,
                "running the migrations on the restored database".to_owned(),
            );
            step.save().await?;
            Ok(Action::requeue(Duration::from_secs(10)))
        }
        Some(JobState::Failed { reason, message }) => {
            step.set("Migrated", false, Reason::Failed, message.clone());
            step.finish(
                false,
                format!("restored, but the migrations failed ({reason}: {message})"),
                Some(&app),
            )
            .await
        }
        Some(JobState::Succeeded) => {
            step.set(
                "Migrated",
                true,
                Reason::Succeeded,
                "migrations applied".to_owned(),
            );
            step.finish(
                true,
                format!("{source} restored and migrated; the API is coming back"),
                Some(&app),
            )
            .await
        }
    }
}

/// Point-in-time recovery (engine CloudNativePG), with the API stopped:
/// a new Cluster is recovered from the archive of the one in use up to
/// `target`; once it is ready the FoodApp is switched to it (annotation
/// `foodapp.io/database-cluster`), and the step waits until the connection
/// Secret names it. None when done; else what to do meanwhile. The Cluster
/// used before is kept.
async fn recover(
    step: &mut Step<'_>,
    app: &FoodApp,
    backup: &crate::crd::BackupSpec,
    target: &str,
) -> Result<Option<Action>, Error> {
    let ctx = step.ctx;
    let ns = app.namespace().unwrap_or_default();
    let restore = step.restore;
    let key = restore
        .metadata
        .uid
        .clone()
        .unwrap_or_else(|| restore.name_any());
    let new = names::recovered_cluster(&app.name_any(), &key);
    let current = crate::build::db_cluster(app);
    if current != new {
        let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), &ns);
        let Some(cluster) = clusters.get_opt(&new).await.map_err(Error::Dereference)? else {
            let model = validate::job_model(app, &ctx.agent_image)?;
            let desired = cnpg::recovered_cluster(&model, backup, &new, &current, target);
            clusters
                .patch(
                    &new,
                    &PatchParams::apply(cnpg::RESTORE_MANAGER).force(),
                    &Patch::Apply(&desired),
                )
                .await
                .map_err(|e| Error::Apply(apply::failed("Cluster", &new)(e)))?;
            step.set(
                "Restored",
                false,
                Reason::Running,
                format!("recovering Cluster {new} from the archive of {current} up to {target}"),
            );
            step.save().await?;
            return Ok(Some(Action::requeue(Duration::from_secs(15))));
        };
        let ready = cluster
            .status
            .as_ref()
            .and_then(|s| s.ready_instances)
            .unwrap_or(0);
        let login = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&names::cnpg_app_secret(&new))
            .await
            .map_err(Error::Dereference)?;
        if ready < 1 || login.is_none() {
            let phase = cluster
                .status
                .and_then(|s| s.phase)
                .unwrap_or_else(|| "no phase yet".to_owned());
            step.set(
                "Restored",
                false,
                Reason::Running,
                format!(
                    "recovering Cluster {new} from the archive of {current} up to {target}: {phase}"
                ),
            );
            step.save().await?;
            return Ok(Some(Action::requeue(Duration::from_secs(15))));
        }
        super::annotate(ctx, app, DATABASE_CLUSTER_ANNOTATION, Some(&new)).await?;
        step.set(
            "Restored",
            true,
            Reason::Succeeded,
            format!("Cluster {new} recovered up to {target}; the FoodApp uses it now, and keeps {current}: delete that one when you no longer need it"),
        );
        step.save().await?;
        ctx.event(
            restore,
            Reason::Succeeded,
            "Restore",
            format!("Cluster {new} recovered up to {target}; {current} is kept"),
        )
        .await;
        return Ok(Some(Action::requeue(Duration::from_secs(2))));
    }
    // The migrations must reach the new Cluster: wait until the FoodApp's
    // reconcile rewrote the connection Secret.
    let url = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&names::db_connection(&app.name_any()))
        .await
        .map_err(Error::Dereference)?
        .and_then(|s| s.data)
        .and_then(|d| {
            d.get("DATABASE_URL")
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        })
        .unwrap_or_default();
    if !url.contains(&format!("@{}.", names::cnpg_rw_service(&new))) {
        step.set(
            "Migrated",
            false,
            Reason::Running,
            format!("waiting for the connection Secret to name Cluster {new}"),
        );
        step.save().await?;
        return Ok(Some(Action::requeue(Duration::from_secs(3))));
    }
    Ok(None)
}
