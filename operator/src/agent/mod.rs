//! The backup/restore agent (`foodapp-operator backup` / `restore`): runs in
//! the backup CronJob and restore Jobs, and standalone outside any cluster.
//! Object layout in the bucket:
//!
//! ```text
//! <prefix>/<namespace>/<foodapp>/<UTC timestamp>.dump            pg_dump -Fc
//! <prefix>/<namespace>/<foodapp>/<UTC timestamp>.manifest.json   size, sha256, versions, row counts
//! ```
//! A backup exists once its manifest does: the manifest is written last,
//! after verification; only keys directly under a FoodApp's own prefix whose
//! manifest names it are ever listed, restored or deleted.

pub mod anonymize;
pub mod backup;
pub mod db;
pub mod manifest;
pub mod record;
pub mod restore;
pub mod retention;
pub mod s3;
pub mod switch;
pub mod tool;

use clap::ArgAction;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    S3(#[from] s3::Error),
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        tool: String,
        status: String,
        stderr: String,
    },
    #[error("{0}: {1}")]
    Io(&'static str, #[source] std::io::Error),
    #[error("verification failed: {0}")]
    Verify(String),
    #[error("the manifest of {key} is unreadable: {source}")]
    Manifest {
        key: String,
        source: serde_json::Error,
    },
    #[error("{0}")]
    Url(#[from] url::ParseError),
    #[error(
        "checksum mismatch for {key}: the manifest says {expected}, the object has {actual}; the database was not touched"
    )]
    Checksum {
        key: String,
        expected: String,
        actual: String,
    },
    #[error("{0}")]
    NotFound(String),
}

impl Error {
    /// Short reason for metrics and conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Database(_) => "Database",
            Error::S3(_) => "Storage",
            Error::Tool { .. } => "PostgresTool",
            Error::Io(..) => "Io",
            Error::Verify(_) => "VerificationFailed",
            Error::Manifest { .. } => "Manifest",
            Error::Url(_) => "Configuration",
            Error::Checksum { .. } => "ChecksumMismatch",
            Error::NotFound(_) => "NotFound",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Checksums {
    /// Only when the operation requires one: works with every S3-compatible store.
    WhenRequired,
    /// Whenever the SDK supports one (AWS S3).
    WhenSupported,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// PostgreSQL URL of the FoodApp's database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// S3 endpoint URL; leave unset for AWS. Spaces: https://<region>.digitaloceanspaces.com
    #[arg(long, env = "S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Region of the bucket (Spaces: the datacenter, e.g. fra1).
    #[arg(long, env = "S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Bucket holding the backups.
    #[arg(long, env = "S3_BUCKET")]
    pub s3_bucket: String,
    /// Key prefix inside the bucket.
    #[arg(long, env = "S3_PREFIX", default_value = "foodapp")]
    pub s3_prefix: String,
    /// Path-style addressing (MinIO and most self-hosted stores need it).
    #[arg(long, env = "S3_FORCE_PATH_STYLE", default_value_t = false, action = ArgAction::Set)]
    pub s3_force_path_style: bool,
    /// When to send and check checksums.
    #[arg(
        long,
        env = "S3_CHECKSUMS",
        value_enum,
        default_value = "when-required"
    )]
    pub s3_checksums: Checksums,
    /// Access key; when unset with the secret, the AWS default chain is used.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub aws_access_key_id: Option<String>,
    /// Secret key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub aws_secret_access_key: Option<String>,
    /// The FoodApp this database belongs to (part of every key).
    #[arg(long, env = "FOODAPP_NAME", default_value = "foodapp")]
    pub foodapp: String,
    /// Its namespace (part of every key).
    #[arg(long, env = "POD_NAMESPACE", default_value = "local")]
    pub namespace: String,
    /// Directory holding pg_dump, pg_restore and psql, or a directory of
    /// majors laid out as <major>/bin (such as /usr/lib/postgresql): then the
    /// server's major is used, else the oldest newer one. Unset:
    /// /usr/lib/postgresql when it exists, else PATH. Never older than the server.
    #[arg(long, env = "PG_BIN")]
    pub pg_bin: Option<std::path::PathBuf>,
}

impl StoreArgs {
    /// `<prefix>/<namespace>/<foodapp>/`
    pub fn key_prefix(&self) -> String {
        key_prefix(&self.s3_prefix, &self.namespace, &self.foodapp)
    }

    /// These settings with the client tools for a server of `major` (see
    /// `tool::choose_bin`).
    pub fn with_tools_for(&self, major: u32) -> Result<StoreArgs, Error> {
        Ok(StoreArgs {
            pg_bin: tool::choose_bin(self.pg_bin.as_deref(), major)?,
            ..self.clone()
        })
    }

