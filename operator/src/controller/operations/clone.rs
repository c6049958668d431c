//! Clones: a backup of one FoodApp restored into another (`spec.target`),
//! for staging, inspection or moving to another engine. The FoodApp
//! restored from is only read: its bucket, its backups, its spec when the
//! clone has to be made. The clone is restored in place — its API stopped,
//! its database replaced whole in one transaction that refuses a database
//! holding orders, revokes every session, gives the clone's administrator
//! its own password and, when asked, anonymises — then migrated to its API
//! image; its API comes back when the restore ends, whatever the outcome.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, ResourceExt};

use super::super::Error;
use super::super::conditions::Reason;
use super::super::status::DATABASE_READY;
use super::super::validate::{self, JobState};
use super::restore::{
    check_credentials, check_names, in_place_migration, resolve_source, stop_api,
};
use super::{Next, Run, lock, now_rfc3339, run_job};
use crate::build::CLONED_BY_ANNOTATION;
use crate::build::restore::{clone_foodapp, clone_restore_job};
use crate::crd::{BackupSpec, Engine, FoodApp, RestoreMode, RestorePhase, RestoreTarget};

/// How long a clone waits for its database to come up.
const DATABASE_DEADLINE: Duration = Duration::from_secs(900);

/// The FoodApp a clone goes into, if it exists.
pub async fn target(run: &Run<'_>) -> Result<Option<FoodApp>, Error> {
    let Some(t) = &run.restore.spec.target else {
        return Ok(None);
    };
    Api::<FoodApp>::namespaced(run.ctx.client.clone(), &run.ns())
        .get_opt(&t.food_app)
        .await
        .map_err(Error::Dereference)
}

/// One step of a clone from `source` (which has backups: `backup_spec`).
pub async fn step(
    run: &mut Run<'_>,
    source: &FoodApp,
    backup_spec: &BackupSpec,
    target_spec: &RestoreTarget,
) -> Result<Next, Error> {
    let phase = run.phase();
    let Some(clone) = target(run).await? else {
        if matches!(phase, None | Some(RestorePhase::Pending)) {
            return start_new(run, source, backup_spec, &target_spec.food_app).await;
        }
        return Ok(Next::fail(
            Reason::FoodAppNotFound,
            format!(
                "FoodApp {} was deleted while the clone was made; FoodApp {} was not touched",
                target_spec.food_app,
                source.name_any()
            ),
        ));
    };
    match phase {
        None | Some(RestorePhase::Pending) => start(run, source, backup_spec, &clone).await,
        Some(RestorePhase::Restoring) => {
            if let Some(next) = await_database(run, &clone) {
                return Ok(next);
            }
            if let Some(next) = stop_api(run, &clone).await? {
                return Ok(next);
            }
            let model = validate::job_model(&clone, &run.ctx.agent_image)?;
            let key = run
                .status
                .object_key
                .clone()
                .unwrap_or_else(|| "latest".to_owned());
            let job = clone_restore_job(
                &model,
                backup_spec,
                &source.name_any(),
                &key,
                target_spec.anonymizes(),
                &run.owner(),
            );
            match run_job(run, &job).await? {
                None | Some(JobState::Running) => Ok(run.waiting(
                    "Restored",
                    format!("restoring {key} into FoodApp {}", clone.name_any()),
                    10,
                )),
                Some(JobState::Failed { reason, message }) => Ok(Next::fail(
                    Reason::Failed,
                    format!(
                        "the restore into FoodApp {} failed ({reason}: {message}); its database is as it was, FoodApp {} was not touched",
                        clone.name_any(),
                        source.name_any()
                    ),
                )),
                Some(JobState::Succeeded) => {
                    let what = if target_spec.anonymizes() {
                        "restored and anonymised"
                    } else {
                        "restored"
                    };
                    run.set(
                        "Restored",
                        true,
                        Reason::Succeeded,
                        format!("{key} {what} into FoodApp {}", clone.name_any()),
                    );
                    Ok(Next::Phase(RestorePhase::Migrating))
                }
            }
        }
        Some(RestorePhase::Migrating) => {
            let job = in_place_migration(run, &clone).await?;
            match run_job(run, &job).await? {
                None | Some(JobState::Running) => Ok(run.waiting(
                    "Migrated",
                    format!("running the migrations on FoodApp {}", clone.name_any()),
                    10,
                )),
                Some(JobState::Failed { reason, message }) => {
                    run.set("Migrated", false, Reason::Failed, message.clone());
                    Ok(Next::fail(
                        Reason::Failed,
                        format!(
                            "restored into FoodApp {}, but the migrations failed ({reason}: {message})",
                            clone.name_any()
                        ),
                    ))
                }
                Some(JobState::Succeeded) => {
                    run.set(
                        "Migrated",
                        true,
                        Reason::Succeeded,
                        "migrations applied".to_owned(),
                    );
                    // A clone the restore made outlives it from now on.
                    if clone
                        .owner_references()
                        .iter()
                        .any(|o| o.uid == run.owner().uid)
                    {
                        super::set_owner::<FoodApp>(run.ctx, &run.ns(), &clone.name_any(), None)
                            .await?;
                    }
                    Ok(Next::End {
                        ok: true,
                        reason: Reason::Succeeded,
                        message: format!(
                            "FoodApp {} holds {} of FoodApp {}{}; its API is coming back",
                            clone.name_any(),
                            run.status.object_key.clone().unwrap_or_default(),
                            source.name_any(),
                            if target_spec.anonymizes() {
                                ", anonymised"
                            } else {
                                ""
                            }
                        ),
                    })
                }
            }
        }
        Some(other) => Ok(Next::fail(
            Reason::InvalidRestore,
            format!("phase {other:?} is not one of a clone"),
        )),
    }
}

