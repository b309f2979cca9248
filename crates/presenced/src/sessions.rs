//! The sessions this node holds, so the store's view of this node converges to its live
//! sockets whatever failed on the way (SPEC §8, §10 "No ghost sessions"):
//!
//! - a close that failed (the store was down) is kept and retried until it succeeds;
//! - an open whose answer was lost (a timeout after the script ran) is closed the same way;
//! - after the store forgot the node (restarted without its data, or reaped the node during a
//!   pause), every session still held is re-asserted in batches, and a session that ended
//!   while the re-assert ran is closed again;
//! - every lease period the store's count of this node's sessions is compared with the
//!   node's own, and when they differ (and, whatever the counts, every few periods, since a
//!   ghost and a lost session would cancel out in a count) the two lists are reconciled: a
//!   session the store has and no socket holds is closed, one a socket has held for a while
//!   and the store lacks is re-opened.
//!
//! A session is registered before its open is sent, so an open still on its way is never
//! taken for a ghost.
//!
//! The service may end a session (`DELETE /messenger/presence/sessions/{user}/{session}`,
//! [`Store::end_session`]) on any node. The store ends it at once and marks it; the node that
//! holds its socket closes the socket with 4011 through [`LocalSessions::end`]: at once when
//! the request reached this node; otherwise as soon as it hears of it on the bus
//! (`BusMessage::SessionEnded`, followed by `loops::follow_bus`), or, had it missed that,
//! when its reconcile (or a re-assert) finds the session missing and the store refuses to
//! re-open it (`TransitionError::SessionEnded`).
//!
//! Where each user is (zone, org) is kept per user, as the store keeps it: the newest
//! session's values, and every move, REST or WebSocket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use presence_core::{
    DeviceKind, Millis, OpenSession, OrgId, SessionId, Store, StoreError, TransitionError, UserId,
    ZoneId,
};
use tokio::sync::Notify;

/// Sessions re-opened per store call during a re-assert or a reconcile.
const REOPEN_BATCH: usize = 500;

/// What a reconcile did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Whether it listed the node's sessions in the store (the costly part).
    pub listed: bool,
    /// Sessions the store had that no socket of this node holds: closed.
    pub closed: usize,
    /// Sessions a socket held that the store had lost: re-opened.
    pub reopened: usize,
    /// Sessions a socket held that the service had ended: their sockets told to close.
    pub ended: usize,
}

/// Tells a connection that the service ended its session ([`LocalSessions::end`]). One small
/// allocation per connection; a notice given before the connection waits is kept for it.
#[derive(Debug, Clone, Default)]
pub struct EndSignal(Arc<Notify>);

impl EndSignal {
    /// Resolves once the session has been ended.
    pub async fn ended(&self) {
        self.0.notified().await
    }

    fn end(&self) {
        self.0.notify_one();
    }
}

/// One held session.
#[derive(Debug, Clone)]
struct Held {
    user: UserId,
    device: DeviceKind,
    /// When this node registered it (its clock).
    since: Millis,
    /// Its connection's end signal.
    end: EndSignal,
}

/// Where a user with sessions on this node is.
#[derive(Debug, Clone, Default)]
struct Placement {
    sessions: usize,
    zone: Option<ZoneId>,
    org: Option<OrgId>,
}

#[derive(Debug, Default)]
struct Registry {
    sessions: HashMap<SessionId, Held>,
    users: HashMap<UserId, Placement>,
    /// Sessions to end in the store: closes that failed, opens whose answer was lost.
    to_close: HashMap<SessionId, UserId>,
}

/// This node's live sessions.
#[derive(Debug, Default)]
pub struct LocalSessions {
    registry: Mutex<Registry>,
}

impl LocalSessions {
    // std Mutex: short map updates, never held across an await.
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A socket is about to open `open.session` (registered before the store hears of it).
    /// The connection waits on the signal returned: [`LocalSessions::end`] gives it.
    pub fn opening(&self, open: &OpenSession, now: Millis) -> EndSignal {
        let mut r = self.lock();
        let end = EndSignal::default();
        let held = Held {
            user: open.user.clone(),
            device: open.device,
            since: now,
            end: end.clone(),
        };
        r.sessions.insert(open.session.clone(), held);
        r.to_close.remove(&open.session);
        let p = r.users.entry(open.user.clone()).or_default();
        p.sessions += 1;
        if open.zone.is_some() {
            p.zone = open.zone.clone();
        }
        if open.org.is_some() {
            p.org = open.org.clone();
        }
        end
    }

