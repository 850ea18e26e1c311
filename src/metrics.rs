//! Prometheus metrics: queries by outcome and datasource kind, a latency histogram, pool health
//! and failures per datasource, audit writer counters, and SQLite statements abandoned at their
//! deadline. Pool, audit and SQLite figures are read at scrape time.

use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::TypedMetric;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::audit::AuditStats;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    queries: Family<Labels, Counter>,
    datasource_errors: Family<Labels, Counter>,
    latency: Family<Labels, Histogram>,
    pool_size: Family<Labels, Gauge>,
    pool_in_use: Family<Labels, Gauge>,
    pool_waiting: Family<Labels, Gauge>,
    pools_open: Gauge,
    /// The audit writer's running totals as of the scrape being rendered.
    audit_totals: Arc<AuditTotals>,
    audit_staged: Gauge,
    audit_queue: Gauge,
    /// One scrape at a time: each sets the figures it then encodes.
    rendering: Mutex<()>,
}

/// The audit writer's running totals, exposed as counters (`_total`): they only grow while the
/// process lives, so `rate()` applies and a restart reads as a counter reset.
#[derive(Debug, Default)]
struct AuditTotals(Mutex<AuditStats>);

impl AuditTotals {
    fn lock(&self) -> MutexGuard<'_, AuditStats> {
        // Plain numbers: a panic elsewhere cannot leave them half-written.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Collector for AuditTotals {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = *self.lock();
        for (name, help, value) in [
            (
                "audit_committed_batches",
                "Audit transactions committed",
                s.committed_batches,
            ),
            (
                "audit_committed_records",
                "Audit records committed",
                s.committed_records,
            ),
            (
                "audit_failed_records",
                "Audit records that could not be written",
                s.failed_records,
            ),
            (
                "audit_failed_checkpoints",
                "Checkpoints of the store's WAL that failed (the WAL then grows until one succeeds)",
                s.failed_checkpoints,
            ),
            (
                "audit_failed_moves",
                "Moves of staged audit records into the log that failed (retried later)",
                s.failed_moves,
            ),
            (
                "audit_inline_commits",
                "Audit records committed by their own request, alone in flight, not by the writer \
                 thread",
                s.inline_commits,
            ),
            (
                "audit_wal_restarts",
                "Times the store's WAL passed its limit and commits waited for it to start over",
                s.wal_restarts,
            ),
        ] {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, ConstCounter::<u64>::TYPE)?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

/// SQLite statements abandoned because they did not stop when interrupted (at their deadline or
/// when their consumer went away), read from the driver at scrape time.
#[derive(Debug)]
struct SqliteAbandoned;

impl Collector for SqliteAbandoned {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let a = crate::datasource::sqlite::abandoned();
        let counter = ConstCounter::new(a.total);
        let metric = encoder.encode_descriptor(
            "sqlite_abandoned_statements",
            "SQLite statements abandoned because they did not stop when interrupted (deadline \
             or consumer gone); each kept its pool slot until its thread ended",
            None,
            ConstCounter::<u64>::TYPE,
        )?;
        counter.encode(metric)?;
        let running = ConstGauge::new(i64::try_from(a.running).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "sqlite_abandoned_running",
            "Abandoned SQLite statements whose thread still runs, each holding a pool slot",
            None,
            ConstGauge::<i64>::TYPE,
        )?;
        running.encode(metric)
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sluice");
        let queries = Family::<Labels, Counter>::default();
        let datasource_errors = Family::<Labels, Counter>::default();
        let latency = Family::<Labels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let pool_size = Family::<Labels, Gauge>::default();
        let pool_in_use = Family::<Labels, Gauge>::default();
        let pool_waiting = Family::<Labels, Gauge>::default();
        let pools_open = Gauge::default();
        let audit_totals = Arc::new(AuditTotals::default());
        let audit_staged = Gauge::default();
        let audit_queue = Gauge::default();
        registry.register(
            "queries",
            "Queries answered, by outcome code and datasource kind",
            queries.clone(),
        );
        registry.register(
            "datasource_errors",
            "Statements a datasource failed (unreachable, pool wait, timeout, database error), \
             by datasource id and error code",
            datasource_errors.clone(),
        );
        registry.register(
            "query_duration_seconds",
            "Time from request to the end of the answer, by datasource kind",
            latency.clone(),
        );
        registry.register(
            "pool_size",
            "Open connections per datasource",
            pool_size.clone(),
        );
        registry.register(
            "pool_in_use",
            "Connections checked out per datasource",
            pool_in_use.clone(),
        );
        registry.register(
            "pool_waiting",
            "Requests waiting for a connection per datasource",
            pool_waiting.clone(),
        );
        registry.register("pools_open", "Datasource pools open", pools_open.clone());
        registry.register_collector(Box::new(audit_totals.clone()));
        registry.register_collector(Box::new(SqliteAbandoned));
        registry.register(
            "audit_staged_records",
            "Audit records committed to the staging table, not yet moved into the log",
            audit_staged.clone(),
        );
        registry.register(
            "audit_queue",
            "Audit records waiting to be written",
            audit_queue.clone(),
        );
        Metrics {
            registry,
            queries,
            datasource_errors,
            latency,
            pool_size,
            pool_in_use,
            pool_waiting,
            pools_open,
            audit_totals,
            audit_staged,
            audit_queue,
            rendering: Mutex::new(()),
        }
    }

