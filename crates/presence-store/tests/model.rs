//! Property test: random operation sequences run on a store and on a plain reference model;
//! after every step the views, counts, list order and events must agree. Run for both stores.
//!
//! The model is written straight from SPEC §3, deliberately naive (it scans every user where
//! the stores use indexes) and shares no code with `presence_core::record` or the Lua scripts,
//! so a bug the two stores share still fails here.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use presence_core::*;
use proptest::prelude::*;

const USERS: u8 = 5;

fn settings() -> StoreSettings {
    StoreSettings {
        away_after: Duration::from_secs(60),
        online_ttl: Duration::from_secs(30),
        offline_grace: Duration::from_secs(5),
        node_lease: Duration::from_secs(15),
        last_seen_retention: Duration::from_secs(120),
        sessions_per_user: 3,
        feed_max_len: 100_000,
        // Small, so sweeps exercise their batching.
        sweep_batch: 2,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Open {
        user: u8,
        session: u8,
        device: u8,
        zone: Option<u8>,
        org: Option<u8>,
        on_b: bool,
        leased: bool,
    },
    Close {
        user: u8,
        session: u8,
    },
    Activity {
        users: Vec<u8>,
    },
    Away {
        user: u8,
    },
    Online {
        user: u8,
    },
    Zone {
        user: u8,
        zone: Option<u8>,
    },
    Org {
        user: u8,
        org: Option<u8>,
    },
    Metadata {
        user: u8,
        value: Option<u8>,
    },
    RenewLease {
        user: u8,
        session: u8,
    },
    RenewB,
    Advance {
        secs: u16,
    },
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    let user = 0..USERS;
    prop_oneof![
        4 => (user.clone(), 0..4u8, 0..4u8, proptest::option::of(0..3u8), proptest::option::of(0..2u8), any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(user, session, device, zone, org, on_b, leased)| Op::Open { user, session, device, zone, org, on_b, leased }),
        3 => (user.clone(), 0..4u8).prop_map(|(user, session)| Op::Close { user, session }),
        2 => proptest::collection::vec(0..USERS, 1..4).prop_map(|users| Op::Activity { users }),
        1 => user.clone().prop_map(|user| Op::Away { user }),
        1 => user.clone().prop_map(|user| Op::Online { user }),
        1 => (user.clone(), proptest::option::of(0..3u8)).prop_map(|(user, zone)| Op::Zone { user, zone }),
        1 => (user.clone(), proptest::option::of(0..2u8)).prop_map(|(user, org)| Op::Org { user, org }),
        1 => (user.clone(), proptest::option::of(0..2u8)).prop_map(|(user, value)| Op::Metadata { user, value }),
        1 => (user.clone(), 0..4u8).prop_map(|(user, session)| Op::RenewLease { user, session }),
        1 => Just(Op::RenewB),
        3 => prop_oneof![1u16..4, 4u16..20, 20u16..90].prop_map(|secs| Op::Advance { secs }),
        2 => Just(Op::Sweep),
    ]
}

// --- The reference model -------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct MSession {
    node: Option<&'static str>,
    device: DeviceKind,
    lease: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq)]
struct MUser {
    status: Status,
    reason: Option<AwayReason>,
    manual: bool,
    activity: Millis,
    seen: Option<Millis>,
    zone: Option<String>,
    org: Option<String>,
    devices: BTreeSet<DeviceKind>,
    metadata: Option<String>,
    sessions: BTreeMap<u8, MSession>,
    grace: Option<Millis>,
    version: u64,
    updated: Millis,
}

/// What an operation's outcome is, as the model predicts it.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ok,
    NotFound,
    Refused,
    NoSession,
}

/// An event the model predicts: the user's state after it, and what came before.
struct MEvent {
    user: u8,
    after: MUser,
    prev_status: Status,
    prev_zone: Option<String>,
    prev_org: Option<String>,
    ts: Millis,
}

