//! The PostgreSQL sink: each batch is one multi-row INSERT (one statement, one transaction, one
//! round trip) into the log of the shared store database.
//!
//! There is no staging table: PostgreSQL logs a batch's index entries as small WAL records, not
//! as whole pages, so the bulk move that pays off on SQLite would only write each record twice.
//! Durability is the server's: a commit returns when PostgreSQL's `synchronous_commit` says it
//! is durable (`fsync` has no meaning here).
//!
//! A connection lost (the server restarted, a network cut, the backend terminated) fails the
//! batch that found it, to that batch's waiters; the next batch connects again through the
//! closure the writer was given, so the writer recovers by itself once the database is back.
//! The failed batch is not retried on a new connection: whether its commit reached the server
//! before the connection broke cannot be known, and a retry could record it twice.

use super::retention::{companies_sql, expire_sql};
use super::{AuditConnect, Sink};
use crate::audit::{
    AuditError, AuditRecord, Dialect, INSERT_ROWS_PG_SQL, TABLE, WriteError, insert_rows_pg,
};
use std::time::Duration;

pub(super) struct PgSink {
    connect: AuditConnect,
    /// The connection and the batch insert prepared on it; `None` after a failure that may
    /// have broken it, until the next write connects again.
    conn: Option<(postgres::Client, postgres::Statement)>,
}

impl PgSink {
    /// Connects and checks that the audit table exists.
    pub(super) fn open(connect: AuditConnect) -> Result<PgSink, AuditError> {
        let mut sink = PgSink {
            connect,
            conn: None,
        };
        let (client, _) = sink.connection().map_err(|e| match e {
            WriteError::Connect(msg) => AuditError::Connect(msg),
            WriteError::Postgres(e)
                if e.code() == Some(&postgres::error::SqlState::UNDEFINED_TABLE) =>
            {
                AuditError::MissingSchema
            }
            WriteError::Postgres(e) => AuditError::Postgres(e),
            WriteError::Sqlite(e) => AuditError::Database(e),
        })?;
        let exists: bool = client
            .query_one("SELECT to_regclass('audit_log') IS NOT NULL", &[])?
            .try_get(0)?;
        if !exists {
            return Err(AuditError::MissingSchema);
        }
        Ok(sink)
    }

    /// The open connection, or a new one (with the batch insert prepared on it).
    fn connection(&mut self) -> Result<(&mut postgres::Client, &postgres::Statement), WriteError> {
        if self.conn.as_ref().is_some_and(|(c, _)| c.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let mut client = (self.connect)().map_err(WriteError::Connect)?;
            let insert = client.prepare(INSERT_ROWS_PG_SQL)?;
            self.conn = Some((client, insert));
        }
        let (client, insert) = self.conn.as_mut().expect("connected above");
        Ok((client, insert))
    }

    /// Runs `f` on the connection. An error that is not a record's own fault drops the
    /// connection, so the next call connects again instead of finding it broken.
    fn with<T>(
        &mut self,
        f: impl FnOnce(&mut postgres::Client, &postgres::Statement) -> Result<T, postgres::Error>,
    ) -> Result<T, WriteError> {
        let (client, insert) = self.connection()?;
        let result = f(client, insert).map_err(WriteError::from);
        if let Err(e) = &result
            && !e.is_record_specific()
        {
            self.conn = None;
        }
        result
    }
}

impl Sink for PgSink {
    fn write(&mut self, recs: &[&AuditRecord], _busy: Duration) -> Result<(), WriteError> {
        // One statement is one transaction: all of the batch or none of it.
        self.with(|client, insert| insert_rows_pg(client, insert, recs).map(drop))
    }

    fn companies(&mut self) -> Result<Vec<String>, WriteError> {
        self.with(|client, _| {
            client
                .query(companies_sql(TABLE).as_str(), &[])?
                .iter()
                .map(|r| r.try_get(0))
                .collect()
        })
    }

    fn expire(&mut self, company: &str, cutoff_us: i64, max: usize) -> Result<usize, WriteError> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let n = self.with(|client, _| {
            client.execute(
                expire_sql(Dialect::Postgres, TABLE).as_str(),
                &[&company, &cutoff_us, &max],
            )
        })?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}
