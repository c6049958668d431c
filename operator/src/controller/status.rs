//! From what was observed and applied to the FoodApp's status: conditions
//! (Kubernetes API conventions, through `conditions`), phase, rollout image,
//! endpoint, last backup, administrator Secret. Pure.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::apply::{Applied, Component};
use super::conditions::{self, Reason, Wanted, wanted};
use super::dereference::Observed;
use super::validate::{Database, JobState, job_state};
use crate::build::{Model, RETRY_MIGRATION_ANNOTATION};
use crate::crd::{FoodApp, FoodAppStatus, JobPhase, LastBackup, Phase, ServiceType};

pub const DATABASE_READY: &str = "DatabaseReady";
pub const MIGRATIONS_COMPLETE: &str = "MigrationsComplete";
pub const API_READY: &str = "ApiReady";
pub const GATEWAY_READY: &str = "GatewayReady";
pub const BACKUP_SCHEDULED: &str = "BackupScheduled";
pub const READY: &str = "Ready";
pub const ROLLOUT_PENDING: &str = "RolloutPending";
/// True while an object of a name the operator derives is not this
/// FoodApp's (`controller::ownership`); the message names each.
pub const CONFLICT: &str = "Conflict";

/// The Conflict condition for what was found not to be this FoodApp's.
pub fn conflict_check(conflicts: &[String]) -> Check {
    if conflicts.is_empty() {
        check(
            CONFLICT,
            false,
            Reason::NoConflict,
            "every object of a name the operator derives is this FoodApp's",
        )
    } else {
        check(CONFLICT, true, Reason::NotOwned, conflicts.join("; "))
    }
}

/// The status of a FoodApp whose generated Secrets are not its own: nothing
/// was built or applied; Conflict says which, Ready that nothing runs.
pub fn conflicted(app: &FoodApp, conflicts: &[String], now: Time) -> (FoodAppStatus, Vec<Check>) {
    let mut status = app.status.clone().unwrap_or_default();
    let checks = vec![
        conflict_check(conflicts),
        check(
            READY,
            false,
            Reason::NotOwned,
            format!("nothing is applied: {}", conflicts.join("; ")),
        ),
    ];
    for c in &checks {
        conditions::set(&mut status.conditions, c, app.metadata.generation, &now);
    }
    status.phase = Some(Phase::Pending);
    (status, checks)
}

type Check = Wanted;

fn check(type_: &'static str, ok: bool, reason: Reason, message: impl Into<String>) -> Check {
    wanted(type_, ok, reason, message)
}

/// A component the API server refused: its condition says so, whatever
/// else is true of it.
fn or_apply_failure(c: Check, applied: &Applied, component: Component) -> Check {
    match applied.failure(component) {
        Some(e) => check(c.type_, false, Reason::ApplyFailed, e.to_string()),
        None => c,
    }
}

