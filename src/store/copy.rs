//! `sluice store copy`: moves an installation from the embedded SQLite store to a PostgreSQL
//! store shared by several replicas.
//!
//! The source is opened through [`Store::open`], so an older data directory is migrated first;
//! the target through [`Store::open_postgres`], so it gets its schema from the PostgreSQL store's
//! own migrations. Then every row is copied in ONE transaction on the target, table by table, as
//! [`TABLES`] lists them: the control plane in foreign-key order, then the audit log (the SQLite
//! `audit_log` and the records still in `audit_staging` both go into PostgreSQL's `audit_log`).
//!
//! Values are copied as they are stored. Datasource passwords and TLS client keys stay sealed:
//! their ciphertexts move byte for byte, so every replica must run with this installation's
//! master key (the copy checks that the key it was given opens every one of them, as a replica
//! would at start). Token hashes move as they are, so every token keeps working.
//!
//! Each value is converted to the type the target column has (read from the target, not assumed):
//! text, bytes, integers, booleans, floats, JSON, and timestamps (RFC 3339 text or microseconds).
//!
//! A target with any row in any of these tables is refused: the copy never merges.

use postgres::types::{ToSql, Type};
use rusqlite::types::ValueRef;
use std::path::{Path, PathBuf};

use super::{MasterKey, SecretField, Store, StoreError, unseal};
use crate::config::StoreUrl;

/// One table of the target and where its rows come from.
#[derive(Debug)]
pub struct Table {
    /// The table's name, the same in both stores.
    pub name: &'static str,
    /// The columns copied, the same names in both stores.
    pub columns: &'static [&'static str],
    /// The SQLite tables read, in this order, each with the `ORDER BY` its rows are read in.
    pub sources: &'static [(&'static str, &'static str)],
}

/// Every table copied, parents before children (the target's foreign keys hold at every step).
/// A store migration that adds a column or a table must add it here: a unit test compares this
/// list with the SQLite schema.
pub const TABLES: &[Table] = &[
    Table {
        name: "companies",
        columns: &["id", "name", "redact_private_audit", "created_at"],
        sources: &[("companies", "id")],
    },
    Table {
        name: "users",
        columns: &[
            "id",
            "company_id",
            "kind",
            "email",
            "name",
            "role",
            "created_at",
        ],
        sources: &[("users", "id")],
    },
    Table {
        name: "tokens",
        columns: &[
            "id",
            "company_id",
            "user_id",
            "name",
            "hash",
            "created_at",
            "expires_at",
        ],
        sources: &[("tokens", "id")],
    },
    Table {
        name: "groups",
        columns: &["id", "company_id", "name", "created_at"],
        sources: &[("groups", "id")],
    },
    Table {
        name: "group_members",
        columns: &["group_id", "user_id"],
        sources: &[("group_members", "group_id, user_id")],
    },
    Table {
        name: "datasources",
        columns: &[
            "id",
            "company_id",
            "name",
            "description",
            "kind",
            "visibility",
            "owner_id",
            "connection",
            "password_enc",
            "policy",
            "pool_max_size",
            "generation",
            "created_at",
            "updated_at",
            "tls_client_key_enc",
        ],
        sources: &[("datasources", "id")],
    },
    Table {
        name: "apps",
        columns: &[
            "id",
            "company_id",
            "name",
            "description",
            "visibility",
            "owner_id",
            "created_at",
            "updated_at",
        ],
        sources: &[("apps", "id")],
    },
    Table {
        name: "app_datasources",
        columns: &["app_id", "datasource_id", "attached_by", "seq"],
        sources: &[("app_datasources", "seq, app_id, datasource_id")],
    },
    Table {
        name: "members",
        columns: &[
            "company_id",
            "object_id",
            "principal_id",
            "principal_kind",
            "role",
        ],
        sources: &[("members", "object_id, principal_id")],
    },
    Table {
        name: "integrations",
        columns: &["company_id", "kind", "enabled", "creators_can_register"],
        sources: &[("integrations", "company_id, kind")],
    },
    Table {
        name: "audit_log",
        columns: &[
            "id",
            "at_us",
            "company_id",
            "actor_id",
            "action",
            "app_id",
            "datasource_id",
            "target_id",
            "outcome",
            "code",
            "sql",
            "row_count",
            "duration_ms",
            "request_id",
            "detail",
        ],
        // The log first, then what was committed and not yet moved, in commit order: newer.
        sources: &[("audit_log", "at_us, id"), ("audit_staging", "seq")],
    },
];

