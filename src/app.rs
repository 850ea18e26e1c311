//! Builds the application from a configuration and runs it until a shutdown signal: binds the
//! listener first (so tests can ask for port 0 and learn the real port), then serves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

use crate::audit::{AuditSettings, AuditWriter};
use crate::config::Config;
use crate::datasource::RegistrySettings;
use crate::datasource::registry::Registry;
use crate::http::{AppState, router};
use crate::limits::Limiters;
use crate::metrics::Metrics;
use crate::store::{MasterKey, Store};

pub struct Application {
    listener: TcpListener,
    pub state: Arc<AppState>,
}

/// Opens the store (creating the data directory and master key if needed).
pub fn open_store(config: &Config) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&config.data_dir)?;
    let key = MasterKey::load(
        std::env::var("SLUICE_MASTER_KEY").ok().as_deref(),
        &config.data_dir,
    )?;
    Ok(Store::open(&config.store_path(), key)?)
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let store = Arc::new(open_store(&config)?);
        let audit = Arc::new(AuditWriter::start(
            &config.store_path(),
            AuditSettings {
                wait_for_commit: config.audit.wait_for_commit,
                max_batch: config.audit.max_batch,
                max_delay: Duration::from_millis(config.audit.max_delay_ms),
                queue_capacity: config.audit.queue_capacity,
                fsync: config.audit.fsync,
                ..AuditSettings::default()
            },
        )?);
        // Process-wide: it bounds the store's and the audit log's SQLite too.
        crate::datasource::sqlite::set_heap_limit(config.limits.sqlite_heap_limit_bytes);
        let registry = Registry::new(RegistrySettings {
            pool_timeout: config.pool_wait(),
            connect_timeout: Duration::from_millis(config.pools.connect_timeout_ms),
            idle_timeout: Duration::from_secs(config.pools.idle_timeout_secs),
            max_pool_size: config.pools.max_size,
            allow_networks: config.allow_networks.clone(),
            sqlite_roots: config.sqlite_roots(),
            max_result_bytes: config.limits.max_result_bytes,
            catalog_refresh: Duration::from_secs(config.pools.catalog_refresh_secs),
        });
        let listener = TcpListener::bind(config.listen).await?;
        let limits = Limiters::new(
            config.limits.max_concurrent_queries,
            config.limits.max_concurrent_per_token,
            config.limits.max_concurrent_per_app,
        );
        let policy_cache = crate::policy::cache::PolicyCache::new(
            config.limits.policy_cache_entries,
            config.limits.policy_cache_bytes,
        );
        let metrics = Arc::new(Metrics::new());
        let query = crate::query::QueryService::new(
            registry.clone(),
            audit.clone(),
            metrics.clone(),
            limits,
            policy_cache,
            config.limits.max_sql_bytes,
        );
        let state = Arc::new(AppState {
            config: Arc::new(config),
            store,
            audit,
            registry,
            metrics,
            query,
        });
        Ok(Application { listener, state })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests for at most
    /// `shutdown_grace_secs` and flushes the audit log.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state.clone();
        let background = tokio::spawn(background_tasks(state.clone()));
        let app = router(state.clone());
        tracing::info!(addr = %self.listener.local_addr()?, "sluice listening");
        // The grace period starts when the signal arrives, not when serving starts.
        let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            let _ = signalled_tx.send(());
        };
        let grace = state.config.shutdown_grace();
        let grace_over = async move {
            match signalled_rx.await {
                Ok(()) => tokio::time::sleep(grace).await,
                // The signal future was dropped: serving ended on its own.
                Err(_) => std::future::pending::<()>().await,
            }
        };
        let header_timeout = Duration::from_millis(state.config.limits.header_read_timeout_ms);
        let serve = serve_connections(self.listener, app, header_timeout, signal);
        tokio::select! {
            () = serve => {},
            () = grace_over => tracing::warn!(
                grace_secs = grace.as_secs(),
                "the shutdown grace period ended with requests in flight; dropping them"
            ),
        }
        background.abort();
        tracing::info!("draining done; flushing the audit log");
        state.audit.shutdown().await?;
        tracing::info!("sluice stopped");
        Ok(())
    }
}

/// Accepts connections until `signal` resolves, then waits for the open ones to finish. Each
/// connection gets `header_timeout` to send its request headers (slow-header clients cannot hold
/// connections open), and speaks HTTP/1.1 or HTTP/2 as the client asks.
async fn serve_connections(
    listener: TcpListener,
    app: axum::Router,
    header_timeout: Duration,
    signal: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(app.clone());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut signal => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Picks up store changes made by other processes (the CLI) and closes idle pools.
async fn background_tasks(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let store = state.store.clone();
        match tokio::task::spawn_blocking(move || store.refresh_if_changed()).await {
            Ok(Ok(true)) => tracing::info!("reloaded the control plane after an outside change"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not check the store for changes"),
            Err(_) => {}
        }
        let closed = state.registry.close_idle();
        if closed > 0 {
            tracing::info!(closed, "closed idle datasource pools");
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}
