//! PostgreSQL: a one-replica StatefulSet with its data volume, a headless
//! Service for the StatefulSet and a client Service for the API and jobs.

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe,
    SecretKeySelector, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    DB_NAME, DB_USER, Model, container_security, meta, names, pod_security, selector_labels,
};

const COMPONENT: &str = "database";
/// The postgres user of the official image.
pub(crate) const POSTGRES_UID: i64 = 999;
const DATA: &str = "/var/lib/postgresql/data";

/// An environment variable read from a Secret key.
pub(crate) fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..Default::default()
    }
}

/// `DATABASE_URL` for every container that needs it: from the generated
/// Secret of the built-in server, else from the connection Secret.
pub fn database_url_env(model: &Model) -> EnvVar {
    let secret = match model.spec.database.engine {
        crate::crd::Engine::BuiltIn => names::db(&model.name),
        crate::crd::Engine::CloudNativePG | crate::crd::Engine::External => {
            names::db_connection(&model.name)
        }
    };
    secret_env("DATABASE_URL", &secret, "DATABASE_URL")
}

fn pg_isready(period: i32, failures: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(
                [
                    "pg_isready",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    DB_USER,
                    "-d",
                    DB_NAME,
                ]
                .map(str::to_owned)
                .to_vec(),
            ),
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// Run before PostgreSQL at every start, on a private socket only (nothing
/// else can connect meanwhile). A new volume is initialised here, with a
/// superuser `postgres` that can log in only over the pod's own socket.
/// Then, on every start, the API's login is made what the Secret says: it
/// owns the database and its `public` schema, may create the scratch
/// databases backup verification uses, and is not a superuser. A volume
/// from before this rule (the login was the superuser) is brought in line:
/// `postgres` is created and the login demoted, last. The data's major is
/// reported in the termination message (`PG_VERSION=15`), and a server of
/// another major is refused before it touches the data.
pub const PREPARE: &str = r#"set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "new data directory: initdb"
  initdb -D "$PGDATA" --username=postgres --encoding=UTF8 \
    --auth-local=trust --auth-host=scram-sha-256
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
fi
data_major=$(cat "$PGDATA/PG_VERSION")
server_major=$(postgres -V | sed 's/^[^0-9]*\([0-9]*\).*/\1/')
# The operator reads the data's major here (status.databaseMajor).
printf 'PG_VERSION=%s\n' "$data_major" > "${TERMINATION_LOG:-/dev/termination-log}" 2>/dev/null || true
if [ "$data_major" != "$server_major" ]; then
  echo "the data directory is PostgreSQL $data_major and this image's server is PostgreSQL $server_major:" \
    "set spec.database.image back to a $data_major image; a newer major is upgraded by the operator" >&2
  exit 3
fi
sock=$(mktemp -d)
pg_ctl -D "$PGDATA" -w -t 600 -o "-c listen_addresses='' -c unix_socket_directories=$sock" start
trap 'pg_ctl -D "$PGDATA" -m fast -w stop' EXIT
admin=postgres
if ! psql -X -q -h "$sock" -U postgres -d postgres -c 'SELECT 1' >/dev/null 2>&1; then
  admin="$APP_USER"
fi
psql -X -q -v ON_ERROR_STOP=1 -h "$sock" -U "$admin" -d postgres \
  -v app="$APP_USER" -v db="$APP_DATABASE" <<'SQL'
-- The password by environment, never on psql's command line (which every
-- process of the pod can read): printf is the shell's own, so no command
-- line carries it either.
\set password `printf '%s' "$APP_PASSWORD"`
SET password_encryption = 'scram-sha-256';
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'postgres') AS missing \gset
\if :missing
CREATE ROLE postgres SUPERUSER LOGIN;
\endif
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app') AS missing \gset
\if :missing
CREATE ROLE :"app" LOGIN;
\endif
ALTER ROLE :"app" WITH LOGIN CREATEDB PASSWORD :'password';
SELECT NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') AS missing \gset
\if :missing
CREATE DATABASE :"db" OWNER :"app";
\endif
ALTER DATABASE :"db" OWNER TO :"app";
\c :"db"
ALTER SCHEMA public OWNER TO :"app";
\c postgres
ALTER ROLE :"app" WITH NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS;
SQL
echo "$APP_USER owns $APP_DATABASE, is not a superuser, and has the password in the Secret"
"#;

