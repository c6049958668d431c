//! Pure builders: from a validated `Model` to every object the controller
//! applies. No client, no async; `foodapp-operator render` prints the same.

pub mod api;
pub mod backup;
pub mod cnpg;
pub mod gateway;
pub mod migration;
pub mod network;
pub mod nginx;
pub mod postgres;
pub mod restore;
pub mod scaling;
pub mod secrets;
pub mod upgrade;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, PodSecurityContext, SeccompProfile, Secret, SecurityContext, Service,
    ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sha2::{Digest, Sha256};

use crate::crd::foreign::{Certificate, Cluster, ObjectStore, ScheduledBackup};
use crate::crd::{Engine, FoodAppSpec};

pub const MANAGER: &str = "foodapp-operator";
pub const PART_OF: &str = "foodapp";

/// Everything the builders need, already validated and dereferenced.
#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub spec: FoodAppSpec,
    /// Database password, as the database Secret holds it: its hash on the
    /// pod templates restarts the database and the API when it changes.
    pub db_password: String,
    /// Where the API connects, for the CloudNativePG and External engines
    /// (None: built in, or not known yet).
    pub connection: Option<Connection>,
    /// Access-token signing secret, as the API Secret holds it.
    pub jwt_secret: String,
    /// The Secret with the first administrator's `email` and `password`.
    pub admin_secret: String,
    /// The image the API Deployment runs now: the spec image once its
    /// migration Job succeeded, else the one already running. None: no
    /// Deployment yet (first migration still running).
    pub api_rollout_image: Option<String>,
    /// Whether the migration Job for the spec image is wanted now (the
    /// database is ready, or the Job already exists).
    pub run_migration: bool,
    /// The user's retry token for a failed migration (annotation
    /// `foodapp.io/retry-migration`): a new token is a new Job.
    pub migration_retry: Option<String>,
    /// A restore is in progress: the API is scaled to zero.
    pub restoring: bool,
    /// Engine CloudNativePG: the Cluster in use (`<name>-db`, or the one a
    /// point-in-time restore recovered).
    pub db_cluster: String,
    /// Engine CloudNativePG: the folder of the Cluster's archive in the
    /// object store (`cnpg::server_name`, or what the live Cluster records).
    pub db_server_name: String,
    /// Engine CloudNativePG: how the Cluster archives.
    pub cnpg_archive: cnpg::Archive,
    /// Engine External: the database a restore switched to (annotation
    /// `foodapp.io/database-name`), instead of the one the Secret names.
    pub external_database: Option<String>,
    /// A hash of the gateway's certificate as its Secret holds it now: a
    /// renewed certificate rolls the gateway (nginx reads it at start).
    pub tls_fingerprint: Option<String>,
    /// Image of the backup/restore agent (the operator's own image).
    pub agent_image: String,
    /// The FoodApp's `metadata.generation` (0 offline).
    pub generation: i64,
    /// An InPlace PostgreSQL upgrade runs pg_upgrade on the volume: the
    /// database StatefulSet has no pod.
    pub database_stopped: bool,
}

/// Set on a FoodApp by the FoodAppRestore that holds it: while set, no
/// migration runs and no other restore starts.
pub const RESTORE_ANNOTATION: &str = "foodapp.io/restore";

/// Set beside `foodapp.io/restore` by a restore that needs the API stopped
/// (InPlace): while set, the API is scaled to zero and the gateway answers
/// 503 maintenance. A Beside restore leaves the shop serving.
pub const API_STOPPED_ANNOTATION: &str = "foodapp.io/api-stopped";

/// Set on a FoodApp by the switch of a restore: the StatefulSet (BuiltIn)
/// or Cluster (CloudNativePG) the API uses since, when not `<name>-db`.
pub const DATABASE_CLUSTER_ANNOTATION: &str = "foodapp.io/database-cluster";

/// Set on a FoodApp by the switch of a restore on engine External: the
/// database on the external server the API uses since, when not the one
/// its Secret names.
pub const DATABASE_NAME_ANNOTATION: &str = "foodapp.io/database-name";

/// Set on a FoodApp a restore created as a clone: `<namespace>/<name>` of
/// the FoodApp it was cloned from, and the restore that made it.
pub const CLONED_FROM_ANNOTATION: &str = "foodapp.io/cloned-from";
pub const CLONED_BY_ANNOTATION: &str = "foodapp.io/cloned-by";

/// Set on the API's pod template once a restore switched databases: a new
/// value rolls the API onto the database it names.
pub const DATABASE_IN_USE_ANNOTATION: &str = "foodapp.io/database";

fn annotation<'a>(app: &'a crate::crd::FoodApp, key: &str) -> Option<&'a String> {
    app.metadata.annotations.as_ref()?.get(key)
}

