//! The backend's reports on both stores: online history per UTC day, the inactive report and
//! nearby. Each scenario is an `async fn(Kind)` run on memory and on Redis, like the
//! conformance suite; `nearby_answers_the_same_on_both_stores` runs one population on both
//! at once and compares the answers.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use presence_core::history::{DAY_MS, parse_day};
use presence_core::time::parse_rfc3339;
use presence_core::*;

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Kind::Memory).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Kind::Redis).await })*
        }
    };
}

on_both_stores!(
    history_splits_a_presence_at_midnight_and_counts_the_open_one_to_now,
    history_keeps_a_presence_going_across_reloads_and_second_devices,
    history_of_a_reaped_node_ends_at_the_reap,
    history_days_past_retention_are_pruned_by_the_sweep,
    inactive_pages_oldest_first_through_ties_and_departures,
    nearby_finds_present_visible_users_nearest_first,
    nearby_with_an_org_sees_only_that_org,
);

fn at(rfc3339: &str) -> Millis {
    parse_rfc3339(rfc3339).expect("a time")
}

fn day(s: &str) -> Day {
    parse_day(s).expect("a date")
}

/// Seconds present per day from `first` to `last`.
async fn history(k: &Kit, user: &str, first: &str, last: &str) -> Vec<i64> {
    k.store
        .history(&uid(user), day(first), day(last))
        .await
        .expect("history")
        .into_iter()
        .map(|ms| ms / 1000)
        .collect()
}

/// Moves the clock to `to` (the kit's node renews its lease), and sweeps.
async fn at_time(k: &Kit, to: &str) {
    let now = k.now();
    let to = at(to);
    assert!(to >= now, "time only moves forward");
    k.advance(Duration::from_millis((to - now) as u64)).await;
}

async fn history_splits_a_presence_at_midnight_and_counts_the_open_one_to_now(kind: Kind) {
    let k = Kit::new(kind).await;
    at_time(&k, "2024-11-26T23:00:00Z").await;
    k.open("1", "a").await;
    at_time(&k, "2024-11-27T00:30:00Z").await;
    assert_eq!(
        history(&k, "1", "2024-11-25", "2024-11-27").await,
        [0, 3600, 1800],
        "a presence still going on counts up to now, split at midnight"
    );
    k.close("1", "a").await;
    at_time(&k, "2024-11-27T00:30:03Z").await;
    assert_eq!(
        history(&k, "1", "2024-11-26", "2024-11-27").await,
        [3600, 1800],
        "in the grace it counts up to the close"
    );
    at_time(&k, "2024-11-27T00:31:00Z").await;
    k.sweep().await;
    assert_eq!(k.status("1").await, Some(Status::Offline));
    assert_eq!(
        history(&k, "1", "2024-11-26", "2024-11-28").await,
        [3600, 1800, 0],
        "the ended presence is written, up to the last close: the grace does not count"
    );
    at_time(&k, "2024-11-28T10:00:00Z").await;
    k.open("1", "b").await;
    at_time(&k, "2024-11-28T10:00:42Z").await;
    assert_eq!(
        history(&k, "1", "2024-11-27", "2024-11-28").await,
        [1800, 42]
    );
    assert_eq!(
        history(&k, "2", "2024-11-27", "2024-11-28").await,
        [0, 0],
        "a user never seen has an empty history"
    );
}

async fn history_keeps_a_presence_going_across_reloads_and_second_devices(kind: Kind) {
    let k = Kit::new(kind).await;
    at_time(&k, "2024-11-28T09:00:00Z").await;
    k.open("1", "a").await;
    at_time(&k, "2024-11-28T09:10:00Z").await;
    k.open("1", "b").await;
    at_time(&k, "2024-11-28T09:20:00Z").await;
    // The first session closes while the second goes on: the presence began at 09:00 still.
    k.close("1", "a").await;
    at_time(&k, "2024-11-28T09:30:00Z").await;
    k.close("1", "b").await;
    at_time(&k, "2024-11-28T09:30:02Z").await;
    // A reload within the grace: the same presence.
    k.open("1", "c").await;
    at_time(&k, "2024-11-28T10:00:00Z").await;
    assert_eq!(
        history(&k, "1", "2024-11-28", "2024-11-28").await,
        [3600],
        "one presence from 09:00, the reload's gap included"
    );
    k.close("1", "c").await;
    at_time(&k, "2024-11-28T10:01:00Z").await;
    k.sweep().await;
    assert_eq!(history(&k, "1", "2024-11-28", "2024-11-28").await, [3600]);
}

