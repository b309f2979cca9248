//! Property test: random operation sequences run on a store and on a plain reference model;
//! after every step the views, counts, pages, nodes and events must agree. Run for both stores.
//!
//! The model is written straight from SPEC §3–§4 and the `Store` trait's documentation,
//! deliberately naive (it scans every user where the stores use indexes) and shares no code
//! with `presence_core::record` or the Lua scripts, so a bug the two stores share still fails
//! here.
//!
//! What the generator reaches (issue #17). Each case is counted per run in a [`Hits`] table,
//! printed at the end of each store's run (`--nocapture` shows it); every row must be above
//! zero, so a generator change that stops reaching one fails the test. Counts from two
//! typical runs, memory (256 cases) / Redis (64 cases), up to 80 steps or short scenarios each:
//!
//! - activity stamped with its own time: stale, older than `away_after`, skipped (~850 / 180);
//!   exactly `away_after` old, skipped like the sweep's `<=` (~280 / 60); in the future,
//!   counted as now (~260 / 60); older than the user's last activity (~470 / 100); out of
//!   order within one batch (~140 / 35);
//! - closes through node b (~220 / 60); node a's lease lapsing and its sessions reaped while
//!   node b holds its lease (~160 / 35), node b reaped (~120 / 30); a reaped node, or one
//!   renewing after its lease ran out, told `LeaseRenewal::Lost` (~650 / 160); each node's
//!   `node_session_count` compared after every step;
//! - 12 users walked page by page with limits 1–4, cursors followed to the end through their
//!   opaque form, every page's count and views compared: unfiltered over several pages
//!   (~240 / 50), `status=online` (~880 / 200), `status=away` (~270 / 50);
//! - `feed_max_len` 12: a step's start aged out of the feed (~250 / 60); resumes from an
//!   aged-out id, which must answer reset (~400 / 65; Redis trims whole stream nodes, so it
//!   must only once more than 112 events came after); resumes with a small `limit`
//!   (~130 / 45);
//! - `views` batches with unknown users (every step), `nodes` with both nodes live
//!   (~10,000 / 2,300) and with a lapsed, not yet reaped node left out (~1,500 / 350),
//!   `wait_feed` woken by the step's events (~180 / 50) or idle until its timeout
//!   (~500 / 130);
//! - the global feed order: outside sweeps, events are compared in the order the transitions
//!   happened, within one step (activity batches bringing several users back from
//!   auto-away, ~120 / 15–40) and across steps (resumes spanning several users and steps,
//!   ~100 / 30); a sweep's events keep each user's order only, as the trait promises no order
//!   between users within one sweep;
//! - records deleted after a 45 s `last_seen_retention` (~530 / 150), auto-away
//!   (~1,300 / 300), grace expiry (~270 / 75), REST lease expiry (~250 / 65) and custom
//!   status expiry (set with an expiry of 1–90 s, replaced, cleared; swept exactly on time
//!   or a second early by a dedicated fragment, ~590 / 125);
//! - sessions the service ends (`end_session`, ~820 / 220), the user's last one among them,
//!   which starts the grace (~740 / 195), and opens of a session it ended refused until the
//!   mark's eight node leases are up (~560 / 160); every user's sessions (ids, devices,
//!   nodes, connect times, last activity) compared after every step.
//!
//! Both stores' runs take about 30–35 s together on the project's 2-core machine (Redis is
//! the longer one).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use presence_core::*;
use proptest::prelude::*;

const USERS: u8 = 12;
const AWAY_AFTER_MS: u32 = 30_000;
const FEED_MAX_LEN: usize = 12;
/// Redis trims the feed with `XADD MAXLEN ~`, a whole stream node at a time (at most
/// `stream-node-max-entries`, 100 by default): it may keep up to this many events beyond
/// `feed_max_len`. The memory store trims exactly.
const REDIS_TRIM_SLACK: usize = 100;
const NODE_A: &str = "node-a";
const NODE_B: &str = "node-b";

fn settings() -> StoreSettings {
    StoreSettings {
        away_after: Duration::from_millis(u64::from(AWAY_AFTER_MS)),
        online_ttl: Duration::from_secs(30),
        offline_grace: Duration::from_secs(5),
        node_lease: Duration::from_secs(15),
        // Short, so offline records are deleted in most runs.
        last_seen_retention: Duration::from_secs(45),
        history_retention: Duration::from_secs(86_400),
        sessions_per_user: 3,
        // Small, so the feed is trimmed and resumes from old ids must answer reset.
        feed_max_len: FEED_MAX_LEN,
        // Small, so sweeps exercise their batching.
        sweep_batch: 2,
    }
}

/// Who holds a session being opened.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Holder {
    NodeA,
    NodeB,
    /// A REST heartbeat session, leased, held by no node.
    Lease,
}

/// When an activity happened, relative to the store's now.
#[derive(Debug, Clone, Copy)]
enum When {
    Now,
    Ago(u32),
    Future(u32),
}

impl When {
    fn at(self, now: Millis) -> Millis {
        match self {
            When::Now => now,
            When::Ago(ms) => now - Millis::from(ms),
            When::Future(ms) => now + Millis::from(ms),
        }
    }
}

/// Which nodes renew their lease as time moves on.
#[derive(Debug, Clone, Copy)]
enum Renew {
    Both,
    OnlyA,
    OnlyB,
    Neither,
}

#[derive(Debug, Clone)]
enum Op {
    Open {
        user: u8,
        session: u8,
        device: u8,
        zone: Option<u8>,
        org: Option<u8>,
        holder: Holder,
        /// Open invisible (the upgrade's `?invisible=true`).
        invisible: bool,
    },
    Close {
        user: u8,
        session: u8,
        via_b: bool,
    },
    /// Closes the `pick`-th open session (modulo) the model knows, if there is one: random
    /// user and session ids rarely name an open session.
    CloseOpen {
        pick: u8,
        via_b: bool,
    },
    /// The service ends a session (`end_session`).
    End {
        user: u8,
        session: u8,
        via_b: bool,
    },
    /// Ends the `pick`-th open session (modulo) the model knows, like `CloseOpen`.
    EndOpen {
        pick: u8,
        via_b: bool,
    },
    Activity {
        batch: Vec<(u8, When)>,
        via_b: bool,
    },
    /// `status.set` away, maybe going invisible or visible in the same step.
    Away {
        user: u8,
        invisible: Option<bool>,
    },
    /// `status.set` online, maybe going invisible or visible in the same step.
    Online {
        user: u8,
        invisible: Option<bool>,
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
    /// Sets a custom status: kind index, text variant, with an emoji or not, an expiry this
    /// many seconds from now (or none).
    SetCustom {
        user: u8,
        kind: u8,
        text: Option<u8>,
        emoji: bool,
        expires_in: Option<u16>,
    },
    ClearCustom {
        user: u8,
    },
    /// Privacy: who sees the presence, how last seen shows (indexes into the settings).
    SetPrivacy {
        user: u8,
        presence: u8,
        last_seen: u8,
    },
    /// `n` metadata changes in a row: enough events to trim the small feed.
    Churn {
        user: u8,
        n: u8,
    },
    RenewLease {
        user: u8,
        session: u8,
    },
    RenewNode {
        b: bool,
    },
    Advance {
        secs: u16,
        renew: Renew,
    },
    Sweep {
        by_b: bool,
    },
    /// Resume the feed from an older id: the `pick`-th known one (modulo), counted from the
    /// oldest or from the newest, at most `limit` events (0: no limit).
    ReadFeed {
        oldest: bool,
        pick: u8,
        limit: u8,
    },
}

/// What each step looks at besides the operation itself.
#[derive(Debug, Clone)]
struct Probe {
    /// Index into the scopes (global, 3 zones, 2 orgs) walked page by page.
    scope: u8,
    /// 0: no filter, 1: online, 2: away.
    status: u8,
    limit: u8,
    /// Wait on the feed from before the step while it runs.
    wait: bool,
}

fn when() -> impl Strategy<Value = When> {
    let window = AWAY_AFTER_MS;
    prop_oneof![
        3 => Just(When::Now),
        3 => (1..window).prop_map(When::Ago),
        1 => Just(When::Ago(window)),
        2 => (window + 1..window * 6).prop_map(When::Ago),
        1 => (1u32..5_000).prop_map(When::Future),
    ]
}

/// Activity of every user, in any order, each at its own time; then a few users again, out
/// of order.
fn everyone() -> impl Strategy<Value = Vec<(u8, When)>> {
    let again = proptest::collection::vec((0..USERS, when()), 0..4);
    (Just((0..USERS).collect::<Vec<_>>()).prop_shuffle(), again).prop_flat_map(|(users, again)| {
        proptest::collection::vec(when(), users.len()).prop_map(move |whens| {
            let mut batch: Vec<_> = users.iter().copied().zip(whens).collect();
            batch.extend(again.iter().copied());
            batch
        })
    })
}

/// Most status changes leave visibility alone; some go invisible, fewer come back.
fn invisible() -> impl Strategy<Value = Option<bool>> {
    prop_oneof![3 => Just(None), 2 => Just(Some(true)), 1 => Just(Some(false))]
}

fn op() -> impl Strategy<Value = Op> {
    let user = 0..USERS;
    let holder =
        prop_oneof![4 => Just(Holder::NodeA), 3 => Just(Holder::NodeB), 1 => Just(Holder::Lease)];
    let renew = prop_oneof![4 => Just(Renew::Both), 2 => Just(Renew::OnlyA), 3 => Just(Renew::OnlyB), 1 => Just(Renew::Neither)];
    prop_oneof![
        // u0 and u1 more often than the others, so the few-user activity batches find them.
        6 => (prop_oneof![user.clone(), 0..2u8], 0..4u8, 0..4u8, proptest::option::of(0..3u8), proptest::option::of(0..2u8), holder, prop::bool::weighted(0.1))
            .prop_map(|(user, session, device, zone, org, holder, invisible)| Op::Open { user, session, device, zone, org, holder, invisible }),
        1 => (user.clone(), 0..4u8, any::<bool>()).prop_map(|(user, session, via_b)| Op::Close { user, session, via_b }),
        3 => (any::<u8>(), any::<bool>()).prop_map(|(pick, via_b)| Op::CloseOpen { pick, via_b }),
        1 => (user.clone(), 0..4u8, any::<bool>()).prop_map(|(user, session, via_b)| Op::End { user, session, via_b }),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(pick, via_b)| Op::EndOpen { pick, via_b }),
        3 => (proptest::collection::vec((user.clone(), when()), 1..6), prop::bool::weighted(0.3))
            .prop_map(|(batch, via_b)| Op::Activity { batch, via_b }),
        // Two users, several times each: out of order within the batch.
        3 => proptest::collection::vec((0..2u8, when()), 3..7)
            .prop_map(|batch| Op::Activity { batch, via_b: false }),
        // Everyone at once, in any order, as a node's coalesced flush: several users may come
        // back from auto-away in one call.
        2 => everyone().prop_map(|batch| Op::Activity { batch, via_b: false }),
        1 => (user.clone(), invisible()).prop_map(|(user, invisible)| Op::Away { user, invisible }),
        2 => (user.clone(), invisible()).prop_map(|(user, invisible)| Op::Online { user, invisible }),
        1 => (user.clone(), proptest::option::of(0..3u8)).prop_map(|(user, zone)| Op::Zone { user, zone }),
        1 => (user.clone(), proptest::option::of(0..2u8)).prop_map(|(user, org)| Op::Org { user, org }),
        1 => (user.clone(), proptest::option::of(0..2u8)).prop_map(|(user, value)| Op::Metadata { user, value }),
        2 => (user.clone(), 0..5u8, proptest::option::of(0..3u8), any::<bool>(), proptest::option::of(1..90u16))
            .prop_map(|(user, kind, text, emoji, expires_in)| Op::SetCustom { user, kind, text, emoji, expires_in }),
        1 => user.clone().prop_map(|user| Op::ClearCustom { user }),
        2 => (user.clone(), prop_oneof![2 => Just(0u8), 1 => Just(1), 1 => Just(2), 1 => Just(3)], 0..4u8)
            .prop_map(|(user, presence, last_seen)| Op::SetPrivacy { user, presence, last_seen }),
        1 => (user.clone(), 1..30u8).prop_map(|(user, n)| Op::Churn { user, n }),
        1 => (user.clone(), 0..4u8).prop_map(|(user, session)| Op::RenewLease { user, session }),
        1 => prop::bool::weighted(0.7).prop_map(|b| Op::RenewNode { b }),
        5 => (prop_oneof![1u16..4, 4u16..20, 20u16..90], renew).prop_map(|(secs, renew)| Op::Advance { secs, renew }),
        4 => any::<bool>().prop_map(|by_b| Op::Sweep { by_b }),
        // Mostly a recent id; sometimes one of the oldest, which a long run has trimmed.
        3 => (prop::bool::weighted(0.2), 0..24u8, 0..6u8)
            .prop_map(|(oldest, pick, limit)| Op::ReadFeed { oldest, pick, limit }),
    ]
}

