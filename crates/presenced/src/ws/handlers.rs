//! What each client frame does (SPEC §5). Every frame with an `id` gets exactly one reply
//! carrying it: `ack`, `error`, or the frame's own answer (`snapshot`, `pong`).

use presence_core::{Change, ConversationId, FeedId, Scope, TypingOutcome, TypingWrite, UserId};

use super::connection::{Connection, Replay};
use crate::error::ApiError;
use crate::hub::Interest;
use crate::protocol::{ClientFrame, FrameId, ServerFrame, Snapshot, parse_frame};
use crate::snapshot::Start;

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
                counts_only: true,
                ..
            } => self.subscribe_counts(id.clone(), scopes).await,
            ClientFrame::Subscribe {
                scopes,
                users,
                conversations,
                after,
                counts_only: false,
            } => {
                let following = Following {
                    scopes,
                    users,
                    conversations,
                };
                self.subscribe(id.clone(), following, after).await
            }
            ClientFrame::Unsubscribe {
                scopes,
                users,
                conversations,
            } => {
                self.unsubscribe(&scopes, &users, &conversations);
                Ok(ack(id.clone()))
            }
            ClientFrame::Typing {
                conversation,
                typing,
            } => self
                .typing(conversation, typing)
                .await
                .map(|()| ack(id.clone())),
        };
        result.unwrap_or_else(|e| vec![e.frame(id)])
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
        let user = &self.access.principal().user;
        self.state.apply_change(user, change).await?;
        Ok(())
    }

    /// `subscribe`: the snapshot (with `after`: the snapshot, then the replay the
    /// connection streams), then every event for the new scopes and users; for conversations,
    /// right after the snapshot a `typing: true` frame per user typing there now (as this
    /// node has heard), then every change. Refused whole — nothing changes — when the caller
    /// may not follow a scope or the connection would follow more than
    /// `subscriptions_per_connection`; a store failure half-way puts the previous
    /// subscription back.
    async fn subscribe(
        &mut self,
        id: Option<FrameId>,
        following: Following,
        after: Option<FeedId>,
    ) -> Result<Vec<ServerFrame>, ApiError> {
        let scopes = distinct(following.scopes);
        let users = distinct(following.users);
        let conversations = distinct(following.conversations);
        for s in &scopes {
            self.access.scope(s)?;
        }
        // Each scope costs the store a list, each user a lookup: the frame pays for them.
        self.extra_cost = u32::try_from(scopes.len() + users.len())
            .unwrap_or(u32::MAX)
            .saturating_sub(1);
        let more = scopes
            .iter()
            .filter(|s| !self.interest.scopes.contains(*s))
            .count()
            + users
                .iter()
                .filter(|u| !self.interest.users.contains(*u))
                .count()
            + conversations
                .iter()
                .filter(|c| !self.interest.conversations.contains(*c))
                .count();
        self.check_cap(more)?;
        let before = self.interest.clone();
        let mut added = Interest::new(self.access.clone());
        added.scopes.extend(scopes.iter().cloned());
        added.users.extend(users.iter().cloned());
        self.interest.scopes.extend(scopes.iter().cloned());
        self.interest.users.extend(users.iter().cloned());
        self.interest
            .conversations
            .extend(conversations.iter().cloned());
        // Register first, then read the feed position: nothing after it can be missed.
        self.follow();
        match self.read_present(&scopes, &users, after, added).await {
            Ok((feed_id, reset, snapshot)) => {
                let covered_to = self.replay.as_ref().map_or(feed_id, |r| r.upto);
                self.covered = Some((covered_to, before));
                let mut replies = vec![ServerFrame::Snapshot {
                    id,
                    feed_id,
                    reset,
                    snapshot,
                }];
                // Registered before this read: a change after it also comes as a frame, and
                // a repeated `typing: true` is harmless.
                replies.extend(self.state.hub.typing_now(&conversations, &self.access));
                Ok(replies)
            }
            Err(e) => {
                self.interest = before;
                self.follow();
                self.replay = None;
                Err(e)
            }
        }
    }

    /// Tells the hub what the connection follows now (subscribing it the first time).
    fn follow(&mut self) {
        match &self.sub {
            Some(s) => s.set_interest(self.interest.clone()),
            None => {
                self.sub = Some(self.state.hub.subscribe(
                    self.interest.clone(),
                    self.state.config.limits.outbound_queue,
                ))
            }
        }
    }

    /// Refuses a subscribe that would make the connection follow more than
    /// `subscriptions_per_connection` distinct scopes, users, conversations and counted
    /// scopes.
    fn check_cap(&self, more: usize) -> Result<(), ApiError> {
        let i = &self.interest;
        let following =
            i.scopes.len() + i.users.len() + i.conversations.len() + i.counts.len() + more;
        let cap = self.state.config.limits.subscriptions_per_connection;
        if following > cap {
            metrics::counter!("presenced_refusals_total", "reason" => "subscriptions").increment(1);
            return Err(ApiError::invalid_argument(format!(
                "a connection follows at most {cap} scopes, users and conversations; this would make {following}"
            )));
        }
        Ok(())
    }

    /// `subscribe` with `counts_only`: a snapshot of the scopes' counts (one store call), then
    /// a `count` frame whenever one changes, at most once a second.
    async fn subscribe_counts(
        &mut self,
        id: Option<FrameId>,
        scopes: Vec<Scope>,
    ) -> Result<Vec<ServerFrame>, ApiError> {
        let scopes = distinct(scopes);
        if scopes.is_empty() {
            return Err(ApiError::invalid_argument("counts_only needs scopes"));
        }
        let read: Vec<Scope> = scopes
            .iter()
            .map(|s| self.access.scope(s))
            .collect::<Result<_, _>>()?;
        let more = read
            .iter()
            .filter(|s| !self.interest.counts.contains_key(*s))
            .count();
        self.check_cap(more)?;
        let store = self.state.store.clone();
        let feed_id = store.feed_head().await?;
        let counts = store.counts(&read).await?;
        let mut snapshot = Snapshot::default();
        for ((asked, scope), count) in scopes.iter().zip(read).zip(counts) {
            snapshot.scopes.insert(
                asked.to_string(),
                crate::protocol::ScopeSnapshot {
                    count: count.total,
                    users: Vec::new(),
                    next_cursor: None,
                },
            );
            self.interest
                .counts
                .insert(scope, (asked.to_string(), count.total));
        }
        self.follow();
        Ok(vec![ServerFrame::Snapshot {
            id,
            feed_id,
            reset: false,
            snapshot,
        }])
    }

    /// The snapshot's feed id, whether it is a reset, and the snapshot itself; with `after`,
    /// the replay to stream is left in `self.replay`.
    async fn read_present(
        &mut self,
        scopes: &[Scope],
        users: &[UserId],
        after: Option<FeedId>,
        added: Interest,
    ) -> Result<(FeedId, bool, Snapshot), ApiError> {
        let store = self.state.store.clone();
        let cap = self.state.config.limits.replay_events;
        let (feed_id, reset) = match crate::snapshot::start(store.as_ref(), after, cap).await? {
            Start::Head(head) => (head, false),
            Start::Replay { after, upto } => {
                self.replay = Some(Replay {
                    after,
                    upto,
                    interest: added,
                });
                (after, false)
            }
            Start::Reset { head } => (head, true),
        };
        let snapshot =
            crate::snapshot::current(store.as_ref(), &self.access, scopes, users).await?;
        Ok((feed_id, reset, snapshot))
    }

    /// `unsubscribe`: stop following those scopes (their events or their counts), users and
    /// conversations.
    fn unsubscribe(
        &mut self,
        scopes: &[Scope],
        users: &[UserId],
        conversations: &[ConversationId],
    ) {
        for s in scopes {
            self.interest.scopes.remove(s);
            let label = s.to_string();
            self.interest.counts.retain(|_, (asked, _)| *asked != label);
        }
        for u in users {
            self.interest.users.remove(u);
        }
        for c in conversations {
            self.interest.conversations.remove(c);
        }
        if self.sub.is_some() {
            self.follow();
        }
    }

    /// `typing.start` / `typing.stop` for the connection's own user (see `crate::typing`): a
    /// start is one store call (write and publish) unless the last one written for that
    /// conversation is less than a second old; a stop is one store call if the connection
    /// was typing there.
    async fn typing(&mut self, conversation: ConversationId, typing: bool) -> Result<(), ApiError> {
        let state = self.state.clone();
        let now = state.now();
        let limits = &state.config.limits;
        let mut write = TypingWrite {
            conversation,
            user: self.access.principal().user.clone(),
            until: None,
            max_typers: limits.typers_per_conversation,
        };
        if typing {
            let ttl = state.config.presence.typing_ttl;
            let Some(until) =
                self.typing
                    .start(&write.conversation, now, ttl, limits.typing_per_connection)?
            else {
                metrics::counter!("presenced_typing_starts_total", "written" => "no").increment(1);
                return Ok(());
            };
            write.until = Some(until);
            match state.store.typing(&write).await? {
                TypingOutcome::Written => {
                    metrics::counter!("presenced_typing_starts_total", "written" => "yes")
                        .increment(1);
                    self.typing.written(write.conversation, now, until);
                }
                TypingOutcome::Full { limit } => {
                    metrics::counter!("presenced_refusals_total", "reason" => "typers")
                        .increment(1);
                    return Err(ApiError::invalid_argument(format!(
                        "{limit} users are typing in conversation {} already (limits.typers_per_conversation)",
                        write.conversation
                    )));
                }
            }
        } else if self.typing.stop(&write.conversation, now) {
            state.store.typing(&write).await?;
        }
        Ok(())
    }

    /// The connection ends: every conversation it still types in is stopped at once. A stop
    /// that fails (the store is away) ends the attempt: every indicator expires by itself on
    /// every node within `typing_ttl`, and the session's close should not wait on more.
    pub(super) async fn stop_typing(&mut self) {
        let now = self.state.now();
        for conversation in self.typing.take_live(now) {
            let write = TypingWrite {
                conversation,
                user: self.access.principal().user.clone(),
                until: None,
                max_typers: self.state.config.limits.typers_per_conversation,
            };
            if let Err(e) = self.state.store.typing(&write).await {
                // The store is away: the rest would wait as long each, and every indicator
                // expires by itself within typing_ttl. The session's close comes first.
                tracing::warn!(error = %e, "could not stop typing at close; it expires by itself");
                break;
            }
        }
    }
}

/// What a `subscribe` asks to follow.
pub(super) struct Following {
    scopes: Vec<Scope>,
    users: Vec<UserId>,
    conversations: Vec<ConversationId>,
}

/// The items in their first order, each once.
fn distinct<T: Clone + Eq + std::hash::Hash>(items: Vec<T>) -> Vec<T> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|i| seen.insert(i.clone()))
        .collect()
}
