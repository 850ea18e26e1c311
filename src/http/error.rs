//! The one place that turns errors into HTTP answers: status code, stable `code`, and a message a
//! client may see (never a stack trace, a connection string or a password).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::datasource::ExecError;
use crate::identity::AuthError;
use crate::permission::Decision;
use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
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
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such object")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred; it has been logged",
        )
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid bearer token is required",
        )
    }

    pub fn too_many(message: impl Into<String>, retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message)
        }
    }

    /// The JSON body alone (for NDJSON streams whose last line is an error).
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            Json(Body {
                error: Inner {
                    code: self.code,
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
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

impl From<Decision> for ApiError {
    /// Only called for refusals; `Allow` reaching here is a bug and answers 500.
    fn from(d: Decision) -> Self {
        match d {
            Decision::NotFound => ApiError::not_found(),
            Decision::Forbidden => ApiError::forbidden("your role does not allow this"),
            Decision::Conflict(m) => ApiError::conflict(m),
            Decision::IntegrationDisabled => ApiError::new(
                StatusCode::FORBIDDEN,
                "integration_disabled",
                "this integration is turned off for the company",
            ),
            Decision::Allow => {
                tracing::error!("an Allow decision was turned into an error");
                ApiError::internal()
            }
        }
    }
}

/// Turns a decision into `Ok(())` or the matching error, for `?` in handlers.
pub fn require(d: Decision) -> Result<(), ApiError> {
    if d.is_allow() { Ok(()) } else { Err(d.into()) }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        tracing::debug!(reason = %e, "authentication refused");
        ApiError::unauthenticated()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::NotFound => ApiError::not_found(),
            StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "store unavailable");
                ApiError {
                    retry_after: Some(1),
                    ..ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "the control-plane store is unavailable; retry shortly",
                    )
                }
            }
            StoreError::Internal(m) => {
                tracing::error!(error = %m, "store error");
                ApiError::internal()
            }
        }
    }
}

impl From<ExecError> for ApiError {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::PoolTimeout => ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "pool_timeout",
                    "no database connection became free in time; retry shortly",
                )
            },
            ExecError::Unavailable(m) => ApiError {
                retry_after: Some(1),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "datasource_unavailable", m)
            },
            ExecError::NotAllowed(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "datasource_unavailable", m)
            }
            ExecError::QueryFailed { message, sqlstate } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "query_failed",
                match sqlstate {
                    Some(s) => format!("{message} (SQLSTATE {s})"),
                    None => message,
                },
            ),
            ExecError::Timeout(d) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "query_timeout",
                format!(
                    "the statement ran past its timeout of {} ms and was cancelled",
                    d.as_millis()
                ),
            ),
            ExecError::BadParams(m) => ApiError::new(StatusCode::BAD_REQUEST, "bad_params", m),
            ExecError::ResultTooLarge(n) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "query_failed",
                format!(
                    "the result is larger than the limit of {n} bytes; lower max_rows or select fewer columns"
                ),
            ),
            ExecError::UnsupportedType(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "query_failed", m)
            }
        }
    }
}
