//! Point-in-time recovery (engine CloudNativePG): a new Cluster recovered
//! from the archive of the one in use up to the target time. InPlace stops
//! the API first and switches as soon as the Cluster is ready; Beside keeps
//! the shop on the old Cluster and switches through `beside`.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::super::conditions::Reason;
use super::super::{Error, apply, validate};
use super::{Next, Run, waited_longer_than};
use crate::build::{DATABASE_CLUSTER_ANNOTATION, MANAGER, cnpg, names};
use crate::crd::foreign::{Backup, Cluster, ObjectStore};
use crate::crd::{FoodApp, RestorePhase};

/// CloudNativePG's `archive_timeout`: a WAL segment reaches the archive at
/// most this long after it was written, so a later target may not be
/// recoverable yet.
pub const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a recovery may take unless the restore says otherwise.
pub const DEFAULT_DEADLINE_MINUTES: u32 = 120;

fn deadline_minutes(run: &Run<'_>) -> u32 {
    run.restore
        .spec
        .deadline_minutes
        .unwrap_or(DEFAULT_DEADLINE_MINUTES)
}

/// Whether the restore has run longer than its deadline.
fn past_deadline(run: &Run<'_>) -> bool {
    waited_longer_than(
        &run.status,
        Duration::from_secs(u64::from(deadline_minutes(run)) * 60),
    )
}

fn parse(time: &str) -> Option<Timestamp> {
    time.parse::<Timestamp>().ok()
}

/// Why a recovery to `target` cannot succeed, from what the archive holds:
/// the recovery window of the Cluster's `serverName` (the ObjectStore's
/// status), the base backups that completed, and the time now. Pure.
pub fn refusal(
    target: &str,
    now: Timestamp,
    cluster: &str,
    first_recoverability_point: Option<&str>,
    completed_backups: &[String],
) -> Option<String> {
    let Some(t) = parse(target) else {
        return Some(format!("targetTime {target} is not an RFC 3339 time"));
    };
    let settled = now - SignedDuration::from_secs(ARCHIVE_TIMEOUT.as_secs() as i64);
    if t > settled {
        return Some(format!(
            "targetTime {target} is less than {} minutes ago (or in the future): the WAL up to it may not be archived yet (archive_timeout); choose a time before {}",
            ARCHIVE_TIMEOUT.as_secs() / 60,
            settled
                .round(k8s_openapi::jiff::Unit::Second)
                .unwrap_or(settled)
        ));
    }
    let Some(first) = first_recoverability_point else {
        return Some(format!(
            "Cluster {cluster} has no recoverability point yet (no base backup has completed into the object store): nothing can be recovered"
        ));
    };
    if parse(first).is_some_and(|f| t < f) {
        return Some(format!(
            "targetTime {target} is before the first recoverability point of Cluster {cluster}, {first}: the archive holds nothing older"
        ));
    }
    // CloudNativePG's Backup objects go with their schedule (a FoodApp
    // made again has none of the old ones): without any, the archive's
    // first recoverability point (the end of its oldest base backup) is
    // the evidence.
    let before = completed_backups
        .iter()
        .filter_map(|b| parse(b))
        .any(|stopped| stopped <= t);
    if !before && !completed_backups.is_empty() {
        return Some(format!(
            "no base backup of Cluster {cluster} completed before {target}: recovery starts from a base backup older than its target"
        ));
    }
    None
}

