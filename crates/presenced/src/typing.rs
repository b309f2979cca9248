//! Typing indicators on a node (SPEC §5, §6). Typing is ephemeral: it never touches a presence
//! record, a version or the feed. Its path:
//!
//! 1. A connection's [`SessionTyping`] decides what a `typing.start` / `typing.stop` costs: a
//!    start within [`WRITE_INTERVAL_MS`] of the last one it wrote for that conversation costs
//!    nothing (the frame is acked, the entry keeps the `until` of that write); any other start
//!    or renewal is one store call ([`presence_core::Store::typing`]), which writes the entry
//!    (for `GET /messenger/presence/typing/{id}`) and publishes it on the bus in the same step.
//!    A connection types in at most `limits.typing_per_connection` conversations at once; when
//!    it ends, however it ends, it stops what it was typing at once.
//! 2. Every node's bus loop (`loops::follow_bus`) hands each message to its hub, whose
//!    [`TypingBoard`] holds what the node has relayed. Only changes go out as `typing` frames
//!    — a new typer (`true`), a stop (`false`), an entry past its `until` (`false`) — so a
//!    client's renewals every few seconds cost its subscribers nothing. Each node ends what it
//!    relayed by itself at `until` (by its clock): a typer's node that crashed mid-sentence
//!    leaves no indicator on for good.
//!
//! An indicator lives `presence.typing_ttl` after the last start that was written, i.e. at
//! most a second less than after the very last start a client sent.

use std::collections::HashMap;
use std::time::Duration;

use presence_core::{ConversationId, Millis, OrgId, Typer, TypingSignal, TypingTable, UserId};

use crate::error::ApiError;

/// A start within this many milliseconds of the last written one for the same conversation
/// costs no store write.
pub const WRITE_INTERVAL_MS: Millis = 1000;

/// How often each node ends the indicators whose `until` has passed.
pub const EXPIRY_TICK: Duration = Duration::from_millis(250);

/// One conversation a connection is typing in.
#[derive(Debug, Clone, Copy)]
struct Typed {
    /// When its entry was last written.
    written_at: Millis,
    /// Until when that write keeps it.
    until: Millis,
}

/// What one connection is typing (the sending side). Lives in the connection: no lock.
#[derive(Debug, Default)]
pub struct SessionTyping {
    typing: HashMap<ConversationId, Typed>,
}

impl SessionTyping {
    /// A `typing.start` at `now`: `Ok(Some(until))` when it must be written with that
    /// `until`, `Ok(None)` when the last write is recent enough to stand for it, and
    /// `invalid_argument` when the connection already types in `limit` other conversations.
    pub fn start(
        &mut self,
        conversation: &ConversationId,
        now: Millis,
        ttl: Duration,
        limit: usize,
    ) -> Result<Option<Millis>, ApiError> {
        self.typing.retain(|_, t| t.until > now);
        match self.typing.get(conversation) {
            Some(t) if now - t.written_at < WRITE_INTERVAL_MS => Ok(None),
            Some(_) => Ok(Some(now + presence_core::settings::ms(ttl))),
            None if self.typing.len() >= limit => Err(ApiError::invalid_argument(format!(
                "a connection types in at most {limit} conversations at once (limits.typing_per_connection); stop one first"
            ))),
            None => Ok(Some(now + presence_core::settings::ms(ttl))),
        }
    }

    /// The start was written at `now` with `until`.
    pub fn written(&mut self, conversation: ConversationId, now: Millis, until: Millis) {
        self.typing.insert(
            conversation,
            Typed {
                written_at: now,
                until,
            },
        );
    }

    /// A `typing.stop`: whether the connection was typing there (so the stop must be written
    /// and published). An entry already past its `until` needs no stop: every node ended it.
    pub fn stop(&mut self, conversation: &ConversationId, now: Millis) -> bool {
        self.typing
            .remove(conversation)
            .is_some_and(|t| t.until > now)
    }

    /// The connection ends: every conversation it is still typing in, to stop.
    pub fn take_live(&mut self, now: Millis) -> Vec<ConversationId> {
        self.typing
            .drain()
            .filter(|(_, t)| t.until > now)
            .map(|(c, _)| c)
            .collect()
    }
}

/// A change subscribers of a conversation are told about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// The conversation.
    pub conversation: ConversationId,
    /// Who.
    pub user: UserId,
    /// Their org (what tenant isolation decides on).
    pub org: Option<OrgId>,
    /// Started (`true`) or ended (`false`).
    pub typing: bool,
}

/// What a node has relayed: who is typing where, as far as this node has heard (the
/// receiving side). Every message on the bus reaches every node, so this holds the
/// deployment's current typers, each for at most `typing_ttl` unless renewed.
#[derive(Debug, Default)]
pub struct TypingBoard {
    entries: TypingTable,
}

