//! Race test: tasks on two node handles hammer the same users at once. Afterwards every view
//! agrees with the sessions really open, and each user's events form one unbroken chain:
//! versions 1, 2, 3 … with no gap or repeat, each event's previous status the status of the
//! event before, the last one equal to the final view. So no change lost its event, no event
//! was written twice, and no two writers interleaved inside a transition.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use presence_core::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const USERS: usize = 5;
const TASKS_PER_NODE: usize = 4;
const OPS_PER_TASK: usize = 400;
const DEVICES: [DeviceKind; 3] = [DeviceKind::Web, DeviceKind::Desktop, DeviceKind::Mobile];

/// One task's random work; returns the sessions it left open.
async fn hammer(
    store: Arc<dyn Store>,
    task: usize,
    seed: u64,
    now: Millis,
) -> Vec<(usize, SessionId, DeviceKind)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut open: Vec<(usize, SessionId, DeviceKind)> = Vec::new();
    for n in 0..OPS_PER_TASK {
        let user = rng.random_range(0..USERS);
        let u = uid(&format!("u{user}"));
        match rng.random_range(0..10) {
            0..=2 => {
                let session = sid(&format!("t{task}-{n}"));
                let device = DEVICES[rng.random_range(0..DEVICES.len())];
                let zone = rng
                    .random_bool(0.3)
                    .then(|| zone(&rng.random_range(0..3).to_string()));
                let r = store
                    .open_session(OpenSession {
                        user: u,
                        session: session.clone(),
                        device,
                        zone,
                        org: None,
                        leased: false,
                    })
                    .await;
                match r {
                    Ok(_) => open.push((user, session, device)),
                    Err(StoreError::Refused(TransitionError::TooManySessions { .. })) => {}
                    Err(e) => panic!("open: {e}"),
                }
            }
            3..=5 if !open.is_empty() => {
                let (user, session, _) = open.swap_remove(rng.random_range(0..open.len()));
                store
                    .close_session(&uid(&format!("u{user}")), &session)
                    .await
                    .expect("close");
            }
            6 => {
                let batch: Vec<_> = (0..3)
                    .map(|_| Activity {
                        user: uid(&format!("u{}", rng.random_range(0..USERS))),
                        at: now,
                    })
                    .collect();
                store.record_activity(&batch).await.expect("activity");
            }
            7 | 8 => {
                let change = if rng.random_bool(0.5) {
                    Change::SetAway
                } else {
                    Change::SetOnline
                };
                match store.apply(&u, change).await {
                    Ok(_) | Err(StoreError::NotFound(_)) => {}
                    Err(e) => panic!("apply: {e}"),
                }
            }
            _ => {
                let z = Change::SetZone(
                    rng.random_bool(0.8)
                        .then(|| zone(&rng.random_range(0..3).to_string())),
                );
                match store.apply(&u, z).await {
                    Ok(_) | Err(StoreError::NotFound(_)) => {}
                    Err(e) => panic!("zone: {e}"),
                }
            }
        }
        if n % 10 == 0 {
            store.sweep().await.expect("sweep");
        }
    }
    open
}

async fn race(kind: Kind) {
    let settings = StoreSettings {
        offline_grace: Duration::ZERO,
        ..Default::default()
    };
    let k = Kit::with(kind, settings).await;
    let nodes = [k.node("node-a"), k.node("node-b")];
    for n in &nodes {
        n.renew_node_lease(0).await.unwrap();
    }
    let start = k.head().await;
    let now = k.now();
    let mut tasks = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for t in 0..TASKS_PER_NODE {
            let task = i * TASKS_PER_NODE + t;
            tasks.push(tokio::spawn(hammer(
                node.clone(),
                task,
                0x5eed + task as u64,
                now,
            )));
        }
    }
    let mut sessions: BTreeMap<usize, BTreeSet<DeviceKind>> = BTreeMap::new();
    let mut open_count: BTreeMap<usize, usize> = BTreeMap::new();
    for t in tasks {
        for (user, _, device) in tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("in time")
            .unwrap()
        {
            sessions.entry(user).or_default().insert(device);
            *open_count.entry(user).or_default() += 1;
        }
    }

    let events = k.events_since(start).await;
    let mut online = 0;
    for user in 0..USERS {
        let id = format!("u{user}");
        let Some(view) = k.view(&id).await else {
            assert!(!sessions.contains_key(&user));
            continue;
        };
        match sessions.get(&user) {
            Some(devices) => {
                online += 1;
                assert_ne!(
                    view.status,
                    Status::Offline,
                    "{id} has {} open sessions",
                    open_count[&user]
                );
                assert_eq!(
                    view.devices.iter().collect::<BTreeSet<_>>(),
                    *devices,
                    "{id}: devices"
                );
            }
            None => {
                assert_eq!(view.status, Status::Offline, "{id} has no open session");
                assert!(view.devices.is_empty());
            }
        }
        let mine: Vec<&PresenceEvent> = events
            .iter()
            .filter(|e| e.user.user_id.as_str() == id)
            .collect();
        let versions: Vec<u64> = mine.iter().map(|e| e.user.version).collect();
        assert_eq!(
            versions,
            (1..=view.version).collect::<Vec<_>>(),
            "{id}: one event per version, in feed order"
        );
        let mut prev = Status::Offline;
        for e in &mine {
            assert_eq!(
                e.prev_status, prev,
                "{id} v{}: previous status",
                e.user.version
            );
            prev = e.user.status;
        }
        let mut last = mine.last().expect("events").user.clone();
        last.last_activity = view.last_activity;
        assert_eq!(last, view, "{id}: the last event shows the final view");
    }
    assert_eq!(k.count(Scope::Global).await.total, online);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_stays_consistent_under_racing_nodes() {
    race(Kind::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_stays_consistent_under_racing_nodes() {
    race(Kind::Redis).await;
}
