//! `FoodApp`: one food business — database, API, gateway and backups.

use std::collections::BTreeMap;

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
    validation = Rule::new("oldSelf.hasValue() || !has(self.spec.database) || !has(self.spec.database.engine) || self.spec.database.engine != 'CloudNativePG' || self.metadata.name.size() <= 37").optional_old_self(true).message("a FoodApp with engine CloudNativePG has a name of at most 37 characters: CloudNativePG names the recovery Job of a restored Cluster <name>-db-<6 hex>-1-full-recovery, which must fit in 63"),
    validation = Rule::new(NAME_RULE).message("a FoodApp name must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter, ending with a letter or digit, no dots): it becomes the name of its Services"),
    validation = Rule::new("!has(oldSelf.spec.api.adminSecret) || (has(self.spec.api.adminSecret) && self.spec.api.adminSecret == oldSelf.spec.api.adminSecret)").message("spec.api.adminSecret cannot be changed after creation: the first administrator is created once"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "API image", type_ = "string", json_path = ".spec.api.image"),
    printcolumn(name = "PostgreSQL", type_ = "integer", json_path = ".status.databaseMajor"),
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
    /// NetworkPolicies: the database takes connections only from the API,
    /// migration, backup and restore pods; the API only from the gateway
    /// and metrics scrapers.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
    /// When changes that only a new operator version brings (not a change
    /// of this spec) may restart the database, API and gateway pods. Leave
    /// out to hold them until `applyImmediately` or a window is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceSpec>,
}

/// A weekly maintenance window for rollouts the operator itself brings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceSpec {
    /// `DAYS HH:MM-HH:MM` in `timeZone`: `Sun 03:00-05:00`,
    /// `Mon-Fri 22:00-23:30`, `Sat,Sun 01:00-03:00`, `daily 02:00-02:30`.
    /// An end not after the start runs past midnight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new(concat!("self.matches('", r"^(daily|(Mon|Tue|Wed|Thu|Fri|Sat|Sun)(-(Mon|Tue|Wed|Thu|Fri|Sat|Sun))?(,(Mon|Tue|Wed|Thu|Fri|Sat|Sun)(-(Mon|Tue|Wed|Thu|Fri|Sat|Sun))?)*) ([01][0-9]|2[0-3]):[0-5][0-9]-(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$", "')")).message("maintenance.window must be `DAYS HH:MM-HH:MM`, e.g. `Sun 03:00-05:00` or `Mon-Fri 22:00-23:30` or `daily 02:00-02:30`"))]
    pub window: Option<String>,
    /// IANA time zone of the window (default UTC), e.g. `Europe/Berlin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Apply such changes as soon as the operator sees them.
    #[serde(default)]
    pub apply_immediately: bool,
}

