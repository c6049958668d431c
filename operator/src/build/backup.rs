//! Scheduled backups: a CronJob running `foodapp-operator backup` (the
//! agent) with the ServiceAccount and Role it needs to record each run as a
//! FoodAppBackup. A backup pod verifies in a throwaway PostgreSQL of the
//! FoodApp's own database image, started beside the agent (a native sidecar
//! on an emptyDir, reachable on the pod's loopback only): never on the
//! production server or its volume.

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, ObjectFieldSelector,
    PodSpec, PodTemplateSpec, Probe, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::postgres::{database_url_env, env, secret_env};
use super::{API_UID, Model, container_security, labels, meta, names, pod_security};
use crate::crd::BackupSpec;

const COMPONENT: &str = "backup";

/// The environment of every agent container: database, bucket, identity.
pub fn agent_env(model: &Model, backup: &BackupSpec) -> Vec<EnvVar> {
    let s3 = &backup.s3;
    let mut vars = vec![
        database_url_env(model),
        env("S3_REGION", &s3.region),
        env("S3_BUCKET", &s3.bucket),
        env("S3_PREFIX", &s3.prefix),
        env(
            "S3_FORCE_PATH_STYLE",
            if s3.force_path_style { "true" } else { "false" },
        ),
        secret_env(
            "AWS_ACCESS_KEY_ID",
            &s3.credentials_secret,
            "AWS_ACCESS_KEY_ID",
        ),
        secret_env(
            "AWS_SECRET_ACCESS_KEY",
            &s3.credentials_secret,
            "AWS_SECRET_ACCESS_KEY",
        ),
        env("KEEP_LAST", &backup.retention.keep_last.to_string()),
        env("VERIFY", if backup.verify { "true" } else { "false" }),
        env("FOODAPP_NAME", &model.name),
        EnvVar {
            name: "POD_NAMESPACE".to_owned(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.namespace".to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        env("RUST_LOG", "info"),
    ];
    if let Some(endpoint) = &s3.endpoint {
        vars.insert(1, env("S3_ENDPOINT", endpoint));
    }
    vars
}

/// Port of the verification server on the pod's loopback.
const VERIFY_PORT: &str = "5433";
/// The verification server's throwaway login: it listens on the pod's
/// loopback only and lives as long as the pod.
const VERIFY_USER: &str = "verify";

/// The throwaway server a backup is verified in: the FoodApp's database
/// image on an emptyDir no larger than the database's volume, started before
/// the agent (its startup probe gates it) and stopped when the agent ends.
fn verification_server(model: &Model) -> (Container, Vec<Volume>) {
    let db = &model.spec.database;
    let scratch = |name: &str, limit: Option<Quantity>| Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: limit,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        ..Default::default()
    };
    let container = Container {
        name: "verify-db".to_owned(),
        image: Some(db.image.clone()),
        // A native sidecar: runs beside the agent, ends with it.
        restart_policy: Some("Always".to_owned()),
        args: Some(
            [
                "postgres",
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                &format!("port={VERIFY_PORT}"),
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        env: Some(vec![
            env("POSTGRES_USER", VERIFY_USER),
            env("POSTGRES_PASSWORD", VERIFY_USER),
            env("PGDATA", "/scratch/pgdata"),
        ]),
        startup_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(
                    ["pg_isready", "-h", "127.0.0.1", "-p", VERIFY_PORT]
                        .map(str::to_owned)
                        .to_vec(),
                ),
            }),
            period_seconds: Some(2),
            failure_threshold: Some(150),
            ..Default::default()
        }),
        resources: db.resources.clone(),
        security_context: Some(container_security(super::postgres::POSTGRES_UID)),
        volume_mounts: Some(vec![
            mount("verify-data", "/scratch"),
            mount("verify-run", "/var/run/postgresql"),
            mount("verify-tmp", "/tmp"),
        ]),
        ..Default::default()
    };
    let volumes = vec![
        scratch("verify-data", Some(Quantity(db.storage.size.clone()))),
        scratch("verify-run", None),
        scratch("verify-tmp", None),
    ];
    (container, volumes)
}

