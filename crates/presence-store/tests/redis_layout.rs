//! The Redis keys as an operator sees them with `redis-cli`: the seed's hash and sorted sets,
//! readable as the seed wrote them; the prefix applied to every key; stale entries cleaned.
//!
//! Every test works under a key prefix of its own, so the suite can share a Redis (CI's) and
//! never flushes it. The names below follow the prefix exactly as an unprefixed deployment's
//! keys are named (`{prefix}presence:123` is `presence:123` with the default empty prefix):
//! `the_prefix_goes_before_every_key` shows the prefix is prepended literally and alone.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use presence_core::settings::ms;
use presence_core::*;
use presence_store::{RedisConfig, RedisStore};
use redis::AsyncCommands;

/// A store on the tests' Redis under a fresh prefix, a raw connection, the clock.
async fn prefixed_store() -> (RedisStore, redis::aio::MultiplexedConnection, ManualClock) {
    let mut config = RedisConfig::new(redis_url());
    config.key_prefix = unique_prefix();
    let clock = ManualClock::new(T0);
    let store = RedisStore::connect(
        config,
        node("n1"),
        Arc::new(clock.clone()),
        StoreSettings::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("Redis at {}: {e}", redis_url()));
    (store, raw_redis().await, clock)
}

#[tokio::test]
async fn an_operator_finds_the_seeds_keys_and_fields() {
    let (store, mut raw, clock) = prefixed_store().await;
    let p = store.key_prefix().to_string();
    let key = |name: &str| format!("{p}{name}");
    let open = |user: &str, z: &str, o: &str| OpenSession {
        user: uid(user),
        session: sid("s1"),
        device: DeviceKind::Desktop,
        zone: Some(zone(z)),
        org: Some(org(o)),
        leased: false,
        invisible: false,
    };
    store.open_session(open("123", "10", "100")).await.unwrap();
    let md: Metadata = serde_json::from_str(r#"{"theme": "dark"}"#).unwrap();
    clock.advance(Duration::from_millis(250));
    store
        .apply(&uid("123"), Change::SetMetadata(Some(md)))
        .await
        .unwrap();

    // redis-cli HGETALL presence:123
    let h: HashMap<String, String> = raw.hgetall(key("presence:123")).await.unwrap();
    assert_eq!(h["status"], "online");
    assert_eq!(h["last_activity"], "1732616700.000");
    assert_eq!(h["zone_id"], "10");
    assert_eq!(h["org_id"], "100");
    assert_eq!(
        h["updated_at"], "2024-11-26T10:25:00.250Z",
        "the metadata change"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&h["metadata"]).unwrap(),
        serde_json::json!({"theme": "dark"})
    );
    assert!(!h.contains_key("last_seen"), "online: no last seen");
    // redis-cli ZCARD online:global, and the zone and org sets, scored by last activity.
    for set in ["online:global", "online:zone:10", "online:org:100"] {
        let members: Vec<(String, f64)> = raw.zrange_withscores(key(set), 0, -1).await.unwrap();
        assert_eq!(members, [("123".to_string(), 1_732_616_700.0)], "{set}");
    }
    // Activity moves the scores (the seed's update_activity did not).
    clock.advance(Duration::from_millis(2250));
    store
        .record_activity(&[Activity {
            user: uid("123"),
            at: clock.now_ms(),
        }])
        .await
        .unwrap();
    for set in ["online:global", "online:zone:10", "online:org:100"] {
        let score: Option<f64> = raw.zscore(key(set), "123").await.unwrap();
        assert_eq!(score, Some(1_732_616_702.5), "{set}");
    }
    let la: String = raw
        .hget(key("presence:123"), "last_activity")
        .await
        .unwrap();
    assert_eq!(la, "1732616702.500");

    // Offline after the grace: out of every set, status offline, last seen at the close.
    let settings = StoreSettings::default();
    store.close_session(&uid("123"), &sid("s1")).await.unwrap();
    clock.advance(settings.offline_grace);
    store.renew_node_lease(0).await.unwrap();
    store.sweep().await.unwrap();
    let h: HashMap<String, String> = raw.hgetall(key("presence:123")).await.unwrap();
    assert_eq!(h["status"], "offline");
    assert_eq!(h["last_seen"], "1732616702.500", "seen at the close");
    assert_eq!(h["last_activity"], "1732616702.500");
    assert_eq!(
        h["updated_at"], "2024-11-26T10:25:07.500Z",
        "when the grace ended"
    );
    assert_eq!((h["zone_id"].as_str(), h["org_id"].as_str()), ("10", "100"));
    for set in ["online:global", "online:zone:10", "online:org:100"] {
        let n: u64 = raw.zcard(key(set)).await.unwrap();
        assert_eq!(n, 0, "{set}");
    }
    let seen: Vec<(String, f64)> = raw
        .zrange_withscores(key("last_seen"), 0, -1)
        .await
        .unwrap();
    assert_eq!(
        seen,
        [("123".to_string(), 1_732_616_702.5)],
        "last seen index"
    );
    // The feed is a stream an operator can XRANGE: online, metadata, offline.
    let feed: redis::streams::StreamRangeReply = raw.xrange_all(key("feed")).await.unwrap();
    let got: Vec<(String, String, String)> = feed
        .ids
        .iter()
        .map(|e| {
            let f = |n: &str| e.get::<String>(n).unwrap_or_default();
            (f("u"), f("s"), f("v"))
        })
        .collect();
    let want = [
        ("123", "online", "1"),
        ("123", "online", "2"),
        ("123", "offline", "3"),
    ];
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(u, s, v)| (u.to_string(), s.to_string(), v.to_string()))
        .collect();
    assert_eq!(got, want);
    // No key carries a Redis TTL: expiry is the sweep's job.
    for k in scan_keys(&mut raw, &format!("{p}*")).await {
        let ttl: i64 = raw.ttl(&k).await.unwrap();
        assert_eq!(ttl, -1, "{k} has a TTL");
    }
}

