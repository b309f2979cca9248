//! The client against real nodes, in process, on real sockets: the REST calls, the online list
//! as a stream, SSE, and a session that survives its node going away (Redis: the feed outlives
//! the node, so the session resumes without a gap).

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use presence_client::{
    Client, Error, Heartbeat, OnlineQuery, SessionItem, SessionOptions, Status, StreamItem,
    Subscription,
};
use presence_core::{NodeId, OrgId, SharedClock, SystemClock, UserId};
use presenced::auth::{Authenticator, Role};
use presenced::config::{Config, StoreKind};
use presenced::state::AppState;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "client-test-secret-0123456789-32bytes";

/// Every test gives up after this long instead of hanging CI.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A node in this process, serving on a real port until dropped.
struct Node {
    url: String,
    auth: Authenticator,
    stop: CancellationToken,
    served: Option<tokio::task::JoinHandle<()>>,
}

impl Node {
    /// A node on `port` (0: any), on the memory store or on Redis under `prefix`.
    async fn start(redis_prefix: Option<&str>, port: u16) -> Node {
        let mut config = Config::default();
        config.auth.jwt_secret = SECRET.into();
        config.server.listen = format!("127.0.0.1:{port}");
        config.server.shutdown_timeout = Duration::from_secs(2);
        config.presence.offline_grace = Duration::from_millis(300);
        if let Some(prefix) = redis_prefix {
            config.store.kind = StoreKind::Redis;
            config.store.redis_url = presence_testkit::redis_url();
            config.store.key_prefix = prefix.to_string();
        }
        let clock: SharedClock = Arc::new(SystemClock);
        let store = presenced::open_store(&config, NodeId::random(), clock.clone())
            .await
            .expect("the store opens");
        let auth =
            Authenticator::hs256(SECRET.as_bytes(), &config.auth.token_rules(), clock.clone());
        let listener = config.bind().expect("the port is free");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let state = AppState::new(
            Arc::new(config),
            auth.clone(),
            store,
            clock,
            stop.clone(),
            None,
        );
        let served = tokio::spawn(async move {
            presenced::serve(state, listener)
                .await
                .expect("the node serves");
        });
        Node {
            url,
            auth,
            stop,
            served: Some(served),
        }
    }

    fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn token(&self, user: &str, role: Role, org: Option<&str>) -> String {
        let org = org.map(|o| OrgId::new(o).unwrap());
        self.auth
            .issue(
                &UserId::new(user).unwrap(),
                org.as_ref(),
                role,
                Duration::from_secs(3600),
            )
            .unwrap()
    }

    fn client(&self, user: &str) -> Client {
        Client::new(&self.url, self.token(user, Role::User, None))
    }

