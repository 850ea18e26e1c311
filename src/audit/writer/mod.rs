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
//!
//! The thread commits through a sink ([`Sink`]): the store's SQLite file ([`sqlite`], all of the
//! above) or the shared PostgreSQL store database ([`pg`]: a batch is one multi-row
//! INSERT, straight into the log; a lost connection fails that batch and the next batch
//! reconnects). The same thread deletes records past `retention_days` ([`retention`]).

use super::{AuditError, AuditRecord};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
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
    ///
    /// Without meaning on PostgreSQL: a commit there is as durable as the server's own
    /// `synchronous_commit` (and replication) settings make it, which the operator sets on the
    /// server or the store database's role.
    pub fsync: bool,
    /// Records older than this many days are deleted, at the writer's start and every
    /// [`RETENTION_EVERY`], at most [`retention::EXPIRE_BATCH`] per statement between the
    /// writer's batches (default `None`: kept forever; 0 counts as 1).
    pub retention_days: Option<u32>,
    /// How often retention runs (default [`RETENTION_EVERY`]; not a configuration field).
    pub retention_every: Duration,
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
            retention_days: None,
            retention_every: RETENTION_EVERY,
            move_at_records: MOVE_AT_RECORDS,
            move_when_idle_for: MOVE_WHEN_IDLE_FOR,
            wal_limit_bytes: WAL_SIZE_LIMIT_BYTES,
        }
    }
}

/// How long a commit waits for the store's own write transactions (SQLite has one writer).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes a new connection to the PostgreSQL store database (TLS and all); the PostgreSQL writer
/// calls it at start and again after it lost its connection.
pub type AuditConnect = Box<dyn FnMut() -> Result<postgres::Client, String> + Send>;

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
    expired_records: AtomicU64,
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
        let counters = Arc::new(Counters::default());
        let sink = SqliteSink::open(path, &settings, counters.clone())?;
        let checkpoints = Checkpointer::start(path, counters.clone(), settings.wal_limit_bytes)?;
        // Callers may commit their own record (waiting for commits, without an fsync per commit).
        let commit_here = settings.wait_for_commit && !settings.fsync;
        Self::launch(
            Box::new(move || Ok(Box::new(sink) as Box<dyn Sink>)),
            Some(checkpoints),
            commit_here,
            settings,
            counters,
        )
    }

    /// Starts the writer thread on the PostgreSQL store database, connecting through `connect`
    /// (at start, and again whenever the connection was lost).
    ///
    /// Fails if the first connection cannot be made or the audit table is missing (the store
    /// applies [`super::PG_SCHEMA_SQL`] in its migrations). Later, while the database cannot be
    /// reached, each batch fails to its waiters (503 to the queries waiting for it) and the next
    /// batch tries to connect again: the writer recovers by itself. `fsync` has no meaning here
    /// (see [`AuditSettings::fsync`]); `record_hinted` always goes through the writer thread.
    ///
    /// The PostgreSQL client blocks on its own runtime, so the connection is made and used only
    /// on the writer thread; this call waits for the first connection.
    pub fn start_postgres(
        connect: AuditConnect,
        settings: AuditSettings,
    ) -> Result<AuditWriter, AuditError> {
        Self::launch(
            Box::new(move || Ok(Box::new(PgSink::open(connect)?) as Box<dyn Sink>)),
            None,
            false,
            settings,
            Arc::new(Counters::default()),
        )
    }

    /// Starts the writer thread, which opens its sink with `open` and then runs the batcher;
    /// returns once the sink is open (or could not be).
    fn launch(
        open: Box<dyn FnOnce() -> Result<Box<dyn Sink>, AuditError> + Send>,
        checkpoints: Option<Checkpointer>,
        commit_here: bool,
        settings: AuditSettings,
        counters: Arc<Counters>,
    ) -> Result<AuditWriter, AuditError> {
        // Zero would make the channel constructor panic and a batch never fill.
        let (tx, rx) = mpsc::channel(settings.queue_capacity.max(1));
        let (stopped_tx, stopped) = watch::channel(false);
        // The writer runs its own small runtime so it needs no caller runtime; the runtime only
        // provides the batching timer, and the sink is called outside it (the PostgreSQL client
        // runs a runtime of its own, which cannot be started inside another).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(AuditError::Start)?;
        let (opened_tx, opened) = std::sync::mpsc::sync_channel(1);
        let thread_counters = counters.clone();
        std::thread::Builder::new()
            .name("sluice-audit".into())
            .spawn(move || {
                let sink = match open() {
                    Ok(sink) => sink,
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                let committer = Arc::new(Mutex::new(Committer {
                    sink,
                    counters: thread_counters.clone(),
                    closed: false,
                }));
                if opened_tx.send(Ok(Arc::downgrade(&committer))).is_err() {
                    return;
                }
                let batcher = Batcher {
                    committer,
                    max_batch: settings.max_batch.max(1),
                    max_delay: settings.max_delay,
                    counters: thread_counters,
                    move_when_idle_for: settings.move_when_idle_for,
                    retention: Retention::new(settings.retention_days, settings.retention_every),
                    _checkpoints: checkpoints,
                };
                batcher.run(&runtime, rx);
                let _ = stopped_tx.send(true);
            })
            .map_err(AuditError::Start)?;
        let committer = opened.recv().map_err(|_| AuditError::Closed)??;

        Ok(AuditWriter {
            tx,
            wait_for_commit: settings.wait_for_commit,
            commit_here,
            committer,
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
        if c.closed || queued || !c.sink.lone_commit_allowed() {
            return Err(rec);
        }
        // Never wait on a runtime thread for the store's write lock: the writer thread can.
        match c.sink.write(&[&*rec], Duration::ZERO) {
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

    /// Records deleted so far for being older than `retention_days` (a counter for metrics).
    pub fn expired_records(&self) -> u64 {
        self.counters.expired_records.load(Ordering::Relaxed)
    }

    /// Records queued and not yet taken into a batch (a gauge for metrics).
    pub fn queue_len(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

mod batch;
mod checkpoint;
mod pg;
mod retention;
mod sqlite;

use batch::{Batcher, Committer, Sink};
use checkpoint::Checkpointer;
pub use checkpoint::WAL_SIZE_LIMIT_BYTES;
use pg::PgSink;
pub use retention::RETENTION_EVERY;
use retention::Retention;
use sqlite::SqliteSink;
pub use sqlite::{MOVE_AT_RECORDS, MOVE_WHEN_IDLE_FOR};

#[cfg(test)]
mod tests;