/// Before anything stops: the plugin is there, and the target lies in the
/// archive's recovery window with a base backup before it. None when the
/// recovery may start; else the restore ends with nothing changed.
pub async fn precheck(run: &Run<'_>, app: &FoodApp, target: &str) -> Result<Option<Next>, Error> {
    let client = &run.ctx.client;
    let ns = run.ns();
    let current = crate::build::db_cluster(app);
    let fail = |reason, message: String| {
        Some(Next::fail(
            reason,
            format!("{message}; nothing was changed"),
        ))
    };
    if !super::super::dereference::serves::<ObjectStore>(client, &ns)
        .await
        .map_err(Error::Dereference)?
    {
        return Ok(fail(
            Reason::BarmanCloudPluginMissing,
            "point-in-time recovery reads the archive through the Barman Cloud Plugin, which is not installed (barmancloud.cnpg.io/v1 ObjectStore)".to_owned(),
        ));
    }
    let Some(live) = Api::<Cluster>::namespaced(client.clone(), &ns)
        .get_opt(&current)
        .await
        .map_err(Error::Dereference)?
    else {
        return Ok(fail(
            Reason::InvalidRestore,
            format!("Cluster {current}, the one to recover from, does not exist"),
        ));
    };
    let new = names::recovered_cluster(&app.name_any(), &run.id_key());
    if recovery_job(&new).len() > 63 {
        return Ok(fail(
            Reason::InvalidRestore,
            format!(
                "CloudNativePG would name the recovery Job {}, longer than 63 characters, and could not start it: FoodApp names on CloudNativePG have at most 37 characters; clone into a FoodApp with a shorter name instead",
                recovery_job(&new)
            ),
        ));
    }
    let server = cnpg::live_server_name(&live);
    let window = Api::<ObjectStore>::namespaced(client.clone(), &ns)
        .get_opt(&names::cnpg_object_store(&app.name_any()))
        .await
        .map_err(Error::Dereference)?
        .and_then(|s| s.status)
        .and_then(|s| s.server_recovery_window.get(&server).cloned());
    let completed: Vec<String> = Api::<Backup>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .map_err(Error::Dereference)?
        .items
        .into_iter()
        .filter(|b| b.spec.cluster.name == current)
        .filter_map(|b| b.status)
        .filter(|s| s.phase.as_deref() == Some("completed"))
        .filter_map(|s| s.stopped_at)
        .collect();
    Ok(refusal(
        target,
        Timestamp::now(),
        &current,
        window
            .as_ref()
            .and_then(|w| w.first_recoverability_point.as_deref()),
        &completed,
    )
    .map(|message| {
        Next::fail(
            Reason::TargetNotRecoverable,
            format!("{message}; nothing was changed"),
        )
    }))
}

/// The Cluster a restore switches the FoodApp to becomes the FoodApp's:
/// owned by it under `deletionPolicy: Delete` (under Retain by nothing: it
/// holds the data), and labelled in use, the label taken off the others.
pub async fn take_over(run: &Run<'_>, app: &FoodApp, cluster: &str) -> Result<(), Error> {
    let ctx = run.ctx;
    let ns = run.ns();
    let model = validate::job_model(app, &ctx.agent_image)?;
    let owner = (app.spec.deletion_policy == crate::crd::DeletionPolicy::Delete)
        .then(|| crate::build::owner_reference(&model));
    let api: Api<Cluster> = Api::namespaced(ctx.client.clone(), &ns);
    if owner.is_none() {
        // To be owned by nothing: first the record `ownership` finds it
        // again by (while the restore still controls it), so no pass of the
        // FoodApp ever sees it unowned and unrecorded.
        let owners = crate::controller::ownership::Owners::of(app, &[], &ctx.key);
        let record =
            serde_json::json!({"metadata": {"annotations": owners.record("Cluster", cluster)}});
        api.patch(cluster, &PatchParams::default(), &Patch::Merge(&record))
            .await
            .map_err(|e| Error::Apply(apply::failed("Cluster", cluster)(e)))?;
    }
    super::set_owner::<Cluster>(ctx, &ns, cluster, owner.as_ref()).await?;
    let label = |on: bool| serde_json::json!({"metadata": {"labels": {cnpg::IN_USE_LABEL: on.then_some("true")}}});
    let patch = |name: String, on: bool| {
        let api = api.clone();
        async move {
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&label(on)))
                .await
                .map_err(|e| Error::Apply(apply::failed("Cluster", &name)(e)))
        }
    };
    patch(cluster.to_owned(), true).await?;
    let selector = format!(
        "{}={},{}=true",
        cnpg::APP_LABEL,
        app.name_any(),
        cnpg::IN_USE_LABEL
    );
    for other in api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::Dereference)?
        .items
    {
        let name = other.name_any();
        if name != cluster {
            patch(name, false).await?;
        }
    }
    Ok(())
}

/// The Job CloudNativePG recovers a Cluster's first instance with.
pub fn recovery_job(cluster: &str) -> String {
    format!("{cluster}-1-full-recovery")
}

