//! `/messenger/presence/*`: the seed's four routes (same paths, same shapes) and the ones
//! beyond it. Every route needs a bearer token; "the token's user" is the `sub`, or for a
//! service token the `user_id` it names (query or JSON body).

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use presence_core::time::format_rfc3339;
use presence_core::{
    BusMessage, Change, DeviceKind, ListCursor, ListQuery, OpenSession, OrgId, PresenceView, Scope,
    SessionId, Status, UserId, ZoneId,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::access::Access;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, Json, Path, Query};
use crate::state::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/messenger/presence/online",
            get(list_online).post(set_online),
        )
        .route("/messenger/presence/count", get(count))
        .route("/messenger/presence/status/{user_id}", get(status))
        .route("/messenger/presence/status/batch", post(status_batch))
        .route("/messenger/presence/away", post(set_away))
        .route("/messenger/presence/activity", post(activity))
        .route(
            "/messenger/presence/heartbeat",
            post(heartbeat).delete(end_heartbeat),
        )
        .route("/messenger/presence/zone", put(set_zone))
        .route(
            "/messenger/presence/custom-status",
            put(set_custom_status).delete(clear_custom_status),
        )
        .route("/messenger/presence/privacy", put(set_privacy))
        .route("/messenger/presence/org", put(set_org))
        .route("/messenger/presence/sessions/{user_id}", get(list_sessions))
        .route(
            "/messenger/presence/sessions/{user_id}/{session_id}",
            delete(end_session),
        )
}

/// A JSON body that may be absent (empty).
fn optional_body<T: DeserializeOwned>(body: &Bytes) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| ApiError::invalid_argument(format!("bad JSON body: {e}")))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    zone_id: Option<String>,
    org_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    status: Option<String>,
}

/// One page of online and away users.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct OnlinePage {
    online_users: Vec<PresenceView>,
    count: u64,
    next_cursor: Option<String>,
}

/// The scope a list or count reads: `zone_id`, `org_id` or neither (global), as the
/// caller may see it.
fn scope_of(access: &Access, zone: Option<&str>, org: Option<&str>) -> Result<Scope, ApiError> {
    let asked = match (zone, org) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_argument(
                "give zone_id or org_id, not both",
            ));
        }
        (Some(z), None) => Scope::Zone(z.parse::<ZoneId>()?),
        (None, Some(o)) => Scope::Org(o.parse::<OrgId>()?),
        (None, None) => Scope::Global,
    };
    access.scope(&asked)
}

/// Users online or away in a scope, most recent activity first (the seed's route).
#[utoipa::path(get, path = "/messenger/presence/online", params(ListParams), security(("bearer" = [])),
    responses((status = 200, body = OnlinePage), (status = 400, description = "invalid_argument", body = ErrorBody), (status = 401, description = "unauthenticated", body = ErrorBody)))]
