//! The acme fixture loads on the real PostgreSQL, MariaDB and SQLite, its three service accounts see
//! exactly what seed 002 gives them, and `acme_bump()` is stopped only by a read-only transaction.
mod support;

use mysql_async::prelude::Queryable;
use sluice::fixtures::{self, ACME_ROW_COUNTS, AcmeAccounts};
use support::db::{MysqlTestDb, PgTestDb};
use tokio_postgres::error::SqlState;

/// Tables each account may read in full; every other acme table must be refused.
const ANALYST_TABLES: [&str; 6] = [
    "customers",
    "products",
    "orders",
    "order_items",
    "invoices",
    "financial_summary",
];
const SALES_TABLES: [&str; 3] = ["customers", "orders", "order_items"];
const EXECUTIVE_TABLES: [&str; 1] = ["financial_summary"];

/// MariaDB: table access denied, column access denied, statement refused in a read-only transaction.
const ER_TABLEACCESS_DENIED: u16 = 1142;
const ER_COLUMNACCESS_DENIED: u16 = 1143;
const ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION: u16 = 1792;

fn expected_count(table: &str) -> i64 {
    ACME_ROW_COUNTS
        .iter()
        .find(|(t, _)| *t == table)
        .map(|(_, n)| *n)
        .unwrap()
}

fn acme_tables() -> impl Iterator<Item = &'static str> {
    ACME_ROW_COUNTS.iter().map(|(t, _)| *t)
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// A loaded acme database with three throwaway roles made by the support helpers (so they are
/// dropped with the database) and configured by the loader.
struct PgAcme {
    db: PgTestDb,
    accounts: AcmeAccounts,
}

async fn pg_acme() -> PgAcme {
    let db = PgTestDb::create().await;
    let admin = db.admin_client().await;
    fixtures::load_postgres(&admin).await.unwrap();
    let mut roles = Vec::new();
    for (prefix, password) in [
        ("acme_analyst", "analyst_pw"),
        ("acme_sales", "sales_pw"),
        ("acme_exec", "executive_pw"),
    ] {
        // Created with a different password: the loader must set the given one.
        let role = db.create_role(prefix, "placeholder_pw").await;
        roles.push((role, password.to_owned()));
    }
    let [analyst, sales, executive] = <[_; 3]>::try_from(roles).unwrap();
    let accounts = AcmeAccounts {
        analyst,
        sales,
        executive,
    };
    fixtures::create_postgres_accounts(&admin, &db.name, &accounts)
        .await
        .unwrap();
    PgAcme { db, accounts }
}

