//! The session side of the driver: the pool's manager (every new connection to a freshly checked
//! address, with no default database), the connections it hands out, what is pinned before every
//! statement, the check and setup after an answer (leftovers, `ROLLBACK`, pins, a fresh read-only
//! transaction), the reset, and the killer connection that stops statements and watches a killed
//! statement's server thread.

use super::*;

/// Pinned before every statement: the SQL policy's parser assumes backslash escapes and
/// double-quoted strings (no ANSI_QUOTES, no NO_BACKSLASH_ESCAPES); timestamps are read in UTC;
/// text is utf8mb4. `session_track_state_change` asks the server to flag state changes (see the
/// module notes: it never does for this client).
const PINS: &str = "SET NAMES utf8mb4, \
     SESSION sql_mode='STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION', \
     SESSION time_zone='+00:00', SESSION session_track_state_change=ON";

/// MariaDB session settings put back to the server's defaults before every statement: ones a
/// stored function can change and that alter what a later statement reads (isolation, row
/// limits, formats, `NOW()`, `WHERE id IS NULL`, recursion bounds).
pub(super) const MARIADB_READ_DEFAULTS: &str = "SESSION tx_isolation=DEFAULT, \
     SESSION sql_select_limit=DEFAULT, SESSION max_join_size=DEFAULT, \
     SESSION sql_big_selects=DEFAULT, SESSION sql_auto_is_null=DEFAULT, \
     SESSION div_precision_increment=DEFAULT, SESSION group_concat_max_len=DEFAULT, \
     SESSION lc_time_names=DEFAULT, SESSION default_week_format=DEFAULT, \
     SESSION timestamp=DEFAULT, SESSION max_recursive_iterations=DEFAULT";

/// And before a read-write statement, also those that change what it writes (foreign key and
/// CHECK enforcement, generated ids) or how it ends. Read-only statements cannot write, so they
/// skip these: each setting costs server time on every statement.
pub(super) const MARIADB_WRITE_DEFAULTS: &str = "SESSION foreign_key_checks=DEFAULT, \
     SESSION unique_checks=DEFAULT, SESSION check_constraint_checks=DEFAULT, \
     SESSION sql_safe_updates=DEFAULT, SESSION insert_id=DEFAULT, \
     SESSION auto_increment_increment=DEFAULT, SESSION auto_increment_offset=DEFAULT, \
     SESSION completion_type=DEFAULT, SESSION lock_wait_timeout=DEFAULT, \
     SESSION innodb_lock_wait_timeout=DEFAULT";

/// The same for MySQL (5.7.20 and later), leaving out what MySQL 8 lets only privileged accounts
/// set (`explicit_defaults_for_timestamp`…) and what it does not have.
const MYSQL_READ_DEFAULTS: &str = "SESSION transaction_isolation=DEFAULT, \
     SESSION sql_select_limit=DEFAULT, SESSION max_join_size=DEFAULT, \
     SESSION sql_big_selects=DEFAULT, SESSION sql_auto_is_null=DEFAULT, \
     SESSION div_precision_increment=DEFAULT, SESSION group_concat_max_len=DEFAULT, \
     SESSION lc_time_names=DEFAULT, SESSION default_week_format=DEFAULT, \
     SESSION timestamp=DEFAULT";
const MYSQL_WRITE_DEFAULTS: &str = "SESSION foreign_key_checks=DEFAULT, \
     SESSION unique_checks=DEFAULT, SESSION sql_safe_updates=DEFAULT, \
     SESSION insert_id=DEFAULT, SESSION auto_increment_increment=DEFAULT, \
     SESSION auto_increment_offset=DEFAULT, SESSION completion_type=DEFAULT, \
     SESSION lock_wait_timeout=DEFAULT, SESSION innodb_lock_wait_timeout=DEFAULT";

/// What a statement may have left in the session that a reset would clear: the number of user
/// variables, and the named locks it held (released here). Read before our `ROLLBACK`.
const MARIADB_LEFTOVERS: &str =
    "SELECT (SELECT COUNT(*) FROM information_schema.USER_VARIABLES), RELEASE_ALL_LOCKS()";
