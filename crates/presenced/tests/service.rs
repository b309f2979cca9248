//! Black-box tests of the real `presenced` binary: the seed's REST examples and WebSocket
//! flow, SPEC §3 transitions as a client sees them, subscriptions and resume, and the bad
//! input of SPEC §7 and §10. Each runs against the memory store and against Redis. The
//! time-driven transitions (auto-away, grace, lease and token expiry, silent peers) run in
//! process on a manual clock: `in_process.rs`.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                tokio::time::timeout(std::time::Duration::from_secs(60), super::$name(super::Kind::Memory)).await.expect("test timed out")
            })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                tokio::time::timeout(std::time::Duration::from_secs(60), super::$name(super::Kind::Redis)).await.expect("test timed out")
            })*
        }
    };
}

both_stores!(
    seed_rest_examples,
    websocket_flow_with_subscriber,
    second_sessions_and_manual_away_as_a_client_sees_them,
    resume_replays_missed_events,
    auth_refusals,
    bad_rest_input_changes_nothing,
    bad_frames_get_errors_and_the_connection_stays,
    limits_close_with_their_codes,
    shutdown_closes_with_1012,
    operations_routes,
    sse_follows_and_resumes,
    tenant_isolation_hides_other_orgs,
    a_subscriber_that_stops_reading_is_closed,
    websocket_connects_share_the_rest_budget,
    history_inactive_and_nearby_over_rest,
    nearby_keeps_a_confined_token_to_its_org,
);