struct Model {
    s: StoreSettings,
    users: BTreeMap<u8, MUser>,
    b_lease: Option<Millis>,
    b_reaped: bool,
    events: Vec<MEvent>,
}

fn d(ms: Duration) -> Millis {
    ms.as_millis() as Millis
}

const DEVICES: [DeviceKind; 4] = [
    DeviceKind::Web,
    DeviceKind::Desktop,
    DeviceKind::Mobile,
    DeviceKind::Other,
];

impl Model {
    fn new(s: StoreSettings) -> Self {
        Self {
            s,
            users: BTreeMap::new(),
            b_lease: None,
            b_reaped: false,
            events: Vec::new(),
        }
    }

    fn visible(u: &MUser) -> impl PartialEq + use<> {
        (
            u.status,
            u.reason,
            if u.status == Status::Offline {
                u.seen
            } else {
                None
            },
            u.zone.clone(),
            u.org.clone(),
            u.devices.clone(),
            u.metadata.clone(),
        )
    }

    /// Applies `f` to a user and records the event if the view changed.
    fn step(&mut self, user: u8, now: Millis, f: impl FnOnce(&mut MUser)) {
        let before = self.users[&user].clone();
        let u = self.users.get_mut(&user).unwrap();
        f(u);
        if Self::visible(&before) != Self::visible(u) {
            u.version += 1;
            u.updated = now;
            let snapshot = u.clone();
            self.events.push(MEvent {
                user,
                after: snapshot,
                prev_status: before.status,
                prev_zone: before.zone,
                prev_org: before.org,
                ts: now,
            });
        }
    }

    fn devices_of(u: &MUser) -> BTreeSet<DeviceKind> {
        u.sessions.values().map(|s| s.device).collect()
    }

    fn connected_status(u: &mut MUser) {
        if u.manual {
            u.status = Status::Away;
            u.reason = Some(AwayReason::Manual);
        } else {
            u.status = Status::Online;
            u.reason = None;
        }
    }

    fn offline(u: &mut MUser, seen: Millis) {
        u.status = Status::Offline;
        u.reason = None;
        u.devices.clear();
        u.grace = None;
        u.seen = Some(seen);
    }