/// A HorizontalPodAutoscaler needs a CPU request to compute utilization.
const AUTOSCALING_NEEDS_CPU: &str = "!has(self.autoscaling) || (has(self.resources) && has(self.resources.requests) && 'cpu' in self.resources.requests)";

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(AUTOSCALING_NEEDS_CPU).message("api.autoscaling needs api.resources.requests.cpu: utilization is measured against the request"))]
pub struct ApiSpec {
    /// Container image of foodapp-api. Changing it runs the migrations of the
    /// new image first; the running API keeps serving until they succeed.
    #[serde(default = "default_api_image")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("api.image must name a container image"))]
    pub image: String,
    /// Number of API pods (ignored while `autoscaling` is set).
    #[serde(default = "two")]
    #[x_kube(validation = Rule::new("self >= 1").message("api.replicas must be at least 1"))]
    pub replicas: i32,
    /// Scale the API with a HorizontalPodAutoscaler on CPU; the operator
    /// then leaves `replicas` of the Deployment to it. Needs
    /// `resources.requests.cpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
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
            autoscaling: None,
            resources: None,
            auto_reject_after: default_auto_reject(),
            env: Vec::new(),
            admin_secret: None,
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.engine == oldSelf.engine").message("database.engine cannot change on a live FoodApp: back up, then restore into a new FoodApp that uses the other engine (see the README)"))]
#[x_kube(validation = Rule::new("self.engine == 'External' ? has(self.external) : !has(self.external)").message("database.external is required with engine External, and only allowed with it"))]
#[x_kube(validation = Rule::new("self.engine == 'CloudNativePG' || !has(self.cloudNativePG)").message("database.cloudNativePG is only allowed with engine CloudNativePG"))]
pub struct DatabaseSpec {
    /// Where the data lives: BuiltIn (the operator's own PostgreSQL
    /// StatefulSet), CloudNativePG (a `postgresql.cnpg.io/v1` Cluster) or
    /// External (a managed PostgreSQL named by a Secret). Fixed at creation.
    #[serde(default)]
    pub engine: Engine,
    /// BuiltIn: the PostgreSQL server image (major versions 13 to 18).
    #[serde(default = "default_postgres_image")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("database.image must name a container image"))]
    pub image: String,
    /// The volume holding the data.
    #[serde(default)]
    pub storage: StorageSpec,
    /// CPU and memory for each database pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// CloudNativePG: the Cluster's size and image.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "cloudNativePG"
    )]
    pub cloud_native_pg: Option<CloudNativePgSpec>,
    /// External: the Secret that says where the database is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalDatabase>,
    /// BuiltIn: how an image of a newer PostgreSQL major upgrades the data
    /// (a major older than the data's is refused, the database untouched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<DatabaseUpgradeSpec>,
}

/// A PostgreSQL major upgrade of the built-in database.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseUpgradeSpec {
    /// Beside (default): a verified backup restored into a second database
    /// of the new major while the shop keeps serving, migrated, switched to
    /// in seconds, the old one kept for `revert`. InPlace: `pg_upgrade
    /// --link` on the live volume while the shop is closed (minutes; no
    /// second volume; undone only by restoring the backup).
    #[serde(default)]
    pub method: UpgradeMethod,
    /// InPlace without a backup first (refused unless set when no
    /// `spec.backup` is configured). Beside always moves the data through
    /// a verified backup.
    #[serde(default)]
    pub without_backup: bool,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum UpgradeMethod {
    #[default]
    Beside,
    InPlace,
}

impl Default for DatabaseSpec {
    fn default() -> Self {
        DatabaseSpec {
            engine: Engine::default(),
            image: default_postgres_image(),
            storage: StorageSpec::default(),
            resources: None,
            cloud_native_pg: None,
            external: None,
            upgrade: None,
        }
    }
}

