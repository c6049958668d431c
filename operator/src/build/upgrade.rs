//! PostgreSQL major upgrades of the built-in database: reading a major from
//! an image, and the InPlace method's Job — `pg_upgrade --link` on the
//! database's own volume, with the old major's binaries copied out of the
//! old image by an init container (the new image has only its own).

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::postgres::{POSTGRES_UID, env};
use super::{Model, container_security, labels, pod_security};

/// The PostgreSQL major an image runs, read from its tag: `postgres:18`,
/// `postgres:17.2-bookworm`, `registry:5000/pg/postgresql:16.4-standard`.
/// None when the tag does not start with a major of 10 or later (`latest`,
/// a digest only, `9.6`): such an image is never upgraded to.
pub fn image_major(image: &str) -> Option<u32> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let (_, tag) = last.split_once(':')?;
    let digits: String = tag.chars().take_while(char::is_ascii_digit).collect();
    let rest = &tag[digits.len()..];
    if !(rest.is_empty() || rest.starts_with(['.', '-', '_'])) {
        return None;
    }
    digits.parse().ok().filter(|m| (10..100).contains(m))
}

/// The data directory's major, as the database pod's `prepare` step (or
/// the upgrade Job) wrote it to its termination message.
pub fn reported_major(message: &str) -> Option<u32> {
    message
        .lines()
        .find_map(|l| l.trim().strip_prefix("PG_VERSION="))
        .and_then(|v| v.trim().parse().ok())
}

/// Where the old image's binaries go in the upgrade pod.
const OLD: &str = "/old";
const DATA: &str = "/var/lib/postgresql/data";

