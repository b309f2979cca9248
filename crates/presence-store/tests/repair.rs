//! Repair after each kind of damage, done to Redis with raw commands as an operator would with
//! `redis-cli`: a check reports it and changes nothing, a repair fixes it, a second check is
//! clean, the lists, counts and node lists are right again, and the feed replayed from empty
//! still gives every view. And repair is safe beside running transitions.
//! (The memory store's repair is tested beside it, in `src/memory/repair.rs`, where its state
//! can be damaged; the conformance suite checks both stores are clean after every scenario.)

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use presence_core::repair::fixed;
use presence_core::*;
use redis::aio::MultiplexedConnection;

/// A population with an entry in every index: 1 online (zones 10, org 100) on node-a; 2 away
/// (manual) in zone 10 on node-a; 3 offline (last seen); 4 on a REST lease; 5 in its grace;
/// 6 invisible on node-b; 7 with an expiring custom status.
async fn population() -> Kit {
    let k = Kit::new(Kind::Redis).await;
    k.open_with(
        &k.store,
        "1",
        "s1",
        DeviceKind::Web,
        Some("10"),
        Some("100"),
    )
    .await;
    k.open_with(
        &k.store,
        "2",
        "s2",
        DeviceKind::Web,
        Some("10"),
        Some("100"),
    )
    .await;
    k.store.apply(&uid("2"), Change::away()).await.unwrap();
    // User 1 shares a location: in geo:global and geo:org:100.
    k.store
        .apply(
            &uid("1"),
            Change::SetLocation(Some(Location::new(52.52, 13.405).unwrap())),
        )
        .await
        .unwrap();
    k.open("3", "s3").await;
    k.advance(Duration::from_secs(1)).await;
    k.store.close_session(&uid("3"), &sid("s3")).await.unwrap();
    k.store
        .open_session(OpenSession {
            leased: true,
            ..request("4", "s4")
        })
        .await
        .unwrap();
    k.advance(Duration::from_secs(10)).await;
    k.sweep().await;
    k.open("5", "s5").await;
    k.close("5", "s5").await;
    let b = k.node("node-b");
    b.renew_node_lease(0).await.unwrap();
    k.open_with(&b, "6", "s6", DeviceKind::Mobile, Some("20"), None)
        .await;
    b.apply(
        &uid("6"),
        Change::SetStatus {
            away: false,
            invisible: Some(true),
        },
    )
    .await
    .unwrap();
    k.open("7", "s7").await;
    k.store
        .apply(
            &uid("7"),
            Change::SetCustomStatus(CustomStatus {
                kind: CustomStatusKind::InMeeting,
                text: None,
                emoji: None,
                expires_at: Some(k.now() + 3_600_000),
            }),
        )
        .await
        .unwrap();
    assert_eq!(k.status("3").await, Some(Status::Offline));
    assert_eq!(k.status("5").await, Some(Status::Online), "in its grace");
    k
}

/// Every key under the prefix with what it holds, to see that a check changes nothing.
async fn snapshot(raw: &mut MultiplexedConnection, prefix: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for k in scan_keys(raw, &format!("{prefix}*")).await {
        let kind: String = redis::cmd("TYPE").arg(&k).query_async(raw).await.unwrap();
        let cmd = match kind.as_str() {
            "zset" => redis::cmd("ZRANGE")
                .arg(&k)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .clone(),
            "hash" => redis::cmd("HGETALL").arg(&k).clone(),
            "list" => redis::cmd("LRANGE").arg(&k).arg(0).arg(-1).clone(),
            "stream" => redis::cmd("XREVRANGE")
                .arg(&k)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .clone(),
            _ => redis::cmd("GET").arg(&k).clone(),
        };
        let v: redis::Value = cmd.query_async(raw).await.unwrap();
        let mut text = format!("{v:?}");
        if kind == "hash" {
            // HGETALL's order is not stable across rehashing: sort the fields.
            let m: BTreeMap<String, String> = redis::cmd("HGETALL")
                .arg(&k)
                .query_async(raw)
                .await
                .unwrap();
            text = format!("{m:?}");
        }
        out.insert(k, text);
    }
    out
}

