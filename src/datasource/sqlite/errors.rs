//! SQLite's errors as the gateway's, and our own errors carried through rusqlite's.

use super::*;

pub(super) fn sql_err(e: rusqlite::Error) -> ExecError {
    match e {
        rusqlite::Error::MultipleStatement => ExecError::QueryFailed {
            message: "exactly one statement is allowed".into(),
            sqlstate: None,
        },
        // Not ResultTooLarge: the value too big is often one the statement only builds on the
        // way (`length(printf(…))`), so fewer rows or columns would not help; the statement must
        // change. Not retryable either.
        rusqlite::Error::SqliteFailure(code, _) if code.code == ErrorCode::TooBig => {
            ExecError::QueryFailed {
                message: "a string or blob in the statement is larger than one value may be in \
                          this gateway (limits.max_result_bytes, and a quarter of \
                          limits.sqlite_heap_limit_bytes)"
                    .into(),
                sqlstate: None,
            }
        }
        rusqlite::Error::SqliteFailure(code, _) if code.code == ErrorCode::OutOfMemory => {
            ExecError::QueryFailed {
                message: "the statement needed more memory than SQLite may use in this gateway \
                          (limits.sqlite_heap_limit_bytes)"
                    .into(),
                sqlstate: None,
            }
        }
        rusqlite::Error::SqliteFailure(code, msg) => ExecError::QueryFailed {
            message: msg.unwrap_or_else(|| code.to_string()),
            sqlstate: None,
        },
        other => ExecError::QueryFailed {
            message: other.to_string(),
            sqlstate: None,
        },
    }
}

/// A statement's `SQLITE_TOOBIG`, naming the limit it met.
pub(super) fn too_big(max_result_bytes: u64) -> ExecError {
    ExecError::QueryFailed {
        message: format!(
            "a string or blob in the statement is larger than {} bytes, the most one value may \
             hold in this gateway (limits.max_result_bytes, and a quarter of \
             limits.sqlite_heap_limit_bytes)",
            value_limit(max_result_bytes)
        ),
        sqlstate: None,
    }
}

pub(super) fn is_interrupt(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::OperationInterrupted)
}

/// After running out of memory SQLite may have rolled back on its own or left caches half
/// built: such a connection is not kept.
pub(super) fn is_out_of_memory(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::OutOfMemory)
}

/// Carries our own error (or "nothing to report") through rusqlite's error type.
#[derive(Debug)]
pub(super) struct Internal(pub(super) Option<ExecError>);

impl std::fmt::Display for Internal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(e) => write!(f, "{e}"),
            None => f.write_str("stopped"),
        }
    }
}

impl std::error::Error for Internal {}

pub(super) fn internal(e: ExecError) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(Internal(Some(e))))
}

pub(super) fn internal_none() -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(Internal(None)))
}

/// Our own error carried by `e`, if it is one: `Some(None)` is "stopped, nothing to report".
pub(super) fn ours(e: &rusqlite::Error) -> Option<Option<ExecError>> {
    if let rusqlite::Error::ToSqlConversionFailure(inner) = e {
        return inner.downcast_ref::<Internal>().map(|i| i.0.clone());
    }
    None
}
