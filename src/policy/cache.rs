//! A bounded cache of policy decisions, so a statement an app sends again is not parsed, walked,
//! rendered and re-parsed again (sqlparser costs tens to hundreds of µs per statement; a hit
//! costs a hash and a lock).
//!
//! The key is everything the decision depends on: the SQL text, the dialect, the default schema,
//! the length cap, the whole scope policy and the fingerprint of the server's catalogue. Editing
//! a datasource's policy, or a change on the server that the catalogue shows (a new partition, a
//! view redefined), therefore changes the key: an old decision can never be served for a new
//! policy or a new catalogue. Refusals are cached too. The cache
//! is bounded by entries and by the bytes of SQL it holds, evicting the least recently used.

use lru::LruCache;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use super::catalog::Known;
use super::{Checked, PolicyError, check_isolated};
use crate::model::{DatasourceKind, ScopePolicy};

#[derive(PartialEq, Eq, Hash)]
struct Key {
    kind: DatasourceKind,
    default_schema: String,
    max_sql_bytes: usize,
    scope: ScopePolicy,
    catalog: u64,
    sql: String,
}

impl Key {
    /// Bytes this entry keeps alive: the SQL twice (asked and rendered) plus the scope lists.
    fn weight(&self) -> usize {
        let lists: usize = self
            .scope
            .allowed_tables
            .iter()
            .flatten()
            .chain(&self.scope.denied_tables)
            .chain(&self.scope.extra_functions)
            .map(String::len)
            .sum();
        2 * self.sql.len() + lists + self.default_schema.len() + 128
    }
}

type Decision = Result<Arc<Checked>, PolicyError>;

struct Inner {
    entries: LruCache<u64, (Arc<Key>, Decision)>,
    bytes: usize,
}

pub struct PolicyCache {
    inner: Option<Mutex<Inner>>,
    max_bytes: usize,
}

/// How full the cache is, for tests and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    pub bytes: usize,
}

impl PolicyCache {
    /// `max_entries == 0` turns the cache off.
    pub fn new(max_entries: usize, max_bytes: usize) -> PolicyCache {
        PolicyCache {
            inner: std::num::NonZeroUsize::new(max_entries).map(|n| {
                Mutex::new(Inner {
                    entries: LruCache::new(n),
                    bytes: 0,
                })
            }),
            max_bytes,
        }
    }

