//! The API's one error type: every failure becomes an RFC 9457
//! `application/problem+json` body with a stable machine-readable `code`.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `https://foodapp.io/problems/<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short human summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// Human explanation of this occurrence.
    pub detail: String,
    /// Stable machine-readable code, e.g. `insufficient_stock`.
    pub code: String,
    /// Extra facts about this occurrence (for example which item ran out).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub extra: Option<serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    Client {
        status: StatusCode,
        code: &'static str,
        detail: String,
        extra: Option<serde_json::Value>,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::Client {
            status,
            code,
            detail: detail.into(),
            extra: None,
        }
    }

    pub fn with_extra(self, value: serde_json::Value) -> Self {
        match self {
            ApiError::Client {
                status,
                code,
                detail,
                ..
            } => ApiError::Client {
                status,
                code,
                detail,
                extra: Some(value),
            },
            other => other,
        }
    }

    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            detail,
        )
    }
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Client { status, .. } => *status,
            ApiError::Database(e) if is_transient(e) || is_read_only(e) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Database(e) if is_data_exception(e) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn problem(&self) -> Problem {
        let status = self.status();
        let (code, detail, extra) = match self {
            ApiError::Client {
                code,
                detail,
                extra,
                ..
            } => (*code, detail.clone(), extra.clone()),
            ApiError::Database(e) if is_read_only(e) => (
                "restoring",
                "the shop is switching to a restored or upgraded database: reads work, writes resume within seconds; retry".to_owned(),
                None,
            ),
            ApiError::Database(e) if is_transient(e) => (
                "unavailable",
                "the database is unavailable or busy; retry shortly".to_owned(),
                None,
            ),
            ApiError::Database(e) if is_data_exception(e) => (
                "validation_failed",
                "a value cannot be stored: text with a NUL character, or a number or time out of range".to_owned(),
                None,
            ),
            // Never leak internals to clients; the log has the details.
            _ => ("internal", "an unexpected error occurred".to_owned(), None),
        };
        Problem {
            type_uri: format!("https://foodapp.io/problems/{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            code: code.to_owned(),
            extra,
        }
    }
}

/// SQLSTATE of a database error, if it is one.
fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// A failure that says nothing about the request and may pass on retry:
/// the database is away or restarting (the connection failed, was ended by
/// an administrator or a shutdown, 57P01-57P03, or was lost, class 08), or
/// the transaction lost a serialization conflict or a deadlock (40001,
/// 40P01) and was rolled back.
pub fn is_transient(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
    ) || sqlstate(e).is_some_and(|c| {
        c.starts_with("08") || c.starts_with("57P") || c == "40001" || c == "40P01"
    })
}

/// The database refuses writes (SQLSTATE 25006): the operator made it
/// read-only for the switch of a restore or an upgrade. Not retried inside
/// the request: the switch takes seconds, and the client is told when to
/// come back.
pub fn is_read_only(e: &sqlx::Error) -> bool {
    sqlstate(e).is_some_and(|c| c == "25006")
}

/// The connection itself is gone (ended by the server: a restart, an
/// administrator, a restore's switch; or broken): unlike a busy database,
/// a fresh connection may well work at once.
pub fn is_connection_lost(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(_))
        || sqlstate(e).is_some_and(|c| c.starts_with("08") || c.starts_with("57P"))
}

/// Set on a response whose request failed because its database connection
/// was lost: a read may be served again at once (`retry::ReadRetryLayer`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLost;

/// Transient, and worth retrying at once: not a pool that already waited
/// its acquire timeout for a connection (the database is away; say so now).
pub fn is_retryable(e: &sqlx::Error) -> bool {
    is_transient(e) && !matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
}

/// Class 22, data exception: a value the client sent cannot be stored (a NUL
/// character in text is 22021, a number or time out of range 22003/22008):
/// the client's input, not a server fault.
fn is_data_exception(e: &sqlx::Error) -> bool {
    sqlstate(e).is_some_and(|c| c.starts_with("22"))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let lost = matches!(&self, ApiError::Database(e) if is_connection_lost(e));
        if lost {
            crate::db::connection_lost();
        }
        if problem.status >= 500 {
            tracing::error!(error = %self, code = %problem.code, "request failed");
        }
        let mut response = problem_response(&problem);
        if lost {
            response.extensions_mut().insert(ConnectionLost);
        }
        response
    }
}

pub fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    // Every 503 is temporary: say when to come back (a switch of
    // databases takes a few seconds).
    if status == StatusCode::SERVICE_UNAVAILABLE {
        let after = if problem.code == "restoring" {
            "2"
        } else {
            "1"
        };
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static(after));
    }
    response
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let detail = rejection.body_text();
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a request body with Content-Type: application/json",
            ),
            JsonRejection::JsonDataError(_) => ApiError::validation(detail),
            JsonRejection::JsonSyntaxError(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", detail)
            }
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than the server accepts",
            ),
            _ => ApiError::bad_request(detail),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            rejection.body_text(),
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            rejection.body_text(),
        )
    }
}

