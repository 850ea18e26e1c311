//! The audit log: what was asked and changed, by whom, with what outcome, kept in the store's
//! database: its SQLite file, or the shared PostgreSQL store database.
//!
//! Admin changes write their record inside the store's own transaction ([`insert`],
//! [`insert_pg`]), so a change and its record commit or roll back together. Queries go through the
//! group-commit [`AuditWriter`], which batches many records into one transaction. Reads
//! ([`query`], [`count`]; [`query_pg`], [`count_pg`]) are always scoped to one company and page
//! newest first with opaque keyset cursors, the same on both databases.

mod read;
mod writer;

#[cfg(test)]
mod testutil;

pub use read::{
    AuditFilter, AuditPage, DEFAULT_LIMIT, MAX_LIMIT, count, count_pg, query, query_pg,
};
pub use writer::{AuditConnect, AuditSettings, AuditStats, AuditWriter, RETENTION_EVERY};

use crate::model::*;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The columns of a record after `id`, with their checks, in a dialect's integer and real
/// types: one list for the log and staging tables on SQLite and the log on PostgreSQL.
macro_rules! record_columns_ddl {
    ($int:literal, $real:literal) => {
        concat!(
            "    at_us         ",
            $int,
            " NOT NULL,
    company_id    TEXT    NOT NULL,
    actor_id      TEXT,
    action        TEXT    NOT NULL,
    app_id        TEXT,
    datasource_id TEXT,
    target_id     TEXT,
    outcome       TEXT    NOT NULL CHECK (outcome IN ('allowed', 'denied', 'failed')),
    code          TEXT,
    sql           TEXT,
    row_count     ",
            $int,
            " CHECK (row_count IS NULL OR row_count >= 0),
    duration_ms   ",
            $real,
            ",
    request_id    TEXT,
    detail        TEXT
"
        )
    };
}

/// The log's indexes, each created with `$create` (`CREATE INDEX`, …), the same on both
/// databases.
macro_rules! indexes_ddl {
    ($create:literal) => {
        concat!(
            $create, " audit_log_company_at ON audit_log (company_id, at_us, id);\n",
            $create, " audit_log_company_action_at ON audit_log (company_id, action, at_us, id);\n",
            $create, " audit_log_company_actor_at ON audit_log (company_id, actor_id, at_us, id);\n",
            $create, " audit_log_company_app_at ON audit_log (company_id, app_id, at_us, id);\n",
            $create, " audit_log_company_datasource_at ON audit_log (company_id, datasource_id, at_us, id);\n",
            $create, " audit_log_company_outcome_at ON audit_log (company_id, outcome, at_us, id);\n",
        )
    };
}