async fn history_of_a_reaped_node_ends_at_the_reap(kind: Kind) {
    let k = Kit::new(kind).await;
    at_time(&k, "2024-11-28T12:00:00Z").await;
    let b = k.node("node-b");
    b.renew_node_lease(0).await.unwrap();
    k.open_with(&b, "1", "a", DeviceKind::Web, None, None).await;
    // node-b never renews again: its sessions end a lease after its last renewal.
    at_time(&k, "2024-11-28T12:10:00Z").await;
    k.sweep().await;
    assert_eq!(k.status("1").await, Some(Status::Offline));
    let seen = k.view("1").await.unwrap().last_seen.and_then(LastSeen::at);
    let expected = (seen.expect("last seen") - at("2024-11-28T12:00:00Z")) / 1000;
    assert_eq!(
        history(&k, "1", "2024-11-28", "2024-11-28").await,
        [expected]
    );
    assert!(expected >= 15, "at least the node lease: {expected}");
}

async fn history_days_past_retention_are_pruned_by_the_sweep(kind: Kind) {
    let k = Kit::with(
        kind,
        StoreSettings {
            history_retention: Duration::from_secs(3 * 86_400),
            offline_grace: Duration::ZERO,
            ..Default::default()
        },
    )
    .await;
    at_time(&k, "2024-11-28T10:00:00Z").await;
    k.open("1", "a").await;
    at_time(&k, "2024-11-29T01:00:00Z").await;
    k.close("1", "a").await;
    k.open("2", "a").await;
    at_time(&k, "2024-11-29T02:00:00Z").await;
    k.close("2", "a").await;
    assert_eq!(k.sweep().await.history_pruned, 0, "nothing is old yet");
    // Three days kept: on Dec 1 those are Nov 29, Nov 30 and Dec 1.
    at_time(&k, "2024-12-01T00:00:00Z").await;
    assert_eq!(k.sweep().await.history_pruned, 1, "user 1's Nov 28 expired");
    assert_eq!(
        history(&k, "1", "2024-11-28", "2024-11-29").await,
        [0, 3600]
    );
    assert_eq!(
        history(&k, "2", "2024-11-28", "2024-11-29").await,
        [0, 3600]
    );
    at_time(&k, "2024-12-02T00:00:00Z").await;
    assert_eq!(k.sweep().await.history_pruned, 2, "both users' Nov 29");
    assert_eq!(history(&k, "1", "2024-11-28", "2024-11-29").await, [0, 0]);
    assert_eq!(k.sweep().await.history_pruned, 0, "nothing left to prune");
    if let Some(r) = k.redis() {
        let mut raw = raw_redis().await;
        let left = scan_keys(&mut raw, &format!("{}history*", r.key_prefix())).await;
        assert!(left.is_empty(), "no history keys left: {left:?}");
    }
}

/// The whole inactive report, `limit` at a time.
async fn inactive_ids(k: &Kit, before: Millis, limit: usize) -> Vec<(String, Millis)> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = k
            .store
            .inactive(before, limit, cursor.as_ref())
            .await
            .expect("inactive");
        assert!(page.users.len() <= limit);
        out.extend(
            page.users
                .into_iter()
                .map(|u| (u.user.to_string(), u.last_seen)),
        );
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