pub(crate) async fn list_online(
    State(state): State<AppState>,
    who: Caller,
    Query(q): Query<ListParams>,
) -> Result<axum::Json<OnlinePage>, ApiError> {
    let limit = super::page_limit(q.limit.as_deref())?;
    let status = match q.status.as_deref() {
        None => None,
        Some("online") => Some(Status::Online),
        Some("away") => Some(Status::Away),
        Some(_) => return Err(ApiError::invalid_argument("status must be online or away")),
    };
    let cursor = q
        .cursor
        .as_deref()
        .map(ListCursor::decode)
        .transpose()
        .map_err(|e| ApiError::invalid_argument(e.to_string()))?;
    let access = state.access(who.0);
    let scope = scope_of(&access, q.zone_id.as_deref(), q.org_id.as_deref())?;
    let page = state
        .store
        .list(
            &scope,
            &ListQuery {
                limit,
                cursor,
                status,
            },
        )
        .await?;
    let users = page
        .users
        .into_iter()
        .filter_map(|v| access.view(v))
        .collect();
    Ok(axum::Json(OnlinePage {
        online_users: users,
        count: page.count,
        next_cursor: page.next_cursor.map(|c| c.encode()),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct CountParams {
    zone_id: Option<String>,
    org_id: Option<String>,
}

/// Counts: `{"global": N, "zone": N | null, "org": N | null}` (the seed's route).
#[utoipa::path(get, path = "/messenger/presence/count", params(CountParams), security(("bearer" = [])),
    responses((status = 200, body = CountAnswer), (status = 400, description = "invalid_argument", body = ErrorBody), (status = 401, description = "unauthenticated", body = ErrorBody)))]
pub(crate) async fn count(
    State(state): State<AppState>,
    who: Caller,
    Query(q): Query<CountParams>,
) -> Result<axum::Json<CountAnswer>, ApiError> {
    let access = state.access(who.0);
    let mut scopes = vec![scope_of(&access, None, None)?];
    if let Some(z) = &q.zone_id {
        scopes.push(scope_of(&access, Some(z), None)?);
    }
    if let Some(o) = &q.org_id {
        scopes.push(scope_of(&access, None, Some(o))?);
    }
    let counts = state.store.counts(&scopes).await?;
    let mut it = counts.iter().map(|c| c.total);
    let global = it.next().unwrap_or(0);
    let zone = q.zone_id.as_ref().and_then(|_| it.next());
    let org = q.org_id.as_ref().and_then(|_| it.next());
    Ok(axum::Json(CountAnswer { global, zone, org }))
}

/// One user's view; 404 if never seen or expired (the seed's route).
#[utoipa::path(get, path = "/messenger/presence/status/{user_id}", params(("user_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = presence_core::PresenceView), (status = 404, body = ErrorBody), (status = 400, description = "invalid_argument", body = ErrorBody), (status = 401, description = "unauthenticated", body = ErrorBody)))]
pub(crate) async fn status(
    State(state): State<AppState>,
    who: Caller,
    Path(user_id): Path<String>,
) -> Result<axum::Json<PresenceView>, ApiError> {
    let user: UserId = user_id.parse()?;
    let view = state.store.view(&user).await?;
    view.and_then(|v| state.access(who.0).view(v))
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found(format!("no presence for user {user}")))
}

/// Ids as strings or integers.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchBody {
    #[schema(value_type = Vec<String>)]
    user_ids: Vec<serde_json::Value>,
}

fn ids_of(state: &AppState, raw: &[serde_json::Value]) -> Result<Vec<UserId>, ApiError> {
    let max = state.config.limits.batch_ids;
    if raw.len() > max {
        return Err(ApiError::invalid_argument(format!(
            "at most {max} user_ids per call"
        )));
    }
    raw.iter()
        .map(|v| {
            serde_json::from_value::<UserId>(v.clone())
                .map_err(|e| ApiError::invalid_argument(e.to_string()))
        })
        .collect()
}

/// Many users' views in one call: `{"users": {"id": view | null}}`.
#[utoipa::path(post, path = "/messenger/presence/status/batch", request_body = BatchBody, security(("bearer" = [])),
    responses((status = 200, body = BatchAnswer), (status = 400, description = "invalid_argument", body = ErrorBody), (status = 401, description = "unauthenticated", body = ErrorBody)))]
pub(crate) async fn status_batch(
    State(state): State<AppState>,
    who: Caller,
    Json(body): Json<BatchBody>,
) -> Result<axum::Json<BatchAnswer>, ApiError> {
    let ids = ids_of(&state, &body.user_ids)?;
    let views = state.store.views(&ids).await?;
    let access = state.access(who.0);
    let users: BTreeMap<String, Option<PresenceView>> = ids
        .iter()
        .zip(views)
        .map(|(id, v)| (id.to_string(), v.and_then(|v| access.view(v))))
        .collect();
    Ok(axum::Json(BatchAnswer { users }))
}

#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserParam {
    user_id: Option<UserId>,
}

/// The user named by the query or a `{"user_id"}` body, checked against the caller.
fn target(
    state: &AppState,
    who: &Caller,
    query: UserParam,
    body: Option<UserParam>,
) -> Result<UserId, ApiError> {
    let named = query.user_id.or(body.and_then(|b| b.user_id));
    state.access(who.0.clone()).act_as(named)
}

