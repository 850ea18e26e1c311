//! The SQLite sink: batches committed to the staging table of the store's file, moved into the
//! indexed log in bulk, the WAL restarted by the writer when the checkpointer finds it too long.

use super::checkpoint::wal_checkpoint;
use super::retention::{companies_sql, expire_sql};
use super::{AuditSettings, BUSY_TIMEOUT, Counters, Sink};
use crate::audit::{
    AuditError, AuditRecord, Dialect, STAGING_TABLE, TABLE, WriteError, columns, stage,
};
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

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

/// The writer's own connection to the store file.
pub(super) struct SqliteSink {
    pub(super) conn: Connection,
    pub(super) counters: Arc<Counters>,
    pub(super) move_at: usize,
    /// The staged count at which the next move runs: `move_at`, pushed further after a failed
    /// move so a failing database is not retried at every commit.
    pub(super) next_move_at: usize,
    /// The connection's busy timeout now (a lone caller's commit uses zero).
    pub(super) busy: Duration,
}

pub(super) fn staged(counters: &Counters) -> usize {
    usize::try_from(counters.staged_records.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
}

impl SqliteSink {
    /// Opens the writer's connection to the store file and checks the audit tables are there.
    pub(super) fn open(
        path: &Path,
        settings: &AuditSettings,
        counters: Arc<Counters>,
    ) -> Result<SqliteSink, AuditError> {
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
        counters
            .staged_records
            .store(u64::try_from(staged).unwrap_or(0), Ordering::Relaxed);
        let move_at = settings.move_at_records.max(1);
        Ok(SqliteSink {
            conn,
            counters,
            move_at,
            next_move_at: move_at,
            busy: BUSY_TIMEOUT,
        })
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

    /// Sets how long the next transaction waits for the write lock, if that changed.
    pub(super) fn wait_for_lock(&mut self, busy: Duration) -> Result<(), rusqlite::Error> {
        if self.busy != busy {
            self.conn.busy_timeout(busy)?;
            self.busy = busy;
        }
        Ok(())
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
}

impl Sink for SqliteSink {
    /// Stages the records in one transaction, waiting at most `busy` for the write lock.
    fn write(&mut self, recs: &[&AuditRecord], busy: Duration) -> Result<(), WriteError> {
        self.wait_for_lock(busy)?;
        // IMMEDIATE takes the write lock up front, waiting (busy timeout) for the store's writes.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for rec in recs {
            stage(&tx, rec)?;
        }
        Ok(tx.commit()?)
    }

    fn before_commit(&mut self) {
        self.restart_wal_if_due();
    }

    fn committed(&mut self, records: usize) {
        self.counters
            .staged_records
            .fetch_add(records as u64, Ordering::Relaxed);
    }

    fn after_commit(&mut self) {
        if staged(&self.counters) >= self.next_move_at {
            self.move_staged();
        }
    }

    fn idle(&mut self) {
        self.move_staged();
    }

    fn lone_commit_allowed(&self) -> bool {
        staged(&self.counters) < self.next_move_at
    }

    fn companies(&mut self) -> Result<Vec<String>, WriteError> {
        let sql = format!(
            "{} UNION SELECT DISTINCT company_id FROM {STAGING_TABLE}",
            companies_sql(TABLE)
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let companies = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(companies)
    }

    /// From the log first, then from the staging table with what is left of `max`.
    fn expire(&mut self, company: &str, cutoff_us: i64, max: usize) -> Result<usize, WriteError> {
        self.wait_for_lock(BUSY_TIMEOUT)?;
        let mut deleted = 0;
        for table in [TABLE, STAGING_TABLE] {
            let left = max - deleted;
            if left == 0 {
                break;
            }
            let mut stmt = self
                .conn
                .prepare_cached(&expire_sql(Dialect::Sqlite, table))?;
            let n = stmt.execute(rusqlite::params![
                company,
                cutoff_us,
                i64::try_from(left).unwrap_or(i64::MAX)
            ])?;
            deleted += n;
        }
        if deleted > 0 {
            // Staged records that expired are no longer staged; the count only decides when
            // to move, so a recount is enough.
            let staged: i64 =
                self.conn
                    .query_row(&format!("SELECT count(*) FROM {STAGING_TABLE}"), [], |r| {
                        r.get(0)
                    })?;
            self.counters
                .staged_records
                .store(u64::try_from(staged).unwrap_or(0), Ordering::Relaxed);
        }
        Ok(deleted)
    }
}
