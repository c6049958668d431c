//! Reads what a FoodApp's spec points at and what already exists: its
//! Secrets, the credentials Secret, and the children whose state decides the
//! next step. The generated Secrets are created here, once, where the client
//! is: validation stays pure, and a value is never generated twice.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};

use crate::build::{self, Inputs, Model, names, secrets};
use crate::controller::ownership::{self, Owners};
use crate::crd::foreign::{Cluster, ObjectStore, ScheduledBackup};
use crate::crd::{Engine, FoodApp, FoodAppBackup, FoodAppRestore};

/// The world as the reconcile found it.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub db_secret: Option<Secret>,
    pub api_secret: Option<Secret>,
    /// The administrator Secret (generated, or the user's).
    pub admin_secret: Option<Secret>,
    /// Whether the S3 credentials Secret exists (None: no backup configured).
    pub credentials_secret_found: Option<bool>,
    pub statefulset: Option<StatefulSet>,
    /// BuiltIn: the pod of the database in use (its `prepare` step reports
    /// the data directory's PostgreSQL major).
    pub db_pod: Option<Pod>,
    /// The Jobs a PostgreSQL upgrade runs itself (pausing and giving back
    /// writes), while one may run.
    pub upgrade_jobs: Vec<Job>,
    /// The migration Job of the spec's API image.
    pub migration_job: Option<Job>,
    pub api_deployment: Option<Deployment>,
    pub gateway_deployment: Option<Deployment>,
    pub gateway_service: Option<Service>,
    pub cron_job: Option<CronJob>,
    pub backups: Vec<FoodAppBackup>,
    pub restores: Vec<FoodAppRestore>,
    /// The Secret with the gateway's certificate, when TLS is on.
    pub gateway_tls_secret: Option<Secret>,
    /// Engine External: the user's Secret naming the server.
    pub external_secret: Option<Secret>,
    /// Engine CloudNativePG: what its operator made.
    pub cnpg: Option<CnpgObserved>,
    /// Who may own this FoodApp's objects (`ownership`).
    pub owners: Owners,
    /// Objects of a derived name that are not this FoodApp's, each with
    /// why; left out of everything above and used for nothing.
    pub conflicts: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct CnpgObserved {
    /// Whether the API server serves `postgresql.cnpg.io/v1` clusters.
    pub installed: bool,
    pub cluster: Option<Cluster>,
    /// `<cluster>-app`: the app login CloudNativePG generated.
    pub app_secret: Option<Secret>,
    /// `<cluster>-backup`, when backups are on.
    pub scheduled_backup: Option<ScheduledBackup>,
    /// Whether the API server serves the Barman Cloud Plugin's
    /// `barmancloud.cnpg.io/v1` ObjectStores (the plugin is installed).
    pub plugin_installed: bool,
    /// `<name>-archive`, when backups are on.
    pub object_store: Option<ObjectStore>,
    /// The FoodApp's one Cluster labelled `foodapp.io/in-use`, looked for
    /// when the FoodApp has no `foodapp.io/database-cluster` annotation.
    pub labelled_in_use: Option<String>,
}

/// Whether the API server serves kind K (its CRD is installed): a list of
/// a kind it does not know is a 404, of a kind it knows a (maybe empty) list.
pub async fn serves<K>(client: &Client, ns: &str) -> Result<bool, kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match Api::<K>::namespaced(client.clone(), ns)
        .list(&ListParams::default().limit(1))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

async fn observe_cnpg(
    client: &Client,
    app: &FoodApp,
    ns: &str,
    owners: &Owners,
) -> Result<CnpgObserved, kube::Error> {
    if !serves::<Cluster>(client, ns).await? {
        return Ok(CnpgObserved::default());
    }
    let name = app.metadata.name.as_deref().unwrap_or_default();
    let clusters = Api::<Cluster>::namespaced(client.clone(), ns);
    let labelled_in_use = labelled_in_use(&clusters, app, owners).await?;
    let cluster = &labelled_in_use
        .clone()
        .unwrap_or_else(|| build::db_cluster(app));
    let plugin_installed = serves::<ObjectStore>(client, ns).await?;
    Ok(CnpgObserved {
        installed: true,
        plugin_installed,
        object_store: match (&app.spec.backup, plugin_installed) {
            (Some(_), true) => {
                Api::<ObjectStore>::namespaced(client.clone(), ns)
                    .get_opt(&names::cnpg_object_store(name))
                    .await?
            }
            _ => None,
        },
        cluster: clusters
            .get_opt(cluster)
            .await?
            .filter(|c| owners.owns("Cluster", &c.metadata)),
        labelled_in_use,
        app_secret: Api::<Secret>::namespaced(client.clone(), ns)
            .get_opt(&names::cnpg_app_secret(cluster))
            .await?,
        scheduled_backup: Api::<ScheduledBackup>::namespaced(client.clone(), ns)
            .get_opt(&names::cnpg_scheduled_backup(cluster))
            .await?,
    })
}

