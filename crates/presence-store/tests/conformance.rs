//! One conformance suite, run against both stores: the seed's own 14 scenarios, every row of
//! the SPEC §3 table, two nodes on one store, scopes and pages, and the feed.
//! Each scenario is an `async fn(Kind)`; `conformance!` instantiates it for memory and Redis,
//! and checks every store the scenario made afterwards (`checked_scenario`: the feed replayed
//! from empty gives the current views, and a repair check finds nothing off).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use presence_core::*;

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::checked_scenario(super::$name(super::Kind::Memory)).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::checked_scenario(super::$name(super::Kind::Redis)).await })*
        }
    };
}

conformance!(
    a_reasserted_session_keeps_invisible_and_a_new_presence_does_not,
    seed_set_online,
    seed_set_offline,
    seed_set_away,
    seed_update_activity,
    seed_get_status,
    seed_get_status_not_found,
    seed_get_online_users_global,
    seed_get_online_users_with_zone,
    seed_get_online_count,
    seed_check_and_set_away,
    seed_check_and_set_away_no_change,
    seed_cleanup_stale_presence,
    seed_singleton_two_handles_share_state,
    seed_status_enum_in_views_and_events,
    another_session_counts_as_activity_and_devices,
    activity_reverts_auto_away_but_not_manual_away,
    manual_away_sticks_across_reconnects_until_set_online,
    quick_reconnect_within_grace_emits_nothing,
    zero_grace_goes_offline_at_close,
    rest_lease_expires_after_online_ttl_and_renewal_extends_it,
    last_seen_retention_deletes_the_record,
    zone_and_org_moves_leave_no_trace,
    sessions_per_user_limit_refuses_and_changes_nothing,
    duplicate_session_and_unknown_close_change_nothing,
    metadata_replaces_and_clears,
    offline_user_activity_is_ignored,
    two_nodes_keep_a_user_online_until_both_close,
    dead_node_is_reaped_once_by_any_node,
    nodes_report_their_sessions_and_renewals,
    versions_increase_strictly_and_one_event_per_change,
    feed_resumes_after_any_id_in_order,
    feed_reports_reset_once_trimmed,
    wait_feed_wakes_on_a_new_event,
    list_pages_cover_everyone_once_with_ties,
    status_filter_narrows_lists_and_counts,
    auto_away_handles_more_users_than_one_batch,
    batch_views_keep_order,
    a_node_renewing_after_its_lease_lapsed_is_told_lost,
    a_resume_from_before_the_store_lost_its_data_resets,
    closing_a_heartbeat_never_ends_a_websocket,
    node_session_counts_follow_open_close_reap_and_reopen,
    custom_status_set_and_clear_are_one_event_each_and_leave_status_alone,
    custom_status_survives_reconnects_the_grace_and_offline,
    custom_status_expires_exactly_on_time_with_one_event,
    a_replaced_custom_status_is_not_cleared_by_the_old_expiry,
    typing_is_written_read_and_published_without_touching_presence,
    typing_in_a_full_conversation_is_refused_until_an_entry_expires,
    the_bus_carries_published_messages_to_every_handle,
    sessions_list_device_node_and_connect_time,
    ending_one_of_two_sessions_leaves_the_other_with_one_event,
    an_ended_websocket_session_is_not_reopened_until_its_mark_expires,
    ending_the_last_session_starts_the_grace_like_a_clean_close,
    ending_an_unknown_session_is_not_found_and_changes_nothing,
);

/// The events of one call, checked to be exactly one.
fn one(a: &Applied) -> &PresenceEvent {
    a.event.as_ref().expect("one event")
}

// --- The seed's scenarios ---------------------------------------------------------------

async fn seed_set_online(kind: Kind) {
    let k = Kit::new(kind).await;
    let a = k
        .open_with(
            &k.store,
            "1",
            "s1",
            DeviceKind::Web,
            Some("10"),
            Some("100"),
        )
        .await;
    assert_eq!(a.view.status, Status::Online);
    assert_eq!(a.view.zone_id, Some(zone("10")));
    assert_eq!(a.view.org_id, Some(org("100")));
    assert_eq!(a.view.last_activity, Some(T0));
    let e = one(&a);
    assert_eq!(
        (e.prev_status, e.user.status),
        (Status::Offline, Status::Online)
    );
    for scope in [
        Scope::Global,
        Scope::Zone(zone("10")),
        Scope::Org(org("100")),
    ] {
        assert_eq!(k.count(scope.clone()).await.total, 1, "{scope}");
        assert_eq!(k.list_ids(scope).await, ["1"]);
    }
}

async fn seed_set_offline(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open_with(
        &k.store,
        "1",
        "s1",
        DeviceKind::Web,
        Some("10"),
        Some("100"),
    )
    .await;
    let head = k.head().await;
    k.advance(Duration::from_secs(1)).await;
    let closed_at = k.now();
    let a = k.close("1", "s1").await;
    assert_eq!(
        a.view.status,
        Status::Online,
        "still online during the grace"
    );
    assert!(a.event.is_none());
    k.advance(k.settings.offline_grace).await;
    assert_eq!(k.sweep().await.grace_expired, 1);
    let v = k.view("1").await.unwrap();
    assert_eq!(v.status, Status::Offline);
    assert_eq!(
        v.last_seen,
        Some(LastSeen::At(closed_at)),
        "last seen is when the last session closed"
    );
    assert!(v.devices.is_empty());
    for scope in [
        Scope::Global,
        Scope::Zone(zone("10")),
        Scope::Org(org("100")),
    ] {
        assert_eq!(k.count(scope.clone()).await.total, 0);
        assert!(k.list_ids(scope).await.is_empty());
    }
    let events = k.events_since(head).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].prev_status, events[0].user.status),
        (Status::Online, Status::Offline)
    );
}

async fn seed_set_away(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open("1", "s1").await;
    let a = k.store.apply(&uid("1"), Change::away()).await.unwrap();
    assert_eq!(
        (a.view.status, a.view.away_reason),
        (Status::Away, Some(AwayReason::Manual))
    );
    assert_eq!(one(&a).prev_status, Status::Online);
    assert_eq!(
        k.list_ids(Scope::Global).await,
        ["1"],
        "away users stay listed"
    );
    assert_eq!(
        k.count(Scope::Global).await,
        ScopeCount { total: 1, away: 1 }
    );
}

async fn seed_update_activity(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open("1", "s1").await;
    k.open("2", "s2").await;
    assert_eq!(
        k.list_ids(Scope::Global).await,
        ["2", "1"],
        "ties: user id descending"
    );
    let head = k.head().await;
    k.advance(Duration::from_secs(10)).await;
    let events = k.activity("1").await;
    assert!(events.is_empty(), "activity alone is no event");
    let v = k.view("1").await.unwrap();
    assert_eq!(v.last_activity, Some(T0 + 10_000));
    assert_eq!(v.version, 1);
    assert_eq!(
        k.list_ids(Scope::Global).await,
        ["1", "2"],
        "the sorted-set score follows activity"
    );
    assert!(k.events_since(head).await.is_empty());
}

async fn seed_get_status(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open_with(
        &k.store,
        "123",
        "s1",
        DeviceKind::Desktop,
        Some("10"),
        Some("100"),
    )
    .await;
    let v = k.view("123").await.unwrap();
    assert_eq!(v.user_id, uid("123"));
    assert_eq!(v.status, Status::Online);
    assert_eq!(v.away_reason, None);
    assert_eq!(v.last_seen, None);
    assert_eq!(v.devices.iter().collect::<Vec<_>>(), [DeviceKind::Desktop]);
    assert_eq!(v.version, 1);
    assert_eq!(v.updated_at, Some(T0));
    assert_eq!(v.metadata, None);
    assert!(!v.invisible);
}

async fn seed_get_status_not_found(kind: Kind) {
    let k = Kit::new(kind).await;
    assert_eq!(k.view("nobody").await, None);
    assert!(matches!(
        k.store.apply(&uid("nobody"), Change::away()).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        k.store.close_session(&uid("nobody"), &sid("s")).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(k.view("nobody").await, None, "refusals create nothing");
}

async fn seed_get_online_users_global(kind: Kind) {
    let k = Kit::new(kind).await;
    for u in ["1", "2", "3"] {
        k.open(u, "s").await;
        k.advance(Duration::from_secs(1)).await;
    }
    let page = k.list(Scope::Global, 100).await;
    let ids: Vec<_> = page.users.iter().map(|v| v.user_id.to_string()).collect();
    assert_eq!(ids, ["3", "2", "1"], "most recent activity first");
    assert_eq!(page.count, 3);
    assert_eq!(page.next_cursor, None);
    let page = k.list(Scope::Global, 2).await;
    assert_eq!(page.users.len(), 2);
    assert_eq!(page.count, 3);
    assert!(page.next_cursor.is_some());
}

async fn seed_get_online_users_with_zone(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open_with(&k.store, "1", "s", DeviceKind::Web, Some("10"), None)
        .await;
    k.open_with(&k.store, "2", "s", DeviceKind::Web, Some("11"), None)
        .await;
    k.open_with(&k.store, "3", "s", DeviceKind::Web, Some("10"), None)
        .await;
    assert_eq!(k.list_ids(Scope::Zone(zone("10"))).await, ["3", "1"]);
    assert_eq!(k.list_ids(Scope::Zone(zone("11"))).await, ["2"]);
    assert!(k.list_ids(Scope::Zone(zone("12"))).await.is_empty());
}

async fn seed_get_online_count(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open_with(&k.store, "1", "s", DeviceKind::Web, Some("10"), Some("100"))
        .await;
    k.open_with(&k.store, "2", "s", DeviceKind::Web, Some("10"), Some("101"))
        .await;
    k.open_with(&k.store, "3", "s", DeviceKind::Web, None, Some("100"))
        .await;
    let counts = k
        .store
        .counts(&[
            Scope::Global,
            Scope::Zone(zone("10")),
            Scope::Org(org("100")),
            Scope::Zone(zone("99")),
        ])
        .await
        .unwrap();
    let totals: Vec<u64> = counts.iter().map(|c| c.total).collect();
    assert_eq!(totals, [3, 2, 2, 0]);
}

async fn seed_check_and_set_away(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open("1", "s").await;
    let head = k.head().await;
    k.advance(k.settings.away_after).await;
    assert_eq!(k.sweep().await.auto_away, 1);
    let v = k.view("1").await.unwrap();
    assert_eq!(
        (v.status, v.away_reason),
        (Status::Away, Some(AwayReason::Auto))
    );
    let events = k.events_since(head).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].prev_status, Status::Online);
    assert_eq!(
        k.sweep().await.auto_away,
        0,
        "a second sweep changes nothing"
    );
    assert_eq!(k.events_since(head).await.len(), 1);
}