/// Whether `value` names one of this FoodApp's own databases: `<name>-db`,
/// or a restore's `<name>-db-<6 hex>`. Anything else in the annotation is
/// ignored, so that writing it cannot point the FoodApp at another's.
pub fn is_own_database(app: &str, value: &str) -> bool {
    let base = names::db(app);
    value == base
        || value.strip_prefix(&format!("{base}-")).is_some_and(|id| {
            id.len() == 6
                && id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// The StatefulSet or CloudNativePG Cluster a FoodApp uses now.
pub fn db_cluster(app: &crate::crd::FoodApp) -> String {
    let name = app.metadata.name.as_deref().unwrap_or_default();
    annotation(app, DATABASE_CLUSTER_ANNOTATION)
        .filter(|v| is_own_database(name, v))
        .cloned()
        .unwrap_or_else(|| names::db(name))
}

/// Whether `value` is a PostgreSQL database name a restore may create.
pub fn is_database_name(value: &str) -> bool {
    let mut bytes = value.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && value.len() <= 63
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Engine External: the database a restore switched the FoodApp to.
pub fn external_database(app: &crate::crd::FoodApp) -> Option<String> {
    annotation(app, DATABASE_NAME_ANNOTATION)
        .filter(|v| is_database_name(v))
        .cloned()
}

/// Annotation a user sets (to any new value) to run a failed migration again.
pub const RETRY_MIGRATION_ANNOTATION: &str = "foodapp.io/retry-migration";

/// What a Model is made from besides the FoodApp: decided by the controller
/// from what it observed, or by `render` offline.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub db_password: String,
    pub connection: Option<Connection>,
    pub jwt_secret: String,
    pub api_rollout_image: Option<String>,
    pub run_migration: bool,
    pub restoring: bool,
    pub agent_image: String,
}

/// Why a FoodApp cannot become a Model.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelError {
    #[error("the FoodApp has no {0}; it was not read from the API server")]
    MissingMetadata(&'static str),
}

impl Model {
    /// The one constructor, shared by the controller and `render`.
    pub fn new(app: &crate::crd::FoodApp, inputs: Inputs) -> Result<Model, ModelError> {
        let meta = &app.metadata;
        let name = meta
            .name
            .clone()
            .ok_or(ModelError::MissingMetadata("name"))?;
        Ok(Model {
            admin_secret: app
                .spec
                .api
                .admin_secret
                .clone()
                .unwrap_or_else(|| names::admin_secret(&name)),
            namespace: meta
                .namespace
                .clone()
                .ok_or(ModelError::MissingMetadata("namespace"))?,
            uid: meta.uid.clone().ok_or(ModelError::MissingMetadata("uid"))?,
            migration_retry: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(RETRY_MIGRATION_ANNOTATION))
                .cloned(),
            name,
            spec: app.spec.clone(),
            db_cluster: db_cluster(app),
            db_server_name: cnpg::server_name(
                &db_cluster(app),
                meta.uid.as_deref().unwrap_or_default(),
            ),
            cnpg_archive: match app.spec.backup {
                Some(_) => cnpg::Archive::Plugin,
                None => cnpg::Archive::Off,
            },
            external_database: external_database(app),
            tls_fingerprint: None,
            db_password: inputs.db_password,
            connection: inputs.connection,
            jwt_secret: inputs.jwt_secret,
            api_rollout_image: inputs.api_rollout_image,
            run_migration: inputs.run_migration,
            restoring: inputs.restoring,
            agent_image: inputs.agent_image,
            generation: meta.generation.unwrap_or(0),
            database_stopped: false,
        })
    }

    /// Whether the operator generates the administrator Secret (the user
    /// did not name one).
    pub fn generates_admin_secret(&self) -> bool {
        self.spec.api.admin_secret.is_none()
    }

    pub fn migration_job_name(&self) -> String {
        names::migration_job(
            &self.name,
            &self.spec.api.image,
            self.migration_retry.as_deref(),
        )
    }
}

/// A database the operator does not run itself: what the API, the
/// migration Job and the backup agent connect to.
#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: String,
    pub sslmode: String,
}

impl Connection {
    /// A libpq/sqlx URL; every part is percent-encoded but the host.
    pub fn url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "postgres://{}:{}@{host}:{}/{}?sslmode={}",
            encode(&self.user),
            encode(&self.password),
            self.port,
            encode(&self.database),
            encode(&self.sslmode)
        )
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One object of each kind the controller applies. Applying destructures it
/// without `..`, so a new component cannot be forgotten.
#[derive(Debug, Clone)]
pub struct Desired {
    pub database: DatabaseObjects,
    pub migration_job: Option<Job>,
    pub api_deployment: Option<Deployment>,
    pub api_service: Service,
    pub api_scaling: Scaling,
    pub gateway_config: ConfigMap,
    pub gateway_deployment: Deployment,
    pub gateway_service: Service,
    pub gateway_scaling: Scaling,
    /// The cert-manager Certificate of the gateway, when an issuer is named.
    pub gateway_certificate: Option<Certificate>,
    pub network_policies: Vec<NetworkPolicy>,
    pub backup: Option<BackupObjects>,
    /// The inputs annotations a release before keyed hashes wrote for the
    /// same inputs (database, API): a live template that carries one was
    /// made from what is wanted now, so it waits for the window like any
    /// other change of the operator's own.
    pub legacy_inputs: LegacyInputs,
}

#[derive(Debug, Clone, Default)]
pub struct LegacyInputs {
    pub database: Option<String>,
    pub api: Option<String>,
}

/// The database objects of the FoodApp's engine.
#[derive(Debug, Clone)]
pub enum DatabaseObjects {
    BuiltIn {
        statefulset: Box<StatefulSet>,
        service: Box<Service>,
        headless_service: Box<Service>,
    },
    CloudNativePG {
        cluster: Box<Cluster>,
        /// With backups: where the Barman Cloud Plugin archives.
        object_store: Option<Box<ObjectStore>>,
        /// The Secret with DATABASE_URL, once CloudNativePG made the app login.
        connection: Option<Secret>,
    },
    External {
        connection: Option<Secret>,
    },
}

/// The autoscaler and disruption budget of a stateless component.
#[derive(Debug, Clone, Default)]
pub struct Scaling {
    pub hpa: Option<HorizontalPodAutoscaler>,
    pub pdb: Option<PodDisruptionBudget>,
}

/// Backups: the agent's ServiceAccount and RBAC (its Jobs dump and restore
/// on every engine: on demand, and to move between engines), and the
/// schedule.
#[derive(Debug, Clone)]
pub struct BackupObjects {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub schedule: BackupSchedule,
}

/// The agent's pg_dump CronJob (built-in and external engines), or
/// CloudNativePG's own schedule of base backups (WAL archiving is set on
/// the Cluster).
#[derive(Debug, Clone)]
pub enum BackupSchedule {
    Dump(Box<CronJob>),
    /// None while the Cluster does not archive (the plugin is missing).
    CloudNativePG(Option<Box<ScheduledBackup>>),
}

/// Annotation on the StatefulSet and Deployments: what their pod template
/// was built from, as `<generation>/<spec hash>/<runtime hash>` (the spec
/// fields the workload reads, and what the operator observed: passwords,
/// the database in use, the image whose migrations ran). Same inputs and a
/// different template mean the operator's own code changed: that change
/// waits for the maintenance window (`controller::apply::Hold`).
pub const INPUTS_ANNOTATION: &str = "foodapp.io/inputs";

/// The workloads whose pod templates a new operator version must not roll
/// outside the maintenance window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Database,
    Api,
    Gateway,
}

