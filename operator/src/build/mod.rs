//! Pure builders: from a validated `Model` to every object the controller
//! applies. No client, no async; `foodapp-operator render` prints the same.

pub mod api;
pub mod backup;
pub mod gateway;
pub mod migration;
pub mod nginx;
pub mod postgres;
pub mod secrets;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, PodSecurityContext, SeccompProfile, SecurityContext, Service,
    ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sha2::{Digest, Sha256};

use crate::crd::FoodAppSpec;

pub const MANAGER: &str = "foodapp-operator";
pub const PART_OF: &str = "foodapp";

/// Everything the builders need, already validated and dereferenced.
#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub spec: FoodAppSpec,
    /// Database password, as the database Secret holds it: its hash on the
    /// pod templates restarts the database and the API when it changes.
    pub db_password: String,
    /// Access-token signing secret, as the API Secret holds it.
    pub jwt_secret: String,
    /// The Secret with the first administrator's `email` and `password`.
    pub admin_secret: String,
    /// The image the API Deployment runs now: the spec image once its
    /// migration Job succeeded, else the one already running. None: no
    /// Deployment yet (first migration still running).
    pub api_rollout_image: Option<String>,
    /// Whether the migration Job for the spec image is wanted now (the
    /// database is ready, or the Job already exists).
    pub run_migration: bool,
    /// The user's retry token for a failed migration (annotation
    /// `foodapp.io/retry-migration`): a new token is a new Job.
    pub migration_retry: Option<String>,
    /// A restore is in progress: the API is scaled to zero.
    pub restoring: bool,
    /// Image of the backup/restore agent (the operator's own image).
    pub agent_image: String,
}

/// Set on a FoodApp by the FoodAppRestore that holds it: while set, the API
/// is stopped and no migration runs.
pub const RESTORE_ANNOTATION: &str = "foodapp.io/restore";

/// Annotation a user sets (to any new value) to run a failed migration again.
pub const RETRY_MIGRATION_ANNOTATION: &str = "foodapp.io/retry-migration";

/// What a Model is made from besides the FoodApp: decided by the controller
/// from what it observed, or by `render` offline.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub db_password: String,
    pub jwt_secret: String,
    pub api_rollout_image: Option<String>,
    pub run_migration: bool,
    pub restoring: bool,
    pub agent_image: String,
}

/// Why a FoodApp cannot become a Model.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelError {
    #[error("the FoodApp has no {0}; it was not read from the API server")]
    MissingMetadata(&'static str),
}

impl Model {
    /// The one constructor, shared by the controller and `render`.
    pub fn new(app: &crate::crd::FoodApp, inputs: Inputs) -> Result<Model, ModelError> {
        let meta = &app.metadata;
        let name = meta
            .name
            .clone()
            .ok_or(ModelError::MissingMetadata("name"))?;
        Ok(Model {
            admin_secret: app
                .spec
                .api
                .admin_secret
                .clone()
                .unwrap_or_else(|| names::admin_secret(&name)),
            namespace: meta
                .namespace
                .clone()
                .ok_or(ModelError::MissingMetadata("namespace"))?,
            uid: meta.uid.clone().ok_or(ModelError::MissingMetadata("uid"))?,
            migration_retry: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(RETRY_MIGRATION_ANNOTATION))
                .cloned(),
            name,
            spec: app.spec.clone(),
            db_password: inputs.db_password,
            jwt_secret: inputs.jwt_secret,
            api_rollout_image: inputs.api_rollout_image,
            run_migration: inputs.run_migration,
            restoring: inputs.restoring,
            agent_image: inputs.agent_image,
        })
    }

    /// Whether the operator generates the administrator Secret (the user
    /// did not name one).
    pub fn generates_admin_secret(&self) -> bool {
        self.spec.api.admin_secret.is_none()
    }

    pub fn migration_job_name(&self) -> String {
        names::migration_job(
            &self.name,
            &self.spec.api.image,
            self.migration_retry.as_deref(),
        )
    }
}

/// One object of each kind the controller applies. Applying destructures it
/// without `..`, so a new component cannot be forgotten.
#[derive(Debug, Clone)]
pub struct Desired {
    pub db_statefulset: StatefulSet,
    pub db_service: Service,
    pub db_headless_service: Service,
    pub migration_job: Option<Job>,
    pub api_deployment: Option<Deployment>,
    pub api_service: Service,
    pub gateway_config: ConfigMap,
    pub gateway_deployment: Deployment,
    pub gateway_service: Service,
    pub backup: Option<BackupObjects>,
}

