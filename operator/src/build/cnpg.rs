//! The CloudNativePG engine: a `Cluster` (instances on different nodes, the
//! app database owned by a role that is not a superuser) and, with backups,
//! continuous WAL archiving plus scheduled base backups into the FoodApp's
//! bucket, under its prefix.

use std::collections::BTreeMap;

use super::{DB_NAME, DB_USER, Model, names};
use crate::crd::foreign::{
    BarmanObjectStore, Bootstrap, Cluster, ClusterAffinity, ClusterBackup, ClusterSpec,
    ClusterStorage, Compression, ExternalCluster, InheritedMetadata, InitDb, LocalRef, Recovery,
    RecoveryTarget, S3Credentials, ScheduledBackup, ScheduledBackupSpec, SecretKeyRef,
};
use crate::crd::{BackupSpec, DeletionPolicy};

const COMPONENT: &str = "database";

/// Where CloudNativePG archives: a folder under the FoodApp's own backup
/// prefix, beside (never among) its pg_dump files.
pub fn destination_path(model: &Model, backup: &BackupSpec) -> String {
    let prefix = crate::agent::key_prefix(&backup.s3.prefix, &model.namespace, &model.name);
    format!("s3://{}/{prefix}cloudnative-pg", backup.s3.bucket)
}

/// The object store of a FoodApp's backups, as CloudNativePG names it.
pub fn object_store(model: &Model, backup: &BackupSpec) -> BarmanObjectStore {
    let key = |key: &str| SecretKeyRef {
        name: backup.s3.credentials_secret.clone(),
        key: key.to_owned(),
    };
    BarmanObjectStore {
        destination_path: destination_path(model, backup),
        endpoint_url: backup.s3.endpoint.clone(),
        server_name: None,
        s3_credentials: S3Credentials {
            access_key_id: key("AWS_ACCESS_KEY_ID"),
            secret_access_key: key("AWS_SECRET_ACCESS_KEY"),
            region: None,
        },
        wal: Some(Compression {
            compression: "gzip".to_owned(),
        }),
        data: Some(Compression {
            compression: "gzip".to_owned(),
        }),
    }
}

pub fn cluster(model: &Model) -> Cluster {
    let db = &model.spec.database;
    let cnpg = db.cnpg();
    let labels = super::labels(model, COMPONENT);
    // Under Retain the data outlives the FoodApp: the Cluster is not owned,
    // and the finalizer deletes it under Delete.
    let name = model.db_cluster.clone();
    // A recovered Cluster keeps the bootstrap its restore gave it (applied
    // under the restore's own field manager): none is applied here.
    let original = name == names::db(&model.name);
    let metadata = match model.spec.deletion_policy {
        DeletionPolicy::Retain => super::unowned_meta(model, name, COMPONENT),
        DeletionPolicy::Delete => super::meta(model, name, COMPONENT),
    };
    Cluster {
        metadata,
        spec: ClusterSpec {
            instances: cnpg.instances,
            image_name: cnpg.image_name.clone(),
            enable_superuser_access: Some(false),
            storage: Some(ClusterStorage {
                size: db.storage.size.clone(),
                storage_class: db.storage.storage_class_name.clone(),
            }),
            resources: db.resources.clone(),
            affinity: Some(ClusterAffinity {
                enable_pod_anti_affinity: Some(true),
                topology_key: Some("kubernetes.io/hostname".to_owned()),
                pod_anti_affinity_type: Some("preferred".to_owned()),
            }),
            bootstrap: original.then(|| Bootstrap {
                initdb: Some(InitDb {
                    database: DB_NAME.to_owned(),
                    owner: DB_USER.to_owned(),
                }),
                recovery: None,
            }),
            backup: model.spec.backup.as_ref().map(|b| ClusterBackup {
                barman_object_store: object_store(model, b),
                retention_policy: Some(cnpg.retention.clone()),
            }),
            external_clusters: Vec::new(),
            inherited_metadata: Some(InheritedMetadata {
                labels: BTreeMap::from_iter(
                    labels
                        .into_iter()
                        .filter(|(k, _)| k != "app.kubernetes.io/managed-by"),
                ),
            }),
        },
        status: None,
    }
}