async fn seed_check_and_set_away_no_change(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open("1", "s").await;
    k.advance(k.settings.away_after - Duration::from_secs(1))
        .await;
    k.activity("1").await;
    k.advance(Duration::from_secs(2)).await;
    let head = k.head().await;
    assert_eq!(k.sweep().await.auto_away, 0);
    assert_eq!(k.status("1").await, Some(Status::Online));
    assert!(k.events_since(head).await.is_empty());
    // The user who was active is found in a later window once their own time comes.
    k.advance(k.settings.away_after).await;
    assert_eq!(k.sweep().await.auto_away, 1);
}

async fn seed_cleanup_stale_presence(kind: Kind) {
    // The seed's cleanup removed users whose record had expired; here the store's sweep ends
    // sessions whose node or REST lease lapsed, and they leave counts and lists at once.
    let k = Kit::new(kind).await;
    let b = k.node("node-b");
    b.renew_node_lease(0).await.unwrap();
    k.store.renew_node_lease(0).await.unwrap();
    k.open_with(&b, "crashed", "s", DeviceKind::Web, Some("10"), None)
        .await;
    k.store
        .open_session(OpenSession {
            device: DeviceKind::Other,
            zone: Some(zone("10")),
            leased: true,
            invisible: false,
            ..request("rest", "h")
        })
        .await
        .unwrap();
    k.open_with(&k.store, "alive", "s", DeviceKind::Web, Some("10"), None)
        .await;
    assert_eq!(k.count(Scope::Zone(zone("10"))).await.total, 3);
    // Only node-a renews; node-b's lease and the REST lease run out.
    k.advance(k.settings.online_ttl + Duration::from_secs(1))
        .await;
    k.store.renew_node_lease(0).await.unwrap();
    k.activity("alive").await;
    let r = k.sweep().await;
    assert_eq!(
        (r.leases_expired, r.node_sessions_reaped, r.nodes_reaped),
        (1, 1, 1)
    );
    assert_eq!(k.list_ids(Scope::Zone(zone("10"))).await, ["alive"]);
    assert_eq!(k.count(Scope::Global).await.total, 1);
    assert_eq!(k.status("crashed").await, Some(Status::Offline));
    assert_eq!(k.status("rest").await, Some(Status::Offline));
}

async fn seed_singleton_two_handles_share_state(kind: Kind) {
    // The seed's singleton test made sure every caller shared one manager; here every handle
    // on one store (memory handles, Redis connections) sees the same presence.
    let k = Kit::new(kind).await;
    let other = k.node("node-a");
    k.open("1", "s").await;
    assert_eq!(
        other.view(&uid("1")).await.unwrap().unwrap().status,
        Status::Online
    );
    other.apply(&uid("1"), Change::away()).await.unwrap();
    assert_eq!(k.status("1").await, Some(Status::Away));
}

async fn seed_status_enum_in_views_and_events(kind: Kind) {
    let k = Kit::new(kind).await;
    let a = k.open("1", "s").await;
    let json = serde_json::to_value(one(&a)).unwrap();
    assert_eq!(json["type"], "presence");
    assert_eq!(json["user"]["status"], "online");
    assert_eq!(json["prev_status"], "offline");
    let a = k.store.apply(&uid("1"), Change::away()).await.unwrap();
    assert_eq!(serde_json::to_value(&a.view).unwrap()["status"], "away");
    assert_eq!(
        serde_json::to_value(&a.view).unwrap()["away_reason"],
        "manual"
    );
}

// --- SPEC §3 ------------------------------------------------------------------------

async fn another_session_counts_as_activity_and_devices(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open_with(&k.store, "1", "a", DeviceKind::Web, None, None)
        .await;
    k.advance(Duration::from_secs(5)).await;
    let same = k
        .open_with(&k.store, "1", "b", DeviceKind::Web, None, None)
        .await;
    assert!(same.event.is_none(), "same device set: no event");
    assert_eq!(
        same.view.last_activity,
        Some(T0 + 5000),
        "it counts as activity"
    );
    let phone = k
        .open_with(&k.store, "1", "c", DeviceKind::Mobile, None, None)
        .await;
    assert_eq!(
        one(&phone).user.devices.iter().collect::<Vec<_>>(),
        [DeviceKind::Web, DeviceKind::Mobile]
    );
    let closed = k.close("1", "c").await;
    assert_eq!(
        one(&closed).user.devices.iter().collect::<Vec<_>>(),
        [DeviceKind::Web]
    );
    assert!(k.close("1", "b").await.event.is_none());
}

async fn activity_reverts_auto_away_but_not_manual_away(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open("auto", "s").await;
    k.open("manual", "s").await;
    k.store.apply(&uid("manual"), Change::away()).await.unwrap();
    k.advance(k.settings.away_after).await;
    assert_eq!(
        k.sweep().await.auto_away,
        1,
        "only the online user turns auto-away"
    );
    let head = k.head().await;
    k.advance(Duration::from_secs(1)).await;
    let at = k.now();
    let batch = [
        Activity {
            user: uid("auto"),
            at,
        },
        Activity {
            user: uid("manual"),
            at,
        },
    ];
    let events = k.store.record_activity(&batch).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].user.user_id, uid("auto"));
    assert_eq!(
        (events[0].prev_status, events[0].user.status),
        (Status::Away, Status::Online)
    );
    let m = k.view("manual").await.unwrap();
    assert_eq!(
        (m.status, m.away_reason),
        (Status::Away, Some(AwayReason::Manual))
    );
    assert_eq!(
        m.last_activity,
        Some(at),
        "manual away still records activity"
    );
    assert_eq!(k.events_since(head).await.len(), 1);
}

async fn manual_away_sticks_across_reconnects_until_set_online(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open("1", "a").await;
    k.store.apply(&uid("1"), Change::away()).await.unwrap();
    k.close("1", "a").await;
    k.advance(k.settings.offline_grace).await;
    k.sweep().await;
    assert_eq!(k.status("1").await, Some(Status::Offline));
    let a = k.open("1", "b").await;
    assert_eq!(
        (a.view.status, a.view.away_reason),
        (Status::Away, Some(AwayReason::Manual))
    );
    assert_eq!(one(&a).prev_status, Status::Offline);
    let back = k.store.apply(&uid("1"), Change::online()).await.unwrap();
    assert_eq!(
        (back.view.status, back.view.away_reason),
        (Status::Online, None)
    );
    assert_eq!(one(&back).prev_status, Status::Away);
}

async fn quick_reconnect_within_grace_emits_nothing(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open("1", "a").await;
    let head = k.head().await;
    k.close("1", "a").await;
    k.advance(k.settings.offline_grace - Duration::from_millis(1))
        .await;
    k.sweep().await;
    k.open("1", "b").await;
    k.advance(k.settings.offline_grace * 2).await;
    k.sweep().await;
    assert_eq!(k.status("1").await, Some(Status::Online));
    assert!(
        k.events_since(head).await.is_empty(),
        "a page reload shows nothing"
    );
}

async fn zero_grace_goes_offline_at_close(kind: Kind) {
    let k = Kit::with(kind, no_grace()).await;
    k.open("1", "a").await;
    let a = k.close("1", "a").await;
    assert_eq!(a.view.status, Status::Offline);
    assert_eq!(one(&a).prev_status, Status::Online);
    assert_eq!(k.count(Scope::Global).await.total, 0);
}

async fn rest_lease_expires_after_online_ttl_and_renewal_extends_it(kind: Kind) {
    let k = Kit::new(kind).await;
    let open = OpenSession {
        device: DeviceKind::Other,
        leased: true,
        invisible: false,
        ..request("1", "h")
    };
    assert_eq!(
        k.store.open_session(open).await.unwrap().view.status,
        Status::Online
    );
    k.advance(k.settings.online_ttl - Duration::from_secs(1))
        .await;
    let until = k.store.renew_session(&uid("1"), &sid("h")).await.unwrap();
    assert_eq!(until, k.now() + k.settings.online_ttl.as_millis() as i64);
    k.advance(k.settings.online_ttl - Duration::from_secs(1))
        .await;
    k.activity("1").await;
    assert_eq!(k.sweep().await.leases_expired, 0);
    k.advance(Duration::from_secs(1)).await;
    let head = k.head().await;
    assert_eq!(k.sweep().await.leases_expired, 1);
    let v = k.view("1").await.unwrap();
    assert_eq!(v.status, Status::Offline, "no further grace after a lease");
    assert_eq!(k.events_since(head).await.len(), 1);
    assert!(matches!(
        k.store.renew_session(&uid("1"), &sid("h")).await,
        Err(StoreError::NoSuchSession(_))
    ));
    // A WebSocket session cannot be "renewed" as a lease.
    k.open("1", "ws").await;
    assert!(matches!(
        k.store.renew_session(&uid("1"), &sid("ws")).await,
        Err(StoreError::NoSuchSession(_))
    ));
}