/// MySQL has no `USER_VARIABLES`; `performance_schema` has them per thread, when it is on. -1 when
/// it does not show this connection's thread (off, or not visible to the account): unreadable.
const MYSQL_LEFTOVERS: &str = "SELECT IF(EXISTS(SELECT 1 FROM performance_schema.threads \
         WHERE PROCESSLIST_ID = CONNECTION_ID()), \
       (SELECT COUNT(*) FROM performance_schema.user_variables_by_thread v \
         JOIN performance_schema.threads t ON t.THREAD_ID = v.THREAD_ID \
         WHERE t.PROCESSLIST_ID = CONNECTION_ID()), -1), RELEASE_ALL_LOCKS()";

/// Server errors that mean the leftover check cannot be read by this account or server (unknown
/// table or function, access denied): sessions are then reset after every statement instead.
const LEFTOVERS_UNREADABLE: [u16; 5] = [1044, 1109, 1142, 1146, 1305];

/// Prepared statements kept per connection (the oldest is closed on the server past this), so a
/// repeated query skips its prepare round trip. Bounded well under the server's
/// `max_prepared_stmt_count` (16,382 by default) for a full pool: 32 × 32 connections = 1,024.
const STATEMENT_CACHE_SIZE: usize = 32;

/// How long our own housekeeping commands (KILL, setup after a statement, reset) may take.
pub(super) const HOUSEKEEPING_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a killed statement's connection keeps its pool slot waiting for the server thread to
/// finish. Generous: the slot is the only bound on busy server threads, and the worst measured
/// unkillable call ran 8.5 s past its kill.
pub(super) const KILLED_STATEMENT_LIMIT: Duration = Duration::from_secs(120);

/// Slack over the result cap for one packet's framing (the cap counts encoded JSON).
const PACKET_SLACK: u64 = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Flavor {
    MariaDb,
    MySql,
}

impl Flavor {
    fn from_version(version: &str) -> Flavor {
        if version.to_ascii_lowercase().contains("mariadb") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        }
    }

    /// Our own session statement timeout (trusted text): MariaDB counts seconds, MySQL
    /// milliseconds (and applies it to SELECT only). Zero would mean "no limit", so at least 1ms.
    fn timeout_setting(self, timeout: Duration) -> String {
        let ms = timeout.as_millis().clamp(1, u128::from(u32::MAX));
        match self {
            Flavor::MariaDb => format!("SESSION max_statement_time={}.{:03}", ms / 1000, ms % 1000),
            Flavor::MySql => format!("SESSION max_execution_time={ms}"),
        }
    }

    /// The whole `SET` of pinned settings with this statement timeout, for a read-only or a
    /// read-write statement.
    fn pins(self, timeout: Duration, read_only: bool) -> String {
        let (read, write) = match self {
            Flavor::MariaDb => (MARIADB_READ_DEFAULTS, MARIADB_WRITE_DEFAULTS),
            Flavor::MySql => (MYSQL_READ_DEFAULTS, MYSQL_WRITE_DEFAULTS),
        };
        let timeout = self.timeout_setting(timeout);
        if read_only {
            format!("{PINS}, {read}, {timeout}")
        } else {
            format!("{PINS}, {read}, {write}, {timeout}")
        }
    }

    /// Ends whatever transaction the connection is in, pins the session and starts the
    /// statement's transaction: our own trusted text, one round trip.
    pub(super) fn setup_sql(self, timeout: Duration, read_only: bool) -> String {
        let mode = if read_only { "READ ONLY" } else { "READ WRITE" };
        format!(
            "ROLLBACK; {}; START TRANSACTION {mode}",
            self.pins(timeout, read_only)
        )
    }

    /// After a read-only statement: the leftover check, then the setup of the next read-only one.
    fn check_and_setup_sql(self, timeout: Duration) -> String {
        let leftovers = match self {
            Flavor::MariaDb => MARIADB_LEFTOVERS,
            Flavor::MySql => MYSQL_LEFTOVERS,
        };
        format!("{leftovers}; {}", self.setup_sql(timeout, true))
    }
}