/// What a user of the store sees: every scope's count and page, every user's view.
async fn seen(k: &Kit) -> (Vec<ScopeCount>, Vec<Vec<String>>, Vec<Option<PresenceView>>) {
    let scopes = [
        Scope::Global,
        Scope::Zone(zone("10")),
        Scope::Zone(zone("20")),
        Scope::Org(org("100")),
    ];
    let counts = k.store.counts(&scopes).await.unwrap();
    let mut lists = Vec::new();
    for s in scopes {
        lists.push(k.list_ids(s).await);
    }
    let users: Vec<UserId> = (1..=7).map(|i| uid(&i.to_string())).collect();
    (counts, lists, k.store.views(&users).await.unwrap())
}

/// Runs one damage through check → fix → check, and returns the kit to look further.
/// `expect`: the kinds the check must report, exactly.
async fn damaged(damage: &[&[&str]], expect: &[(&str, u64)]) -> Kit {
    let k = population().await;
    let prefix = k.redis().unwrap().key_prefix().to_string();
    let mut raw = raw_redis().await;
    let clean = k.store.repair(RepairMode::CHECK).await.unwrap();
    assert!(clean.is_clean(), "before the damage: {clean:?}");
    assert!(clean.checked >= 7, "{clean:?}");
    let before = seen(&k).await;
    for cmd in damage {
        // Arguments naming keys carry the prefix, as an operator's would with key_prefix set.
        let mut c = redis::cmd(cmd[0]);
        c.arg(format!("{prefix}{}", cmd[1]));
        for a in &cmd[2..] {
            c.arg(*a);
        }
        let _: redis::Value = c.query_async(&mut raw).await.unwrap();
    }
    let damaged = snapshot(&mut raw, &prefix).await;
    let check = k.store.repair(RepairMode::CHECK).await.unwrap();
    let want: BTreeMap<String, u64> = expect.iter().map(|(w, n)| (w.to_string(), *n)).collect();
    assert_eq!(check.fixed, want, "the check reports the damage: {check:?}");
    assert_eq!(
        snapshot(&mut raw, &prefix).await,
        damaged,
        "a check changes nothing"
    );
    let fix = k.store.repair(RepairMode::FIX).await.unwrap();
    assert_eq!(
        fix.fixed, check.fixed,
        "a repair fixes what the check reported"
    );
    let again = k.store.repair(RepairMode::CHECK).await.unwrap();
    assert!(again.is_clean(), "after the repair: {again:?}");
    // What users see is what it was before the damage, unless the damage took a record.
    if !damage
        .iter()
        .any(|c| c[0] == "DEL" && c[1].starts_with("presence:"))
    {
        assert_eq!(seen(&k).await, before, "lists, counts and views as before");
        let replay = presence_store::replay::check(k.store.as_ref())
            .await
            .unwrap();
        assert!(replay.consistent(), "{replay:?}");
    }
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_zone_set_is_rebuilt() {
    damaged(
        &[&["DEL", "online:zone:10"]],
        &[(fixed::ONLINE_MEMBERS_MISSING, 2)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_from_the_global_set_comes_back() {
    damaged(
        &[&["ZREM", "online:global", "1"]],
        &[(fixed::ONLINE_MEMBERS_MISSING, 1)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ghost_member_leaves() {
    damaged(
        &[
            &["ZADD", "online:global", "1", "ghost"],
            &["ZADD", "online:zone:10", "1", "3"],
        ],
        &[(fixed::STALE_MEMBERS, 2)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_score_is_set_right() {
    damaged(
        &[
            &["ZADD", "online:global", "5", "1"],
            &["ZADD", "expiring:custom", "5", "7"],
        ],
        &[(fixed::WRONG_SCORES, 2)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nearby_sets_are_rebuilt_moved_back_and_cleaned() {
    let k = damaged(
        &[
            &["DEL", "geo:org:100"],
            &["GEOADD", "geo:global", "0", "0", "1"],
            &["GEOADD", "geo:global", "0", "0", "3"],
        ],
        &[
            (fixed::INDEX_MEMBERS_MISSING, 1),
            (fixed::WRONG_SCORES, 1),
            (fixed::STALE_MEMBERS, 1),
        ],
    )
    .await;
    for org in [None, Some(presence_core::OrgId::new("100").unwrap())] {
        let found = k
            .store
            .nearby(&NearbyQuery {
                at: Location::new(52.52, 13.405).unwrap(),
                radius_m: 100.0,
                org,
                limit: 10,
            })
            .await
            .unwrap();
        let ids: Vec<&str> = found.iter().map(|n| n.view.user_id.as_str()).collect();
        assert_eq!(ids, ["1"], "back where it was");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_away_counts_are_recounted() {
    damaged(
        &[
            &["HSET", "away_count", "global", "99"],
            &["HSET", "away_count", "zone:77", "3"],
            &["HDEL", "away_count", "zone:10"],
        ],
        &[(fixed::AWAY_COUNT, 3)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_entries_of_the_other_indexes_come_back() {
    let k = damaged(
        &[
            &["DEL", "hidden"],
            &["DEL", "grace"],
            &["ZREM", "leases", "4|s4"],
            &["DEL", "last_seen"],
            &["DEL", "expiring:custom"],
        ],
        &[(fixed::INDEX_MEMBERS_MISSING, 5)],
    )
    .await;
    // And they work: the grace ends, auto-away finds the invisible user.
    k.advance(Duration::from_secs(301)).await;
    k.node("node-b").renew_node_lease(0).await.unwrap();
    k.sweep().await;
    assert_eq!(k.status("5").await, Some(Status::Offline));
    assert_eq!(k.status("6").await, Some(Status::Away));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_session_ends_through_the_transition_with_one_event() {
    let k = population().await;
    let prefix = k.redis().unwrap().key_prefix().to_string();
    let mut raw = raw_redis().await;
    // A session of a node that does not exist, on an online user and on an offline one.
    for (user, s) in [("1", "x"), ("3", "y")] {
        let _: () = redis::cmd("HSET")
            .arg(format!("{prefix}presence:{user}"))
            .arg(format!("s:{s}"))
            .arg("deadnode|desktop|0")
            .query_async(&mut raw)
            .await
            .unwrap();
    }
    let head = k.head().await;
    let check = k.store.repair(RepairMode::CHECK).await.unwrap();
    assert_eq!(check.count(fixed::ORPHAN_SESSIONS), 2, "{check:?}");
    assert_eq!(k.head().await, head, "a check emits nothing");
    let fix = k.store.repair(RepairMode::FIX).await.unwrap();
    assert_eq!(fix.fixed, check.fixed);
    let events = k.events_since(head).await;
    assert_eq!(events.len(), 2, "one event each: {events:?}");
    let one = k.view("1").await.unwrap();
    assert_eq!(
        (one.status, one.devices.contains(DeviceKind::Desktop)),
        (Status::Online, false)
    );
    assert_eq!(k.view("3").await.unwrap().status, Status::Offline);
    assert!(k.store.repair(RepairMode::CHECK).await.unwrap().is_clean());
    let keys = scan_keys(&mut raw, &format!("{prefix}node:deadnode:*")).await;
    assert!(keys.is_empty(), "the dead node left nothing: {keys:?}");
    let replay = presence_store::replay::check(k.store.as_ref())
        .await
        .unwrap();
    assert!(replay.consistent(), "{replay:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_node_list_is_rebuilt_so_a_crash_still_reaps_its_users() {
    // 1, 2 and 7 have a session on node-a; 5's record still names the list it left.
    let k = damaged(&[&["DEL", "node:node-a:users"]], &[(fixed::NODE_LISTS, 4)]).await;
    let mut sessions = k.store.node_sessions().await.unwrap();
    sessions.sort();
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    // node-a dies: another node reaps every one of its users.
    let b = k.node("node-b");
    k.clock.advance(Duration::from_secs(20));
    b.renew_node_lease(0).await.unwrap();
    b.sweep().await.unwrap();
    for u in ["1", "2", "5", "7"] {
        assert_eq!(k.status(u).await, Some(Status::Offline), "user {u}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_list_entry_and_a_false_node_mark_are_dropped() {
    damaged(
        &[
            &["RPUSH", "node:node-a:users", "1"],
            &["HSET", "presence:3", "ni", "node-b"],
        ],
        &[(fixed::NODE_LISTS, 2)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_node_session_count_is_recounted() {
    let k = damaged(
        &[&["HINCRBY", "node:node-a:info", "sc", "5"]],
        &[(fixed::NODE_SESSION_COUNTS, 1)],
    )
    .await;
    assert_eq!(k.store.node_session_count().await.unwrap(), 3);
    assert_eq!(k.node("node-b").node_session_count().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_keys_go() {
    damaged(
        &[
            &["HSET", "node:gone:info", "sc", "3"],
            &["RPUSH", "node:gone:users", "1"],
        ],
        &[(fixed::DEAD_NODE_KEYS, 2)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_record_leaves_no_entry_behind() {
    // 1 was online in global, zone 10 and org 100, and shared a location (geo:global,
    // geo:org:100); 3 was offline (last_seen); 4 held a lease.
    let k = damaged(
        &[
            &["DEL", "presence:1"],
            &["DEL", "presence:3"],
            &["DEL", "presence:4"],
        ],
        // and 1's session on node-a went with the record.
        &[(fixed::STALE_MEMBERS, 8), (fixed::NODE_SESSION_COUNTS, 1)],
    )
    .await;
    assert_eq!(k.count(Scope::Zone(zone("10"))).await.total, 1);
    assert_eq!(k.list_ids(Scope::Global).await.len(), 3);
    // The feed still says 1 and 4 are online: the replay check names exactly them.
    let replay = presence_store::replay::check(k.store.as_ref())
        .await
        .unwrap();
    let users: Vec<String> = replay
        .mismatches
        .iter()
        .map(|m| m.user.to_string())
        .collect();
    assert_eq!(users, ["1", "4"]);
    assert!(replay.mismatches.iter().all(|m| m.in_store.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_drops_a_hiding_user_from_a_small_scope_set_as_repair_would() {
    let k = population().await;
    let prefix = k.redis().unwrap().key_prefix().to_string();
    let mut raw = raw_redis().await;
    // 6 is invisible in zone 20: in no scope set, by the one rule (scope_sets).
    let _: i64 = redis::cmd("ZADD")
        .arg(format!("{prefix}online:zone:20"))
        .arg(1)
        .arg("6")
        .query_async(&mut raw)
        .await
        .unwrap();
    // The sweep checks a few small scope sets each time, walking a keyspace others share.
    let mut gone = false;
    for _ in 0..300 {
        k.sweep().await;
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(format!("{prefix}online:zone:20"))
            .arg("6")
            .query_async(&mut raw)
            .await
            .unwrap();
        if score.is_none() {
            gone = true;
            break;
        }
    }
    assert!(gone, "the sweep never dropped the hiding user's entry");
    assert!(k.store.repair(RepairMode::CHECK).await.unwrap().is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_slices_find_and_fix_damage_bit_by_bit() {
    let k = population().await;
    let prefix = k.redis().unwrap().key_prefix().to_string();
    let mut raw = raw_redis().await;
    for (cmd, args) in [
        ("ZREM", vec!["online:global", "2"]),
        ("ZADD", vec!["grace", "1", "ghost"]),
        ("HSET", vec!["away_count", "zone:10", "7"]),
        ("HINCRBY", vec!["node:node-a:info", "sc", "2"]),
    ] {
        let mut c = redis::cmd(cmd);
        c.arg(format!("{prefix}{}", args[0]));
        for a in &args[1..] {
            c.arg(*a);
        }
        let _: redis::Value = c.query_async(&mut raw).await.unwrap();
    }
    let mut total = RepairReport::default();
    // Slices of 50, over a keyspace other tests share: each part comes round in the end.
    let found = |t: &RepairReport| {
        t.count(fixed::ONLINE_MEMBERS_MISSING) > 0
            && t.count(fixed::STALE_MEMBERS) > 0
            && t.count(fixed::AWAY_COUNT) > 0
            && t.count(fixed::NODE_SESSION_COUNTS) > 0
    };
    // Slices go on until they found every kind and a whole check finds nothing more.
    for _ in 0..5000 {
        if found(&total) && k.store.repair(RepairMode::CHECK).await.unwrap().is_clean() {
            break;
        }
        total += k
            .store
            .repair(RepairMode {
                check_only: false,
                slice: Some(50),
            })
            .await
            .unwrap();
    }
    for (what, n) in [
        (fixed::ONLINE_MEMBERS_MISSING, 1),
        (fixed::STALE_MEMBERS, 1),
        (fixed::NODE_SESSION_COUNTS, 1),
    ] {
        assert_eq!(total.count(what), n, "{what}: {total:?}");
    }
    // zone:10's count is fixed once. A slice recounts a scope from its set as it stands:
    // global, missing the away user 2 until the records walk brings them back, may be
    // recounted to 0 on the way and to 1 after (the order of the walks decides).
    assert!(
        (1..=3).contains(&total.count(fixed::AWAY_COUNT)),
        "{total:?}"
    );
    assert!(k.store.repair(RepairMode::CHECK).await.unwrap().is_clean());
    let pos: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{prefix}repair:pos"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(pos.contains_key("records"), "the position is kept: {pos:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_beside_running_transitions_finds_nothing_to_fix() {
    let k = Arc::new(Kit::new(Kind::Redis).await);
    let b = k.node("node-b");
    b.renew_node_lease(0).await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for (w, store) in [(0, k.store.clone()), (1, b.clone())] {
        let (k, stop) = (k.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let user = format!("{}", i % 12);
                let s = format!("w{w}-{}", i % 3);
                let z = format!("{}", i % 4);
                let _ = k
                    .open_with(&store, &user, &s, DeviceKind::Web, Some(&z), Some("100"))
                    .await;
                if i.is_multiple_of(5) {
                    let _ = store.apply(&uid(&user), Change::away()).await;
                }
                if i.is_multiple_of(7) {
                    let _ = store
                        .apply(
                            &uid(&user),
                            Change::SetStatus {
                                away: false,
                                invisible: Some(i.is_multiple_of(2)),
                            },
                        )
                        .await;
                }
                let _ = store.close_session(&uid(&user), &sid(&s)).await;
                i += 1;
            }
            i
        }));
    }
    let mut repairs = 0;
    let mut slices = RepairReport::default();
    while repairs < 15 {
        let r = k.node("repairer").repair(RepairMode::FIX).await.unwrap();
        assert!(
            r.is_clean(),
            "a repair beside transitions fixed something: {r:?}"
        );
        slices += k
            .node("repairer")
            .repair(RepairMode {
                check_only: false,
                slice: Some(3),
            })
            .await
            .unwrap();
        repairs += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut transitions = 0;
    for w in workers {
        transitions += w.await.unwrap();
    }
    assert!(
        transitions > 30,
        "the transitions ran beside the repairs: {transitions}"
    );
    assert!(slices.is_clean(), "{slices:?}");
    assert!(k.store.repair(RepairMode::CHECK).await.unwrap().is_clean());
    let replay = presence_store::replay::check(k.store.as_ref())
        .await
        .unwrap();
    assert!(replay.consistent(), "{replay:?}");
}

/// What a repair costs at scale: `REPAIR_MEASURE_USERS` users (1,000,000 by default) on 50
/// nodes, in 100 zones and 1,000 orgs, half of them away. Prints the wall time of a whole
/// check and a whole repair, Redis's own time in scripts, and the longest single calls (from
/// `SLOWLOG`: each is time every other client waited). Run by hand on a Redis of its own:
/// `PRESENCE_TEST_REDIS_URL=redis://127.0.0.1:6403 cargo test --release -p presence-store
/// --test repair measure -- --ignored --nocapture`. Figures in README, "Repair".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand (see its doc)"]
async fn measure_repair_cost_at_scale() {
    let n: usize = std::env::var("REPAIR_MEASURE_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let settings = StoreSettings {
        feed_max_len: 1000,
        ..StoreSettings::default()
    };
    let k = Kit::with(Kind::Redis, settings).await;
    let nodes: Vec<Arc<dyn Store>> = (0..50).map(|i| k.node(&format!("n{i}"))).collect();
    // The clock moves a millisecond between chunks, as a real one would: auto-away takes all
    // the users tied at one instant in one call.
    let open_range = |from: usize, to: usize| {
        let (nodes, clock) = (nodes.clone(), k.clock.clone());
        async move {
            for chunk_start in (from..to).step_by(1000) {
                let node = &nodes[(chunk_start / 1000) % nodes.len()];
                let opens: Vec<OpenSession> = (chunk_start..(chunk_start + 1000).min(to))
                    .map(|i| OpenSession {
                        zone: Some(zone(&(i % 100).to_string())),
                        org: Some(org(&(i % 1000).to_string())),
                        ..request(&format!("u{i}"), "s")
                    })
                    .collect();
                node.reopen_sessions(&opens).await.unwrap();
                clock.advance(Duration::from_millis(1));
            }
        }
    };
    let started = std::time::Instant::now();
    open_range(0, n / 2).await;
    k.clock.advance(Duration::from_secs(301));
    for node in &nodes {
        node.renew_node_lease(0).await.unwrap();
    }
    while k.store.sweep().await.unwrap().auto_away > 0 {}
    open_range(n / 2, n).await;
    for node in &nodes {
        node.renew_node_lease(0).await.unwrap();
    }
    println!("seeded {n} users in {:?}", started.elapsed());
    assert_eq!(k.count(Scope::Global).await.away, (n / 2) as u64);
    let mut raw = raw_redis().await;
    let evalsha_usec = |raw: &mut MultiplexedConnection| {
        let mut raw = raw.clone();
        async move {
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut raw)
                .await
                .unwrap();
            info.lines()
                .find(|l| l.starts_with("cmdstat_evalsha:"))
                .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("usec=")))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        }
    };
    for (name, mode, damage) in [
        ("check", RepairMode::CHECK, false),
        ("repair", RepairMode::FIX, false),
        (
            "repair of a damaged global away count",
            RepairMode::FIX,
            true,
        ),
    ] {
        if damage {
            let prefix = k.redis().unwrap().key_prefix().to_string();
            let _: i64 = redis::cmd("HINCRBY")
                .arg(format!("{prefix}away_count"))
                .arg("global")
                .arg(1)
                .query_async(&mut raw)
                .await
                .unwrap();
        }
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("slowlog-log-slower-than")
            // The damaged pass: only the one long call, which 1,000 shorter ones would push
            // out of the log.
            .arg(if damage { 200_000 } else { 5000 })
            .query_async(&mut raw)
            .await
            .unwrap();
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("slowlog-max-len")
            .arg(1000)
            .query_async(&mut raw)
            .await
            .unwrap();
        let _: () = redis::cmd("SLOWLOG")
            .arg("RESET")
            .query_async(&mut raw)
            .await
            .unwrap();
        let before = evalsha_usec(&mut raw).await;
        let t = std::time::Instant::now();
        let report = k.store.repair(mode).await.unwrap();
        let wall = t.elapsed();
        let redis_ms = (evalsha_usec(&mut raw).await - before) / 1000;
        assert_eq!(
            report.count(fixed::AWAY_COUNT),
            u64::from(damage),
            "{report:?}"
        );
        println!(
            "{name}: {wall:?} wall, {redis_ms} ms of Redis in scripts, checked {}",
            report.checked
        );
        let slow: Vec<redis::Value> = redis::cmd("SLOWLOG")
            .arg("GET")
            .arg(1000)
            .query_async(&mut raw)
            .await
            .unwrap();
        let mut calls: Vec<(i64, String)> = slow
            .iter()
            .filter_map(|e| match e {
                redis::Value::Array(f) => {
                    let us = match &f[2] {
                        redis::Value::Int(i) => *i,
                        _ => 0,
                    };
                    let args = match &f[3] {
                        redis::Value::Array(a) => a
                            .iter()
                            .skip(7)
                            .take(2)
                            .map(|v| match v {
                                redis::Value::BulkString(b) => {
                                    String::from_utf8_lossy(b).into_owned()
                                }
                                other => format!("{other:?}"),
                            })
                            .collect::<Vec<_>>()
                            .join(" "),
                        _ => String::new(),
                    };
                    Some((us, args))
                }
                _ => None,
            })
            .collect();
        calls.sort_by_key(|c| std::cmp::Reverse(c.0));
        let over = if damage { "200 ms" } else { "5 ms" };
        println!("  calls over {over}: {}", calls.len());
        for (us, args) in calls.iter().take(8) {
            println!("  {:>8.1} ms  ARGV[5..]: {args}", *us as f64 / 1000.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_deleted_by_retention_leaves_no_node_list_entry_behind() {
    let settings = StoreSettings {
        last_seen_retention: Duration::from_secs(45),
        ..no_grace()
    };
    let k = Kit::with(Kind::Redis, settings).await;
    let b = k.node("node-b");
    k.open("1", "s1").await;
    k.close("1", "s1").await;
    k.advance(Duration::from_secs(46)).await;
    b.renew_node_lease(0).await.unwrap();
    // Another node's sweep deletes the record: node-a's own sweep, which compacts its list,
    // has not run since.
    assert_eq!(b.sweep().await.unwrap().records_deleted, 1);
    k.open("1", "s2").await;
    k.sweep().await;
    let check = k.store.repair(RepairMode::CHECK).await.unwrap();
    assert!(check.is_clean(), "{check:?}");
    let prefix = k.redis().unwrap().key_prefix().to_string();
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg(format!("{prefix}node:node-a:users"))
        .arg(0)
        .arg(-1)
        .query_async(&mut raw_redis().await)
        .await
        .unwrap();
    assert_eq!(list, ["1"], "one entry per user and node");
}
