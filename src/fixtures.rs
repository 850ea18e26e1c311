//! The `acme` sample company fixture: embedded SQL and loaders for PostgreSQL, MySQL/MariaDB and
//! SQLite, plus the three service accounts (analyst, sales, executive) of seed 002.
//!
//! The SQL lives in `fixtures/acme/<kind>/` (see `fixtures/README.md`) and is generated in the
//! database itself, deterministically, so the files stay small and every kind holds the same data.
//! The fixture text is trusted, so it is sent as multi-statement batches. Account names and
//! passwords are not SQL text: they are checked against narrow alphabets before being inlined,
//! because role DDL cannot take bind parameters.

use std::path::Path;

use mysql_async::prelude::Queryable;

/// PostgreSQL schema: tables, enum types, `bump_log` and the writing function `acme_bump()`.
pub const POSTGRES_SCHEMA: &str = include_str!("../fixtures/acme/postgres/schema.sql");
/// PostgreSQL data, generated with `generate_series`.
pub const POSTGRES_DATA: &str = include_str!("../fixtures/acme/postgres/data.sql");
/// PostgreSQL grants, with `{{database}}`, `{{analyst}}`, `{{sales}}`, `{{executive}}` placeholders.
pub const POSTGRES_GRANTS: &str = include_str!("../fixtures/acme/postgres/grants.sql");

/// MySQL/MariaDB schema (tables and `bump_log`).
pub const MYSQL_SCHEMA: &str = include_str!("../fixtures/acme/mysql/schema.sql");
/// MySQL/MariaDB data, generated with recursive CTEs.
pub const MYSQL_DATA: &str = include_str!("../fixtures/acme/mysql/data.sql");
/// The stored function `acme_bump()`: one statement, sent on its own (no DELIMITER on the wire).
pub const MYSQL_FUNCTION: &str = include_str!("../fixtures/acme/mysql/function.sql");
/// MySQL/MariaDB grants, with the same placeholders as [`POSTGRES_GRANTS`] (accounts are
/// `'user'@'host'`).
pub const MYSQL_GRANTS: &str = include_str!("../fixtures/acme/mysql/grants.sql");

/// SQLite schema (no accounts, no functions).
pub const SQLITE_SCHEMA: &str = include_str!("../fixtures/acme/sqlite/schema.sql");
/// SQLite data, generated with a recursive CTE.
pub const SQLITE_DATA: &str = include_str!("../fixtures/acme/sqlite/data.sql");

/// Every acme table with the number of rows a fresh load holds, on all three kinds.
pub const ACME_ROW_COUNTS: [(&str, i64); 8] = [
    ("sales_reps", 20),
    ("customers", 500),
    ("products", 200),
    ("orders", 5_000),
    ("order_items", 15_000),
    ("invoices", 5_000),
    ("financial_summary", 36),
    ("bump_log", 0),
];

