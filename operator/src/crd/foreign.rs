//! Kinds of other projects the operator creates: CloudNativePG's `Cluster`
//! and `ScheduledBackup` (`postgresql.cnpg.io/v1`, and reads its `Backup`),
//! the Barman Cloud Plugin's `ObjectStore` (`barmancloud.cnpg.io/v1`) and
//! cert-manager's `Certificate` (`cert-manager.io/v1`). Only the fields the operator sets
//! or reads are modelled; their CRDs belong to those projects, so none is
//! generated here (`schema = "disabled"`). A test checks every object the
//! builders make against CloudNativePG's own CRDs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

pub const CNPG_API_VERSION: &str = "postgresql.cnpg.io/v1";

/// A CloudNativePG PostgreSQL cluster.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "postgresql.cnpg.io",
    version = "v1",
    kind = "Cluster",
    plural = "clusters",
    namespaced,
    status = "ClusterStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    pub instances: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_superuser_access: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<ClusterStorage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<ClusterAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<Bootstrap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<ClusterBackup>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_clusters: Vec<ExternalCluster>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherited_metadata: Option<InheritedMetadata>,
    /// The plugins the Cluster loads: the Barman Cloud Plugin archives WAL
    /// and takes base backups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginConfiguration>,
    #[serde(default, rename = "enablePDB", skip_serializing_if = "Option::is_none")]
    pub enable_pdb: Option<bool>,
}

/// A plugin of a Cluster (`spec.plugins[]`) or of an external cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PluginConfiguration {
    pub name: String,
    #[serde(
        default,
        rename = "isWALArchiver",
        skip_serializing_if = "Option::is_none"
    )]
    pub is_wal_archiver: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStorage {
    pub size: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAffinity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_pod_anti_affinity: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_anti_affinity_type: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Bootstrap {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initdb: Option<InitDb>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recovery>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InitDb {
    pub database: String,
    pub owner: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Recovery {
    pub source: String,
    pub database: String,
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_target: Option<RecoveryTarget>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryTarget {
    /// RFC 3339 time to recover to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_time: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterBackup {
    pub barman_object_store: BarmanObjectStore,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_policy: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BarmanObjectStore {
    pub destination_path: String,
    #[serde(
        default,
        rename = "endpointURL",
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    pub s3_credentials: S3Credentials,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<Compression>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Compression>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Credentials {
    pub access_key_id: SecretKeyRef,
    pub secret_access_key: SecretKeyRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<SecretKeyRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Compression {
    pub compression: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalCluster {
    pub name: String,
    /// The in-tree archive (the previous release; CloudNativePG < 1.31).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barman_object_store: Option<BarmanObjectStore>,
    /// The archive through the Barman Cloud Plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginConfiguration>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct InheritedMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    #[serde(default)]
    pub instances: Option<i32>,
    #[serde(default)]
    pub ready_instances: Option<i32>,
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub current_primary: Option<String>,
    #[serde(default)]
    pub first_recoverability_point: Option<String>,
    #[serde(default)]
    pub last_successful_backup: Option<String>,
    /// `ContinuousArchiving`, `LastBackupSucceeded`, `Ready`, …
    #[serde(default)]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    /// Bumped for every instance made; the first is 1.
    #[serde(default)]
    pub latest_generated_node: Option<i32>,
    /// The plugins CloudNativePG loaded for the Cluster.
    #[serde(default)]
    pub plugin_status: Vec<PluginStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct PluginStatus {
    pub name: String,
}

/// `Cluster.status.phase` when a plugin the Cluster names is not
/// registered with CloudNativePG (`PhaseUnknownPlugin`, api/v1/cluster_types.go).
pub const PHASE_UNKNOWN_PLUGIN: &str =
    "Cluster cannot proceed to reconciliation due to an unknown plugin being required";

/// A CloudNativePG backup schedule.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "postgresql.cnpg.io",
    version = "v1",
    kind = "ScheduledBackup",
    plural = "scheduledbackups",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledBackupSpec {
    /// Six fields: CloudNativePG's schedules start with seconds.
    pub schedule: String,
    pub cluster: LocalRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immediate: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_owner_reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_configuration: Option<BackupPluginConfiguration>,
}

/// The plugin that takes a (scheduled) backup with `method: plugin`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct BackupPluginConfiguration {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct LocalRef {
    pub name: String,
}

/// A base backup CloudNativePG took (read only: its schedule makes them).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "postgresql.cnpg.io",
    version = "v1",
    kind = "Backup",
    plural = "backups",
    namespaced,
    status = "BackupStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct CnpgBackupSpec {
    pub cluster: LocalRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// `completed`, `failed`, `running`, …
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub stopped_at: Option<String>,
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

pub const BARMAN_CLOUD_API_VERSION: &str = "barmancloud.cnpg.io/v1";

/// The Barman Cloud Plugin's object store: where a FoodApp's Clusters
/// archive WAL and base backups (each under its own `serverName`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "barmancloud.cnpg.io",
    version = "v1",
    kind = "ObjectStore",
    plural = "objectstores",
    namespaced,
    status = "ObjectStoreStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStoreSpec {
    pub configuration: BarmanObjectStore,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_policy: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStoreStatus {
    /// Per `serverName`: what can be recovered.
    #[serde(default)]
    pub server_recovery_window: BTreeMap<String, RecoveryWindow>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryWindow {
    #[serde(default)]
    pub first_recoverability_point: Option<String>,
    #[serde(default)]
    pub last_successful_backup_time: Option<String>,
    #[serde(default)]
    pub last_failed_backup_time: Option<String>,
}

/// A cert-manager certificate.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "cert-manager.io",
    version = "v1",
    kind = "Certificate",
    plural = "certificates",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSpec {
    pub secret_name: String,
    pub dns_names: Vec<String>,
    pub issuer_ref: CertIssuerRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CertIssuerRef {
    pub name: String,
    pub kind: String,
    pub group: String,
}
