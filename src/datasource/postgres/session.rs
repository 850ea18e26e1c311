//! A connection and its session: opening it to the checked address (with the account's own
//! settings read first and everything of ours pinned after), the setup sent before every
//! statement, the cleanup after user code, the prepared-statement cache, and cancellation.

use super::*;

/// Session settings pinned in the startup packet, so every statement is read the way the SQL
/// policy parsed it (`standard_conforming_strings`: a backslash is not an escape) and values come
/// back in the formats the encoder expects.
pub(super) const STARTUP_OPTIONS: &str = "-c standard_conforming_strings=on -c client_encoding=UTF8 \
     -c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=iso_8601";

/// Prepared statements kept per connection; past this the cache is emptied (each dropped
/// statement is closed on the server) so distinct ad-hoc queries cannot grow it without bound.
pub(super) const STATEMENT_CACHE_SIZE: usize = 256;

/// Sent before every statement, in the same round trip: the session's search path and role, the
/// server-side timeouts for this statement, `standard_conforming_strings` again (a backslash
/// must never become an escape the policy did not see), and whether the transactions that
/// follow start read-only. Session-level (`false`), because a read-only query runs in its own
/// implicit transaction right after this one. It also reads back the current transaction's
/// read-only flag and the settings pinned at connect, which no statement may have changed. Our
/// own text with parameters, never user SQL; every name qualified, so nothing on the role's own
/// search path can stand in for them.
pub(super) const SETUP_SQL: &str = "SELECT pg_catalog.set_config('search_path', $3, false), \
     pg_catalog.set_config('role', $4, false), \
     pg_catalog.set_config('statement_timeout', $1, false), \
     pg_catalog.set_config('lock_timeout', $1, false), \
     pg_catalog.set_config('idle_in_transaction_session_timeout', $1, false), \
     pg_catalog.set_config('standard_conforming_strings', 'on', false), \
     pg_catalog.set_config('default_transaction_read_only', $2, false), \
     pg_catalog.current_setting('transaction_read_only'), \
     pg_catalog.current_setting('client_encoding'), pg_catalog.current_setting('DateStyle'), \
     pg_catalog.current_setting('TimeZone'), pg_catalog.current_setting('IntervalStyle')";

/// [`SETUP_SQL`]'s column with the current transaction's read-only flag.
pub(super) const READ_ONLY_COLUMN: usize = 7;

/// [`SETUP_SQL`]'s columns with the settings pinned by [`STARTUP_OPTIONS`].
pub(super) const PINNED_COLUMNS: std::ops::Range<usize> = 8..12;

/// The search path a statement runs under when the caller names none: built-ins only.
pub(super) const DEFAULT_SEARCH_PATH: &str = "pg_catalog, pg_temp";

/// Read once per connection, before anything is pinned: the service account's own search path
/// (its first existing schema is where its unqualified names would go) and role setting.
/// Runs before the search path is pinned, so it names no type or function a user schema could
/// answer to (no cast: `name[]` is decoded as it comes).
pub(super) const CONNECT_SQL: &str = "SELECT pg_catalog.current_schemas(false), \
     pg_catalog.current_setting('role')";

/// After a statement calling functions the policy cannot see into (`may_change_session`):
/// everything `DISCARD ALL` does except `DEALLOCATE ALL`, so the connection's prepared statements
/// (its setup statement and cache) stay valid; SQL-level prepared statements a function left are
/// deallocated one by one ([`LEFTOVER_PREPARED`]). `RESET ALL` goes back to [`STARTUP_OPTIONS`].
/// `RESET ALL` brings back the account's own search path: it is pinned again at once, before
/// anything else of ours runs on the session.
pub(super) const SESSION_CLEANUP: &str = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; \
     SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false); \
     UNLISTEN *; SELECT pg_catalog.pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP; \
     DISCARD SEQUENCES";

/// Prepared statements made with SQL `PREPARE` (by a function), not by the protocol.
pub(super) const LEFTOVER_PREPARED: &str =
    "SELECT name FROM pg_catalog.pg_prepared_statements WHERE from_sql";

/// A connection whose read buffer grew past this for one message is not kept in the pool.
pub(super) const GROWN_BUFFER: usize = 4 * 1024 * 1024;

/// Slack over the result cap for the framing of one row (the cap counts encoded JSON).
pub(super) const MESSAGE_SLACK: usize = 64 * 1024;

/// How long the out-of-band cancel request may take.
pub(super) const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct Target {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) database: String,
    pub(super) user: String,
    pub(super) password: Secret,
    pub(super) application_name: String,
}

