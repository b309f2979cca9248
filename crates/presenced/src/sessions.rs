//! The sessions this node holds, so it can re-assert them when the store forgot them: after
//! Redis restarted without its data, or after another node reaped this one while it could not
//! renew its lease (SPEC §8: "nodes reconnect, re-assert the sessions they hold, and the
//! store converges without clients reconnecting").

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use presence_core::{
    DeviceKind, OpenSession, OrgId, SessionId, Store, StoreError, TransitionError, UserId, ZoneId,
};

/// What re-opening a session needs: who, what device, and where the user last was.
#[derive(Debug, Clone)]
struct Held {
    user: UserId,
    device: DeviceKind,
    zone: Option<ZoneId>,
    org: Option<OrgId>,
}

/// This node's live sessions.
#[derive(Debug, Default)]
pub struct LocalSessions {
    held: Mutex<HashMap<SessionId, Held>>,
}

impl LocalSessions {
    // std Mutex: short map updates, never held across an await.
    fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session opened on this node.
    pub fn opened(&self, open: &OpenSession) {
        let held = Held {
            user: open.user.clone(),
            device: open.device,
            zone: open.zone.clone(),
            org: open.org.clone(),
        };
        self.lock().insert(open.session.clone(), held);
    }

    /// The user of `session` moved (so a re-assert puts them back where they are).
    pub fn moved(
        &self,
        session: &SessionId,
        zone: Option<Option<ZoneId>>,
        org: Option<Option<OrgId>>,
    ) {
        if let Some(h) = self.lock().get_mut(session) {
            if let Some(z) = zone {
                h.zone = z;
            }
            if let Some(o) = org {
                h.org = o;
            }
        }
    }

    /// A session closed.
    pub fn closed(&self, session: &SessionId) {
        self.lock().remove(session);
    }

    /// How many sessions this node holds.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Opens again, in the store, every session this node holds. A session the store still
    /// has is left as it is. Returns how many were re-opened.
    pub async fn reassert(&self, store: &dyn Store) -> Result<usize, StoreError> {
        let held: Vec<(SessionId, Held)> = self
            .lock()
            .iter()
            .map(|(s, h)| (s.clone(), h.clone()))
            .collect();
        let mut reopened = 0;
        for (session, h) in held {
            let open = OpenSession {
                user: h.user,
                session,
                device: h.device,
                zone: h.zone,
                org: h.org,
                leased: false,
            };
            match store.open_session(open).await {
                Ok(_) => reopened += 1,
                Err(StoreError::Refused(TransitionError::SessionExists(_))) => {}
                Err(StoreError::Refused(e)) => {
                    tracing::warn!(error = %e, "could not re-assert a session")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(reopened)
    }
}