/// A five-field cron schedule with a seconds field in front, as
/// CloudNativePG reads schedules.
pub fn with_seconds(schedule: &str) -> String {
    format!(
        "0 {}",
        schedule.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

pub fn scheduled_backup(model: &Model, backup: &BackupSpec) -> ScheduledBackup {
    ScheduledBackup {
        metadata: super::meta(
            model,
            names::cnpg_scheduled_backup(&model.db_cluster),
            "backup",
        ),
        spec: ScheduledBackupSpec {
            schedule: with_seconds(&backup.schedule),
            cluster: LocalRef {
                name: model.db_cluster.clone(),
            },
            suspend: Some(backup.suspend),
            // A base backup at once: point-in-time recovery needs one.
            immediate: Some(true),
            backup_owner_reference: Some("self".to_owned()),
            method: Some("barmanObjectStore".to_owned()),
        },
    }
}

/// Field manager of what a point-in-time restore sets on the Cluster it
/// recovers (bootstrap, external clusters): the FoodApp's own applies
/// never carry those fields, so they never remove them.
pub const RESTORE_MANAGER: &str = "foodapp-operator-restore";

/// A new Cluster `name`, recovered from the WAL archive of Cluster
/// `origin` (in the FoodApp's bucket) up to `target_time`.
pub fn recovered_cluster(
    model: &Model,
    backup: &BackupSpec,
    name: &str,
    origin: &str,
    target_time: &str,
) -> Cluster {
    let mut m = model.clone();
    m.db_cluster = name.to_owned();
    let mut c = cluster(&m);
    c.spec.bootstrap = Some(Bootstrap {
        initdb: None,
        recovery: Some(Recovery {
            source: "origin".to_owned(),
            database: DB_NAME.to_owned(),
            owner: DB_USER.to_owned(),
            recovery_target: Some(RecoveryTarget {
                target_time: Some(target_time.to_owned()),
            }),
        }),
    });
    c.spec.external_clusters = vec![ExternalCluster {
        name: "origin".to_owned(),
        barman_object_store: BarmanObjectStore {
            server_name: Some(origin.to_owned()),
            ..object_store(model, backup)
        },
    }];
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::testing::model;
    use crate::crd::{Engine, S3Spec};

    fn backup() -> BackupSpec {
        BackupSpec {
            schedule: "30 2 * * *".into(),
            suspend: false,
            retention: Default::default(),
            verify: true,
            s3: S3Spec {
                endpoint: Some("https://fra1.digitaloceanspaces.com".into()),
                bucket: "backups".into(),
                prefix: "foodapp".into(),
                credentials_secret: "spaces".into(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn the_cluster_owns_the_app_database_without_a_superuser() {
        let mut m = model();
        m.spec.database.engine = Engine::CloudNativePG;
        let c = cluster(&m);
        assert_eq!(c.metadata.name.as_deref(), Some("shop-db"));
        assert_eq!(c.spec.instances, 3);
        assert_eq!(c.spec.enable_superuser_access, Some(false));
        let initdb = c.spec.bootstrap.unwrap().initdb.unwrap();
        assert_eq!(
            (initdb.database.as_str(), initdb.owner.as_str()),
            ("foodapp", "foodapp")
        );
        assert!(c.spec.backup.is_none());
        assert!(c.metadata.owner_references.is_none(), "Retain: not owned");
        m.spec.deletion_policy = DeletionPolicy::Delete;
        assert!(cluster(&m).metadata.owner_references.is_some());
    }

    #[test]
    fn backups_archive_wal_under_the_foodapps_prefix() {
        let mut m = model();
        m.spec.backup = Some(backup());
        let store = cluster(&m).spec.backup.unwrap().barman_object_store;
        assert_eq!(
            store.destination_path,
            "s3://backups/foodapp/food/shop/cloudnative-pg"
        );
        assert_eq!(
            store.endpoint_url.as_deref(),
            Some("https://fra1.digitaloceanspaces.com")
        );
        assert_eq!(store.s3_credentials.access_key_id.name, "spaces");
        let s = scheduled_backup(&m, &backup());
        assert_eq!(s.spec.schedule, "0 30 2 * * *");
        assert_eq!(s.spec.cluster.name, "shop-db");
    }

    #[test]
    fn a_recovered_cluster_replays_the_origins_archive_to_the_target_time() {
        let mut m = model();
        m.spec.backup = Some(backup());
        let c = recovered_cluster(
            &m,
            &backup(),
            "shop-db-abc123",
            "shop-db",
            "2026-11-22T09:30:00Z",
        );
        assert_eq!(c.metadata.name.as_deref(), Some("shop-db-abc123"));
        let recovery = c.spec.bootstrap.unwrap().recovery.unwrap();
        assert_eq!(recovery.source, "origin");
        assert_eq!(
            recovery.recovery_target.unwrap().target_time.as_deref(),
            Some("2026-11-22T09:30:00Z")
        );
        let origin = &c.spec.external_clusters[0];
        assert_eq!(
            origin.barman_object_store.server_name.as_deref(),
            Some("shop-db")
        );
        // Its own archive goes under its own name: never into the origin's.
        let own = c.spec.backup.unwrap().barman_object_store;
        assert_eq!(own.server_name, None);
        assert_eq!(
            own.destination_path,
            origin.barman_object_store.destination_path
        );
        // Once in use, the FoodApp's applies leave its bootstrap alone.
        m.db_cluster = "shop-db-abc123".into();
        assert!(cluster(&m).spec.bootstrap.is_none());
    }
}
