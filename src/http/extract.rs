//! Extractors whose refusals use the API's error shape: a JSON body that rejects unknown fields
//! and wrong types with 400 (413 when too large), and the authenticated caller.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use std::sync::Arc;

use super::AppState;
use super::error::ApiError;
use crate::code::Code;
use crate::identity::{Caller, authenticate};

/// `axum::Json` with the API's error body.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> ApiError {
    match &rej {
        JsonRejection::JsonDataError(e) => {
            // serde's message names the field and the expected type; it never echoes values
            // beyond the offending token, which came from the client itself.
            ApiError::bad_request(format!("invalid request body: {}", inner_message(e)))
        }
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::bad_request("request body is not valid JSON")
        }
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::bad_request("expected a JSON body with content-type: application/json")
        }
        JsonRejection::BytesRejection(_) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(
                Code::PayloadTooLarge,
                "request body is larger than the limit",
            )
        }
        _ => {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    Code::PayloadTooLarge,
                    "request body is larger than the limit",
                )
            } else {
                ApiError::bad_request("the request body could not be read")
            }
        }
    }
}

fn inner_message(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg = s.to_string();
        src = s.source();
    }
    msg
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Arc<AppState>: axum::extract::FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app: Arc<AppState> = axum::extract::FromRef::from_ref(state);
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let view = app.view()?;
        let caller = authenticate(&view, header, chrono::Utc::now())?;
        tracing::Span::current().record("user_id", caller.user.id.as_str());
        Ok(caller)
    }
}

/// A JSON body that may be left out entirely (an empty body means the type's default), with the
/// same error answers as [`Json`].
pub struct OptionalJson<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let empty = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .is_some_and(|v| v == "0")
            || (!req.headers().contains_key(axum::http::header::CONTENT_TYPE)
                && !req
                    .headers()
                    .contains_key(axum::http::header::TRANSFER_ENCODING)
                && !req
                    .headers()
                    .contains_key(axum::http::header::CONTENT_LENGTH));
        if empty {
            return Ok(OptionalJson(T::default()));
        }
        let Json(v) = Json::<T>::from_request(req, state).await?;
        Ok(OptionalJson(v))
    }
}
