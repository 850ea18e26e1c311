//! The server's errors as the gateway reports them: scrubbed of secrets, sorted into timeouts,
//! an unavailable server, bad parameters and failed statements.

use super::*;

/// The database's error (scrubbed) with its SQLSTATE; cancellations by our own timeouts are
/// `Timeout`; broken connections are `Unavailable`.
pub(super) fn map_error(
    e: tokio_postgres::Error,
    password: &Secret,
    timeout: Duration,
) -> ExecError {
    let secrets = [password.expose()];
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // 57014: statement_timeout or our cancel; 25P03: idle_in_transaction_session_timeout.
        if code == "57014" || code == "25P03" {
            return ExecError::Timeout(timeout);
        }
        // The server going away (shutdown, crash, restart, too many connections) is the
        // datasource being unavailable, not the statement failing: clients should retry.
        if server_went_away(code) {
            return ExecError::Unavailable(scrub(db.message(), &secrets));
        }
        return ExecError::QueryFailed {
            message: scrub(db.message(), &secrets),
            sqlstate: Some(code.to_owned()),
        };
    }
    ExecError::Unavailable(scrub(&e.to_string(), &secrets))
}

/// SQLSTATEs that say the server, not the statement, is the problem: class 08 (connection
/// exception), 57P01-57P03 (admin shutdown, crash shutdown, cannot connect now) and 53300
/// (too many connections).
pub(super) fn server_went_away(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}

/// Errors from Bind: a value the server's input function refused (the error context names the
/// parameter) is `BadParams`; anything else is mapped as usual.
pub(super) fn bind_error(
    e: tokio_postgres::Error,
    password: &Secret,
    timeout: Duration,
) -> ExecError {
    if let Some(db) = e.as_db_error()
        && let Some(pos) = db.where_().and_then(param_position)
    {
        return ExecError::BadParams(format!(
            "parameter ${pos} does not fit: {}",
            scrub(db.message(), &[password.expose()])
        ));
    }
    map_error(e, password, timeout)
}

/// The parameter number from an error context such as `portal "p3" parameter $2 = '...'`.
pub(super) fn param_position(context: &str) -> Option<u32> {
    let rest = &context[context.find("parameter $")? + "parameter $".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_going_away_is_unavailable_and_a_statement_error_is_not() {
        for code in ["57P01", "57P02", "57P03", "08006", "08001", "53300"] {
            assert!(server_went_away(code), "{code}");
        }
        for code in ["42501", "42P01", "22012", "57014", "25006"] {
            assert!(!server_went_away(code), "{code}");
        }
    }

    #[test]
    fn bind_error_context_yields_the_parameter_position() {
        assert_eq!(
            param_position("portal \"p3\" parameter $2 = '...'"),
            Some(2)
        );
        assert_eq!(param_position("unnamed portal parameter $12"), Some(12));
        assert_eq!(param_position("SQL function \"f\""), None);
    }
}
