//! Why a query did not run: one error wrapping every layer's, each naming its code.

use crate::audit::AuditError;
use crate::code::{Code, Coded};
use crate::datasource::ExecError;
use crate::limits::Refused;
use crate::permission::Decision;
use crate::policy::PolicyError;

#[derive(Debug)]
pub enum QueryError {
    /// The request itself: a malformed body, an unknown app, a datasource not attached, params
    /// that do not fit the placeholders.
    Request {
        code: Code,
        message: String,
    },
    Permission(Decision),
    Limits(Refused),
    Policy(PolicyError),
    Exec(ExecError),
    /// The audit record could not be committed: the answer is withheld.
    Audit(AuditError),
}

impl QueryError {
    pub fn request(code: Code, message: impl Into<String>) -> Self {
        QueryError::Request {
            code,
            message: message.into(),
        }
    }

    /// A failure the datasource answered with (counted per datasource in the metrics); the
    /// caller's own mistakes (bad params) are not the datasource going bad.
    pub fn from_datasource(&self) -> bool {
        matches!(self, QueryError::Exec(e) if e.code() != Code::BadParams)
    }
}

impl Coded for QueryError {
    fn code(&self) -> Code {
        match self {
            QueryError::Request { code, .. } => *code,
            QueryError::Permission(d) => d.code(),
            QueryError::Limits(r) => r.code(),
            QueryError::Policy(e) => e.code(),
            QueryError::Exec(e) => e.code(),
            QueryError::Audit(e) => e.code(),
        }
    }

    fn message(&self) -> String {
        match self {
            QueryError::Request { message, .. } => message.clone(),
            QueryError::Permission(d) => d.message(),
            QueryError::Limits(r) => r.message(),
            QueryError::Policy(e) => e.message(),
            QueryError::Exec(e) => e.message(),
            QueryError::Audit(e) => e.message(),
        }
    }

    fn retryable(&self) -> bool {
        match self {
            QueryError::Request { .. } | QueryError::Permission(_) | QueryError::Policy(_) => false,
            QueryError::Limits(r) => r.retryable(),
            QueryError::Exec(e) => e.retryable(),
            QueryError::Audit(e) => e.retryable(),
        }
    }
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl std::error::Error for QueryError {}

impl From<PolicyError> for QueryError {
    fn from(e: PolicyError) -> Self {
        QueryError::Policy(e)
    }
}

impl From<ExecError> for QueryError {
    fn from(e: ExecError) -> Self {
        QueryError::Exec(e)
    }
}

impl From<AuditError> for QueryError {
    fn from(e: AuditError) -> Self {
        QueryError::Audit(e)
    }
}

impl From<Refused> for QueryError {
    fn from(e: Refused) -> Self {
        QueryError::Limits(e)
    }
}

impl From<Decision> for QueryError {
    fn from(d: Decision) -> Self {
        QueryError::Permission(d)
    }
}
