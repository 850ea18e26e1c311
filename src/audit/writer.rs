//! The group-commit writer for query audit records: many records, one transaction.
//!
//! Queries hand their record to a bounded queue; one dedicated thread, with its own SQLite
//! connection, gathers what is queued into a batch and commits it in one transaction (one fsync
//! for the whole batch). By default a caller waits for its batch to commit before the query is
//! answered, so a crash never loses the record of an answered query.
//!
//! Batches are committed to the staging table ([`super::STAGING_SQL`]), which is cheap to append
//! to, and moved into the indexed log in bulk by the same thread: every [`MOVE_AT_RECORDS`]
//! records, after [`MOVE_WHEN_IDLE_FOR`] without records, at start and at shutdown. A move is one
//! transaction, so a record is in exactly one of the two tables at any time, and readers see both.
//!
//! A caller that knows it is the only query in flight ([`AuditWriter::record_hinted`]) commits
//! its record itself when the writer is idle: a lone record cannot share a batch, and the trip to
//! the writer thread and back cost two thread wake-ups, more than the commit itself.

use super::{AuditError, AuditRecord, STAGING_TABLE, TABLE, columns, stage};
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How the writer trades latency, throughput and durability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditSettings {
    /// Answer a query only after its record is committed (default). When false, `record`
    /// returns once the record is queued; it is still committed within `max_delay`, but a crash
    /// may lose the last batch.
    pub wait_for_commit: bool,
    /// The most records in one transaction (default 512).
    pub max_batch: usize,
    /// How long the writer waits for more records after the first of a batch (default 0).
    /// Zero commits whatever is queued at once; batches then form while a commit runs, which
    /// under load is enough: bench/run measured no throughput gain from 2 ms, only 2 ms more
    /// latency for every query answered while the writer was idle.
    pub max_delay: Duration,
    /// Records queued but not yet taken by the writer (default 65536). When full, `record`
    /// waits: back-pressure, never dropping.
    pub queue_capacity: usize,
    /// fsync at every commit (SQLite `synchronous=FULL`), so committed records survive an OS
    /// crash or power loss too. Off (default): `synchronous=NORMAL` in WAL mode, which keeps
    /// every committed record through any crash of the gateway process (kill -9, OOM, panic) but
    /// may lose the last commits if the machine itself goes down. An fsync costs about a
    /// millisecond on common disks, which a query answered after its record would otherwise wait.
    pub fsync: bool,
    /// Staged records that make the writer move them into the log (default
    /// [`MOVE_AT_RECORDS`]; not a configuration field).
    pub move_at_records: usize,
    /// Idle time after which the writer moves what is staged (default [`MOVE_WHEN_IDLE_FOR`];
    /// not a configuration field).
    pub move_when_idle_for: Duration,
    /// WAL size past which the writer restarts the WAL before its next commit (see
    /// [`Checkpointer`]; default [`WAL_SIZE_LIMIT_BYTES`]; not a configuration field).
    pub wal_limit_bytes: i64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            wait_for_commit: true,
            max_batch: 512,
            max_delay: Duration::ZERO,
            queue_capacity: 65_536,
            fsync: false,
            move_at_records: MOVE_AT_RECORDS,
            move_when_idle_for: MOVE_WHEN_IDLE_FOR,
            wal_limit_bytes: WAL_SIZE_LIMIT_BYTES,
        }
    }
}

/// How long a commit waits for the store's own write transactions (SQLite has one writer).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Transactions committed (by the writer thread, or by a lone caller for its own record).
    pub committed_batches: u64,
    /// Records in those transactions.
    pub committed_records: u64,
    /// Records that could not be written (each was reported to its caller, or to shutdown).
    pub failed_records: u64,
    /// WAL checkpoints that failed (logged; the WAL grows until one succeeds).
    pub failed_checkpoints: u64,
    /// Records committed to the staging table and not yet moved into the log.
    pub staged_records: u64,
    /// Moves from the staging table into the log that failed (logged; retried later, and the
    /// records stay listed from the staging table meanwhile).
    pub failed_moves: u64,
    /// Records their caller committed itself (of `committed_records`; see
    /// [`AuditWriter::record_hinted`]).
    pub inline_commits: u64,
    /// Times the WAL passed its limit and commits were held back until it could start over.
    pub wal_restarts: u64,
}

#[derive(Default)]
struct Counters {
    committed_batches: AtomicU64,
    committed_records: AtomicU64,
    failed_records: AtomicU64,
    failed_checkpoints: AtomicU64,
    staged_records: AtomicU64,
    failed_moves: AtomicU64,
    inline_commits: AtomicU64,
    wal_restarts: AtomicU64,
    /// Set by the checkpointer when the WAL has passed its limit; the writer then restarts it
    /// before its next commit.
    wal_over_limit: AtomicBool,
    /// Failed records queued without waiting: nobody else can be told, so shutdown reports them.
    unreported_failures: AtomicU64,
}

type Reply = oneshot::Sender<Result<(), AuditError>>;

enum Msg {
    /// Boxed so a full queue holds pointers, not 300-byte records inline in every slot.
    Record {
        rec: Box<AuditRecord>,
        done: Option<Reply>,
    },
    Shutdown {
        done: Reply,
    },
}

/// A record waiting in the current batch, with the caller to tell when it is committed.
struct Pending {
    rec: Box<AuditRecord>,
    done: Option<Reply>,
}

/// Handle to the writer thread. Share it (e.g. in an `Arc`) between request handlers; dropping
/// the last handle without [`AuditWriter::shutdown`] still commits what was queued.
pub struct AuditWriter {
    tx: mpsc::Sender<Msg>,
    wait_for_commit: bool,
    /// Callers may commit their own record (waiting for commits, without an fsync per commit).
    commit_here: bool,
    /// The writer thread's connection; gone once the thread has finished.
    committer: Weak<Mutex<Committer>>,
    counters: Arc<Counters>,
    /// Becomes true (or its sender is dropped) when the writer thread has finished.
    stopped: watch::Receiver<bool>,
}

