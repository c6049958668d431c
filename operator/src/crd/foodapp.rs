//! `FoodApp`: one food business — database, API, gateway and backups.

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub const DEFAULT_API_IMAGE: &str = "ghcr.io/foodapp/foodapp-api:0.1.0";
pub const DEFAULT_OPERATOR_IMAGE: &str = "ghcr.io/foodapp/foodapp-operator:0.1.0";

/// A DNS-1035 label: what a Service name must be.
pub const NAME_RULE: &str = "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')";

/// A FoodApp: the operator runs its PostgreSQL, the migration Job that gates
/// each API rollout, the ordering API, the nginx gateway and scheduled backups.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "foodapp.io",
    version = "v1alpha1",
    kind = "FoodApp",
    doc = "A FoodApp: PostgreSQL, migrations, the ordering API, the nginx gateway and backups, run by the FoodApp operator.",
    derive = "Default",
    namespaced,
    shortname = "fa",
    status = "FoodAppStatus",
    validation = Rule::new("self.metadata.name.size() <= 40").message("a FoodApp name has at most 40 characters: the names of its objects are derived from it"),
    validation = Rule::new(NAME_RULE).message("a FoodApp name must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter, ending with a letter or digit, no dots): it becomes the name of its Services"),
    validation = Rule::new("!has(oldSelf.spec.api.adminSecret) || (has(self.spec.api.adminSecret) && self.spec.api.adminSecret == oldSelf.spec.api.adminSecret)").message("spec.api.adminSecret cannot be changed after creation: the first administrator is created once"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "API image", type_ = "string", json_path = ".spec.api.image"),
    printcolumn(name = "Gateway", type_ = "string", json_path = ".status.gatewayEndpoint"),
    printcolumn(name = "Last backup", type_ = "date", json_path = ".status.lastBackup.completedAt"),
    printcolumn(name = "Admin secret", type_ = "string", json_path = ".status.adminSecret"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct FoodAppSpec {
    /// The ordering API.
    #[serde(default)]
    pub api: ApiSpec,
    /// The PostgreSQL database.
    #[serde(default)]
    pub database: DatabaseSpec,
    /// The nginx gateway in front of the API: the only public entry point.
    #[serde(default)]
    pub gateway: GatewaySpec,
    /// Scheduled pg_dump backups to S3 or DigitalOcean Spaces. Leave out for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
    /// What happens to the database volume when the FoodApp is deleted:
    /// Retain (default) keeps the data, Delete removes it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiSpec {
    /// Container image of foodapp-api. Changing it runs the migrations of the
    /// new image first; the running API keeps serving until they succeed.
    #[serde(default = "default_api_image")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("api.image must name a container image"))]
    pub image: String,
    /// Number of API pods.
    #[serde(default = "two")]
    #[x_kube(validation = Rule::new("self >= 1").message("api.replicas must be at least 1"))]
    pub replicas: i32,
    /// CPU and memory for each API pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Placed orders not accepted within this time are rejected automatically
    /// (for example 90s, 5m, 1h).
    #[serde(default = "default_auto_reject")]
    #[x_kube(validation = Rule::new("self.matches('^[1-9][0-9]*(s|m|h)$')").message("api.autoRejectAfter must be a whole number of seconds, minutes or hours, such as 90s, 5m or 1h"))]
    pub auto_reject_after: String,
    /// Extra environment variables for the API container. A name the
    /// operator also sets (such as RUST_LOG) replaces the operator's value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<EnvVar>,
    /// A Secret in the FoodApp's namespace with keys `email` and `password`
    /// for the first administrator. Left out, the operator generates
    /// `<name>-admin` (read it with `kubectl get secret <name>-admin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_secret: Option<String>,
}

impl Default for ApiSpec {
    fn default() -> Self {
        ApiSpec {
            image: default_api_image(),
            replicas: 2,
            resources: None,
            auto_reject_after: default_auto_reject(),
            env: Vec::new(),
            admin_secret: None,
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// PostgreSQL server image (major versions 13 to 18 are supported).
    #[serde(default = "default_postgres_image")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("database.image must name a container image"))]
    pub image: String,
    /// The volume holding the data.
    #[serde(default)]
    pub storage: StorageSpec,
    /// CPU and memory for the database pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for DatabaseSpec {
    fn default() -> Self {
        DatabaseSpec {
            image: default_postgres_image(),
            storage: StorageSpec::default(),
            resources: None,
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(oldSelf.storageClassName) || (has(self.storageClassName) && self.storageClassName == oldSelf.storageClassName)").message("database.storage.storageClassName cannot be changed after creation"))]
pub struct StorageSpec {
    /// Size of the data volume, e.g. 10Gi. It can grow (when the storage
    /// class allows expansion) but never shrink.
    #[serde(default = "default_storage_size")]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("database.storage.size must be a positive quantity such as 10Gi"))]
    #[x_kube(validation = Rule::new("!isQuantity(oldSelf) || !isQuantity(self) || quantity(self).compareTo(quantity(oldSelf)) >= 0").message("database.storage.size cannot shrink: volumes can only grow"))]
    pub size: String,
    /// Storage class of the volume; the cluster default when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// nginx image.
    #[serde(default = "default_nginx_image")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("gateway.image must name a container image"))]
    pub image: String,
    /// Number of gateway pods.
    #[serde(default = "two")]
    #[x_kube(validation = Rule::new("self >= 1").message("gateway.replicas must be at least 1"))]
    pub replicas: i32,
    /// How the gateway is exposed: ClusterIP, LoadBalancer or NodePort.
    #[serde(default)]
    pub service_type: ServiceType,
    /// Requests per second allowed from one client address.
    #[serde(default)]
    pub rate_limit: RateLimit,
    /// CPU and memory for each gateway pod; nginx runs one worker process
    /// per CPU of the limit (or request), two when neither is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for GatewaySpec {
    fn default() -> Self {
        GatewaySpec {
            image: default_nginx_image(),
            replicas: 2,
            service_type: ServiceType::default(),
            rate_limit: RateLimit::default(),
            resources: None,
        }
    }
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    LoadBalancer,
    NodePort,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::LoadBalancer => "LoadBalancer",
            ServiceType::NodePort => "NodePort",
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.burst >= self.requestsPerSecond").message("gateway.rateLimit.burst must be at least requestsPerSecond"))]
pub struct RateLimit {
    /// Sustained requests per second per client address.
    #[serde(default = "default_rps")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100000").message("gateway.rateLimit.requestsPerSecond must be between 1 and 100000"))]
    pub requests_per_second: i32,
    /// Requests a client may send in a burst above that rate.
    #[serde(default = "default_burst")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100000").message("gateway.rateLimit.burst must be between 1 and 100000"))]
    pub burst: i32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            requests_per_second: default_rps(),
            burst: default_burst(),
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// When to back up, as a 5-field cron expression in UTC (minute hour
    /// day-of-month month day-of-week), e.g. "0 3 * * *".
    #[serde(default = "default_schedule")]
    #[x_kube(validation = Rule::new(CRON_RULE).message("backup.schedule must be a 5-field cron expression such as \"0 3 * * *\" (minute hour day-of-month month day-of-week)"))]
    pub schedule: String,
    /// Pause scheduled backups without removing them.
    #[serde(default)]
    pub suspend: bool,
    /// How many backups to keep.
    #[serde(default)]
    pub retention: Retention,
    /// Restore each new backup into a scratch database and compare row counts.
    #[serde(default = "yes")]
    pub verify: bool,
    /// Where backups go.
    pub s3: S3Spec,
}

/// One cron field: `*`, a number, a range or a list, each optionally with a step.
pub const CRON_RULE: &str = "self.matches('^\\\\s*([0-9*,/-]+)\\\\s+([0-9*,/-]+)\\\\s+([0-9*,/?LW-]+)\\\\s+([0-9A-Za-z*,/-]+)\\\\s+([0-9A-Za-z*,/?L#-]+)\\\\s*$')";

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep this many newest backups; older ones are deleted from the bucket.
    #[serde(default = "default_keep_last")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("backup.retention.keepLast must be between 1 and 1000"))]
    pub keep_last: i32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_last: default_keep_last(),
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct S3Spec {
    /// S3 endpoint URL; leave out for AWS. DigitalOcean Spaces:
    /// https://<region>.digitaloceanspaces.com
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^\\\\s/]+(/.*)?$')").message("backup.s3.endpoint must be an http(s) URL such as https://fra1.digitaloceanspaces.com"))]
    pub endpoint: Option<String>,
    /// Region of the bucket (Spaces: the datacenter, e.g. fra1).
    #[serde(default = "default_region")]
    pub region: String,
    /// Bucket name.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$') && !self.contains('..')").message("backup.s3.bucket must be a valid bucket name: 3-63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit"))]
    pub bucket: String,
    /// Key prefix inside the bucket.
    #[serde(default = "default_prefix")]
    #[x_kube(validation = Rule::new("!self.startsWith('/') && !self.endsWith('/')").message("backup.s3.prefix must not start or end with '/'"))]
    pub prefix: String,
    /// Address buckets by path (MinIO and most self-hosted stores need it).
    #[serde(default)]
    pub force_path_style: bool,
    /// Secret in the FoodApp's namespace with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    #[x_kube(validation = Rule::new("self.size() > 0").message("backup.s3.credentialsSecret must name a Secret"))]
    pub credentials_secret: String,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum DeletionPolicy {
    /// Keep the database volume when the FoodApp is deleted.
    #[default]
    Retain,
    /// Delete the database volume with the FoodApp.
    Delete,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FoodAppStatus {
    /// Pending, Provisioning, Migrating, Ready, Degraded or Restoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// DatabaseReady, MigrationsComplete, ApiReady, GatewayReady, BackupScheduled and Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The API image whose migrations succeeded and that the API runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_image: Option<String>,
    /// Where the gateway is reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_endpoint: Option<String>,
    /// The newest successful backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<LastBackup>,
    /// The Secret holding the first administrator's `email` and `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_secret: Option<String>,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Provisioning,
    Migrating,
    Ready,
    Degraded,
    Restoring,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LastBackup {
    /// The FoodAppBackup.
    pub name: String,
    /// RFC 3339 time it completed.
    pub completed_at: String,
    pub size_bytes: i64,
}

fn default_api_image() -> String {
    DEFAULT_API_IMAGE.into()
}
fn default_postgres_image() -> String {
    "postgres:16".into()
}
fn default_nginx_image() -> String {
    "nginx:1.27".into()
}
fn default_storage_size() -> String {
    "10Gi".into()
}
fn default_auto_reject() -> String {
    "5m".into()
}
fn default_schedule() -> String {
    "0 3 * * *".into()
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_prefix() -> String {
    "foodapp".into()
}
fn two() -> i32 {
    2
}
fn yes() -> bool {
    true
}
fn default_rps() -> i32 {
    20
}
fn default_burst() -> i32 {
    40
}
fn default_keep_last() -> i32 {
    14
}