    pub fn tool(&self, name: &str) -> std::path::PathBuf {
        match &self.pg_bin {
            Some(dir) => dir.join(name),
            None => name.into(),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Keep this many newest backups and delete older ones; unset keeps all.
    #[arg(long, env = "KEEP_LAST")]
    pub keep_last: Option<usize>,
    /// A throwaway PostgreSQL server (URL of a database the agent may create
    /// databases from) where each new backup is restored and its row counts
    /// compared: never the production server. In a cluster the backup Job
    /// runs one beside the agent.
    #[arg(long, env = "VERIFY_DATABASE_URL", hide_env_values = true)]
    pub verify_database_url: Option<String>,
    /// Restore the new backup into the verification server and compare row counts (default).
    #[arg(long, env = "VERIFY", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub verify: bool,
    /// Skip verification.
    #[arg(long)]
    pub no_verify: bool,
    /// Record the run as a scheduled FoodAppBackup (the CronJob sets it).
    #[arg(long)]
    pub scheduled: bool,
    /// The FoodAppBackup to report into (on-demand backups run by the operator).
    #[arg(long, env = "BACKUP_NAME")]
    pub backup_name: Option<String>,
    /// Create the bucket when it does not exist (local stores such as MinIO or s3s-fs).
    #[arg(long)]
    pub create_bucket: bool,
}

#[derive(Debug, Clone, clap::Args)]
#[group(id = "source", required = true, multiple = false)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Key of the dump to restore.
    #[arg(long, group = "source")]
    pub object_key: Option<String>,
    /// Restore the newest backup of this FoodApp.
    #[arg(long, group = "source")]
    pub latest: bool,
    /// Restore into this database on the server of DATABASE_URL, created
    /// when missing (a Beside restore on an external server; the login
    /// needs CREATEDB). The database of DATABASE_URL is not touched.
    #[arg(long, env = "INTO_DATABASE")]
    pub into_database: Option<String>,
    /// After the commit, compare every table's rows with the manifest's
    /// counts: a mismatch fails the restore (a Beside restore never switches
    /// to a database that does not hold the whole backup).
    #[arg(long, env = "CHECK_COUNTS", default_value_t = false, action = ArgAction::Set)]
    pub check_counts: bool,
    /// Replace what the data says about people (emails, names, password
    /// hashes, payment references, free-text reasons: `agent::anonymize`)
    /// with deterministic fake values, inside the restore's transaction.
    #[arg(long, env = "ANONYMIZE", default_value_t = false, action = ArgAction::Set)]
    pub anonymize: bool,
    /// A restore into a new FoodApp (a clone): refuse a database that holds
    /// orders, revoke every session, and give the administrator named by
    /// CLONE_ADMIN_EMAIL the password CLONE_ADMIN_PASSWORD.
    #[arg(long, env = "CLONE", default_value_t = false, action = ArgAction::Set)]
    pub clone: bool,
    /// The clone's administrator (its own Secret's `email`).
    #[arg(long, env = "CLONE_ADMIN_EMAIL")]
    pub clone_admin_email: Option<String>,
    /// Its password (the Secret's `password`).
    #[arg(long, env = "CLONE_ADMIN_PASSWORD", hide_env_values = true)]
    pub clone_admin_password: Option<String>,
}

/// Writes a Job's result where Kubernetes reads a container's termination
/// message (the operator reads it from the pod's status), when running in a
/// pod; best effort.
pub fn report_termination<T: serde::Serialize>(outcome: &T) {
    let path = std::path::Path::new("/dev/termination-log");
    if path.exists()
        && let Ok(json) = serde_json::to_vec(outcome)
        && let Err(e) = std::fs::write(path, json)
    {
        tracing::warn!(error = %e, "could not write the termination message");
    }
}

/// `<prefix>/<namespace>/<foodapp>/`: where a FoodApp's backups are. The
/// agent and the operator (checking a restore's objectKey) share it.
pub fn key_prefix(prefix: &str, namespace: &str, foodapp: &str) -> String {
    match prefix.trim_matches('/') {
        "" => format!("{namespace}/{foodapp}/"),
        prefix => format!("{prefix}/{namespace}/{foodapp}/"),
    }
}

/// Whether `key` is one of the dumps directly under `prefix` (never one of
/// a deeper prefix, which may be another FoodApp's).
pub fn is_own_dump(prefix: &str, key: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|name| !name.contains('/') && name.ends_with(manifest::DUMP_SUFFIX))
}

/// `20261121T081543Z`: sorts by time as text.
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y%m%dT%H%M%S%.3fZ").to_string().replace('.', "")
}
