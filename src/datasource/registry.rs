//! The pool registry: one pool per datasource, created on first use, rebuilt when the
//! datasource's connection settings change (a new `generation`), closed on delete, when its
//! integration is turned off, or after `idle_timeout` without use.
//!
//! Beside each pool it keeps the datasource's [`Catalog`], what the SQL policy knows of the
//! server: read on first use, read again on `check`, after `catalog_refresh` (in the background,
//! the old one serving meanwhile), and before the next query once a statement failed on a
//! missing object ([`Registry::catalog_stale`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::policy::catalog::Known;

use super::driver::{self, Driver};
use super::{
    DatasourceSpec, ExecError, Execute, Execution, PoolStats, RegistrySettings, ServerInfo,
    TableInfo,
};
use crate::model::DatasourceId;

/// A catalogue as read at one moment.
#[derive(Debug)]
pub struct CatalogRead {
    /// The catalogue and its fingerprint (part of the policy cache's key).
    pub known: Known,
    read_at: Instant,
}

/// A pool and what is known of its server.
struct Open {
    pool: Arc<dyn Driver>,
    catalog: arc_swap::ArcSwapOption<CatalogRead>,
    /// Set after a statement failed on a missing object: read the catalogue before the next use.
    stale: AtomicBool,
    /// Serialises reads of the catalogue, so concurrent first queries read it once.
    reading: Arc<tokio::sync::Mutex<()>>,
}

struct Entry {
    generation: u64,
    pool: Arc<Open>,
    last_used: Instant,
}

pub struct Registry {
    settings: RegistrySettings,
    pools: Mutex<HashMap<DatasourceId, Entry>>,
    /// One lock per datasource being opened, so two first requests do not build two pools while
    /// a slow datasource never delays another's first query.
    opening: Mutex<HashMap<DatasourceId, Arc<tokio::sync::Mutex<()>>>>,
}

impl Registry {
    pub fn new(settings: RegistrySettings) -> Arc<Registry> {
        Arc::new(Registry {
            settings,
            pools: Mutex::new(HashMap::new()),
            opening: Mutex::new(HashMap::new()),
        })
    }

    pub fn settings(&self) -> &RegistrySettings {
        &self.settings
    }

    fn cached(&self, spec: &DatasourceSpec) -> Option<Arc<Open>> {
        let mut pools = self.pools.lock().ok()?;
        let e = pools.get_mut(&spec.id)?;
        if e.generation == spec.generation {
            e.last_used = Instant::now();
            Some(e.pool.clone())
        } else {
            None
        }
    }

    async fn pool(&self, spec: &DatasourceSpec) -> Result<Arc<Open>, ExecError> {
        if let Some(p) = self.cached(spec) {
            return Ok(p);
        }
        let lock = self
            .opening
            .lock()
            .map_err(|_| ExecError::Unavailable("pool registry lock poisoned".into()))?
            .entry(spec.id.clone())
            .or_default()
            .clone();
        let _guard = lock.lock().await;
        if let Some(p) = self.cached(spec) {
            return Ok(p);
        }
        let opened = driver::open(spec, &self.settings).await;
        if let Ok(mut m) = self.opening.lock() {
            m.remove(&spec.id);
        }
        let pool = Arc::new(Open {
            pool: opened?,
            catalog: arc_swap::ArcSwapOption::empty(),
            stale: AtomicBool::new(false),
            reading: Arc::new(tokio::sync::Mutex::new(())),
        });
        let old = self.pools.lock().ok().and_then(|mut m| {
            m.insert(
                spec.id.clone(),
                Entry {
                    generation: spec.generation,
                    pool: pool.clone(),
                    last_used: Instant::now(),
                },
            )
        });
        if let Some(old) = old {
            old.pool.pool.close();
        }
        Ok(pool)
    }

    pub async fn execute(
        &self,
        spec: &DatasourceSpec,
        req: Execute,
    ) -> Result<Execution, ExecError> {
        self.pool(spec).await?.pool.execute(req).await
    }