    /// The service ended `session`: if this node holds its socket, the socket is closed with
    /// 4011 (its connection then closes the session in the store as any close does, which
    /// finds it already ended). Returns whether this node holds it. Every path that learns of
    /// an ended session calls this: the `DELETE` route on the node that holds the socket, the
    /// bus message another node's `DELETE` sent, and a reconcile or re-assert the store
    /// refuses (`TransitionError::SessionEnded`).
    pub fn end(&self, user: &UserId, session: &SessionId) -> bool {
        match self.lock().sessions.get(session) {
            Some(held) if held.user == *user => {
                held.end.end();
                true
            }
            _ => false,
        }
    }

    /// The open succeeded and left the user in `zone` and `org`.
    pub fn opened(&self, user: &UserId, zone: Option<ZoneId>, org: Option<OrgId>) {
        self.moved(user, Some(zone), Some(org));
    }

    /// The user moved (over REST or a socket): a re-assert puts them back where they are now.
    pub fn moved(&self, user: &UserId, zone: Option<Option<ZoneId>>, org: Option<Option<OrgId>>) {
        if let Some(p) = self.lock().users.get_mut(user) {
            if let Some(z) = zone {
                p.zone = z;
            }
            if let Some(o) = org {
                p.org = o;
            }
        }
    }

    /// A session's socket ended; the caller closes it in the store next.
    pub fn closed(&self, session: &SessionId) {
        let mut r = self.lock();
        if let Some(Held { user, .. }) = r.sessions.remove(session)
            && let Some(p) = r.users.get_mut(&user)
        {
            p.sessions -= 1;
            if p.sessions == 0 {
                r.users.remove(&user);
            }
        }
    }

    /// The store did not confirm that `session` ended (or that it never began): close it
    /// there once the store answers again.
    pub fn must_close(&self, user: &UserId, session: &SessionId) {
        if self
            .lock()
            .to_close
            .insert(session.clone(), user.clone())
            .is_none()
        {
            metrics::gauge!("presenced_sessions_to_close").increment(1.0);
        }
    }

    /// How many sessions this node holds.
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the node still holds `session`.
    pub fn holds(&self, session: &SessionId) -> bool {
        self.lock().sessions.contains_key(session)
    }

    /// Closes in the store every session waiting for it; those that fail stay for the next
    /// try. Returns how many were closed.
    pub async fn retry_closes(&self, store: &dyn Store) -> Result<usize, StoreError> {
        let waiting: Vec<(SessionId, UserId)> = self
            .lock()
            .to_close
            .iter()
            .map(|(s, u)| (s.clone(), u.clone()))
            .collect();
        let mut closed = 0;
        for (session, user) in waiting {
            match close_if_open(store, &user, &session).await {
                Ok(()) => {}
                // A record the store cannot read: nothing this node can close; logged, and
                // the rest are still tried.
                Err(StoreError::Corrupt(e)) => {
                    tracing::error!(error = %e, "cannot close a session over an undecodable record; dropped")
                }
                Err(e) => return Err(e),
            }
            if self.lock().to_close.remove(&session).is_some() {
                metrics::gauge!("presenced_sessions_to_close").decrement(1.0);
            }
            metrics::counter!("presenced_closes_retried_total").increment(1);
            closed += 1;
        }
        Ok(closed)
    }

    /// The sessions held since `before` or earlier (all with `Millis::MAX`), as opens.
    fn held_opens(&self, before: Millis) -> Vec<OpenSession> {
        let r = self.lock();
        r.sessions
            .iter()
            .filter(|(_, h)| h.since <= before)
            .filter_map(|(session, h)| {
                let p = r.users.get(&h.user)?;
                Some(OpenSession {
                    user: h.user.clone(),
                    session: session.clone(),
                    device: h.device,
                    zone: p.zone.clone(),
                    org: p.org.clone(),
                    leased: false,
                    invisible: false,
                })
            })
            .collect()
    }

