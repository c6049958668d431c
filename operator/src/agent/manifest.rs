//! The manifest stored beside each dump: what a restore checks before
//! touching the database, and what verification compares against.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const DUMP_SUFFIX: &str = ".dump";
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: u32,
    pub object_key: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub created_at: String,
    pub food_app: String,
    pub namespace: String,
    /// `server_version` of the dumped server.
    pub postgres_version: String,
    /// `pg_dump --version`.
    pub pg_dump_version: String,
    /// Newest applied API migration, if the schema has any.
    pub schema_version: Option<i64>,
    /// Rows per table (`schema.table`) in the dumped snapshot.
    pub tables: BTreeMap<String, i64>,
}

pub fn manifest_key(dump_key: &str) -> String {
    format!(
        "{}{MANIFEST_SUFFIX}",
        dump_key.strip_suffix(DUMP_SUFFIX).unwrap_or(dump_key)
    )
}

pub fn dump_key(manifest_key: &str) -> String {
    format!(
        "{}{DUMP_SUFFIX}",
        manifest_key
            .strip_suffix(MANIFEST_SUFFIX)
            .unwrap_or(manifest_key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_pair_up() {
        let d = "foodapp/food/shop/20261121T081543123Z.dump";
        assert_eq!(
            manifest_key(d),
            "foodapp/food/shop/20261121T081543123Z.manifest.json"
        );
        assert_eq!(dump_key(&manifest_key(d)), d);
    }
}
