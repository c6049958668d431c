//! `FoodAppBackup`: one backup. The backup agent records one after each
//! scheduled run; a user creates one (source OnDemand) to back up now, which
//! the operator runs as a Job.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// One backup of a FoodApp's database in its S3 bucket.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "foodapp.io",
    version = "v1alpha1",
    kind = "FoodAppBackup",
    doc = "One backup of a FoodApp's database in its S3 bucket; create one to back up now.",
    derive = "Default",
    validation = Rule::new("self.spec == oldSelf.spec").message("a FoodAppBackup's spec cannot be changed; create a new one"),
    validation = Rule::new("self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("a FoodAppBackup name must be a DNS label of at most 63 characters (an on-demand backup runs as a Job of that name)"),
    namespaced,
    shortname = "fab",
    status = "FoodAppBackupStatus",
    printcolumn(name = "FoodApp", type_ = "string", json_path = ".spec.foodAppRef"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".status.sizeBytes"),
    printcolumn(name = "Verified", type_ = "boolean", json_path = ".status.verified"),
    printcolumn(name = "Completed", type_ = "date", json_path = ".status.completedAt"),
    printcolumn(
        name = "Object",
        type_ = "string",
        priority = 1,
        json_path = ".status.objectKey"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct FoodAppBackupSpec {
    /// Name of the FoodApp (same namespace) to back up.
    #[x_kube(validation = Rule::new("self.size() > 0").message("spec.foodAppRef must name a FoodApp"))]
    pub food_app_ref: String,
    /// Scheduled (recorded by the backup CronJob) or OnDemand (the operator
    /// runs it as a Job). Users create OnDemand backups, the default.
    #[serde(default)]
    pub source: BackupSource,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum BackupSource {
    #[default]
    OnDemand,
    Scheduled,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FoodAppBackupStatus {
    /// Pending, Running, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<JobPhase>,
    /// Key of the dump in the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// SHA-256 of the dump, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// Whether the dump was restored into a scratch database and its row
    /// counts matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// Why the backup failed, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the backup failed, as a CamelCase reason (for alerts and metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Lifecycle of a backup or restore.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
}
