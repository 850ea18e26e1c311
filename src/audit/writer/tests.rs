//! The writer against a real store: batching, failures, retention on both databases (one suite,
//! run on each); moving, checkpointing and lone commits on SQLite; lost connections on
//! PostgreSQL.
use super::super::testutil::*;
use super::super::{AuditFilter, STAGING_TABLE, TABLE, WriteError, count, query};
use super::*;
use crate::model::*;
use chrono::SubsecRound;
use rusqlite::{Connection, TransactionBehavior};
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

on_both_databases! {
    async fn many_concurrent_records_commit_in_fewer_transactions_than_records(db) {
        let writer = Arc::new(db.start(settings(true, 20)).unwrap());
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
        assert_eq!(db.count(&company), n);
        writer.shutdown().await.unwrap();
    }
}

/// Under commits that never pause, passive checkpoints never catch up and the WAL never
/// starts over: it grew by gigabytes a minute in bench runs. Past its limit the writer
/// restarts it, so the file stays near the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_near_its_limit_under_commits_that_never_pause() {
    let (_dir, path, _conn) = fresh_db();
    let limit: i64 = 256 * 1024;
    let writer = Arc::new(
        AuditWriter::start(
            &path,
            AuditSettings {
                wal_limit_bytes: limit,
                ..settings(true, 0)
            },
        )
        .unwrap(),
    );
    let company = CompanyId::generate();
    let wal = path.with_extension("db-wal");
    let until = Instant::now() + Duration::from_secs(4);
    let writers: Vec<_> = (0..16)
        .map(|_| {
            let writer = writer.clone();
            let company = company.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < until {
                    writer.record(sample(&company, "query")).await.unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let (first_ends, last_starts) = (
        until - Duration::from_secs(3),
        until - Duration::from_secs(1),
    );
    let (mut first, mut last) = (0, 0);
    while Instant::now() < until {
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        let now = Instant::now();
        if now < first_ends {
            first = first.max(size);
        } else if now >= last_starts {
            last = last.max(size);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut records = 0;
    for w in writers {
        records += w.await.unwrap();
    }
    let stats = writer.stats();
    assert!(stats.wal_restarts > 0, "{records} records, {stats:?}");
    // The file stays within the limit plus about one checkpoint interval of commits, however
    // long the commits go on (how much that is depends on the machine's speed, which other
    // tests running beside this one change). Without the restarts it grew all along: about
    // four times as large in the last second as in the first.
    assert!(
        last < first * 5 / 2 + 1024 * 1024,
        "the WAL grew from {first} bytes in the first second to {last} in the last, with \
         {records} records committed ({stats:?})"
    );
    assert_eq!(count_fresh(&path, &company), records);
    writer.shutdown().await.unwrap();
}

on_both_databases! {
    async fn a_batch_never_exceeds_max_batch(db) {
        let writer = Arc::new(
            db.start(
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
}

on_both_databases! {
    async fn a_waited_record_is_visible_to_a_fresh_connection_when_record_returns(db) {
        // A long linger would hold the answer back; the record must still be committed on return.
        let writer = db.start(settings(true, 30)).unwrap();
        let company = CompanyId::generate();
        for _ in 0..3 {
            let rec = full_record(&company);
            writer.record(rec.clone()).await.unwrap();
            let page = db.query(&AuditFilter::new(company.clone())).unwrap();
            assert_eq!(page.items.first(), Some(&rec));
        }
        writer.shutdown().await.unwrap();
    }
}

on_both_databases! {
    async fn shutdown_flushes_records_queued_without_waiting(db) {
        // The linger is far longer than the test: only shutdown can make these records commit.
        let writer = db.start(settings(false, 60_000)).unwrap();
        let company = CompanyId::generate();
        let started = Instant::now();
        for _ in 0..100 {
            writer.record(sample(&company, "query")).await.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "record did not wait"
        );
        assert_eq!(db.count(&company), 0, "nothing committed yet");

        writer.shutdown().await.unwrap();
        assert_eq!(db.count(&company), 100);
        assert!(matches!(
            writer.record(sample(&company, "query")).await,
            Err(AuditError::Closed)
        ));
        writer.shutdown().await.unwrap();
    }
}

on_both_databases! {
    async fn a_full_queue_makes_callers_wait_instead_of_dropping_records(db) {
        let writer = Arc::new(
            db.start(
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
        assert_eq!(db.count(&company), 200);
        assert_eq!(writer.stats().committed_batches, 200);
    }
}

on_both_databases! {
    async fn a_bad_record_fails_only_its_own_caller(db) {
        let writer = Arc::new(db.start(settings(true, 50)).unwrap());
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
        assert_eq!(db.count(&company), 6);
        assert_eq!(writer.stats().failed_records, 1);
        // Waited-for failures were reported to their callers already, not again at shutdown.
        writer.shutdown().await.unwrap();
    }
}

on_both_databases! {
    async fn records_lost_without_a_waiter_are_reported_by_shutdown(db) {
        let writer = db.start(settings(false, 0)).unwrap();
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
        assert_eq!(db.count(&company), 2);
    }
}

/// Holds the store's write lock on another thread, as an admin change does, until `until`
/// returns; returns once the lock is held.
fn hold_write_lock(
    mut conn: Connection,
    until: impl FnOnce() + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let (held_tx, held) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        held_tx.send(()).unwrap();
        until();
        tx.commit().unwrap();
    });
    held.recv().unwrap();
    holder
}

#[tokio::test]
async fn the_writer_waits_for_the_stores_own_write_transaction() {
    let (_dir, path, conn) = fresh_db();
    let writer = AuditWriter::start(&path, settings(true, 0)).unwrap();
    let company = CompanyId::generate();
    let holder = hold_write_lock(conn, || std::thread::sleep(Duration::from_millis(300)));
    writer.record(sample(&company, "query")).await.unwrap();
    holder.join().unwrap();
    assert_eq!(count_fresh(&path, &company), 1);
    writer.shutdown().await.unwrap();
}

on_both_databases! {
    async fn when_the_database_fails_every_caller_of_the_batch_gets_the_error(db) {
        let writer = Arc::new(db.start(settings(true, 50)).unwrap());
        db.execute("DROP TABLE audit_log");
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
}

on_both_databases! {
    fn the_writer_refuses_to_start_when_the_audit_table_was_dropped(db) {
        db.execute("DROP TABLE audit_log");
        let started = db.start(AuditSettings::default());
        assert!(matches!(started, Err(AuditError::MissingSchema)), "{:?}", started.err());
    }
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

on_both_databases! {
    async fn dropping_the_writer_still_commits_what_was_queued(db) {
        let writer = db.start(settings(false, 60_000)).unwrap();
        let mut stopped = writer.stopped.clone();
        let company = CompanyId::generate();
        for _ in 0..10 {
            writer.record(sample(&company, "query")).await.unwrap();
        }
        drop(writer);
        stopped.wait_for(|s| *s).await.unwrap();
        assert_eq!(db.count(&company), 10);
    }
}

fn rows_in(path: &Path, table: &str) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// Waits until the writer has moved everything staged, failing with `why` after 30 s
/// (bounded generously: this is not a speed check).
async fn wait_until_nothing_staged(path: &Path, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while rows_in(path, STAGING_TABLE) > 0 {
        assert!(Instant::now() < deadline, "{why}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Rows in the log and in the staging table.
fn log_and_staged(path: &Path) -> (i64, i64) {
    (rows_in(path, TABLE), rows_in(path, STAGING_TABLE))
}

fn moving(move_at_records: usize, move_when_idle_for: Duration) -> AuditSettings {
    AuditSettings {
        move_at_records,
        move_when_idle_for,
        ..AuditSettings::default()
    }
}

const NEVER: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn records_are_staged_listed_at_once_and_moved_in_bulk() {
    let (_dir, path, _conn) = fresh_db();
    let writer = AuditWriter::start(&path, moving(10, NEVER)).unwrap();
    let company = CompanyId::generate();
    let mut recs = Vec::new();
    for _ in 0..4 {
        let rec = full_record(&company);
        writer.record(rec.clone()).await.unwrap();
        recs.push(rec);
    }
    assert_eq!(log_and_staged(&path), (0, 4));
    assert_eq!(writer.stats().staged_records, 4);
    // Listed from the moment `record` returns, newest first, as if already in the log.
    let fresh = Connection::open(&path).unwrap();
    let page = query(&fresh, &AuditFilter::new(company.clone())).unwrap();
    let newest_first: Vec<_> = recs.iter().rev().cloned().collect();
    assert_eq!(page.items, newest_first);

    for _ in 0..6 {
        writer.record(sample(&company, "query")).await.unwrap();
    }
    // The tenth commit triggered a move; the writer runs it before it takes the next record,
    // so once the eleventh is committed the first ten are in the log.
    writer.record(sample(&company, "query")).await.unwrap();
    assert_eq!(log_and_staged(&path), (10, 1));
    assert_eq!(writer.stats().staged_records, 1);
    let page = query(&fresh, &AuditFilter::new(company.clone())).unwrap();
    assert_eq!(page.items.len(), 11);
    assert_eq!(page.items[7..], newest_first[..]);

    writer.shutdown().await.unwrap();
    assert_eq!(log_and_staged(&path), (11, 0));
    assert_eq!(writer.stats().failed_moves, 0);
}

#[tokio::test]
async fn a_failed_move_keeps_the_records_staged_and_listed_until_a_later_move() {
    let (_dir, path, conn) = fresh_db();
    let writer = AuditWriter::start(&path, moving(2, NEVER)).unwrap();
    let company = CompanyId::generate();
    // Every insert into the log fails; staging is unaffected.
    conn.execute_batch(
        "CREATE TRIGGER refuse_log BEFORE INSERT ON audit_log \
         BEGIN SELECT RAISE(ABORT, 'log refused'); END;",
    )
    .unwrap();
    for _ in 0..3 {
        writer.record(sample(&company, "query")).await.unwrap();
    }
    // The move due at two records failed; the next is put off by another two records, so the
    // third commit did not retry it.
    let stats = writer.stats();
    assert_eq!((stats.failed_moves, stats.staged_records), (1, 3));
    assert_eq!(log_and_staged(&path), (0, 3));
    assert_eq!(count_fresh(&path, &company), 3);

    conn.execute_batch("DROP TRIGGER refuse_log").unwrap();
    // The fourth commit reaches the put-off mark and moves all four; the writer does that
    // before it takes the fifth record.
    for _ in 0..2 {
        writer.record(sample(&company, "query")).await.unwrap();
    }
    let stats = writer.stats();
    assert_eq!((stats.failed_moves, stats.staged_records), (1, 1));
    assert_eq!(log_and_staged(&path), (4, 1));
    writer.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_idle_writer_moves_what_is_staged() {
    let (_dir, path, _conn) = fresh_db();
    let writer = AuditWriter::start(&path, moving(1000, Duration::from_millis(50))).unwrap();
    let company = CompanyId::generate();
    for _ in 0..3 {
        writer.record(sample(&company, "query")).await.unwrap();
    }
    wait_until_nothing_staged(&path, "the staged records were never moved").await;
    assert_eq!(rows_in(&path, TABLE), 3);
    writer.shutdown().await.unwrap();
}

#[tokio::test]
async fn records_a_killed_process_left_staged_are_moved_at_start() {
    let (_dir, path, conn) = fresh_db();
    let company = CompanyId::generate();
    for _ in 0..3 {
        crate::audit::stage(&conn, &sample(&company, "query")).unwrap();
    }
    // The writer counts them at start (a count of 0 would skip the move); the move itself
    // runs on the writer thread, so the count is only read once a record has gone through.
    let writer = AuditWriter::start(&path, moving(1000, NEVER)).unwrap();
    // The move at the writer's start runs before it takes any record.
    writer.record(sample(&company, "query")).await.unwrap();
    assert_eq!(log_and_staged(&path), (3, 1));
    assert_eq!(writer.stats().staged_records, 1);
    assert_eq!(count_fresh(&path, &company), 4);
    writer.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_record_whose_id_is_already_in_the_log_is_refused_to_its_caller() {
    let (_dir, path, _conn) = fresh_db();
    let writer = AuditWriter::start(&path, moving(1, NEVER)).unwrap();
    let company = CompanyId::generate();
    let rec = sample(&company, "query");
    writer.record(rec.clone()).await.unwrap();
    writer.record(sample(&company, "query")).await.unwrap();
    // The first record was moved before the second was committed (the writer moves after
    // a commit, before it takes the next record).
    assert!(rows_in(&path, TABLE) >= 1);
    let again = writer.record(rec).await;
    assert!(
        matches!(&again, Err(AuditError::Write(e))
            if matches!(&**e, WriteError::Sqlite(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation))),
        "{again:?}"
    );
    writer.shutdown().await.unwrap();
    assert_eq!(count_fresh(&path, &company), 2);
    let stats = writer.stats();
    assert_eq!((stats.failed_records, stats.failed_moves), (1, 0));
}

on_both_databases! {
    /// On PostgreSQL every record goes through the writer thread, hinted or not.
    async fn a_lone_caller_commits_its_own_record_when_the_writer_is_idle(db) {
        let writer = db.start(AuditSettings::default()).unwrap();
        let inline = u64::from(db.backend() == Backend::Sqlite);
        let company = CompanyId::generate();
        let rec = full_record(&company);
        writer.record_hinted(rec.clone(), true).await.unwrap();
        let stats = writer.stats();
        assert_eq!((stats.inline_commits, stats.committed_records), (inline, 1));
        let page = db.query(&AuditFilter::new(company.clone())).unwrap();
        assert_eq!(page.items, vec![rec]);
        // Not alone: through the writer thread.
        writer
            .record_hinted(sample(&company, "query"), false)
            .await
            .unwrap();
        let stats = writer.stats();
        assert_eq!((stats.inline_commits, stats.committed_records), (inline, 2));
        writer.shutdown().await.unwrap();
        assert!(matches!(
            writer.record_hinted(sample(&company, "query"), true).await,
            Err(AuditError::Closed)
        ));
        assert_eq!(db.count(&company), 2);
    }
}

#[tokio::test]
async fn records_lone_callers_committed_are_moved_when_the_gateway_goes_quiet() {
    let (_dir, path, _conn) = fresh_db();
    let writer = AuditWriter::start(&path, moving(1000, Duration::from_millis(50))).unwrap();
    let company = CompanyId::generate();
    for _ in 0..3 {
        writer
            .record_hinted(sample(&company, "query"), true)
            .await
            .unwrap();
    }
    wait_until_nothing_staged(&path, "inline records were never moved").await;
    assert_eq!(rows_in(&path, TABLE), 3);
    writer.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_lone_caller_leaves_a_due_move_to_the_writer() {
    let (_dir, path, _conn) = fresh_db();
    let writer = AuditWriter::start(&path, moving(1, NEVER)).unwrap();
    let company = CompanyId::generate();
    // Committed here: nothing staged yet.
    writer
        .record_hinted(sample(&company, "query"), true)
        .await
        .unwrap();
    assert_eq!(writer.stats().inline_commits, 1);
    // A move is due: the record goes to the writer, which commits it and then moves both.
    writer
        .record_hinted(sample(&company, "query"), true)
        .await
        .unwrap();
    assert_eq!(writer.stats().inline_commits, 1);
    writer.shutdown().await.unwrap();
    assert_eq!(log_and_staged(&path), (2, 0));
}

on_both_databases! {
    /// A reader pages through everything while records are committed (and, on SQLite, moved):
    /// the count never goes back and no record is listed twice or skipped.
    async fn concurrent_lone_and_batched_records_are_each_listed_once_while_moves_run(db) {
        let db = Arc::new(db);
        let writer = Arc::new(db.start(moving(7, Duration::from_millis(3))).unwrap());
        let company = CompanyId::generate();
        // Records older than any written below: every full pass must list all of them, in
        // order, whatever is inserted meanwhile at the newest end.
        let old: Vec<_> = (0..120)
            .map(|i| AuditRecord {
                at: (chrono::Utc::now() - chrono::Duration::hours(1)).trunc_subsecs(6)
                    + chrono::Duration::seconds(i / 3),
                ..sample(&company, "query")
            })
            .collect();
        db.insert_all(&old);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (db, company, stop, old) = (db.clone(), company.clone(), stop.clone(), old.clone());
            std::thread::spawn(move || {
                let mut last = 0;
                let mut passes = 0;
                while !stop.load(Ordering::Relaxed) || passes < 2 {
                    let mut filter = AuditFilter::new(company.clone());
                    filter.limit = 50;
                    let mut seen = std::collections::HashSet::new();
                    let mut listed = Vec::new();
                    loop {
                        let page = db.query(&filter).unwrap();
                        for item in page.items {
                            assert!(seen.insert(item.id.clone()), "a record listed twice");
                            listed.push(item);
                        }
                        match page.next_cursor {
                            Some(c) => filter.cursor = Some(c),
                            None => break,
                        }
                    }
                    assert!(
                        listed.windows(2).all(|w| (w[0].at, &w[0].id) > (w[1].at, &w[1].id)),
                        "not newest first"
                    );
                    assert!(old.iter().all(|r| seen.contains(&r.id)), "a record skipped");
                    let n = db.count(&company);
                    assert!(n >= last, "the count went back from {last} to {n}");
                    last = n;
                    passes += 1;
                }
            })
        };
        let tasks: Vec<_> = (0..4)
            .map(|t| {
                let (writer, company) = (writer.clone(), company.clone());
                tokio::spawn(async move {
                    for i in 0..150 {
                        let rec = sample(&company, "query");
                        writer.record_hinted(rec, (i + t) % 2 == 0).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        writer.shutdown().await.unwrap();
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();
        assert_eq!(db.rows(), 720);
        if db.backend() == Backend::Sqlite {
            assert_eq!(log_and_staged(db.path()), (720, 0));
        }
        assert_eq!(writer.stats().committed_records, 600);
    }
}

// The test holds the writer's connection across awaits on purpose: callers only `try_lock`
// it, and the writer thread blocks outside the runtime.
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn a_lone_caller_leaves_its_record_to_the_writer_when_it_is_busy() {
    let (_dir, path, _conn) = fresh_db();
    let writer = Arc::new(AuditWriter::start(&path, AuditSettings::default()).unwrap());
    let company = CompanyId::generate();
    let shared = writer.committer.upgrade().unwrap();
    let held = shared.lock().unwrap();
    let task = {
        let (writer, rec) = (writer.clone(), sample(&company, "query"));
        tokio::spawn(async move { writer.record_hinted(rec, true).await })
    };
    // The record cannot be committed while the connection is held, by anyone.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!task.is_finished());
    drop(held);
    drop(shared);
    task.await.unwrap().unwrap();
    assert_eq!(writer.stats().inline_commits, 0);
    assert_eq!(count_fresh(&path, &company), 1);
    writer.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_lone_caller_never_waits_for_the_stores_write_lock_itself() {
    let (_dir, path, conn) = fresh_db();
    let writer = AuditWriter::start(&path, AuditSettings::default()).unwrap();
    let company = CompanyId::generate();
    // Held until the test says so, not for a time: the caller's attempt must meet it.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let holder = hold_write_lock(conn, move || {
        let _ = released.recv();
    });
    let mut fut = std::pin::pin!(writer.record_hinted(sample(&company, "query"), true));
    // The first poll tries the commit here, finds the lock taken and hands the record to
    // the writer thread instead of waiting (the store's busy timeout would be 5 s).
    let started = Instant::now();
    assert!(futures::poll!(&mut fut).is_pending());
    assert!(started.elapsed() < Duration::from_secs(2));
    release.send(()).unwrap();
    // Busy at once on the caller's thread; the writer thread waits and commits it.
    fut.await.unwrap();
    holder.join().unwrap();
    let stats = writer.stats();
    assert_eq!((stats.inline_commits, stats.failed_records), (0, 0));
    assert_eq!(count_fresh(&path, &company), 1);
    writer.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_lone_callers_duplicate_record_fails_to_its_caller() {
    let (_dir, path, _conn) = fresh_db();
    let writer = AuditWriter::start(&path, AuditSettings::default()).unwrap();
    let company = CompanyId::generate();
    let rec = sample(&company, "query");
    writer.record_hinted(rec.clone(), true).await.unwrap();
    let again = writer.record_hinted(rec, true).await;
    assert!(matches!(again, Err(AuditError::Write(_))), "{again:?}");
    assert_eq!(writer.stats().failed_records, 1);
    writer.shutdown().await.unwrap();
    assert_eq!(count_fresh(&path, &company), 1);
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

// ---------------------------------------------------------------------------------------------
// Retention, on both databases

/// Records of two companies at given ages (in hours) before now.
fn aged(company: &CompanyId, hours_ago: &[i64]) -> Vec<AuditRecord> {
    hours_ago
        .iter()
        .map(|h| AuditRecord {
            at: (chrono::Utc::now() - chrono::Duration::hours(*h)).trunc_subsecs(6),
            ..sample(company, "query")
        })
        .collect()
}

/// Waits until `done` holds, failing with `why` after 30 s (not a speed check).
async fn eventually(why: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{why}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(recs: &[AuditRecord]) -> std::collections::BTreeSet<String> {
    recs.iter().map(|r| r.id.as_str().to_owned()).collect()
}

fn listed(db: &TestDb, company: &CompanyId) -> std::collections::BTreeSet<String> {
    let filter = AuditFilter {
        limit: MAX_LIMIT,
        ..AuditFilter::new(company.clone())
    };
    ids(&db.query(&filter).unwrap().items)
}

use super::super::MAX_LIMIT;

on_both_databases! {
    /// 30 days kept: the records an hour past the cutoff go (more than one delete batch of
    /// them, in two companies), those an hour inside it stay, and records that age past it
    /// later go at a later run.
    async fn retention_deletes_only_records_older_than_the_cutoff(db) {
        let (a, b) = (CompanyId::generate(), CompanyId::generate());
        let day = 24;
        let expired_a = aged(&a, &[30 * day + 1; retention::EXPIRE_BATCH * 2 + 17]);
        let expired_b = aged(&b, &[30 * day + 1, 400 * day]);
        let kept_a = aged(&a, &[30 * day - 1, 1, 0]);
        let kept_b = aged(&b, &[29 * day]);
        for recs in [&expired_a, &expired_b, &kept_a, &kept_b] {
            db.insert_all(recs);
        }
        let writer = db
            .start(AuditSettings {
                retention_days: Some(30),
                retention_every: Duration::from_millis(200),
                ..AuditSettings::default()
            })
            .unwrap();
        let expired = (expired_a.len() + expired_b.len()) as u64;
        eventually("the expired records were never deleted", || {
            writer.expired_records() >= expired
        })
        .await;
        assert_eq!(writer.expired_records(), expired);
        assert_eq!(listed(&db, &a), ids(&kept_a));
        assert_eq!(listed(&db, &b), ids(&kept_b));

        // New records are written meanwhile; one that is already too old goes at a later run.
        writer.record(sample(&a, "query")).await.unwrap();
        let late = aged(&b, &[31 * day]);
        db.insert_all(&late);
        eventually("a later run never came", || {
            writer.expired_records() > expired
        })
        .await;
        assert_eq!(listed(&db, &b), ids(&kept_b));
        assert_eq!(db.count(&a), kept_a.len() as u64 + 1);
        writer.shutdown().await.unwrap();
    }
}

on_both_databases! {
    async fn without_retention_nothing_is_deleted(db) {
        let company = CompanyId::generate();
        let old = aged(&company, &[24 * 3650, 24 * 400]);
        db.insert_all(&old);
        let writer = db
            .start(AuditSettings {
                retention_every: Duration::from_millis(10),
                ..AuditSettings::default()
            })
            .unwrap();
        writer.record(sample(&company, "query")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        writer.shutdown().await.unwrap();
        assert_eq!(db.count(&company), 3);
        assert_eq!(writer.expired_records(), 0);
    }
}

#[test]
fn retention_on_sqlite_deletes_expired_staged_records_too() {
    let (_dir, path, conn) = fresh_db();
    let company = CompanyId::generate();
    let staged_old = aged(&company, &[48, 48, 48]);
    let staged_new = aged(&company, &[1]);
    let logged_old = aged(&company, &[72]);
    for r in staged_old.iter().chain(&staged_new) {
        crate::audit::stage(&conn, r).unwrap();
    }
    insert_all(&mut Connection::open(&path).unwrap(), &logged_old);
    let counters = Arc::new(Counters::default());
    let mut sink = SqliteSink::open(&path, &AuditSettings::default(), counters.clone()).unwrap();
    assert_eq!(sink.companies().unwrap(), vec![company.as_str().to_owned()]);
    let cutoff = (chrono::Utc::now() - chrono::Duration::hours(24)).timestamp_micros();
    // Two at a time: the log's one, then one of the staged ones; then the other two staged.
    assert_eq!(sink.expire(company.as_str(), cutoff, 2).unwrap(), 2);
    assert_eq!(sink.expire(company.as_str(), cutoff, 2).unwrap(), 2);
    assert_eq!(sink.expire(company.as_str(), cutoff, 2).unwrap(), 0);
    assert_eq!(log_and_staged(&path), (0, 1));
    assert_eq!(counters.staged_records.load(Ordering::Relaxed), 1);
    let page = query(&conn, &AuditFilter::new(company)).unwrap();
    assert_eq!(page.items, staged_new);
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: lost connections and an unreachable database

fn pg_writer(db: &PgDb, settings: AuditSettings) -> AuditWriter {
    AuditWriter::start_postgres(db.connector(), settings).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_connection_fails_its_batch_and_the_writer_reconnects_by_itself() {
    let db = PgDb::create();
    let writer = pg_writer(&db, AuditSettings::default());
    let company = CompanyId::generate();
    writer.record(sample(&company, "query")).await.unwrap();

    assert!(
        db.kill_connections() >= 1,
        "the writer's connection was not found"
    );
    // The batch that finds the connection gone fails to its waiter: a 503, never silence.
    let lost = sample(&company, "query");
    let failed = writer.record(lost.clone()).await;
    assert!(matches!(failed, Err(AuditError::Write(_))), "{failed:?}");
    let err = failed.unwrap_err();
    assert_eq!(
        crate::code::Coded::code(&err),
        crate::code::Code::Unavailable
    );
    // The next batch connects again.
    for _ in 0..3 {
        writer.record(sample(&company, "query")).await.unwrap();
    }
    let stats = writer.stats();
    assert_eq!((stats.committed_records, stats.failed_records), (4, 1));
    writer.shutdown().await.unwrap();
    let tdb = TestDb::Postgres(Box::new(db));
    assert_eq!(tdb.count(&company), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_unreachable_records_fail_to_their_callers_until_it_is_back() {
    let db = PgDb::create();
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let connect = {
        let (mut inner, down) = (db.connector(), down.clone());
        Box::new(move || {
            if down.load(Ordering::SeqCst) {
                Err("connection refused (test)".to_owned())
            } else {
                inner()
            }
        }) as AuditConnect
    };
    let writer = Arc::new(AuditWriter::start_postgres(connect, AuditSettings::default()).unwrap());
    let company = CompanyId::generate();
    writer.record(sample(&company, "query")).await.unwrap();

    down.store(true, Ordering::SeqCst);
    db.kill_connections();
    // Every waiter of every batch hears of it, while the database stays away.
    for _ in 0..3 {
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let (writer, rec) = (writer.clone(), sample(&company, "query"));
                tokio::spawn(async move { writer.record(rec).await })
            })
            .collect();
        for t in tasks {
            let result = t.await.unwrap();
            assert!(matches!(result, Err(AuditError::Write(_))), "{result:?}");
        }
    }
    let refused = writer.record(sample(&company, "query")).await;
    assert!(
        matches!(&refused, Err(AuditError::Write(e)) if matches!(**e, WriteError::Connect(_))),
        "{refused:?}"
    );

    down.store(false, Ordering::SeqCst);
    for _ in 0..3 {
        writer.record(sample(&company, "query")).await.unwrap();
    }
    writer.shutdown().await.unwrap();
    assert_eq!(writer.stats().failed_records, 16);
    assert_eq!(TestDb::Postgres(Box::new(db)).count(&company), 4);
}

#[test]
fn the_postgres_writer_refuses_to_start_when_the_database_is_unreachable() {
    let started = AuditWriter::start_postgres(
        Box::new(|| Err("no route to host (test)".to_owned())),
        AuditSettings::default(),
    );
    assert!(
        matches!(&started, Err(AuditError::Connect(m)) if m.contains("no route")),
        "{:?}",
        started.err()
    );
}

#[test]
fn postgres_reads_have_the_same_items_order_and_cursors_as_sqlite() {
    let company = CompanyId::generate();
    let t = chrono::Utc::now().trunc_subsecs(6);
    let recs: Vec<_> = (0..9)
        .map(|i| AuditRecord {
            at: t - chrono::Duration::seconds(i / 3),
            ..full_record(&company)
        })
        .collect();
    let pages = |db: &TestDb| {
        db.insert_all(&recs);
        let mut filter = AuditFilter {
            limit: 4,
            ..AuditFilter::new(company.clone())
        };
        let mut out = Vec::new();
        loop {
            let page = db.query(&filter).unwrap();
            out.push(page.clone());
            match page.next_cursor {
                Some(c) => filter.cursor = Some(c),
                None => return out,
            }
        }
    };
    let sqlite = pages(&TestDb::new(Backend::Sqlite));
    let postgres = pages(&TestDb::new(Backend::Postgres));
    assert_eq!(sqlite.len(), 3);
    assert_eq!(sqlite, postgres);
}
