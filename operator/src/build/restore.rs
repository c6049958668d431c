//! What a restore runs and makes beside the live database: the second
//! database's StatefulSet (engine BuiltIn), the Secret with the addresses of
//! both databases, and the Jobs of each phase (restore, migrate, switch,
//! resume). Owned by the FoodAppRestore until the switch, so that deleting
//! the restore removes what it made. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, EnvVar, ExecAction, Probe, Secret, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::postgres::{env, secret_env};
use super::{
    API_STOPPED_ANNOTATION, CLONED_BY_ANNOTATION, CLONED_FROM_ANNOTATION, DB_NAME, DB_USER, Model,
    RESTORE_ANNOTATION, backup, migration, names,
};
use crate::crd::{BackupSpec, FoodApp};

/// The FoodAppRestore a child belongs to.
pub fn owner(restore: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "foodapp.io/v1alpha1".to_owned(),
        kind: "FoodAppRestore".to_owned(),
        name: restore.to_owned(),
        uid: uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

pub fn restore_job_name(restore: &str) -> String {
    format!("{restore}-restore")
}
pub fn migrate_job_name(restore: &str) -> String {
    format!("{restore}-migrate")
}
pub fn switch_job_name(restore: &str, accepted: bool) -> String {
    if accepted {
        format!("{restore}-accept")
    } else {
        format!("{restore}-switch")
    }
}
pub fn resume_job_name(restore: &str) -> String {
    format!("{restore}-resume")
}
/// Every Job a restore may run: their pods must be gone before an
/// abandoned restore lets go of the FoodApp.
pub fn job_names(restore: &str) -> [String; 6] {
    [
        crate::controller::operations::upgrade::job_name(restore),
        restore_job_name(restore),
        migrate_job_name(restore),
        switch_job_name(restore, false),
        switch_job_name(restore, true),
        resume_job_name(restore),
    ]
}
pub fn targets_secret_name(restore: &str) -> String {
    format!("{restore}-restore-db")
}

/// A built-in database's address through its pod's own DNS name (the
/// shared headless Service), whichever StatefulSet it belongs to.
pub fn builtin_url(model: &Model, statefulset: &str, password: &str) -> String {
    format!(
        "postgres://{DB_USER}:{password}@{statefulset}-0.{}.{}.svc:5432/{DB_NAME}?sslmode=disable",
        names::db_headless(&model.name),
        model.namespace
    )
}

/// The addresses the restore's Jobs use: `TARGET_DATABASE_URL` (restored
/// into), `LIVE_DATABASE_URL` (the shop's now) and, on BuiltIn,
/// `SERVICE_DATABASE_URL` (the address the API uses).
pub fn targets_secret(
    model: &Model,
    restore: &OwnerReference,
    target: &str,
    live: &str,
    service: Option<&str>,
) -> Secret {
    let mut data = BTreeMap::from([
        ("TARGET_DATABASE_URL".to_owned(), target.to_owned()),
        ("LIVE_DATABASE_URL".to_owned(), live.to_owned()),
    ]);
    if let Some(s) = service {
        data.insert("SERVICE_DATABASE_URL".to_owned(), s.to_owned());
    }
    let mut meta = super::meta(model, targets_secret_name(&restore.name), "restore");
    meta.owner_references = Some(vec![restore.clone()]);
    Secret {
        metadata: meta,
        type_: Some("Opaque".to_owned()),
        string_data: Some(data),
        ..Default::default()
    }
}

/// The second database of a Beside restore on BuiltIn: the FoodApp's own
/// StatefulSet under another name, with a volume of at least `size`.
pub fn statefulset(model: &Model, name: &str, size: &str, restore: &OwnerReference) -> StatefulSet {
    let mut m = model.clone();
    m.db_cluster = name.to_owned();
    m.spec.database.storage.size = size.to_owned();
    let mut sts = super::postgres::statefulset(&m);
    sts.metadata.owner_references = Some(vec![restore.clone()]);
    sts
}

/// The size of the second volume: the spec's, or the live claim's when the
/// volume grew beyond it.
pub fn volume_size(spec: &str, live: Option<&Quantity>) -> String {
    match live {
        Some(q) => match (crate::quantity::bytes(spec), crate::quantity::bytes(&q.0)) {
            (Some(s), Some(l)) if l > s => q.0.clone(),
            _ => spec.to_owned(),
        },
        None => spec.to_owned(),
    }
}

/// Points every container's `DATABASE_URL` at a key of the targets Secret.
fn redirect(job: &mut Job, restore: &OwnerReference, key: &str) {
    job.metadata.owner_references = Some(vec![restore.clone()]);
    let secret = targets_secret_name(&restore.name);
    let pod = job
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .expect("a Job has a pod template");
    for c in &mut pod.containers {
        for e in c.env.iter_mut().flatten() {
            if e.name == "DATABASE_URL" {
                *e = secret_env("DATABASE_URL", &secret, key);
            }
        }
    }
}

fn add_env(job: &mut Job, vars: Vec<EnvVar>) {
    if let Some(c) = job
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .and_then(|p| p.containers.first_mut())
    {
        c.env.get_or_insert_with(Vec::new).extend(vars);
    }
}

/// Restores `source` into the second database, and checks every table's
/// rows against the manifest. On engine External the second database is
/// created on the live server (`into`).
pub fn restore_job(
    model: &Model,
    backup_spec: &BackupSpec,
    restore: &OwnerReference,
    source: &str,
    into: Option<&str>,
) -> Job {
    let mut job = backup::restore_job(model, backup_spec, restore_job_name(&restore.name), source);
    match into {
        // The agent creates it on the live server and restores there.
        Some(database) => {
            redirect(&mut job, restore, "LIVE_DATABASE_URL");
            add_env(&mut job, vec![env("INTO_DATABASE", database)]);
        }
        None => redirect(&mut job, restore, "TARGET_DATABASE_URL"),
    }
    add_env(&mut job, vec![env("CHECK_COUNTS", "true")]);
    job
}

/// The migrations of the running API image, on the second database.
pub fn migrate_job(model: &Model, image: &str, restore: &OwnerReference) -> Job {
    let mut m = model.clone();
    m.spec.api.image = image.to_owned();
    let mut job = migration::job(&m);
    job.metadata.name = Some(migrate_job_name(&restore.name));
    if let Some(labels) = job.metadata.labels.as_mut() {
        labels.insert(
            "app.kubernetes.io/component".to_owned(),
            "restore".to_owned(),
        );
    }
    if let Some(t) = job.spec.as_mut().and_then(|s| s.template.metadata.as_mut())
        && let Some(labels) = t.labels.as_mut()
    {
        // The database's NetworkPolicy admits migration pods by this label.
        labels.insert(
            "app.kubernetes.io/component".to_owned(),
            "migration".to_owned(),
        );
    }
    redirect(&mut job, restore, "TARGET_DATABASE_URL");
    job
}

/// The file the switch agent writes once writes are paused and what is
/// discarded is stored: its readiness probe reads it.
pub const PAUSED_FILE: &str = "/tmp/paused";

/// The switch: see `agent::switch`. Ready (its probe) = paused and
/// exported, the moment the operator switches the FoodApp.
pub struct SwitchJob<'a> {
    pub restore: &'a OwnerReference,
    pub discard_key: &'a str,
    pub require_no_discard: bool,
    /// The operator's switch is awaited through the database Service.
    pub through_service: bool,
    pub accepted: bool,
}

