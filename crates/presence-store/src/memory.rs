//! The embedded memory store: one node's presence in process memory.
//!
//! The same rules as the Redis store, over maps and ordered sets behind one `std::sync::Mutex`
//! (nothing awaits while it is held, so a std mutex is right and cheap). Each transition runs
//! the state machine of `presence_core::record` on a copy of the record, then re-indexes by
//! diffing what the record contributes to each index before and after — the one place where
//! indexes change, so they cannot drift from the records.
//!
//! Handles made by [`MemoryStore::handle`] share the state and speak for other node ids; tests
//! use them to play several nodes. They share one bus too (a tokio broadcast): a typing write
//! on any handle reaches every handle's receivers.
//!
//! With a data directory ([`MemoryStore::with_data_dir`]) the durable parts — the records, with
//! their last seen, privacy and custom status, and the online history — are snapshotted there
//! ([`Store::persist`], which the node calls every `store.snapshot_interval` and when it stops)
//! and read back at the next start; see `snapshot.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use presence_core::geo::{distance_m, shown_distance};
use presence_core::history::{self, Day};
use presence_core::record::IndexEntry;
use presence_core::scope::filtered_scan_budget;
use presence_core::settings::ms;
use presence_core::{
    Activity, Applied, BusMessage, BusReceiver, Change, ConversationId, FeedId, FeedRead,
    InactivePage, InactiveUser, LeaseRenewal, ListCursor, ListQuery, Location, Millis, NearbyQuery,
    NearbyUser, NodeId, NodeInfo, OpenSession, OrgId, PresenceEvent, PresenceView, RepairMode,
    RepairReport, Scope, ScopeCount, ScopePage, Session, SessionId, SharedClock, Store, StoreError,
    StoreSettings, SweepReport, TransitionError, Typer, TypingOutcome, TypingSignal, TypingTable,
    TypingWrite, UserId, UserRecord, UserSessions,
};
use tokio::sync::Notify;

use crate::bus::LocalBus;
use crate::snapshot::{Durable, SnapshotFile};
use crate::sweep::{Step, drain};

// The repair (its own file: it only compares and rebuilds what reindex keeps).
mod repair;

/// The embedded store.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
    node: NodeId,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    feed_grew: Notify,
    clock: SharedClock,
    settings: StoreSettings,
    bus: LocalBus,
    /// Where the durable parts are snapshotted, if anywhere.
    snapshots: Option<SnapshotFile>,
}

/// Where one user sits in a scope index.
#[derive(Debug, Default)]
struct ScopeIndex {
    by_activity: BTreeSet<(Millis, UserId)>,
    away: u64,
}

#[derive(Debug, Default)]
struct NodeState {
    lease_until: Millis,
    started_at: Millis,
    last_renewal: Millis,
    sessions: u64,
    users: HashSet<UserId>,
    /// Sessions (not leased) the store records on this node: `node_session_count`.
    live: u64,
}

#[derive(Debug, Default)]
struct State {
    users: HashMap<UserId, UserRecord>,
    scopes: HashMap<Scope, ScopeIndex>,
    /// Users hiding from onlookers (invisible, privacy org or nobody) who are present, by last activity: out of the scope indexes (what
    /// others see), here so that auto-away still finds them.
    hidden: BTreeSet<(Millis, UserId)>,
    grace: BTreeSet<(Millis, UserId)>,
    leases: BTreeSet<(Millis, UserId, SessionId)>,
    nodes: BTreeMap<NodeId, NodeState>,
    /// Nodes reaped since they last renewed: their next renewal answers `Lost`.
    reaped: HashSet<NodeId>,
    last_seen: BTreeSet<(Millis, UserId)>,
    /// Custom statuses with an expiry, by `expires_at`.
    expiring_custom: BTreeSet<(Millis, UserId)>,
    /// WebSocket sessions the service ended, until when they may not open again
    /// (`end_session`), and the same by that time, for the sweep to forget them.
    ended: HashMap<(UserId, SessionId), Millis>,
    ended_until: BTreeSet<(Millis, UserId, SessionId)>,
    /// Auto-away has examined every activity up to here (see `sweep_auto_away`): in the
    /// global index, and in the index of users hiding from onlookers (invisible, privacy org or nobody).
    away_cutoff: Option<Millis>,
    hidden_away_cutoff: Option<Millis>,
    feed: VecDeque<PresenceEvent>,
    feed_last: FeedId,
    feed_trimmed: bool,
    /// Typing entries (ephemeral: no record, no feed), pruned as they expire.
    typing: TypingTable,
    /// Users sharing a location whom `nearby` finds (`UserRecord::geo_entry`): where (the
    /// geohash cell's centre, as Redis GEO keeps it) and their org.
    located: HashMap<UserId, (Location, Option<OrgId>)>,
    /// Online history: ms present per UTC day, per user (see `presence_core::history`).
    history: HashMap<UserId, BTreeMap<Day, Millis>>,
    /// Each user with history by their oldest day, for retention.
    history_due: BTreeSet<(Day, UserId)>,
    /// Webhook delivery leases, one per endpoint ever claimed.
    webhooks: presence_core::WebhookLeaseTable,
}

/// Everything a record contributes to the indexes; diffed before and after each change.
#[derive(Debug, Default, PartialEq)]
struct IndexKeys {
    entry: Option<IndexEntry>,
    grace: Option<Millis>,
    leases: Vec<(Millis, SessionId)>,
    /// Sessions per node.
    nodes: BTreeMap<NodeId, u64>,
    last_seen: Option<Millis>,
    custom_expiry: Option<Millis>,
    geo: Option<(Location, Option<OrgId>)>,
}

