//! The WebSocket gateway at `/messenger/ws` (SPEC §5).
//!
//! The upgrade is refused before it happens for a bad token (401), bad parameters (400) or a
//! full node (503). After it, one task owns the socket and waits on: client frames (rate
//! limited), events for its subscription, the ping timer, its slow-consumer flag and the
//! node's shutdown. The hub's bounded queue is the connection's outbound bound: a client that
//! cannot keep up is closed with 4008, never buffered without bound.

pub mod frames;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use presence_core::{
    Change, DeviceKind, FeedId, OpenSession, OrgId, Scope, SessionId, StoreError, TransitionError,
    UserId, ZoneId,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;

use crate::auth::Principal;
use crate::error::{ApiError, Query};
use crate::hub::{Delivered, Interest, Subscription};
use crate::state::AppState;
use frames::{ClientFrame, parse_frame};

/// Close codes of SPEC §5.
pub mod close {
    /// Frame too big.
    pub const TOO_BIG: u16 = 1009;
    /// Node restarting: reconnect elsewhere.
    pub const RESTARTING: u16 = 1012;
    /// Try again later (the store is unavailable).
    pub const TRY_LATER: u16 = 1013;
    /// Token expired.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// Rate limited or slow consumer.
    pub const RATE_LIMITED: u16 = 4008;
    /// Too many sessions for this user.
    pub const TOO_MANY_SESSIONS: u16 = 4009;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConnectParams {
    token: Option<String>,
    zone_id: Option<String>,
    org_id: Option<String>,
    device: Option<String>,
}

/// `GET /messenger/ws`: checks everything that can be checked before the upgrade.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Query(params): Query<ConnectParams>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    match prepare(&state, params, &headers) {
        Ok(conn) => {
            let limit = state.config.limits.frame_bytes;
            // The socket accepts up to twice the limit so the gateway sees an oversized frame
            // and answers 1009 itself; anything larger is cut off by the socket.
            ws.max_message_size(limit * 2 + 1024)
                .max_frame_size(limit * 2 + 1024)
                // tungstenite allocates its read buffer up front (128 KiB by default): an idle
                // connection would cost that much. 1 KiB chunks read any message size; a write
                // buffer of 0 sends each frame at once.
                .read_buffer_size(1024)
                .write_buffer_size(0)
                .on_upgrade(move |socket| async move { conn.run(state, socket).await })
        }
        Err(e) => {
            metrics::counter!("presenced_refusals_total", "reason" => e.code).increment(1);
            e.into_response()
        }
    }
}

fn prepare(
    state: &AppState,
    p: ConnectParams,
    headers: &HeaderMap,
) -> Result<Connection, ApiError> {
    let token = p
        .token
        .as_deref()
        .or_else(|| crate::http::bearer(headers))
        .ok_or(crate::auth::AuthError::Missing)?;
    let who = state.auth.verify(token)?;
    let bad = |e: presence_core::IdError| ApiError::invalid_argument(e.to_string());
    let zone = p
        .zone_id
        .as_deref()
        .map(ZoneId::new)
        .transpose()
        .map_err(bad)?;
    let org = p
        .org_id
        .as_deref()
        .map(OrgId::new)
        .transpose()
        .map_err(bad)?;
    let device = match p.device.as_deref() {
        None => DeviceKind::Web,
        Some(d) => d.parse().map_err(|_| {
            ApiError::invalid_argument("device must be web, desktop, mobile or other")
        })?,
    };
    let permit = state.connections.clone().try_acquire_owned().map_err(|_| {
        ApiError::unavailable("this node holds its maximum of connections; try another")
    })?;
    Ok(Connection {
        who,
        zone,
        org,
        device,
        _permit: permit,
    })
}

struct Connection {
    who: Principal,
    zone: Option<ZoneId>,
    org: Option<OrgId>,
    device: DeviceKind,
    _permit: OwnedSemaphorePermit,
}

/// Why a connection ended, and the close frame to send.
struct Ending(u16, &'static str);

/// What the rate limit says about a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Handle it.
    Take,
    /// Drop it (and answer `rate_limited` at most once a second).
    Drop,
    /// Close the connection (4008): still over the limit 5 s after it went over.
    Close,
}

/// Token bucket of SPEC §10: `rate` frames a second, bursts of `burst`.
struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
    /// When the client went over the limit; cleared after a second with nothing dropped.
    over_since: Option<Instant>,
    last_drop: Option<Instant>,
    last_error: Option<Instant>,
}

