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
    /// Whether the stored object was restored into a throwaway server and
    /// its row counts matched (false: verification was turned off). The
    /// manifest is written after verification: a backup that failed it has
    /// none, and is never used.
    #[serde(default)]
    pub verified: bool,
}

impl Manifest {
    /// Whether this manifest describes `dump` of this FoodApp: a restore or
    /// retention never acts on another FoodApp's backup, even in a shared
    /// bucket and prefix.
    pub fn belongs_to(&self, namespace: &str, food_app: &str, dump: &str) -> bool {
        self.namespace == namespace && self.food_app == food_app && self.object_key == dump
    }
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
