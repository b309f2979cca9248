//! A `Store` decorator that measures every call: `presenced_store_call_seconds{op}` (a
//! histogram) and `presenced_store_errors_total{op,kind}`. The node wraps its store in it, so
//! every route, connection and loop is measured in one place.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use presence_core::{
    Activity, Applied, BusMessage, BusReceiver, Change, ConversationId, Day, FeedId, FeedRead,
    InactivePage, LeaseRenewal, ListCursor, ListQuery, Millis, NearbyQuery, NearbyUser, NodeId,
    NodeInfo, OpenSession, PresenceEvent, PresenceView, RepairMode, RepairReport, Scope,
    ScopeCount, ScopePage, SessionId, Store, StoreError, SweepReport, TransitionError, Typer,
    TypingOutcome, TypingWrite, UserId, UserSessions,
};

/// Measures the calls to `inner`.
#[derive(Debug)]
pub struct MeteredStore<S> {
    inner: S,
}

impl<S> MeteredStore<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

async fn measured<T>(
    op: &'static str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = Instant::now();
    let out = call.await;
    metrics::histogram!("presenced_store_call_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    if let Err(e) = &out {
        let kind = match e {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Corrupt(_) => "corrupt",
            _ => "refused",
        };
        metrics::counter!("presenced_store_errors_total", "op" => op, "kind" => kind).increment(1);
    }
    out
}