impl Model {
    /// The value of `INPUTS_ANNOTATION` for `workload`. Generous on
    /// purpose: a spec change that reaches a template must change the spec
    /// hash (checked field by field in the tests), while an input that does
    /// not only releases a held rollout with the user's own change.
    pub fn inputs(&self, workload: Workload) -> String {
        self.inputs_hashed(workload, secret_hash)
    }

    /// `inputs` as a release before keyed hashes wrote it: the secret values
    /// hashed with nothing but SHA-256.
    pub fn legacy_inputs(&self, workload: Workload) -> String {
        self.inputs_hashed(workload, short_hash)
    }

    /// The runtime part of the database's and the API's inputs holds
    /// secret values, so `secret` hashes it; the gateway's holds none.
    fn inputs_hashed(&self, workload: Workload, secret: fn(&str) -> String) -> String {
        let spec = &self.spec;
        let json = |v: serde_json::Value| short_hash(&v.to_string());
        let restoring = if self.restoring { "restoring" } else { "" };
        let (spec_part, runtime): (_, Vec<String>) = match workload {
            Workload::Database => (
                serde_json::json!([spec.database, spec.deletion_policy]),
                // The image is the one the data runs on, which an upgrade
                // changes without a change of the spec.
                vec![
                    self.db_password.clone(),
                    self.db_cluster.clone(),
                    spec.database.image.clone(),
                ],
            ),
            Workload::Api => (
                serde_json::json!([spec.api, spec.database]),
                vec![
                    self.db_password.clone(),
                    self.jwt_secret.clone(),
                    self.admin_secret.clone(),
                    self.db_cluster.clone(),
                    self.external_database.clone().unwrap_or_default(),
                    self.api_rollout_image.clone().unwrap_or_default(),
                    restoring.to_owned(),
                    self.connection
                        .as_ref()
                        .map(Connection::url)
                        .unwrap_or_default(),
                ],
            ),
            Workload::Gateway => (
                serde_json::json!([spec.gateway, spec.api]),
                vec![
                    self.tls_fingerprint.clone().unwrap_or_default(),
                    restoring.to_owned(),
                ],
            ),
        };
        let runtime = runtime.join("\u{1f}");
        let runtime = match workload {
            Workload::Database | Workload::Api => secret(&runtime),
            Workload::Gateway => short_hash(&runtime),
        };
        format!("{}/{}/{runtime}", self.generation, json(spec_part))
    }
}

fn record_inputs(meta: &mut ObjectMeta, value: String) {
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(INPUTS_ANNOTATION.to_owned(), value);
}

pub fn build(model: &Model) -> Desired {
    let mut desired = build_objects(model);
    if let DatabaseObjects::BuiltIn { statefulset, .. } = &mut desired.database {
        record_inputs(&mut statefulset.metadata, model.inputs(Workload::Database));
        desired.legacy_inputs.database = Some(model.legacy_inputs(Workload::Database));
    }
    if let Some(api) = &mut desired.api_deployment {
        record_inputs(&mut api.metadata, model.inputs(Workload::Api));
        desired.legacy_inputs.api = Some(model.legacy_inputs(Workload::Api));
    }
    record_inputs(
        &mut desired.gateway_deployment.metadata,
        model.inputs(Workload::Gateway),
    );
    desired
}

