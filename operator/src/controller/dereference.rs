//! Reads what a FoodApp's spec points at and what already exists: its
//! Secrets, the credentials Secret, and the children whose state decides the
//! next step. The only stage besides `apply` that talks to the API server.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::ListParams;
use kube::{Api, Client};

use crate::build::names;
use crate::crd::{FoodApp, FoodAppBackup, FoodAppRestore};

/// The world as the reconcile found it.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub db_secret: Option<Secret>,
    pub api_secret: Option<Secret>,
    /// Whether the S3 credentials Secret exists (None: no backup configured).
    pub credentials_secret_found: Option<bool>,
    pub statefulset: Option<StatefulSet>,
    /// The migration Job of the spec's API image.
    pub migration_job: Option<Job>,
    pub api_deployment: Option<Deployment>,
    pub gateway_deployment: Option<Deployment>,
    pub gateway_service: Option<Service>,
    pub cron_job: Option<CronJob>,
    pub backups: Vec<FoodAppBackup>,
    pub restores: Vec<FoodAppRestore>,
}

pub async fn observe(client: &Client, app: &FoodApp) -> Result<Observed, kube::Error> {
    let ns = app.metadata.namespace.as_deref().unwrap_or("default");
    let name = app.metadata.name.as_deref().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let credentials_secret_found = match &app.spec.backup {
        Some(b) => Some(secrets.get_opt(&b.s3.credentials_secret).await?.is_some()),
        None => None,
    };
    let backups: Api<FoodAppBackup> = Api::namespaced(client.clone(), ns);
    let restores: Api<FoodAppRestore> = Api::namespaced(client.clone(), ns);
    Ok(Observed {
        db_secret: secrets.get_opt(&names::db(name)).await?,
        api_secret: secrets.get_opt(&names::api_secret(name)).await?,
        credentials_secret_found,
        statefulset: Api::<StatefulSet>::namespaced(client.clone(), ns)
            .get_opt(&names::db(name))
            .await?,
        migration_job: Api::<Job>::namespaced(client.clone(), ns)
            .get_opt(&names::migration_job(name, &app.spec.api.image))
            .await?,
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
            .filter(|r| r.spec.food_app_ref == name)
            .collect(),
    })
}
