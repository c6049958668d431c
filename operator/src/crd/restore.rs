//! `FoodAppRestore`: restore a FoodApp's database from a backup, beside the
//! live one (the shop keeps serving) or in place (the API stops), or undo a
//! restore.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Restore a FoodApp's database from one backup. `Beside` (the default)
/// restores into a second database while the shop serves from the live one,
/// then switches in seconds; `InPlace` stops the API, restores in one
/// transaction (all or nothing), runs the migrations and brings the API back.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "foodapp.io",
    version = "v1alpha1",
    kind = "FoodAppRestore",
    doc = "Restores a FoodApp's database from one backup, beside the live database (the default) or in place.",
    derive = "Default",
    validation = Rule::new("self.spec == oldSelf.spec").message("a FoodAppRestore's spec cannot be changed; create a new one"),
    validation = Rule::new("self.metadata.name.size() <= 55 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("a FoodAppRestore name must be a DNS label of at most 55 characters (its Jobs are named <name>-restore and <name>-migrate)"),
    validation = Rule::new("(has(self.spec.backupRef) ? 1 : 0) + (has(self.spec.objectKey) ? 1 : 0) + (has(self.spec.latest) && self.spec.latest ? 1 : 0) + (has(self.spec.targetTime) ? 1 : 0) + (has(self.spec.revert) ? 1 : 0) + (has(self.spec.upgradeTo) ? 1 : 0) == 1").message("give exactly one of backupRef, objectKey, latest: true, targetTime or revert"),
    validation = Rule::new("!has(self.spec.upgradeTo) || (has(self.spec.mode) && self.spec.mode == 'InPlace' && !has(self.spec.target))").message("upgradeTo is the operator's InPlace PostgreSQL upgrade: mode InPlace, no target"),
    validation = Rule::new("!has(self.spec.deadlineMinutes) || has(self.spec.targetTime)").message("deadlineMinutes bounds a point-in-time recovery: it needs targetTime"),
    validation = Rule::new("!has(self.spec.revert) || !has(self.spec.mode) || self.spec.mode == 'Beside'").message("revert switches back to the database a Beside restore kept: mode InPlace cannot revert"),
    validation = Rule::new("!has(self.spec.mode) || self.spec.mode == 'Beside' || (!has(self.spec.requireNoDiscard) || !self.spec.requireNoDiscard)").message("requireNoDiscard needs mode Beside: an InPlace restore cannot compare the two databases"),
    validation = Rule::new("!has(self.spec.target) || self.spec.target.foodApp != self.spec.foodAppRef").message("spec.target.foodApp names the FoodApp restored from: a clone goes into another FoodApp (leave target out to restore this one)"),
    validation = Rule::new("!has(self.spec.target) || (!has(self.spec.revert) && !has(self.spec.targetTime))").message("a clone restores a backup (backupRef, objectKey or latest): revert and targetTime are for the FoodApp itself"),
    validation = Rule::new("!has(self.spec.target) || (!has(self.spec.mode) && !has(self.spec.requireNoDiscard) && !has(self.spec.keepPrevious) && !has(self.spec.targetDatabase))").message("a clone replaces the new FoodApp's database whole: mode, requireNoDiscard, keepPrevious and targetDatabase are for restores of the FoodApp itself"),
    namespaced,
    shortname = "far",
    status = "FoodAppRestoreStatus",
    printcolumn(name = "FoodApp", type_ = "string", json_path = ".spec.foodAppRef"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".status.mode"),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.target.foodApp", priority = 1),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Discarded", type_ = "integer", json_path = ".status.discarded.orders"),
    printcolumn(name = "Write pause", type_ = "number", json_path = ".status.writePauseSeconds"),
    printcolumn(name = "Object", type_ = "string", json_path = ".status.objectKey", priority = 1),
    printcolumn(name = "Completed", type_ = "date", json_path = ".status.completedAt"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct FoodAppRestoreSpec {
    /// Name of the FoodApp (same namespace) whose database is restored.
    #[x_kube(validation = Rule::new("self.size() > 0").message("spec.foodAppRef must name a FoodApp"))]
    pub food_app_ref: String,
    /// A FoodAppBackup (same namespace) to restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_ref: Option<String>,
    /// An object key in the FoodApp's backup bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_key: Option<String>,
    /// Restore the newest backup in the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<bool>,
    /// Engine CloudNativePG: recover to this moment (RFC 3339, e.g.
    /// 2026-11-22T09:30:00Z) from the WAL archive, into a new Cluster the
    /// API then switches to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\\\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$')").message("spec.targetTime must be an RFC 3339 time such as 2026-11-22T09:30:00Z"))]
    pub target_time: Option<String>,
    /// Undo: switch back to the database the named (Succeeded, Beside)
    /// restore of this FoodApp replaced and kept, the same way and with the
    /// same accounting of what is discarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert: Option<String>,
    /// Beside (default): restore into a second database while the shop
    /// keeps serving from the live one, then switch; writes pause for
    /// seconds. InPlace: stop the API for the whole restore (one copy of the
    /// data: for volumes too small for two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RestoreMode>,
    /// Beside: stop before the switch when the live database holds orders,
    /// refunds, order events or users the backup does not; the shop is left
    /// untouched and the prepared database in place for a decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_no_discard: Option<bool>,
    /// Beside: keep the replaced database (scaled to zero) until this
    /// FoodAppRestore is deleted, for `revert` (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_previous: Option<bool>,
    /// Beside on engine External: the database to restore into on the same
    /// server (default `<database>_r<id>`); the login needs CREATEDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z_][a-z0-9_]{0,62}$')").message("spec.targetDatabase must be a lower-case PostgreSQL name of at most 63 characters"))]
    pub target_database: Option<String>,
    /// Restore into another FoodApp instead (a clone: staging, inspection,
    /// or moving to another engine); the FoodApp restored from is not
    /// touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RestoreTarget>,
    /// Set by the operator for an InPlace PostgreSQL major upgrade
    /// (`spec.database.upgrade.method: InPlace`): instead of restoring a
    /// backup, `pg_upgrade --link` brings the data to this major, the API
    /// stopped meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 10 && self <= 99").message("spec.upgradeTo must be a PostgreSQL major such as 18"))]
    pub upgrade_to: Option<i32>,
    /// targetTime: how long the recovery may take before the restore ends
    /// Failed, the FoodApp still on its Cluster and the half-recovered one
    /// deleted (default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 5 && self <= 10080").message("spec.deadlineMinutes must be between 5 and 10080 (a week)"))]
    pub deadline_minutes: Option<u32>,
}

/// A clone: the backup restored into a new FoodApp.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTarget {
    /// The FoodApp (same namespace) to restore into. Missing, it is created
    /// with the spec of the FoodApp restored from, without its backups.
    /// Existing, its database must hold no orders (it is replaced whole).
    #[x_kube(validation = Rule::new("self.size() <= 40 && self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("spec.target.foodApp must be a FoodApp name: a lower-case DNS label of at most 40 characters"))]
    pub food_app: String,
    /// Replace what the data says about people (emails, names, password
    /// hashes, payment references, staff notes) with deterministic fake
    /// values before the clone serves; see docs/restores.md for the columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymize: Option<bool>,
}