fn build_objects(model: &Model) -> Desired {
    let spec = &model.spec;
    let connection = || {
        model
            .connection
            .as_ref()
            .map(|c| secrets::connection(model, c))
    };
    let database = match spec.database.engine {
        Engine::BuiltIn => DatabaseObjects::BuiltIn {
            statefulset: Box::new(postgres::statefulset(model)),
            service: Box::new(postgres::service(model)),
            headless_service: Box::new(postgres::headless_service(model)),
        },
        Engine::CloudNativePG => DatabaseObjects::CloudNativePG {
            cluster: Box::new(cnpg::cluster(model)),
            object_store: spec
                .backup
                .as_ref()
                .filter(|_| model.cnpg_archive == cnpg::Archive::Plugin)
                .map(|b| Box::new(cnpg::object_store(model, b))),
            connection: connection(),
        },
        Engine::External => DatabaseObjects::External {
            connection: connection(),
        },
    };
    let scaling =
        |name: String, component: &str, fixed: i32, a: Option<&crate::crd::Autoscaling>| Scaling {
            hpa: a.map(|a| scaling::hpa(model, &name, component, a)),
            pdb: scaling::pdb(model, &name, component, scaling::min_pods(fixed, a)),
        };
    Desired {
        database,
        migration_job: model.run_migration.then(|| migration::job(model)),
        api_deployment: model
            .api_rollout_image
            .as_deref()
            .map(|image| api::deployment(model, image)),
        api_service: api::service(model),
        api_scaling: scaling(
            names::api(&model.name),
            "api",
            spec.api.replicas,
            spec.api.autoscaling.as_ref(),
        ),
        gateway_config: gateway::config_map(model),
        gateway_deployment: gateway::deployment(model),
        gateway_service: gateway::service(model),
        gateway_scaling: scaling(
            names::gateway(&model.name),
            "gateway",
            spec.gateway.replicas,
            spec.gateway.autoscaling.as_ref(),
        ),
        gateway_certificate: gateway::certificate(model),
        network_policies: network::policies(model),
        backup: spec.backup.as_ref().map(|b| BackupObjects {
            service_account: backup::service_account(model),
            role: backup::role(model),
            role_binding: backup::role_binding(model),
            schedule: match spec.database.engine {
                Engine::CloudNativePG => {
                    BackupSchedule::CloudNativePG(cnpg::scheduled_backup(model, b).map(Box::new))
                }
                Engine::BuiltIn | Engine::External => {
                    BackupSchedule::Dump(Box::new(backup::cron_job(model, b)))
                }
            },
        }),
        legacy_inputs: LegacyInputs::default(),
    }
}

impl Desired {
    /// Every object as JSON values, in apply order (for `render`).
    pub fn to_values(&self) -> Vec<serde_json::Value> {
        let Desired {
            database,
            migration_job,
            api_deployment,
            api_service,
            api_scaling,
            gateway_config,
            gateway_deployment,
            gateway_service,
            gateway_scaling,
            gateway_certificate,
            network_policies,
            backup,
            legacy_inputs: _,
        } = self;
        let mut out = Vec::new();
        match database {
            DatabaseObjects::BuiltIn {
                statefulset,
                service,
                headless_service,
            } => out.extend([value(headless_service), value(service), value(statefulset)]),
            DatabaseObjects::CloudNativePG {
                cluster,
                object_store,
                connection,
            } => {
                out.extend(object_store.iter().map(value));
                out.push(value(cluster));
                out.extend(connection.iter().map(value));
            }
            DatabaseObjects::External { connection } => {
                out.extend(connection.iter().map(value));
            }
        }
        out.extend(network_policies.iter().map(value));
        out.extend(migration_job.iter().map(value));
        out.push(value(api_service));
        out.extend(api_deployment.iter().map(value));
        out.extend(api_scaling.values());
        out.push(value(gateway_config));
        out.extend(gateway_certificate.iter().map(value));
        out.extend([value(gateway_service), value(gateway_deployment)]);
        out.extend(gateway_scaling.values());
        if let Some(BackupObjects {
            service_account,
            role,
            role_binding,
            schedule,
        }) = backup
        {
            out.extend([value(service_account), value(role), value(role_binding)]);
            match schedule {
                BackupSchedule::Dump(cron_job) => out.push(value(cron_job)),
                BackupSchedule::CloudNativePG(scheduled) => out.extend(scheduled.iter().map(value)),
            }
        }
        out
    }
}

impl Scaling {
    fn values(&self) -> Vec<serde_json::Value> {
        let Scaling { hpa, pdb } = self;
        hpa.iter().map(value).chain(pdb.iter().map(value)).collect()
    }
}

fn value<T: serde::Serialize>(o: &T) -> serde_json::Value {
    serde_json::to_value(o).unwrap_or_default()
}