/// Where the master key comes from: the environment, as every replica must get it, or the data
/// directory's key file of a one-node installation.
#[derive(Clone)]
pub enum KeySource {
    Env(String),
    File(PathBuf),
}

impl KeySource {
    /// `SLUICE_MASTER_KEY` when set, else `<data_dir>/master.key` (never created here).
    pub fn find(env_value: Option<String>, data_dir: &Path) -> KeySource {
        match env_value {
            Some(v) => KeySource::Env(v),
            None => KeySource::File(data_dir.join("master.key")),
        }
    }

    fn load(&self) -> Result<MasterKey, CopyError> {
        let text = match self {
            KeySource::Env(v) => v.clone(),
            KeySource::File(p) => std::fs::read_to_string(p).map_err(|e| {
                CopyError::Key(format!(
                    "{}: {e} (set SLUICE_MASTER_KEY to the installation's key)",
                    p.display()
                ))
            })?,
        };
        MasterKey::parse(&text).map_err(|e| CopyError::Key(format!("{self}: {e}")))
    }
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Env(_) => f.write_str("SLUICE_MASTER_KEY"),
            KeySource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeySource({self})")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("no SQLite store at {0}: --from names the data directory of a sluice installation")]
    NoSource(String),
    #[error("master key: {0}")]
    Key(String),
    #[error(
        "the master key from {source_of_key} does not open {count} sealed secret(s) of \
         datasource(s) {names}: replicas given this key could not connect to them and would \
         refuse to start; set SLUICE_MASTER_KEY to the key this installation runs with"
    )]
    WrongKey {
        source_of_key: String,
        count: usize,
        names: String,
    },
    #[error("the SQLite store: {0}")]
    Source(String),
    #[error("the PostgreSQL store: {0}")]
    Target(String),
    #[error(
        "the target store is not empty ({0}): `sluice store copy` copies an installation into a \
         fresh PostgreSQL store only and never merges; nothing was copied"
    )]
    NotEmpty(String),
    #[error("{table}.{column}: {detail}")]
    Convert {
        table: String,
        column: String,
        detail: String,
    },
}

impl From<StoreError> for CopyError {
    fn from(e: StoreError) -> Self {
        CopyError::Target(e.to_string())
    }
}

fn source_err(e: impl std::fmt::Display) -> CopyError {
    CopyError::Source(e.to_string())
}

fn target_err(e: postgres::Error) -> CopyError {
    // The server's own message (and detail) says more than the client error's summary.
    match e.as_db_error() {
        Some(db) => CopyError::Target(match db.detail() {
            Some(d) => format!("{} ({d})", db.message()),
            None => db.message().to_owned(),
        }),
        None => CopyError::Target(e.to_string()),
    }
}

/// What was copied.
#[derive(Debug, Default)]
pub struct CopyReport {
    /// Rows per target table, in [`TABLES`] order; with the rows read from each source table.
    pub tables: Vec<TableCount>,
    /// Datasource secrets (passwords and TLS client keys) copied sealed.
    pub sealed_secrets: usize,
}