impl From<crate::orders::error::OrderError> for ApiError {
    fn from(e: crate::orders::error::OrderError) -> Self {
        use crate::orders::error::OrderError as E;
        use serde_json::json;
        let detail = e.to_string();
        let (status, code, extra) = match e {
            E::Database(db) => return ApiError::Database(db),
            E::Internal(_) => return ApiError::Internal(detail),
            E::MissingKey => (StatusCode::BAD_REQUEST, "missing_idempotency_key", None),
            E::KeyInFlight => (StatusCode::SERVICE_UNAVAILABLE, "restoring", None),
            E::InvalidKey => (StatusCode::BAD_REQUEST, "invalid_idempotency_key", None),
            E::KeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                None,
            ),
            E::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", None),
            E::PaymentDeclined => (StatusCode::PAYMENT_REQUIRED, "payment_declined", None),
            E::CartEmpty => (StatusCode::CONFLICT, "cart_empty", None),
            E::UnknownItem { item } => (
                StatusCode::CONFLICT,
                "unknown_item",
                Some(json!({ "menu_item_id": item })),
            ),
            E::ItemUnavailable { item, .. } => (
                StatusCode::CONFLICT,
                "item_unavailable",
                Some(json!({ "menu_item_id": item })),
            ),
            E::InsufficientStock {
                item,
                requested,
                available,
                ..
            } => (
                StatusCode::CONFLICT,
                "insufficient_stock",
                Some(
                    json!({ "menu_item_id": item, "requested": requested, "available": available }),
                ),
            ),
            E::TooManyUnpaid { open, limit } => (
                StatusCode::CONFLICT,
                "too_many_unpaid_orders",
                Some(json!({ "open_cash_orders": open, "limit": limit })),
            ),
            E::NotFound => (StatusCode::NOT_FOUND, "not_found", None),
            E::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", None),
            E::InvalidTransition { from, .. } => {
                let allowed: Vec<&str> = crate::orders::fsm::allowed_actions(from)
                    .into_iter()
                    .map(crate::orders::fsm::Action::as_str)
                    .collect();
                let now = if allowed.is_empty() {
                    "nothing (final state)".to_owned()
                } else {
                    allowed.join(", ")
                };
                return ApiError::new(
                    StatusCode::CONFLICT,
                    "invalid_transition",
                    format!("{detail}; allowed now: {now}"),
                )
                .with_extra(json!({ "status": from, "allowed_actions": allowed }));
            }
            E::NotACourier { courier } => (
                StatusCode::CONFLICT,
                "not_a_courier",
                Some(json!({ "courier_id": courier })),
            ),
        };
        ApiError::Client {
            status,
            code,
            detail,
            extra,
        }
    }
}

impl From<crate::catalog::CatalogError> for ApiError {
    fn from(e: crate::catalog::CatalogError) -> Self {
        use crate::catalog::CatalogError as E;
        let detail = e.to_string();
        let (status, code) = match e {
            E::Database(db) => return ApiError::Database(db),
            E::Internal(_) => return ApiError::Internal(detail),
            E::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            E::CategoryNotFound | E::ItemNotFound => (StatusCode::NOT_FOUND, "not_found"),
            E::NameTaken | E::CategoryHasItems | E::CategoryInHistory => {
                (StatusCode::CONFLICT, "conflict")
            }
            E::UnknownCategory => (StatusCode::CONFLICT, "unknown_category"),
            E::CursorOfAnotherSort => (StatusCode::BAD_REQUEST, "invalid_cursor"),
        };
        ApiError::new(status, code, detail)
    }
}

impl From<crate::auth::tokens::TokenError> for ApiError {
    fn from(e: crate::auth::tokens::TokenError) -> Self {
        crate::auth::AuthError::Token(e).into()
    }
}

impl From<crate::auth::error::PasswordError> for ApiError {
    fn from(e: crate::auth::error::PasswordError) -> Self {
        crate::auth::AuthError::Password(e).into()
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError as E;
        use crate::auth::error::PasswordError;
        use crate::auth::tokens::TokenError;
        let detail = e.to_string();
        let (status, code) = match e {
            E::Database(db) => return ApiError::Database(db),
            E::Token(TokenError::Signing(_) | TokenError::NoRandomness(_))
            | E::Password(PasswordError::Failed(_)) => return ApiError::Internal(detail),
            E::MissingToken
            | E::MalformedAuthorization
            | E::Token(TokenError::Expired | TokenError::Invalid) => {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            }
            E::Password(PasswordError::Busy) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            E::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            E::EmailTaken => (StatusCode::CONFLICT, "email_taken"),
            E::InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            E::InvalidRefreshToken => (StatusCode::UNAUTHORIZED, "invalid_refresh_token"),
            E::RefreshTokenReused => (StatusCode::UNAUTHORIZED, "refresh_token_reused"),
        };
        ApiError::new(status, code, detail)
    }
}

/// `axum::Json` whose rejections are problem documents, and which reads
/// only a JSON object: serde would otherwise fill a struct from an array.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .is_some_and(|m| {
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            });
        if !is_json {
            return Err(JsonRejection::from(
                axum::extract::rejection::MissingJsonContentType::default(),
            )
            .into());
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "the request body is larger than the server accepts",
                    )
                } else {
                    ApiError::bad_request(e.body_text())
                }
            })?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::validation(
                "the request body must be a JSON object",
            ));
        }
        axum::Json::<T>::from_bytes(&bytes)
            .map(|axum::Json(value)| Json(value))
            .map_err(ApiError::from)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path` whose rejections are problem documents.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` whose rejections are problem documents.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// Maps a unique-violation on a named constraint to a `409 conflict`.
pub fn unique_violation(e: &sqlx::Error, constraint: &str) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.is_unique_violation() && db.constraint().is_some_and(|c| c == constraint)
        }
        _ => false,
    }
}

pub fn foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_503_says_when_to_retry() {
        let r =
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "busy").into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let r = ApiError::new(StatusCode::CONFLICT, "conflict", "no").into_response();
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }
}
