//! Retention: keep the newest `keepLast` backups, delete the rest — dump and
//! manifest — one key at a time.

use super::manifest::{MANIFEST_SUFFIX, dump_key, manifest_key};
use super::s3;

/// The keys to delete so that only the newest `keep` complete backups remain.
/// Keys carry sortable timestamps, so name order is time order. Dumps without
/// a manifest (a run that is still uploading) are left alone.
pub fn expired(keys: &[String], keep: usize) -> Vec<String> {
    let mut manifests: Vec<&String> = keys
        .iter()
        .filter(|k| k.ends_with(MANIFEST_SUFFIX))
        .collect();
    manifests.sort();
    let old = manifests.len().saturating_sub(keep);
    let mut out = Vec::new();
    for m in &manifests[..old] {
        let dump = dump_key(m);
        if keys.contains(&dump) {
            out.push(dump);
        }
        out.push((*m).clone());
    }
    out
}

/// Applies retention under `prefix`; returns the keys deleted.
pub async fn apply(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    keep: usize,
) -> Result<Vec<String>, s3::Error> {
    let keys = s3::list(client, bucket, prefix).await?;
    let doomed = expired(&keys, keep);
    for key in &doomed {
        s3::delete(client, bucket, key).await?;
    }
    Ok(doomed)
}

/// The newest complete backup's dump key.
pub fn latest(keys: &[String]) -> Option<String> {
    keys.iter()
        .filter(|k| k.ends_with(MANIFEST_SUFFIX))
        .max()
        .map(|m| dump_key(m))
}

/// Whether a dump key has its manifest among `keys`.
pub fn complete(keys: &[String], dump: &str) -> bool {
    keys.contains(&manifest_key(dump))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(ts: &str) -> [String; 2] {
        [
            format!("p/ns/app/{ts}.dump"),
            format!("p/ns/app/{ts}.manifest.json"),
        ]
    }

    #[test]
    fn only_the_newest_complete_backups_survive() {
        let mut keys: Vec<String> = [
            "20260101T000000000Z",
            "20260103T000000000Z",
            "20260102T000000000Z",
        ]
        .iter()
        .flat_map(|t| backup(t))
        .collect();
        keys.push("p/ns/app/20260104T000000000Z.dump".into()); // still uploading
        let doomed = expired(&keys, 2);
        assert_eq!(doomed, backup("20260101T000000000Z").to_vec());
        assert!(expired(&keys, 3).is_empty());
        assert_eq!(
            expired(&keys, 0).len(),
            6,
            "keep 0 deletes every complete backup"
        );
        assert_eq!(
            latest(&keys).as_deref(),
            Some("p/ns/app/20260103T000000000Z.dump")
        );
        assert!(!complete(&keys, "p/ns/app/20260104T000000000Z.dump"));
    }
}
