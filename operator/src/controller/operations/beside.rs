//! Beside: the restore is made into a second database while the shop keeps
//! serving from the live one — a StatefulSet `<name>-db-<id>` (BuiltIn), a
//! database `<database>_r<id>` on the same server (External), a new Cluster
//! (CloudNativePG) — verified and migrated, then switched to in seconds:
//! the live database turns read-only, what it holds that the restored one
//! lacks is exported next to the dump, the FoodApp is pointed at the new
//! database, and writes resume there. The database replaced is kept
//! (scaled to zero) until the restore is deleted, so that a later restore
//! with `revert` can switch back the same way.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::super::conditions::Reason;
use super::super::validate::{self, JobState};
use super::super::{Error, annotate, apply};
use super::{Next, Run, get_job, job_result, now_rfc3339, run_job, set_owner};
use crate::agent::switch::SwitchOutcome;
use crate::build::restore::{
    self as children, SwitchJob, builtin_url, restore_job_name, switch_job_name,
    targets_secret_name,
};
use crate::build::{
    DATABASE_CLUSTER_ANNOTATION, DATABASE_IN_USE_ANNOTATION, DATABASE_NAME_ANNOTATION, DB_NAME,
    DB_USER, Model, cnpg, names, owner_reference, postgres,
};
use crate::crd::foreign::Cluster;
use crate::crd::{BackupSpec, Engine, FoodApp, FoodAppRestore, RestorePhase};

/// Set on a FoodAppRestore stopped by `requireNoDiscard`: switch anyway
/// (what is discarded is exported first).
pub const ACCEPT_DISCARD_ANNOTATION: &str = "foodapp.io/accept-discard";

/// CloudNativePG's declarative hibernation: the Cluster's pods go, its
/// volumes stay (the kept database of a Beside restore).
const CNPG_HIBERNATION: &str = "cnpg.io/hibernation";

/// Which database the restore replaces, and which it switches to.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub current: String,
    pub target: String,
    /// The size of the second volume to make (BuiltIn, not a revert).
    pub new_volume: Option<String>,
}

/// The database the FoodApp uses now, by engine.
async fn in_use(run: &Run<'_>, app: &FoodApp) -> Result<Result<String, String>, Error> {
    Ok(match app.spec.database.engine {
        Engine::BuiltIn | Engine::CloudNativePG => Ok(crate::build::db_cluster(app)),
        Engine::External => match crate::build::external_database(app) {
            Some(db) => Ok(db),
            None => external(run, app).await?.map(|c| c.database),
        },
    })
}

/// The user's Secret for engine External, read and checked.
async fn external(
    run: &Run<'_>,
    app: &FoodApp,
) -> Result<Result<crate::build::Connection, String>, Error> {
    let name = validate::external_secret_name(app);
    let secret = Api::<Secret>::namespaced(run.ctx.client.clone(), &run.ns())
        .get_opt(&name)
        .await
        .map_err(Error::Dereference)?;
    Ok(validate::external_connection(secret.as_ref(), &name))
}

/// The restore `spec.revert` names, if it can be reverted: it succeeded,
/// Beside, on this FoodApp, its database is the one in use and the one it
/// replaced is still kept.
async fn reverted(run: &Run<'_>, name: &str) -> Result<Result<FoodAppRestore, String>, Error> {
    let r = Api::<FoodAppRestore>::namespaced(run.ctx.client.clone(), &run.ns())
        .get_opt(name)
        .await
        .map_err(Error::Dereference)?;
    let Some(r) = r.filter(|r| r.spec.food_app_ref == run.restore.spec.food_app_ref) else {
        return Ok(Err(format!(
            "FoodAppRestore {name} of FoodApp {} does not exist",
            run.restore.spec.food_app_ref
        )));
    };
    let status = r.status.clone().unwrap_or_default();
    if status.phase != Some(RestorePhase::Succeeded)
        || status.mode != Some(crate::crd::RestoreMode::Beside)
    {
        return Ok(Err(format!(
            "FoodAppRestore {name} is not a Beside restore that succeeded (phase {:?}): there is nothing to switch back to",
            status.phase
        )));
    }
    match &status.previous {
        Some(p) if !p.deleted => Ok(Ok(r)),
        _ => Ok(Err(format!(
            "FoodAppRestore {name} kept no previous database (keepPrevious: false): there is nothing to switch back to"
        ))),
    }
}

