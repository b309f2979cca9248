//! The `Store` trait: everything the service asks of presence storage, implemented by the
//! embedded memory store and the Redis store (crate `presence-store`).

use std::time::Duration;

use async_trait::async_trait;

use crate::bus::{BusMessage, BusReceiver, Typer, TypingOutcome, TypingWrite};
use crate::event::{FeedId, PresenceEvent};
use crate::geo::Location;
use crate::history::Day;
use crate::ids::{ConversationId, NodeId, OrgId, SessionId, UserId, ZoneId};
use crate::record::{Change, TransitionError, UserRecord};
use crate::repair::{RepairMode, RepairReport};
use crate::scope::{ListCursor, ListQuery, Scope, ScopePage};
use crate::time::Millis;
use crate::view::{DeviceKind, PresenceView, Status};
use crate::webhook::{EndpointId, WebhookClaim, WebhookLease};

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The rules refused the transition; nothing changed.
    #[error(transparent)]
    Refused(#[from] TransitionError),
    /// The user has no presence record (never seen, or past retention).
    #[error("user {0} has no presence record")]
    NotFound(UserId),
    /// The session does not exist (any more).
    #[error("session {0} is not open")]
    NoSuchSession(SessionId),
    /// The backing store cannot be reached or timed out; nothing is known to have changed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered something this code cannot read: a bug or a foreign writer.
    #[error("store returned corrupt data: {0}")]
    Corrupt(String),
}

/// A session to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSession {
    /// Whose session.
    pub user: UserId,
    /// Its id, unique per user.
    pub session: SessionId,
    /// What it runs on.
    pub device: DeviceKind,
    /// Zone to move to (`None`: keep the current one).
    pub zone: Option<ZoneId>,
    /// Org to move to (`None`: keep the current one).
    pub org: Option<OrgId>,
    /// `true` for a REST heartbeat session: leased for `online_ttl`, not tied to the node.
    pub leased: bool,
    /// Open invisible, when this open starts a new presence (the user was offline): the user
    /// is invisible from it on, in the same step, so a client coming back after its presence
    /// ended stays invisible without a moment visible. An open within a presence that goes
    /// on (a reload within the grace, a second device) leaves invisible as it is. `false`:
    /// the rules as usual.
    pub invisible: bool,
}

/// One open session, as [`Store::sessions`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Its id.
    pub session: SessionId,
    /// What it runs on.
    pub device: DeviceKind,
    /// The node holding its WebSocket; `None` for a REST heartbeat session.
    pub node: Option<NodeId>,
    /// When it opened, to the second; `None` for a session written before sessions kept it.
    pub connected_at: Option<Millis>,
}

/// A user's open sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSessions {
    /// The user's last activity. Activity is kept per user, not per session: a node writes
    /// each active user at most once per flush, whichever of their sessions was active, and
    /// one write per session would multiply that by the user's sessions.
    pub last_activity: Millis,
    /// The open sessions, oldest first (ties by session id).
    pub sessions: Vec<SessionInfo>,
}

impl UserSessions {
    /// The open sessions of a record.
    pub fn of(record: &UserRecord) -> Self {
        let mut sessions: Vec<SessionInfo> = record
            .sessions
            .iter()
            .map(|(id, s)| SessionInfo {
                session: id.clone(),
                device: s.device,
                node: s.node.clone(),
                connected_at: s.opened,
            })
            .collect();
        sessions.sort_by(|a, b| (a.connected_at, &a.session).cmp(&(b.connected_at, &b.session)));
        Self {
            last_activity: record.last_activity,
            sessions,
        }
    }
}

/// The result of one transition: the view after it and its event, if it made one.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The user's view after the call.
    pub view: PresenceView,
    /// The one event, when the view changed.
    pub event: Option<PresenceEvent>,
}

/// One user's activity, at a time no later than now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// Who was active.
    pub user: UserId,
    /// When.
    pub at: Millis,
}

/// Counts of one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScopeCount {
    /// Online or away users.
    pub total: u64,
    /// Of which away.
    pub away: u64,
}

impl ScopeCount {
    /// Online (not away) users. Saturating: a damaged away count (a record deleted by hand,
    /// a crash between AOF writes) may exceed the total until the sweep repairs it, and a
    /// count must never wrap.
    pub fn online(self) -> u64 {
        self.total.saturating_sub(self.away)
    }

