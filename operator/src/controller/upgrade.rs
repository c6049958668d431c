//! PostgreSQL major upgrades of the built-in database, as the FoodApp
//! reconcile drives them. The data directory's major is what the database
//! pod's `prepare` step reported (`status.databaseMajor`); the image's is
//! read from its tag. The database keeps the image it runs until an
//! upgrade has moved the data, so a newer major in `spec.database.image`
//! never starts on old data, and an older one, or one whose major cannot
//! be told, is refused before anything stops.
//!
//! An upgrade is made of the operations that already exist, each
//! idempotent and safe to kill: a FoodAppBackup (verified), then a
//! FoodAppRestore that moves the data — Beside: the backup restored into a
//! second database of the new major, migrated, switched to in seconds, the
//! old database kept for `revert`; InPlace: `pg_upgrade --link` on the
//! live volume while the shop is closed.

use std::collections::BTreeMap;

use kube::api::PostParams;
use kube::{Api, ResourceExt};

use super::conditions::{Reason, Wanted, wanted};
use super::dereference::Observed;
use super::{Context, Error};
use crate::build::upgrade::{image_major, reported_major};
use crate::build::{self, short_hash};
use crate::crd::{
    DatabaseUpgradeStatus, Engine, FoodApp, FoodAppBackup, FoodAppBackupSpec, FoodAppRestore,
    FoodAppRestoreSpec, JobPhase, RestoreMode, RestorePhase, UpgradeMethod, UpgradePhase,
};

pub const DATABASE_UPGRADE: &str = "DatabaseUpgrade";

/// On the FoodAppBackup and FoodAppRestore an upgrade makes: the major it
/// upgrades to. The restore machinery runs `pg_upgrade` for an InPlace
/// restore that carries it.
pub const UPGRADE_TO_ANNOTATION: &str = "foodapp.io/upgrade-to";
/// On an InPlace upgrade's FoodAppRestore: the image the data runs now
/// (the upgrade Job copies its binaries).
pub const UPGRADE_FROM_IMAGE_ANNOTATION: &str = "foodapp.io/upgrade-from-image";

/// What this pass does about the database image.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The image the database StatefulSet gets.
    pub image: String,
    /// The data directory's major, when known.
    pub data_major: Option<u32>,
    /// Condition DatabaseUpgrade.
    pub condition: Wanted,
    /// `status.databaseUpgrade`.
    pub status: Option<DatabaseUpgradeStatus>,
    /// An upgrade runs (phase Upgrading).
    pub running: bool,
    /// InPlace: the database is stopped for pg_upgrade (its StatefulSet
    /// scaled to zero).
    pub stop_database: bool,
    /// The FoodAppBackup or FoodAppRestore to create now.
    pub create: Option<Create>,
}

#[derive(Debug, Clone)]
pub enum Create {
    Backup(Box<FoodAppBackup>),
    Restore(Box<FoodAppRestore>),
    /// The Job that pauses (true) or gives back (false) the live
    /// database's writes, of the upgrade named.
    Writes {
        job: String,
        upgrade: String,
        read_only: bool,
    },
}

fn pause_job(upgrade: &str) -> String {
    format!("{upgrade}-pause")
}

fn resume_job(upgrade: &str) -> String {
    format!("{upgrade}-resume")
}

fn job_state(observed: &Observed, name: &str) -> Option<super::validate::JobState> {
    observed
        .upgrade_jobs
        .iter()
        .find(|j| j.name_any() == name)
        .map(super::validate::job_state)
}

/// The image of the live database StatefulSet's server container.
pub fn live_image(observed: &Observed) -> Option<String> {
    observed
        .statefulset
        .as_ref()?
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == "postgres")?
        .image
        .clone()
}

/// The major the database pod's `prepare` step (or the upgrade) reported.
fn pod_major(observed: &Observed) -> Option<u32> {
    let status = observed.db_pod.as_ref()?.status.as_ref()?;
    status
        .init_container_statuses
        .iter()
        .flatten()
        .filter(|c| c.name == "prepare")
        .flat_map(|c| [c.state.as_ref(), c.last_state.as_ref()])
        .flatten()
        .filter_map(|s| s.terminated.as_ref()?.message.as_deref())
        .find_map(reported_major)
}