/// The migration that creates the audit table and its indexes; the store includes it in its
/// migrations.
///
/// `at_us` is microseconds since the Unix epoch: an integer sorts and compares exactly, which the
/// keyset cursor `(at_us, id)` relies on. Every index leads with `company_id` because every read
/// is scoped to one company, and ends with `(at_us, id)` so a filtered page is read in order
/// from the index without sorting. There are deliberately no foreign keys: the record of a
/// deleted app, user or datasource must outlive it.
pub const SCHEMA_SQL: &str = concat!(
    "
CREATE TABLE IF NOT EXISTS audit_log (
    id            TEXT    NOT NULL PRIMARY KEY,
",
    record_columns_ddl!("INTEGER", "REAL"),
    ") STRICT;
"
);

/// The audit table's indexes, one per filter of the audit listing, each ending in `(at_us, id)`
/// so a page is read in index order without sorting (backwards for the newest-first listing).
/// Ascending, so a new record, the newest, lands at the right edge of each index: SQLite then
/// adds a page when one fills instead of rebalancing siblings (the first schema had them
/// descending, which made a lone record's commit write about 19 pages; see BENCHMARKS.md).
pub const INDEXES_SQL: &str = concat!(
    "
DROP INDEX IF EXISTS audit_log_company_at;
DROP INDEX IF EXISTS audit_log_company_action_at;
DROP INDEX IF EXISTS audit_log_company_actor_at;
DROP INDEX IF EXISTS audit_log_company_app_at;
DROP INDEX IF EXISTS audit_log_company_datasource_at;
DROP INDEX IF EXISTS audit_log_company_outcome_at;
",
    indexes_ddl!("CREATE INDEX")
);

/// The PostgreSQL audit table and its indexes: the columns, checks and indexes of
/// [`SCHEMA_SQL`] and [`INDEXES_SQL`] in PostgreSQL's types. The PostgreSQL store runs it in its
/// migrations.
///
/// `id` sorts bytewise (`COLLATE "C"`), as SQLite's text does, so the keyset cursor `(at_us, id)`
/// orders ties the same way on both databases whatever the database's collation. There is no
/// staging table: PostgreSQL writes a batch's index entries to its WAL as small records, not as
/// whole pages, so a batch goes straight into the log. `detail` is the JSON text, as on SQLite.
pub const PG_SCHEMA_SQL: &str = concat!(
    "
CREATE TABLE IF NOT EXISTS audit_log (
    id            TEXT COLLATE \"C\" NOT NULL PRIMARY KEY,
",
    record_columns_ddl!("BIGINT", "DOUBLE PRECISION"),
    ");
",
    indexes_ddl!("CREATE INDEX IF NOT EXISTS")
);

/// The migration that creates the staging table the query writer commits to.
///
/// A record committed alone to `audit_log` changes a leaf page of the table and of each of its
/// seven indexes, and each changed page is a 4 KiB WAL frame: about 45 KB written per query
/// answered at one client. The writer commits query records here instead (a table and one
/// index, both appended to at their right edge) and moves them into `audit_log` in bulk, where
/// a page then takes many records per write (see [`writer`]). Readers see both tables
/// ([`query`], [`count`]), so a record is listed from the moment its commit returns.
///
/// Same columns and checks as `audit_log`, so a record the log would refuse is refused here,
/// to its own caller, and never stops a move. `seq` keeps the order records were committed in.
pub const STAGING_SQL: &str = concat!(
    "
CREATE TABLE IF NOT EXISTS audit_staging (
    seq           INTEGER PRIMARY KEY,
    id            TEXT    NOT NULL UNIQUE,
",
    record_columns_ddl!("INTEGER", "REAL"),
    ") STRICT;
"
);

/// The name of the table [`SCHEMA_SQL`] creates.
pub(crate) const TABLE: &str = "audit_log";
/// The name of the table [`STAGING_SQL`] creates.
pub(crate) const STAGING_TABLE: &str = "audit_staging";

/// The SQL dialect a statement is written for: the placeholders differ, and on SQLite records
/// also sit in the staging table for a moment after their commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The `n`th (1-based) parameter: `?n` or `$n`.
    pub(crate) fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }

    /// The tables records are read from.
    pub(crate) fn tables(self) -> &'static [&'static str] {
        match self {
            Dialect::Sqlite => &[TABLE, STAGING_TABLE],
            Dialect::Postgres => &[TABLE],
        }
    }
}

/// The columns of a record, in the order every statement here binds and reads them.
macro_rules! columns {
    () => {
        "id, at_us, company_id, actor_id, action, app_id, datasource_id, target_id, outcome, \
         code, sql, row_count, duration_ms, request_id, detail"
    };
}
pub(crate) use columns;

/// How a recorded request or change ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Permitted and done.
    Allowed,
    /// Refused by the permission engine or the SQL policy.
    Denied,
    /// Permitted but failed (the database rejected it, timed out, was unreachable).
    Failed,
}

impl Outcome {
    pub const ALL: &'static [Outcome] = &[Outcome::Allowed, Outcome::Denied, Outcome::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
}

impl FromStr for Outcome {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Outcome::ALL
            .iter()
            .copied()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| UnknownValue {
                what: "Outcome",
                value: s.to_owned(),
            })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audit record, serialized in the API's item shape: `company_id` is never sent (the reader