impl AuditWriter {
    /// Opens its own connection to the store file and starts the writer thread.
    ///
    /// The audit and staging tables must exist (the store applies [`super::SCHEMA_SQL`] and
    /// [`super::STAGING_SQL`] in its migrations);
    /// checking here makes a missing migration fail at startup rather than on the first query.
    pub fn start(path: &Path, settings: AuditSettings) -> Result<AuditWriter, AuditError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // With WAL, NORMAL survives a process crash but may lose the last commits on power loss;
        // FULL pays an fsync per batch to survive that too.
        let sync = if settings.fsync { "FULL" } else { "NORMAL" };
        conn.pragma_update(None, "synchronous", sync)?;
        // Checkpoints copy the WAL into the database file and fsync both: on a commit's path
        // they stalled a query now and then by the length of an fsync (bench/run saw 15 ms p99
        // at one client). The checkpointer thread runs them instead.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // The size the WAL file is cut back to when it starts over. At the limit itself, the
        // commit that starts it over freed the file's tail first, 2-16 ms with commits waiting;
        // at twice the limit that happens only after a restart came late.
        let file_limit = settings.wal_limit_bytes.saturating_mul(2);
        conn.pragma_update(None, "journal_size_limit", file_limit)?;
        let tables: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN (?1, ?2)",
            [TABLE, STAGING_TABLE],
            |r| r.get(0),
        )?;
        if tables != 2 {
            return Err(AuditError::MissingSchema);
        }
        // Records a previous process staged and did not move (it was killed): the first move,
        // at the start of the writer thread, takes them.
        let staged: i64 =
            conn.query_row(&format!("SELECT count(*) FROM {STAGING_TABLE}"), [], |r| {
                r.get(0)
            })?;

        // Zero would make the channel constructor panic and a batch never fill.
        let (tx, rx) = mpsc::channel(settings.queue_capacity.max(1));
        let (stopped_tx, stopped) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        // The writer runs its own small runtime so it needs no caller runtime and never blocks
        // one with SQLite calls; the runtime only provides the batching timer.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(AuditError::Start)?;
        let checkpoints = Checkpointer::start(path, counters.clone(), settings.wal_limit_bytes)?;
        counters
            .staged_records
            .store(u64::try_from(staged).unwrap_or(0), Ordering::Relaxed);
        let committer = Arc::new(Mutex::new(Committer {
            conn,
            counters: counters.clone(),
            move_at: settings.move_at_records.max(1),
            next_move_at: settings.move_at_records.max(1),
            closed: false,
            busy: BUSY_TIMEOUT,
        }));
        let weak = Arc::downgrade(&committer);
        let batcher = Batcher {
            committer,
            max_batch: settings.max_batch.max(1),
            max_delay: settings.max_delay,
            counters: counters.clone(),
            move_when_idle_for: settings.move_when_idle_for,
            _checkpoints: checkpoints,
        };
        std::thread::Builder::new()
            .name("sluice-audit".into())
            .spawn(move || {
                runtime.block_on(batcher.run(rx));
                let _ = stopped_tx.send(true);
            })
            .map_err(AuditError::Start)?;

        Ok(AuditWriter {
            tx,
            wait_for_commit: settings.wait_for_commit,
            commit_here: settings.wait_for_commit && !settings.fsync,
            committer: weak,
            counters,
            stopped,
        })
    }

    /// Queues the record; waits while the queue is full. With `wait_for_commit`, resolves once
    /// its batch is committed, or with the error that kept it from being written.
    ///
    /// A caller cancelled while waiting for queue space has not queued its record; once queued,
    /// a record is written even if its caller goes away.
    pub async fn record(&self, rec: AuditRecord) -> Result<(), AuditError> {
        if !self.wait_for_commit {
            return self
                .tx
                .send(Msg::Record {
                    rec: Box::new(rec),
                    done: None,
                })
                .await
                .map_err(|_| AuditError::Closed);
        }
        let (done, committed) = oneshot::channel();
        self.tx
            .send(Msg::Record {
                rec: Box::new(rec),
                done: Some(done),
            })
            .await
            .map_err(|_| AuditError::Closed)?;
        committed.await.map_err(|_| AuditError::Closed)?
    }

    /// [`record`](Self::record), for a caller that knows whether other records may come at the
    /// same time. When none can (`alone`: the only query in flight), the writer is idle and
    /// callers wait for commits, the record is committed on the caller's thread, sparing two
    /// thread wake-ups. A commit that would wait for the store's write lock, or fails, is left
    /// to the writer thread as in [`record`](Self::record), which retries it and reports what it
    /// cannot write.
    pub async fn record_hinted(&self, rec: AuditRecord, alone: bool) -> Result<(), AuditError> {
        if !(alone && self.commit_here) {
            return self.record(rec).await;
        }
        match self.try_commit_here(rec) {
            Ok(()) => Ok(()),
            Err(rec) => self.record(*rec).await,
        }
    }

    /// Commits `rec` here if the writer is idle with nothing queued; gives it back otherwise.
    fn try_commit_here(&self, rec: AuditRecord) -> Result<(), Box<AuditRecord>> {
        let rec = Box::new(rec);
        let Some(shared) = self.committer.upgrade() else {
            return Err(rec);
        };
        let Ok(mut c) = shared.try_lock() else {
            return Err(rec);
        };
        // Queued records go first, and a due move is the writer's.
        let queued = self.tx.capacity() < self.tx.max_capacity();
        if c.closed || queued || staged(&self.counters) >= c.next_move_at {
            return Err(rec);
        }
        // Never wait on a runtime thread for the store's write lock: the writer thread can.
        match c.write(std::iter::once(&*rec), Duration::ZERO) {
            Ok(()) => {
                c.committed(1);
                self.counters.inline_commits.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(_) => Err(rec),
        }
    }

    /// Commits everything queued and stops the writer. Later `record` calls fail with
    /// [`AuditError::Closed`]; calling it again is harmless.
    ///
    /// Fails with [`AuditError::Lost`] if records queued without waiting could not be written.
    pub async fn shutdown(&self) -> Result<(), AuditError> {
        let (done, finished) = oneshot::channel();
        if self.tx.send(Msg::Shutdown { done }).await.is_ok()
            && let Ok(result) = finished.await
        {
            return result;
        }
        // Already shut down, or shutting down for another caller: wait until the thread is done.
        // A writer that vanished without finishing (it panicked) is reported, not ignored.
        let mut stopped = self.stopped.clone();
        match stopped.wait_for(|s| *s).await {
            Ok(_) => Ok(()),
            Err(_) => Err(AuditError::Closed),
        }
    }

    /// Transactions committed so far.
    pub fn committed_batches(&self) -> u64 {
        self.counters.committed_batches.load(Ordering::Relaxed)
    }

    /// All counters at once, for metrics.
    pub fn stats(&self) -> AuditStats {
        AuditStats {
            committed_batches: self.counters.committed_batches.load(Ordering::Relaxed),
            committed_records: self.counters.committed_records.load(Ordering::Relaxed),
            failed_records: self.counters.failed_records.load(Ordering::Relaxed),
            failed_checkpoints: self.counters.failed_checkpoints.load(Ordering::Relaxed),
            staged_records: self.counters.staged_records.load(Ordering::Relaxed),
            failed_moves: self.counters.failed_moves.load(Ordering::Relaxed),
            inline_commits: self.counters.inline_commits.load(Ordering::Relaxed),
            wal_restarts: self.counters.wal_restarts.load(Ordering::Relaxed),
        }
    }

    /// Records queued and not yet taken into a batch (a gauge for metrics).
    pub fn queue_len(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// Whether an error is caused by one record's content (a duplicate id, a value the schema
/// refuses) rather than by the database, so the rest of its batch can still be written.
fn is_record_specific(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::ToSqlConversionFailure(_))
        || matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::ConstraintViolation | rusqlite::ErrorCode::TooBig)
        )
}