/// Decides the two databases before anything changes; a refusal ends the
/// restore with nothing changed.
pub async fn plan(run: &Run<'_>, app: &FoodApp) -> Result<Result<Plan, Next>, Error> {
    let engine = app.spec.database.engine;
    let current = match in_use(run, app).await? {
        Ok(c) => c,
        Err(message) => {
            return Ok(Err(Next::fail(
                Reason::SecretInvalid,
                format!("{message}; nothing was changed"),
            )));
        }
    };
    if let Some(name) = &run.restore.spec.revert {
        let r = match reverted(run, name).await? {
            Ok(r) => r,
            Err(message) => return Ok(Err(Next::fail(Reason::InvalidRestore, message))),
        };
        let status = r.status.unwrap_or_default();
        if status.database.as_deref() != Some(current.as_str()) {
            return Ok(Err(Next::fail(
                Reason::InvalidRestore,
                format!(
                    "FoodApp {} uses {current}, not {} which restore {name} switched to: a later switch happened; revert that one instead",
                    app.name_any(),
                    status.database.unwrap_or_default()
                ),
            )));
        }
        let target = status.previous.map(|p| p.name).unwrap_or_default();
        return Ok(Ok(Plan {
            current,
            target,
            new_volume: None,
        }));
    }
    let key = run.id_key();
    let (target, new_volume) = match engine {
        Engine::BuiltIn => {
            let size = super::restore::live_claim_size(run, &current).await?;
            (
                names::recovered_cluster(&app.name_any(), &key),
                Some(children::volume_size(
                    &app.spec.database.storage.size,
                    size.as_ref(),
                )),
            )
        }
        Engine::CloudNativePG => (names::recovered_cluster(&app.name_any(), &key), None),
        Engine::External => (
            run.restore
                .spec
                .target_database
                .clone()
                .unwrap_or_else(|| names::restored_database(&current, &key)),
            None,
        ),
    };
    if target == current {
        return Ok(Err(Next::fail(
            Reason::InvalidRestore,
            format!("{target} is the database in use: name another targetDatabase"),
        )));
    }
    Ok(Ok(Plan {
        current,
        target,
        new_volume,
    }))
}

fn target(run: &Run<'_>) -> String {
    run.status.database.clone().unwrap_or_default()
}

fn previous(run: &Run<'_>) -> String {
    run.status
        .previous
        .as_ref()
        .map(|p| p.name.clone())
        .unwrap_or_default()
}

fn model(run: &Run<'_>, app: &FoodApp) -> Result<Model, validate::Error> {
    validate::job_model(app, &run.ctx.agent_image)
}

/// One step of a Beside restore.
pub async fn step(
    run: &mut Run<'_>,
    app: &FoodApp,
    backup: &BackupSpec,
    phase: RestorePhase,
) -> Result<Next, Error> {
    match phase {
        RestorePhase::Restoring => Box::pin(restoring(run, app, backup)).await,
        RestorePhase::Verifying => Box::pin(verifying(run)).await,
        RestorePhase::Migrating => Box::pin(migrating(run, app)).await,
        RestorePhase::Switching => Box::pin(switching(run, app, backup)).await,
        other => Ok(Next::fail(
            Reason::InvalidRestore,
            format!("phase {other:?} is not one of a Beside restore"),
        )),
    }
}

/// Makes (or, for a revert, wakes) the second database and restores into it.
async fn restoring(run: &mut Run<'_>, app: &FoodApp, backup: &BackupSpec) -> Result<Next, Error> {
    let target = target(run);
    let reverting = run.restore.spec.revert.is_some();
    let engine = app.spec.database.engine;
    if let Some(next) = match engine {
        Engine::BuiltIn => Box::pin(builtin_ready(run, app, reverting)).await?,
        Engine::CloudNativePG => Box::pin(cnpg_ready(run, app, reverting)).await?,
        Engine::External => None,
    } {
        return Ok(next);
    }
    if let Some(next) = Box::pin(ensure_targets(run, app)).await? {
        return Ok(next);
    }
    let model = model(run, app)?;
    if reverting {
        // The switch that replaced it left it read-only.
        let job = children::writable_job(&model, backup, &run.owner());
        return Ok(match run_job(run, &job).await? {
            None | Some(JobState::Running) => {
                run.waiting("Restored", format!("giving {target} its writes back"), 2)
            }
            Some(JobState::Failed { reason, message }) => Next::fail(
                Reason::Failed,
                format!(
                    "{target} could not be given its writes back ({reason}: {message}); nothing was switched"
                ),
            ),
            Some(JobState::Succeeded) => {
                run.set(
                    "Restored",
                    true,
                    Reason::Succeeded,
                    format!("{target} is ready and takes writes"),
                );
                Next::Phase(RestorePhase::Migrating)
            }
        });
    }
    if run.restore.spec.target_time.is_some() {
        run.set(
            "Restored",
            true,
            Reason::Succeeded,
            format!("{target} is ready"),
        );
        return Ok(Next::Phase(RestorePhase::Migrating));
    }
    let source = run
        .status
        .object_key
        .clone()
        .unwrap_or_else(|| "latest".to_owned());
    let into = (engine == Engine::External).then_some(target.as_str());
    let job = children::restore_job(&model, backup, &run.owner(), &source, into);
    match run_job(run, &job).await? {
        None | Some(JobState::Running) => Ok(run.waiting(
            "Restored",
            format!(
                "restoring {source} into {target}; the shop keeps serving from {}",
                previous(run)
            ),
            5,
        )),
        Some(JobState::Failed { reason, message }) => Ok(Next::fail(
            Reason::Failed,
            format!(
                "the restore into {target} failed ({reason}: {message}); nothing was switched, the shop serves from {} as before; delete this restore to remove {target}",
                previous(run)
            ),
        )),
        Some(JobState::Succeeded) => {
            run.set(
                "Restored",
                true,
                Reason::Succeeded,
                format!("{source} restored into {target}"),
            );
            Ok(Next::Phase(RestorePhase::Verifying))
        }
    }
}