impl IndexKeys {
    fn of(rec: Option<&UserRecord>) -> Self {
        let Some(r) = rec else { return Self::default() };
        Self {
            entry: r.index_entry(),
            grace: r.grace_until,
            leases: r
                .sessions
                .iter()
                .filter_map(|(id, s)| s.lease_until.map(|t| (t, id.clone())))
                .collect(),
            nodes: r.sessions.values().filter_map(|s| s.node.clone()).fold(
                BTreeMap::new(),
                |mut m, n| {
                    *m.entry(n).or_default() += 1;
                    m
                },
            ),
            last_seen: r
                .last_seen
                .filter(|_| r.status == presence_core::Status::Offline),
            custom_expiry: r.custom_expiry(),
            geo: r.geo_entry().map(|(l, org)| (l.cell_centre(), org)),
        }
    }
}

/// The least id in byte order: `-` is the smallest byte ids may hold.
fn smallest_user_id() -> UserId {
    UserId::new("-").expect("a valid id")
}

fn scopes_of(e: &IndexEntry) -> impl Iterator<Item = Scope> + '_ {
    std::iter::once(Scope::Global)
        .chain(e.zone_id.clone().map(Scope::Zone))
        .chain(e.org_id.clone().map(Scope::Org))
}

impl State {
    fn reindex(&mut self, user: &UserId, old: IndexKeys, new: IndexKeys) {
        if old.entry != new.entry {
            if let Some(e) = old.entry.as_ref().filter(|e| e.hidden) {
                self.hidden.remove(&(e.activity, user.clone()));
            }
            if let Some(e) = new.entry.as_ref().filter(|e| e.hidden) {
                self.hidden.insert((e.activity, user.clone()));
            }
            if let Some(e) = old.entry.as_ref().filter(|e| !e.hidden) {
                for scope in scopes_of(e) {
                    if let Some(ix) = self.scopes.get_mut(&scope) {
                        ix.by_activity.remove(&(e.activity, user.clone()));
                        ix.away = ix.away.saturating_sub(u64::from(e.away));
                        if ix.by_activity.is_empty() {
                            self.scopes.remove(&scope);
                        }
                    }
                }
            }
            if let Some(e) = new.entry.as_ref().filter(|e| !e.hidden) {
                for scope in scopes_of(e) {
                    let ix = self.scopes.entry(scope).or_default();
                    ix.by_activity.insert((e.activity, user.clone()));
                    ix.away += u64::from(e.away);
                }
            }
        }
        if old.grace != new.grace {
            if let Some(t) = old.grace {
                self.grace.remove(&(t, user.clone()));
            }
            if let Some(t) = new.grace {
                self.grace.insert((t, user.clone()));
            }
        }
        if old.leases != new.leases {
            for (t, s) in old.leases {
                self.leases.remove(&(t, user.clone(), s));
            }
            for (t, s) in new.leases {
                self.leases.insert((t, user.clone(), s));
            }
        }
        for (n, &was) in &old.nodes {
            if let Some(ns) = self.nodes.get_mut(n) {
                let now = new.nodes.get(n).copied().unwrap_or(0);
                ns.live = ns.live.saturating_sub(was.saturating_sub(now));
                if now == 0 {
                    ns.users.remove(user);
                }
            }
        }
        for (n, &now) in &new.nodes {
            let was = old.nodes.get(n).copied().unwrap_or(0);
            let ns = self.nodes.entry(n.clone()).or_default();
            ns.live += now.saturating_sub(was);
            ns.users.insert(user.clone());
        }
        if old.last_seen != new.last_seen {
            if let Some(t) = old.last_seen {
                self.last_seen.remove(&(t, user.clone()));
            }
            if let Some(t) = new.last_seen {
                self.last_seen.insert((t, user.clone()));
            }
        }
        if old.custom_expiry != new.custom_expiry {
            if let Some(t) = old.custom_expiry {
                self.expiring_custom.remove(&(t, user.clone()));
            }
            if let Some(t) = new.custom_expiry {
                self.expiring_custom.insert((t, user.clone()));
            }
        }
        if old.geo != new.geo {
            match new.geo {
                Some(g) => self.located.insert(user.clone(), g),
                None => self.located.remove(user),
            };
        }
    }

    /// Adds an ended presence to the user's history.
    fn add_history(&mut self, user: &UserId, from: Millis, to: Millis) {
        let days = self.history.entry(user.clone()).or_default();
        let oldest = days.keys().next().copied();
        history::add_span(days, from, to);
        let now_oldest = days.keys().next().copied();
        if now_oldest != oldest {
            if let Some(d) = oldest {
                self.history_due.remove(&(d, user.clone()));
            }
            if let Some(d) = now_oldest {
                self.history_due.insert((d, user.clone()));
            }
        }
    }

    /// Runs one transition on `user`'s record (created when `create`), writes the record and
    /// its indexes, appends the event to the feed. `f` sees a copy: an error leaves nothing
    /// changed.
    fn transition<T>(
        &mut self,
        user: &UserId,
        now: Millis,
        create: bool,
        feed_max_len: usize,
        f: impl FnOnce(&mut UserRecord) -> Result<T, StoreError>,
    ) -> Result<(T, Option<UserRecord>, Option<PresenceEvent>), StoreError> {
        let old = self.users.get(user);
        let mut rec = match (old, create) {
            (Some(r), _) => r.clone(),
            (None, true) => UserRecord::new(user.clone(), now),
            (None, false) => return Err(StoreError::NotFound(user.clone())),
        };
        let old_keys = IndexKeys::of(old);
        let before = rec.before();
        let out = f(&mut rec)?;
        let ended = old.and_then(|o| history::ended_span(o, &rec));
        let event = rec
            .finish(before, now)
            .map(|e| self.append(e, now, feed_max_len));
        self.reindex(user, old_keys, IndexKeys::of(Some(&rec)));
        if let Some((from, to)) = ended {
            self.add_history(user, from, to);
        }
        self.users.insert(user.clone(), rec.clone());
        Ok((out, Some(rec), event))
    }