/// One operation, or a short scenario that single random operations rarely line up.
fn fragment() -> impl Strategy<Value = Vec<(Op, Probe)>> {
    prop_oneof![
        40 => (op(), probe()).prop_map(|step| vec![step]),
        // A lull past away_after, a sweep (auto-away), then everyone's activity at once:
        // several users back from auto-away in one call, their events in batch order.
        4 => (30u16..40, everyone(), probe(), probe(), probe()).prop_map(|(secs, batch, p, q, r)| vec![
            (Op::Advance { secs, renew: Renew::Both }, p),
            (Op::Sweep { by_b: false }, q),
            (Op::Activity { batch, via_b: false }, r),
        ]),
        // A custom status with an expiry, time moved on to exactly then or just before, a
        // sweep: cleared exactly on time, not before.
        3 => (0..USERS, 1..40u16, any::<bool>(), probe(), probe(), probe(), probe())
            .prop_map(|(user, secs, early, p, q, r, t)| vec![
                (Op::Open { user, session: 0, device: 0, zone: None, org: None, holder: Holder::NodeA, invisible: false }, p),
                (Op::SetCustom { user, kind: 2, text: Some(0), emoji: true, expires_in: Some(secs) }, q),
                (Op::Advance { secs: if early { secs - 1 } else { secs }, renew: Renew::Both }, r),
                (Op::Sweep { by_b: early }, t),
            ]),
        // Invisible through a presence: go invisible, idle into auto-away (which others do
        // not see), a second device, leave and let the grace run out, come back (a new
        // presence, visible again).
        3 => (0..USERS, any::<bool>(), proptest::collection::vec(probe(), 9)).prop_map(|(user, away, p)| vec![
            (Op::Open { user, session: 1, device: 0, zone: Some(1), org: Some(0), holder: Holder::NodeA, invisible: false }, p[0].clone()),
            (if away { Op::Away { user, invisible: Some(true) } } else { Op::Online { user, invisible: Some(true) } }, p[1].clone()),
            (Op::Advance { secs: 31, renew: Renew::Both }, p[2].clone()),
            (Op::Sweep { by_b: false }, p[3].clone()),
            (Op::Open { user, session: 2, device: 2, zone: None, org: None, holder: Holder::NodeB, invisible: false }, p[4].clone()),
            (Op::CloseOpen { pick: user, via_b: false }, p[5].clone()),
            (Op::Close { user, session: 1, via_b: false }, p[5].clone()),
            (Op::Close { user, session: 2, via_b: true }, p[6].clone()),
            (Op::Advance { secs: 6, renew: Renew::Both }, p[7].clone()),
            (Op::Sweep { by_b: true }, p[7].clone()),
            (Op::Open { user, session: 0, device: 1, zone: None, org: None, holder: Holder::NodeA, invisible: false }, p[8].clone()),
        ]),
        // Privacy through its settings: org members see what others do not; nobody hides from
        // the org too; everyone again.
        2 => (0..USERS, 0..3u8, proptest::collection::vec(probe(), 6)).prop_map(|(user, last_seen, p)| vec![
            (Op::Open { user, session: 1, device: 1, zone: Some(2), org: Some(1), holder: Holder::NodeB, invisible: false }, p[0].clone()),
            (Op::SetPrivacy { user, presence: 1, last_seen }, p[1].clone()),
            (Op::Away { user, invisible: None }, p[2].clone()),
            (Op::SetPrivacy { user, presence: 2, last_seen }, p[3].clone()),
            (Op::Online { user, invisible: None }, p[4].clone()),
            (Op::SetPrivacy { user, presence: 0, last_seen: 0 }, p[5].clone()),
        ]),
        // The service ends a node's session; the node, re-asserting it, is refused until the
        // mark's time is up.
        3 => (0..USERS, any::<bool>(), 0..130u16, probe(), probe(), probe(), probe())
            .prop_map(|(user, b, secs, p, q, r, t)| {
                let holder = if b { Holder::NodeB } else { Holder::NodeA };
                let open = Op::Open { user, session: 2, device: 1, zone: None, org: None, holder, invisible: false };
                vec![
                    (open.clone(), p),
                    (Op::End { user, session: 2, via_b: !b }, q),
                    (Op::Advance { secs, renew: Renew::Both }, r),
                    (open, t),
                ]
            }),
        // One node stops renewing past its lease; the other renews, sweeps and so reaps it;
        // the dead one comes back and renews.
        3 => (any::<bool>(), 16u16..40, probe(), probe(), probe()).prop_map(|(b_dies, secs, p, q, r)| vec![
            (Op::Advance { secs, renew: if b_dies { Renew::OnlyA } else { Renew::OnlyB } }, p),
            (Op::Sweep { by_b: !b_dies }, q),
            (Op::RenewNode { b: b_dies }, r),
        ]),
        // More events than even Redis's approximate trimming keeps past feed_max_len, then a
        // resume from the start: it must answer reset.
        1 => (0..USERS, (FEED_MAX_LEN + REDIS_TRIM_SLACK) as u8..160, 0..2u8, probe(), probe(), probe())
            .prop_map(|(user, n, pick, p, q, r)| vec![
                (Op::Open { user, session: 3, device: 3, zone: None, org: None, holder: Holder::Lease, invisible: false }, p),
                (Op::Churn { user, n }, q),
                (Op::ReadFeed { oldest: true, pick, limit: 0 }, r),
            ]),
    ]
}

fn steps(max: usize) -> impl Strategy<Value = Vec<(Op, Probe)>> {
    proptest::collection::vec(fragment(), 1..max)
        .prop_map(|fragments| fragments.into_iter().flatten().collect())
}

fn probe() -> impl Strategy<Value = Probe> {
    let status = prop_oneof![2 => Just(0u8), 1 => Just(1), 1 => Just(2)];
    (0..6u8, status, 1..5u8, prop::bool::weighted(0.06)).prop_map(|(scope, status, limit, wait)| {
        Probe {
            scope,
            status,
            limit,
            wait,
        }
    })
}