/// BuiltIn: the second StatefulSet exists (made here, or the kept one of
/// the restore reverted, taken over and scaled up), owns nothing the
/// FoodApp does, and its server is ready. None when it is.
async fn builtin_ready(
    run: &mut Run<'_>,
    app: &FoodApp,
    reverting: bool,
) -> Result<Option<Next>, Error> {
    let ctx = run.ctx;
    let ns = run.ns();
    let target = target(run);
    let owner = run.owner();
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let live = sets.get_opt(&target).await.map_err(Error::Dereference)?;
    let live = match (live, reverting) {
        (Some(s), _) => s,
        (None, true) => {
            return Ok(Some(Next::fail(
                Reason::InvalidRestore,
                format!(
                    "StatefulSet {target}, the database to switch back to, is gone; nothing was changed"
                ),
            )));
        }
        (None, false) => {
            let live_size = super::restore::live_claim_size(run, &previous(run)).await?;
            let size = children::volume_size(&app.spec.database.storage.size, live_size.as_ref());
            // The password's hash is on the pod template: the FoodApp's own
            // apply after the switch must find the StatefulSet as it wants
            // it, or it would restart the database it just switched to.
            let mut m = model(run, app)?;
            let secret = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
                .get_opt(&names::db(&app.name_any()))
                .await
                .map_err(Error::Dereference)?;
            m.db_password = validate::secret_value(secret.as_ref(), "password").unwrap_or_default();
            let sts = children::statefulset(&m, &target, &size, &owner);
            apply::create_once(&ctx.client, &ns, &sts).await?;
            return Ok(Some(run.waiting(
                "Restored",
                format!("starting PostgreSQL {target} ({size}) beside the live database"),
                3,
            )));
        }
    };
    if reverting {
        // Taken over from the restore reverted: deleting that one no
        // longer removes it.
        set_owner::<StatefulSet>(ctx, &ns, &target, Some(&owner)).await?;
        set_owner::<PersistentVolumeClaim>(ctx, &ns, &names::claim_of(&target), Some(&owner))
            .await?;
        if live.spec.as_ref().and_then(|s| s.replicas) != Some(1) {
            scale(run, &target, 1).await?;
        }
    } else {
        // The claim goes with the restore until the switch.
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
        if let Some(claim) = claims
            .get_opt(&names::claim_of(&target))
            .await
            .map_err(Error::Dereference)?
            && claim.metadata.owner_references.is_none()
        {
            set_owner::<PersistentVolumeClaim>(ctx, &ns, &claim.name_any(), Some(&owner)).await?;
        }
    }
    let ready = live
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    if ready < 1 {
        return Ok(Some(run.waiting(
            "Restored",
            format!("waiting for PostgreSQL {target} to become ready"),
            3,
        )));
    }
    Ok(None)
}

async fn scale(run: &Run<'_>, statefulset: &str, replicas: i32) -> Result<(), Error> {
    Api::<StatefulSet>::namespaced(run.ctx.client.clone(), &run.ns())
        .patch(
            statefulset,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"replicas": replicas}})),
        )
        .await
        .map_err(|e| Error::Apply(apply::failed("StatefulSet", statefulset)(e)))?;
    Ok(())
}