pub fn switch_job(model: &Model, backup_spec: &BackupSpec, s: &SwitchJob<'_>) -> Job {
    let secret = targets_secret_name(&s.restore.name);
    let mut vars = vec![
        secret_env("LIVE_DATABASE_URL", &secret, "LIVE_DATABASE_URL"),
        env("DISCARD_KEY", s.discard_key),
        env(
            "REQUIRE_NO_DISCARD",
            if s.require_no_discard && !s.accepted {
                "true"
            } else {
                "false"
            },
        ),
        env("PAUSED_FILE", PAUSED_FILE),
    ];
    if s.through_service {
        vars.push(secret_env(
            "SERVICE_DATABASE_URL",
            &secret,
            "SERVICE_DATABASE_URL",
        ));
    }
    let mut job = agent_job(
        model,
        backup_spec,
        switch_job_name(&s.restore.name, s.accepted),
        vec!["switch".to_owned()],
        vars,
    );
    redirect(&mut job, s.restore, "TARGET_DATABASE_URL");
    if let Some(pod) = job.spec.as_mut().and_then(|j| j.template.spec.as_mut()) {
        pod.volumes = Some(vec![Volume {
            name: "tmp".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }]);
        if let Some(c) = pod.containers.first_mut() {
            c.volume_mounts = Some(vec![VolumeMount {
                name: "tmp".to_owned(),
                mount_path: "/tmp".to_owned(),
                ..Default::default()
            }]);
            c.readiness_probe = Some(Probe {
                exec: Some(ExecAction {
                    command: Some(vec!["cat".to_owned(), PAUSED_FILE.to_owned()]),
                }),
                period_seconds: Some(1),
                ..Default::default()
            });
        }
    }
    job
}

