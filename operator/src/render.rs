//! `foodapp-operator render -f FILE`: every object the controller would
//! create for a FoodApp, offline, from the same builders. Secrets get fresh
//! random values (the controller generates them once and keeps them), and the
//! API is shown at the spec's image, as it runs once its migrations succeeded.

use anyhow::Context;

use crate::build::{self, Model, secrets};
use crate::crd::FoodApp;

pub fn render(yaml: &str, agent_image: &str) -> anyhow::Result<String> {
    let app: FoodApp = yaml_serde::from_str(yaml).context("the file is not a FoodApp")?;
    let model = Model {
        name: app
            .metadata
            .name
            .clone()
            .context("metadata.name is required")?,
        namespace: app
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
        uid: app
            .metadata
            .uid
            .clone()
            .unwrap_or_else(|| "00000000-0000-0000-0000-000000000000".to_owned()),
        api_rollout_image: Some(app.spec.api.image.clone()),
        spec: app.spec,
        db_password: secrets::generate(),
        jwt_secret: secrets::generate(),
        run_migration: true,
        restoring: false,
        agent_image: agent_image.to_owned(),
    };
    Ok(crate::crd::to_yaml(&build::build(&model).to_values())?)
}