/// The status flags of the connection's last OK packet (empty after an error).
fn status(conn: &Conn) -> StatusFlags {
    conn.last_ok_packet()
        .map(|ok| ok.status_flags())
        .unwrap_or_else(StatusFlags::empty)
}

/// Whether the server says the connection is inside a transaction (a read-only one if asked).
pub(super) fn in_transaction(conn: &Conn, read_only: bool) -> bool {
    let flags = status(conn);
    flags.contains(StatusFlags::SERVER_STATUS_IN_TRANS)
        && (!read_only || flags.contains(StatusFlags::SERVER_STATUS_IN_TRANS_READONLY))
}

/// What the check after a read-only statement found.
enum Prepared {
    /// No leftovers; pinned and inside a fresh read-only transaction (flags checked).
    Ready,
    /// User variables or named locks were left: the session needs a reset.
    Leftovers,
    /// The server did not confirm the read-only transaction.
    Unconfirmed,
}

/// Where and as whom to connect. Never printed.
pub(super) struct Target {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) database: String,
    pub(super) user: String,
    pub(super) password: Secret,
}

/// What every connection of the pool is opened with, but its address: the service account, no
/// default database, TCP only, the statement cache, the client-side packet limit (the result cap
/// plus framing slack, within what mysql_async accepts: 1 KiB to 1 GiB) and TLS.
pub(super) fn base_opts(
    target: &Target,
    settings: &RegistrySettings,
    tls: &TlsPlan,
) -> OptsBuilder {
    let packet_limit = settings
        .max_result_bytes
        .saturating_add(PACKET_SLACK)
        .clamp(1024, 1024 * 1024 * 1024);
    OptsBuilder::default()
        .user(Some(target.user.clone()))
        .pass(Some(target.password.expose().to_owned()))
        .db_name(None::<String>)
        .prefer_socket(false)
        .stmt_cache_size(STATEMENT_CACHE_SIZE)
        .max_allowed_packet(Some(
            usize::try_from(packet_limit).unwrap_or(1024 * 1024 * 1024),
        ))
        .tcp_nodelay(true)
        .ssl_opts(tls.ssl_opts())
}

/// Opens connections for the pool (`datasource::pool`): resolves and checks the address at every
/// new connection. Also holds what the pool's connections share: the killer connection and
/// whether the leftover check can be read at all.
pub(super) struct MysqlManager {
    pub(super) target: Target,
    pub(super) settings: RegistrySettings,
    /// TLS as `connection.tls` asks, for the pool's connections and the killer connection alike.
    pub(super) tls: TlsPlan,
    /// Everything a new connection is opened with but its address (set per connection, once
    /// checked). Built once: its `SslOpts` carry mysql_async's rustls connector, made on the
    /// first connection and shared by every later one.
    pub(super) opts: OptsBuilder,
    /// A dedicated connection (not counted in the pool) that sends `KILL QUERY` and watches a
    /// killed statement's thread; opened lazily, dropped by `close`.
    pub(super) killer: tokio::sync::Mutex<Option<Conn>>,
    /// The leftover check failed for lack of a table or a privilege (MySQL without access to
    /// `performance_schema`): sessions are reset after every statement instead.
    pub(super) leftovers_unreadable: AtomicBool,
}

/// One pooled connection and what is known of its session.
pub(super) struct MysqlConn {
    /// `None` once dropped while the pool slot is still held (a killed statement being watched, a
    /// dead connection being replaced); the pool never takes such a one back.
    pub(super) conn: Option<Conn>,
    pub(super) flavor: Flavor,
    /// Set when the server confirmed (status flags) that the connection is pinned and inside a
    /// fresh `START TRANSACTION READ ONLY` with this statement timeout, and nothing ran since.
    pub(super) ready_for: Option<Duration>,
    /// Its server thread (`CONNECTION_ID()`), where `KILL QUERY` goes.
    pub(super) id: u32,
}

impl managed::Manager for MysqlManager {
    type Type = MysqlConn;
    type Error = ExecError;

    async fn create(&self) -> Result<MysqlConn, ExecError> {
        self.open_conn().await
    }

