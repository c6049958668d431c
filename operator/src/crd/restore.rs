//! `FoodAppRestore`: restore a FoodApp's database from a backup, in place.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::JobPhase;

/// Restore a FoodApp's database from one backup. The operator stops the API,
/// restores in one transaction (all or nothing), runs the migrations and
/// brings the API back.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "foodapp.io",
    version = "v1alpha1",
    kind = "FoodAppRestore",
    doc = "Restores a FoodApp's database in place from one backup.",
    derive = "Default",
    validation = Rule::new("self.spec == oldSelf.spec").message("a FoodAppRestore's spec cannot be changed; create a new one"),
    validation = Rule::new("self.metadata.name.size() <= 55 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("a FoodAppRestore name must be a DNS label of at most 55 characters (its Jobs are named <name>-restore and <name>-migrate)"),
    validation = Rule::new("(has(self.spec.backupRef) ? 1 : 0) + (has(self.spec.objectKey) ? 1 : 0) + (has(self.spec.latest) && self.spec.latest ? 1 : 0) + (has(self.spec.targetTime) ? 1 : 0) == 1").message("give exactly one of backupRef, objectKey, latest: true or targetTime"),
    namespaced,
    shortname = "far",
    status = "FoodAppRestoreStatus",
    printcolumn(name = "FoodApp", type_ = "string", json_path = ".spec.foodAppRef"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Object", type_ = "string", json_path = ".status.objectKey"),
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
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FoodAppRestoreStatus {
    /// Pending, Running, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<JobPhase>,
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
