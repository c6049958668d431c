//! The migration Job: `foodapp-api migrate` with the new API image, named by
//! a hash of that image, so each image migrates once and the API Deployment
//! moves to an image only after its Job succeeded.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::postgres::database_url_env;
use super::{API_UID, Model, container_security, labels, meta, pod_security};

const COMPONENT: &str = "migration";
pub const IMAGE_ANNOTATION: &str = "foodapp.io/api-image";

pub fn job(model: &Model) -> Job {
    let image = &model.spec.api.image;
    let mut metadata = meta(model, model.migration_job_name(), COMPONENT);
    metadata.annotations = Some(BTreeMap::from([(
        IMAGE_ANNOTATION.to_owned(),
        image.clone(),
    )]));
    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(3),
            active_deadline_seconds: Some(1800),
            // Kept a week for inspection; the rollout decision is recorded in
            // the FoodApp status, so cleanup does not re-run migrations.
            ttl_seconds_after_finished: Some(7 * 24 * 3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(model, COMPONENT)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    // It never calls the Kubernetes API: no token to steal.
                    automount_service_account_token: Some(false),
                    restart_policy: Some("Never".to_owned()),
                    containers: vec![Container {
                        name: "migrate".to_owned(),
                        image: Some(image.clone()),
                        args: Some(vec!["migrate".to_owned()]),
                        env: Some(vec![database_url_env(model)]),
                        security_context: Some(container_security(API_UID)),
                        ..Default::default()
                    }],
                    security_context: Some(pod_security(API_UID)),
                    enable_service_links: Some(false),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::testing::model;

    #[test]
    fn the_job_runs_migrate_with_the_spec_image_and_is_named_by_it() {
        let mut m = model();
        m.spec.api.image = "registry.example/foodapp-api:2.0".into();
        let j = job(&m);
        let name = j.metadata.name.clone().unwrap();
        assert!(name.starts_with("shop-migrate-"));
        assert_eq!(
            name,
            crate::build::names::migration_job("shop", "registry.example/foodapp-api:2.0", None)
        );
        let c = &j
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0];
        assert_eq!(c.args.as_deref(), Some(&["migrate".to_owned()][..]));
        assert_eq!(c.image.as_deref(), Some("registry.example/foodapp-api:2.0"));
        m.spec.api.image = "registry.example/foodapp-api:2.1".into();
        let next = job(&m).metadata.name.unwrap();
        assert_ne!(next, name, "a new image gets a new Job");
        m.migration_retry = Some("1".into());
        assert_ne!(
            job(&m).metadata.name.unwrap(),
            next,
            "a retry of a failed migration gets a new Job"
        );
    }
}
