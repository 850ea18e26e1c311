//! Builds the application from a configuration and runs it until a shutdown signal: binds the
//! listener first (so tests can ask for port 0 and learn the real port), then serves, over plain
//! HTTP or, with `tls.*` set, HTTPS (see `crate::tls`; SIGHUP reloads the certificate).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

use crate::audit::{AuditSettings, AuditWriter};
use crate::config::Config;
use crate::datasource::RegistrySettings;
use crate::datasource::registry::Registry;
use crate::http::{AppState, router};
use crate::limits::Limiters;
use crate::metrics::Metrics;
use crate::store::{MasterKey, Store};
use crate::sync::Freshness;
use crate::tls::{CertInfo, TlsListener};

pub struct Application {
    listener: TcpListener,
    /// `Some` when the listener speaks HTTPS.
    tls: Option<Arc<TlsListener>>,
    pub state: Arc<AppState>,
}

/// Opens the store (creating the data directory and master key if needed): the embedded SQLite
/// store in `data_dir`, or the shared PostgreSQL store at `store.url`. Blocking: call it off the
/// async threads.
pub fn open_store(config: &Config) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&config.data_dir)?;
    let env_key = std::env::var("SLUICE_MASTER_KEY").ok();
    match &config.store.url {
        None => {
            let key = MasterKey::load(env_key.as_deref(), &config.data_dir)?;
            Ok(Store::open(&config.store_path(), key)?)
        }
        Some(url) => {
            // A key file made up in one replica's data directory would differ from the next
            // one's, and each would seal secrets the others cannot read.
            let Some(env_key) = env_key else {
                anyhow::bail!(
                    "store.url names a shared PostgreSQL store: set SLUICE_MASTER_KEY, the same \
                     on every replica (a key file in one replica's data directory is not shared)"
                );
            };
            let key = MasterKey::load(Some(&env_key), &config.data_dir)?;
            Ok(Store::open_postgres(url.expose(), key)?)
        }
    }
}

/// Starts the audit writer on the store's database.
fn start_audit(config: &Config) -> anyhow::Result<AuditWriter> {
    let settings = AuditSettings {
        wait_for_commit: config.audit.wait_for_commit,
        max_batch: config.audit.max_batch,
        max_delay: Duration::from_millis(config.audit.max_delay_ms),
        queue_capacity: config.audit.queue_capacity,
        fsync: config.audit.fsync,
        retention_days: config.audit.retention_days,
        ..AuditSettings::default()
    };
    Ok(match &config.store.url {
        None => AuditWriter::start(&config.store_path(), settings)?,
        Some(url) => {
            let url = url.clone();
            AuditWriter::start_postgres(
                Box::new(move || {
                    crate::store::postgres::connect(url.expose()).map_err(|e| e.to_string())
                }),
                settings,
            )?
        }
    })
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        // First, so a bad certificate or key stops startup (naming the field) before anything
        // is created on disk.
        let tls = TlsListener::from_config(&config.tls)?.map(Arc::new);
        // With a shared store, a sync thread keeps the view current and the hot path refuses
        // to serve a view older than the bound (see `crate::sync`). The view loaded at open is
        // current as of the moment the open started, so the replica is ready when it listens.
        let freshness = config
            .store
            .url
            .as_ref()
            .map(|_| Freshness::new(Duration::from_millis(config.store.max_staleness_ms)));
        let opening = freshness.as_ref().map(|f| f.start());
        // Opening a PostgreSQL store blocks (the sync client runs its own runtime).
        let (store, audit, config) = tokio::task::spawn_blocking(move || {
            let store = open_store(&config)?;
            let audit = start_audit(&config)?;
            anyhow::Ok((Arc::new(store), Arc::new(audit), config))
        })
        .await??;
        if let (Some(f), Some(url), Some(at)) = (&freshness, &config.store.url, opening) {
            f.confirm(at);
            crate::sync::start(store.clone(), url.clone(), f.clone())?;
        }
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
            freshness,
            audit,
            registry,
            metrics,
            query,
        });
        Ok(Application {
            listener,
            tls,
            state,
        })
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
        // Listening for SIGHUP before the startup line, so a SIGHUP sent as soon as the line is
        // seen reloads instead of ending the process (the default action).
        #[cfg(unix)]
        let reloads = match &self.tls {
            Some(tls) => Some(reload_on_sighup(tls.clone())?),
            None => None,
        };
        let background = tokio::spawn(background_tasks(state.clone()));
        let app = router(state.clone());
        let addr = self.listener.local_addr()?;
        match &self.tls {
            None => tracing::info!(addr = %addr, scheme = "http", "sluice listening"),
            Some(tls) => {
                let cert = tls.current();
                tracing::info!(
                    addr = %addr,
                    scheme = "https",
                    alpn = "h2,http/1.1",
                    handshake_timeout_ms = tls.handshake_timeout().as_millis() as u64,
                    cert_subject = %cert.subject,
                    cert_dns_names = %cert.dns_names.join(","),
                    cert_serial = %cert.serial,
                    cert_not_after = %not_after(&cert),
                    "sluice listening"
                );
                warn_if_expired(&cert);
            }
        }
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
        let serve = serve_connections(self.listener, self.tls, app, header_timeout, signal);
        tokio::select! {
            () = serve => {},
            () = grace_over => tracing::warn!(
                grace_secs = grace.as_secs(),
                "the shutdown grace period ended with requests in flight; dropping them"
            ),
        }
        background.abort();
        #[cfg(unix)]
        if let Some(reloads) = reloads {
            reloads.abort();
        }
        tracing::info!("draining done; flushing the audit log");
        state.audit.shutdown().await?;
        tracing::info!("sluice stopped");
        Ok(())
    }
}

