//! `foodapp-operator`: the controller, CRD and manifest printing, and the
//! backup/restore agent.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
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
    /// Print, offline, every object the controller would create for a FoodApp.
    Render {
        /// The FoodApp YAML file.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Image the backup and restore Jobs run.
        #[arg(long, env = "OPERATOR_IMAGE", default_value = crd::DEFAULT_OPERATOR_IMAGE)]
        operator_image: String,
    },
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

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    let result = match Cli::parse().command {
        Command::Run(args) => runner::run(args).await,
        Command::Crd => crd::to_yaml(&crd::all())
            .map(|y| print!("{y}"))
            .map_err(Into::into),
        Command::Render {
            file,
            operator_image,
        } => std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))
            .and_then(|yaml| render::render(&yaml, &operator_image))
            .map(|y| print!("{y}")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("foodapp-operator: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