/// The data directory's major: as reported, else as last recorded, else the
/// major of the image the database runs (a server starts only on data of
/// its own major).
pub fn data_major(app: &FoodApp, observed: &Observed) -> Option<u32> {
    pod_major(observed)
        .or_else(|| {
            app.status
                .as_ref()?
                .database_major
                .and_then(|m| u32::try_from(m).ok())
        })
        .or_else(|| live_image(observed).as_deref().and_then(image_major))
}

/// `<app>-pg<major>-<hash of the spec>`: the FoodAppBackup, FoodAppRestore
/// and Jobs of one attempt at an upgrade (another spec, another attempt).
fn name_of(app: &FoodApp, to: u32) -> String {
    let key = serde_json::to_string(&app.spec).unwrap_or_default();
    format!("{}-pg{to}-{}", app.name_any(), &short_hash(&key)[..6])
}

fn up_to_date(message: String) -> Wanted {
    wanted(DATABASE_UPGRADE, true, Reason::UpToDate, message)
}

/// The database on `image`, condition DatabaseUpgrade as given, nothing to
/// create, no upgrade running.
fn plan_on(
    image: &str,
    data: Option<u32>,
    condition: Wanted,
    status: Option<DatabaseUpgradeStatus>,
) -> Plan {
    Plan {
        image: image.to_owned(),
        data_major: data,
        condition,
        status,
        running: false,
        stop_database: false,
        create: None,
    }
}

/// The database keeps `live`; the condition says why.
fn hold(
    live: &str,
    data: Option<u32>,
    reason: Reason,
    message: String,
    status: Option<DatabaseUpgradeStatus>,
) -> Plan {
    plan_on(
        live,
        data,
        wanted(DATABASE_UPGRADE, false, reason, message),
        status,
    )
}

/// An upgrade runs (phase Upgrading), the database on `image`.
fn upgrading(
    image: &str,
    data: Option<u32>,
    message: String,
    status: DatabaseUpgradeStatus,
) -> Plan {
    Plan {
        running: true,
        ..hold(image, data, Reason::Upgrading, message, Some(status))
    }
}

/// Decides, from what was observed, the database image and the upgrade's
/// next step. Pure.
pub fn plan(app: &FoodApp, observed: &Observed) -> Plan {
    let spec_image = app.spec.database.image.clone();
    let data = data_major(app, observed);
    let previous = app.status.as_ref().and_then(|s| s.database_upgrade.clone());
    let follow = |condition: Wanted, status: Option<DatabaseUpgradeStatus>| {
        plan_on(&spec_image, data, condition, status)
    };
    if app.spec.database.engine != Engine::BuiltIn {
        return follow(
            up_to_date(format!(
                "engine {:?}: its operator or provider upgrades PostgreSQL",
                app.spec.database.engine
            )),
            None,
        );
    }
    let Some(live) = live_image(observed) else {
        // No database yet: it starts on the spec's image.
        return follow(
            up_to_date(format!("the database starts on {spec_image}")),
            previous,
        );
    };
    let settled = |status: Option<DatabaseUpgradeStatus>| {
        follow(
            up_to_date(match data {
                Some(m) => format!("the data is PostgreSQL {m}, the major of {live}"),
                None => format!("the database runs {live}"),
            }),
            status,
        )
    };
    // An upgrade whose restore switched: the database in use runs the new
    // image, done.
    let previous = previous.map(|p| finish(p, app, observed));
    if let Some(plan) = previous
        .as_ref()
        .and_then(|p| cancelled(p, app, observed, &live, data))
    {
        return plan;
    }
    if live == spec_image {
        return settled(previous);
    }
    // InPlace: once pg_upgrade moved the data, the database starts on the
    // new image (the restore then migrates and brings the API back).
    if let Some(p) = previous
        .as_ref()
        .filter(|p| p.image == spec_image && p.method == UpgradeMethod::InPlace)
        && (p.phase == UpgradePhase::Succeeded || in_place(app, observed, p).upgraded)
    {
        return Plan {
            running: p.phase != UpgradePhase::Succeeded,
            ..upgrading(
                &spec_image,
                u32::try_from(p.to).ok(),
                format!(
                    "the data is PostgreSQL {}: the database starts on {spec_image}",
                    p.to
                ),
                p.clone(),
            )
        };
    }
    let Some(to) = image_major(&spec_image) else {
        return hold(
            &live,
            data,
            Reason::UnknownImageMajor,
            format!(
                "the PostgreSQL major of {spec_image} cannot be told from its tag: name an image whose tag starts with the major (postgres:18, postgres:18.1-bookworm); the database keeps {live}"
            ),
            previous,
        );
    };
    let Some(from) = data else {
        return hold(
            &live,
            data,
            Reason::WaitingForDatabase,
            format!(
                "waiting for the database to report its data directory's PostgreSQL major before it runs {spec_image}; it keeps {live}"
            ),
            previous,
        );
    };
    if to < from {
        return hold(
            &live,
            data,
            Reason::DowngradeRefused,
            format!(
                "{spec_image} is PostgreSQL {to} and the data is PostgreSQL {from}: a major cannot be downgraded (restore a backup into a FoodApp on {to} instead); the database keeps {live}, untouched"
            ),
            previous,
        );
    }
    if to == from {
        // A minor release: the StatefulSet rolls onto it.
        return follow(
            up_to_date(format!(
                "{spec_image} is PostgreSQL {to}, the data's major: the database rolls onto it"
            )),
            previous,
        );
    }
    upgrade(app, observed, &live, from, to, previous)
}