/// is always of that company), `actor_id` is `null` for system actions, and the other absent
/// fields are left out.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditRecord {
    pub id: AuditId,
    #[serde(serialize_with = "serialize_at")]
    pub at: DateTime<Utc>,
    #[serde(skip_serializing)]
    pub company_id: CompanyId,
    pub actor_id: Option<UserId>,
    /// `query`, or one name per kind of change: `app.create`, `app.share`, `user.role`, …
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<AppId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datasource_id: Option<DatasourceId>,
    /// The object a change applied to when it is not an app or datasource (a user, group, token…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_id: Option<String>,
    pub outcome: Outcome,
    /// The error code of a denied or failed request, e.g. `table_not_allowed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// RFC 3339 UTC with a fixed six fractional digits: exactly what is stored, and the same width
/// on every item.
fn serialize_at<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true))
}

impl AuditRecord {
    /// A record with a fresh id, the current time and no optional fields.
    ///
    /// The time is truncated to microseconds, the precision the store keeps, so the record read
    /// back equals the one written.
    pub fn new(
        company_id: CompanyId,
        actor_id: Option<UserId>,
        action: impl Into<String>,
        outcome: Outcome,
    ) -> Self {
        AuditRecord {
            id: AuditId::generate(),
            at: Utc::now().trunc_subsecs(6),
            company_id,
            actor_id,
            action: action.into(),
            app_id: None,
            datasource_id: None,
            target_id: None,
            outcome,
            code: None,
            sql: None,
            row_count: None,
            duration_ms: None,
            request_id: None,
            detail: None,
        }
    }

    /// The record as a reader without access to the app sees it: that the request was made and
    /// how it ended, but not its SQL text or error detail.
    pub fn redacted(self) -> Self {
        AuditRecord {
            sql: None,
            detail: None,
            ..self
        }
    }
}