#[derive(Debug)]
pub struct TableCount {
    pub table: &'static str,
    pub rows: u64,
    pub sources: Vec<(&'static str, u64)>,
}

impl CopyReport {
    pub fn rows(&self, table: &str) -> Option<u64> {
        self.tables
            .iter()
            .find(|t| t.table == table)
            .map(|t| t.rows)
    }
}

/// Copies the SQLite store of the data directory `from` into the PostgreSQL store at `to`, in one
/// transaction on the target. Blocking: run it off the async threads.
pub fn copy(from: &Path, to: &StoreUrl, key: &KeySource) -> Result<CopyReport, CopyError> {
    let path = from.join("sluice.db");
    if !path.is_file() {
        return Err(CopyError::NoSource(path.display().to_string()));
    }
    // The existing open path: migrations bring an older data directory to this version.
    let source = Store::open(&path, key.load()?).map_err(|e| match e {
        StoreError::Internal(m) if m == super::WRONG_KEY => CopyError::Key(format!(
            "the key from {key} does not open the secrets of {}: give SLUICE_MASTER_KEY the key \
             this installation runs with",
            path.display()
        )),
        other => source_err(other),
    })?;
    let sealed_secrets = check_secrets(&source, key)?;
    drop(source);

    // The target's schema from the PostgreSQL store's own migrations.
    drop(Store::open_postgres(to.expose(), key.load()?)?);
    let mut client = super::postgres::connect(to.expose())?;
    let mut tx = client.transaction().map_err(target_err)?;
    // Taken before looking: a second copy (or a replica's first write) waits, then finds rows.
    // The version row first, as every change set of the store takes it, so neither waits for
    // the other in the opposite order.
    tx.execute(
        "SELECT value FROM meta WHERE key = 'version' FOR UPDATE",
        &[],
    )
    .map_err(target_err)?;
    let names: Vec<String> = TABLES.iter().map(|t| quote(t.name)).collect();
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN EXCLUSIVE MODE",
        names.join(", ")
    ))
    .map_err(target_err)?;
    refuse_non_empty(&mut tx)?;

    // Read and write, though it only reads: a read-only connection cannot open a WAL database
    // whose shared-memory file the last connection removed.
    let mut conn = rusqlite::Connection::open(&path).map_err(source_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(source_err)?;
    // One read transaction: every table is read from the same snapshot.
    let snapshot = conn.transaction().map_err(source_err)?;
    let mut report = CopyReport {
        sealed_secrets,
        ..CopyReport::default()
    };
    for table in TABLES {
        report.tables.push(copy_table(&snapshot, &mut tx, table)?);
    }
    drop(snapshot);

    // What the target now holds, counted by the target.
    for t in &report.tables {
        let n: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {}", quote(t.table)), &[])
            .map_err(target_err)?
            .get(0);
        if n as u64 != t.rows {
            return Err(CopyError::Target(format!(
                "{} holds {n} rows after copying {}: nothing was committed",
                t.table, t.rows
            )));
        }
    }
    bump_version(&mut tx)?;
    tx.commit().map_err(target_err)?;
    Ok(report)
}

/// Every sealed secret of the source must open with the key, as a replica checks at start.
fn check_secrets(source: &Store, key: &KeySource) -> Result<usize, CopyError> {
    let view = source.view();
    let (mut sealed, mut failed) = (0, Vec::new());
    for cv in view.companies.values() {
        for ds in cv.datasources.values() {
            let secrets = [
                (SecretField::Password, ds.password_enc.as_deref()),
                (SecretField::TlsClientKey, ds.tls_client_key_enc.as_deref()),
            ];
            for (field, bytes) in secrets {
                if bytes.is_none() {
                    continue;
                }
                sealed += 1;
                if unseal(source.key(), field, &ds.id, bytes).is_none() {
                    failed.push(format!("{:?} ({})", ds.name, ds.id.as_str()));
                }
            }
        }
    }
    if failed.is_empty() {
        return Ok(sealed);
    }
    failed.dedup();
    Err(CopyError::WrongKey {
        source_of_key: key.to_string(),
        count: failed.len(),
        names: failed.join(", "),
    })
}

