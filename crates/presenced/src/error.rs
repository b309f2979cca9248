//! One error shape for every route (SPEC §6): `{"error": {"code": "...", "message": "..."}}`,
//! and extractors that turn axum's own rejections (bad JSON, bad query, bad path) into it.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use presence_core::{StoreError, TransitionError};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An API error: a status, a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code (`invalid_argument`, `not_found`, …); also the WebSocket error code.
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    /// 400: malformed or out-of-range input.
    pub fn invalid_argument(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", m)
    }
    /// 401: no valid token.
    pub fn unauthenticated(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", m)
    }
    /// 403: a valid token that may not do this.
    pub fn permission_denied(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_denied", m)
    }
    /// 404.
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", m)
    }
    /// 405, in the error shape (code `invalid_argument`: the request is malformed for this
    /// route).
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_argument",
            "method not allowed on this route",
        )
    }
    /// 409.
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", m)
    }
    /// 413.
    pub fn payload_too_large(m: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", m)
    }
    /// 429.
    pub fn rate_limited(m: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", m)
    }
    /// 503: the store cannot be reached.
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
    }
    /// 500.
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
    }

    /// The WebSocket `error` frame answering the frame `id`.
    pub fn frame(&self, id: Option<crate::protocol::FrameId>) -> crate::protocol::ServerFrame {
        crate::protocol::ServerFrame::error(id, self.code, self.message.clone())
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message.clone(),
            },
        }
    }
}

/// The error shape of every route: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// invalid_argument, unauthenticated, permission_denied, not_found, conflict,
    /// payload_too_large, rate_limited, unavailable, internal.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// A malformed id in a path, query or parameter (SPEC §2) is `invalid_argument`.
impl From<presence_core::IdError> for ApiError {
    fn from(e: presence_core::IdError) -> Self {
        ApiError::invalid_argument(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(u) => ApiError::not_found(format!("no presence for user {u}")),
            StoreError::NoSuchSession(s) => ApiError::not_found(format!("session {s} is not open")),
            StoreError::Refused(TransitionError::TooManySessions { limit }) => {
                ApiError::conflict(format!("the user already has {limit} sessions"))
            }
            StoreError::Refused(
                e @ (TransitionError::SessionExists(_) | TransitionError::SessionEnded(_)),
            ) => ApiError::conflict(e.to_string()),
            StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "store unavailable");
                ApiError::unavailable("the presence store is unavailable; try again")
            }
            StoreError::Corrupt(m) => {
                tracing::error!(error = %m, "store returned corrupt data");
                ApiError::internal("internal error")
            }
        }
    }
}

/// `axum::Json` answering bad input in our error shape.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::payload_too_large("request body too large"))
            }
            Err(e) => Err(ApiError::invalid_argument(e.body_text())),
        }
    }
}

/// `axum::extract::Query` answering bad input in our error shape.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e: QueryRejection| ApiError::invalid_argument(e.body_text()))
    }
}

/// `axum::extract::Path` answering bad input in our error shape.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e: PathRejection| ApiError::invalid_argument(e.body_text()))
    }
}
