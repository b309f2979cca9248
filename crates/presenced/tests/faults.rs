//! Faults between processes (SPEC §10, "Hostile clients and messy faults"): a Redis paused,
//! made read-only or restarted under live sockets, a node paused past its lease. Real
//! binaries on a Redis of the test's own, each test bounded in time.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::json;

/// Short store timeouts, so a paused Redis shows as failures within a test's patience.
const FAULTS: &str = "[presence]\naway_after = \"60s\"\noffline_grace = \"1s\"";

async fn within<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test timed out")
}

/// `n` nodes sharing `redis` and one key prefix.
async fn nodes_on(redis: &OwnRedis, n: usize) -> Vec<Node> {
    nodes_with_prefix(redis, n, &user("faults")).await
}

/// `n` nodes sharing `redis`, their keys under `{prefix}:`.
async fn nodes_with_prefix(redis: &OwnRedis, n: usize, prefix: &str) -> Vec<Node> {
    let config = format!(
        "{FAULTS}\n[store]\nredis_url = \"{}\"\ncommand_timeout = \"300ms\"",
        redis.url()
    );
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(Node::start_on(Kind::Redis, Some(prefix), &config).await);
    }
    nodes
}

fn is_event(f: &serde_json::Value, user: &str, status: &str) -> bool {
    f["type"] == "presence" && f["user"]["user_id"] == user && f["user"]["status"] == status
}