/// A pod running one agent command; shared by the CronJob and the Jobs of
/// on-demand backups and restores.
fn agent_pod(
    model: &Model,
    backup: &BackupSpec,
    args: Vec<String>,
    extra_env: Vec<EnvVar>,
    component: &str,
) -> PodTemplateSpec {
    let mut env = agent_env(model, backup);
    env.extend(extra_env);
    let verifies = component == COMPONENT && backup.verify;
    let (init_containers, volumes) = if verifies {
        let (server, volumes) = verification_server(model);
        env.push(super::postgres::env(
            "VERIFY_DATABASE_URL",
            &format!("postgres://{VERIFY_USER}:{VERIFY_USER}@127.0.0.1:{VERIFY_PORT}/postgres"),
        ));
        (Some(vec![server]), Some(volumes))
    } else {
        (None, None)
    };
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(model, component)),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(names::backup(&model.name)),
            restart_policy: Some("Never".to_owned()),
            init_containers,
            volumes,
            containers: vec![Container {
                name: "agent".to_owned(),
                image: Some(model.agent_image.clone()),
                args: Some(args),
                env: Some(env),
                security_context: Some(container_security(API_UID)),
                ..Default::default()
            }],
            security_context: Some(pod_security(API_UID)),
            enable_service_links: Some(false),
            ..Default::default()
        }),
    }
}

pub fn cron_job(model: &Model, backup: &BackupSpec) -> CronJob {
    CronJob {
        metadata: meta(model, names::backup(&model.name), COMPONENT),
        spec: Some(CronJobSpec {
            schedule: backup.schedule.clone(),
            time_zone: Some("Etc/UTC".to_owned()),
            suspend: Some(backup.suspend || model.restoring),
            concurrency_policy: Some("Forbid".to_owned()),
            starting_deadline_seconds: Some(3600),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(model, COMPONENT)),
                    ..Default::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(1),
                    active_deadline_seconds: Some(6 * 3600),
                    template: agent_pod(
                        model,
                        backup,
                        vec!["backup".to_owned(), "--scheduled".to_owned()],
                        Vec::new(),
                        COMPONENT,
                    ),
                    ..Default::default()
                }),
            },
        }),
        ..Default::default()
    }
}

/// A Job running the agent once.
fn agent_job(
    model: &Model,
    backup: &BackupSpec,
    name: String,
    args: Vec<String>,
    extra_env: Vec<EnvVar>,
    component: &str,
) -> Job {
    Job {
        metadata: meta(model, name, component),
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(6 * 3600),
            ttl_seconds_after_finished: Some(7 * 24 * 3600),
            template: agent_pod(model, backup, args, extra_env, component),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An on-demand backup: a Job named like its FoodAppBackup, which the agent
/// reports into (`BACKUP_NAME`).
pub fn on_demand_backup_job(model: &Model, backup: &BackupSpec, backup_name: &str) -> Job {
    agent_job(
        model,
        backup,
        backup_name.to_owned(),
        vec!["backup".to_owned()],
        vec![env("BACKUP_NAME", backup_name)],
        COMPONENT,
    )
}

/// A restore of `source`: an object key, or `latest` for the newest backup.
pub fn restore_job(model: &Model, backup: &BackupSpec, name: String, source: &str) -> Job {
    let mut args = vec!["restore".to_owned()];
    if source == "latest" {
        args.push("--latest".to_owned());
    } else {
        args.extend(["--object-key".to_owned(), source.to_owned()]);
    }
    agent_job(model, backup, name, args, Vec::new(), "restore")
}

pub fn service_account(model: &Model) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(model, names::backup(&model.name), COMPONENT),
        automount_service_account_token: Some(true),
        ..Default::default()
    }
}

/// Just enough to record backups: create and update FoodAppBackups.
pub fn role(model: &Model) -> Role {
    let rule = |resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(vec!["foodapp.io".to_owned()]),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    Role {
        metadata: meta(model, names::backup(&model.name), COMPONENT),
        rules: Some(vec![
            rule(&["foodappbackups"], &["get", "list", "create"]),
            rule(&["foodappbackups/status"], &["get", "patch"]),
        ]),
    }
}