/// CloudNativePG: the second Cluster is ready (recovered to the target
/// time, bootstrapped empty for a dump, or the kept one woken up). None
/// when it is.
async fn cnpg_ready(
    run: &mut Run<'_>,
    app: &FoodApp,
    reverting: bool,
) -> Result<Option<Next>, Error> {
    let ctx = run.ctx;
    let ns = run.ns();
    let target = target(run);
    let current = previous(run);
    if let Some(time) = run.restore.spec.target_time.clone() {
        return super::recovery::ensure_recovered(run, app, &time, &target, &current).await;
    }
    let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(cluster) = clusters
        .get_opt(&target)
        .await
        .map_err(Error::Dereference)?
    else {
        if reverting {
            return Ok(Some(Next::fail(
                Reason::InvalidRestore,
                format!(
                    "Cluster {target}, the database to switch back to, is gone; nothing was changed"
                ),
            )));
        }
        let mut m = model(run, app)?;
        m.db_cluster = target.clone();
        let mut desired = cnpg::cluster(&m);
        desired.metadata.owner_references = Some(vec![run.owner()]);
        apply::create_once(&ctx.client, &ns, &desired).await?;
        return Ok(Some(run.waiting(
            "Restored",
            format!("creating Cluster {target} beside {current}"),
            10,
        )));
    };
    if reverting {
        set_owner::<Cluster>(ctx, &ns, &target, Some(&run.owner())).await?;
        if cluster.annotations().contains_key(CNPG_HIBERNATION) {
            annotate(ctx, &cluster, CNPG_HIBERNATION, None).await?;
        }
    }
    let ready = cluster
        .status
        .as_ref()
        .and_then(|s| s.ready_instances)
        .unwrap_or(0);
    let login = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&names::cnpg_app_secret(&target))
        .await
        .map_err(Error::Dereference)?;
    if ready < 1 || login.is_none() {
        return Ok(Some(run.waiting(
            "Restored",
            format!("waiting for Cluster {target} to become ready"),
            10,
        )));
    }
    Ok(None)
}

/// The app login CloudNativePG made for `cluster`, as a URL, once it exists.
async fn cnpg_url(secrets: &Api<Secret>, ns: &str, cluster: &str) -> Result<Option<String>, Error> {
    let s = secrets
        .get_opt(&names::cnpg_app_secret(cluster))
        .await
        .map_err(Error::Dereference)?;
    Ok(validate::cnpg_connection(cluster, ns, s.as_ref()).map(|c| c.url()))
}

/// The Secret with both databases' addresses, made once. None when it
/// exists.
async fn ensure_targets(run: &mut Run<'_>, app: &FoodApp) -> Result<Option<Next>, Error> {
    let ctx = run.ctx;
    let ns = run.ns();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    if secrets
        .get_opt(&targets_secret_name(&run.name()))
        .await
        .map_err(Error::Dereference)?
        .is_some()
    {
        return Ok(None);
    }
    let model = model(run, app)?;
    let target = target(run);
    let live = previous(run);
    let urls = match app.spec.database.engine {
        Engine::BuiltIn => {
            let secret = secrets
                .get_opt(&names::db(&app.name_any()))
                .await
                .map_err(Error::Dereference)?;
            validate::secret_value(secret.as_ref(), "password").map(|password| {
                (
                    builtin_url(&model, &target, &password),
                    builtin_url(&model, &live, &password),
                    Some(format!(
                        "postgres://{DB_USER}:{password}@{}.{ns}.svc:5432/{DB_NAME}?sslmode=disable",
                        names::db(&app.name_any())
                    )),
                )
            })
        }
        Engine::External => match external(run, app).await? {
            Ok(c) => Some((
                crate::build::Connection {
                    database: target.clone(),
                    ..c.clone()
                }
                .url(),
                crate::build::Connection {
                    database: live.clone(),
                    ..c
                }
                .url(),
                None,
            )),
            Err(message) => return Ok(Some(Next::fail(Reason::SecretInvalid, message))),
        },
        Engine::CloudNativePG => {
            match (
                cnpg_url(&secrets, &ns, &target).await?,
                cnpg_url(&secrets, &ns, &live).await?,
            ) {
                (Some(t), Some(l)) => Some((t, l, None)),
                _ => None,
            }
        }
    };
    let Some((target_url, live_url, service)) = urls else {
        return Ok(Some(run.waiting(
            "Restored",
            "waiting for the logins of both databases".to_owned(),
            5,
        )));
    };
    let secret = children::targets_secret(
        &model,
        &run.owner(),
        &target_url,
        &live_url,
        service.as_deref(),
    );
    apply::create_once(&ctx.client, &ns, &secret).await?;
    Ok(None)
}