    /// Shuts the node down (WebSockets closed with 1012) and waits until it is gone.
    async fn stop(mut self) {
        self.stop.cancel();
        if let Some(served) = self.served.take() {
            let _ = served.await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

async fn next_item(s: &mut presence_client::Session) -> SessionItem {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("an item within 10 s")
        .expect("the session goes on")
}

/// The next presence event, skipping the other items.
async fn next_event(s: &mut presence_client::Session) -> presence_core::PresenceEvent {
    loop {
        if let SessionItem::Event(e) = next_item(s).await {
            return *e;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_calls_and_the_online_list_as_a_stream() {
    tokio::time::timeout(TEST_TIMEOUT, rest_calls())
        .await
        .expect("in time");
}

async fn rest_calls() {
    let node = Node::start(None, 0).await;
    let alice = node.client("alice");
    assert_eq!(alice.status("alice").await.unwrap(), None, "never seen");
    let mut beats = Vec::new();
    for u in ["u1", "u2", "u3", "u4", "u5"] {
        let lease = node
            .client(u)
            .heartbeat(&Heartbeat {
                zone_id: Some("10".into()),
                ..Heartbeat::default()
            })
            .await
            .unwrap();
        beats.push((u, lease));
    }
    let counts = alice.count(Some("10"), Some("100")).await.unwrap();
    assert_eq!(
        (counts.global, counts.zone, counts.org),
        (5, Some(5), Some(0))
    );
    // Two at a time, every user once.
    let query = OnlineQuery {
        zone: Some("10".into()),
        limit: Some(2),
        ..OnlineQuery::default()
    };
    let mut listed: Vec<String> = alice
        .online(query)
        .map_ok(|v| v.user_id.to_string())
        .try_collect()
        .await
        .unwrap();
    listed.sort();
    assert_eq!(listed, ["u1", "u2", "u3", "u4", "u5"]);
    let first = alice
        .online_page(
            &OnlineQuery {
                limit: Some(2),
                ..OnlineQuery::default()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!((first.online_users.len(), first.count), (2, 5));
    assert!(first.next_cursor.is_some());

    let u1 = node.client("u1");
    u1.set_status(true, None).await.unwrap();
    let views = alice.statuses(&["u1", "nobody"]).await.unwrap();
    assert_eq!(views["u1"].as_ref().unwrap().status, Status::Away);
    assert_eq!(views["nobody"], None);
    let view = u1
        .set_custom_status("busy", Some("Deep work"), None, None)
        .await
        .unwrap();
    assert_eq!(
        view.custom_status.unwrap().text.as_deref(),
        Some("Deep work")
    );
    assert_eq!(u1.clear_custom_status().await.unwrap().custom_status, None);
    assert_eq!(
        u1.set_zone(Some("11"))
            .await
            .unwrap()
            .zone_id
            .unwrap()
            .as_str(),
        "11"
    );
    u1.activity(&[]).await.unwrap();

    // Errors carry the service's code.
    let err = alice.activity(&["u1"]).await.unwrap_err();
    assert_eq!(err.code(), Some("permission_denied"), "{err}");
    let err = alice.end_heartbeat("no-such-session").await.unwrap_err();
    assert_eq!(err.code(), Some("not_found"), "{err}");
    let (u, lease) = &beats[4];
    node.client(u)
        .end_heartbeat(&lease.session_id)
        .await
        .unwrap();
    let bad = Client::new(&node.url, "not-a-token");
    assert_eq!(
        bad.count(None, None).await.unwrap_err().code(),
        Some("unauthenticated")
    );
    let nowhere = Client::new("http://127.0.0.1:9", "t");
    assert!(matches!(
        nowhere.count(None, None).await,
        Err(Error::Unreachable(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_follow_and_resume() {
    tokio::time::timeout(TEST_TIMEOUT, sse())
        .await
        .expect("in time");
}

async fn sse() {
    let node = Node::start(None, 0).await;
    let watcher = node.client("watcher");
    let mut events = watcher.events(&["zone:7"], None).await.unwrap();
    let mover = node.client("mover");
    mover
        .heartbeat(&Heartbeat {
            zone_id: Some("7".into()),
            ..Heartbeat::default()
        })
        .await
        .unwrap();
    let Some(Ok(StreamItem::Event(online))) = events.next().await else {
        panic!("an event")
    };
    assert_eq!(
        (online.user.user_id.as_str(), online.user.status),
        ("mover", Status::Online)
    );
    drop(events);
    mover.set_status(true, None).await.unwrap();
    // Resuming after the first event replays the one missed.
    let mut events = watcher
        .events(&["zone:7"], Some(online.feed_id))
        .await
        .unwrap();
    let Some(Ok(StreamItem::Event(away))) = events.next().await else {
        panic!("the missed event")
    };
    assert_eq!(away.user.status, Status::Away);
    assert!(away.feed_id > online.feed_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_subscribes_acts_and_ends_on_a_final_close() {
    tokio::time::timeout(TEST_TIMEOUT, session_basics())
        .await
        .expect("in time");
}

async fn session_basics() {
    let node = Node::start(None, 0).await;
    let mut watcher = node
        .client("w")
        .session(SessionOptions {
            zone: Some("1".into()),
            ..SessionOptions::default()
        })
        .await
        .unwrap();
    assert_eq!(watcher.connected().unwrap().presence.status, Status::Online);
    let snap = watcher
        .subscribe(Subscription::scopes(["zone:1"]))
        .await
        .unwrap();
    assert_eq!(snap.scopes["zone:1"].count, 1);
    let mut other = node
        .client("o")
        .session(SessionOptions {
            zone: Some("1".into()),
            ..SessionOptions::default()
        })
        .await
        .unwrap();
    let e = next_event(&mut watcher).await;
    assert_eq!(
        (e.user.user_id.as_str(), e.user.status),
        ("o", Status::Online)
    );
    other.set_status(true, None).await.unwrap();
    assert_eq!(next_event(&mut watcher).await.user.status, Status::Away);
    assert!(
        other.activity().await.unwrap(),
        "the first activity is sent"
    );
    assert!(
        !other.activity().await.unwrap(),
        "a second within a second is not"
    );
    other.ping().await.unwrap();
    let err = other.set_zone(Some("a b")).await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_argument"));
    let err = other
        .subscribe(Subscription::scopes(["room:1"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("invalid_frame"), "{err}");

    // The service ends the session: 4011 is final, the session says so and stops.
    let session_id = other.connected().unwrap().session_id;
    let service = Client::new(&node.url, node.token("svc", Role::Service, None));
    let resp = reqwest::Client::new()
        .delete(format!(
            "{}/messenger/presence/sessions/o/{session_id}",
            service.url()
        ))
        .bearer_auth(node.token("svc", Role::Service, None))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    loop {
        match next_item(&mut other).await {
            SessionItem::Closed(Error::Closed { code, .. }) => {
                assert_eq!(code, 4011);
                break;
            }
            SessionItem::Closed(e) => panic!("closed with {e}"),
            _ => {}
        }
    }
    assert_eq!(other.next().await, None, "nothing after the end");

    // A refused token is final at once.
    let bad = Client::new(&node.url, "not-a-token");
    let err = bad.session(SessionOptions::default()).await.unwrap_err();
    assert!(matches!(err, Error::Api { status: 401, .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reconnects_to_a_restarted_node_and_misses_nothing() {
    tokio::time::timeout(TEST_TIMEOUT, reconnect_and_resume())
        .await
        .expect("in time");
}

async fn reconnect_and_resume() {
    // Two nodes on one Redis: the feed outlives either.
    let prefix = format!("{}:", unique("client"));
    let first = Node::start(Some(&prefix), 0).await;
    let port = first.port();
    let other = Node::start(Some(&prefix), 0).await;
    let mut watcher = first
        .client("watcher")
        .session(SessionOptions::default())
        .await
        .unwrap();
    watcher
        .subscribe(Subscription::users(["mover"]))
        .await
        .unwrap();
    let mover = other.client("mover");
    let lease = mover.heartbeat(&Heartbeat::default()).await.unwrap();
    let online = next_event(&mut watcher).await;
    assert_eq!(online.user.status, Status::Online);

    // The watcher's node goes away; changes go on through the other one meanwhile.
    first.stop().await;
    mover.set_status(true, None).await.unwrap();
    mover.set_zone(Some("5")).await.unwrap();
    mover.end_heartbeat(&lease.session_id).await.unwrap();
    let again = Node::start(Some(&prefix), port).await;

    let mut seen = Vec::new();
    let mut reconnected = false;
    while seen.len() < 3 {
        match next_item(&mut watcher).await {
            SessionItem::Reconnected => reconnected = true,
            SessionItem::Event(e) => seen.push(*e),
            SessionItem::Reset(_) => panic!("the feed held everything: no reset"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(reconnected);
    assert!(watcher.connected().is_some());
    let statuses: Vec<_> = seen
        .iter()
        .map(|e| (e.user.status, e.user.version))
        .collect();
    assert_eq!(
        statuses[0],
        (Status::Away, online.user.version + 1),
        "{statuses:?}"
    );
    assert_eq!(seen[1].user.zone_id.as_ref().unwrap().as_str(), "5");
    assert!(
        seen.windows(2).all(|w| w[0].feed_id < w[1].feed_id),
        "in order"
    );
    // The grace ends it: offline, the last of the missed changes.
    assert_eq!(seen[2].user.status, Status::Offline);
    drop(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_go_through_tls() {
    // A node that speaks plain HTTP: a TLS handshake with it fails, as an error (a crypto
    // provider set up wrong would panic here instead).
    let node = Node::start(None, 0).await;
    let tls_url = node.url.replace("http://", "https://");
    let client = Client::new(&tls_url, node.token("u", Role::User, None));
    assert!(matches!(
        client.count(None, None).await,
        Err(Error::Unreachable(_))
    ));
    let err = client.session(SessionOptions::default()).await.unwrap_err();
    assert!(matches!(err, Error::Unreachable(_)), "{err}");
}