/// Object names, derived from the FoodApp's name.
pub mod names {
    pub fn db(app: &str) -> String {
        format!("{app}-db")
    }
    pub fn db_headless(app: &str) -> String {
        format!("{app}-db-hl")
    }
    pub fn api_secret(app: &str) -> String {
        format!("{app}-api")
    }
    pub fn api(app: &str) -> String {
        format!("{app}-api")
    }
    pub fn gateway(app: &str) -> String {
        format!("{app}-gateway")
    }
    pub fn backup(app: &str) -> String {
        format!("{app}-backup")
    }
    pub fn admin_secret(app: &str) -> String {
        format!("{app}-admin")
    }
    /// One Job per image (and per retry the user asks for).
    pub fn migration_job(app: &str, image: &str, retry: Option<&str>) -> String {
        let key = match retry {
            Some(token) => format!("{image}\n{token}"),
            None => image.to_owned(),
        };
        format!("{app}-migrate-{}", super::short_hash(&key))
    }
    /// DATABASE_URL of a database the operator does not run (CloudNativePG, External).
    pub fn db_connection(app: &str) -> String {
        format!("{app}-db-connection")
    }
    /// CloudNativePG's Secret with the app login of a Cluster.
    pub fn cnpg_app_secret(cluster: &str) -> String {
        format!("{cluster}-app")
    }
    /// The Barman Cloud Plugin's ObjectStore of a FoodApp's archive.
    pub fn cnpg_object_store(app: &str) -> String {
        format!("{app}-archive")
    }
    /// The ScheduledBackup of a Cluster: one per Cluster, since its
    /// `spec.cluster` cannot change (CloudNativePG 1.30, `self == oldSelf`).
    pub fn cnpg_scheduled_backup(cluster: &str) -> String {
        format!("{cluster}-backup")
    }
    /// CloudNativePG's read-write Service of a Cluster: always the primary.
    pub fn cnpg_rw_service(cluster: &str) -> String {
        format!("{cluster}-rw")
    }
    /// The database a restore makes beside the live one: a StatefulSet
    /// (BuiltIn) or Cluster (CloudNativePG) `<app>-db-<6 hex>`.
    pub fn recovered_cluster(app: &str, restore: &str) -> String {
        format!("{app}-db-{}", restore_id(restore))
    }
    /// Six hex digits naming what a restore makes.
    pub fn restore_id(restore: &str) -> String {
        super::short_hash(restore)[..6].to_owned()
    }
    /// The claim of a built-in database's pod.
    pub fn claim_of(statefulset: &str) -> String {
        format!("data-{statefulset}-0")
    }
    /// Engine External: the database a restore restores into.
    pub fn restored_database(database: &str, restore: &str) -> String {
        let id = restore_id(restore);
        let stem: String = database.chars().take(63 - 2 - id.len()).collect();
        format!("{stem}_r{id}")
    }
    /// The Secret cert-manager writes the gateway's certificate to.
    pub fn gateway_tls(app: &str) -> String {
        format!("{app}-gateway-tls")
    }
}

pub const DB_USER: &str = "foodapp";
pub const DB_NAME: &str = "foodapp";
pub const API_PORT: i32 = 8080;
pub const GATEWAY_PORT: i32 = 8080;
/// HTTPS, when `gateway.tls` is set.
pub const GATEWAY_TLS_PORT: i32 = 8443;
/// The unprivileged user the API and agent images run as (distroless "nonroot").
pub const API_UID: i64 = 65532;

/// First 10 hex digits of SHA-256: short, stable, collision-safe enough for names.
pub fn short_hash(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))[..10].to_owned()
}

/// Labels that select one component's pods: never contain a version, since
/// selectors and volumeClaimTemplates are immutable.
pub fn selector_labels(model: &Model, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), PART_OF.to_owned()),
        ("app.kubernetes.io/instance".to_owned(), model.name.clone()),
        (
            "app.kubernetes.io/component".to_owned(),
            component.to_owned(),
        ),
    ])
}

pub fn labels(model: &Model, component: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(model, component);
    l.insert("app.kubernetes.io/part-of".to_owned(), PART_OF.to_owned());
    l.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        MANAGER.to_owned(),
    );
    l
}

/// The label selector that finds every object the operator made for a FoodApp.
pub fn instance_selector(app: &str) -> String {
    format!("app.kubernetes.io/instance={app},app.kubernetes.io/managed-by={MANAGER}")
}

pub fn owner_reference(model: &Model) -> OwnerReference {
    OwnerReference {
        api_version: "foodapp.io/v1alpha1".to_owned(),
        kind: "FoodApp".to_owned(),
        name: model.name.clone(),
        uid: model.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

pub fn meta(model: &Model, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        owner_references: Some(vec![owner_reference(model)]),
        ..unowned_meta(model, name, component)
    }
}

/// Metadata of an object that outlives the FoodApp when its data does (the
/// generated Secrets): labelled, but not owned, so the garbage collector
/// leaves it; the finalizer removes it under deletionPolicy Delete.
pub fn unowned_meta(model: &Model, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(model.namespace.clone()),
        labels: Some(labels(model, component)),
        ..Default::default()
    }
}

/// Pod-template annotation carrying a keyed hash of the database password:
/// a new password (the Secret was re-created) restarts the pods that use it.
pub const CREDENTIALS_HASH_ANNOTATION: &str = "foodapp.io/credentials-hash";

