//! What a messenger's backend asks of presence beyond who is online now (SPEC §6): a user's
//! online history per UTC day, the inactive report, and nearby users with the location
//! routes that feed it. Who may ask is decided in [`crate::access`].

use axum::Router;
use axum::extract::State;
use axum::routing::{get, put};
use presence_core::history::{self, format_day, parse_day};
use presence_core::settings::ms;
use presence_core::time::format_rfc3339;
use presence_core::{Change, ListCursor, Location, NearbyQuery, PresenceView, Status, UserId};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, Json, Path, Query};
use crate::state::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/messenger/presence/history/{user_id}", get(user_history))
        .route("/messenger/presence/inactive", get(inactive))
        .route(
            "/messenger/presence/location",
            put(set_location).delete(clear_location),
        )
        .route("/messenger/presence/nearby", get(nearby))
}

// --- History ---------------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryParams {
    /// First UTC day, `YYYY-MM-DD` (default: 6 days before `to`).
    from: Option<String>,
    /// Last UTC day, `YYYY-MM-DD` (default: today).
    to: Option<String>,
}

/// One UTC day of history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct HistoryDay {
    /// `YYYY-MM-DD`.
    date: String,
    /// Seconds the user was present (online or away, visible or not) that day.
    online_seconds: i64,
}

/// A user's online history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct HistoryAnswer {
    user_id: String,
    /// Every day from `from` to `to`, in order, zeros included.
    days: Vec<HistoryDay>,
}

/// Seconds present per UTC day, from transitions: a presence counts from its first session's
/// open to its last close (a reload within the grace does not break it), a presence still
/// going on up to now. For the user's own token and service and admin tokens. The range may
/// span at most `history_retention` days; days past retention answer 0.
#[utoipa::path(get, path = "/messenger/presence/history/{user_id}", params(("user_id" = String, Path), HistoryParams), security(("bearer" = [])),
    responses((status = 200, body = HistoryAnswer), (status = 400, description = "invalid_argument", body = ErrorBody), (status = 401, description = "unauthenticated", body = ErrorBody), (status = 403, description = "permission_denied: another user's history", body = ErrorBody)))]
pub(crate) async fn user_history(
    State(state): State<AppState>,
    who: Caller,
    Path(user_id): Path<String>,
    Query(q): Query<HistoryParams>,
) -> Result<axum::Json<HistoryAnswer>, ApiError> {
    let user: UserId = user_id.parse()?;
    state.access(who.0).may_see_history(&user)?;
    let day = |name: &str, v: &str| {
        parse_day(v).ok_or_else(|| {
            ApiError::invalid_argument(format!("{name} must be a date like 2024-11-26"))
        })
    };
    let retention_days = (ms(state.config.presence.history_retention) / history::DAY_MS).max(1);
    let to = match &q.to {
        Some(v) => day("to", v)?,
        None => history::day_of(state.now()),
    };
    let from = match &q.from {
        Some(v) => day("from", v)?,
        None => to - 6.min(retention_days - 1),
    };
    if from > to {
        return Err(ApiError::invalid_argument("from must not be after to"));
    }
    if to - from + 1 > retention_days {
        return Err(ApiError::invalid_argument(format!(
            "the range may span at most {retention_days} days (history_retention)"
        )));
    }
    let spent = state.store.history(&user, from, to).await?;
    let days = (from..=to)
        .zip(spent)
        .map(|(d, ms)| HistoryDay {
            date: format_day(d),
            online_seconds: ms / 1000,
        })
        .collect();
    Ok(axum::Json(HistoryAnswer {
        user_id: user.to_string(),
        days,
    }))
}

// --- Inactive users --------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct InactiveParams {
    /// Offline users last seen more than this many days (of 24 h) ago, 0–3650.
    days: Option<String>,
    /// 1–1000, default 100.
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// One inactive user.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct InactiveEntry {
    user_id: String,
    /// RFC 3339.
    last_seen: String,
}

/// A page of the inactive report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct InactiveAnswer {
    users: Vec<InactiveEntry>,
    next_cursor: Option<String>,
}

/// Offline users last seen before now − `days` × 24 h, oldest first, from the last-seen index
/// (records are kept `last_seen_retention`, so nobody older is listed). Service and admin
/// tokens only: it shows exact last-seen times, whatever a user's privacy.
#[utoipa::path(get, path = "/messenger/presence/inactive", params(InactiveParams), security(("bearer" = [])),
    responses((status = 200, body = InactiveAnswer), (status = 400, description = "invalid_argument", body = ErrorBody), (status = 401, description = "unauthenticated", body = ErrorBody), (status = 403, description = "permission_denied: a user token", body = ErrorBody)))]
pub(crate) async fn inactive(
    State(state): State<AppState>,
    who: Caller,
    Query(q): Query<InactiveParams>,
) -> Result<axum::Json<InactiveAnswer>, ApiError> {
    state.access(who.0).may_read_reports()?;
    let days: i64 = super::number("days", q.days.as_deref(), None, 0..=3650)?;
    let limit = super::page_limit(q.limit.as_deref())?;
    let cursor = q
        .cursor
        .as_deref()
        .map(ListCursor::decode)
        .transpose()
        .map_err(|e| ApiError::invalid_argument(e.to_string()))?;
    let before = state.now() - days * history::DAY_MS;
    let page = state.store.inactive(before, limit, cursor.as_ref()).await?;
    Ok(axum::Json(InactiveAnswer {
        users: page
            .users
            .into_iter()
            .map(|u| InactiveEntry {
                user_id: u.user.to_string(),
                last_seen: format_rfc3339(u.last_seen),
            })
            .collect(),
        next_cursor: page.next_cursor.map(|c| c.encode()),
    }))
}