async fn pg_login(db: &PgTestDb, (user, password): &(String, String)) -> tokio_postgres::Client {
    let mut config: tokio_postgres::Config = db.url().parse().unwrap();
    config.user(user).password(password);
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

async fn pg_count(client: &tokio_postgres::Client, table: &str) -> Result<i64, SqlState> {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .map(|row| row.get(0))
        .map_err(|e| {
            e.code()
                .cloned()
                .unwrap_or_else(|| panic!("expected a database error, got {e}"))
        })
}

/// Asserts that `client` reads exactly `allowed` among the acme tables (full row counts) and gets a
/// permission error on every other one.
async fn pg_assert_reads_exactly(client: &tokio_postgres::Client, allowed: &[&str]) {
    for table in acme_tables().filter(|t| *t != "sales_reps") {
        let got = pg_count(client, table).await;
        if allowed.contains(&table) {
            assert_eq!(got, Ok(expected_count(table)), "reading {table}");
        } else {
            assert_eq!(
                got,
                Err(SqlState::INSUFFICIENT_PRIVILEGE),
                "reading {table}"
            );
        }
    }
}

#[tokio::test]
async fn loading_acme_into_postgres_gives_the_documented_row_counts() {
    let db = PgTestDb::create().await;
    let admin = db.admin_client().await;
    fixtures::load_postgres(&admin).await.unwrap();
    for (table, expected) in ACME_ROW_COUNTS {
        assert_eq!(pg_count(&admin, table).await, Ok(expected), "{table}");
    }
}

#[tokio::test]
async fn the_postgres_sales_account_reads_customer_tables_and_is_refused_financial_summary() {
    let acme = pg_acme().await;
    let sales = pg_login(&acme.db, &acme.accounts.sales).await;
    assert_eq!(pg_count(&sales, "customers").await, Ok(500));
    assert_eq!(
        pg_count(&sales, "financial_summary").await,
        Err(SqlState::INSUFFICIENT_PRIVILEGE)
    );
    pg_assert_reads_exactly(&sales, &SALES_TABLES).await;
    assert_eq!(
        pg_count(&sales, "sales_reps").await,
        Err(SqlState::INSUFFICIENT_PRIVILEGE)
    );
}

#[tokio::test]
async fn the_postgres_executive_account_reads_only_financial_summary() {
    let acme = pg_acme().await;
    let executive = pg_login(&acme.db, &acme.accounts.executive).await;
    pg_assert_reads_exactly(&executive, &EXECUTIVE_TABLES).await;
    assert_eq!(
        pg_count(&executive, "sales_reps").await,
        Err(SqlState::INSUFFICIENT_PRIVILEGE)
    );
}

#[tokio::test]
async fn the_postgres_analyst_reads_orders_and_sales_reps_but_not_their_private_columns() {
    let acme = pg_acme().await;
    let analyst = pg_login(&acme.db, &acme.accounts.analyst).await;
    pg_assert_reads_exactly(&analyst, &ANALYST_TABLES).await;
    let reps: i64 = analyst
        .query_one(
            "SELECT count(*) FROM sales_reps WHERE full_name <> '' AND quota > 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(reps, 20);
    for private in ["salary", "home_phone"] {
        let err = analyst
            .query(&format!("SELECT {private} FROM sales_reps"), &[])
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{private}"
        );
    }
}

#[tokio::test]
async fn postgres_acme_bump_writes_outside_a_read_only_transaction_and_is_refused_inside_one() {
    let acme = pg_acme().await;
    let admin = acme.db.admin_client().await;
    let accounts = acme.accounts.clone();
    let mut expected_rows = 0;
    for account in [&accounts.analyst, &accounts.sales, &accounts.executive] {
        let client = pg_login(&acme.db, account).await;

        let written: i32 = client
            .query_one("SELECT acme_bump()", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(written, 1, "{} writes outside a transaction", account.0);
        expected_rows += 1;
        assert_eq!(pg_count(&admin, "bump_log").await, Ok(expected_rows));

        client.batch_execute("BEGIN READ ONLY").await.unwrap();
        let err = client
            .query_one("SELECT acme_bump()", &[])
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(&SqlState::READ_ONLY_SQL_TRANSACTION),
            "{}: {err}",
            account.0
        );
        client.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(
            pg_count(&admin, "bump_log").await,
            Ok(expected_rows),
            "nothing written inside the read-only transaction"
        );
    }
}

/// Drops roles the loader created (not the support helpers) even when the test fails. Privileges
/// inside the test database must go first, or PostgreSQL refuses to drop the role.
struct PgRolesGuard {
    database_url: String,
    roles: Vec<String>,
}

impl Drop for PgRolesGuard {
    fn drop(&mut self) {
        let url = self.database_url.clone();
        let roles = std::mem::take(&mut self.roles);
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let db = support::db::pg_connect(&url).await;
                let admin = support::db::pg_connect(&support::db::pg_admin_url()).await;
                for role in roles {
                    let _ = db.batch_execute(&format!("DROP OWNED BY {role}")).await;
                    let _ = admin
                        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
                        .await;
                }
            });
        })
        .join();
    }
}

