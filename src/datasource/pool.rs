//! The one pool mechanism every driver uses: deadpool's managed pool, built with the same bounds,
//! the same checkout errors, the same idle expiry and the same statistics for all three. A driver
//! brings a [`Manager`] whose `create` checks the address (or path) again for every connection
//! and whose `recycle` refuses a connection in doubt, calling [`expired`] first.
//!
//! A checked-out [`Object`] goes back to the pool when dropped; [`discard`] removes it instead
//! (its pool slot is freed at once, the connection closed by dropping it).

use std::time::Duration;

use deadpool::managed::{Manager, Metrics, Object, PoolError, RecycleError, Timeouts};

pub(super) use deadpool::managed::Pool;

use super::{DatasourceSpec, ExecError, PoolStats, RegistrySettings};

/// A pool for `manager` sized by the datasource's `pool_max_size` within the operator's
/// `max_pool_size`, waiting at most `pool_timeout` for a free connection and `connect_timeout`
/// to open or recycle one.
pub(super) fn build<M>(
    manager: M,
    spec: &DatasourceSpec,
    settings: &RegistrySettings,
) -> Result<Pool<M>, ExecError>
where
    M: Manager<Error = ExecError>,
{
    Pool::builder(manager)
        .max_size(spec.pool_max_size.min(settings.max_pool_size).max(1))
        .timeouts(Timeouts {
            wait: Some(settings.pool_timeout),
            create: Some(settings.connect_timeout),
            recycle: Some(settings.connect_timeout),
        })
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| ExecError::Unavailable(format!("could not build the pool: {e}")))
}

/// A connection from the pool, or the error a caller is given. The manager's own errors are
/// already scrubbed `ExecError`s; nothing else deadpool reports carries driver text.
pub(super) async fn checkout<M>(
    pool: &Pool<M>,
    connect_timeout: Duration,
) -> Result<Object<M>, ExecError>
where
    M: Manager<Error = ExecError>,
{
    pool.get().await.map_err(|e| match e {
        PoolError::Timeout(deadpool::managed::TimeoutType::Wait) => ExecError::PoolTimeout,
        PoolError::Timeout(_) => {
            ExecError::Unavailable(format!("connecting took longer than {connect_timeout:?}"))
        }
        PoolError::Backend(e) => e,
        PoolError::Closed => ExecError::Unavailable("the datasource's pool is closed".into()),
        PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
            ExecError::Unavailable("the datasource's pool failed".into())
        }
    })
}

/// Removes a connection from its pool for good: its slot is free at once and the connection
/// closes when the returned value is dropped.
pub(super) fn discard<M: Manager>(obj: Object<M>) -> M::Type {
    Object::take(obj)
}

/// For a manager's `recycle`: a connection last checked out longer than `idle_timeout` ago is not
/// reused (the server may have timed it out, and an idle datasource should not hold connections
/// open). deadpool counts from the last checkout, so a connection that ran one statement for
/// nearly that long is opened afresh too: a reconnect, never a stale connection.
pub(super) fn expired<E>(metrics: &Metrics, idle_timeout: Duration) -> Result<(), RecycleError<E>> {
    if metrics.last_used() >= idle_timeout {
        Err(RecycleError::message("idle for longer than idle_timeout"))
    } else {
        Ok(())
    }
}

/// Connections open, in use, and requests waiting for one.
pub(super) fn stats<M: Manager>(pool: &Pool<M>) -> PoolStats {
    let s = pool.status();
    PoolStats {
        size: s.size,
        in_use: s.size.saturating_sub(s.available),
        waiting: s.waiting,
    }
}