/// When the FoodApp carries no `foodapp.io/database-cluster` annotation
/// (it was made again under Retain after a restore switched, or it uses
/// `<name>-db`): this FoodApp's one Cluster labelled in use, if any.
async fn labelled_in_use(
    clusters: &Api<Cluster>,
    app: &FoodApp,
    owners: &Owners,
) -> Result<Option<String>, kube::Error> {
    let name = app.metadata.name.as_deref().unwrap_or_default();
    let annotated = app
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(build::DATABASE_CLUSTER_ANNOTATION));
    if annotated {
        return Ok(None);
    }
    let labelled = clusters
        .list(&ListParams::default().labels(&format!(
            "{}={name},{}=true",
            build::cnpg::APP_LABEL,
            build::cnpg::IN_USE_LABEL
        )))
        .await?
        .items
        .into_iter()
        .filter(|c| owners.owns("Cluster", &c.metadata))
        .filter_map(|c| c.metadata.name)
        .filter(|c| build::is_own_database(name, c))
        .collect::<Vec<_>>();
    Ok(match labelled.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    })
}

/// Creates `secret` unless one of that name exists; returns what is there.
/// A Secret is never overwritten: it holds a password the data depends on.
/// Written with this FoodApp's ownership record.
pub async fn create_secret_once(
    client: &Client,
    ns: &str,
    secret: &Secret,
    owners: &Owners,
) -> Result<Secret, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    if let Some(existing) = api.get_opt(name).await? {
        return Ok(existing);
    }
    let mut secret = secret.clone();
    secret
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .extend(owners.record("Secret", name));
    match api.create(&PostParams::default(), &secret).await {
        Ok(created) => Ok(created),
        // Created by someone else meanwhile: what it is, is checked.
        Err(kube::Error::Api(e)) if e.code == 409 => api.get(name).await,
        Err(e) => Err(e),
    }
}

