//! The whole application as one axum `Router`: REST, the WebSocket gateway, the OpenAPI
//! document, and the error shape for unknown routes and methods. Tests call it without a
//! socket (`tower::ServiceExt::oneshot`); [`crate::serve`] serves it.

use axum::Router;
use axum::routing::get;

use crate::error::ApiError;
use crate::state::AppState;

/// Every route of a node.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(crate::http::routes())
        .merge(crate::web::routes())
        .route("/messenger/ws", get(crate::ws::upgrade::upgrade))
        .route("/openapi.json", get(crate::openapi::document))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state)
}