    fn hash(key: &Key) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        h.finish()
    }

    /// The decision for `sql` under `scope`: from the cache, or computed off the async threads
    /// (see [`check_isolated`]) and remembered.
    pub async fn check(
        &self,
        sql: String,
        kind: DatasourceKind,
        default_schema: String,
        max_sql_bytes: usize,
        scope: ScopePolicy,
        known: Known,
    ) -> Decision {
        let Known {
            catalog,
            fingerprint: catalog_fingerprint,
        } = known;
        let Some(inner) = &self.inner else {
            return check_isolated(sql, kind, default_schema, max_sql_bytes, scope, catalog)
                .await
                .map(Arc::new);
        };
        // Over-long text is refused without hashing or storing it.
        if sql.len() > max_sql_bytes {
            return Err(PolicyError::TooLong { max: max_sql_bytes });
        }
        let key = Key {
            kind,
            default_schema,
            max_sql_bytes,
            scope,
            catalog: catalog_fingerprint,
            sql,
        };
        let h = Self::hash(&key);
        if let Ok(mut g) = inner.lock()
            && let Some((stored, decision)) = g.entries.get(&h)
            // A 64-bit hash can collide: only an identical key may answer.
            && **stored == key
        {
            return decision.clone();
        }
        let decision = check_isolated(
            key.sql.clone(),
            key.kind,
            key.default_schema.clone(),
            key.max_sql_bytes,
            key.scope.clone(),
            catalog,
        )
        .await
        .map(Arc::new);
        let weight = key.weight();
        if weight <= self.max_bytes
            && let Ok(mut g) = inner.lock()
        {
            if let Some((old, _)) = g.entries.put(h, (Arc::new(key), decision.clone())) {
                g.bytes = g.bytes.saturating_sub(old.weight());
            }
            g.bytes += weight;
            while g.bytes > self.max_bytes {
                match g.entries.pop_lru() {
                    Some((_, (old, _))) => g.bytes = g.bytes.saturating_sub(old.weight()),
                    None => break,
                }
            }
        }
        decision
    }

    pub fn stats(&self) -> CacheStats {
        match &self.inner {
            Some(inner) => inner
                .lock()
                .map(|g| CacheStats {
                    entries: g.entries.len(),
                    bytes: g.bytes,
                })
                .unwrap_or_default(),
            None => CacheStats::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG: DatasourceKind = DatasourceKind::Postgres;

    use crate::policy::Catalog;
    use crate::policy::catalog::{RelName, Relation};

    fn catalog() -> Known {
        Known::new(Catalog::default())
    }

    async fn run(c: &PolicyCache, sql: &str, scope: &ScopePolicy) -> Decision {
        c.check(
            sql.into(),
            PG,
            "public".into(),
            1 << 16,
            scope.clone(),
            catalog(),
        )
        .await
    }

    #[tokio::test]
    async fn a_repeated_statement_is_answered_from_the_cache_with_the_same_decision() {
        let c = PolicyCache::new(100, 1 << 20);
        let open = ScopePolicy::default();
        let first = run(&c, "SELECT id FROM customers WHERE id = $1", &open)
            .await
            .unwrap();
        let second = run(&c, "SELECT id FROM customers WHERE id = $1", &open)
            .await
            .unwrap();
        assert!(
            Arc::ptr_eq(&first, &second),
            "the second answer is the cached one"
        );
        assert_eq!(c.stats().entries, 1);
    }

    #[tokio::test]
    async fn a_changed_policy_is_a_different_key_and_refusals_are_cached_as_refusals() {
        let c = PolicyCache::new(100, 1 << 20);
        let open = ScopePolicy::default();
        let closed = ScopePolicy {
            denied_tables: vec!["public.customers".into()],
            ..Default::default()
        };
        let sql = "SELECT id FROM customers";
        assert!(run(&c, sql, &open).await.is_ok());
        let refused = run(&c, sql, &closed).await.unwrap_err();
        assert!(
            matches!(refused, PolicyError::TableNotAllowed(_)),
            "{refused:?}"
        );
        assert_eq!(run(&c, sql, &closed).await.unwrap_err(), refused);
        assert!(
            run(&c, sql, &open).await.is_ok(),
            "the open policy still allows it"
        );
        assert_eq!(c.stats().entries, 2);
        // Same text on another dialect or default schema is another key too.
        let other_schema = c
            .check(
                sql.into(),
                PG,
                "sales".into(),
                1 << 16,
                open.clone(),
                catalog(),
            )
            .await;
        assert!(other_schema.is_ok());
        assert_eq!(c.stats().entries, 3);
        // A catalogue read anew with other contents is another key too.
        let mut changed = Catalog::default();
        changed.relations.insert(
            RelName::new("public", "customers"),
            Relation {
                children: vec![RelName::new("public", "vip")],
                ..Default::default()
            },
        );
        let changed = Known::new(changed);
        let denied_child = ScopePolicy {
            denied_tables: vec!["public.vip".into()],
            ..Default::default()
        };
        assert!(
            run(&c, sql, &denied_child).await.is_ok(),
            "no child known yet"
        );
        let refused = c
            .check(
                sql.into(),
                PG,
                "public".into(),
                1 << 16,
                denied_child,
                changed,
            )
            .await;
        assert!(
            matches!(refused, Err(PolicyError::TableNotAllowed(_))),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_entry_and_byte_bounds() {
        let c = PolicyCache::new(3, 1 << 20);
        let open = ScopePolicy::default();
        for i in 0..10 {
            run(&c, &format!("SELECT {i}"), &open).await.unwrap();
        }
        assert_eq!(c.stats().entries, 3);
        let small = PolicyCache::new(1000, 2_000);
        for i in 0..50 {
            run(&small, &format!("SELECT {i} AS {}", "x".repeat(100)), &open)
                .await
                .unwrap();
        }
        assert!(small.stats().bytes <= 2_000, "{:?}", small.stats());
        assert!(small.stats().entries < 50);
    }

    #[tokio::test]
    async fn a_disabled_cache_still_checks_and_over_long_sql_is_refused_unstored() {
        let off = PolicyCache::new(0, 0);
        assert!(run(&off, "SELECT 1", &ScopePolicy::default()).await.is_ok());
        assert!(
            run(&off, "DELETE FROM t", &ScopePolicy::default())
                .await
                .is_err()
        );
        assert_eq!(off.stats(), CacheStats::default());
        let c = PolicyCache::new(10, 1 << 20);
        let long = format!("SELECT '{}'", "a".repeat(1 << 16));
        assert!(matches!(
            run(&c, &long, &ScopePolicy::default()).await,
            Err(PolicyError::TooLong { .. })
        ));
        assert_eq!(c.stats().entries, 0);
    }
}