/// Run by the init container, in the old image: its server binaries and
/// their share directory, at the same paths under /old (PostgreSQL finds
/// its share and lib directories relative to its executable), and the
/// shared libraries they load besides the C library (the new image may
/// come from another distribution release), behind wrappers that load
/// them. `/old/bin` is what pg_upgrade gets as the old bindir (`OLD`
/// moves /old, for the tests).
pub const COPY_OLD_BINARIES: &str = r#"set -eu
old=${OLD:-/old}
bin=$(dirname "$(command -v postgres)")
root=$(dirname "$bin")
mkdir -p "$old$root" "$old/lib" "$old/bin"
cp -a "$root/." "$old$root/"
share="/usr/share/postgresql/$(basename "$root")"
if [ -d "$share" ]; then mkdir -p "$old$share" && cp -a "$share/." "$old$share/"; fi
for f in "$bin"/*; do ldd "$f" 2>/dev/null || true; done \
  | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|ld-musl*) ;;
    *) cp -L "$lib" "$old/lib/" ;;
  esac
done
for f in "$bin"/*; do
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s/lib exec %s "$@"\n' "$old" "$old$f" > "$old/bin/$(basename "$f")"
  chmod 755 "$old/bin/$(basename "$f")"
done
echo "copied PostgreSQL $(basename "$root") from $root"
"#;

/// Run in the new image as the postgres user, the database stopped, with
/// `PGDATA` the data directory and `TO_MAJOR` the new major. Every step
/// looks at what is on the volume first, so a Job killed and run again
/// goes on: before pg_upgrade links the old files the old directory is
/// untouched (and `--check` runs first); after it succeeded, the new
/// directory is moved into place. A kill while pg_upgrade links (seconds)
/// leaves the old directory unusable: the backup taken first restores it.
/// The data's major ends up in the termination message, as `prepare`
/// reports it.
pub const UPGRADE: &str = r#"set -eu
old=${OLD:-/old}
top=$(dirname "$PGDATA")
new="$top/pgdata-$TO_MAJOR.new"
done_mark="$new/.foodapp-upgraded"
report() { printf 'PG_VERSION=%s\n%s\n' "$1" "$2" > "${TERMINATION_LOG:-/dev/termination-log}" 2>/dev/null || true; }
fail() { echo "$1" >&2; report "$(cat "$PGDATA/PG_VERSION" 2>/dev/null || echo unknown)" "$1"; exit "${2:-1}"; }
new_bin=$(dirname "$(command -v postgres)")
if [ -s "$PGDATA/PG_VERSION" ] && [ "$(cat "$PGDATA/PG_VERSION")" = "$TO_MAJOR" ] && [ ! -d "$new" ]; then
  echo "the data directory is PostgreSQL $TO_MAJOR already"
  report "$TO_MAJOR" "upgraded"
  exit 0
fi
if [ ! -f "$done_mark" ]; then
  [ -s "$PGDATA/PG_VERSION" ] || fail "no data directory at $PGDATA"
  from=$(cat "$PGDATA/PG_VERSION")
  [ "$from" -lt "$TO_MAJOR" ] || fail "the data directory is PostgreSQL $from: not older than $TO_MAJOR" 3
  if [ -f "$PGDATA/global/pg_control.old" ] && [ ! -f "$PGDATA/global/pg_control" ]; then
    fail "an earlier run of pg_upgrade --link was stopped while it linked the files: the old data directory cannot be started again; restore the backup taken before the upgrade" 4
  fi
  sock=$(mktemp -d)
  # The old server once, privately: it recovers what a stop left to
  # recover (pg_upgrade needs a clean shutdown), and says how it was made.
  "$old/bin/pg_ctl" -D "$PGDATA" -w -t 600 -l "$sock/old.log" \
    -o "-c listen_addresses='' -c unix_socket_directories=$sock -p 50432" start \
    || { cat "$sock/old.log" >&2; fail "the PostgreSQL $from server did not start on its data"; }
  q() { psql -X -A -t -q -h "$sock" -p 50432 -U postgres -d template1 -c "$1"; }
  install_user=$(q "SELECT rolname FROM pg_roles WHERE oid = 10")
  encoding=$(q "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'template1'")
  collate=$(q "SELECT datcollate FROM pg_database WHERE datname = 'template1'")
  ctype=$(q "SELECT datctype FROM pg_database WHERE datname = 'template1'")
  checksums=$(q "SHOW data_checksums")
  # Column options of the old server's build, for the check below.
  for db in $(q "SELECT datname FROM pg_database WHERE datallowconn"); do
    psql -X -A -t -q -h "$sock" -p 50432 -U postgres -d "$db" \
      -c "SELECT DISTINCT o FROM pg_attribute, unnest(attoptions) o" >> "$sock/options"
  done
  old_version=$(q "SELECT version()")
  "$old/bin/pg_ctl" -D "$PGDATA" -m fast -w stop
  rm -rf "$new"
  set -- --username="$install_user" --encoding="$encoding" --lc-collate="$collate" --lc-ctype="$ctype" \
    --auth-local=trust --auth-host=scram-sha-256
  if [ "$checksums" = on ]; then set -- "$@" --data-checksums
  elif [ "$TO_MAJOR" -ge 18 ]; then set -- "$@" --no-data-checksums; fi
  initdb -D "$new" "$@" >/dev/null
  echo "host all all all scram-sha-256" >> "$new/pg_hba.conf"
  echo "listen_addresses = '*'" >> "$new/postgresql.conf"
  cd "$sock"
  # pg_upgrade --check does not look at column options, and a new server
  # that refuses one the old build sets fails pg_upgrade half-way: each is
  # tried on the new server first.
  pg_ctl -D "$new" -w -t 600 -l "$sock/new.log" \
    -o "-c listen_addresses='' -c unix_socket_directories=$sock -p 50433" start >/dev/null
  refused=""
  for option in $(sort -u "$sock/options"); do
    if ! psql -X -q -h "$sock" -p 50433 -U "$install_user" -d postgres -v ON_ERROR_STOP=1 \
        -c "CREATE TEMP TABLE probe (c int); ALTER TABLE probe ALTER COLUMN c SET ($option)" >/dev/null 2>&1; then
      refused="$refused ${option%%=*}"
    fi
  done
  pg_ctl -D "$new" -m fast -w stop >/dev/null
  if [ -n "$refused" ]; then
    rm -rf "$new"
    fail "PostgreSQL $TO_MAJOR does not know the column option(s)$refused that the old server ($old_version) sets: pg_upgrade would fail half-way; use a PostgreSQL $TO_MAJOR image built by the same distributor, of a release at least as recent (nothing was changed)" 5
  fi
  upgrade() {
    pg_upgrade --old-bindir="$old/bin" --new-bindir="$new_bin" --old-datadir="$PGDATA" --new-datadir="$new" \
      --username="$install_user" --socketdir="$sock" --old-port=50432 --new-port=50433 "$@"
  }
  if ! upgrade --check > "$sock/check.log" 2>&1; then
    cat "$sock/check.log" >&2
    rm -rf "$new"
    fail "pg_upgrade --check refused the upgrade from $from to $TO_MAJOR (nothing was changed): $(grep -v '^ *$' "$sock/check.log" | tail -n 3 | tr '\n' ' ')" 5
  fi
  echo "pg_upgrade --check passed: upgrading PostgreSQL $from to $TO_MAJOR with --link"
  upgrade --link || fail "pg_upgrade from $from to $TO_MAJOR failed"
  echo "$from" > "$done_mark"
fi
from=$(cat "$done_mark")
if [ -d "$PGDATA" ] && [ "$(cat "$PGDATA/PG_VERSION" 2>/dev/null)" != "$TO_MAJOR" ]; then
  mv "$PGDATA" "$top/pgdata-$from.old"
fi
mv "$new" "$PGDATA"
rm -f "$PGDATA/.foodapp-upgraded"
# Linked: the old directory shares the files and must never start again.
rm -rf "$top/pgdata-$from.old"
echo "the data directory is PostgreSQL $TO_MAJOR (was $from)"
report "$TO_MAJOR" "upgraded from $from"
"#;

/// The InPlace upgrade of the data on `claim` from `old_image` to the
/// spec's image (major `to`), its database stopped.
pub fn job(
    model: &Model,
    name: &str,
    old_image: &str,
    to: u32,
    claim: &str,
    owner: &OwnerReference,
) -> Job {
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        ..Default::default()
    };
    let scratch = |name: &str| Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    };
    let sh = |script: &str| Some(vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()]);
    let copy = Container {
        name: "old-binaries".to_owned(),
        image: Some(old_image.to_owned()),
        command: sh(COPY_OLD_BINARIES),
        security_context: Some(container_security(POSTGRES_UID)),
        volume_mounts: Some(vec![mount("old", OLD)]),
        resources: model.spec.database.resources.clone(),
        ..Default::default()
    };
    let upgrade = Container {
        name: "pg-upgrade".to_owned(),
        image: Some(model.spec.database.image.clone()),
        command: sh(UPGRADE),
        env: Some(vec![
            env("PGDATA", &format!("{DATA}/pgdata")),
            env("TO_MAJOR", &to.to_string()),
        ]),
        security_context: Some(container_security(POSTGRES_UID)),
        volume_mounts: Some(vec![
            mount("data", DATA),
            mount("old", OLD),
            mount("tmp", "/tmp"),
            mount("run", "/var/run/postgresql"),
        ]),
        resources: model.spec.database.resources.clone(),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Default::default()
    };
    let job_labels = labels(model, "database-upgrade");
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(model.namespace.clone()),
            labels: Some(job_labels.clone()),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // A failure is looked at, not retried blindly: the script
            // refuses what it cannot do safely, and says why.
            backoff_limit: Some(0),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(job_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    init_containers: Some(vec![copy]),
                    containers: vec![upgrade],
                    restart_policy: Some("Never".to_owned()),
                    security_context: Some(pod_security(POSTGRES_UID)),
                    enable_service_links: Some(false),
                    volumes: Some(vec![
                        Volume {
                            name: "data".to_owned(),
                            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                                claim_name: claim.to_owned(),
                                read_only: Some(false),
                            }),
                            ..Default::default()
                        },
                        scratch("old"),
                        scratch("tmp"),
                        scratch("run"),
                    ]),
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

    #[test]
    fn majors_are_read_from_tags() {
        for (image, major) in [
            ("postgres:18", Some(18)),
            ("postgres:17.2-bookworm", Some(17)),
            ("docker.io/library/postgres:16-alpine3.20", Some(16)),
            ("registry:5000/pg/postgresql:16.4-standard", Some(16)),
            ("ghcr.io/cloudnative-pg/postgresql:15@sha256:abcd", Some(15)),
            ("postgres", None),
            ("postgres:latest", None),
            ("postgres@sha256:abcd", None),
            ("registry:5000/postgres", None),
            ("postgres:9.6", None),
            ("postgres:18beta1", None),
            ("postgres:180", None),
        ] {
            assert_eq!(image_major(image), major, "{image}");
        }
    }

    #[test]
    fn the_reported_major_is_read_from_the_termination_message() {
        assert_eq!(reported_major("PG_VERSION=15\n"), Some(15));
        assert_eq!(
            reported_major("PG_VERSION=18\nupgraded from 15\n"),
            Some(18)
        );
        assert_eq!(reported_major("something else"), None);
        assert_eq!(reported_major("PG_VERSION=unknown"), None);
    }

    #[test]
    fn the_job_copies_the_old_binaries_and_upgrades_on_the_claim() {
        let m = crate::build::testing::model();
        let owner = OwnerReference::default();
        let j = job(
            &m,
            "up-upgrade",
            "postgres:15",
            18,
            "data-shop-db-0",
            &owner,
        );
        assert_eq!(j.metadata.name.as_deref(), Some("up-upgrade"));
        let spec = j.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        let pod = spec.template.spec.unwrap();
        let init = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.image.as_deref(), Some("postgres:15"));
        assert_eq!(pod.containers[0].image.as_deref(), Some("postgres:16"));
        let claim = pod.volumes.as_ref().unwrap()[0]
            .persistent_volume_claim
            .as_ref()
            .unwrap();
        assert_eq!(claim.claim_name, "data-shop-db-0");
        let env = pod.containers[0].env.as_ref().unwrap();
        assert!(
            env.iter()
                .any(|e| e.name == "TO_MAJOR" && e.value.as_deref() == Some("18"))
        );
    }
}