#[tokio::test]
async fn the_postgres_loader_creates_login_roles_that_do_not_exist_yet() {
    let db = PgTestDb::create().await;
    let accounts = AcmeAccounts {
        analyst: (support::db::unique_name("acme_new_a"), "analyst_pw".into()),
        sales: (support::db::unique_name("acme_new_s"), "sales_pw".into()),
        executive: (
            support::db::unique_name("acme_new_e"),
            "executive_pw".into(),
        ),
    };
    let _guard = PgRolesGuard {
        database_url: db.url(),
        roles: vec![
            accounts.analyst.0.clone(),
            accounts.sales.0.clone(),
            accounts.executive.0.clone(),
        ],
    };
    let admin = db.admin_client().await;
    fixtures::load_postgres(&admin).await.unwrap();
    fixtures::create_postgres_accounts(&admin, &db.name, &accounts)
        .await
        .unwrap();
    let logins: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolcanlogin AND rolname = ANY($1)",
            &[&vec![
                accounts.analyst.0.clone(),
                accounts.sales.0.clone(),
                accounts.executive.0.clone(),
            ]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(logins, 3);
    let sales = pg_login(&db, &accounts.sales).await;
    assert_eq!(pg_count(&sales, "orders").await, Ok(5_000));
}

#[tokio::test]
async fn postgres_accounts_are_refused_for_an_admin_connected_to_another_database() {
    let db = PgTestDb::create().await;
    let admin = db.admin_client().await;
    let err = fixtures::create_postgres_accounts(&admin, "postgres", &AcmeAccounts::documented())
        .await
        .unwrap_err();
    assert!(
        matches!(err, fixtures::FixtureError::WrongDatabase { .. }),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// MySQL / MariaDB

struct MysqlAcme {
    db: MysqlTestDb,
    accounts: AcmeAccounts,
}

async fn mysql_acme() -> MysqlAcme {
    let db = MysqlTestDb::create().await;
    let mut admin = db.admin_conn().await;
    fixtures::load_mysql(&mut admin).await.unwrap();
    let mut users = Vec::new();
    for (prefix, password) in [
        ("acme_analyst", "analyst_pw"),
        ("acme_sales", "sales_pw"),
        ("acme_exec", "executive_pw"),
    ] {
        let user = db.create_user(prefix, "placeholder_pw").await;
        users.push((user, password.to_owned()));
    }
    let [analyst, sales, executive] = <[_; 3]>::try_from(users).unwrap();
    let accounts = AcmeAccounts {
        analyst,
        sales,
        executive,
    };
    fixtures::create_mysql_accounts(&mut admin, &db.name, &accounts)
        .await
        .unwrap();
    admin.disconnect().await.unwrap();
    MysqlAcme { db, accounts }
}

async fn mysql_login(db: &MysqlTestDb, (user, password): &(String, String)) -> mysql_async::Conn {
    let opts = mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(&db.url()).unwrap())
        .user(Some(user))
        .pass(Some(password));
    // A wrong password fails here, so logging in also proves the loader set the given one.
    mysql_async::Conn::new(opts).await.unwrap()
}

fn mysql_code(err: mysql_async::Error) -> u16 {
    match err {
        mysql_async::Error::Server(e) => e.code,
        other => panic!("expected a server error, got {other}"),
    }
}

async fn mysql_count(conn: &mut mysql_async::Conn, table: &str) -> Result<i64, u16> {
    conn.query_first::<i64, _>(format!("SELECT COUNT(*) FROM {table}"))
        .await
        .map(|n| n.unwrap_or(-1))
        .map_err(mysql_code)
}

async fn mysql_assert_reads_exactly(conn: &mut mysql_async::Conn, allowed: &[&str]) {
    for table in acme_tables().filter(|t| *t != "sales_reps") {
        let got = mysql_count(conn, table).await;
        if allowed.contains(&table) {
            assert_eq!(got, Ok(expected_count(table)), "reading {table}");
        } else {
            assert_eq!(got, Err(ER_TABLEACCESS_DENIED), "reading {table}");
        }
    }
}

#[tokio::test]
async fn loading_acme_into_mysql_gives_the_documented_row_counts() {
    let db = MysqlTestDb::create().await;
    let mut admin = db.admin_conn().await;
    fixtures::load_mysql(&mut admin).await.unwrap();
    for (table, expected) in ACME_ROW_COUNTS {
        assert_eq!(
            mysql_count(&mut admin, table).await,
            Ok(expected),
            "{table}"
        );
    }
    admin.disconnect().await.unwrap();
}

#[tokio::test]
async fn the_mysql_sales_account_reads_customer_tables_and_is_refused_financial_summary() {
    let acme = mysql_acme().await;
    let mut sales = mysql_login(&acme.db, &acme.accounts.sales).await;
    assert_eq!(mysql_count(&mut sales, "customers").await, Ok(500));
    assert_eq!(
        mysql_count(&mut sales, "financial_summary").await,
        Err(ER_TABLEACCESS_DENIED)
    );
    mysql_assert_reads_exactly(&mut sales, &SALES_TABLES).await;
    assert_eq!(
        mysql_count(&mut sales, "sales_reps").await,
        Err(ER_TABLEACCESS_DENIED)
    );
    sales.disconnect().await.unwrap();
}

#[tokio::test]
async fn the_mysql_executive_account_reads_only_financial_summary() {
    let acme = mysql_acme().await;
    let mut executive = mysql_login(&acme.db, &acme.accounts.executive).await;
    mysql_assert_reads_exactly(&mut executive, &EXECUTIVE_TABLES).await;
    assert_eq!(
        mysql_count(&mut executive, "sales_reps").await,
        Err(ER_TABLEACCESS_DENIED)
    );
    executive.disconnect().await.unwrap();
}

#[tokio::test]
async fn the_mysql_analyst_reads_orders_and_sales_reps_but_not_their_private_columns() {
    let acme = mysql_acme().await;
    let mut analyst = mysql_login(&acme.db, &acme.accounts.analyst).await;
    mysql_assert_reads_exactly(&mut analyst, &ANALYST_TABLES).await;
    let reps: Option<i64> = analyst
        .query_first("SELECT COUNT(*) FROM sales_reps WHERE full_name <> '' AND quota > 0")
        .await
        .unwrap();
    assert_eq!(reps, Some(20));
    for private in ["salary", "home_phone"] {
        let err = analyst
            .query_drop(format!("SELECT {private} FROM sales_reps"))
            .await
            .unwrap_err();
        assert_eq!(mysql_code(err), ER_COLUMNACCESS_DENIED, "{private}");
    }
    analyst.disconnect().await.unwrap();
}

#[tokio::test]
async fn mysql_acme_bump_writes_outside_a_read_only_transaction_and_is_refused_inside_one() {
    let acme = mysql_acme().await;
    let mut admin = acme.db.admin_conn().await;
    let accounts = acme.accounts.clone();
    let mut expected_rows = 0;
    for account in [&accounts.analyst, &accounts.sales, &accounts.executive] {
        let mut conn = mysql_login(&acme.db, account).await;

        let written: Option<i64> = conn.query_first("SELECT acme_bump()").await.unwrap();
        assert_eq!(
            written,
            Some(1),
            "{} writes outside a transaction",
            account.0
        );
        expected_rows += 1;
        assert_eq!(mysql_count(&mut admin, "bump_log").await, Ok(expected_rows));

        conn.query_drop("START TRANSACTION READ ONLY")
            .await
            .unwrap();
        let err = conn
            .query_first::<i64, _>("SELECT acme_bump()")
            .await
            .unwrap_err();
        assert_eq!(
            mysql_code(err),
            ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION,
            "{}",
            account.0
        );
        conn.query_drop("ROLLBACK").await.unwrap();
        assert_eq!(
            mysql_count(&mut admin, "bump_log").await,
            Ok(expected_rows),
            "nothing written inside the read-only transaction"
        );
        conn.disconnect().await.unwrap();
    }
    admin.disconnect().await.unwrap();
}

/// Drops users the loader created (not the support helpers) even when the test fails.
struct MysqlUsersGuard {
    users: Vec<String>,
}

impl Drop for MysqlUsersGuard {
    fn drop(&mut self) {
        let users = std::mem::take(&mut self.users);
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let mut admin = support::db::mysql_connect(&support::db::mysql_admin_url()).await;
                for user in users {
                    for host in ["%", "localhost"] {
                        let _ = admin
                            .query_drop(format!("DROP USER IF EXISTS '{user}'@'{host}'"))
                            .await;
                    }
                }
                let _ = admin.disconnect().await;
            });
        })
        .join();
    }
}