#[async_trait]
impl<S: Store> Store for MeteredStore<S> {
    fn node_id(&self) -> &NodeId {
        self.inner.node_id()
    }
    async fn open_session(&self, open: OpenSession) -> Result<Applied, StoreError> {
        measured("open_session", self.inner.open_session(open)).await
    }
    async fn close_session(
        &self,
        user: &UserId,
        session: &SessionId,
    ) -> Result<Applied, StoreError> {
        measured("close_session", self.inner.close_session(user, session)).await
    }
    async fn close_leased_session(
        &self,
        user: &UserId,
        session: &SessionId,
    ) -> Result<Applied, StoreError> {
        measured(
            "close_leased_session",
            self.inner.close_leased_session(user, session),
        )
        .await
    }
    async fn end_session(&self, user: &UserId, session: &SessionId) -> Result<Applied, StoreError> {
        measured("end_session", self.inner.end_session(user, session)).await
    }
    async fn sessions(&self, user: &UserId) -> Result<Option<UserSessions>, StoreError> {
        measured("sessions", self.inner.sessions(user)).await
    }
    async fn reopen_sessions(
        &self,
        opens: &[OpenSession],
    ) -> Result<Vec<Result<Applied, TransitionError>>, StoreError> {
        measured("reopen_sessions", self.inner.reopen_sessions(opens)).await
    }
    async fn node_session_count(&self) -> Result<u64, StoreError> {
        measured("node_session_count", self.inner.node_session_count()).await
    }
    async fn node_sessions(&self) -> Result<Vec<(UserId, SessionId)>, StoreError> {
        measured("node_sessions", self.inner.node_sessions()).await
    }
    async fn renew_session(
        &self,
        user: &UserId,
        session: &SessionId,
    ) -> Result<Millis, StoreError> {
        measured("renew_session", self.inner.renew_session(user, session)).await
    }
    async fn record_activity(&self, batch: &[Activity]) -> Result<Vec<PresenceEvent>, StoreError> {
        measured("record_activity", self.inner.record_activity(batch)).await
    }
    async fn apply(&self, user: &UserId, change: Change) -> Result<Applied, StoreError> {
        measured("apply", self.inner.apply(user, change)).await
    }
    async fn view(&self, user: &UserId) -> Result<Option<PresenceView>, StoreError> {
        measured("view", self.inner.view(user)).await
    }
    async fn views(&self, users: &[UserId]) -> Result<Vec<Option<PresenceView>>, StoreError> {
        measured("views", self.inner.views(users)).await
    }
    async fn list(&self, scope: &Scope, query: &ListQuery) -> Result<ScopePage, StoreError> {
        measured("list", self.inner.list(scope, query)).await
    }
    async fn counts(&self, scopes: &[Scope]) -> Result<Vec<ScopeCount>, StoreError> {
        measured("counts", self.inner.counts(scopes)).await
    }
    async fn renew_node_lease(&self, sessions: u64) -> Result<LeaseRenewal, StoreError> {
        measured("renew_node_lease", self.inner.renew_node_lease(sessions)).await
    }
    async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        measured("nodes", self.inner.nodes()).await
    }
    async fn sweep(&self) -> Result<SweepReport, StoreError> {
        measured("sweep", self.inner.sweep()).await
    }
    async fn feed_head(&self) -> Result<FeedId, StoreError> {
        measured("feed_head", self.inner.feed_head()).await
    }
    async fn read_feed(&self, after: FeedId, limit: usize) -> Result<FeedRead, StoreError> {
        measured("read_feed", self.inner.read_feed(after, limit)).await
    }
    // Not measured: it waits on purpose, so its time says nothing about the store.
    async fn wait_feed(
        &self,
        after: FeedId,
        limit: usize,
        wait: Duration,
    ) -> Result<FeedRead, StoreError> {
        self.inner.wait_feed(after, limit, wait).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        measured("ping", self.inner.ping()).await
    }
    async fn typing(&self, write: &TypingWrite) -> Result<TypingOutcome, StoreError> {
        measured("typing", self.inner.typing(write)).await
    }
    async fn typing_now(&self, conversation: &ConversationId) -> Result<Vec<Typer>, StoreError> {
        measured("typing_now", self.inner.typing_now(conversation)).await
    }
    async fn publish(&self, message: &BusMessage) -> Result<(), StoreError> {
        measured("publish", self.inner.publish(message)).await
    }
    // Not measured: it waits for a subscription, not for a command.
    async fn bus(&self) -> Result<Box<dyn BusReceiver>, StoreError> {
        self.inner.bus().await
    }
    async fn persist(&self) -> Result<(), StoreError> {
        measured("persist", self.inner.persist()).await
    }
    async fn history(
        &self,
        user: &UserId,
        first: Day,
        last: Day,
    ) -> Result<Vec<Millis>, StoreError> {
        measured("history", self.inner.history(user, first, last)).await
    }
    async fn inactive(
        &self,
        before: Millis,
        limit: usize,
        cursor: Option<&ListCursor>,
    ) -> Result<InactivePage, StoreError> {
        measured("inactive", self.inner.inactive(before, limit, cursor)).await
    }
    async fn nearby(&self, query: &NearbyQuery) -> Result<Vec<NearbyUser>, StoreError> {
        measured("nearby", self.inner.nearby(query)).await
    }
    async fn repair(&self, mode: RepairMode) -> Result<RepairReport, StoreError> {
        measured("repair", self.inner.repair(mode)).await
    }
    async fn claim_webhook(
        &self,
        endpoint: &presence_core::EndpointId,
        lease: Duration,
        report: Option<&str>,
    ) -> Result<presence_core::WebhookClaim, StoreError> {
        measured(
            "claim_webhook",
            self.inner.claim_webhook(endpoint, lease, report),
        )
        .await
    }
    async fn ack_webhook(
        &self,
        endpoint: &presence_core::EndpointId,
        upto: FeedId,
    ) -> Result<bool, StoreError> {
        measured("ack_webhook", self.inner.ack_webhook(endpoint, upto)).await
    }
    async fn release_webhook(
        &self,
        endpoint: &presence_core::EndpointId,
    ) -> Result<(), StoreError> {
        measured("release_webhook", self.inner.release_webhook(endpoint)).await
    }
    async fn webhook_leases(
        &self,
        endpoints: &[presence_core::EndpointId],
    ) -> Result<Vec<Option<presence_core::WebhookLease>>, StoreError> {
        measured("webhook_leases", self.inner.webhook_leases(endpoints)).await
    }
}