/// MySQL accounts are a user at a host; both are created, like the test support helpers do,
/// because an anonymous `''@'localhost'` would otherwise shadow `user@'%'` on local connections.
const MYSQL_HOSTS: [&str; 2] = ["%", "localhost"];

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("invalid {what} name {name:?}")]
    InvalidName { what: &'static str, name: String },
    #[error("password of account {0:?} has characters outside the fixture alphabet")]
    InvalidPassword(String),
    #[error("the admin client is connected to {connected:?}, not {expected:?}")]
    WrongDatabase { expected: String, connected: String },
    #[error("postgres fixture failed: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("mysql fixture failed: {0}")]
    Mysql(#[from] mysql_async::Error),
    #[error("sqlite fixture failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("sqlite fixture file: {0}")]
    Io(#[from] std::io::Error),
}

/// The three service accounts, each as (user, password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeAccounts {
    pub analyst: (String, String),
    pub sales: (String, String),
    pub executive: (String, String),
}

impl AcmeAccounts {
    /// The names and passwords the docker-compose services use.
    pub fn documented() -> AcmeAccounts {
        AcmeAccounts {
            analyst: ("analyst".to_owned(), "analyst_pw".to_owned()),
            sales: ("sales".to_owned(), "sales_pw".to_owned()),
            executive: ("executive".to_owned(), "executive_pw".to_owned()),
        }
    }

    fn all(&self) -> [&(String, String); 3] {
        [&self.analyst, &self.sales, &self.executive]
    }

    /// Checks every name and password before any of them is inlined into SQL.
    fn validate(&self) -> Result<(), FixtureError> {
        for (user, password) in self.all() {
            check_identifier("account", user)?;
            if !is_fixture_password(password) {
                return Err(FixtureError::InvalidPassword(user.clone()));
            }
        }
        Ok(())
    }
}

/// Loads the acme schema and data into the database `admin` is connected to (which must be empty).
/// One simple-query batch, so the load is all-or-nothing.
pub async fn load_postgres(admin: &tokio_postgres::Client) -> Result<(), FixtureError> {
    admin
        .batch_execute(&format!("{POSTGRES_SCHEMA}\n{POSTGRES_DATA}"))
        .await?;
    Ok(())
}

/// Creates the three login roles (or resets the password of existing ones) and grants them what
/// seed 002 describes on the acme database `database`, which `admin` must be connected to:
/// table grants are per database.
pub async fn create_postgres_accounts(
    admin: &tokio_postgres::Client,
    database: &str,
    accounts: &AcmeAccounts,
) -> Result<(), FixtureError> {
    check_identifier("database", database)?;
    accounts.validate()?;
    let connected: String = admin
        .query_one("SELECT current_database()::text", &[])
        .await?
        .get(0);
    if connected != database {
        return Err(FixtureError::WrongDatabase {
            expected: database.to_owned(),
            connected,
        });
    }
    for (user, password) in accounts.all() {
        let exists = admin
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[user])
            .await?
            .is_some();
        let verb = if exists { "ALTER" } else { "CREATE" };
        admin
            .batch_execute(&format!(
                "{verb} ROLE \"{user}\" WITH LOGIN PASSWORD '{password}'"
            ))
            .await?;
    }
    let quote = |name: &str| format!("\"{name}\"");
    admin
        .batch_execute(&render_grants(
            POSTGRES_GRANTS,
            &quote(database),
            [
                quote(&accounts.analyst.0),
                quote(&accounts.sales.0),
                quote(&accounts.executive.0),
            ],
        ))
        .await?;
    Ok(())
}

/// Loads the acme schema, data and `acme_bump()` into the database selected on `admin` (which must
/// be empty). MySQL DDL commits implicitly, so a failed load leaves a partial database behind.
pub async fn load_mysql(admin: &mut mysql_async::Conn) -> Result<(), FixtureError> {
    admin.query_drop(MYSQL_SCHEMA).await?;
    admin.query_drop(MYSQL_DATA).await?;
    admin.query_drop(MYSQL_FUNCTION).await?;
    Ok(())
}

/// Creates the three accounts at `'%'` and `'localhost'` (or resets the password of existing ones)
/// and grants them what seed 002 describes on the acme database `database`.
pub async fn create_mysql_accounts(
    admin: &mut mysql_async::Conn,
    database: &str,
    accounts: &AcmeAccounts,
) -> Result<(), FixtureError> {
    check_identifier("database", database)?;
    accounts.validate()?;
    for host in MYSQL_HOSTS {
        for (user, password) in accounts.all() {
            admin
                .query_drop(format!(
                    "CREATE USER IF NOT EXISTS '{user}'@'{host}' IDENTIFIED BY '{password}'; \
                     ALTER USER '{user}'@'{host}' IDENTIFIED BY '{password}'"
                ))
                .await?;
        }
        let account = |user: &str| format!("'{user}'@'{host}'");
        admin
            .query_drop(render_grants(
                MYSQL_GRANTS,
                &format!("`{database}`"),
                [
                    account(&accounts.analyst.0),
                    account(&accounts.sales.0),
                    account(&accounts.executive.0),
                ],
            ))
            .await?;
    }
    Ok(())
}

/// Writes a fresh acme SQLite database at `path`, replacing any file there. It is built under a
/// temporary name next to `path` and renamed into place, so `path` never holds a half-loaded file.
pub fn create_sqlite(path: &Path) -> Result<(), FixtureError> {
    let Some(file_name) = path.file_name() else {
        return Err(FixtureError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the sqlite path has no file name",
        )));
    };
    let mut partial_name = file_name.to_os_string();
    partial_name.push(".partial");
    let partial = path.with_file_name(partial_name);
    remove_if_present(&partial)?;
    let built = build_sqlite(&partial);
    if let Err(e) = built {
        // Best effort: the build error is the one worth reporting.
        let _ = remove_if_present(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, path)?;
    Ok(())
}

