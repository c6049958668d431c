//! The CloudNativePG engine: a `Cluster` (instances on different nodes, the
//! app database owned by a role that is not a superuser) and, with backups,
//! continuous WAL archiving plus scheduled base backups into the FoodApp's
//! bucket, under its prefix.

use std::collections::BTreeMap;

use super::{DB_NAME, DB_USER, Model, names};
use crate::crd::foreign::{
    BackupPluginConfiguration, BarmanObjectStore, Bootstrap, Cluster, ClusterAffinity,
    ClusterBackup, ClusterSpec, ClusterStorage, Compression, ExternalCluster, InheritedMetadata,
    InitDb, LocalRef, ObjectStore, ObjectStoreSpec, PluginConfiguration, Recovery, RecoveryTarget,
    S3Credentials, ScheduledBackup, ScheduledBackupSpec, SecretKeyRef,
};
use crate::crd::{BackupSpec, DeletionPolicy};

const COMPONENT: &str = "database";

/// The Barman Cloud Plugin, as CloudNativePG knows it (`spec.plugins[].name`).
pub const BARMAN_CLOUD_PLUGIN: &str = "barman-cloud.cloudnative-pg.io";

/// On every Cluster of a FoodApp (and, through `inheritedMetadata`, on its
/// pods, Jobs and claims): the FoodApp's name. NetworkPolicies select by it.
pub const APP_LABEL: &str = "foodapp.io/app";

/// On the Cluster a FoodApp uses: found by it when the FoodApp is made
/// again (its `foodapp.io/database-cluster` annotation is gone with it).
pub const IN_USE_LABEL: &str = "foodapp.io/in-use";

/// On a Cluster: the `serverName` its archive has in the object store.
pub const SERVER_NAME_ANNOTATION: &str = "foodapp.io/server-name";

/// How a Cluster archives WAL and takes base backups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archive {
    /// No backups configured, or the Barman Cloud Plugin is missing for a
    /// Cluster that never archived (the condition says what to install).
    Off,
    /// Through the Barman Cloud Plugin and the FoodApp's ObjectStore.
    Plugin,
    /// The previous release's in-tree `barmanObjectStore`, kept only while
    /// the plugin is missing so that archiving never stops (CloudNativePG
    /// removes it in 1.31).
    InTree,
}

/// The archive folder of a Cluster a FoodApp makes: its name and the
/// FoodApp's UID, so that a FoodApp made again (same name, new UID) never
/// writes into, or recovers from, the folder of the one before.
pub fn server_name(cluster: &str, uid: &str) -> String {
    let id: String = uid.chars().filter(|c| *c != '-').take(8).collect();
    format!("{cluster}-{id}")
}

/// The `serverName` a live Cluster archives under: the plugin's or the
/// in-tree parameter (what CloudNativePG uses), else the one recorded on
/// it, else CloudNativePG's default (the Cluster's name: Clusters the
/// previous release made).
pub fn live_server_name(cluster: &Cluster) -> String {
    let recorded = cluster
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SERVER_NAME_ANNOTATION))
        .cloned();
    let plugin = cluster
        .spec
        .plugins
        .iter()
        .find(|p| p.name == BARMAN_CLOUD_PLUGIN)
        .and_then(|p| p.parameters.get("serverName").cloned());
    let in_tree = cluster
        .spec
        .backup
        .as_ref()
        .and_then(|b| b.barman_object_store.server_name.clone());
    plugin
        .or(in_tree)
        .or(recorded)
        .unwrap_or_else(|| cluster.metadata.name.clone().unwrap_or_default())
}

/// Whether a live Cluster archives through the Barman Cloud Plugin.
pub fn uses_plugin(cluster: &Cluster) -> bool {
    cluster
        .spec
        .plugins
        .iter()
        .any(|p| p.name == BARMAN_CLOUD_PLUGIN && p.is_wal_archiver == Some(true))
}

/// Where CloudNativePG archives: a folder under the FoodApp's own backup
/// prefix, beside (never among) its pg_dump files.
pub fn destination_path(model: &Model, backup: &BackupSpec) -> String {
    let prefix = crate::agent::key_prefix(&backup.s3.prefix, &model.namespace, &model.name);
    format!("s3://{}/{prefix}cloudnative-pg", backup.s3.bucket)
}