    fn delete(&mut self, user: &UserId) {
        if let Some(rec) = self.users.remove(user) {
            self.reindex(user, IndexKeys::of(Some(&rec)), IndexKeys::default());
        }
    }

    fn append(&mut self, mut event: PresenceEvent, now: Millis, max_len: usize) -> PresenceEvent {
        let now = now.max(0) as u64;
        let last = self.feed_last;
        self.feed_last = if now > last.ms {
            FeedId { ms: now, seq: 0 }
        } else {
            FeedId {
                ms: last.ms,
                seq: last.seq + 1,
            }
        };
        event.feed_id = self.feed_last;
        self.feed.push_back(event.clone());
        while self.feed.len() > max_len.max(1) {
            self.feed.pop_front();
            self.feed_trimmed = true;
        }
        event
    }

    fn read_feed(&self, after: FeedId, limit: usize) -> FeedRead {
        // An id other than "from the beginning" must belong to this feed: not newer than the
        // last id it made, and not older than its oldest kept event (then events after it were
        // trimmed, or it comes from before a restart that emptied the store).
        let reset = after != FeedId::ZERO
            && (after > self.feed_last
                || self.feed.front().is_some_and(|first| after < first.feed_id));
        // Conservative like the Redis store: once anything was trimmed, "from the beginning"
        // may have missed events too.
        let reset = reset || (after == FeedId::ZERO && self.feed_trimmed);
        if reset {
            return FeedRead {
                events: Vec::new(),
                reset,
                skipped: 0,
                last_id: None,
            };
        }
        let start = self.feed.partition_point(|e| e.feed_id <= after);
        let events: Vec<PresenceEvent> =
            self.feed.iter().skip(start).take(limit).cloned().collect();
        FeedRead {
            last_id: events.last().map(|e| e.feed_id),
            events,
            reset,
            skipped: 0,
        }
    }

    /// Opens one session (`open_session`, `reopen_sessions`): the transition, then the
    /// node's registration should it never have renewed, so its sessions can be reaped
    /// should it die before its first renewal.
    fn open(
        &mut self,
        node: &NodeId,
        open: OpenSession,
        now: Millis,
        s: &StoreSettings,
        reassert: bool,
    ) -> Result<(Option<UserRecord>, Option<PresenceEvent>), StoreError> {
        if !self.ended.is_empty()
            && self
                .ended
                .get(&(open.user.clone(), open.session.clone()))
                .is_some_and(|&until| until > now)
        {
            return Err(TransitionError::SessionEnded(open.session).into());
        }
        let node = (!open.leased).then(|| node.clone());
        let session = Session {
            node: node.clone(),
            device: open.device,
            lease_until: open.leased.then_some(now + ms(s.online_ttl)),
            opened: Some(Session::opened_at(now)),
        };
        let limit = s.sessions_per_user;
        let registered = node.as_ref().is_none_or(|n| self.nodes.contains_key(n));
        let (_, rec, event) = self.transition(&open.user, now, true, s.feed_max_len, |r| {
            // Opening invisible applies to a new presence; one going on keeps its own.
            let new_presence = r.status == presence_core::Status::Offline;
            if reassert {
                r.reopen(open.session, session, open.zone, open.org, now, limit)
            } else {
                r.open(open.session, session, open.zone, open.org, now, limit)
            }
            .map_err(StoreError::from)?;
            if open.invisible && new_presence {
                r.invisible = true;
            }
            Ok(())
        })?;
        if let (false, Some(n)) = (registered, &node) {
            let n = self.nodes.entry(n.clone()).or_default();
            n.lease_until = now + ms(s.node_lease);
            n.started_at = now;
        }
        Ok((rec, event))
    }
}

impl State {
    /// Writes a typing start or stop; the signal to publish, or `None` when the conversation
    /// is full.
    fn write_typing(&mut self, w: &TypingWrite, now: Millis) -> Option<TypingSignal> {
        self.typing.expire(now);
        let org = self.users.get(&w.user).and_then(|r| r.org_id.clone());
        let typing_already = self.typing.get(&w.conversation, &w.user).is_some();
        if w.until.is_some()
            && !typing_already
            && self.typing.count(&w.conversation) >= w.max_typers
        {
            return None;
        }
        match w.until {
            Some(until) => {
                let typer = Typer {
                    user: w.user.clone(),
                    org: org.clone(),
                    until,
                };
                self.typing.insert(w.conversation.clone(), typer);
            }
            None => {
                self.typing.remove(&w.conversation, &w.user);
            }
        }
        Some(TypingSignal {
            conversation_id: w.conversation.clone(),
            user_id: w.user.clone(),
            org_id: org,
            until: w.until,
        })
    }
}

impl MemoryStore {
    /// A new, empty store speaking for `node`.
    pub fn new(node: NodeId, clock: SharedClock, settings: StoreSettings) -> Self {
        Self::with_state(node, clock, settings, State::default(), None)
    }

