//! `foodapp-operator run`: leader election on a Lease, the controller while
//! leading, and an HTTP port with /healthz, /readyz and /metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};
use kube_leader_election::{LeaseLock, LeaseLockParams, LeaseLockResult};
use tracing::{error, info, warn};

use crate::controller::{self, Context, backups, operations, ownership};
use crate::crd::{FoodApp, FoodAppBackup, FoodAppRestore};
use crate::metrics::Metrics;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Address of the /healthz, /readyz and /metrics endpoints.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8081")]
    pub metrics_addr: SocketAddr,
    /// Image the backup and restore Jobs run (this operator's own image).
    #[arg(long, env = "OPERATOR_IMAGE", default_value = crate::crd::DEFAULT_OPERATOR_IMAGE)]
    pub operator_image: String,
    /// Namespace of the leader-election Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "foodapp-system")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "foodapp-operator")]
    pub pod_name: String,
    /// Turn leader election off (a single replica, or local runs).
    #[arg(long, env = "DISABLE_LEADER_ELECTION")]
    pub disable_leader_election: bool,
}

pub const LEASE_NAME: &str = "foodapp-operator-leader";
const LEASE_TTL: Duration = Duration::from_secs(15);
/// Renew this often; a renewal that keeps failing for longer than
/// `RENEW_DEADLINE` ends leadership before the lease can expire under us.
const RENEW_EVERY: Duration = Duration::from_secs(5);
const RENEW_DEADLINE: Duration = Duration::from_secs(10);

pub fn lease_lock(client: Client, namespace: &str, holder: &str) -> LeaseLock {
    LeaseLock::new(
        client,
        namespace,
        LeaseLockParams {
            holder_id: holder.to_owned(),
            lease_name: LEASE_NAME.to_owned(),
            lease_ttl: LEASE_TTL,
        },
    )
}

/// Keeps the lease while leading. Returns (to exit) when another replica
/// holds it, or when no renewal succeeded within the deadline: transient
/// API errors are retried, not fatal.
pub async fn keep_lease(lease: LeaseLock) -> String {
    let mut renewed = std::time::Instant::now();
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        match lease.try_acquire_or_renew().await {
            Ok(LeaseLockResult::Acquired(_)) => renewed = std::time::Instant::now(),
            Ok(_) => return "another replica holds the lease".to_owned(),
            Err(e) if renewed.elapsed() < RENEW_DEADLINE => {
                warn!(error = %e, "renewing the lease failed; retrying");
            }
            Err(e) => {
                return format!("could not renew the lease for {RENEW_DEADLINE:?}: {e}");
            }
        }
    }
}

/// The Secret in the operator's namespace holding the key that signs
/// ownership records (`controller::ownership`).
pub const KEY_SECRET: &str = "foodapp-operator-key";

