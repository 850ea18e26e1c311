//! Policy cost: parse → check → render → re-parse (`sluice::policy::check`) per statement, on a
//! primary-key lookup (as sqlparser prints it, and in lower case), a 60-line analytic query, and
//! a query touching 200 tables.
//! Also the same statements answered from the policy decision cache, as the query route asks.
//! Run: `cargo bench --bench policy`.

use criterion::{Criterion, criterion_group};
use sluice::model::{DatasourceKind, ScopePolicy};
use sluice::policy::cache::PolicyCache;
use sluice::policy::{Catalog, Target, check};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::hint::black_box;

/// The server's allocator (see `src/main.rs`): the check allocates many small nodes, so the
/// figures depend on it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PK_LOOKUP: &str = "SELECT id, name, email, country FROM customers WHERE id = $1";

/// The same lookup in lower case. `PK_LOOKUP` is written the way sqlparser prints it, so its
/// check skips the re-parse (`src/policy/render.rs`); this spelling prints differently and pays
/// for the second parse, as most hand-written SQL does.
const PK_LOOKUP_LOWER: &str = "select id, name, email, country from customers where id = $1";

const ANALYTIC: &str = r#"
WITH monthly AS (
    SELECT date_trunc('month', o.ordered_at) AS month,
           c.country,
           sum(oi.quantity * oi.unit_price) AS revenue,
           count(DISTINCT o.id) AS orders
    FROM orders o
    JOIN order_items oi ON oi.order_id = o.id
    JOIN customers c ON c.id = o.customer_id
    WHERE o.status IN ('paid', 'shipped', 'delivered')
      AND o.ordered_at >= now() - interval '2 years'
    GROUP BY 1, 2
),
ranked AS (
    SELECT month,
           country,
           revenue,
           orders,
           rank() OVER (PARTITION BY month ORDER BY revenue DESC) AS country_rank,
           lag(revenue) OVER (PARTITION BY country ORDER BY month) AS prev_revenue,
           avg(revenue) OVER (PARTITION BY country ORDER BY month
                              ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS rolling_avg
    FROM monthly
),
refunds AS (
    SELECT date_trunc('month', i.issued_at) AS month,
           sum(i.amount) FILTER (WHERE i.status = 'refunded') AS refunded,
           count(*) FILTER (WHERE i.status = 'overdue') AS overdue
    FROM invoices i
    WHERE i.issued_at >= now() - interval '2 years'
    GROUP BY 1
),
top_products AS (
    SELECT p.category,
           p.name,
           sum(oi.quantity) AS units,
           row_number() OVER (PARTITION BY p.category ORDER BY sum(oi.quantity) DESC) AS rn
    FROM products p
    JOIN order_items oi ON oi.product_id = p.id
    GROUP BY p.category, p.name
)
SELECT r.month,
       r.country,
       r.revenue,
       r.orders,
       r.country_rank,
       CASE WHEN r.prev_revenue IS NULL OR r.prev_revenue = 0 THEN NULL
            ELSE round(((r.revenue - r.prev_revenue) / r.prev_revenue * 100)::numeric, 1)
       END AS growth_pct,
       coalesce(r.rolling_avg, 0) AS rolling_avg,
       (SELECT string_agg(tp.name, ', ' ORDER BY tp.units DESC)
          FROM top_products tp
         WHERE tp.rn <= 3) AS best_sellers,
       fs.revenue AS booked_revenue,
       rf.refunded,
       rf.overdue
FROM ranked r
LEFT JOIN refunds rf ON rf.month = r.month
LEFT JOIN financial_summary fs ON fs.month = r.month::date
WHERE r.country_rank <= 5
  AND r.revenue > (SELECT avg(revenue) FROM monthly m2 WHERE m2.month = r.month)
ORDER BY r.month DESC, r.country_rank
LIMIT 500
"#;

fn two_hundred_tables() -> String {
    let mut sql = String::from("SELECT t0.id FROM t0");
    for i in 1..200 {
        sql.push_str(&format!(" JOIN t{i} ON t{i}.id = t{}.id", i - 1));
    }
    sql.push_str(" WHERE t0.id = $1");
    sql
}

fn bench(c: &mut Criterion) {
    // A server with nothing behind any table name: what the checks cost on their own.
    let catalog = Catalog {
        default_schema: "public".into(),
        ..Catalog::default()
    };
    let target = Target {
        kind: DatasourceKind::Postgres,
        default_schema: "public",
        max_sql_bytes: 1 << 20,
        catalog: &catalog,
    };
    let scope = ScopePolicy::default();
    let many = two_hundred_tables();
    for (name, sql) in [
        ("pk_lookup", PK_LOOKUP),
        ("pk_lookup_lower_case", PK_LOOKUP_LOWER),
        ("analytic_60_lines", ANALYTIC),
        ("200_tables", many.as_str()),
    ] {
        // The statements must pass: a benchmark of a refusal would measure the wrong path.
        check(sql, &target, &scope).unwrap_or_else(|e| panic!("{name} is refused: {e}"));
        c.bench_function(&format!("policy/{name}"), |b| {
            b.iter(|| check(black_box(sql), &target, &scope))
        });
        // The floor under the check: one plain sqlparser parse of the same text. The check parses
        // twice (the statement, then its rendering, as THREATS.md requires) unless the rendering
        // is the input itself, so it cannot cost less than this, or twice this.
        c.bench_function(&format!("policy/{name}_sqlparser_parse_only"), |b| {
            b.iter(|| Parser::parse_sql(&PostgreSqlDialect {}, black_box(sql)))
        });
    }
    // The query route asks through the decision cache: a statement seen before costs a hash and a
    // lock, not a parse.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let cache = PolicyCache::new(10_000, 64 << 20);
    let known = sluice::policy::catalog::Known::new(catalog.clone());
    for (name, sql) in [("pk_lookup", PK_LOOKUP), ("analytic_60_lines", ANALYTIC)] {
        let ask = || {
            cache.check(
                sql.to_owned(),
                DatasourceKind::Postgres,
                "public".to_owned(),
                1 << 20,
                scope.clone(),
                known.clone(),
            )
        };
        rt.block_on(ask()).expect("allowed");
        c.bench_function(&format!("policy/{name}_cached"), |b| {
            b.iter(|| rt.block_on(ask()))
        });
    }
}

criterion_group!(benches, bench);

/// The server checks statements on runtime threads with `RUNTIME_THREAD_STACK_BYTES` of stack
/// (see `src/main.rs`); measure on such a thread, or the figures would include allocating a fresh
/// stack per check, which the server never does.
fn main() {
    let runner = std::thread::Builder::new()
        .stack_size(sluice::policy::RUNTIME_THREAD_STACK_BYTES)
        .spawn(|| {
            benches();
            Criterion::default().configure_from_args().final_summary();
        })
        .expect("spawn the benchmark thread");
    if runner.join().is_err() {
        std::process::exit(1);
    }
}
