//! Race test: tasks on two live node handles hammer the same users at once while the shared
//! clock moves on, far past `away_after`, `offline_grace`, `node_lease` and `online_ttl`, so
//! the sweeps the tasks run really do turn users away, end graces, expire REST leases and reap
//! a third node that dies mid-run — racing the opens, closes, activity and status changes.
//!
//! Afterwards (one last sweep once every grace and the dead node's lease have run out):
//! - every view agrees with the sessions really open: WebSocket sessions on the live nodes
//!   that were not closed, and REST leases renewed past the end; nothing of the dead node;
//! - a session ended by a sweep during the run had really run out (its lease was over);
//! - an online user was active within `away_after`, an auto-away user was not;
//! - each user's events form one unbroken chain: versions 1, 2, 3 … with no gap or repeat,
//!   each event's previous status the status of the event before, the last one equal to the
//!   final view. So no change lost its event, no event was written twice, and no two writers
//!   interleaved inside a transition;
//! - counts agree with the lists, globally and per zone, and with the views.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use presence_core::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;

const USERS: usize = 6;
const TASKS_PER_NODE: usize = 4;
const OPS_PER_TASK: usize = 400;
/// One op in this many moves the clock on a few seconds.
const TICK_EVERY: u32 = 12;
/// One op in this many moves it past `away_after` at once: a quiet spell, so some users idle
/// long enough to turn away while the other tasks carry on.
const QUIET_EVERY: u32 = 150;
/// Longest single move: under half of `node_lease`, so a live node renewing after every move
/// is never reaped, however the moves and the other tasks' sweeps interleave. Longer spells
/// are made of such moves.
const MAX_TICK_MS: u64 = 7_000;
const DEVICES: [DeviceKind; 3] = [DeviceKind::Web, DeviceKind::Desktop, DeviceKind::Mobile];

/// The shared clock and the live nodes, which renew their leases after every move as their
/// renewal loops would. The lock keeps moves and renewals in order.
struct Clockwork {
    clock: ManualClock,
    live: [Arc<dyn Store>; 2],
    moved_ms: u64,
}

impl Clockwork {
    /// Moves the clock `ms` on, in moves of at most [`MAX_TICK_MS`], the live nodes renewing
    /// after each.
    async fn tick(this: &Mutex<Self>, mut ms: u64) {
        let mut c = this.lock().await;
        while ms > 0 {
            let step = ms.min(MAX_TICK_MS);
            ms -= step;
            c.clock.advance(Duration::from_millis(step));
            c.moved_ms += step;
            for n in &c.live {
                assert_eq!(
                    n.renew_node_lease(0).await.expect("renew"),
                    LeaseRenewal::Held,
                    "a live node was reaped"
                );
            }
        }
    }
}

/// What one task left open: WebSocket sessions, and REST leases with the last lease the store
/// granted.
#[derive(Default)]
struct Left {
    sockets: Vec<(usize, SessionId, DeviceKind)>,
    leases: Vec<(usize, SessionId, DeviceKind, Millis)>,
    /// Leases a sweep ended during the run.
    expired: usize,
}

fn user(n: usize) -> UserId {
    uid(&format!("u{n}"))
}

/// Renews a REST lease; `None` when a sweep ended it, which must be because it ran out.
async fn renew(
    store: &Arc<dyn Store>,
    clock: &ManualClock,
    u: usize,
    s: &SessionId,
    until: Millis,
) -> Option<Millis> {
    match store.renew_session(&user(u), s).await {
        Ok(t) => Some(t),
        Err(StoreError::NoSuchSession(_)) => {
            let now = clock.now_ms();
            assert!(now >= until, "u{u} {s}: lease until {until} ended at {now}");
            None
        }
        Err(e) => panic!("renew: {e}"),
    }
}