/// Creates the recovered Cluster `new` unless it exists (under the
/// restore's own field manager, so that the FoodApp's applies, which carry
/// no bootstrap, never remove it), and waits until it is ready and its app
/// login exists, its recovery Job has not failed, and the deadline has not
/// passed. None when it is ready.
pub async fn ensure_recovered(
    run: &mut Run<'_>,
    app: &FoodApp,
    target: &str,
    new: &str,
    current: &str,
) -> Result<Option<Next>, Error> {
    let ctx = run.ctx;
    let ns = run.ns();
    let minutes = deadline_minutes(run);
    if waited_longer_than(&run.status, Duration::from_secs(u64::from(minutes) * 60)) {
        return Ok(Some(Next::fail(
            Reason::Timeout,
            format!(
                "Cluster {new} was not recovered within {minutes} minutes (spec.deadlineMinutes); the FoodApp stays on {current}, and {new} is deleted"
            ),
        )));
    }
    let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(cluster) = clusters.get_opt(new).await.map_err(Error::Dereference)? else {
        let origin = clusters
            .get_opt(current)
            .await
            .map_err(Error::Dereference)?
            .map(|c| cnpg::live_server_name(&c))
            .unwrap_or_else(|| current.to_owned());
        let model = validate::job_model(app, &ctx.agent_image)?;
        let mut desired = cnpg::recovered_cluster(&model, new, &origin, target);
        // It goes with the restore until the switch.
        desired.metadata.owner_references = Some(vec![run.owner()]);
        match clusters
            .patch(
                new,
                &PatchParams::apply(cnpg::RESTORE_MANAGER).force(),
                &Patch::Apply(&desired),
            )
            .await
        {
            Ok(_) => {}
            // Refused (CloudNativePG's webhook, a quota): it never will be.
            Err(kube::Error::Api(e))
                if (400..500).contains(&e.code) && e.code != 409 && e.code != 429 =>
            {
                return Ok(Some(Next::fail(
                    Reason::ApplyFailed,
                    format!(
                        "the API server refused the recovered Cluster {new}: {}; the FoodApp stays on {current}",
                        e.message
                    ),
                )));
            }
            Err(e) => return Err(Error::Apply(apply::failed("Cluster", new)(e))),
        }
        return Ok(Some(run.waiting(
            "Restored",
            format!(
                "recovering Cluster {new} from the archive of {current} ({origin}) up to {target}"
            ),
            15,
        )));
    };
    let job = Api::<Job>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&recovery_job(new))
        .await
        .map_err(Error::Dereference)?;
    if let Some(validate::JobState::Failed { reason, message }) =
        job.as_ref().map(validate::job_state)
    {
        return Ok(Some(Next::fail(
            Reason::Failed,
            format!(
                "CloudNativePG's recovery Job {} failed ({reason}: {message}); the FoodApp stays on {current}, and {new} is deleted",
                recovery_job(new)
            ),
        )));
    }
    let ready = cluster
        .status
        .as_ref()
        .and_then(|s| s.ready_instances)
        .unwrap_or(0);
    let login = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&names::cnpg_app_secret(new))
        .await
        .map_err(Error::Dereference)?;
    if ready < 1 || login.is_none() {
        let phase = cluster
            .status
            .and_then(|s| s.phase)
            .unwrap_or_else(|| "no phase yet".to_owned());
        return Ok(Some(run.waiting(
            "Restored",
            format!(
                "recovering Cluster {new} from the archive of {current} up to {target}: {phase}"
            ),
            15,
        )));
    }
    Ok(None)
}

/// A point-in-time restore that ends without switching: the Cluster it
/// began to recover goes (the FoodApp never used it; its archive folder,
/// under its own `serverName`, is left in the bucket).
pub async fn on_failure(run: &Run<'_>, app: &FoodApp) -> Result<(), Error> {
    if run.restore.spec.target_time.is_none() {
        return Ok(());
    }
    let new = names::recovered_cluster(&app.name_any(), &run.id_key());
    if crate::build::db_cluster(app) == new {
        return Ok(());
    }
    match Api::<Cluster>::namespaced(run.ctx.client.clone(), &run.ns())
        .delete(&new, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::Cleanup(e)),
    }
}