impl RestoreTarget {
    pub fn anonymizes(&self) -> bool {
        self.anonymize.unwrap_or(false)
    }
}

impl FoodAppRestoreSpec {
    /// The FoodApps this restore concerns: the one restored from, and the
    /// clone it goes into.
    pub fn food_apps(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.food_app_ref.as_str())
            .chain(self.target.as_ref().map(|t| t.food_app.as_str()))
    }
    pub fn mode(&self) -> RestoreMode {
        self.mode.unwrap_or_default()
    }
    pub fn keeps_previous(&self) -> bool {
        self.keep_previous.unwrap_or(true)
    }
    pub fn requires_no_discard(&self) -> bool {
        self.require_no_discard.unwrap_or(false)
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestoreMode {
    #[default]
    Beside,
    InPlace,
}

/// Where a restore stands. Beside: Pending → Restoring → Verifying →
/// Migrating → Switching → Succeeded; InPlace: Pending → Restoring →
/// Migrating → Succeeded. Failed leaves the live database serving;
/// Reverted: a later restore switched back to the database this one
/// replaced.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestorePhase {
    Pending,
    /// Also read as `Running`: what the previous release (restores in place
    /// only) wrote while its restore Job ran.
    #[serde(alias = "Running")]
    Restoring,
    Verifying,
    Migrating,
    Switching,
    Succeeded,
    Failed,
    Reverted,
}

impl RestorePhase {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RestorePhase::Succeeded | RestorePhase::Failed | RestorePhase::Reverted
        )
    }
}

/// What the live database held that the restored one does not, exported
/// before the switch as JSON Lines next to the dump.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Discarded {
    pub orders: i64,
    /// Status changes of orders both databases hold.
    pub order_events: i64,
    pub refunds: i64,
    pub users: i64,
    /// The newest change the restored database holds (RFC 3339): what is
    /// discarded came after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Where the export is (`<dump key>.discarded.jsonl`, with a manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl Discarded {
    pub fn is_empty(&self) -> bool {
        self.orders + self.order_events + self.refunds + self.users == 0
    }
}

/// The database a Beside restore replaced, kept for `revert`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PreviousDatabase {
    /// StatefulSet (BuiltIn), database (External) or Cluster (CloudNativePG).
    pub name: String,
    /// Its volume (BuiltIn), scaled to zero but still held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// The storage the volume holds, e.g. 10Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Deleted (keepPrevious: false) or gone with this restore.
    #[serde(default)]
    pub deleted: bool,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FoodAppRestoreStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RestorePhase>,
    /// The mode this restore runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RestoreMode>,
    /// The database restored into (Beside): the StatefulSet, database or
    /// Cluster the FoodApp uses after the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The database the switch replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousDatabase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discarded: Option<Discarded>,
    /// How long writes were refused during the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_pause_seconds: Option<f64>,
    /// When the switch made the live database read-only (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes_paused_at: Option<String>,
    /// The object restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_key: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
