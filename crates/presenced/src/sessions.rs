//! The sessions this node holds, so the store's view of this node converges to its live
//! sockets whatever failed on the way (SPEC §8, §10 "No ghost sessions"):
//!
//! - a close that failed (the store was down) is kept and retried until it succeeds;
//! - an open whose answer was lost (a timeout after the script ran) is closed the same way;
//! - after the store forgot the node (restarted without its data, or reaped the node during a
//!   pause), every session still held is re-asserted, and a session that ended while the
//!   re-assert ran is closed again.
//!
//! Where each user is (zone, org) is kept per user, as the store keeps it: the newest
//! session's values, and every move, REST or WebSocket.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use presence_core::{
    DeviceKind, OpenSession, OrgId, SessionId, Store, StoreError, TransitionError, UserId, ZoneId,
};

/// Where a user with sessions on this node is.
#[derive(Debug, Clone, Default)]
struct Placement {
    sessions: usize,
    zone: Option<ZoneId>,
    org: Option<OrgId>,
}

#[derive(Debug, Default)]
struct Registry {
    sessions: HashMap<SessionId, (UserId, DeviceKind)>,
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

    /// A session opened on this node; `zone` and `org` are the user's after the open.
    pub fn opened(&self, open: &OpenSession) {
        let mut r = self.lock();
        r.sessions
            .insert(open.session.clone(), (open.user.clone(), open.device));
        r.to_close.remove(&open.session);
        let p = r.users.entry(open.user.clone()).or_default();
        p.sessions += 1;
        p.zone = open.zone.clone();
        p.org = open.org.clone();
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
        if let Some((user, _)) = r.sessions.remove(session)
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
            match store.close_session(&user, &session).await {
                Ok(_) | Err(StoreError::NotFound(_) | StoreError::NoSuchSession(_)) => {}
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

    /// Opens again, in the store, every session this node holds. A session the store still
    /// has is left as it is; one whose socket ended while this ran is closed again. Returns
    /// how many were re-opened.
    pub async fn reassert(&self, store: &dyn Store) -> Result<usize, StoreError> {
        let held: Vec<OpenSession> = {
            let r = self.lock();
            r.sessions
                .iter()
                .filter_map(|(session, (user, device))| {
                    let p = r.users.get(user)?;
                    Some(OpenSession {
                        user: user.clone(),
                        session: session.clone(),
                        device: *device,
                        zone: p.zone.clone(),
                        org: p.org.clone(),
                        leased: false,
                    })
                })
                .collect()
        };
        let mut reopened = 0;
        for open in held {
            if !self.holds(&open.session) {
                continue;
            }
            let (user, session) = (open.user.clone(), open.session.clone());
            match store.open_session(open).await {
                Ok(_) => reopened += 1,
                Err(StoreError::Refused(TransitionError::SessionExists(_))) => {}
                Err(StoreError::Refused(e)) => {
                    tracing::warn!(error = %e, "could not re-assert a session")
                }
                Err(e) => return Err(e),
            }
            // Its socket ended while the open was on its way: the socket's own close may
            // have run first, so close it again.
            if !self.holds(&session) {
                self.must_close(&user, &session);
            }
        }
        Ok(reopened)
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
        }
    }

    #[test]
    fn a_user_is_placed_where_they_last_moved_and_forgotten_with_their_last_session() {
        let s = LocalSessions::default();
        s.opened(&open("1", "a", "10"));
        s.opened(&open("1", "b", "10"));
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