#[tokio::test]
async fn the_prefix_goes_before_every_key() {
    let prefix = format!("tenantA-{}", unique_prefix());
    let mut config = RedisConfig::new(redis_url());
    config.key_prefix = prefix.clone();
    // Ids no other test uses, so every key that names them can be found on a shared Redis.
    let tag = prefix.replace(['-', ':'], "");
    let (user, node_id) = (format!("u{tag}"), format!("n{tag}"));
    let clock = ManualClock::new(T0);
    let store = RedisStore::connect(
        config,
        node(&node_id),
        Arc::new(clock),
        StoreSettings::default(),
    )
    .await
    .unwrap();
    store
        .open_session(OpenSession {
            zone: Some(zone("10")),
            ..request(&user, "s")
        })
        .await
        .unwrap();
    store.sweep().await.unwrap();
    let mut raw = raw_redis().await;
    let key = |name: &str| format!("{prefix}{name}");
    // Every key that names this user or node, anywhere in the keyspace, is under the prefix.
    for pattern in [format!("*{user}*"), format!("*{node_id}*")] {
        let keys = scan_keys(&mut raw, &pattern).await;
        assert!(!keys.is_empty(), "{pattern}");
        for k in keys {
            assert!(k.starts_with(&prefix), "{k} outside the prefix");
        }
    }
    // And the prefixed keys hold what the unprefixed ones would.
    let status: Option<String> = raw
        .hget(key(&format!("presence:{user}")), "status")
        .await
        .unwrap();
    assert_eq!(status.as_deref(), Some("online"));
    for set in ["online:global", "online:zone:10"] {
        let members: Vec<(String, f64)> = raw.zrange_withscores(key(set), 0, -1).await.unwrap();
        assert_eq!(members, [(user.clone(), 1_732_616_700.0)], "{set}");
    }
    let nodes: Vec<(String, i64)> = raw.zrange_withscores(key("nodes"), 0, -1).await.unwrap();
    let lease = T0 + StoreSettings::default().node_lease.as_millis() as i64;
    assert_eq!(nodes, [(node_id.clone(), lease)], "the node's lease, in ms");
    let indexed: Vec<String> = raw
        .lrange(key(&format!("node:{node_id}:users")), 0, -1)
        .await
        .unwrap();
    assert_eq!(indexed, [user.as_str()]);
    let len: u64 = raw.xlen(key("feed")).await.unwrap();
    assert_eq!(len, 1, "one event: online");
}