    /// The count narrowed by a status filter (`None`: online and away).
    pub fn narrowed(self, status: Option<Status>) -> u64 {
        match status {
            None => self.total,
            Some(Status::Away) => self.away.min(self.total),
            Some(Status::Online) => self.online(),
            Some(Status::Offline) => 0,
        }
    }
}

/// Whether a node still held its lease when it renewed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseRenewal {
    /// Registered for the first time, or renewed in time.
    Held,
    /// The node's sessions in the store may not match its sockets any more: its lease had
    /// already lapsed by the store's clock when it renewed (so a reap may have ended part or
    /// all of its sessions, whether or not one started), another node reaped it, or the store
    /// lost its data. The node must re-assert the sessions it holds
    /// ([`Store::reopen_sessions`] leaves the ones the store still has alone).
    Lost,
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SweepReport {
    /// Users turned `away (auto)`.
    pub auto_away: usize,
    /// Users gone offline after their grace.
    pub grace_expired: usize,
    /// REST heartbeat sessions whose lease ran out.
    pub leases_expired: usize,
    /// Sessions of dead nodes ended.
    pub node_sessions_reaped: usize,
    /// Dead nodes fully reaped.
    pub nodes_reaped: usize,
    /// Custom statuses cleared at their `expires_at`.
    pub custom_expired: usize,
    /// Offline records deleted after `last_seen_retention`.
    pub records_deleted: usize,
    /// Index entries that pointed at no live record, removed.
    pub stale_entries: usize,
    /// Users whose history lost days past `history_retention`.
    pub history_pruned: usize,
}

impl std::ops::AddAssign for SweepReport {
    fn add_assign(&mut self, b: SweepReport) {
        self.auto_away += b.auto_away;
        self.grace_expired += b.grace_expired;
        self.leases_expired += b.leases_expired;
        self.node_sessions_reaped += b.node_sessions_reaped;
        self.nodes_reaped += b.nodes_reaped;
        self.custom_expired += b.custom_expired;
        self.records_deleted += b.records_deleted;
        self.stale_entries += b.stale_entries;
        self.history_pruned += b.history_pruned;
    }
}

/// A read from the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedRead {
    /// Events after the requested id, oldest first.
    pub events: Vec<PresenceEvent>,
    /// `true` when the requested id cannot be resumed from: events after it have aged out
    /// of the feed, or it does not belong to the current feed at all (the store lost its
    /// data and started a new feed, or the id is newer than any the feed made). The reader
    /// must take a fresh snapshot and follow the feed from [`Store::feed_head`].
    /// `FeedId::ZERO` (from the very beginning) never resets on a feed that was never trimmed.
    pub reset: bool,
    /// Feed entries in the range read that could not be decoded (a foreign or older writer,
    /// a hand-made `XADD`, metadata that is not JSON): skipped and logged, never fatal. The
    /// service counts them in `/metrics`.
    pub skipped: u64,
    /// The id of the last feed entry this read covered, decodable or not (`None`: nothing
    /// after the requested id). Readers continue from here, not from the last event's id:
    /// a batch made only of undecodable entries still moves them on. When `events` is not
    /// empty it is at or after the last event's id.
    pub last_id: Option<FeedId>,
}

impl FeedRead {
    /// Where a reader that asked for entries after `after` continues from.
    pub fn next_after(&self, after: FeedId) -> FeedId {
        self.last_id.unwrap_or(after)
    }
}

/// A live node as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node.
    pub node_id: NodeId,
    /// When its lease runs out.
    pub lease_until: Millis,
    /// When it first registered.
    pub started_at: Millis,
    /// When it last renewed its lease.
    pub last_renewal: Millis,
    /// Sessions it reported holding at that renewal.
    pub sessions: u64,
}

/// One user of the inactive report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InactiveUser {
    /// Who.
    pub user: UserId,
    /// When they were last seen (the truth: the report is for the backend).
    pub last_seen: Millis,
}

/// A page of the inactive report, oldest last seen first (ties by user id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InactivePage {
    /// The users.
    pub users: Vec<InactiveUser>,
    /// Where the next page starts (the last entry's last seen and user); `None` at the end.
    pub next_cursor: Option<ListCursor>,
}