    /// Re-opens `opens` a batch per store call. A session the store still has is left as
    /// it is; one whose socket ended meanwhile is closed again; one the service ended has its
    /// socket closed. Returns how many re-opened, and how many sockets were told to close.
    async fn reopen(
        &self,
        store: &dyn Store,
        opens: Vec<OpenSession>,
    ) -> Result<(usize, usize), StoreError> {
        let (mut reopened, mut ended) = (0, 0);
        for batch in opens.chunks(REOPEN_BATCH) {
            let mut batch: Vec<OpenSession> = batch
                .iter()
                .filter(|o| self.holds(&o.session))
                .cloned()
                .collect();
            if batch.is_empty() {
                continue;
            }
            // A user the store still has a record of stays where the record says (another
            // node may have moved them since this one last knew); only a record the store
            // lost is put back where this node last saw the user.
            let users: Vec<UserId> = batch.iter().map(|o| o.user.clone()).collect();
            for (open, view) in batch.iter_mut().zip(store.views(&users).await?) {
                if view.is_some() {
                    open.zone = None;
                    open.org = None;
                }
            }
            let outcomes = match store.reopen_sessions(&batch).await {
                Ok(outcomes) => outcomes,
                // A record the store cannot read fails its batch: logged, and the rest go on
                // (a later reconcile tries those sessions again).
                Err(StoreError::Corrupt(e)) => {
                    tracing::error!(error = %e, sessions = batch.len(), "could not re-open a batch over an undecodable record");
                    continue;
                }
                Err(e) => return Err(e),
            };
            for (open, outcome) in batch.iter().zip(outcomes) {
                match outcome {
                    Ok(_) => reopened += 1,
                    Err(TransitionError::SessionExists(_)) => {}
                    Err(TransitionError::SessionEnded(_)) => {
                        if self.end(&open.user, &open.session) {
                            ended += 1;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not re-open a session"),
                }
                // Its socket ended while the batch was on its way: the socket's own close
                // may have run first, so close it again.
                if !self.holds(&open.session) {
                    self.must_close(&open.user, &open.session);
                }
            }
        }
        Ok((reopened, ended))
    }

    /// Opens again, in the store, every session this node holds (after the store forgot
    /// this node); the sockets of those the service ended meanwhile are closed. Returns how
    /// many were re-opened.
    pub async fn reassert(&self, store: &dyn Store) -> Result<usize, StoreError> {
        let opens = self.held_opens(Millis::MAX);
        Ok(self.reopen(store, opens).await?.0)
    }

    /// Makes the store's sessions of this node agree with the sockets it holds. Unless
    /// `full`, it first compares counts (one O(1) store call) and stops there when they agree,
    /// or when they differ but `may_list` is false (on a busy node opens and closes on their
    /// way make counts differ often; the listing is what costs); otherwise it lists the
    /// node's sessions (O(the node's users)) and mends both ways: a socket whose session the
    /// service ended is closed (4011) rather than re-opened. Sessions registered after
    /// `settled` (still opening) are left alone.
    pub async fn reconcile(
        &self,
        store: &dyn Store,
        settled: Millis,
        full: bool,
        may_list: bool,
    ) -> Result<Reconciled, StoreError> {
        if !full && (store.node_session_count().await? == self.len() as u64 || !may_list) {
            return Ok(Reconciled::default());
        }
        let in_store = store.node_sessions().await?;
        let mut done = Reconciled {
            listed: true,
            ..Reconciled::default()
        };
        let recorded: std::collections::HashSet<&SessionId> =
            in_store.iter().map(|(_, s)| s).collect();
        let missing: Vec<OpenSession> = self
            .held_opens(settled)
            .into_iter()
            .filter(|o| !recorded.contains(&o.session))
            .collect();
        for (user, session) in &in_store {
            if !self.holds(session) {
                match close_if_open(store, user, session).await {
                    Ok(()) => done.closed += 1,
                    Err(StoreError::Corrupt(e)) => {
                        tracing::error!(error = %e, "cannot close a ghost over an undecodable record")
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        (done.reopened, done.ended) = self.reopen(store, missing).await?;
        Ok(done)
    }
}

/// Closes a session in the store; one already gone (or a user already forgotten) is done too.
async fn close_if_open(
    store: &dyn Store,
    user: &UserId,
    session: &SessionId,
) -> Result<(), StoreError> {
    match store.close_session(user, session).await {
        Ok(_) | Err(StoreError::NotFound(_) | StoreError::NoSuchSession(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(user: &str, session: &str, zone: &str) -> OpenSession {
        OpenSession {
            user: UserId::new(user).unwrap(),
            session: SessionId::new(session).unwrap(),
            device: DeviceKind::Web,
            zone: Some(ZoneId::new(zone).unwrap()),
            org: None,
            leased: false,
            invisible: false,
        }
    }

    #[test]
    fn a_user_is_placed_where_they_last_moved_and_forgotten_with_their_last_session() {
        let s = LocalSessions::default();
        s.opening(&open("1", "a", "10"), 0);
        s.opening(&open("1", "b", "10"), 0);
        s.moved(
            &UserId::new("1").unwrap(),
            Some(Some(ZoneId::new("11").unwrap())),
            None,
        );
        assert_eq!(
            s.lock().users[&UserId::new("1").unwrap()]
                .zone
                .as_ref()
                .unwrap()
                .as_str(),
            "11"
        );
        s.closed(&SessionId::new("a").unwrap());
        assert_eq!(s.len(), 1);
        s.closed(&SessionId::new("b").unwrap());
        assert!(
            s.is_empty() && s.lock().users.is_empty(),
            "nothing left behind"
        );
    }
}