fn available(d: Option<&Deployment>) -> i32 {
    d.and_then(|d| d.status.as_ref())
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn endpoint(app: &FoodApp, observed: &Observed) -> Option<String> {
    let svc = observed.gateway_service.as_ref()?;
    let name = svc.metadata.name.as_deref()?;
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let tls = app.spec.gateway.tls.is_some();
    let scheme = if tls { "https" } else { "http" };
    match app.spec.gateway.service_type {
        ServiceType::LoadBalancer => {
            let ingress = svc
                .status
                .as_ref()?
                .load_balancer
                .as_ref()?
                .ingress
                .as_ref()?
                .first()?;
            let host = ingress.ip.clone().or_else(|| ingress.hostname.clone())?;
            Some(format!("{scheme}://{host}"))
        }
        ServiceType::NodePort => {
            let ports = svc.spec.as_ref()?.ports.as_ref()?;
            let wanted = if tls { "https" } else { "http" };
            let port = ports
                .iter()
                .find(|p| p.name.as_deref() == Some(wanted))
                .or_else(|| ports.first())?
                .node_port?;
            Some(format!("<node-ip>:{port}"))
        }
        ServiceType::ClusterIP => Some(format!(
            "{scheme}://{name}.{ns}.svc:{}",
            if tls { 443 } else { 80 }
        )),
    }
}

fn last_backup(observed: &Observed) -> Option<LastBackup> {
    observed
        .backups
        .iter()
        .filter_map(|b| {
            let s = b.status.as_ref()?;
            if s.phase != Some(JobPhase::Succeeded) {
                return None;
            }
            Some(LastBackup {
                name: b.metadata.name.clone()?,
                completed_at: s.completed_at.clone()?,
                size_bytes: s.size_bytes.unwrap_or(0),
            })
        })
        .max_by(|a, b| a.completed_at.cmp(&b.completed_at))
}

pub fn compute(
    app: &FoodApp,
    observed: &Observed,
    model: &Model,
    applied: &Applied,
    upgrade: &super::upgrade::Plan,
    window: &crate::maintenance::State,
    now: Time,
) -> (FoodAppStatus, Vec<Wanted>) {
    let generation = app.metadata.generation;
    let spec_image = &app.spec.api.image;
    let database = super::validate::database(app, observed);
    let db = database.is_ready();
    let migration = observed.migration_job.as_ref().map(job_state);
    let migrated = model.api_rollout_image.as_deref() == Some(spec_image.as_str());

    let db_check = match &database {
        Database::Ready(None) => {
            check(DATABASE_READY, true, Reason::Running, "PostgreSQL is ready")
        }
        Database::Ready(Some(c)) => check(
            DATABASE_READY,
            true,
            Reason::Running,
            format!(
                "{:?} database {} on {}:{} as {} (sslmode {})",
                app.spec.database.engine, c.database, c.host, c.port, c.user, c.sslmode
            ),
        ),
        Database::NotReady { reason, message } => {
            check(DATABASE_READY, false, *reason, message.clone())
        }
    };
    let migration_check = match (&migration, migrated) {
        (_, true) => check(
            MIGRATIONS_COMPLETE,
            true,
            Reason::Succeeded,
            format!("migrations of {spec_image} applied"),
        ),
        (Some(JobState::Failed { reason, message }), _) => check(
            MIGRATIONS_COMPLETE,
            false,
            Reason::MigrationFailed,
            format!(
                "the migration Job of {spec_image} failed ({reason}: {message}); the API keeps running its previous image. \
                 To retry: kubectl annotate foodapp {} {RETRY_MIGRATION_ANNOTATION}=\"$(date +%s)\" --overwrite",
                model.name
            ),
        ),
        (Some(_), _) => check(
            MIGRATIONS_COMPLETE,
            false,
            Reason::Running,
            format!("running the migrations of {spec_image}"),
        ),
        (None, _) => check(
            MIGRATIONS_COMPLETE,
            false,
            Reason::WaitingForDatabase,
            "migrations start once PostgreSQL is ready",
        ),
    };
    let api_available = available(observed.api_deployment.as_ref());
    let api_check = if model.restoring {
        check(
            API_READY,
            false,
            Reason::Restoring,
            "the API is stopped while the database is restored",
        )
    } else if api_available >= 1 {
        check(
            API_READY,
            true,
            Reason::Available,
            format!("{api_available} API pod(s) available"),
        )
    } else if observed.api_deployment.is_none() {
        check(
            API_READY,
            false,
            Reason::WaitingForMigrations,
            "the API starts once its migrations succeeded",
        )
    } else {
        check(
            API_READY,
            false,
            Reason::Unavailable,
            "no API pod is available",
        )
    };
    let gw_available = available(observed.gateway_deployment.as_ref());
    let tls_missing =
        crate::build::gateway::tls_secret(model).filter(|_| observed.gateway_tls_secret.is_none());
    let gateway_check = if let Some(secret) = tls_missing {
        let how = if app
            .spec
            .gateway
            .tls
            .as_ref()
            .is_some_and(|t| t.issuer_ref.is_some())
        {
            "cert-manager issues it for the Certificate of the same name (the gateway serves nothing before it exists, so an ACME HTTP-01 challenge cannot be answered through it: use a DNS-01 ACME issuer or a CA issuer)"
        } else {
            "create it (type kubernetes.io/tls, keys tls.crt and tls.key)"
        };
        check(
            GATEWAY_READY,
            false,
            Reason::SecretInvalid,
            format!(
                "waiting for TLS Secret {secret}: {how}; the gateway pods start once it exists"
            ),
        )
    } else if gw_available >= 1 {
        check(
            GATEWAY_READY,
            true,
            Reason::Available,
            format!("{gw_available} gateway pod(s) available"),
        )
    } else {
        check(
            GATEWAY_READY,
            false,
            Reason::Unavailable,
            "no gateway pod is available",
        )
    };
    let backup_check = match (&app.spec.backup, observed.credentials_secret_found) {
        // CloudNativePG without the plugin: that comes first, whatever else.
        (Some(_), _)
            if observed
                .cnpg
                .as_ref()
                .is_some_and(|c| c.installed && !c.plugin_installed) =>
        {
            check(
                BACKUP_SCHEDULED,
                false,
                Reason::BarmanCloudPluginMissing,
                plugin_missing_message(model),
            )
        }
        (None, _) => check(
            BACKUP_SCHEDULED,
            false,
            Reason::NotConfigured,
            "spec.backup is not set: no backups are taken",
        ),
        (Some(b), Some(false)) => check(
            BACKUP_SCHEDULED,
            false,
            Reason::CredentialsSecretMissing,
            format!(
                "Secret {} (backup.s3.credentialsSecret) was not found in namespace {}; create it with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                b.s3.credentials_secret, model.namespace
            ),
        ),
        (Some(b), _) if b.suspend => check(
            BACKUP_SCHEDULED,
            false,
            Reason::Suspended,
            "backup.suspend is true",
        ),
        (Some(b), _) if observed.cron_job.is_some() => check(
            BACKUP_SCHEDULED,
            true,
            Reason::Scheduled,
            format!("backups run on \"{}\" (UTC)", b.schedule),
        ),
        (Some(b), _) if observed.cnpg.is_some() => cnpg_backup_check(model, observed, b),
        (Some(_), _) => check(
            BACKUP_SCHEDULED,
            false,
            Reason::Creating,
            match app.spec.database.engine {
                crate::crd::Engine::CloudNativePG => "creating the CloudNativePG ScheduledBackup",
                _ => "creating the backup CronJob",
            },
        ),
    };
    let db_check = or_apply_failure(db_check, applied, Component::Database);
    let migration_check = or_apply_failure(migration_check, applied, Component::Migration);
    let api_check = or_apply_failure(api_check, applied, Component::Api);
    let gateway_check = or_apply_failure(gateway_check, applied, Component::Gateway);
    let backup_check = or_apply_failure(backup_check, applied, Component::Backup);
    // Backups left unconfigured or paused on purpose do not make the app unready.
    let backup_ok = backup_check.ok
        || matches!(
            backup_check.reason,
            Reason::NotConfigured | Reason::Suspended
        );
    let all_ok = db_check.ok && migration_check.ok && api_check.ok && gateway_check.ok && backup_ok;
    let not_ready: Vec<&str> = [&db_check, &migration_check, &api_check, &gateway_check]
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.type_)
        .chain((!backup_ok).then_some(BACKUP_SCHEDULED))
        .collect();
    // NetworkPolicies have no condition of their own: a refused one makes
    // the FoodApp not Ready, saying why.
    let network = applied.failure(Component::Network);
    let all_ok = all_ok && network.is_none();
    let ready_check = if let Some(e) = network {
        check(
            READY,
            false,
            Reason::ApplyFailed,
            format!("the NetworkPolicies could not be applied: {e}"),
        )
    } else if all_ok {
        check(READY, true, Reason::Ready, "every component is ready")
    } else {
        check(
            READY,
            false,
            Reason::NotReady,
            format!("not ready: {}", not_ready.join(", ")),
        )
    };

    let phase = if upgrade.running {
        Phase::Upgrading
    } else if model.restoring {
        Phase::Restoring
    } else if all_ok {
        Phase::Ready
    } else if matches!(
        &database,
        Database::NotReady {
            reason: Reason::Creating | Reason::SecretInvalid | Reason::CloudNativePGMissing,
            ..
        }
    ) {
        Phase::Pending
    } else if !db {
        Phase::Provisioning
    } else if matches!(migration, Some(JobState::Running)) && !migrated {
        Phase::Migrating
    } else {
        Phase::Degraded
    };

    let rollout_check = rollout_pending(applied, window, &now);

    let mut conditions = app
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let checks = vec![
        db_check,
        migration_check,
        api_check,
        gateway_check,
        backup_check,
        ready_check,
        rollout_check,
        upgrade.condition.clone(),
        conflict_check(
            &observed
                .conflicts
                .iter()
                .cloned()
                .chain(applied.conflicts())
                .collect::<Vec<_>>(),
        ),
    ];
    for c in &checks {
        conditions::set(&mut conditions, c, generation, &now);
    }

    let status = FoodAppStatus {
        phase: Some(phase),
        observed_generation: generation,
        conditions,
        api_image: model.api_rollout_image.clone(),
        gateway_endpoint: endpoint(app, observed),
        last_backup: last_backup(observed)
            .or_else(|| app.status.as_ref().and_then(|s| s.last_backup.clone())),
        admin_secret: observed
            .admin_secret
            .as_ref()
            .map(|_| model.admin_secret.clone()),
        pending_rollouts: applied.pending.clone(),
        database_major: upgrade.data_major.and_then(|m| i32::try_from(m).ok()),
        database_image: observed.statefulset.as_ref().map(|_| upgrade.image.clone()),
        database_upgrade: upgrade.status.clone(),
    };
    (status, checks)
}

