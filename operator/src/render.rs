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
    Ok(crate::crd::to_yaml(&objects)?)
}