/// The restore Job checked every table's rows against the manifest (it
/// fails when they differ); its report names the object it restored.
async fn verifying(run: &mut Run<'_>) -> Result<Next, Error> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Restored {
        object_key: String,
        verified: bool,
    }
    let job = restore_job_name(&run.name());
    match job_result::<Restored>(run, &job).await? {
        Some(r) if !r.verified => Ok(Next::fail(
            Reason::VerificationFailed,
            format!(
                "{} was restored without the row check; nothing was switched",
                r.object_key
            ),
        )),
        Some(r) => {
            run.status.object_key = Some(r.object_key.clone());
            run.set(
                "Verified",
                true,
                Reason::Succeeded,
                format!(
                    "every table of {} holds the rows the manifest of {} counts",
                    target(run),
                    r.object_key
                ),
            );
            Ok(Next::Phase(RestorePhase::Migrating))
        }
        // The pod is gone: the Job succeeded, which it does only when the
        // rows matched.
        None => {
            run.set(
                "Verified",
                true,
                Reason::Succeeded,
                format!(
                    "the restore Job checked {} against the manifest",
                    target(run)
                ),
            );
            Ok(Next::Phase(RestorePhase::Migrating))
        }
    }
}

/// The migrations of the API image the shop runs now, on the second
/// database: the API can switch to it without a schema change.
async fn migrating(run: &mut Run<'_>, app: &FoodApp) -> Result<Next, Error> {
    let model = model(run, app)?;
    let image = validate::deployed_image(app, &Default::default())
        .unwrap_or_else(|| app.spec.api.image.clone());
    let job = children::migrate_job(&model, &image, &run.owner());
    let target = target(run);
    match run_job(run, &job).await? {
        None | Some(JobState::Running) => Ok(run.waiting(
            "Migrated",
            format!("running the migrations of {image} on {target}"),
            3,
        )),
        Some(JobState::Failed { reason, message }) => Ok(Next::fail(
            Reason::MigrationFailed,
            format!(
                "the migrations of {image} failed on {target} ({reason}: {message}); nothing was switched"
            ),
        )),
        Some(JobState::Succeeded) => {
            run.set(
                "Migrated",
                true,
                Reason::Succeeded,
                format!("{target} has the schema of {image}"),
            );
            Ok(Next::Phase(RestorePhase::Switching))
        }
    }
}

/// Where the export of what is discarded goes: next to the dump restored,
/// or, for a point in time or a revert, under the FoodApp's prefix by the
/// restore's name.
fn discard_key(run: &Run<'_>, app: &FoodApp, backup: &BackupSpec) -> String {
    let key = run.status.object_key.clone().unwrap_or_default();
    if key.ends_with(crate::agent::manifest::DUMP_SUFFIX) {
        return format!("{key}.discarded.jsonl");
    }
    format!(
        "{}{}.discarded.jsonl",
        crate::agent::key_prefix(&backup.s3.prefix, &run.ns(), &app.name_any()),
        run.name()
    )
}