    fn apply(&mut self, op: &Op, now: Millis) -> Outcome {
        let s = self.s.clone();
        match op.clone() {
            Op::Open {
                user,
                session,
                device,
                zone,
                org,
                on_b,
                leased,
            } => {
                let u = self.users.entry(user).or_insert_with(|| MUser {
                    status: Status::Offline,
                    reason: None,
                    manual: false,
                    activity: now,
                    seen: None,
                    zone: None,
                    org: None,
                    devices: BTreeSet::new(),
                    metadata: None,
                    sessions: BTreeMap::new(),
                    grace: None,
                    version: 0,
                    updated: now,
                });
                if u.sessions.contains_key(&session) || u.sessions.len() >= s.sessions_per_user {
                    if u.version == 0 && u.sessions.is_empty() {
                        self.users.remove(&user);
                    }
                    return Outcome::Refused;
                }
                let node = if leased {
                    None
                } else if on_b {
                    Some("node-b")
                } else {
                    Some("node-a")
                };
                if node == Some("node-b") && self.b_lease.is_none() {
                    self.b_lease = Some(now + d(s.node_lease));
                }
                let lease = leased.then_some(now + d(s.online_ttl));
                self.step(user, now, |u| {
                    u.sessions.insert(
                        session,
                        MSession {
                            node,
                            device: DEVICES[device as usize],
                            lease,
                        },
                    );
                    u.grace = None;
                    u.seen = None;
                    u.activity = u.activity.max(now);
                    Self::connected_status(u);
                    if let Some(z) = zone {
                        u.zone = Some(z.to_string());
                    }
                    if let Some(o) = org {
                        u.org = Some(o.to_string());
                    }
                    u.devices = Self::devices_of(u);
                });
                Outcome::Ok
            }
            Op::Close { user, session } => {
                if !self.users.contains_key(&user) {
                    return Outcome::NotFound;
                }
                let grace = d(s.offline_grace);
                self.step(user, now, |u| {
                    if u.sessions.remove(&session).is_some() {
                        if !u.sessions.is_empty() {
                            u.devices = Self::devices_of(u);
                        } else if grace == 0 {
                            Self::offline(u, now);
                        } else {
                            u.grace = Some(now + grace);
                            u.seen = Some(now);
                        }
                    }
                });
                Outcome::Ok
            }
            Op::Activity { users } => {
                for user in users {
                    if self
                        .users
                        .get(&user)
                        .is_some_and(|u| u.status != Status::Offline)
                    {
                        self.step(user, now, |u| {
                            u.activity = u.activity.max(now);
                            if u.reason == Some(AwayReason::Auto) {
                                u.status = Status::Online;
                                u.reason = None;
                            }
                        });
                    }
                }
                Outcome::Ok
            }
            Op::Away { user } | Op::Online { user } => {
                if !self.users.contains_key(&user) {
                    return Outcome::NotFound;
                }
                let away = matches!(op, Op::Away { .. });
                self.step(user, now, |u| {
                    u.manual = away;
                    if u.status != Status::Offline {
                        if !away {
                            u.activity = u.activity.max(now);
                        }
                        Self::connected_status(u);
                    }
                });
                Outcome::Ok
            }
            Op::Zone { user, zone } => {
                self.set(user, now, |u| u.zone = zone.map(|z| z.to_string()))
            }
            Op::Org { user, org } => self.set(user, now, |u| u.org = org.map(|o| o.to_string())),
            Op::Metadata { user, value } => self.set(user, now, |u| {
                u.metadata = value.map(|v| format!("{{\"v\":{v}}}"))
            }),
            Op::RenewLease { user, session } => {
                match self
                    .users
                    .get_mut(&user)
                    .and_then(|u| u.sessions.get_mut(&session))
                {
                    Some(sess) if sess.lease.is_some() => {
                        sess.lease = Some(now + d(s.online_ttl));
                        Outcome::Ok
                    }
                    _ => Outcome::NoSession,
                }
            }
            Op::RenewB => {
                self.b_lease = Some(now + d(s.node_lease));
                self.b_reaped = false;
                Outcome::Ok
            }
            Op::Advance { .. } => Outcome::Ok,
            Op::Sweep => {
                self.sweep(now);
                Outcome::Ok
            }
        }
    }

    fn set(&mut self, user: u8, now: Millis, f: impl FnOnce(&mut MUser)) -> Outcome {
        if !self.users.contains_key(&user) {
            return Outcome::NotFound;
        }
        self.step(user, now, f);
        Outcome::Ok
    }

    /// The sweep's steps, in the stores' order: auto-away, grace, REST leases, dead nodes,
    /// retention.
    fn sweep(&mut self, now: Millis) {
        let s = self.s.clone();
        let ids: Vec<u8> = self.users.keys().copied().collect();
        let cutoff = now - d(s.away_after);
        for &id in &ids {
            if self.users[&id].status == Status::Online && self.users[&id].activity <= cutoff {
                self.step(id, now, |u| {
                    u.status = Status::Away;
                    u.reason = Some(AwayReason::Auto);
                });
            }
        }
        for &id in &ids {
            let u = &self.users[&id];
            if u.sessions.is_empty() && u.grace.is_some_and(|g| g <= now) {
                self.step(id, now, |u| {
                    let seen = u.seen.unwrap();
                    Self::offline(u, seen);
                });
            }
        }
        for &id in &ids {
            // In expiry order, as the stores' lease index holds them.
            let mut expired: Vec<(Millis, u8)> = self.users[&id]
                .sessions
                .iter()
                .filter_map(|(k, s)| s.lease.filter(|l| *l <= now).map(|l| (l, *k)))
                .collect();
            expired.sort();
            for (_, sid) in expired {
                self.end(id, now, |k, _| *k == sid);
            }
        }
        if self.b_lease.is_some_and(|l| l < now) {
            for &id in &ids {
                self.end(id, now, |_, s| s.node == Some("node-b"));
            }
            self.b_lease = None;
            self.b_reaped = true;
        }
        let keep_after = now - d(s.last_seen_retention);
        self.users.retain(|_, u| {
            !(u.status == Status::Offline && u.seen.is_some_and(|t| t <= keep_after))
        });
    }