    /// Counts one query: `outcome` is `ok` or the error code; `kind` the datasource kind or `-`.
    pub fn query(&self, outcome: &str, kind: &str, seconds: f64) {
        self.queries
            .get_or_create(&vec![
                ("outcome", outcome.to_owned()),
                ("kind", kind.to_owned()),
            ])
            .inc();
        self.latency
            .get_or_create(&vec![("kind", kind.to_owned())])
            .observe(seconds);
    }

    /// Counts one failure of a datasource (`code` is the API error code), so an operator sees
    /// which datasource is going bad, not only which kind.
    pub fn datasource_error(&self, datasource: &crate::model::DatasourceId, code: &str) {
        self.datasource_errors
            .get_or_create(&vec![
                ("datasource", datasource.to_string()),
                ("code", code.to_owned()),
            ])
            .inc();
    }

    /// The text exposition, with pool and audit figures read now.
    pub fn render(
        &self,
        pools: &[(crate::model::DatasourceId, crate::datasource::PoolStats)],
        audit: &AuditStats,
        audit_queue: usize,
    ) -> String {
        let _one_at_a_time = self.rendering.lock().unwrap_or_else(|e| e.into_inner());
        self.pool_size.clear();
        self.pool_in_use.clear();
        self.pool_waiting.clear();
        for (id, s) in pools {
            let l = vec![("datasource", id.to_string())];
            self.pool_size.get_or_create(&l).set(s.size as i64);
            self.pool_in_use.get_or_create(&l).set(s.in_use as i64);
            self.pool_waiting.get_or_create(&l).set(s.waiting as i64);
        }
        self.pools_open.set(pools.len() as i64);
        *self.audit_totals.lock() = *audit;
        self.audit_staged.set(audit.staged_records as i64);
        self.audit_queue.set(audit_queue as i64);
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        #[cfg(feature = "count-allocs")]
        alloc_counts::render(&mut out);
        out
    }
}

/// Bench builds only (`--features count-allocs`): what the binary's counting global allocator
/// has handed out since the start, rendered as two counters at the end of `/metrics`.
#[cfg(feature = "count-allocs")]
pub mod alloc_counts {
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering::Relaxed;

    /// Allocations (a reallocation counts as one).
    pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
    /// Bytes asked for by those allocations.
    pub static BYTES: AtomicU64 = AtomicU64::new(0);