async fn last_seen_retention_deletes_the_record(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open("old", "s").await;
    k.close("old", "s").await;
    k.advance(k.settings.offline_grace).await;
    k.sweep().await;
    k.advance(k.settings.last_seen_retention - Duration::from_secs(10))
        .await;
    k.open("recent", "s").await;
    k.close("recent", "s").await;
    k.advance(Duration::from_secs(10)).await;
    let r = k.sweep().await;
    assert_eq!(r.records_deleted, 1);
    assert_eq!(k.view("old").await, None);
    assert!(k.view("recent").await.is_some());
    // A user who comes back before retention is not deleted later for their old last seen.
    k.open("recent", "s2").await;
    k.advance(k.settings.last_seen_retention * 2).await;
    k.store.renew_node_lease(0).await.unwrap();
    k.activity("recent").await;
    assert_eq!(k.sweep().await.records_deleted, 0);
    assert!(k.view("recent").await.is_some());
}

async fn zone_and_org_moves_leave_no_trace(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open_with(&k.store, "1", "s", DeviceKind::Web, Some("10"), Some("100"))
        .await;
    let a = k
        .store
        .apply(&uid("1"), Change::SetZone(Some(zone("11"))))
        .await
        .unwrap();
    let e = one(&a);
    assert_eq!(
        (e.prev_zone_id.clone(), e.user.zone_id.clone()),
        (Some(zone("10")), Some(zone("11")))
    );
    assert_eq!(e.prev_status, Status::Online);
    let a = k
        .store
        .apply(&uid("1"), Change::SetOrg(None))
        .await
        .unwrap();
    assert_eq!(one(&a).prev_org_id, Some(org("100")));
    assert_eq!(k.count(Scope::Zone(zone("10"))).await.total, 0);
    assert_eq!(k.count(Scope::Org(org("100"))).await.total, 0);
    assert_eq!(k.list_ids(Scope::Zone(zone("11"))).await, ["1"]);
    // Reconnecting with a zone moves too, in the same single event.
    k.close("1", "s").await;
    let a = k
        .open_with(&k.store, "1", "t", DeviceKind::Web, Some("12"), None)
        .await;
    assert_eq!(one(&a).prev_zone_id, Some(zone("11")));
    assert_eq!(k.count(Scope::Zone(zone("11"))).await.total, 0);
    assert_eq!(k.count(Scope::Zone(zone("12"))).await.total, 1);
    // Moving to the zone one is in is no change.
    assert!(
        k.store
            .apply(&uid("1"), Change::SetZone(Some(zone("12"))))
            .await
            .unwrap()
            .event
            .is_none()
    );
    // Away users move their away count along.
    k.store.apply(&uid("1"), Change::away()).await.unwrap();
    k.store
        .apply(&uid("1"), Change::SetZone(Some(zone("13"))))
        .await
        .unwrap();
    assert_eq!(
        k.count(Scope::Zone(zone("12"))).await,
        ScopeCount::default()
    );
    assert_eq!(
        k.count(Scope::Zone(zone("13"))).await,
        ScopeCount { total: 1, away: 1 }
    );
}

async fn sessions_per_user_limit_refuses_and_changes_nothing(kind: Kind) {
    let k = Kit::with(
        kind,
        StoreSettings {
            sessions_per_user: 2,
            ..Default::default()
        },
    )
    .await;
    k.open("1", "a").await;
    k.open_with(&k.store, "1", "b", DeviceKind::Mobile, None, None)
        .await;
    let before = k.view("1").await;
    let head = k.head().await;
    let err = k
        .store
        .open_session(OpenSession {
            device: DeviceKind::Desktop,
            zone: Some(zone("9")),
            ..request("1", "c")
        })
        .await;
    assert!(
        matches!(
            err,
            Err(StoreError::Refused(TransitionError::TooManySessions {
                limit: 2
            }))
        ),
        "{err:?}"
    );
    assert_eq!(k.view("1").await, before);
    assert!(k.events_since(head).await.is_empty());
}

async fn duplicate_session_and_unknown_close_change_nothing(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open("1", "a").await;
    let before = k.view("1").await;
    let dup = k.store.open_session(OpenSession {
        device: DeviceKind::Mobile,
        ..request("1", "a")
    });
    assert!(matches!(
        dup.await,
        Err(StoreError::Refused(TransitionError::SessionExists(_)))
    ));
    let closed = k.close("1", "nope").await;
    assert!(closed.event.is_none());
    assert_eq!(Some(closed.view), before);
    assert_eq!(k.view("1").await, before);
}

async fn metadata_replaces_and_clears(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open("1", "a").await;
    let md: Metadata = serde_json::from_str(r#"{"any": "json", "n": [1, 2]}"#).unwrap();
    let a = k
        .store
        .apply(&uid("1"), Change::SetMetadata(Some(md.clone())))
        .await
        .unwrap();
    assert_eq!(one(&a).user.metadata, Some(md.clone()));
    assert!(
        k.store
            .apply(&uid("1"), Change::SetMetadata(Some(md)))
            .await
            .unwrap()
            .event
            .is_none()
    );
    let a = k
        .store
        .apply(&uid("1"), Change::SetMetadata(None))
        .await
        .unwrap();
    assert_eq!(a.view.metadata, None);
    assert!(a.event.is_some());
}

async fn offline_user_activity_is_ignored(kind: Kind) {
    let k = Kit::with(kind, no_grace()).await;
    k.open("1", "a").await;
    k.close("1", "a").await;
    let before = k.view("1").await;
    k.advance(Duration::from_secs(5)).await;
    let at = k.now();
    let events = k
        .store
        .record_activity(&[
            Activity { user: uid("1"), at },
            Activity {
                user: uid("ghost"),
                at,
            },
        ])
        .await
        .unwrap();
    assert!(events.is_empty());
    assert_eq!(k.view("1").await, before);
    assert_eq!(k.view("ghost").await, None);
}

// --- Two nodes -------------------------------------------------------------------------

async fn two_nodes_keep_a_user_online_until_both_close(kind: Kind) {
    let k = Kit::with(kind, no_grace()).await;
    let b = k.node("node-b");
    let first = k
        .open_with(&k.store, "1", "on-a", DeviceKind::Web, None, None)
        .await;
    assert!(first.event.is_some());
    let second = k
        .open_with(&b, "1", "on-b", DeviceKind::Web, None, None)
        .await;
    assert!(second.event.is_none(), "a second tab elsewhere is no event");
    let a = k.close("1", "on-a").await;
    assert_eq!(
        a.view.status,
        Status::Online,
        "the seed's defect 1: still online through node b"
    );
    assert!(a.event.is_none());
    let b_closed = b.close_session(&uid("1"), &sid("on-b")).await.unwrap();
    assert_eq!(b_closed.view.status, Status::Offline);
}

async fn dead_node_is_reaped_once_by_any_node(kind: Kind) {
    let k = Kit::new(kind).await;
    let b = k.node("node-b");
    let c = k.node("node-c");
    for n in [&k.store, &b, &c] {
        assert_eq!(n.renew_node_lease(0).await.unwrap(), LeaseRenewal::Held);
    }
    for i in 0..30 {
        k.open_with(&b, &format!("u{i}"), "s", DeviceKind::Web, Some("10"), None)
            .await;
    }
    // u0 is also connected through node a: it must stay online.
    k.open_with(&k.store, "u0", "s-a", DeviceKind::Mobile, None, None)
        .await;
    k.open_with(&k.store, "other", "s", DeviceKind::Web, None, None)
        .await;
    let head = k.head().await;
    k.advance(k.settings.node_lease + Duration::from_secs(1))
        .await;
    k.store.renew_node_lease(0).await.unwrap();
    c.renew_node_lease(0).await.unwrap();
    // Node a and node c sweep at once; every user ends exactly once.
    let (ra, rc) = tokio::join!(k.store.sweep(), c.sweep());
    let (ra, rc) = (ra.unwrap(), rc.unwrap());
    assert_eq!(ra.node_sessions_reaped + rc.node_sessions_reaped, 30);
    assert_eq!(ra.nodes_reaped + rc.nodes_reaped, 1);
    let events = k.events_since(head).await;
    let offline: Vec<_> = events
        .iter()
        .filter(|e| e.user.status == Status::Offline)
        .collect();
    assert_eq!(
        offline.len(),
        29,
        "one offline event per user who had no other session"
    );
    let users: HashSet<_> = offline.iter().map(|e| e.user.user_id.clone()).collect();
    assert_eq!(users.len(), 29);
    let u0 = k.view("u0").await.unwrap();
    assert_eq!(u0.status, Status::Online);
    assert_eq!(u0.devices.iter().collect::<Vec<_>>(), [DeviceKind::Mobile]);
    assert_eq!(events.len(), 30, "29 offline events and u0's device change");
    assert_eq!(k.count(Scope::Zone(zone("10"))).await.total, 1);
    assert_eq!(k.status("other").await, Some(Status::Online));
    // Sweeping again changes nothing; the dead node learns its sessions are gone.
    assert_eq!(k.sweep().await, SweepReport::default());
    assert_eq!(b.renew_node_lease(0).await.unwrap(), LeaseRenewal::Lost);
    assert_eq!(b.renew_node_lease(0).await.unwrap(), LeaseRenewal::Held);
    let live: Vec<String> = k
        .store
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.node_id.to_string())
        .collect();
    assert!(live.contains(&"node-a".to_string()) && live.contains(&"node-b".to_string()));
}