impl RateLimit {
    fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: rate as f64,
            burst: burst as f64,
            tokens: burst as f64,
            at: Instant::now(),
            over_since: None,
            last_drop: None,
            last_error: None,
        }
    }

    /// What to do with a frame arriving at `now`.
    fn take(&mut self, now: Instant) -> Verdict {
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            // A client that still gets frames dropped is still over the limit, even when the
            // bucket lets one through now and then.
            if self
                .last_drop
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
            {
                self.over_since = None;
            }
            return Verdict::Take;
        }
        self.last_drop = Some(now);
        let since = *self.over_since.get_or_insert(now);
        if now.duration_since(since) >= Duration::from_secs(5) {
            Verdict::Close
        } else {
            Verdict::Drop
        }
    }

    /// At most one `rate_limited` error a second.
    fn may_answer(&mut self, now: Instant) -> bool {
        if self
            .last_error
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return false;
        }
        self.last_error = Some(now);
        true
    }
}

impl Connection {
    async fn run(self, state: AppState, mut socket: WebSocket) {
        let session = SessionId::random();
        let user = self.who.user.clone();
        let open = OpenSession {
            user: user.clone(),
            session: session.clone(),
            device: self.device,
            zone: self.zone.clone(),
            org: self.org.clone(),
            leased: false,
        };
        // The open's answer and the `connected` frame are built and sent in here, so they are
        // freed before the connection goes idle: a local of `run` would live as long as the
        // connection does (this is most of what an idle connection would otherwise keep).
        let hello = async {
            let applied = state.store.open_session(open).await?;
            metrics::counter!("presenced_sessions_opened_total").increment(1);
            state.sessions.opened(&OpenSession {
                user: user.clone(),
                session: session.clone(),
                device: self.device,
                zone: applied.view.zone_id.clone(),
                org: applied.view.org_id.clone(),
                leased: false,
            });
            let connected = json!({"type": "system", "event": "connected", "session_id": session, "node_id": state.store.node_id(), "presence": applied.view});
            Ok::<_, StoreError>(text(&connected))
        };
        let hello = match hello.await {
            Ok(frame) => frame,
            Err(e) => {
                let (code, reason) = match e {
                    StoreError::Refused(TransitionError::TooManySessions { .. }) => {
                        (close::TOO_MANY_SESSIONS, "too many sessions")
                    }
                    _ => (close::TRY_LATER, "presence store unavailable"),
                };
                let _ = socket.send(close_frame(code, reason)).await;
                return;
            }
        };
        let mut conn = Live {
            state: state.clone(),
            who: self.who,
            session: session.clone(),
            sub: None,
            interest: Interest::default(),
            covered: None,
        };
        let ending = if socket.send(hello).await.is_ok() {
            conn.serve(&mut socket).await
        } else {
            Ending(1000, "")
        };
        if ending.0 != 1000 {
            let _ = socket.send(close_frame(ending.0, ending.1)).await;
        }
        metrics::counter!("presenced_sessions_closed_total", "code" => ending.0.to_string())
            .increment(1);
        state.sessions.closed(&session);
        // The close starts the offline grace; a restart (1012) leaves presence to it too.
        if let Err(e) = state.store.close_session(&user, &session).await {
            tracing::warn!(error = %e, "could not close a session; the node lease will end it");
        }
    }
}

fn text(v: &Value) -> Message {
    Message::Text(Utf8Bytes::from(v.to_string()))
}

fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

fn error_frame(id: Option<&Value>, e: &ApiError) -> Value {
    json!({"type": "error", "id": id, "code": e.code, "message": e.message})
}