pub fn credentials_annotation(model: &Model) -> BTreeMap<String, String> {
    BTreeMap::from([(
        CREDENTIALS_HASH_ANNOTATION.to_owned(),
        secret_hash(&model.db_password),
    )])
}

static SECRET_HASH_KEY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// Sets the key of `secret_hash`, once, before anything is built (the
/// operator derives it from its signing key at start). Unset (`render`,
/// tests) it is empty: the hashes are stable but anyone can compute them.
pub fn set_secret_hash_key(key: Vec<u8>) {
    let _ = SECRET_HASH_KEY.set(key);
}

/// A hash of secret values for annotations that anyone allowed to `view`
/// the namespace reads: an HMAC under the operator's key, so a guess of
/// the password cannot be tested against it. `k` and 16 hex digits (the
/// unkeyed hashes of earlier releases are 10 digits).
pub fn secret_hash(s: &str) -> String {
    keyed_hash(
        SECRET_HASH_KEY.get().map(Vec::as_slice).unwrap_or_default(),
        s,
    )
}

fn keyed_hash(key: &[u8], s: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"foodapp.io/secret-hash\x1f");
    mac.update(s.as_bytes());
    format!("k{}", &hex::encode(mac.finalize().into_bytes())[..16])
}

/// Rolling updates that never go below the wanted replicas: one extra pod
/// comes up before an old one goes.
pub fn surge_one() -> k8s_openapi::api::apps::v1::DeploymentStrategy {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    k8s_openapi::api::apps::v1::DeploymentStrategy {
        type_: Some("RollingUpdate".to_owned()),
        rolling_update: Some(k8s_openapi::api::apps::v1::RollingUpdateDeployment {
            max_unavailable: Some(IntOrString::Int(0)),
            max_surge: Some(IntOrString::Int(1)),
        }),
    }
}