impl TypingBoard {
    /// A message from the bus, at `now`: the changes it makes visible.
    pub fn relay(&mut self, s: TypingSignal, now: Millis) -> Vec<Shown> {
        let key = (s.conversation_id, s.user_id);
        let mut shown = Vec::new();
        let old = self.entries.remove(&key.0, &key.1);
        match (old, s.until.filter(|u| *u > now)) {
            (None, None) => {}
            (Some(old), None) => shown.push(ended(&key, old.org)),
            (old, Some(until)) => {
                let org = s.org_id;
                match old {
                    // A renewal: nothing new to show.
                    Some(old) if old.org == org => {}
                    // The typer changed orgs: those who saw them may no longer, and others may.
                    Some(old) => {
                        shown.push(ended(&key, old.org));
                        shown.push(started(&key, org.clone()));
                    }
                    None => shown.push(started(&key, org.clone())),
                }
                let typer = Typer {
                    user: key.1,
                    org,
                    until,
                };
                self.entries.insert(key.0, typer);
            }
        }
        shown
    }

    /// Ends every entry whose `until` is not after `now`.
    pub fn expire(&mut self, now: Millis) -> Vec<Shown> {
        self.entries
            .expire(now)
            .into_iter()
            .map(|(conversation, typer)| ended(&(conversation, typer.user), typer.org))
            .collect()
    }

    /// Who is typing in `conversation` (with their orgs), ordered by user id.
    pub fn typers(&self, conversation: &ConversationId) -> Vec<(UserId, Option<OrgId>)> {
        self.entries
            .typers(conversation)
            .into_iter()
            .map(|t| (t.user, t.org))
            .collect()
    }

    /// Whether nothing is relayed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn started(key: &(ConversationId, UserId), org: Option<OrgId>) -> Shown {
    Shown {
        conversation: key.0.clone(),
        user: key.1.clone(),
        org,
        typing: true,
    }
}

fn ended(key: &(ConversationId, UserId), org: Option<OrgId>) -> Shown {
    Shown {
        typing: false,
        ..started(key, org)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(c: &str) -> ConversationId {
        ConversationId::new(c).unwrap()
    }

    fn signal(c: &str, u: &str, until: Option<Millis>) -> TypingSignal {
        TypingSignal {
            conversation_id: conv(c),
            user_id: UserId::new(u).unwrap(),
            org_id: None,
            until,
        }
    }

    const TTL: Duration = Duration::from_secs(6);

    #[test]
    fn a_start_within_a_second_of_the_last_write_is_not_written() {
        let mut t = SessionTyping::default();
        assert_eq!(t.start(&conv("c"), 0, TTL, 5).unwrap(), Some(6000));
        t.written(conv("c"), 0, 6000);
        assert_eq!(t.start(&conv("c"), 999, TTL, 5).unwrap(), None);
        assert_eq!(t.start(&conv("c"), 1000, TTL, 5).unwrap(), Some(7000));
        t.written(conv("c"), 1000, 7000);
        // Expired: a start is a new one, written.
        assert_eq!(t.start(&conv("c"), 7000, TTL, 5).unwrap(), Some(13_000));
    }

    #[test]
    fn the_limit_counts_live_conversations_only_and_stops_end_them() {
        let mut t = SessionTyping::default();
        for (i, c) in ["a", "b"].iter().enumerate() {
            assert!(t.start(&conv(c), i as Millis, TTL, 2).unwrap().is_some());
            t.written(conv(c), i as Millis, 6000 + i as Millis);
        }
        let refused = t.start(&conv("c"), 10, TTL, 2).unwrap_err();
        assert_eq!(refused.code, "invalid_argument");
        assert!(t.stop(&conv("a"), 20), "it was typing there");
        assert!(!t.stop(&conv("a"), 20), "a second stop is nothing");
        assert!(t.start(&conv("c"), 30, TTL, 2).unwrap().is_some());
        t.written(conv("c"), 30, 6030);
        // At 6001 "b" has expired: only "c" is live at the end.
        assert_eq!(t.take_live(6001), vec![conv("c")]);
        assert_eq!(t.take_live(6001), vec![]);
    }

    #[test]
    fn the_board_shows_changes_only_and_ends_what_expires() {
        let mut b = TypingBoard::default();
        let shown = b.relay(signal("c", "1", Some(6000)), 0);
        assert_eq!(shown.len(), 1);
        assert!(shown[0].typing);
        assert!(
            b.relay(signal("c", "1", Some(7000)), 1000).is_empty(),
            "renewal"
        );
        assert!(b.expire(6999).is_empty(), "renewed to 7000");
        let ended = b.expire(7000);
        assert_eq!(ended.len(), 1);
        assert!(!ended[0].typing);
        assert!(b.is_empty());
        // A stop for something never relayed (or already ended) shows nothing.
        assert!(b.relay(signal("c", "1", None), 7001).is_empty());
        // A start already past its until shows nothing.
        assert!(b.relay(signal("c", "2", Some(5)), 7001).is_empty());
        b.relay(signal("c", "2", Some(9000)), 7001);
        b.relay(signal("d", "3", Some(9000)), 7001);
        assert_eq!(b.typers(&conv("c")).len(), 1);
        let stopped = b.relay(signal("c", "2", None), 7002);
        assert_eq!(stopped.len(), 1);
        assert!(!stopped[0].typing);
        assert!(b.expire(9000).len() == 1, "only d:3 was left");
    }
}