/// How often the checkpointer copies the WAL into the database file: often enough that the WAL
/// stays short under load (each commit appends about 11 pages).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Staged records that make the writer move them into the log. Each move writes the log's and
/// its indexes' right-edge pages once for all of them instead of once per commit; more per move
/// saves little more page writing, and a move holds up the records queued behind it.
pub const MOVE_AT_RECORDS: usize = 256;

/// How long the writer waits without a new record before moving what is staged, so the staging
/// table is empty whenever the gateway is quiet.
pub const MOVE_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

const MOVE_SQL: &str = concat!(
    "INSERT INTO audit_log (",
    columns!(),
    ") SELECT ",
    columns!(),
    " FROM audit_staging ORDER BY seq"
);

/// The WAL size past which the writer restarts the WAL (holding its commits back meanwhile).
/// The file itself is cut back to twice this when it starts over (`journal_size_limit`).
pub const WAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

/// A thread that checkpoints the store's WAL off the writer's commit path, every
/// [`CHECKPOINT_EVERY`], until its handle is dropped (then once more, waited for).
///
/// `PASSIVE` never waits for readers or writers. The WAL starts over from its beginning only
/// when a commit finds it wholly copied, which under steady commits never happens: each
/// checkpoint ends behind the commits made while it ran, and the WAL grew by gigabytes a minute
/// under load. So once the WAL passes the limit, the checkpointer flags it and the writer runs a
/// `RESTART` checkpoint on its own connection before its next commit
/// ([`Committer::restart_wal_if_due`]), and the writer's next commit starts the WAL over. A
/// restart run from this thread instead raced the writer for the lock and lost for seconds.
///
/// Commits wait while the restart runs, so this thread leaves it as little as it can (see
/// [`Checkpoints::run`]). Paired figures are in BENCHMARKS.md, under 3360e84.
struct Checkpointer {
    /// Dropping it wakes the thread and ends it.
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Checkpointer {
    fn start(
        path: &Path,
        counters: Arc<Counters>,
        wal_limit_bytes: i64,
    ) -> Result<Checkpointer, AuditError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let db_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(AuditError::Start)?;
        let mut checkpoints = Checkpoints {
            conn,
            db_file,
            limit_frames: wal_limit_bytes / page_size.max(1),
            copied: 0,
            counters,
        };
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sluice-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    checkpoints.run();
                }
                checkpoints.run();
            })
            .map_err(AuditError::Start)?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// The checkpointer thread's state.
struct Checkpoints {
    conn: Connection,
    /// The database file, to sync what a passive checkpoint copied into it.
    db_file: std::fs::File,
    /// WAL frames (pages) past which the writer is asked to restart the WAL.
    limit_frames: i64,
    /// Frames of the WAL copied as of the last checkpoint: a change means the next one wrote.
    copied: i64,
    counters: Arc<Counters>,
}

impl Checkpoints {
    /// One round: a passive checkpoint; past the limit, a second one and the restart flag.
    ///
    /// The writer's restart holds commits back while it syncs the WAL written since this
    /// thread's last sync, copies the frames this thread has not, and syncs the database file.
    /// Three things keep that short (paired runs at 64 clients: p99 85-86 ms without them,
    /// 17-24 ms with them, against 9-11 ms with no restarts at all):
    /// - [`Self::passive`] syncs the database file after every copy;
    /// - the second checkpoint leaves the restart only what came in while it ran;
    /// - the WAL file is cut back only past twice the limit (`journal_size_limit`), so the
    ///   commit that starts it over does not first free the blocks of its tail.
    fn run(&mut self) {
        if self
            .passive()
            .is_some_and(|frames| frames > self.limit_frames)
        {
            self.passive();
            self.counters.wal_over_limit.store(true, Ordering::Release);
        }
    }

