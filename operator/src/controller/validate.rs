//! Turns a FoodApp and what was observed into the validated `Model` the
//! builders take, deciding the rollout: which API image runs, whether the
//! migration Job is wanted. Pure.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;

use crate::build::{Connection, Inputs, Model, ModelError, names};
use crate::crd::{Engine, FoodApp};

use super::conditions::Reason;

use super::dereference::Observed;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(
        "Secret {secret} has no key {key}: restore the key, or delete the Secret to have a new one generated"
    )]
    SecretKeyMissing { secret: String, key: &'static str },
}

/// The state of one Job, from its conditions.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    Running,
    Succeeded,
    Failed { reason: String, message: String },
}

pub fn job_state(job: &Job) -> JobState {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    for c in conditions.into_iter().flatten() {
        if c.status == "True" {
            match c.type_.as_str() {
                "Complete" => return JobState::Succeeded,
                "Failed" => {
                    return JobState::Failed {
                        reason: c.reason.clone().unwrap_or_else(|| "Failed".to_owned()),
                        message: c.message.clone().unwrap_or_default(),
                    };
                }
                _ => {}
            }
        }
    }
    if job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0 {
        JobState::Succeeded
    } else {
        JobState::Running
    }
}

pub fn secret_value(secret: Option<&Secret>, key: &str) -> Option<String> {
    let bytes = secret?.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .filter(|s| !s.is_empty())
}

fn required(secret: Option<&Secret>, name: String, key: &'static str) -> Result<String, Error> {
    secret_value(secret, key).ok_or(Error::SecretKeyMissing { secret: name, key })
}

/// Where the FoodApp's database stands, whatever its engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Database {
    /// Accepting connections (as far as the operator can tell); with the
    /// connection for the engines the operator does not run.
    Ready(Option<Connection>),
    /// Not yet: why, as a condition says it.
    NotReady { reason: Reason, message: String },
}

impl Database {
    pub fn is_ready(&self) -> bool {
        matches!(self, Database::Ready(_))
    }
    fn not_ready(reason: Reason, message: impl Into<String>) -> Database {
        Database::NotReady {
            reason,
            message: message.into(),
        }
    }
}

pub fn database(app: &FoodApp, observed: &Observed) -> Database {
    match app.spec.database.engine {
        Engine::BuiltIn => {
            let ready = observed
                .statefulset
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
                >= 1;
            if ready {
                Database::Ready(None)
            } else if observed.statefulset.is_none() {
                Database::not_ready(Reason::Creating, "creating the PostgreSQL StatefulSet")
            } else {
                Database::not_ready(Reason::Starting, "waiting for PostgreSQL to become ready")
            }
        }
        Engine::External => {
            let secret = external_secret_name(app);
            match external_connection(observed.external_secret.as_ref(), &secret) {
                // A restore switched the FoodApp to another database on the server.
                Ok(c) => Database::Ready(Some(Connection {
                    database: crate::build::external_database(app).unwrap_or(c.database),
                    ..c
                })),
                Err(message) => Database::not_ready(Reason::SecretInvalid, message),
            }
        }
        Engine::CloudNativePG => {
            let cnpg = observed.cnpg.clone().unwrap_or_default();
            let cluster_name = crate::build::db_cluster(app);
            if !cnpg.installed {
                return Database::not_ready(
                    Reason::CloudNativePGMissing,
                    "the CloudNativePG CRDs (postgresql.cnpg.io/v1 Cluster) are not installed: install CloudNativePG 1.30 or later, or choose another database.engine for a new FoodApp",
                );
            }
            let Some(cluster) = &cnpg.cluster else {
                return Database::not_ready(
                    Reason::Creating,
                    format!("creating the CloudNativePG Cluster {cluster_name}"),
                );
            };
            let status = cluster.status.clone().unwrap_or_default();
            let ready = status.ready_instances.unwrap_or(0);
            let login = cnpg_connection(
                &cluster_name,
                &app.metadata.namespace.clone().unwrap_or_default(),
                cnpg.app_secret.as_ref(),
            );
            match login {
                Some(c) if ready >= 1 => Database::Ready(Some(c)),
                _ => Database::not_ready(
                    Reason::Starting,
                    format!(
                        "waiting for the CloudNativePG Cluster {cluster_name}: {ready} of {} instances ready ({})",
                        cluster.spec.instances,
                        status.phase.as_deref().unwrap_or("no phase yet")
                    ),
                ),
            }
        }
    }
}