#[tokio::test]
async fn the_mysql_loader_creates_users_that_do_not_exist_yet() {
    let db = MysqlTestDb::create().await;
    let accounts = AcmeAccounts {
        analyst: (support::db::unique_name("acme_new_a"), "analyst_pw".into()),
        sales: (support::db::unique_name("acme_new_s"), "sales_pw".into()),
        executive: (
            support::db::unique_name("acme_new_e"),
            "executive_pw".into(),
        ),
    };
    let _guard = MysqlUsersGuard {
        users: vec![
            accounts.analyst.0.clone(),
            accounts.sales.0.clone(),
            accounts.executive.0.clone(),
        ],
    };
    let mut admin = db.admin_conn().await;
    fixtures::load_mysql(&mut admin).await.unwrap();
    fixtures::create_mysql_accounts(&mut admin, &db.name, &accounts)
        .await
        .unwrap();
    admin.disconnect().await.unwrap();
    let mut executive = mysql_login(&db, &accounts.executive).await;
    assert_eq!(
        mysql_count(&mut executive, "financial_summary").await,
        Ok(36)
    );
    executive.disconnect().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// SQLite, and the same data on all three kinds

#[tokio::test]
async fn a_fresh_sqlite_file_has_the_documented_row_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acme.sqlite");
    fixtures::create_sqlite(&path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    for (table, expected) in ACME_ROW_COUNTS {
        let n: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, expected, "{table}");
    }
}