#[tokio::test]
async fn stale_entries_never_show_and_are_swept() {
    let k = Kit::new(Kind::Redis).await;
    let store = k.redis().unwrap();
    for u in ["1", "2", "3"] {
        k.open_with(&k.store, u, "s", DeviceKind::Web, Some("10"), None)
            .await;
    }
    // An operator deletes a record by hand; its sorted-set entries stay behind.
    let mut raw = raw_redis().await;
    let _: () = raw
        .del(format!("{}presence:2", store.key_prefix()))
        .await
        .unwrap();
    assert_eq!(
        k.list_ids(Scope::Zone(zone("10"))).await,
        ["3", "1"],
        "a list never returns an entry without a record"
    );
    // The list cleaned the zone set it read; the sweep's walk cleans the global set.
    let global = format!("{}online:global", store.key_prefix());
    let n: u64 = raw.zcard(&global).await.unwrap();
    assert_eq!(n, 3, "not yet swept");
    k.store.renew_node_lease(0).await.unwrap();
    // Two stale entries: user 2 in online:global and in this node's index list.
    assert_eq!(k.sweep().await.stale_entries, 2);
    let n: u64 = raw.zcard(&global).await.unwrap();
    assert_eq!(n, 2);
    assert_eq!(k.list_ids(Scope::Global).await, ["3", "1"]);
}

#[tokio::test]
async fn node_index_lists_hold_each_user_once_and_shrink_to_live_users() {
    let k = Kit::with(Kind::Redis, no_grace()).await;
    let store = k.redis().unwrap();
    let mut raw = raw_redis().await;
    let list = format!("{}node:node-a:users", store.key_prefix());
    // A flapping user reconnects many times; two tabs of one user; 50 users who leave.
    for i in 0..20 {
        k.open("flappy", &format!("s{i}")).await;
        k.close("flappy", &format!("s{i}")).await;
    }
    k.open("flappy", "last").await;
    k.open("tabs", "a").await;
    k.open("tabs", "b").await;
    for i in 0..50 {
        k.open(&format!("gone{i}"), "s").await;
        k.close(&format!("gone{i}"), "s").await;
    }
    let len: usize = raw.llen(&list).await.unwrap();
    assert_eq!(len, 52, "one entry per user, however often they reconnect");
    // The mark `ni` names only the nodes listing a user beyond those of its sessions: none for
    // a user online through node-a, node-a for one who left it (until the sweep drops them).
    let marks = raw.clone();
    let ni = |user: &str| {
        let mut raw = marks.clone();
        let key = format!("{}presence:{user}", store.key_prefix());
        async move {
            let v: Option<String> = raw.hget(key, "ni").await.unwrap();
            v
        }
    };
    assert_eq!(ni("tabs").await, None);
    assert_eq!(ni("gone7").await.as_deref(), Some("node-a"));
    k.sweep().await;
    let mut entries: Vec<String> = raw.lrange(&list, 0, -1).await.unwrap();
    entries.sort();
    assert_eq!(entries, ["flappy", "tabs"]);
    assert_eq!(
        ni("gone7").await,
        None,
        "dropped from the list, and the mark with it"
    );
    // A user who comes back after being dropped is indexed again, once.
    k.open("gone0", "again").await;
    let len: usize = raw.llen(&list).await.unwrap();
    assert_eq!(len, 3);
    // And the node's death still ends every live session exactly once.
    let head = k.head().await;
    k.advance(k.settings.node_lease + Duration::from_secs(1))
        .await;
    let c = k.node("node-c");
    c.renew_node_lease(0).await.unwrap();
    // node-a renewed in advance(); simulate its death by expiring its lease entry.
    let _: () = raw
        .zadd(format!("{}nodes", store.key_prefix()), "node-a", 0)
        .await
        .unwrap();
    let r = c.sweep().await.unwrap();
    assert_eq!((r.node_sessions_reaped, r.nodes_reaped), (4, 1));
    let offline = k
        .events_since(head)
        .await
        .iter()
        .filter(|e| e.user.status == Status::Offline)
        .count();
    assert_eq!(offline, 3);
    let len: usize = raw.llen(&list).await.unwrap();
    assert_eq!(len, 0);
}

