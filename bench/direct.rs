//! The direct baseline of `bench/run`: the same statements the gateway runs, issued by an
//! in-process tokio-postgres (deadpool) or mysql_async pool as large as the number of clients,
//! with no gateway in between; each client task keeps the connection it checked out. Also loads and drops the acme databases the benchmark uses, with the
//! crate's own fixture loaders, so the gateway and the baseline read identical data.
//!
//! `cargo bench --bench direct -- run --kind postgres --url URL --sql 'SELECT …' --clients 16`
//! prints one JSON object: requests, errors, rps, p50_ms, p99_ms. `bench/run.py` drives it.

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use mysql_async::prelude::Queryable;
use sluice::fixtures::{self, AcmeAccounts};

#[derive(Parser, Debug)]
#[command(about = "Direct database baseline for bench/run")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// (Re)creates the acme database on both servers with three accounts `<prefix>_analyst`, …
    Setup(SetupArgs),
    /// Drops what `setup` created.
    Teardown(SetupArgs),
    /// Runs one statement from `clients` concurrent tasks for `secs` seconds after a warm-up.
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
struct SetupArgs {
    /// Admin URL of PostgreSQL (a superuser).
    #[arg(long)]
    pg_url: String,
    /// Admin URL of MariaDB/MySQL (root).
    #[arg(long)]
    mysql_url: String,
    /// Name of the acme database on both servers.
    #[arg(long)]
    database: String,
    /// Prefix of the account names.
    #[arg(long)]
    account_prefix: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    Postgres,
    Mysql,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    #[arg(long, value_enum)]
    kind: Kind,
    /// Connection URL of the account the gateway's datasource uses.
    #[arg(long)]
    url: String,
    /// The statement, with one integer placeholder (`$1` or `?`).
    #[arg(long)]
    sql: String,
    /// The parameter is drawn uniformly from `param_min..=param_max` for every request.
    #[arg(long)]
    param_min: i64,
    #[arg(long)]
    param_max: i64,
    #[arg(long)]
    clients: usize,
    #[arg(long, default_value_t = 8.0)]
    secs: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
}

#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(String),
    #[error("mysql: {0}")]
    Mysql(#[from] mysql_async::Error),
    #[error("fixture: {0}")]
    Fixture(#[from] fixtures::FixtureError),
    #[error("{0}")]
    Invalid(String),
}

fn main() {
    // `cargo bench` passes `--bench` to every bench target; it means nothing here.
    let args = std::env::args().filter(|a| a != "--bench");
    let cli = Cli::parse_from(args);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("direct: cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Setup(a) => setup(&a).await,
            Command::Teardown(a) => teardown(&a).await,
            Command::Run(a) => run(&a).await,
        }
    });
    match result {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("direct: {e}");
            std::process::exit(1);
        }
    }
}

fn accounts(prefix: &str) -> AcmeAccounts {
    let doc = AcmeAccounts::documented();
    let named = |(user, password): (String, String)| (format!("{prefix}_{user}"), password);
    AcmeAccounts {
        analyst: named(doc.analyst),
        sales: named(doc.sales),
        executive: named(doc.executive),
    }
}

/// Only plain lowercase names are inlined into DDL.
fn check_name(name: &str) -> Result<(), BenchError> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(BenchError::Invalid(format!("bad name {name:?}")))
    }
}

async fn pg_connect(url: &str) -> Result<tokio_postgres::Client, BenchError> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn pg_url_for(url: &str, database: &str) -> Result<tokio_postgres::Config, BenchError> {
    let mut cfg: tokio_postgres::Config = url.parse()?;
    cfg.dbname(database);
    Ok(cfg)
}

