//! The stable error codes of the API (API.md) and what kind of outcome each one is.
//!
//! Every layer's error names its code ([`Coded`]); the code decides the outcome class recorded in
//! the audit log and the metrics, and the HTTP layer alone maps a code to its status, client text
//! and `Retry-After` (`http::error`). Kept apart, as in neon's proxy, are the kind of a failure
//! (who caused it), the code a client matches on, and the text a client may see.

/// What kind of outcome an error is: the audit record's outcome and the metrics follow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// The caller asked for something it may not have, or asked badly: audited as `denied`.
    Denied,
    /// The database refused or failed the statement: `failed`.
    Failed,
    /// Something on the gateway's side or the database's is down or full: `failed`, retryable.
    Unavailable,
    /// The statement ran out of time: `failed`.
    Timeout,
}

macro_rules! codes {
    ($($variant:ident => $s:literal, $class:ident;)+) => {
        /// A stable error code (the `code` field of every error answer).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Code { $($variant),+ }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $s),+ }
            }

            pub fn class(self) -> Class {
                match self { $(Code::$variant => Class::$class),+ }
            }
        }
    };
}

codes! {
    BadRequest => "bad_request", Denied;
    SqlParseError => "sql_parse_error", Denied;
    BadParams => "bad_params", Denied;
    Unauthenticated => "unauthenticated", Denied;
    Forbidden => "forbidden", Denied;
    StatementNotAllowed => "statement_not_allowed", Denied;
    TableNotAllowed => "table_not_allowed", Denied;
    FunctionNotAllowed => "function_not_allowed", Denied;
    IntegrationDisabled => "integration_disabled", Denied;
    NotFound => "not_found", Denied;
    MethodNotAllowed => "method_not_allowed", Denied;
    Conflict => "conflict", Denied;
    PayloadTooLarge => "payload_too_large", Denied;
    TooManyRequests => "too_many_requests", Denied;
    QueryFailed => "query_failed", Failed;
    PoolTimeout => "pool_timeout", Unavailable;
    DatasourceUnavailable => "datasource_unavailable", Unavailable;
    Unavailable => "unavailable", Unavailable;
    QueryTimeout => "query_timeout", Timeout;
    Internal => "internal", Unavailable;
    // Recorded in the audit log when a client leaves before its answer ends; never sent.
    ClientDisconnected => "client_disconnected", Failed;
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error that knows its code and what a client may read of it.
pub trait Coded {
    fn code(&self) -> Code;
    /// The text a client may see: never a stack trace, a connection string or a password.
    fn message(&self) -> String;
    /// Whether the same request may succeed a moment later (answered with `Retry-After`).
    fn retryable(&self) -> bool {
        self.code().class() == Class::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_snake_case_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            let s = c.as_str();
            assert!(
                s.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'),
                "{s}"
            );
            assert!(seen.insert(s), "{s} twice");
        }
    }

    #[test]
    fn only_the_databases_and_the_gateways_failures_are_not_denials() {
        assert_eq!(Code::TableNotAllowed.class(), Class::Denied);
        assert_eq!(Code::BadParams.class(), Class::Denied);
        assert_eq!(Code::QueryFailed.class(), Class::Failed);
        assert_eq!(Code::PoolTimeout.class(), Class::Unavailable);
        assert_eq!(Code::QueryTimeout.class(), Class::Timeout);
    }
}