/// A Beside upgrade under way whose image is no longer the spec's: its
/// restore, if any, is let finish (deleting it stops it), then the live
/// database gets its writes back and the upgrade ends Failed.
fn cancelled(
    p: &DatabaseUpgradeStatus,
    app: &FoodApp,
    observed: &Observed,
    live: &str,
    data: Option<u32>,
) -> Option<Plan> {
    let under_way = matches!(
        p.phase,
        UpgradePhase::PausingWrites | UpgradePhase::BackingUp | UpgradePhase::Upgrading
    );
    if p.method != UpgradeMethod::Beside || !under_way || p.image == app.spec.database.image {
        return None;
    }
    let restore = p
        .restore
        .as_ref()
        .and_then(|n| observed.restores.iter().find(|r| &r.name_any() == n));
    let name = p.name.clone();
    let mut status = p.clone();
    if let Some(r) = restore
        && !r
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(RestorePhase::is_final)
    {
        return Some(upgrading(
            live,
            data,
            format!(
                "spec.database.image changed while the upgrade to {} runs: FoodAppRestore {} finishes first (delete it to stop it)",
                p.image,
                r.name_any()
            ),
            status,
        ));
    }
    status.phase = UpgradePhase::Failed;
    status.message = Some(format!(
        "the upgrade to {} was cancelled: spec.database.image changed",
        p.image
    ));
    let message = status.message.clone().unwrap_or_default();
    let mut plan = hold(live, data, Reason::Failed, message, Some(status));
    plan.create = Some(Create::Writes {
        job: resume_job(&name),
        upgrade: name,
        read_only: false,
    });
    Some(plan)
}

/// Where an InPlace upgrade's restore stands.
#[derive(Debug, Default)]
struct InPlace {
    /// pg_upgrade succeeded (condition Upgraded).
    upgraded: bool,
    /// The API is stopped and pg_upgrade is to run: the database stops.
    stop_database: bool,
}

fn in_place(app: &FoodApp, observed: &Observed, status: &DatabaseUpgradeStatus) -> InPlace {
    let Some(name) = status.restore.as_deref() else {
        return InPlace::default();
    };
    let holds = super::operations::lock::holder(app) == Some(name);
    let Some(r) = observed.restores.iter().find(|r| r.name_any() == name) else {
        // Deleted mid-way: its Job's pod may still run until the lock goes.
        return InPlace {
            upgraded: false,
            stop_database: holds,
        };
    };
    let s = r.status.clone().unwrap_or_default();
    let is_true = |type_: &str| {
        s.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    };
    let upgraded = is_true(super::operations::upgrade::UPGRADED);
    InPlace {
        upgraded,
        // Once the API is stopped, until pg_upgrade is done.
        stop_database: !upgraded && holds && is_true("ApiStopped"),
    }
}