/// What `nearby` asks.
#[derive(Debug, Clone, PartialEq)]
pub struct NearbyQuery {
    /// From where.
    pub at: Location,
    /// How far, in metres.
    pub radius_m: f64,
    /// Only users of this org (a token confined by tenant isolation); `None`: everyone.
    pub org: Option<OrgId>,
    /// At most this many users.
    pub limit: usize,
}

/// A user `nearby` found.
#[derive(Debug, Clone, PartialEq)]
pub struct NearbyUser {
    /// Their view (the truth; the caller shows it as the asker may see it).
    pub view: PresenceView,
    /// How far from the query's point, in metres, as Redis GEO measures it ([`crate::geo`]).
    pub distance_m: f64,
}

/// Presence storage. Every transition is atomic in the store and writes its event to the
/// feed in the same step. One handle speaks for one node (`node_id`).
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The node this handle speaks for.
    fn node_id(&self) -> &NodeId;

    /// Opens a session (SPEC §3: first session → online; later ones count as activity).
    async fn open_session(&self, open: OpenSession) -> Result<Applied, StoreError>;

    /// Closes a session; the last one starts the offline grace. Closing a session that is
    /// not open is not an error (closes may race with reaps): the view is returned unchanged.
    async fn close_session(
        &self,
        user: &UserId,
        session: &SessionId,
    ) -> Result<Applied, StoreError>;

    /// Closes a REST heartbeat session (`DELETE /heartbeat`), exactly as
    /// [`Store::close_session`] would; a session that is not open, or is not leased (a
    /// WebSocket's, held by a node), answers [`StoreError::NoSuchSession`] and changes nothing.
    async fn close_leased_session(
        &self,
        user: &UserId,
        session: &SessionId,
    ) -> Result<Applied, StoreError>;

    /// Ends one session for the service (`DELETE /sessions/{user}/{session}`), WebSocket or
    /// REST lease, exactly as [`Store::close_session`] would: the user's other sessions stay,
    /// and ending the last one starts the offline grace. A WebSocket's session is also marked
    /// as ended for [`crate::StoreSettings::end_mark_lifetime`]: until then, opening it again
    /// ([`Store::open_session`], [`Store::reopen_sessions`]) answers
    /// [`TransitionError::SessionEnded`], so the node holding the socket, when it finds the
    /// session missing, closes the socket instead of re-asserting it. A session that is not
    /// open (or a user without a record) answers [`StoreError::NoSuchSession`] and changes
    /// nothing.
    async fn end_session(&self, user: &UserId, session: &SessionId) -> Result<Applied, StoreError>;

    /// A user's open sessions, oldest first; `None` for a user without a record (never seen,
    /// or past retention), an empty list for one without a session. One store read.
    async fn sessions(&self, user: &UserId) -> Result<Option<UserSessions>, StoreError>;

    /// Re-opens many sessions in one store call (one script call per up to 1,000 in Redis),
    /// each exactly as [`Store::open_session`] would, with the same events: what a node does
    /// after [`LeaseRenewal::Lost`] or when [`Store::node_session_count`] disagrees with its
    /// sockets. A session the store still has is left alone and answered
    /// `Err(TransitionError::SessionExists)`; one the service ended lately
    /// ([`Store::end_session`]) answers `Err(TransitionError::SessionEnded)`. One answer per request, in order; a per-session
    /// refusal does not fail the others, while a store failure fails the call (some of the
    /// batch may then have been applied: re-opening is safe to repeat).
    async fn reopen_sessions(
        &self,
        opens: &[OpenSession],
    ) -> Result<Vec<Result<Applied, TransitionError>>, StoreError>;

    /// How many sessions (not leased: WebSockets) the store records for this handle's node.
    /// O(1): a counter kept by every transition that adds or ends a session. The node
    /// compares it with its own socket count every lease period.
    async fn node_session_count(&self) -> Result<u64, StoreError>;

    /// Every session (not leased) the store records for this handle's node, as
    /// (user, session). Costs O(users indexed for the node): in Redis one script that reads
    /// the node's index list and each user's hash (tens of milliseconds of Redis time at
    /// 20,000 users); call it only when [`Store::node_session_count`] disagrees.
    async fn node_sessions(&self) -> Result<Vec<(UserId, SessionId)>, StoreError>;

    /// Renews a REST heartbeat session's lease; returns the new expiry.
    async fn renew_session(&self, user: &UserId, session: &SessionId)
    -> Result<Millis, StoreError>;

    /// Records activity for many users in one call; returns the events (auto-away ended).
    /// Activity of offline or unknown users, and activity older than `away_after`, is skipped.
    async fn record_activity(&self, batch: &[Activity]) -> Result<Vec<PresenceEvent>, StoreError>;

    /// Applies a user's change (status, zone, org, metadata, custom status). The store does
    /// not validate a custom status: callers check [`crate::CustomStatus::problem`] first.
    async fn apply(&self, user: &UserId, change: Change) -> Result<Applied, StoreError>;

    /// One user's view.
    async fn view(&self, user: &UserId) -> Result<Option<PresenceView>, StoreError>;

    /// Many users' views in one call, in the order asked.
    async fn views(&self, users: &[UserId]) -> Result<Vec<Option<PresenceView>>, StoreError>;

    /// A page of a scope, most recent activity first.
    async fn list(&self, scope: &Scope, query: &ListQuery) -> Result<ScopePage, StoreError>;

    /// Counts of several scopes in one call.
    async fn counts(&self, scopes: &[Scope]) -> Result<Vec<ScopeCount>, StoreError>;

    /// Registers or renews this node's lease (call every `node_lease / 3` or so), reporting
    /// how many sessions the node holds (shown by [`Store::nodes`]). Answers
    /// [`LeaseRenewal::Lost`] when the lease had already lapsed by the store's clock (a reap
    /// may have started), when the node was reaped, or when the store forgot it.
    async fn renew_node_lease(&self, sessions: u64) -> Result<LeaseRenewal, StoreError>;

    /// Live nodes.
    async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError>;

    /// One sweep: auto-away, grace expiry, REST leases, dead nodes, custom status expiry,
    /// retention and stale entries (in that order), each bounded by `sweep_batch` and costing O(what changes). Safe on every node
    /// at once.
    async fn sweep(&self) -> Result<SweepReport, StoreError>;

    /// The id of the newest event (`FeedId::ZERO` when the feed is empty). Read it before a
    /// snapshot, then follow the feed from it.
    async fn feed_head(&self) -> Result<FeedId, StoreError>;

    /// Up to `limit` events after `after`, oldest first.
    async fn read_feed(&self, after: FeedId, limit: usize) -> Result<FeedRead, StoreError>;

    /// Like [`Store::read_feed`], but waits up to `wait` for an event when there is none yet.
    async fn wait_feed(
        &self,
        after: FeedId,
        limit: usize,
        wait: Duration,
    ) -> Result<FeedRead, StoreError>;

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    // --- Typing and the bus (ephemeral: no record, no version, no feed) -------------------

    /// Starts or renews (`write.until` set) or stops a user's typing in a conversation, and
    /// publishes it on the bus as a [`BusMessage::Typing`] carrying the user's org as their
    /// record has it, in the same step (one script call in Redis). A start for a user not yet
    /// typing there is refused with [`TypingOutcome::Full`] when `write.max_typers` others
    /// (whose entries have not expired) are. Entries expire at their `until` by the reader's
    /// clock; nothing is swept (Redis drops a conversation's key once its newest entry is
    /// past).
    async fn typing(&self, write: &TypingWrite) -> Result<TypingOutcome, StoreError>;

    /// Who is typing in `conversation` now (entries whose `until` is still ahead by this
    /// handle's clock), ordered by user id.
    async fn typing_now(&self, conversation: &ConversationId) -> Result<Vec<Typer>, StoreError>;

    /// Publishes `message` to every node's bus, this one's included: at most once, and only
    /// to nodes listening at that moment.
    async fn publish(&self, message: &BusMessage) -> Result<(), StoreError>;

    /// This node's end of the bus: every message published after the subscription is in place
    /// (in Redis: its SUBSCRIBE confirmed, which this waits for). From then on it keeps itself
    /// subscribed through store outages, missing what was published while it was cut off.
    async fn bus(&self) -> Result<Box<dyn BusReceiver>, StoreError>;

    /// Makes durable what this store keeps in process: the memory store writes a snapshot to
    /// its data directory (when it has one); a no-op for a store that is durable by itself.
    /// The node calls it every `store.snapshot_interval` and once more when it stops.
    async fn persist(&self) -> Result<(), StoreError> {
        Ok(())
    }

    // --- Backend reports: history, inactive users, nearby (SPEC §6) ------------------------

    /// How long `user` was present on each UTC day from `first` to `last` (inclusive), in ms,
    /// one entry per day in order, zeros included: the history the transitions wrote, plus the
    /// presence still going on ([`crate::history::open_span`]). One store read. Callers bound
    /// the range (days past retention are zero).
    async fn history(
        &self,
        user: &UserId,
        first: Day,
        last: Day,
    ) -> Result<Vec<Millis>, StoreError>;

    /// Offline users last seen before `before`, oldest first (ties by user id), at most
    /// `limit`, after `cursor`; from the last-seen index, O(log n + limit).
    async fn inactive(
        &self,
        before: Millis,
        limit: usize,
        cursor: Option<&ListCursor>,
    ) -> Result<InactivePage, StoreError>;

    /// Present users whom everyone sees as they are (those in the lists) sharing a location
    /// within `radius_m` of the query's point, nearest first, at most `limit`. One store call.
    async fn nearby(&self, query: &NearbyQuery) -> Result<Vec<NearbyUser>, StoreError>;

    // --- Repair -----------------------------------------------------------------------------

    /// Checks every index against the records and, unless `mode.check_only`, fixes what is off
    /// (see [`crate::repair`] for the kinds): the seed's "rebuild sorted sets", made safe
    /// while nodes run, since each fix re-checks the record in the same atomic step as the
    /// write and is idempotent. An orphan session (its node neither live nor waiting to be
    /// reaped) is ended through the ordinary transition, with its event. A whole pass
    /// (`mode.slice == None`) costs O(records + index entries) in bounded calls, apart from an
    /// atomic recount of a scope's away count, or of a node's session count, that disagrees
    /// with the records (O(members), once); a slice (`Some(n)`) costs O(n) and carries on
    /// where the last slice stopped. Registers no node
    /// and holds no session: a handle made only to repair never looks like a node.
    async fn repair(&self, mode: RepairMode) -> Result<RepairReport, StoreError>;

    // --- Webhook delivery leases ---------------------------------------------------------

    /// Claims or renews this node's lease on `endpoint` for `lease` from now (the handle's
    /// clock), storing `report` (cut to [`crate::webhook::MAX_WEBHOOK_REPORT_BYTES`]) when
    /// given. This node gets it when nobody holds it, when the holder's lease lapsed, or when
    /// it holds it already; otherwise [`WebhookClaim::Taken`]. An endpoint claimed for the
    /// first time starts at the feed's head, in the same atomic step. One store call.
    async fn claim_webhook(
        &self,
        endpoint: &EndpointId,
        lease: Duration,
        report: Option<&str>,
    ) -> Result<WebhookClaim, StoreError>;

    /// Acknowledges every event of `endpoint` up to `upto` as delivered (or given up on).
    /// Only the holder may: `Ok(false)` when this node does not hold the lease (it must stop
    /// delivering). The acknowledged id never moves back. One store call.
    async fn ack_webhook(&self, endpoint: &EndpointId, upto: FeedId) -> Result<bool, StoreError>;

    /// Gives up this node's lease on `endpoint` (graceful shutdown) so another node may
    /// claim it at once; a lease another node holds is left alone.
    async fn release_webhook(&self, endpoint: &EndpointId) -> Result<(), StoreError>;

    /// The leases of `endpoints`, in order (`None`: never claimed). One store call.
    async fn webhook_leases(
        &self,
        endpoints: &[EndpointId],
    ) -> Result<Vec<Option<WebhookLease>>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_away_count_never_wraps_a_count() {
        let damaged = ScopeCount { total: 2, away: 5 };
        assert_eq!(damaged.online(), 0);
        assert_eq!(damaged.narrowed(Some(Status::Online)), 0);
        assert_eq!(damaged.narrowed(Some(Status::Away)), 2);
        assert_eq!(damaged.narrowed(None), 2);
        let fine = ScopeCount { total: 5, away: 2 };
        assert_eq!(fine.narrowed(Some(Status::Online)), 3);
    }
}