async fn setup(a: &SetupArgs) -> Result<serde_json::Value, BenchError> {
    teardown(a).await?;
    let accts = accounts(&a.account_prefix);

    let admin = pg_connect(&a.pg_url).await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {}", a.database))
        .await?;
    let (db, conn) = pg_url_for(&a.pg_url, &a.database)?
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    fixtures::load_postgres(&db).await?;
    fixtures::create_postgres_accounts(&db, &a.database, &accts).await?;
    // Fresh statistics, so the planner picks the primary-key index from the first query on.
    db.batch_execute("ANALYZE").await?;

    let opts = mysql_async::Opts::from_url(&a.mysql_url)
        .map_err(|e| BenchError::Invalid(format!("mysql url: {e}")))?;
    let mut my = mysql_async::Conn::new(opts).await?;
    my.query_drop(format!(
        "CREATE DATABASE `{0}` CHARACTER SET utf8mb4; USE `{0}`",
        a.database
    ))
    .await?;
    fixtures::load_mysql(&mut my).await?;
    fixtures::create_mysql_accounts(&mut my, &a.database, &accts).await?;
    my.query_drop("ANALYZE TABLE customers, orders").await?;
    my.disconnect().await?;

    Ok(serde_json::json!({
        "database": a.database,
        "analyst": {"user": accts.analyst.0, "password": accts.analyst.1},
    }))
}

async fn teardown(a: &SetupArgs) -> Result<serde_json::Value, BenchError> {
    check_name(&a.database)?;
    check_name(&a.account_prefix)?;
    let accts = accounts(&a.account_prefix);
    let users = [&accts.analyst.0, &accts.sales.0, &accts.executive.0];

    let admin = pg_connect(&a.pg_url).await?;
    admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            a.database
        ))
        .await?;
    for user in users {
        admin
            .batch_execute(&format!("DROP ROLE IF EXISTS {user}"))
            .await?;
    }

    let opts = mysql_async::Opts::from_url(&a.mysql_url)
        .map_err(|e| BenchError::Invalid(format!("mysql url: {e}")))?;
    let mut my = mysql_async::Conn::new(opts).await?;
    my.query_drop(format!("DROP DATABASE IF EXISTS `{}`", a.database))
        .await?;
    for user in users {
        for host in ["%", "localhost"] {
            my.query_drop(format!("DROP USER IF EXISTS '{user}'@'{host}'"))
                .await?;
        }
    }
    my.disconnect().await?;
    Ok(serde_json::json!({"dropped": a.database}))
}

/// What every client task measured after the warm-up.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn record(&mut self, started: Instant, measuring: bool, outcome: Result<usize, BenchError>) {
        if !measuring {
            return;
        }
        match outcome {
            Ok(_) => {
                let us = started.elapsed().as_micros();
                self.latencies_us
                    .push(u32::try_from(us).unwrap_or(u32::MAX));
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// A small xorshift generator per task: the parameter only has to spread over the key range.
struct Draw {
    state: u64,
    min: i64,
    span: u64,
}

impl Draw {
    fn new(seed: u64, min: i64, max: i64) -> Draw {
        Draw {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            min,
            span: (max - min).unsigned_abs() + 1,
        }
    }

    fn next(&mut self) -> i64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.min + (self.state % self.span) as i64
    }
}

async fn run(a: &RunArgs) -> Result<serde_json::Value, BenchError> {
    if a.clients == 0 || a.param_max < a.param_min {
        return Err(BenchError::Invalid(
            "clients must be > 0 and param_min <= param_max".into(),
        ));
    }
    let warmup = Duration::from_secs_f64(a.warmup);
    let secs = Duration::from_secs_f64(a.secs);
    let start = Instant::now();
    // This process's CPU time over the measured window, for the same figure the harness takes
    // of the gateway: what the client side of the direct path costs per request.
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until((start + warmup).into()).await;
        let before = process_cpu_secs();
        tokio::time::sleep_until((start + warmup + secs).into()).await;
        Some(process_cpu_secs()? - before?)
    });
    let tallies = match a.kind {
        Kind::Postgres => run_postgres(a, start, warmup, secs).await?,
        Kind::Mysql => run_mysql(a, start, warmup, secs).await?,
    };
    let cpu_secs = cpu.await.ok().flatten();
    let mut latencies: Vec<u32> = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tallies {
        latencies.extend(t.latencies_us);
        errors += t.errors;
        first_error = first_error.or(t.first_error);
    }
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        f64::from(latencies[i]) / 1000.0
    };
    Ok(serde_json::json!({
        "requests": latencies.len(),
        "errors": errors,
        "first_error": first_error,
        "secs": a.secs,
        "rps": latencies.len() as f64 / a.secs,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "cpu_us": cpu_secs.map(|c| c * 1e6 / latencies.len().max(1) as f64),
    }))
}

/// utime + stime of this process in seconds (/proc counts in USER_HZ, 100 on Linux).
fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

