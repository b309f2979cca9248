//! Webhooks (SPEC §9, issue 11) against a real local HTTP receiver that checks every
//! signature: the happy path, failures on purpose (5xx, a timeout, a 4xx, connection refused),
//! what invisible users and page reloads look like, scopes, and several nodes: one delivers,
//! and when it is killed mid-stream another takes over with nothing lost and per-user order
//! intact.

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use common::*;
use hmac::Mac as _;
use reqwest::Method;
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Short retries, a short attempt timeout, and the long grace of a page reload.
const TIMINGS: &str = r#"
[presence]
away_after = "60s"
offline_grace = "2s"
[webhooks]
request_timeout = "1s"
retry_initial = "100ms"
retry_max = "400ms"
"#;

async fn within<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(90), f)
        .await
        .expect("test timed out")
}

/// What the receiver does with the next request.
#[derive(Debug, Clone, Copy)]
enum Act {
    Answer(u16),
    /// Answers 200 only after this long (past the node's request timeout).
    Hang(Duration),
}

/// One delivery the receiver accepted (signature checked).
#[derive(Debug, Clone)]
struct Got {
    id: String,
    body: Value,
}

#[derive(Default)]
struct Inbox {
    script: Mutex<VecDeque<Act>>,
    got: Mutex<Vec<Got>>,
    /// `webhook-id` of every request, failed ones included.
    attempts: Mutex<Vec<String>>,
    bad_signatures: AtomicU64,
    /// Each accepted delivery is answered after this long (ms).
    slowness_ms: AtomicU64,
    /// Events of this user are answered 503, always.
    poisoned: Mutex<Option<String>>,
    /// Requests being answered now, and the most there ever were at once.
    open_requests: AtomicU64,
    most_at_once: AtomicU64,
    /// Users with a request being answered now, and how often a second one of the same user
    /// came meanwhile.
    open_users: Mutex<HashSet<String>>,
    same_user_overlaps: AtomicU64,
}

/// A webhook receiver on 127.0.0.1 that verifies the Standard Webhooks signature of every
/// request with its own HMAC (no code shared with the node).
struct Receiver {
    addr: SocketAddr,
    inbox: Arc<Inbox>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn key() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap()
}

async fn hook(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: String) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (id, ts, sig) = (
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key()).unwrap();
    mac.update(format!("{id}.{ts}.{body}").as_bytes());
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let fresh = ts.parse::<i64>().is_ok_and(|t| (now - t).abs() < 300);
    if sig != expected || !fresh || h("content-type") != "application/json" {
        inbox.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    inbox.attempts.lock().unwrap().push(id.clone());
    let now_open = inbox.open_requests.fetch_add(1, Ordering::SeqCst) + 1;
    inbox.most_at_once.fetch_max(now_open, Ordering::SeqCst);
    let who = serde_json::from_str::<Value>(&body).unwrap()["user"]["user_id"]
        .as_str()
        .unwrap()
        .to_string();
    if !inbox.open_users.lock().unwrap().insert(who.clone()) {
        inbox.same_user_overlaps.fetch_add(1, Ordering::SeqCst);
    }
    let answer = answer(&inbox, id, body).await;
    inbox.open_users.lock().unwrap().remove(&who);
    inbox.open_requests.fetch_sub(1, Ordering::SeqCst);
    answer
}