/// RolloutPending: True while a workload keeps its pod template until the
/// maintenance window (what would change is in `status.pendingRollouts`).
fn rollout_pending(applied: &Applied, window: &crate::maintenance::State, now: &Time) -> Check {
    if applied.pending.is_empty() {
        return check(
            ROLLOUT_PENDING,
            false,
            Reason::UpToDate,
            "every pod template is the one this operator builds",
        );
    }
    let reason = match window {
        crate::maintenance::State::NotSet => Reason::NoMaintenanceWindow,
        crate::maintenance::State::Invalid(_) => Reason::InvalidMaintenanceWindow,
        _ => Reason::MaintenanceWindow,
    };
    let what: Vec<String> = applied
        .pending
        .iter()
        .map(|p| format!("{} {} ({})", p.kind, p.name, p.changes.join(", ")))
        .collect();
    check(
        ROLLOUT_PENDING,
        true,
        reason,
        format!(
            "a new operator version would restart the pods of {}; they wait for {} (or set spec.maintenance.applyImmediately: true)",
            what.join("; "),
            window.waiting_for(now.0)
        ),
    )
}

/// BackupScheduled without the Barman Cloud Plugin: what to install, and
/// what the Cluster does meanwhile.
fn plugin_missing_message(model: &Model) -> String {
    let meanwhile = match model.cnpg_archive {
        crate::build::cnpg::Archive::InTree => format!(
            "Cluster {} keeps archiving through the deprecated in-tree barmanObjectStore (removed in CloudNativePG 1.31) until it is",
            model.db_cluster
        ),
        crate::build::cnpg::Archive::Plugin => format!(
            "Cluster {} keeps its plugin configuration, and its archiving fails until the plugin is back",
            model.db_cluster
        ),
        crate::build::cnpg::Archive::Off => format!(
            "Cluster {} archives no WAL and takes no base backup until it is",
            model.db_cluster
        ),
    };
    format!(
        "the Barman Cloud Plugin (barmancloud.cnpg.io/v1 ObjectStore) is not installed: install plugin-barman-cloud v0.14 or later (it needs CloudNativePG 1.26 or later and cert-manager); {meanwhile}"
    )
}