pub fn role_binding(model: &Model) -> RoleBinding {
    let name = names::backup(&model.name);
    RoleBinding {
        metadata: meta(model, name.clone(), COMPONENT),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name,
            namespace: Some(model.namespace.clone()),
            ..Default::default()
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::testing::model;
    use crate::crd::S3Spec;

    fn with_backup() -> Model {
        let mut m = model();
        m.spec.backup = Some(BackupSpec {
            schedule: "30 2 * * *".into(),
            suspend: false,
            retention: crate::crd::Retention { keep_last: 7 },
            verify: true,
            s3: S3Spec {
                endpoint: Some("https://fra1.digitaloceanspaces.com".into()),
                region: "fra1".into(),
                bucket: "shop-backups".into(),
                prefix: "prod".into(),
                force_path_style: false,
                credentials_secret: "spaces-credentials".into(),
            },
        });
        m
    }

    #[test]
    fn the_cron_job_forbids_overlap_and_keeps_a_short_history() {
        let m = with_backup();
        let c = cron_job(&m, m.spec.backup.as_ref().unwrap()).spec.unwrap();
        assert_eq!(c.schedule, "30 2 * * *");
        assert_eq!(c.concurrency_policy.as_deref(), Some("Forbid"));
        assert_eq!(
            (c.successful_jobs_history_limit, c.failed_jobs_history_limit),
            (Some(3), Some(3))
        );
        let pod = c.job_template.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("shop-backup"));
        let env = pod.containers[0].env.clone().unwrap();
        let get = |n: &str| env.iter().find(|e| e.name == n).cloned().unwrap();
        assert_eq!(
            get("S3_ENDPOINT").value.as_deref(),
            Some("https://fra1.digitaloceanspaces.com")
        );
        assert_eq!(get("KEEP_LAST").value.as_deref(), Some("7"));
        assert_eq!(
            get("AWS_SECRET_ACCESS_KEY")
                .value_from
                .unwrap()
                .secret_key_ref
                .unwrap()
                .name,
            "spaces-credentials"
        );
    }

    #[test]
    fn backups_pause_while_suspended_or_restoring() {
        let mut m = with_backup();
        m.restoring = true;
        assert_eq!(
            cron_job(&m, m.spec.backup.as_ref().unwrap())
                .spec
                .unwrap()
                .suspend,
            Some(true)
        );
    }

    #[test]
    fn backups_verify_in_a_throwaway_server_beside_the_agent_and_restores_do_not() {
        let m = with_backup();
        let spec = m.spec.backup.clone().unwrap();
        let pod = on_demand_backup_job(&m, &spec, "now")
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let sidecar = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
        assert_eq!(
            sidecar.image.as_deref(),
            Some("postgres:16"),
            "the FoodApp's own image"
        );
        assert!(
            sidecar
                .args
                .as_ref()
                .unwrap()
                .contains(&"listen_addresses=127.0.0.1".to_owned())
        );
        let agent_env = pod.containers[0].env.as_ref().unwrap();
        let url = agent_env
            .iter()
            .find(|e| e.name == "VERIFY_DATABASE_URL")
            .and_then(|e| e.value.clone())
            .unwrap();
        assert!(url.contains("@127.0.0.1:5433/"), "{url}");
        let data = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "verify-data")
            .unwrap();
        assert_eq!(
            data.empty_dir.as_ref().unwrap().size_limit,
            Some(Quantity(m.spec.database.storage.size.clone()))
        );
        let restore = restore_job(&m, &spec, "r-restore".into(), "latest")
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        assert!(restore.init_containers.is_none());
        let mut off = spec.clone();
        off.verify = false;
        let unverified = on_demand_backup_job(&m, &off, "now")
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        assert!(unverified.init_containers.is_none());
    }

    #[test]
    fn the_role_only_allows_recording_backups() {
        let r = role(&with_backup());
        let rules = r.rules.unwrap();
        assert!(
            rules
                .iter()
                .all(|r| r.api_groups.as_deref() == Some(&["foodapp.io".to_owned()][..]))
        );
        assert!(
            rules
                .iter()
                .all(|r| !r.verbs.contains(&"delete".to_owned()))
        );
    }
}
