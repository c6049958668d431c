//! Which backups a FoodApp has, and retention: keep the newest `keepLast`,
//! delete the rest — dump and manifest — one key at a time. Only keys
//! directly under the FoodApp's own prefix whose manifest names it count:
//! another tenant's objects in a shared bucket are never listed, used or
//! deleted. A dump without a manifest is a failed or interrupted run; it is
//! deleted once it is older than a day (a run in progress is never that old).

use super::manifest::{DUMP_SUFFIX, MANIFEST_SUFFIX, Manifest, dump_key, manifest_key};
use super::{Error, StoreArgs, s3};

/// A dump without a manifest this much older than the newest key is an
/// abandoned run.
const ABANDONED_AFTER_HOURS: i64 = 24;

/// A complete backup of this FoodApp.
#[derive(Debug, Clone)]
pub struct Backup {
    pub dump: String,
    pub manifest: Manifest,
}

/// The timestamp a key carries (`<prefix>/<ts>.dump`), as the agent writes it.
fn key_time(key: &str) -> Option<chrono::NaiveDateTime> {
    let name = key.rsplit('/').next()?;
    let ts = name
        .strip_suffix(DUMP_SUFFIX)
        .or_else(|| name.strip_suffix(MANIFEST_SUFFIX))?;
    chrono::NaiveDateTime::parse_from_str(ts, "%Y%m%dT%H%M%S%3fZ").ok()
}

/// Dumps without a manifest that are old enough to be abandoned runs.
pub fn abandoned(keys: &[String], now: chrono::NaiveDateTime) -> Vec<String> {
    keys.iter()
        .filter(|k| k.ends_with(DUMP_SUFFIX) && !keys.contains(&manifest_key(k)))
        .filter(|k| key_time(k).is_some_and(|t| (now - t).num_hours() >= ABANDONED_AFTER_HOURS))
        .cloned()
        .collect()
}

/// The keys to delete so that only the newest `keep` of `backups` remain
/// (oldest first; keys carry sortable timestamps).
pub fn expired(backups: &[Backup], keep: usize) -> Vec<String> {
    let mut sorted: Vec<&Backup> = backups.iter().collect();
    sorted.sort_by(|a, b| a.dump.cmp(&b.dump));
    let old = sorted.len().saturating_sub(keep);
    sorted[..old]
        .iter()
        .flat_map(|b| [b.dump.clone(), manifest_key(&b.dump)])
        .collect()
}

/// The newest backup.
pub fn latest(backups: &[Backup]) -> Option<&Backup> {
    backups.iter().max_by(|a, b| a.dump.cmp(&b.dump))
}

/// This FoodApp's complete backups, and every key under its prefix.
pub async fn backups(
    client: &aws_sdk_s3::Client,
    store: &StoreArgs,
) -> Result<(Vec<Backup>, Vec<String>), Error> {
    let keys = s3::list(client, &store.s3_bucket, &store.key_prefix()).await?;
    let mut out = Vec::new();
    for m in keys.iter().filter(|k| k.ends_with(MANIFEST_SUFFIX)) {
        let dump = dump_key(m);
        if !keys.contains(&dump) {
            continue;
        }
        let bytes = s3::get_bytes(client, &store.s3_bucket, m).await?;
        let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes) else {
            tracing::warn!(key = m, "unreadable manifest: ignored");
            continue;
        };
        if !manifest.belongs_to(&store.namespace, &store.foodapp, &dump) {
            tracing::warn!(key = m, "a manifest naming another FoodApp: ignored");
            continue;
        }
        out.push(Backup { dump, manifest });
    }
    Ok((out, keys))
}

/// Applies retention; returns the keys deleted.
pub async fn apply(
    client: &aws_sdk_s3::Client,
    store: &StoreArgs,
    keep: usize,
) -> Result<Vec<String>, Error> {
    let (backups, keys) = backups(client, store).await?;
    let mut doomed = expired(&backups, keep);
    doomed.extend(abandoned(&keys, chrono::Utc::now().naive_utc()));
    for key in &doomed {
        s3::delete(client, &store.s3_bucket, key).await?;
    }
    Ok(doomed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(ts: &str) -> Backup {
        let dump = format!("p/ns/app/{ts}.dump");
        Backup {
            manifest: Manifest {
                format: 1,
                object_key: dump.clone(),
                size_bytes: 1,
                sha256: String::new(),
                created_at: String::new(),
                food_app: "app".into(),
                namespace: "ns".into(),
                postgres_version: String::new(),
                pg_dump_version: String::new(),
                schema_version: None,
                tables: Default::default(),
                verified: true,
            },
            dump,
        }
    }

    #[test]
    fn only_the_newest_backups_survive() {
        let backups: Vec<Backup> = [
            "20260101T000000000Z",
            "20260103T000000000Z",
            "20260102T000000000Z",
        ]
        .iter()
        .map(|t| backup(t))
        .collect();
        assert_eq!(
            expired(&backups, 2),
            [
                "p/ns/app/20260101T000000000Z.dump",
                "p/ns/app/20260101T000000000Z.manifest.json"
            ]
        );
        assert!(expired(&backups, 3).is_empty());
        assert_eq!(expired(&backups, 0).len(), 6);
        assert_eq!(
            latest(&backups).map(|b| b.dump.as_str()),
            Some("p/ns/app/20260103T000000000Z.dump")
        );
    }

    #[test]
    fn dumps_left_without_a_manifest_go_after_a_day() {
        let keys: Vec<String> = [
            "p/ns/app/20260101T000000000Z.dump",
            "p/ns/app/20260102T000000000Z.dump",
            "p/ns/app/20260102T000000000Z.manifest.json",
            "p/ns/app/20260103T110000000Z.dump",
        ]
        .map(str::to_owned)
        .to_vec();
        let now = key_time("p/ns/app/20260103T120000000Z.dump").unwrap();
        assert_eq!(abandoned(&keys, now), ["p/ns/app/20260101T000000000Z.dump"]);
    }

    #[test]
    fn a_manifest_naming_another_foodapp_does_not_belong() {
        let b = backup("20260101T000000000Z");
        assert!(b.manifest.belongs_to("ns", "app", &b.dump));
        assert!(!b.manifest.belongs_to("ns", "other", &b.dump));
        assert!(!b.manifest.belongs_to("ns", "app", "p/ns/app/x.dump"));
    }
}