/// One task's random work on one live node.
async fn hammer(
    store: Arc<dyn Store>,
    work: Arc<Mutex<Clockwork>>,
    task: usize,
    seed: u64,
) -> Left {
    let clock = work.lock().await.clock.clone();
    let ttl = settings().online_ttl.as_millis() as Millis;
    let away_after = settings().away_after.as_millis() as u64;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut left = Left::default();
    for n in 0..OPS_PER_TASK {
        let u = rng.random_range(0..USERS);
        match rng.random_range(0..14) {
            0..=2 => {
                let session = sid(&format!("t{task}-{n}"));
                let device = DEVICES[rng.random_range(0..DEVICES.len())];
                let leased = rng.random_bool(0.3);
                let zone = rng
                    .random_bool(0.3)
                    .then(|| zone(&rng.random_range(0..3).to_string()));
                let opened_by = clock.now_ms() + ttl;
                let r = store
                    .open_session(OpenSession {
                        user: user(u),
                        session: session.clone(),
                        device,
                        zone,
                        org: None,
                        leased,
                        invisible: false,
                    })
                    .await;
                match r {
                    Ok(_) if leased => {
                        // The exact lease the store holds, whatever the clock did meanwhile.
                        if let Some(t) = renew(&store, &clock, u, &session, opened_by).await {
                            left.leases.push((u, session, device, t));
                        }
                    }
                    Ok(_) => left.sockets.push((u, session, device)),
                    Err(StoreError::Refused(TransitionError::TooManySessions { .. })) => {}
                    Err(e) => panic!("open: {e}"),
                }
            }
            3..=4 if !left.sockets.is_empty() => {
                let (u, session, _) = left
                    .sockets
                    .swap_remove(rng.random_range(0..left.sockets.len()));
                store
                    .close_session(&user(u), &session)
                    .await
                    .expect("close");
            }
            5 if !left.leases.is_empty() => {
                let (u, session, _, _) = left
                    .leases
                    .swap_remove(rng.random_range(0..left.leases.len()));
                store
                    .close_session(&user(u), &session)
                    .await
                    .expect("close lease");
            }
            6 if !left.leases.is_empty() => {
                let i = rng.random_range(0..left.leases.len());
                let (u, session, _, until) = left.leases[i].clone();
                match renew(&store, &clock, u, &session, until).await {
                    Some(t) => left.leases[i].3 = t,
                    None => {
                        left.leases.swap_remove(i);
                        left.expired += 1;
                    }
                }
            }
            7 => {
                let now = clock.now_ms();
                let batch: Vec<_> = (0..3)
                    .map(|_| Activity {
                        user: user(rng.random_range(0..USERS)),
                        at: now,
                    })
                    .collect();
                store.record_activity(&batch).await.expect("activity");
            }
            8 | 9 => {
                let change = if rng.random_bool(0.4) {
                    Change::away()
                } else {
                    Change::online()
                };
                match store.apply(&user(u), change).await {
                    Ok(_) | Err(StoreError::NotFound(_)) => {}
                    Err(e) => panic!("apply: {e}"),
                }
            }
            10 => {
                let z = Change::SetZone(
                    rng.random_bool(0.8)
                        .then(|| zone(&rng.random_range(0..3).to_string())),
                );
                match store.apply(&user(u), z).await {
                    Ok(_) | Err(StoreError::NotFound(_)) => {}
                    Err(e) => panic!("zone: {e}"),
                }
            }
            _ => {
                store.sweep().await.expect("sweep");
            }
        }
        if rng.random_ratio(1, QUIET_EVERY) {
            Clockwork::tick(&work, away_after + rng.random_range(1_000..=30_000)).await;
        } else if rng.random_ratio(1, TICK_EVERY) {
            Clockwork::tick(&work, rng.random_range(500..=MAX_TICK_MS)).await;
        }
    }
    left
}