// Exact trimming of the feed is the memory store's (Redis trims `MAXLEN ~` a node at a
// time); the conformance suite covers both stores' reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aged_out_resume_gets_a_reset_snapshot() {
    tokio::time::timeout(Duration::from_secs(60), aged_out(Kind::Memory))
        .await
        .expect("test timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_commands_show_presence_and_exit_with_codes_scripts_can_trust() {
    tokio::time::timeout(Duration::from_secs(60), client_commands())
        .await
        .expect("test timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_node_with_a_data_dir_keeps_last_seen_and_history_across_a_restart() {
    tokio::time::timeout(Duration::from_secs(60), memory_snapshots())
        .await
        .expect("test timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_es256_public_keys_verify_tokens() {
    tokio::time::timeout(Duration::from_secs(60), public_keys())
        .await
        .expect("test timed out")
}

#[test]
fn token_command_prints_one_verifiable_token() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_presenced"))
        .args([
            "token", "--sub", "123", "--org", "100", "--role", "service", "--ttl", "1h",
        ])
        .env("PRESENCE_AUTH__JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "one line on stdout");
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.set_required_spec_claims(&["exp", "sub"]);
    let data = jsonwebtoken::decode::<Value>(
        text.trim(),
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &v,
    )
    .unwrap();
    assert_eq!(
        (
            data.claims["sub"].clone(),
            data.claims["org_id"].clone(),
            data.claims["role"].clone()
        ),
        (json!("123"), json!("100"), json!("service"))
    );
    // Without a secret it says what to set.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_presenced"))
        .args(["token", "--sub", "1"])
        .env_remove("PRESENCE_AUTH__JWT_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("jwt_secret"));
}

fn is_event(f: &Value, user: &str, status: &str) -> bool {
    f["type"] == "presence" && f["user"]["user_id"] == user && f["user"]["status"] == status
}

async fn seed_rest_examples(kind: Kind) {
    let node = Node::start(kind, "").await;
    let u = user("seed");
    let t = token(&u, "user", None);
    let mut ws = node.ws(&t, "&zone_id=10&org_id=100").await;
    let connected = ws.next().await;
    assert_eq!(connected["type"], "system");
    assert_eq!(connected["event"], "connected");
    assert_eq!(connected["presence"]["status"], "online");

    // curl -X GET "http://localhost:8000/messenger/presence/online?zone_id=10&limit=50"
    let (s, page) = node
        .get("/messenger/presence/online?zone_id=10&limit=50", &t)
        .await;
    assert_eq!(s, 200);
    assert_eq!(page["count"], 1);
    assert_eq!(page["online_users"][0]["user_id"], u.as_str());
    assert_eq!(page["online_users"][0]["zone_id"], "10");
    assert_eq!(page["online_users"][0]["org_id"], "100");
    // curl -X GET "http://localhost:8000/messenger/presence/count?zone_id=10"
    let (s, count) = node.get("/messenger/presence/count?zone_id=10", &t).await;
    assert_eq!(s, 200);
    assert_eq!(count, json!({"global": 1, "zone": 1, "org": null}));
    // curl -X GET "http://localhost:8000/messenger/presence/status/123"
    let (s, view) = node
        .get(&format!("/messenger/presence/status/{u}"), &t)
        .await;
    assert_eq!(s, 200);
    assert_eq!(view["status"], "online");
    // curl -X POST "http://localhost:8000/messenger/presence/away"
    let (s, away) = node
        .send(Method::POST, "/messenger/presence/away", &t, None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(away, json!({"status": "away", "user_id": u}));
    let (_, view) = node
        .get(&format!("/messenger/presence/status/{u}"), &t)
        .await;
    assert_eq!(
        (view["status"].as_str(), view["away_reason"].as_str()),
        (Some("away"), Some("manual"))
    );
    let (s, back) = node
        .send(Method::POST, "/messenger/presence/online", &t, None)
        .await;
    assert_eq!((s, back["status"].as_str()), (200, Some("online")));
    // Unknown users are 404 in the error shape.
    let (s, e) = node.get("/messenger/presence/status/nobody", &t).await;
    assert_eq!(s, 404);
    assert_eq!(e["error"]["code"], "not_found");
    // The seed's zone change: PUT zone moves the user out of the old set.
    let (s, moved) = node
        .send(
            Method::PUT,
            "/messenger/presence/zone",
            &t,
            Some(json!({"zone_id": 11})),
        )
        .await;
    assert_eq!((s, moved["zone_id"].as_str()), (200, Some("11")));
    let (_, count) = node.get("/messenger/presence/count?zone_id=10", &t).await;
    assert_eq!(count["zone"], 0);
}

async fn websocket_flow_with_subscriber(kind: Kind) {
    let node = Node::start(kind, "").await;
    let (a, b) = (user("a"), user("b"));
    let mut watcher = node.connect(&token(&b, "user", None), "").await;
    let snap = watcher
        .subscribe(json!({"type": "subscribe", "scopes": ["zone:10"], "users": [a], "id": "s1"}))
        .await;
    assert_eq!(snap["id"], "s1");
    assert_eq!(snap["scopes"]["zone:10"]["count"], 0);
    assert_eq!(snap["users"][&a], Value::Null);

    let mut alice = node
        .ws(&token(&a, "user", None), "&zone_id=10&device=desktop")
        .await;
    let hello = alice.next().await;
    assert_eq!(hello["presence"]["devices"], json!(["desktop"]));
    let online = watcher.until(|f| f["type"] == "presence").await;
    assert!(is_event(&online, &a, "online"), "{online}");
    assert_eq!(online["prev_status"], "offline");

    alice
        .send(json!({"type": "status.set", "status": "away", "id": 7}))
        .await;
    assert_eq!(alice.until(|f| f["type"] == "ack").await["id"], 7);
    let away = watcher.until(|f| f["type"] == "presence").await;
    assert!(is_event(&away, &a, "away"));
    assert_eq!(away["user"]["away_reason"], "manual");
    assert!(away["user"]["version"].as_u64() > online["user"]["version"].as_u64());

    alice.send(json!({"type": "ping", "id": "p"})).await;
    assert_eq!(alice.until(|f| f["type"] == "pong").await["id"], "p");
    alice
        .send(json!({"type": "metadata.set", "metadata": {"theme": "dark"}, "id": 8}))
        .await;
    assert_eq!(alice.until(|f| f["type"] == "ack").await["id"], 8);
    let md = watcher.until(|f| f["type"] == "presence").await;
    assert_eq!(md["user"]["metadata"], json!({"theme": "dark"}));

    // Unsubscribed, the watcher hears nothing more about this user.
    watcher
        .send(json!({"type": "unsubscribe", "scopes": ["zone:10"], "users": [a], "id": "u"}))
        .await;
    assert_eq!(watcher.until(|f| f["type"] == "ack").await["id"], "u");
    alice
        .send(json!({"type": "status.set", "status": "online", "id": 9}))
        .await;
    alice.until(|f| f["type"] == "ack").await;
    watcher
        .assert_quiet(Duration::from_millis(500), "unsubscribed")
        .await;
    watcher
        .subscribe(json!({"type": "subscribe", "users": [a]}))
        .await;

    drop(alice);
    let gone = watcher.until(|f| f["type"] == "presence").await;
    assert!(
        is_event(&gone, &a, "offline"),
        "offline after the grace: {gone}"
    );
}

async fn resume_replays_missed_events(kind: Kind) {
    let node = Node::start(kind, "").await;
    let a = user("resume");
    let svc = token("backend", "service", None);
    let _alice = node.connect(&token(&a, "user", None), "").await;
    let mut watcher = node.connect(&token(&user("w"), "user", None), "").await;
    let snap = watcher
        .subscribe(json!({"type": "subscribe", "users": [a]}))
        .await;
    let from = snap["feed_id"].as_str().unwrap().to_string();
    drop(watcher);
    for z in ["1", "2", "3"] {
        let (s, _) = node
            .send(
                Method::PUT,
                "/messenger/presence/zone",
                &svc,
                Some(json!({"zone_id": z, "user_id": a})),
            )
            .await;
        assert_eq!(s, 200);
    }
    let mut watcher = node.connect(&token(&user("w"), "user", None), "").await;
    let snap = watcher
        .subscribe(json!({"type": "subscribe", "users": [a], "after": from, "id": 1}))
        .await;
    assert_eq!(snap["feed_id"], from.as_str());
    assert_eq!(snap["reset"], false);
    let zones: Vec<Value> = [
        watcher.next().await,
        watcher.next().await,
        watcher.next().await,
    ]
    .iter()
    .map(|e| e["user"]["zone_id"].clone())
    .collect();
    assert_eq!(
        zones,
        [json!("1"), json!("2"), json!("3")],
        "missed events, in order"
    );
    // Live events continue after the replay.
    let (s, _) = node
        .send(
            Method::PUT,
            "/messenger/presence/zone",
            &svc,
            Some(json!({"zone_id": "4", "user_id": a})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(watcher.next().await["user"]["zone_id"], "4");
}

async fn auth_refusals(kind: Kind) {
    let node = Node::start(kind, "").await;
    let a = user("auth");
    let r = node
        .http
        .get(node.url("/messenger/presence/count"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "unauthenticated"
    );
    for bad in [
        "garbage".to_string(),
        jwt(&json!({"sub": a, "exp": 1_000_000})),
        jwt(&json!({"sub": a})),
        jwt(&json!({"sub": "a b", "exp": 4_000_000_000u64})),
        jwt(&json!({"sub": a, "exp": 4_000_000_000u64, "role": "root"})),
        {
            let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
            let h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512);
            jsonwebtoken::encode(&h, &json!({"sub": a, "exp": 4_000_000_000u64}), &key).unwrap()
        },
    ] {
        let (s, e) = node.get("/messenger/presence/count", &bad).await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (401, Some("unauthenticated")),
            "{bad}"
        );
        let ws = tokio_tungstenite::connect_async(format!(
            "ws://{}/messenger/ws?token={bad}",
            node.addr
        ))
        .await;
        match ws {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
            other => panic!(
                "upgrade should be refused with 401, got {:?}",
                other.map(|_| ())
            ),
        }
    }
    // A user token acting on someone else is refused; a service token may.
    let t = token(&a, "user", None);
    let (s, e) = node
        .send(
            Method::POST,
            "/messenger/presence/away?user_id=someone",
            &t,
            None,
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (403, Some("permission_denied"))
    );
    let svc = token("backend", "service", None);
    let (s, _) = node
        .send(
            Method::POST,
            &format!("/messenger/presence/away?user_id={a}"),
            &svc,
            None,
        )
        .await;
    assert_eq!(
        s, 404,
        "service tokens may act for users; this one has no presence"
    );
}

async fn bad_rest_input_changes_nothing(kind: Kind) {
    let node = Node::start(kind, "[limits]\nbatch_ids = 3").await;
    let a = user("bad");
    let t = token(&a, "user", None);
    let _ws = node.connect(&t, "&zone_id=1").await;
    let (_, before) = node
        .get(&format!("/messenger/presence/status/{a}"), &t)
        .await;
    for (method, path, body) in [
        (Method::GET, "/messenger/presence/online?limit=0", None),
        (Method::GET, "/messenger/presence/online?limit=1001", None),
        (Method::GET, "/messenger/presence/online?limit=ten", None),
        (Method::GET, "/messenger/presence/online?status=busy", None),
        (
            Method::GET,
            "/messenger/presence/online?cursor=%21%21",
            None,
        ),
        (
            Method::GET,
            "/messenger/presence/online?zone_id=a%20b",
            None,
        ),
        (
            Method::GET,
            "/messenger/presence/online?zone_id=1&org_id=2",
            None,
        ),
        (Method::GET, "/messenger/presence/online?surprise=1", None),
        (Method::GET, "/messenger/presence/status/a%20b", None),
        (
            Method::POST,
            "/messenger/presence/status/batch",
            Some(json!({"user_ids": ["1", "2", "3", "4"]})),
        ),
        (
            Method::POST,
            "/messenger/presence/status/batch",
            Some(json!({"user_ids": [null]})),
        ),
        (
            Method::PUT,
            "/messenger/presence/zone",
            Some(json!({"zone_id": "a|b"})),
        ),
        (
            Method::PUT,
            "/messenger/presence/zone",
            Some(json!({"zone": "2"})),
        ),
        (
            Method::POST,
            "/messenger/presence/heartbeat",
            Some(json!({"device": "toaster"})),
        ),
    ] {
        let (s, e) = node.send(method.clone(), path, &t, body.clone()).await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (400, Some("invalid_argument")),
            "{method} {path} {body:?}: {e}"
        );
        assert!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let r = node
        .http
        .put(node.url("/messenger/presence/zone"))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_argument"
    );
    let (s, e) = node.get("/no/such/route", &t).await;
    assert_eq!((s, e["error"]["code"].as_str()), (404, Some("not_found")));
    let (_, after) = node
        .get(&format!("/messenger/presence/status/{a}"), &t)
        .await;
    assert_eq!(before, after, "refused input changed nothing");
}

async fn bad_frames_get_errors_and_the_connection_stays(kind: Kind) {
    let node = Node::start(kind, "[limits]\nmetadata_bytes = 64").await;
    let a = user("frames");
    let mut ws = node.connect(&token(&a, "user", None), "").await;
    ws.send_text("{not json".into()).await;
    assert_eq!(ws.next().await["code"], "invalid_frame");
    ws.send(json!({"type": "teleport", "id": 3})).await;
    let e = ws.next().await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str(), e["id"].clone()),
        (Some("error"), Some("invalid_frame"), json!(3))
    );
    ws.send(json!({"type": "zone.set", "zone_id": "a b", "id": "z"}))
        .await;
    assert_eq!(ws.next().await["id"], "z");
    ws.send(json!({"type": "status.set", "status": "busy"}))
        .await;
    assert_eq!(ws.next().await["code"], "invalid_frame");
    ws.send(json!({"type": "subscribe", "scopes": ["room:1"]}))
        .await;
    assert_eq!(ws.next().await["code"], "invalid_frame");
    ws.send(json!({"type": "metadata.set", "metadata": {"big": "x".repeat(100)}, "id": 9}))
        .await;
    let e = ws.next().await;
    assert_eq!(
        (e["code"].as_str(), e["id"].clone()),
        (Some("payload_too_large"), json!(9))
    );
    ws.send(json!({"type": "ping", "id": 10})).await;
    assert_eq!(
        ws.next().await,
        json!({"type": "pong", "id": 10}),
        "still open"
    );
    let (_, view) = node
        .get(
            &format!("/messenger/presence/status/{a}"),
            &token(&a, "user", None),
        )
        .await;
    assert_eq!(
        (view["metadata"].clone(), view["version"].clone()),
        (Value::Null, json!(1)),
        "nothing stored"
    );
}

async fn limits_close_with_their_codes(kind: Kind) {
    let node = Node::start(
        kind,
        "[limits]\nframe_bytes = 1024\nsessions_per_user = 2\nframes_per_second = 5\nframe_burst = 5\n[server]\nmax_connections = 5",
    )
    .await;
    let a = user("limits");
    let t = token(&a, "user", None);
    // Frame too big: 1009.
    let mut ws = node.connect(&t, "").await;
    ws.send(json!({"type": "ping", "pad": "x".repeat(2000)}))
        .await;
    assert_eq!(ws.closed_with(Duration::from_secs(5)).await, Some(1009));
    drop(ws);
    // Sessions per user: the third socket is closed with 4009, the others stay.
    let mut one = node.connect(&t, "").await;
    let mut two = node.connect(&t, "").await;
    let mut three = node.ws(&t, "").await;
    assert_eq!(three.closed_with(Duration::from_secs(5)).await, Some(4009));
    two.send(json!({"type": "ping", "id": 1})).await;
    assert_eq!(two.next().await["type"], "pong");
    // Flood at 100 frames a second against a limit of 5: dropped frames are answered with at
    // most one rate_limited error a second, and the connection closes (4008) 5 s after the
    // first frame was dropped — which is when the first error is sent.
    let mut errors: Vec<std::time::Instant> = Vec::new();
    let closed_at;
    let started = std::time::Instant::now();
    let mut sending = true;
    loop {
        if sending && one.try_send(json!({"type": "ping"})).await.is_err() {
            sending = false; // the server closed: stop flooding, read the close.
        }
        match one.next_within(Duration::from_millis(10)).await {
            Ok(Some(f)) if f["code"] == "rate_limited" => errors.push(std::time::Instant::now()),
            Ok(Some(f)) if f.get("closed").is_some() => {
                assert_eq!(f["closed"], 4008);
                closed_at = std::time::Instant::now();
                break;
            }
            Ok(Some(f)) => assert_eq!(f["type"], "pong", "{f}"),
            Ok(None) => {}
            Err(e) => panic!("the connection failed before its close frame: {e}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "flood was never closed"
        );
    }
    assert!(!errors.is_empty(), "dropped frames are answered");
    for pair in errors.windows(2) {
        // The server spaces them by a second; arrival adds a little jitter.
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(900),
            "at most one rate_limited error a second: {:?}",
            pair[1] - pair[0]
        );
    }
    let over = closed_at - errors[0];
    assert!(
        over >= Duration::from_secs(4) && over <= Duration::from_secs(6),
        "closed {over:?} after the first dropped frame; the contract says 5 s"
    );
    // max_connections: with 5, the sixth upgrade answers 503. A closed connection frees its
    // slot once its session is closed in the store: wait until only `two` holds one.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !node.metrics().await.contains("presenced_connections 1\n") {
        assert!(
            std::time::Instant::now() < deadline,
            "closed connections never freed their slots"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut keep = Vec::new();
    for i in 0..4 {
        keep.push(node.ws(&token(&format!("{a}_{i}"), "user", None), "").await);
    }
    let sixth = tokio_tungstenite::connect_async(format!(
        "ws://{}/messenger/ws?token={}",
        node.addr,
        token("x", "user", None)
    ))
    .await;
    match sixth {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
}

async fn shutdown_closes_with_1012(kind: Kind) {
    let node = Node::start(kind, "").await;
    let a = user("bye");
    let mut ws = node.connect(&token(&a, "user", None), "").await;
    node.terminate();
    assert_eq!(ws.closed_with(Duration::from_secs(5)).await, Some(1012));
}

async fn operations_routes(kind: Kind) {
    let node = Node::start(kind, "").await;
    assert_eq!(
        node.http
            .get(node.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        node.http
            .get(node.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let _ws = node.connect(&token(&user("m"), "user", None), "").await;
    let metrics = node.metrics().await;
    for line in [
        "presenced_connections 1",
        "presenced_users{status=\"online\"} 1",
        "presenced_sessions_opened_total 1",
        "presenced_store_call_seconds_count{op=\"open_session\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    let r = node
        .http
        .get(node.url("/messenger/presence/count"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("presenced_refusals_total{reason=\"unauthenticated\"}"),
        "{metrics}"
    );
}

async fn sse_follows_and_resumes(kind: Kind) {
    let node = Node::start(kind, "").await;
    let svc = token("backend", "service", None);
    let a = user("sse");
    let mut feed = node.sse(&svc, "?scope=zone:10", None).await.unwrap();
    let _ws = node.connect(&token(&a, "user", None), "&zone_id=10").await;
    let online = feed.next().await;
    assert_eq!(online.event.as_deref(), Some("presence"));
    assert_eq!(
        (
            online.data["user"]["user_id"].as_str(),
            online.data["user"]["status"].as_str()
        ),
        (Some(a.as_str()), Some("online"))
    );
    let last = online.id.clone().unwrap();
    assert_eq!(online.data["feed_id"].as_str(), Some(last.as_str()));
    drop(feed);
    // Missed while away: Last-Event-ID resumes in order.
    let (s, _) = node
        .send(
            Method::POST,
            &format!("/messenger/presence/away?user_id={a}"),
            &svc,
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = node
        .send(
            Method::PUT,
            "/messenger/presence/zone",
            &svc,
            Some(json!({"zone_id": "11", "user_id": a})),
        )
        .await;
    assert_eq!(s, 200);
    let mut feed = node.sse(&svc, "?scope=zone:10", Some(&last)).await.unwrap();
    assert_eq!(feed.next().await.data["user"]["status"], "away");
    let moved = feed.next().await.data;
    assert_eq!(
        (
            moved["prev_zone_id"].as_str(),
            moved["user"]["zone_id"].as_str()
        ),
        (Some("10"), Some("11")),
        "leaving the zone is its event"
    );
    // Bad parameters are refused.
    assert_eq!(
        node.sse(&svc, "?scope=room:1", None).await.err().unwrap().0,
        400
    );
    assert_eq!(
        node.sse(&svc, "?after=yesterday", None)
            .await
            .err()
            .unwrap()
            .0,
        400
    );
}

async fn aged_out(kind: Kind) {
    let node = Node::start(kind, "[store]\nfeed_max_len = 5").await;
    let svc = token("backend", "service", None);
    let a = user("old");
    let mut ws = node.ws(&token(&a, "user", None), "").await;
    let first = ws.next().await;
    assert_eq!(first["presence"]["version"], 1);
    let mut feed = node.sse(&svc, "", None).await.unwrap();
    let (s, _) = node
        .send(
            Method::PUT,
            "/messenger/presence/zone",
            &svc,
            Some(json!({"zone_id": "0", "user_id": a})),
        )
        .await;
    assert_eq!(s, 200);
    let old = feed.next().await.id.unwrap();
    for z in 1..10 {
        let (s, _) = node
            .send(
                Method::PUT,
                "/messenger/presence/zone",
                &svc,
                Some(json!({"zone_id": z.to_string(), "user_id": a})),
            )
            .await;
        assert_eq!(s, 200);
    }
    let mut feed = node
        .sse(&svc, &format!("?after={old}"), None)
        .await
        .unwrap();
    let snap = feed.next().await;
    assert_eq!(snap.event.as_deref(), Some("snapshot"));
    assert_eq!(snap.data["reset"], true);
    let mut watcher = node.connect(&svc, "").await;
    let snap = watcher
        .subscribe(json!({"type": "subscribe", "users": [a], "after": old}))
        .await;
    assert_eq!(snap["reset"], true);
    assert_eq!(snap["users"][&a]["zone_id"], "9", "the current state");
}

async fn public_keys() {
    let dir = std::env::temp_dir().join(user("keys"));
    std::fs::create_dir_all(&dir).unwrap();
    for (alg, genargs) in [
        (
            jsonwebtoken::Algorithm::RS256,
            vec!["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        ),
        (
            jsonwebtoken::Algorithm::ES256,
            vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        ),
    ] {
        let private = dir.join(format!("{alg:?}.key"));
        let public = dir.join(format!("{alg:?}.pub"));
        let ok = std::process::Command::new("openssl")
            .arg("genpkey")
            .args(&genargs)
            .arg("-out")
            .arg(&private)
            .status()
            .unwrap();
        assert!(ok.success());
        let ok = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .unwrap();
        assert!(ok.success());
        let node = Node::start(
            Kind::Memory,
            &format!(
                "[auth]\njwt_secret = \"\"\njwt_public_key_file = \"{}\"",
                public.display()
            ),
        )
        .await;
        let pem = std::fs::read(&private).unwrap();
        let key = match alg {
            jsonwebtoken::Algorithm::RS256 => {
                jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap()
            }
            _ => jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        let good = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(alg),
            &json!({"sub": "1", "exp": 4_000_000_000u64}),
            &key,
        )
        .unwrap();
        let (s, _) = node.get("/messenger/presence/count", &good).await;
        assert_eq!(s, 200, "{alg:?}");
        // An HS256 token signed with the public key's bytes (the classic confusion) is refused.
        let (s, _) = node
            .get("/messenger/presence/count", &token("1", "user", None))
            .await;
        assert_eq!(s, 401, "{alg:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

async fn tenant_isolation_hides_other_orgs(kind: Kind) {
    let node = Node::start(kind, "[auth]\ntenant_isolation = true").await;
    let (mine, theirs) = (user("mine"), user("theirs"));
    let mut a = node
        .ws(&token(&mine, "user", Some("100")), "&org_id=100&zone_id=5")
        .await;
    a.next().await;
    let mut b = node
        .ws(
            &token(&theirs, "user", Some("200")),
            "&org_id=200&zone_id=5",
        )
        .await;
    b.next().await;
    let me = token(&user("viewer"), "user", Some("100"));
    let (s, _) = node
        .get(&format!("/messenger/presence/status/{theirs}"), &me)
        .await;
    assert_eq!(s, 404, "another org's user is not found");
    let (s, _) = node
        .get(&format!("/messenger/presence/status/{mine}"), &me)
        .await;
    assert_eq!(s, 200);
    let (s, page) = node.get("/messenger/presence/online", &me).await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = page["online_users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [mine.as_str()]);
    assert_eq!(page["count"], 1, "the count is of the caller's org only");
    let (s, count) = node.get("/messenger/presence/count", &me).await;
    assert_eq!((s, &count["global"]), (200, &json!(1)), "{count}");
    // A zone spans orgs, and the store keeps no per-org zone index: a confined token is
    // refused zone queries rather than shown another org's users in a count.
    for path in [
        "/messenger/presence/online?zone_id=5",
        "/messenger/presence/count?zone_id=5",
    ] {
        let (s, body) = node.get(path, &me).await;
        assert_eq!(
            (s, &body["error"]["code"]),
            (403, &json!("permission_denied")),
            "{path}"
        );
    }
    let (s, _) = node.get("/messenger/presence/online?org_id=200", &me).await;
    assert_eq!(s, 404);
    // A confined token places itself only in its own org.
    let (s, _) = node
        .send(
            reqwest::Method::PUT,
            "/messenger/presence/org",
            &me,
            Some(json!({"org_id": "200"})),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = node
        .send(
            reqwest::Method::POST,
            "/messenger/presence/heartbeat",
            &me,
            Some(json!({"org_id": "200"})),
        )
        .await;
    assert_eq!(s, 403);
    let refused = tokio_tungstenite::connect_async(format!(
        "ws://{}/messenger/ws?token={me}&org_id=200",
        node.addr
    ))
    .await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(refused)) = refused else {
        panic!("the upgrade must be refused");
    };
    assert_eq!(refused.status().as_u16(), 403, "refused before the upgrade");
    a.send(json!({"type": "org.set", "org_id": "200", "id": 1}))
        .await;
    let reply = a.until(|f| f["id"] == 1).await;
    assert_eq!(reply["code"], "permission_denied", "{reply}");
    let (_, view) = node
        .get(&format!("/messenger/presence/status/{mine}"), &me)
        .await;
    assert_eq!(view["org_id"], "100", "a refused move changes nothing");
    // A user who leaves the org is seen by it as gone, and nothing of where they went.
    let svc = token("svc", "service", None);
    let mut watcher = node.connect(&me, "").await;
    watcher
        .subscribe(json!({"type": "subscribe", "scopes": ["global"]}))
        .await;
    let (s, _) = node
        .send(
            Method::PUT,
            "/messenger/presence/org",
            &svc,
            Some(json!({"org_id": "200", "user_id": mine})),
        )
        .await;
    assert_eq!(s, 200);
    let left = watcher.until(|f| f["type"] == "presence").await;
    assert_eq!(left["user"]["user_id"], mine.as_str());
    assert_eq!(
        (
            &left["user"]["status"],
            &left["user"]["org_id"],
            &left["user"]["zone_id"]
        ),
        (&json!("offline"), &Value::Null, &Value::Null),
        "{left}"
    );
    assert_eq!(left["prev_org_id"], "100");
    // A service token sees everyone (the two users and the watcher).
    let (_, page) = node.get("/messenger/presence/online", &svc).await;
    assert_eq!(page["count"], 3);
    let (_, count) = node.get("/messenger/presence/count?zone_id=5", &svc).await;
    assert_eq!((&count["global"], &count["zone"]), (&json!(3), &json!(2)));
}

async fn a_subscriber_that_stops_reading_is_closed(kind: Kind) {
    let limits = "[limits]\noutbound_queue = 4\nmetadata_bytes = 15000\nframes_per_second = 100000\nframe_burst = 100000";
    let node = Node::start(kind, limits).await;
    let a = user("busy");
    let mut writer = node.connect(&token(&a, "user", None), "").await;
    let mut lazy = node.connect(&token(&user("lazy"), "user", None), "").await;
    lazy.subscribe(json!({"type": "subscribe", "users": [a], "id": 1}))
        .await;
    // ~14 KB events while the subscriber reads nothing: the socket buffers fill (a few MB on
    // loopback), then its queue of 4, and the node closes it rather than buffer more.
    let pad = "x".repeat(14_000);
    for i in 0..3000 {
        writer
            .send(json!({"type": "metadata.set", "metadata": {"n": i, "pad": pad}}))
            .await;
    }
    assert_eq!(lazy.closed_with(Duration::from_secs(20)).await, Some(4008));
    // The writer was never held back.
    writer.send(json!({"type": "ping", "id": "w"})).await;
    assert_eq!(writer.until(|f| f["type"] == "pong").await["id"], "w");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_lists_the_routes() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let node = Node::start(Kind::Memory, "").await;
        let doc: Value = node
            .http
            .get(node.url("/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for path in [
            "/messenger/presence/online",
            "/messenger/presence/count",
            "/messenger/presence/status/{user_id}",
            "/messenger/presence/status/batch",
            "/messenger/presence/away",
            "/messenger/presence/activity",
            "/messenger/presence/heartbeat",
            "/messenger/presence/zone",
            "/messenger/presence/org",
            "/messenger/presence/events",
            "/messenger/presence/typing/{conversation_id}",
            "/messenger/presence/sessions/{user_id}",
            "/messenger/presence/sessions/{user_id}/{session_id}",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} in the document");
        }
        assert!(
            doc["paths"]["/messenger/presence/sessions/{user_id}/{session_id}"]["delete"]
                .is_object()
        );
        let entry = &doc["components"]["schemas"]["SessionEntry"]["properties"];
        for field in [
            "session_id",
            "device",
            "node_id",
            "connected_at",
            "last_activity",
        ] {
            assert!(entry[field].is_object(), "SessionEntry.{field}");
        }
        let per_user = entry["last_activity"]["description"].as_str().unwrap_or("");
        assert!(per_user.contains("per user"), "{per_user}");
        let view = &doc["components"]["schemas"]["PresenceView"]["properties"];
        for field in [
            "user_id",
            "status",
            "away_reason",
            "last_activity",
            "devices",
            "version",
            "updated_at",
        ] {
            assert!(view[field].is_object(), "PresenceView.{field}");
        }
    })
    .await
    .expect("test timed out")
}

#[test]
fn a_bad_setting_stops_the_node_naming_it() {
    for (args, env, setting) in [
        (
            vec!["--set", "limits.frame_bytes=0"],
            None,
            "limits.frame_bytes",
        ),
        (
            vec!["--set", "presence.away_after=soon"],
            None,
            "away_after",
        ),
        (vec!["--listen", "not-an-address"], None, "server.listen"),
        (
            vec![],
            Some(("PRESENCE_LIMITS__BATCH_IDS", "0")),
            "limits.batch_ids",
        ),
        (vec!["--set", "server.surprise=1"], None, "surprise"),
    ] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_presenced"));
        cmd.arg("serve")
            .args(&args)
            .env("PRESENCE_AUTH__JWT_SECRET", SECRET);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{args:?} should not start");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(setting), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_answers_in_the_error_shape() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let node = Node::start(Kind::Memory, "").await;

        let r = node
            .http
            .delete(node.url("/messenger/presence/count"))
            .bearer_auth(token("1", "user", None))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "invalid_argument"
        );
    })
    .await
    .expect("test timed out")
}

async fn second_sessions_and_manual_away_as_a_client_sees_them(kind: Kind) {
    let node = Node::start(kind, "").await;
    let a = user("tabs");
    let t = token(&a, "user", None);
    let mut watcher = node.connect(&token(&user("w"), "user", None), "").await;
    watcher
        .subscribe(json!({"type": "subscribe", "users": [a]}))
        .await;
    let mut first = node.connect(&t, "&device=web").await;
    watcher.until(|f| is_event(f, &a, "online")).await;
    // Another tab on the same kind of device: nothing to tell.
    let _second = node.connect(&t, "&device=web").await;
    watcher
        .assert_quiet(
            Duration::from_millis(500),
            "a second web tab changes nothing",
        )
        .await;
    // A phone: the device set changed.
    let _phone = node.connect(&t, "&device=mobile").await;
    let e = watcher.until(|f| f["type"] == "presence").await;
    assert_eq!(e["user"]["devices"], json!(["web", "mobile"]));
    // Manual away sticks through activity; activity still moves last_activity.
    first
        .send(json!({"type": "status.set", "status": "away", "id": 1}))
        .await;
    watcher.until(|f| is_event(f, &a, "away")).await;
    let (_, before) = node
        .get(&format!("/messenger/presence/status/{a}"), &t)
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    first.send(json!({"type": "activity"})).await;
    watcher
        .assert_quiet(Duration::from_millis(500), "still away, no event")
        .await;
    let (_, after) = node
        .get(&format!("/messenger/presence/status/{a}"), &t)
        .await;
    assert_eq!(after["status"], "away");
    assert!(
        after["last_activity"].as_str() > before["last_activity"].as_str(),
        "{before} {after}"
    );
}

async fn websocket_connects_share_the_rest_budget(kind: Kind) {
    let node = Node::start(kind, "[limits]\nrest_per_second = 5\nrest_burst = 10").await;
    let t = token(&user("reconnector"), "user", None);
    let mut refused = None;
    for i in 0..30 {
        let url = format!("ws://{}/messenger/ws?token={t}", node.addr);
        match tokio_tungstenite::connect_async(url).await {
            Ok((ws, _)) => drop(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                refused = Some((i, r.status().as_u16()));
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let (at, status) = refused.expect("a reconnect loop is refused");
    assert_eq!(status, 429);
    assert!(
        at >= 10,
        "the burst of 10 connects went through, refused at {at}"
    );
}

async fn history_inactive_and_nearby_over_rest(kind: Kind) {
    let node = Node::start(kind, "").await;
    let (a, b, gone) = (user("near"), user("far"), user("gone"));
    let (ta, tb, tg) = (
        token(&a, "user", None),
        token(&b, "user", None),
        token(&gone, "user", None),
    );
    let service = token("backend", "service", None);
    let _wa = node.connect(&ta, "").await;
    let _wb = node.connect(&tb, "").await;
    let wg = node.connect(&tg, "").await;

    // Sharing a location answers the view, which does not show it.
    let put = |t: &str, body: Value| {
        let (t, node) = (t.to_string(), &node);
        async move {
            node.send(Method::PUT, "/messenger/presence/location", &t, Some(body))
                .await
        }
    };
    let (s, view) = put(&ta, json!({"lat": 52.5210, "lon": 13.405})).await;
    assert_eq!((s, view["user_id"].as_str()), (200, Some(a.as_str())));
    assert!(view.get("lat").is_none() && view.get("location").is_none());
    let (s, _) = put(&tb, json!({"lat": 52.530, "lon": 13.405})).await;
    assert_eq!(s, 200);
    // Stored rounded to limits.location_decimals (3): 52.52049 is 52.520, the point asked.
    let (s, _) = put(
        &service,
        json!({"lat": 52.52049, "lon": 13.40501, "user_id": gone}),
    )
    .await;
    assert_eq!(s, 200, "a service token shares for a user");

    let (s, found) = node
        .get(
            "/messenger/presence/nearby?lat=52.52&lon=13.405&radius_m=5000",
            &tb,
        )
        .await;
    assert_eq!(s, 200, "{found}");
    let ids: Vec<&str> = found["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [gone.as_str(), a.as_str(), b.as_str()],
        "nearest first"
    );
    let d0 = found["users"][0]["distance_m"].as_f64().unwrap();
    assert!(
        d0 < 1.0,
        "rounded onto the point asked, give or take its geohash cell: {d0}"
    );
    let d = found["users"][1]["distance_m"].as_f64().unwrap();
    assert!((100.0..125.0).contains(&d), "about 111 m: {d}");
    assert_eq!(
        found["users"][1]["status"], "online",
        "each entry is a view"
    );
    let (_, found) = node
        .get(
            "/messenger/presence/nearby?lat=52.52&lon=13.405&radius_m=500&limit=1",
            &tb,
        )
        .await;
    assert_eq!(found["users"].as_array().unwrap().len(), 1);

    // Going offline leaves the results, and a location is refused while offline.
    drop(wg);
    loop {
        let (_, v) = node
            .get(&format!("/messenger/presence/status/{gone}"), &service)
            .await;
        if v["status"] == "offline" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, found) = node
        .get(
            "/messenger/presence/nearby?lat=52.52&lon=13.405&radius_m=5000",
            &tb,
        )
        .await;
    let ids: Vec<&str> = found["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a.as_str(), b.as_str()]);
    let (s, e) = put(&tg, json!({"lat": 52.52, "lon": 13.405})).await;
    assert_eq!((s, e["error"]["code"].as_str()), (409, Some("conflict")));
    let (s, _) = put(
        &token(&user("never"), "user", None),
        json!({"lat": 1, "lon": 1}),
    )
    .await;
    assert_eq!(s, 404, "a user never seen has no presence to share it with");
    let (s, _) = node
        .send(Method::DELETE, "/messenger/presence/location", &ta, None)
        .await;
    assert_eq!(s, 200);
    let (_, found) = node
        .get(
            "/messenger/presence/nearby?lat=52.52&lon=13.405&radius_m=5000",
            &tb,
        )
        .await;
    assert_eq!(found["users"].as_array().unwrap().len(), 1, "{found}");

    // Bad input: a clear error, nothing changed.
    for (body, why) in [
        (
            json!({"lat": 86, "lon": 0}),
            "beyond what Redis GEO indexes",
        ),
        (json!({"lat": 0, "lon": 181}), "lon out of range"),
        (json!({"lat": "x", "lon": 0}), "not a number"),
        (json!({"lat": 0}), "lon missing"),
        (json!({"lat": 0, "lon": 0, "alt": 3}), "unknown field"),
    ] {
        let (s, e) = put(&ta, body).await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (400, Some("invalid_argument")),
            "{why}"
        );
    }
    // Each query a clear 400 `invalid_argument`.
    let refused = |path: String, token: String, queries: &'static [&'static str]| {
        let node = &node;
        async move {
            for q in queries {
                let (s, e) = node.get(&format!("{path}?{q}"), &token).await;
                assert_eq!(
                    (s, e["error"]["code"].as_str()),
                    (400, Some("invalid_argument")),
                    "{path}?{q}"
                );
            }
        }
    };
    refused(
        "/messenger/presence/nearby".into(),
        tb.clone(),
        &[
            "lat=52&lon=13",
            "lat=52&lon=13&radius_m=0",
            "lat=52&lon=13&radius_m=50001",
            "lat=52&lon=13&radius_m=NaN",
            "lat=91&lon=13&radius_m=10",
            "lon=13&radius_m=10",
            "lat=52&lon=13&radius_m=10&limit=0",
            "lat=52&lon=13&radius_m=10&limit=1001",
        ],
    )
    .await;

    // History: the user's own and the backend's; today counts the presence going on.
    let (s, h) = node
        .get(&format!("/messenger/presence/history/{a}"), &ta)
        .await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["user_id"], a.as_str());
    let days = h["days"].as_array().unwrap();
    assert_eq!(days.len(), 7, "the last 7 days by default");
    assert_eq!(
        days.iter()
            .filter(|d| d["online_seconds"].as_i64().is_some())
            .count(),
        7
    );
    let today = chrono_free_today();
    assert_eq!(days[6]["date"], today.as_str());
    let (s, h) = node
        .get(
            &format!("/messenger/presence/history/{gone}?from={today}&to={today}"),
            &service,
        )
        .await;
    assert_eq!((s, h["days"].as_array().map(Vec::len)), (200, Some(1)));
    let (s, e) = node
        .get(&format!("/messenger/presence/history/{a}"), &tb)
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (403, Some("permission_denied"))
    );
    refused(
        format!("/messenger/presence/history/{a}"),
        ta.clone(),
        &[
            "from=2024-02-30",
            "to=yesterday",
            "from=2024-11-27&to=2024-11-26",
            "from=2024-01-01&to=2024-12-31",
        ],
    )
    .await;

    // Inactive: offline users last seen before now - days, for the backend only.
    let (s, page) = node
        .get("/messenger/presence/inactive?days=0", &service)
        .await;
    assert_eq!(s, 200, "{page}");
    let listed: Vec<&str> = page["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [gone.as_str()], "only the offline user");
    assert!(
        page["users"][0]["last_seen"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(page["next_cursor"], Value::Null);
    let (_, page) = node
        .get("/messenger/presence/inactive?days=1", &service)
        .await;
    assert_eq!(page["users"], json!([]), "nobody offline for a day yet");
    let (s, e) = node.get("/messenger/presence/inactive?days=0", &ta).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (403, Some("permission_denied"))
    );
    refused(
        "/messenger/presence/inactive".into(),
        service.clone(),
        &[
            "",
            "days=-1",
            "days=x",
            "days=0&limit=0",
            "days=0&cursor=!!",
        ],
    )
    .await;
}

/// Today's UTC date, `YYYY-MM-DD`, from the system clock the node also reads.
fn chrono_free_today() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    presence_core::history::format_day(presence_core::history::day_of(now))
}

async fn nearby_keeps_a_confined_token_to_its_org(kind: Kind) {
    let node = Node::start(kind, "[auth]\ntenant_isolation = true\n").await;
    let (a, b) = (user("org_a"), user("org_b"));
    let ta = token(&a, "user", Some("100"));
    let tb = token(&b, "user", Some("200"));
    let _wa = node.connect(&ta, "&org_id=100").await;
    let _wb = node.connect(&tb, "&org_id=200").await;
    for t in [&ta, &tb] {
        let (s, _) = node
            .send(
                Method::PUT,
                "/messenger/presence/location",
                t,
                Some(json!({"lat": 48.0, "lon": 2.0})),
            )
            .await;
        assert_eq!(s, 200);
    }
    let q = "/messenger/presence/nearby?lat=48&lon=2&radius_m=100";
    let ids = |v: &Value| -> Vec<String> {
        v["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["user_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&node.get(q, &ta).await.1), std::slice::from_ref(&a));
    assert_eq!(ids(&node.get(q, &tb).await.1), std::slice::from_ref(&b));
    let mut both = ids(&node.get(q, &token("svc", "service", None)).await.1);
    both.sort();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(both, expected, "a service token is never confined");
}

/// Runs `presenced ARGS` to the end (at most 20 s): exit code, stdout, stderr.
async fn presenced_cli(args: Vec<String>) -> (i32, String, String) {
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_presenced"))
            .args(&args)
            .env_remove("PRESENCE_TOKEN")
            .env_remove("PRESENCE_URL")
            .output()
            .unwrap()
    });
    let out = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the command ends")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn client_commands() {
    let node = Node::start(Kind::Memory, "").await;
    let u = user("cli");
    let t = token(&u, "user", None);
    let _ws = node.ws(&t, "&zone_id=10").await;
    let url = node.url("");
    let args = |rest: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
        a.extend(["--url".into(), url.clone(), "--token".into(), t.clone()]);
        a
    };

    let (code, out, _) = presenced_cli(args(&["status", &u])).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("USER"), "a table: {out}");
    assert!(out.contains(&u) && out.contains("online"), "{out}");
    let (code, out, _) = presenced_cli(args(&["status", &u, "--json"])).await;
    assert_eq!(code, 0);
    let view: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (view["user_id"].as_str(), view["zone_id"].as_str()),
        (Some(u.as_str()), Some("10"))
    );
    let (code, _, err) = presenced_cli(args(&["status", "nobody"])).await;
    assert_eq!(code, 3, "no presence: {err}");

    let (code, out, _) = presenced_cli(args(&["online", "--zone", "10", "--json"])).await;
    assert_eq!(code, 0);
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["count"], 1);
    assert_eq!(page["online_users"][0]["user_id"], u.as_str());
    let (code, out, _) = presenced_cli(args(&["online"])).await;
    assert_eq!(code, 0);
    assert!(out.contains("1 shown of 1"), "{out}");
    let (code, out, _) = presenced_cli(args(&["count", "--zone", "10", "--json"])).await;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"global": 1, "zone": 1, "org": null})
    );

    // Failures say what to do, with exit 1; bad usage is clap's 2.
    let (code, _, err) = presenced_cli(vec!["count".into(), "--url".into(), url.clone()]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("no token") && err.contains("presenced token"),
        "{err}"
    );
    let (code, _, err) = presenced_cli(vec![
        "count".into(),
        "--url".into(),
        "http://127.0.0.1:9".into(),
        "--token".into(),
        t.clone(),
    ])
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("is a node running"), "{err}");
    let (code, _, err) = presenced_cli(args(&["online", "--zone", "a b"])).await;
    assert_eq!(code, 1);
    assert!(err.contains("invalid_argument"), "{err}");
    let (code, _, _) = presenced_cli(args(&["online", "--status", "sleepy"])).await;
    assert_eq!(code, 2);

    // watch: one JSON line per event, as it happens.
    let mut watch = std::process::Command::new(env!("CARGO_BIN_EXE_presenced"))
        .args(args(&["watch", "--scope", "zone:10", "--json"]))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // The stream is open once the node counts it; then a change shows up.
    let mut line = None;
    for _ in 0..100 {
        node.send(Method::POST, "/messenger/presence/away", &t, None)
            .await;
        node.send(Method::POST, "/messenger/presence/online", &t, None)
            .await;
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            line = Some(l);
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let event: Value = serde_json::from_str(&line.expect("an event line")).unwrap();
    assert_eq!(event["type"], "presence");
    assert_eq!(event["user"]["user_id"], u.as_str());
}

async fn memory_snapshots() {
    let dir = std::env::temp_dir().join(user("snapshots"));
    let extra = format!("[store]\ndata_dir = \"{}\"\n", dir.display());
    let mut node = Node::start(Kind::Memory, &extra).await;
    let (u, v) = (user("kept"), user("private"));
    let (tu, tv) = (token(&u, "user", None), token(&v, "user", None));
    let ws = node.connect(&tu, "&zone_id=10").await;
    let _wv = node.connect(&tv, "").await;
    let (s, _) = node
        .send(
            Method::PUT,
            "/messenger/presence/privacy",
            &tv,
            Some(json!({"last_seen": "hidden"})),
        )
        .await;
    assert_eq!(s, 200);
    drop(ws);
    let offline = loop {
        let (_, view) = node
            .get(&format!("/messenger/presence/status/{u}"), &tv)
            .await;
        if view["status"] == "offline" {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // A graceful stop writes a last snapshot.
    node.terminate();
    node.wait_exit();
    let again = Node::start(Kind::Memory, &extra).await;
    let service = token("svc", "service", None);
    let (s, view) = again
        .get(&format!("/messenger/presence/status/{u}"), &tv)
        .await;
    assert_eq!(s, 200, "the record outlived the process: {view}");
    assert_eq!(view, offline, "as it was");
    let (_, private) = again
        .get(&format!("/messenger/presence/status/{v}"), &tu)
        .await;
    assert_eq!(
        private["status"], "offline",
        "present users left with the process"
    );
    assert_eq!(
        private["last_seen"],
        Value::Null,
        "the privacy setting still applies"
    );
    let (_, truth) = again
        .get(&format!("/messenger/presence/status/{v}"), &service)
        .await;
    assert!(truth["last_seen"].is_string(), "{truth}");
    let (s, h) = again
        .get(&format!("/messenger/presence/history/{u}"), &service)
        .await;
    assert_eq!(s, 200);
    let days = h["days"].as_array().unwrap();
    assert!(days.len() == 7, "{h}");
    let _ = std::fs::remove_dir_all(&dir);
}