// --- The reference model -------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct MSession {
    node: Option<&'static str>,
    device: DeviceKind,
    lease: Option<Millis>,
    /// When it opened, to the second (rounded down).
    opened: Millis,
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
    custom: Option<MCustom>,
    /// The user chose invisible.
    invisible: bool,
    /// Privacy: who sees the presence (0 everyone, 1 org, 2 nobody), how last seen shows
    /// (0 exact, 1 approximate, 2 hidden).
    privacy: (u8, u8),
    /// Hiding from onlookers outside the org: since when, and the version and time of the
    /// last change they saw.
    hidden: Option<(Millis, u64, Millis)>,
    /// The same for the org's members.
    hidden_org: Option<(Millis, u64, Millis)>,
    sessions: BTreeMap<u8, MSession>,
    grace: Option<Millis>,
    version: u64,
    updated: Millis,
    /// While present: when the presence began (its first session's open second).
    since: Option<Millis>,
}

/// A custom status as the model keeps it: indexes into the generator's choices.
#[derive(Debug, Clone, PartialEq)]
struct MCustom {
    kind: u8,
    text: Option<u8>,
    emoji: bool,
    expires: Option<Millis>,
}

const PRESENCE_VISIBILITY: [PresenceVisibility; 3] = [
    PresenceVisibility::Everyone,
    PresenceVisibility::Org,
    PresenceVisibility::Nobody,
];
const LAST_SEEN_VISIBILITY: [LastSeenVisibility; 3] = [
    LastSeenVisibility::Exact,
    LastSeenVisibility::Approximate,
    LastSeenVisibility::Hidden,
];

const CUSTOM_KINDS: [CustomStatusKind; 5] = [
    CustomStatusKind::Dnd,
    CustomStatusKind::Busy,
    CustomStatusKind::InMeeting,
    CustomStatusKind::OnBreak,
    CustomStatusKind::Custom,
];

/// The text of a generated custom status: multi-byte characters and the separators a store
/// might split on, so an encoding that loses them fails here.
fn custom_text(n: u8) -> String {
    format!("t{n} ☕ «a|b,c» {}", "é".repeat(usize::from(n) * 40))
}

const CUSTOM_EMOJI: &str = "👩‍💻";

/// A node the store knows: registered by its first renewal or its first session.
#[derive(Debug, Clone, PartialEq)]
struct MNode {
    lease: Millis,
    started: Millis,
    /// 0 until the node renews.
    renewed: Millis,
    sessions: u64,
}

/// What an operation's outcome is, as the model predicts it.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ok,
    NotFound,
    Refused,
    NoSession,
    /// A REST lease renewed until then.
    Until(Millis),
    /// Node lease renewals, node a's first.
    Leases(Vec<LeaseRenewal>),
    Swept(Swept),
}

/// A sweep's report, minus `stale_entries` (store housekeeping the model does not see).
#[derive(Debug, Default, PartialEq)]
struct Swept {
    auto_away: usize,
    grace_expired: usize,
    leases_expired: usize,
    node_sessions_reaped: usize,
    nodes_reaped: usize,
    custom_expired: usize,
    records_deleted: usize,
}

/// An event the model predicts: the user's state after it, and what came before.
#[derive(Debug)]
struct MEvent {
    user: u8,
    after: MUser,
    prev_status: Status,
    prev_zone: Option<String>,
    prev_org: Option<String>,
    ts: Millis,
    /// How onlookers see it: hidden before and no change seen, outside the org and in it.
    onlookers: Onlookers,
    /// Which `apply` made it.
    op: u64,
    /// Made by a sweep: its order against the sweep's other users' events is the store's.
    in_sweep: bool,
}

struct Model {
    s: StoreSettings,
    users: BTreeMap<u8, MUser>,
    nodes: BTreeMap<&'static str, MNode>,
    /// Nodes reaped since they last renewed: told `Lost` at their next renewal.
    reaped: BTreeSet<&'static str>,
    /// Node-held sessions the service ended, and until when they may not open again.
    ended: BTreeMap<(u8, u8), Millis>,
    /// Every event, in the order the transitions happened.
    events: Vec<MEvent>,
    ops: u64,
    sweeping: bool,
    /// Online history: ms present per UTC day (days since 1970), per user; kept apart from
    /// the records, which retention deletes sooner.
    history: BTreeMap<u8, BTreeMap<i64, Millis>>,
}

const DAY: Millis = 86_400_000;