impl DatabaseSpec {
    /// CloudNativePG settings, defaulted when left out.
    pub fn cnpg(&self) -> CloudNativePgSpec {
        self.cloud_native_pg.clone().unwrap_or_default()
    }
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum Engine {
    /// The operator's own one-pod PostgreSQL StatefulSet, with pg_dump backups.
    #[default]
    BuiltIn,
    /// A CloudNativePG Cluster: replicas, failover, WAL archiving and
    /// point-in-time recovery, run by the CloudNativePG operator.
    CloudNativePG,
    /// A PostgreSQL outside the cluster (a managed service).
    External,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CloudNativePgSpec {
    /// PostgreSQL instances: one primary, the rest streaming replicas on
    /// other nodes.
    #[serde(default = "three")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 10").message("database.cloudNativePG.instances must be between 1 and 10"))]
    pub instances: i32,
    /// CloudNativePG operand image (e.g. ghcr.io/cloudnative-pg/postgresql:17);
    /// CloudNativePG's default when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new("self.matches('^[^@]+:[0-9][^:/@]*(@sha256:[0-9a-f]{64})?$')").message("database.cloudNativePG.imageName needs a tag that starts with the PostgreSQL version, such as ghcr.io/cloudnative-pg/postgresql:17.5: CloudNativePG refuses latest, no tag and a digest alone (it could not tell upgrades)"))]
    pub image_name: Option<String>,
    /// How long base backups and WAL are kept in the bucket (CloudNativePG
    /// retention policy, such as 30d, 4w or 3m).
    #[serde(default = "default_cnpg_retention")]
    #[x_kube(validation = Rule::new("self.matches('^[1-9][0-9]*[dwm]$')").message("database.cloudNativePG.retention must be a number of days, weeks or months, such as 30d"))]
    pub retention: String,
    /// The namespace the CloudNativePG operator runs in: the only one whose
    /// pods may reach the instances' status port and PostgreSQL besides the
    /// FoodApp's own (NetworkPolicy).
    #[serde(default = "default_cnpg_namespace")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && self.size() <= 63").message("database.cloudNativePG.operatorNamespace must be a namespace name"))]
    pub operator_namespace: String,
}

impl Default for CloudNativePgSpec {
    fn default() -> Self {
        CloudNativePgSpec {
            instances: three(),
            image_name: None,
            retention: default_cnpg_retention(),
            operator_namespace: default_cnpg_namespace(),
        }
    }
}

fn default_cnpg_namespace() -> String {
    "cnpg-system".to_owned()
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExternalDatabase {
    /// A Secret in the FoodApp's namespace with keys `host`, `port`
    /// (default 5432), `database`, `user`, `password` and `sslmode`
    /// (default require). The user should own the database's schema and
    /// need not be a superuser.
    #[x_kube(validation = Rule::new("self.size() > 0").message("database.external.secretName must name a Secret"))]
    pub secret_name: String,
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
#[x_kube(validation = Rule::new(AUTOSCALING_NEEDS_CPU).message("gateway.autoscaling needs gateway.resources.requests.cpu: utilization is measured against the request"))]
#[x_kube(validation = Rule::new("!has(self.externalTrafficPolicy) || self.serviceType != 'ClusterIP'").message("gateway.externalTrafficPolicy needs serviceType LoadBalancer or NodePort"))]
#[x_kube(validation = Rule::new("!has(self.proxyProtocol) || !self.proxyProtocol || (has(self.trustedProxies) && size(self.trustedProxies) > 0)").message("gateway.proxyProtocol needs gateway.trustedProxies, the load balancer's addresses: a PROXY header from anyone else would forge the client's address past the rate limits"))]
pub struct GatewaySpec {
    /// nginx image.
    #[serde(default = "default_nginx_image")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("gateway.image must name a container image"))]
    pub image: String,
    /// Number of gateway pods (ignored while `autoscaling` is set).
    #[serde(default = "two")]
    #[x_kube(validation = Rule::new("self >= 1").message("gateway.replicas must be at least 1"))]
    pub replicas: i32,
    /// Scale the gateway with a HorizontalPodAutoscaler on CPU. Needs
    /// `resources.requests.cpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// How the gateway is exposed: ClusterIP, LoadBalancer or NodePort.
    #[serde(default)]
    pub service_type: ServiceType,
    /// Annotations for the gateway Service, passed through as they are
    /// (cloud load balancer settings, for example).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_annotations: BTreeMap<String, String>,
    /// Cluster (default) or Local: Local keeps the client's address by
    /// sending traffic only to nodes that run a gateway pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<TrafficPolicy>,
    /// The load balancer speaks the PROXY protocol (v1 or v2) to the
    /// gateway, which takes the client's address from it. Adds the
    /// DigitalOcean annotation that turns it on at the load balancer.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Addresses or CIDR blocks (the load balancer's) whose PROXY protocol
    /// header, X-Forwarded-For and X-Forwarded-Proto are believed. Required
    /// with `proxyProtocol`; without it, none is trusted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 43)))]
    #[x_kube(validation = Rule::new(concat!("self.all(p, p.matches('", r"^([0-9]{1,3}\\.){3}[0-9]{1,3}(/([0-9]|[12][0-9]|3[0-2]))?$", "') || p.matches('", r"^[0-9a-fA-F:.]*:[0-9a-fA-F:.]*(/([0-9]|[1-9][0-9]|1[01][0-9]|12[0-8]))?$", "'))")).message("gateway.trustedProxies entries must be IP addresses or CIDR blocks such as 10.110.0.0/20"))]
    pub trusted_proxies: Vec<String>,
    /// HTTPS at the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
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
            autoscaling: None,
            service_type: ServiceType::default(),
            service_annotations: BTreeMap::new(),
            external_traffic_policy: None,
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
            tls: None,
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

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

impl TrafficPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficPolicy::Cluster => "Cluster",
            TrafficPolicy::Local => "Local",
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.maxReplicas >= self.minReplicas").message("autoscaling.maxReplicas must be at least minReplicas"))]
pub struct Autoscaling {
    /// Fewest pods.
    #[serde(default = "two")]
    #[x_kube(validation = Rule::new("self >= 1").message("autoscaling.minReplicas must be at least 1"))]
    pub min_replicas: i32,
    /// Most pods.
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("autoscaling.maxReplicas must be between 1 and 100"))]
    pub max_replicas: i32,
    /// Average CPU use, as a percentage of the request, the autoscaler aims at.
    #[serde(default = "default_cpu_target")]
    #[x_kube(validation = Rule::new("self >= 10 && self <= 100").message("autoscaling.targetCPUUtilizationPercentage must be between 10 and 100"))]
    #[serde(rename = "targetCPUUtilizationPercentage")]
    pub target_cpu_utilization_percentage: i32,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretName) != has(self.issuerRef)").message("gateway.tls needs exactly one of secretName or issuerRef"))]
#[x_kube(validation = Rule::new("!has(self.issuerRef) || (has(self.dnsNames) && size(self.dnsNames) > 0)").message("gateway.tls.dnsNames must name the host(s) the certificate is for when issuerRef is set"))]
pub struct TlsSpec {
    /// A `kubernetes.io/tls` Secret (keys tls.crt and tls.key) in the
    /// FoodApp's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// A cert-manager issuer: the operator creates a `cert-manager.io/v1`
    /// Certificate for `dnsNames`, stored in the Secret `<name>-gateway-tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
    /// Host names the certificate covers (cert-manager).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
    /// Answer plain HTTP with a permanent redirect to HTTPS (default true).
    #[serde(default = "yes")]
    pub redirect_http: bool,
    /// Strict-Transport-Security.
    #[serde(default)]
    pub hsts: Hsts,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.group != 'cert-manager.io' || self.kind == 'Issuer' || self.kind == 'ClusterIssuer'").message("gateway.tls.issuerRef.kind must be Issuer or ClusterIssuer (an external issuer names its own group)"))]
pub struct IssuerRef {
    /// Name of the issuer.
    #[x_kube(validation = Rule::new("self.size() > 0").message("gateway.tls.issuerRef.name must name an issuer"))]
    pub name: String,
    /// Issuer (same namespace) or ClusterIssuer; an external issuer's own
    /// kind (with its `group`).
    #[serde(default = "default_issuer_kind")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Z][A-Za-z0-9]*$')").message("gateway.tls.issuerRef.kind must be a kind such as ClusterIssuer"))]
    pub kind: String,
    /// The issuer's API group: cert-manager.io (default), or that of an
    /// external issuer (such as awspca.cert-manager.io).
    #[serde(default = "default_issuer_group")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("gateway.tls.issuerRef.group must be an API group such as cert-manager.io"))]
    pub group: String,
}

fn default_issuer_group() -> String {
    "cert-manager.io".to_owned()
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Hsts {
    /// max-age in seconds; 0 sends no header.
    #[serde(default = "default_hsts_max_age")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 63072000").message("gateway.tls.hsts.maxAgeSeconds must be between 0 and 63072000 (two years)"))]
    pub max_age_seconds: i64,
    #[serde(default)]
    pub include_subdomains: bool,
    #[serde(default)]
    pub preload: bool,
}

impl Default for Hsts {
    fn default() -> Self {
        Hsts {
            max_age_seconds: default_hsts_max_age(),
            include_subdomains: false,
            preload: false,
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicies (default true). They take effect only
    /// where the cluster's network plugin enforces them.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Namespaces whose pods may scrape the API's /metrics, by their
    /// labels (default: namespaces labelled `foodapp.io/metrics: "true"`).
    #[serde(default = "default_metrics_namespace_labels")]
    #[x_kube(validation = Rule::new("size(self) > 0").message("networkPolicy.metricsNamespaceLabels must name at least one label: an empty selector is every namespace (turn scraping off with a label no namespace has)"))]
    pub metrics_namespace_labels: BTreeMap<String, String>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        NetworkPolicySpec {
            enabled: true,
            metrics_namespace_labels: default_metrics_namespace_labels(),
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
    /// Pending, Provisioning, Migrating, Ready, Degraded, Restoring or Upgrading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// DatabaseReady, MigrationsComplete, ApiReady, GatewayReady, BackupScheduled, Ready, RolloutPending, DatabaseUpgrade and Conflict.
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
    /// Pod-template changes a new operator version brings, waiting for the
    /// maintenance window (condition RolloutPending).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_rollouts: Vec<PendingRollout>,
    /// BuiltIn: the PostgreSQL major of the data directory (its
    /// `PG_VERSION`, as the database pod's `prepare` step reported it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_major: Option<i32>,
    /// BuiltIn: the image the database runs. It differs from
    /// `spec.database.image` while an upgrade to a new major runs or was
    /// refused (condition DatabaseUpgrade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_image: Option<String>,
    /// The PostgreSQL major upgrade in progress, or the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_upgrade: Option<DatabaseUpgradeStatus>,
}

/// A PostgreSQL major upgrade the operator runs for `spec.database.image`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseUpgradeStatus {
    /// This attempt's name: its FoodAppBackup, FoodAppRestore and Jobs.
    #[serde(default)]
    pub name: String,
    pub from: i32,
    pub to: i32,
    /// The image upgraded to.
    pub image: String,
    pub method: UpgradeMethod,
    pub phase: UpgradePhase,
    /// The FoodAppBackup taken first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// The FoodAppRestore that moves the data (Beside) or runs pg_upgrade
    /// (InPlace); `revert` it to undo a Beside upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpgradePhase {
    /// Beside: the live database stops taking writes (reads go on), so
    /// that the backup holds every order.
    PausingWrites,
    /// The verified backup is being taken.
    BackingUp,
    /// The FoodAppRestore runs (Beside: restore, verify, migrate, switch;
    /// InPlace: pg_upgrade).
    Upgrading,
    Succeeded,
    Failed,
    /// The upgrade's restore was reverted: the data is back on the old
    /// major, and the operator does not try this image again.
    Reverted,
}

/// One workload whose pods a new operator version would restart.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PendingRollout {
    /// StatefulSet or Deployment.
    pub kind: String,
    pub name: String,
    /// The pod-template fields that would change (JSON paths, at most 8).
    pub changes: Vec<String>,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Provisioning,
    Migrating,
    Ready,
    Degraded,
    Restoring,
    /// A PostgreSQL major upgrade runs (Beside: the shop keeps serving).
    Upgrading,
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
fn three() -> i32 {
    3
}
fn default_cpu_target() -> i32 {
    70
}
fn default_cnpg_retention() -> String {
    "30d".into()
}
fn default_issuer_kind() -> String {
    "ClusterIssuer".into()
}
fn default_hsts_max_age() -> i64 {
    31_536_000
}
fn default_metrics_namespace_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("foodapp.io/metrics".to_owned(), "true".to_owned())])
}