/// A node that opens sessions, renews its lease a while, then dies: no more renewals, so the
/// live nodes' sweeps must reap every session it held.
async fn doomed_node(store: Arc<dyn Store>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for n in 0..OPS_PER_TASK / 4 {
        if n % 8 == 0 {
            store.renew_node_lease(1).await.expect("renew");
        }
        let r = store
            .open_session(OpenSession {
                user: user(rng.random_range(0..USERS)),
                session: sid(&format!("doomed-{n}")),
                device: DEVICES[rng.random_range(0..DEVICES.len())],
                zone: None,
                org: None,
                leased: false,
                invisible: false,
            })
            .await;
        match r {
            Ok(_) | Err(StoreError::Refused(TransitionError::TooManySessions { .. })) => {}
            Err(e) => panic!("open on the doomed node: {e}"),
        }
        tokio::task::yield_now().await;
    }
}

/// Shorter than the defaults so the run crosses each many times; small sweep batches so every
/// sweep step drains in several calls, racing the writers between them.
fn settings() -> StoreSettings {
    StoreSettings {
        away_after: Duration::from_secs(60),
        online_ttl: Duration::from_secs(120),
        sweep_batch: 2,
        ..Default::default()
    }
}

/// What a race reached: sweeps that really raced the writers.
#[derive(Debug, Default, Clone, Copy)]
struct Reached {
    auto_away: usize,
    offline: usize,
    leases_expired: usize,
}

