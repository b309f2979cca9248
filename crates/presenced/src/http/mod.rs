//! The REST API (SPEC §6) and the operations routes (`/healthz`, `/readyz`, `/metrics`).
//! `app::router` puts them together with the WebSocket gateway and the OpenAPI
//! document.

pub(crate) mod admin;
pub(crate) mod events;
pub(crate) mod presence;
pub(crate) mod reports;
pub(crate) mod typing;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::error::ApiError;
use crate::state::AppState;

/// The REST and operations routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(presence::routes())
        .merge(reports::routes())
        .route("/messenger/presence/events", get(events::events))
        .route(
            "/messenger/presence/typing/{conversation_id}",
            get(typing::typing_now),
        )
        .route("/admin/nodes", get(admin::nodes))
        .route("/admin/repair", axum::routing::post(admin::repair))
        .route("/admin/webhooks", get(admin::webhooks))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
}

/// A query parameter as a number in `range` (`default` when absent, else required), or the
/// clear error naming it.
pub(crate) fn number<T>(
    name: &str,
    value: Option<&str>,
    default: Option<T>,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ApiError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let out_of_range = || {
        ApiError::invalid_argument(format!(
            "{name} must be between {} and {}",
            range.start(),
            range.end()
        ))
    };
    match value {
        None => default.ok_or_else(|| ApiError::invalid_argument(format!("{name} is required"))),
        Some(v) => v
            .parse::<T>()
            .ok()
            .filter(|v| range.contains(v))
            .ok_or_else(out_of_range),
    }
}

/// A page's `limit`: 1–1000, 100 when absent (every paged route).
pub(crate) fn page_limit(value: Option<&str>) -> Result<usize, ApiError> {
    number("limit", value, Some(100), 1..=1000)
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
        metrics::gauge!("presenced_users", "status" => "online").set(c.online() as f64);
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
