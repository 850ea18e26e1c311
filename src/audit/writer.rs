//! The group-commit writer for query audit records: many records, one transaction.
//!
//! Queries hand their record to a bounded queue; one dedicated thread owns its own SQLite
//! connection, gathers what is queued into a batch and commits it in one transaction (one fsync
//! for the whole batch). By default a caller waits for its batch to commit before the query is
//! answered, so a crash never loses the record of an answered query.

use super::{AuditError, AuditRecord, TABLE, insert_on};
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            wait_for_commit: true,
            max_batch: 512,
            max_delay: Duration::ZERO,
            queue_capacity: 65_536,
            fsync: false,
        }
    }
}

/// How long a commit waits for the store's own write transactions (SQLite has one writer).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Transactions the writer committed.
    pub committed_batches: u64,
    /// Records in those transactions.
    pub committed_records: u64,
    /// Records that could not be written (each was reported to its caller, or to shutdown).
    pub failed_records: u64,
    /// WAL checkpoints that failed (logged; the WAL grows until one succeeds).
    pub failed_checkpoints: u64,
}

#[derive(Default)]
struct Counters {
    committed_batches: AtomicU64,
    committed_records: AtomicU64,
    failed_records: AtomicU64,
    failed_checkpoints: AtomicU64,
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
    counters: Arc<Counters>,
    /// Becomes true (or its sender is dropped) when the writer thread has finished.
    stopped: watch::Receiver<bool>,
}

impl AuditWriter {
    /// Opens its own connection to the store file and starts the writer thread.
    ///
    /// The audit table must exist (the store applies [`super::SCHEMA_SQL`] in its migrations);
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
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)?;
        let has_table: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
            [TABLE],
            |r| r.get(0),
        )?;
        if !has_table {
            return Err(AuditError::MissingSchema);
        }

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
        let checkpoints = Checkpointer::start(path, counters.clone())?;
        let batcher = Batcher {
            conn,
            max_batch: settings.max_batch.max(1),
            max_delay: settings.max_delay,
            counters: counters.clone(),
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

/// The size the WAL file is cut back to after a checkpoint, once a burst has grown it.
const WAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

/// A thread that checkpoints the store's WAL off the writer's commit path, every
/// [`CHECKPOINT_EVERY`], until its handle is dropped (then once more, waited for). `PASSIVE`
/// never waits for readers or writers; the WAL restarts from its beginning once fully copied, so
/// it stays about one interval of commits long.
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
    fn start(path: &Path, counters: Arc<Counters>) -> Result<Checkpointer, AuditError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sluice-checkpoint".into())
            .spawn(move || {
                let checkpoint = || {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "audit WAL checkpoint failed");
                        counters.failed_checkpoints.fetch_add(1, Ordering::Relaxed);
                    }
                };
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    checkpoint();
                }
                checkpoint();
            })
            .map_err(AuditError::Start)?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// The state of the writer thread.
struct Batcher {
    conn: Connection,
    max_batch: usize,
    max_delay: Duration,
    counters: Arc<Counters>,
    /// Ends with the writer.
    _checkpoints: Checkpointer,
}

impl Batcher {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut batch: Vec<Pending> = Vec::with_capacity(self.max_batch);
        let mut shutdowns: Vec<Reply> = Vec::new();
        // Every handle dropped without shutdown ends the loop the same way, after a last commit.
        while let Some(first) = rx.recv().await {
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
            self.commit(&mut batch);
            if !shutdowns.is_empty() {
                break;
            }
        }

        // Refuse new records, then commit those already queued.
        rx.close();
        while let Some(msg) = rx.recv().await {
            self.take(msg, &mut batch, &mut shutdowns);
            if batch.len() >= self.max_batch {
                self.commit(&mut batch);
            }
        }
        self.commit(&mut batch);

        let lost = self.counters.unreported_failures.swap(0, Ordering::Relaxed);
        // Close the connection and run the last checkpoint before telling anyone we are done.
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

    /// Commits the batch in one transaction and tells each waiter. If the batch fails, each
    /// record is retried alone so one bad record (a duplicate id, say) fails only its own caller.
    fn commit(&mut self, batch: &mut Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        let result = self.write(batch.iter().map(|p| &*p.rec));
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
                    let result = self.write(std::iter::once(&*p.rec));
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

    fn write<'a>(
        &mut self,
        recs: impl Iterator<Item = &'a AuditRecord>,
    ) -> Result<(), rusqlite::Error> {
        // IMMEDIATE takes the write lock up front, waiting (busy timeout) for the store's writes.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for rec in recs {
            insert_on(&tx, rec)?;
        }
        tx.commit()
    }

    fn committed(&self, records: usize) {
        self.counters
            .committed_batches
            .fetch_add(1, Ordering::Relaxed);
        self.counters
            .committed_records
            .fetch_add(records as u64, Ordering::Relaxed);
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

    #[tokio::test]
    async fn the_writer_waits_for_the_stores_own_write_transaction() {
        let (_dir, path, mut conn) = fresh_db();
        let writer = AuditWriter::start(&path, settings(true, 0)).unwrap();
        let company = CompanyId::generate();
        let holder = std::thread::spawn(move || {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .unwrap();
            std::thread::sleep(Duration::from_millis(300));
            tx.commit().unwrap();
        });
        // Let the store-side transaction take the write lock first.
        tokio::time::sleep(Duration::from_millis(50)).await;
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