fn refuse_non_empty(tx: &mut postgres::Transaction<'_>) -> Result<(), CopyError> {
    let mut found = Vec::new();
    for t in TABLES {
        let n: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {}", quote(t.name)), &[])
            .map_err(target_err)?
            .get(0);
        if n > 0 {
            found.push(format!("{} has {n} row(s)", t.name));
        }
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(CopyError::NotEmpty(found.join(", ")))
    }
}

/// Replicas already running on the target (on its empty store) reload what was copied: the
/// version moves and is announced, as after any change set, when the transaction commits.
fn bump_version(tx: &mut postgres::Transaction<'_>) -> Result<(), CopyError> {
    let version: i64 = tx
        .query_one(
            "UPDATE meta SET value = value + 1 WHERE key = 'version' RETURNING value",
            &[],
        )
        .map_err(target_err)?
        .get(0);
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&super::postgres::CHANGES_CHANNEL, &version.to_string()],
    )
    .map_err(target_err)?;
    Ok(())
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Copies one table's rows with a binary COPY, each value converted to its target column's type.
fn copy_table(
    source: &rusqlite::Connection,
    tx: &mut postgres::Transaction<'_>,
    table: &'static Table,
) -> Result<TableCount, CopyError> {
    let types = target_types(tx, table)?;
    let cols: Vec<String> = table.columns.iter().map(|c| quote(c)).collect();
    let cols = cols.join(", ");
    let mut counts = Vec::new();
    let writer = tx
        .copy_in(&format!(
            "COPY {} ({cols}) FROM STDIN (FORMAT binary)",
            quote(table.name)
        ))
        .map_err(target_err)?;
    let mut writer = postgres::binary_copy::BinaryCopyInWriter::new(writer, &types);
    for (src, order) in table.sources {
        let mut st = source
            .prepare(&format!(
                "SELECT {cols} FROM {} ORDER BY {order}",
                quote(src)
            ))
            .map_err(source_err)?;
        let mut rows = st.query([]).map_err(source_err)?;
        let mut n = 0u64;
        let mut values: Vec<Value> = Vec::with_capacity(types.len());
        while let Some(row) = rows.next().map_err(source_err)? {
            values.clear();
            for (i, ty) in types.iter().enumerate() {
                let v = row.get_ref(i).map_err(source_err)?;
                values.push(convert(v, ty).map_err(|detail| CopyError::Convert {
                    table: src.to_string(),
                    column: table.columns[i].to_owned(),
                    detail,
                })?);
            }
            let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(Value::as_sql).collect();
            writer.write(&refs).map_err(target_err)?;
            n += 1;
        }
        counts.push((*src, n));
    }
    let rows = writer.finish().map_err(target_err)?;
    Ok(TableCount {
        table: table.name,
        rows,
        sources: counts,
    })
}

/// The target's type of each copied column, in [`Table::columns`] order; a column the target
/// lacks is named.
fn target_types(tx: &mut postgres::Transaction<'_>, table: &Table) -> Result<Vec<Type>, CopyError> {
    let present: Vec<String> = tx
        .query(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1",
            &[&table.name],
        )
        .map_err(target_err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if present.is_empty() {
        return Err(CopyError::Target(format!(
            "it has no table {} (its migrations should have created it)",
            table.name
        )));
    }
    let missing: Vec<&str> = table
        .columns
        .iter()
        .copied()
        .filter(|c| !present.iter().any(|p| p == c))
        .collect();
    if !missing.is_empty() {
        return Err(CopyError::Target(format!(
            "table {} has no column(s) {}",
            table.name,
            missing.join(", ")
        )));
    }
    let cols: Vec<String> = table.columns.iter().map(|c| quote(c)).collect();
    let st = tx
        .prepare(&format!(
            "SELECT {} FROM {}",
            cols.join(", "),
            quote(table.name)
        ))
        .map_err(target_err)?;
    Ok(st.columns().iter().map(|c| c.type_().clone()).collect())
}

/// A value ready for the target, typed as its column.
#[derive(Debug)]
enum Value {
    Null(Box<dyn ToSql + Sync>),
    Bool(bool),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Text(String),
    Bytes(Vec<u8>),
    Timestamp(chrono::DateTime<chrono::Utc>),
    Naive(chrono::NaiveDateTime),
    Json(serde_json::Value),
}

impl Value {
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Value::Null(n) => n.as_ref(),
            Value::Bool(v) => v,
            Value::I16(v) => v,
            Value::I32(v) => v,
            Value::I64(v) => v,
            Value::F32(v) => v,
            Value::F64(v) => v,
            Value::Text(v) => v,
            Value::Bytes(v) => v,
            Value::Timestamp(v) => v,
            Value::Naive(v) => v,
            Value::Json(v) => v,
        }
    }
}