/// Once the FoodApp's own field manager applies the recovered Cluster it
/// switched to, the restore's manager lets go of everything but the
/// bootstrap and the origin: a field later removed from the FoodApp then
/// leaves the Cluster too. None when done.
pub async fn hand_over(run: &mut Run<'_>, cluster: &str) -> Result<Option<Next>, Error> {
    let api: Api<Cluster> = Api::namespaced(run.ctx.client.clone(), &run.ns());
    let Some(live) = api.get_opt(cluster).await.map_err(Error::Dereference)? else {
        return Ok(None);
    };
    let applied_by_foodapp =
        live.metadata.managed_fields.iter().flatten().any(|m| {
            m.operation.as_deref() == Some("Apply") && m.manager.as_deref() == Some(MANAGER)
        });
    if !applied_by_foodapp && past_deadline(run) {
        // The restore itself is done: the FoodApp's next apply takes the
        // fields over; only a field removed before then stays.
        run.ctx
            .event(
                run.restore,
                Reason::Timeout,
                "Restore",
                format!("the FoodApp did not apply Cluster {cluster} before the deadline: the restore's field manager keeps its fields"),
            )
            .await;
        return Ok(None);
    }
    if !applied_by_foodapp {
        return Ok(Some(run.waiting(
            "Migrated",
            format!("waiting for the FoodApp to apply Cluster {cluster}"),
            2,
        )));
    }
    let slim = cnpg::recovery_fields(&live);
    api.patch(
        cluster,
        &PatchParams::apply(cnpg::RESTORE_MANAGER).force(),
        &Patch::Apply(&slim),
    )
    .await
    .map_err(|e| Error::Apply(apply::failed("Cluster", cluster)(e)))?;
    Ok(None)
}

/// InPlace, with the API stopped: recover, then switch the FoodApp to the
/// new Cluster (annotation `foodapp.io/database-cluster`); the Cluster used
/// before is kept.
pub async fn in_place(run: &mut Run<'_>, app: &FoodApp, target: &str) -> Result<Next, Error> {
    let new = names::recovered_cluster(&app.name_any(), &run.id_key());
    let current = crate::build::db_cluster(app);
    if current != new {
        if let Some(next) = ensure_recovered(run, app, target, &new, &current).await? {
            return Ok(next);
        }
        // The API Secret keeps the record too (it outlives a FoodApp made
        // again under Retain), and the label moves.
        if let Some(secret) = Api::<Secret>::namespaced(run.ctx.client.clone(), &run.ns())
            .get_opt(&names::api_secret(&app.name_any()))
            .await
            .map_err(Error::Dereference)?
        {
            super::super::annotate(run.ctx, &secret, DATABASE_CLUSTER_ANNOTATION, Some(&new))
                .await?;
        }
        super::super::annotate(run.ctx, app, DATABASE_CLUSTER_ANNOTATION, Some(&new)).await?;
        take_over(run, app, &new).await?;
        run.ctx
            .event(
                run.restore,
                Reason::Succeeded,
                "Restore",
                format!("Cluster {new} recovered up to {target}; {current} is kept"),
            )
            .await;
    }
    run.set(
        "Restored",
        true,
        Reason::Succeeded,
        format!("Cluster {new} recovered up to {target}; the FoodApp uses it now, and keeps {current}: delete that one when you no longer need it"),
    );
    Ok(Next::Phase(RestorePhase::Migrating))
}

/// The migrations must reach the new Cluster: wait until the FoodApp's
/// reconcile rewrote the connection Secret. None once it did.
pub async fn await_connection(run: &mut Run<'_>, app: &FoodApp) -> Result<Option<Next>, Error> {
    let new = crate::build::db_cluster(app);
    let url = Api::<Secret>::namespaced(run.ctx.client.clone(), &run.ns())
        .get_opt(&names::db_connection(&app.name_any()))
        .await
        .map_err(Error::Dereference)?
        .and_then(|s| s.data)
        .and_then(|d| {
            d.get("DATABASE_URL")
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        })
        .unwrap_or_default();
    if url.contains(&format!("@{}.", names::cnpg_rw_service(&new))) {
        return Ok(None);
    }
    if past_deadline(run) {
        return Ok(Some(Next::fail(
            Reason::Timeout,
            format!(
                "the FoodApp's connection Secret did not name Cluster {new} within {} minutes (spec.deadlineMinutes): see the FoodApp's conditions; it uses {new}",
                deadline_minutes(run)
            ),
        )));
    }
    Ok(Some(Next::Wait(Duration::from_secs(3))).inspect(|_| {
        run.set(
            "Migrated",
            false,
            Reason::Running,
            format!("waiting for the connection Secret to name Cluster {new}"),
        )
    }))
}
