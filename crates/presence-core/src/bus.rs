//! The bus: small, ephemeral messages from one node to every node on the same store, itself
//! included. Unlike the feed (SPEC §4) it keeps nothing: a message reaches the nodes listening
//! when it is published, at most once, and a node that was not listening (restarting, or
//! reconnecting to Redis) never sees it. So only what stops mattering within seconds goes on
//! it — a typing indicator is renewed every few seconds by its client and expires on every
//! node by itself — never a presence change.
//!
//! Messages are [`BusMessage`]s, JSON with a `kind` tag, at most [`MAX_BUS_MESSAGE_BYTES`]. A
//! node that receives something it cannot decode (a newer kind during a rolling upgrade, a
//! foreign publisher on the channel) logs it and drops it.
//!
//! Typing (SPEC §5, §6) is here too: the write a node asks of the store ([`TypingWrite`]), who
//! is typing now ([`Typer`]), and the message every node receives ([`TypingSignal`]).

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ids::{ConversationId, OrgId, SessionId, UserId};
use crate::time::Millis;

/// The largest bus message, in bytes of JSON. A typing message is about 200 bytes (its ids
/// are at most 64 bytes each); the bound keeps a malformed or hostile publisher from making
/// every node hold or parse large payloads.
pub const MAX_BUS_MESSAGE_BYTES: usize = 1024;

/// One message from a node to every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BusMessage {
    /// A user started, renewed or stopped typing in a conversation.
    Typing(TypingSignal),
    /// The service ended a session (`DELETE /messenger/presence/sessions/...`): the node
    /// holding its socket closes it at once. The store has ended it already and marked it
    /// so that it cannot be re-opened; a node that misses this message closes the socket
    /// when its reconcile finds the session ended.
    SessionEnded(EndedSession),
}

/// A session the service ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedSession {
    /// Whose session.
    pub user_id: UserId,
    /// Which.
    pub session_id: SessionId,
}

/// A user's typing in one conversation, as every node hears of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingSignal {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Who types.
    pub user_id: UserId,
    /// The typer's org as their record had it when the store wrote the entry: what tenant
    /// isolation decides on (a confined viewer sees typers of its own org only).
    #[serde(default)]
    pub org_id: Option<OrgId>,
    /// A start (or renewal): until when (ms, by the typer's node's clock) the indicator lives
    /// unless renewed; every node ends it then by itself. `None`: a stop.
    #[serde(default)]
    pub until: Option<Millis>,
}

/// Why bytes from the bus are not a message (or a message cannot go on it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// Over [`MAX_BUS_MESSAGE_BYTES`].
    #[error("a bus message is at most {MAX_BUS_MESSAGE_BYTES} bytes; this one has {0}")]
    TooLarge(usize),
    /// Not JSON, an unknown `kind`, or a missing or bad field.
    #[error("not a bus message: {0}")]
    Malformed(String),
}

impl BusMessage {
    /// The message as JSON text, refused when it would be over the size bound.
    pub fn encode(&self) -> Result<String, BusError> {
        // Plain fields and validated ids: serializing cannot fail.
        let text = serde_json::to_string(self).expect("bus messages serialize");
        if text.len() > MAX_BUS_MESSAGE_BYTES {
            return Err(BusError::TooLarge(text.len()));
        }
        Ok(text)
    }

    /// A message from the bus's bytes; the size is checked before anything is parsed.
    pub fn decode(bytes: &[u8]) -> Result<Self, BusError> {
        if bytes.len() > MAX_BUS_MESSAGE_BYTES {
            return Err(BusError::TooLarge(bytes.len()));
        }
        serde_json::from_slice(bytes).map_err(|e| BusError::Malformed(e.to_string()))
    }
}

/// A node's end of the bus: every message published after it was made, by any node.
#[async_trait]
pub trait BusReceiver: Send + std::fmt::Debug {
    /// The next message, waiting for one. `None` only when the bus itself is gone (the store
    /// was dropped). A receiver that fell too far behind skips what it missed (logged).
    async fn recv(&mut self) -> Option<BusMessage>;
}

/// What a node asks of the store for one `typing.start` or `typing.stop` (see
/// [`crate::Store::typing`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypingWrite {
    /// The conversation.
    pub conversation: ConversationId,
    /// Who types.
    pub user: UserId,
    /// A start: until when the entry lives (ms, the node's clock). `None`: a stop.
    pub until: Option<Millis>,
    /// At most this many users typing at once in one conversation; a start for one more is
    /// refused.
    pub max_typers: usize,
}

/// How a typing write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypingOutcome {
    /// Written, and published on the bus.
    Written,
    /// A start refused: `limit` other users are typing in the conversation already. Nothing
    /// was written or published.
    Full {
        /// The bound that was reached.
        limit: usize,
    },
}

/// One user typing in a conversation now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Typer {
    /// Who.
    pub user: UserId,
    /// Their org when the entry was written (for tenant isolation).
    pub org: Option<OrgId>,
    /// Until when the entry lives unless renewed (ms).
    pub until: Millis,
}

/// Who types where, until when: entries by conversation and user, with an index by `until`
/// so that expiry costs O(what expires). The memory store keeps its typing entries in one,
/// and every node the indicators it relayed from the bus.
#[derive(Debug, Default)]
pub struct TypingTable {
    entries: HashMap<ConversationId, HashMap<UserId, Typer>>,
    by_until: BTreeSet<(Millis, ConversationId, UserId)>,
}