/// Errors of the audit layer. Only [`AuditError::BadCursor`] is the client's fault (400); every
/// other variant is a service error (503).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("malformed audit cursor")]
    BadCursor,
    #[error("audit database error")]
    Database(#[from] rusqlite::Error),
    #[error("audit database error")]
    Postgres(#[from] postgres::Error),
    /// A stored record the reader cannot turn back into a record (a hand-edited row).
    #[error("unreadable audit record: {0}")]
    Unreadable(String),
    /// A batch or record the writer could not commit; shared by every waiter of that batch.
    #[error("audit write failed")]
    Write(#[source] Arc<WriteError>),
    #[error("audit table missing (migrations not applied)")]
    MissingSchema,
    #[error("audit writer is closed")]
    Closed,
    #[error("could not start the audit writer")]
    Start(#[source] std::io::Error),
    /// The PostgreSQL store database could not be reached when the writer started.
    #[error("could not connect to the audit database: {0}")]
    Connect(String),
    /// Records queued without waiting (`wait_for_commit = false`) that could not be written;
    /// nobody was waiting for them, so shutdown reports them.
    #[error("{count} audit records could not be written")]
    Lost { count: u64 },
}

/// Why the writer could not commit a record or a batch.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Postgres(#[from] postgres::Error),
    /// No connection to the PostgreSQL store database could be made (the connect closure's
    /// message); the writer tries again with its next batch.
    #[error("cannot connect to the audit database: {0}")]
    Connect(String),
}

impl WriteError {
    /// Whether the error is caused by one record's content (a duplicate id, a value the schema
    /// refuses) rather than by the database, so the rest of its batch can still be written.
    pub fn is_record_specific(&self) -> bool {
        match self {
            WriteError::Sqlite(e) => {
                matches!(e, rusqlite::Error::ToSqlConversionFailure(_))
                    || matches!(
                        e.sqlite_error_code(),
                        Some(
                            rusqlite::ErrorCode::ConstraintViolation | rusqlite::ErrorCode::TooBig
                        )
                    )
            }
            // Class 23: integrity constraint violation; class 22: data exception (a NUL byte in
            // a text, a number out of range).
            WriteError::Postgres(e) => e
                .code()
                .is_some_and(|c| c.code().starts_with("23") || c.code().starts_with("22")),
            WriteError::Connect(_) => false,
        }
    }
}

impl crate::code::Coded for AuditError {
    fn code(&self) -> crate::code::Code {
        match self {
            AuditError::BadCursor => crate::code::Code::BadRequest,
            _ => crate::code::Code::Unavailable,
        }
    }

    fn message(&self) -> String {
        match self {
            AuditError::BadCursor => "malformed cursor".into(),
            _ => "the audit log could not be written; the answer was withheld".into(),
        }
    }
}

const INSERT_SQL: &str = concat!(
    "INSERT INTO audit_log (",
    columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
);

/// Stages a record unless `audit_log` already holds its id: the staging table's own `UNIQUE`
/// cannot see the log, and a duplicate found only when moving would stop the move.
const STAGE_SQL: &str = concat!(
    "INSERT INTO audit_staging (",
    columns!(),
    ") SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15 \
     WHERE NOT EXISTS (SELECT 1 FROM audit_log WHERE id = ?1)"
);

/// Inserts any number of records in one statement on PostgreSQL: each parameter is the array of
/// one column's values (in [`columns!`] order), so the statement is the same for every batch
/// and is prepared once per connection, and a batch costs one round trip.
pub(crate) const INSERT_ROWS_PG_SQL: &str = concat!(
    "INSERT INTO audit_log (",
    columns!(),
    ") SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[], \
     $13::float8[], $14::text[], $15::text[])"
);

/// Inserts one record inside the caller's transaction (for admin changes), so it commits or rolls
/// back with the change it records.
pub fn insert(tx: &rusqlite::Transaction<'_>, rec: &AuditRecord) -> rusqlite::Result<()> {
    bind_and_run(tx, INSERT_SQL, rec).map(drop)
}

/// [`insert`] for the PostgreSQL store: one record inside the store's change transaction.
pub fn insert_pg(
    tx: &mut postgres::Transaction<'_>,
    rec: &AuditRecord,
) -> Result<(), postgres::Error> {
    insert_rows_pg(tx, INSERT_ROWS_PG_SQL, &[rec]).map(drop)
}

/// Inserts `recs` in one statement ([`INSERT_ROWS_PG_SQL`], or that statement prepared);
/// returns the rows inserted.
pub(crate) fn insert_rows_pg<C, S>(
    client: &mut C,
    statement: &S,
    recs: &[&AuditRecord],
) -> Result<u64, postgres::Error>
where
    C: postgres::GenericClient,
    S: postgres::ToStatement + ?Sized,
{
    let details: Vec<Option<String>> = recs.iter().map(|r| detail_text(r)).collect();
    let mut columns: Vec<Vec<Field<'_>>> = (0..COLUMN_COUNT)
        .map(|_| Vec::with_capacity(recs.len()))
        .collect();
    for (rec, detail) in recs.iter().zip(&details) {
        for (column, field) in columns.iter_mut().zip(fields(rec, detail.as_deref())) {
            column.push(field);
        }
    }
    let params: Vec<&(dyn postgres::types::ToSql + Sync)> = columns
        .iter()
        .map(|c| c as &(dyn postgres::types::ToSql + Sync))
        .collect();
    client.execute(statement, &params)
}

/// Stages one record for the query writer (see [`STAGING_SQL`]). A record whose id is already in
/// the log fails as a primary-key violation, as [`insert`] would; one whose id is already staged
/// fails on the staging table's `UNIQUE`. Both are constraint violations, which the writer
/// treats as the record's own fault.
pub(crate) fn stage(conn: &rusqlite::Connection, rec: &AuditRecord) -> rusqlite::Result<()> {
    match bind_and_run(conn, STAGE_SQL, rec)? {
        0 => Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY),
            Some(format!("audit record {} is already in the log", rec.id)),
        )),
        _ => Ok(()),
    }
}

/// Runs `sql` (one of the inserts above) with the record's fields bound in [`columns!`] order;
/// returns the rows inserted.
fn bind_and_run(
    conn: &rusqlite::Connection,
    sql: &str,
    rec: &AuditRecord,
) -> rusqlite::Result<usize> {
    let detail = detail_text(rec);
    let mut stmt = conn.prepare_cached(sql)?;
    stmt.execute(rusqlite::params_from_iter(fields(rec, detail.as_deref())))
}

