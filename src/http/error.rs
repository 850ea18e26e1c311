//! The one place that turns errors into HTTP answers: status code, stable `code`, and a message a
//! client may see (never a stack trace, a connection string or a password).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::audit::AuditError;
use crate::code::{Code, Coded};
use crate::datasource::ExecError;
use crate::identity::AuthError;
use crate::permission::Decision;
use crate::policy::PolicyError;
use crate::store::StoreError;

/// The one table from a code to its HTTP status.
pub fn status_of(code: Code) -> StatusCode {
    match code {
        Code::BadRequest | Code::SqlParseError | Code::BadParams => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Forbidden
        | Code::StatementNotAllowed
        | Code::TableNotAllowed
        | Code::FunctionNotAllowed
        | Code::IntegrationDisabled => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Code::Conflict => StatusCode::CONFLICT,
        Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Code::QueryFailed => StatusCode::UNPROCESSABLE_ENTITY,
        Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        Code::PoolTimeout | Code::DatasourceUnavailable | Code::Unavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        Code::QueryTimeout => StatusCode::GATEWAY_TIMEOUT,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        // Never answered: the client is gone by then. 499 in the nginx tradition.
        Code::ClientDisconnected => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
    }
}

/// An error answer: a code (its status follows from [`status_of`]), the text a client may read,
/// and `Retry-After` for what is worth retrying.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    /// Seconds for `Retry-After` on 429/503.
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Any layer's error, by its code, client text and retryability.
    pub fn coded(e: &impl Coded) -> Self {
        ApiError {
            code: e.code(),
            message: e.message(),
            retry_after: e.retryable().then_some(1),
        }
    }

    pub fn status(&self) -> StatusCode {
        status_of(self.code)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Code::BadRequest, message)
    }

    pub fn not_found() -> Self {
        Self::new(Code::NotFound, "no such object")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Code::Forbidden, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(Code::Conflict, message)
    }

    pub fn internal() -> Self {
        Self::new(
            Code::Internal,
            "an internal error occurred; it has been logged",
        )
    }

    pub fn unauthenticated() -> Self {
        Self::coded(&AuthError::Missing)
    }

    /// The JSON body alone (for NDJSON streams whose last line is an error).
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::json!({"error": {"code": self.code.as_str(), "message": self.message}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut res = (
            status,
            Json(Body {
                error: Inner {
                    code: self.code.as_str(),
                    message: &self.message,
                },
            }),
        )
            .into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

impl From<Decision> for ApiError {
    fn from(d: Decision) -> Self {
        if d.is_allow() {
            tracing::error!("an Allow decision was turned into an error");
        }
        ApiError::coded(&d)
    }
}

/// Turns a decision into `Ok(())` or the matching error, for `?` in handlers.
pub fn require(d: Decision) -> Result<(), ApiError> {
    if d.is_allow() { Ok(()) } else { Err(d.into()) }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        tracing::debug!(reason = %e, "authentication refused");
        ApiError::coded(&e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Unavailable(m) => tracing::warn!(error = %m, "store unavailable"),
            StoreError::Internal(m) => tracing::error!(error = %m, "store error"),
            _ => {}
        }
        ApiError::coded(&e)
    }
}

impl From<ExecError> for ApiError {
    fn from(e: ExecError) -> Self {
        ApiError::coded(&e)
    }
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        ApiError::coded(&e)
    }
}

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        if !matches!(e, AuditError::BadCursor) {
            tracing::error!(error = %e, "audit log error");
        }
        ApiError::coded(&e)
    }
}

impl From<crate::limits::Refused> for ApiError {
    fn from(e: crate::limits::Refused) -> Self {
        ApiError::coded(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_the_status_api_md_gives_it() {
        for (code, status) in [
            (Code::BadRequest, 400),
            (Code::SqlParseError, 400),
            (Code::BadParams, 400),
            (Code::Unauthenticated, 401),
            (Code::Forbidden, 403),
            (Code::StatementNotAllowed, 403),
            (Code::TableNotAllowed, 403),
            (Code::FunctionNotAllowed, 403),
            (Code::IntegrationDisabled, 403),
            (Code::NotFound, 404),
            (Code::MethodNotAllowed, 405),
            (Code::Conflict, 409),
            (Code::PayloadTooLarge, 413),
            (Code::QueryFailed, 422),
            (Code::TooManyRequests, 429),
            (Code::PoolTimeout, 503),
            (Code::DatasourceUnavailable, 503),
            (Code::QueryTimeout, 504),
        ] {
            assert_eq!(status_of(code).as_u16(), status, "{code}");
        }
        // Every code is in the table, and only the gateway's own failure is a 500.
        for code in Code::ALL {
            let s = status_of(*code);
            assert_eq!(
                s.is_server_error() && s.as_u16() == 500,
                *code == Code::Internal
            );
        }
    }

    #[test]
    fn retryable_errors_carry_retry_after_and_refused_addresses_do_not() {
        assert_eq!(ApiError::from(ExecError::PoolTimeout).retry_after, Some(1));
        assert_eq!(
            ApiError::from(ExecError::Unavailable("x".into())).retry_after,
            Some(1)
        );
        assert_eq!(
            ApiError::from(ExecError::NotAllowed("x".into())).retry_after,
            None
        );
        assert_eq!(
            ApiError::from(crate::limits::Refused::App).retry_after,
            Some(1)
        );
        assert_eq!(
            ApiError::from(PolicyError::Parse("x".into())).retry_after,
            None
        );
    }
}