/// The recovery window of the Cluster in use, as the plugin reports it in
/// the ObjectStore's status (the Cluster's own fields are deprecated).
pub fn recovery_window(model: &Model, observed: &Observed) -> crate::crd::foreign::RecoveryWindow {
    let cnpg = observed.cnpg.as_ref();
    let from_store = cnpg
        .and_then(|c| c.object_store.as_ref())
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.server_recovery_window.get(&model.db_server_name))
        .cloned();
    from_store.unwrap_or_else(|| {
        let status = cnpg
            .and_then(|c| c.cluster.as_ref())
            .and_then(|c| c.status.clone())
            .unwrap_or_default();
        crate::crd::foreign::RecoveryWindow {
            first_recoverability_point: status.first_recoverability_point,
            last_successful_backup_time: status.last_successful_backup,
            last_failed_backup_time: None,
        }
    })
}

/// BackupScheduled for CloudNativePG: the schedule exists, and the
/// Cluster's own `ContinuousArchiving` and `LastBackupSucceeded` hold.
fn cnpg_backup_check(model: &Model, observed: &Observed, b: &crate::crd::BackupSpec) -> Wanted {
    let cnpg = observed.cnpg.clone().unwrap_or_default();
    if cnpg.scheduled_backup.is_none() {
        return check(
            BACKUP_SCHEDULED,
            false,
            Reason::Creating,
            "creating the CloudNativePG ScheduledBackup",
        );
    }
    let status = cnpg
        .cluster
        .as_ref()
        .and_then(|c| c.status.clone())
        .unwrap_or_default();
    // The CRD is there, but CloudNativePG does not know the plugin.
    let unregistered = status.phase.as_deref() == Some(crate::crd::foreign::PHASE_UNKNOWN_PLUGIN)
        || (model.cnpg_archive == crate::build::cnpg::Archive::Plugin
            && !status.plugin_status.is_empty()
            && !status
                .plugin_status
                .iter()
                .any(|p| p.name == crate::build::cnpg::BARMAN_CLOUD_PLUGIN));
    if unregistered {
        return check(
            BACKUP_SCHEDULED,
            false,
            Reason::BarmanCloudPluginMissing,
            format!(
                "CloudNativePG has not loaded the Barman Cloud Plugin for Cluster {}: install plugin-barman-cloud v0.14 or later in CloudNativePG's namespace (it needs cert-manager), or check its Deployment there",
                model.db_cluster
            ),
        );
    }
    let conditions = status.conditions;
    let failing = |type_: &str| {
        super::conditions::find(&conditions, type_)
            .filter(|c| c.status == "False")
            .map(|c| format!("{} ({}): {}", c.type_, c.reason, c.message))
    };
    if let Some(why) = failing("ContinuousArchiving") {
        return check(
            BACKUP_SCHEDULED,
            false,
            Reason::ArchivingFailed,
            format!(
                "Cluster {} cannot archive WAL, so no point after the last archived segment can be recovered: {why}",
                model.db_cluster
            ),
        );
    }
    if let Some(why) = failing("LastBackupSucceeded") {
        return check(
            BACKUP_SCHEDULED,
            false,
            Reason::BackupFailed,
            format!(
                "the last base backup of Cluster {} failed: {why}",
                model.db_cluster
            ),
        );
    }
    let window = recovery_window(model, observed);
    let archiving = if super::conditions::is_true(&conditions, "ContinuousArchiving") {
        "archives WAL continuously"
    } else {
        "has not archived WAL yet"
    };
    check(
        BACKUP_SCHEDULED,
        true,
        Reason::Scheduled,
        format!(
            "Cluster {} {archiving} (serverName {}) and takes base backups on \"{}\" (UTC); last base backup: {}; recoverable from: {}",
            model.db_cluster,
            model.db_server_name,
            b.schedule,
            window
                .last_successful_backup_time
                .as_deref()
                .unwrap_or("none yet"),
            window
                .first_recoverability_point
                .as_deref()
                .unwrap_or("not yet")
        ),
    )
}