fn accepted(run: &Run<'_>) -> bool {
    run.restore
        .annotations()
        .get(ACCEPT_DISCARD_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// Whether the FoodApp uses the restore's database now.
async fn switched(run: &Run<'_>, app: &FoodApp) -> Result<bool, Error> {
    Ok(in_use(run, app).await?.is_ok_and(|db| db == target(run)))
}

/// The switch: the agent pauses writes and exports; once its pod is ready
/// the FoodApp is pointed at the second database; the agent reports when
/// writes resumed.
async fn switching(run: &mut Run<'_>, app: &FoodApp, backup: &BackupSpec) -> Result<Next, Error> {
    let engine = app.spec.database.engine;
    let target = target(run);
    let model = model(run, app)?;
    let key = discard_key(run, app, backup);
    let accepted = accepted(run);
    let owner = run.owner();
    let job = children::switch_job(
        &model,
        backup,
        &SwitchJob {
            restore: &owner,
            discard_key: &key,
            require_no_discard: run.restore.spec.requires_no_discard(),
            through_service: engine == Engine::BuiltIn,
            accepted,
        },
    );
    let job_name = switch_job_name(&run.name(), accepted);
    let state = run_job(run, &job).await?;
    let is_switched = switched(run, app).await?;
    match state {
        None | Some(JobState::Running) if !is_switched => {
            let ready = get_job(run, &job_name)
                .await?
                .and_then(|j| j.status?.ready)
                .unwrap_or(0);
            if ready < 1 {
                return Ok(run.waiting(
                    "Switched",
                    format!("pausing writes on {} and exporting what the restored database lacks to {key}", previous(run)),
                    1,
                ));
            }
            Box::pin(switch_over(run, app)).await?;
            Ok(Next::Wait(Duration::from_secs(1)))
        }
        None | Some(JobState::Running) => Ok(run.waiting(
            "Switched",
            format!("switched to {target}; waiting for the API's connections to reach it"),
            1,
        )),
        Some(JobState::Failed { reason, message }) => {
            if is_switched {
                run.set(
                    "Switched",
                    true,
                    Reason::Succeeded,
                    format!("switched to {target}"),
                );
                return finish(run, app, None, Some(format!("the switch agent failed after the switch ({reason}: {message}): its report of what was discarded may be missing; see {key}"))).await;
            }
            // Writes may be paused: give them back before ending.
            let resume = children::resume_job(&model, backup, &owner);
            match run_job(run, &resume).await? {
                None | Some(JobState::Running) => Ok(run.waiting(
                    "Switched",
                    format!(
                        "the switch failed ({reason}: {message}); giving the writes back to {}",
                        previous(run)
                    ),
                    2,
                )),
                Some(JobState::Succeeded) => Ok(Next::fail(
                    Reason::Failed,
                    format!(
                        "the switch failed ({reason}: {message}); writes were given back and the shop serves from {} as before",
                        previous(run)
                    ),
                )),
                Some(JobState::Failed {
                    reason: r2,
                    message: m2,
                }) => Ok(Next::fail(
                    Reason::Failed,
                    format!(
                        "the switch failed ({reason}: {message}) and giving the writes back failed too ({r2}: {m2}): {} may refuse writes; run `ALTER DATABASE foodapp RESET default_transaction_read_only` on it",
                        previous(run)
                    ),
                )),
            }
        }
        Some(JobState::Succeeded) => {
            let outcome = job_result::<SwitchOutcome>(run, &job_name).await?;
            if let Some(o) = outcome.as_ref().filter(|o| o.refused) {
                run.status.discarded = Some(o.discarded.clone());
                let d = &o.discarded;
                run.set(
                    "Switched",
                    false,
                    Reason::WouldDiscard,
                    format!(
                        "requireNoDiscard: the live database holds {} orders, {} order events, {} refunds and {} users the backup lacks; nothing was switched and the shop is untouched. {target} is ready: annotate this restore {ACCEPT_DISCARD_ANNOTATION}=true to switch anyway (they are exported first), or delete it to remove {target}",
                        d.orders, d.order_events, d.refunds, d.users
                    ),
                );
                return Ok(Next::Wait(Duration::from_secs(30)));
            }
            if !is_switched {
                // External and CloudNativePG: the agent ends once paused.
                Box::pin(switch_over(run, app)).await?;
                if let Some(o) = &outcome {
                    run.status.writes_paused_at = o.paused_at.clone();
                    run.status.discarded = Some(o.discarded.clone());
                }
                return Ok(Next::Wait(Duration::from_secs(1)));
            }
            Box::pin(finish(run, app, outcome, None)).await
        }
    }
}

/// Points the FoodApp at the second database: the new database passes to
/// the FoodApp (so that deleting the restore never removes the database in
/// use), the FoodApp and its API Secret (which outlives it under Retain)
/// record it, and on BuiltIn the database Service selects its pod at once.
async fn switch_over(run: &mut Run<'_>, app: &FoodApp) -> Result<(), Error> {
    let ctx = run.ctx;
    let ns = run.ns();
    let target = target(run);
    let mut model = model(run, app)?;
    let foodapp = owner_reference(&model);
    match app.spec.database.engine {
        Engine::BuiltIn => {
            set_owner::<StatefulSet>(ctx, &ns, &target, Some(&foodapp)).await?;
            set_owner::<PersistentVolumeClaim>(ctx, &ns, &names::claim_of(&target), None).await?;
        }
        Engine::CloudNativePG => {}
        Engine::External => {}
    }
    let (key, value) = match app.spec.database.engine {
        Engine::External => {
            let original = external(run, app).await?.map(|c| c.database).ok();
            let value = (original.as_deref() != Some(target.as_str())).then(|| target.clone());
            (DATABASE_NAME_ANNOTATION, value)
        }
        _ => {
            let value = (target != names::db(&app.name_any())).then(|| target.clone());
            (DATABASE_CLUSTER_ANNOTATION, value)
        }
    };
    if let Some(secret) = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&names::api_secret(&app.name_any()))
        .await
        .map_err(Error::Dereference)?
    {
        annotate(ctx, &secret, key, value.as_deref()).await?;
    }
    annotate(ctx, app, key, value.as_deref()).await?;
    if app.spec.database.engine == Engine::CloudNativePG {
        super::recovery::take_over(run, app, &target).await?;
    }
    if app.spec.database.engine == Engine::BuiltIn {
        model.db_cluster = target.clone();
        apply::server_side_apply(&ctx.client, &ns, &postgres::service(&model)).await?;
    }
    if run.status.writes_paused_at.is_none() {
        run.status.writes_paused_at = Some(now_rfc3339());
    }
    run.set(
        "Switched",
        true,
        Reason::Succeeded,
        format!("the FoodApp uses {target}; {} is read-only", previous(run)),
    );
    ctx.event(
        run.restore,
        Reason::Succeeded,
        "Switch",
        format!("switched FoodApp {} to {target}", app.name_any()),
    )
    .await;
    Ok(())
}

/// Whether the API runs on the database in use: every pod of the rollout
/// the switch started is available.
fn api_rolled(deployment: Option<&Deployment>, target: &str) -> bool {
    let Some(d) = deployment else {
        return true;
    };
    let template = d
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(DATABASE_IN_USE_ANNOTATION))
        .map(String::as_str);
    let status = d.status.clone().unwrap_or_default();
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    template.is_none_or(|t| t == target)
        && status.observed_generation >= d.metadata.generation
        && status.updated_replicas.unwrap_or(0) >= wanted
        && status.unavailable_replicas.unwrap_or(0) == 0
}

