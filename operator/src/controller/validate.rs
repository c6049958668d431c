//! Turns a FoodApp and what was observed into the validated `Model` the
//! builders take, deciding the rollout: which API image runs, whether the
//! migration Job is wanted. Pure.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;

use crate::build::{Inputs, Model, ModelError, names};
use crate::crd::FoodApp;

use super::dereference::Observed;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(
        "Secret {secret} has no key {key}: restore the key, or delete the Secret to have a new one generated"
    )]
    SecretKeyMissing { secret: String, key: &'static str },
}

/// The state of one Job, from its conditions.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    Running,
    Succeeded,
    Failed { reason: String, message: String },
}

pub fn job_state(job: &Job) -> JobState {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    for c in conditions.into_iter().flatten() {
        if c.status == "True" {
            match c.type_.as_str() {
                "Complete" => return JobState::Succeeded,
                "Failed" => {
                    return JobState::Failed {
                        reason: c.reason.clone().unwrap_or_else(|| "Failed".to_owned()),
                        message: c.message.clone().unwrap_or_default(),
                    };
                }
                _ => {}
            }
        }
    }
    if job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0 {
        JobState::Succeeded
    } else {
        JobState::Running
    }
}

fn secret_value(secret: Option<&Secret>, key: &str) -> Option<String> {
    let bytes = secret?.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .filter(|s| !s.is_empty())
}

fn required(secret: Option<&Secret>, name: String, key: &'static str) -> Result<String, Error> {
    secret_value(secret, key).ok_or(Error::SecretKeyMissing { secret: name, key })
}

pub fn database_ready(observed: &Observed) -> bool {
    observed
        .statefulset
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
        >= 1
}

/// The image the API Deployment runs now.
pub fn deployed_image(app: &FoodApp, observed: &Observed) -> Option<String> {
    app.status
        .as_ref()
        .and_then(|s| s.api_image.clone())
        .or_else(|| {
            observed
                .api_deployment
                .as_ref()?
                .spec
                .as_ref()?
                .template
                .spec
                .as_ref()?
                .containers
                .first()?
                .image
                .clone()
        })
}

/// A restore holds the FoodApp: its API is stopped and no migration runs.
pub fn restoring(app: &FoodApp) -> bool {
    super::restores::lock_holder(app).is_some()
}

/// The validated Model: pure, from the FoodApp and what dereference found
/// (which made sure the generated Secrets exist).
pub fn model(app: &FoodApp, observed: &Observed, agent_image: &str) -> Result<Model, Error> {
    let name = app.metadata.name.clone().unwrap_or_default();
    let spec_image = app.spec.api.image.clone();
    let deployed = deployed_image(app, observed);
    let already_migrated = deployed.as_deref() == Some(spec_image.as_str());
    let job_succeeded = observed
        .migration_job
        .as_ref()
        .is_some_and(|j| job_state(j) == JobState::Succeeded);
    let api_rollout_image = if already_migrated || job_succeeded {
        Some(spec_image)
    } else {
        deployed
    };
    let mut model = Model::new(
        app,
        Inputs {
            db_password: required(observed.db_secret.as_ref(), names::db(&name), "password")?,
            jwt_secret: required(
                observed.api_secret.as_ref(),
                names::api_secret(&name),
                "JWT_SECRET",
            )?,
            api_rollout_image,
            // No migration of a new image while a restore runs: it would
            // migrate the schema the restore is about to replace.
            run_migration: !already_migrated
                && !restoring(app)
                && (database_ready(observed) || observed.migration_job.is_some()),
            restoring: restoring(app),
            agent_image: agent_image.to_owned(),
        },
    )?;
    // A backup without its credentials cannot run: schedule nothing until
    // the Secret exists (the BackupScheduled condition says why).
    if observed.credentials_secret_found == Some(false) {
        model.spec.backup = None;
    }
    Ok(model)
}

/// A Model for the Jobs of backups and restores, which need the FoodApp's
/// names and spec but none of its rollout state or secret values.
pub fn job_model(app: &FoodApp, agent_image: &str) -> Result<Model, Error> {
    Ok(Model::new(
        app,
        Inputs {
            db_password: String::new(),
            jwt_secret: String::new(),
            api_rollout_image: None,
            run_migration: false,
            restoring: false,
            agent_image: agent_image.to_owned(),
        },
    )?)
}