/// The Secret `database.external.secretName` names.
pub fn external_secret_name(app: &FoodApp) -> String {
    app.spec
        .database
        .external
        .as_ref()
        .map(|e| e.secret_name.clone())
        .unwrap_or_default()
}

/// The user's Secret for engine External, read: every key present and
/// sensible, or a message that says which is not.
pub fn external_connection(secret: Option<&Secret>, name: &str) -> Result<Connection, String> {
    if secret.is_none() {
        return Err(format!(
            "Secret {name} (database.external.secretName) does not exist: create it with keys host, port, database, user, password and sslmode"
        ));
    }
    let get = |key: &str| secret_value(secret, key);
    let missing: Vec<&str> = ["host", "database", "user", "password"]
        .into_iter()
        .filter(|k| get(k).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(format!("Secret {name} has no {}", missing.join(", ")));
    }
    let port = match get("port") {
        None => 5432,
        Some(p) => p
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("Secret {name}: port {p:?} is not a TCP port"))?,
    };
    let sslmode = get("sslmode").unwrap_or_else(|| "require".to_owned());
    const MODES: [&str; 6] = [
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ];
    if !MODES.contains(&sslmode.as_str()) {
        return Err(format!(
            "Secret {name}: sslmode {sslmode:?} is not one of {}",
            MODES.join(", ")
        ));
    }
    Ok(Connection {
        host: get("host").unwrap_or_default().trim().to_owned(),
        port,
        database: get("database").unwrap_or_default(),
        user: get("user").unwrap_or_default(),
        password: get("password").unwrap_or_default(),
        sslmode,
    })
}

/// The app login CloudNativePG generated, through the read-write Service.
pub fn cnpg_connection(cluster: &str, ns: &str, secret: Option<&Secret>) -> Option<Connection> {
    Some(Connection {
        host: format!("{}.{ns}.svc", names::cnpg_rw_service(cluster)),
        port: 5432,
        database: secret_value(secret, "dbname")
            .unwrap_or_else(|| crate::build::DB_NAME.to_owned()),
        user: secret_value(secret, "username")?,
        password: secret_value(secret, "password")?,
        // CloudNativePG serves TLS with its own CA.
        sslmode: "require".to_owned(),
    })
}

/// The image the API Deployment runs now.
pub fn deployed_image(app: &FoodApp, observed: &Observed) -> Option<String> {
    app.status
        .as_ref()
        .and_then(|s| s.api_image.clone())
        .or_else(|| {
            observed
                .api_deployment
                .as_ref()?
                .spec
                .as_ref()?
                .template
                .spec
                .as_ref()?
                .containers
                .first()?
                .image
                .clone()
        })
}

/// A restore holds the FoodApp and needs its API stopped (InPlace).
pub fn restoring(app: &FoodApp) -> bool {
    super::operations::lock::stops_api(app)
}

/// A restore holds the FoodApp: no migration of a new image runs (it would
/// migrate the schema the restore is about to replace).
fn restore_in_progress(app: &FoodApp) -> bool {
    super::operations::lock::holder(app).is_some()
}