async fn inactive_pages_oldest_first_through_ties_and_departures(kind: Kind) {
    let k = Kit::with(kind, no_grace()).await;
    // u1 leaves first; u2, u3, u4 together (a tie, ordered by id); u5 later; u6 stays.
    for u in ["u1", "u2", "u3", "u4", "u5", "u6"] {
        k.open(u, "a").await;
    }
    let t1 = k.now();
    k.close("u1", "a").await;
    k.advance(Duration::from_secs(60)).await;
    let t2 = k.now();
    for u in ["u3", "u4", "u2"] {
        k.close(u, "a").await;
    }
    k.advance(Duration::from_secs(60)).await;
    let t3 = k.now();
    k.close("u5", "a").await;
    k.advance(Duration::from_secs(60)).await;
    let all = vec![
        ("u1".to_string(), t1),
        ("u2".to_string(), t2),
        ("u3".to_string(), t2),
        ("u4".to_string(), t2),
        ("u5".to_string(), t3),
    ];
    for limit in [1, 2, 3, 10] {
        assert_eq!(inactive_ids(&k, k.now(), limit).await, all, "limit {limit}");
    }
    assert_eq!(
        inactive_ids(&k, t3, 2).await,
        all[..4],
        "last seen strictly before the time"
    );
    assert!(inactive_ids(&k, t1, 2).await.is_empty());

    // The cursor's user comes back between pages: the next page neither skips nor repeats.
    let first = k.store.inactive(k.now(), 2, None).await.unwrap();
    assert_eq!(first.users.len(), 2);
    let cursor = first.next_cursor.expect("more");
    assert_eq!(cursor.user.as_str(), "u2");
    k.open("u2", "b").await;
    let rest = k.store.inactive(k.now(), 10, Some(&cursor)).await.unwrap();
    let ids: Vec<&str> = rest.users.iter().map(|u| u.user.as_str()).collect();
    assert_eq!(ids, ["u3", "u4", "u5"]);
    assert!(rest.next_cursor.is_none());
    // The same in the middle of the tie: u3 comes back after a page ending at it.
    let first = k.store.inactive(k.now(), 2, None).await.unwrap();
    let cursor = first.next_cursor.expect("more");
    assert_eq!(
        (first.users[1].user.as_str(), cursor.user.as_str()),
        ("u3", "u3")
    );
    k.open("u3", "b").await;
    let rest = k.store.inactive(k.now(), 1, Some(&cursor)).await.unwrap();
    let ids: Vec<&str> = rest.users.iter().map(|u| u.user.as_str()).collect();
    assert_eq!(ids, ["u4"]);
    assert_eq!(
        rest.next_cursor.map(|c| c.user.to_string()).as_deref(),
        Some("u4")
    );
}

fn loc(lat: f64, lon: f64) -> Location {
    Location::new(lat, lon).expect("a location")
}

/// Berlin, and points around it at known offsets.
const BERLIN: (f64, f64) = (52.520_008, 13.404_954);

async fn locate(k: &Kit, user: &str, lat: f64, lon: f64) {
    let a = k
        .store
        .apply(&uid(user), Change::SetLocation(Some(loc(lat, lon))))
        .await
        .expect("set location");
    assert!(a.event.is_none(), "a location is not part of the view");
}

async fn nearby(k: &Kit, radius_m: f64, org_id: Option<&str>, limit: usize) -> Vec<(String, f64)> {
    k.store
        .nearby(&NearbyQuery {
            at: loc(BERLIN.0, BERLIN.1),
            radius_m,
            org: org_id.map(org),
            limit,
        })
        .await
        .expect("nearby")
        .into_iter()
        .map(|n| (n.view.user_id.to_string(), n.distance_m))
        .collect()
}

fn ids(found: &[(String, f64)]) -> Vec<&str> {
    found.iter().map(|(u, _)| u.as_str()).collect()
}