#[derive(Debug, Clone)]
pub struct BackupObjects {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub cron_job: CronJob,
}

pub fn build(model: &Model) -> Desired {
    Desired {
        db_statefulset: postgres::statefulset(model),
        db_service: postgres::service(model),
        db_headless_service: postgres::headless_service(model),
        migration_job: model.run_migration.then(|| migration::job(model)),
        api_deployment: model
            .api_rollout_image
            .as_deref()
            .map(|image| api::deployment(model, image)),
        api_service: api::service(model),
        gateway_config: gateway::config_map(model),
        gateway_deployment: gateway::deployment(model),
        gateway_service: gateway::service(model),
        backup: model.spec.backup.as_ref().map(|spec| BackupObjects {
            service_account: backup::service_account(model),
            role: backup::role(model),
            role_binding: backup::role_binding(model),
            cron_job: backup::cron_job(model, spec),
        }),
    }
}

impl Desired {
    /// Every object as JSON values, in apply order (for `render`).
    pub fn to_values(&self) -> Vec<serde_json::Value> {
        let Desired {
            db_statefulset,
            db_service,
            db_headless_service,
            migration_job,
            api_deployment,
            api_service,
            gateway_config,
            gateway_deployment,
            gateway_service,
            backup,
        } = self;
        let mut out = vec![
            value(db_headless_service),
            value(db_service),
            value(db_statefulset),
        ];
        out.extend(migration_job.iter().map(value));
        out.push(value(api_service));
        out.extend(api_deployment.iter().map(value));
        out.extend([
            value(gateway_config),
            value(gateway_service),
            value(gateway_deployment),
        ]);
        if let Some(BackupObjects {
            service_account,
            role,
            role_binding,
            cron_job,
        }) = backup
        {
            out.extend([
                value(service_account),
                value(role),
                value(role_binding),
                value(cron_job),
            ]);
        }
        out
    }
}

fn value<T: serde::Serialize>(o: &T) -> serde_json::Value {
    serde_json::to_value(o).unwrap_or_default()
}

/// Object names, derived from the FoodApp's name.
pub mod names {
    pub fn db(app: &str) -> String {
        format!("{app}-db")
    }
    pub fn db_headless(app: &str) -> String {
        format!("{app}-db-hl")
    }
    pub fn api_secret(app: &str) -> String {
        format!("{app}-api")
    }
    pub fn api(app: &str) -> String {
        format!("{app}-api")
    }
    pub fn gateway(app: &str) -> String {
        format!("{app}-gateway")
    }
    pub fn backup(app: &str) -> String {
        format!("{app}-backup")
    }
    pub fn admin_secret(app: &str) -> String {
        format!("{app}-admin")
    }
    /// One Job per image (and per retry the user asks for).
    pub fn migration_job(app: &str, image: &str, retry: Option<&str>) -> String {
        let key = match retry {
            Some(token) => format!("{image}\n{token}"),
            None => image.to_owned(),
        };
        format!("{app}-migrate-{}", super::short_hash(&key))
    }
    /// The PVC the StatefulSet's volumeClaimTemplate creates for pod 0.
    pub fn db_pvc(app: &str) -> String {
        format!("data-{app}-db-0")
    }
}

pub const DB_USER: &str = "foodapp";
pub const DB_NAME: &str = "foodapp";
pub const API_PORT: i32 = 8080;
pub const GATEWAY_PORT: i32 = 8080;
/// The unprivileged user the API and agent images run as (distroless "nonroot").
pub const API_UID: i64 = 65532;

/// First 10 hex digits of SHA-256: short, stable, collision-safe enough for names.
pub fn short_hash(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))[..10].to_owned()
}

/// Labels that select one component's pods: never contain a version, since
/// selectors and volumeClaimTemplates are immutable.
pub fn selector_labels(model: &Model, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), PART_OF.to_owned()),
        ("app.kubernetes.io/instance".to_owned(), model.name.clone()),
        (
            "app.kubernetes.io/component".to_owned(),
            component.to_owned(),
        ),
    ])
}

pub fn labels(model: &Model, component: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(model, component);
    l.insert("app.kubernetes.io/part-of".to_owned(), PART_OF.to_owned());
    l.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        MANAGER.to_owned(),
    );
    l
}

/// The label selector that finds every object the operator made for a FoodApp.
pub fn instance_selector(app: &str) -> String {
    format!("app.kubernetes.io/instance={app},app.kubernetes.io/managed-by={MANAGER}")
}