/// The validated Model: pure, from the FoodApp and what dereference found
/// (which made sure the generated Secrets exist).
pub fn model(app: &FoodApp, observed: &Observed, agent_image: &str) -> Result<Model, Error> {
    let name = app.metadata.name.clone().unwrap_or_default();
    let spec_image = app.spec.api.image.clone();
    let deployed = deployed_image(app, observed);
    let already_migrated = deployed.as_deref() == Some(spec_image.as_str());
    let job_succeeded = observed
        .migration_job
        .as_ref()
        .is_some_and(|j| job_state(j) == JobState::Succeeded);
    let api_rollout_image = if already_migrated || job_succeeded {
        Some(spec_image)
    } else {
        deployed
    };
    let database = database(app, observed);
    let connection = match &database {
        Database::Ready(c) => c.clone(),
        Database::NotReady { .. } => None,
    };
    let db_password = match (&connection, app.spec.database.engine) {
        (_, Engine::BuiltIn) => {
            required(observed.db_secret.as_ref(), names::db(&name), "password")?
        }
        (Some(c), _) => c.password.clone(),
        (None, _) => String::new(),
    };
    let mut model = Model::new(
        app,
        Inputs {
            db_password,
            connection,
            jwt_secret: required(
                observed.api_secret.as_ref(),
                names::api_secret(&name),
                "JWT_SECRET",
            )?,
            api_rollout_image,
            // No migration of a new image while a restore runs: it would
            // migrate the schema the restore is about to replace.
            run_migration: !already_migrated
                && !restore_in_progress(app)
                && (database.is_ready() || observed.migration_job.is_some()),
            restoring: restoring(app),
            agent_image: agent_image.to_owned(),
        },
    )?;
    model.tls_fingerprint = observed
        .gateway_tls_secret
        .as_ref()
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get("tls.crt"))
        .map(|crt| crate::build::short_hash(&String::from_utf8_lossy(&crt.0)));
    if let Some(cnpg) = &observed.cnpg {
        cnpg_archive(&mut model, cnpg);
    }
    // A dump without its credentials cannot run: schedule nothing until the
    // Secret exists (the BackupScheduled condition says why). CloudNativePG
    // keeps its archiving configuration: without it `archive_command` would
    // succeed without archiving, a hole no recovery can cross.
    if observed.credentials_secret_found == Some(false)
        && app.spec.database.engine != Engine::CloudNativePG
    {
        model.spec.backup = None;
    }
    Ok(model)
}

/// How the Cluster in use archives, and under which `serverName`: what the
/// live Cluster records; the Barman Cloud Plugin when it is installed, else
/// the in-tree configuration a Cluster of the previous release has (so that
/// archiving never stops), else none until the plugin is installed.
fn cnpg_archive(model: &mut Model, cnpg: &super::dereference::CnpgObserved) {
    use crate::build::cnpg::{Archive, live_server_name, uses_plugin};
    if let Some(live) = &cnpg.cluster {
        model.db_server_name = live_server_name(live);
    }
    // A Cluster that archives through the plugin keeps doing so even while
    // its CRD is gone (reinstalled, upgraded): never a hole in the archive.
    let archives_through_plugin = cnpg.cluster.as_ref().is_some_and(uses_plugin);
    if model.spec.backup.is_none() || cnpg.plugin_installed || archives_through_plugin {
        return;
    }
    let in_tree = cnpg
        .cluster
        .as_ref()
        .is_some_and(|c| c.spec.backup.is_some());
    model.cnpg_archive = if in_tree {
        Archive::InTree
    } else {
        Archive::Off
    };
}

/// A Model for the Jobs of backups and restores, which need the FoodApp's
/// names and spec but none of its rollout state or secret values.
pub fn job_model(app: &FoodApp, agent_image: &str) -> Result<Model, Error> {
    Ok(Model::new(
        app,
        Inputs {
            db_password: String::new(),
            connection: None,
            jwt_secret: String::new(),
            api_rollout_image: None,
            run_migration: false,
            restoring: false,
            agent_image: agent_image.to_owned(),
        },
    )?)
}