/// The previous upgrade's final phase, once its restore ended.
fn finish(
    mut status: DatabaseUpgradeStatus,
    app: &FoodApp,
    observed: &Observed,
) -> DatabaseUpgradeStatus {
    let restore = status
        .restore
        .as_ref()
        .and_then(|n| observed.restores.iter().find(|r| &r.name_any() == n));
    let Some(restore) = restore else {
        return status;
    };
    let r = restore.status.clone().unwrap_or_default();
    match r.phase {
        // A later restore's revert undid it.
        Some(RestorePhase::Reverted) => {
            status.phase = UpgradePhase::Reverted;
            status.message = Some(format!(
                "the upgrade was reverted (FoodAppRestore {} undone): the data is back on {}; set spec.database.image to the image it runs, or change the spec again (spec.database.upgrade, say) to try {} again",
                restore.name_any(),
                build::db_cluster(app),
                status.image
            ));
        }
        Some(RestorePhase::Succeeded) => {
            let in_use = build::db_cluster(app);
            let switched = match status.method {
                UpgradeMethod::Beside => r.database.as_deref() == Some(in_use.as_str()),
                UpgradeMethod::InPlace => true,
            };
            if switched {
                if status.phase != UpgradePhase::Succeeded {
                    status.phase = UpgradePhase::Succeeded;
                    status.message = Some(format!(
                        "the data is PostgreSQL {} (was {}); {}",
                        status.to,
                        status.from,
                        match status.method {
                            UpgradeMethod::Beside => format!(
                                "undo with a FoodAppRestore whose spec.revert is {}",
                                restore.name_any()
                            ),
                            UpgradeMethod::InPlace => {
                                "the backup taken first is the way back".to_owned()
                            }
                        }
                    ));
                }
            } else {
                status.phase = UpgradePhase::Reverted;
                status.message = Some(format!(
                    "the upgrade was reverted (FoodAppRestore {} undone): the data is back on {in_use}; set spec.database.image to the image it runs, or change the spec again (spec.database.upgrade, say) to try {} again",
                    restore.name_any(),
                    status.image
                ));
            }
        }
        Some(RestorePhase::Failed) => {
            status.phase = UpgradePhase::Failed;
            status.message = Some(format!(
                "FoodAppRestore {} failed: {}",
                restore.name_any(),
                r.error.unwrap_or_default()
            ));
        }
        _ => {}
    }
    status
}

fn backups_configured(app: &FoodApp, observed: &Observed) -> bool {
    app.spec.backup.is_some() && observed.credentials_secret_found == Some(true)
}