/// Opens connections for deadpool: resolves and checks the address at every new connection.
pub(super) struct PgManager {
    pub(super) target: Target,
    pub(super) allow: Vec<ipnet::IpNet>,
    pub(super) connect_timeout: Duration,
    pub(super) idle_timeout: Duration,
    /// Longest message body the server may send (see [`bounded`]).
    pub(super) max_message: usize,
    /// The pool's TLS, shared by its connections and their cancel requests.
    pub(super) tls: Arc<PgTls>,
}

/// One physical connection.
pub(super) struct PgConn {
    pub(super) client: Client,
    /// The connection task; aborted when the connection is dropped so the socket closes at once.
    pub(super) task: JoinHandle<()>,
    pub(super) statements: StatementCache,
    /// [`SETUP_SQL`], prepared when the connection opened.
    pub(super) setup: Statement,
    /// What the pinned session settings read as right after connecting ([`PINNED_COLUMNS`]).
    pub(super) pinned: Vec<String>,
    /// The `role` setting the account logged in with, pinned before every statement.
    pub(super) role: String,
    /// The first existing schema of the account's own search path when it logged in.
    pub(super) default_schema: String,
    /// Set when the connection is in doubt; the pool then drops it instead of handing it out.
    pub(super) broken: bool,
    /// The checked address it is connected to, where its cancel requests go.
    pub(super) addr: SocketAddr,
    /// How its cancel requests go: with the same TLS as the connection.
    pub(super) tls: Arc<PgTls>,
    /// What the socket's message watch saw.
    pub(super) watch: Arc<Watch>,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Default)]
pub(super) struct StatementCache(Mutex<HashMap<String, Statement>>);

impl StatementCache {
    /// Prepares `sql` once per connection (extended protocol: one statement only).
    pub(super) async fn prepare(
        &self,
        client: &Client,
        sql: &str,
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.lock().get(sql) {
            return Ok(s.clone());
        }
        let stmt = client.prepare(sql).await?;
        let mut map = self.lock();
        if map.len() >= STATEMENT_CACHE_SIZE {
            map.clear();
        }
        map.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }

    pub(super) fn forget(&self, sql: &str) {
        self.lock().remove(sql);
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Statement>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl managed::Manager for PgManager {
    type Type = PgConn;
    type Error = ExecError;

    async fn create(&self) -> Result<PgConn, ExecError> {
        let t = &self.target;
        let connect = async {
            // Re-resolved for every physical connection; the socket goes to the address that
            // was checked, and so do its cancel requests.
            let addr: SocketAddr = net::resolve_checked(&t.host, t.port, &self.allow).await?;
            let unavailable = |e: tokio_postgres::Error| {
                ExecError::Unavailable(scrub(&e.to_string(), &[t.password.expose()]))
            };
            let refused = |e: tokio_postgres::Error| self.tls.connect_error(&e, &t.password);
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| ExecError::Unavailable(format!("could not connect: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let watch = Arc::new(Watch::default());
            let mut cfg = tokio_postgres::Config::new();
            cfg.user(&t.user)
                .password(t.password.expose())
                .dbname(&t.database)
                .application_name(&t.application_name)
                .options(STARTUP_OPTIONS)
                .ssl_mode(self.tls.ssl_mode());
            // The error of the connection task (if any) surfaces on the client's next request.
            let (client, task) = match self.tls.watched(self.max_message, watch.clone()) {
                // The watch follows the protocol's messages: over TLS it reads the decrypted
                // stream, inside the TLS layer.
                Some(tls) => {
                    let (client, connection) = cfg.connect_raw(tcp, tls).await.map_err(refused)?;
                    (
                        client,
                        tokio::spawn(async move {
                            let _ = connection.await;
                        }),
                    )
                }
                None => {
                    let stream = Bounded::new(tcp, self.max_message, watch.clone());
                    let (client, connection) =
                        cfg.connect_raw(stream, NoTls).await.map_err(refused)?;
                    (
                        client,
                        tokio::spawn(async move {
                            let _ = connection.await;
                        }),
                    )
                }
            };
            // The account's own settings, read before anything is pinned.
            let first = client
                .query_one(CONNECT_SQL, &[])
                .await
                .map_err(unavailable)?;
            let schemas: Vec<String> = first.try_get(0).unwrap_or_default();
            let role: String = first.try_get(1).unwrap_or_else(|_| "none".into());
            let setup = client
                .prepare_typed(SETUP_SQL, &[Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT])
                .await
                .map_err(unavailable)?;
            let ms = millis(self.connect_timeout).to_string();
            let row = client
                .query_one(&setup, &[&ms, &"on", &DEFAULT_SEARCH_PATH, &role])
                .await
                .map_err(unavailable)?;
            let pinned = PINNED_COLUMNS
                .map(|i| row.try_get::<_, String>(i).unwrap_or_default())
                .collect();
            Ok(PgConn {
                client,
                task,
                statements: StatementCache::default(),
                setup,
                pinned,
                role,
                default_schema: schemas.into_iter().next().unwrap_or_default(),
                broken: false,
                addr,
                tls: self.tls.clone(),
                watch,
            })
        };
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| {
                ExecError::Unavailable(format!(
                    "connecting took longer than {:?}",
                    self.connect_timeout
                ))
            })?
    }

    async fn recycle(
        &self,
        conn: &mut PgConn,
        metrics: &Metrics,
    ) -> managed::RecycleResult<ExecError> {
        pool::expired(metrics, self.idle_timeout)?;
        // Connections come back only after their statement ended cleanly; anything in doubt was
        // discarded or marked broken instead, so a liveness check is enough here.
        if conn.broken || conn.client.is_closed() {
            return Err(RecycleError::message("connection closed"));
        }
        if conn.watch.largest.load(Ordering::Acquire) > GROWN_BUFFER {
            return Err(RecycleError::message("the connection's buffer grew"));
        }
        Ok(())
    }
}

/// Owns a checked-out connection. Unless released (its transaction ended cleanly), dropping it
/// cancels whatever the connection is running and discards it instead of returning it to the
/// pool; this runs when the statement's future is dropped (its task aborted, or the stream or
/// `execute` future that drives it dropped), times out or fails mid-stream.
pub(super) struct ConnGuard(Option<Object<PgManager>>);

impl ConnGuard {
    pub(super) fn new(obj: Object<PgManager>) -> Self {
        ConnGuard(Some(obj))
    }

    pub(super) fn conn(&mut self) -> Option<&mut PgConn> {
        self.0.as_deref_mut()
    }

    /// Returns the connection to the pool.
    pub(super) fn release(mut self) {
        drop(self.0.take());
    }

    /// Returns the connection to the pool, first putting its session back with
    /// [`SESSION_CLEANUP`] when the statement may have changed it; a connection whose cleanup
    /// fails is discarded instead.
    pub(super) async fn release_after(mut self, may_change_session: bool) {
        if let Some(obj) = self
            .0
            .take_if(|o| o.watch.largest.load(Ordering::Acquire) > GROWN_BUFFER)
        {
            // Its read buffer grew for a large row: close it rather than keep that memory.
            drop(Object::take(obj));
            return;
        }
        if may_change_session {
            let cleaned = match self.conn() {
                Some(conn) => matches!(
                    tokio::time::timeout(CANCEL_TIMEOUT, clean_session(&conn.client)).await,
                    Ok(Ok(()))
                ),
                None => false,
            };
            if !cleaned {
                return;
            }
        }
        self.release();
    }
}

/// Puts a session back as a fresh connection's, keeping the protocol-level prepared statements:
/// [`SESSION_CLEANUP`], then `DEALLOCATE` of each SQL-level prepared statement left behind.
pub(super) async fn clean_session(client: &Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(SESSION_CLEANUP).await?;
    for row in client.query(LEFTOVER_PREPARED, &[]).await? {
        let name: String = row.get(0);
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        client
            .batch_execute(&format!("DEALLOCATE {quoted}"))
            .await?;
    }
    Ok(())
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(obj) = self.0.take() {
            discard(obj);
        }
    }
}

/// Removes the connection from the pool, sends a cancel request for whatever it runs to the
/// same checked address (the cancel token carries the pinned `hostaddr`) with the same TLS,
/// then closes it.
pub(super) fn discard(obj: Object<PgManager>) {
    let conn = pool::discard(obj);
    let token = conn.client.cancel_token();
    let addr = conn.addr;
    let tls = conn.tls.clone();
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(async move {
                let cancel = async {
                    if let Ok(tcp) = tokio::net::TcpStream::connect(addr).await {
                        let _ = tls.cancel(&token, tcp).await;
                    }
                };
                let _ = tokio::time::timeout(CANCEL_TIMEOUT, cancel).await;
                drop(conn);
            });
        }
        // No runtime (process shutting down): closing the socket is all that is left.
        Err(_) => drop(conn),
    }
}

/// A duration as PostgreSQL milliseconds: at least 1 (0 would disable the timeout).
pub(super) fn millis(d: Duration) -> u64 {
    d.as_millis().clamp(1, i32::MAX as u128) as u64
}