/// Gives the live database its writes back: the switch did not happen.
pub fn resume_job(model: &Model, backup_spec: &BackupSpec, restore: &OwnerReference) -> Job {
    give_writes_back(
        model,
        backup_spec,
        restore,
        resume_job_name(&restore.name),
        "--resume",
    )
}

/// A revert: the database switched back to was left read-only by the
/// switch that replaced it; it takes writes again before it is migrated.
/// Runs under the restore Job's name (a revert restores nothing else).
pub fn writable_job(model: &Model, backup_spec: &BackupSpec, restore: &OwnerReference) -> Job {
    give_writes_back(
        model,
        backup_spec,
        restore,
        restore_job_name(&restore.name),
        "--writable",
    )
}

/// A Beside PostgreSQL upgrade pauses the writes of the FoodApp's database
/// (`read_only`) before its backup, so that nothing written after it is
/// left behind, and gives them back if it ends without switching.
pub fn upgrade_writes_job(
    model: &Model,
    backup_spec: &BackupSpec,
    name: &str,
    upgrade: &str,
    owner: &OwnerReference,
    read_only: bool,
) -> Job {
    let which = if read_only {
        "--read-only"
    } else {
        "--writable"
    };
    let db_secret = match model.spec.database.engine {
        crate::crd::Engine::BuiltIn => names::db(&model.name),
        _ => names::db_connection(&model.name),
    };
    let mut job = agent_job(
        model,
        backup_spec,
        name.to_owned(),
        vec!["switch".to_owned(), which.to_owned()],
        vec![secret_env("LIVE_DATABASE_URL", &db_secret, "DATABASE_URL")],
    );
    job.metadata.owner_references = Some(vec![owner.clone()]);
    job.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(UPGRADE_LABEL.to_owned(), upgrade.to_owned());
    job
}

/// On the Jobs of a PostgreSQL upgrade: its name.
pub const UPGRADE_LABEL: &str = "foodapp.io/upgrade";

fn give_writes_back(
    model: &Model,
    backup_spec: &BackupSpec,
    restore: &OwnerReference,
    name: String,
    which: &str,
) -> Job {
    let secret = targets_secret_name(&restore.name);
    let mut job = agent_job(
        model,
        backup_spec,
        name,
        vec!["switch".to_owned(), which.to_owned()],
        vec![secret_env(
            "LIVE_DATABASE_URL",
            &secret,
            "LIVE_DATABASE_URL",
        )],
    );
    redirect(&mut job, restore, "TARGET_DATABASE_URL");
    job
}

