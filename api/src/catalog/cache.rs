//! A micro-cache for menu listings: the menu is read on every visit and
//! changes rarely, so a serialized page is reused for a short TTL
//! (`MENU_CACHE_TTL`, default 1s). Catalog writes on this replica clear it at
//! once; other replicas see them within the TTL. Stock shown may lag by as
//! much — ordering always re-checks stock under lock, so nothing is oversold.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::body::Bytes;

const MAX_ENTRIES: usize = 1024;

pub struct MenuCache {
    ttl: Duration,
    entries: RwLock<HashMap<String, (Instant, Bytes)>>,
}

impl MenuCache {
    pub fn new(ttl: Duration) -> Self {
        MenuCache {
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }

    pub fn get(&self, key: &str) -> Option<Bytes> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, body)| body.clone())
    }

    pub fn put(&self, key: String, body: Bytes) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            // Arbitrary query strings must not grow memory without bound.
            entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), body));
    }

    pub fn clear(&self) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_clear() {
        let c = MenuCache::new(Duration::from_millis(50));
        c.put("a".into(), Bytes::from_static(b"x"));
        assert_eq!(c.get("a").as_deref(), Some(&b"x"[..]));
        c.clear();
        assert!(c.get("a").is_none());
        c.put("a".into(), Bytes::from_static(b"x"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(c.get("a").is_none());
    }

    #[test]
    fn a_zero_ttl_disables_caching() {
        let c = MenuCache::new(Duration::ZERO);
        c.put("a".into(), Bytes::from_static(b"x"));
        assert!(c.get("a").is_none());
    }

    #[test]
    fn the_cache_is_bounded() {
        let c = MenuCache::new(Duration::from_secs(60));
        for i in 0..(MAX_ENTRIES + 10) {
            c.put(i.to_string(), Bytes::from_static(b"x"));
        }
        assert!(c.entries.read().unwrap().len() <= MAX_ENTRIES);
    }
}