    fn end(&mut self, id: u8, now: Millis, ended: impl Fn(&u8, &MSession) -> bool) {
        if !self.users[&id].sessions.iter().any(|(k, s)| ended(k, s)) {
            return;
        }
        self.step(id, now, |u| {
            u.sessions.retain(|k, s| !ended(k, s));
            if u.sessions.is_empty() {
                Self::offline(u, now);
            } else {
                u.devices = Self::devices_of(u);
            }
        });
    }

    fn view(user: u8, u: &MUser) -> PresenceView {
        PresenceView {
            user_id: uid(&format!("u{user}")),
            status: u.status,
            away_reason: u.reason,
            last_activity: u.activity,
            last_seen: if u.status == Status::Offline {
                u.seen
            } else {
                None
            },
            zone_id: u.zone.as_deref().map(zone),
            org_id: u.org.as_deref().map(org),
            devices: u.devices.iter().copied().collect(),
            custom_status: None,
            metadata: u
                .metadata
                .as_deref()
                .map(|m| serde_json::from_str(m).unwrap()),
            invisible: false,
            version: u.version,
            updated_at: u.updated,
        }
    }

    fn present_in(&self, scope: &Scope) -> Vec<(Millis, String, bool)> {
        let mut v: Vec<_> = self
            .users
            .iter()
            .filter(|(_, u)| u.status != Status::Offline)
            .filter(|(_, u)| match scope {
                Scope::Global => true,
                Scope::Zone(z) => u.zone.as_deref() == Some(z.as_str()),
                Scope::Org(o) => u.org.as_deref() == Some(o.as_str()),
            })
            .map(|(id, u)| (u.activity, format!("u{id}"), u.status == Status::Away))
            .collect();
        v.sort();
        v.reverse();
        v
    }
}

// --- Running one case ------------------------------------------------------------------------

fn outcome<T>(r: Result<T, StoreError>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(StoreError::NotFound(_)) => Outcome::NotFound,
        Err(StoreError::Refused(_)) => Outcome::Refused,
        Err(StoreError::NoSuchSession(_)) => Outcome::NoSession,
        Err(e) => panic!("store failed: {e}"),
    }
}