/// One race, its invariants asserted; returns what it reached.
async fn race(kind: Kind) -> Reached {
    let settings = settings();
    let k = Kit::with(kind, settings.clone()).await;
    let live = [k.node("node-a"), k.node("node-b")];
    for n in &live {
        n.renew_node_lease(0).await.unwrap();
    }
    let work = Arc::new(Mutex::new(Clockwork {
        clock: k.clock.clone(),
        live: live.clone(),
        moved_ms: 0,
    }));
    let start = k.head().await;
    let doomed = tokio::spawn(doomed_node(k.node("node-doomed"), 0xd00d));
    let mut tasks = Vec::new();
    for (i, node) in live.iter().enumerate() {
        for t in 0..TASKS_PER_NODE {
            let task = i * TASKS_PER_NODE + t;
            tasks.push(tokio::spawn(hammer(
                node.clone(),
                work.clone(),
                task,
                0x5eed + task as u64,
            )));
        }
    }
    let mut left = Vec::new();
    for t in tasks {
        left.push(
            tokio::time::timeout(Duration::from_secs(120), t)
                .await
                .expect("in time")
                .unwrap(),
        );
    }
    doomed.await.unwrap();
    let moved = Duration::from_millis(work.lock().await.moved_ms);
    for threshold in [
        settings.away_after,
        settings.offline_grace,
        settings.node_lease,
        settings.online_ttl,
    ] {
        assert!(moved > threshold, "the clock moved {moved:?} only");
    }

    // Everyone is active at one instant (a tie wider than a sweep batch), then a quiet spell
    // past `away_after` (so past every grace and the doomed node's lease too), the live nodes
    // renewing: one sweep turns every user away who is not manually away already. Then the
    // even users are active again, and a last sweep.
    let all: Vec<Activity> = (0..USERS)
        .map(|u| Activity {
            user: user(u),
            at: k.now(),
        })
        .collect();
    live[1].record_activity(&all).await.unwrap();
    let spell = settings
        .away_after
        .max(settings.node_lease + settings.offline_grace);
    Clockwork::tick(&work, (spell + Duration::from_secs(1)).as_millis() as u64).await;
    live[1].sweep().await.unwrap();
    let back: Vec<Activity> = (0..USERS)
        .step_by(2)
        .map(|u| Activity {
            user: user(u),
            at: k.now(),
        })
        .collect();
    live[0].record_activity(&back).await.unwrap();
    let report = live[0].sweep().await.unwrap();
    let end = k.now();

    let mut devices: BTreeMap<usize, BTreeSet<DeviceKind>> = BTreeMap::new();
    let mut leases = Vec::new();
    let mut expired = 0;
    for l in &left {
        expired += l.expired;
        for (u, _, d) in &l.sockets {
            devices.entry(*u).or_default().insert(*d);
        }
        for (u, s, d, until) in &l.leases {
            let alive = *until > end;
            if alive {
                devices.entry(*u).or_default().insert(*d);
            }
            expired += usize::from(!alive);
            leases.push((*u, s.clone(), alive));
        }
    }

    let events = k.events_since(start).await;
    // The sweeps raced the writers for real: users turned away, graces ran out, leases
    // expired, and the doomed node was reaped.
    let auto_away = events
        .iter()
        .filter(|e| e.prev_status == Status::Online && e.user.away_reason == Some(AwayReason::Auto))
        .count();
    let offline = events
        .iter()
        .filter(|e| e.user.status == Status::Offline)
        .count();
    let reached = Reached {
        auto_away,
        offline,
        leases_expired: expired,
    };
    let nodes: Vec<String> = k
        .store
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.node_id.to_string())
        .collect();
    assert_eq!(nodes, ["node-a", "node-b"], "the doomed node was reaped");
    let (mut online, mut away) = (0, 0);
    let mut zones: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for u in 0..USERS {
        let id = format!("u{u}");
        let Some(view) = k.view(&id).await else {
            assert!(!devices.contains_key(&u), "{id} has sessions but no record");
            continue;
        };
        match devices.get(&u) {
            Some(d) => {
                assert_ne!(view.status, Status::Offline, "{id} has sessions {d:?}");
                assert_eq!(
                    view.devices.iter().collect::<BTreeSet<_>>(),
                    *d,
                    "{id}: devices"
                );
                online += 1;
                if let Some(z) = &view.zone_id {
                    zones.entry(z.to_string()).or_default().insert(id.clone());
                }
                // Manual away sticks; otherwise the even users are back, the odd ones idle.
                let want = match (view.away_reason, u % 2) {
                    (Some(AwayReason::Manual), _) => (Status::Away, Some(AwayReason::Manual)),
                    (_, 0) => (Status::Online, None),
                    _ => (Status::Away, Some(AwayReason::Auto)),
                };
                assert_eq!(
                    (view.status, view.away_reason),
                    want,
                    "{id} last active at {:?} (now {end})",
                    view.last_activity
                );
                away += u64::from(view.status == Status::Away);
            }
            None => {
                assert_eq!(
                    view.status,
                    Status::Offline,
                    "{id} has no open session ({report:?})"
                );
                assert!(view.devices.is_empty(), "{id}: devices");
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

    // Counts agree with the views and with the lists.
    let global = k.count(Scope::Global).await;
    assert_eq!((global.total, global.away), (online, away), "global count");
    assert_eq!(
        k.list_ids(Scope::Global).await.len() as u64,
        online,
        "global list"
    );
    for z in 0..3 {
        let scope = Scope::Zone(zone(&z.to_string()));
        let listed: BTreeSet<String> = k.list_ids(scope.clone()).await.into_iter().collect();
        let want = zones.remove(&z.to_string()).unwrap_or_default();
        assert_eq!(listed, want, "zone {z} list");
        assert_eq!(
            k.count(scope).await.total,
            want.len() as u64,
            "zone {z} count"
        );
    }

    // The REST leases that should have survived the end did, and only those.
    for (u, s, alive) in leases {
        let renewed = live[0].renew_session(&user(u), &s).await;
        assert_eq!(renewed.is_ok(), alive, "u{u} {s}: {renewed:?}");
    }
    reached
}

/// Races until the sweeps have, between them, turned users away, sent users offline and
/// ended leases while the writers ran: which of them a single race reaches depends on how
/// the tasks interleave (most runs reach all three; one in many misses one). At most 5
/// races; every race's invariants hold.
async fn races(kind: Kind) {
    let mut total = Reached::default();
    for _ in 0..5 {
        let r = race(kind).await;
        total.auto_away += r.auto_away;
        total.offline += r.offline;
        total.leases_expired += r.leases_expired;
        if total.auto_away > 0 && total.offline > 0 && total.leases_expired > 0 {
            return;
        }
    }
    panic!("five races never raced every sweep against the writers: {total:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_stays_consistent_under_racing_nodes_and_a_moving_clock() {
    races(Kind::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_stays_consistent_under_racing_nodes_and_a_moving_clock() {
    races(Kind::Redis).await;
}