fn build_sqlite(path: &Path) -> Result<(), FixtureError> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.execute_batch("PRAGMA foreign_keys = ON")?;
    let tx = conn.transaction()?;
    tx.execute_batch(SQLITE_SCHEMA)?;
    tx.execute_batch(SQLITE_DATA)?;
    tx.commit()?;
    conn.close().map_err(|(_, e)| e)?;
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<(), std::io::Error> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Replaces the grant placeholders with already quoted names; `accounts` is analyst, sales,
/// executive in that order.
fn render_grants(template: &str, database: &str, accounts: [String; 3]) -> String {
    let [analyst, sales, executive] = accounts;
    template
        .replace("{{database}}", database)
        .replace("{{analyst}}", &analyst)
        .replace("{{sales}}", &sales)
        .replace("{{executive}}", &executive)
}

/// Lowercase so that quoted and unquoted PostgreSQL spellings name the same role, and short enough
/// for both servers (MySQL 8 user names stop at 32 characters).
fn check_identifier(what: &'static str, name: &str) -> Result<(), FixtureError> {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if starts_well && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(FixtureError::InvalidName {
            what,
            name: name.to_owned(),
        })
    }
}

/// Letters, digits and punctuation that needs no escaping inside a single-quoted literal on either
/// server, whatever `standard_conforming_strings` or `NO_BACKSLASH_ESCAPES` say.
fn is_fixture_password(password: &str) -> bool {
    !password.is_empty()
        && password.len() <= 128
        && password
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.,:;!?@#%^&*+=~/()[]{}<>|".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_grants_leave_no_placeholder_behind() {
        for template in [POSTGRES_GRANTS, MYSQL_GRANTS] {
            let sql = render_grants(
                template,
                "\"db\"",
                ["\"a\"".to_owned(), "\"s\"".to_owned(), "\"e\"".to_owned()],
            );
            assert!(!sql.contains("{{"), "placeholder left in:\n{sql}");
            assert!(sql.contains("\"a\"") && sql.contains("\"s\"") && sql.contains("\"e\""));
        }
    }

    #[test]
    fn the_sales_account_is_granted_only_customer_tables() {
        let sql = render_grants(
            POSTGRES_GRANTS,
            "db",
            ["ANALYST".to_owned(), "SALES".to_owned(), "EXEC".to_owned()],
        );
        let sales_selects: Vec<&str> = sql
            .lines()
            .filter(|l| l.starts_with("GRANT SELECT") && l.contains("SALES"))
            .collect();
        assert_eq!(
            sales_selects,
            ["GRANT SELECT ON customers, orders, order_items TO SALES;"]
        );
    }

    #[test]
    fn identifiers_outside_lowercase_words_are_rejected() {
        for bad in [
            "",
            "Analyst",
            "a-b",
            "a b",
            "x\"; DROP",
            "1abc",
            "a'b",
            &"a".repeat(64),
        ] {
            assert!(
                check_identifier("account", bad).is_err(),
                "{bad:?} accepted"
            );
        }
        for good in ["analyst", "_x", "acme_analyst_123_0_4567"] {
            assert!(
                check_identifier("account", good).is_ok(),
                "{good:?} rejected"
            );
        }
    }

    #[test]
    fn passwords_that_would_need_escaping_are_rejected() {
        for bad in [
            "",
            "it's",
            "back\\slash",
            "dollar$",
            "two words",
            "quote\"",
            "é",
        ] {
            assert!(!is_fixture_password(bad), "{bad:?} accepted");
        }
        for good in ["analyst_pw", "S3cret!-pw", "a.b,c:d"] {
            assert!(is_fixture_password(good), "{good:?} rejected");
        }
    }

    #[test]
    fn accounts_with_an_unsafe_password_fail_validation_naming_the_account() {
        let mut accounts = AcmeAccounts::documented();
        accounts.sales.1 = "x'; DROP ROLE postgres; --".to_owned();
        match accounts.validate() {
            Err(FixtureError::InvalidPassword(user)) => assert_eq!(user, "sales"),
            other => panic!("expected InvalidPassword, got {other:?}"),
        }
        assert!(AcmeAccounts::documented().validate().is_ok());
    }

    #[test]
    fn a_fresh_sqlite_file_holds_the_documented_row_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acme.sqlite");
        std::fs::write(&path, b"not a database").unwrap();
        create_sqlite(&path).unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        for (table, expected) in ACME_ROW_COUNTS {
            let n: i64 = conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, expected, "rows in {table}");
        }
        assert!(!dir.path().join("acme.sqlite.partial").exists());
    }
}