    async fn recycle(
        &self,
        c: &mut MysqlConn,
        metrics: &Metrics,
    ) -> managed::RecycleResult<ExecError> {
        pool::expired(metrics, self.settings.idle_timeout)?;
        // Connections come back only in a known state (`PooledConn::release`); anything in doubt
        // was discarded, and one whose socket went is not taken back.
        if c.conn.is_none() {
            return Err(RecycleError::message("the connection was lost"));
        }
        Ok(())
    }
}

/// A connection from the pool. Dropping it discards the connection (its state unknown); only
/// [`PooledConn::release`] gives it back. Its pool slot is held as long as it lives, also after
/// [`PooledConn::discard_conn`].
pub(super) struct PooledConn(Option<Object<MysqlManager>>);

/// Waits (at most `pool_timeout`) for a free slot, then reuses an idle connection or opens one.
pub(super) async fn checkout(pool: &Pool<MysqlManager>) -> Result<PooledConn, ExecError> {
    let obj = pool::checkout(pool, pool.manager().settings.connect_timeout).await?;
    Ok(PooledConn(Some(obj)))
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if let Some(obj) = self.0.take() {
            // Its slot is free at once; mysql_async finishes dropping the connection in the
            // background (drain, quit).
            drop(pool::discard(obj));
        }
    }
}

impl std::ops::Deref for PooledConn {
    type Target = MysqlConn;
    fn deref(&self) -> &MysqlConn {
        self.0.as_deref().expect("held until released or dropped")
    }
}

impl std::ops::DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut MysqlConn {
        self.0
            .as_deref_mut()
            .expect("held until released or dropped")
    }
}

impl PooledConn {
    pub(super) fn conn(&mut self) -> Result<&mut Conn, ExecError> {
        self.conn
            .as_mut()
            .ok_or_else(|| ExecError::Unavailable("the connection was lost".into()))
    }

    /// Drops the physical connection now; the pool slot stays held until `self` goes.
    pub(super) fn discard_conn(&mut self) {
        self.conn = None;
    }

    /// Came from the pool's idle connections rather than opened for this checkout (so a broken
    /// socket is worth one retry with a fresh connection).
    pub(super) fn reused(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|obj| Object::metrics(obj).recycle_count > 0)
    }

    /// Puts the connection back in a known state, or drops it; its pool slot is held until then.
    /// `reset`: `COM_RESET_CONNECTION` first, for anything user SQL may have left. `next`: the
    /// statement timeout of the read-only statement to get the connection ready for (module
    /// notes): the leftover check, then the pins and a fresh read-only transaction. With neither,
    /// the connection goes back as it is (our own statements only).
    pub(super) async fn release(mut self, reset: bool, next: Option<Duration>) {
        let Some(obj) = self.0.as_mut() else {
            return;
        };
        let Some(pool) = Object::pool(obj).filter(|p| !p.is_closed()) else {
            return;
        };
        let c: &mut MysqlConn = obj;
        let Some(conn) = c.conn.as_mut() else {
            return;
        };
        // Never set for this client (module notes); honoured should the server send it.
        let reset = reset || status(conn).contains(StatusFlags::SERVER_SESSION_STATE_CHANGED);
        let settled = tokio::time::timeout(
            HOUSEKEEPING_TIMEOUT,
            pool.manager()
                .settle_session(conn, c.flavor, reset, next, c.ready_for),
        )
        .await;
        let Ok(Some(ready_for)) = settled else {
            return;
        };
        c.ready_for = ready_for;
        // Dropping the checkout gives the connection back.
        drop(self.0.take());
    }
}

/// Kills `pc`'s statement and settles it in a task of its own, for callers that must answer now
/// (`schema`, `introspect`).
pub(super) fn kill_in_background(pool: &Pool<MysqlManager>, pc: PooledConn) {
    let pool = pool.clone();
    tokio::spawn(async move {
        pool.manager().kill_query(pc.id).await;
        pool.manager().settle_killed(pc).await;
    });
}

impl MysqlManager {
    /// Opens one pooled connection.
    pub(super) async fn open_conn(&self) -> Result<MysqlConn, ExecError> {
        let (conn, flavor) = self.connect().await?;
        Ok(MysqlConn {
            id: conn.id(),
            conn: Some(conn),
            flavor,
            ready_for: None,
        })
    }

