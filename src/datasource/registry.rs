//! The pool registry: one pool per datasource, created on first use, rebuilt when the
//! datasource's connection settings change (a new `generation`), closed on delete, when its
//! integration is turned off, or after `idle_timeout` without use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{
    DatasourceSpec, ExecError, Execute, Execution, PoolStats, RegistrySettings, ServerInfo,
    TableInfo,
};
use super::{mysql::MysqlPool, postgres::PgPool, sqlite::SqlitePool};
use crate::model::{DatasourceId, DatasourceKind};

enum Pool {
    Postgres(PgPool),
    Mysql(MysqlPool),
    Sqlite(SqlitePool),
}

impl Pool {
    async fn open(spec: &DatasourceSpec, settings: &RegistrySettings) -> Result<Pool, ExecError> {
        Ok(match spec.kind {
            DatasourceKind::Postgres => Pool::Postgres(PgPool::open(spec, settings).await?),
            DatasourceKind::Mysql => Pool::Mysql(MysqlPool::open(spec, settings).await?),
            DatasourceKind::Sqlite => Pool::Sqlite(SqlitePool::open(spec, settings).await?),
        })
    }

    async fn execute(&self, req: Execute) -> Result<Execution, ExecError> {
        match self {
            Pool::Postgres(p) => p.execute(req).await,
            Pool::Mysql(p) => p.execute(req).await,
            Pool::Sqlite(p) => p.execute(req).await,
        }
    }

    async fn check(&self) -> Result<ServerInfo, ExecError> {
        match self {
            Pool::Postgres(p) => p.check().await,
            Pool::Mysql(p) => p.check().await,
            Pool::Sqlite(p) => p.check().await,
        }
    }

    async fn schema(&self) -> Result<Vec<TableInfo>, ExecError> {
        match self {
            Pool::Postgres(p) => p.schema().await,
            Pool::Mysql(p) => p.schema().await,
            Pool::Sqlite(p) => p.schema().await,
        }
    }

    fn stats(&self) -> PoolStats {
        match self {
            Pool::Postgres(p) => p.stats(),
            Pool::Mysql(p) => p.stats(),
            Pool::Sqlite(p) => p.stats(),
        }
    }

    fn close(&self) {
        match self {
            Pool::Postgres(p) => p.close(),
            Pool::Mysql(p) => p.close(),
            Pool::Sqlite(p) => p.close(),
        }
    }
}

struct Entry {
    generation: u64,
    pool: Arc<Pool>,
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

    fn cached(&self, spec: &DatasourceSpec) -> Option<Arc<Pool>> {
        let mut pools = self.pools.lock().ok()?;
        let e = pools.get_mut(&spec.id)?;
        if e.generation == spec.generation {
            e.last_used = Instant::now();
            Some(e.pool.clone())
        } else {
            None
        }
    }

    async fn pool(&self, spec: &DatasourceSpec) -> Result<Arc<Pool>, ExecError> {
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
        let opened = Pool::open(spec, &self.settings).await;
        if let Ok(mut m) = self.opening.lock() {
            m.remove(&spec.id);
        }
        let pool = Arc::new(opened?);
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
            old.pool.close();
        }
        Ok(pool)
    }

    pub async fn execute(
        &self,
        spec: &DatasourceSpec,
        req: Execute,
    ) -> Result<Execution, ExecError> {
        self.pool(spec).await?.execute(req).await
    }

    pub async fn check(&self, spec: &DatasourceSpec) -> Result<ServerInfo, ExecError> {
        self.pool(spec).await?.check().await
    }

    pub async fn schema(&self, spec: &DatasourceSpec) -> Result<Vec<TableInfo>, ExecError> {
        self.pool(spec).await?.schema().await
    }

    /// Closes a datasource's pool (delete, new settings, integration off).
    pub fn close(&self, id: &DatasourceId) {
        let entry = self.pools.lock().ok().and_then(|mut m| m.remove(id));
        if let Some(e) = entry {
            e.pool.close();
        }
    }

    /// Closes pools unused for longer than `idle_timeout`; returns how many were closed.
    pub fn close_idle(&self) -> usize {
        let idle = self.settings.idle_timeout;
        let removed: Vec<Entry> = match self.pools.lock() {
            Ok(mut m) => {
                let ids: Vec<DatasourceId> = m
                    .iter()
                    .filter(|(_, e)| e.last_used.elapsed() >= idle && e.pool.stats().in_use == 0)
                    .map(|(id, _)| id.clone())
                    .collect();
                ids.iter().filter_map(|id| m.remove(id)).collect()
            }
            Err(_) => Vec::new(),
        };
        for e in &removed {
            e.pool.close();
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
                    .map(|(id, e)| (id.clone(), e.pool.stats()))
                    .collect()
            })
            .unwrap_or_default()
    }
}
