//! `foodapp-operator`: the controller, CRD and manifest printing, and the
//! backup/restore agent.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use foodapp_operator::agent::{self, BackupArgs, RestoreArgs, record};
use foodapp_operator::crd::{FoodAppBackupStatus, JobPhase};
use foodapp_operator::{crd, render, runner};

#[derive(Parser)]
#[command(name = "foodapp-operator", version, about = "FoodApp Kubernetes operator", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (with leader election).
    Run(runner::RunArgs),
    /// Print every CRD as YAML.
    Crd,
    /// Print the RBAC rules the operator needs (the Helm chart's ClusterRole,
    /// or with --leader-election its namespaced Role for the Lease, or with
    /// --markdown both as the README's table).
    Rbac {
        #[arg(long)]
        leader_election: bool,
        #[arg(long, conflicts_with = "leader_election")]
        markdown: bool,
    },
    /// Print, offline, every object the controller would create for a FoodApp.
    Render {
        /// The FoodApp YAML file.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Image the backup and restore Jobs run.
        #[arg(long, env = "OPERATOR_IMAGE", default_value = crd::DEFAULT_OPERATOR_IMAGE)]
        operator_image: String,
    },
    /// Print the gateway's nginx.conf for a local run (the same builder as the
    /// cluster's gateway ConfigMap).
    NginxConfig {
        /// Address nginx listens on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// host:port of the API; repeat it to balance over several.
        #[arg(long, required = true)]
        upstream: Vec<String>,
        /// Writable directory for the pid file, temporary files and logs.
        #[arg(long)]
        dir: PathBuf,
        /// Requests per second per client address.
        #[arg(long, default_value_t = 20)]
        requests_per_second: i32,
        /// Burst above that rate.
        #[arg(long, default_value_t = 40)]
        burst: i32,
        /// Serve HTTPS with HTTP/2 here (with --tls-cert and --tls-key);
        /// `--listen` then redirects to it.
        #[arg(long, requires_all = ["tls_cert", "tls_key"])]
        tls_listen: Option<String>,
        /// PEM certificate chain.
        #[arg(long)]
        tls_cert: Option<String>,
        /// PEM private key.
        #[arg(long)]
        tls_key: Option<String>,
        /// Strict-Transport-Security value sent over HTTPS.
        #[arg(long)]
        hsts: Option<String>,
        /// Expect a PROXY protocol header on every connection.
        #[arg(long)]
        proxy_protocol: bool,
        /// Address (CIDR) whose PROXY header or X-Forwarded-For is trusted; repeatable.
        #[arg(long = "trusted-proxy")]
        trusted_proxies: Vec<String>,
        /// A plain-HTTP listener that answers /healthz only.
        #[arg(long)]
        health_listen: Option<String>,
    },
    /// Back up the database to S3 (the backup CronJob runs this). Prints one
    /// JSON line: {"objectKey","sizeBytes","sha256","verified"}.
    Backup(BackupArgs),
    /// Restore the database from a backup in S3, in one transaction.
    Restore(RestoreArgs),
    /// The switch of a Beside restore: make the live database read-only,
    /// export what the restored one lacks next to the dump, and wait until
    /// the FoodApp reaches the restored database. Prints one JSON line.
    Switch(agent::switch::SwitchArgs),
}