/// The optional body of `POST /away` and `POST /online`: the user a service token names, and
/// invisible on or off in the same step (the `status.set` frame's `invisible`).
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusBody {
    user_id: Option<UserId>,
    /// Go invisible (`true`) or visible again (`false`); absent leaves it.
    invisible: Option<bool>,
}

pub(crate) async fn set_status(
    state: AppState,
    who: Caller,
    q: UserParam,
    body: Bytes,
    away: bool,
) -> Result<Response, ApiError> {
    let body: StatusBody = optional_body(&body)?.unwrap_or_default();
    let named = UserParam {
        user_id: body.user_id,
    };
    let user = target(&state, &who, q, Some(named))?;
    let change = Change::SetStatus {
        away,
        invisible: body.invisible,
    };
    state.apply_change(&user, change).await?;
    let status = if away { "away" } else { "online" };
    Ok(axum::Json(StatusAnswer {
        status: status.into(),
        user_id: user.to_string(),
    })
    .into_response())
}

/// Manual away for the token's user (the seed's route). An optional body may name the user
/// (service tokens) and turn invisible on or off in the same step.
#[utoipa::path(post, path = "/messenger/presence/away", params(UserParam), security(("bearer" = [])),
    request_body(content = Option<StatusBody>, description = "optional"),
    responses((status = 200, body = StatusAnswer), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 400, description = "invalid_argument", body = ErrorBody), (status = 401, description = "unauthenticated", body = ErrorBody)))]
pub(crate) async fn set_away(
    State(state): State<AppState>,
    who: Caller,
    Query(q): Query<UserParam>,
    body: Bytes,
) -> Result<Response, ApiError> {
    set_status(state, who, q, body, true).await
}

/// Back online; clears manual away. An optional body may name the user (service tokens) and
/// turn invisible on or off in the same step.
#[utoipa::path(post, path = "/messenger/presence/online", params(UserParam), security(("bearer" = [])),
    request_body(content = Option<StatusBody>, description = "optional"),
    responses((status = 200, body = StatusAnswer), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 400, description = "invalid_argument", body = ErrorBody), (status = 401, description = "unauthenticated", body = ErrorBody)))]
pub(crate) async fn set_online(
    State(state): State<AppState>,
    who: Caller,
    Query(q): Query<UserParam>,
    body: Bytes,
) -> Result<Response, ApiError> {
    set_status(state, who, q, body, false).await
}

/// Users who were active (service tokens); no body: the token's user.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActivityBody {
    #[schema(value_type = Vec<String>)]
    user_ids: Vec<serde_json::Value>,
}

/// Activity, buffered and written at the next flush.
#[utoipa::path(post, path = "/messenger/presence/activity", request_body(content = Option<ActivityBody>), security(("bearer" = [])),
    responses((status = 204, description = "recorded"), (status = 403, body = ErrorBody), (status = 400, description = "invalid_argument", body = ErrorBody), (status = 401, description = "unauthenticated", body = ErrorBody)))]
pub(crate) async fn activity(
    State(state): State<AppState>,
    who: Caller,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let users = match optional_body::<ActivityBody>(&body)? {
        None => vec![who.0.user.clone()],
        Some(b) => {
            let ids = ids_of(&state, &b.user_ids)?;
            state.access(who.0.clone()).act_for_all(&ids)?;
            ids
        }
    };
    for u in &users {
        state.record_activity(u);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Opens a REST session leased for `online_ttl`, or renews one (`session_id`).
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeartbeatBody {
    user_id: Option<UserId>,
    session_id: Option<SessionId>,
    device: Option<DeviceKind>,
    zone_id: Option<ZoneId>,
    org_id: Option<OrgId>,
    /// Open invisible (a new session only): the user is invisible from this open on.
    invisible: Option<bool>,
}

/// A session without a WebSocket.
#[utoipa::path(post, path = "/messenger/presence/heartbeat", request_body(content = Option<HeartbeatBody>), security(("bearer" = [])),
    responses((status = 200, body = HeartbeatAnswer), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 400, description = "invalid_argument", body = ErrorBody), (status = 401, description = "unauthenticated", body = ErrorBody)))]
pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    who: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: HeartbeatBody = optional_body(&body)?.unwrap_or_default();
    let access = state.access(who.0);
    let user = access.act_as(b.user_id.clone())?;
    access.place_in_org(b.org_id.as_ref())?;
    let (session, until) = match b.session_id {
        Some(s) => {
            let until = state.store.renew_session(&user, &s).await?;
            (s, until)
        }
        None => {
            let session = SessionId::random();
            let open = OpenSession {
                user: user.clone(),
                session: session.clone(),
                device: b.device.unwrap_or(DeviceKind::Web),
                zone: b.zone_id,
                org: b.org_id,
                leased: true,
                invisible: b.invisible.unwrap_or(false),
            };
            state.store.open_session(open).await?;
            let ttl = presence_core::settings::ms(state.config.presence.online_ttl);
            (session, state.now() + ttl)
        }
    };
    Ok(axum::Json(HeartbeatAnswer {
        session_id: session.to_string(),
        expires_at: format_rfc3339(until),
    })
    .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct EndHeartbeat {
    session_id: SessionId,
    user_id: Option<UserId>,
}

/// Ends a REST session (the offline grace follows).
#[utoipa::path(delete, path = "/messenger/presence/heartbeat", params(EndHeartbeat), security(("bearer" = [])),
    responses((status = 204, description = "ended"), (status = 404, body = ErrorBody), (status = 400, description = "invalid_argument", body = ErrorBody), (status = 401, description = "unauthenticated", body = ErrorBody)))]
pub(crate) async fn end_heartbeat(
    State(state): State<AppState>,
    who: Caller,
    Query(q): Query<EndHeartbeat>,
) -> Result<StatusCode, ApiError> {
    let user = state.access(who.0).act_as(q.user_id)?;
    // Only a REST lease: a WebSocket's session ends with its socket.
    state
        .store
        .close_leased_session(&user, &q.session_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Move to a zone (`null` leaves zones).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ZoneBody {
    zone_id: Option<ZoneId>,
    user_id: Option<UserId>,
}

/// Moves the user; answers the view.
#[utoipa::path(put, path = "/messenger/presence/zone", request_body = ZoneBody, security(("bearer" = [])),
    responses((status = 200, body = presence_core::PresenceView), (status = 404, body = ErrorBody), (status = 400, description = "invalid_argument", body = ErrorBody), (status = 401, description = "unauthenticated", body = ErrorBody)))]
pub(crate) async fn set_zone(
    State(state): State<AppState>,
    who: Caller,
    Json(b): Json<ZoneBody>,
) -> Result<axum::Json<PresenceView>, ApiError> {
    let user = state.access(who.0).act_as(b.user_id)?;
    let applied = state
        .apply_change(&user, Change::SetZone(b.zone_id))
        .await?;
    Ok(axum::Json(applied.view))
}

/// Move to an org (`null` leaves orgs).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrgBody {
    org_id: Option<OrgId>,
    user_id: Option<UserId>,
}

/// Moves the user; answers the view.
#[utoipa::path(put, path = "/messenger/presence/org", request_body = OrgBody, security(("bearer" = [])),
    responses((status = 200, body = presence_core::PresenceView), (status = 404, body = ErrorBody), (status = 400, description = "invalid_argument", body = ErrorBody), (status = 401, description = "unauthenticated", body = ErrorBody)))]
pub(crate) async fn set_org(
    State(state): State<AppState>,
    who: Caller,
    Json(b): Json<OrgBody>,
) -> Result<axum::Json<PresenceView>, ApiError> {
    let access = state.access(who.0);
    let user = access.act_as(b.user_id)?;
    access.place_in_org(b.org_id.as_ref())?;
    let applied = state.apply_change(&user, Change::SetOrg(b.org_id)).await?;
    Ok(axum::Json(applied.view))
}