    /// Connects and reports the server; also reads the catalogue afresh, which it returns.
    pub async fn check(
        &self,
        spec: &DatasourceSpec,
    ) -> Result<(ServerInfo, Arc<CatalogRead>), ExecError> {
        let open = self.pool(spec).await?;
        let info = open.pool.check().await?;
        let catalog = Self::read_catalog(&open, None).await?;
        Ok((info, catalog))
    }

    pub async fn schema(&self, spec: &DatasourceSpec) -> Result<Vec<TableInfo>, ExecError> {
        self.pool(spec).await?.pool.schema().await
    }

    /// The datasource's catalogue: the one in memory unless none was read yet or a statement
    /// failed on a missing object since (then it is read now); one older than `catalog_refresh`
    /// is served while a fresh one is read in the background.
    pub async fn catalog(&self, spec: &DatasourceSpec) -> Result<Arc<CatalogRead>, ExecError> {
        let open = self.pool(spec).await?;
        if !open.stale.load(Ordering::Acquire)
            && let Some(current) = open.catalog.load_full()
        {
            if current.read_at.elapsed() >= self.settings.catalog_refresh
                && let Ok(guard) = open.reading.clone().try_lock_owned()
            {
                let open = open.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    if let Err(e) = Self::read_catalog_locked(&open).await {
                        tracing::warn!(error = %e, "could not read a datasource's catalogue again");
                    }
                });
            }
            return Ok(current);
        }
        let seen = open.catalog.load_full().map(|c| c.read_at);
        Self::read_catalog(&open, seen).await
    }

    /// Marks a datasource's catalogue as out of date: a statement failed on a missing object,
    /// so the server's catalogue moved under it.
    pub fn catalog_stale(&self, id: &crate::model::DatasourceId) {
        if let Ok(pools) = self.pools.lock()
            && let Some(e) = pools.get(id)
        {
            e.pool.stale.store(true, Ordering::Release);
        }
    }

    /// Reads the catalogue unless another task read it since `seen` (then that one is used).
    async fn read_catalog(
        open: &Arc<Open>,
        seen: Option<Instant>,
    ) -> Result<Arc<CatalogRead>, ExecError> {
        let _guard = open.reading.lock().await;
        if let Some(current) = open.catalog.load_full()
            && seen.is_some_and(|s| current.read_at > s)
            && !open.stale.load(Ordering::Acquire)
        {
            return Ok(current);
        }
        Self::read_catalog_locked(open).await
    }

    async fn read_catalog_locked(open: &Arc<Open>) -> Result<Arc<CatalogRead>, ExecError> {
        open.stale.store(false, Ordering::Release);
        let catalog = match open.pool.introspect().await {
            Ok(c) => c,
            Err(e) => {
                open.stale.store(true, Ordering::Release);
                return Err(e);
            }
        };
        let read = Arc::new(CatalogRead {
            known: Known::new(catalog),
            read_at: Instant::now(),
        });
        open.catalog.store(Some(read.clone()));
        Ok(read)
    }

    /// Closes a datasource's pool (delete, new settings, integration off).
    pub fn close(&self, id: &DatasourceId) {
        let entry = self.pools.lock().ok().and_then(|mut m| m.remove(id));
        if let Some(e) = entry {
            e.pool.pool.close();
        }
    }

    /// Closes pools unused for longer than `idle_timeout`; returns how many were closed.
    pub fn close_idle(&self) -> usize {
        let idle = self.settings.idle_timeout;
        let removed: Vec<Entry> = match self.pools.lock() {
            Ok(mut m) => {
                let ids: Vec<DatasourceId> = m
                    .iter()
                    .filter(|(_, e)| {
                        e.last_used.elapsed() >= idle && e.pool.pool.stats().in_use == 0
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                ids.iter().filter_map(|id| m.remove(id)).collect()
            }
            Err(_) => Vec::new(),
        };
        for e in &removed {
            e.pool.pool.close();
        }
        removed.len()
    }

    pub fn open_pools(&self) -> usize {
        self.pools.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Size, in-use and waiting counts of every open pool (for /metrics).
    pub fn stats(&self) -> Vec<(DatasourceId, PoolStats)> {
        self.pools
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(id, e)| (id.clone(), e.pool.pool.stats()))
                    .collect()
            })
            .unwrap_or_default()
    }
}
