//! The writer thread's work: gathering queued records into batches, committing them to the
//! staging table, and moving staged records into the indexed log in bulk.

use super::checkpoint::{Checkpointer, wal_checkpoint};
use super::{BUSY_TIMEOUT, Counters, Msg, Pending, Reply, is_record_specific};
use crate::audit::{AuditError, AuditRecord, STAGING_TABLE, columns, stage};
use rusqlite::{Connection, TransactionBehavior};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;

/// Staged records that make the writer move them into the log. Each move writes the log's and
/// its indexes' right-edge pages once for all of them instead of once per commit; more per move
/// saves little more page writing, and a move holds up the records queued behind it.
pub const MOVE_AT_RECORDS: usize = 256;

/// How long the writer waits without a new record before moving what is staged, so the staging
/// table is empty whenever the gateway is quiet.
pub const MOVE_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

pub(super) const MOVE_SQL: &str = concat!(
    "INSERT INTO audit_log (",
    columns!(),
    ") SELECT ",
    columns!(),
    " FROM audit_staging ORDER BY seq"
);

/// The state of the writer thread.
pub(super) struct Batcher {
    /// The lasting strong reference (a lone caller upgrades its weak one only while it commits):
    /// dropping the batcher closes the connection.
    pub(super) committer: Arc<Mutex<Committer>>,
    pub(super) max_batch: usize,
    pub(super) max_delay: Duration,
    pub(super) counters: Arc<Counters>,
    pub(super) move_when_idle_for: Duration,
    /// Ends with the writer, after the connection.
    pub(super) _checkpoints: Checkpointer,
}

/// The writer's connection and what goes with it. The writer thread holds it while it commits a
/// batch or moves staged records; a lone caller may hold it to commit its own record.
pub(super) struct Committer {
    pub(super) conn: Connection,
    pub(super) counters: Arc<Counters>,
    pub(super) move_at: usize,
    /// The staged count at which the next move runs: `move_at`, pushed further after a failed
    /// move so a failing database is not retried at every commit.
    pub(super) next_move_at: usize,
    /// Set when the writer begins its last drain: no caller commits after that.
    pub(super) closed: bool,
    /// The connection's busy timeout now (a lone caller's commit uses zero).
    pub(super) busy: Duration,
}

pub(super) fn staged(counters: &Counters) -> usize {
    usize::try_from(counters.staged_records.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
}

impl Batcher {
    pub(super) fn lock(&self) -> MutexGuard<'_, Committer> {
        self.committer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves what is staged, without taking the connection when nothing is.
    pub(super) fn move_if_staged(&self) {
        if staged(&self.counters) > 0 {
            self.lock().move_staged();
        }
    }

    pub(super) async fn run(self, mut rx: mpsc::Receiver<Msg>) {
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

    pub(super) fn take(&self, msg: Msg, batch: &mut Vec<Pending>, shutdowns: &mut Vec<Reply>) {
        match msg {
            Msg::Record { rec, done } => batch.push(Pending { rec, done }),
            Msg::Shutdown { done } => shutdowns.push(done),
        }
    }
}

impl Committer {
    /// Commits the batch in one transaction and tells each waiter. If the batch fails, each
    /// record is retried alone so one bad record (a duplicate id, say) fails only its own caller.
    pub(super) fn commit(&mut self, batch: &mut Vec<Pending>) {
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
    pub(super) fn restart_wal_if_due(&mut self) {
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
    pub(super) fn write<'a>(
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
    pub(super) fn wait_for_lock(&mut self, busy: Duration) -> Result<(), rusqlite::Error> {
        if self.busy != busy {
            self.conn.busy_timeout(busy)?;
            self.busy = busy;
        }
        Ok(())
    }

    pub(super) fn committed(&self, records: usize) {
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
    pub(super) fn move_staged(&mut self) {
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

    pub(super) fn failed(&self, p: Pending, e: Arc<rusqlite::Error>) {
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
