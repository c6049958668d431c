//! One operation per FoodApp at a time: the FoodApp names the restore that
//! holds it (`foodapp.io/restore`, taken with a resourceVersion
//! precondition) and, when that restore needs the API stopped,
//! `foodapp.io/api-stopped`.

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::super::{Context, Error};
use crate::build::{API_STOPPED_ANNOTATION, RESTORE_ANNOTATION};
use crate::crd::FoodApp;

/// The restore holding the FoodApp, if any.
pub fn holder(app: &FoodApp) -> Option<&str> {
    app.metadata
        .annotations
        .as_ref()?
        .get(RESTORE_ANNOTATION)
        .map(String::as_str)
}

/// The holder needs the API stopped.
pub fn stops_api(app: &FoodApp) -> bool {
    holder(app).is_some()
        && app
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(API_STOPPED_ANNOTATION))
}

/// Names `restore` on the FoodApp, unless it changed since it was read (a
/// restore created at the same moment may have taken it): true when taken.
pub async fn take(
    ctx: &Context,
    app: &FoodApp,
    restore: &str,
    stop_api: bool,
) -> Result<bool, Error> {
    let api: Api<FoodApp> =
        Api::namespaced(ctx.client.clone(), &app.namespace().unwrap_or_default());
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": app.metadata.resource_version,
        "annotations": {
            RESTORE_ANNOTATION: restore,
            API_STOPPED_ANNOTATION: stop_api.then_some("true"),
        },
    }});
    match api
        .patch(
            &app.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(Error::Dereference(e)),
    }
}

/// Lets go of the FoodApp if `restore` holds it: a stopped API comes back.
pub async fn release(ctx: &Context, app: &FoodApp, restore: &str) -> Result<(), Error> {
    if holder(app) != Some(restore) {
        return Ok(());
    }
    let api: Api<FoodApp> =
        Api::namespaced(ctx.client.clone(), &app.namespace().unwrap_or_default());
    let patch = serde_json::json!({"metadata": {"annotations": {
        RESTORE_ANNOTATION: null,
        API_STOPPED_ANNOTATION: null,
    }}});
    api.patch(
        &app.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::Status)?;
    Ok(())
}
