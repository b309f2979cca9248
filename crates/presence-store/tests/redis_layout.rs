//! The Redis keys as an operator sees them with `redis-cli`: the seed's hash and sorted sets,
//! readable as the seed wrote them; the prefix applied to every key; stale entries cleaned.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use presence_core::*;
use presence_store::{RedisConfig, RedisStore};
use redis::AsyncCommands;

/// Database 15 with the default empty prefix: only this test binary uses it.
async fn seed_named_store() -> (RedisStore, redis::aio::MultiplexedConnection, ManualClock) {
    let url = format!("{}/15", redis_url().trim_end_matches('/'));
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis for the layout test");
    let _: () = redis::cmd("FLUSHDB").query_async(&mut raw).await.unwrap();
    let clock = ManualClock::new(T0);
    let store = RedisStore::connect(
        RedisConfig::new(url),
        node("n1"),
        Arc::new(clock.clone()),
        StoreSettings::default(),
    )
    .await
    .unwrap();
    (store, raw, clock)
}

#[tokio::test]
async fn an_operator_finds_the_seeds_keys_and_fields() {
    let (store, mut raw, clock) = seed_named_store().await;
    let open = |user: &str, z: &str, o: &str| OpenSession {
        user: uid(user),
        session: sid("s1"),
        device: DeviceKind::Desktop,
        zone: Some(zone(z)),
        org: Some(org(o)),
        leased: false,
    };
    store.open_session(open("123", "10", "100")).await.unwrap();
    let md: Metadata = serde_json::from_str(r#"{"theme": "dark"}"#).unwrap();
    store
        .apply(&uid("123"), Change::SetMetadata(Some(md)))
        .await
        .unwrap();

    // redis-cli HGETALL presence:123
    let h: HashMap<String, String> = raw.hgetall("presence:123").await.unwrap();
    assert_eq!(h["status"], "online");
    assert_eq!(h["last_activity"], "1732616700.000");
    assert_eq!(h["zone_id"], "10");
    assert_eq!(h["org_id"], "100");
    assert_eq!(h["updated_at"], "2024-11-26T10:25:00.000Z");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&h["metadata"]).unwrap(),
        serde_json::json!({"theme": "dark"})
    );
    // redis-cli ZCARD online:global, and the zone and org sets, scored by last activity.
    for set in ["online:global", "online:zone:10", "online:org:100"] {
        let n: u64 = raw.zcard(set).await.unwrap();
        assert_eq!(n, 1, "{set}");
        let score: f64 = raw.zscore(set, "123").await.unwrap();
        assert_eq!(score, 1_732_616_700.0, "{set}");
    }
    // Activity moves the scores (the seed's update_activity did not).
    clock.advance(Duration::from_millis(2500));
    store
        .record_activity(&[Activity {
            user: uid("123"),
            at: clock.now_ms(),
        }])
        .await
        .unwrap();
    let score: f64 = raw.zscore("online:zone:10", "123").await.unwrap();
    assert_eq!(score, 1_732_616_702.5);
    let la: String = raw.hget("presence:123", "last_activity").await.unwrap();
    assert_eq!(la, "1732616702.500");

    // Offline: out of every set, status offline, and in the last-seen index.
    let settings = StoreSettings::default();
    store.close_session(&uid("123"), &sid("s1")).await.unwrap();
    clock.advance(settings.offline_grace);
    store.renew_node_lease(0).await.unwrap();
    store.sweep().await.unwrap();
    let status: String = raw.hget("presence:123", "status").await.unwrap();
    assert_eq!(status, "offline");
    for set in ["online:global", "online:zone:10", "online:org:100"] {
        let n: u64 = raw.zcard(set).await.unwrap();
        assert_eq!(n, 0, "{set}");
    }
    let seen: Option<f64> = raw.zscore("last_seen", "123").await.unwrap();
    assert!(seen.is_some());
    // The feed is a stream an operator can XRANGE.
    let len: u64 = raw.xlen("feed").await.unwrap();
    assert_eq!(len, 3, "online, metadata, offline");
    // No key carries a Redis TTL: expiry is the sweep's job.
    let ttl: i64 = raw.ttl("presence:123").await.unwrap();
    assert_eq!(ttl, -1);
}

#[tokio::test]
async fn the_prefix_goes_before_every_key() {
    let mut config = RedisConfig::new(redis_url());
    config.key_prefix = format!("tenantA-{}:", std::process::id());
    let prefix = config.key_prefix.clone();
    let clock = ManualClock::new(T0);
    let store = RedisStore::connect(
        config,
        node("n1"),
        Arc::new(clock),
        StoreSettings::default(),
    )
    .await
    .unwrap();
    store
        .open_session(OpenSession {
            zone: Some(zone("10")),
            ..request("123", "s")
        })
        .await
        .unwrap();
    store.sweep().await.unwrap();
    let client = redis::Client::open(redis_url().as_str()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = raw.keys(format!("{prefix}*")).await.unwrap();
    keys.sort();
    let unprefixed: Vec<String> = keys
        .iter()
        .map(|k| k.strip_prefix(&prefix).unwrap().to_string())
        .collect();
    for k in [
        "presence:123",
        "online:global",
        "online:zone:10",
        "nodes",
        "node:n1:users",
        "feed",
    ] {
        assert!(unprefixed.contains(&k.to_string()), "{k} in {unprefixed:?}");
    }
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
    let client = redis::Client::open(redis_url().as_str()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
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
    let client = redis::Client::open(redis_url().as_str()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
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
    k.sweep().await;
    let mut entries: Vec<String> = raw.lrange(&list, 0, -1).await.unwrap();
    entries.sort();
    assert_eq!(entries, ["flappy", "tabs"]);
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
