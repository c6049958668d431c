//! `foodapp-operator render -f FILE`: every object the controller would
//! create for a FoodApp, offline, from the same builders and the same Model
//! constructor. Secrets get fresh random values (the controller generates
//! them once and keeps them), and the API is shown at the spec's image, as it
//! runs once its migrations succeeded.

use anyhow::Context;

use crate::build::{self, Inputs, Model, secrets};
use crate::crd::FoodApp;

pub fn render(yaml: &str, agent_image: &str) -> anyhow::Result<String> {
    let mut app: FoodApp = yaml_serde::from_str(yaml).context("the file is not a FoodApp")?;
    app.metadata
        .name
        .as_ref()
        .context("metadata.name is required")?;
    let meta = &mut app.metadata;
    meta.namespace.get_or_insert_with(|| "default".to_owned());
    meta.uid
        .get_or_insert_with(|| "00000000-0000-0000-0000-000000000000".to_owned());
    let model = Model::new(
        &app,
        Inputs {
            db_password: secrets::generate(),
            // Read from the cluster at run time (CloudNativePG's or the
            // user's Secret): not known offline.
            connection: None,
            jwt_secret: secrets::generate(),
            api_rollout_image: Some(app.spec.api.image.clone()),
            run_migration: true,
            restoring: false,
            agent_image: agent_image.to_owned(),
        },
    )?;
    let mut objects: Vec<serde_json::Value> = secrets::generated(&model, &secrets::generate())
        .iter()
        .map(|s| serde_json::to_value(s).unwrap_or_default())
        .collect();
    objects.extend(build::build(&model).to_values());
    let mut out = String::new();
    if let Some(from) = connection_source(&app) {
        out.push_str(&format!(
            "# Not shown: Secret {} (DATABASE_URL), composed at run time from {from}.\n",
            crate::build::names::db_connection(&model.name)
        ));
    }
    out.push_str(&crate::crd::to_yaml(&objects)?);
    Ok(out)
}

/// Where the connection of an engine the operator does not run comes from.
fn connection_source(app: &FoodApp) -> Option<String> {
    let name = app.metadata.name.as_deref().unwrap_or_default();
    match app.spec.database.engine {
        crate::crd::Engine::BuiltIn => None,
        crate::crd::Engine::CloudNativePG => Some(format!(
            "CloudNativePG's Secret {}",
            crate::build::names::cnpg_app_secret(&crate::build::names::db(name))
        )),
        crate::crd::Engine::External => Some(format!(
            "Secret {}",
            app.spec
                .database
                .external
                .as_ref()
                .map(|e| e.secret_name.as_str())
                .unwrap_or_default()
        )),
    }
}