async fn run_case(kind: Kind, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let k = Kit::with(kind, settings()).await;
    let b = k.node("node-b");
    let mut model = Model::new(settings());
    let scopes: Vec<Scope> = std::iter::once(Scope::Global)
        .chain((0..3).map(|z| Scope::Zone(zone(&z.to_string()))))
        .chain((0..2).map(|o| Scope::Org(org(&o.to_string()))))
        .collect();
    for (i, op) in ops.iter().enumerate() {
        if let Op::Advance { secs } = op {
            k.advance(Duration::from_secs(u64::from(*secs))).await;
        }
        let now = k.now();
        let head = k.head().await;
        let u = |n: &u8| uid(&format!("u{n}"));
        let s = |n: &u8| sid(&format!("s{n}"));
        let got = match op {
            Op::Open {
                user,
                session,
                device,
                zone: z,
                org: o,
                on_b,
                leased,
            } => {
                let store = if *on_b && !*leased { &b } else { &k.store };
                outcome(
                    store
                        .open_session(OpenSession {
                            user: u(user),
                            session: s(session),
                            device: DEVICES[*device as usize],
                            zone: z.map(|z| zone(&z.to_string())),
                            org: o.map(|o| org(&o.to_string())),
                            leased: *leased,
                        })
                        .await,
                )
            }
            Op::Close { user, session } => {
                outcome(k.store.close_session(&u(user), &s(session)).await)
            }
            Op::Activity { users } => {
                let batch: Vec<_> = users
                    .iter()
                    .map(|n| Activity {
                        user: u(n),
                        at: now,
                    })
                    .collect();
                outcome(k.store.record_activity(&batch).await)
            }
            Op::Away { user } => outcome(k.store.apply(&u(user), Change::SetAway).await),
            Op::Online { user } => outcome(k.store.apply(&u(user), Change::SetOnline).await),
            Op::Zone { user, zone: z } => outcome(
                k.store
                    .apply(&u(user), Change::SetZone(z.map(|z| zone(&z.to_string()))))
                    .await,
            ),
            Op::Org { user, org: o } => outcome(
                k.store
                    .apply(&u(user), Change::SetOrg(o.map(|o| org(&o.to_string()))))
                    .await,
            ),
            Op::Metadata { user, value } => {
                let md = value.map(|v| serde_json::from_str(&format!("{{\"v\":{v}}}")).unwrap());
                outcome(k.store.apply(&u(user), Change::SetMetadata(md)).await)
            }
            Op::RenewLease { user, session } => {
                outcome(k.store.renew_session(&u(user), &s(session)).await)
            }
            Op::RenewB => outcome(b.renew_node_lease(0).await),
            Op::Advance { .. } => Outcome::Ok,
            Op::Sweep => outcome(k.store.sweep().await),
        };
        let events_before = model.events.len();
        let want = model.apply(op, now);
        prop_assert_eq!(&got, &want, "step {} {:?}: outcome", i, op);

        // Views of every user.
        for n in 0..USERS {
            let view = k.store.view(&u(&n)).await.unwrap();
            let expected = model.users.get(&n).map(|m| Model::view(n, m));
            prop_assert_eq!(view, expected, "step {} {:?}: view of u{}", i, op, n);
        }
        // Counts and list order of every scope.
        for scope in &scopes {
            let present = model.present_in(scope);
            let c = k.store.counts(std::slice::from_ref(scope)).await.unwrap()[0];
            let away = present.iter().filter(|p| p.2).count() as u64;
            prop_assert_eq!(
                c,
                ScopeCount {
                    total: present.len() as u64,
                    away
                },
                "step {} {:?}: count {}",
                i,
                op,
                scope
            );
            let page = k
                .store
                .list(
                    scope,
                    &ListQuery {
                        limit: 100,
                        cursor: None,
                        status: None,
                    },
                )
                .await
                .unwrap();
            let ids: Vec<String> = page.users.iter().map(|v| v.user_id.to_string()).collect();
            let want: Vec<String> = present.iter().map(|p| p.1.clone()).collect();
            prop_assert_eq!(ids, want, "step {} {:?}: list {}", i, op, scope);
        }
        // Exactly the model's events, in per-user version order.
        let mut got: Vec<_> = k
            .events_since(head)
            .await
            .into_iter()
            .map(|e| {
                (
                    e.user.user_id.to_string(),
                    e.user.version,
                    e.user,
                    e.prev_status,
                    e.prev_zone_id,
                    e.prev_org_id,
                    e.ts,
                )
            })
            .collect();
        got.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let mut want: Vec<_> = model.events[events_before..]
            .iter()
            .map(|e| {
                let v = Model::view(e.user, &e.after);
                let (pz, po) = (
                    e.prev_zone.as_deref().map(zone),
                    e.prev_org.as_deref().map(org),
                );
                (
                    v.user_id.to_string(),
                    v.version,
                    v,
                    e.prev_status,
                    pz,
                    po,
                    e.ts,
                )
            })
            .collect();
        want.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        prop_assert_eq!(got, want, "step {} {:?}: events", i, op);
    }
    Ok(())
}

fn check(kind: Kind, cases: u32) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..40))| {
        rt.block_on(run_case(kind, ops))?;
    });
}

#[test]
fn memory_store_agrees_with_the_model() {
    check(Kind::Memory, 256);
}

#[test]
fn redis_store_agrees_with_the_model() {
    check(Kind::Redis, 96);
}