/// A NULL the binary COPY accepts for a column of type `ty`.
fn typed_null(ty: &Type) -> Result<Box<dyn ToSql + Sync>, String> {
    Ok(match *ty {
        Type::BOOL => Box::new(None::<bool>),
        Type::INT2 => Box::new(None::<i16>),
        Type::INT4 => Box::new(None::<i32>),
        Type::INT8 => Box::new(None::<i64>),
        Type::FLOAT4 => Box::new(None::<f32>),
        Type::FLOAT8 => Box::new(None::<f64>),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => Box::new(None::<String>),
        Type::BYTEA => Box::new(None::<Vec<u8>>),
        Type::TIMESTAMPTZ => Box::new(None::<chrono::DateTime<chrono::Utc>>),
        Type::TIMESTAMP => Box::new(None::<chrono::NaiveDateTime>),
        Type::JSON | Type::JSONB => Box::new(None::<serde_json::Value>),
        _ => return Err(format!("PostgreSQL type {ty} is not one the copy knows")),
    })
}

/// Converts one SQLite value to the target column's type; an error says what did not fit.
fn convert(v: ValueRef<'_>, ty: &Type) -> Result<Value, String> {
    let mismatch = || {
        format!(
            "a SQLite {} does not fit PostgreSQL type {ty}",
            v.data_type()
        )
    };
    if let ValueRef::Null = v {
        return typed_null(ty).map(Value::Null);
    }
    let int = |v: ValueRef<'_>| match v {
        ValueRef::Integer(i) => Ok(i),
        _ => Err(mismatch()),
    };
    let text = |v: ValueRef<'_>| match v {
        ValueRef::Text(t) => std::str::from_utf8(t)
            .map(str::to_owned)
            .map_err(|e| format!("text that is not UTF-8: {e}")),
        _ => Err(mismatch()),
    };
    let out_of_range = |i: i64| format!("{i} is out of range for {ty}");
    Ok(match *ty {
        Type::BOOL => Value::Bool(int(v)? != 0),
        Type::INT2 => {
            let i = int(v)?;
            Value::I16(i16::try_from(i).map_err(|_| out_of_range(i))?)
        }
        Type::INT4 => {
            let i = int(v)?;
            Value::I32(i32::try_from(i).map_err(|_| out_of_range(i))?)
        }
        Type::INT8 => Value::I64(int(v)?),
        Type::FLOAT4 | Type::FLOAT8 => {
            let f = match v {
                ValueRef::Real(f) => f,
                ValueRef::Integer(i) => i as f64,
                _ => return Err(mismatch()),
            };
            if *ty == Type::FLOAT4 {
                Value::F32(f as f32)
            } else {
                Value::F64(f)
            }
        }
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => Value::Text(text(v)?),
        Type::BYTEA => match v {
            ValueRef::Blob(b) | ValueRef::Text(b) => Value::Bytes(b.to_vec()),
            _ => return Err(mismatch()),
        },
        Type::TIMESTAMPTZ | Type::TIMESTAMP => {
            let at = match v {
                // The store's timestamps: RFC 3339 text.
                ValueRef::Text(_) => chrono::DateTime::parse_from_rfc3339(&text(v)?)
                    .map_err(|e| format!("not an RFC 3339 timestamp: {e}"))?
                    .with_timezone(&chrono::Utc),
                // The audit log's `at_us`: microseconds since the epoch.
                ValueRef::Integer(us) => {
                    chrono::DateTime::from_timestamp_micros(us).ok_or_else(|| out_of_range(us))?
                }
                _ => return Err(mismatch()),
            };
            if *ty == Type::TIMESTAMP {
                Value::Naive(at.naive_utc())
            } else {
                Value::Timestamp(at)
            }
        }
        Type::JSON | Type::JSONB => {
            Value::Json(serde_json::from_str(&text(v)?).map_err(|e| format!("not JSON: {e}"))?)
        }
        _ => return Err(format!("PostgreSQL type {ty} is not one the copy knows")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The list of tables is the SQLite schema: a migration that adds a table or a column and
    /// forgets the copy fails here.
    #[test]
    fn the_table_list_covers_every_sqlite_table_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.db");
        drop(Store::open(&path, MasterKey::from_bytes(&[1u8; 32]).unwrap()).unwrap());
        let conn = rusqlite::Connection::open(&path).unwrap();
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // Not copied: the version counter (the target has its own) and SQLite's bookkeeping.
        let skipped = ["meta"];
        let mut covered = BTreeSet::new();
        for name in &tables {
            if skipped.contains(&name.as_str()) || name.starts_with("sqlite_") {
                continue;
            }
            let t = TABLES
                .iter()
                .find(|t| t.sources.iter().any(|(s, _)| s == name))
                .unwrap_or_else(|| panic!("SQLite table {name} is not copied"));
            let cols: BTreeSet<String> = conn
                .prepare(&format!("SELECT name FROM pragma_table_info('{name}')"))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let listed: BTreeSet<String> = t.columns.iter().map(|c| c.to_string()).collect();
            let mut expected = cols.clone();
            if name == "audit_staging" {
                // Its commit order becomes the order its rows are copied in.
                expected.remove("seq");
            }
            assert_eq!(listed, expected, "the columns of {name}");
            covered.insert(name.clone());
        }
        for t in TABLES {
            for (s, _) in t.sources {
                assert!(covered.contains(*s), "{s} is listed but is no SQLite table");
            }
        }
    }

    #[test]
    fn values_take_the_target_column_type() {
        let t = "2026-12-05T14:00:00.123456Z";
        match convert(ValueRef::Text(t.as_bytes()), &Type::TIMESTAMPTZ).unwrap() {
            Value::Timestamp(at) => {
                assert_eq!(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true), t)
            }
            other => panic!("{other:?}"),
        }
        match convert(ValueRef::Integer(1_764_943_200_123_456), &Type::TIMESTAMPTZ).unwrap() {
            Value::Timestamp(at) => assert_eq!(at.timestamp_micros(), 1_764_943_200_123_456),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            convert(ValueRef::Integer(1), &Type::BOOL),
            Ok(Value::Bool(true))
        ));
        assert!(matches!(
            convert(ValueRef::Blob(&[1, 2]), &Type::BYTEA),
            Ok(Value::Bytes(b)) if b == [1, 2]
        ));
        assert!(matches!(
            convert(ValueRef::Text(br#"{"a":1}"#), &Type::JSONB),
            Ok(Value::Json(j)) if j["a"] == 1
        ));
        assert!(matches!(
            convert(ValueRef::Integer(3), &Type::FLOAT8),
            Ok(Value::F64(f)) if f == 3.0
        ));
        assert!(matches!(
            convert(ValueRef::Null, &Type::BYTEA),
            Ok(Value::Null(_))
        ));
        let err = convert(ValueRef::Integer(1 << 40), &Type::INT4).unwrap_err();
        assert!(err.contains("out of range"), "{err}");
        let err = convert(ValueRef::Text(b"x"), &Type::INT8).unwrap_err();
        assert!(err.contains("does not fit"), "{err}");
        assert!(convert(ValueRef::Text(b"x"), &Type::UUID).is_err());
    }
}