/// The signing key: read from its Secret, which the first replica to start
/// creates (a replica that loses the race reads the winner's).
async fn signing_key(client: &Client, ns: &str) -> anyhow::Result<ownership::Key> {
    use kube::api::PostParams;
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let read = |s: Secret| {
        s.data
            .and_then(|d| d.get(ownership::KEY_SECRET_KEY).map(|b| b.0.clone()))
            .filter(|k| k.len() >= 32)
            .map(ownership::Key::new)
            .with_context(|| {
                format!(
                    "Secret {ns}/{KEY_SECRET} has no key `{}` of 32 bytes or more",
                    ownership::KEY_SECRET_KEY
                )
            })
    };
    if let Some(existing) = api
        .get_opt(KEY_SECRET)
        .await
        .context("reading the signing key")?
    {
        return read(existing);
    }
    let fresh = ownership::Key::random();
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(KEY_SECRET.to_owned()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_owned(),
                    crate::build::MANAGER.to_owned(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(
            [(
                ownership::KEY_SECRET_KEY.to_owned(),
                k8s_openapi::ByteString(fresh.bytes().to_vec()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            info!(
                secret = KEY_SECRET,
                "created the key that signs ownership records"
            );
            Ok(fresh)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => read(api.get(KEY_SECRET).await?),
        Err(e) => Err(e).context("creating the signing key"),
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let metrics = Arc::new(Metrics::default());
    let leading = Arc::new(AtomicBool::new(args.disable_leader_election));
    tokio::spawn(serve_http(
        args.metrics_addr,
        metrics.clone(),
        leading.clone(),
    ));

    let lease = (!args.disable_leader_election)
        .then(|| lease_lock(client.clone(), &args.lease_namespace, &args.pod_name));
    if let Some(lease) = &lease {
        info!(lease = LEASE_NAME, "waiting to become the leader");
        loop {
            match lease.try_acquire_or_renew().await {
                Ok(LeaseLockResult::Acquired(_)) => break,
                Ok(_) => {}
                Err(e) => warn!(error = %e, "leader election failed; retrying"),
            }
            tokio::time::sleep(RENEW_EVERY).await;
        }
        leading.store(true, Ordering::SeqCst);
        info!("leading");
    }
    let renew = lease.map(|lease| {
        tokio::spawn(async move {
            let why = keep_lease(lease).await;
            // Another replica may act now: stop at once rather than
            // reconcile side by side with it.
            error!(reason = why, "lost the leader lease; exiting");
            std::process::exit(1);
        })
    });

    let key = signing_key(&client, &args.lease_namespace).await?;
    crate::build::set_secret_hash_key(key.derive("secret-hash"));
    let ctx = Arc::new(Context::new(client.clone(), metrics, args.operator_image).with_key(key));
    let apps: Api<FoodApp> = Api::all(client.clone());
    let cfg = watcher::Config::default().labels("app.kubernetes.io/managed-by=foodapp-operator");
    let foodapps = Controller::new(apps, watcher::Config::default())
        .owns(Api::<StatefulSet>::all(client.clone()), cfg.clone())
        .owns(Api::<Deployment>::all(client.clone()), cfg.clone())
        .owns(Api::<Job>::all(client.clone()), cfg.clone())
        .owns(Api::<Service>::all(client.clone()), cfg.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), cfg.clone())
        .owns(Api::<CronJob>::all(client.clone()), cfg.clone())
        // The generated Secrets are not owned (they outlive the FoodApp with
        // its data), so they are matched by their instance label.
        .watches(Api::<Secret>::all(client.clone()), cfg, |s| {
            let app = s
                .metadata
                .labels
                .as_ref()?
                .get("app.kubernetes.io/instance")?;
            Some(ObjectRef::new(app).within(s.metadata.namespace.as_deref()?))
        })
        .watches(
            Api::<FoodAppBackup>::all(client.clone()),
            watcher::Config::default(),
            |b| {
                Some(
                    ObjectRef::new(&b.spec.food_app_ref)
                        .within(b.metadata.namespace.as_deref().unwrap_or_default()),
                )
            },
        )
        .watches(
            Api::<FoodAppRestore>::all(client.clone()),
            watcher::Config::default(),
            |r| {
                let ns = r.metadata.namespace.clone().unwrap_or_default();
                r.spec
                    .food_apps()
                    .map(|a| ObjectRef::new(a).within(&ns))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(
            controller::reconcile,
            controller::error_policy::<FoodApp>,
            ctx.clone(),
        )
        .for_each(|r| log_result("FoodApp", r));
    let backups = Controller::new(
        Api::<FoodAppBackup>::all(client.clone()),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(
        backups::reconcile,
        controller::error_policy::<FoodAppBackup>,
        ctx.clone(),
    )
    .for_each(|r| log_result("FoodAppBackup", r));
    // A restore's Jobs wake it: the switch happens the moment the agent's
    // pod says writes are paused.
    let restores = Controller::new(
        Api::<FoodAppRestore>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Job>::all(client.clone()), watcher::Config::default())
    .shutdown_on_signal()
    .run(
        operations::reconcile,
        controller::error_policy::<FoodAppRestore>,
        ctx,
    )
    .for_each(|r| log_result("FoodAppRestore", r));
    tokio::join!(foodapps, backups, restores);
    if let Some(renew) = renew {
        renew.abort();
    }
    info!("controller stopped");
    Ok(())
}

async fn serve_http(addr: SocketAddr, metrics: Arc<Metrics>, leading: Arc<AtomicBool>) {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let leading = leading.clone();
                async move {
                    if leading.load(Ordering::SeqCst) {
                        "leader"
                    } else {
                        "standby"
                    }
                }
            }),
        )
        .route("/metrics", get(move || async move { metrics.encode() }));
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            if let Err(e) = axum::serve(listener, app).await {
                error!(error = %e, "metrics server stopped");
            }
        }
        Err(e) => error!(error = %e, %addr, "cannot listen for metrics"),
    }
}

async fn log_result<T, E1, E2>(
    kind: &'static str,
    result: Result<T, kube::runtime::controller::Error<E1, E2>>,
) where
    E1: std::error::Error + 'static,
    E2: std::error::Error + 'static,
{
    use kube::runtime::controller::Error as ControllerError;
    match result {
        Ok(_) => {}
        // A child's event after its owner was deleted: nothing to do.
        Err(ControllerError::ObjectNotFound(obj)) => {
            tracing::debug!(kind, object = %obj, "event for an object that is gone");
        }
        Err(e) => warn!(kind, error = %e, "reconcile"),
    }
}