/// The FoodApp's bucket as Barman describes it (the ObjectStore's
/// configuration, and the in-tree section of the previous release).
pub fn barman_store(model: &Model, backup: &BackupSpec) -> BarmanObjectStore {
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

/// The FoodApp's ObjectStore: one per FoodApp, shared by its Clusters, each
/// under its own `serverName`. It outlives the FoodApp with the data.
pub fn object_store(model: &Model, backup: &BackupSpec) -> ObjectStore {
    let name = names::cnpg_object_store(&model.name);
    let metadata = match model.spec.deletion_policy {
        DeletionPolicy::Retain => super::unowned_meta(model, name, "backup"),
        DeletionPolicy::Delete => super::meta(model, name, "backup"),
    };
    ObjectStore {
        metadata,
        spec: ObjectStoreSpec {
            configuration: barman_store(model, backup),
            retention_policy: Some(model.spec.database.cnpg().retention),
        },
        status: None,
    }
}

/// The plugin entry that points a Cluster (or an external cluster) at the
/// FoodApp's ObjectStore, under `server_name`.
pub fn plugin(model: &Model, server_name: &str, archiver: bool) -> PluginConfiguration {
    PluginConfiguration {
        name: BARMAN_CLOUD_PLUGIN.to_owned(),
        is_wal_archiver: archiver.then_some(true),
        parameters: BTreeMap::from([
            (
                "barmanObjectName".to_owned(),
                names::cnpg_object_store(&model.name),
            ),
            ("serverName".to_owned(), server_name.to_owned()),
        ]),
    }
}

/// What the Cluster's pods, Jobs and claims inherit: labels of this
/// project only, never CloudNativePG's own `app.kubernetes.io/*` (it sets
/// those itself, and a second writer would patch them back and forth).
fn inherited_labels(model: &Model) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/part-of".to_owned(),
            super::PART_OF.to_owned(),
        ),
        (APP_LABEL.to_owned(), model.name.clone()),
        ("foodapp.io/component".to_owned(), COMPONENT.to_owned()),
    ])
}

