//! The service in process, on a clock the test drives: the router answers REST calls without
//! a socket (`tower::ServiceExt::oneshot`, the axum way), WebSocket connections run over
//! in-memory channels, and presence time is a `ManualClock`. The time-driven behaviours of
//! SPEC §3 — auto-away, the offline grace, REST lease expiry, token expiry, silent peers —
//! run here in milliseconds, against the memory store and against Redis.

mod common;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::Message;
use axum::http::{Request, header};
use futures::channel::mpsc;
use futures::{Sink, SinkExt, Stream, StreamExt};
use presence_core::{BusMessage, DeviceKind, FeedId, ManualClock, NodeId, SharedClock, Store};
use presenced::auth::Authenticator;
use presenced::config::{Config, StoreKind};
use presenced::state::AppState;
use presenced::ws::{CheckedUpgrade, ReadError};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use common::{Kind, SECRET, redis_url, token, user};

/// 2024-11-26T10:25:00Z.
const START_MS: i64 = 1_732_616_700_000;

macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
            async fn $name() {
                tokio::time::timeout(std::time::Duration::from_secs(30), super::$name(super::Kind::Memory)).await.expect("test timed out")
            })*
        }
        mod redis {
            $(#[tokio::test]
            async fn $name() {
                tokio::time::timeout(std::time::Duration::from_secs(30), super::$name(super::Kind::Redis)).await.expect("test timed out")
            })*
        }
    };
}

both_stores!(
    a_client_coming_back_invisible_never_shows_online,
    typing_starts_stops_and_expires_for_a_conversations_subscribers,
    a_typing_message_from_a_clock_ahead_ends_typing_ttl_after_it_arrives,
    invisible_users_look_offline_to_others_on_every_surface,
    privacy_org_shows_the_org_the_truth_and_everyone_else_offline,
    privacy_nobody_and_last_seen_settings_hold_for_every_onlooker,
    bad_privacy_settings_are_refused_and_change_nothing,
    a_reopened_session_leaves_the_user_where_the_store_has_them,
    custom_status_over_rest_and_socket_expires_on_time,
    bad_custom_statuses_are_refused_and_change_nothing,
    reconcile_closes_ghosts_and_reopens_what_the_store_lost,
    delete_heartbeat_ends_only_rest_sessions,
    auto_away_and_back,
    the_grace_hides_a_reload_and_then_ends,
    rest_heartbeat_renewal_activity_and_end,
    rest_lease_runs_out_after_online_ttl,
    the_sessions_route_shows_a_users_sessions_to_them_and_to_services_only,
    deleting_a_session_closes_its_socket_with_4011_and_leaves_the_others,
    a_session_ended_on_another_node_is_closed_by_the_reconcile_not_reopened,
);

/// A node in process: its state, its router, and the clock it reads.
struct Harness {
    clock: ManualClock,
    state: AppState,
    stop: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Harness {
    async fn new(kind: Kind) -> Harness {
        Self::with(kind, |_| {}).await
    }

    /// A node whose settings `tune` changed from the defaults.
    async fn with(kind: Kind, tune: impl FnOnce(&mut Config)) -> Harness {
        let mut config = Config::default();
        tune(&mut config);
        config.auth.jwt_secret = SECRET.into();
        if kind == Kind::Redis {
            config.store.kind = StoreKind::Redis;
            config.store.redis_url = redis_url();
            config.store.key_prefix = format!("{}:", user("inproc"));
        }
        let clock = ManualClock::new(START_MS);
        let shared: SharedClock = Arc::new(clock.clone());
        let store = presenced::open_store(&config, NodeId::random(), shared.clone())
            .await
            .expect("the store opens");
        store.renew_node_lease(0).await.unwrap();
        let auth = Authenticator::hs256(
            SECRET.as_bytes(),
            &config.auth.token_rules(),
            shared.clone(),
        );
        let stop = CancellationToken::new();
        let state = AppState::new(Arc::new(config), auth, store, shared, stop.clone(), None);
        tokio::spawn(state.hub.clone().run(state.store.clone(), stop.clone()));
        let bus = state.store.bus().await.expect("the bus");
        tokio::spawn(presenced::loops::follow_bus(
            state.clone(),
            bus,
            stop.clone(),
        ));
        tokio::spawn(state.hub.clone().run_counts(
            state.store.clone(),
            Duration::from_secs(1),
            stop.clone(),
        ));
        Harness { clock, state, stop }
    }

    fn store(&self) -> &dyn Store {
        self.state.store.as_ref()
    }

    /// One REST call through the router, without a socket.
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json");
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let resp = presenced::app::router(self.state.clone())
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn status(&self, user: &str) -> Value {
        let (s, view) = self
            .call(
                "GET",
                &format!("/messenger/presence/status/{user}"),
                &token(user, "service", None),
                None,
            )
            .await;
        assert_eq!(s, 200, "{view}");
        view
    }

    /// Moves presence time forward as a running node lives through it: the node renews its
    /// lease every 5 s (a third of `node_lease`) and sweeps, then sweeps once more at the end.
    async fn advance(&self, by: Duration) {
        let mut left = by;
        while !left.is_zero() {
            let step = left.min(Duration::from_secs(5));
            self.clock.advance(step);
            left -= step;
            self.store().renew_node_lease(0).await.unwrap();
            self.store().sweep().await.unwrap();
        }
    }

    /// Writes buffered activity now, as the node's flush loop would.
    async fn flush(&self) {
        presenced::loops::flush_activity_once(&self.state, self.state.now()).await;
    }

    /// Opens a WebSocket connection over in-memory channels; returns its client end.
    async fn connect(&self, jwt: &str) -> WsClient {
        self.connect_reading(jwt, 1024).await
    }

    /// Like `connect`, with room for only `window` unread frames towards the client: a
    /// client that stops reading.
    async fn connect_reading(&self, jwt: &str, window: usize) -> WsClient {
        self.connect_as(jwt, window, false).await
    }

    /// Like `connect`, opening invisible (`?invisible=true`).
    async fn connect_invisible(&self, jwt: &str) -> WsClient {
        self.connect_as(jwt, 1024, true).await
    }

    async fn connect_as(&self, jwt: &str, window: usize, invisible: bool) -> WsClient {
        let access = self.state.access(self.state.auth.verify(jwt).unwrap());
        let checked = CheckedUpgrade {
            access,
            zone: None,
            org: None,
            device: DeviceKind::Web,
            invisible,
            permit: self.state.connections.clone().try_acquire_owned().unwrap(),
        };
        let (to_server, from_client) = mpsc::unbounded();
        let (to_client, from_server) = mpsc::channel(window);
        let duplex = Duplex {
            rx: from_client,
            tx: to_client,
        };
        let task = tokio::spawn(presenced::ws::run(self.state.clone(), checked, duplex));
        let mut c = WsClient {
            tx: to_server,
            rx: from_server,
            task,
            session: String::new(),
        };
        let hello = c.next().await;
        assert_eq!(hello["event"], "connected", "{hello}");
        c.session = hello["session_id"].as_str().unwrap().to_string();
        c
    }

    async fn feed_head(&self) -> FeedId {
        self.store().feed_head().await.unwrap()
    }

    /// Every event after `from`, as JSON.
    async fn events_after(&self, from: FeedId) -> Vec<Value> {
        let read = self.store().read_feed(from, 1000).await.unwrap();
        read.events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect()
    }
}

/// The server's end of an in-memory WebSocket.
struct Duplex {
    rx: mpsc::UnboundedReceiver<Result<Message, ReadError>>,
    tx: mpsc::Sender<Message>,
}

impl Stream for Duplex {
    type Item = Result<Message, ReadError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_next_unpin(cx)
    }
}

impl Sink<Message> for Duplex {
    type Error = mpsc::SendError;
    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tx.poll_ready_unpin(cx)
    }
    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        self.tx.start_send_unpin(item)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tx.poll_flush_unpin(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tx.poll_close_unpin(cx)
    }
}

/// The client's end.
struct WsClient {
    tx: mpsc::UnboundedSender<Result<Message, ReadError>>,
    rx: mpsc::Receiver<Message>,
    task: tokio::task::JoinHandle<()>,
    /// Its session id, from the `connected` frame.
    session: String,
}

impl WsClient {
    fn send(&self, v: Value) {
        self.tx
            .unbounded_send(Ok(Message::Text(v.to_string().into())))
            .unwrap();
    }

    fn send_ping(&self) {
        self.tx
            .unbounded_send(Ok(Message::Ping(vec![1].into())))
            .unwrap();
    }

    fn send_binary(&self) {
        self.tx
            .unbounded_send(Ok(Message::Binary(vec![1, 2, 3].into())))
            .unwrap();
    }

    /// The next text frame as JSON, or `{"closed": code}`; pings are skipped.
    async fn next(&mut self) -> Value {
        loop {
            match self.rx.next().await.expect("the connection sends a frame") {
                Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                Message::Close(c) => return json!({"closed": c.map(|c| c.code)}),
                _ => continue,
            }
        }
    }

    /// The next frame within `d`, or `None`.
    async fn next_within(&mut self, d: Duration) -> Option<Value> {
        tokio::time::timeout(d, self.next()).await.ok()
    }

    /// The client goes away; waits until the server has closed the session.
    async fn hang_up(self) {
        drop(self.tx);
        self.task.await.unwrap();
    }
}

async fn auto_away_and_back(kind: Kind) {
    let h = Harness::new(kind).await;
    let a = user("idle");
    let tab = h.connect(&token(&a, "user", None)).await;
    let from = h.feed_head().await;
    h.advance(Duration::from_secs(299)).await;
    assert_eq!(
        h.status(&a).await["status"],
        "online",
        "not yet: away_after is 300 s"
    );
    h.advance(Duration::from_secs(2)).await;
    let view = h.status(&a).await;
    assert_eq!(
        (&view["status"], &view["away_reason"]),
        (&json!("away"), &json!("auto"))
    );
    let events = h.events_after(from).await;
    assert_eq!(events.len(), 1, "one event: {events:?}");
    assert_eq!(events[0]["prev_status"], "online");
    // Activity on the socket brings the user back, with one event.
    let from = h.feed_head().await;
    tab.send(json!({"type": "activity"}));
    let mut tab = tab;
    tab.send(json!({"type": "ping", "id": 1}));
    assert_eq!(
        tab.next().await["type"],
        "pong",
        "the activity frame was handled first"
    );
    h.flush().await;
    assert_eq!(h.status(&a).await["status"], "online");
    let events = h.events_after(from).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["user"]["status"], "online");
}

