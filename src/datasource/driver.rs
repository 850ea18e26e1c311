//! The contract every database driver keeps, and the one place a datasource's kind picks its
//! driver. The registry holds pools as `Arc<dyn Driver>` and never looks at the kind again.
//!
//! What each implementation guarantees (tests/driver_contract.rs checks it for all three):
//! - every new connection goes to an address (or path) checked again at that moment;
//! - a statement on a `read_only` datasource runs in a transaction that starts read-only, and
//!   nothing a statement leaves in the session reaches the next request;
//! - rows stream as they arrive, cut at `max_rows` (reporting `truncated`) and at the result's
//!   byte cap, and no single value larger than that cap is read whole;
//! - the deadline holds while rows stream, and a statement whose reader went away or whose
//!   deadline passed is stopped on the server, its connection not reused as it was;
//! - the wait for a free connection is bounded (`PoolTimeout`), idle pools close, and `stats`
//!   counts connections open, in use and waited for.

use futures::future::BoxFuture;
use std::sync::Arc;

use super::mysql::MysqlPool;
use super::postgres::PgPool;
use super::sqlite::SqlitePool;
use super::{
    DatasourceSpec, ExecError, Execute, Execution, PoolStats, RegistrySettings, ServerInfo,
    TableInfo,
};
use crate::model::DatasourceKind;
use crate::policy::Catalog;

/// A datasource's pool of service-account connections and what can be done through it.
pub trait Driver: Send + Sync {
    /// Runs one policy-checked statement. Dropping the future or the row stream stops it.
    fn execute(&self, req: Execute) -> BoxFuture<'_, Result<Execution, ExecError>>;
    /// Connects (or reuses a connection) and reports the server.
    fn check(&self) -> BoxFuture<'_, Result<ServerInfo, ExecError>>;
    /// The tables and columns the service account can see (the caller filters by policy).
    fn schema(&self) -> BoxFuture<'_, Result<Vec<TableInfo>, ExecError>>;
    /// What the SQL policy needs to know of the server (`policy::catalog`).
    fn introspect(&self) -> BoxFuture<'_, Result<Catalog, ExecError>>;
    fn stats(&self) -> PoolStats;
    /// No new checkouts; idle connections close now, busy ones when they come back.
    fn close(&self);
}

/// Opens the pool for a datasource: the one place its kind chooses the driver. Connections are
/// opened on first use.
pub async fn open(
    spec: &DatasourceSpec,
    settings: &RegistrySettings,
) -> Result<Arc<dyn Driver>, ExecError> {
    Ok(match spec.kind {
        DatasourceKind::Postgres => Arc::new(PgPool::open(spec, settings).await?),
        DatasourceKind::Mysql => Arc::new(MysqlPool::open(spec, settings).await?),
        DatasourceKind::Sqlite => Arc::new(SqlitePool::open(spec, settings).await?),
    })
}

/// Implements [`Driver`] by the pool's own inherent methods of the same names.
macro_rules! driver_by_inherent_methods {
    ($pool:ty) => {
        impl Driver for $pool {
            fn execute(&self, req: Execute) -> BoxFuture<'_, Result<Execution, ExecError>> {
                Box::pin(<$pool>::execute(self, req))
            }
            fn check(&self) -> BoxFuture<'_, Result<ServerInfo, ExecError>> {
                Box::pin(<$pool>::check(self))
            }
            fn schema(&self) -> BoxFuture<'_, Result<Vec<TableInfo>, ExecError>> {
                Box::pin(<$pool>::schema(self))
            }
            fn introspect(&self) -> BoxFuture<'_, Result<Catalog, ExecError>> {
                Box::pin(<$pool>::introspect(self))
            }
            fn stats(&self) -> PoolStats {
                <$pool>::stats(self)
            }
            fn close(&self) {
                <$pool>::close(self)
            }
        }
    };
}

driver_by_inherent_methods!(PgPool);
driver_by_inherent_methods!(MysqlPool);
driver_by_inherent_methods!(SqlitePool);
