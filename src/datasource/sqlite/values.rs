//! Values both ways: JSON params bound as SQLite values, and rows encoded as JSON.

use super::*;

/// A JSON param as a SQLite value. SQLite columns are flexibly typed, so the only misfit is an
/// integer beyond 64-bit signed; arrays and objects are bound as JSON text.
pub(super) fn to_value(
    pos: usize,
    p: &serde_json::Value,
) -> Result<ToSqlOutput<'static>, ExecError> {
    let v = match p {
        serde_json::Value::Null => SqlValue::Null,
        serde_json::Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                SqlValue::Integer(i)
            } else if n.is_u64() {
                return Err(ExecError::BadParams(format!(
                    "param {pos} is {n}, larger than SQLite's INTEGER (64-bit signed) can hold"
                )));
            } else {
                SqlValue::Real(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => SqlValue::Text(s.clone()),
        other => SqlValue::Text(other.to_string()),
    };
    Ok(ToSqlOutput::Owned(v))
}

/// The type named for a column without a declared type: the storage class of its first value.
pub(super) fn storage_class(v: ValueRef<'_>) -> &'static str {
    match v {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "INTEGER",
        ValueRef::Real(_) => "REAL",
        ValueRef::Text(_) => "TEXT",
        ValueRef::Blob(_) => "BLOB",
    }
}

/// One row as a JSON array: integers and reals as numbers, text as strings (invalid UTF-8
/// replaced), blobs as base64.
pub(super) fn encode_row(r: &rusqlite::Row<'_>, width: usize) -> Result<Bytes, rusqlite::Error> {
    let mut w = RowWriter::with_capacity(16 * width + 2);
    for i in 0..width {
        match r.get_ref(i)? {
            ValueRef::Null => w.null(),
            ValueRef::Integer(v) => w.i64(v),
            ValueRef::Real(v) => w.f64(v),
            ValueRef::Text(t) => w.str(&String::from_utf8_lossy(t)),
            ValueRef::Blob(b) => w.base64(b),
        }
    }
    Ok(w.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_params_become_sqlite_values_and_huge_integers_are_refused() {
        assert_eq!(
            to_value(1, &serde_json::json!(true)).unwrap(),
            ToSqlOutput::Owned(SqlValue::Integer(1))
        );
        assert_eq!(
            to_value(1, &serde_json::json!({"a": 1})).unwrap(),
            ToSqlOutput::Owned(SqlValue::Text("{\"a\":1}".into()))
        );
        let err = to_value(3, &serde_json::json!(u64::MAX)).unwrap_err();
        assert!(matches!(err, ExecError::BadParams(m) if m.contains("param 3")));
    }
}