async fn until_slow(token: Option<tokio_util::sync::CancellationToken>) {
    match token {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
}

async fn next_event(sub: &mut Option<Subscription>) -> Option<Delivered> {
    match sub {
        Some(s) => s.rx.recv().await,
        None => std::future::pending().await,
    }
}

/// An open connection's state.
struct Live {
    state: AppState,
    who: Principal,
    session: SessionId,
    sub: Option<Subscription>,
    interest: Interest,
    /// After a subscribe: events up to this feed id that the previous interest did not ask
    /// for are covered by the snapshot (or replay) and dropped.
    covered: Option<(FeedId, Interest)>,
}

impl Live {
    async fn serve(&mut self, socket: &mut WebSocket) -> Ending {
        let cfg = self.state.config.clone();
        let mut limit = RateLimit::new(cfg.limits.frames_per_second, cfg.limits.frame_burst);
        let mut ping = tokio::time::interval(cfg.server.ping_interval);
        ping.tick().await;
        let mut heard = Instant::now();
        let shutdown = self.state.shutdown.clone();
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let expiry = tokio::time::sleep(Duration::from_secs(
            self.who.expires_at.saturating_sub(now_s),
        ));
        tokio::pin!(expiry);
        loop {
            let slow = self.sub.as_ref().map(|s| s.slow.clone());
            // select! drops every branch's future before running the winning handler, so the
            // handlers may use `self` again.
            tokio::select! {
                                _ = shutdown.cancelled() => return Ending(close::RESTARTING, "node restarting"),
                _ = &mut expiry => return Ending(close::TOKEN_EXPIRED, "token expired"),
                _ = until_slow(slow) => {
                    metrics::counter!("presenced_refusals_total", "reason" => "slow_consumer").increment(1);
                    return Ending(close::RATE_LIMITED, "slow consumer");
                }
                                Some(d) = next_event(&mut self.sub) => {
                    if self.wanted(&d) && socket.send(Message::Text(Utf8Bytes::from(&*d.json))).await.is_err() {
                        return Ending(1000, "");
                    }
                }
                _ = ping.tick() => {
                    if heard.elapsed() >= cfg.server.idle_timeout {
                        return Ending(1001, "no answer to pings");
                    }
                    if socket.send(Message::Ping(Default::default())).await.is_err() {
                        return Ending(1000, "");
                    }
                }
                msg = socket.recv() => {
                    heard = Instant::now();
                    let msg = match msg {
                        None => return Ending(1000, ""),
                        Some(Err(e)) => {
                            let too_big = e.to_string().to_lowercase().contains("too long") || e.to_string().contains("Space limit");
                            return if too_big { Ending(close::TOO_BIG, "frame too big") } else { Ending(1000, "") };
                        }
                        Some(Ok(m)) => m,
                    };
                    let raw = match msg {
                        Message::Text(t) => t,
                        Message::Binary(_) => {
                            let e = ApiError::invalid_argument("frames are JSON text");
                            if socket.send(text(&json!({"type": "error", "id": null, "code": "invalid_frame", "message": e.message}))).await.is_err() {
                                return Ending(1000, "");
                            }
                            continue;
                        }
                        Message::Close(_) => return Ending(1000, ""),
                        Message::Ping(_) | Message::Pong(_) => continue,
                    };
                    if raw.len() > cfg.limits.frame_bytes {
                        return Ending(close::TOO_BIG, "frame too big");
                    }
                    let now = Instant::now();
                    match limit.take(now) {
                        Verdict::Close => {
                            metrics::counter!("presenced_refusals_total", "reason" => "rate_limited").increment(1);
                            return Ending(close::RATE_LIMITED, "rate limited");
                        }
                        Verdict::Drop => {
                            if limit.may_answer(now) {
                                let e = ApiError::rate_limited("too many frames; slow down");
                                if socket.send(text(&error_frame(None, &e))).await.is_err() {
                                    return Ending(1000, "");
                                }
                            }
                            continue;
                        }
                        Verdict::Take => {}
                    }
                                        // Boxed: the handler's state is large and only needed while a frame is
                    // handled, not for the life of an idle connection.
                    for reply in Box::pin(self.handle(raw.as_str())).await {
                        if socket.send(text(&reply)).await.is_err() {
                            return Ending(1000, "");
                        }
                    }
                }
            }
        }
    }

    /// Whether a delivered event goes out (see `covered`).
    fn wanted(&mut self, d: &Delivered) -> bool {
        match &self.covered {
            Some((upto, before)) if d.feed_id <= *upto => before.matches(&d.event),
            Some(_) => {
                self.covered = None;
                true
            }
            None => true,
        }
    }

    /// Handles one client frame; returns the frames to send back, in order.
    async fn handle(&mut self, raw: &str) -> Vec<Value> {
        let (id, frame) = match parse_frame(raw) {
            Ok(f) => f,
            Err((id, message)) => {
                return vec![
                    json!({"type": "error", "id": id, "code": "invalid_frame", "message": message}),
                ];
            }
        };
        let ack = |id: &Option<Value>| id.as_ref().map(|id| json!({"type": "ack", "id": id}));
        let user = self.who.user.clone();
        let result: Result<Vec<Value>, ApiError> = match frame {
            ClientFrame::Ping => Ok(vec![json!({"type": "pong", "id": id})]),
            ClientFrame::Activity => {
                self.state.record_activity(&user);
                Ok(ack(&id).into_iter().collect())
            }
            ClientFrame::Change(change) => self
                .change(&user, change)
                .await
                .map(|()| ack(&id).into_iter().collect()),
            ClientFrame::Subscribe {
                scopes,
                users,
                after,
            } => self.subscribe(id.clone(), scopes, users, after).await,
            ClientFrame::Unsubscribe { scopes, users } => {
                for s in &scopes {
                    self.interest.scopes.remove(s);
                }
                for u in &users {
                    self.interest.users.remove(u);
                }
                if let Some(sub) = &self.sub {
                    sub.set_interest(self.interest.clone());
                }
                Ok(ack(&id).into_iter().collect())
            }
        };
        result.unwrap_or_else(|e| vec![error_frame(id.as_ref(), &e)])
    }

    async fn change(&self, user: &UserId, change: Change) -> Result<(), ApiError> {
        if let Change::SetMetadata(Some(m)) = &change {
            let size = Value::Object(m.clone()).to_string().len();
            let max = self.state.config.limits.metadata_bytes;
            if size > max {
                return Err(ApiError::payload_too_large(format!(
                    "metadata is {size} bytes; at most {max}"
                )));
            }
        }
        let (zone, org) = match &change {
            Change::SetZone(z) => (Some(z.clone()), None),
            Change::SetOrg(o) => (None, Some(o.clone())),
            _ => (None, None),
        };
        self.state.store.apply(user, change).await?;
        if zone.is_some() || org.is_some() {
            self.state.sessions.moved(&self.session, zone, org);
        }
        Ok(())
    }

    async fn subscribe(
        &mut self,
        id: Option<Value>,
        scopes: Vec<Scope>,
        users: Vec<UserId>,
        after: Option<FeedId>,
    ) -> Result<Vec<Value>, ApiError> {
        let store = self.state.store.clone();
        let before = self.interest.clone();
        let mut added = Interest {
            org: self.state.confined_org(&self.who),
            ..Interest::default()
        };
        added.scopes.extend(scopes.iter().cloned());
        added.users.extend(users.iter().cloned());
        self.interest.scopes.extend(scopes.iter().cloned());
        self.interest.users.extend(users.iter().cloned());
        self.interest.org = added.org.clone();
        // Register first, then read the feed position: nothing after it can be missed.
        match &self.sub {
            Some(s) => s.set_interest(self.interest.clone()),
            None => {
                self.sub = Some(self.state.hub.subscribe(
                    self.interest.clone(),
                    self.state.config.limits.outbound_queue,
                ))
            }
        }
        let mut out = Vec::new();
        let (feed_id, reset, covered_to) = match after {
            None => {
                let head = store.feed_head().await?;
                (head, false, head)
            }
            Some(after) => match crate::snapshot::replay(store.as_ref(), after, &added).await? {
                Some((events, pos)) => {
                    out.extend(
                        events
                            .iter()
                            .map(|e| serde_json::to_value(e).unwrap_or_default()),
                    );
                    (after, false, pos)
                }
                None => {
                    let head = store.feed_head().await?;
                    (head, true, head)
                }
            },
        };
        self.covered = Some((covered_to, before));
        let snapshot = self.snapshot(&scopes, &users).await?;
        let mut frames = vec![json!({
            "type": "snapshot", "id": id, "feed_id": feed_id, "reset": reset,
            "scopes": snapshot.0, "users": snapshot.1,
        })];
        frames.extend(out);
        Ok(frames)
    }

    async fn snapshot(
        &self,
        scopes: &[Scope],
        users: &[UserId],
    ) -> Result<(HashMap<String, Value>, HashMap<String, Value>), ApiError> {
        let org = self.state.confined_org(&self.who);
        crate::snapshot::current(self.state.store.as_ref(), scopes, users, org.as_ref()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_frames_drop_then_a_persistent_flood_closes() {
        let t0 = Instant::now();
        let mut l = RateLimit::new(5, 10);
        for _ in 0..10 {
            assert_eq!(l.take(t0), Verdict::Take);
        }
        assert_eq!(l.take(t0), Verdict::Drop);
        assert!(l.may_answer(t0));
        assert!(
            !l.may_answer(t0 + Duration::from_millis(500)),
            "one error a second"
        );
        // Still flooding at 50 frames a second: some pass as tokens refill, most drop...
        let mut closed_at = None;
        for i in 1..=400u64 {
            let now = t0 + Duration::from_millis(20 * i);
            if l.take(now) == Verdict::Close {
                closed_at = Some(now.duration_since(t0));
                break;
            }
        }
        // ...and the connection closes once it has been over the limit for 5 s.
        let closed_at = closed_at.expect("closed");
        assert!(
            closed_at >= Duration::from_secs(5) && closed_at < Duration::from_millis(5100),
            "{closed_at:?}"
        );
    }

    #[test]
    fn a_client_back_under_the_limit_starts_over() {
        let t0 = Instant::now();
        let mut l = RateLimit::new(5, 5);
        for _ in 0..6 {
            l.take(t0);
        }
        // Four seconds at the allowed rate, then a second with nothing dropped: forgiven.
        for i in 1..=25u64 {
            assert_eq!(l.take(t0 + Duration::from_millis(200 * i)), Verdict::Take);
        }
        for _ in 0..5 {
            l.take(t0 + Duration::from_secs(6));
        }
        assert_eq!(
            l.take(t0 + Duration::from_secs(6)),
            Verdict::Drop,
            "over again, but not for 5 s"
        );
    }
}