async fn run_postgres(
    a: &RunArgs,
    start: Instant,
    warmup: Duration,
    secs: Duration,
) -> Result<Vec<Tally>, BenchError> {
    let cfg: tokio_postgres::Config = a.url.parse()?;
    let manager = deadpool_postgres::Manager::from_config(
        cfg,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(a.clients)
        .build()
        .map_err(|e| BenchError::Pool(e.to_string()))?;
    // The placeholder's type decides how the drawn integer is bound.
    let wide = {
        let client = pool
            .get()
            .await
            .map_err(|e| BenchError::Pool(e.to_string()))?;
        let stmt = client.prepare_cached(&a.sql).await?;
        match stmt.params().first() {
            Some(t) if *t == tokio_postgres::types::Type::INT4 => false,
            Some(t) if *t == tokio_postgres::types::Type::INT8 => true,
            other => {
                return Err(BenchError::Invalid(format!(
                    "the statement needs one int4 or int8 parameter, not {other:?}"
                )));
            }
        }
    };
    let mut tasks = Vec::new();
    for n in 0..a.clients {
        let pool = pool.clone();
        let sql = a.sql.clone();
        let mut draw = Draw::new(n as u64 + 1, a.param_min, a.param_max);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            // Each client keeps its connection for the run, like the MySQL baseline.
            let mut held: Option<deadpool_postgres::Object> = None;
            let measure_from = start + warmup;
            let end = measure_from + secs;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let p = draw.next();
                let outcome = async {
                    let client = match &mut held {
                        Some(c) => c,
                        None => held.insert(
                            pool.get()
                                .await
                                .map_err(|e| BenchError::Pool(e.to_string()))?,
                        ),
                    };
                    let stmt = client.prepare_cached(&sql).await?;
                    let rows = if wide {
                        client.query(&stmt, &[&p]).await?
                    } else {
                        let p = i32::try_from(p).map_err(|e| BenchError::Invalid(e.to_string()))?;
                        client.query(&stmt, &[&p]).await?
                    };
                    Ok(rows.len())
                }
                .await;
                tally.record(now, now >= measure_from, outcome);
            }
            tally
        }));
    }
    let mut tallies = Vec::new();
    for t in tasks {
        tallies.push(t.await.map_err(|e| BenchError::Invalid(e.to_string()))?);
    }
    pool.close();
    Ok(tallies)
}

async fn run_mysql(
    a: &RunArgs,
    start: Instant,
    warmup: Duration,
    secs: Duration,
) -> Result<Vec<Tally>, BenchError> {
    let opts = mysql_async::Opts::from_url(&a.url)
        .map_err(|e| BenchError::Invalid(format!("mysql url: {e}")))?;
    let constraints = mysql_async::PoolConstraints::new(0, a.clients)
        .ok_or_else(|| BenchError::Invalid("pool size".into()))?;
    // No reset on return: the strongest baseline keeps its prepared statements across checkouts.
    let pool_opts = mysql_async::PoolOpts::default()
        .with_constraints(constraints)
        .with_reset_connection(false);
    let pool =
        mysql_async::Pool::new(mysql_async::OptsBuilder::from_opts(opts).pool_opts(pool_opts));
    let mut tasks = Vec::new();
    for n in 0..a.clients {
        let pool = pool.clone();
        let sql = a.sql.clone();
        let mut draw = Draw::new(n as u64 + 1, a.param_min, a.param_max);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            // Each client keeps the connection it checked out: returning a mysql_async
            // connection to its pool costs about 0.6 ms and 300 µs of CPU here, which would
            // flatter the gateway.
            let mut held: Option<mysql_async::Conn> = None;
            let measure_from = start + warmup;
            let end = measure_from + secs;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let p = draw.next();
                let outcome = async {
                    let conn = match &mut held {
                        Some(c) => c,
                        None => held.insert(pool.get_conn().await?),
                    };
                    let rows: Vec<mysql_async::Row> = conn.exec(&sql, (p,)).await?;
                    Ok(rows.len())
                }
                .await;
                tally.record(now, now >= measure_from, outcome);
            }
            tally
        }));
    }
    let mut tallies = Vec::new();
    for t in tasks {
        tallies.push(t.await.map_err(|e| BenchError::Invalid(e.to_string()))?);
    }
    pool.disconnect().await?;
    Ok(tallies)
}
