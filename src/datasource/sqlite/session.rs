//! Connections to one SQLite file: each opened with the file's guards, pooled by deadpool like
//! every driver's (`datasource::pool`), and counted while an abandoned statement still runs on
//! one.

use super::*;

/// What every connection of a pool is opened on; shared with the blocking threads that open.
pub(super) struct File {
    /// The path as configured; checked against the roots again at every new connection.
    pub(super) path: PathBuf,
    pub(super) settings: RegistrySettings,
}

pub(super) struct SqliteManager {
    pub(super) file: Arc<File>,
    /// Statements of this pool abandoned whose blocking thread still runs.
    pub(super) abandoned: AtomicUsize,
    /// The kind of connection statements asked for last: new connections are opened so.
    pub(super) read_only: AtomicBool,
}

/// One connection and how it was opened. A read-only statement needs a read-only connection and
/// a write a read-write one; the pool holds both kinds, and [`checkout`] reopens one that is
/// the wrong kind (a datasource's statements are all of one kind, so this is rare).
pub(super) struct SqliteConn {
    pub(super) conn: SqlConn,
    pub(super) read_only: bool,
}

impl managed::Manager for SqliteManager {
    type Type = SqliteConn;
    type Error = ExecError;

    async fn create(&self) -> Result<SqliteConn, ExecError> {
        open_blocking(&self.file, self.read_only.load(Ordering::Relaxed)).await
    }

    async fn recycle(
        &self,
        c: &mut SqliteConn,
        metrics: &Metrics,
    ) -> managed::RecycleResult<ExecError> {
        pool::expired(metrics, self.file.settings.idle_timeout)?;
        // Anything in doubt was discarded; a connection still inside a transaction would be one.
        if !c.conn.is_autocommit() {
            return Err(RecycleError::message("left inside a transaction"));
        }
        Ok(())
    }
}

/// Opens one connection: read-only connections cannot write even through a function or a
/// pragma; no URI filenames, no ATTACH, no extension loading, defensive mode on.
fn open_conn(file: &File, read_only: bool) -> Result<SqlConn, ExecError> {
    let real = net::sqlite_path_allowed(&file.path, &file.settings.sqlite_roots)?;
    let mode = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    };
    let unavailable = |e: rusqlite::Error| {
        ExecError::Unavailable(format!("the SQLite file could not be opened: {e}"))
    };
    let conn = SqlConn::open_with_flags(&real, mode | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(unavailable)?;
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)
        .map_err(unavailable)?;
    conn.set_limit(
        Limit::SQLITE_LIMIT_LENGTH,
        value_limit(file.settings.max_result_bytes),
    )
    .map_err(unavailable)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
        .map_err(unavailable)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)
        .map_err(unavailable)?;
    if read_only {
        conn.execute_batch("PRAGMA query_only=1")
            .map_err(unavailable)?;
    }
    Ok(conn)
}

/// Opens a connection on a blocking thread (deadpool bounds the wait by `connect_timeout`).
async fn open_blocking(file: &Arc<File>, read_only: bool) -> Result<SqliteConn, ExecError> {
    let file = file.clone();
    match tokio::task::spawn_blocking(move || open_conn(&file, read_only)).await {
        Ok(opened) => opened.map(|conn| SqliteConn { conn, read_only }),
        Err(_) => Err(ExecError::Unavailable(
            "opening the SQLite file failed".into(),
        )),
    }
}

/// A connection from the pool: of the kind `read_only` asks for, or of either kind for `None`
/// (our own read-only catalogue work).
pub(super) async fn checkout(
    pool: &Pool<SqliteManager>,
    read_only: Option<bool>,
) -> Result<Object<SqliteManager>, ExecError> {
    let settings = &pool.manager().file.settings;
    if let Some(want) = read_only {
        pool.manager().read_only.store(want, Ordering::Relaxed);
    }
    let mut obj = pool::checkout(pool, settings.connect_timeout).await?;
    let Some(want) = read_only.filter(|&want| want != obj.read_only) else {
        return Ok(obj);
    };
    let limit = settings.connect_timeout;
    match tokio::time::timeout(limit, open_blocking(&pool.manager().file, want)).await {
        Ok(Ok(fresh)) => {
            *obj = fresh;
            Ok(obj)
        }
        Ok(Err(e)) => {
            drop(pool::discard(obj));
            Err(e)
        }
        Err(_) => {
            drop(pool::discard(obj));
            Err(ExecError::Unavailable(format!(
                "opening the SQLite file took longer than {limit:?}"
            )))
        }
    }
}

/// The longest string or blob a datasource statement may build or read: a value larger than the
/// whole result cap can never be answered, and a quarter of the heap cap leaves room for the
/// copies one statement may hold at once (a concatenation, the row being read) and for the
/// store's and the audit log's connections.
pub(super) fn value_limit(max_result_bytes: u64) -> i32 {
    let mut limit = max_result_bytes.clamp(1, SQLITE_MAX_LENGTH);
    let heap = heap_limit();
    if heap > 0 {
        limit = limit.min((heap / 4).max(1));
    }
    i32::try_from(limit).unwrap_or(i32::MAX)
}

/// Where a piece of blocking work stands, shared by it and its watchdog. The watchdog may
/// abandon it only while it is `RUNNING`: never during a COMMIT (the caller must learn whether
/// the write happened), never once it finished.
pub(super) const RUNNING: u8 = 0;
pub(super) const COMMITTING: u8 = 1;
const FINISHED: u8 = 2;
const ABANDONED: u8 = 3;

impl SqliteManager {
    /// The watchdog gives up on work that did not stop: returns whether it was abandoned
    /// (false: it finished meanwhile, or is committing and must be waited for).
    pub(super) fn abandon(&self, state: &AtomicU8) -> bool {
        // Counted before the state changes, so the worker's `finish` never counts below zero.
        self.abandoned.fetch_add(1, Ordering::AcqRel);
        ABANDONED_RUNNING.fetch_add(1, Ordering::AcqRel);
        if state
            .compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            ABANDONED_TOTAL.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        self.abandoned.fetch_sub(1, Ordering::AcqRel);
        ABANDONED_RUNNING.fetch_sub(1, Ordering::AcqRel);
        false
    }

    /// The worker is done with `obj`: returns it when the work was not abandoned. An abandoned
    /// worker's connection is discarded (freeing its pool slot), then the count drops.
    pub(super) fn finish(
        &self,
        state: &AtomicU8,
        obj: Object<SqliteManager>,
    ) -> Option<Object<SqliteManager>> {
        if state.swap(FINISHED, Ordering::AcqRel) != ABANDONED {
            return Some(obj);
        }
        drop(pool::discard(obj));
        self.abandoned.fetch_sub(1, Ordering::AcqRel);
        ABANDONED_RUNNING.fetch_sub(1, Ordering::AcqRel);
        None
    }
}