impl TypingTable {
    /// Sets `typer`'s entry in `conversation`; the one it replaces, if any.
    pub fn insert(&mut self, conversation: ConversationId, typer: Typer) -> Option<Typer> {
        let old = self.remove(&conversation, &typer.user);
        self.by_until
            .insert((typer.until, conversation.clone(), typer.user.clone()));
        self.entries
            .entry(conversation)
            .or_default()
            .insert(typer.user.clone(), typer);
        old
    }

    /// Removes `user`'s entry in `conversation`, if any.
    pub fn remove(&mut self, conversation: &ConversationId, user: &UserId) -> Option<Typer> {
        let typers = self.entries.get_mut(conversation)?;
        let old = typers.remove(user)?;
        if typers.is_empty() {
            self.entries.remove(conversation);
        }
        self.by_until
            .remove(&(old.until, conversation.clone(), user.clone()));
        Some(old)
    }

    /// Removes and returns every entry whose `until` is not after `now`, earliest first.
    pub fn expire(&mut self, now: Millis) -> Vec<(ConversationId, Typer)> {
        let mut expired = Vec::new();
        while let Some((until, conversation, user)) = self.by_until.first().cloned() {
            if until > now {
                break;
            }
            self.by_until.pop_first();
            if let Some(typer) = self.remove(&conversation, &user) {
                expired.push((conversation, typer));
            }
        }
        expired
    }

    /// `user`'s entry in `conversation`.
    pub fn get(&self, conversation: &ConversationId, user: &UserId) -> Option<&Typer> {
        self.entries.get(conversation)?.get(user)
    }

    /// How many users have an entry in `conversation`.
    pub fn count(&self, conversation: &ConversationId) -> usize {
        self.entries.get(conversation).map_or(0, HashMap::len)
    }

    /// The entries of `conversation`, ordered by user id.
    pub fn typers(&self, conversation: &ConversationId) -> Vec<Typer> {
        let mut typers: Vec<Typer> = self
            .entries
            .get(conversation)
            .into_iter()
            .flatten()
            .map(|(_, t)| t.clone())
            .collect();
        typers.sort_by(|a, b| a.user.cmp(&b.user));
        typers
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typing(until: Option<Millis>) -> BusMessage {
        BusMessage::Typing(TypingSignal {
            conversation_id: ConversationId::new("c1").unwrap(),
            user_id: UserId::new("42").unwrap(),
            org_id: Some(OrgId::new("100").unwrap()),
            until,
        })
    }

    #[test]
    fn messages_round_trip_with_a_kind_tag() {
        for m in [typing(Some(1_732_616_706_000)), typing(None)] {
            let text = m.encode().unwrap();
            assert!(text.contains(r#""kind":"typing""#), "{text}");
            assert_eq!(BusMessage::decode(text.as_bytes()).unwrap(), m);
        }
        // The Redis script writes the same message with fields in any order and a null org.
        let from_lua = br#"{"until":1732616706000,"org_id":null,"user_id":"42","kind":"typing","conversation_id":"c1"}"#;
        let BusMessage::Typing(t) = BusMessage::decode(from_lua).unwrap() else {
            panic!("a typing message")
        };
        assert_eq!((t.org_id, t.until), (None, Some(1_732_616_706_000)));
    }

    #[test]
    fn a_typing_table_replaces_removes_and_expires_in_until_order() {
        let c = ConversationId::new("c1").unwrap();
        let typer = |u: &str, until| Typer {
            user: UserId::new(u).unwrap(),
            org: None,
            until,
        };
        let mut t = TypingTable::default();
        assert_eq!(t.insert(c.clone(), typer("2", 30)), None);
        assert_eq!(t.insert(c.clone(), typer("1", 10)), None);
        assert_eq!(
            t.insert(c.clone(), typer("1", 20)),
            Some(typer("1", 10)),
            "a renewal replaces"
        );
        assert_eq!(t.count(&c), 2);
        assert_eq!(t.typers(&c), [typer("1", 20), typer("2", 30)]);
        assert!(
            t.expire(19).is_empty(),
            "the replaced until is gone from the index"
        );
        assert_eq!(t.expire(20), [(c.clone(), typer("1", 20))]);
        assert_eq!(
            t.remove(&c, &UserId::new("2").unwrap()),
            Some(typer("2", 30))
        );
        assert!(t.is_empty() && t.expire(1000).is_empty());
    }

    #[test]
    fn an_ended_session_round_trips() {
        let m = BusMessage::SessionEnded(EndedSession {
            user_id: UserId::new("42").unwrap(),
            session_id: SessionId::new("fQ1oTckh").unwrap(),
        });
        let text = m.encode().unwrap();
        assert!(text.contains(r#""kind":"session_ended""#), "{text}");
        assert_eq!(BusMessage::decode(text.as_bytes()).unwrap(), m);
    }

    #[test]
    fn malformed_and_oversized_bytes_are_errors_never_panics() {
        for bad in [
            &b"not json"[..],
            br#"{"kind":"nope"}"#,
            br#"{"kind":"typing","user_id":"1"}"#,
            br#"{"kind":"typing","conversation_id":"a b","user_id":"1"}"#,
            br#"[1,2]"#,
            b"",
        ] {
            assert!(
                matches!(BusMessage::decode(bad), Err(BusError::Malformed(_))),
                "{bad:?}"
            );
        }
        let huge = vec![b' '; MAX_BUS_MESSAGE_BYTES + 1];
        assert_eq!(
            BusMessage::decode(&huge),
            Err(BusError::TooLarge(MAX_BUS_MESSAGE_BYTES + 1))
        );
    }
}