/// The steps of an upgrade from `from` to `to`: refusals first, then the
/// backup, then the restore that moves the data.
fn upgrade(
    app: &FoodApp,
    observed: &Observed,
    live: &str,
    from: u32,
    to: u32,
    previous: Option<DatabaseUpgradeStatus>,
) -> Plan {
    let spec_image = &app.spec.database.image;
    let settings = app.spec.database.upgrade.clone().unwrap_or_default();
    let method = settings.method;
    let under_way = |p: &&DatabaseUpgradeStatus| {
        &p.image == spec_image
            && matches!(
                p.phase,
                UpgradePhase::PausingWrites | UpgradePhase::BackingUp | UpgradePhase::Upgrading
            )
    };
    // The attempt under way keeps its name; a new one is named after the
    // spec, so that a failed attempt is tried again only after the spec
    // changed.
    let name = previous
        .as_ref()
        .filter(under_way)
        .map(|p| p.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| name_of(app, to));
    let data = Some(from);
    let refuse =
        |reason: Reason, message: String| hold(live, data, reason, message, previous.clone());
    // This image's upgrade ended without moving the data: it is not tried
    // again on its own. A Beside one gives the live database its writes
    // back (it paused them before its backup).
    if let Some(p) = previous.as_ref().filter(|p| p.name == name)
        && matches!(p.phase, UpgradePhase::Failed | UpgradePhase::Reverted)
    {
        if p.method == UpgradeMethod::Beside
            && p.phase == UpgradePhase::Failed
            && job_state(observed, &resume_job(&name)).is_none()
        {
            let mut plan = refuse(
                Reason::Failed,
                format!(
                    "{}; the database keeps {live} and gets its writes back",
                    p.message.clone().unwrap_or_default()
                ),
            );
            plan.create = Some(Create::Writes {
                job: resume_job(&name),
                upgrade: name.clone(),
                read_only: false,
            });
            return plan;
        }
        let reason = if p.phase == UpgradePhase::Failed {
            Reason::Failed
        } else {
            Reason::Reverted
        };
        return refuse(
            reason,
            format!(
                "{}; the database keeps {live}",
                p.message.clone().unwrap_or_default()
            ),
        );
    }
    let with_backup = !(method == UpgradeMethod::InPlace && settings.without_backup);
    if with_backup && !backups_configured(app, observed) {
        return refuse(
            Reason::BackupRequired,
            match method {
                UpgradeMethod::Beside => format!(
                    "upgrading PostgreSQL {from} to {to} Beside moves the data through a verified backup, and no backup store is usable (spec.backup and its credentials Secret): configure one, or set spec.database.upgrade.method: InPlace with withoutBackup: true; the database keeps {live}"
                ),
                UpgradeMethod::InPlace => format!(
                    "an InPlace upgrade of PostgreSQL {from} to {to} takes a verified backup first, and no backup store is usable: configure spec.backup, or set spec.database.upgrade.withoutBackup: true to upgrade without one; the database keeps {live}"
                ),
            },
        );
    }
    if let Some(holder) = super::operations::lock::holder(app).filter(|h| *h != name) {
        return refuse(
            Reason::WaitingForRestore,
            format!(
                "the upgrade of PostgreSQL {from} to {to} waits for restore {holder} to end; the database keeps {live}"
            ),
        );
    }
    let mut status = previous
        .filter(|p| p.name == name)
        .unwrap_or(DatabaseUpgradeStatus {
            name: name.clone(),
            from: i32::try_from(from).unwrap_or_default(),
            to: i32::try_from(to).unwrap_or_default(),
            image: spec_image.clone(),
            method,
            phase: match method {
                UpgradeMethod::Beside => UpgradePhase::PausingWrites,
                UpgradeMethod::InPlace => UpgradePhase::BackingUp,
            },
            backup: None,
            restore: None,
            message: None,
        });
    let labels = BTreeMap::from([
        (
            "app.kubernetes.io/instance".to_owned(),
            app.name_any().to_owned(),
        ),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            build::MANAGER.to_owned(),
        ),
    ]);
    let annotations = |extra: Option<(&str, &str)>| {
        let mut a = BTreeMap::from([(UPGRADE_TO_ANNOTATION.to_owned(), to.to_string())]);
        if let Some((k, v)) = extra {
            a.insert(k.to_owned(), v.to_owned());
        }
        Some(a)
    };
    let running = |status: DatabaseUpgradeStatus, message: String, create: Option<Create>| Plan {
        create,
        ..upgrading(live, data, message, status)
    };
    // Beside: the live database stops taking writes first, so that its
    // backup holds every order (reads go on; writes answer 503 restoring).
    if method == UpgradeMethod::Beside && status.phase == UpgradePhase::PausingWrites {
        let job = pause_job(&name);
        match job_state(observed, &job) {
            None => {
                return running(
                    status,
                    format!(
                        "upgrading PostgreSQL {from} to {to} Beside: pausing the writes of {live} (reads go on) so that its backup holds every order"
                    ),
                    Some(Create::Writes {
                        job,
                        upgrade: name.clone(),
                        read_only: true,
                    }),
                );
            }
            Some(super::validate::JobState::Succeeded) => {
                status.phase = UpgradePhase::BackingUp;
            }
            Some(super::validate::JobState::Failed { reason, message }) => {
                status.phase = UpgradePhase::Failed;
                status.message = Some(format!(
                    "pausing the writes before the upgrade failed ({reason}: {message}); nothing was changed"
                ));
                let message = status.message.clone().unwrap_or_default();
                let mut plan = hold(live, data, Reason::Failed, message, Some(status));
                plan.create = Some(Create::Writes {
                    job: resume_job(&name),
                    upgrade: name.clone(),
                    read_only: false,
                });
                return plan;
            }
            Some(super::validate::JobState::Running) => {
                return running(
                    status,
                    format!(
                        "upgrading PostgreSQL {from} to {to} Beside: pausing the writes of {live}"
                    ),
                    None,
                );
            }
        }
    }
    // The backup.
    let backup_name = with_backup.then(|| name.clone());
    if let Some(backup_name) = &backup_name {
        status.backup = Some(backup_name.clone());
        let backup = observed
            .backups
            .iter()
            .find(|b| &b.name_any() == backup_name);
        let phase = backup.and_then(|b| b.status.as_ref()?.phase);
        match (backup, phase) {
            (None, _) => {
                let b = FoodAppBackup {
                    metadata: kube::api::ObjectMeta {
                        name: Some(backup_name.clone()),
                        namespace: app.namespace(),
                        labels: Some(labels),
                        annotations: annotations(None),
                        ..Default::default()
                    },
                    spec: FoodAppBackupSpec {
                        food_app_ref: app.name_any(),
                        source: Default::default(),
                    },
                    status: None,
                };
                return running(
                    status,
                    format!(
                        "upgrading PostgreSQL {from} to {to} ({method:?}): taking backup {backup_name} first; the shop serves from {live}"
                    ),
                    Some(Create::Backup(Box::new(b))),
                );
            }
            (Some(b), Some(JobPhase::Failed)) => {
                status.phase = UpgradePhase::Failed;
                status.message = Some(format!(
                    "the backup before the upgrade, {backup_name}, failed ({}); nothing was changed. Change the spec again (spec.database.upgrade, say) to try again",
                    b.status
                        .as_ref()
                        .and_then(|s| s.error.clone())
                        .unwrap_or_default()
                ));
                let message = status.message.clone().unwrap_or_default();
                return hold(live, data, Reason::Failed, message, Some(status));
            }
            (Some(_), Some(JobPhase::Succeeded)) => {}
            (Some(_), _) => {
                return running(
                    status,
                    format!(
                        "upgrading PostgreSQL {from} to {to} ({method:?}): backup {backup_name} runs; the shop serves from {live}"
                    ),
                    None,
                );
            }
        }
    }
    // The restore that moves the data.
    status.phase = UpgradePhase::Upgrading;
    status.restore = Some(name.clone());
    let exists = observed.restores.iter().any(|r| r.name_any() == name);
    let message = match method {
        UpgradeMethod::Beside => format!(
            "upgrading PostgreSQL {from} to {to} Beside: FoodAppRestore {name} restores backup {} into a PostgreSQL {to} database while the shop serves reads from {live}, then switches",
            backup_name.clone().unwrap_or_default()
        ),
        UpgradeMethod::InPlace => format!(
            "upgrading PostgreSQL {from} to {to} InPlace: FoodAppRestore {name} runs pg_upgrade --link on the volume; the shop is closed meanwhile"
        ),
    };
    if exists {
        let stop =
            method == UpgradeMethod::InPlace && in_place(app, observed, &status).stop_database;
        let mut plan = running(status, message, None);
        plan.stop_database = stop;
        return plan;
    }
    let r = FoodAppRestore {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            namespace: app.namespace(),
            labels: Some(labels),
            annotations: annotations(
                (method == UpgradeMethod::InPlace).then_some((UPGRADE_FROM_IMAGE_ANNOTATION, live)),
            ),
            ..Default::default()
        },
        spec: match method {
            // Writes paused before the backup: nothing may be discarded.
            UpgradeMethod::Beside => FoodAppRestoreSpec {
                food_app_ref: app.name_any(),
                backup_ref: backup_name,
                mode: Some(RestoreMode::Beside),
                require_no_discard: Some(true),
                ..Default::default()
            },
            // The backup was taken for the way back: pg_upgrade moves the data.
            UpgradeMethod::InPlace => FoodAppRestoreSpec {
                food_app_ref: app.name_any(),
                mode: Some(RestoreMode::InPlace),
                upgrade_to: Some(i32::try_from(to).unwrap_or_default()),
                ..Default::default()
            },
        },
        status: None,
    };
    running(status, message, Some(Create::Restore(Box::new(r))))
}