pub fn owner_reference(model: &Model) -> OwnerReference {
    OwnerReference {
        api_version: "foodapp.io/v1alpha1".to_owned(),
        kind: "FoodApp".to_owned(),
        name: model.name.clone(),
        uid: model.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

pub fn meta(model: &Model, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        owner_references: Some(vec![owner_reference(model)]),
        ..unowned_meta(model, name, component)
    }
}

/// Metadata of an object that outlives the FoodApp when its data does (the
/// generated Secrets): labelled, but not owned, so the garbage collector
/// leaves it; the finalizer removes it under deletionPolicy Delete.
pub fn unowned_meta(model: &Model, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(model.namespace.clone()),
        labels: Some(labels(model, component)),
        ..Default::default()
    }
}

/// Pod-template annotation carrying a hash of the database password: a new
/// password (the Secret was re-created) restarts the pods that use it.
pub const CREDENTIALS_HASH_ANNOTATION: &str = "foodapp.io/credentials-hash";

pub fn credentials_annotation(model: &Model) -> BTreeMap<String, String> {
    BTreeMap::from([(
        CREDENTIALS_HASH_ANNOTATION.to_owned(),
        short_hash(&model.db_password),
    )])
}

/// Rolling updates that never go below the wanted replicas: one extra pod
/// comes up before an old one goes.
pub fn surge_one() -> k8s_openapi::api::apps::v1::DeploymentStrategy {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    k8s_openapi::api::apps::v1::DeploymentStrategy {
        type_: Some("RollingUpdate".to_owned()),
        rolling_update: Some(k8s_openapi::api::apps::v1::RollingUpdateDeployment {
            max_unavailable: Some(IntOrString::Int(0)),
            max_surge: Some(IntOrString::Int(1)),
        }),
    }
}

/// Non-root, no privilege escalation, no capabilities, read-only root.
pub fn container_security(user: i64) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(user),
        run_as_group: Some(user),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn pod_security(user: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(user),
        run_as_group: Some(user),
        fs_group: Some(user),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn model() -> Model {
        Model {
            name: "shop".into(),
            namespace: "food".into(),
            uid: "6b1e1d7e-0000-4000-8000-000000000001".into(),
            spec: FoodAppSpec::default(),
            db_password: "db-password".into(),
            jwt_secret: "jwt-secret".into(),
            admin_secret: "shop-admin".into(),
            api_rollout_image: Some(crate::crd::DEFAULT_API_IMAGE.into()),
            run_migration: true,
            migration_retry: None,
            restoring: false,
            agent_image: crate::crd::DEFAULT_OPERATOR_IMAGE.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_object_carries_labels_and_an_owner_reference() {
        let mut m = testing::model();
        m.spec.backup = Some(crate::crd::BackupSpec {
            schedule: "0 3 * * *".into(),
            suspend: false,
            retention: Default::default(),
            verify: true,
            s3: crate::crd::S3Spec {
                bucket: "backups".into(),
                credentials_secret: "spaces".into(),
                ..Default::default()
            },
        });
        let values = build(&m).to_values();
        assert_eq!(values.len(), 13);
        for v in values {
            let meta = &v["metadata"];
            let what = format!("{} {}", v["kind"], meta["name"]);
            assert_eq!(meta["namespace"], "food", "{what}");
            assert_eq!(
                meta["labels"]["app.kubernetes.io/instance"], "shop",
                "{what}"
            );
            assert_eq!(
                meta["labels"]["app.kubernetes.io/managed-by"], MANAGER,
                "{what}"
            );
            assert_eq!(
                meta["labels"]["app.kubernetes.io/part-of"], PART_OF,
                "{what}"
            );
            assert!(
                meta["labels"]["app.kubernetes.io/component"].is_string(),
                "{what}"
            );
            assert_eq!(meta["ownerReferences"][0]["uid"], m.uid, "{what}");
            assert_eq!(meta["ownerReferences"][0]["controller"], true, "{what}");
        }
    }

    #[test]
    fn no_api_deployment_until_a_migrated_image_exists() {
        let mut m = testing::model();
        m.api_rollout_image = None;
        assert!(build(&m).api_deployment.is_none());
        m.run_migration = false;
        assert!(build(&m).migration_job.is_none());
    }

    #[test]
    fn selector_labels_carry_no_version() {
        let l = selector_labels(&testing::model(), "api");
        assert!(l.keys().all(|k| !k.contains("version")));
    }
}
