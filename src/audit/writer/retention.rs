//! Retention: deleting records older than `retention_days`, at the writer's start and every
//! [`RETENTION_EVERY`], a small batch at a time between the writer's commits.

use super::Committer;
use crate::audit::{Dialect, STAGING_TABLE, TABLE};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often the writer deletes expired records.
pub const RETENTION_EVERY: Duration = Duration::from_secs(600);

/// Records deleted in one statement (one transaction): short enough that neither the writer's
/// commits nor the store's own transactions wait long for it.
pub(super) const EXPIRE_BATCH: usize = 1000;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The companies with records in `table`, read from the index that leads with the company
/// (one index probe per company, not a scan of the table; the same SQL on both databases).
pub(super) fn companies_sql(table: &str) -> String {
    format!(
        "WITH RECURSIVE c(id) AS ( \
           SELECT min(company_id) FROM {table} \
           UNION ALL \
           SELECT (SELECT min(company_id) FROM {table} WHERE company_id > c.id) \
           FROM c WHERE c.id IS NOT NULL) \
         SELECT id FROM c WHERE id IS NOT NULL"
    )
}

/// Deletes at most `?3` records of company `?1` older than `?2` (microseconds) from `table`,
/// found through its `(company_id, at_us, id)` index on the log (the staging table is small).
pub(super) fn expire_sql(dialect: Dialect, table: &str) -> String {
    let key = if table == STAGING_TABLE { "seq" } else { "id" };
    let (company, cutoff, max) = (
        dialect.placeholder(1),
        dialect.placeholder(2),
        dialect.placeholder(3),
    );
    debug_assert!(table == TABLE || table == STAGING_TABLE);
    format!(
        "DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} \
         WHERE company_id = {company} AND at_us < {cutoff} LIMIT {max})"
    )
}

/// When retention runs next, and the run under way.
pub(super) struct Retention {
    /// Days kept; `None`: retention is off.
    days: Option<u32>,
    every: Duration,
    next: Instant,
    run: Option<Run>,
}

/// A run: the cutoff it deletes before, and the companies it has yet to go through.
struct Run {
    cutoff_us: i64,
    companies: Vec<String>,
}

impl Retention {
    /// Off without `days`; otherwise the first run is due at once. Zero days counts as one: it
    /// would delete every record as soon as it was written.
    pub(super) fn new(days: Option<u32>, every: Duration) -> Retention {
        Retention {
            days: days.map(|d| d.max(1)),
            every: every.max(Duration::from_millis(1)),
            next: Instant::now(),
            run: None,
        }
    }

    /// How long until the next run is due (zero while one is under way).
    pub(super) fn until_due(&self) -> Duration {
        match (self.days, &self.run) {
            (None, _) => Duration::MAX,
            (Some(_), Some(_)) => Duration::ZERO,
            (Some(_), None) => self.next.saturating_duration_since(Instant::now()),
        }
    }

    /// Starts a run if one is due, then deletes one batch of it; returns whether the run goes
    /// on. A failure ends the run (logged); the next one is due [`RETENTION_EVERY`] later.
    pub(super) fn step(&mut self, committer: &Mutex<Committer>) -> bool {
        let Some(days) = self.days else { return false };
        if self.run.is_none() && Instant::now() < self.next {
            return false;
        }
        let mut c = committer.lock().unwrap_or_else(PoisonError::into_inner);
        if self.run.is_none() {
            let now_us = chrono::Utc::now().timestamp_micros();
            let cutoff_us = now_us.saturating_sub(i64::from(days).saturating_mul(MICROS_PER_DAY));
            match c.sink.companies() {
                Ok(companies) => {
                    self.run = Some(Run {
                        cutoff_us,
                        companies,
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "audit retention: listing companies failed");
                    self.finish();
                    return false;
                }
            }
        }
        let Some(run) = self.run.as_mut() else {
            return false;
        };
        let Some(company) = run.companies.last() else {
            self.finish();
            return false;
        };
        match c.sink.expire(company, run.cutoff_us, EXPIRE_BATCH) {
            Ok(deleted) => {
                c.counters
                    .expired_records
                    .fetch_add(deleted as u64, Ordering::Relaxed);
                if deleted < EXPIRE_BATCH {
                    run.companies.pop();
                }
                if run.companies.is_empty() {
                    self.finish();
                    return false;
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, company = %company, "audit retention: deleting expired records failed");
                self.finish();
                false
            }
        }
    }

    fn finish(&mut self) {
        self.run = None;
        self.next = Instant::now() + self.every;
    }
}