    /// Opens one physical connection to the freshly checked address, with no default database.
    async fn connect(&self) -> Result<(Conn, Flavor), ExecError> {
        let limit = self.settings.connect_timeout;
        let attempt = async {
            let t = &self.target;
            let addr = net::resolve_checked(&t.host, t.port, &self.settings.allow_networks).await?;
            let opts = self
                .opts
                .clone()
                .ip_or_hostname(addr.ip().to_string())
                .resolved_ips(Some(vec![addr.ip()]))
                .tcp_port(addr.port());
            // A refused login or handshake is the datasource being unusable, not a statement
            // failing.
            let mut conn = Conn::new(opts).await.map_err(|e| self.connect_error(e))?;
            let version: String = conn
                .query_first("SELECT VERSION()")
                .await
                .map_err(|e| self.connect_error(e))?
                .unwrap_or_default();
            Ok((conn, Flavor::from_version(&version)))
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(r) => r,
            Err(_) => Err(ExecError::Unavailable(format!(
                "connecting took longer than {limit:?}"
            ))),
        }
    }

    /// [`PooledConn::release`]'s work on the connection: what it is ready for afterwards, or
    /// `None` when it must be dropped.
    pub(super) async fn settle_session(
        &self,
        conn: &mut Conn,
        flavor: Flavor,
        mut reset: bool,
        next: Option<Duration>,
        ready: Option<Duration>,
    ) -> Option<Option<Duration>> {
        if let Some(timeout) = next
            && !reset
        {
            if !self.leftovers_unreadable.load(Ordering::Acquire) {
                match self.prepare(conn, flavor, timeout, true).await {
                    Ok(Prepared::Ready) => return Some(Some(timeout)),
                    Ok(Prepared::Leftovers) => {
                        tracing::warn!(
                            "a statement left user variables or named locks in the session; reset"
                        );
                    }
                    Ok(Prepared::Unconfirmed) => return None,
                    Err(mysql_async::Error::Server(se)) => {
                        // A function may have changed settings the check depends on (a tiny
                        // timeout): reset. Only a missing table or privilege stops the check.
                        if LEFTOVERS_UNREADABLE.contains(&se.code) {
                            tracing::warn!(
                                code = se.code,
                                "cannot read session leftovers; resetting after every statement"
                            );
                            self.leftovers_unreadable.store(true, Ordering::Release);
                        }
                    }
                    Err(_) => return None,
                }
            }
            reset = true;
        }
        if reset && !matches!(conn.reset().await, Ok(true)) {
            // Unsupported (very old server) or failed: do not reuse.
            return None;
        }
        match next {
            Some(timeout) => match self.prepare(conn, flavor, timeout, false).await {
                Ok(Prepared::Ready) => Some(Some(timeout)),
                _ => None,
            },
            None if reset => Some(None),
            None => Some(ready),
        }
    }

    /// Sends the setup of a read-only statement (after the leftover check when `check`) and reads
    /// the server's answer.
    async fn prepare(
        &self,
        conn: &mut Conn,
        flavor: Flavor,
        timeout: Duration,
        check: bool,
    ) -> Result<Prepared, mysql_async::Error> {
        if !check {
            conn.query_drop(flavor.setup_sql(timeout, true)).await?;
        } else {
            let mut result = conn.query_iter(flavor.check_and_setup_sql(timeout)).await?;
            let rows: Vec<Row> = result.collect().await?;
            result.drop_result().await?;
            // One row of two counts, both zero; anything else (no row: a function may have set
            // `sql_select_limit=0`) is not a clean session.
            let (variables, locks) = match rows.as_slice() {
                [row] => (
                    row.get_opt::<i64, _>(0).and_then(Result::ok),
                    row.get_opt::<Option<i64>, _>(1).and_then(Result::ok),
                ),
                _ => (None, None),
            };
            if variables.is_some_and(|n| n < 0) {
                tracing::warn!("cannot read session leftovers; resetting after every statement");
                self.leftovers_unreadable.store(true, Ordering::Release);
            }
            if variables != Some(0) || locks != Some(Some(0)) {
                return Ok(Prepared::Leftovers);
            }
        }
        Ok(if in_transaction(conn, true) {
            Prepared::Ready
        } else {
            Prepared::Unconfirmed
        })
    }

