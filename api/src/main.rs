//! `foodapp-api`: serve the API, apply migrations, or seed a demo menu.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use foodapp_api::config::{DatabaseArgs, ServeArgs};
use foodapp_api::{AppState, Settings, auth, db, seed, telemetry};

#[derive(Parser)]
#[command(name = "foodapp-api", version, about = "FoodApp ordering API", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API. Refuses to start when the schema is not current.
    Serve(Box<ServeArgs>),
    /// Apply the embedded database migrations and exit (the migration Job runs this).
    Migrate(DatabaseArgs),
    /// Create the demo menu; running it again changes nothing.
    SeedDemo {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Also create demo accounts (customer, kitchen, courier, manager
        /// @demo.foodapp.io, password `demo-password`). Never in production.
        #[arg(long)]
        demo_users: bool,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    telemetry::init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Migrate(args) => migrate(args).await,
        Command::SeedDemo {
            database,
            demo_users,
        } => seed_demo(database, demo_users).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal");
            eprintln!("foodapp-api: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn migrate(args: DatabaseArgs) -> anyhow::Result<()> {
    let pool = db::connect(&args)
        .await
        .context("connecting to DATABASE_URL")?;
    let before = db::applied_version(&pool).await?;
    db::MIGRATOR
        .run(&pool)
        .await
        .context("applying migrations")?;
    let after = db::applied_version(&pool).await?;
    tracing::info!(before, after, "migrations applied");
    Ok(())
}

async fn seed_demo(args: DatabaseArgs, demo_users: bool) -> anyhow::Result<()> {
    let pool = db::connect(&args)
        .await
        .context("connecting to DATABASE_URL")?;
    db::check_schema(&pool).await?;
    let s = seed::seed_demo(&pool, demo_users).await?;
    tracing::info!(
        categories = s.categories,
        items = s.items,
        users = s.users,
        "demo data seeded"
    );
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if let Some(n) = args.hash_concurrency {
        auth::password::set_concurrency(n);
    }
    if args.jwt_secret.len() < 32 {
        anyhow::bail!("JWT_SECRET must be at least 32 bytes long");
    }
    let pool = connect_patiently(&args.database).await?;
    db::check_schema(&pool).await?;
    match (&args.admin_email, &args.admin_password) {
        (Some(email), Some(password)) => {
            if auth::bootstrap_admin(&pool, email, password).await? {
                tracing::info!(email, "administrator created");
            }
        }
        (None, None) => {}
        _ => anyhow::bail!("set both ADMIN_EMAIL and ADMIN_PASSWORD, or neither"),
    }
    let state = AppState::new(
        pool,
        Settings {
            jwt_secret: args.jwt_secret.into_bytes(),
            access_token_ttl: args.access_token_ttl,
            refresh_token_ttl: args.refresh_token_ttl,
            order_auto_reject_after: args.order_auto_reject_after,
            max_body_bytes: args.max_body_bytes,
            menu_cache_ttl: args.menu_cache_ttl,
            max_unpaid_orders: args.max_unpaid_orders,
            live_streams_per_user: args.live_streams_per_user,
            live_streams_total: args.live_streams_total,
        },
    );
    let background = foodapp_api::start_background(&state);
    let app = foodapp_api::router(state);
    let listener = tokio::net::TcpListener::bind(args.listen_addr)
        .await
        .with_context(|| format!("listening on {}", args.listen_addr))?;
    tracing::info!(addr = %args.listen_addr, "serving");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        let mut stop_rx = stop_rx;
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            })
            .await
    });
    shutdown_signal().await;
    tracing::info!(grace = ?args.shutdown_grace, "shutting down; finishing in-flight requests");
    let _ = stop_tx.send(true);
    for task in background {
        task.abort();
    }
    finish(server, args.shutdown_grace).await
}

/// The pool, once the database answers: a server restarting, or the
/// moment a restore switches databases, is waited for (a minute) rather than
/// turned into a crash and a restart.
async fn connect_patiently(args: &DatabaseArgs) -> anyhow::Result<sqlx::PgPool> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match db::connect(args).await {
            Ok(pool) => return Ok(pool),
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "the database does not answer yet; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e).context("connecting to DATABASE_URL"),
        }
    }
}

async fn finish(
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    grace: Duration,
) -> anyhow::Result<()> {
    match tokio::time::timeout(grace, server).await {
        Ok(joined) => Ok(joined.context("server task")??),
        Err(_) => {
            tracing::warn!("grace period over; closing remaining connections");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