/// Adds `[from, to)` to a user's days, a day at a time.
fn add_days(days: &mut BTreeMap<i64, Millis>, from: Millis, to: Millis) {
    let mut at = from;
    while at < to {
        let day = at / DAY;
        let end = to.min((day + 1) * DAY);
        *days.entry(day).or_default() += end - at;
        at = end;
    }
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
            nodes: BTreeMap::new(),
            reaped: BTreeSet::new(),
            ended: BTreeMap::new(),
            events: Vec::new(),
            ops: 0,
            sweeping: false,
            history: BTreeMap::new(),
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
            u.custom.clone(),
            u.invisible,
            u.privacy.0,
            u.hidden.map(|h| h.0),
            u.hidden_org.map(|h| h.0),
        )
    }

    /// Whether a user hides from onlookers outside the org, and from the org's members.
    fn hides(u: &MUser) -> (bool, bool) {
        (
            u.invisible || u.privacy.0 != 0,
            u.invisible || u.privacy.0 == 2,
        )
    }

    /// What onlookers behind `anchor` see of a user (SPEC §3): offline since the user began
    /// hiding from them, with no devices.
    fn as_seen(u: &MUser, anchor: Option<(Millis, u64, Millis)>) -> impl PartialEq + use<> {
        let (status, reason, seen, devices) = match anchor {
            Some((since, _, _)) => (Status::Offline, None, Some(since), BTreeSet::new()),
            None => (
                u.status,
                u.reason,
                (u.status == Status::Offline).then_some(u.seen).flatten(),
                u.devices.clone(),
            ),
        };
        (
            status,
            reason,
            seen,
            devices,
            u.zone.clone(),
            u.org.clone(),
            u.metadata.clone(),
            u.custom.clone(),
        )
    }

    /// Applies `f` to a user and records the event if the view changed.
    fn step(&mut self, user: u8, now: Millis, f: impl FnOnce(&mut MUser)) {
        let before = self.users[&user].clone();
        let u = self.users.get_mut(&user).unwrap();
        f(u);
        // A presence begins with its first session and ends offline: its span goes to the
        // history then.
        if before.status == Status::Offline && u.status != Status::Offline {
            u.since = u.sessions.values().map(|s| s.opened).min();
        } else if before.status != Status::Offline
            && u.status == Status::Offline
            && let (Some(from), Some(to)) = (u.since.take(), u.seen)
        {
            add_days(self.history.entry(user).or_default(), from, to);
        }
        // Hiding starts and ends as the settings say: from now, or for an offline user from
        // their last seen, showing onlookers what they saw.
        let (others, org) = Self::hides(u);
        let since = match (before.status, before.seen) {
            (Status::Offline, Some(seen)) => seen,
            _ => now,
        };
        let start = (since, u.version, u.updated);
        for (anchor, hides) in [(&mut u.hidden, others), (&mut u.hidden_org, org)] {
            if hides != anchor.is_some() {
                *anchor = hides.then_some(start);
            }
        }
        if Self::visible(&before) != Self::visible(u) {
            // Ending a hiding: the version jumps to the next multiple of the stride, so
            // onlookers cannot count the changes they did not see.
            let unhides = (before.hidden.is_some() && u.hidden.is_none())
                || (before.hidden_org.is_some() && u.hidden_org.is_none());
            // An org change while hiding changes who is a member: everyone starts again.
            let reclassed = (before.hidden.is_some() || u.hidden.is_some()) && before.org != u.org;
            const STRIDE: u64 = presence_core::record::VERSION_STRIDE;
            u.version = if unhides || reclassed {
                (u.version / STRIDE + 1) * STRIDE
            } else {
                u.version + 1
            };
            u.updated = now;
            let onlookers = Onlookers {
                others_hidden_before: before.hidden.is_some(),
                others_unchanged: Self::as_seen(&before, before.hidden)
                    == Self::as_seen(u, u.hidden),
                org_hidden_before: before.hidden_org.is_some(),
                org_unchanged: Self::as_seen(&before, before.hidden_org)
                    == Self::as_seen(u, u.hidden_org),
            };
            // Onlookers who see the change: one more than they saw while the hiding goes on,
            // this change's version when it starts.
            let seen = [
                (!onlookers.others_unchanged, onlookers.others_hidden_before),
                (!onlookers.org_unchanged, onlookers.org_hidden_before),
            ];
            for (anchor, (seen, went_on)) in
                [&mut u.hidden, &mut u.hidden_org].into_iter().zip(seen)
            {
                if let Some(h) = anchor.as_mut().filter(|_| seen) {
                    h.1 = if went_on && !reclassed {
                        h.1 + 1
                    } else {
                        u.version
                    };
                    h.2 = now;
                }
            }
            let snapshot = u.clone();
            self.events.push(MEvent {
                user,
                after: snapshot,
                prev_status: before.status,
                prev_zone: before.zone,
                prev_org: before.org,
                ts: now,
                onlookers,
                op: self.ops,
                in_sweep: self.sweeping,
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

    /// Sessions a node holds: what it reports when it renews its lease.
    fn sessions_on(&self, node: &str) -> u64 {
        self.users
            .values()
            .flat_map(|u| u.sessions.values())
            .filter(|s| s.node == Some(node))
            .count() as u64
    }

    /// A renewal is `Lost` when the node was reaped since it last renewed, and also when its
    /// lease had already run out (`lease < now`, as the sweep decides a node is dead), reaped
    /// or not: a reap may have ended part of its sessions.
    fn renew(&mut self, node: &'static str, now: Millis) -> LeaseRenewal {
        let sessions = self.sessions_on(node);
        let lapsed = self.nodes.get(node).is_some_and(|n| n.lease < now);
        let lost = self.reaped.remove(node) | lapsed;
        let n = self.nodes.entry(node).or_insert(MNode {
            lease: 0,
            started: now,
            renewed: 0,
            sessions: 0,
        });
        n.lease = now + d(self.s.node_lease);
        n.renewed = now;
        n.sessions = sessions;
        if lost {
            LeaseRenewal::Lost
        } else {
            LeaseRenewal::Held
        }
    }

    fn apply(&mut self, op: &Op, now: Millis) -> Outcome {
        self.ops += 1;
        let s = self.s.clone();
        match op.clone() {
            Op::Open {
                user,
                session,
                device,
                zone,
                org,
                holder,
                invisible,
            } => {
                // A session the service ended may not open again for eight node leases (the
                // Store trait's `end_session`), before anything else is looked at.
                if self.ended.get(&(user, session)).is_some_and(|t| *t > now) {
                    return Outcome::Refused;
                }
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
                    custom: None,
                    invisible: false,
                    privacy: (0, 0),
                    hidden: None,
                    hidden_org: None,
                    sessions: BTreeMap::new(),
                    grace: None,
                    version: 0,
                    updated: now,
                    since: None,
                });
                if u.sessions.contains_key(&session) || u.sessions.len() >= s.sessions_per_user {
                    return Outcome::Refused;
                }
                let node = match holder {
                    Holder::NodeA => Some(NODE_A),
                    Holder::NodeB => Some(NODE_B),
                    Holder::Lease => None,
                };
                // A node that opens a session is live: the store registers it if it does not
                // know it, so its sessions can be reaped should it die before renewing.
                if let Some(n) = node {
                    self.nodes.entry(n).or_insert(MNode {
                        lease: now + d(s.node_lease),
                        started: now,
                        renewed: 0,
                        sessions: 0,
                    });
                }
                let lease = (holder == Holder::Lease).then_some(now + d(s.online_ttl));
                self.step(user, now, |u| {
                    // Invisible lasts through a reload within the grace, not into a new
                    // presence.
                    // A new presence starts visible, or invisible when asked to.
                    if u.status == Status::Offline {
                        u.invisible = invisible;
                    }
                    u.sessions.insert(
                        session,
                        MSession {
                            node,
                            device: DEVICES[device as usize],
                            lease,
                            opened: now - now.rem_euclid(1000),
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
            Op::Close { user, session, .. } => {
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
            Op::End { user, session, .. } => {
                let Some(held) = self.users.get(&user).and_then(|u| u.sessions.get(&session))
                else {
                    return Outcome::NoSession;
                };
                if held.node.is_some() {
                    self.ended
                        .insert((user, session), now + 8 * d(s.node_lease));
                }
                // Otherwise exactly a close: the last one starts the grace.
                let close = Op::Close {
                    user,
                    session,
                    via_b: false,
                };
                self.ops -= 1;
                self.apply(&close, now)
            }
            Op::Activity { batch, .. } => {
                // Activity older than away_after says nothing about now: skipped. A time in
                // the future (a node's clock ahead) counts as now.
                let stale = now - d(s.away_after);
                for (user, when) in batch {
                    let at = when.at(now);
                    let present = self
                        .users
                        .get(&user)
                        .is_some_and(|u| u.status != Status::Offline);
                    if present && at > stale {
                        self.step(user, now, |u| {
                            u.activity = u.activity.max(at.min(now));
                            if u.reason == Some(AwayReason::Auto) {
                                u.status = Status::Online;
                                u.reason = None;
                            }
                        });
                    }
                }
                Outcome::Ok
            }
            Op::Away { user, invisible } | Op::Online { user, invisible } => {
                if !self.users.contains_key(&user) {
                    return Outcome::NotFound;
                }
                let away = matches!(op, Op::Away { .. });
                self.step(user, now, |u| {
                    u.manual = away;
                    let present = u.status != Status::Offline;
                    if present {
                        if !away {
                            u.activity = u.activity.max(now);
                        }
                        Self::connected_status(u);
                    }
                    match invisible {
                        Some(true) if present => u.invisible = true,
                        Some(false) => u.invisible = false,
                        _ => {}
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
            Op::SetCustom {
                user,
                kind,
                text,
                emoji,
                expires_in,
            } => self.set(user, now, |u| {
                u.custom = Some(MCustom {
                    kind,
                    text,
                    emoji,
                    expires: expires_in.map(|secs| now + Millis::from(secs) * 1000),
                })
            }),
            Op::ClearCustom { user } => self.set(user, now, |u| u.custom = None),
            Op::SetPrivacy {
                user,
                presence,
                last_seen,
            } => self.set(user, now, |u| {
                // 3: leave it as it is.
                if presence < 3 {
                    u.privacy.0 = presence;
                }
                if last_seen < 3 {
                    u.privacy.1 = last_seen;
                }
            }),
            Op::Churn { .. } | Op::CloseOpen { .. } | Op::EndOpen { .. } => {
                unreachable!("the runner turns it into simpler operations")
            }
            Op::RenewLease { user, session } => {
                match self
                    .users
                    .get_mut(&user)
                    .and_then(|u| u.sessions.get_mut(&session))
                {
                    Some(sess) if sess.lease.is_some() => {
                        sess.lease = Some(now + d(s.online_ttl));
                        Outcome::Until(now + d(s.online_ttl))
                    }
                    _ => Outcome::NoSession,
                }
            }
            Op::RenewNode { b } => {
                Outcome::Leases(vec![self.renew(if b { NODE_B } else { NODE_A }, now)])
            }
            Op::Advance { renew, .. } => {
                let (a, b) = match renew {
                    Renew::Both => (true, true),
                    Renew::OnlyA => (true, false),
                    Renew::OnlyB => (false, true),
                    Renew::Neither => (false, false),
                };
                let mut out = Vec::new();
                if a {
                    out.push(self.renew(NODE_A, now));
                }
                if b {
                    out.push(self.renew(NODE_B, now));
                }
                Outcome::Leases(out)
            }
            Op::Sweep { .. } => {
                self.sweeping = true;
                let swept = self.sweep(now);
                self.sweeping = false;
                Outcome::Swept(swept)
            }
            Op::ReadFeed { .. } => Outcome::Ok,
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
    /// custom status expiry, retention.
    fn sweep(&mut self, now: Millis) -> Swept {
        let s = self.s.clone();
        let mut swept = Swept::default();
        let ids: Vec<u8> = self.users.keys().copied().collect();
        let cutoff = now - d(s.away_after);
        for &id in &ids {
            if self.users[&id].status == Status::Online && self.users[&id].activity <= cutoff {
                swept.auto_away += 1;
                self.step(id, now, |u| {
                    u.status = Status::Away;
                    u.reason = Some(AwayReason::Auto);
                });
            }
        }
        for &id in &ids {
            let u = &self.users[&id];
            if u.sessions.is_empty() && u.grace.is_some_and(|g| g <= now) {
                swept.grace_expired += 1;
                self.step(id, now, |u| {
                    let seen = u.seen.unwrap();
                    Self::offline(u, seen);
                });
            }
        }
        for &id in &ids {
            // A user's leases end in expiry order: the earliest ran out first.
            let mut expired: Vec<(Millis, u8)> = self.users[&id]
                .sessions
                .iter()
                .filter_map(|(k, s)| s.lease.filter(|l| *l <= now).map(|l| (l, *k)))
                .collect();
            expired.sort();
            for (_, sid) in expired {
                swept.leases_expired += self.end(id, now, |k, _| *k == sid);
            }
        }
        let dead: Vec<&'static str> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.lease < now)
            .map(|(id, _)| *id)
            .collect();
        for node in dead {
            for &id in &ids {
                swept.node_sessions_reaped += self.end(id, now, |_, s| s.node == Some(node));
            }
            self.nodes.remove(node);
            self.reaped.insert(node);
            swept.nodes_reaped += 1;
        }
        for &id in &ids {
            let due = self.users[&id]
                .custom
                .as_ref()
                .and_then(|c| c.expires)
                .is_some_and(|t| t <= now);
            if due {
                swept.custom_expired += 1;
                self.step(id, now, |u| u.custom = None);
            }
        }
        let first_day = now / DAY - (d(s.history_retention) / DAY).max(1) + 1;
        for days in self.history.values_mut() {
            days.retain(|day, _| *day >= first_day);
        }
        let keep_after = now - d(s.last_seen_retention);
        let before = self.users.len();
        self.users.retain(|_, u| {
            !(u.status == Status::Offline && u.seen.is_some_and(|t| t <= keep_after))
        });
        swept.records_deleted = before - self.users.len();
        swept
    }

    /// Ends sessions without grace; returns how many ended.
    fn end(&mut self, id: u8, now: Millis, ended: impl Fn(&u8, &MSession) -> bool) -> usize {
        let n = self.users[&id]
            .sessions
            .iter()
            .filter(|(k, s)| ended(k, s))
            .count();
        if n > 0 {
            self.step(id, now, |u| {
                u.sessions.retain(|k, s| !ended(k, s));
                if u.sessions.is_empty() {
                    Self::offline(u, now);
                } else {
                    u.devices = Self::devices_of(u);
                }
            });
        }
        n
    }

    fn view(user: u8, u: &MUser) -> PresenceView {
        PresenceView {
            user_id: uid(&format!("u{user}")),
            status: u.status,
            away_reason: u.reason,
            last_activity: Some(u.activity),
            last_seen: if u.status == Status::Offline {
                u.seen.map(LastSeen::At)
            } else {
                None
            },
            zone_id: u.zone.as_deref().map(zone),
            org_id: u.org.as_deref().map(org),
            devices: u.devices.iter().copied().collect(),
            custom_status: u.custom.as_ref().map(|c| CustomStatus {
                kind: CUSTOM_KINDS[usize::from(c.kind)],
                text: c.text.map(custom_text),
                emoji: c.emoji.then(|| CUSTOM_EMOJI.to_string()),
                expires_at: c.expires,
            }),
            metadata: u
                .metadata
                .as_deref()
                .map(|m| serde_json::from_str(m).unwrap()),
            invisible: u.invisible,
            privacy: Some(Privacy {
                presence: PRESENCE_VISIBILITY[usize::from(u.privacy.0)],
                last_seen: LAST_SEEN_VISIBILITY[usize::from(u.privacy.1)],
            }),
            version: u.version,
            updated_at: Some(u.updated),
            hidden: u.hidden.map(|(since, version, updated_at)| Hidden {
                since,
                version,
                updated_at,
            }),
            hidden_from_org: u.hidden_org.map(|(since, version, updated_at)| Hidden {
                since,
                version,
                updated_at,
            }),
        }
    }

    /// The users listed in a scope, in list order: most recent activity first, then user id
    /// descending (byte order), narrowed by a status filter.
    fn listed(&self, scope: &Scope, status: Option<Status>) -> Vec<PresenceView> {
        let mut v: Vec<_> = self
            .users
            .iter()
            .filter(|(_, u)| u.status != Status::Offline)
            // Lists and counts are what others see: invisible users are not in them.
            .filter(|(_, u)| u.hidden.is_none())
            .filter(|(_, u)| status.is_none_or(|s| s == u.status))
            .filter(|(_, u)| match scope {
                Scope::Global => true,
                Scope::Zone(z) => u.zone.as_deref() == Some(z.as_str()),
                Scope::Org(o) => u.org.as_deref() == Some(o.as_str()),
            })
            .map(|(id, u)| (u.activity, format!("u{id}"), Self::view(*id, u)))
            .collect();
        v.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
        v.into_iter().map(|(_, _, view)| view).collect()
    }

    /// A user's sessions as `Store::sessions` lists them: oldest first, then by session id.
    fn sessions(&self, user: u8) -> Option<UserSessions> {
        let u = self.users.get(&user)?;
        let mut sessions: Vec<SessionInfo> = u
            .sessions
            .iter()
            .map(|(k, m)| SessionInfo {
                session: sid(&format!("s{k}")),
                device: m.device,
                node: m.node.map(node),
                connected_at: Some(m.opened),
            })
            .collect();
        sessions.sort_by(|a, b| (a.connected_at, &a.session).cmp(&(b.connected_at, &b.session)));
        Some(UserSessions {
            last_activity: u.activity,
            sessions,
        })
    }

    /// Live nodes: those whose lease has not run out.
    fn live_nodes(&self, now: Millis) -> Vec<(String, Millis, Millis, Millis, u64)> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.lease >= now)
            .map(|(id, n)| (id.to_string(), n.lease, n.started, n.renewed, n.sessions))
            .collect()
    }

    /// The events whose order against each other is the store's choice: one sweep's.
    fn group_of(&self, p: usize) -> Range<usize> {
        let e = &self.events[p];
        if !e.in_sweep {
            return p..p + 1;
        }
        let same = |q: &usize| self.events[*q].op == e.op;
        let start = (0..p).rev().take_while(same).last().unwrap_or(p);
        let end = (p + 1..self.events.len())
            .take_while(same)
            .last()
            .unwrap_or(p);
        start..end + 1
    }
}

// --- What the run reached ------------------------------------------------------------------

/// The cases issue #17 asked the generator to reach; each must be hit in every run.
mod hit {
    pub(crate) const STALE: &str = "activity: stale (older than away_after), skipped";
    pub(crate) const BOUNDARY: &str = "activity: exactly away_after old, skipped";
    pub(crate) const FUTURE: &str = "activity: in the future, counted as now";
    pub(crate) const OLDER: &str = "activity: older than the user's last activity";
    pub(crate) const OUT_OF_ORDER: &str = "activity: out of order within one batch";
    pub(crate) const CLOSE_B: &str = "close through node b";
    pub(crate) const REAP_A: &str = "node a reaped (sessions ended) while b is live";
    pub(crate) const REAP_B: &str = "node b reaped (sessions ended)";
    pub(crate) const LOST: &str = "lease renewal answered Lost";
    pub(crate) const PAGES: &str = "list: walk over several pages";
    pub(crate) const ONLINE: &str = "list: status=online walk with users";
    pub(crate) const AWAY: &str = "list: status=away walk with users";
    pub(crate) const STEP_RESET: &str = "feed: step's start aged out (reset)";
    pub(crate) const RESUME_RESET: &str = "feed: resume from aged-out id, reset required";
    pub(crate) const RESUME_LIMIT: &str = "feed: resume with a small limit";
    pub(crate) const RESUME_ORDER: &str = "feed: resume in global order over users and steps";
    pub(crate) const STEP_ORDER: &str = "feed: one step's events of several users in order";
    pub(crate) const VIEWS: &str = "views: batch with known and unknown users";
    pub(crate) const NODES_TWO: &str = "nodes: both nodes live";
    pub(crate) const NODES_LAPSED: &str = "nodes: lapsed, unreaped node left out";
    pub(crate) const WAIT_WOKE: &str = "wait_feed: woken by the step's events";
    pub(crate) const WAIT_IDLE: &str = "wait_feed: idle until its timeout";
    pub(crate) const DELETED: &str = "retention: record deleted";
    pub(crate) const AUTO_AWAY: &str = "sweep: auto-away";
    pub(crate) const GRACE: &str = "sweep: grace expired";
    pub(crate) const LEASE: &str = "sweep: REST lease expired";
    pub(crate) const CUSTOM_EXPIRED: &str = "sweep: custom status expired";
    pub(crate) const INVISIBLE_UNSEEN: &str = "invisible: a change others do not see";
    pub(crate) const INVISIBLE_AUTO_AWAY: &str = "invisible: auto-away of an invisible user";
    pub(crate) const INVISIBLE_OFFLINE: &str = "invisible: going offline while invisible";
    pub(crate) const INVISIBLE_NEW_PRESENCE: &str = "invisible: ended by a new presence";

    pub(crate) const PRIVACY_ORG_SEES: &str = "privacy: org members see a change others do not";
    pub(crate) const PRIVACY_NOBODY: &str = "privacy: nobody turned on";
    pub(crate) const INVISIBLE_OPEN: &str = "invisible: a presence opened invisible";

    pub(crate) const ENDED: &str = "end: a session ended by the service";
    pub(crate) const ENDED_LAST: &str = "end: the user's last session (grace)";
    pub(crate) const ENDED_REFUSED: &str = "open refused: the service ended that session";

    pub(crate) const ALL: [&str; 37] = [
        STALE,
        BOUNDARY,
        FUTURE,
        OLDER,
        OUT_OF_ORDER,
        CLOSE_B,
        REAP_A,
        REAP_B,
        LOST,
        PAGES,
        ONLINE,
        AWAY,
        STEP_RESET,
        RESUME_RESET,
        RESUME_LIMIT,
        RESUME_ORDER,
        STEP_ORDER,
        VIEWS,
        NODES_TWO,
        NODES_LAPSED,
        WAIT_WOKE,
        WAIT_IDLE,
        DELETED,
        AUTO_AWAY,
        GRACE,
        LEASE,
        CUSTOM_EXPIRED,
        INVISIBLE_UNSEEN,
        INVISIBLE_AUTO_AWAY,
        INVISIBLE_OFFLINE,
        INVISIBLE_NEW_PRESENCE,
        PRIVACY_ORG_SEES,
        PRIVACY_NOBODY,
        INVISIBLE_OPEN,
        ENDED,
        ENDED_LAST,
        ENDED_REFUSED,
    ];
}

/// How often each case of [`hit::ALL`] was reached in one store's run.
#[derive(Debug, Default)]
struct Hits(Mutex<BTreeMap<&'static str, u64>>);

impl Hits {
    fn add(&self, what: &'static str, n: u64) {
        *self.0.lock().unwrap().entry(what).or_default() += n;
    }

    fn hit(&self, what: &'static str) {
        self.add(what, 1);
    }

    fn report_and_check(&self, kind: Kind) {
        let map = self.0.lock().unwrap();
        eprintln!("\n{kind:?} store, cases reached by the model test:");
        for what in hit::ALL {
            eprintln!("{:>8}  {what}", map.get(what).copied().unwrap_or(0));
        }
        let missed: Vec<_> = hit::ALL
            .iter()
            .filter(|w| map.get(*w).copied().unwrap_or(0) == 0)
            .collect();
        assert!(
            missed.is_empty(),
            "the generator no longer reaches {missed:?}"
        );
    }
}

// --- Running one case ------------------------------------------------------------------------

fn outcome<T>(r: Result<T, StoreError>) -> Result<T, Outcome> {
    match r {
        Ok(t) => Ok(t),
        Err(StoreError::NotFound(_)) => Err(Outcome::NotFound),
        Err(StoreError::Refused(_)) => Err(Outcome::Refused),
        Err(StoreError::NoSuchSession(_)) => Err(Outcome::NoSession),
        Err(e) => panic!("store failed: {e}"),
    }
}

fn u(n: &u8) -> UserId {
    uid(&format!("u{n}"))
}

fn scopes() -> Vec<Scope> {
    std::iter::once(Scope::Global)
        .chain((0..3).map(|z| Scope::Zone(zone(&z.to_string()))))
        .chain((0..2).map(|o| Scope::Org(org(&o.to_string()))))
        .collect()
}

struct Runner {
    kind: Kind,
    k: Kit,
    b: Arc<dyn Store>,
    model: Model,
    /// The store's feed id of each model event, where it was seen.
    ids: Vec<Option<FeedId>>,
    hits: Arc<Hits>,
}

impl Runner {
    fn store(&self, via_b: bool) -> &Arc<dyn Store> {
        if via_b { &self.b } else { &self.k.store }
    }

    /// Most events a store may keep beyond `feed_max_len`.
    fn trim_slack(&self) -> usize {
        match self.kind {
            Kind::Memory => 0,
            Kind::Redis => REDIS_TRIM_SLACK,
        }
    }

    /// Checks that `got` are the model's events from position `from` on, in the order the
    /// transitions happened (a sweep's users in any order, each user's in version order),
    /// and remembers their feed ids.
    fn expect_events(
        &mut self,
        got: &[PresenceEvent],
        from: usize,
        what: &str,
    ) -> Result<(), TestCaseError> {
        let mut used = BTreeSet::new();
        for (i, e) in got.iter().enumerate() {
            let p = from + i;
            prop_assert!(
                p < self.model.events.len(),
                "{}: the store has more events than the model: {:?}",
                what,
                e
            );
            let found = self.model.group_of(p).find(|q| {
                let m = &self.model.events[*q];
                format!("u{}", m.user) == e.user.user_id.as_str()
                    && m.after.version == e.user.version
            });
            let Some(q) = found.filter(|q| used.insert(*q)) else {
                let m = &self.model.events[p];
                return Err(TestCaseError::fail(format!(
                    "{what}: event {i} is {e:?}, the model expects u{} version {} there",
                    m.user, m.after.version
                )));
            };
            let m = &self.model.events[q];
            let want = (
                Model::view(m.user, &m.after),
                m.prev_status,
                m.prev_zone.as_deref().map(zone),
                m.prev_org.as_deref().map(org),
                m.ts,
                m.onlookers,
            );
            let have = (
                e.user.clone(),
                e.prev_status,
                e.prev_zone_id.clone(),
                e.prev_org_id.clone(),
                e.ts,
                e.onlookers,
            );
            prop_assert_eq!(have, want, "{}: event {}", what, i);
            if i > 0 {
                prop_assert!(
                    got[i - 1].feed_id < e.feed_id,
                    "{}: feed ids increase",
                    what
                );
            }
            self.ids[p] = Some(e.feed_id);
        }
        Ok(())
    }

    /// The event an `Applied` carries is the model's one new event, if any.
    fn expect_applied(
        &mut self,
        applied: &Applied,
        user: u8,
        from: usize,
        what: &str,
    ) -> Result<(), TestCaseError> {
        let want = self.model.users.get(&user).map(|m| Model::view(user, m));
        prop_assert_eq!(
            Some(&applied.view),
            want.as_ref(),
            "{}: returned view",
            what
        );
        let made = self.model.events.len() - from;
        prop_assert_eq!(
            usize::from(applied.event.is_some()),
            made,
            "{}: event",
            what
        );
        if let Some(e) = &applied.event {
            self.expect_events(std::slice::from_ref(e), from, what)?;
        }
        Ok(())
    }

    /// Counts which activity cases a batch reaches, from the model's state before it.
    fn classify_activity(&self, batch: &[(u8, When)], now: Millis) {
        let stale = now - AWAY_AFTER_MS as Millis;
        let mut latest: BTreeMap<u8, Millis> = BTreeMap::new();
        for (user, when) in batch {
            let Some(m) = self.model.users.get(user) else {
                continue;
            };
            if m.status == Status::Offline {
                continue;
            }
            let at = when.at(now);
            let last = latest.get(user).copied();
            if at <= stale {
                self.hits.hit(hit::STALE);
                if at == stale {
                    self.hits.hit(hit::BOUNDARY);
                }
                continue;
            }
            if at > now {
                self.hits.hit(hit::FUTURE);
            }
            let seen = last.unwrap_or(m.activity).max(m.activity);
            if at < seen {
                self.hits.hit(hit::OLDER);
            }
            if last.is_some_and(|l| at < l) {
                self.hits.hit(hit::OUT_OF_ORDER);
            }
            latest.insert(*user, at.min(now).max(last.unwrap_or(Millis::MIN)));
        }
    }

    /// Runs one operation on the store; the model has already applied it.
    async fn run_on_store(
        &mut self,
        op: &Op,
        from: usize,
        what: &str,
    ) -> Result<Outcome, TestCaseError> {
        let s = |n: &u8| sid(&format!("s{n}"));
        let now = self.k.now();
        Ok(match op {
            Op::Open {
                user,
                session,
                device,
                zone: z,
                org: o,
                holder,
                invisible,
            } => {
                let store = self.store(*holder == Holder::NodeB).clone();
                let r = store
                    .open_session(OpenSession {
                        user: u(user),
                        session: s(session),
                        device: DEVICES[*device as usize],
                        zone: z.map(|z| zone(&z.to_string())),
                        org: o.map(|o| org(&o.to_string())),
                        leased: *holder == Holder::Lease,
                        invisible: *invisible,
                    })
                    .await;
                match outcome(r) {
                    Ok(a) => {
                        self.expect_applied(&a, *user, from, what)?;
                        Outcome::Ok
                    }
                    Err(o) => o,
                }
            }
            Op::Close {
                user,
                session,
                via_b,
            } => {
                let store = self.store(*via_b).clone();
                match outcome(store.close_session(&u(user), &s(session)).await) {
                    Ok(a) => {
                        self.expect_applied(&a, *user, from, what)?;
                        Outcome::Ok
                    }
                    Err(o) => o,
                }
            }
            Op::End {
                user,
                session,
                via_b,
            } => {
                let store = self.store(*via_b).clone();
                match outcome(store.end_session(&u(user), &s(session)).await) {
                    Ok(a) => {
                        self.expect_applied(&a, *user, from, what)?;
                        Outcome::Ok
                    }
                    Err(o) => o,
                }
            }
            Op::Activity { batch, via_b } => {
                let batch: Vec<_> = batch
                    .iter()
                    .map(|(n, when)| Activity {
                        user: u(n),
                        at: when.at(now),
                    })
                    .collect();
                let store = self.store(*via_b).clone();
                match outcome(store.record_activity(&batch).await) {
                    Ok(events) => {
                        let made = self.model.events.len() - from;
                        prop_assert_eq!(events.len(), made, "{}: returned events", what);
                        self.expect_events(&events, from, what)?;
                        Outcome::Ok
                    }
                    Err(o) => o,
                }
            }
            Op::Away { user, .. }
            | Op::Online { user, .. }
            | Op::Zone { user, .. }
            | Op::Org { user, .. }
            | Op::Metadata { user, .. }
            | Op::SetCustom { user, .. }
            | Op::SetPrivacy { user, .. }
            | Op::ClearCustom { user } => {
                let change = match op {
                    Op::Away { invisible, .. } => Change::SetStatus {
                        away: true,
                        invisible: *invisible,
                    },
                    Op::Online { invisible, .. } => Change::SetStatus {
                        away: false,
                        invisible: *invisible,
                    },
                    Op::Zone { zone: z, .. } => Change::SetZone(z.map(|z| zone(&z.to_string()))),
                    Op::Org { org: o, .. } => Change::SetOrg(o.map(|o| org(&o.to_string()))),
                    Op::Metadata { value, .. } => Change::SetMetadata(
                        value.map(|v| serde_json::from_str(&format!("{{\"v\":{v}}}")).unwrap()),
                    ),
                    Op::SetCustom {
                        kind,
                        text,
                        emoji,
                        expires_in,
                        ..
                    } => Change::SetCustomStatus(CustomStatus {
                        kind: CUSTOM_KINDS[usize::from(*kind)],
                        text: text.map(custom_text),
                        emoji: emoji.then(|| CUSTOM_EMOJI.to_string()),
                        expires_at: expires_in.map(|secs| now + Millis::from(secs) * 1000),
                    }),
                    Op::ClearCustom { .. } => Change::ClearCustomStatus,
                    Op::SetPrivacy {
                        presence,
                        last_seen,
                        ..
                    } => Change::SetPrivacy {
                        // 3: leave it as it is.
                        presence: PRESENCE_VISIBILITY.get(usize::from(*presence)).copied(),
                        last_seen: LAST_SEEN_VISIBILITY.get(usize::from(*last_seen)).copied(),
                    },
                    _ => unreachable!(),
                };
                match outcome(self.k.store.apply(&u(user), change).await) {
                    Ok(a) => {
                        self.expect_applied(&a, *user, from, what)?;
                        Outcome::Ok
                    }
                    Err(o) => o,
                }
            }
            Op::RenewLease { user, session } => {
                match outcome(self.k.store.renew_session(&u(user), &s(session)).await) {
                    Ok(until) => Outcome::Until(until),
                    Err(o) => o,
                }
            }
            Op::RenewNode { b } => {
                let node = if *b { NODE_B } else { NODE_A };
                let sessions = self.model.sessions_on(node);
                let r = self.store(*b).renew_node_lease(sessions).await;
                Outcome::Leases(vec![r.expect("renew node lease")])
            }
            Op::Advance { renew, .. } => {
                let (a, b) = match renew {
                    Renew::Both => (true, true),
                    Renew::OnlyA => (true, false),
                    Renew::OnlyB => (false, true),
                    Renew::Neither => (false, false),
                };
                let mut out = Vec::new();
                for (renews, via_b, node) in [(a, false, NODE_A), (b, true, NODE_B)] {
                    if renews {
                        let sessions = self.model.sessions_on(node);
                        let r = self.store(via_b).renew_node_lease(sessions).await;
                        out.push(r.expect("renew node lease"));
                    }
                }
                Outcome::Leases(out)
            }
            Op::Sweep { by_b } => {
                let r = self.store(*by_b).sweep().await.expect("sweep");
                Outcome::Swept(Swept {
                    auto_away: r.auto_away,
                    grace_expired: r.grace_expired,
                    leases_expired: r.leases_expired,
                    node_sessions_reaped: r.node_sessions_reaped,
                    nodes_reaped: r.nodes_reaped,
                    custom_expired: r.custom_expired,
                    records_deleted: r.records_deleted,
                })
            }
            Op::Churn { .. } | Op::CloseOpen { .. } | Op::EndOpen { .. } | Op::ReadFeed { .. } => {
                unreachable!("handled by the runner")
            }
        })
    }

    /// The `pick`-th open session the model knows, as a plain close or end.
    fn pick_open(&self, pick: u8, via_b: bool, end: bool) -> Op {
        let open: Vec<(u8, u8)> = self
            .model
            .users
            .iter()
            .flat_map(|(u, m)| m.sessions.keys().map(|s| (*u, *s)))
            .collect();
        let (user, session) = match open.len() {
            0 => (0, 0),
            n => open[usize::from(pick) % n],
        };
        if end {
            Op::End {
                user,
                session,
                via_b,
            }
        } else {
            Op::Close {
                user,
                session,
                via_b,
            }
        }
    }

    async fn step(&mut self, i: usize, op: &Op, probe: &Probe) -> Result<(), TestCaseError> {
        let resolved;
        let (op, what) = match op {
            Op::CloseOpen { pick, via_b } | Op::EndOpen { pick, via_b } => {
                let end = matches!(op, Op::EndOpen { .. });
                resolved = self.pick_open(*pick, *via_b, end);
                (&resolved, format!("step {i} {op:?} = {resolved:?}"))
            }
            _ => (op, format!("step {i} {op:?}")),
        };
        if let Op::Advance { secs, .. } = op {
            // Only the clock: which nodes renew is the operation's business.
            self.k.clock.advance(Duration::from_secs(u64::from(*secs)));
        }
        let now = self.k.now();
        let head = self.k.head().await;
        let from = self.model.events.len();
        if let Some(Some(last)) = self.ids.last() {
            prop_assert_eq!(head, *last, "step {} {:?}: feed head", i, op);
        }
        if from > 0 {
            self.ids[from - 1] = Some(head);
        }

        match op {
            Op::Churn { user, n } => {
                for c in 0..*n {
                    let one = Op::Metadata {
                        user: *user,
                        value: Some(10 + c),
                    };
                    let at = self.model.events.len();
                    let want = self.model.apply(&one, now);
                    self.ids.resize(self.model.events.len(), None);
                    let got = self.run_on_store(&one, at, &what).await?;
                    prop_assert_eq!(&got, &want, "{}: change {} outcome", what, c);
                }
            }
            Op::ReadFeed {
                oldest,
                pick,
                limit,
            } => self.resume(*oldest, *pick, *limit, &what).await?,
            _ => {
                if let Op::Activity { batch, .. } = op {
                    self.classify_activity(batch, now);
                }
                self.count_before(op, now);
                let want = self.model.apply(op, now);
                self.ids.resize(self.model.events.len(), None);
                let made = self.model.events.len() - from;
                let waiter = probe.wait.then(|| {
                    let store = self.k.store.clone();
                    let wait = Duration::from_millis(if made > 0 { 5_000 } else { 10 });
                    tokio::spawn(async move { store.wait_feed(head, 100, wait).await })
                });
                let got = self.run_on_store(op, from, &what).await?;
                prop_assert_eq!(&got, &want, "{}: outcome", what);
                self.count_after(&want);
                self.count_invisible(from);
                if let Some(waiter) = waiter {
                    let read = tokio::time::timeout(Duration::from_secs(10), waiter)
                        .await
                        .expect("wait_feed returns")
                        .unwrap()
                        .expect("wait_feed");
                    if made == 0 {
                        prop_assert!(read.events.is_empty() && !read.reset, "{}: idle", what);
                        self.hits.hit(hit::WAIT_IDLE);
                    } else if read.reset {
                        prop_assert!(made >= FEED_MAX_LEN, "{}: wait_feed reset", what);
                    } else {
                        prop_assert!(!read.events.is_empty(), "{}: wait_feed woke", what);
                        prop_assert!(read.events.len() <= made, "{}: wait_feed", what);
                        self.expect_events(&read.events, from, &format!("{what}: wait_feed"))?;
                        self.hits.hit(hit::WAIT_WOKE);
                    }
                }
            }
        }
        self.check_feed(head, from, &what).await?;
        self.check_state(probe, &what).await
    }

    fn count_before(&self, op: &Op, now: Millis) {
        match op {
            Op::End { user, session, .. } => {
                if let Some(m) = self.model.users.get(user)
                    && m.sessions.contains_key(session)
                {
                    self.hits.hit(hit::ENDED);
                    if m.sessions.len() == 1 {
                        self.hits.hit(hit::ENDED_LAST);
                    }
                }
            }
            Op::Open { user, session, .. }
                if self
                    .model
                    .ended
                    .get(&(*user, *session))
                    .is_some_and(|t| *t > now) =>
            {
                self.hits.hit(hit::ENDED_REFUSED);
            }
            Op::Close {
                user,
                session,
                via_b: true,
            } if self
                .model
                .users
                .get(user)
                .is_some_and(|m| m.sessions.contains_key(session)) =>
            {
                self.hits.hit(hit::CLOSE_B);
            }
            Op::Sweep { .. } => {
                let dead = |n: &str| self.model.nodes.get(n).is_some_and(|n| n.lease < now);
                let live = |n: &str| self.model.nodes.get(n).is_some_and(|n| n.lease >= now);
                if dead(NODE_A) && self.model.sessions_on(NODE_A) > 0 && live(NODE_B) {
                    self.hits.hit(hit::REAP_A);
                }
                if dead(NODE_B) && self.model.sessions_on(NODE_B) > 0 {
                    self.hits.hit(hit::REAP_B);
                }
            }
            _ => {}
        }
    }

    /// Counts the invisible cases the step's events reach.
    fn count_invisible(&self, from: usize) {
        for e in &self.model.events[from..] {
            let hidden = e.after.hidden.is_some();
            if e.onlookers.others_unchanged {
                self.hits.hit(hit::INVISIBLE_UNSEEN);
            }
            if e.prev_status == Status::Offline
                && e.after.status != Status::Offline
                && e.after.invisible
                && !e.onlookers.others_hidden_before
            {
                self.hits.hit(hit::INVISIBLE_OPEN);
            }
            if e.onlookers.others_unchanged && !e.onlookers.org_unchanged {
                self.hits.hit(hit::PRIVACY_ORG_SEES);
            }
            if e.after.privacy.0 == 2 && !e.onlookers.org_hidden_before {
                self.hits.hit(hit::PRIVACY_NOBODY);
            }
            if hidden && e.in_sweep && e.after.reason == Some(AwayReason::Auto) {
                self.hits.hit(hit::INVISIBLE_AUTO_AWAY);
            }
            if hidden && e.after.status == Status::Offline && e.prev_status != Status::Offline {
                self.hits.hit(hit::INVISIBLE_OFFLINE);
            }
            if e.onlookers.others_hidden_before
                && !hidden
                && e.prev_status == Status::Offline
                && e.after.status != Status::Offline
            {
                self.hits.hit(hit::INVISIBLE_NEW_PRESENCE);
            }
        }
    }

    fn count_after(&self, out: &Outcome) {
        match out {
            Outcome::Leases(l) => {
                let lost = l.iter().filter(|r| **r == LeaseRenewal::Lost).count();
                self.hits.add(hit::LOST, lost as u64);
            }
            Outcome::Swept(s) => {
                self.hits.add(hit::DELETED, s.records_deleted as u64);
                self.hits.add(hit::AUTO_AWAY, s.auto_away as u64);
                self.hits.add(hit::GRACE, s.grace_expired as u64);
                self.hits.add(hit::LEASE, s.leases_expired as u64);
                self.hits.add(hit::CUSTOM_EXPIRED, s.custom_expired as u64);
            }
            _ => {}
        }
    }

    /// The step's events, read from the feed after the head taken before it, in order.
    async fn check_feed(
        &mut self,
        head: FeedId,
        from: usize,
        what: &str,
    ) -> Result<(), TestCaseError> {
        let made = self.model.events.len() - from;
        let read = self
            .k
            .store
            .read_feed(head, 100_000)
            .await
            .expect("read feed");
        self.check_reset(read.reset, made, what)?;
        if read.reset {
            self.hits.hit(hit::STEP_RESET);
            return Ok(());
        }
        prop_assert_eq!(read.events.len(), made, "{}: events in the feed", what);
        self.expect_events(&read.events, from, &format!("{what}: feed"))?;
        let users: BTreeSet<_> = read.events.iter().map(|e| &e.user.user_id).collect();
        if users.len() > 1 && !self.model.events[from].in_sweep {
            self.hits.hit(hit::STEP_ORDER);
        }
        Ok(())
    }

    /// A read after an id with `after` events behind it: while the id is among the newest
    /// `feed_max_len` it must not reset; once more than the store may keep came after it, it
    /// must.
    fn check_reset(&self, reset: bool, after: usize, what: &str) -> Result<(), TestCaseError> {
        if after < FEED_MAX_LEN {
            prop_assert!(!reset, "{}: reset with {} events after the id", what, after);
        }
        if after > FEED_MAX_LEN + self.trim_slack() {
            prop_assert!(
                reset,
                "{}: no reset with {} events after the id",
                what,
                after
            );
        }
        Ok(())
    }

    /// Resumes the feed from an older id this test saw, as a reconnecting subscriber does.
    async fn resume(
        &mut self,
        oldest: bool,
        pick: u8,
        limit: u8,
        what: &str,
    ) -> Result<(), TestCaseError> {
        let known: Vec<(usize, FeedId)> = std::iter::once((0, FeedId::ZERO))
            .chain(
                self.ids
                    .iter()
                    .enumerate()
                    .filter_map(|(p, id)| id.map(|id| (p + 1, id))),
            )
            .collect();
        let nth = usize::from(pick) % known.len();
        let (from, id) = known[if oldest { nth } else { known.len() - 1 - nth }];
        let after = self.model.events.len() - from;
        let max = if limit == 0 {
            100_000
        } else {
            usize::from(limit)
        };
        let read = self.k.store.read_feed(id, max).await.expect("read feed");
        self.check_reset(read.reset, after, what)?;
        if read.reset {
            if after > FEED_MAX_LEN + self.trim_slack() {
                self.hits.hit(hit::RESUME_RESET);
            }
            return Ok(());
        }
        prop_assert_eq!(
            read.events.len(),
            after.min(max),
            "{}: resumed events",
            what
        );
        self.expect_events(&read.events, from, what)?;
        if max < after {
            self.hits.hit(hit::RESUME_LIMIT);
        }
        let users: BTreeSet<_> = read.events.iter().map(|e| &e.user.user_id).collect();
        let ops: BTreeSet<_> = (from..from + read.events.len())
            .map(|p| self.model.events[p].op)
            .collect();
        if users.len() > 1 && ops.len() > 1 {
            self.hits.hit(hit::RESUME_ORDER);
        }
        Ok(())
    }

    /// Views, counts, pages and nodes against the model.
    async fn check_state(&mut self, probe: &Probe, what: &str) -> Result<(), TestCaseError> {
        let store = self.k.store.clone();
        let now = self.k.now();
        // Every user in one batch, newest id first, with a never-seen user in the middle.
        let mut asked: Vec<UserId> = (0..USERS).rev().map(|n| u(&n)).collect();
        asked.insert(usize::from(USERS / 2), uid("ghost"));
        let views = store.views(&asked).await.expect("views");
        let mut want: Vec<_> = (0..USERS)
            .rev()
            .map(|n| self.model.users.get(&n).map(|m| Model::view(n, m)))
            .collect();
        want.insert(usize::from(USERS / 2), None);
        prop_assert_eq!(&views, &want, "{}: views", what);
        if want.iter().filter(|v| v.is_some()).count() > 1 {
            self.hits.hit(hit::VIEWS);
        }
        let first = u(&(probe.limit % USERS));
        let one = store.view(&first).await.expect("view");
        let m = (
            probe.limit % USERS,
            self.model.users.get(&(probe.limit % USERS)),
        );
        prop_assert_eq!(one, m.1.map(|u| Model::view(m.0, u)), "{}: view", what);
        // Every user's history of the last three days, the presence going on included.
        let today = now / DAY;
        for n in 0..USERS {
            let got = store
                .history(&u(&n), today - 2, today)
                .await
                .expect("history");
            let mut days = self.model.history.get(&n).cloned().unwrap_or_default();
            if let Some(m) = self.model.users.get(&n)
                && m.status != Status::Offline
                && let Some(from) = m.since
            {
                let to = if m.sessions.is_empty() {
                    m.seen.unwrap_or(now)
                } else {
                    now
                };
                add_days(&mut days, from, to);
            }
            let want: Vec<Millis> = (today - 2..=today)
                .map(|d| days.get(&d).copied().unwrap_or(0))
                .collect();
            prop_assert_eq!(got, want, "{}: history of u{}", what, n);
        }
        // Every user's sessions, connect times and last activity.
        for n in 0..USERS {
            let sessions = store.sessions(&u(&n)).await.expect("sessions");
            prop_assert_eq!(
                sessions,
                self.model.sessions(n),
                "{}: sessions of u{}",
                what,
                n
            );
        }

        // Counts of every scope in one call; everyone in one page.
        let scopes = scopes();
        let counts = store.counts(&scopes).await.expect("counts");
        for (scope, c) in scopes.iter().zip(&counts) {
            let listed = self.model.listed(scope, None);
            let away = listed.iter().filter(|v| v.status == Status::Away).count() as u64;
            let want = ScopeCount {
                total: listed.len() as u64,
                away,
            };
            prop_assert_eq!(*c, want, "{}: count {}", what, scope);
        }
        let everyone = ListQuery {
            limit: 1000,
            cursor: None,
            status: None,
        };
        let page = store.list(&Scope::Global, &everyone).await.expect("list");
        let listed = self.model.listed(&Scope::Global, None);
        prop_assert_eq!(&page.users, &listed, "{}: list global", what);
        prop_assert_eq!(page.next_cursor, None, "{}: list global", what);

        // One scope walked page by page to the end.
        let scope = &scopes[usize::from(probe.scope) % scopes.len()];
        let status = [None, Some(Status::Online), Some(Status::Away)][usize::from(probe.status)];
        let limit = usize::from(probe.limit);
        let listed = self.model.listed(scope, status);
        let (mut seen, mut pages, mut cursor) = (Vec::new(), 0, None);
        loop {
            let q = ListQuery {
                limit,
                cursor: cursor.take(),
                status,
            };
            let page = store.list(scope, &q).await.expect("list");
            pages += 1;
            prop_assert!(pages <= 2 * USERS as usize + 2, "{}: the walk ends", what);
            prop_assert_eq!(
                page.count,
                listed.len() as u64,
                "{}: count of {} {:?}",
                what,
                scope,
                status
            );
            prop_assert!(page.users.len() <= limit, "{}: page size", what);
            seen.extend(page.users);
            match page.next_cursor {
                Some(c) => cursor = Some(ListCursor::decode(&c.encode()).expect("cursor")),
                None => break,
            }
        }
        prop_assert_eq!(
            &seen,
            &listed,
            "{}: walk of {} {:?} by {}",
            what,
            scope,
            status,
            limit
        );
        if pages > 1 && status.is_none() && seen.len() > limit {
            self.hits.hit(hit::PAGES);
        }
        match status {
            Some(Status::Online) if !seen.is_empty() => self.hits.hit(hit::ONLINE),
            Some(Status::Away) if !seen.is_empty() => self.hits.hit(hit::AWAY),
            _ => {}
        }

        // Live nodes.
        let mut nodes = store.nodes().await.expect("nodes");
        nodes.sort_by(|x, y| x.node_id.cmp(&y.node_id));
        let got: Vec<_> = nodes
            .into_iter()
            .map(|n| {
                (
                    n.node_id.to_string(),
                    n.lease_until,
                    n.started_at,
                    n.last_renewal,
                    n.sessions,
                )
            })
            .collect();
        let want = self.model.live_nodes(now);
        prop_assert_eq!(&got, &want, "{}: nodes", what);
        // The sessions each node's handle is told the store records for it.
        for (via_b, node) in [(false, NODE_A), (true, NODE_B)] {
            let count = self.store(via_b).node_session_count().await.expect("count");
            prop_assert_eq!(
                count,
                self.model.sessions_on(node),
                "{}: {} session count",
                what,
                node
            );
        }
        if want.len() == 2 {
            self.hits.hit(hit::NODES_TWO);
        }
        if want.len() < self.model.nodes.len() {
            self.hits.hit(hit::NODES_LAPSED);
        }
        Ok(())
    }
}

async fn run_case(
    kind: Kind,
    steps: Vec<(Op, Probe)>,
    hits: Arc<Hits>,
) -> Result<(), TestCaseError> {
    let k = Kit::with(kind, settings()).await;
    let b = k.node(NODE_B);
    let mut r = Runner {
        kind,
        k,
        b,
        model: Model::new(settings()),
        ids: Vec::new(),
        hits,
    };
    for (i, (op, probe)) in steps.iter().enumerate() {
        r.step(i, op, probe).await?;
    }
    // As after every conformance scenario: the feed replays to the views, and no index is off.
    let replay = presence_store::replay::check(r.k.store.as_ref())
        .await
        .unwrap();
    prop_assert!(
        replay.mismatches.is_empty(),
        "replay: {:#?}",
        replay.mismatches
    );
    let check = r.k.store.repair(RepairMode::CHECK).await.unwrap();
    prop_assert!(check.is_clean(), "repair check: {check:?}");
    Ok(())
}

fn check(kind: Kind, cases: u32, max_steps: usize) {
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
    let hits = Arc::new(Hits::default());
    let h = hits.clone();
    proptest!(config, |(steps in steps(max_steps))| {
        rt.block_on(run_case(kind, steps, h.clone()))?;
    });
    hits.report_and_check(kind);
}

#[test]
fn memory_store_agrees_with_the_model() {
    check(Kind::Memory, 256, 80);
}

#[test]
fn redis_store_agrees_with_the_model() {
    check(Kind::Redis, 64, 80);
}