/// After the switch: the write pause, what was discarded, the replaced
/// database kept (scaled to zero, owned by this restore) or deleted, the
/// reverted restore marked.
async fn finish(
    run: &mut Run<'_>,
    app: &FoodApp,
    outcome: Option<SwitchOutcome>,
    warning: Option<String>,
) -> Result<Next, Error> {
    let ctx = run.ctx;
    let ns = run.ns();
    let target = target(run);
    let engine = app.spec.database.engine;
    if let Some(o) = &outcome {
        run.status.discarded = Some(o.discarded.clone());
        if o.paused_at.is_some() {
            run.status.writes_paused_at = o.paused_at.clone();
        }
        run.status.write_pause_seconds = o.write_pause_seconds;
    }
    if engine != Engine::BuiltIn && run.status.write_pause_seconds.is_none() {
        // Writes resume when the API's pods run on the new database.
        let deployment = Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&names::api(&app.name_any()))
            .await
            .map_err(Error::Dereference)?;
        if !api_rolled(deployment.as_ref(), &target) {
            return Ok(run.waiting("Switched", format!("the API is rolling onto {target}"), 1));
        }
        let paused = run
            .status
            .writes_paused_at
            .as_deref()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
        run.status.write_pause_seconds = paused.map(|t| {
            k8s_openapi::jiff::Timestamp::now()
                .duration_since(t)
                .as_secs_f64()
        });
    }
    if engine == Engine::CloudNativePG
        && run.restore.spec.target_time.is_some()
        && let Some(next) = super::recovery::hand_over(run, &target).await?
    {
        return Ok(next);
    }
    let kept = Box::pin(keep_previous(run, app)).await?;
    if let Some(name) = &run.restore.spec.revert {
        let api: Api<FoodAppRestore> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"status": {"phase": "Reverted"}})),
        )
        .await
        .map_err(Error::Status)?;
    }
    let d = run.status.discarded.clone().unwrap_or_default();
    let mut message = format!(
        "switched to {target}; writes paused {:.1}s; discarded {} orders, {} order events, {} refunds, {} users{}; {kept}",
        run.status.write_pause_seconds.unwrap_or(0.0),
        d.orders,
        d.order_events,
        d.refunds,
        d.users,
        d.object_key
            .as_ref()
            .map(|k| format!(" (exported to {k})"))
            .unwrap_or_default(),
    );
    if let Some(w) = warning {
        message.push_str("; ");
        message.push_str(&w);
    }
    Ok(Next::End {
        ok: true,
        reason: Reason::Succeeded,
        message,
    })
}