    pub(super) fn render(out: &mut String) {
        use std::fmt::Write;
        let eof = out.ends_with("# EOF\n");
        if eof {
            out.truncate(out.len() - "# EOF\n".len());
        }
        let _ = write!(
            out,
            "# TYPE sluice_bench_allocations counter\nsluice_bench_allocations_total {}\n\
             # TYPE sluice_bench_allocated_bytes counter\nsluice_bench_allocated_bytes_total {}\n",
            ALLOCATIONS.load(Relaxed),
            BYTES.load(Relaxed)
        );
        if eof {
            out.push_str("# EOF\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn assert_lines(out: &str, lines: &[&str]) {
        for line in lines {
            assert!(
                out.lines().any(|l| l == *line),
                "{line} missing from:\n{out}"
            );
        }
    }

    /// The names and types docs/configuration.md lists.
    #[test]
    fn query_and_pool_metrics_are_exposed_under_their_names() {
        let m = Metrics::new();
        let ds = crate::model::DatasourceId::from("ds_1");
        m.query("ok", "postgres", 0.002);
        m.datasource_error(&ds, "query_timeout");
        let pool = crate::datasource::PoolStats {
            size: 3,
            in_use: 2,
            waiting: 1,
        };
        let out = m.render(&[(ds, pool)], &AuditStats::default(), 0);
        assert_lines(
            &out,
            &[
                "# TYPE sluice_queries counter",
                "sluice_queries_total{outcome=\"ok\",kind=\"postgres\"} 1",
                "# TYPE sluice_query_duration_seconds histogram",
                "sluice_query_duration_seconds_count{kind=\"postgres\"} 1",
                "sluice_datasource_errors_total{datasource=\"ds_1\",code=\"query_timeout\"} 1",
                "sluice_pools_open 1",
                "sluice_pool_size{datasource=\"ds_1\"} 3",
                "sluice_pool_in_use{datasource=\"ds_1\"} 2",
                "sluice_pool_waiting{datasource=\"ds_1\"} 1",
                "# TYPE sluice_sqlite_abandoned_statements counter",
                "# TYPE sluice_sqlite_abandoned_running gauge",
            ],
        );
        // Other tests of this process may abandon statements: only the lines' shape is fixed.
        for prefix in [
            "sluice_sqlite_abandoned_statements_total ",
            "sluice_sqlite_abandoned_running ",
        ] {
            assert!(
                out.lines().any(|l| l
                    .strip_prefix(prefix)
                    .is_some_and(|n| n.parse::<u64>().is_ok())),
                "{prefix} missing from:\n{out}"
            );
        }
    }

    #[test]
    fn the_audit_writer_counters_are_exposed_under_their_names() {
        let m = Metrics::new();
        let stats = AuditStats {
            committed_batches: 4,
            committed_records: 9,
            failed_records: 1,
            failed_checkpoints: 2,
            staged_records: 7,
            failed_moves: 3,
            inline_commits: 6,
            wal_restarts: 8,
        };
        let out = m.render(&[], &stats, 5);
        assert_lines(
            &out,
            &[
                "# TYPE sluice_audit_committed_batches counter",
                "sluice_audit_committed_batches_total 4",
                "sluice_audit_committed_records_total 9",
                "sluice_audit_failed_records_total 1",
                "sluice_audit_failed_checkpoints_total 2",
                "sluice_audit_failed_moves_total 3",
                "# TYPE sluice_audit_inline_commits counter",
                "sluice_audit_inline_commits_total 6",
                "sluice_audit_wal_restarts_total 8",
                "# TYPE sluice_audit_staged_records gauge",
                "sluice_audit_staged_records 7",
                "# TYPE sluice_audit_queue gauge",
                "sluice_audit_queue 5",
            ],
        );
        // Each scrape shows the totals passed to it, and each metric once.
        let later = AuditStats {
            committed_records: 12,
            ..stats
        };
        let out = m.render(&[], &later, 0);
        let records: Vec<_> = out
            .lines()
            .filter(|l| l.starts_with("sluice_audit_committed_records"))
            .collect();
        assert_eq!(
            records,
            ["sluice_audit_committed_records_total 12"],
            "{out}"
        );
    }
}