/// The number of columns [`columns!`] lists.
const COLUMN_COUNT: usize = 15;

/// One stored value, bound the same way by both databases (each has a `ToSql` for it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Field<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Real(Option<f64>),
}

/// The stored form of a record's `detail`: its JSON text (a bare string stays a JSON string).
fn detail_text(rec: &AuditRecord) -> Option<String> {
    rec.detail.as_ref().map(serde_json::Value::to_string)
}

/// A record's values in [`columns!`] order; `detail` is [`detail_text`] of the record.
fn fields<'a>(rec: &'a AuditRecord, detail: Option<&'a str>) -> [Field<'a>; COLUMN_COUNT] {
    use Field::*;
    // Row counts beyond i64 cannot happen in practice; saturate rather than fail the record.
    let row_count = rec.row_count.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    [
        Text(Some(rec.id.as_str())),
        Int(Some(rec.at.timestamp_micros())),
        Text(Some(rec.company_id.as_str())),
        Text(rec.actor_id.as_ref().map(UserId::as_str)),
        Text(Some(rec.action.as_str())),
        Text(rec.app_id.as_ref().map(AppId::as_str)),
        Text(rec.datasource_id.as_ref().map(DatasourceId::as_str)),
        Text(rec.target_id.as_deref()),
        Text(Some(rec.outcome.as_str())),
        Text(rec.code.as_deref()),
        Text(rec.sql.as_deref()),
        Int(row_count),
        Real(rec.duration_ms),
        Text(rec.request_id.as_deref()),
        Text(detail),
    ]
}

impl rusqlite::ToSql for Field<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(match *self {
            Field::Text(Some(s)) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Field::Int(Some(n)) => ToSqlOutput::Owned(Value::Integer(n)),
            Field::Real(Some(x)) => ToSqlOutput::Owned(Value::Real(x)),
            Field::Text(None) | Field::Int(None) | Field::Real(None) => {
                ToSqlOutput::Owned(Value::Null)
            }
        })
    }
}