/// The clone's FoodApp does not exist: made from the source's spec, then
/// the clone starts on the next step.
async fn start_new(
    run: &mut Run<'_>,
    source: &FoodApp,
    backup_spec: &BackupSpec,
    name: &str,
) -> Result<Next, Error> {
    if let Some(next) = checks(run, source, backup_spec).await? {
        return Ok(next);
    }
    if source.spec.database.engine == Engine::External {
        return Ok(Next::fail(
            Reason::InvalidRestore,
            format!(
                "FoodApp {name} does not exist, and a copy of FoodApp {} (engine External) would use its database: create FoodApp {name} first with a database of its own; nothing was changed",
                source.name_any()
            ),
        ));
    }
    let clone = clone_foodapp(source, name, &run.owner());
    match Api::<FoodApp>::namespaced(run.ctx.client.clone(), &run.ns())
        .create(&PostParams::default(), &clone)
        .await
    {
        Ok(_) => {}
        // Made at the same moment by someone else: looked at as it is.
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => {
            return Err(Error::Apply(super::super::apply::failed("FoodApp", name)(
                e,
            )));
        }
    }
    run.ctx
        .event(
            run.restore,
            Reason::Started,
            "Clone",
            format!(
                "created FoodApp {name} from the spec of FoodApp {} (without its backups)",
                source.name_any()
            ),
        )
        .await;
    run.status.phase = Some(RestorePhase::Pending);
    run.set(
        "Started",
        false,
        Reason::Running,
        format!("created FoodApp {name}; taking it"),
    );
    Ok(Next::Wait(Duration::from_secs(1)))
}

/// What holds before anything is made: the restore's names, the source's
/// bucket credentials and backup.
async fn checks(
    run: &mut Run<'_>,
    source: &FoodApp,
    backup_spec: &BackupSpec,
) -> Result<Option<Next>, Error> {
    if let Err(message) = check_names(&run.name()) {
        return Ok(Some(Next::fail(Reason::InvalidRestore, message)));
    }
    if let Some(next) = check_credentials(run, source, backup_spec).await? {
        return Ok(Some(next));
    }
    match resolve_source(run, source, backup_spec).await? {
        Ok(key) => {
            run.status.object_key = Some(key);
            Ok(None)
        }
        Err(next) => Ok(Some(next)),
    }
}

