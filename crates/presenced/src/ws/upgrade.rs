//! `GET /messenger/ws`: everything that can be checked before the upgrade is checked here,
//! so a refused client gets an HTTP answer in the REST error shape, not a socket.

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use presence_core::{DeviceKind, OrgId, ZoneId};
use serde::Deserialize;

use super::connection::{CheckedUpgrade, ReadError, run};
use crate::auth::{AuthError, bearer};
use crate::error::{ApiError, Query};
use crate::state::AppState;

/// The query string of the upgrade request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectParams {
    token: Option<String>,
    zone_id: Option<String>,
    org_id: Option<String>,
    device: Option<String>,
    invisible: Option<String>,
}

/// The route handler.
pub async fn upgrade(
    State(state): State<AppState>,
    Query(params): Query<ConnectParams>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let checked = match check(&state, params, &headers) {
        Ok(c) => c,
        Err(e) => {
            // A full node (`max_connections`) and an exhausted budget (`rest_rate_limited`)
            // are counted where they are decided; the rest (bad token, bad parameters,
            // another org) by their code here.
            if !matches!(e.code, "unavailable" | "rate_limited") {
                metrics::counter!("presenced_refusals_total", "reason" => e.code).increment(1);
            }
            return e.into_response();
        }
    };
    let limit = state.config.limits.frame_bytes;
    // The socket accepts up to twice the limit so the gateway sees an oversized frame and
    // answers 1009 itself; anything larger is cut off by the socket (also 1009).
    ws.max_message_size(limit * 2 + 1024)
        .max_frame_size(limit * 2 + 1024)
        // tungstenite allocates its read buffer up front (128 KiB by default): an idle
        // connection would cost that much. 1 KiB chunks read any message size; a write
        // buffer of 0 sends each frame at once.
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
            run(
                state,
                checked,
                socket.map(|r| r.map_err(ReadError::from_axum)),
            )
        })
}

/// Checks the token, the parameters and the node's capacity.
pub fn check(
    state: &AppState,
    p: ConnectParams,
    headers: &HeaderMap,
) -> Result<CheckedUpgrade, ApiError> {
    let token = p
        .token
        .as_deref()
        .or_else(|| bearer(headers))
        .ok_or(AuthError::Missing)?;
    let who = state.auth.verify(token)?;
    // Every connect opens and closes a session in the shared store: held to the same
    // per-subject budget as REST requests.
    state
        .rest_limiter
        .check(&who.user, who.role.is_privileged(), 1)?;
    let access = state.access(who);
    let zone = p.zone_id.as_deref().map(ZoneId::new).transpose()?;
    let org = p.org_id.as_deref().map(OrgId::new).transpose()?;
    access.place_in_org(org.as_ref())?;
    let device = match p.device.as_deref() {
        None => DeviceKind::Web,
        Some(d) => d.parse().map_err(|_| {
            ApiError::invalid_argument("device must be web, desktop, mobile or other")
        })?,
    };
    let invisible = match p.invisible.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::invalid_argument(
                "invisible must be true or false",
            ));
        }
    };
    let permit = state.connection_slot()?;
    Ok(CheckedUpgrade {
        access,
        zone,
        org,
        device,
        invisible,
        permit,
    })
}