// --- Events and the feed -----------------------------------------------------------------

async fn versions_increase_strictly_and_one_event_per_change(kind: Kind) {
    let k = Kit::new(kind).await;
    let head = k.head().await;
    let mut changes = 0;
    changes += usize::from(
        k.open_with(&k.store, "1", "a", DeviceKind::Web, Some("1"), None)
            .await
            .event
            .is_some(),
    );
    for change in [
        Change::away(),
        Change::away(),
        Change::online(),
        Change::SetZone(Some(zone("2"))),
        Change::SetOrg(Some(org("3"))),
        Change::online(),
    ] {
        k.advance(Duration::from_millis(10)).await;
        changes += usize::from(
            k.store
                .apply(&uid("1"), change)
                .await
                .unwrap()
                .event
                .is_some(),
        );
    }
    assert_eq!(changes, 5, "repeated away and online are no change");
    let events = k.events_since(head).await;
    assert_eq!(events.len(), 5);
    let versions: Vec<u64> = events.iter().map(|e| e.user.version).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    for w in events.windows(2) {
        assert!(w[0].feed_id < w[1].feed_id);
        assert_eq!(w[1].prev_status, w[0].user.status);
    }
    assert_eq!(k.view("1").await.unwrap().version, 5);
}

async fn feed_resumes_after_any_id_in_order(kind: Kind) {
    let k = Kit::new(kind).await;
    let start = k.head().await;
    for i in 0..20 {
        k.open(&format!("u{i}"), "s").await;
    }
    let all = k.events_since(start).await;
    assert_eq!(all.len(), 20);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(
            k.events_since(e.feed_id).await,
            all[i + 1..].to_vec(),
            "after event {i}"
        );
    }
    let page = k.store.read_feed(start, 7).await.unwrap();
    assert_eq!(page.events, all[..7].to_vec());
    assert_eq!(k.head().await, all[19].feed_id);
}

async fn feed_reports_reset_once_trimmed(kind: Kind) {
    let k = Kit::with(
        kind,
        StoreSettings {
            feed_max_len: 10,
            offline_grace: Duration::ZERO,
            ..Default::default()
        },
    )
    .await;
    let start = k.head().await;
    k.open("first", "s").await;
    let first = k.events_since(start).await[0].feed_id;
    // Redis trims `MAXLEN ~` a whole stream node (100 entries) at a time: write plenty.
    for i in 0..150 {
        k.open(&format!("u{i}"), "s").await;
        k.close(&format!("u{i}"), "s").await;
    }
    let old = k.store.read_feed(first, 10).await.unwrap();
    assert!(old.reset, "events after an aged-out id are gone");
    assert!(old.events.is_empty());
    let head = k.head().await;
    let recent = k.store.read_feed(head, 10).await.unwrap();
    assert!(!recent.reset);
    assert!(recent.events.is_empty());
}