// --- Location and nearby ---------------------------------------------------------------

/// A location to share.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LocationBody {
    /// Degrees, −85.05112878 to 85.05112878 (what Redis GEO indexes).
    lat: f64,
    /// Degrees, −180 to 180.
    lon: f64,
    user_id: Option<UserId>,
}

/// Whose location to stop sharing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClearLocationParams {
    /// For a service token: the user.
    user_id: Option<String>,
}

/// Shares the user's location for `nearby` until they go offline or clear it, rounded to
/// `limits.location_decimals` (about 111 m by default) so that distances never give the exact
/// position away; answers the view (a location is not part of it, and changing it is no
/// event). 409 while the user is offline: a location lasts as long as the presence.
#[utoipa::path(put, path = "/messenger/presence/location", request_body = LocationBody, security(("bearer" = [])),
    responses((status = 200, body = presence_core::PresenceView), (status = 400, description = "invalid_argument", body = ErrorBody), (status = 401, description = "unauthenticated", body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "conflict: the user is offline", body = ErrorBody)))]
pub(crate) async fn set_location(
    State(state): State<AppState>,
    who: Caller,
    Json(b): Json<LocationBody>,
) -> Result<axum::Json<PresenceView>, ApiError> {
    let user = state.access(who.0).act_as(b.user_id)?;
    let at = Location::new(b.lat, b.lon)
        .map_err(|e| ApiError::invalid_argument(e.to_string()))?
        .rounded(state.config.limits.location_decimals);
    let applied = state
        .apply_change(&user, Change::SetLocation(Some(at)))
        .await?;
    if applied.view.status == Status::Offline {
        return Err(ApiError::conflict(
            "the user is offline: a location is kept only while present",
        ));
    }
    Ok(axum::Json(applied.view))
}

/// Stops sharing the user's location; answers the view.
#[utoipa::path(delete, path = "/messenger/presence/location", params(ClearLocationParams), security(("bearer" = [])),
    responses((status = 200, body = presence_core::PresenceView), (status = 400, description = "invalid_argument", body = ErrorBody), (status = 401, description = "unauthenticated", body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn clear_location(
    State(state): State<AppState>,
    who: Caller,
    Query(q): Query<ClearLocationParams>,
) -> Result<axum::Json<PresenceView>, ApiError> {
    let named = q.user_id.as_deref().map(str::parse).transpose()?;
    let user = state.access(who.0).act_as(named)?;
    let applied = state.apply_change(&user, Change::SetLocation(None)).await?;
    Ok(axum::Json(applied.view))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct NearbyParams {
    /// Degrees.
    lat: Option<String>,
    /// Degrees.
    lon: Option<String>,
    /// Metres, above 0 and at most `limits.nearby_radius_m`.
    radius_m: Option<String>,
    /// 1–1000, default 100.
    limit: Option<String>,
}

/// A user found nearby: the view and the distance.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct NearbyEntry {
    #[serde(flatten)]
    user: PresenceView,
    /// Metres from the point asked, to the centimetre.
    distance_m: f64,
}

/// Users found nearby.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct NearbyAnswer {
    users: Vec<NearbyEntry>,
}

/// Online and away users sharing a location within `radius_m` of (`lat`, `lon`), nearest
/// first: the users everyone sees (invisible users and those whose privacy hides their
/// presence are never found). With tenant isolation a confined token finds its own org only.
#[utoipa::path(get, path = "/messenger/presence/nearby", params(NearbyParams), security(("bearer" = [])),
    responses((status = 200, body = NearbyAnswer), (status = 400, description = "invalid_argument", body = ErrorBody), (status = 401, description = "unauthenticated", body = ErrorBody)))]
pub(crate) async fn nearby(
    State(state): State<AppState>,
    who: Caller,
    Query(q): Query<NearbyParams>,
) -> Result<axum::Json<NearbyAnswer>, ApiError> {
    let lat: f64 = super::number("lat", q.lat.as_deref(), None, -90.0..=90.0)?;
    let lon: f64 = super::number("lon", q.lon.as_deref(), None, -180.0..=180.0)?;
    let at = Location::new(lat, lon).map_err(|e| ApiError::invalid_argument(e.to_string()))?;
    let max_radius = state.config.limits.nearby_radius_m;
    let radius_m: f64 = super::number("radius_m", q.radius_m.as_deref(), None, 0.0..=max_radius)?;
    if radius_m <= 0.0 {
        return Err(ApiError::invalid_argument("radius_m must be above 0"));
    }
    let limit = super::page_limit(q.limit.as_deref())?;
    let access = state.access(who.0);
    let found = state
        .store
        .nearby(&NearbyQuery {
            at,
            radius_m,
            org: access.nearby_org(),
            limit,
        })
        .await?;
    let users = found
        .into_iter()
        .filter_map(|n| {
            Some(NearbyEntry {
                user: access.view(n.view)?,
                distance_m: n.distance_m,
            })
        })
        .collect();
    Ok(axum::Json(NearbyAnswer { users }))
}