pub fn statefulset(model: &Model) -> StatefulSet {
    let db = &model.spec.database;
    let secret = names::db(&model.name);
    let selector = selector_labels(model, COMPONENT);
    let scratch = |name: &str| Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    };
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        ..Default::default()
    };
    // A subdirectory: the volume's root may hold lost+found.
    let pgdata = env("PGDATA", &format!("{DATA}/pgdata"));
    let prepare_env = vec![
        secret_env("APP_USER", &secret, "username"),
        secret_env("APP_PASSWORD", &secret, "password"),
        secret_env("APP_DATABASE", &secret, "database"),
        pgdata.clone(),
    ];
    // The init container works on the same data, socket and scratch space.
    let mounts = vec![
        mount("data", DATA),
        mount("run", "/var/run/postgresql"),
        mount("tmp", "/tmp"),
    ];
    let prepare = Container {
        name: "prepare".to_owned(),
        image: Some(db.image.clone()),
        command: Some(vec!["sh".to_owned(), "-c".to_owned(), PREPARE.to_owned()]),
        env: Some(prepare_env),
        resources: db.resources.clone(),
        security_context: Some(container_security(POSTGRES_UID)),
        volume_mounts: Some(mounts.clone()),
        ..Default::default()
    };
    let container = Container {
        name: "postgres".to_owned(),
        image: Some(db.image.clone()),
        // The data directory exists: the image's entrypoint only starts the server.
        env: Some(vec![pgdata]),
        ports: Some(vec![ContainerPort {
            name: Some("postgres".to_owned()),
            container_port: 5432,
            ..Default::default()
        }]),
        startup_probe: Some(pg_isready(2, 150)),
        readiness_probe: Some(pg_isready(5, 3)),
        liveness_probe: Some(pg_isready(10, 6)),
        resources: db.resources.clone(),
        security_context: Some(container_security(POSTGRES_UID)),
        volume_mounts: Some(mounts.clone()),
        ..Default::default()
    };
    StatefulSet {
        // The database in use: `<name>-db`, or the one a restore switched to.
        metadata: meta(model, model.db_cluster.clone(), COMPONENT),
        spec: Some(StatefulSetSpec {
            replicas: Some(if model.database_stopped { 0 } else { 1 }),
            service_name: Some(names::db_headless(&model.name)),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..Default::default()
            },
            // The claim is never deleted with the StatefulSet: the FoodApp's
            // finalizer decides, at deletion time, from deletionPolicy.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".to_owned()),
                    when_scaled: Some("Retain".to_owned()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(super::labels(model, COMPONENT)),
                    annotations: Some(super::credentials_annotation(model)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    // It never calls the Kubernetes API: no token to steal.
                    automount_service_account_token: Some(false),
                    init_containers: Some(vec![prepare]),
                    containers: vec![container],
                    security_context: Some(pod_security(POSTGRES_UID)),
                    termination_grace_period_seconds: Some(60),
                    volumes: Some(vec![scratch("run"), scratch("tmp")]),
                    enable_service_links: Some(false),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".to_owned()),
                    labels: Some(selector),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                    storage_class_name: db.storage.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(
                            [("storage".to_owned(), Quantity(db.storage.size.clone()))].into(),
                        ),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn postgres_port() -> ServicePort {
    ServicePort {
        name: Some("postgres".to_owned()),
        port: 5432,
        target_port: Some(IntOrString::String("postgres".to_owned())),
        ..Default::default()
    }
}

/// Label the StatefulSet controller puts on each of its pods.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";

/// The client Service reaches the pod of the database in use only: a
/// restore's second database (same component) stays out of it until the
/// switch, which is this selector changing.
pub fn service(model: &Model) -> Service {
    let mut selector = selector_labels(model, COMPONENT);
    selector.insert(POD_NAME_LABEL.to_owned(), format!("{}-0", model.db_cluster));
    Service {
        metadata: meta(model, names::db(&model.name), COMPONENT),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![postgres_port()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn headless_service(model: &Model) -> Service {
    Service {
        metadata: meta(model, names::db_headless(&model.name), COMPONENT),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(selector_labels(model, COMPONENT)),
            ports: Some(vec![postgres_port()]),
            publish_not_ready_addresses: Some(true),
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
    fn the_statefulset_keeps_data_on_a_claim_sized_by_the_spec() {
        let mut m = model();
        m.spec.database.storage.size = "25Gi".into();
        m.spec.database.storage.storage_class_name = Some("do-block-storage".into());
        let s = statefulset(&m);
        let spec = s.spec.unwrap();
        let claim = &spec.volume_claim_templates.unwrap()[0];
        let claim_spec = claim.spec.as_ref().unwrap();
        assert_eq!(
            claim_spec
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"]
                .0,
            "25Gi"
        );
        assert_eq!(
            claim_spec.storage_class_name.as_deref(),
            Some("do-block-storage")
        );
        assert!(
            claim
                .metadata
                .labels
                .as_ref()
                .unwrap()
                .keys()
                .all(|k| !k.contains("version"))
        );
        assert_eq!(spec.service_name.as_deref(), Some("shop-db-hl"));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.security_context.unwrap().fs_group, Some(999));
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("postgres:16"));
        assert!(
            c.readiness_probe
                .as_ref()
                .unwrap()
                .exec
                .as_ref()
                .unwrap()
                .command
                .as_ref()
                .unwrap()
                .contains(&"pg_isready".to_owned())
        );
        assert_eq!(
            c.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
    }

    #[test]
    fn the_claim_survives_the_statefulset_whatever_the_policy() {
        for policy in [
            crate::crd::DeletionPolicy::Retain,
            crate::crd::DeletionPolicy::Delete,
        ] {
            let mut m = model();
            m.spec.deletion_policy = policy;
            let p = statefulset(&m)
                .spec
                .unwrap()
                .persistent_volume_claim_retention_policy
                .unwrap();
            assert_eq!(p.when_deleted.as_deref(), Some("Retain"), "{policy:?}");
        }
    }

    #[test]
    fn the_password_in_the_secret_is_set_at_every_start() {
        let pod = statefulset(&model()).spec.unwrap().template;
        let init = &pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
        let script = &init.command.as_ref().unwrap()[2];
        assert!(script.contains("ALTER ROLE"), "{script}");
        assert!(script.contains("NOSUPERUSER"), "{script}");
        assert!(
            script.contains("listen_addresses=''"),
            "private socket only"
        );
        let env: Vec<&str> = init
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert!(env.contains(&"APP_PASSWORD") && env.contains(&"PGDATA"));
        let annotations = pod.metadata.unwrap().annotations.unwrap();
        assert!(annotations.contains_key(crate::build::CREDENTIALS_HASH_ANNOTATION));
    }

    #[test]
    fn services_select_the_database_pods() {
        let m = model();
        assert_eq!(
            headless_service(&m).spec.unwrap().cluster_ip.as_deref(),
            Some("None")
        );
        let s = service(&m).spec.unwrap();
        let selector = s.selector.unwrap();
        assert_eq!(selector["app.kubernetes.io/component"], "database");
        assert_eq!(selector[POD_NAME_LABEL], "shop-db-0");
        assert_eq!(s.ports.unwrap()[0].port, 5432);
    }
}
