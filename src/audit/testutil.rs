//! Helpers shared by the audit tests: a fresh store file with the audit schema, and records.

use super::*;
use rusqlite::Connection;
use std::path::PathBuf;
use tempfile::TempDir;

/// A fresh `sluice.db` in its own temporary directory, in WAL mode like the store's, with the
/// audit schema applied. Keep the `TempDir` alive for the test's duration.
pub fn fresh_db() -> (TempDir, PathBuf, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.db");
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch(SCHEMA_SQL).unwrap();
    conn.execute_batch(INDEXES_SQL).unwrap();
    conn.execute_batch(STAGING_SQL).unwrap();
    (dir, path, conn)
}

/// A minimal allowed record of `action` in `company`.
pub fn sample(company: &CompanyId, action: &str) -> AuditRecord {
    AuditRecord::new(
        company.clone(),
        Some(UserId::generate()),
        action,
        Outcome::Allowed,
    )
}

/// A record with every optional field set.
pub fn full_record(company: &CompanyId) -> AuditRecord {
    AuditRecord {
        app_id: Some(AppId::generate()),
        datasource_id: Some(DatasourceId::generate()),
        target_id: Some("usr_target".into()),
        outcome: Outcome::Failed,
        code: Some("query_failed".into()),
        sql: Some("SELECT * FROM t WHERE x = 'é'".into()),
        row_count: Some(42),
        duration_ms: Some(12.625),
        request_id: Some("req-1".into()),
        detail: Some(serde_json::json!({"message": "relation does not exist", "n": [1, 2]})),
        ..sample(company, "query")
    }
}

/// Inserts records in one committed transaction.
pub fn insert_all(conn: &mut Connection, recs: &[AuditRecord]) {
    let tx = conn.transaction().unwrap();
    for r in recs {
        insert(&tx, r).unwrap();
    }
    tx.commit().unwrap();
}
