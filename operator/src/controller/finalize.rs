//! What deleting a FoodApp does to its data, decided when it is deleted
//! (not through owner references set at some earlier pass): under Retain the
//! volume and the generated Secrets stay, so re-creating a FoodApp of the
//! same name finds its data and logs in with the same password; under Delete
//! both go. Everything else is owned by the FoodApp and garbage-collected.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::DeleteParams;
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};
use tracing::info;

use super::conditions::Reason;
use super::{Context, Error};
use crate::build::names;
use crate::crd::{DeletionPolicy, FoodApp};

/// The names of what holds the data: the claim, then the generated Secrets.
pub fn data_objects(app: &FoodApp) -> (String, Vec<String>) {
    let name = app.name_any();
    let mut secrets = vec![names::db(&name), names::api_secret(&name)];
    if app.spec.api.admin_secret.is_none() {
        secrets.push(names::admin_secret(&name));
    }
    (names::claim_of(&crate::build::db_cluster(app)), secrets)
}

/// Deletes `name` unless it is already gone.
async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<bool, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Applies the deletion policy; the finalizer comes off once this succeeds.
pub async fn delete_data(client: &Client, app: &FoodApp) -> Result<Vec<String>, kube::Error> {
    let ns = app.namespace().unwrap_or_default();
    let (claim, secrets) = data_objects(app);
    let mut deleted = Vec::new();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    if delete_if_present(&claims, &claim).await? {
        deleted.push(format!("PersistentVolumeClaim {claim}"));
    }
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for s in secrets {
        if delete_if_present(&secret_api, &s).await? {
            deleted.push(format!("Secret {s}"));
        }
    }
    Ok(deleted)
}

pub async fn cleanup(app: &FoodApp, ctx: &Context) -> Result<Action, Error> {
    match app.spec.deletion_policy {
        DeletionPolicy::Retain => {
            let (claim, secrets) = data_objects(app);
            let note = format!(
                "deletionPolicy Retain: kept PersistentVolumeClaim {claim} and Secrets {}; a FoodApp of the same name in this namespace uses them again",
                secrets.join(", ")
            );
            info!("{note}");
            ctx.event(app, Reason::Succeeded, "Retain", note).await;
        }
        DeletionPolicy::Delete => {
            let deleted = delete_data(&ctx.client, app)
                .await
                .map_err(Error::Cleanup)?;
            let note = format!("deletionPolicy Delete: deleted {}", deleted.join(", "));
            info!("{note}");
            ctx.event(app, Reason::Succeeded, "Delete", note).await;
        }
    }
    Ok(Action::await_change())
}