/// A custom status (SPEC §3), for the token's user or the user a service token names.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CustomStatusBody {
    kind: presence_core::CustomStatusKind,
    /// At most 140 characters.
    #[serde(default)]
    text: Option<String>,
    /// At most 16 bytes.
    #[serde(default)]
    emoji: Option<String>,
    /// RFC 3339; it clears itself then (the sweep, one event).
    #[serde(default, with = "presence_core::time::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<presence_core::Millis>,
    user_id: Option<UserId>,
}

/// Sets the custom status (leaves `status` alone); answers the view.
#[utoipa::path(put, path = "/messenger/presence/custom-status", request_body = CustomStatusBody, security(("bearer" = [])),
    responses((status = 200, body = presence_core::PresenceView), (status = 404, body = ErrorBody), (status = 400, description = "invalid_argument", body = ErrorBody), (status = 401, description = "unauthenticated", body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn set_custom_status(
    State(state): State<AppState>,
    who: Caller,
    Json(b): Json<CustomStatusBody>,
) -> Result<axum::Json<PresenceView>, ApiError> {
    let user = state.access(who.0).act_as(b.user_id)?;
    let status = presence_core::CustomStatus {
        kind: b.kind,
        text: b.text,
        emoji: b.emoji,
        expires_at: b.expires_at,
    };
    let applied = state
        .apply_change(&user, Change::SetCustomStatus(status))
        .await?;
    Ok(axum::Json(applied.view))
}

/// Privacy settings (SPEC §3), for the token's user or the user a service token names; a
/// setting left out stays as it is.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PrivacyBody {
    /// Who sees the real status: `everyone`, `org` (tokens of the user's org) or `nobody`.
    presence: Option<presence_core::PresenceVisibility>,
    /// How others see `last_seen`: `exact`, `approximate` (a bucket) or `hidden` (null).
    last_seen: Option<presence_core::LastSeenVisibility>,
    user_id: Option<UserId>,
}

/// Sets privacy: who sees the presence and how others see last seen; answers the user's own
/// view (with `privacy`). Hiding from more onlookers looks to them like going offline (one
/// event), from fewer like coming online; a `last_seen` change alone is no event.
#[utoipa::path(put, path = "/messenger/presence/privacy", request_body = PrivacyBody, security(("bearer" = [])),
    responses((status = 200, body = presence_core::PresenceView), (status = 404, description = "not_found: the user has no presence yet", body = ErrorBody), (status = 400, description = "invalid_argument", body = ErrorBody), (status = 401, description = "unauthenticated", body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn set_privacy(
    State(state): State<AppState>,
    who: Caller,
    Json(b): Json<PrivacyBody>,
) -> Result<axum::Json<PresenceView>, ApiError> {
    let user = state.access(who.0).act_as(b.user_id)?;
    let change = crate::protocol::privacy_change(b.presence, b.last_seen)
        .map_err(ApiError::invalid_argument)?;
    let applied = state.apply_change(&user, change).await?;
    Ok(axum::Json(applied.view))
}

/// Clears the custom status; answers the view.
#[utoipa::path(delete, path = "/messenger/presence/custom-status", params(UserParam), security(("bearer" = [])),
    responses((status = 200, body = presence_core::PresenceView), (status = 404, body = ErrorBody), (status = 400, description = "invalid_argument", body = ErrorBody), (status = 401, description = "unauthenticated", body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn clear_custom_status(
    State(state): State<AppState>,
    who: Caller,
    Query(q): Query<UserParam>,
) -> Result<axum::Json<PresenceView>, ApiError> {
    let user = state.access(who.0).act_as(q.user_id)?;
    let applied = state.apply_change(&user, Change::ClearCustomStatus).await?;
    Ok(axum::Json(applied.view))
}

/// One open session of a user.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SessionEntry {
    session_id: String,
    device: DeviceKind,
    /// The node holding the session's WebSocket; `null` for a REST heartbeat session.
    node_id: Option<String>,
    /// When the session opened (RFC 3339, to the second); `null` only for a session opened by
    /// a presenced older than this field.
    #[schema(format = DateTime)]
    connected_at: Option<String>,
    /// The user's last activity, the same in every entry: activity is kept per user (one
    /// store write per active user per flush, whichever session was active), not per session.
    #[schema(format = DateTime)]
    last_activity: String,
}

/// A user's open sessions, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SessionsAnswer {
    sessions: Vec<SessionEntry>,
}

/// A user's open sessions (WebSockets and REST heartbeat leases): for the user's own token and
/// service and admin tokens; another user's token gets 403. `last_activity` is the user's, in
/// every entry: activity is kept per user, not per session. 404 for a user never seen (or
/// past retention); an empty list for a user without a session.
#[utoipa::path(get, path = "/messenger/presence/sessions/{user_id}", params(("user_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = SessionsAnswer), (status = 403, description = "permission_denied: another user's sessions", body = ErrorBody), (status = 404, body = ErrorBody), (status = 400, description = "invalid_argument", body = ErrorBody), (status = 401, description = "unauthenticated", body = ErrorBody)))]
pub(crate) async fn list_sessions(
    State(state): State<AppState>,
    who: Caller,
    Path(user_id): Path<String>,
) -> Result<axum::Json<SessionsAnswer>, ApiError> {
    let user: UserId = user_id.parse()?;
    state.access(who.0).may_see_sessions(&user)?;
    let listed = state
        .store
        .sessions(&user)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no presence for user {user}")))?;
    let last_activity = format_rfc3339(listed.last_activity);
    let sessions = listed
        .sessions
        .into_iter()
        .map(|s| SessionEntry {
            session_id: s.session.to_string(),
            device: s.device,
            node_id: s.node.map(|n| n.to_string()),
            connected_at: s.connected_at.map(format_rfc3339),
            last_activity: last_activity.clone(),
        })
        .collect();
    Ok(axum::Json(SessionsAnswer { sessions }))
}

/// Ends one session (service and admin tokens): a WebSocket is closed with 4011, a REST
/// heartbeat lease ends; the user's other sessions stay. Ending the last one is a clean close:
/// the offline grace follows. 404 when that session is not open.
#[utoipa::path(delete, path = "/messenger/presence/sessions/{user_id}/{session_id}", params(("user_id" = String, Path), ("session_id" = String, Path)), security(("bearer" = [])),
    responses((status = 204, description = "ended"), (status = 403, description = "permission_denied: not a service or admin token", body = ErrorBody), (status = 404, description = "not_found: no such open session", body = ErrorBody), (status = 400, description = "invalid_argument", body = ErrorBody), (status = 401, description = "unauthenticated", body = ErrorBody)))]
pub(crate) async fn end_session(
    State(state): State<AppState>,
    who: Caller,
    Path((user_id, session_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.access(who.0).may_end_sessions()?;
    let user: UserId = user_id.parse()?;
    let session: SessionId = session_id.parse()?;
    state.store.end_session(&user, &session).await?;
    // A socket this node holds closes now; one on another node closes when that node hears
    // of it on the bus, or, should it miss the message, when its reconcile finds the session
    // ended (within about a node lease).
    if !state.sessions.end(&user, &session) {
        let ended = BusMessage::SessionEnded(presence_core::EndedSession {
            user_id: user,
            session_id: session,
        });
        if let Err(e) = state.store.publish(&ended).await {
            tracing::warn!(error = %e, "could not tell the other nodes; their reconcile will");
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Counts per scope; `null` for a scope not asked for.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CountAnswer {
    global: u64,
    zone: Option<u64>,
    org: Option<u64>,
}

/// `{"status": "away", "user_id": "123"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct StatusAnswer {
    status: String,
    user_id: String,
}

/// Views by id, `null` for users without presence.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct BatchAnswer {
    /// user id → PresenceView or null.
    #[schema(value_type = Object)]
    users: BTreeMap<String, Option<PresenceView>>,
}

/// A REST session and when its lease runs out.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct HeartbeatAnswer {
    session_id: String,
    expires_at: String,
}