async fn answer(inbox: &Inbox, id: String, body: String) -> StatusCode {
    let poisoned = inbox.poisoned.lock().unwrap().clone();
    if poisoned.is_some_and(|p| body.contains(&format!("\"user_id\":\"{p}\""))) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let act = inbox.script.lock().unwrap().pop_front();
    match act {
        Some(Act::Answer(code)) => return StatusCode::from_u16(code).unwrap(),
        Some(Act::Hang(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    let slow = inbox.slowness_ms.load(Ordering::SeqCst);
    if slow > 0 {
        tokio::time::sleep(Duration::from_millis(slow)).await;
    }
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["feed_id"], id.as_str(), "webhook-id is the feed id");
    inbox.got.lock().unwrap().push(Got { id, body });
    StatusCode::OK
}

impl Receiver {
    async fn start() -> Receiver {
        Self::start_on("127.0.0.1:0".parse().unwrap(), Arc::default()).await
    }

    async fn start_on(addr: SocketAddr, inbox: Arc<Inbox>) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(inbox.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { addr, inbox, task }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn script(&self, acts: &[Act]) {
        self.inbox
            .script
            .lock()
            .unwrap()
            .extend(acts.iter().copied());
    }

    fn got(&self) -> Vec<Got> {
        self.inbox.got.lock().unwrap().clone()
    }

    fn of(&self, user: &str) -> Vec<Got> {
        self.got()
            .into_iter()
            .filter(|g| g.body["user"]["user_id"] == user)
            .collect()
    }

    fn statuses(&self, user: &str) -> Vec<String> {
        self.of(user)
            .iter()
            .map(|g| g.body["user"]["status"].as_str().unwrap().to_string())
            .collect()
    }

    fn attempts_at(&self, id: &str) -> usize {
        self.inbox
            .attempts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| *a == id)
            .count()
    }

    /// Waits until `check` holds on what was received, for at most 20 s.
    async fn until(&self, what: &str, check: impl Fn(&Receiver) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "never happened: {what}; got {:?}",
                self.got()
                    .iter()
                    .map(|g| (&g.id, &g.body["user"]["user_id"], &g.body["user"]["status"]))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn assert_signatures_held(&self) {
        assert_eq!(
            self.inbox.bad_signatures.load(Ordering::SeqCst),
            0,
            "every request carried a valid signature"
        );
    }
}

fn endpoint(url: &str, scopes: &str) -> String {
    format!(
        "[[webhooks.endpoints]]\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nevents = [\"presence\"]\nscopes = {scopes}\n"
    )
}

fn config(url: &str) -> String {
    format!("{TIMINGS}\n{}", endpoint(url, "[]"))
}

fn admin() -> String {
    token("ops", "admin", None)
}

/// The admin view of the node's first endpoint.
async fn endpoint_state(node: &Node) -> Value {
    let (s, v) = node.get("/admin/webhooks", &admin()).await;
    assert_eq!(s, 200, "{v}");
    v["endpoints"][0].clone()
}

/// Sets `user` away (`away = true`) or online over REST.
async fn set(node: &Node, user: &str, away: bool) {
    let path = if away {
        "/messenger/presence/away"
    } else {
        "/messenger/presence/online"
    };
    let (s, v) = node
        .send(Method::POST, path, &token(user, "user", None), None)
        .await;
    assert_eq!(s, 200, "{v}");
}

/// A metric's value in the node's Prometheus text (0 when absent).
async fn metric(node: &Node, line_start: &str) -> f64 {
    node.metrics()
        .await
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_signed_with_the_sse_body_and_show_in_admin_and_metrics() {
    within(async {
        let r = Receiver::start().await;
        let node = Node::start(Kind::Memory, &config(&r.url())).await;
        let u = user("happy");
        let _ws = node
            .connect(&token(&u, "user", Some("100")), "&zone_id=10&org_id=100")
            .await;
        r.until("online delivered", |r| r.statuses(&u) == ["online"])
            .await;
        set(&node, &u, true).await;
        r.until("away delivered", |r| r.statuses(&u) == ["online", "away"])
            .await;
        let got = r.of(&u);
        let e = &got[1].body;
        assert_eq!(e["type"], "presence");
        assert_eq!(e["prev_status"], "online");
        assert_eq!(e["user"]["zone_id"], "10");
        assert_eq!(e["user"]["org_id"], "100");
        assert!(e["ts"].is_string() && e["feed_id"].is_string(), "{e}");
        let feed_id = |g: &Got| g.id.parse::<presence_core::FeedId>().unwrap();
        assert!(feed_id(&got[0]) < feed_id(&got[1]), "feed order");
        r.assert_signatures_held();
        // The same JSON a stranger's SSE stream gets for that event.
        let mut sse = node
            .sse(
                &token(&user("stranger"), "user", None),
                &format!("?after={}", got[0].id),
                None,
            )
            .await
            .unwrap();
        let same = sse.next().await;
        assert_eq!(same.data, got[1].body);
        // What an on-call engineer sees.
        let state = endpoint_state(&node).await;
        let id = state["id"].as_str().unwrap().to_string();
        assert_eq!(id.len(), 16, "{state}");
        assert_eq!(state["url"], r.url());
        assert!(state["holder"].is_string(), "{state}");
        assert!(state["lease_until"].is_string(), "{state}");
        assert!(
            !state.to_string().contains("MfKQ9r8G"),
            "no secret: {state}"
        );
        // Acknowledged within a batch and reported at the next renewal (a third of 3 s).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = endpoint_state(&node).await;
            if s["acked_feed_id"] == got[1].id.as_str()
                && s["report"]["last_delivered_feed_id"] == got[1].id.as_str()
            {
                assert!(s["report"]["delivered"].as_u64().unwrap() >= 2, "{s}");
                break;
            }
            assert!(Instant::now() < deadline, "never acknowledged: {s}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (s, _) = node.get("/admin/webhooks", &token("u", "user", None)).await;
        assert_eq!(s, 403, "admin only");
        let label = format!("presenced_webhook_deliveries_total{{endpoint=\"{id}\"}}");
        assert!(metric(&node, &label).await >= 2.0);
        assert_eq!(
            metric(
                &node,
                &format!("presenced_webhook_lease_held{{endpoint=\"{id}\"}}")
            )
            .await,
            1.0
        );
        let text = node.metrics().await;
        assert!(
            text.contains(&format!("presenced_webhook_lag_seconds{{endpoint=\"{id}\"")),
            "lag is measured"
        );
        assert!(!text.contains("MfKQ9r8G"), "no secret in /metrics");
        let (_, doc) = node.get("/openapi.json", "").await;
        assert!(doc["paths"]["/admin/webhooks"].is_object());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_is_retried_until_delivered_and_a_4xx_is_skipped_for_good() {
    within(async {
        let r = Receiver::start().await;
        let node = Node::start(Kind::Memory, &config(&r.url())).await;
        let u = user("retry");
        r.script(&[Act::Answer(500), Act::Answer(503), Act::Answer(502)]);
        let _ws = node.connect(&token(&u, "user", None), "").await;
        r.until("online delivered after three 5xx", |r| {
            r.statuses(&u) == ["online"]
        })
        .await;
        let online = r.of(&u)[0].id.clone();
        assert_eq!(
            r.attempts_at(&online),
            4,
            "three failures, then the delivery"
        );
        let id = endpoint_state(&node).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            metric(
                &node,
                &format!("presenced_webhook_retries_total{{endpoint=\"{id}\"}}")
            )
            .await,
            3.0
        );
        // A 4xx is final: that event is skipped, later ones still arrive.
        r.script(&[Act::Answer(422)]);
        set(&node, &u, true).await;
        set(&node, &u, false).await;
        r.until("the next event after the refused one", |r| {
            r.statuses(&u) == ["online", "online"]
        })
        .await;
        let refused: Vec<String> = r
            .inbox
            .attempts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| !r.got().iter().any(|g| &g.id == *a))
            .cloned()
            .collect();
        assert_eq!(refused.len(), 1, "the away event, tried once: {refused:?}");
        assert_eq!(
            metric(
                &node,
                &format!(
                    "presenced_webhook_given_up_total{{endpoint=\"{id}\",reason=\"refused\"}}"
                )
            )
            .await,
            1.0
        );
        r.assert_signatures_held();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_attempt_is_retried() {
    within(async {
        let r = Receiver::start().await;
        let node = Node::start(Kind::Memory, &config(&r.url())).await;
        let u = user("slow");
        r.script(&[Act::Hang(Duration::from_secs(3))]);
        let _ws = node.connect(&token(&u, "user", None), "").await;
        r.until("online delivered after a timeout", |r| {
            r.statuses(&u) == ["online"]
        })
        .await;
        let online = r.of(&u)[0].id.clone();
        assert_eq!(r.attempts_at(&online), 2);
        let id = endpoint_state(&node).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            metric(
                &node,
                &format!("presenced_webhook_failures_total{{endpoint=\"{id}\",kind=\"timeout\"}}")
            )
            .await
                >= 1.0
        );
        r.assert_signatures_held();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_refuses_connections_gets_everything_once_it_is_up() {
    within(async {
        // A port nobody listens on, until the receiver starts there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let url = format!("http://{port}/hook");
        let node = Node::start(Kind::Memory, &config(&url)).await;
        let u = user("refused");
        let _ws = node.connect(&token(&u, "user", None), "").await;
        set(&node, &u, true).await;
        let id = endpoint_state(&node).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let connect =
            format!("presenced_webhook_failures_total{{endpoint=\"{id}\",kind=\"connect\"}}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while metric(&node, &connect).await < 2.0 {
            assert!(Instant::now() < deadline, "no connection failures counted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let r = Receiver::start_on(port, Arc::default()).await;
        r.until("both events, in order", |r| {
            r.statuses(&u) == ["online", "away"]
        })
        .await;
        r.assert_signatures_held();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_users_are_delivered_as_others_see_them() {
    within(async {
        let r = Receiver::start().await;
        let node = Node::start(Kind::Memory, &config(&r.url())).await;
        let (u, marker) = (user("ghost"), user("marker"));
        let t = token(&u, "user", Some("100"));
        let _ws = node.connect(&t, "&zone_id=10").await;
        r.until("online", |r| r.statuses(&u) == ["online"]).await;
        let (s, _) = node
            .send(
                Method::POST,
                "/messenger/presence/online",
                &t,
                Some(json!({"invisible": true})),
            )
            .await;
        assert_eq!(s, 200);
        r.until("going invisible looks like going offline", |r| {
            r.statuses(&u) == ["online", "offline"]
        })
        .await;
        // A change of what the user hides reaches no onlooker: nothing is sent.
        set(&node, &u, true).await;
        // A later event of someone else proves the hidden changes were passed over.
        let _m = node.connect(&token(&marker, "user", None), "").await;
        r.until("the marker", |r| r.statuses(&marker) == ["online"])
            .await;
        assert_eq!(r.statuses(&u), ["online", "offline"]);
        let (s, _) = node
            .send(
                Method::POST,
                "/messenger/presence/online",
                &t,
                Some(json!({"invisible": false})),
            )
            .await;
        assert_eq!(s, 200);
        r.until("visible again", |r| {
            r.statuses(&u) == ["online", "offline", "online"]
        })
        .await;
        let hidden = &r.of(&u)[1].body;
        assert_eq!(hidden["user"]["invisible"], false, "{hidden}");
        assert_eq!(hidden["user"]["devices"], json!([]), "{hidden}");
        for g in r.of(&u) {
            assert_ne!(g.body["user"]["invisible"], true, "{}", g.body);
        }
        r.assert_signatures_held();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_reload_within_the_grace_sends_nothing() {
    within(async {
        let r = Receiver::start().await;
        let node = Node::start(Kind::Memory, &config(&r.url())).await;
        let (u, marker) = (user("reload"), user("marker"));
        let t = token(&u, "user", None);
        let ws = node.connect(&t, "").await;
        r.until("online", |r| r.statuses(&u) == ["online"]).await;
        drop(ws);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _again = node.connect(&t, "").await;
        // Past the 2 s grace the close would have ended in an offline event.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let _m = node.connect(&token(&marker, "user", None), "").await;
        r.until("the marker", |r| r.statuses(&marker) == ["online"])
            .await;
        assert_eq!(r.statuses(&u), ["online"], "the reload sent nothing");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_match_as_subscriptions_do_and_a_down_endpoint_holds_back_no_other() {
    within(async {
        let zone10 = Receiver::start().await;
        let everything = Receiver::start().await;
        let down = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let extra = format!(
            "{TIMINGS}\n{}\n{}\n{}",
            endpoint(&format!("http://{down}/hook"), "[]"),
            endpoint(&zone10.url(), "[\"zone:10\"]"),
            endpoint(&everything.url(), "[]"),
        );
        let node = Node::start(Kind::Memory, &extra).await;
        let (mover, elsewhere) = (user("mover"), user("elsewhere"));
        let mt = token(&mover, "user", None);
        let _a = node.connect(&mt, "&zone_id=10").await;
        let _b = node
            .connect(&token(&elsewhere, "user", None), "&zone_id=11")
            .await;
        // Leaving zone 10 is an event of zone 10 (the zone before the change counts).
        let (s, _) = node
            .send(
                Method::PUT,
                "/messenger/presence/zone",
                &mt,
                Some(json!({"zone_id": "11"})),
            )
            .await;
        assert_eq!(s, 200);
        // In zone 11 now: no longer zone 10's.
        set(&node, &mover, true).await;
        everything
            .until("everything, though one endpoint is down", |r| {
                r.statuses(&mover).len() == 3 && r.statuses(&elsewhere) == ["online"]
            })
            .await;
        zone10
            .until("the mover's two zone-10 events", |r| {
                r.of(&mover).len() == 2
            })
            .await;
        let moved = &zone10.of(&mover)[1].body;
        assert_eq!(
            (&moved["prev_zone_id"], &moved["user"]["zone_id"]),
            (&json!("10"), &json!("11"))
        );
        // A marker in zone 10, after the away in zone 11: once it is there, the away event
        // was passed over.
        let marker = user("marker");
        let _m = node
            .connect(&token(&marker, "user", None), "&zone_id=10")
            .await;
        zone10
            .until("the marker", |r| r.statuses(&marker) == ["online"])
            .await;
        assert_eq!(zone10.of(&mover).len(), 2);
        assert!(zone10.of(&elsewhere).is_empty());
        let (_, all) = node.get("/admin/webhooks", &admin()).await;
        let failing = all["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["url"].as_str().unwrap().contains(&down.to_string()))
            .unwrap()
            .clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut failing = failing;
        while failing["report"]["last_error"].is_null() {
            assert!(
                Instant::now() < deadline,
                "the failure is never reported: {failing}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (_, all) = node.get("/admin/webhooks", &admin()).await;
            failing = all["endpoints"][0].clone();
        }
        assert!(
            failing["report"]["last_error"]
                .as_str()
                .unwrap()
                .starts_with("connect"),
            "{failing}"
        );
        assert!(
            failing["report"]["retrying_feed_id"].is_string(),
            "{failing}"
        );
    })
    .await
}

/// The ids of the feed's first `n` events of `users`, in order, as a service token's SSE
/// replay from the start shows them: the truth the receiver is held to.
async fn feed_ids(node: &Node, users: &[String], n: usize) -> Vec<String> {
    let mut sse = node
        .sse(&token("svc", "service", None), "?after=0-0", None)
        .await
        .unwrap();
    let mut ids = Vec::new();
    while ids.len() < n {
        let e = sse.next().await;
        if users
            .iter()
            .any(|u| e.data["user"]["user_id"] == u.as_str())
        {
            ids.push(e.id.unwrap());
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_each_event_once() {
    within(async {
        let r = Receiver::start().await;
        // One delivery at a time: in feed order across users too.
        let extra = format!("{}\n[webhooks]\nmax_in_flight = 1", config(&r.url()));
        let nodes = Node::cluster(2, &extra).await;
        let users: Vec<String> = (0..4).map(|i| user(&format!("pair{i}"))).collect();
        let mut sockets = Vec::new();
        for (i, u) in users.iter().enumerate() {
            sockets.push(nodes[i % 2].connect(&token(u, "user", None), "").await);
        }
        let holder = endpoint_state(&nodes[0]).await["holder"].clone();
        assert!(holder.is_string(), "{holder}");
        // Spread over more than two leases (3 s): the holder renews, nobody else delivers.
        for round in 0..5 {
            for (i, u) in users.iter().enumerate() {
                set(&nodes[(i + round) % 2], u, round % 2 == 0).await;
            }
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let expected = users.len() * 6;
        r.until("every event", |r| r.got().len() >= expected).await;
        // Another lease period or so: a second deliverer would have sent them again by now.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let got = r.got();
        let ids: HashSet<&String> = got.iter().map(|g| &g.id).collect();
        assert_eq!(ids.len(), got.len(), "no event delivered twice");
        assert_eq!(got.len(), expected);
        let truth = feed_ids(&nodes[1], &users, expected).await;
        let delivered: Vec<String> = got.iter().map(|g| g.id.clone()).collect();
        assert_eq!(delivered, truth, "in feed order");
        assert_eq!(r.inbox.most_at_once.load(Ordering::SeqCst), 1);
        assert_eq!(
            endpoint_state(&nodes[1]).await["holder"],
            holder,
            "one holder throughout"
        );
        r.assert_signatures_held();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivering_node_killed_mid_stream_loses_nothing_and_keeps_per_user_order() {
    within(async {
        let r = Receiver::start().await;
        // Slow answers, so the kill lands with deliveries in flight.
        r.inbox.slowness_ms.store(25, Ordering::SeqCst);
        let mut nodes = Node::cluster(2, &config(&r.url())).await;
        // Which node delivers: the one whose /metrics says it holds the lease.
        let id = endpoint_state(&nodes[1]).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let held = format!("presenced_webhook_lease_held{{endpoint=\"{id}\"}}");
        let deadline = Instant::now() + Duration::from_secs(10);
        let victim = loop {
            let mut holders = Vec::new();
            for (i, n) in nodes.iter().enumerate() {
                if metric(n, &held).await == 1.0 {
                    holders.push(i);
                }
            }
            if let [one] = holders[..] {
                break one;
            }
            assert!(Instant::now() < deadline, "holders: {holders:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let survivor = 1 - victim;
        let users: Vec<String> = (0..4).map(|i| user(&format!("kill{i}"))).collect();
        let mut sockets = Vec::new();
        for u in &users {
            sockets.push(nodes[survivor].connect(&token(u, "user", None), "").await);
        }
        let changes = 15;
        for round in 0..changes {
            for u in &users {
                set(&nodes[survivor], u, round % 2 == 0).await;
            }
            if round == 3 {
                r.until("deliveries under way", |r| r.got().len() >= 8)
                    .await;
                nodes[victim].kill9();
            }
        }
        // Each user's online event and changes.
        let expected = users.len() * (1 + changes);
        let wanted: HashSet<String> = feed_ids(&nodes[survivor], &users, expected)
            .await
            .into_iter()
            .collect();
        assert_eq!(wanted.len(), expected);
        r.until("every event at least once, after the takeover", |r| {
            let got: HashSet<String> = r.got().into_iter().map(|g| g.id).collect();
            wanted.is_subset(&got)
        })
        .await;
        // Per user, first sightings come in feed order (a replay after the takeover repeats
        // what was not acknowledged; a consumer drops what it saw by feed id or version).
        assert_per_user_order(&r);
        assert_eq!(metric(&nodes[survivor], &held).await, 1.0, "taken over");
        r.assert_signatures_held();
        drop(sockets);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_failing_for_max_retry_duration_is_given_up_and_the_next_ones_flow() {
    within(async {
        let r = Receiver::start().await;
        let extra = format!(
            "{}\n[webhooks]\nmax_retry_duration = \"1s\"",
            config(&r.url())
        );
        let node = Node::start(Kind::Memory, &extra).await;
        let (poison, other) = (user("poison"), user("other"));
        *r.inbox.poisoned.lock().unwrap() = Some(poison.clone());
        let _p = node.connect(&token(&poison, "user", None), "").await;
        let _o = node.connect(&token(&other, "user", None), "").await;
        // Another user's events do not wait for it.
        r.until("the other user's event", |r| {
            r.statuses(&other) == ["online"]
        })
        .await;
        let id = endpoint_state(&node).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let given_up = format!(
            "presenced_webhook_given_up_total{{endpoint=\"{id}\",reason=\"max_retry_duration\"}}"
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while metric(&node, &given_up).await < 1.0 {
            assert!(Instant::now() < deadline, "never given up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let delivered: HashSet<String> = r.got().into_iter().map(|g| g.id).collect();
        let refused = r
            .inbox
            .attempts
            .lock()
            .unwrap()
            .iter()
            .find(|a| !delivered.contains(*a))
            .cloned()
            .expect("the poisoned event was attempted");
        assert!(r.attempts_at(&refused) >= 2, "retried before giving up");
        // The receiver recovers: the user's next event flows, the given-up one never comes.
        *r.inbox.poisoned.lock().unwrap() = None;
        set(&node, &poison, true).await;
        r.until("the poisoned user's next event", |r| {
            r.statuses(&poison) == ["away"]
        })
        .await;
        assert_eq!(metric(&node, &given_up).await, 1.0);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_id_that_aged_out_of_the_feed_is_counted_and_delivery_goes_on_from_the_head()
 {
    within(async {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let extra = format!(
            "{}\n[store]\nfeed_max_len = 3\n[webhooks]\nread_ahead = 20",
            config(&format!("http://{port}/hook"))
        );
        let node = Node::start(Kind::Memory, &extra).await;
        let u = user("aged");
        let _ws = node.connect(&token(&u, "user", None), "").await;
        // The receiver is down: the worker holds the user's events, up to its read-ahead of 20,
        // and then reads no more while further changes push its read position out of a feed
        // of three. (While it still reads, it may fall behind such a short feed too.)
        let service = token("svc", "service", None);
        let changes = 60u32;
        let made: Vec<(u16, Value)> = futures::StreamExt::collect(futures::StreamExt::buffered(
            futures::stream::iter((0..changes).map(|i| {
                let path = if i % 2 == 0 {
                    "/messenger/presence/away"
                } else {
                    "/messenger/presence/online"
                };
                node.send(Method::POST, path, &service, Some(json!({"user_id": u})))
            })),
            1,
        ))
        .await;
        assert!(made.iter().all(|(s, _)| *s == 200));
        let id = endpoint_state(&node).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        // Its window full, the worker reads nothing more until the receiver is back: then it
        // delivers what it holds and finds its read position gone.
        let resets = format!("presenced_webhook_feed_resets_total{{endpoint=\"{id}\"}}");
        let before = metric(&node, &resets).await;
        let r = Receiver::start_on(port, Arc::default()).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while metric(&node, &resets).await <= before {
            assert!(Instant::now() < deadline, "the reset is never counted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // From the head on: the next change arrives; what aged out unread never does.
        let (s, _) = node
            .send(
                Method::PUT,
                "/messenger/presence/zone",
                &token(&u, "user", None),
                Some(json!({"zone_id": "after-reset"})),
            )
            .await;
        assert_eq!(s, 200);
        r.until("the change after the reset", |r| {
            r.of(&u)
                .last()
                .is_some_and(|g| g.body["user"]["zone_id"] == "after-reset")
        })
        .await;
        let delivered = r.of(&u).len() as u32;
        assert!(
            delivered < changes + 2,
            "events were lost to the reset: {delivered} of {}",
            changes + 2
        );
        assert_per_user_order(&r);
        r.assert_signatures_held();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_overlap_across_users_and_never_within_one() {
    within(async {
        let r = Receiver::start().await;
        // Slow answers: events of several users are waiting at once.
        r.inbox.slowness_ms.store(50, Ordering::SeqCst);
        // More deliveries allowed at once than there are users: only the one-per-user rule
        // keeps a user's events from overlapping.
        let extra = format!("{}\n[webhooks]\nmax_in_flight = 8", config(&r.url()));
        let node = Node::start(Kind::Memory, &extra).await;
        let users: Vec<String> = (0..3).map(|i| user(&format!("many{i}"))).collect();
        let mut sockets = Vec::new();
        for u in &users {
            sockets.push(node.connect(&token(u, "user", None), "").await);
        }
        for round in 0..5 {
            for u in &users {
                set(&node, u, round % 2 == 0).await;
            }
        }
        r.until("every event", |r| r.got().len() == users.len() * 6)
            .await;
        assert_per_user_order(&r);
        let most = r.inbox.most_at_once.load(Ordering::SeqCst);
        assert!(
            (2..=3).contains(&most),
            "deliveries of different users overlapped, at most one per user: {most}"
        );
        assert_eq!(
            r.inbox.same_user_overlaps.load(Ordering::SeqCst),
            0,
            "never two of one user at once"
        );
        r.assert_signatures_held();
    })
    .await
}

/// Per user, the first sighting of each event comes in feed order and with a greater version.
fn assert_per_user_order(r: &Receiver) {
    let mut seen: HashSet<String> = HashSet::new();
    let mut last: HashMap<String, (presence_core::FeedId, u64)> = HashMap::new();
    for g in r.got() {
        if !seen.insert(g.id.clone()) {
            continue;
        }
        let u = g.body["user"]["user_id"].as_str().unwrap().to_string();
        let version = g.body["user"]["version"].as_u64().unwrap();
        let id: presence_core::FeedId = g.id.parse().unwrap();
        if let Some((prev, v)) = last.get(&u) {
            assert!(*prev < id && *v < version, "{u}: {prev} then {id}");
        }
        last.insert(u, (id, version));
    }
}