/// A Pending clone whose FoodApp exists: checked, then taken (its API
/// stopped).
async fn start(
    run: &mut Run<'_>,
    source: &FoodApp,
    backup_spec: &BackupSpec,
    clone: &FoodApp,
) -> Result<Next, Error> {
    let name = run.name();
    if let Some(holder) = lock::holder(clone).filter(|h| *h != name) {
        run.status.phase = Some(RestorePhase::Pending);
        let message = format!(
            "restore {holder} of FoodApp {} is in progress",
            clone.name_any()
        );
        run.set("Started", false, Reason::WaitingForRestore, message);
        return Ok(Next::Wait(Duration::from_secs(15)));
    }
    if clone.metadata.deletion_timestamp.is_some() {
        return Ok(Next::fail(
            Reason::InvalidRestore,
            format!(
                "FoodApp {} is being deleted; nothing was changed",
                clone.name_any()
            ),
        ));
    }
    if let Some(next) = checks(run, source, backup_spec).await? {
        return Ok(next);
    }
    if let Some(message) = same_database(run, source, clone).await? {
        return Ok(Next::fail(Reason::InvalidRestore, message));
    }
    if !lock::take(run.ctx, clone, &name, true).await? {
        return Ok(Next::Wait(Duration::from_secs(2)));
    }
    run.status.mode = Some(RestoreMode::InPlace);
    run.status.started_at = Some(now_rfc3339());
    let made = clone.annotations().get(CLONED_BY_ANNOTATION) == Some(&name);
    let message = format!(
        "cloning {} of FoodApp {} into {} FoodApp {}; its API is stopped until the clone is ready",
        run.status.object_key.clone().unwrap_or_default(),
        source.name_any(),
        if made { "the new" } else { "the existing" },
        clone.name_any(),
    );
    run.set("Started", true, Reason::Started, message.clone());
    run.ctx
        .event(run.restore, Reason::Started, "Restore", message)
        .await;
    Ok(Next::Phase(RestorePhase::Restoring))
}

/// Two External FoodApps whose Secrets name the same database: a clone
/// would replace the source's data.
async fn same_database(
    run: &Run<'_>,
    source: &FoodApp,
    clone: &FoodApp,
) -> Result<Option<String>, Error> {
    if source.spec.database.engine != Engine::External
        || clone.spec.database.engine != Engine::External
    {
        return Ok(None);
    }
    let secrets: Api<Secret> = Api::namespaced(run.ctx.client.clone(), &run.ns());
    let mut at = Vec::new();
    for app in [source, clone] {
        let name = validate::external_secret_name(app);
        let secret = secrets.get_opt(&name).await.map_err(Error::Dereference)?;
        let Ok(c) = validate::external_connection(secret.as_ref(), &name) else {
            // An unusable Secret: the clone's own reconcile says why, and
            // its database never becomes ready.
            return Ok(None);
        };
        let database = crate::build::external_database(app).unwrap_or(c.database.clone());
        at.push((c.host.to_lowercase(), c.port, database));
    }
    Ok((at[0] == at[1]).then(|| {
        format!(
            "FoodApp {} uses the database of FoodApp {} ({}:{}/{}): a clone would replace the source's data; give the clone a database of its own; nothing was changed",
            clone.name_any(),
            source.name_any(),
            at[0].0,
            at[0].1,
            at[0].2
        )
    }))
}

/// Waits for the clone's database (a FoodApp just made has none yet).
fn await_database(run: &mut Run<'_>, clone: &FoodApp) -> Option<Next> {
    let ready = clone
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == DATABASE_READY && c.status == "True");
    if ready {
        return None;
    }
    if super::waited_longer_than(&run.status, DATABASE_DEADLINE) {
        return Some(Next::fail(
            Reason::Timeout,
            format!(
                "the database of FoodApp {} did not become ready within {DATABASE_DEADLINE:?} (see its DatabaseReady condition); nothing was restored",
                clone.name_any()
            ),
        ));
    }
    Some(run.waiting(
        "DatabaseReady",
        format!(
            "waiting for the database of FoodApp {} to be ready",
            clone.name_any()
        ),
        5,
    ))
}
