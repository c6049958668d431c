//! Status conditions with `metav1.Condition` semantics, shared by the three
//! controllers: keyed by type, the transition time moves only when the status
//! flips, reason, message and observedGeneration are always current. Reasons
//! are an enum: code decides on them, and never parses them back out of text.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Every reason a condition, an Event or a failure record can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    // Components coming up.
    Creating,
    Starting,
    Running,
    Available,
    Unavailable,
    Succeeded,
    Failed,
    // The migration gate.
    WaitingForDatabase,
    WaitingForMigrations,
    MigrationFailed,
    // Backups.
    NotConfigured,
    CredentialsSecretMissing,
    Suspended,
    Scheduled,
    /// CloudNativePG: the Barman Cloud Plugin is not installed.
    BarmanCloudPluginMissing,
    /// CloudNativePG: `ContinuousArchiving` is False on the Cluster.
    ArchivingFailed,
    /// CloudNativePG: `LastBackupSucceeded` is False on the Cluster.
    BackupFailed,
    // The whole FoodApp.
    Ready,
    NotReady,
    Restoring,
    /// The API server refused an object the operator applied.
    ApplyFailed,
    /// An object of a derived name is not this FoodApp's (`Conflict`).
    NotOwned,
    NoConflict,
    // Restores.
    WaitingForRestore,
    Started,
    ScalingDown,
    Stopped,
    InvalidRestore,
    FoodAppNotFound,
    BackupNotFound,
    Timeout,
    InsufficientQuota,
    VerificationFailed,
    WouldDiscard,
    /// Point-in-time recovery: the target is outside what can be recovered.
    TargetNotRecoverable,
    // On-demand backups.
    JobFailed,
    SecretInvalid,
    CloudNativePGMissing,
    // Rollouts a new operator version brings.
    UpToDate,
    MaintenanceWindow,
    NoMaintenanceWindow,
    InvalidMaintenanceWindow,
    // PostgreSQL major upgrades.
    Upgrading,
    UnknownImageMajor,
    DowngradeRefused,
    BackupRequired,
    Reverted,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Creating => "Creating",
            Reason::Starting => "Starting",
            Reason::Running => "Running",
            Reason::Available => "Available",
            Reason::Unavailable => "Unavailable",
            Reason::Succeeded => "Succeeded",
            Reason::Failed => "Failed",
            Reason::WaitingForDatabase => "WaitingForDatabase",
            Reason::WaitingForMigrations => "WaitingForMigrations",
            Reason::MigrationFailed => "MigrationFailed",
            Reason::NotConfigured => "NotConfigured",
            Reason::CredentialsSecretMissing => "CredentialsSecretMissing",
            Reason::Suspended => "Suspended",
            Reason::Scheduled => "Scheduled",
            Reason::BarmanCloudPluginMissing => "BarmanCloudPluginMissing",
            Reason::ArchivingFailed => "ArchivingFailed",
            Reason::BackupFailed => "BackupFailed",
            Reason::TargetNotRecoverable => "TargetNotRecoverable",
            Reason::Ready => "Ready",
            Reason::NotReady => "NotReady",
            Reason::Restoring => "Restoring",
            Reason::ApplyFailed => "ApplyFailed",
            Reason::NotOwned => "NotOwned",
            Reason::NoConflict => "NoConflict",
            Reason::WaitingForRestore => "WaitingForRestore",
            Reason::Started => "Started",
            Reason::ScalingDown => "ScalingDown",
            Reason::Stopped => "Stopped",
            Reason::InvalidRestore => "InvalidRestore",
            Reason::FoodAppNotFound => "FoodAppNotFound",
            Reason::BackupNotFound => "BackupNotFound",
            Reason::Timeout => "Timeout",
            Reason::InsufficientQuota => "InsufficientQuota",
            Reason::VerificationFailed => "VerificationFailed",
            Reason::WouldDiscard => "WouldDiscard",
            Reason::JobFailed => "JobFailed",
            Reason::SecretInvalid => "SecretInvalid",
            Reason::CloudNativePGMissing => "CloudNativePGMissing",
            Reason::UpToDate => "UpToDate",
            Reason::MaintenanceWindow => "MaintenanceWindow",
            Reason::NoMaintenanceWindow => "NoMaintenanceWindow",
            Reason::InvalidMaintenanceWindow => "InvalidMaintenanceWindow",
            Reason::Upgrading => "Upgrading",
            Reason::UnknownImageMajor => "UnknownImageMajor",
            Reason::DowngradeRefused => "DowngradeRefused",
            Reason::BackupRequired => "BackupRequired",
            Reason::Reverted => "Reverted",
        }
    }

    /// Whether an Event with this reason is a Warning: something a person
    /// has to look at.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            Reason::MigrationFailed
                | Reason::CredentialsSecretMissing
                | Reason::Unavailable
                | Reason::ApplyFailed
                | Reason::NotOwned
                | Reason::Failed
                | Reason::InvalidRestore
                | Reason::FoodAppNotFound
                | Reason::BackupNotFound
                | Reason::Timeout
                | Reason::InsufficientQuota
                | Reason::VerificationFailed
                | Reason::WouldDiscard
                | Reason::JobFailed
                | Reason::SecretInvalid
                | Reason::CloudNativePGMissing
                | Reason::BarmanCloudPluginMissing
                | Reason::ArchivingFailed
                | Reason::BackupFailed
                | Reason::TargetNotRecoverable
                | Reason::InvalidMaintenanceWindow
                | Reason::UnknownImageMajor
                | Reason::DowngradeRefused
                | Reason::BackupRequired
        )
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a condition should say now.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub type_: &'static str,
    pub ok: bool,
    pub reason: Reason,
    pub message: String,
}

pub fn wanted(type_: &'static str, ok: bool, reason: Reason, message: impl Into<String>) -> Wanted {
    Wanted {
        type_,
        ok,
        reason,
        message: message.into(),
    }
}

fn status_word(ok: bool) -> &'static str {
    if ok { "True" } else { "False" }
}

/// Sets one condition in `conditions`: added when new, updated in place
/// otherwise; `lastTransitionTime` changes only when the status does.
pub fn set(conditions: &mut Vec<Condition>, w: &Wanted, generation: Option<i64>, now: &Time) {
    let status = status_word(w.ok);
    match conditions.iter_mut().find(|c| c.type_ == w.type_) {
        Some(c) => {
            if c.status != status {
                c.status = status.to_owned();
                c.last_transition_time = now.clone();
            }
            c.reason = w.reason.as_str().to_owned();
            c.message.clone_from(&w.message);
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: w.type_.to_owned(),
            status: status.to_owned(),
            reason: w.reason.as_str().to_owned(),
            message: w.message.clone(),
            observed_generation: generation,
            last_transition_time: now.clone(),
        }),
    }
}

pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_flips() {
        let mut c = Vec::new();
        set(
            &mut c,
            &wanted("Ready", false, Reason::NotReady, "a"),
            Some(1),
            &at(10),
        );
        set(
            &mut c,
            &wanted("Ready", false, Reason::ApplyFailed, "b"),
            Some(2),
            &at(20),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, at(10), "same status: time kept");
        assert_eq!(
            (c[0].reason.as_str(), c[0].message.as_str()),
            ("ApplyFailed", "b"),
            "reason and message are always current"
        );
        assert_eq!(c[0].observed_generation, Some(2));
        set(
            &mut c,
            &wanted("Ready", true, Reason::Ready, "ok"),
            Some(2),
            &at(30),
        );
        assert_eq!(c[0].last_transition_time, at(30));
        assert_eq!(c[0].status, "True");
    }
}