/// Non-root, no privilege escalation, no capabilities, read-only root.
pub fn container_security(user: i64) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(user),
        run_as_group: Some(user),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn pod_security(user: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(user),
        run_as_group: Some(user),
        fs_group: Some(user),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn model() -> Model {
        Model {
            name: "shop".into(),
            namespace: "food".into(),
            uid: "6b1e1d7e-0000-4000-8000-000000000001".into(),
            spec: FoodAppSpec::default(),
            db_password: "db-password".into(),
            connection: None,
            jwt_secret: "jwt-secret".into(),
            admin_secret: "shop-admin".into(),
            api_rollout_image: Some(crate::crd::DEFAULT_API_IMAGE.into()),
            run_migration: true,
            migration_retry: None,
            restoring: false,
            agent_image: crate::crd::DEFAULT_OPERATOR_IMAGE.into(),
            db_cluster: "shop-db".into(),
            db_server_name: "shop-db-6b1e1d7e".into(),
            cnpg_archive: cnpg::Archive::Off,
            external_database: None,
            tls_fingerprint: None,
            generation: 1,
            database_stopped: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_hashed_under_the_operators_key() {
        let (one, other) = (keyed_hash(b"key one", "pw"), keyed_hash(b"key two", "pw"));
        assert_ne!(one, other, "without the key, a guess cannot be tested");
        assert_ne!(one, keyed_hash(b"key one", "pw2"));
        assert_eq!(one, keyed_hash(b"key one", "pw"), "stable under one key");
        assert_eq!(one.len(), 17);
        assert!(!one.contains(&short_hash("pw")));
        let m = testing::model();
        assert_eq!(
            credentials_annotation(&m)[CREDENTIALS_HASH_ANNOTATION],
            secret_hash(&m.db_password)
        );
        for workload in [Workload::Database, Workload::Api] {
            let (keyed, legacy) = (m.inputs(workload), m.legacy_inputs(workload));
            assert_ne!(keyed, legacy);
            let (k, l) = (
                keyed.rsplit_once('/').unwrap(),
                legacy.rsplit_once('/').unwrap(),
            );
            assert_eq!(k.0, l.0, "only the hash of the secret values differs");
            assert!(k.1.starts_with('k') && l.1.len() == 10);
        }
        assert_eq!(
            m.inputs(Workload::Gateway),
            m.legacy_inputs(Workload::Gateway),
            "the gateway's inputs hold no secret"
        );
    }

    #[test]
    fn every_object_carries_labels_and_an_owner_reference() {
        let mut m = testing::model();
        m.spec.backup = Some(crate::crd::BackupSpec {
            schedule: "0 3 * * *".into(),
            suspend: false,
            retention: Default::default(),
            verify: true,
            s3: crate::crd::S3Spec {
                bucket: "backups".into(),
                credentials_secret: "spaces".into(),
                ..Default::default()
            },
        });
        let values = build(&m).to_values();
        // 13 as before, two disruption budgets, three network policies.
        assert_eq!(values.len(), 18);
        for v in values {
            let meta = &v["metadata"];
            let what = format!("{} {}", v["kind"], meta["name"]);
            assert_eq!(meta["namespace"], "food", "{what}");
            assert_eq!(
                meta["labels"]["app.kubernetes.io/instance"], "shop",
                "{what}"
            );
            assert_eq!(
                meta["labels"]["app.kubernetes.io/managed-by"], MANAGER,
                "{what}"
            );
            assert_eq!(
                meta["labels"]["app.kubernetes.io/part-of"], PART_OF,
                "{what}"
            );
            assert!(
                meta["labels"]["app.kubernetes.io/component"].is_string(),
                "{what}"
            );
            assert_eq!(meta["ownerReferences"][0]["uid"], m.uid, "{what}");
            assert_eq!(meta["ownerReferences"][0]["controller"], true, "{what}");
        }
    }

    /// Each workload's pod template and inputs annotation.
    fn templates(m: &Model) -> Vec<(Workload, serde_json::Value, String)> {
        let d = build(m);
        let inputs =
            |meta: &ObjectMeta| meta.annotations.as_ref().unwrap()[INPUTS_ANNOTATION].clone();
        let mut out = Vec::new();
        if let DatabaseObjects::BuiltIn { statefulset, .. } = &d.database {
            let t = value(&statefulset.spec.as_ref().unwrap().template);
            out.push((Workload::Database, t, inputs(&statefulset.metadata)));
        }
        if let Some(api) = &d.api_deployment {
            let t = value(&api.spec.as_ref().unwrap().template);
            out.push((Workload::Api, t, inputs(&api.metadata)));
        }
        let g = &d.gateway_deployment;
        // The gateway's nginx.conf is part of what it is held with.
        let t = serde_json::json!([
            value(&g.spec.as_ref().unwrap().template),
            value(&d.gateway_config)
        ]);
        out.push((Workload::Gateway, t, inputs(&g.metadata)));
        out
    }

    /// Every leaf of `v` changed in turn (strings, numbers, booleans), as
    /// JSON pointers with the changed document.
    fn mutations(v: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
        fn leaves(v: &serde_json::Value, path: String, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, x) in m {
                        let k = k.replace('~', "~0").replace('/', "~1");
                        leaves(x, format!("{path}/{k}"), out);
                    }
                }
                serde_json::Value::Array(a) => {
                    for (i, x) in a.iter().enumerate() {
                        leaves(x, format!("{path}/{i}"), out);
                    }
                }
                _ => out.push(path),
            }
        }
        let mut paths = Vec::new();
        leaves(v, String::new(), &mut paths);
        let mut out = Vec::new();
        for path in paths {
            let mut doc = v.clone();
            let leaf = doc.pointer_mut(&path).unwrap();
            let changed = match leaf {
                serde_json::Value::String(s) if s.ends_with("Gi") || s.ends_with("Mi") => {
                    serde_json::json!(format!("3{s}"))
                }
                serde_json::Value::String(s) => serde_json::json!(format!("{s}x")),
                serde_json::Value::Number(n) => {
                    serde_json::json!(n.as_f64().unwrap_or(0.0) as i64 + 1)
                }
                serde_json::Value::Bool(b) => serde_json::json!(!*b),
                _ => continue,
            };
            *leaf = changed;
            out.push((path, doc));
        }
        out
    }

    /// A spec change that reaches a workload's pod template must change
    /// its inputs annotation: otherwise the user's own change would be
    /// taken for the operator's and wait for the maintenance window.
    #[test]
    fn every_spec_change_that_reaches_a_pod_template_changes_its_inputs() {
        let docs: Vec<serde_json::Value> =
            yaml_serde::Deserializer::from_str(include_str!("../../../examples/foodapp-full.yaml"))
                .map(|d| serde::Deserialize::deserialize(d).unwrap())
                .collect();
        let full = docs
            .into_iter()
            .find(|d| d["kind"] == "FoodApp")
            .expect("the full example has a FoodApp");
        let mut base_model = testing::model();
        base_model.spec = serde_json::from_value(full["spec"].clone()).unwrap();
        base_model.tls_fingerprint = Some("tls-1".into());
        let base = templates(&base_model);
        let mut checked = 0;
        for (path, spec) in mutations(&full["spec"]) {
            let Ok(spec) = serde_json::from_value::<crate::crd::FoodAppSpec>(spec) else {
                continue;
            };
            let mut m = base_model.clone();
            m.spec = spec;
            for ((w, t0, i0), (_, t1, i1)) in base.iter().zip(templates(&m)) {
                if *t0 != t1 {
                    checked += 1;
                    assert_ne!(
                        *i0, i1,
                        "spec{path} changes the {w:?} template but not its inputs"
                    );
                }
            }
        }
        assert!(checked > 20, "only {checked} template changes were tried");
        // What the operator observed, one input at a time.
        type Change = Box<dyn Fn(&mut Model)>;
        let observed: Vec<(&str, Change)> = vec![
            ("db_password", Box::new(|m| m.db_password.push('x'))),
            ("jwt_secret", Box::new(|m| m.jwt_secret.push('x'))),
            (
                "db_cluster",
                Box::new(|m| m.db_cluster = "shop-db-0a1b2c".into()),
            ),
            (
                "api_rollout_image",
                Box::new(|m| m.api_rollout_image = Some("api:9".into())),
            ),
            ("restoring", Box::new(|m| m.restoring = true)),
            (
                "tls_fingerprint",
                Box::new(|m| m.tls_fingerprint = Some("tls-2".into())),
            ),
            (
                "admin_secret",
                Box::new(|m| m.admin_secret = "other-admin".into()),
            ),
        ];
        for (what, change) in observed {
            let mut m = base_model.clone();
            change(&mut m);
            for ((w, t0, i0), (_, t1, i1)) in base.iter().zip(templates(&m)) {
                if *t0 != t1 {
                    assert_ne!(
                        *i0, i1,
                        "{what} changes the {w:?} template but not its inputs"
                    );
                }
            }
        }
    }

    #[test]
    fn a_change_elsewhere_in_the_spec_keeps_a_workloads_spec_hash() {
        let base = testing::model();
        let mut scaled = base.clone();
        scaled.spec.api.replicas = 5;
        scaled.generation = 2;
        let spec_hash = |m: &Model| {
            m.inputs(Workload::Database)
                .split('/')
                .nth(1)
                .unwrap()
                .to_owned()
        };
        assert_eq!(spec_hash(&base), spec_hash(&scaled));
        assert_ne!(
            base.inputs(Workload::Api).split('/').nth(1),
            scaled.inputs(Workload::Api).split('/').nth(1)
        );
    }

    fn kinds(m: &Model) -> Vec<String> {
        build(m)
            .to_values()
            .iter()
            .map(|v| v["kind"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn each_engine_has_its_own_database_objects() {
        let mut m = testing::model();
        let s3 = crate::crd::S3Spec {
            bucket: "backups".into(),
            credentials_secret: "spaces".into(),
            ..Default::default()
        };
        m.spec.backup = Some(crate::crd::BackupSpec {
            schedule: "0 3 * * *".into(),
            suspend: false,
            retention: Default::default(),
            verify: true,
            s3,
        });
        let builtin = kinds(&m);
        assert!(builtin.contains(&"StatefulSet".to_owned()));
        assert!(builtin.contains(&"CronJob".to_owned()));

        m.spec.database.engine = Engine::CloudNativePG;
        m.cnpg_archive = cnpg::Archive::Plugin;
        m.connection = Some(Connection {
            host: "shop-db-rw.food.svc".into(),
            port: 5432,
            database: "foodapp".into(),
            user: "foodapp".into(),
            password: "pw".into(),
            sslmode: "require".into(),
        });
        let cnpg = kinds(&m);
        assert!(!cnpg.contains(&"StatefulSet".to_owned()));
        assert!(
            !cnpg.contains(&"CronJob".to_owned()),
            "CloudNativePG backs up"
        );
        for kind in [
            "Cluster",
            "ScheduledBackup",
            "ObjectStore",
            "Secret",
            "ServiceAccount",
        ] {
            assert!(cnpg.contains(&kind.to_owned()), "{kind} in {cnpg:?}");
        }

        m.spec.database.engine = Engine::External;
        let external = kinds(&m);
        assert!(!external.contains(&"StatefulSet".to_owned()));
        assert!(!external.contains(&"Cluster".to_owned()));
        assert!(external.contains(&"CronJob".to_owned()), "pg_dump backups");
        assert!(external.contains(&"Secret".to_owned()));
    }

    #[test]
    fn the_api_gateway_database_and_migration_pods_get_no_service_account_token() {
        let mut m = testing::model();
        m.run_migration = true;
        let d = build(&m);
        let DatabaseObjects::BuiltIn { statefulset, .. } = &d.database else {
            panic!("BuiltIn");
        };
        let pods = [
            (
                "database",
                statefulset.spec.as_ref().unwrap().template.spec.clone(),
            ),
            ("api", d.api_deployment.unwrap().spec.unwrap().template.spec),
            ("gateway", d.gateway_deployment.spec.unwrap().template.spec),
            (
                "migration",
                d.migration_job.unwrap().spec.unwrap().template.spec,
            ),
        ];
        for (what, pod) in pods {
            assert_eq!(
                pod.unwrap().automount_service_account_token,
                Some(false),
                "{what}"
            );
        }
    }

    #[test]
    fn autoscaled_components_get_an_autoscaler_and_no_fixed_replicas() {
        let mut m = testing::model();
        m.spec.api.autoscaling = Some(crate::crd::Autoscaling {
            min_replicas: 2,
            max_replicas: 6,
            target_cpu_utilization_percentage: 70,
        });
        let d = build(&m);
        assert!(d.api_scaling.hpa.is_some() && d.api_scaling.pdb.is_some());
        let spec = d.api_deployment.unwrap().spec.unwrap();
        assert_eq!(spec.replicas, None);
        assert!(d.gateway_scaling.hpa.is_none());
        m.spec.gateway.replicas = 1;
        assert!(
            build(&m).gateway_scaling.pdb.is_none(),
            "one pod: no budget"
        );
    }

    #[test]
    fn no_api_deployment_until_a_migrated_image_exists() {
        let mut m = testing::model();
        m.api_rollout_image = None;
        assert!(build(&m).api_deployment.is_none());
        m.run_migration = false;
        assert!(build(&m).migration_job.is_none());
    }

    #[test]
    fn selector_labels_carry_no_version() {
        let l = selector_labels(&testing::model(), "api");
        assert!(l.keys().all(|k| !k.contains("version")));
    }
}
