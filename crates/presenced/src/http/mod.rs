//! The REST API (SPEC §6) and the operations routes. `router` builds the whole app so tests
//! can call it without a socket.

mod admin;
mod events;
mod presence;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::auth::{AuthError, Principal};
use crate::error::ApiError;
use crate::state::AppState;

/// The whole application: REST, WebSocket, operations.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(presence::routes())
        .route("/messenger/presence/events", get(events::events))
        .route("/admin/nodes", get(admin::nodes))
        .route("/messenger/ws", get(crate::ws::upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                code: "invalid_argument",
                message: "method not allowed on this route".into(),
            }
        })
        .with_state(state)
}

async fn openapi() -> impl IntoResponse {
    use utoipa::OpenApi as _;
    axum::Json(presence::ApiDoc::openapi())
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    let open = state.config.server.max_connections - state.connections.available_permits();
    metrics::gauge!("presenced_connections").set(open as f64);
    metrics::gauge!("presenced_subscribers").set(state.hub.len() as f64);
    // Users by status, across every node on the store (one cheap call per scrape).
    if let Ok(counts) = state.store.counts(&[presence_core::Scope::Global]).await {
        let c = counts[0];
        metrics::gauge!("presenced_users", "status" => "online").set((c.total - c.away) as f64);
        metrics::gauge!("presenced_users", "status" => "away").set(c.away as f64);
    }
    match &state.metrics {
        Some(h) => h.render().into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed",
        )
            .into_response(),
    }
}

/// The caller, from `Authorization: Bearer <token>`.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = bearer(&parts.headers)
            .ok_or(AuthError::Missing)
            .and_then(|t| state.auth.verify(t));
        let principal = principal.inspect_err(|_| {
            metrics::counter!("presenced_refusals_total", "reason" => "unauthenticated")
                .increment(1);
        })?;
        Ok(Caller(principal))
    }
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let h = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}