async fn nearby_finds_present_visible_users_nearest_first(kind: Kind) {
    let k = Kit::with(kind, no_grace()).await;
    for u in ["near", "mid", "far", "away"] {
        k.open(u, "a").await;
    }
    // About 111 m, 1.1 km and 11 km north, and 200 km away.
    locate(&k, "mid", BERLIN.0 + 0.01, BERLIN.1).await;
    locate(&k, "near", BERLIN.0 + 0.001, BERLIN.1).await;
    locate(&k, "far", BERLIN.0 + 0.1, BERLIN.1).await;
    locate(&k, "away", BERLIN.0 + 1.8, BERLIN.1).await;
    let found = nearby(&k, 20_000.0, None, 10).await;
    assert_eq!(ids(&found), ["near", "mid", "far"]);
    assert!((found[0].1 - 111.2).abs() < 1.0, "{found:?}");
    assert!((found[1].1 - 1112.2).abs() < 2.0, "{found:?}");
    assert_eq!(ids(&nearby(&k, 20_000.0, None, 2).await), ["near", "mid"]);
    assert_eq!(ids(&nearby(&k, 500.0, None, 10).await), ["near"]);

    // Moving is one write; stopping sharing leaves the results.
    locate(&k, "far", BERLIN.0 + 0.0001, BERLIN.1).await;
    assert_eq!(
        ids(&nearby(&k, 20_000.0, None, 10).await),
        ["far", "near", "mid"]
    );
    k.store
        .apply(&uid("far"), Change::SetLocation(None))
        .await
        .unwrap();
    assert_eq!(ids(&nearby(&k, 20_000.0, None, 10).await), ["near", "mid"]);

    // Invisible leaves the results, and comes back with them when visible again.
    let invisible = |on| Change::SetStatus {
        away: false,
        invisible: Some(on),
    };
    k.store.apply(&uid("near"), invisible(true)).await.unwrap();
    assert_eq!(ids(&nearby(&k, 20_000.0, None, 10).await), ["mid"]);
    k.store.apply(&uid("near"), invisible(false)).await.unwrap();
    assert_eq!(ids(&nearby(&k, 20_000.0, None, 10).await), ["near", "mid"]);
    // Away users are present: still found.
    k.store.apply(&uid("mid"), Change::away()).await.unwrap();
    assert_eq!(ids(&nearby(&k, 20_000.0, None, 10).await), ["near", "mid"]);

    // Going offline forgets the location: a new presence shares none until it says so.
    k.close("near", "a").await;
    assert_eq!(ids(&nearby(&k, 20_000.0, None, 10).await), ["mid"]);
    locate(&k, "near", BERLIN.0, BERLIN.1).await;
    assert_eq!(
        ids(&nearby(&k, 20_000.0, None, 10).await),
        ["mid"],
        "a location set while offline is ignored"
    );
    k.open("near", "b").await;
    assert_eq!(ids(&nearby(&k, 20_000.0, None, 10).await), ["mid"]);
    locate(&k, "near", BERLIN.0, BERLIN.1).await;
    let found = nearby(&k, 20_000.0, None, 10).await;
    assert_eq!(ids(&found), ["near", "mid"]);
    assert!(found[0].1 < 1.0, "at the point itself: {found:?}");
}

async fn nearby_with_an_org_sees_only_that_org(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open_with(&k.store, "a1", "s", DeviceKind::Web, None, Some("A"))
        .await;
    k.open_with(&k.store, "b1", "s", DeviceKind::Web, None, Some("B"))
        .await;
    k.open_with(&k.store, "none", "s", DeviceKind::Web, None, None)
        .await;
    locate(&k, "a1", BERLIN.0 + 0.002, BERLIN.1).await;
    locate(&k, "b1", BERLIN.0 + 0.001, BERLIN.1).await;
    locate(&k, "none", BERLIN.0 + 0.003, BERLIN.1).await;
    assert_eq!(
        ids(&nearby(&k, 5_000.0, None, 10).await),
        ["b1", "a1", "none"]
    );
    assert_eq!(ids(&nearby(&k, 5_000.0, Some("A"), 10).await), ["a1"]);
    assert_eq!(ids(&nearby(&k, 5_000.0, Some("B"), 10).await), ["b1"]);
    // Changing org moves the user between the org's results.
    k.store
        .apply(&uid("b1"), Change::SetOrg(Some(org("A"))))
        .await
        .unwrap();
    assert_eq!(ids(&nearby(&k, 5_000.0, Some("A"), 10).await), ["b1", "a1"]);
    assert!(nearby(&k, 5_000.0, Some("B"), 10).await.is_empty());
    // Privacy "org" hides the user from others: out of the lists, so out of nearby too.
    k.store
        .apply(
            &uid("a1"),
            Change::SetPrivacy {
                presence: Some(PresenceVisibility::Org),
                last_seen: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&nearby(&k, 5_000.0, Some("A"), 10).await), ["b1"]);
    assert_eq!(ids(&nearby(&k, 5_000.0, None, 10).await), ["b1", "none"]);
}