    /// Stops whatever connection `id` is running, from the dedicated killer connection (reopened
    /// once if it went stale). Best effort and bounded in time.
    pub(super) async fn kill_query(&self, id: u32) {
        let sql = format!("KILL QUERY {id}");
        if tokio::time::timeout(HOUSEKEEPING_TIMEOUT, self.on_killer(&sql, false))
            .await
            .is_err()
        {
            tracing::warn!("KILL QUERY did not finish in time");
        }
    }

    /// Whether server thread `id` still runs a statement (`None`: cannot tell).
    async fn thread_busy(&self, id: u32) -> Option<bool> {
        let sql = format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
             WHERE ID = {id} AND COMMAND <> 'Sleep'"
        );
        tokio::time::timeout(HOUSEKEEPING_TIMEOUT, self.on_killer(&sql, true))
            .await
            .ok()
            .flatten()
    }

    /// Runs our own `sql` on the killer connection (opened, or reopened once if it went stale).
    /// `counts`: read the first column of its one row as a count and say whether it is non-zero.
    async fn on_killer(&self, sql: &str, counts: bool) -> Option<bool> {
        let mut killer = self.killer.lock().await;
        for _ in 0..2 {
            let mut conn = match killer.take() {
                Some(c) => c,
                None => match self.connect().await {
                    Ok((c, _)) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not open a connection to stop a statement");
                        return None;
                    }
                },
            };
            let outcome = if counts {
                conn.query_first::<Row, _>(sql).await.map(|row| {
                    row.and_then(|r| r.get_opt::<i64, _>(0))
                        .and_then(Result::ok)
                        .map(|n| n > 0)
                })
            } else {
                conn.query_drop(sql).await.map(|()| Some(true))
            };
            match outcome {
                Ok(answer) => {
                    *killer = Some(conn);
                    return answer;
                }
                // Unknown thread: it is already gone, nothing to stop.
                Err(mysql_async::Error::Server(se)) => {
                    if se.code != 1094 {
                        tracing::warn!(code = se.code, "stopping a statement failed");
                    }
                    *killer = Some(conn);
                    return None;
                }
                Err(_) => continue,
            }
        }
        None
    }

    /// Keeps a killed statement's pool slot until the server has finished with it: the
    /// connection is dropped now (its socket closes, or mysql_async drains and quits it), then the
    /// server thread is watched until it runs nothing, for at most [`KILLED_STATEMENT_LIMIT`].
    /// `KILL QUERY` does not stop everything (module notes); this is what makes the pool size
    /// bound the server threads kept busy.
    pub(super) async fn settle_killed(&self, mut pc: PooledConn) {
        let id = pc.id;
        pc.discard_conn();
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            match self.thread_busy(id).await {
                Some(true) => {}
                Some(false) | None => break,
            }
            if started.elapsed() >= KILLED_STATEMENT_LIMIT {
                tracing::warn!(
                    thread = id,
                    "a killed statement is still running on the server; freeing its pool slot"
                );
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
        drop(pc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_is_recognised_from_its_version_string() {
        assert_eq!(
            Flavor::from_version("10.11.19-MariaDB-0+deb12u1"),
            Flavor::MariaDb
        );
        assert_eq!(Flavor::from_version("8.4.2"), Flavor::MySql);
    }

    #[test]
    fn the_session_timeout_uses_each_servers_unit_and_is_never_zero() {
        assert_eq!(
            Flavor::MariaDb.timeout_setting(Duration::from_millis(1500)),
            "SESSION max_statement_time=1.500"
        );
        assert_eq!(
            Flavor::MySql.timeout_setting(Duration::from_millis(1500)),
            "SESSION max_execution_time=1500"
        );
        assert_eq!(
            Flavor::MySql.timeout_setting(Duration::ZERO),
            "SESSION max_execution_time=1"
        );
    }
}