/// A generated Secret as found: kept if it is this FoodApp's (given its
/// record now if an earlier release or FoodApp wrote it), otherwise taken
/// out, and why in `conflicts`.
async fn own_secret(
    client: &Client,
    ns: &str,
    secret: &mut Option<Secret>,
    owners: &Owners,
    conflicts: &mut Vec<String>,
) -> Result<(), kube::Error> {
    let Some(found) = secret.as_ref() else {
        return Ok(());
    };
    if let Err(ownership::NotOurs(why)) = owners.check("Secret", &found.metadata) {
        conflicts.push(why);
        *secret = None;
        return Ok(());
    }
    if owners.needs_record(&found.metadata) {
        let name = found.metadata.name.as_deref().unwrap_or_default();
        let patch = serde_json::json!({"metadata": {"annotations": owners.record("Secret", name)}});
        *secret = Some(
            Api::<Secret>::namespaced(client.clone(), ns)
                .patch(
                    name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await?,
        );
    }
    Ok(())
}

/// A generated Secret, created unless it exists, and checked like one found.
async fn generated(
    client: &Client,
    ns: &str,
    secret: &Secret,
    observed: &mut Observed,
) -> Result<Option<Secret>, kube::Error> {
    let mut found = Some(create_secret_once(client, ns, secret, &observed.owners).await?);
    own_secret(
        client,
        ns,
        &mut found,
        &observed.owners,
        &mut observed.conflicts,
    )
    .await?;
    Ok(found)
}

/// Makes sure the generated Secrets exist, creating the missing ones with
/// fresh values. The values used are those stored, whoever made them.
async fn ensure_generated_secrets(
    client: &Client,
    app: &FoodApp,
    observed: &mut Observed,
) -> Result<(), kube::Error> {
    let ns = app.metadata.namespace.as_deref().unwrap_or("default");
    let fresh = Model::new(
        app,
        Inputs {
            db_password: secrets::generate(),
            connection: None,
            jwt_secret: secrets::generate(),
            api_rollout_image: None,
            run_migration: false,
            restoring: false,
            agent_image: String::new(),
        },
    );
    // Without metadata there is nothing to name; validation reports it.
    let Ok(fresh) = fresh else { return Ok(()) };
    // Only the built-in server takes the generated password.
    if observed.db_secret.is_none() && app.spec.database.engine == Engine::BuiltIn {
        observed.db_secret = generated(client, ns, &secrets::database(&fresh), observed).await?;
    }
    if observed.api_secret.is_none() {
        observed.api_secret = generated(client, ns, &secrets::api(&fresh), observed).await?;
    }
    if observed.admin_secret.is_none() && fresh.generates_admin_secret() {
        let admin = secrets::admin(&fresh, &secrets::generate());
        observed.admin_secret = generated(client, ns, &admin, observed).await?;
    }
    Ok(())
}

/// `obj` if it is this FoodApp's. One that is not is left out here and
/// reported by `apply`, which refuses to write over it.
fn ours<K: kube::Resource<DynamicType = ()>>(obj: Option<K>, owners: &Owners) -> Option<K> {
    obj.filter(|o| owners.owns(&K::kind(&()), o.meta()))
}

pub async fn observe(
    client: &Client,
    app: &FoodApp,
    key: &ownership::Key,
) -> Result<Observed, kube::Error> {
    let ns = app.metadata.namespace.as_deref().unwrap_or("default");
    let name = app.metadata.name.as_deref().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let credentials_secret_found = match &app.spec.backup {
        Some(b) => Some(secrets.get_opt(&b.s3.credentials_secret).await?.is_some()),
        None => None,
    };
    let admin_secret_name = app
        .spec
        .api
        .admin_secret
        .clone()
        .unwrap_or_else(|| names::admin_secret(name));
    let backups: Api<FoodAppBackup> = Api::namespaced(client.clone(), ns);
    let restores: Api<FoodAppRestore> = Api::namespaced(client.clone(), ns);
    let retry = app
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(build::RETRY_MIGRATION_ANNOTATION));
    let mut observed = Observed {
        db_secret: secrets.get_opt(&names::db(name)).await?,
        api_secret: secrets.get_opt(&names::api_secret(name)).await?,
        admin_secret: secrets.get_opt(&admin_secret_name).await?,
        credentials_secret_found,
        statefulset: Api::<StatefulSet>::namespaced(client.clone(), ns)
            .get_opt(&crate::build::db_cluster(app))
            .await?,
        migration_job: Api::<Job>::namespaced(client.clone(), ns)
            .get_opt(&names::migration_job(
                name,
                &app.spec.api.image,
                retry.map(String::as_str),
            ))
            .await?,
        db_pod: match app.spec.database.engine {
            Engine::BuiltIn => Api::<Pod>::namespaced(client.clone(), ns)
                .list(&ListParams::default().labels(&format!(
                    "{}={}-0",
                    build::postgres::POD_NAME_LABEL,
                    build::db_cluster(app)
                )))
                .await?
                .items
                .into_iter()
                .next(),
            Engine::CloudNativePG | Engine::External => None,
        },
        upgrade_jobs: Vec::new(),
        api_deployment: deployments.get_opt(&names::api(name)).await?,
        gateway_deployment: deployments.get_opt(&names::gateway(name)).await?,
        gateway_service: Api::<Service>::namespaced(client.clone(), ns)
            .get_opt(&names::gateway(name))
            .await?,
        cron_job: Api::<CronJob>::namespaced(client.clone(), ns)
            .get_opt(&names::backup(name))
            .await?,
        backups: backups
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|b| b.spec.food_app_ref == name)
            .collect(),
        restores: restores
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|r| r.spec.food_apps().any(|a| a == name))
            .collect(),
        gateway_tls_secret: match &app.spec.gateway.tls {
            Some(tls) => {
                let name = tls
                    .secret_name
                    .clone()
                    .unwrap_or_else(|| names::gateway_tls(name));
                secrets.get_opt(&name).await?
            }
            None => None,
        },
        external_secret: match &app.spec.database.external {
            Some(e) => secrets.get_opt(&e.secret_name).await?,
            None => None,
        },
        cnpg: None,
        owners: Owners::default(),
        conflicts: Vec::new(),
    };
    let owners = Owners::of(app, &observed.restores, key);
    observed.cnpg = match app.spec.database.engine {
        Engine::CloudNativePG => Some(observe_cnpg(client, app, ns, &owners).await?),
        Engine::BuiltIn | Engine::External => None,
    };
    // What is not this FoodApp's is left out: the generated Secrets are
    // reported here (nothing is built without them), the other children
    // by `apply`.
    let mut conflicts = Vec::new();
    own_secret(client, ns, &mut observed.db_secret, &owners, &mut conflicts).await?;
    own_secret(
        client,
        ns,
        &mut observed.api_secret,
        &owners,
        &mut conflicts,
    )
    .await?;
    if app.spec.api.admin_secret.is_none() {
        own_secret(
            client,
            ns,
            &mut observed.admin_secret,
            &owners,
            &mut conflicts,
        )
        .await?;
    }
    observed.statefulset = ours(observed.statefulset.take(), &owners);
    observed.migration_job = ours(observed.migration_job.take(), &owners);
    observed.api_deployment = ours(observed.api_deployment.take(), &owners);
    observed.gateway_deployment = ours(observed.gateway_deployment.take(), &owners);
    observed.gateway_service = ours(observed.gateway_service.take(), &owners);
    observed.cron_job = ours(observed.cron_job.take(), &owners);
    observed.conflicts = conflicts;
    observed.owners = owners.clone();
    let upgrading = app
        .status
        .as_ref()
        .is_some_and(|s| s.database_upgrade.is_some())
        || crate::controller::upgrade::live_image(&observed)
            .is_some_and(|live| live != app.spec.database.image);
    if upgrading && app.spec.database.engine == Engine::BuiltIn {
        observed.upgrade_jobs = Api::<Job>::namespaced(client.clone(), ns)
            .list(&ListParams::default().labels(&format!(
                "app.kubernetes.io/instance={name},{}",
                build::restore::UPGRADE_LABEL
            )))
            .await?
            .items
            .into_iter()
            .filter(|j| owners.owns("Job", &j.metadata))
            .collect();
    }
    // Nothing is built while a generated Secret is someone else's.
    if observed.conflicts.is_empty() {
        ensure_generated_secrets(client, app, &mut observed).await?;
    }
    Ok(observed)
}