/// Resolves on SIGTERM or Ctrl-C.
async fn terminated() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// One TLS crypto provider for the whole process, chosen before any client
/// exists: rustls panics when it has to pick between several (a build with
/// both aws-lc-rs and ring, as the test builds are).
fn install_crypto_provider() {
    // Err means one is installed already, which is just as good.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    install_crypto_provider();
    init_logging();
    let result = match Cli::parse().command {
        Command::Run(args) => runner::run(args).await,
        Command::Crd => crd::to_yaml(&crd::all())
            .map(|y| print!("{y}"))
            .map_err(Into::into),
        Command::Rbac { markdown: true, .. } => {
            print!("{}", foodapp_operator::rbac::markdown());
            Ok(())
        }
        Command::Rbac {
            leader_election, ..
        } => {
            use foodapp_operator::rbac;
            let (rules, command) = if leader_election {
                (
                    rbac::LEADER_ELECTION_RULES,
                    "foodapp-operator rbac --leader-election",
                )
            } else {
                (rbac::RULES, "foodapp-operator rbac")
            };
            rbac::yaml(rules, command)
                .map(|y| print!("{y}"))
                .map_err(Into::into)
        }
        Command::Render {
            file,
            operator_image,
        } => std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))
            .and_then(|yaml| render::render(&yaml, &operator_image))
            .map(|y| print!("{y}")),
        Command::NginxConfig {
            listen,
            upstream,
            dir,
            requests_per_second,
            burst,
            tls_listen,
            tls_cert,
            tls_key,
            hsts,
            proxy_protocol,
            trusted_proxies,
            health_listen,
        } => {
            let dir = dir.display().to_string();
            let tls = tls_listen.map(|listen| foodapp_operator::build::nginx::Tls {
                listen,
                certificate: tls_cert.unwrap_or_default(),
                key: tls_key.unwrap_or_default(),
                redirect_http: true,
                hsts,
            });
            print!(
                "{}",
                foodapp_operator::build::nginx::render(
                    &foodapp_operator::build::nginx::GatewayConfig {
                        listen,
                        workers: 2,
                        upstreams: upstream,
                        requests_per_second,
                        burst,
                        max_body_kb: 64,
                        access_log: format!("{dir}/access.log"),
                        error_log: format!("{dir}/error.log"),
                        temp_dir: dir,
                        health_listen,
                        tls,
                        proxy_protocol,
                        trusted_proxies,
                    }
                )
            );
            Ok(())
        }
        Command::Backup(args) => backup(args).await,
        Command::Restore(args) => restore(args).await,
        Command::Switch(args) => switch(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("foodapp-operator: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let started = k8s_openapi::jiff::Timestamp::now();
    let store = &args.store;
    // Inside a cluster each run is recorded as a FoodAppBackup.
    let name = args.backup_name.clone().or_else(|| {
        args.scheduled
            .then(|| record::scheduled_name(&store.foodapp, &agent::timestamp(chrono::Utc::now())))
    });
    let reporter = match (&name, record::in_cluster()) {
        (Some(name), true) => {
            let client = kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API")?;
            let create_for = args.scheduled.then_some(store.foodapp.as_str());
            if let Err(e) = record::report(
                &client,
                &store.namespace,
                name,
                create_for,
                &record::running(started),
            )
            .await
            {
                tracing::warn!(error = %e, "could not record the backup as running");
            }
            Some((client, name.clone()))
        }
        _ => None,
    };
    let result = agent::backup::run(&args).await;
    if let Some((client, name)) = &reporter {
        let completed = k8s_openapi::jiff::Timestamp::now().to_string();
        let status = match &result {
            Ok(o) => FoodAppBackupStatus {
                phase: Some(JobPhase::Succeeded),
                object_key: Some(o.object_key.clone()),
                size_bytes: Some(o.size_bytes as i64),
                sha256: Some(o.sha256.clone()),
                started_at: Some(started.to_string()),
                completed_at: Some(completed),
                verified: Some(o.verified),
                error: None,
                reason: None,
            },
            Err(e) => FoodAppBackupStatus {
                phase: Some(JobPhase::Failed),
                started_at: Some(started.to_string()),
                completed_at: Some(completed),
                error: Some(e.to_string()),
                reason: Some(e.reason().to_owned()),
                ..Default::default()
            },
        };
        if let Err(e) = record::report(client, &store.namespace, name, None, &status).await {
            tracing::warn!(error = %e, "could not record the backup result");
        }
    }
    let outcome = result?;
    for key in &outcome.deleted {
        tracing::info!(key, "deleted by retention");
    }
    println!("{}", serde_json::to_string(&outcome)?);
    Ok(())
}

async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    // SIGTERM (a deleted Job, a drained node) ends the restore at once: the
    // dropped future kills psql before any COMMIT, so nothing is applied.
    let outcome = tokio::select! {
        outcome = agent::restore::run(&args) => outcome?,
        () = terminated() => anyhow::bail!("terminated: the restore was rolled back"),
    };
    agent::report_termination(&outcome);
    println!("{}", serde_json::to_string(&outcome)?);
    Ok(())
}

async fn switch(args: agent::switch::SwitchArgs) -> anyhow::Result<()> {
    let outcome = tokio::select! {
        outcome = agent::switch::run(&args) => outcome?,
        () = terminated() => {
            let said = agent::switch::on_terminate(&args).await?;
            anyhow::bail!("terminated: {said}");
        }
    };
    agent::report_termination(&outcome);
    println!("{}", serde_json::to_string(&outcome)?);
    Ok(())
}