/// Checks what [`SETUP_SQL`] read back: the pinned session settings are as they were at
/// connect, and, inside an explicit read-only transaction, the transaction is read-only.
pub(super) fn verify_setup(
    row: &tokio_postgres::Row,
    pinned: &[String],
    in_read_only_transaction: bool,
) -> Result<(), SetupError> {
    let now: Vec<String> = PINNED_COLUMNS
        .map(|i| row.try_get::<_, String>(i).unwrap_or_default())
        .collect();
    if now != pinned {
        return Err(SetupError::Moved);
    }
    if in_read_only_transaction
        && row.try_get::<_, String>(READ_ONLY_COLUMN).ok().as_deref() != Some("on")
    {
        return Err(SetupError::Failed(ExecError::Unavailable(
            "the transaction did not start read-only".into(),
        )));
    }
    Ok(())
}

/// Why the setup statement's answer is not acceptable.
pub(super) enum SetupError {
    /// A pinned session setting differs from its value at connect: reset and run again.
    Moved,
    /// Anything else: the connection is not trusted again.
    Failed(ExecError),
}

impl SetupError {
    pub(super) fn into_failure(self) -> Failure {
        match self {
            SetupError::Moved => Failure::repin(),
            SetupError::Failed(e) => Failure::discard(e),
        }
    }
}

/// Cancels the statement behind `stream` and reads what is left, so the connection is idle
/// again. False if this did not finish within `CANCEL_TIMEOUT`.
///
/// The cancel is confirmed ([`ConfirmedCancel`]) before the connection can run anything else:
/// otherwise the server may act on it late, after this statement ended, and cancel the
/// connection's next statement instead.
pub(super) async fn cancel_and_drain(
    client: &Client,
    addr: SocketAddr,
    tls: &PgTls,
    mut stream: Pin<Box<tokio_postgres::RowStream>>,
) -> bool {
    let token = client.cancel_token();
    let finish = async {
        let confirmed = async {
            let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
            tls.cancel(&token, ConfirmedCancel::new(tcp)).await.ok()
        };
        if confirmed.await.is_none() {
            return false;
        }
        while let Some(r) = stream.next().await {
            if r.is_err() {
                break;
            }
        }
        true
    };
    tokio::time::timeout(CANCEL_TIMEOUT, finish)
        .await
        .unwrap_or(false)
}

/// The socket a cancel request is sent on, whose shutdown also waits for the server to close
/// its side. tokio-postgres's `cancel_query` returns as soon as the request is written; the
/// server closes the connection only after it has signalled the backend, so the end of the
/// stream confirms the cancel was delivered.
///
/// Over TLS the server closes with our `close_notify` (sent after the request) unread, so the
/// kernel ends the connection with a reset rather than an orderly close, and our last write or
/// read fails with it. A reset is counted as the server's close: during the handshake it still
/// fails the handshake (at its next read), and after it the server has read the request.
pub(super) struct ConfirmedCancel {
    pub(super) tcp: tokio::net::TcpStream,
    pub(super) write_closed: bool,
    /// The server reset the connection.
    pub(super) reset: bool,
}

impl ConfirmedCancel {
    pub(super) fn new(tcp: tokio::net::TcpStream) -> Self {
        ConfirmedCancel {
            tcp,
            write_closed: false,
            reset: false,
        }
    }
}

/// The server closed the connection (abruptly): see [`ConfirmedCancel`].
fn closed_by_server(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::NotConnected
    )
}

impl tokio::io::AsyncRead for ConfirmedCancel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ConfirmedCancel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::{Poll, ready};
        if self.reset {
            return Poll::Ready(Ok(buf.len()));
        }
        match ready!(Pin::new(&mut self.tcp).poll_write(cx, buf)) {
            Err(e) if closed_by_server(&e) => {
                self.reset = true;
                Poll::Ready(Ok(buf.len()))
            }
            other => Poll::Ready(other),
        }
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.reset {
            return std::task::Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::{Poll, ready};
        use tokio::io::AsyncRead;
        if !self.write_closed && !self.reset {
            match ready!(Pin::new(&mut self.tcp).poll_shutdown(cx)) {
                Err(e) if closed_by_server(&e) => self.reset = true,
                Err(e) => return Poll::Ready(Err(e)),
                Ok(()) => {}
            }
        }
        self.write_closed = true;
        // The server sends nothing on a cancel connection: read until it closes.
        let mut scratch = [0u8; 64];
        while !self.reset {
            let mut buf = tokio::io::ReadBuf::new(&mut scratch);
            match ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut buf)) {
                Err(e) if closed_by_server(&e) => self.reset = true,
                Err(e) => return Poll::Ready(Err(e)),
                Ok(()) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Ok(()) => {}
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_whole_positive_milliseconds() {
        assert_eq!(millis(Duration::from_micros(10)), 1);
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::from_secs(u64::MAX)), i32::MAX as u64);
    }
}