fn agent_job(
    model: &Model,
    backup_spec: &BackupSpec,
    name: String,
    args: Vec<String>,
    vars: Vec<EnvVar>,
) -> Job {
    // The restore Job's pod: the agent image, the backup ServiceAccount,
    // the restore component label the database admits.
    let mut job = backup::restore_job(model, backup_spec, name.clone(), "latest");
    if let Some(c) = job
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .and_then(|p| p.containers.first_mut())
    {
        c.args = Some(args);
    }
    // A switch that failed is not tried again on its own: the operator
    // gives the writes back first.
    if let Some(spec) = job.spec.as_mut() {
        spec.backoff_limit = Some(1);
        spec.active_deadline_seconds = Some(600);
    }
    add_env(&mut job, vars);
    job.metadata.name = Some(name);
    job
}

/// A clone's FoodApp when the restore makes it: the spec of the FoodApp
/// restored from without its backups (a clone does not write into the
/// source's store unless told to), marked with where it came from. Owned
/// by the restore until the clone is ready (a restore deleted mid-way
/// removes it), then let go: it outlives the restore.
pub fn clone_foodapp(source: &FoodApp, name: &str, restore: &OwnerReference) -> FoodApp {
    let ns = source.metadata.namespace.clone().unwrap_or_default();
    let mut spec = source.spec.clone();
    spec.backup = None;
    FoodApp {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ns.clone()),
            annotations: Some(BTreeMap::from([
                (
                    CLONED_FROM_ANNOTATION.to_owned(),
                    format!("{ns}/{}", source.metadata.name.clone().unwrap_or_default()),
                ),
                (CLONED_BY_ANNOTATION.to_owned(), restore.name.clone()),
                // Held by the restore from the start: no migration, no API
                // on the empty database the restore is about to replace.
                (RESTORE_ANNOTATION.to_owned(), restore.name.clone()),
                (API_STOPPED_ANNOTATION.to_owned(), "true".to_owned()),
            ])),
            owner_references: Some(vec![restore.clone()]),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

/// The restore of a clone: `source_key` of the FoodApp `source` (its
/// bucket, its key prefix) into the clone's own database (`model`), in one
/// transaction that refuses a database with orders, revokes every session,
/// gives the clone's administrator its own Secret's password, anonymises
/// when asked, and checks every table's rows against the manifest.
pub fn clone_restore_job(
    model: &Model,
    source_backup: &BackupSpec,
    source: &str,
    source_key: &str,
    anonymize: bool,
    restore: &OwnerReference,
) -> Job {
    let mut job = backup::restore_job(
        model,
        source_backup,
        restore_job_name(&restore.name),
        source_key,
    );
    job.metadata.owner_references = Some(vec![restore.clone()]);
    if let Some(pod) = job.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        // The clone may have no backups, and so no backup ServiceAccount;
        // a restore needs no Kubernetes API access anyway.
        pod.service_account_name = None;
        pod.automount_service_account_token = Some(false);
    }
    if let Some(c) = job
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .and_then(|p| p.containers.first_mut())
    {
        for e in c.env.iter_mut().flatten() {
            // The backups are the source's: its name is part of their keys.
            if e.name == "FOODAPP_NAME" {
                *e = env("FOODAPP_NAME", source);
            }
        }
    }
    add_env(
        &mut job,
        vec![
            env("CLONE", "true"),
            env("ANONYMIZE", if anonymize { "true" } else { "false" }),
            env("CHECK_COUNTS", "true"),
            secret_env("CLONE_ADMIN_EMAIL", &model.admin_secret, "email"),
            secret_env("CLONE_ADMIN_PASSWORD", &model.admin_secret, "password"),
        ],
    );
    job
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::testing::model;

    fn backup_spec() -> BackupSpec {
        BackupSpec {
            schedule: "0 3 * * *".into(),
            suspend: false,
            retention: Default::default(),
            verify: true,
            s3: crate::crd::S3Spec {
                bucket: "backups".into(),
                credentials_secret: "spaces".into(),
                ..Default::default()
            },
        }
    }

    fn env_of(job: &Job) -> Vec<EnvVar> {
        job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .env
            .clone()
            .unwrap()
    }

    fn secret_key(vars: &[EnvVar], name: &str) -> Option<(String, String)> {
        let v = vars.iter().find(|e| e.name == name)?;
        let r = v.value_from.as_ref()?.secret_key_ref.as_ref()?;
        Some((r.name.clone(), r.key.clone()))
    }

    #[test]
    fn the_second_database_is_the_same_server_under_its_own_name_owned_by_the_restore() {
        let m = model();
        let o = owner("r1", "uid-1");
        let sts = statefulset(&m, "shop-db-abc123", "20Gi", &o);
        assert_eq!(sts.metadata.name.as_deref(), Some("shop-db-abc123"));
        assert_eq!(
            sts.metadata.owner_references.as_ref().unwrap()[0].kind,
            "FoodAppRestore"
        );
        let spec = sts.spec.unwrap();
        let claim = &spec.volume_claim_templates.unwrap()[0];
        assert_eq!(
            claim
                .spec
                .as_ref()
                .unwrap()
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"]
                .0,
            "20Gi"
        );
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.containers[0].image, Some(m.spec.database.image.clone()));
    }

    #[test]
    fn the_second_volume_is_never_smaller_than_the_live_one() {
        assert_eq!(volume_size("10Gi", None), "10Gi");
        assert_eq!(volume_size("10Gi", Some(&Quantity("25Gi".into()))), "25Gi");
        assert_eq!(volume_size("10Gi", Some(&Quantity("5Gi".into()))), "10Gi");
    }

    #[test]
    fn every_job_of_a_restore_reads_its_database_from_the_restores_secret() {
        let m = model();
        let o = owner("r1", "uid-1");
        let b = backup_spec();
        let restore = restore_job(&m, &b, &o, "k.dump", None);
        assert_eq!(
            secret_key(&env_of(&restore), "DATABASE_URL"),
            Some(("r1-restore-db".into(), "TARGET_DATABASE_URL".into()))
        );
        assert!(env_of(&restore).iter().any(|e| e.name == "CHECK_COUNTS"));
        let external = restore_job(&m, &b, &o, "k.dump", Some("foodapp_rabc123"));
        assert_eq!(
            secret_key(&env_of(&external), "DATABASE_URL"),
            Some(("r1-restore-db".into(), "LIVE_DATABASE_URL".into()))
        );
        let migrate = migrate_job(&m, "api:2", &o);
        assert_eq!(migrate.metadata.name.as_deref(), Some("r1-migrate"));
        assert_eq!(
            secret_key(&env_of(&migrate), "DATABASE_URL"),
            Some(("r1-restore-db".into(), "TARGET_DATABASE_URL".into()))
        );
        let switch = switch_job(
            &m,
            &b,
            &SwitchJob {
                restore: &o,
                discard_key: "k.dump.discarded.jsonl",
                require_no_discard: true,
                through_service: true,
                accepted: false,
            },
        );
        let vars = env_of(&switch);
        assert_eq!(
            secret_key(&vars, "LIVE_DATABASE_URL"),
            Some(("r1-restore-db".into(), "LIVE_DATABASE_URL".into()))
        );
        assert!(secret_key(&vars, "SERVICE_DATABASE_URL").is_some());
        assert!(
            vars.iter()
                .any(|e| e.name == "REQUIRE_NO_DISCARD" && e.value.as_deref() == Some("true"))
        );
        let names: Vec<&str> = vars.iter().map(|e| e.name.as_str()).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(names.len(), unique.len(), "no variable twice: {names:?}");
        let c = &switch.spec.unwrap().template.spec.unwrap().containers[0];
        assert!(c.readiness_probe.is_some());
        for job in [restore, migrate] {
            assert_eq!(job.metadata.owner_references.unwrap()[0].uid, "uid-1");
        }
    }

    #[test]
    fn migration_pods_of_a_restore_are_admitted_by_the_database() {
        let job = migrate_job(&model(), "api:2", &owner("r1", "u"));
        let labels = job.spec.unwrap().template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels["app.kubernetes.io/component"], "migration");
    }
}