impl postgres::types::ToSql for Field<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        // Checked against the parameter's type, as an array's elements are not.
        match self {
            Field::Text(v) => v.to_sql_checked(ty, out),
            Field::Int(v) => v.to_sql_checked(ty, out),
            Field::Real(v) => v.to_sql_checked(ty, out),
        }
    }

    fn accepts(ty: &postgres::types::Type) -> bool {
        <Option<&str> as postgres::types::ToSql>::accepts(ty)
            || <Option<i64> as postgres::types::ToSql>::accepts(ty)
            || <Option<f64> as postgres::types::ToSql>::accepts(ty)
    }

    postgres::types::to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn a_record_inserted_in_a_rolled_back_transaction_disappears_with_it() {
        let (_dir, _path, mut conn) = fresh_db();
        let company = CompanyId::generate();

        let tx = conn.transaction().unwrap();
        insert(&tx, &sample(&company, "app.create")).unwrap();
        tx.rollback().unwrap();
        assert_eq!(count(&conn, &company).unwrap(), 0);

        let tx = conn.transaction().unwrap();
        insert(&tx, &sample(&company, "app.create")).unwrap();
        tx.commit().unwrap();
        assert_eq!(count(&conn, &company).unwrap(), 1);
    }

    on_both_databases! {
        fn a_record_with_every_field_set_reads_back_equal(db) {
            let company = CompanyId::generate();
            let rec = full_record(&company);
            db.insert_all(std::slice::from_ref(&rec));
            let page = db.query(&AuditFilter::new(company)).unwrap();
            assert_eq!(page.items, vec![rec]);
        }
    }

    on_both_databases! {
        /// rusqlite's own JSON mapping would store a bare string as text it cannot read back.
        fn a_json_string_detail_round_trips_as_a_string(db) {
            let company = CompanyId::generate();
            let mut rec = sample(&company, "query");
            rec.detail = Some(serde_json::json!("plain text"));
            db.insert_all(std::slice::from_ref(&rec));
            let page = db.query(&AuditFilter::new(company)).unwrap();
            assert_eq!(page.items[0].detail, rec.detail);
        }
    }

    #[test]
    fn a_record_inserted_in_a_rolled_back_postgres_transaction_disappears_with_it() {
        let db = PgDb::create();
        let company = CompanyId::generate();
        let n = off_runtime(|| {
            let mut client = db.client();
            let mut tx = client.transaction().unwrap();
            insert_pg(&mut tx, &sample(&company, "app.create")).unwrap();
            tx.rollback().unwrap();
            let before = count_pg(&mut client, &company).unwrap();
            let mut tx = client.transaction().unwrap();
            insert_pg(&mut tx, &sample(&company, "app.create")).unwrap();
            tx.commit().unwrap();
            (before, count_pg(&mut client, &company).unwrap())
        });
        assert_eq!(n, (0, 1));
    }

    #[test]
    fn the_postgres_schema_refuses_what_sqlites_refuses() {
        let db = PgDb::create();
        off_runtime(|| {
            let mut client = db.client();
            for bad in [
                "INSERT INTO audit_log (id, at_us, company_id, action, outcome) \
                 VALUES ('aud_x', 0, 'co_x', 'query', 'maybe')",
                "INSERT INTO audit_log (id, at_us, company_id, action, outcome, row_count) \
                 VALUES ('aud_y', 0, 'co_x', 'query', 'allowed', -1)",
            ] {
                assert!(client.batch_execute(bad).is_err(), "{bad}");
            }
            // Applying it again (a migration re-run) changes nothing.
            client.batch_execute(PG_SCHEMA_SQL).unwrap();
        });
    }

    #[test]
    fn serialized_records_have_the_api_item_shape() {
        let company = CompanyId::generate();
        let mut rec = sample(&company, "query");
        rec.outcome = Outcome::Denied;
        rec.code = Some("table_not_allowed".into());
        rec.actor_id = None;
        let v = serde_json::to_value(&rec).unwrap();
        let obj = v.as_object().unwrap();

        assert!(
            !obj.contains_key("company_id"),
            "company is implied by the reader"
        );
        assert_eq!(
            obj["actor_id"],
            serde_json::Value::Null,
            "actor is always present"
        );
        assert_eq!(obj["outcome"], "denied");
        assert_eq!(obj["code"], "table_not_allowed");
        assert_eq!(obj["id"], rec.id.as_str());
        for absent in ["app_id", "datasource_id", "target_id", "sql", "row_count"] {
            assert!(!obj.contains_key(absent), "{absent} should be skipped");
        }
        let at = obj["at"].as_str().unwrap();
        assert!(at.ends_with('Z'), "{at} is UTC");
        assert_eq!(DateTime::parse_from_rfc3339(at).unwrap(), rec.at);
    }

    #[test]
    fn redaction_hides_sql_and_detail_but_keeps_the_outcome() {
        let company = CompanyId::generate();
        let rec = full_record(&company);
        let red = rec.clone().redacted();
        assert_eq!(red.sql, None);
        assert_eq!(red.detail, None);
        assert_eq!(red.code, rec.code);
        assert_eq!(red.outcome, rec.outcome);
        assert_eq!(red.app_id, rec.app_id);
        let v = serde_json::to_value(&red).unwrap();
        assert!(v.get("sql").is_none() && v.get("detail").is_none());
    }

    #[test]
    fn outcomes_round_trip_through_their_names_and_refuse_unknown_ones() {
        for o in Outcome::ALL {
            assert_eq!(o.as_str().parse::<Outcome>().unwrap(), *o);
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
            let back: Outcome = serde_json::from_value(o.as_str().into()).unwrap();
            assert_eq!(back, *o);
        }
        assert!("Allowed".parse::<Outcome>().is_err());
    }

    #[test]
    fn the_schema_refuses_an_unknown_outcome() {
        let (_dir, _path, conn) = fresh_db();
        let err = conn.execute(
            "INSERT INTO audit_log (id, at_us, company_id, action, outcome) \
             VALUES ('aud_x', 0, 'co_x', 'query', 'maybe')",
            [],
        );
        assert!(err.is_err());
    }
}