pub fn cluster(model: &Model) -> Cluster {
    let db = &model.spec.database;
    let cnpg = db.cnpg();
    // Under Retain the data outlives the FoodApp: the Cluster is not owned,
    // and the finalizer deletes it under Delete.
    let name = model.db_cluster.clone();
    // A recovered Cluster keeps the bootstrap its restore gave it (applied
    // under the restore's own field manager): none is applied here.
    let original = name == names::db(&model.name);
    let mut metadata = match model.spec.deletion_policy {
        DeletionPolicy::Retain => super::unowned_meta(model, name, COMPONENT),
        DeletionPolicy::Delete => super::meta(model, name, COMPONENT),
    };
    let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.extend(inherited_labels(model));
    labels.insert(IN_USE_LABEL.to_owned(), "true".to_owned());
    metadata.annotations = Some(BTreeMap::from([(
        SERVER_NAME_ANNOTATION.to_owned(),
        model.db_server_name.clone(),
    )]));
    let backup = model.spec.backup.as_ref();
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
            // Preferred, not required: on fewer nodes than instances the
            // extra ones still start.
            affinity: Some(ClusterAffinity {
                enable_pod_anti_affinity: Some(true),
                topology_key: Some("kubernetes.io/hostname".to_owned()),
                pod_anti_affinity_type: Some("preferred".to_owned()),
            }),
            // A one-instance Cluster's primary budget would block every
            // node drain, as the FoodApp's own budgets never do.
            enable_pdb: (cnpg.instances == 1).then_some(false),
            bootstrap: original.then(|| Bootstrap {
                initdb: Some(InitDb {
                    database: DB_NAME.to_owned(),
                    owner: DB_USER.to_owned(),
                }),
                recovery: None,
            }),
            backup: match (backup, model.cnpg_archive) {
                (Some(b), Archive::InTree) => Some(ClusterBackup {
                    barman_object_store: BarmanObjectStore {
                        server_name: Some(model.db_server_name.clone()),
                        ..barman_store(model, b)
                    },
                    retention_policy: Some(cnpg.retention.clone()),
                }),
                _ => None,
            },
            plugins: match (backup, model.cnpg_archive) {
                (Some(_), Archive::Plugin) => vec![plugin(model, &model.db_server_name, true)],
                _ => Vec::new(),
            },
            external_clusters: Vec::new(),
            inherited_metadata: Some(InheritedMetadata {
                labels: inherited_labels(model),
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

/// The base backups of the Cluster in use; None while it does not archive.
pub fn scheduled_backup(model: &Model, backup: &BackupSpec) -> Option<ScheduledBackup> {
    let (method, plugin_configuration) = match model.cnpg_archive {
        Archive::Off => return None,
        Archive::Plugin => (
            "plugin",
            Some(BackupPluginConfiguration {
                name: BARMAN_CLOUD_PLUGIN.to_owned(),
                parameters: BTreeMap::new(),
            }),
        ),
        Archive::InTree => ("barmanObjectStore", None),
    };
    Some(ScheduledBackup {
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
            method: Some(method.to_owned()),
            plugin_configuration,
        },
    })
}

/// Field manager of what a point-in-time restore sets on the Cluster it
/// recovers (bootstrap, external clusters): the FoodApp's own applies
/// never carry those fields, so they never remove them.
pub const RESTORE_MANAGER: &str = "foodapp-operator-restore";

/// A new Cluster `name`, recovered from the archive `origin_server` (in the
/// FoodApp's ObjectStore) up to `target_time`. It archives from the start,
/// under its own `serverName`: recovery alone archives nothing.
pub fn recovered_cluster(
    model: &Model,
    name: &str,
    origin_server: &str,
    target_time: &str,
) -> Cluster {
    let mut m = model.clone();
    m.db_cluster = name.to_owned();
    m.db_server_name = server_name(name, &model.uid);
    m.cnpg_archive = Archive::Plugin;
    let mut c = cluster(&m);
    // It is not the Cluster in use until the switch.
    if let Some(labels) = c.metadata.labels.as_mut() {
        labels.remove(IN_USE_LABEL);
    }
    c.spec.bootstrap = Some(recovery_bootstrap(target_time));
    c.spec.external_clusters = vec![ExternalCluster {
        name: "origin".to_owned(),
        barman_object_store: None,
        plugin: Some(plugin(model, origin_server, false)),
    }];
    c
}

fn recovery_bootstrap(target_time: &str) -> Bootstrap {
    Bootstrap {
        initdb: None,
        recovery: Some(Recovery {
            source: "origin".to_owned(),
            database: DB_NAME.to_owned(),
            owner: DB_USER.to_owned(),
            recovery_target: Some(RecoveryTarget {
                target_time: Some(target_time.to_owned()),
            }),
        }),
    }
}

/// What the restore's field manager keeps on a recovered Cluster once the
/// FoodApp's own manager applies it: the bootstrap and the origin, which
/// only the restore knows. Everything else is the FoodApp's to change.
pub fn recovery_fields(recovered: &Cluster) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": crate::crd::foreign::CNPG_API_VERSION,
        "kind": "Cluster",
        "metadata": {"name": recovered.metadata.name},
        "spec": {
            "bootstrap": recovered.spec.bootstrap,
            "externalClusters": recovered.spec.external_clusters,
        },
    })
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
    fn backups_archive_through_the_barman_cloud_plugin_under_the_foodapps_prefix() {
        let mut m = model();
        m.spec.backup = Some(backup());
        m.cnpg_archive = Archive::Plugin;
        m.db_server_name = server_name("shop-db", "7b0c1d2e-aaaa-bbbb-cccc-000000000000");
        let store = object_store(&m, &backup());
        assert_eq!(store.metadata.name.as_deref(), Some("shop-archive"));
        assert_eq!(
            store.spec.configuration.destination_path,
            "s3://backups/foodapp/food/shop/cloudnative-pg"
        );
        assert_eq!(
            store.spec.configuration.endpoint_url.as_deref(),
            Some("https://fra1.digitaloceanspaces.com")
        );
        assert_eq!(
            store.spec.configuration.server_name, None,
            "the CRD forbids it"
        );
        assert_eq!(store.spec.retention_policy.as_deref(), Some("30d"));
        let c = cluster(&m);
        assert!(
            c.spec.backup.is_none(),
            "never both: the webhook refuses it"
        );
        let p = &c.spec.plugins[0];
        assert_eq!(p.name, BARMAN_CLOUD_PLUGIN);
        assert_eq!(p.is_wal_archiver, Some(true));
        assert_eq!(p.parameters["barmanObjectName"], "shop-archive");
        assert_eq!(p.parameters["serverName"], "shop-db-7b0c1d2e");
        assert_eq!(
            c.metadata.annotations.unwrap()[SERVER_NAME_ANNOTATION],
            "shop-db-7b0c1d2e"
        );
        let s = scheduled_backup(&m, &backup()).unwrap();
        assert_eq!(s.spec.schedule, "0 30 2 * * *");
        assert_eq!(s.spec.cluster.name, "shop-db");
        assert_eq!(s.spec.method.as_deref(), Some("plugin"));
        assert_eq!(
            s.spec.plugin_configuration.unwrap().name,
            BARMAN_CLOUD_PLUGIN
        );
    }

    #[test]
    fn without_the_plugin_a_cluster_of_the_previous_release_keeps_archiving_in_tree() {
        let mut m = model();
        m.spec.backup = Some(backup());
        m.cnpg_archive = Archive::InTree;
        m.db_server_name = "shop-db".into();
        let c = cluster(&m);
        assert!(c.spec.plugins.is_empty());
        let store = c.spec.backup.unwrap().barman_object_store;
        assert_eq!(store.server_name.as_deref(), Some("shop-db"));
        assert_eq!(
            scheduled_backup(&m, &backup())
                .unwrap()
                .spec
                .method
                .as_deref(),
            Some("barmanObjectStore")
        );
        // A new Cluster without the plugin: no archiving, no schedule.
        m.cnpg_archive = Archive::Off;
        let c = cluster(&m);
        assert!(c.spec.plugins.is_empty() && c.spec.backup.is_none());
        assert!(scheduled_backup(&m, &backup()).is_none());
    }

    #[test]
    fn a_foodapp_made_again_archives_into_a_folder_of_its_own() {
        let before = server_name("shop-db", "11111111-2222-3333-4444-555555555555");
        let after = server_name("shop-db", "99999999-2222-3333-4444-555555555555");
        assert_ne!(before, after);
        // A live Cluster keeps what it records, whatever the FoodApp's UID.
        let mut m = model();
        m.db_server_name = before.clone();
        assert_eq!(live_server_name(&cluster(&m)), before);
        // One of the previous release records nothing: CloudNativePG's default.
        let mut old = cluster(&m);
        old.metadata.annotations = None;
        assert_eq!(live_server_name(&old), "shop-db");
    }

    #[test]
    fn the_cluster_inherits_only_this_projects_labels_and_one_instance_drains() {
        let mut m = model();
        let c = cluster(&m);
        let inherited = c.spec.inherited_metadata.unwrap().labels;
        assert!(
            inherited
                .keys()
                .all(|k| k.starts_with("foodapp.io/") || k == "app.kubernetes.io/part-of"),
            "{inherited:?}"
        );
        assert_eq!(inherited[APP_LABEL], "shop");
        assert_eq!(c.metadata.labels.unwrap()[IN_USE_LABEL], "true");
        assert_eq!(
            c.spec.enable_pdb, None,
            "three instances: CloudNativePG's budgets"
        );
        m.spec.database.cloud_native_pg = Some(crate::crd::CloudNativePgSpec {
            instances: 1,
            ..Default::default()
        });
        assert_eq!(cluster(&m).spec.enable_pdb, Some(false));
    }

    #[test]
    fn a_recovered_cluster_replays_the_origins_archive_to_the_target_time() {
        let mut m = model();
        m.spec.backup = Some(backup());
        let c = recovered_cluster(
            &m,
            "shop-db-abc123",
            "shop-db-6f1c0000",
            "2026-11-22T09:30:00Z",
        );
        assert_eq!(c.metadata.name.as_deref(), Some("shop-db-abc123"));
        assert!(
            !c.metadata
                .labels
                .as_ref()
                .unwrap()
                .contains_key(IN_USE_LABEL),
            "not in use before the switch"
        );
        let recovery = c.spec.bootstrap.clone().unwrap().recovery.unwrap();
        assert_eq!(recovery.source, "origin");
        assert_eq!(
            recovery.recovery_target.unwrap().target_time.as_deref(),
            Some("2026-11-22T09:30:00Z")
        );
        let origin = c.spec.external_clusters[0].plugin.clone().unwrap();
        assert_eq!(origin.parameters["serverName"], "shop-db-6f1c0000");
        assert_eq!(
            origin.is_wal_archiver, None,
            "the origin is read, not written"
        );
        // It archives from the start, into a folder of its own.
        let own = &c.spec.plugins[0];
        assert_eq!(own.is_wal_archiver, Some(true));
        assert_ne!(
            own.parameters["serverName"],
            origin.parameters["serverName"]
        );
        assert_eq!(
            own.parameters["barmanObjectName"],
            origin.parameters["barmanObjectName"]
        );
        // Once in use, the FoodApp's applies leave its bootstrap alone, and
        // the restore's manager keeps only what the FoodApp never applies.
        m.db_cluster = "shop-db-abc123".into();
        assert!(cluster(&m).spec.bootstrap.is_none());
        let kept = recovery_fields(&c);
        assert_eq!(
            kept["spec"].as_object().unwrap().keys().collect::<Vec<_>>(),
            ["bootstrap", "externalClusters"]
        );
    }
}
