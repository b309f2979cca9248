//! The `Store` trait: everything the service asks of presence storage, implemented by the
//! embedded memory store and the Redis store (crate `presence-store`).

use std::time::Duration;

use async_trait::async_trait;

use crate::event::{FeedId, PresenceEvent};
use crate::ids::{NodeId, OrgId, SessionId, UserId, ZoneId};
use crate::record::{Change, TransitionError};
use crate::scope::{ListQuery, Scope, ScopePage};
use crate::time::Millis;
use crate::view::{DeviceKind, PresenceView, Status};

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
    /// The count narrowed by a status filter (`None`: online and away).
    pub fn narrowed(self, status: Option<Status>) -> u64 {
        match status {
            None => self.total,
            Some(Status::Away) => self.away,
            Some(Status::Online) => self.total - self.away,
            Some(Status::Offline) => 0,
        }
    }
}

/// Whether a node still held its lease when it renewed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseRenewal {
    /// Registered for the first time, or renewed in time.
    Held,
    /// The store no longer knew this node: its lease lapsed and another node reaped its
    /// sessions, or the store lost its data. The node must re-assert the sessions it holds.
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
    /// Offline records deleted after `last_seen_retention`.
    pub records_deleted: usize,
    /// Index entries that pointed at no live record, removed.
    pub stale_entries: usize,
}

impl std::ops::AddAssign for SweepReport {
    fn add_assign(&mut self, b: SweepReport) {
        self.auto_away += b.auto_away;
        self.grace_expired += b.grace_expired;
        self.leases_expired += b.leases_expired;
        self.node_sessions_reaped += b.node_sessions_reaped;
        self.nodes_reaped += b.nodes_reaped;
        self.records_deleted += b.records_deleted;
        self.stale_entries += b.stale_entries;
    }
}

/// A read from the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedRead {
    /// Events after the requested id, oldest first.
    pub events: Vec<PresenceEvent>,
    /// `true` when events after the requested id have aged out of the feed: the reader must
    /// take a fresh snapshot instead of trusting `events` to be complete.
    pub reset: bool,
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

    /// Renews a REST heartbeat session's lease; returns the new expiry.
    async fn renew_session(&self, user: &UserId, session: &SessionId)
    -> Result<Millis, StoreError>;

    /// Records activity for many users in one call; returns the events (auto-away ended).
    /// Activity of offline or unknown users, and activity older than `away_after`, is skipped.
    async fn record_activity(&self, batch: &[Activity]) -> Result<Vec<PresenceEvent>, StoreError>;

    /// Applies a user's change (status, zone, org, metadata).
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
    /// how many sessions the node holds (shown by [`Store::nodes`]).
    async fn renew_node_lease(&self, sessions: u64) -> Result<LeaseRenewal, StoreError>;

    /// Live nodes.
    async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError>;

    /// One sweep: auto-away, grace expiry, REST leases, dead nodes, retention and stale
    /// entries, each bounded by `sweep_batch` and costing O(what changes). Safe on every node
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
}