/// The replaced database: kept, scaled to zero and owned by this restore
/// (deleted with it), or deleted now (keepPrevious: false). What it says.
async fn keep_previous(run: &mut Run<'_>, app: &FoodApp) -> Result<String, Error> {
    let ctx = run.ctx;
    let ns = run.ns();
    let previous = previous(run);
    let owner = run.owner();
    let keep = run.restore.spec.keeps_previous();
    let said = match app.spec.database.engine {
        Engine::BuiltIn => {
            let claim = names::claim_of(&previous);
            let storage = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns)
                .get_opt(&claim)
                .await
                .map_err(Error::Dereference)?
                .and_then(|c| c.status?.capacity?.get("storage").map(|q| q.0.clone()));
            if let Some(p) = run.status.previous.as_mut() {
                p.claim = Some(claim.clone());
                p.storage = storage.clone();
            }
            if keep {
                set_owner::<StatefulSet>(ctx, &ns, &previous, Some(&owner)).await?;
                set_owner::<PersistentVolumeClaim>(ctx, &ns, &claim, Some(&owner)).await?;
                scale(run, &previous, 0).await?;
                format!(
                    "{previous} is kept, scaled to zero, with its volume {claim} ({}), until this restore is deleted: revert with spec.revert: {}",
                    storage.unwrap_or_default(),
                    run.name()
                )
            } else {
                delete::<StatefulSet>(run, &previous).await?;
                delete::<PersistentVolumeClaim>(run, &claim).await?;
                if let Some(p) = run.status.previous.as_mut() {
                    p.deleted = true;
                }
                format!("{previous} and its volume were deleted (keepPrevious: false)")
            }
        }
        Engine::CloudNativePG => {
            if keep {
                set_owner::<Cluster>(ctx, &ns, &previous, Some(&owner)).await?;
                if let Some(c) = Api::<Cluster>::namespaced(ctx.client.clone(), &ns)
                    .get_opt(&previous)
                    .await
                    .map_err(Error::Dereference)?
                {
                    annotate(ctx, &c, CNPG_HIBERNATION, Some("on")).await?;
                }
                format!("Cluster {previous} is kept, hibernated, until this restore is deleted")
            } else {
                delete::<Cluster>(run, &previous).await?;
                if let Some(p) = run.status.previous.as_mut() {
                    p.deleted = true;
                }
                format!("Cluster {previous} was deleted (keepPrevious: false)")
            }
        }
        Engine::External => format!(
            "database {previous} stays on the external server, read-only, for a revert; drop it yourself when you no longer need it"
        ),
    };
    Ok(said)
}

async fn delete<K>(run: &Run<'_>, name: &str) -> Result<(), Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match Api::<K>::namespaced(run.ctx.client.clone(), &run.ns())
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::Cleanup(e)),
    }
}

/// A Beside restore that ends without switching: a revert gives the
/// database it woke back to the restore it came from, scaled to zero.
/// What this restore made stays with it (inspect it; deleting the restore
/// removes it).
pub async fn on_failure(run: &mut Run<'_>, app: &FoodApp) -> Result<(), Error> {
    if run.status.mode != Some(crate::crd::RestoreMode::Beside) || switched(run, app).await? {
        return Ok(());
    }
    let Some(name) = run.restore.spec.revert.clone() else {
        return Ok(());
    };
    let target = target(run);
    if target.is_empty() {
        return Ok(());
    }
    let Some(origin) = Api::<FoodAppRestore>::namespaced(run.ctx.client.clone(), &run.ns())
        .get_opt(&name)
        .await
        .map_err(Error::Dereference)?
    else {
        return Ok(());
    };
    let back = children::owner(&name, origin.metadata.uid.as_deref().unwrap_or_default());
    let ctx = run.ctx;
    let ns = run.ns();
    match app.spec.database.engine {
        Engine::BuiltIn => {
            if set_owner::<StatefulSet>(ctx, &ns, &target, Some(&back)).await? {
                scale(run, &target, 0).await?;
            }
            set_owner::<PersistentVolumeClaim>(ctx, &ns, &names::claim_of(&target), Some(&back))
                .await?;
        }
        Engine::CloudNativePG => {
            set_owner::<Cluster>(ctx, &ns, &target, Some(&back)).await?;
        }
        Engine::External => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use kube::api::ObjectMeta;

    fn deployment(annotation: Option<&str>, updated: i32, unavailable: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(3),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(2),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        annotations: annotation.map(|a| {
                            [(DATABASE_IN_USE_ANNOTATION.to_owned(), a.to_owned())].into()
                        }),
                        ..Default::default()
                    }),
                    spec: None,
                },
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(3),
                updated_replicas: Some(updated),
                unavailable_replicas: Some(unavailable),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn writes_resume_when_every_api_pod_runs_on_the_new_database() {
        assert!(api_rolled(Some(&deployment(Some("db_r1"), 2, 0)), "db_r1"));
        assert!(!api_rolled(Some(&deployment(Some("db_r1"), 1, 0)), "db_r1"));
        assert!(!api_rolled(Some(&deployment(Some("db_r1"), 2, 1)), "db_r1"));
        assert!(!api_rolled(Some(&deployment(Some("old"), 2, 0)), "db_r1"));
        assert!(api_rolled(None, "db_r1"));
    }
}