/// A small deterministic spread of points around Berlin (no two at the same distance).
fn population() -> Vec<(String, f64, f64, Option<&'static str>)> {
    (0..60)
        .map(|i| {
            let f = i as f64;
            let lat = BERLIN.0 + ((f * 37.0) % 61.0 - 30.0) * 0.0041 + f * 1e-6;
            let lon = BERLIN.1 + ((f * 53.0) % 67.0 - 33.0) * 0.0057;
            let org = ["A", "B", "C"][i % 3];
            (format!("p{i}"), lat, lon, (i % 4 != 0).then_some(org))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nearby_answers_the_same_on_both_stores() {
    let memory = Kit::new(Kind::Memory).await;
    let redis = Kit::new(Kind::Redis).await;
    for k in [&memory, &redis] {
        for (u, lat, lon, o) in population() {
            k.open_with(&k.store, &u, "s", DeviceKind::Web, None, o)
                .await;
            locate(k, &u, lat, lon).await;
        }
        // One leaves (after the grace), one hides: both stores must drop the same users.
        k.close("p7", "s").await;
        k.advance(Duration::from_secs(6)).await;
        k.sweep().await;
        k.store
            .apply(
                &uid("p11"),
                Change::SetStatus {
                    away: false,
                    invisible: Some(true),
                },
            )
            .await
            .unwrap();
    }
    let mut compared = 0;
    for radius in [300.0, 1_000.0, 2_500.0, 8_000.0, 30_000.0] {
        for org_id in [None, Some("A"), Some("C")] {
            for limit in [1, 5, 100] {
                let m = nearby(&memory, radius, org_id, limit).await;
                let r = nearby(&redis, radius, org_id, limit).await;
                assert_eq!(
                    ids(&m),
                    ids(&r),
                    "radius {radius} org {org_id:?} limit {limit}"
                );
                let dm: Vec<f64> = m.iter().map(|x| x.1).collect();
                let dr: Vec<f64> = r.iter().map(|x| x.1).collect();
                assert_eq!(dm, dr, "the same distances, to the centimetre");
                compared += m.len();
            }
        }
    }
    assert!(
        compared > 100,
        "the queries found users to compare: {compared}"
    );
    // On the edges Redis GEO indexes: the last meridian and the northernmost latitude. (Not
    // across the antimeridian: Redis GEO's search boxes do not wrap around it, so a user at
    // -179.99999 is not found from 180 on Redis, and the README says so.)
    let edge = presence_core::geo::LAT_LIMIT;
    for k in [&memory, &redis] {
        for (u, lat, lon) in [("e1", 0.0, 180.0), ("e3", edge, 180.0)] {
            k.open(u, "s").await;
            locate(k, u, lat, lon).await;
        }
    }
    for (lat, lon) in [(0.0, 180.0), (edge, 180.0), (10.0, 180.0)] {
        let mut answers = Vec::new();
        for k in [&memory, &redis] {
            let found = k
                .store
                .nearby(&NearbyQuery {
                    at: loc(lat, lon),
                    radius_m: 2_000_000.0,
                    org: None,
                    limit: 100,
                })
                .await
                .unwrap();
            answers.push(
                found
                    .into_iter()
                    .filter(|n| n.view.user_id.as_str().starts_with('e'))
                    .map(|n| (n.view.user_id.to_string(), n.distance_m))
                    .collect::<Vec<_>>(),
            );
        }
        assert!(!answers[0].is_empty(), "at {lat},{lon}");
        assert_eq!(answers[0], answers[1], "at {lat},{lon}");
    }
    let everyone: BTreeSet<String> = ids(&nearby(&redis, 30_000.0, None, 100).await)
        .into_iter()
        .map(String::from)
        .collect();
    assert!(!everyone.contains("p7") && !everyone.contains("p11"));
}

#[test]
fn the_days_of_the_tests_are_what_they_say() {
    assert_eq!(
        day("2024-11-27") * DAY_MS,
        at("2024-11-27T00:00:00Z"),
        "a day number times a day is its midnight"
    );
}

// --- The memory store's snapshots ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_store_with_a_data_dir_keeps_last_seen_privacy_and_history_across_a_restart() {
    use std::sync::Arc;

    use presence_store::MemoryStore;

    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(at("2024-11-28T10:00:00Z"));
    let shared: SharedClock = Arc::new(clock.clone());
    let settings = no_grace();
    let first = MemoryStore::with_data_dir(node("a"), shared.clone(), settings.clone(), dir.path())
        .unwrap();
    let open = |user: &str| OpenSession {
        zone: Some(zone("10")),
        ..request(user, "s")
    };
    first.open_session(open("left")).await.unwrap();
    first.open_session(open("stays")).await.unwrap();
    first
        .apply(
            &uid("stays"),
            Change::SetPrivacy {
                presence: Some(PresenceVisibility::Org),
                last_seen: Some(LastSeenVisibility::Hidden),
            },
        )
        .await
        .unwrap();
    clock.set(at("2024-11-28T11:00:00Z"));
    first.close_session(&uid("left"), &sid("s")).await.unwrap();
    let left = first.view(&uid("left")).await.unwrap().unwrap();
    clock.set(at("2024-11-28T12:00:00Z"));
    first.persist().await.unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir.path().join("presence-memory.json")).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "readable by the node only"
        );
    }
    // The process dies an hour later; nothing after the snapshot is kept.
    clock.set(at("2024-11-28T13:00:00Z"));
    first.open_session(open("late")).await.unwrap();
    drop(first);

    let again = MemoryStore::with_data_dir(node("b"), shared, settings, dir.path()).unwrap();
    assert_eq!(
        again.view(&uid("left")).await.unwrap(),
        Some(left),
        "an offline user comes back as they were"
    );
    assert_eq!(
        again.view(&uid("late")).await.unwrap(),
        None,
        "after the snapshot"
    );
    let stays = again.view(&uid("stays")).await.unwrap().unwrap();
    assert_eq!(
        stays.status,
        Status::Offline,
        "present users left with the process"
    );
    assert_eq!(
        stays.last_seen.and_then(LastSeen::at),
        Some(at("2024-11-28T12:00:00Z")),
        "last seen at the snapshot"
    );
    assert!(stays.version > 1, "the going offline moved the version on");
    assert_eq!(
        stays.privacy.map(|p| p.presence),
        Some(PresenceVisibility::Org),
        "privacy is kept"
    );
    let onlooker = stays.as_seen_by(Onlooker::Other, clock.now_ms());
    assert_eq!(onlooker.last_seen, None, "and still applies to onlookers");
    let day = day("2024-11-28");
    assert_eq!(
        again.history(&uid("left"), day, day).await.unwrap(),
        [3_600_000]
    );
    assert_eq!(
        again.history(&uid("stays"), day, day).await.unwrap(),
        [7_200_000],
        "a presence cut by the restart counts up to the snapshot"
    );
    assert_eq!(again.counts(&[Scope::Global]).await.unwrap()[0].total, 0);
    let inactive = again
        .inactive(at("2024-11-28T14:00:00Z"), 10, None)
        .await
        .unwrap();
    assert_eq!(inactive.users.len(), 2, "the last-seen index is rebuilt");
    assert!(
        again
            .read_feed(FeedId::ZERO, 10)
            .await
            .unwrap()
            .events
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_cannot_be_read_stops_the_store_instead_of_starting_empty() {
    use std::sync::Arc;

    use presence_store::MemoryStore;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("presence-memory.json"), b"{not json").unwrap();
    let clock: SharedClock = Arc::new(ManualClock::new(T0));
    let e =
        MemoryStore::with_data_dir(node("a"), clock.clone(), no_grace(), dir.path()).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt(_)), "{e}");
    // Without a data directory, persisting is nothing to do.
    MemoryStore::new(node("a"), clock, no_grace())
        .persist()
        .await
        .unwrap();
}