    /// A passive checkpoint, then a sync of the database file if it copied anything; returns
    /// the frames in the WAL.
    ///
    /// SQLite syncs the database file only when a checkpoint finds that no commit came in while
    /// it copied, which under steady commits only the writer's restart does: it then synced
    /// every page the passive checkpoints had written since the last restart (38-56 ms).
    fn passive(&mut self) -> Option<i64> {
        match wal_checkpoint(&self.conn, "PASSIVE") {
            Ok((_, frames, copied)) => {
                if copied != self.copied {
                    self.copied = copied;
                    if let Err(e) = self.db_file.sync_data() {
                        tracing::warn!(error = %e, "audit database sync failed");
                    }
                }
                Some(frames)
            }
            Err(e) => {
                tracing::warn!(error = %e, "audit WAL checkpoint failed");
                self.counters
                    .failed_checkpoints
                    .fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// The state of the writer thread.
struct Batcher {
    /// The lasting strong reference (a lone caller upgrades its weak one only while it commits):
    /// dropping the batcher closes the connection.
    committer: Arc<Mutex<Committer>>,
    max_batch: usize,
    max_delay: Duration,
    counters: Arc<Counters>,
    move_when_idle_for: Duration,
    /// Ends with the writer, after the connection.
    _checkpoints: Checkpointer,
}

/// The writer's connection and what goes with it. The writer thread holds it while it commits a
/// batch or moves staged records; a lone caller may hold it to commit its own record.
struct Committer {
    conn: Connection,
    counters: Arc<Counters>,
    move_at: usize,
    /// The staged count at which the next move runs: `move_at`, pushed further after a failed
    /// move so a failing database is not retried at every commit.
    next_move_at: usize,
    /// Set when the writer begins its last drain: no caller commits after that.
    closed: bool,
    /// The connection's busy timeout now (a lone caller's commit uses zero).
    busy: Duration,
}

/// `PRAGMA wal_checkpoint(mode)`: (1 if it could not finish for a lock, frames in the WAL,
/// frames of it copied into the database file).
fn wal_checkpoint(conn: &Connection, mode: &str) -> Result<(i64, i64, i64), rusqlite::Error> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}

fn staged(counters: &Counters) -> usize {
    usize::try_from(counters.staged_records.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
}

impl Batcher {
    fn lock(&self) -> MutexGuard<'_, Committer> {
        self.committer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves what is staged, without taking the connection when nothing is.
    fn move_if_staged(&self) {
        if staged(&self.counters) > 0 {
            self.lock().move_staged();
        }
    }

    async fn run(self, mut rx: mpsc::Receiver<Msg>) {
        let mut batch: Vec<Pending> = Vec::with_capacity(self.max_batch);
        let mut shutdowns: Vec<Reply> = Vec::new();
        self.move_if_staged();
        // Every handle dropped without shutdown ends the loop the same way, after a last commit.
        loop {
            // Always with the idle timeout: callers committing their own records stage them
            // without waking this thread, so it looks again after every idle period.
            let first = match tokio::time::timeout(self.move_when_idle_for, rx.recv()).await {
                Ok(msg) => msg,
                Err(_) => {
                    self.move_if_staged();
                    continue;
                }
            };
            let Some(first) = first else { break };
            self.take(first, &mut batch, &mut shutdowns);
            if self.max_delay.is_zero() {
                // Only what is queued already. Not through the timer: tokio rounds every
                // deadline up to its next millisecond tick, so even a zero wait cost a lone
                // query up to a millisecond.
                while shutdowns.is_empty() && batch.len() < self.max_batch {
                    match rx.try_recv() {
                        Ok(msg) => self.take(msg, &mut batch, &mut shutdowns),
                        Err(_) => break,
                    }
                }
            } else {
                let deadline = tokio::time::Instant::now() + self.max_delay;
                while shutdowns.is_empty() && batch.len() < self.max_batch {
                    // `timeout_at` polls the queue before the timer, so what is already queued
                    // is taken even when the deadline has passed.
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(msg)) => self.take(msg, &mut batch, &mut shutdowns),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            let mut c = self.lock();
            c.commit(&mut batch);
            if staged(&self.counters) >= c.next_move_at {
                c.move_staged();
            }
            drop(c);
            if !shutdowns.is_empty() {
                break;
            }
        }

        // Refuse new records, then commit those already queued.
        self.lock().closed = true;
        rx.close();
        while let Some(msg) = rx.recv().await {
            self.take(msg, &mut batch, &mut shutdowns);
            if batch.len() >= self.max_batch {
                self.lock().commit(&mut batch);
            }
        }
        let mut c = self.lock();
        c.commit(&mut batch);
        c.move_staged();
        drop(c);

        let lost = self.counters.unreported_failures.swap(0, Ordering::Relaxed);
        // Close the connection (a lone caller may hold it a moment longer, but `closed` keeps it
        // from committing) and run the last checkpoint before telling anyone we are done.
        drop(self);
        for done in shutdowns {
            let result = match lost {
                0 => Ok(()),
                count => Err(AuditError::Lost { count }),
            };
            let _ = done.send(result);
        }
    }

    fn take(&self, msg: Msg, batch: &mut Vec<Pending>, shutdowns: &mut Vec<Reply>) {
        match msg {
            Msg::Record { rec, done } => batch.push(Pending { rec, done }),
            Msg::Shutdown { done } => shutdowns.push(done),
        }
    }
}

impl Committer {
    /// Commits the batch in one transaction and tells each waiter. If the batch fails, each
    /// record is retried alone so one bad record (a duplicate id, say) fails only its own caller.
    fn commit(&mut self, batch: &mut Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        self.restart_wal_if_due();
        let result = self.write(batch.iter().map(|p| &*p.rec), BUSY_TIMEOUT);
        match result {
            Ok(()) => {
                self.committed(batch.len());
                for p in batch.drain(..) {
                    if let Some(done) = p.done {
                        let _ = done.send(Ok(()));
                    }
                }
            }
            Err(e) if batch.len() > 1 && is_record_specific(&e) => {
                tracing::warn!(error = %e, records = batch.len(), "audit batch failed; retrying records one by one");
                for p in batch.drain(..) {
                    let result = self.write(std::iter::once(&*p.rec), BUSY_TIMEOUT);
                    match result {
                        Ok(()) => {
                            self.committed(1);
                            if let Some(done) = p.done {
                                let _ = done.send(Ok(()));
                            }
                        }
                        Err(e) => self.failed(p, Arc::new(e)),
                    }
                }
            }
            Err(e) => {
                // The database itself failed (busy past the timeout, disk full, I/O): retrying
                // record by record would only repeat the wait per record, so all share the error.
                tracing::warn!(error = %e, records = batch.len(), "audit batch failed");
                let e = Arc::new(e);
                for p in batch.drain(..) {
                    self.failed(p, e.clone());
                }
            }
        }
    }

    /// If the checkpointer found the WAL past its limit: copies the rest of it into the
    /// database and makes the next commit start it over. Commits wait meanwhile (this is the
    /// writer's connection), which bounds the WAL under commits that never pause. Never waits
    /// for the checkpointer or a reader: while either holds the WAL, the next commit tries again.
    fn restart_wal_if_due(&mut self) {
        if !self.counters.wal_over_limit.swap(false, Ordering::AcqRel) {
            return;
        }
        // Without waiting: while the checkpointer (copying and syncing, which can take a
        // while) or a reader holds the WAL, each commit tries again instead of sleeping in
        // SQLite's busy handler while queries wait for their records.
        let result = self
            .wait_for_lock(Duration::ZERO)
            .and_then(|()| wal_checkpoint(&self.conn, "RESTART"));
        match result {
            Ok((0, _, _)) => {
                self.counters.wal_restarts.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {
                self.counters.wal_over_limit.store(true, Ordering::Release);
            }
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                self.counters.wal_over_limit.store(true, Ordering::Release);
            }
            Err(e) => {
                tracing::warn!(error = %e, "audit WAL restart failed");
                self.counters
                    .failed_checkpoints
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Stages the records in one transaction, waiting at most `busy` for the write lock.
    fn write<'a>(
        &mut self,
        recs: impl Iterator<Item = &'a AuditRecord>,
        busy: Duration,
    ) -> Result<(), rusqlite::Error> {
        self.wait_for_lock(busy)?;
        // IMMEDIATE takes the write lock up front, waiting (busy timeout) for the store's writes.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for rec in recs {
            stage(&tx, rec)?;
        }
        tx.commit()
    }

    /// Sets how long the next transaction waits for the write lock, if that changed.
    fn wait_for_lock(&mut self, busy: Duration) -> Result<(), rusqlite::Error> {
        if self.busy != busy {
            self.conn.busy_timeout(busy)?;
            self.busy = busy;
        }
        Ok(())
    }

    fn committed(&self, records: usize) {
        self.counters
            .committed_batches
            .fetch_add(1, Ordering::Relaxed);
        self.counters
            .committed_records
            .fetch_add(records as u64, Ordering::Relaxed);
        self.counters
            .staged_records
            .fetch_add(records as u64, Ordering::Relaxed);
    }

    /// Moves every staged record into the log in one transaction. A failure leaves them staged
    /// (and listed) for a later move.
    fn move_staged(&mut self) {
        if staged(&self.counters) == 0 {
            return;
        }
        let moved = (|| {
            self.wait_for_lock(BUSY_TIMEOUT)?;
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(MOVE_SQL, [])?;
            tx.execute(&format!("DELETE FROM {STAGING_TABLE}"), [])?;
            tx.commit()
        })();
        match moved {
            Ok(()) => {
                self.counters.staged_records.store(0, Ordering::Relaxed);
                self.next_move_at = self.move_at;
            }
            Err(e) => {
                tracing::warn!(error = %e, staged = staged(&self.counters), "moving staged audit records into the log failed; retrying later");
                self.counters.failed_moves.fetch_add(1, Ordering::Relaxed);
                self.next_move_at = staged(&self.counters).saturating_add(self.move_at);
            }
        }
    }

    fn failed(&self, p: Pending, e: Arc<rusqlite::Error>) {
        self.counters.failed_records.fetch_add(1, Ordering::Relaxed);
        match p.done {
            // The caller gets the error and decides how to log and answer.
            Some(done) => {
                let _ = done.send(Err(AuditError::Write(e)));
            }
            None => {
                // Nobody waits for this record: log it loudly and keep it for shutdown's answer.
                tracing::error!(error = %e, audit_id = %p.rec.id, action = %p.rec.action, "audit record lost");
                self.counters
                    .unreported_failures
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{AuditFilter, count, query};
    use super::*;
    use crate::model::*;
    use std::time::Instant;

    fn settings(wait_for_commit: bool, max_delay_ms: u64) -> AuditSettings {
        AuditSettings {
            wait_for_commit,
            max_delay: Duration::from_millis(max_delay_ms),
            ..AuditSettings::default()
        }
    }

    fn count_fresh(path: &Path, company: &CompanyId) -> u64 {
        count(&Connection::open(path).unwrap(), company).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_records_commit_in_fewer_transactions_than_records() {
        let (_dir, path, _conn) = fresh_db();
        let writer = Arc::new(AuditWriter::start(&path, settings(true, 20)).unwrap());
        let company = CompanyId::generate();
        let n = 300;
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let writer = writer.clone();
                let rec = sample(&company, "query");
                tokio::spawn(async move { writer.record(rec).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }

        let stats = writer.stats();
        assert_eq!(stats.committed_records, n);
        assert!(stats.committed_batches >= 1);
        assert!(
            stats.committed_batches < n / 4,
            "{} transactions for {n} records",
            stats.committed_batches
        );
        assert_eq!(writer.committed_batches(), stats.committed_batches);
        assert_eq!(count_fresh(&path, &company), n);
        writer.shutdown().await.unwrap();
    }

    /// Under commits that never pause, passive checkpoints never catch up and the WAL never
    /// starts over: it grew by gigabytes a minute in bench runs. Past its limit the writer
    /// restarts it, so the file stays near the limit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_near_its_limit_under_commits_that_never_pause() {
        let (_dir, path, _conn) = fresh_db();
        let limit: i64 = 256 * 1024;
        let writer = Arc::new(
            AuditWriter::start(
                &path,
                AuditSettings {
                    wal_limit_bytes: limit,
                    ..settings(true, 0)
                },
            )
            .unwrap(),
        );
        let company = CompanyId::generate();
        let wal = path.with_extension("db-wal");
        let until = Instant::now() + Duration::from_secs(4);
        let writers: Vec<_> = (0..16)
            .map(|_| {
                let writer = writer.clone();
                let company = company.clone();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < until {
                        writer.record(sample(&company, "query")).await.unwrap();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let (first_ends, last_starts) = (
            until - Duration::from_secs(3),
            until - Duration::from_secs(1),
        );
        let (mut first, mut last) = (0, 0);
        while Instant::now() < until {
            let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
            let now = Instant::now();
            if now < first_ends {
                first = first.max(size);
            } else if now >= last_starts {
                last = last.max(size);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut records = 0;
        for w in writers {
            records += w.await.unwrap();
        }
        let stats = writer.stats();
        assert!(stats.wal_restarts > 0, "{records} records, {stats:?}");
        // The file stays within the limit plus about one checkpoint interval of commits, however
        // long the commits go on (how much that is depends on the machine's speed, which other
        // tests running beside this one change). Without the restarts it grew all along: about
        // four times as large in the last second as in the first.
        assert!(
            last < first * 5 / 2 + 1024 * 1024,
            "the WAL grew from {first} bytes in the first second to {last} in the last, with \
             {records} records committed ({stats:?})"
        );
        assert_eq!(count_fresh(&path, &company), records);
        writer.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_batch_never_exceeds_max_batch() {
        let (_dir, path, _conn) = fresh_db();
        let writer = Arc::new(
            AuditWriter::start(
                &path,
                AuditSettings {
                    max_batch: 10,
                    ..settings(false, 50)
                },
            )
            .unwrap(),
        );
        let company = CompanyId::generate();
        for _ in 0..95 {
            writer.record(sample(&company, "query")).await.unwrap();
        }
        writer.shutdown().await.unwrap();
        let stats = writer.stats();
        assert_eq!(stats.committed_records, 95);
        assert!(stats.committed_batches >= 10, "{stats:?}");
    }

    #[tokio::test]
    async fn a_waited_record_is_visible_to_a_fresh_connection_when_record_returns() {
        let (_dir, path, _conn) = fresh_db();
        // A long linger would hold the answer back; the record must still be committed on return.
        let writer = AuditWriter::start(&path, settings(true, 30)).unwrap();
        let company = CompanyId::generate();
        for _ in 0..3 {
            let rec = full_record(&company);
            writer.record(rec.clone()).await.unwrap();
            let fresh = Connection::open(&path).unwrap();
            let page = query(&fresh, &AuditFilter::new(company.clone())).unwrap();
            assert_eq!(page.items.first(), Some(&rec));
        }
        writer.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_flushes_records_queued_without_waiting() {
        let (_dir, path, _conn) = fresh_db();
        // The linger is far longer than the test: only shutdown can make these records commit.
        let writer = AuditWriter::start(&path, settings(false, 60_000)).unwrap();
        let company = CompanyId::generate();
        let started = Instant::now();
        for _ in 0..100 {
            writer.record(sample(&company, "query")).await.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "record did not wait"
        );
        assert_eq!(count_fresh(&path, &company), 0, "nothing committed yet");

        writer.shutdown().await.unwrap();
        assert_eq!(count_fresh(&path, &company), 100);
        assert!(matches!(
            writer.record(sample(&company, "query")).await,
            Err(AuditError::Closed)
        ));
        writer.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_full_queue_makes_callers_wait_instead_of_dropping_records() {
        let (_dir, path, _conn) = fresh_db();
        let writer = Arc::new(
            AuditWriter::start(
                &path,
                AuditSettings {
                    queue_capacity: 1,
                    max_batch: 1,
                    ..settings(false, 0)
                },
            )
            .unwrap(),
        );
        let company = CompanyId::generate();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (writer, company) = (writer.clone(), company.clone());
                tokio::spawn(async move {
                    for _ in 0..50 {
                        writer.record(sample(&company, "query")).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        writer.shutdown().await.unwrap();
        assert_eq!(count_fresh(&path, &company), 200);
        assert_eq!(writer.stats().committed_batches, 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_record_fails_only_its_own_caller() {
        let (_dir, path, _conn) = fresh_db();
        let writer = Arc::new(AuditWriter::start(&path, settings(true, 50)).unwrap());
        let company = CompanyId::generate();
        let first = sample(&company, "query");
        writer.record(first.clone()).await.unwrap();

        // The duplicate id shares a batch with good records (the linger gathers them).
        let mut recs = vec![first.clone()];
        recs.extend((0..5).map(|_| sample(&company, "query")));
        let tasks: Vec<_> = recs
            .into_iter()
            .map(|rec| {
                let writer = writer.clone();
                tokio::spawn(async move { writer.record(rec).await })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        assert!(matches!(results[0], Err(AuditError::Write(_))));
        assert!(results[1..].iter().all(Result::is_ok), "{results:?}");
        assert_eq!(count_fresh(&path, &company), 6);
        assert_eq!(writer.stats().failed_records, 1);
        // Waited-for failures were reported to their callers already, not again at shutdown.
        writer.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn records_lost_without_a_waiter_are_reported_by_shutdown() {
        let (_dir, path, _conn) = fresh_db();
        let writer = AuditWriter::start(&path, settings(false, 0)).unwrap();
        let company = CompanyId::generate();
        let rec = sample(&company, "query");
        writer.record(rec.clone()).await.unwrap();
        writer.record(rec).await.unwrap();
        writer.record(sample(&company, "query")).await.unwrap();
        let result = writer.shutdown().await;
        assert!(
            matches!(result, Err(AuditError::Lost { count: 1 })),
            "{result:?}"
        );
        assert_eq!(count_fresh(&path, &company), 2);
    }

    /// Holds the store's write lock on another thread, as an admin change does, until `until`
    /// returns; returns once the lock is held.
    fn hold_write_lock(
        mut conn: Connection,
        until: impl FnOnce() + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        let (held_tx, held) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .unwrap();
            held_tx.send(()).unwrap();
            until();
            tx.commit().unwrap();
        });
        held.recv().unwrap();
        holder
    }

    #[tokio::test]
    async fn the_writer_waits_for_the_stores_own_write_transaction() {
        let (_dir, path, conn) = fresh_db();
        let writer = AuditWriter::start(&path, settings(true, 0)).unwrap();
        let company = CompanyId::generate();
        let holder = hold_write_lock(conn, || std::thread::sleep(Duration::from_millis(300)));
        writer.record(sample(&company, "query")).await.unwrap();
        holder.join().unwrap();
        assert_eq!(count_fresh(&path, &company), 1);
        writer.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn when_the_database_fails_every_caller_of_the_batch_gets_the_error() {
        let (_dir, path, conn) = fresh_db();
        let writer = Arc::new(AuditWriter::start(&path, settings(true, 50)).unwrap());
        conn.execute_batch("DROP TABLE audit_log").unwrap();
        let company = CompanyId::generate();
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let writer = writer.clone();
                let rec = sample(&company, "query");
                tokio::spawn(async move { writer.record(rec).await })
            })
            .collect();
        for t in tasks {
            let result = t.await.unwrap();
            assert!(matches!(result, Err(AuditError::Write(_))), "{result:?}");
        }
        let stats = writer.stats();
        assert_eq!((stats.failed_records, stats.committed_records), (5, 0));
        writer.shutdown().await.unwrap();
    }

    #[test]
    fn the_writer_refuses_to_start_without_the_audit_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.db");
        assert!(matches!(
            AuditWriter::start(&path, AuditSettings::default()),
            Err(AuditError::MissingSchema)
        ));
    }

    #[tokio::test]
    async fn dropping_the_writer_still_commits_what_was_queued() {
        let (_dir, path, _conn) = fresh_db();
        let writer = AuditWriter::start(&path, settings(false, 60_000)).unwrap();
        let mut stopped = writer.stopped.clone();
        let company = CompanyId::generate();
        for _ in 0..10 {
            writer.record(sample(&company, "query")).await.unwrap();
        }
        drop(writer);
        stopped.wait_for(|s| *s).await.unwrap();
        assert_eq!(count_fresh(&path, &company), 10);
    }

    fn rows_in(path: &Path, table: &str) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    /// Waits until the writer has moved everything staged, failing with `why` after 30 s
    /// (bounded generously: this is not a speed check).
    async fn wait_until_nothing_staged(path: &Path, why: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while rows_in(path, STAGING_TABLE) > 0 {
            assert!(Instant::now() < deadline, "{why}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Rows in the log and in the staging table.
    fn log_and_staged(path: &Path) -> (i64, i64) {
        (rows_in(path, TABLE), rows_in(path, STAGING_TABLE))
    }

    fn moving(move_at_records: usize, move_when_idle_for: Duration) -> AuditSettings {
        AuditSettings {
            move_at_records,
            move_when_idle_for,
            ..AuditSettings::default()
        }
    }

    const NEVER: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn records_are_staged_listed_at_once_and_moved_in_bulk() {
        let (_dir, path, _conn) = fresh_db();
        let writer = AuditWriter::start(&path, moving(10, NEVER)).unwrap();
        let company = CompanyId::generate();
        let mut recs = Vec::new();
        for _ in 0..4 {
            let rec = full_record(&company);
            writer.record(rec.clone()).await.unwrap();
            recs.push(rec);
        }
        assert_eq!(log_and_staged(&path), (0, 4));
        assert_eq!(writer.stats().staged_records, 4);
        // Listed from the moment `record` returns, newest first, as if already in the log.
        let fresh = Connection::open(&path).unwrap();
        let page = query(&fresh, &AuditFilter::new(company.clone())).unwrap();
        let newest_first: Vec<_> = recs.iter().rev().cloned().collect();
        assert_eq!(page.items, newest_first);

        for _ in 0..6 {
            writer.record(sample(&company, "query")).await.unwrap();
        }
        // The tenth commit triggered a move; the writer runs it before it takes the next record,
        // so once the eleventh is committed the first ten are in the log.
        writer.record(sample(&company, "query")).await.unwrap();
        assert_eq!(log_and_staged(&path), (10, 1));
        assert_eq!(writer.stats().staged_records, 1);
        let page = query(&fresh, &AuditFilter::new(company.clone())).unwrap();
        assert_eq!(page.items.len(), 11);
        assert_eq!(page.items[7..], newest_first[..]);

        writer.shutdown().await.unwrap();
        assert_eq!(log_and_staged(&path), (11, 0));
        assert_eq!(writer.stats().failed_moves, 0);
    }

    #[tokio::test]
    async fn a_failed_move_keeps_the_records_staged_and_listed_until_a_later_move() {
        let (_dir, path, conn) = fresh_db();
        let writer = AuditWriter::start(&path, moving(2, NEVER)).unwrap();
        let company = CompanyId::generate();
        // Every insert into the log fails; staging is unaffected.
        conn.execute_batch(
            "CREATE TRIGGER refuse_log BEFORE INSERT ON audit_log \
             BEGIN SELECT RAISE(ABORT, 'log refused'); END;",
        )
        .unwrap();
        for _ in 0..3 {
            writer.record(sample(&company, "query")).await.unwrap();
        }
        // The move due at two records failed; the next is put off by another two records, so the
        // third commit did not retry it.
        let stats = writer.stats();
        assert_eq!((stats.failed_moves, stats.staged_records), (1, 3));
        assert_eq!(log_and_staged(&path), (0, 3));
        assert_eq!(count_fresh(&path, &company), 3);

        conn.execute_batch("DROP TRIGGER refuse_log").unwrap();
        // The fourth commit reaches the put-off mark and moves all four; the writer does that
        // before it takes the fifth record.
        for _ in 0..2 {
            writer.record(sample(&company, "query")).await.unwrap();
        }
        let stats = writer.stats();
        assert_eq!((stats.failed_moves, stats.staged_records), (1, 1));
        assert_eq!(log_and_staged(&path), (4, 1));
        writer.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn an_idle_writer_moves_what_is_staged() {
        let (_dir, path, _conn) = fresh_db();
        let writer = AuditWriter::start(&path, moving(1000, Duration::from_millis(50))).unwrap();
        let company = CompanyId::generate();
        for _ in 0..3 {
            writer.record(sample(&company, "query")).await.unwrap();
        }
        wait_until_nothing_staged(&path, "the staged records were never moved").await;
        assert_eq!(rows_in(&path, TABLE), 3);
        writer.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn records_a_killed_process_left_staged_are_moved_at_start() {
        let (_dir, path, conn) = fresh_db();
        let company = CompanyId::generate();
        for _ in 0..3 {
            crate::audit::stage(&conn, &sample(&company, "query")).unwrap();
        }
        // The writer counts them at start (a count of 0 would skip the move); the move itself
        // runs on the writer thread, so the count is only read once a record has gone through.
        let writer = AuditWriter::start(&path, moving(1000, NEVER)).unwrap();
        // The move at the writer's start runs before it takes any record.
        writer.record(sample(&company, "query")).await.unwrap();
        assert_eq!(log_and_staged(&path), (3, 1));
        assert_eq!(writer.stats().staged_records, 1);
        assert_eq!(count_fresh(&path, &company), 4);
        writer.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_record_whose_id_is_already_in_the_log_is_refused_to_its_caller() {
        let (_dir, path, _conn) = fresh_db();
        let writer = AuditWriter::start(&path, moving(1, NEVER)).unwrap();
        let company = CompanyId::generate();
        let rec = sample(&company, "query");
        writer.record(rec.clone()).await.unwrap();
        writer.record(sample(&company, "query")).await.unwrap();
        // The first record was moved before the second was committed (the writer moves after
        // a commit, before it takes the next record).
        assert!(rows_in(&path, TABLE) >= 1);
        let again = writer.record(rec).await;
        assert!(
            matches!(&again, Err(AuditError::Write(e))
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation)),
            "{again:?}"
        );
        writer.shutdown().await.unwrap();
        assert_eq!(count_fresh(&path, &company), 2);
        let stats = writer.stats();
        assert_eq!((stats.failed_records, stats.failed_moves), (1, 0));
    }

    #[tokio::test]
    async fn a_lone_caller_commits_its_own_record_when_the_writer_is_idle() {
        let (_dir, path, _conn) = fresh_db();
        let writer = AuditWriter::start(&path, AuditSettings::default()).unwrap();
        let company = CompanyId::generate();
        let rec = full_record(&company);
        writer.record_hinted(rec.clone(), true).await.unwrap();
        let stats = writer.stats();
        assert_eq!((stats.inline_commits, stats.committed_records), (1, 1));
        let fresh = Connection::open(&path).unwrap();
        let page = query(&fresh, &AuditFilter::new(company.clone())).unwrap();
        assert_eq!(page.items, vec![rec]);
        // Not alone: through the writer thread.
        writer
            .record_hinted(sample(&company, "query"), false)
            .await
            .unwrap();
        let stats = writer.stats();
        assert_eq!((stats.inline_commits, stats.committed_records), (1, 2));
        writer.shutdown().await.unwrap();
        assert!(matches!(
            writer.record_hinted(sample(&company, "query"), true).await,
            Err(AuditError::Closed)
        ));
        assert_eq!(count_fresh(&path, &company), 2);
    }

    #[tokio::test]
    async fn records_lone_callers_committed_are_moved_when_the_gateway_goes_quiet() {
        let (_dir, path, _conn) = fresh_db();
        let writer = AuditWriter::start(&path, moving(1000, Duration::from_millis(50))).unwrap();
        let company = CompanyId::generate();
        for _ in 0..3 {
            writer
                .record_hinted(sample(&company, "query"), true)
                .await
                .unwrap();
        }
        wait_until_nothing_staged(&path, "inline records were never moved").await;
        assert_eq!(rows_in(&path, TABLE), 3);
        writer.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_lone_caller_leaves_a_due_move_to_the_writer() {
        let (_dir, path, _conn) = fresh_db();
        let writer = AuditWriter::start(&path, moving(1, NEVER)).unwrap();
        let company = CompanyId::generate();
        // Committed here: nothing staged yet.
        writer
            .record_hinted(sample(&company, "query"), true)
            .await
            .unwrap();
        assert_eq!(writer.stats().inline_commits, 1);
        // A move is due: the record goes to the writer, which commits it and then moves both.
        writer
            .record_hinted(sample(&company, "query"), true)
            .await
            .unwrap();
        assert_eq!(writer.stats().inline_commits, 1);
        writer.shutdown().await.unwrap();
        assert_eq!(log_and_staged(&path), (2, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_lone_and_batched_records_are_each_listed_once_while_moves_run() {
        let (_dir, path, _conn) = fresh_db();
        let writer =
            Arc::new(AuditWriter::start(&path, moving(7, Duration::from_millis(3))).unwrap());
        let company = CompanyId::generate();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // A reader pages through everything while records are committed and moved: the count
        // never goes back and no record is listed twice.
        let reader = {
            let (path, company, stop) = (path.clone(), company.clone(), stop.clone());
            std::thread::spawn(move || {
                let conn = Connection::open(&path).unwrap();
                let mut last = 0;
                while !stop.load(Ordering::Relaxed) {
                    let mut filter = AuditFilter::new(company.clone());
                    filter.limit = 50;
                    let mut seen = std::collections::HashSet::new();
                    loop {
                        let page = query(&conn, &filter).unwrap();
                        for item in page.items {
                            assert!(seen.insert(item.id), "a record listed twice");
                        }
                        match page.next_cursor {
                            Some(c) => filter.cursor = Some(c),
                            None => break,
                        }
                    }
                    let n = count(&conn, &company).unwrap();
                    assert!(n >= last, "the count went back from {last} to {n}");
                    last = n;
                }
            })
        };
        let tasks: Vec<_> = (0..4)
            .map(|t| {
                let (writer, company) = (writer.clone(), company.clone());
                tokio::spawn(async move {
                    for i in 0..150 {
                        let rec = sample(&company, "query");
                        writer.record_hinted(rec, (i + t) % 2 == 0).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        writer.shutdown().await.unwrap();
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();
        assert_eq!(log_and_staged(&path), (600, 0));
        assert_eq!(writer.stats().committed_records, 600);
    }

    // The test holds the writer's connection across awaits on purpose: callers only `try_lock`
    // it, and the writer thread blocks outside the runtime.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test]
    async fn a_lone_caller_leaves_its_record_to_the_writer_when_it_is_busy() {
        let (_dir, path, _conn) = fresh_db();
        let writer = Arc::new(AuditWriter::start(&path, AuditSettings::default()).unwrap());
        let company = CompanyId::generate();
        let shared = writer.committer.upgrade().unwrap();
        let held = shared.lock().unwrap();
        let task = {
            let (writer, rec) = (writer.clone(), sample(&company, "query"));
            tokio::spawn(async move { writer.record_hinted(rec, true).await })
        };
        // The record cannot be committed while the connection is held, by anyone.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!task.is_finished());
        drop(held);
        drop(shared);
        task.await.unwrap().unwrap();
        assert_eq!(writer.stats().inline_commits, 0);
        assert_eq!(count_fresh(&path, &company), 1);
        writer.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_lone_caller_never_waits_for_the_stores_write_lock_itself() {
        let (_dir, path, conn) = fresh_db();
        let writer = AuditWriter::start(&path, AuditSettings::default()).unwrap();
        let company = CompanyId::generate();
        // Held until the test says so, not for a time: the caller's attempt must meet it.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let holder = hold_write_lock(conn, move || {
            let _ = released.recv();
        });
        let mut fut = std::pin::pin!(writer.record_hinted(sample(&company, "query"), true));
        // The first poll tries the commit here, finds the lock taken and hands the record to
        // the writer thread instead of waiting (the store's busy timeout would be 5 s).
        let started = Instant::now();
        assert!(futures::poll!(&mut fut).is_pending());
        assert!(started.elapsed() < Duration::from_secs(2));
        release.send(()).unwrap();
        // Busy at once on the caller's thread; the writer thread waits and commits it.
        fut.await.unwrap();
        holder.join().unwrap();
        let stats = writer.stats();
        assert_eq!((stats.inline_commits, stats.failed_records), (0, 0));
        assert_eq!(count_fresh(&path, &company), 1);
        writer.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_lone_callers_duplicate_record_fails_to_its_caller() {
        let (_dir, path, _conn) = fresh_db();
        let writer = AuditWriter::start(&path, AuditSettings::default()).unwrap();
        let company = CompanyId::generate();
        let rec = sample(&company, "query");
        writer.record_hinted(rec.clone(), true).await.unwrap();
        let again = writer.record_hinted(rec, true).await;
        assert!(matches!(again, Err(AuditError::Write(_))), "{again:?}");
        assert_eq!(writer.stats().failed_records, 1);
        writer.shutdown().await.unwrap();
        assert_eq!(count_fresh(&path, &company), 1);
    }

    /// The records that reached the database file itself, not only its WAL: counted in a copy
    /// of the file alone.
    fn count_in_main_file(path: &Path, company: &CompanyId) -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy.db");
        std::fs::copy(path, &copy).unwrap();
        // Before the first checkpoint even the table is only in the WAL.
        count(&Connection::open(&copy).unwrap(), company).unwrap_or(0)
    }

    #[tokio::test]
    async fn the_wal_is_checkpointed_off_the_commit_path_and_once_more_at_shutdown() {
        let (_dir, path, _conn) = fresh_db();
        let writer = AuditWriter::start(&path, AuditSettings::default()).unwrap();
        let company = CompanyId::generate();
        for _ in 0..50 {
            writer.record(sample(&company, "query")).await.unwrap();
        }
        // The writer never checkpoints (its auto-checkpoint is off); the checkpointer thread does,
        // every CHECKPOINT_EVERY. Waiting is bounded generously: this is not a speed check.
        let deadline = Instant::now() + Duration::from_secs(30);
        while count_in_main_file(&path, &company) < 50 {
            assert!(Instant::now() < deadline, "the WAL was never checkpointed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for _ in 0..7 {
            writer.record(sample(&company, "query")).await.unwrap();
        }
        // Shutdown waits for the last checkpoint.
        writer.shutdown().await.unwrap();
        assert_eq!(count_in_main_file(&path, &company), 57);
    }
}