    fn with_state(
        node: NodeId,
        clock: SharedClock,
        settings: StoreSettings,
        state: State,
        snapshots: Option<SnapshotFile>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                feed_grew: Notify::new(),
                clock,
                settings,
                bus: LocalBus::new(),
                snapshots,
            }),
            node,
        }
    }

    /// A store whose durable parts live in `dir` (created if missing): the last snapshot
    /// there, if any, is read back first. Users who were present when it was taken are gone
    /// with the process that held their sessions: they come back offline, last seen at the
    /// snapshot's time (their presence ends there, in the history too), each with its version
    /// moved on. The feed starts empty, so a client resuming from before answers `reset`.
    /// A snapshot that cannot be read is an error, never a silent fresh start.
    pub fn with_data_dir(
        node: NodeId,
        clock: SharedClock,
        settings: StoreSettings,
        dir: impl Into<std::path::PathBuf>,
    ) -> Result<Self, StoreError> {
        let file = SnapshotFile::in_dir(dir.into())?;
        let mut state = State::default();
        if let Some(durable) = file.load()? {
            state.restore(durable, clock.now_ms());
        }
        Ok(Self::with_state(node, clock, settings, state, Some(file)))
    }

    /// Another handle on the same state, speaking for `node`.
    pub fn handle(&self, node: NodeId) -> Self {
        Self {
            shared: self.shared.clone(),
            node,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state as the panicking transition found
        // it only if the panic came before any write; transitions write last, so recover.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> Millis {
        self.shared.clock.now_ms()
    }

    fn settings(&self) -> &StoreSettings {
        &self.shared.settings
    }

    fn run<T>(
        &self,
        user: &UserId,
        create: bool,
        f: impl FnOnce(&mut UserRecord, Millis) -> Result<T, StoreError>,
    ) -> Result<(T, Option<UserRecord>, Option<PresenceEvent>), StoreError> {
        let now = self.now();
        let max = self.settings().feed_max_len;
        let out = self
            .lock()
            .transition(user, now, create, max, |r| f(r, now));
        if matches!(out, Ok((_, _, Some(_)))) {
            self.shared.feed_grew.notify_waiters();
        }
        out
    }

    fn applied(
        rec: Option<UserRecord>,
        event: Option<PresenceEvent>,
        user: &UserId,
    ) -> Result<Applied, StoreError> {
        let rec = rec.ok_or_else(|| StoreError::NotFound(user.clone()))?;
        Ok(Applied {
            view: rec.view(),
            event,
        })
    }

    fn max_feed(&self) -> usize {
        self.settings().feed_max_len
    }

    /// Auto-away. The users who just crossed `away_after` are the entries of the global
    /// index, and of the index of users hiding from onlookers, with activity in (that index's previous
    /// cutoff, now - away_after]. Users already away or active sit outside the window, so a
    /// sweep costs O(users that change), not O(all users).
    fn sweep_auto_away(&self, st: &mut State, now: Millis, batch: usize) -> Step {
        let target = now - ms(self.settings().away_after);
        let empty = BTreeSet::new();
        let global = st
            .scopes
            .get(&Scope::Global)
            .map_or(&empty, |ix| &ix.by_activity);
        let (mut candidates, cutoff, full) = away_window(global, st.away_cutoff, target, batch);
        let (hidden, hidden_cutoff, hidden_full) =
            away_window(&st.hidden, st.hidden_away_cutoff, target, batch);
        candidates.extend(hidden);
        st.away_cutoff = st.away_cutoff.max(Some(cutoff));
        st.hidden_away_cutoff = st.hidden_away_cutoff.max(Some(hidden_cutoff));
        let mut changed = 0;
        for user in candidates {
            let turned = st.transition(&user, now, false, self.max_feed(), |r| {
                Ok(r.auto_away(target))
            });
            changed += usize::from(matches!(turned, Ok((true, _, _))));
        }
        Step {
            changed,
            full: full || hidden_full,
        }
    }

    /// Users whose offline grace ran out go offline.
    fn sweep_grace(&self, st: &mut State, now: Millis, batch: usize) -> Step {
        let due = due(&st.grace, now, batch);
        self.expire_each(st, &due, now, batch, UserRecord::expire_grace)
    }

    /// Applies a timed change to each due user, one transition each (one event where the
    /// view changed). `change` re-checks the record: an index entry may be stale.
    fn expire_each(
        &self,
        st: &mut State,
        due: &[UserId],
        now: Millis,
        batch: usize,
        change: impl Fn(&mut UserRecord, Millis) -> bool,
    ) -> Step {
        let mut changed = 0;
        for user in due {
            let done = st.transition(user, now, false, self.max_feed(), |r| Ok(change(r, now)));
            changed += usize::from(matches!(done, Ok((true, _, _))));
        }
        Step {
            changed,
            full: due.len() == batch,
        }
    }

    /// REST heartbeat sessions whose lease ran out end, with no further grace.
    fn sweep_leases(&self, st: &mut State, now: Millis, batch: usize) -> Step {
        let due: Vec<(UserId, SessionId)> = st
            .leases
            .iter()
            .take_while(|(t, _, _)| *t <= now)
            .take(batch)
            .map(|(_, u, s)| (u.clone(), s.clone()))
            .collect();
        let mut changed = 0;
        for (user, sid) in &due {
            changed += self.end_sessions_where(st, user, now, |id, s| {
                id == sid && s.lease_until.is_some_and(|t| t <= now)
            });
        }
        Step {
            changed,
            full: due.len() == batch,
        }
    }

    /// Sessions of nodes whose lease lapsed end; a fully reaped node is forgotten and told
    /// so at its next renewal.
    fn sweep_dead_nodes(
        &self,
        st: &mut State,
        now: Millis,
        batch: usize,
        report: &mut SweepReport,
    ) -> Step {
        let Some(node) = st
            .nodes
            .iter()
            .find(|(_, n)| n.lease_until < now)
            .map(|(id, _)| id.clone())
        else {
            return Step::default();
        };
        let users: Vec<UserId> = st.nodes[&node].users.iter().take(batch).cloned().collect();
        let mut changed = 0;
        for user in users {
            changed +=
                self.end_sessions_where(st, &user, now, |_, s| s.node.as_ref() == Some(&node));
            // A user whose record is gone still leaves the node's index.
            if let Some(ns) = st.nodes.get_mut(&node) {
                ns.users.remove(&user);
            }
        }
        if st.nodes[&node].users.is_empty() {
            st.nodes.remove(&node);
            st.reaped.insert(node);
            report.nodes_reaped += 1;
        }
        // Another dead node, or more users of this one, may be waiting.
        Step {
            changed,
            full: st.nodes.values().any(|n| n.lease_until < now),
        }
    }

    /// Custom statuses whose `expires_at` has come are cleared, one event each. Each
    /// candidate is re-checked against its record ([`UserRecord::expire_custom_status`]).
    fn sweep_custom(&self, st: &mut State, now: Millis, batch: usize) -> Step {
        let due = due(&st.expiring_custom, now, batch);
        self.expire_each(st, &due, now, batch, UserRecord::expire_custom_status)
    }

    /// Marks of ended sessions whose time is up are forgotten (not reported: no presence
    /// changes).
    fn forget_ended(st: &mut State, now: Millis) {
        while let Some(first) = st.ended_until.first()
            && first.0 <= now
        {
            let (_, user, session) = st.ended_until.pop_first().expect("checked");
            st.ended.remove(&(user, session));
        }
    }

    /// Offline records last seen before the retention cutoff are deleted.
    fn sweep_retention(&self, st: &mut State, now: Millis, batch: usize) -> Step {
        let cutoff = now - ms(self.settings().last_seen_retention);
        let old = due(&st.last_seen, cutoff, batch);
        let mut changed = 0;
        for user in &old {
            if st
                .users
                .get(user)
                .is_some_and(|r| r.retention_expired(cutoff))
            {
                st.delete(user);
                changed += 1;
            }
        }
        Step {
            changed,
            full: old.len() == batch,
        }
    }

    /// History days before `history_retention` are dropped, a user's whole history once
    /// none is left. O(what expires): users are taken by their oldest day.
    fn sweep_history(&self, st: &mut State, now: Millis, batch: usize) -> Step {
        let first = self.settings().history_first_day(now);
        let due: Vec<(Day, UserId)> = st
            .history_due
            .iter()
            .take_while(|(d, _)| *d < first)
            .take(batch)
            .cloned()
            .collect();
        for (day, user) in &due {
            st.history_due.remove(&(*day, user.clone()));
            let Some(days) = st.history.get_mut(user) else {
                continue;
            };
            days.retain(|d, _| *d >= first);
            match days.keys().next() {
                Some(&oldest) => {
                    st.history_due.insert((oldest, user.clone()));
                }
                None => {
                    st.history.remove(user);
                }
            }
        }
        Step {
            changed: due.len(),
            full: due.len() == batch,
        }
    }

    /// Ends sessions in a sweep step; returns how many ended.
    fn end_sessions_where(
        &self,
        st: &mut State,
        user: &UserId,
        now: Millis,
        ended: impl Fn(&SessionId, &Session) -> bool,
    ) -> usize {
        st.transition(user, now, false, self.max_feed(), |r| {
            Ok(r.end_sessions(ended, now))
        })
        .map_or(0, |(n, _, _)| n)
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn node_id(&self) -> &NodeId {
        &self.node
    }

    async fn open_session(&self, open: OpenSession) -> Result<Applied, StoreError> {
        let now = self.now();
        let user = open.user.clone();
        let (rec, event) = self
            .lock()
            .open(&self.node, open, now, self.settings(), false)?;
        if event.is_some() {
            self.shared.feed_grew.notify_waiters();
        }
        Self::applied(rec, event, &user)
    }

    async fn close_leased_session(
        &self,
        user: &UserId,
        session: &SessionId,
    ) -> Result<Applied, StoreError> {
        let grace = ms(self.settings().offline_grace);
        let (_, rec, event) = self
            .run(user, false, |r, now| {
                if r.sessions
                    .get(session)
                    .is_none_or(|s| s.lease_until.is_none())
                {
                    return Err(StoreError::NoSuchSession(session.clone()));
                }
                Ok(r.close(session, now, grace))
            })
            .map_err(|e| match e {
                StoreError::NotFound(_) => StoreError::NoSuchSession(session.clone()),
                e => e,
            })?;
        Self::applied(rec, event, user)
    }

    async fn end_session(&self, user: &UserId, session: &SessionId) -> Result<Applied, StoreError> {
        let now = self.now();
        let grace = ms(self.settings().offline_grace);
        let mark = now + ms(self.settings().end_mark_lifetime());
        let (rec, event) = {
            let mut st = self.lock();
            let (held, rec, event) = st
                .transition(user, now, false, self.max_feed(), |r| {
                    let held = r
                        .sessions
                        .get(session)
                        .ok_or_else(|| StoreError::NoSuchSession(session.clone()))?
                        .node
                        .is_some();
                    r.close(session, now, grace);
                    Ok(held)
                })
                .map_err(|e| match e {
                    StoreError::NotFound(_) => StoreError::NoSuchSession(session.clone()),
                    e => e,
                })?;
            if held {
                let key = (user.clone(), session.clone());
                if let Some(was) = st.ended.insert(key, mark) {
                    st.ended_until.remove(&(was, user.clone(), session.clone()));
                }
                st.ended_until.insert((mark, user.clone(), session.clone()));
            }
            (rec, event)
        };
        if event.is_some() {
            self.shared.feed_grew.notify_waiters();
        }
        Self::applied(rec, event, user)
    }

    async fn sessions(&self, user: &UserId) -> Result<Option<UserSessions>, StoreError> {
        Ok(self.lock().users.get(user).map(UserSessions::of))
    }

    async fn reopen_sessions(
        &self,
        opens: &[OpenSession],
    ) -> Result<Vec<Result<Applied, TransitionError>>, StoreError> {
        let now = self.now();
        let mut out = Vec::with_capacity(opens.len());
        let mut grew = false;
        {
            let mut st = self.lock();
            for open in opens {
                let user = open.user.clone();
                out.push(
                    match st.open(&self.node, open.clone(), now, self.settings(), true) {
                        Ok((rec, event)) => {
                            grew |= event.is_some();
                            Ok(Self::applied(rec, event, &user)?)
                        }
                        Err(StoreError::Refused(e)) => Err(e),
                        Err(e) => return Err(e),
                    },
                );
            }
        }
        if grew {
            self.shared.feed_grew.notify_waiters();
        }
        Ok(out)
    }

    async fn node_session_count(&self) -> Result<u64, StoreError> {
        Ok(self.lock().nodes.get(&self.node).map_or(0, |n| n.live))
    }

    async fn node_sessions(&self) -> Result<Vec<(UserId, SessionId)>, StoreError> {
        let st = self.lock();
        let Some(n) = st.nodes.get(&self.node) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for user in &n.users {
            let Some(rec) = st.users.get(user) else {
                continue;
            };
            for (id, s) in &rec.sessions {
                if s.node.as_ref() == Some(&self.node) {
                    out.push((user.clone(), id.clone()));
                }
            }
        }
        Ok(out)
    }

    async fn close_session(
        &self,
        user: &UserId,
        session: &SessionId,
    ) -> Result<Applied, StoreError> {
        let grace = ms(self.settings().offline_grace);
        let (_, rec, event) = self.run(user, false, |r, now| Ok(r.close(session, now, grace)))?;
        Self::applied(rec, event, user)
    }

    async fn renew_session(
        &self,
        user: &UserId,
        session: &SessionId,
    ) -> Result<Millis, StoreError> {
        let ttl = ms(self.settings().online_ttl);
        let (until, _, _) = self
            .run(user, false, |r, now| match r.sessions.get_mut(session) {
                Some(s) if s.lease_until.is_some() => {
                    s.lease_until = Some(now + ttl);
                    Ok(now + ttl)
                }
                _ => Err(StoreError::NoSuchSession(session.clone())),
            })
            .map_err(|e| match e {
                StoreError::NotFound(_) => StoreError::NoSuchSession(session.clone()),
                e => e,
            })?;
        Ok(until)
    }

    async fn record_activity(&self, batch: &[Activity]) -> Result<Vec<PresenceEvent>, StoreError> {
        let away_after = ms(self.settings().away_after);
        let mut events = Vec::new();
        for a in batch {
            match self.run(&a.user, false, |r, now| {
                // Activity older than `away_after` says nothing about now (see activity.lua).
                if a.at > now - away_after {
                    r.activity(a.at.min(now));
                }
                Ok(())
            }) {
                Ok((_, _, Some(e))) => events.push(e),
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(events)
    }

    async fn apply(&self, user: &UserId, change: Change) -> Result<Applied, StoreError> {
        let (_, rec, event) = self.run(user, false, |r, now| {
            r.change(change, now);
            Ok(())
        })?;
        Self::applied(rec, event, user)
    }

    async fn view(&self, user: &UserId) -> Result<Option<PresenceView>, StoreError> {
        Ok(self.lock().users.get(user).map(UserRecord::view))
    }

    async fn views(&self, users: &[UserId]) -> Result<Vec<Option<PresenceView>>, StoreError> {
        let st = self.lock();
        Ok(users
            .iter()
            .map(|u| st.users.get(u).map(UserRecord::view))
            .collect())
    }

    async fn list(&self, scope: &Scope, query: &ListQuery) -> Result<ScopePage, StoreError> {
        let st = self.lock();
        let Some(ix) = st.scopes.get(scope) else {
            return Ok(ScopePage {
                users: Vec::new(),
                count: 0,
                next_cursor: None,
            });
        };
        let count = ScopeCount {
            total: ix.by_activity.len() as u64,
            away: ix.away,
        }
        .narrowed(query.status);
        let iter: Box<dyn Iterator<Item = &(Millis, UserId)>> = match &query.cursor {
            Some(c) => Box::new(ix.by_activity.range(..(c.activity, c.user.clone())).rev()),
            None => Box::new(ix.by_activity.iter().rev()),
        };
        let budget = if query.status.is_some() {
            filtered_scan_budget(query.limit)
        } else {
            usize::MAX
        };
        let mut users = Vec::new();
        let mut last = None;
        let mut exhausted = true;
        for (examined, entry) in iter.enumerate() {
            // Stop before an entry we may not take: its presence means there is a next page.
            if users.len() == query.limit || examined == budget {
                exhausted = false;
                break;
            }
            last = Some(entry);
            let rec = &st.users[&entry.1];
            if query.status.is_none_or(|s| s == rec.status) {
                users.push(rec.view());
            }
        }
        let next_cursor = match last {
            Some((a, u)) if !exhausted => Some(ListCursor {
                activity: *a,
                user: u.clone(),
            }),
            _ => None,
        };
        Ok(ScopePage {
            users,
            count,
            next_cursor,
        })
    }

    async fn counts(&self, scopes: &[Scope]) -> Result<Vec<ScopeCount>, StoreError> {
        let st = self.lock();
        Ok(scopes
            .iter()
            .map(|s| {
                st.scopes
                    .get(s)
                    .map_or_else(ScopeCount::default, |ix| ScopeCount {
                        total: ix.by_activity.len() as u64,
                        away: ix.away,
                    })
            })
            .collect())
    }

    async fn renew_node_lease(&self, sessions: u64) -> Result<LeaseRenewal, StoreError> {
        let now = self.now();
        let until = now + ms(self.settings().node_lease);
        let mut st = self.lock();
        // Lost when reaped, and also when the lease had already lapsed: a sweep may have
        // ended part of its sessions (or may be about to end none); the node re-asserts.
        let lapsed = st
            .nodes
            .get(&self.node)
            .is_some_and(|n| n.lease_until < now);
        let lost = st.reaped.remove(&self.node) || lapsed;
        let n = st
            .nodes
            .entry(self.node.clone())
            .or_insert_with(|| NodeState {
                started_at: now,
                ..Default::default()
            });
        n.lease_until = until;
        n.last_renewal = now;
        n.sessions = sessions;
        Ok(if lost {
            LeaseRenewal::Lost
        } else {
            LeaseRenewal::Held
        })
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        let now = self.now();
        Ok(self
            .lock()
            .nodes
            .iter()
            .filter(|(_, n)| n.lease_until >= now)
            .map(|(id, n)| NodeInfo {
                node_id: id.clone(),
                lease_until: n.lease_until,
                started_at: n.started_at,
                last_renewal: n.last_renewal,
                sessions: n.sessions,
            })
            .collect())
    }

    async fn sweep(&self) -> Result<SweepReport, StoreError> {
        let now = self.now();
        let batch = self.settings().sweep_batch.max(1);
        let report = {
            let st = &mut *self.lock();
            let mut r = SweepReport {
                auto_away: drain(|| self.sweep_auto_away(st, now, batch)),
                ..Default::default()
            };
            r.grace_expired = drain(|| self.sweep_grace(st, now, batch));
            r.leases_expired = drain(|| self.sweep_leases(st, now, batch));
            let mut reaped = SweepReport::default();
            r.node_sessions_reaped = drain(|| self.sweep_dead_nodes(st, now, batch, &mut reaped));
            r.nodes_reaped = reaped.nodes_reaped;
            r.custom_expired = drain(|| self.sweep_custom(st, now, batch));
            r.records_deleted = drain(|| self.sweep_retention(st, now, batch));
            r.history_pruned = drain(|| self.sweep_history(st, now, batch));
            Self::forget_ended(st, now);
            r
        };
        self.shared.feed_grew.notify_waiters();
        Ok(report)
    }

    async fn feed_head(&self) -> Result<FeedId, StoreError> {
        Ok(self.lock().feed_last)
    }

    async fn read_feed(&self, after: FeedId, limit: usize) -> Result<FeedRead, StoreError> {
        Ok(self.lock().read_feed(after, limit))
    }

    async fn wait_feed(
        &self,
        after: FeedId,
        limit: usize,
        wait: Duration,
    ) -> Result<FeedRead, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before reading, so an append between the read and the wait
            // still wakes us.
            let grew = self.shared.feed_grew.notified();
            let read = self.lock().read_feed(after, limit);
            if read.reset || read.last_id.is_some() {
                return Ok(read);
            }
            if tokio::time::timeout_at(deadline, grew).await.is_err() {
                return Ok(read);
            }
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn typing(&self, write: &TypingWrite) -> Result<TypingOutcome, StoreError> {
        let now = self.now();
        let Some(signal) = self.lock().write_typing(write, now) else {
            return Ok(TypingOutcome::Full {
                limit: write.max_typers,
            });
        };
        self.shared.bus.send(BusMessage::Typing(signal));
        Ok(TypingOutcome::Written)
    }

    async fn typing_now(&self, conversation: &ConversationId) -> Result<Vec<Typer>, StoreError> {
        let mut st = self.lock();
        st.typing.expire(self.now());
        Ok(st.typing.typers(conversation))
    }

    async fn publish(&self, message: &BusMessage) -> Result<(), StoreError> {
        // The same bound as on Redis, though nothing is serialized here.
        message
            .encode()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.shared.bus.send(message.clone());
        Ok(())
    }

    async fn bus(&self) -> Result<Box<dyn BusReceiver>, StoreError> {
        Ok(self.shared.bus.receiver())
    }

    async fn persist(&self) -> Result<(), StoreError> {
        let Some(file) = self.shared.snapshots.clone() else {
            return Ok(());
        };
        // Copied under the lock, written outside it: transitions go on meanwhile.
        let durable = self.lock().durable(self.now());
        tokio::task::spawn_blocking(move || file.save(&durable))
            .await
            .map_err(|e| StoreError::Unavailable(format!("snapshot task: {e}")))?
    }

    async fn history(
        &self,
        user: &UserId,
        first: Day,
        last: Day,
    ) -> Result<Vec<Millis>, StoreError> {
        let now = self.now();
        let st = self.lock();
        let mut days: BTreeMap<Day, Millis> = st
            .history
            .get(user)
            .map(|d| d.range(first..=last).map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default();
        if let Some((from, to)) = st.users.get(user).and_then(|r| history::open_span(r, now)) {
            history::add_span(&mut days, from, to);
        }
        Ok((first..=last)
            .map(|d| days.get(&d).copied().unwrap_or(0))
            .collect())
    }

    async fn inactive(
        &self,
        before: Millis,
        limit: usize,
        cursor: Option<&ListCursor>,
    ) -> Result<InactivePage, StoreError> {
        let st = self.lock();
        let start = match cursor {
            // Strictly after the cursor's entry.
            Some(c) => std::ops::Bound::Excluded((c.activity, c.user.clone())),
            None => std::ops::Bound::Unbounded,
        };
        let mut users: Vec<InactiveUser> = st
            .last_seen
            .range((start, std::ops::Bound::Unbounded))
            .take_while(|(t, _)| *t < before)
            .take(limit.max(1) + 1)
            .map(|(t, u)| InactiveUser {
                user: u.clone(),
                last_seen: *t,
            })
            .collect();
        let limit = limit.max(1);
        let more = users.len() > limit;
        users.truncate(limit);
        let next_cursor = more.then(|| {
            let last = users.last().expect("limit is at least 1");
            ListCursor {
                activity: last.last_seen,
                user: last.user.clone(),
            }
        });
        Ok(InactivePage { users, next_cursor })
    }

    async fn nearby(&self, query: &NearbyQuery) -> Result<Vec<NearbyUser>, StoreError> {
        let st = self.lock();
        let mut found: Vec<(f64, &UserId)> = st
            .located
            .iter()
            .filter(|(_, (_, org))| query.org.is_none() || org.as_ref() == query.org.as_ref())
            .map(|(user, (at, _))| (distance_m(query.at, *at), user))
            .filter(|(d, _)| *d <= query.radius_m)
            .collect();
        found.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        Ok(found
            .into_iter()
            .take(query.limit.max(1))
            .filter_map(|(d, user)| {
                Some(NearbyUser {
                    view: st.users.get(user)?.view(),
                    distance_m: shown_distance(d),
                })
            })
            .collect())
    }

    async fn repair(&self, mode: RepairMode) -> Result<RepairReport, StoreError> {
        Ok(self.repair_indexes(mode))
    }

    // --- Webhook delivery leases: the rule is presence_core's WebhookLeaseTable.

    async fn claim_webhook(
        &self,
        endpoint: &presence_core::EndpointId,
        lease: Duration,
        report: Option<&str>,
    ) -> Result<presence_core::WebhookClaim, StoreError> {
        let now = self.now();
        let mut st = self.lock();
        let head = st.feed_last;
        Ok(st
            .webhooks
            .claim(endpoint, &self.node, now, now + ms(lease), head, report))
    }

    async fn ack_webhook(
        &self,
        endpoint: &presence_core::EndpointId,
        upto: FeedId,
    ) -> Result<bool, StoreError> {
        Ok(self.lock().webhooks.ack(endpoint, &self.node, upto))
    }

    async fn release_webhook(
        &self,
        endpoint: &presence_core::EndpointId,
    ) -> Result<(), StoreError> {
        self.lock().webhooks.release(endpoint, &self.node);
        Ok(())
    }

    async fn webhook_leases(
        &self,
        endpoints: &[presence_core::EndpointId],
    ) -> Result<Vec<Option<presence_core::WebhookLease>>, StoreError> {
        let st = self.lock();
        Ok(endpoints.iter().map(|e| st.webhooks.get(e)).collect())
    }
}
impl State {
    /// What a snapshot keeps: every record and the history.
    fn durable(&self, saved_at: Millis) -> Durable {
        Durable {
            saved_at,
            users: self.users.values().cloned().collect(),
            history: self
                .history
                .iter()
                .map(|(u, days)| (u.clone(), days.iter().map(|(d, ms)| (*d, *ms)).collect()))
                .collect(),
        }
    }

    /// Reads a snapshot into an empty state (see [`MemoryStore::with_data_dir`]).
    fn restore(&mut self, durable: Durable, now: Millis) {
        for (user, days) in durable.history {
            for (day, spent) in days {
                let d = day * history::DAY_MS;
                self.add_history(&user, d, d + spent);
            }
        }
        for mut rec in durable.users {
            if rec.status != presence_core::Status::Offline {
                let old = rec.clone();
                let before = rec.before();
                rec.end_sessions(|_, _| true, durable.saved_at);
                rec.expire_grace(Millis::MAX);
                if let Some((from, to)) = history::ended_span(&old, &rec) {
                    self.add_history(&rec.user_id, from, to);
                }
                // The event is not kept: the feed starts empty after a restart.
                let _ = rec.finish(before, now);
            }
            let user = rec.user_id.clone();
            self.reindex(&user, IndexKeys::default(), IndexKeys::of(Some(&rec)));
            self.users.insert(user, rec);
        }
    }
}

/// The users of an index by activity who crossed into auto-away since `from`: up to `batch`
/// with activity in (`from`, `target`], the new cutoff, and whether the batch was full. A
/// full batch stops at its last candidate's activity, with every tie at that activity
/// included, so the next window can start strictly after it.
fn away_window(
    index: &BTreeSet<(Millis, UserId)>,
    from: Option<Millis>,
    target: Millis,
    batch: usize,
) -> (Vec<UserId>, Millis, bool) {
    let from = from.unwrap_or(Millis::MIN);
    if target <= from {
        return (Vec::new(), from, false);
    }
    let mut candidates: Vec<(Millis, UserId)> = index
        .range((from.saturating_add(1), smallest_user_id())..)
        .take_while(|(a, _)| *a <= target)
        .take(batch)
        .cloned()
        .collect();
    let full = candidates.len() == batch;
    let cutoff = match candidates.last() {
        Some(last) if full => {
            let last = last.clone();
            let ties = index.range(last.clone()..).skip(1);
            let ties: Vec<_> = ties.take_while(|(a, _)| *a == last.0).cloned().collect();
            candidates.extend(ties);
            last.0
        }
        _ => target,
    };
    (
        candidates.into_iter().map(|(_, u)| u).collect(),
        cutoff,
        full,
    )
}

/// Up to `batch` users of an ordered index whose time has come (`<= upto`), earliest first.
fn due(index: &BTreeSet<(Millis, UserId)>, upto: Millis, batch: usize) -> Vec<UserId> {
    index
        .iter()
        .take_while(|(t, _)| *t <= upto)
        .take(batch)
        .map(|(_, u)| u.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use presence_core::{DeviceKind, ManualClock};

    use super::*;

    #[tokio::test]
    async fn marks_of_ended_sessions_are_forgotten_once_their_time_is_up() {
        let clock = ManualClock::new(0);
        let node = NodeId::new("a").unwrap();
        let store = MemoryStore::new(node, Arc::new(clock.clone()), StoreSettings::default());
        let (user, session) = (UserId::new("1").unwrap(), SessionId::new("s").unwrap());
        let open = OpenSession {
            user: user.clone(),
            session: session.clone(),
            device: DeviceKind::Web,
            zone: None,
            org: None,
            leased: false,
            invisible: false,
        };
        store.open_session(open).await.unwrap();
        store.end_session(&user, &session).await.unwrap();
        let life = store.settings().end_mark_lifetime();
        clock.advance(life - Duration::from_millis(1));
        store.sweep().await.unwrap();
        assert_eq!(store.lock().ended.len(), 1, "not yet");
        clock.advance(Duration::from_millis(1));
        store.sweep().await.unwrap();
        let st = store.lock();
        assert!(st.ended.is_empty() && st.ended_until.is_empty());
    }
}