async fn wait_feed_wakes_on_a_new_event(kind: Kind) {
    let k = Kit::new(kind).await;
    let head = k.head().await;
    let store = k.store.clone();
    let waiter =
        tokio::spawn(async move { store.wait_feed(head, 10, Duration::from_secs(10)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    k.open("1", "s").await;
    let read = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woke")
        .unwrap()
        .unwrap();
    assert_eq!(read.events.len(), 1);
    // With nothing new it returns empty after the wait.
    let head = k.head().await;
    let idle = k
        .store
        .wait_feed(head, 10, Duration::from_millis(50))
        .await
        .unwrap();
    assert!(idle.events.is_empty() && !idle.reset);
}

// --- Scopes and pages ---------------------------------------------------------------------

async fn list_pages_cover_everyone_once_with_ties(kind: Kind) {
    let k = Kit::new(kind).await;
    // 25 users in 5 activity ties.
    let mut expected = Vec::new();
    for t in 0..5 {
        for i in 0..5 {
            let u = format!("u{t}{i}");
            k.open_with(&k.store, &u, "s", DeviceKind::Web, Some("10"), None)
                .await;
            expected.push((k.now(), u));
        }
        k.advance(Duration::from_secs(1)).await;
    }
    expected.sort();
    expected.reverse();
    let expected: Vec<String> = expected.into_iter().map(|(_, u)| u).collect();
    for limit in [1, 3, 5, 7, 25, 100] {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let q = ListQuery {
                limit,
                cursor: cursor.clone(),
                status: None,
            };
            let page = k.store.list(&Scope::Zone(zone("10")), &q).await.unwrap();
            assert_eq!(page.count, 25);
            assert!(page.users.len() <= limit);
            seen.extend(page.users.into_iter().map(|v| v.user_id.to_string()));
            match page.next_cursor {
                Some(c) => cursor = Some(ListCursor::decode(&c.encode()).unwrap()),
                None => break,
            }
        }
        assert_eq!(seen, expected, "limit {limit}");
    }
}

async fn status_filter_narrows_lists_and_counts(kind: Kind) {
    let k = Kit::new(kind).await;
    for i in 0..6 {
        k.open(&format!("u{i}"), "s").await;
        k.advance(Duration::from_secs(1)).await;
    }
    for u in ["u1", "u3"] {
        k.store.apply(&uid(u), Change::away()).await.unwrap();
    }
    let q = |status, limit| ListQuery {
        limit,
        cursor: None,
        status: Some(status),
    };
    let away = k
        .store
        .list(&Scope::Global, &q(Status::Away, 10))
        .await
        .unwrap();
    let ids: Vec<_> = away.users.iter().map(|v| v.user_id.to_string()).collect();
    assert_eq!(
        (ids, away.count),
        (vec!["u3".to_string(), "u1".to_string()], 2)
    );
    let online = k
        .store
        .list(&Scope::Global, &q(Status::Online, 2))
        .await
        .unwrap();
    assert_eq!(online.count, 4);
    let ids: Vec<_> = online.users.iter().map(|v| v.user_id.to_string()).collect();
    assert_eq!(ids, ["u5", "u4"]);
    let rest = ListQuery {
        cursor: online.next_cursor,
        ..q(Status::Online, 10)
    };
    let rest = k.store.list(&Scope::Global, &rest).await.unwrap();
    let ids: Vec<_> = rest.users.iter().map(|v| v.user_id.to_string()).collect();
    assert_eq!(ids, ["u2", "u0"]);
    assert_eq!(rest.next_cursor, None);
}

async fn auto_away_handles_more_users_than_one_batch(kind: Kind) {
    let k = Kit::with(
        kind,
        StoreSettings {
            sweep_batch: 4,
            ..Default::default()
        },
    )
    .await;
    // 9 users with the same activity (a tie across the batch boundary), 3 a second later.
    for i in 0..9 {
        k.open(&format!("a{i}"), "s").await;
    }
    k.advance(Duration::from_secs(1)).await;
    for i in 0..3 {
        k.open(&format!("b{i}"), "s").await;
    }
    k.advance(k.settings.away_after).await;
    assert_eq!(k.sweep().await.auto_away, 12);
    assert_eq!(
        k.count(Scope::Global).await,
        ScopeCount {
            total: 12,
            away: 12
        }
    );
}

async fn batch_views_keep_order(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open("1", "s").await;
    k.open("3", "s").await;
    let views = k
        .store
        .views(&[uid("3"), uid("2"), uid("1")])
        .await
        .unwrap();
    let got: Vec<_> = views
        .iter()
        .map(|v| v.as_ref().map(|v| v.user_id.to_string()))
        .collect();
    assert_eq!(got, [Some("3".to_string()), None, Some("1".to_string())]);
}

async fn nodes_report_their_sessions_and_renewals(kind: Kind) {
    let k = Kit::new(kind).await;
    let b = k.node("node-b");
    k.store.renew_node_lease(3).await.unwrap();
    let started = k.now();
    k.advance(Duration::from_secs(2)).await;
    b.renew_node_lease(7).await.unwrap();
    let mut nodes = k.store.nodes().await.unwrap();
    nodes.sort_by(|x, y| x.node_id.cmp(&y.node_id));
    let got: Vec<_> = nodes
        .iter()
        .map(|n| {
            (
                n.node_id.to_string(),
                n.sessions,
                n.started_at,
                n.last_renewal,
            )
        })
        .collect();
    // advance() renewed node-a's lease (reporting 0) two seconds after it started.
    assert_eq!(
        got,
        [
            ("node-a".to_string(), 0, started, started + 2000),
            ("node-b".to_string(), 7, started + 2000, started + 2000)
        ]
    );
}

// --- Hardening (issue #9) ------------------------------------------------------------------

async fn a_node_renewing_after_its_lease_lapsed_is_told_lost(kind: Kind) {
    // One user per reap call, so one sweep (at most 100 calls per step) reaps only part of
    // a node holding more users than that.
    let k = Kit::with(
        kind,
        StoreSettings {
            sweep_batch: 1,
            ..Default::default()
        },
    )
    .await;
    let b = k.node("node-b");
    assert_eq!(b.renew_node_lease(0).await.unwrap(), LeaseRenewal::Held);
    // The lease lapsed and nobody reaped yet: the node cannot know whether a reap started.
    k.advance(k.settings.node_lease + Duration::from_secs(1))
        .await;
    assert_eq!(b.renew_node_lease(0).await.unwrap(), LeaseRenewal::Lost);
    assert_eq!(b.renew_node_lease(0).await.unwrap(), LeaseRenewal::Held);
    // A partial reap: the node stalls past its lease, part of its users go offline, then it
    // renews between two reap batches.
    for i in 0..105 {
        k.open_with(&b, &format!("p{i}"), "s", DeviceKind::Web, None, None)
            .await;
    }
    k.advance(k.settings.node_lease + Duration::from_secs(1))
        .await;
    let r = k.sweep().await;
    assert!(
        r.node_sessions_reaped > 0 && r.node_sessions_reaped < 105 && r.nodes_reaped == 0,
        "a partial reap: {r:?}"
    );
    assert_eq!(
        b.renew_node_lease(0).await.unwrap(),
        LeaseRenewal::Lost,
        "part of the node's users were announced offline: it must re-assert"
    );
    // Renewed, the node is live again: the rest of its sessions stay.
    assert_eq!(k.sweep().await.node_sessions_reaped, 0);
    assert_eq!(
        k.count(Scope::Global).await.total as usize,
        105 - r.node_sessions_reaped
    );
}

async fn a_resume_from_before_the_store_lost_its_data_resets(kind: Kind) {
    let k = Kit::new(kind).await;
    for u in ["1", "2", "3"] {
        k.open(u, "s").await;
    }
    let before_loss = k.head().await;
    let from_start = k.store.read_feed(FeedId::ZERO, 100).await.unwrap();
    assert_eq!((from_start.events.len(), from_start.reset), (3, false));
    // The store loses everything: Redis restarts empty (here: its keys are deleted), the
    // memory store's process restarts (here: a new store, later).
    let k = match kind {
        Kind::Redis => {
            let mut raw = raw_redis().await;
            let prefix = k.redis().unwrap().key_prefix().to_string();
            for key in scan_keys(&mut raw, &format!("{prefix}*")).await {
                let _: () = ::redis::cmd("DEL")
                    .arg(&key)
                    .query_async(&mut raw)
                    .await
                    .unwrap();
            }
            // Stream ids are the server's milliseconds: make sure the new ones are later.
            tokio::time::sleep(Duration::from_millis(5)).await;
            k
        }
        Kind::Memory => {
            let fresh = Kit::new(kind).await;
            fresh.clock.set(k.now() + 60_000);
            fresh
        }
    };
    let gone = k.store.read_feed(before_loss, 100).await.unwrap();
    assert!(gone.reset, "an id from before the loss, on an empty feed");
    assert!(gone.events.is_empty());
    for u in ["4", "5"] {
        k.open(u, "s").await;
    }
    let read = k.store.read_feed(before_loss, 100).await.unwrap();
    assert!(read.reset, "an id from before the loss: {read:?}");
    assert!(read.events.is_empty());
    let waited = k
        .store
        .wait_feed(before_loss, 100, Duration::from_millis(50))
        .await
        .unwrap();
    assert!(waited.reset);
    // An id newer than anything this feed made cannot belong to it either.
    let future = FeedId {
        ms: k.now() as u64 + 1_000_000_000_000,
        seq: 0,
    };
    assert!(k.store.read_feed(future, 100).await.unwrap().reset);
    // From the very beginning still works, and so does the new head.
    let all = k.store.read_feed(FeedId::ZERO, 100).await.unwrap();
    assert_eq!((all.events.len(), all.reset), (2, false));
    let head = k.head().await;
    let none = k.store.read_feed(head, 100).await.unwrap();
    assert!(!none.reset && none.events.is_empty());
    let after_first = k.store.read_feed(all.events[0].feed_id, 100).await.unwrap();
    assert_eq!(after_first.events, all.events[1..].to_vec());
}

async fn closing_a_heartbeat_never_ends_a_websocket(kind: Kind) {
    let k = Kit::with(kind, no_grace()).await;
    k.open("1", "ws").await;
    k.store
        .open_session(OpenSession {
            device: DeviceKind::Mobile,
            leased: true,
            invisible: false,
            ..request("1", "rest")
        })
        .await
        .unwrap();
    let head = k.head().await;
    // `DELETE /heartbeat?session_id=ws`: the WebSocket's session is not a heartbeat.
    for (user, session) in [("1", "ws"), ("1", "nope"), ("ghost", "ws")] {
        let r = k
            .store
            .close_leased_session(&uid(user), &sid(session))
            .await;
        assert!(
            matches!(r, Err(StoreError::NoSuchSession(_))),
            "{user}/{session}: {r:?}"
        );
    }
    assert!(k.events_since(head).await.is_empty(), "nothing changed");
    let both = [DeviceKind::Web, DeviceKind::Mobile];
    let devices = |v: &PresenceView| v.devices.iter().collect::<Vec<_>>();
    assert_eq!(devices(&k.view("1").await.unwrap()), both);
    // The heartbeat's own session closes, exactly as close_session would.
    let a = k
        .store
        .close_leased_session(&uid("1"), &sid("rest"))
        .await
        .unwrap();
    assert_eq!(a.view.status, Status::Online);
    assert_eq!(devices(&a.view), [DeviceKind::Web]);
    assert_eq!(one(&a).user.version, 3, "one event: the device left");
    assert!(matches!(
        k.store.close_leased_session(&uid("1"), &sid("rest")).await,
        Err(StoreError::NoSuchSession(_))
    ));
    // The node's own close still ends the WebSocket.
    assert_eq!(k.close("1", "ws").await.view.status, Status::Offline);
}

async fn node_session_counts_follow_open_close_reap_and_reopen(kind: Kind) {
    let k = Kit::with(kind, no_grace()).await;
    let a = k.store.clone();
    let b = k.node("node-b");
    b.renew_node_lease(0).await.unwrap();
    let count = |s: &std::sync::Arc<dyn Store>| {
        let s = s.clone();
        async move { s.node_session_count().await.unwrap() }
    };
    let sessions = |s: &std::sync::Arc<dyn Store>| {
        let s = s.clone();
        async move {
            let mut v: Vec<(String, String)> = s
                .node_sessions()
                .await
                .unwrap()
                .into_iter()
                .map(|(u, s)| (u.to_string(), s.to_string()))
                .collect();
            v.sort();
            v
        }
    };
    let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
        p.iter()
            .map(|(u, s)| (u.to_string(), s.to_string()))
            .collect()
    };
    assert_eq!((count(&a).await, count(&b).await), (0, 0));
    for (user, session) in [("1", "s1"), ("1", "s2"), ("2", "s1")] {
        k.open_with(&a, user, session, DeviceKind::Web, None, None)
            .await;
    }
    for (user, session) in [("1", "sb"), ("4", "s")] {
        k.open_with(&b, user, session, DeviceKind::Desktop, None, None)
            .await;
    }
    // A REST heartbeat belongs to no node.
    a.open_session(OpenSession {
        leased: true,
        invisible: false,
        ..request("3", "h")
    })
    .await
    .unwrap();
    assert_eq!((count(&a).await, count(&b).await), (3, 2));
    assert_eq!(
        sessions(&a).await,
        pairs(&[("1", "s1"), ("1", "s2"), ("2", "s1")])
    );
    assert_eq!(sessions(&b).await, pairs(&[("1", "sb"), ("4", "s")]));
    // Closes, refused opens and unknown closes.
    k.close("1", "s2").await;
    k.close("1", "never").await;
    assert!(a.open_session(request("2", "s1")).await.is_err());
    assert_eq!((count(&a).await, count(&b).await), (2, 2));
    // Node b dies and is reaped: its count goes to zero.
    k.advance(k.settings.node_lease + Duration::from_secs(1))
        .await;
    assert_eq!(k.sweep().await.nodes_reaped, 1);
    assert_eq!((count(&a).await, count(&b).await), (2, 0));
    assert!(sessions(&b).await.is_empty());
    assert_eq!(k.status("4").await, Some(Status::Offline));
    // It comes back, is told so, and re-asserts its sockets in one call.
    assert_eq!(b.renew_node_lease(2).await.unwrap(), LeaseRenewal::Lost);
    let head = k.head().await;
    let desktop = |user: &str, session: &str| OpenSession {
        device: DeviceKind::Desktop,
        ..request(user, session)
    };
    let reopened = b
        .reopen_sessions(&[desktop("1", "sb"), desktop("4", "s"), desktop("4", "s")])
        .await
        .unwrap();
    assert_eq!(reopened.len(), 3);
    let events: Vec<PresenceEvent> = reopened
        .iter()
        .filter_map(|r| r.as_ref().ok().and_then(|a| a.event.clone()))
        .collect();
    assert!(reopened[0].is_ok() && reopened[1].is_ok());
    assert_eq!(
        reopened[2],
        Err(TransitionError::SessionExists(sid("s"))),
        "a session the store has is left alone"
    );
    assert_eq!(
        reopened[1].as_ref().unwrap().view.status,
        Status::Online,
        "as open_session would"
    );
    assert_eq!(events.len(), 2, "user 1's devices, user 4 online");
    assert_eq!(
        k.events_since(head).await,
        events,
        "the same events, in the feed"
    );
    // Node a re-asserts too: what it still has is left alone, what it lost is opened.
    let a_again = a
        .reopen_sessions(&[request("1", "s1"), request("5", "s")])
        .await
        .unwrap();
    assert_eq!(a_again[0], Err(TransitionError::SessionExists(sid("s1"))));
    assert!(a_again[1].as_ref().unwrap().event.is_some());
    assert_eq!((count(&a).await, count(&b).await), (3, 2));
    assert_eq!(sessions(&b).await, pairs(&[("1", "sb"), ("4", "s")]));
    assert_eq!(
        sessions(&a).await,
        pairs(&[("1", "s1"), ("2", "s1"), ("5", "s")])
    );
    assert_eq!(k.count(Scope::Global).await.total, 5);
    assert!(b.reopen_sessions(&[]).await.unwrap().is_empty());
}

// --- Custom status ----------------------------------------------------------------------

fn custom(kind: CustomStatusKind, text: Option<&str>, expires_at: Option<Millis>) -> CustomStatus {
    CustomStatus {
        kind,
        text: text.map(Into::into),
        emoji: Some("📅".into()),
        expires_at,
    }
}

async fn set_custom(k: &Kit, user: &str, c: &CustomStatus) -> Applied {
    k.store
        .apply(&uid(user), Change::SetCustomStatus(c.clone()))
        .await
        .expect("set custom status")
}

async fn custom_status_set_and_clear_are_one_event_each_and_leave_status_alone(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open("1", "a").await;
    k.store.apply(&uid("1"), Change::away()).await.unwrap();
    let head = k.head().await;
    let meeting = custom(
        CustomStatusKind::InMeeting,
        Some("Standup — 15 min ☕"),
        Some(T0 + 3_600_000),
    );
    let a = set_custom(&k, "1", &meeting).await;
    let e = one(&a).clone();
    assert_eq!(e.user.custom_status, Some(meeting.clone()));
    assert_eq!(
        (e.prev_status, e.user.status, e.user.away_reason),
        (Status::Away, Status::Away, Some(AwayReason::Manual)),
        "the status is left alone"
    );
    assert_eq!(
        k.view("1").await.unwrap().custom_status,
        Some(meeting.clone())
    );
    assert!(
        set_custom(&k, "1", &meeting).await.event.is_none(),
        "the same value again is no event"
    );
    let busy = custom(CustomStatusKind::Busy, None, None);
    let replaced = set_custom(&k, "1", &busy).await;
    assert_eq!(one(&replaced).user.custom_status, Some(busy));
    let cleared = k
        .store
        .apply(&uid("1"), Change::ClearCustomStatus)
        .await
        .unwrap();
    assert_eq!(one(&cleared).user.custom_status, None);
    assert_eq!(cleared.view.status, Status::Away);
    let again = k
        .store
        .apply(&uid("1"), Change::ClearCustomStatus)
        .await
        .unwrap();
    assert!(again.event.is_none(), "clearing nothing is no event");
    // The feed carries the same views as the calls returned: every node decodes the same.
    let feed = k.events_since(head).await;
    assert_eq!(feed, vec![e, one(&replaced).clone(), one(&cleared).clone()]);
    // No record, nothing to set.
    assert!(matches!(
        k.store
            .apply(&uid("nobody"), Change::SetCustomStatus(meeting))
            .await,
        Err(StoreError::NotFound(_))
    ));
}

async fn custom_status_survives_reconnects_the_grace_and_offline(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open("1", "a").await;
    let dnd = custom(CustomStatusKind::Dnd, Some("focus"), None);
    set_custom(&k, "1", &dnd).await;
    // A reload within the grace shows nothing and keeps it.
    let head = k.head().await;
    k.close("1", "a").await;
    k.advance(Duration::from_secs(1)).await;
    k.open("1", "b").await;
    assert!(k.events_since(head).await.is_empty());
    assert_eq!(k.view("1").await.unwrap().custom_status, Some(dnd.clone()));
    // Offline after the grace: kept, and shown.
    k.close("1", "b").await;
    k.advance(k.settings.offline_grace).await;
    assert_eq!(k.sweep().await.grace_expired, 1);
    let v = k.view("1").await.unwrap();
    assert_eq!(
        (v.status, v.custom_status),
        (Status::Offline, Some(dnd.clone()))
    );
    // Set while offline: one event, still offline.
    let break_ = custom(CustomStatusKind::OnBreak, None, None);
    let a = set_custom(&k, "1", &break_).await;
    assert_eq!(
        (one(&a).prev_status, a.view.status),
        (Status::Offline, Status::Offline)
    );
    // Back online: still there.
    let a = k.open("1", "c").await;
    assert_eq!(a.view.custom_status, Some(break_));
    assert_eq!(a.view.status, Status::Online);
}

async fn custom_status_expires_exactly_on_time_with_one_event(kind: Kind) {
    let settings = StoreSettings {
        sweep_batch: 2,
        ..Default::default()
    };
    let k = Kit::with(kind, settings).await;
    let at = T0 + 60_000;
    for user in ["1", "2", "3", "4", "5"] {
        k.open(user, "a").await;
        set_custom(
            &k,
            user,
            &custom(CustomStatusKind::Busy, Some(user), Some(at)),
        )
        .await;
    }
    let keep = custom(CustomStatusKind::Custom, Some("later"), Some(at + 1));
    k.open("6", "a").await;
    set_custom(&k, "6", &keep).await;
    k.advance(Duration::from_millis(59_999)).await;
    let head = k.head().await;
    assert_eq!(k.sweep().await.custom_expired, 0, "not before its time");
    assert!(k.events_since(head).await.is_empty());
    k.advance(Duration::from_millis(1)).await;
    let r = k.sweep().await;
    assert_eq!(r.custom_expired, 5, "more than one batch, all on time");
    let events = k.events_since(head).await;
    assert_eq!(events.len(), 5, "one event per expiry");
    for e in &events {
        assert_eq!(e.user.custom_status, None);
        assert_eq!(
            (e.prev_status, e.user.status),
            (Status::Online, Status::Online)
        );
        assert_eq!(e.ts, at);
    }
    for user in ["1", "2", "3", "4", "5"] {
        assert_eq!(k.view(user).await.unwrap().custom_status, None);
    }
    assert_eq!(k.view("6").await.unwrap().custom_status, Some(keep));
    assert_eq!(k.sweep().await.custom_expired, 0, "each expiry once");
    k.advance(Duration::from_millis(1)).await;
    assert_eq!(k.sweep().await.custom_expired, 1);
    assert_eq!(k.view("6").await.unwrap().custom_status, None);
}

async fn a_replaced_custom_status_is_not_cleared_by_the_old_expiry(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open("1", "a").await;
    set_custom(
        &k,
        "1",
        &custom(CustomStatusKind::InMeeting, None, Some(T0 + 10_000)),
    )
    .await;
    let later = custom(
        CustomStatusKind::InMeeting,
        Some("ran over"),
        Some(T0 + 100_000),
    );
    set_custom(&k, "1", &later).await;
    k.advance(Duration::from_secs(10)).await;
    assert_eq!(k.sweep().await.custom_expired, 0);
    assert_eq!(k.view("1").await.unwrap().custom_status, Some(later));
    // Replaced by one without an expiry: it never expires.
    let forever = custom(CustomStatusKind::Dnd, None, None);
    set_custom(&k, "1", &forever).await;
    k.advance(Duration::from_secs(200)).await;
    assert_eq!(k.sweep().await.custom_expired, 0);
    assert_eq!(k.view("1").await.unwrap().custom_status, Some(forever));
    // Cleared, then set again without expiry, before the old time: not cleared either.
    set_custom(
        &k,
        "1",
        &custom(CustomStatusKind::Busy, None, Some(k.now() + 5_000)),
    )
    .await;
    k.store
        .apply(&uid("1"), Change::ClearCustomStatus)
        .await
        .unwrap();
    let plain = custom(CustomStatusKind::Busy, None, None);
    set_custom(&k, "1", &plain).await;
    k.advance(Duration::from_secs(6)).await;
    let head = k.head().await;
    assert_eq!(k.sweep().await.custom_expired, 0);
    assert!(k.events_since(head).await.is_empty());
    assert_eq!(k.view("1").await.unwrap().custom_status, Some(plain));
}

// --- Typing and the bus -----------------------------------------------------------------------

fn conv(c: &str) -> ConversationId {
    ConversationId::new(c).unwrap()
}

fn typing_write(c: &str, user: &str, until: Option<Millis>, max_typers: usize) -> TypingWrite {
    TypingWrite {
        conversation: conv(c),
        user: uid(user),
        until,
        max_typers,
    }
}

/// The next bus message within 5 s.
async fn next_on(bus: &mut Box<dyn BusReceiver>) -> BusMessage {
    tokio::time::timeout(Duration::from_secs(5), bus.recv())
        .await
        .expect("a bus message within 5 s")
        .expect("the bus is open")
}

/// Asserts that nothing comes on the bus for a moment.
async fn quiet(bus: &mut Box<dyn BusReceiver>) {
    let got = tokio::time::timeout(Duration::from_millis(300), bus.recv()).await;
    assert!(got.is_err(), "nothing on the bus, got {got:?}");
}

fn typers(t: &[Typer]) -> Vec<(String, Option<String>)> {
    t.iter()
        .map(|t| (t.user.to_string(), t.org.as_ref().map(|o| o.to_string())))
        .collect()
}

async fn typing_is_written_read_and_published_without_touching_presence(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open_with(&k.store, "1", "s1", DeviceKind::Web, None, Some("100"))
        .await;
    let version = k.view("1").await.unwrap().version;
    let head = k.head().await;
    let mut bus = k.store.bus().await.unwrap();
    let until = k.now() + 6000;
    let w = typing_write("c1", "1", Some(until), 50);
    assert_eq!(k.store.typing(&w).await.unwrap(), TypingOutcome::Written);
    let BusMessage::Typing(t) = next_on(&mut bus).await else {
        panic!("a typing message")
    };
    assert_eq!(
        (t.conversation_id, t.user_id, t.org_id, t.until),
        (conv("c1"), uid("1"), Some(org("100")), Some(until)),
        "the typer's org comes from the record"
    );
    let now = k.store.typing_now(&conv("c1")).await.unwrap();
    assert_eq!(typers(&now), [("1".to_string(), Some("100".to_string()))]);
    assert_eq!(now[0].until, until);
    assert!(k.store.typing_now(&conv("c2")).await.unwrap().is_empty());
    // Ephemeral: no event, no version.
    assert_eq!(k.head().await, head);
    assert_eq!(k.view("1").await.unwrap().version, version);
    // A user with no record types with no org; entries list in id order.
    let w0 = typing_write("c1", "0", Some(until), 50);
    k.store.typing(&w0).await.unwrap();
    let BusMessage::Typing(t) = next_on(&mut bus).await else {
        panic!("a typing message")
    };
    assert_eq!(t.org_id, None);
    let now = k.store.typing_now(&conv("c1")).await.unwrap();
    assert_eq!(
        typers(&now),
        [
            ("0".to_string(), None),
            ("1".to_string(), Some("100".to_string()))
        ]
    );
    // A stop removes the entry and says so.
    let stop = typing_write("c1", "0", None, 50);
    k.store.typing(&stop).await.unwrap();
    let BusMessage::Typing(t) = next_on(&mut bus).await else {
        panic!("a typing message")
    };
    assert_eq!((t.user_id, t.until), (uid("0"), None));
    assert_eq!(k.store.typing_now(&conv("c1")).await.unwrap().len(), 1);
    // The other entry is over at its until, by the reader's clock, with no sweep.
    k.clock.advance(Duration::from_millis(5999));
    assert_eq!(k.store.typing_now(&conv("c1")).await.unwrap().len(), 1);
    k.clock.advance(Duration::from_millis(1));
    assert!(k.store.typing_now(&conv("c1")).await.unwrap().is_empty());
    assert_eq!(k.head().await, head, "still no event");
    quiet(&mut bus).await;
    if let Some(r) = k.redis() {
        // The key expires with its newest entry: an abandoned conversation leaves nothing.
        let mut raw = raw_redis().await;
        let ttl: i64 = ::redis::cmd("PTTL")
            .arg(format!("{}typing:c1", r.key_prefix()))
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!((1..=6000).contains(&ttl), "PTTL {ttl}");
    }
}

async fn typing_in_a_full_conversation_is_refused_until_an_entry_expires(kind: Kind) {
    let k = Kit::new(kind).await;
    let mut bus = k.store.bus().await.unwrap();
    let t0 = k.now();
    for (user, until) in [("a", t0 + 1000), ("b", t0 + 5000)] {
        let w = typing_write("c", user, Some(until), 2);
        assert_eq!(k.store.typing(&w).await.unwrap(), TypingOutcome::Written);
        next_on(&mut bus).await;
    }
    let c = typing_write("c", "c", Some(t0 + 6000), 2);
    assert_eq!(
        k.store.typing(&c).await.unwrap(),
        TypingOutcome::Full { limit: 2 }
    );
    quiet(&mut bus).await;
    // Those typing already may renew.
    let renew = typing_write("c", "a", Some(t0 + 1500), 2);
    assert_eq!(
        k.store.typing(&renew).await.unwrap(),
        TypingOutcome::Written
    );
    next_on(&mut bus).await;
    // Another conversation has room of its own.
    let elsewhere = typing_write("d", "c", Some(t0 + 6000), 2);
    assert_eq!(
        k.store.typing(&elsewhere).await.unwrap(),
        TypingOutcome::Written
    );
    next_on(&mut bus).await;
    // Once a's entry is over, c fits.
    k.clock.advance(Duration::from_millis(1500));
    assert_eq!(k.store.typing(&c).await.unwrap(), TypingOutcome::Written);
    let now = k.store.typing_now(&conv("c")).await.unwrap();
    assert_eq!(
        now.iter().map(|t| t.user.to_string()).collect::<Vec<_>>(),
        ["b", "c"]
    );
}

async fn the_bus_carries_published_messages_to_every_handle(kind: Kind) {
    let k = Kit::new(kind).await;
    let other = k.node("node-b");
    let mut here = k.store.bus().await.unwrap();
    let mut there = other.bus().await.unwrap();
    let m = BusMessage::Typing(TypingSignal {
        conversation_id: conv("c9"),
        user_id: uid("7"),
        org_id: None,
        until: Some(k.now() + 6000),
    });
    other.publish(&m).await.unwrap();
    assert_eq!(next_on(&mut here).await, m);
    assert_eq!(
        next_on(&mut there).await,
        m,
        "the publisher hears itself too"
    );
    // A typing write through one handle reaches the other's receiver.
    k.store
        .typing(&typing_write("c9", "7", None, 50))
        .await
        .unwrap();
    let BusMessage::Typing(t) = next_on(&mut there).await else {
        panic!("a typing message")
    };
    assert_eq!(t.until, None);
    assert_eq!(next_on(&mut here).await, BusMessage::Typing(t));
    if let Some(r) = k.redis() {
        // Anything else on the channel is dropped, and what follows still arrives.
        let channel = format!("{}presenced:bus", r.key_prefix());
        let mut raw = raw_redis().await;
        for junk in [
            "not json".to_string(),
            r#"{"kind":"unknown_kind"}"#.to_string(),
            "x".repeat(MAX_BUS_MESSAGE_BYTES + 1),
        ] {
            let _: i64 = ::redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(junk)
                .query_async(&mut raw)
                .await
                .unwrap();
        }
        other.publish(&m).await.unwrap();
        assert_eq!(
            next_on(&mut here).await,
            m,
            "the junk was dropped, not relayed"
        );
    }
}

// --- Sessions: listing them, and ending one for the service ------------------------------

/// (session, device, node, connected_at) of each of a user's sessions, in the store's order.
async fn sessions_of(
    store: &std::sync::Arc<dyn Store>,
    user: &str,
) -> Option<(
    Millis,
    Vec<(String, DeviceKind, Option<String>, Option<Millis>)>,
)> {
    let s = store.sessions(&uid(user)).await.expect("sessions")?;
    let listed = s
        .sessions
        .into_iter()
        .map(|i| {
            (
                i.session.to_string(),
                i.device,
                i.node.map(|n| n.to_string()),
                i.connected_at,
            )
        })
        .collect();
    Some((s.last_activity, listed))
}

fn listed(
    rows: &[(&str, DeviceKind, Option<&str>, Millis)],
) -> Vec<(String, DeviceKind, Option<String>, Option<Millis>)> {
    rows.iter()
        .map(|(s, d, n, t)| (s.to_string(), *d, n.map(str::to_string), Some(*t)))
        .collect()
}

async fn sessions_list_device_node_and_connect_time(kind: Kind) {
    let k = Kit::new(kind).await;
    assert_eq!(sessions_of(&k.store, "1").await, None, "never seen");
    let b = k.node("node-b");
    b.renew_node_lease(0).await.unwrap();
    // Opened at T0 + 1.5 s, + 3.5 s and + 4.5 s: kept to the second, rounded down.
    k.advance(Duration::from_millis(1_500)).await;
    k.open_with(&k.store, "1", "web", DeviceKind::Web, None, None)
        .await;
    k.advance(Duration::from_secs(2)).await;
    k.open_with(&b, "1", "phone", DeviceKind::Mobile, None, None)
        .await;
    k.advance(Duration::from_secs(1)).await;
    k.store
        .open_session(OpenSession {
            device: DeviceKind::Desktop,
            leased: true,
            invisible: false,
            ..request("1", "rest")
        })
        .await
        .unwrap();
    k.advance(Duration::from_secs(5)).await;
    k.activity("1").await;
    let want = listed(&[
        ("web", DeviceKind::Web, Some("node-a"), T0 + 1_000),
        ("phone", DeviceKind::Mobile, Some("node-b"), T0 + 3_000),
        ("rest", DeviceKind::Desktop, None, T0 + 4_000),
    ]);
    assert_eq!(
        sessions_of(&k.store, "1").await,
        Some((T0 + 9_500, want.clone())),
        "oldest first; the user's last activity"
    );
    assert_eq!(
        sessions_of(&b, "1").await,
        Some((T0 + 9_500, want.clone())),
        "the same from any node"
    );
    // A renewal moves the lease, not the connect time.
    k.store
        .renew_session(&uid("1"), &sid("rest"))
        .await
        .unwrap();
    assert_eq!(sessions_of(&k.store, "1").await.unwrap().1, want);
    // Every session closed and the grace over: the user is offline, and has no session.
    for s in ["web", "phone", "rest"] {
        k.close("1", s).await;
    }
    k.advance(k.settings.offline_grace).await;
    k.sweep().await;
    assert_eq!(k.status("1").await, Some(Status::Offline));
    assert_eq!(sessions_of(&k.store, "1").await, Some((T0 + 9_500, vec![])));
}

async fn ending_one_of_two_sessions_leaves_the_other_with_one_event(kind: Kind) {
    let k = Kit::new(kind).await;
    let b = k.node("node-b");
    b.renew_node_lease(0).await.unwrap();
    k.open_with(&k.store, "1", "web", DeviceKind::Web, Some("10"), None)
        .await;
    k.open_with(&b, "1", "phone", DeviceKind::Mobile, None, None)
        .await;
    k.open("2", "other").await;
    let head = k.head().await;
    // The service ends the phone's session through node a, though node b holds it.
    let a = k.store.end_session(&uid("1"), &sid("phone")).await.unwrap();
    assert_eq!(a.view.status, Status::Online);
    assert_eq!(a.view.devices.iter().collect::<Vec<_>>(), [DeviceKind::Web]);
    let e = one(&a);
    assert_eq!(
        (e.prev_status, e.user.status, e.user.version),
        (Status::Online, Status::Online, 3),
        "one event: the devices changed"
    );
    assert_eq!(k.events_since(head).await, vec![e.clone()]);
    assert_eq!(
        sessions_of(&k.store, "1").await.unwrap().1,
        listed(&[("web", DeviceKind::Web, Some("node-a"), T0)])
    );
    assert_eq!(b.node_session_count().await.unwrap(), 0);
    assert!(b.node_sessions().await.unwrap().is_empty());
    assert_eq!(k.store.node_session_count().await.unwrap(), 2);
    assert_eq!(k.list_ids(Scope::Zone(zone("10"))).await, ["1"]);
    assert_eq!(
        k.status("2").await,
        Some(Status::Online),
        "others untouched"
    );
    // Ending a session the user shares a device kind with changes no view: no event.
    k.open_with(&k.store, "1", "web2", DeviceKind::Web, None, None)
        .await;
    let head = k.head().await;
    let a = k.store.end_session(&uid("1"), &sid("web2")).await.unwrap();
    assert!(a.event.is_none());
    assert!(k.events_since(head).await.is_empty());
}

async fn an_ended_websocket_session_is_not_reopened_until_its_mark_expires(kind: Kind) {
    let k = Kit::new(kind).await;
    let b = k.node("node-b");
    b.renew_node_lease(0).await.unwrap();
    let phone = || OpenSession {
        device: DeviceKind::Mobile,
        ..request("1", "phone")
    };
    k.open("1", "web").await;
    b.open_session(phone()).await.unwrap();
    k.store.end_session(&uid("1"), &sid("phone")).await.unwrap();
    let head = k.head().await;
    let version = k.view("1").await.unwrap().version;
    // Node b finds the session missing when it re-asserts its sockets: the answer tells it to
    // close that socket; the rest of the batch re-opens as usual.
    let reopened = b
        .reopen_sessions(&[phone(), request("3", "tab")])
        .await
        .unwrap();
    assert_eq!(
        reopened[0],
        Err(TransitionError::SessionEnded(sid("phone")))
    );
    assert_eq!(reopened[1].as_ref().unwrap().view.status, Status::Online);
    assert!(matches!(
        b.open_session(phone()).await,
        Err(StoreError::Refused(TransitionError::SessionEnded(_)))
    ));
    let events = k.events_since(head).await;
    assert_eq!(events.len(), 1, "user 3 came online, nothing else");
    assert_eq!(k.view("1").await.unwrap().version, version);
    assert_eq!(b.node_session_count().await.unwrap(), 1);
    // Until the mark's time is up (eight node leases), whatever the nodes do meanwhile.
    let life = k.settings.end_mark_lifetime();
    k.advance(life - Duration::from_secs(1)).await;
    b.renew_node_lease(1).await.unwrap();
    k.sweep().await;
    assert!(matches!(
        b.reopen_sessions(&[phone()]).await.unwrap()[0],
        Err(TransitionError::SessionEnded(_))
    ));
    k.advance(Duration::from_secs(1)).await;
    b.renew_node_lease(1).await.unwrap();
    k.sweep().await;
    let again = b.reopen_sessions(&[phone()]).await.unwrap();
    let a = again[0].as_ref().expect("re-opened once the mark expired");
    assert_eq!(
        a.view.devices.iter().collect::<Vec<_>>(),
        [DeviceKind::Web, DeviceKind::Mobile]
    );
}

async fn ending_the_last_session_starts_the_grace_like_a_clean_close(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open("1", "ws").await;
    k.store
        .open_session(OpenSession {
            leased: true,
            invisible: false,
            ..request("2", "hb")
        })
        .await
        .unwrap();
    k.advance(Duration::from_secs(1)).await;
    let head = k.head().await;
    let ended_at = k.now();
    for (user, session) in [("1", "ws"), ("2", "hb")] {
        let a = k
            .store
            .end_session(&uid(user), &sid(session))
            .await
            .unwrap();
        assert_eq!(a.view.status, Status::Online, "{user}: in the grace");
        assert_eq!(a.view.devices.iter().collect::<Vec<_>>(), [DeviceKind::Web]);
        assert!(a.event.is_none());
    }
    k.advance(k.settings.offline_grace - Duration::from_millis(1))
        .await;
    assert_eq!(k.sweep().await.grace_expired, 0);
    // A session opening within the grace cancels it, as after a close.
    k.open("1", "back").await;
    assert!(k.events_since(head).await.is_empty(), "no event at all");
    k.advance(Duration::from_millis(1)).await;
    assert_eq!(k.sweep().await.grace_expired, 1);
    let v = k.view("2").await.unwrap();
    assert_eq!(
        (v.status, v.last_seen),
        (Status::Offline, Some(LastSeen::At(ended_at)))
    );
    assert_eq!(k.status("1").await, Some(Status::Online));
    assert_eq!(k.events_since(head).await.len(), 1);
    // An ended REST lease is gone: it cannot be renewed and never runs out later.
    assert!(matches!(
        k.store.renew_session(&uid("2"), &sid("hb")).await,
        Err(StoreError::NoSuchSession(_))
    ));
    k.advance(k.settings.online_ttl).await;
    assert_eq!(k.sweep().await.leases_expired, 0);
    // Only a node's sessions are marked: nothing re-asserts a REST lease.
    k.store
        .open_session(OpenSession {
            leased: true,
            invisible: false,
            ..request("2", "hb")
        })
        .await
        .expect("a lease's id is not marked");
}

async fn ending_an_unknown_session_is_not_found_and_changes_nothing(kind: Kind) {
    let k = Kit::new(kind).await;
    k.open("1", "ws").await;
    let head = k.head().await;
    for (user, session) in [("1", "nope"), ("ghost", "ws")] {
        let r = k.store.end_session(&uid(user), &sid(session)).await;
        assert!(
            matches!(r, Err(StoreError::NoSuchSession(_))),
            "{user}/{session}: {r:?}"
        );
    }
    assert!(k.events_since(head).await.is_empty());
    assert_eq!(k.view("1").await.unwrap().version, 1);
    assert_eq!(sessions_of(&k.store, "ghost").await, None);
    k.open("1", "nope").await;
    // Ending one twice: the second finds it gone.
    k.store.end_session(&uid("1"), &sid("ws")).await.unwrap();
    assert!(matches!(
        k.store.end_session(&uid("1"), &sid("ws")).await,
        Err(StoreError::NoSuchSession(_))
    ));
    assert_eq!(
        sessions_of(&k.store, "1").await.unwrap().1,
        listed(&[("nope", DeviceKind::Web, Some("node-a"), T0)])
    );
}

/// Invisible lasts for a presence (SPEC §3): a session a node re-asserts after the store
/// lost it (its lease lapsed and the sweep reaped it) continues the presence, so the user
/// stays invisible; a session opened after the user went offline starts a new one, visible.
async fn a_reasserted_session_keeps_invisible_and_a_new_presence_does_not(kind: Kind) {
    let k = Kit::new(kind).await;
    let a = k.node("node-gone");
    a.renew_node_lease(0).await.unwrap();
    k.open_with(&a, "1", "s1", DeviceKind::Web, None, None)
        .await;
    let invisible = Change::SetStatus {
        away: false,
        invisible: Some(true),
    };
    k.store.apply(&uid("1"), invisible).await.unwrap();
    // node-gone stops renewing; the kit's node sweeps it away.
    k.advance(k.settings.node_lease + Duration::from_secs(1))
        .await;
    assert_eq!(k.sweep().await.nodes_reaped, 1);
    let v = k.view("1").await.unwrap();
    assert_eq!((v.status, v.invisible), (Status::Offline, true));
    assert_eq!(a.renew_node_lease(1).await.unwrap(), LeaseRenewal::Lost);
    let back = a.reopen_sessions(&[request("1", "s1")]).await.unwrap();
    let v = back[0].as_ref().unwrap().view.clone();
    assert_eq!((v.status, v.invisible), (Status::Online, true), "{v:?}");
    assert_eq!(
        k.count(Scope::Global).await.total,
        0,
        "still out of the counts"
    );
    // Offline, then a new session: a new presence, visible.
    k.store.close_session(&uid("1"), &sid("s1")).await.unwrap();
    k.advance(k.settings.offline_grace + Duration::from_secs(1))
        .await;
    k.sweep().await;
    let v = k.open("1", "s2").await.view;
    assert_eq!((v.status, v.invisible), (Status::Online, false));
    assert_eq!(k.count(Scope::Global).await.total, 1);
}