/// The next presence event of `user`, skipping others, within `limit`.
async fn event_of(watcher: &mut Client, user: &str, limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match watcher.next_within(left).await {
            Ok(Some(f)) if f["type"] == "presence" && f["user"]["user_id"] == user => return f,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("no event for {user} within {limit:?}"),
            Err(e) => panic!("the watcher failed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_closed_while_redis_was_down_goes_offline_once_redis_is_back() {
    within(async {
        let mut redis = OwnRedis::start().await;
        let nodes = nodes_on(&redis, 1).await;
        let a = user("blip");
        let svc = token("svc", "service", None);
        let tab = nodes[0].connect(&token(&a, "user", None), "").await;
        // Redis goes away (its data saved); the user closes the tab meanwhile, so the node's
        // close fails; Redis comes back with the session still in it.
        redis.shutdown_saving();
        drop(tab);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        redis.restart_with_data().await;
        // The node retries the close at its lease renewals (every second here), and the
        // offline grace follows: the user does not stay online as a ghost.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (s, v) = nodes[0]
                .get(&format!("/messenger/presence/status/{a}"), &svc)
                .await;
            if s == 200 && v["status"] == "offline" {
                break;
            }
            assert!(Instant::now() < deadline, "still {s} {v}: a ghost session");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_closed_while_redis_was_paused_goes_offline_once_redis_is_back() {
    within(async {
        let redis = OwnRedis::start().await;
        let nodes = nodes_on(&redis, 1).await;
        let a = user("pause");
        let mut watcher = nodes[0].connect(&token("svc", "service", None), "").await;
        watcher
            .subscribe(json!({"type": "subscribe", "users": [a]}))
            .await;
        let tab = nodes[0].connect(&token(&a, "user", None), "").await;
        assert!(is_event(
            &event_of(&mut watcher, &a, Duration::from_secs(5)).await,
            &a,
            "online"
        ));
        // Redis freezes; the user closes the tab; the node's close times out (it may still
        // run once Redis thaws: closes are safe to repeat).
        redis.pause();
        drop(tab);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        redis.resume();
        let off = event_of(&mut watcher, &a, Duration::from_secs(15)).await;
        assert!(is_event(&off, &a, "offline"), "{off}");
        watcher
            .assert_quiet(
                Duration::from_millis(1500),
                "one offline event, nothing after",
            )
            .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_lease_is_reaped_then_reasserts_its_live_socket() {
    within(async {
        let redis = OwnRedis::start().await;
        let nodes = nodes_on(&redis, 2).await;
        let a = user("stalled");
        let mut watcher = nodes[1].connect(&token("svc", "service", None), "").await;
        watcher
            .subscribe(json!({"type": "subscribe", "users": [a]}))
            .await;
        let mut tab = nodes[0].connect(&token(&a, "user", None), "").await;
        assert!(is_event(
            &event_of(&mut watcher, &a, Duration::from_secs(5)).await,
            &a,
            "online"
        ));
        // Node 0 freezes past its lease (3 s): node 1 reaps its sessions.
        nodes[0].pause();
        let off = event_of(&mut watcher, &a, Duration::from_secs(15)).await;
        assert!(is_event(&off, &a, "offline"), "{off}");
        // Node 0 wakes up: its renewal learns the lease was lost, and it re-asserts the
        // socket it still holds. The client never noticed.
        nodes[0].resume();
        let back = event_of(&mut watcher, &a, Duration::from_secs(15)).await;
        assert!(is_event(&back, &a, "online"), "{back}");
        tab.send(json!({"type": "ping", "id": "still"})).await;
        assert_eq!(tab.until(|f| f["type"] == "pong").await["id"], "still");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_redis_answers_503_and_nothing_is_lost_after() {
    within(async {
        let redis = OwnRedis::start().await;
        let nodes = nodes_on(&redis, 1).await;
        let a = user("readonly");
        let t = token(&a, "user", None);
        let _tab = nodes[0].connect(&t, "&zone_id=1").await;
        // A failover in progress: the primary became a replica (of nobody reachable).
        assert_eq!(redis.cli(&["REPLICAOF", "127.0.0.1", "1"]), "OK");
        let (s, e) = nodes[0]
            .send(
                Method::PUT,
                "/messenger/presence/zone",
                &t,
                Some(json!({"zone_id": "2"})),
            )
            .await;
        assert_eq!(
            (s, &e["error"]["code"]),
            (503, &json!("unavailable")),
            "{e}"
        );
        assert_eq!(redis.cli(&["REPLICAOF", "NO", "ONE"]), "OK");
        let (s, v) = nodes[0]
            .send(
                Method::PUT,
                "/messenger/presence/zone",
                &t,
                Some(json!({"zone_id": "2"})),
            )
            .await;
        assert_eq!((s, &v["zone_id"]), (200, &json!("2")), "{v}");
        assert_eq!(
            v["status"], "online",
            "the session survived the read-only spell"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_that_fails_half_way_leaves_nothing_subscribed() {
    within(async {
        let redis = OwnRedis::start().await;
        let nodes = nodes_on(&redis, 1).await;
        let a = user("half");
        let svc = token("svc", "service", None);
        let _tab = nodes[0].connect(&token(&a, "user", None), "").await;
        let mut watcher = nodes[0].connect(&svc, "").await;
        redis.pause();
        watcher
            .send(json!({"type": "subscribe", "users": [a], "id": 1}))
            .await;
        let e = watcher.until(|f| f["id"] == 1).await;
        assert_eq!(
            (&e["type"], &e["code"]),
            (&json!("error"), &json!("unavailable")),
            "{e}"
        );
        redis.resume();
        let (s, _) = nodes[0]
            .send(
                Method::PUT,
                "/messenger/presence/zone",
                &svc,
                Some(json!({"zone_id": "9", "user_id": a})),
            )
            .await;
        assert_eq!(s, 200);
        watcher
            .assert_quiet(
                Duration::from_millis(800),
                "the failed subscribe followed nothing",
            )
            .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_whose_answer_was_lost_does_not_leave_a_session_behind() {
    within(async {
        let redis = OwnRedis::start().await;
        let nodes = nodes_on(&redis, 1).await;
        let a = user("lost");
        let svc = token("svc", "service", None);
        // Redis freezes: the open is sent, its answer times out, the socket closes with 1013.
        redis.pause();
        let mut tab = nodes[0].ws(&token(&a, "user", None), "").await;
        assert_eq!(tab.closed_with(Duration::from_secs(5)).await, Some(1013));
        // Redis thaws and runs the queued open: the node closes that session again.
        redis.resume();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (s, v) = nodes[0]
                .get(&format!("/messenger/presence/status/{a}"), &svc)
                .await;
            if s == 404 || v["status"] == "offline" {
                break;
            }
            assert!(Instant::now() < deadline, "still {s} {v}: a ghost session");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_reported_while_redis_was_paused_is_written_once_it_is_back() {
    within(async {
        let redis = OwnRedis::start().await;
        let nodes = nodes_on(&redis, 1).await;
        let a = user("busy");
        let t = token(&a, "user", None);
        let svc = token("svc", "service", None);
        let _tab = nodes[0].connect(&t, "").await;
        let status = |v: serde_json::Value| v["last_activity"].as_str().unwrap().to_string();
        let (_, before) = nodes[0]
            .get(&format!("/messenger/presence/status/{a}"), &svc)
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Reported while Redis is frozen: answered 204 (no store call), and the flushes fail.
        redis.pause();
        let r = nodes[0]
            .http
            .post(nodes[0].url("/messenger/presence/activity"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        tokio::time::sleep(Duration::from_millis(800)).await;
        redis.resume();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, now) = nodes[0]
                .get(&format!("/messenger/presence/status/{a}"), &svc)
                .await;
            if status(now.clone()) > status(before.clone()) {
                break;
            }
            assert!(Instant::now() < deadline, "the activity was lost: {now}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_from_before_redis_lost_its_data_is_a_reset() {
    within(async {
        let mut redis = OwnRedis::start().await;
        let nodes = nodes_on(&redis, 1).await;
        let a = user("amnesia");
        let svc = token("svc", "service", None);
        let _tab = nodes[0]
            .connect(&token(&a, "user", None), "&zone_id=4")
            .await;
        let mut watcher = nodes[0].connect(&svc, "").await;
        let snap = watcher
            .subscribe(json!({"type": "subscribe", "users": [a]}))
            .await;
        let before = snap["feed_id"].as_str().unwrap().to_string();
        drop(watcher);
        // A move over REST, which the re-assert must remember (not the socket's zone 4).
        let (s, _) = nodes[0]
            .send(
                Method::PUT,
                "/messenger/presence/zone",
                &svc,
                Some(json!({"zone_id": "6", "user_id": a})),
            )
            .await;
        assert_eq!(s, 200);
        // Redis restarts empty; the node re-asserts its sessions (new events, new feed).
        redis.restart().await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (s, v) = nodes[0]
                .get(&format!("/messenger/presence/status/{a}"), &svc)
                .await;
            if s == 200 && v["status"] == "online" {
                break;
            }
            assert!(Instant::now() < deadline, "never re-asserted: {s} {v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut watcher = nodes[0].connect(&svc, "").await;
        let snap = watcher
            .subscribe(json!({"type": "subscribe", "users": [a], "after": before}))
            .await;
        assert_eq!(
            snap["reset"], true,
            "events were lost with the data: {snap}"
        );
        assert_eq!(
            snap["users"][&a]["zone_id"], "6",
            "the current state instead, where the user last moved (over REST)"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_feed_entry_is_skipped_counted_and_delivery_goes_on() {
    within(async {
        let redis = OwnRedis::start().await;
        let prefix = user("junk");
        let nodes = nodes_with_prefix(&redis, 1, &prefix).await;
        let a = user("after_junk");
        let svc = token("svc", "service", None);
        let mut watcher = nodes[0].connect(&svc, "").await;
        watcher
            .subscribe(json!({"type": "subscribe", "users": [a]}))
            .await;
        // A seed-era writer, or a hand-made XADD, puts something into the feed.
        let id = redis.cli(&["XADD", &format!("{prefix}:feed"), "*", "junk", "1"]);
        assert!(id.contains('-'), "{id}");
        let _tab = nodes[0].connect(&token(&a, "user", None), "").await;
        let online = event_of(&mut watcher, &a, Duration::from_secs(5)).await;
        assert!(is_event(&online, &a, "online"), "{online}");
        let metrics = nodes[0].metrics().await;
        assert!(
            metrics.contains("presenced_feed_entries_skipped_total 1"),
            "{metrics}"
        );
    })
    .await
}
