//! The InPlace PostgreSQL major upgrade, as a FoodAppRestore with
//! `spec.upgradeTo` (made by the FoodApp reconcile, `controller::upgrade`,
//! after its backup): the API stopped, the database stopped, then
//! `pg_upgrade --link` in a Job on the database's own volume (the old
//! image's binaries copied in by its init container), then the database
//! back on the new image (the FoodApp reconcile reads condition
//! `Upgraded`), the migrations run against it, and the API back.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::super::conditions::Reason;
use super::super::validate::{self, JobState};
use super::super::{Context, Error};
use super::{Next, Run, lock, run_job};
use crate::build::{names, postgres::POD_NAME_LABEL, upgrade as children};
use crate::controller::upgrade::UPGRADE_FROM_IMAGE_ANNOTATION;
use crate::crd::{FoodApp, RestoreMode, RestorePhase};

/// Condition on the restore once the data is on the new major: the FoodApp
/// reconcile then starts the database on the new image.
pub const UPGRADED: &str = "Upgraded";

/// How long the old database may take to stop.
const DATABASE_STOP_DEADLINE: Duration = Duration::from_secs(300);

/// The Job of the InPlace upgrade `restore`.
pub fn job_name(restore: &str) -> String {
    format!("{restore}-upgrade")
}

/// Whether the database's pod still exists.
async fn database_pod(ctx: &Context, ns: &str, statefulset: &str) -> Result<bool, Error> {
    Ok(!Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{POD_NAME_LABEL}={statefulset}-0")))
        .await
        .map_err(Error::Dereference)?
        .items
        .is_empty())
}

/// The text the upgrade script left as its termination message.
async fn job_message(run: &Run<'_>, job: &str) -> Result<Option<String>, Error> {
    Ok(super::termination_messages(run, job)
        .await?
        .iter()
        .map(|m| {
            m.lines()
                .filter(|l| !l.starts_with("PG_VERSION="))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .find(|m| !m.trim().is_empty()))
}

/// Takes the FoodApp (one operation at a time), the API to be stopped.
async fn start(run: &mut Run<'_>, app: &FoodApp, to: i32) -> Result<Next, Error> {
    let name = run.name();
    if let Some(holder) = lock::holder(app).filter(|h| *h != name) {
        run.status.phase = Some(RestorePhase::Pending);
        let message = format!("restore {holder} of this FoodApp is in progress");
        run.set("Started", false, Reason::WaitingForRestore, message);
        return Ok(Next::Wait(Duration::from_secs(15)));
    }
    if !lock::take(run.ctx, app, &name, true).await? {
        return Ok(Next::Wait(Duration::from_secs(2)));
    }
    run.status.mode = Some(RestoreMode::InPlace);
    run.status.started_at = Some(super::now_rfc3339());
    let message =
        format!("upgrading PostgreSQL InPlace to {to}: stopping the API, then the database");
    run.set("Started", true, Reason::Started, message.clone());
    run.ctx
        .event(run.restore, Reason::Started, "Upgrade", message)
        .await;
    Ok(Next::Phase(RestorePhase::Restoring))
}

/// One step of the InPlace upgrade to `to` (phase Restoring: stop, run
/// pg_upgrade; phase Migrating: as an InPlace restore).
pub async fn step(
    run: &mut Run<'_>,
    app: &FoodApp,
    to: i32,
    phase: RestorePhase,
) -> Result<Next, Error> {
    let ctx = run.ctx;
    let ns = run.ns();
    match phase {
        RestorePhase::Pending => return start(run, app, to).await,
        RestorePhase::Restoring => {}
        RestorePhase::Migrating => return super::restore::migrating(run, app).await,
        other => {
            return Ok(Next::fail(
                Reason::InvalidRestore,
                format!("phase {other:?} is not one of an InPlace upgrade"),
            ));
        }
    }
    if run
        .status
        .conditions
        .iter()
        .any(|c| c.type_ == UPGRADED && c.status == "True")
    {
        return Ok(Next::Phase(RestorePhase::Migrating));
    }
    if let Some(next) = super::restore::stop_api(run, app).await? {
        return Ok(next);
    }
    let statefulset = crate::build::db_cluster(app);
    let Some(from_image) = run
        .restore
        .annotations()
        .get(UPGRADE_FROM_IMAGE_ANNOTATION)
        .cloned()
    else {
        return Ok(Next::fail(
            Reason::InvalidRestore,
            format!(
                "annotation {UPGRADE_FROM_IMAGE_ANNOTATION} (the image the data runs on) is missing; nothing was changed"
            ),
        ));
    };
    // The FoodApp reconcile scales the database to zero once the API is
    // stopped (condition ApiStopped); its pod must be gone before the Job
    // touches the volume.
    if database_pod(ctx, &ns, &statefulset).await? {
        if super::waited_longer_than(&run.status, DATABASE_STOP_DEADLINE) {
            return Ok(Next::fail(
                Reason::Timeout,
                format!(
                    "the database pod {statefulset}-0 did not stop within {DATABASE_STOP_DEADLINE:?}; nothing was upgraded"
                ),
            ));
        }
        return Ok(run.waiting(
            UPGRADED,
            format!("waiting for the database pod {statefulset}-0 to stop"),
            3,
        ));
    }
    let model = validate::job_model(app, &ctx.agent_image)?;
    let to = u32::try_from(to).unwrap_or_default();
    let name = job_name(&run.name());
    let job = children::job(
        &model,
        &name,
        &from_image,
        to,
        &names::claim_of(&statefulset),
        &run.owner(),
    );
    Ok(match run_job(run, &job).await? {
        None | Some(JobState::Running) => run.waiting(
            UPGRADED,
            format!(
                "pg_upgrade --link to PostgreSQL {to} runs on {} (Job {name})",
                names::claim_of(&statefulset)
            ),
            5,
        ),
        Some(JobState::Failed { reason, message }) => {
            let said = job_message(run, &name).await?.unwrap_or(message);
            Next::fail(
                Reason::Failed,
                format!(
                    "the upgrade to PostgreSQL {to} failed ({reason}: {said}); the database comes back on {from_image}"
                ),
            )
        }
        Some(JobState::Succeeded) => {
            run.set(
                UPGRADED,
                true,
                Reason::Succeeded,
                format!(
                    "the data is PostgreSQL {to}; the database starts on {}",
                    app.spec.database.image
                ),
            );
            // The next pass runs the migrations once the database is back.
            Next::Wait(Duration::from_secs(2))
        }
    })
}