async fn the_grace_hides_a_reload_and_then_ends(kind: Kind) {
    let h = Harness::new(kind).await;
    let a = user("reload");
    let jwt = token(&a, "user", None);
    h.connect(&jwt).await.hang_up().await;
    let from = h.feed_head().await;
    h.advance(Duration::from_millis(4_900)).await;
    assert_eq!(
        h.status(&a).await["status"],
        "online",
        "within the 5 s grace"
    );
    let tab = h.connect(&jwt).await;
    h.advance(Duration::from_secs(60)).await;
    assert_eq!(
        h.events_after(from).await,
        Vec::<Value>::new(),
        "a reload shows nothing"
    );
    tab.hang_up().await;
    let from = h.feed_head().await;
    h.advance(Duration::from_millis(5_001)).await;
    let view = h.status(&a).await;
    assert_eq!(view["status"], "offline");
    assert_eq!(
        view["last_seen"], "2024-11-26T10:26:04.900Z",
        "last seen is when the last session closed"
    );
    assert_eq!(h.events_after(from).await.len(), 1);
}

async fn rest_heartbeat_renewal_activity_and_end(kind: Kind) {
    let h = Harness::new(kind).await;
    let a = user("rest");
    let t = token(&a, "user", None);
    let (s, hb) = h
        .call(
            "POST",
            "/messenger/presence/heartbeat",
            &t,
            Some(json!({"device": "mobile", "zone_id": 5})),
        )
        .await;
    assert_eq!(s, 200, "{hb}");
    assert_eq!(
        hb["expires_at"], "2024-11-26T10:30:00.000Z",
        "now + online_ttl (300 s)"
    );
    let session = hb["session_id"].as_str().unwrap().to_string();
    let view = h.status(&a).await;
    assert_eq!(
        (&view["status"], &view["devices"], &view["zone_id"]),
        (&json!("online"), &json!(["mobile"]), &json!("5"))
    );
    // A renewal moves the lease to its own now + online_ttl.
    h.advance(Duration::from_secs(100)).await;
    let (s, renewed) = h
        .call(
            "POST",
            "/messenger/presence/heartbeat",
            &t,
            Some(json!({"session_id": session})),
        )
        .await;
    assert_eq!((s, &renewed["session_id"]), (200, &json!(session)));
    assert_eq!(renewed["expires_at"], "2024-11-26T10:31:40.000Z");
    // Activity from the user and, for several users, from a service token moves
    // last_activity to the time it was reported.
    h.clock.advance(Duration::from_secs(20));
    let (s, _) = h
        .call("POST", "/messenger/presence/activity", &t, None)
        .await;
    assert_eq!(s, 204);
    h.flush().await;
    assert_eq!(
        h.status(&a).await["last_activity"],
        "2024-11-26T10:27:00.000Z"
    );
    h.clock.advance(Duration::from_secs(5));
    let svc = token("backend", "service", None);
    let (s, _) = h
        .call(
            "POST",
            "/messenger/presence/activity",
            &svc,
            Some(json!({"user_ids": [a, 12345]})),
        )
        .await;
    assert_eq!(s, 204);
    h.flush().await;
    assert_eq!(
        h.status(&a).await["last_activity"],
        "2024-11-26T10:27:05.000Z"
    );
    let (s, _) = h
        .call("GET", "/messenger/presence/status/12345", &svc, None)
        .await;
    assert_eq!(s, 404, "activity of a user never seen creates nothing");
    // Ending the lease: offline once the grace has passed, not before.
    let (s, _) = h
        .call(
            "DELETE",
            &format!("/messenger/presence/heartbeat?session_id={session}"),
            &t,
            None,
        )
        .await;
    assert_eq!(s, 204);
    h.advance(Duration::from_secs(4)).await;
    assert_eq!(h.status(&a).await["status"], "online");
    h.advance(Duration::from_secs(2)).await;
    let view = h.status(&a).await;
    assert_eq!(
        (&view["status"], &view["last_seen"]),
        (&json!("offline"), &json!("2024-11-26T10:27:05.000Z"))
    );
    let (s, batch) = h
        .call(
            "POST",
            "/messenger/presence/status/batch",
            &t,
            Some(json!({"user_ids": [a, "nobody"]})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(batch["users"][&a]["status"], "offline");
    assert_eq!(batch["users"]["nobody"], Value::Null);
}

async fn rest_lease_runs_out_after_online_ttl(kind: Kind) {
    let h = Harness::new(kind).await;
    let a = user("lease");
    let t = token(&a, "user", None);
    let (s, hb) = h
        .call("POST", "/messenger/presence/heartbeat", &t, None)
        .await;
    assert_eq!(s, 200);
    let session = hb["session_id"].as_str().unwrap().to_string();
    h.advance(Duration::from_secs(299)).await;
    assert_eq!(h.status(&a).await["status"], "online");
    h.advance(Duration::from_secs(2)).await;
    assert_eq!(
        h.status(&a).await["status"],
        "offline",
        "no further grace after a lease"
    );
    let (s, _) = h
        .call(
            "POST",
            "/messenger/presence/heartbeat",
            &t,
            Some(json!({"session_id": session})),
        )
        .await;
    assert_eq!(s, 404, "an expired lease cannot be renewed");
}

// Tokio's clock is paused here, so the connection's timers (token expiry, pings, the idle
// timeout) fire as soon as nothing else can run: these use the memory store only, which
// does no I/O that a paused clock could overtake.

#[tokio::test(start_paused = true)]
async fn an_expiring_token_closes_with_4001_and_the_session_ends() {
    let h = Harness::new(Kind::Memory).await;
    let a = user("expiring");
    let exp = START_MS as u64 / 1000 + 45;
    let jwt = common::jwt(&json!({"sub": a, "exp": exp}));
    let mut tab = h.connect(&jwt).await;
    let started = tokio::time::Instant::now();
    assert_eq!(tab.next().await, json!({"closed": 4001}));
    assert_eq!(
        started.elapsed().as_secs(),
        45,
        "closed when the token expired, by the node's clock"
    );
    tab.hang_up().await;
    h.advance(Duration::from_secs(6)).await;
    assert_eq!(h.status(&a).await["status"], "offline");
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_closed_after_the_idle_timeout() {
    let h = Harness::new(Kind::Memory).await;
    let a = user("silent");
    let mut tab = h.connect(&token(&a, "user", None)).await;
    let started = tokio::time::Instant::now();
    // Pings every 30 s go unanswered (this client never sends anything back)...
    let mut pings = 0;
    loop {
        match tab.rx.next().await.expect("a frame") {
            Message::Ping(_) => pings += 1,
            Message::Close(c) => {
                assert_eq!(c.map(|c| c.code), Some(1001));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // ...and the connection closes at the first ping tick 90 s after it was last heard.
    assert_eq!((pings, started.elapsed().as_secs()), (2, 90));
    tab.hang_up().await;
    h.advance(Duration::from_secs(6)).await;
    assert_eq!(h.status(&a).await["status"], "offline");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_closed_after_the_send_timeout() {
    let h = Harness::new(Kind::Memory).await;
    let a = user("stalled");
    // Room for the `connected` frame only: the first ping (at 30 s) cannot be written.
    let tab = h.connect_reading(&token(&a, "user", None), 0).await;
    let started = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(60), tab.task)
        .await
        .expect("the connection ended although its writes never completed")
        .unwrap();
    // Pings go out every 30 s; once one cannot be written, send_timeout (10 s) ends the
    // connection — well before the 90 s idle timeout could.
    let took = started.elapsed().as_secs();
    assert!((40..90).contains(&took), "closed after {took} s");
    h.advance(Duration::from_secs(6)).await;
    assert_eq!(h.status(&a).await["status"], "offline", "its session ended");
}

#[tokio::test]
async fn binary_frames_count_toward_the_rate_limit() {
    let h = Harness::new(Kind::Memory).await;
    let mut tab = h.connect(&token(&user("binary"), "user", None)).await;
    for _ in 0..60 {
        tab.send_binary();
    }
    let mut invalid = 0;
    loop {
        let f = tab.next().await;
        match f["code"].as_str() {
            Some("invalid_frame") => invalid += 1,
            Some("rate_limited") => break,
            _ => panic!("unexpected {f}"),
        }
    }
    assert_eq!(
        invalid, 40,
        "the burst of 40 is answered, then frames are dropped"
    );
}

#[tokio::test]
async fn rest_requests_are_rate_limited_per_token_subject() {
    let h = Harness::new(Kind::Memory).await;
    let t = token(&user("busy"), "user", None);
    let path = "/messenger/presence/count";
    for i in 0..100 {
        assert_eq!(
            h.call("GET", path, &t, None).await.0,
            200,
            "request {i} of the burst"
        );
    }
    let (s, e) = h.call("GET", path, &t, None).await;
    assert_eq!((s, &e["error"]["code"]), (429, &json!("rate_limited")));
    let other = token(&user("other"), "user", None);
    assert_eq!(
        h.call("GET", path, &other, None).await.0,
        200,
        "per subject"
    );
    let svc = token("backend", "service", None);
    for _ in 0..200 {
        assert_eq!(
            h.call("GET", path, &svc, None).await.0,
            200,
            "backends are not limited"
        );
    }
    h.clock.advance(Duration::from_millis(100));
    assert_eq!(
        h.call("GET", path, &t, None).await.0,
        200,
        "5 more after 100 ms at 50/s"
    );
}

#[tokio::test]
async fn a_subscribe_past_the_cap_is_refused_whole_and_duplicates_count_once() {
    // A frame budget large enough that only the cap refuses here.
    let h = Harness::with(Kind::Memory, |c| {
        c.limits.frames_per_second = 10_000;
        c.limits.frame_burst = 10_000;
    })
    .await;
    let mut tab = h.connect(&token(&user("subs"), "user", None)).await;
    let many: Vec<String> = (0..150).map(|i| format!("u{i}")).collect();
    tab.send(json!({"type": "subscribe", "users": many, "id": 1}));
    assert_eq!(tab.next().await["type"], "snapshot");
    // 150 followed; 60 more distinct would make 210 > 200, however often they repeat.
    let more: Vec<String> = (150..210)
        .flat_map(|i| [format!("u{i}"), format!("u{i}")])
        .collect();
    tab.send(json!({"type": "subscribe", "users": more, "id": 2}));
    let e = tab.next().await;
    assert_eq!(
        (&e["id"], &e["code"]),
        (&json!(2), &json!("invalid_argument")),
        "{e}"
    );
    // Refused whole: the first 50 of them were not added either, so 50 distinct still fit,
    // and the 150 already followed count once.
    let fits: Vec<String> = (0..200).map(|i| format!("u{i}")).collect();
    tab.send(json!({"type": "subscribe", "users": fits, "scopes": ["global", "global"], "id": 3}));
    let e = tab.next().await;
    assert_eq!(
        (&e["id"], &e["code"]),
        (&json!(3), &json!("invalid_argument")),
        "201 with global"
    );
    let fits: Vec<String> = (0..199).map(|i| format!("u{i}")).collect();
    let globals = vec!["global"; 1000];
    tab.send(json!({"type": "subscribe", "users": fits, "scopes": globals, "id": 4}));
    let snap = tab.next().await;
    assert_eq!(
        (&snap["type"], &snap["id"]),
        (&json!("snapshot"), &json!(4)),
        "{snap}"
    );
    assert_eq!(
        snap["scopes"].as_object().unwrap().len(),
        1,
        "one snapshot per distinct scope"
    );
}

/// Opens `GET /messenger/presence/events{query}` in process; the body streams as it is read.
async fn sse(h: &Harness, jwt: &str, query: &str) -> axum::response::Response {
    let req = Request::builder()
        .uri(format!("/messenger/presence/events{query}"))
        .header(header::AUTHORIZATION, format!("Bearer {jwt}"))
        .body(Body::empty())
        .unwrap();
    presenced::app::router(h.state.clone())
        .oneshot(req)
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_sse_stream_holds_a_connection_slot_and_ends_with_its_token() {
    let h = Harness::with(Kind::Memory, |c| c.server.max_connections = 1).await;
    let exp = START_MS as u64 / 1000 + 45;
    let jwt = common::jwt(&json!({"sub": "watcher", "exp": exp, "role": "service"}));
    let stream = sse(&h, &jwt, "").await;
    assert_eq!(stream.status(), 200);
    assert_eq!(
        h.state.connections.available_permits(),
        0,
        "the stream holds the slot"
    );
    let second = sse(&h, &jwt, "").await;
    assert_eq!(second.status(), 503, "max_connections counts SSE streams");
    let started = tokio::time::Instant::now();
    let body = axum::body::to_bytes(stream.into_body(), 1 << 20)
        .await
        .unwrap();
    assert_eq!(
        started.elapsed().as_secs(),
        45,
        "the stream ends when its token expires"
    );
    assert!(
        String::from_utf8_lossy(&body).matches(":\n").count() >= 2,
        "keep-alives meanwhile"
    );
    assert_eq!(
        h.state.connections.available_permits(),
        1,
        "and gives its slot back"
    );
}

#[tokio::test]
async fn sse_refuses_more_scopes_than_a_connection_may_follow() {
    let h = Harness::new(Kind::Memory).await;
    let jwt = token("watcher", "service", None);
    let many: String = (0..201).map(|i| format!("&scope=zone:{i}")).collect();
    let resp = sse(&h, &jwt, &format!("?{}", &many[1..])).await;
    assert_eq!(resp.status(), 400);
    let fits: String = (0..200).map(|i| format!("&scope=zone:{i}")).collect();
    assert_eq!(
        sse(&h, &jwt, &format!("?{}", &fits[1..])).await.status(),
        200
    );
}

#[tokio::test]
async fn a_resume_replays_up_to_replay_events_and_resets_beyond() {
    let h = Harness::with(Kind::Memory, |c| c.limits.replay_events = 5).await;
    let svc = token("backend", "service", None);
    let a = user("resumer");
    let _tab = h.connect(&token(&a, "user", None)).await;
    let mut watcher = h.connect(&svc).await;
    let from = h.feed_head().await;
    let moves = |zones: std::ops::Range<u32>| {
        let (h, a, svc) = (&h, a.clone(), svc.clone());
        async move {
            for z in zones {
                let body = json!({"zone_id": z.to_string(), "user_id": a});
                let (s, _) = h
                    .call("PUT", "/messenger/presence/zone", &svc, Some(body))
                    .await;
                assert_eq!(s, 200);
            }
        }
    };
    moves(0..5).await;
    watcher.send(json!({"type": "subscribe", "users": [a], "after": from.to_string(), "id": 1}));
    let snap = watcher.next().await;
    assert_eq!(
        (&snap["reset"], &snap["feed_id"]),
        (&json!(false), &json!(from.to_string()))
    );
    for z in 0..5 {
        assert_eq!(
            watcher.next().await["user"]["zone_id"],
            z.to_string(),
            "replayed in order"
        );
    }
    moves(5..11).await;
    let mut late = h.connect(&token("backend2", "service", None)).await;
    late.send(json!({"type": "subscribe", "users": [a], "after": from.to_string(), "id": 2}));
    let snap = late.next().await;
    assert_eq!(
        snap["reset"], true,
        "11 events after `after`: more than replay_events"
    );
    assert_eq!(
        snap["users"][&a]["zone_id"], "10",
        "the current state instead"
    );
    assert_eq!(snap["feed_id"], h.feed_head().await.to_string());
}

#[tokio::test(start_paused = true)]
async fn counts_only_subscribers_get_one_count_frame_a_second_when_the_count_changed() {
    let h = Harness::new(Kind::Memory).await;
    let mut watcher = h.connect(&token("dashboard", "service", None)).await;
    watcher.send(json!({"type": "subscribe", "scopes": ["zone:10", "zone:11"], "counts_only": true, "id": 1}));
    let snap = watcher.next().await;
    assert_eq!(
        snap["scopes"]["zone:10"],
        json!({"count": 0, "users": [], "next_cursor": null})
    );
    // Three users arrive within the same second: one frame, with the total, and no events.
    let mut tabs = Vec::new();
    for i in 0..3 {
        let jwt = token(&user(&format!("z{i}")), "user", None);
        let tab = h.connect(&jwt).await;
        let (s, _) = h
            .call(
                "PUT",
                "/messenger/presence/zone",
                &jwt,
                Some(json!({"zone_id": "10"})),
            )
            .await;
        assert_eq!(s, 200);
        tabs.push(tab);
    }
    let started = tokio::time::Instant::now();
    assert_eq!(
        watcher.next().await,
        json!({"type": "count", "scope": "zone:10", "count": 3})
    );
    assert!(
        started.elapsed() <= Duration::from_secs(1),
        "within the second"
    );
    assert_eq!(
        watcher.next_within(Duration::from_secs(3)).await,
        None,
        "zone:11 did not change, nor did zone:10 since"
    );
    // zone:11 gains a user: one frame for it; zone:10 loses one: one frame for it.
    let jwt = token(&user("mover"), "user", None);
    let _mover = h.connect(&jwt).await;
    let (s, _) = h
        .call(
            "PUT",
            "/messenger/presence/zone",
            &jwt,
            Some(json!({"zone_id": "11"})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        watcher.next().await,
        json!({"type": "count", "scope": "zone:11", "count": 1})
    );
    tabs.pop().unwrap().hang_up().await;
    h.advance(Duration::from_secs(6)).await;
    assert_eq!(
        watcher.next().await,
        json!({"type": "count", "scope": "zone:10", "count": 2})
    );
    // Unsubscribed, nothing more.
    watcher.send(json!({"type": "unsubscribe", "scopes": ["zone:10", "zone:11"], "id": 2}));
    assert_eq!(watcher.next().await, json!({"type": "ack", "id": 2}));
    tabs.pop().unwrap().hang_up().await;
    h.advance(Duration::from_secs(6)).await;
    assert_eq!(watcher.next_within(Duration::from_secs(3)).await, None);
}

async fn reconcile_closes_ghosts_and_reopens_what_the_store_lost(kind: Kind) {
    let h = Harness::new(kind).await;
    let (a, b) = (user("ghost"), user("held"));
    // A session the store has for this node that no socket holds.
    let ghost = presence_core::OpenSession {
        user: presence_core::UserId::new(&a).unwrap(),
        session: presence_core::SessionId::random(),
        device: DeviceKind::Web,
        zone: None,
        org: None,
        leased: false,
        invisible: false,
    };
    h.store().open_session(ghost).await.unwrap();
    // A socket whose session the store lost.
    let mut tab = h.connect(&token(&b, "user", None)).await;
    tab.send(json!({"type": "ping", "id": 1}));
    tab.next().await;
    let session = h.state.store.node_sessions().await.unwrap();
    let held = session
        .iter()
        .find(|(u, _)| u.as_str() == b)
        .map(|(u, s)| (u.clone(), s.clone()))
        .unwrap();
    h.store().close_session(&held.0, &held.1).await.unwrap();
    // One ghost and one lost session: the counts agree, so only a full reconcile sees them.
    let quick = h
        .state
        .sessions
        .reconcile(h.store(), h.state.now(), false, true)
        .await
        .unwrap();
    assert_eq!((quick.closed, quick.reopened), (0, 0));
    let done = h
        .state
        .sessions
        .reconcile(h.store(), h.state.now(), true, true)
        .await
        .unwrap();
    assert_eq!((done.closed, done.reopened), (1, 1));
    assert_eq!(h.store().node_session_count().await.unwrap(), 1);
    h.advance(Duration::from_secs(6)).await;
    assert_eq!(h.status(&a).await["status"], "offline", "the ghost ended");
    assert_eq!(
        h.status(&b).await["status"],
        "online",
        "the live socket is back"
    );
    let again = h
        .state
        .sessions
        .reconcile(h.store(), h.state.now(), true, true)
        .await
        .unwrap();
    assert_eq!((again.closed, again.reopened), (0, 0), "nothing left to do");
    // A ghost alone shows in the counts: the quick check finds and closes it.
    let ghost = presence_core::OpenSession {
        user: presence_core::UserId::new(&a).unwrap(),
        session: presence_core::SessionId::random(),
        device: DeviceKind::Web,
        zone: None,
        org: None,
        leased: false,
        invisible: false,
    };
    h.store().open_session(ghost).await.unwrap();
    let deferred = h
        .state
        .sessions
        .reconcile(h.store(), h.state.now(), false, false)
        .await
        .unwrap();
    assert_eq!(
        (deferred.listed, deferred.closed),
        (false, 0),
        "a mismatch lists only when a listing is due"
    );
    let quick = h
        .state
        .sessions
        .reconcile(h.store(), h.state.now(), false, true)
        .await
        .unwrap();
    assert_eq!((quick.listed, quick.closed, quick.reopened), (true, 1, 0));
}

async fn delete_heartbeat_ends_only_rest_sessions(kind: Kind) {
    let h = Harness::new(kind).await;
    let a = user("mixed");
    let t = token(&a, "user", None);
    let mut tab = h.connect(&t).await;
    tab.send(json!({"type": "ping", "id": 1}));
    tab.next().await;
    let (_, socket_session) = h.state.store.node_sessions().await.unwrap().remove(0);
    let (s, e) = h
        .call(
            "DELETE",
            &format!("/messenger/presence/heartbeat?session_id={socket_session}"),
            &t,
            None,
        )
        .await;
    assert_eq!((s, &e["error"]["code"]), (404, &json!("not_found")), "{e}");
    h.advance(Duration::from_secs(6)).await;
    assert_eq!(
        h.status(&a).await["status"],
        "online",
        "the socket's session stays"
    );
}

#[tokio::test]
async fn pings_count_toward_the_rate_limit_and_a_big_subscribe_pays_for_what_it_reads() {
    let h = Harness::new(Kind::Memory).await;
    let mut tab = h.connect(&token(&user("pinger"), "user", None)).await;
    for _ in 0..40 {
        tab.send_ping();
    }
    tab.send(json!({"type": "ping", "id": "after"}));
    let f = tab.next().await;
    assert_eq!(
        f["code"], "rate_limited",
        "the burst went to control frames: {f}"
    );
    let mut tab = h.connect(&token(&user("reader"), "user", None)).await;
    let users: Vec<String> = (0..100).map(|i| format!("u{i}")).collect();
    tab.send(json!({"type": "subscribe", "users": users, "id": 1}));
    assert_eq!(tab.next().await["type"], "snapshot");
    tab.send(json!({"type": "ping", "id": 2}));
    let f = tab.next().await;
    assert_eq!(
        f["code"], "rate_limited",
        "100 lookups cost 100 frames: {f}"
    );
}

#[tokio::test]
async fn a_user_token_holds_at_most_sessions_per_user_sse_streams() {
    let h = Harness::with(Kind::Memory, |c| c.limits.sessions_per_user = 2).await;
    let jwt = token(&user("streamer"), "user", None);
    let one = sse(&h, &jwt, "").await;
    let two = sse(&h, &jwt, "").await;
    assert_eq!((one.status().as_u16(), two.status().as_u16()), (200, 200));
    let three = sse(&h, &jwt, "").await;
    assert_eq!(three.status(), 429);
    drop(one);
    assert_eq!(
        sse(&h, &jwt, "").await.status(),
        200,
        "a closed stream gives its place back"
    );
    let svc = token("backend", "service", None);
    let streams: Vec<_> = futures::future::join_all((0..3).map(|_| sse(&h, &svc, ""))).await;
    assert!(
        streams.iter().all(|r| r.status() == 200),
        "backends are not capped"
    );
}

async fn custom_status_over_rest_and_socket_expires_on_time(kind: Kind) {
    let h = Harness::new(kind).await;
    let a = user("meeting");
    let t = token(&a, "user", None);
    let mut tab = h.connect(&t).await;
    let from = h.feed_head().await;
    // Over the socket: set, acknowledged, one event, status untouched.
    tab.send(
        json!({"type": "custom_status.set", "kind": "in_meeting", "text": "Standup",
        "expires_at": "2024-11-26T10:45:00.000Z", "id": 1}),
    );
    assert_eq!(tab.next().await, json!({"type": "ack", "id": 1}));
    let view = h.status(&a).await;
    assert_eq!(
        view["custom_status"],
        json!({"kind": "in_meeting", "text": "Standup", "emoji": null, "expires_at": "2024-11-26T10:45:00.000Z"})
    );
    assert_eq!(view["status"], "online");
    let events = h.events_after(from).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["prev_status"], "online");
    // It survives a reconnect and the grace.
    tab.hang_up().await;
    h.advance(Duration::from_secs(60)).await;
    assert_eq!(h.status(&a).await["status"], "offline");
    assert_eq!(
        h.status(&a).await["custom_status"]["kind"],
        "in_meeting",
        "kept while offline"
    );
    let _tab = h.connect(&t).await;
    // Expiry: not a moment early, then cleared by the sweep with one event.
    let from = h.feed_head().await;
    h.advance(Duration::from_secs(19 * 60 - 1)).await;
    assert_eq!(h.status(&a).await["custom_status"]["kind"], "in_meeting");
    h.advance(Duration::from_secs(2)).await;
    assert_eq!(
        h.status(&a).await["custom_status"],
        Value::Null,
        "expired at 10:45"
    );
    let events = h.events_after(from).await;
    let cleared: Vec<_> = events
        .iter()
        .filter(|e| e["user"]["custom_status"].is_null())
        .collect();
    assert_eq!(cleared.len(), 1, "{events:?}");
    // Over REST: a service token sets one for the user, and the user clears it.
    let svc = token("backend", "service", None);
    let (s, view) = h
        .call(
            "PUT",
            "/messenger/presence/custom-status",
            &svc,
            Some(json!({"kind": "dnd", "emoji": "🔕", "user_id": a})),
        )
        .await;
    assert_eq!(
        (s, &view["custom_status"]["kind"]),
        (200, &json!("dnd")),
        "{view}"
    );
    let (s, view) = h
        .call("DELETE", "/messenger/presence/custom-status", &t, None)
        .await;
    assert_eq!((s, &view["custom_status"]), (200, &Value::Null));
}

async fn bad_custom_statuses_are_refused_and_change_nothing(kind: Kind) {
    let h = Harness::new(kind).await;
    let a = user("badstatus");
    let t = token(&a, "user", None);
    let mut tab = h.connect(&t).await;
    let before = h.status(&a).await;
    for (i, bad) in [
        json!({"kind": "custom", "text": "x".repeat(141)}),
        json!({"kind": "custom", "emoji": "🙂🙂🙂🙂🙂"}),
        json!({"kind": "busy", "expires_at": "2024-11-26T10:24:59.000Z"}),
        json!({"kind": "asleep"}),
    ]
    .into_iter()
    .enumerate()
    {
        let (s, e) = h
            .call(
                "PUT",
                "/messenger/presence/custom-status",
                &t,
                Some(bad.clone()),
            )
            .await;
        assert_eq!(
            (s, &e["error"]["code"]),
            (400, &json!("invalid_argument")),
            "{bad}: {e}"
        );
        let mut frame = bad.clone();
        frame["type"] = json!("custom_status.set");
        frame["id"] = json!(i);
        tab.send(frame);
        let reply = tab.next().await;
        assert_eq!(reply["type"], "error", "{bad}: {reply}");
        assert!(
            reply["code"] == "invalid_argument" || reply["code"] == "invalid_frame",
            "{reply}"
        );
    }
    let (s, _) = h
        .call(
            "PUT",
            "/messenger/presence/custom-status",
            &t,
            Some(json!({"kind": "custom", "text": "x".repeat(140), "emoji": "🙂🙂🙂🙂"})),
        )
        .await;
    assert_eq!(s, 200, "140 characters and 16 bytes are allowed");
    let after = h.status(&a).await;
    assert_eq!(
        after["version"].as_u64(),
        before["version"].as_u64().map(|v| v + 1),
        "only the good one changed anything"
    );
}

async fn a_reopened_session_leaves_the_user_where_the_store_has_them(kind: Kind) {
    let h = Harness::new(kind).await;
    let a = user("moved_elsewhere");
    let t = token(&a, "user", None);
    let mut tab = h.connect(&t).await;
    tab.send(json!({"type": "zone.set", "zone_id": "4", "id": 1}));
    assert_eq!(tab.next().await["type"], "ack");
    // The store loses this node's session, and meanwhile the user is moved by someone else
    // (another node, a backend) to zone 9.
    let (user, session) = h.state.store.node_sessions().await.unwrap().remove(0);
    h.store().close_session(&user, &session).await.unwrap();
    let moved = presence_core::Change::SetZone(Some(presence_core::ZoneId::new("9").unwrap()));
    h.store().apply(&user, moved).await.unwrap();
    let done = h
        .state
        .sessions
        .reconcile(h.store(), h.state.now(), true, true)
        .await
        .unwrap();
    assert_eq!(done.reopened, 1);
    let view = h.status(&a).await;
    assert_eq!(
        (&view["status"], &view["zone_id"]),
        (&json!("online"), &json!("9")),
        "not moved back to 4"
    );
}

/// The SSE messages of an in-process stream until `n` have come, or 5 s passed.
async fn sse_messages(resp: axum::response::Response, n: usize) -> Vec<Value> {
    let mut body = resp.into_body().into_data_stream();
    let (mut buf, mut out) = (String::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while out.len() < n {
        let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, body.next()).await else {
            break;
        };
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let data: String = block
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            if !data.is_empty() {
                out.push(serde_json::from_str(&data).unwrap());
            }
        }
    }
    out
}

/// Invisible (SPEC §3): everyone but the user and privileged tokens sees an invisible user
/// offline since they went invisible — in status, batch, lists, counts, snapshots, events
/// (going invisible is one offline event, what follows unseen, coming back one online
/// event), counts-only frames and SSE.
async fn invisible_users_look_offline_to_others_on_every_surface(kind: Kind) {
    let h = Harness::new(kind).await;
    let (a, b) = (user("ghostly"), user("peer"));
    let (ta, tb) = (token(&a, "user", None), token(&b, "user", None));
    let svc = token("backend", "service", None);
    let mut tab = h.connect(&ta).await;
    let (s, _) = h
        .call(
            "PUT",
            "/messenger/presence/zone",
            &ta,
            Some(json!({"zone_id": "10"})),
        )
        .await;
    assert_eq!(s, 200);
    let follow = json!({"type": "subscribe", "scopes": ["zone:10"], "users": [a], "id": 1});
    let mut peer = h.connect(&tb).await;
    peer.send(follow.clone());
    assert_eq!(peer.next().await["users"][&a]["status"], "online");
    let mut backend = h.connect(&svc).await;
    backend.send(follow.clone());
    assert_eq!(backend.next().await["type"], "snapshot");
    let mut counter = h.connect(&svc).await;
    counter.send(json!({"type": "subscribe", "scopes": ["zone:10"], "counts_only": true, "id": 1}));
    assert_eq!(counter.next().await["scopes"]["zone:10"]["count"], 1);
    let from = h.feed_head().await;

    tab.send(json!({"type": "status.set", "status": "online", "invisible": true, "id": 2}));
    assert_eq!(tab.next().await, json!({"type": "ack", "id": 2}));
    let went = h.state.now();
    let seen = peer.next().await;
    assert_eq!(
        (
            &seen["prev_status"],
            &seen["user"]["status"],
            &seen["user"]["invisible"]
        ),
        (&json!("online"), &json!("offline"), &json!(false)),
        "going invisible looks like going offline: {seen}"
    );
    let when = presence_core::time::format_rfc3339(went);
    assert_eq!(
        (&seen["user"]["last_seen"], &seen["user"]["devices"]),
        (&json!(when), &json!([]))
    );
    let truth = backend.next().await;
    assert_eq!(
        (&truth["user"]["status"], &truth["user"]["invisible"]),
        (&json!("online"), &json!(true)),
        "a service token sees the truth: {truth}"
    );
    assert_eq!(
        counter.next().await,
        json!({"type": "count", "scope": "zone:10", "count": 0}),
        "not counted"
    );

    // Status: others see offline; the user and a service token see the truth.
    let status = |jwt: String| {
        let (h, a) = (&h, a.clone());
        async move {
            let (s, v) = h
                .call(
                    "GET",
                    &format!("/messenger/presence/status/{a}"),
                    &jwt,
                    None,
                )
                .await;
            assert_eq!(s, 200);
            v
        }
    };
    let other = status(tb.clone()).await;
    assert_eq!(
        (&other["status"], &other["invisible"], &other["last_seen"]),
        (&json!("offline"), &json!(false), &json!(when))
    );
    let own = status(ta.clone()).await;
    assert_eq!(
        (&own["status"], &own["invisible"]),
        (&json!("online"), &json!(true))
    );
    assert_eq!(status(svc.clone()).await["invisible"], true);
    // Batch.
    let (_, batch) = h
        .call(
            "POST",
            "/messenger/presence/status/batch",
            &tb,
            Some(json!({"user_ids": [a]})),
        )
        .await;
    assert_eq!(batch["users"][&a]["status"], "offline");
    // Lists and counts leave the user out.
    let (_, page) = h
        .call("GET", "/messenger/presence/online?zone_id=10", &tb, None)
        .await;
    assert_eq!(
        (&page["count"], &page["online_users"]),
        (&json!(0), &json!([]))
    );
    let (_, count) = h
        .call("GET", "/messenger/presence/count?zone_id=10", &tb, None)
        .await;
    assert_eq!(count["zone"], 0);
    // A new snapshot.
    let mut late = h.connect(&tb).await;
    late.send(follow.clone());
    let snap = late.next().await;
    assert_eq!(snap["users"][&a]["status"], "offline", "{snap}");
    assert_eq!(snap["scopes"]["zone:10"]["count"], 0);

    // Auto-away underneath: the user's own view moves, others see nothing.
    h.advance(Duration::from_secs(301)).await;
    assert_eq!(
        (&status(ta.clone()).await["away_reason"]),
        &json!("auto"),
        "activity still counts underneath"
    );
    let truth = backend.next().await;
    assert_eq!(truth["user"]["status"], "away");
    assert_eq!(status(tb.clone()).await, other, "others read nothing new");
    assert_eq!(peer.next_within(Duration::from_millis(300)).await, None);

    // Coming back looks like coming online.
    tab.send(json!({"type": "status.set", "status": "online", "invisible": false, "id": 3}));
    assert_eq!(tab.next().await, json!({"type": "ack", "id": 3}));
    let back = peer.next().await;
    assert_eq!(
        (&back["prev_status"], &back["user"]["status"]),
        (&json!("offline"), &json!("online")),
        "{back}"
    );
    assert_eq!(counter.next().await["count"], 1);

    // SSE replays the same three changes as others saw them: two.
    let stream = sse(&h, &tb, &format!("?after={from}&scope=zone:10")).await;
    assert_eq!(stream.status(), 200);
    let replayed: Vec<_> = sse_messages(stream, 3)
        .await
        .into_iter()
        .filter(|m| m["type"] == "presence")
        .map(|m| (m["prev_status"].clone(), m["user"]["status"].clone()))
        .collect();
    assert_eq!(
        replayed,
        vec![
            (json!("online"), json!("offline")),
            (json!("offline"), json!("online"))
        ]
    );

    // Over REST: a service token sends the user away and invisible in one step; a user
    // token names only itself.
    let body = json!({"user_id": a, "invisible": true});
    let (s, _) = h
        .call("POST", "/messenger/presence/away", &tb, Some(body.clone()))
        .await;
    assert_eq!(s, 403);
    let (s, answer) = h
        .call("POST", "/messenger/presence/away", &svc, Some(body))
        .await;
    assert_eq!((s, &answer["status"]), (200, &json!("away")));
    let gone = peer.next().await;
    assert_eq!(
        (&gone["prev_status"], &gone["user"]["status"]),
        (&json!("online"), &json!("offline")),
        "one event: {gone}"
    );
    let own = status(ta.clone()).await;
    assert_eq!(
        (&own["status"], &own["invisible"]),
        (&json!("away"), &json!(true))
    );
    let (s, _) = h
        .call(
            "POST",
            "/messenger/presence/online",
            &ta,
            Some(json!({"invisible": "yes"})),
        )
        .await;
    assert_eq!(s, 400, "a bad body changes nothing");
    assert_eq!(status(ta.clone()).await, own);
}

/// Three onlookers and the truth: a member of the user's org, a user of another org, and a
/// service token, each with a socket following the user.
struct Onlookers {
    member: WsClient,
    other: WsClient,
    service: WsClient,
    tokens: [String; 3],
}

impl Onlookers {
    async fn follow(h: &Harness, user: &str, org: &str) -> Onlookers {
        let tokens = [
            token(&self::user("member"), "user", Some(org)),
            token(&self::user("stranger"), "user", Some("999")),
            token("backend", "service", None),
        ];
        let follow = json!({"type": "subscribe", "users": [user], "id": 1});
        let mut socks = Vec::new();
        for t in &tokens {
            let mut c = h.connect(t).await;
            c.send(follow.clone());
            assert_eq!(c.next().await["type"], "snapshot");
            socks.push(c);
        }
        let service = socks.pop().unwrap();
        let other = socks.pop().unwrap();
        let member = socks.pop().unwrap();
        Onlookers {
            member,
            other,
            service,
            tokens,
        }
    }

    /// The user's view as each onlooker reads it over REST: member, other, service.
    async fn status(&self, h: &Harness, user: &str) -> [Value; 3] {
        let mut out = Vec::new();
        for t in &self.tokens {
            let (s, v) = h
                .call(
                    "GET",
                    &format!("/messenger/presence/status/{user}"),
                    t,
                    None,
                )
                .await;
            assert_eq!(s, 200, "{v}");
            out.push(v);
        }
        out.try_into().unwrap()
    }

    /// Asserts that each socket got nothing more.
    async fn quiet(&mut self, why: &str) {
        for c in [&mut self.member, &mut self.other, &mut self.service] {
            let got = c.next_within(Duration::from_millis(200)).await;
            assert_eq!(got, None, "{why}");
        }
    }
}

async fn set_privacy(h: &Harness, jwt: &str, body: Value) -> Value {
    let (s, v) = h
        .call("PUT", "/messenger/presence/privacy", jwt, Some(body))
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

/// Privacy `org` (SPEC §3): tokens of the user's org see the real status, everyone else sees
/// offline — in status, batch, snapshots and events; lists and counts are what everyone sees,
/// so the user is not in them for anyone.
async fn privacy_org_shows_the_org_the_truth_and_everyone_else_offline(kind: Kind) {
    let h = Harness::new(kind).await;
    let a = user("private");
    let ta = token(&a, "user", Some("100"));
    let mut tab = h.connect(&ta).await;
    for (path, body) in [
        ("/messenger/presence/zone", json!({"zone_id": "10"})),
        ("/messenger/presence/org", json!({"org_id": "100"})),
    ] {
        let (s, _) = h.call("PUT", path, &ta, Some(body)).await;
        assert_eq!(s, 200);
    }
    let mut o = Onlookers::follow(&h, &a, "100").await;
    let from = h.feed_head().await;

    tab.send(json!({"type": "privacy.set", "presence": "org", "id": 1}));
    assert_eq!(tab.next().await, json!({"type": "ack", "id": 1}));
    let went = h.state.now();
    let e = o.other.next().await;
    assert_eq!(
        (
            &e["prev_status"],
            &e["user"]["status"],
            &e["user"]["privacy"]
        ),
        (&json!("online"), &json!("offline"), &Value::Null),
        "another org sees the user go offline: {e}"
    );
    assert_eq!(
        e["user"]["last_seen"],
        presence_core::time::format_rfc3339(went)
    );
    let e = o.service.next().await;
    assert_eq!(
        (&e["user"]["status"], &e["user"]["privacy"]),
        (
            &json!("online"),
            &json!({"presence": "org", "last_seen": "exact"})
        ),
        "a service token sees the truth and the setting: {e}"
    );
    o.quiet("the org saw no change").await;

    let [member, other, service] = o.status(&h, &a).await;
    assert_eq!(
        (&member["status"], &member["privacy"]),
        (&json!("online"), &Value::Null)
    );
    assert_eq!(other["status"], "offline");
    assert_eq!(service["status"], "online");
    let (_, own) = h
        .call("GET", &format!("/messenger/presence/status/{a}"), &ta, None)
        .await;
    assert_eq!(
        own["privacy"]["presence"], "org",
        "read back in the own view"
    );

    // A change only the org may see reaches the org, and nobody else.
    tab.send(json!({"type": "status.set", "status": "away", "id": 2}));
    assert_eq!(tab.next().await, json!({"type": "ack", "id": 2}));
    assert_eq!(o.member.next().await["user"]["status"], "away");
    assert_eq!(o.service.next().await["user"]["status"], "away");
    o.quiet("another org saw offline already").await;

    // Batch and a fresh snapshot, per onlooker; lists and counts leave the user out.
    for (t, want) in [(&o.tokens[0], "away"), (&o.tokens[1], "offline")] {
        let (_, b) = h
            .call(
                "POST",
                "/messenger/presence/status/batch",
                t,
                Some(json!({"user_ids": [a]})),
            )
            .await;
        assert_eq!(b["users"][&a]["status"], want);
        let mut c = h.connect(t).await;
        c.send(json!({"type": "subscribe", "users": [a], "id": 9}));
        assert_eq!(c.next().await["users"][&a]["status"], want);
        let (_, page) = h
            .call("GET", "/messenger/presence/online?zone_id=10", t, None)
            .await;
        assert_eq!(page["count"], 0, "{page}");
    }

    // SSE replays what each saw.
    for (t, want) in [
        (&o.tokens[0], vec!["away"]),
        (&o.tokens[1], vec!["offline"]),
        (&o.tokens[2], vec!["online", "away"]),
    ] {
        let stream = sse(&h, t, &format!("?after={from}")).await;
        let seen: Vec<_> = sse_messages(stream, want.len())
            .await
            .into_iter()
            .map(|m| m["user"]["status"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(seen, want);
    }

    // Back to everyone: the other org sees the user come back.
    set_privacy(&h, &ta, json!({"presence": "everyone"})).await;
    let e = o.other.next().await;
    assert_eq!(
        (&e["prev_status"], &e["user"]["status"]),
        (&json!("offline"), &json!("away"))
    );
}

/// Privacy `nobody` hides from the org too and outlives sessions; `last_seen` shows others a
/// bucket or nothing, changes nothing by itself, and never leaks through `last_activity`.
async fn privacy_nobody_and_last_seen_settings_hold_for_every_onlooker(kind: Kind) {
    let h = Harness::new(kind).await;
    let a = user("hermit");
    let ta = token(&a, "user", Some("100"));
    let tab = h.connect(&ta).await;
    let (s, _) = h
        .call(
            "PUT",
            "/messenger/presence/org",
            &ta,
            Some(json!({"org_id": "100"})),
        )
        .await;
    assert_eq!(s, 200);
    let mut o = Onlookers::follow(&h, &a, "100").await;

    let own = set_privacy(&h, &ta, json!({"presence": "nobody"})).await;
    assert_eq!(own["privacy"]["presence"], "nobody");
    assert_eq!(o.member.next().await["user"]["status"], "offline");
    assert_eq!(o.other.next().await["user"]["status"], "offline");
    assert_eq!(o.service.next().await["user"]["status"], "online");
    // It outlives the session: the next presence stays hidden.
    tab.hang_up().await;
    h.advance(Duration::from_secs(6)).await;
    assert_eq!(o.service.next().await["user"]["status"], "offline");
    let tab = h.connect(&ta).await;
    assert_eq!(o.service.next().await["user"]["status"], "online");
    o.quiet("hidden across sessions").await;
    let [member, other, _] = o.status(&h, &a).await;
    assert_eq!(
        (&member["status"], &other["status"]),
        (&json!("offline"), &json!("offline"))
    );

    // Last seen: a change of the setting alone is no event.
    let from = h.feed_head().await;
    set_privacy(
        &h,
        &ta,
        json!({"presence": "everyone", "last_seen": "approximate"}),
    )
    .await;
    assert_eq!(o.member.next().await["user"]["status"], "online");
    assert_eq!(o.other.next().await["user"]["status"], "online");
    assert_eq!(o.service.next().await["user"]["status"], "online");
    assert_eq!(
        h.events_after(from).await.len(),
        1,
        "one event, for presence"
    );
    let from = h.feed_head().await;
    set_privacy(&h, &ta, json!({"last_seen": "hidden"})).await;
    set_privacy(&h, &ta, json!({"last_seen": "approximate"})).await;
    assert!(
        h.events_after(from).await.is_empty(),
        "last_seen alone: nothing"
    );
    o.quiet("no event for last_seen").await;

    // Offline: others see a bucket and no last_activity; the truth keeps the time.
    tab.hang_up().await;
    h.advance(Duration::from_secs(6)).await;
    let left = presence_core::time::format_rfc3339(h.state.now() - 6_000);
    let e = o.other.next().await;
    assert_eq!(
        (
            &e["user"]["status"],
            &e["user"]["last_seen"],
            &e["user"]["last_activity"]
        ),
        (&json!("offline"), &json!("recently"), &Value::Null),
        "{e}"
    );
    assert_eq!(o.member.next().await["user"]["last_seen"], "recently");
    let e = o.service.next().await;
    assert!(
        e["user"]["last_seen"].as_str().unwrap() <= left.as_str(),
        "{e}"
    );
    assert!(e["user"]["last_activity"].is_string());
    h.clock.advance(Duration::from_secs(4 * 86_400));
    let [member, other, service] = o.status(&h, &a).await;
    assert_eq!(
        (
            &member["last_seen"],
            &other["last_seen"],
            &other["last_activity"]
        ),
        (&json!("within_week"), &json!("within_week"), &Value::Null)
    );
    assert!(service["last_seen"].as_str().unwrap().ends_with('Z'));
    h.clock.advance(Duration::from_secs(20 * 86_400));
    assert_eq!(o.status(&h, &a).await[1]["last_seen"], "within_month");
    set_privacy(&h, &ta, json!({"last_seen": "hidden"})).await;
    let [member, other, _] = o.status(&h, &a).await;
    assert_eq!(
        (
            &member["last_seen"],
            &other["last_seen"],
            &other["last_activity"],
            &other["updated_at"]
        ),
        (&Value::Null, &Value::Null, &Value::Null, &Value::Null),
        "nothing that gives the time away"
    );
    let (_, own) = h
        .call("GET", &format!("/messenger/presence/status/{a}"), &ta, None)
        .await;
    assert!(
        own["last_seen"].is_string(),
        "the user sees their own: {own}"
    );
}

async fn bad_privacy_settings_are_refused_and_change_nothing(kind: Kind) {
    let h = Harness::new(kind).await;
    let a = user("careful");
    let ta = token(&a, "user", None);
    let mut tab = h.connect(&ta).await;
    let before = h.status(&a).await;
    for body in [
        json!({}),
        json!({"presence": "friends"}),
        json!({"last_seen": "fuzzy"}),
        json!({"presence": "org", "extra": 1}),
        json!({"presence": null, "last_seen": null}),
    ] {
        let (s, e) = h
            .call(
                "PUT",
                "/messenger/presence/privacy",
                &ta,
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (s, &e["error"]["code"]),
            (400, &json!("invalid_argument")),
            "{body}"
        );
        let mut frame = body.clone();
        frame["type"] = json!("privacy.set");
        frame["id"] = json!(5);
        tab.send(frame);
        let e = tab.next().await;
        assert_eq!(
            (&e["type"], &e["id"]),
            (&json!("error"), &json!(5)),
            "{body}: {e}"
        );
    }
    let other = token(&user("meddler"), "user", None);
    let (s, _) = h
        .call(
            "PUT",
            "/messenger/presence/privacy",
            &other,
            Some(json!({"presence": "nobody", "user_id": a})),
        )
        .await;
    assert_eq!(s, 403, "a user token sets only its own");
    let (s, _) = h
        .call(
            "PUT",
            "/messenger/presence/privacy",
            &token("backend", "service", None),
            Some(json!({"presence": "nobody", "user_id": user("never-seen")})),
        )
        .await;
    assert_eq!(s, 404, "a user with no presence yet");
    assert_eq!(h.status(&a).await, before, "nothing changed");
}

// --- Typing ------------------------------------------------------------------------------------

/// Runs a test body within 30 s.
async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test timed out")
}

fn typing_frame(conversation: &str, user: &str, typing: bool) -> Value {
    json!({"type": "typing", "conversation_id": conversation, "user_id": user, "typing": typing})
}

impl Harness {
    /// `GET /messenger/presence/typing/{conversation}`'s users, as `jwt` sees them.
    async fn typing_now(&self, conversation: &str, jwt: &str) -> Value {
        let path = format!("/messenger/presence/typing/{conversation}");
        let (s, body) = self.call("GET", &path, jwt, None).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["conversation_id"], conversation);
        body["users"].clone()
    }
}

impl WsClient {
    /// Sends `frame` with `id` and returns its reply.
    async fn ask(&mut self, mut frame: Value, id: u64) -> Value {
        frame["id"] = json!(id);
        self.send(frame);
        let reply = self.next().await;
        assert_eq!(reply["id"], json!(id), "{reply}");
        reply
    }

    /// Asserts that nothing comes for `d`, then that the connection still answers a ping.
    async fn quiet(&mut self, d: Duration, why: &str) {
        if let Some(f) = self.next_within(d).await {
            panic!("{why}: got {f}");
        }
        self.send(json!({"type": "ping", "id": "alive"}));
        assert_eq!(
            self.next().await,
            json!({"type": "pong", "id": "alive"}),
            "{why}"
        );
    }
}

fn start(conversation: &str) -> Value {
    json!({"type": "typing.start", "conversation_id": conversation})
}

fn stop(conversation: &str) -> Value {
    json!({"type": "typing.stop", "conversation_id": conversation})
}

async fn typing_starts_stops_and_expires_for_a_conversations_subscribers(kind: Kind) {
    let h = Harness::new(kind).await;
    let (a, w) = (user("typer"), user("watcher"));
    let svc = token("backend", "service", None);
    let mut typer = h.connect(&token(&a, "user", None)).await;
    let mut watcher = h.connect(&token(&w, "user", None)).await;
    let snap = watcher
        .ask(json!({"type": "subscribe", "conversations": ["c1"]}), 1)
        .await;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    // Start: acked, then one `typing: true` to the conversation's subscriber.
    assert_eq!(
        typer.ask(start("c1"), 2).await,
        json!({"type": "ack", "id": 2})
    );
    assert_eq!(watcher.next().await, typing_frame("c1", &a, true));
    assert_eq!(h.typing_now("c1", &svc).await, json!([a]));
    assert_eq!(h.typing_now("c2", &svc).await, json!([]));
    // Stop: `typing: false`, and the list is empty.
    assert_eq!(
        typer.ask(stop("c1"), 3).await,
        json!({"type": "ack", "id": 3})
    );
    assert_eq!(watcher.next().await, typing_frame("c1", &a, false));
    assert_eq!(h.typing_now("c1", &svc).await, json!([]));
    // A stop when not typing is acked and shows nothing.
    typer.ask(stop("c1"), 4).await;
    // Started again and never renewed: it ends `typing_ttl` (6 s) later by the node's clock.
    typer.ask(start("c1"), 5).await;
    assert_eq!(watcher.next().await, typing_frame("c1", &a, true));
    h.clock.advance(Duration::from_millis(5900));
    watcher
        .quiet(Duration::from_millis(700), "not expired yet at 5.9 s")
        .await;
    assert_eq!(h.typing_now("c1", &svc).await, json!([a]));
    h.clock.advance(Duration::from_millis(100));
    assert_eq!(watcher.next().await, typing_frame("c1", &a, false));
    assert_eq!(h.typing_now("c1", &svc).await, json!([]));
    // A renewal keeps it: renewed at 2 s, it lives to 8 s, with no frame in between.
    typer.ask(start("c1"), 6).await;
    assert_eq!(watcher.next().await, typing_frame("c1", &a, true));
    h.clock.advance(Duration::from_secs(2));
    typer.ask(start("c1"), 7).await;
    h.clock.advance(Duration::from_millis(5900));
    watcher
        .quiet(Duration::from_millis(700), "renewed: alive at 7.9 s")
        .await;
    h.clock.advance(Duration::from_millis(100));
    assert_eq!(watcher.next().await, typing_frame("c1", &a, false));
}

#[tokio::test]
async fn a_session_that_closes_stops_its_typing_at_once() {
    within(async {
        let h = Harness::new(Kind::Memory).await;
        let (a, w) = (user("leaver"), user("watcher"));
        let mut typer = h.connect(&token(&a, "user", None)).await;
        let mut watcher = h.connect(&token(&w, "user", None)).await;
        watcher
            .ask(
                json!({"type": "subscribe", "conversations": ["c1", "c2"]}),
                1,
            )
            .await;
        typer.ask(start("c1"), 1).await;
        typer.ask(start("c2"), 2).await;
        assert_eq!(watcher.next().await, typing_frame("c1", &a, true));
        assert_eq!(watcher.next().await, typing_frame("c2", &a, true));
        // The socket goes away; the clock does not move.
        typer.hang_up().await;
        let mut ended = vec![watcher.next().await, watcher.next().await];
        ended.sort_by_key(|f| f["conversation_id"].as_str().unwrap().to_string());
        assert_eq!(
            ended,
            [typing_frame("c1", &a, false), typing_frame("c2", &a, false)]
        );
        let svc = token("backend", "service", None);
        assert_eq!(h.typing_now("c1", &svc).await, json!([]));
        assert_eq!(h.typing_now("c2", &svc).await, json!([]));
    })
    .await
}

#[tokio::test]
async fn a_typing_start_within_a_second_of_the_last_write_costs_no_store_write() {
    within(async {
        let h = Harness::new(Kind::Memory).await;
        let a = user("eager");
        // Every typing write the store makes is published on the bus: count them there.
        let mut writes = h.store().bus().await.unwrap();
        let mut typer = h.connect(&token(&a, "user", None)).await;
        typer.ask(start("c1"), 1).await;
        assert!(matches!(writes.recv().await, Some(BusMessage::Typing(_))));
        // Ten more starts within the second: acked, none written.
        for i in 0..10 {
            h.clock.advance(Duration::from_millis(99));
            assert_eq!(typer.ask(start("c1"), 2 + i).await["type"], "ack");
        }
        let none = tokio::time::timeout(Duration::from_millis(300), writes.recv()).await;
        assert!(none.is_err(), "no store write within the second: {none:?}");
        // A second after the last write, the next start is written (and renews the entry).
        h.clock.advance(Duration::from_millis(10));
        typer.ask(start("c1"), 20).await;
        let Some(BusMessage::Typing(t)) = writes.recv().await else {
            panic!("a write")
        };
        assert_eq!(t.until, Some(START_MS + 1000 + 6000));
        // Another conversation is its own: written at once.
        typer.ask(start("c2"), 21).await;
        let Some(BusMessage::Typing(t)) = writes.recv().await else {
            panic!("a write")
        };
        assert_eq!(t.conversation_id.as_str(), "c2");
        // Typing frames count toward the rate limit like any other: a burst of 40 at most.
        let mut limited = false;
        for i in 0..45 {
            typer.send(json!({"type": "typing.start", "conversation_id": "c1", "id": 100 + i}));
        }
        for _ in 0..45 {
            let f = typer.next().await;
            if f["code"] == "rate_limited" {
                limited = true;
                break;
            }
        }
        assert!(limited, "typing frames are rate limited");
    })
    .await
}

#[tokio::test]
async fn typing_past_the_limits_is_refused_and_shows_nothing() {
    within(async {
        let h = Harness::with(Kind::Memory, |c| {
            c.limits.typing_per_connection = 2;
            c.limits.typers_per_conversation = 2;
        })
        .await;
        let w = user("watcher");
        let mut watcher = h.connect(&token(&w, "user", None)).await;
        watcher
            .ask(
                json!({"type": "subscribe", "conversations": ["c3", "room"]}),
                1,
            )
            .await;
        // One connection types in at most 2 conversations at once.
        let a = user("busy");
        let mut typer = h.connect(&token(&a, "user", None)).await;
        typer.ask(start("c1"), 1).await;
        typer.ask(start("c2"), 2).await;
        let e = typer.ask(start("c3"), 3).await;
        assert_eq!(
            (&e["type"], &e["code"]),
            (&json!("error"), &json!("invalid_argument")),
            "{e}"
        );
        watcher
            .quiet(Duration::from_millis(300), "a refused start shows nothing")
            .await;
        typer.ask(stop("c1"), 4).await;
        assert_eq!(typer.ask(start("c3"), 5).await["type"], "ack");
        assert_eq!(watcher.next().await, typing_frame("c3", &a, true));
        // At most 2 users typing in one conversation.
        let (b, c) = (user("b"), user("c"));
        let mut tb = h.connect(&token(&b, "user", None)).await;
        let mut tc = h.connect(&token(&c, "user", None)).await;
        let mut ta = h.connect(&token(&user("a"), "user", None)).await;
        ta.ask(start("room"), 1).await;
        tb.ask(start("room"), 1).await;
        watcher.next().await;
        watcher.next().await;
        let e = tc.ask(start("room"), 1).await;
        assert_eq!(e["code"], "invalid_argument", "{e}");
        watcher
            .quiet(Duration::from_millis(300), "nobody new in a full room")
            .await;
        let svc = token("backend", "service", None);
        assert_eq!(
            h.typing_now("room", &svc).await.as_array().unwrap().len(),
            2
        );
        // Room again once one stops.
        tb.ask(stop("room"), 2).await;
        assert_eq!(watcher.next().await, typing_frame("room", &b, false));
        assert_eq!(tc.ask(start("room"), 2).await["type"], "ack");
        assert_eq!(watcher.next().await, typing_frame("room", &c, true));
    })
    .await
}

#[tokio::test]
async fn unsubscribing_a_conversation_ends_its_typing_frames_and_a_late_subscriber_is_told_who_types()
 {
    within(async {
        let h = Harness::new(Kind::Memory).await;
        let a = user("typer");
        let mut typer = h.connect(&token(&a, "user", None)).await;
        let mut watcher = h.connect(&token(&user("watcher"), "user", None)).await;
        typer.ask(start("c1"), 1).await;
        // Subscribing while someone types: the snapshot, then who types now.
        let snap = watcher
            .ask(json!({"type": "subscribe", "conversations": ["c1"]}), 1)
            .await;
        assert_eq!(snap["type"], "snapshot");
        assert_eq!(watcher.next().await, typing_frame("c1", &a, true));
        let ack = watcher
            .ask(json!({"type": "unsubscribe", "conversations": ["c1"]}), 2)
            .await;
        assert_eq!(ack, json!({"type": "ack", "id": 2}));
        typer.ask(stop("c1"), 2).await;
        typer.ask(start("c1"), 3).await;
        watcher
            .quiet(Duration::from_millis(300), "unsubscribed")
            .await;
        // Conversations count toward subscriptions_per_connection like scopes and users.
        let many: Vec<String> = (0..201).map(|i| format!("c{i}")).collect();
        let e = watcher
            .ask(json!({"type": "subscribe", "conversations": many}), 3)
            .await;
        assert_eq!(e["code"], "invalid_argument", "{e}");
    })
    .await
}

#[tokio::test]
async fn with_tenant_isolation_a_confined_token_sees_typers_of_its_own_org_only() {
    within(async {
        let h = Harness::with(Kind::Memory, |c| c.auth.tenant_isolation = true).await;
        let (inside, outside) = (user("inside"), user("outside"));
        let t_in = token(&inside, "user", Some("100"));
        let t_out = token(&outside, "user", Some("200"));
        let mut typer_in = h.connect(&t_in).await;
        let mut typer_out = h.connect(&t_out).await;
        for (t, org) in [(&t_in, "100"), (&t_out, "200")] {
            let (s, body) = h
                .call(
                    "PUT",
                    "/messenger/presence/org",
                    t,
                    Some(json!({"org_id": org})),
                )
                .await;
            assert_eq!(s, 200, "{body}");
        }
        let viewer = token(&user("viewer"), "user", Some("100"));
        let mut watcher = h.connect(&viewer).await;
        watcher
            .ask(json!({"type": "subscribe", "conversations": ["shared"]}), 1)
            .await;
        typer_out.ask(start("shared"), 1).await;
        typer_in.ask(start("shared"), 1).await;
        assert_eq!(
            watcher.next().await,
            typing_frame("shared", &inside, true),
            "only its own org's typer"
        );
        watcher
            .quiet(Duration::from_millis(300), "not the other org's")
            .await;
        assert_eq!(h.typing_now("shared", &viewer).await, json!([inside]));
        let svc = token("backend", "service", None);
        let mut both = vec![inside.clone(), outside.clone()];
        both.sort();
        assert_eq!(h.typing_now("shared", &svc).await, json!(both));
        let (s, e) = h
            .call("GET", "/messenger/presence/typing/a%20b", &svc, None)
            .await;
        assert_eq!((s, &e["error"]["code"]), (400, &json!("invalid_argument")));
    })
    .await
}

async fn the_sessions_route_shows_a_users_sessions_to_them_and_to_services_only(kind: Kind) {
    let h = Harness::new(kind).await;
    let a = user("lister");
    let t = token(&a, "user", None);
    let tab = h.connect(&t).await;
    h.clock.advance(Duration::from_millis(2_500));
    let (s, hb) = h
        .call(
            "POST",
            "/messenger/presence/heartbeat",
            &t,
            Some(json!({"device": "mobile"})),
        )
        .await;
    assert_eq!(s, 200, "{hb}");
    h.clock.advance(Duration::from_secs(1));
    h.call("POST", "/messenger/presence/activity", &t, None)
        .await;
    h.flush().await;
    let path = format!("/messenger/presence/sessions/{a}");
    let (s, own) = h.call("GET", &path, &t, None).await;
    assert_eq!(s, 200, "{own}");
    let node = h.state.store.node_id().to_string();
    assert_eq!(
        own,
        json!({"sessions": [
            {"session_id": tab.session, "device": "web", "node_id": node,
             "connected_at": "2024-11-26T10:25:00.000Z", "last_activity": "2024-11-26T10:25:03.500Z"},
            {"session_id": hb["session_id"], "device": "mobile", "node_id": null,
             "connected_at": "2024-11-26T10:25:02.000Z", "last_activity": "2024-11-26T10:25:03.500Z"},
        ]}),
        "oldest first; a REST lease has no node; activity is the user's"
    );
    let svc = token("backend", "service", None);
    assert_eq!(h.call("GET", &path, &svc, None).await, (200, own));
    // Another user's token is refused, whether or not the user it names exists.
    let other = token(&user("nosy"), "user", None);
    for named in [a.as_str(), "nobody"] {
        let (s, e) = h
            .call(
                "GET",
                &format!("/messenger/presence/sessions/{named}"),
                &other,
                None,
            )
            .await;
        assert_eq!((s, &e["error"]["code"]), (403, &json!("permission_denied")));
    }
    // A user never seen is not found; a bad id is a bad argument.
    let (s, _) = h
        .call("GET", "/messenger/presence/sessions/nobody", &svc, None)
        .await;
    assert_eq!(s, 404);
    let (s, _) = h
        .call("GET", "/messenger/presence/sessions/no!pe", &svc, None)
        .await;
    assert_eq!(s, 400);
    // A user without a session has an empty list.
    tab.hang_up().await;
    let end = format!(
        "/messenger/presence/heartbeat?session_id={}",
        hb["session_id"].as_str().unwrap()
    );
    assert_eq!(h.call("DELETE", &end, &t, None).await.0, 204);
    h.advance(Duration::from_secs(6)).await;
    assert_eq!(h.status(&a).await["status"], "offline");
    assert_eq!(
        h.call("GET", &path, &t, None).await,
        (200, json!({"sessions": []}))
    );
}

async fn deleting_a_session_closes_its_socket_with_4011_and_leaves_the_others(kind: Kind) {
    let h = Harness::new(kind).await;
    let a = user("kicked");
    let t = token(&a, "user", None);
    let svc = token("backend", "service", None);
    let mut kept = h.connect(&t).await;
    let mut kicked = h.connect(&t).await;
    let kicked_session = kicked.session.clone();
    let path = |session: &str| format!("/messenger/presence/sessions/{a}/{session}");
    // A user token may not end sessions, not even its own.
    let (s, e) = h.call("DELETE", &path(&kicked.session), &t, None).await;
    assert_eq!((s, &e["error"]["code"]), (403, &json!("permission_denied")));
    let from = h.feed_head().await;
    let (s, _) = h.call("DELETE", &path(&kicked.session), &svc, None).await;
    assert_eq!(s, 204);
    assert_eq!(kicked.next().await, json!({"closed": 4011}));
    kicked.hang_up().await;
    // The other socket stays, and so does the user, unchanged (same device).
    kept.send(json!({"type": "ping", "id": 1}));
    assert_eq!(kept.next().await["type"], "pong");
    assert_eq!(h.status(&a).await["status"], "online");
    assert_eq!(h.events_after(from).await, Vec::<Value>::new());
    let (_, listed) = h
        .call(
            "GET",
            &format!("/messenger/presence/sessions/{a}"),
            &svc,
            None,
        )
        .await;
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(listed["sessions"][0]["session_id"], kept.session.as_str());
    // Ending it again: it is not open any more.
    let (s, e) = h.call("DELETE", &path(&kicked_session), &svc, None).await;
    assert_eq!((s, &e["error"]["code"]), (404, &json!("not_found")));
    // A REST heartbeat lease ends too: renewing it answers 404.
    let (_, hb) = h
        .call("POST", "/messenger/presence/heartbeat", &t, None)
        .await;
    let rest = hb["session_id"].as_str().unwrap().to_string();
    assert_eq!(h.call("DELETE", &path(&rest), &svc, None).await.0, 204);
    let (s, _) = h
        .call(
            "POST",
            "/messenger/presence/heartbeat",
            &t,
            Some(json!({"session_id": rest})),
        )
        .await;
    assert_eq!(s, 404);
    // Ending the last one is a clean close: online through the grace, then offline.
    assert_eq!(
        h.call("DELETE", &path(&kept.session), &svc, None).await.0,
        204
    );
    assert_eq!(kept.next().await, json!({"closed": 4011}));
    kept.hang_up().await;
    h.advance(Duration::from_secs(4)).await;
    assert_eq!(h.status(&a).await["status"], "online", "within the grace");
    h.advance(Duration::from_secs(2)).await;
    assert_eq!(h.status(&a).await["status"], "offline");
}

async fn a_session_ended_on_another_node_is_closed_by_the_reconcile_not_reopened(kind: Kind) {
    let h = Harness::new(kind).await;
    let a = user("elsewhere");
    let t = token(&a, "user", None);
    let mut first = h.connect(&t).await;
    let mut second = h.connect(&t).await;
    let mut third = h.connect(&t).await;
    let uid = presence_core::UserId::new(&a).unwrap();
    let sid = |c: &WsClient| presence_core::SessionId::new(&c.session).unwrap();
    // Another node took the DELETE: the store ended the session, this node heard nothing.
    h.store().end_session(&uid, &sid(&first)).await.unwrap();
    let done = h
        .state
        .sessions
        .reconcile(h.store(), h.state.now(), false, true)
        .await
        .unwrap();
    assert_eq!(
        (done.listed, done.ended, done.reopened, done.closed),
        (true, 1, 0, 0),
        "the socket is closed, the session not re-opened"
    );
    assert_eq!(first.next().await, json!({"closed": 4011}));
    first.hang_up().await;
    assert_eq!(h.store().node_session_count().await.unwrap(), 2);
    // A re-assert (after the store forgot this node) closes an ended session's socket too,
    // and re-opens the others.
    h.store().end_session(&uid, &sid(&second)).await.unwrap();
    h.store().close_session(&uid, &sid(&third)).await.unwrap();
    assert_eq!(h.state.sessions.reassert(h.store()).await.unwrap(), 1);
    assert_eq!(second.next().await, json!({"closed": 4011}));
    second.hang_up().await;
    third.send(json!({"type": "ping", "id": 1}));
    assert_eq!(third.next().await["type"], "pong");
    let listed = h.store().sessions(&uid).await.unwrap().unwrap().sessions;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].session.as_str(), third.session);
}

/// A typing message whose `until` lies far ahead (its node's clock runs fast, or a foreign
/// publisher) keeps the indicator on no longer than `typing_ttl` from its arrival.
async fn a_typing_message_from_a_clock_ahead_ends_typing_ttl_after_it_arrives(kind: Kind) {
    let h = Harness::new(kind).await;
    let mut watcher = h.connect(&token(&user("watcher"), "user", None)).await;
    let snap = watcher
        .ask(json!({"type": "subscribe", "conversations": ["c9"]}), 1)
        .await;
    assert_eq!(snap["type"], "snapshot");
    let typer = user("fast-clock");
    let signal = presence_core::TypingSignal {
        conversation_id: presence_core::ConversationId::new("c9").unwrap(),
        user_id: presence_core::UserId::new(&typer).unwrap(),
        org_id: None,
        until: Some(h.state.now() + 3_600_000),
    };
    h.store()
        .publish(&BusMessage::Typing(signal))
        .await
        .unwrap();
    assert_eq!(watcher.next().await, typing_frame("c9", &typer, true));
    h.clock.advance(Duration::from_millis(6100));
    assert_eq!(
        watcher.next().await,
        typing_frame("c9", &typer, false),
        "ended typing_ttl (6 s) after it arrived, not an hour later"
    );
}

/// A client whose presence ended while it was invisible (a drop longer than the grace) comes
/// back with `?invisible=true` (or a heartbeat with `"invisible": true`): invisible from the
/// open on, so others never see it online for a moment.
async fn a_client_coming_back_invisible_never_shows_online(kind: Kind) {
    let h = Harness::new(kind).await;
    let a = user("returning");
    let ta = token(&a, "user", None);
    let mut peer = h.connect(&token(&user("peer"), "user", None)).await;
    let mut tab = h.connect(&ta).await;
    peer.send(json!({"type": "subscribe", "users": [a], "id": 1}));
    assert_eq!(peer.next().await["users"][&a]["status"], "online");
    tab.send(json!({"type": "status.set", "status": "online", "invisible": true, "id": 2}));
    assert_eq!(tab.next().await, json!({"type": "ack", "id": 2}));
    assert_eq!(peer.next().await["user"]["status"], "offline");
    // The connection drops for longer than the grace: a new presence next time.
    tab.hang_up().await;
    h.advance(Duration::from_secs(6)).await;
    let mut back = h.connect_invisible(&ta).await;
    back.send(json!({"type": "ping", "id": 3}));
    assert_eq!(back.next().await["type"], "pong");
    assert_eq!(
        peer.next_within(Duration::from_millis(300)).await,
        None,
        "never online for others"
    );
    let own = h.status(&a).await;
    assert_eq!(
        (&own["status"], &own["invisible"]),
        (&json!("online"), &json!(true))
    );
    back.hang_up().await;
    h.advance(Duration::from_secs(6)).await;
    // Over REST: a heartbeat that opens invisible.
    let (s, lease) = h
        .call(
            "POST",
            "/messenger/presence/heartbeat",
            &ta,
            Some(json!({"invisible": true})),
        )
        .await;
    assert_eq!(s, 200, "{lease}");
    assert_eq!(peer.next_within(Duration::from_millis(300)).await, None);
    assert_eq!(h.status(&a).await["invisible"], true);
    // Without it, a new presence is visible again: one online event.
    let (s, _) = h
        .call(
            "DELETE",
            &format!(
                "/messenger/presence/heartbeat?session_id={}",
                lease["session_id"].as_str().unwrap()
            ),
            &ta,
            None,
        )
        .await;
    assert_eq!(s, 204);
    h.advance(Duration::from_secs(6)).await;
    let _tab = h.connect(&ta).await;
    assert_eq!(peer.next().await["user"]["status"], "online");
}

#[tokio::test]
async fn an_upgrade_with_a_bad_invisible_is_refused() {
    let h = Harness::new(Kind::Memory).await;
    let jwt = token("someone", "user", None);
    let uri: axum::http::Uri = format!("/messenger/ws?token={jwt}&invisible=maybe")
        .parse()
        .unwrap();
    let params = axum::extract::Query::<presenced::ws::upgrade::ConnectParams>::try_from_uri(&uri)
        .unwrap()
        .0;
    let Err(err) = presenced::ws::upgrade::check(&h.state, params, &axum::http::HeaderMap::new())
    else {
        panic!("refused")
    };
    assert_eq!(err.code, "invalid_argument");
}