/// Probes of the generated data, each one text value, written once per dialect: counts by status,
/// sums of money in cents, a date, names, a blob and a JSON field.
const PROBES: [(&str, &str, &str); 10] = [
    (
        "SELECT sum(quantity)::text FROM order_items",
        "SELECT CAST(SUM(quantity) AS CHAR) FROM order_items",
        "SELECT CAST(sum(quantity) AS TEXT) FROM order_items",
    ),
    (
        "SELECT count(*)::text FROM orders WHERE status = 'delivered' AND shipped_at IS NOT NULL",
        "SELECT CAST(COUNT(*) AS CHAR) FROM orders WHERE status = 'delivered' AND shipped_at IS NOT NULL",
        "SELECT CAST(count(*) AS TEXT) FROM orders WHERE status = 'delivered' AND shipped_at IS NOT NULL",
    ),
    (
        "SELECT (sum(total) * 100)::bigint::text FROM orders",
        "SELECT CAST(CAST(SUM(total) * 100 AS SIGNED) AS CHAR) FROM orders",
        "SELECT CAST(CAST(round(sum(total) * 100) AS INTEGER) AS TEXT) FROM orders",
    ),
    (
        "SELECT sum(revenue_cents)::text || '/' || sum(new_customers) || '/' || sum(orders_count) FROM financial_summary",
        "SELECT CONCAT(SUM(revenue_cents), '/', SUM(new_customers), '/', SUM(orders_count)) FROM financial_summary",
        "SELECT sum(revenue_cents) || '/' || sum(new_customers) || '/' || sum(orders_count) FROM financial_summary",
    ),
    (
        "SELECT count(DISTINCT customer_id)::text FROM orders",
        "SELECT CAST(COUNT(DISTINCT customer_id) AS CHAR) FROM orders",
        "SELECT CAST(count(DISTINCT customer_id) AS TEXT) FROM orders",
    ),
    (
        "SELECT to_char(ordered_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM orders WHERE id = 4321",
        "SELECT DATE_FORMAT(ordered_at, '%Y-%m-%d %H:%i:%s') FROM orders WHERE id = 4321",
        "SELECT ordered_at FROM orders WHERE id = 4321",
    ),
    (
        "SELECT name || '|' || external_id || '|' || signup_date FROM customers WHERE id = 123",
        "SELECT CONCAT(name, '|', external_id, '|', signup_date) FROM customers WHERE id = 123",
        "SELECT name || '|' || external_id || '|' || signup_date FROM customers WHERE id = 123",
    ),
    (
        "SELECT name || '|' || unit_price || '|' || upper(encode(thumbnail, 'hex')) FROM products WHERE id = 77",
        "SELECT CONCAT(name, '|', unit_price, '|', HEX(thumbnail)) FROM products WHERE id = 77",
        "SELECT name || '|' || printf('%.2f', unit_price) || '|' || hex(thumbnail) FROM products WHERE id = 77",
    ),
    (
        "SELECT (preferences ->> 'channel') || '|' || (preferences ->> 'newsletter') FROM customers WHERE id = 42",
        "SELECT CONCAT(JSON_UNQUOTE(JSON_EXTRACT(preferences, '$.channel')), '|', JSON_EXTRACT(preferences, '$.newsletter')) FROM customers WHERE id = 42",
        "SELECT (preferences ->> '$.channel') || '|' || (preferences -> '$.newsletter') FROM customers WHERE id = 42",
    ),
    (
        "SELECT full_name || '|' || region || '|' || coalesce(manager_id::text, '-') FROM sales_reps WHERE id = 14",
        "SELECT CONCAT(full_name, '|', region, '|', COALESCE(manager_id, '-')) FROM sales_reps WHERE id = 14",
        "SELECT full_name || '|' || region || '|' || coalesce(manager_id, '-') FROM sales_reps WHERE id = 14",
    ),
];

#[tokio::test]
async fn postgres_mysql_and_sqlite_hold_the_same_logical_data() {
    let pg_db = PgTestDb::create().await;
    let pg = pg_db.admin_client().await;
    fixtures::load_postgres(&pg).await.unwrap();

    let my_db = MysqlTestDb::create().await;
    let mut my = my_db.admin_conn().await;
    fixtures::load_mysql(&mut my).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acme.sqlite");
    fixtures::create_sqlite(&path).unwrap();
    let lite = rusqlite::Connection::open(&path).unwrap();

    for (pg_sql, my_sql, lite_sql) in PROBES {
        let from_pg: String = pg.query_one(pg_sql, &[]).await.unwrap().get(0);
        let from_my: Option<String> = my.query_first(my_sql).await.unwrap();
        let from_lite: String = lite.query_row(lite_sql, [], |r| r.get(0)).unwrap();
        assert_eq!(
            Some(&from_pg),
            from_my.as_ref(),
            "mysql vs postgres: {my_sql}"
        );
        assert_eq!(from_pg, from_lite, "sqlite vs postgres: {lite_sql}");
    }
    my.disconnect().await.unwrap();
}