/// The backup metrics of a CloudNativePG FoodApp, from the Cluster's
/// conditions and the ObjectStore's recovery window: whether it archives,
/// its last base backup, and the first point a recovery can reach.
pub fn record_cnpg_metrics(metrics: &crate::metrics::Metrics, model: &Model, observed: &Observed) {
    let Some(cnpg) = observed
        .cnpg
        .as_ref()
        .filter(|_| model.spec.backup.is_some())
    else {
        return;
    };
    let labels = crate::metrics::AppLabels {
        namespace: model.namespace.clone(),
        foodapp: model.name.clone(),
    };
    let conditions = cnpg
        .cluster
        .as_ref()
        .and_then(|c| c.status.as_ref())
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    if let Some(c) = conditions::find(&conditions, "ContinuousArchiving") {
        metrics
            .wal_archiving
            .get_or_create(&labels)
            .set(i64::from(c.status == "True"));
    }
    let window = recovery_window(model, observed);
    let seconds = |t: Option<&str>| {
        t.and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map(|t| t.as_second())
    };
    if let Some(s) = seconds(window.last_successful_backup_time.as_deref()) {
        metrics.backup_last_success.get_or_create(&labels).set(s);
    }
    if let Some(s) = seconds(window.first_recoverability_point.as_deref()) {
        metrics.recovery_window_start.get_or_create(&labels).set(s);
    }
}
