//! What each client frame does (SPEC §5). Every frame with an `id` gets exactly one reply
//! carrying it: `ack`, `error`, or the frame's own answer (`snapshot`, `pong`).

use presence_core::{Change, FeedId, Scope, UserId};

use super::connection::Connection;
use crate::error::ApiError;
use crate::hub::Interest;
use crate::protocol::{ClientFrame, FrameId, ServerFrame, parse_frame};

impl Connection {
    /// Handles one client frame; returns the frames to send back, in order.
    pub(super) async fn handle(&mut self, raw: &str) -> Vec<ServerFrame> {
        let (id, frame) = match parse_frame(raw) {
            Ok(f) => f,
            Err((id, message)) => return vec![ServerFrame::invalid_frame(id, message)],
        };
        let ack = |id: Option<FrameId>| id.map(|id| ServerFrame::Ack { id }).into_iter().collect();
        let result = match frame {
            ClientFrame::Ping => Ok(vec![ServerFrame::Pong { id: id.clone() }]),
            ClientFrame::Activity => {
                self.state.record_activity(&self.access.principal().user);
                Ok(ack(id.clone()))
            }
            ClientFrame::Change(change) => self.change(change).await.map(|()| ack(id.clone())),
            ClientFrame::Subscribe {
                scopes,
                users,
                after,
            } => self.subscribe(id.clone(), scopes, users, after).await,
            ClientFrame::Unsubscribe { scopes, users } => {
                self.unsubscribe(&scopes, &users);
                Ok(ack(id.clone()))
            }
        };
        result.unwrap_or_else(|e| vec![ServerFrame::error(id, &e)])
    }

    /// `status.set`, `zone.set`, `org.set`, `metadata.set`.
    async fn change(&self, change: Change) -> Result<(), ApiError> {
        if let Change::SetMetadata(Some(m)) = &change {
            let size = serde_json::Value::Object(m.clone()).to_string().len();
            let max = self.state.config.limits.metadata_bytes;
            if size > max {
                return Err(ApiError::payload_too_large(format!(
                    "metadata is {size} bytes; at most {max}"
                )));
            }
        }
        if let Change::SetOrg(org) = &change {
            self.access.place_in_org(org.as_ref())?;
        }
        let (zone, org) = match &change {
            Change::SetZone(z) => (Some(z.clone()), None),
            Change::SetOrg(o) => (None, Some(o.clone())),
            _ => (None, None),
        };
        let user = &self.access.principal().user;
        self.state.store.apply(user, change).await?;
        if zone.is_some() || org.is_some() {
            self.state.sessions.moved(&self.session, zone, org);
        }
        Ok(())
    }

    /// `subscribe`: the snapshot (or, with `after`, the snapshot and the replay), then every
    /// event for the new scopes and users.
    async fn subscribe(
        &mut self,
        id: Option<FrameId>,
        scopes: Vec<Scope>,
        users: Vec<UserId>,
        after: Option<FeedId>,
    ) -> Result<Vec<ServerFrame>, ApiError> {
        // Refuse what the caller may not follow before anything changes.
        for s in &scopes {
            self.access.scope(s)?;
        }
        let store = self.state.store.clone();
        let before = self.interest.clone();
        let mut added = Interest::new(self.access.clone());
        added.scopes.extend(scopes.iter().cloned());
        added.users.extend(users.iter().cloned());
        self.interest.scopes.extend(scopes.iter().cloned());
        self.interest.users.extend(users.iter().cloned());
        // Register first, then read the feed position: nothing after it can be missed.
        match &self.sub {
            Some(s) => s.set_interest(self.interest.clone()),
            None => {
                self.sub = Some(self.state.hub.subscribe(
                    self.interest.clone(),
                    self.state.config.limits.outbound_queue,
                ))
            }
        }
        let mut replayed = Vec::new();
        let (feed_id, reset, covered_to) = match after {
            None => {
                let head = store.feed_head().await?;
                (head, false, head)
            }
            Some(after) => match crate::snapshot::replay(store.as_ref(), after, &added).await? {
                Some((events, pos)) => {
                    replayed.extend(events.into_iter().map(ServerFrame::Presence));
                    (after, false, pos)
                }
                None => {
                    let head = store.feed_head().await?;
                    (head, true, head)
                }
            },
        };
        self.covered = Some((covered_to, before));
        let snapshot =
            crate::snapshot::current(store.as_ref(), &self.access, &scopes, &users).await?;
        let mut frames = vec![ServerFrame::Snapshot {
            id,
            feed_id,
            reset,
            snapshot,
        }];
        frames.extend(replayed);
        Ok(frames)
    }

    /// `unsubscribe`: stop following those scopes and users.
    fn unsubscribe(&mut self, scopes: &[Scope], users: &[UserId]) {
        for s in scopes {
            self.interest.scopes.remove(s);
        }
        for u in users {
            self.interest.users.remove(u);
        }
        if let Some(sub) = &self.sub {
            sub.set_interest(self.interest.clone());
        }
    }
}