/// Accepts connections until `signal` resolves, then waits for the open ones to finish. Each
/// connection gets `header_timeout` to send its first bytes and then its request headers
/// (silent or slow-header clients cannot hold connections open), and speaks HTTP/1.1 or HTTP/2
/// as the client asks. With `tls`, each connection first gets `tls.handshake_timeout_ms` for
/// the TLS handshake, in a task of its own so a slow handshake never holds up the accept loop;
/// a handshake still running when `signal` resolves is dropped (it has no request in flight).
async fn serve_connections(
    listener: TcpListener,
    tls: Option<Arc<TlsListener>>,
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
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
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
                let Some(tls) = &tls else {
                    let io = TokioIo::new(FirstBytesDeadline::new(stream, header_timeout));
                    let service = TowerToHyperService::new(app.clone());
                    let conn = builder.serve_connection_with_upgrades(io, service);
                    let conn = graceful.watch(conn.into_owned());
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                    continue;
                };
                // Taken now, so the drain below waits for this connection too.
                let watcher = graceful.watcher();
                let mut stopping = stopping_rx.clone();
                let (tls, builder, app) = (tls.clone(), builder.clone(), app.clone());
                tokio::spawn(async move {
                    let handshake = tokio::select! {
                        handshake = tls.accept(stream) => handshake,
                        _ = stopping.wait_for(|stopping| *stopping) => return,
                    };
                    let stream = match handshake {
                        Ok(stream) => stream,
                        Err(e) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                    };
                    let io = TokioIo::new(FirstBytesDeadline::new(stream, header_timeout));
                    let service = TowerToHyperService::new(app);
                    let conn = builder.serve_connection_with_upgrades(io, service);
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut signal => break,
        }
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    graceful.shutdown().await;
}

/// The HTTP/2 connection preface; a connection is HTTP/2 when it starts with these bytes.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Fails a connection's reads once `limits.header_read_timeout_ms` has passed while it has sent
/// nothing or only the start of the HTTP/2 preface. hyper's own header timeout starts only once
/// the protocol is known, which takes the first bytes (all 24 of the preface for HTTP/2): without
/// this, a client that connects and stays silent would hold its connection forever. Once the
/// bytes decide the protocol the wrapper steps aside.
struct FirstBytesDeadline<I> {
    inner: I,
    /// `None` once the protocol is decided.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Bytes read so far, all of them a prefix of [`H2_PREFACE`].
    seen: usize,
}

impl<I> FirstBytesDeadline<I> {
    fn new(inner: I, limit: Duration) -> Self {
        FirstBytesDeadline {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
            seen: 0,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstBytesDeadline<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let Some(deadline) = this.deadline.as_mut() else {
            return polled;
        };
        match &polled {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                let total = this.seen + new.len();
                if new.is_empty()
                    || total >= H2_PREFACE.len()
                    || H2_PREFACE[this.seen..total] != *new
                {
                    this.deadline = None;
                } else {
                    this.seen = total;
                }
            }
            Poll::Ready(Err(_)) => this.deadline = None,
            Poll::Pending => {
                if deadline.as_mut().poll(cx).is_ready() {
                    this.deadline = None;
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no request started within the header read timeout",
                    )));
                }
            }
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FirstBytesDeadline<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Reloads the certificate on every SIGHUP; a failed reload is logged and changes nothing.
#[cfg(unix)]
fn reload_on_sighup(tls: Arc<TlsListener>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let reloading = tls.clone();
            match tokio::task::spawn_blocking(move || reloading.reload()).await {
                Ok(Ok(cert)) => {
                    tracing::info!(
                        cert_subject = %cert.subject,
                        cert_dns_names = %cert.dns_names.join(","),
                        cert_serial = %cert.serial,
                        cert_not_after = %not_after(&cert),
                        "reloaded the TLS certificate; new connections get it"
                    );
                    warn_if_expired(&cert);
                }
                Ok(Err(e)) => tracing::error!(
                    error = %e,
                    "could not reload the TLS certificate; still serving the previous one"
                ),
                Err(e) => tracing::error!(
                    error = %e,
                    "could not reload the TLS certificate; still serving the previous one"
                ),
            }
        }
    }))
}

fn not_after(cert: &CertInfo) -> String {
    cert.not_after
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn warn_if_expired(cert: &CertInfo) {
    if let Some(t) = cert.not_after
        && t < chrono::Utc::now()
    {
        tracing::warn!(
            cert_not_after = %t.to_rfc3339(),
            "the TLS certificate has expired: clients will refuse it"
        );
    }
}

/// Picks up changes other processes (the CLI) made to an embedded store, and closes idle pools.
async fn background_tasks(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        // A shared store is watched by the sync thread (`crate::sync`).
        if state.freshness.is_none() {
            let store = state.store.clone();
            match tokio::task::spawn_blocking(move || store.refresh_if_changed()).await {
                Ok(Ok(true)) => {
                    tracing::info!("reloaded the control plane after an outside change")
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "could not check the store for changes"),
                Err(_) => {}
            }
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
