//! The writer thread's work: gathering queued records into batches, committing each through
//! the sink in one transaction, telling the waiters, and running retention between batches.

use super::retention::Retention;
use super::{BUSY_TIMEOUT, Checkpointer, Counters, Msg, Pending, Reply};
use crate::audit::{AuditError, AuditRecord, WriteError};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

/// Where the writer commits records: the store's SQLite file ([`super::SqliteSink`]) or the
/// PostgreSQL store database ([`super::PgSink`]). Called only outside any tokio runtime (the
/// writer thread, between its batches) or, for a lone caller's commit, without waiting.
pub(super) trait Sink: Send {
    /// Commits the records in one transaction, waiting at most `busy` for a lock the store
    /// holds.
    fn write(&mut self, recs: &[&AuditRecord], busy: Duration) -> Result<(), WriteError>;
    /// Before each batch the writer commits (SQLite: restarts the WAL when it is due).
    fn before_commit(&mut self) {}
    /// `records` were committed in one transaction (SQLite: they are staged).
    fn committed(&mut self, _records: usize) {}
    /// After each batch the writer commits (SQLite: moves staged records when enough are).
    fn after_commit(&mut self) {}
    /// When no record came for a while, at start and at the end (SQLite: moves what is staged).
    fn idle(&mut self) {}
    /// Whether a lone caller may commit its own record now (SQLite: unless a move is due).
    fn lone_commit_allowed(&self) -> bool {
        false
    }
    /// The companies that have records (retention deletes company by company, through the
    /// indexes that all lead with the company).
    fn companies(&mut self) -> Result<Vec<String>, WriteError>;
    /// Deletes at most `max` records of `company` older than `cutoff_us` in one short
    /// transaction; returns how many it deleted.
    fn expire(&mut self, company: &str, cutoff_us: i64, max: usize) -> Result<usize, WriteError>;
}

/// The state of the writer thread.
pub(super) struct Batcher {
    /// The lasting strong reference (a lone caller upgrades its weak one only while it commits):
    /// dropping the batcher closes the connection.
    pub(super) committer: Arc<Mutex<Committer>>,
    pub(super) max_batch: usize,
    pub(super) max_delay: Duration,
    pub(super) counters: Arc<Counters>,
    pub(super) move_when_idle_for: Duration,
    pub(super) retention: Retention,
    /// Ends with the writer, after the connection (SQLite only).
    pub(super) _checkpoints: Option<Checkpointer>,
}

/// The writer's sink and what goes with it. The writer thread holds it while it commits a
/// batch, moves staged records or deletes expired ones; a lone caller may hold it to commit its
/// own record.
pub(super) struct Committer {
    pub(super) sink: Box<dyn Sink>,
    pub(super) counters: Arc<Counters>,
    /// Set when the writer begins its last drain: no caller commits after that.
    pub(super) closed: bool,
}

impl Batcher {
    pub(super) fn lock(&self) -> MutexGuard<'_, Committer> {
        self.committer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer thread's loop. Waiting for records runs on `rt` (its timers); the sink is
    /// called outside it.
    pub(super) fn run(mut self, rt: &Runtime, mut rx: mpsc::Receiver<Msg>) {
        let mut batch: Vec<Pending> = Vec::with_capacity(self.max_batch);
        let mut shutdowns: Vec<Reply> = Vec::new();
        self.lock().sink.idle();
        // Every handle dropped without shutdown ends the loop the same way, after a last commit.
        loop {
            // A retention run deletes one small batch per turn, between the batches of records,
            // so queries never wait for more than one delete.
            let expiring = self.retention.step(&self.committer);
            let first = if expiring {
                match rx.try_recv() {
                    Ok(msg) => Some(msg),
                    Err(TryRecvError::Empty) => continue,
                    Err(TryRecvError::Disconnected) => None,
                }
            } else {
                // Always with the idle timeout: callers committing their own records stage them
                // without waking this thread, so it looks again after every idle period.
                let wait = self.move_when_idle_for.min(self.retention.until_due());
                match rt.block_on(async { tokio::time::timeout(wait, rx.recv()).await }) {
                    Ok(msg) => msg,
                    Err(_) => {
                        self.lock().sink.idle();
                        continue;
                    }
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
                    match rt.block_on(async { tokio::time::timeout_at(deadline, rx.recv()).await })
                    {
                        Ok(Some(msg)) => self.take(msg, &mut batch, &mut shutdowns),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            let mut c = self.lock();
            c.commit(&mut batch);
            c.sink.after_commit();
            drop(c);
            if !shutdowns.is_empty() {
                break;
            }
        }

        // Refuse new records, then commit those already queued.
        self.lock().closed = true;
        rx.close();
        while let Some(msg) = rt.block_on(rx.recv()) {
            self.take(msg, &mut batch, &mut shutdowns);
            if batch.len() >= self.max_batch {
                self.lock().commit(&mut batch);
            }
        }
        let mut c = self.lock();
        c.commit(&mut batch);
        c.sink.idle();
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
        self.sink.before_commit();
        let recs: Vec<&AuditRecord> = batch.iter().map(|p| &*p.rec).collect();
        let result = self.sink.write(&recs, BUSY_TIMEOUT);
        drop(recs);
        match result {
            Ok(()) => {
                self.committed(batch.len());
                for p in batch.drain(..) {
                    if let Some(done) = p.done {
                        let _ = done.send(Ok(()));
                    }
                }
            }
            Err(e) if batch.len() > 1 && e.is_record_specific() => {
                tracing::warn!(error = %e, records = batch.len(), "audit batch failed; retrying records one by one");
                for p in batch.drain(..) {
                    let result = self.sink.write(&[&*p.rec], BUSY_TIMEOUT);
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
                // The database itself failed (busy past the timeout, disk full, I/O, a lost
                // connection): retrying record by record would only repeat the wait per record,
                // so all share the error.
                tracing::warn!(error = %e, records = batch.len(), "audit batch failed");
                let e = Arc::new(e);
                for p in batch.drain(..) {
                    self.failed(p, e.clone());
                }
            }
        }
    }

    pub(super) fn committed(&mut self, records: usize) {
        self.counters
            .committed_batches
            .fetch_add(1, Ordering::Relaxed);
        self.counters
            .committed_records
            .fetch_add(records as u64, Ordering::Relaxed);
        self.sink.committed(records);
    }

    pub(super) fn failed(&self, p: Pending, e: Arc<WriteError>) {
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