/// Creates `obj` (with `create`, the only verb the operator holds on
/// FoodAppRestores) unless one of its name exists.
async fn create_new<K: super::apply::Object>(
    ctx: &Context,
    ns: &str,
    obj: &K,
) -> Result<(), Error> {
    match Api::<K>::namespaced(ctx.client.clone(), ns)
        .create(&PostParams::default(), obj)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(Error::Dereference(e)),
    }
}

/// Creates what the plan asks for (an object of that name that exists is
/// left as it is: the next pass reads it).
pub async fn create(ctx: &Context, app: &FoodApp, create: &Create) -> Result<(), Error> {
    let ns = app.namespace().unwrap_or_default();
    match create {
        Create::Backup(b) => create_new(ctx, &ns, b.as_ref()).await?,
        Create::Restore(r) => create_new(ctx, &ns, r.as_ref()).await?,
        Create::Writes {
            job,
            upgrade,
            read_only,
        } => {
            let model = super::validate::job_model(app, &ctx.agent_image)?;
            let Some(backup) = &app.spec.backup else {
                return Ok(());
            };
            let owner = build::owner_reference(&model);
            let job = build::restore::upgrade_writes_job(
                &model, backup, job, upgrade, &owner, *read_only,
            );
            super::apply::create_once(&ctx.client, &ns, &job).await?;
        }
    }
    Ok(())
}
