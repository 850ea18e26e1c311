//! Prometheus metrics: queries by outcome and datasource kind, a latency histogram, pool health
//! and failures per datasource, and audit writer counters. Pool and audit figures are read at
//! scrape time.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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
    audit_batches: Gauge,
    audit_records: Gauge,
    audit_failed: Gauge,
    audit_failed_checkpoints: Gauge,
    audit_staged: Gauge,
    audit_failed_moves: Gauge,
    audit_inline_commits: Gauge,
    audit_queue: Gauge,
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
        let audit_batches = Gauge::default();
        let audit_records = Gauge::default();
        let audit_failed = Gauge::default();
        let audit_failed_checkpoints = Gauge::default();
        let audit_staged = Gauge::default();
        let audit_failed_moves = Gauge::default();
        let audit_inline_commits = Gauge::default();
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
        registry.register(
            "audit_committed_batches",
            "Audit transactions committed",
            audit_batches.clone(),
        );
        registry.register(
            "audit_committed_records",
            "Audit records committed",
            audit_records.clone(),
        );
        registry.register(
            "audit_failed_records",
            "Audit records that could not be written",
            audit_failed.clone(),
        );
        registry.register(
            "audit_failed_checkpoints",
            "Checkpoints of the store's WAL that failed (the WAL then grows until one succeeds)",
            audit_failed_checkpoints.clone(),
        );
        registry.register(
            "audit_staged_records",
            "Audit records committed to the staging table, not yet moved into the log",
            audit_staged.clone(),
        );
        registry.register(
            "audit_failed_moves",
            "Moves of staged audit records into the log that failed (retried later)",
            audit_failed_moves.clone(),
        );
        registry.register(
            "audit_inline_commits",
            "Audit records committed by their own request, alone in flight, not by the writer thread",
            audit_inline_commits.clone(),
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
            audit_batches,
            audit_records,
            audit_failed,
            audit_failed_checkpoints,
            audit_staged,
            audit_failed_moves,
            audit_inline_commits,
            audit_queue,
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
        audit: &crate::audit::AuditStats,
        audit_queue: usize,
    ) -> String {
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
        self.audit_batches.set(audit.committed_batches as i64);
        self.audit_records.set(audit.committed_records as i64);
        self.audit_failed.set(audit.failed_records as i64);
        self.audit_failed_checkpoints
            .set(audit.failed_checkpoints as i64);
        self.audit_staged.set(audit.staged_records as i64);
        self.audit_failed_moves.set(audit.failed_moves as i64);
        self.audit_inline_commits.set(audit.inline_commits as i64);
        self.audit_queue.set(audit_queue as i64);
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditStats;

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
        };
        let out = m.render(&[], &stats, 5);
        for line in [
            "sluice_audit_committed_batches 4",
            "sluice_audit_committed_records 9",
            "sluice_audit_failed_records 1",
            "sluice_audit_failed_checkpoints 2",
            "sluice_audit_staged_records 7",
            "sluice_audit_failed_moves 3",
            "sluice_audit_inline_commits 6",
            "sluice_audit_queue 5",
        ] {
            assert!(
                out.lines().any(|l| l == line),
                "{line} missing from:\n{out}"
            );
        }
    }
}