/// Deletes the records of `users` by hand, as an operator's `DEL presence:123` would.
async fn delete_records(k: &Kit, users: &[String]) {
    let prefix = k.redis().unwrap().key_prefix().to_string();
    let mut raw = raw_redis().await;
    for u in users {
        let _: () = raw.del(format!("{prefix}presence:{u}")).await.unwrap();
    }
}

#[tokio::test]
async fn undecodable_feed_entries_are_skipped_and_counted() {
    let k = Kit::new(Kind::Redis).await;
    let feed = format!("{}feed", k.redis().unwrap().key_prefix());
    let mut raw = raw_redis().await;
    let start = k.head().await;
    k.open("1", "s").await;
    // A hand-made entry, and one of the right shape whose metadata is not JSON (NaN).
    let _: String = raw.xadd(&feed, "*", &[("junk", "1")]).await.unwrap();
    let nan = [
        ("u", "9"),
        ("s", "online"),
        ("r", ""),
        ("la", "1"),
        ("ls", ""),
        ("z", ""),
        ("o", ""),
        ("d", "web"),
        ("m", "{\"x\": NaN}"),
        ("v", "1"),
        ("ps", "offline"),
        ("pz", ""),
        ("po", ""),
        ("ts", "1"),
    ];
    let _: String = raw.xadd(&feed, "*", &nan).await.unwrap();
    k.open("2", "s").await;
    let users = |r: &FeedRead| -> Vec<String> {
        r.events
            .iter()
            .map(|e| e.user.user_id.to_string())
            .collect()
    };
    let read = k.store.read_feed(start, 100).await.unwrap();
    assert_eq!(
        (users(&read), read.reset),
        (vec!["1".into(), "2".into()], false)
    );
    assert_eq!(read.skipped, 2);
    assert_eq!(read.last_id, Some(read.events[1].feed_id));
    let waited = k
        .store
        .wait_feed(start, 100, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(
        (users(&waited), waited.skipped),
        (vec!["1".into(), "2".into()], 2)
    );
    // Batches of nothing but undecodable entries still move the reader on, read or waited.
    let first = read.events[0].feed_id;
    for wait in [false, true] {
        let mut pos = first;
        let mut seen = Vec::new();
        let mut skipped = 0;
        for _ in 0..5 {
            let r = if wait {
                k.store.wait_feed(pos, 1, Duration::from_secs(5)).await
            } else {
                k.store.read_feed(pos, 1).await
            }
            .unwrap();
            seen.extend(users(&r));
            skipped += r.skipped;
            if !r.events.is_empty() {
                break;
            }
            assert!(r.last_id > Some(pos), "moved on past the skipped entry");
            pos = r.next_after(pos);
        }
        assert_eq!((seen, skipped), (vec!["2".to_string()], 2), "wait {wait}");
    }
}

#[tokio::test]
async fn pages_return_every_live_user_once_while_stale_entries_are_dropped() {
    let k = Kit::new(Kind::Redis).await;
    let mut everyone = Vec::new();
    for i in 0..150 {
        let u = format!("u{i:03}");
        k.open_with(&k.store, &u, "s", DeviceKind::Web, Some("10"), None)
            .await;
        everyone.push(u);
        k.clock.advance(Duration::from_millis(10));
    }
    // Long runs of stale entries between live users: a page crosses more of them than one
    // chunk of the script's range reads.
    let live_at = [149, 80, 79, 78, 10, 0];
    let stale: Vec<String> = (0..150)
        .filter(|i| !live_at.contains(i))
        .map(|i| everyone[i].clone())
        .collect();
    delete_records(&k, &stale).await;
    let want: Vec<String> = live_at.iter().map(|&i| everyone[i].clone()).collect();
    for limit in [1, 2, 3, 5] {
        let mut seen = Vec::new();
        let mut cursor = None;
        for _ in 0..200 {
            let q = ListQuery {
                limit,
                cursor: cursor.clone(),
                status: None,
            };
            let page = k.store.list(&Scope::Zone(zone("10")), &q).await.unwrap();
            seen.extend(page.users.iter().map(|v| v.user_id.to_string()));
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(seen, want, "limit {limit}");
    }
    assert_eq!(k.count(Scope::Zone(zone("10"))).await.total, 6);
}

#[tokio::test]
async fn counts_never_wrap_and_converge_after_damage() {
    let k = Kit::new(Kind::Redis).await;
    let prefix = k.redis().unwrap().key_prefix().to_string();
    for u in ["1", "2", "3"] {
        k.open_with(&k.store, u, "s", DeviceKind::Web, Some("10"), Some("100"))
            .await;
    }
    for u in ["2", "3"] {
        k.store.apply(&uid(u), Change::away()).await.unwrap();
    }
    // Damage: an away user's record deleted by hand (its zone and org entries and its away
    // counts stay behind), and an org's away count far off, as a crash between AOF writes
    // or a hand edit can leave it.
    delete_records(&k, &["2".to_string()]).await;
    let mut raw = raw_redis().await;
    let _: () = raw
        .hset(format!("{prefix}away_count"), "org:100", 50)
        .await
        .unwrap();
    let scopes = [
        Scope::Global,
        Scope::Zone(zone("10")),
        Scope::Org(org("100")),
    ];
    // Before any repair: counts stay sane, never wrap.
    for s in &scopes {
        let c = k.count(s.clone()).await;
        assert!(c.away <= c.total, "{s}: {c:?}");
        let q = ListQuery {
            limit: 10,
            cursor: None,
            status: Some(Status::Online),
        };
        let page = k.store.list(s, &q).await.unwrap();
        assert!(page.count <= 3, "{s}: {}", page.count);
    }
    // The sweep repairs them: every scope has users 1 (online) and 3 (away). Its scope pass
    // SCANs the whole keyspace a bounded step per sweep, so on a Redis shared with other
    // tests' keys it may take a few sweeps to reach this test's keys.
    let want = ScopeCount { total: 2, away: 1 };
    let mut sweeps = 0;
    loop {
        k.sweep().await;
        sweeps += 1;
        let mut counts = Vec::new();
        for s in &scopes {
            counts.push(k.count(s.clone()).await);
        }
        if counts.iter().all(|c| *c == want) {
            break;
        }
        assert!(
            sweeps < 200,
            "not repaired after {sweeps} sweeps: {counts:?}"
        );
    }
    // And transitions after the repair keep them right.
    k.store.apply(&uid("3"), Change::online()).await.unwrap();
    for s in &scopes {
        assert_eq!(
            k.count(s.clone()).await,
            ScopeCount { total: 2, away: 0 },
            "{s}"
        );
    }
}

#[tokio::test]
async fn custom_status_lives_in_short_hash_fields_and_the_expiring_custom_zset() {
    let (store, mut raw, clock) = prefixed_store().await;
    let p = store.key_prefix().to_string();
    let key = |name: &str| format!("{p}{name}");
    let expiring = key("expiring:custom");
    let settings = StoreSettings::default();
    for user in ["123", "456"] {
        store.open_session(request(user, "s1")).await.unwrap();
    }
    let fields = ["ck", "ct", "ce", "cx"];
    let custom_fields = |h: &HashMap<String, String>| {
        fields
            .iter()
            .filter_map(|f| h.get(*f).map(|v| (*f, v.clone())))
            .collect::<Vec<_>>()
    };
    let meeting = CustomStatus {
        kind: CustomStatusKind::InMeeting,
        text: Some("Standup | daily ☕".into()),
        emoji: Some("📅".into()),
        expires_at: Some(T0 + 60_000),
    };
    store
        .apply(&uid("123"), Change::SetCustomStatus(meeting.clone()))
        .await
        .unwrap();

    // redis-cli HGETALL presence:123: the seed's fields as before, the status in four fields.
    let h: HashMap<String, String> = raw.hgetall(key("presence:123")).await.unwrap();
    assert_eq!(h["status"], "online");
    assert_eq!(h["last_activity"], "1732616700.000");
    assert_eq!(
        custom_fields(&h),
        [
            ("ck", "in_meeting".to_string()),
            ("ct", "Standup | daily ☕".to_string()),
            ("ce", "📅".to_string()),
            ("cx", (T0 + 60_000).to_string()),
        ]
    );
    let h: HashMap<String, String> = raw.hgetall(key("presence:456")).await.unwrap();
    assert!(custom_fields(&h).is_empty(), "no custom status, no field");
    // redis-cli ZRANGE expiring:custom 0 -1 WITHSCORES: scored by expires_at in ms.
    let members: Vec<(String, f64)> = raw.zrange_withscores(&expiring, 0, -1).await.unwrap();
    assert_eq!(members, [("123".to_string(), (T0 + 60_000) as f64)]);

    // Without an expiry: out of the zset, and no `cx`.
    let dnd = CustomStatus {
        kind: CustomStatusKind::Dnd,
        text: None,
        emoji: None,
        expires_at: None,
    };
    store
        .apply(&uid("123"), Change::SetCustomStatus(dnd.clone()))
        .await
        .unwrap();
    let h: HashMap<String, String> = raw.hgetall(key("presence:123")).await.unwrap();
    assert_eq!(custom_fields(&h), [("ck", "dnd".to_string())]);
    let n: usize = raw.zcard(&expiring).await.unwrap();
    assert_eq!(n, 0);

    // Stale entries (a crash between AOF writes, an operator's hand): one for a status with
    // no expiry, one scored before a status's real expiry, one for a record that is gone.
    // The sweep re-checks each: nothing is cleared before its time, the index is repaired.
    store
        .apply(&uid("456"), Change::SetCustomStatus(meeting.clone()))
        .await
        .unwrap();
    let _: () = raw.zadd(&expiring, "123", T0 - 1).await.unwrap();
    let _: () = raw.zadd(&expiring, "456", T0 - 1).await.unwrap();
    let _: () = raw.zadd(&expiring, "gone", T0 - 1).await.unwrap();
    let r = store.sweep().await.unwrap();
    assert_eq!(r.custom_expired, 0, "stale entries clear nothing");
    assert_eq!(
        store
            .view(&uid("123"))
            .await
            .unwrap()
            .unwrap()
            .custom_status,
        Some(dnd)
    );
    assert_eq!(
        store
            .view(&uid("456"))
            .await
            .unwrap()
            .unwrap()
            .custom_status,
        Some(meeting.clone())
    );
    let members: Vec<(String, f64)> = raw.zrange_withscores(&expiring, 0, -1).await.unwrap();
    assert_eq!(members, [("456".to_string(), (T0 + 60_000) as f64)]);

    // Cleared: fields and entry gone.
    store
        .apply(&uid("456"), Change::ClearCustomStatus)
        .await
        .unwrap();
    let h: HashMap<String, String> = raw.hgetall(key("presence:456")).await.unwrap();
    assert!(custom_fields(&h).is_empty());
    let n: usize = raw.zcard(&expiring).await.unwrap();
    assert_eq!(n, 0);

    // Deleted after retention with an expiry still ahead: the zset entry leaves with it.
    let far = CustomStatus {
        expires_at: Some(T0 + 365 * 86_400_000),
        ..meeting
    };
    store
        .apply(&uid("456"), Change::SetCustomStatus(far))
        .await
        .unwrap();
    store.close_session(&uid("456"), &sid("s1")).await.unwrap();
    store.close_session(&uid("123"), &sid("s1")).await.unwrap();
    clock.advance(settings.offline_grace);
    store.renew_node_lease(0).await.unwrap();
    store.sweep().await.unwrap();
    clock.advance(settings.last_seen_retention);
    store.renew_node_lease(0).await.unwrap();
    let r = store.sweep().await.unwrap();
    assert_eq!((r.records_deleted, r.custom_expired), (2, 0));
    let n: usize = raw.zcard(&expiring).await.unwrap();
    assert_eq!(n, 0, "retention removes the index entry with the record");
}

#[tokio::test]
async fn invisible_users_sit_in_hidden_not_in_the_public_sets() {
    let (store, mut raw, clock) = prefixed_store().await;
    let p = store.key_prefix().to_string();
    let key = |name: &str| format!("{p}{name}");
    for user in ["123", "456"] {
        let mut open = request(user, "s1");
        open.zone = Some(zone("10"));
        store.open_session(open).await.unwrap();
    }
    let invisible = Change::SetStatus {
        away: false,
        invisible: Some(true),
    };
    clock.advance(Duration::from_millis(500));
    store.apply(&uid("123"), invisible).await.unwrap();

    // redis-cli HGET presence:123 iv: since|version|updated, in ms.
    let iv: String = raw.hget(key("presence:123"), "iv").await.unwrap();
    assert_eq!(iv, format!("{t}|2|{t}", t = T0 + 500));
    let reader = raw.clone();
    let members = |set: &'static str| {
        let mut raw = reader.clone();
        let set = key(set);
        async move {
            let m: Vec<String> = raw.zrange(set, 0, -1).await.unwrap();
            m
        }
    };
    assert_eq!(members("online:global").await, ["456"]);
    assert_eq!(members("online:zone:10").await, ["456"]);
    assert_eq!(members("hidden").await, ["123"]);
    // Activity moves its score in `hidden`, and puts it in no public set.
    clock.advance(Duration::from_secs(1));
    store
        .record_activity(&[Activity {
            user: uid("123"),
            at: T0 + 1500,
        }])
        .await
        .unwrap();
    let score: f64 = raw.zscore(key("hidden"), "123").await.unwrap();
    assert_eq!(score, 1_732_616_701.5);
    assert_eq!(members("online:global").await, ["456"]);

    // Stale entries both ways (an operator's hand): the visible user in `hidden`, the
    // invisible one in the public sets. The sweep drops both; counts and lists never show
    // the invisible user meanwhile.
    let _: () = raw.zadd(key("hidden"), "456", 1).await.unwrap();
    let _: () = raw.zadd(key("online:global"), "123", 1).await.unwrap();
    let r = store.sweep().await.unwrap();
    assert_eq!(r.stale_entries, 2, "{r:?}");
    assert_eq!(members("online:global").await, ["456"]);
    assert_eq!(members("hidden").await, ["123"]);

    // Visible again: back in the public sets, out of `hidden`, no `iv`.
    let visible = Change::SetStatus {
        away: false,
        invisible: Some(false),
    };
    store.apply(&uid("123"), visible).await.unwrap();
    assert_eq!(members("online:zone:10").await.len(), 2);
    assert!(members("hidden").await.is_empty());
    let iv: Option<String> = raw.hget(key("presence:123"), "iv").await.unwrap();
    assert_eq!(iv, None);
}

#[tokio::test]
async fn session_values_carry_their_open_second_and_older_values_still_work() {
    let (store, mut raw, clock) = prefixed_store().await;
    let key = format!("{}presence:7", store.key_prefix());
    clock.advance(Duration::from_millis(1_999));
    let open = |session: &str, device, leased| OpenSession {
        device,
        leased,
        ..request("7", session)
    };
    store
        .open_session(open("ws", DeviceKind::Web, false))
        .await
        .unwrap();
    store
        .open_session(open("hb", DeviceKind::Mobile, true))
        .await
        .unwrap();
    let opened = (T0 + 1_999) / 1000;
    let lease = T0 + 1_999 + 300_000;
    let h: HashMap<String, String> = raw.hgetall(&key).await.unwrap();
    assert_eq!(h["s:ws"], format!("n1|web|{opened}"), "node|device|opened");
    assert_eq!(
        h["s:hb"],
        format!("|mobile|{lease}|{opened}"),
        "|device|lease|opened"
    );
    assert!(!h.contains_key("ni"), "n1 lists the user for its session");
    // A renewal moves the lease and keeps the open time.
    clock.advance(Duration::from_secs(10));
    store.renew_session(&uid("7"), &sid("hb")).await.unwrap();
    let v: String = raw.hget(&key, "s:hb").await.unwrap();
    assert_eq!(v, format!("|mobile|{}|{opened}", lease + 10_000));
    // Values written before sessions kept their open time still read, renew and close.
    let old_lease = T0 + 600_000;
    let _: () = raw
        .hset_multiple(
            &key,
            &[
                ("s:old", "n1|desktop".to_string()),
                ("s:oldhb", format!("|other|{old_lease}")),
            ],
        )
        .await
        .unwrap();
    let view = store.view(&uid("7")).await.unwrap().unwrap();
    assert_eq!(
        view.devices.iter().collect::<Vec<_>>(),
        [
            DeviceKind::Web,
            DeviceKind::Desktop,
            DeviceKind::Mobile,
            DeviceKind::Other
        ]
    );
    let until = store.renew_session(&uid("7"), &sid("oldhb")).await.unwrap();
    let v: String = raw.hget(&key, "s:oldhb").await.unwrap();
    assert_eq!(v, format!("|other|{until}"), "no open time is made up");
    let closed = store.close_session(&uid("7"), &sid("old")).await.unwrap();
    assert!(!closed.view.devices.contains(DeviceKind::Desktop));
    let listed = store.sessions(&uid("7")).await.unwrap().unwrap().sessions;
    let times: Vec<(&str, Option<Millis>)> = listed
        .iter()
        .map(|s| (s.session.as_str(), s.connected_at))
        .collect();
    assert_eq!(
        times,
        [
            ("oldhb", None),
            ("hb", Some(opened * 1000)),
            ("ws", Some(opened * 1000))
        ],
        "an older value's connect time is unknown"
    );
}

#[tokio::test]
async fn an_ended_sessions_mark_is_one_key_that_expires_with_it() {
    let (store, mut raw, clock) = prefixed_store().await;
    let p = store.key_prefix().to_string();
    store.open_session(request("7", "ws")).await.unwrap();
    store
        .open_session(OpenSession {
            leased: true,
            invisible: false,
            ..request("7", "hb")
        })
        .await
        .unwrap();
    clock.advance(Duration::from_secs(1));
    store.end_session(&uid("7"), &sid("ws")).await.unwrap();
    store.end_session(&uid("7"), &sid("hb")).await.unwrap();
    // redis-cli GET 'ended:7|ws': until when (ms) the session may not open again; the key
    // lives as long, so marks never pile up.
    let life = ms(StoreSettings::default().end_mark_lifetime());
    let until: i64 = raw.get(format!("{p}ended:7|ws")).await.unwrap();
    assert_eq!(until, T0 + 1_000 + life);
    let ttl: i64 = raw.pttl(format!("{p}ended:7|ws")).await.unwrap();
    assert!(0 < ttl && ttl <= life, "{ttl}");
    let lease_mark: bool = raw.exists(format!("{p}ended:7|hb")).await.unwrap();
    assert!(!lease_mark, "REST leases are never re-asserted: no mark");
    let h: HashMap<String, String> = raw.hgetall(format!("{p}presence:7")).await.unwrap();
    assert!(h.keys().all(|f| !f.starts_with("s:")), "{h:?}");
}
