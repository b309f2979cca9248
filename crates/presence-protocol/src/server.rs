//! Server → client frames (SPEC §5), serialized in one place: [`ServerFrame::encode`].

use std::borrow::Cow;
use std::collections::BTreeMap;

use presence_core::{
    ConversationId, FeedId, NodeId, PresenceEvent, PresenceView, SessionId, UserId,
};
use serde::{Deserialize, Serialize};

/// A frame's `id` as the client sent it (a string or a number), echoed in its reply.
pub type FrameId = serde_json::Value;

/// Per scope: its count, the first page of its users and the cursor to the next page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScopeSnapshot {
    /// Users online or away in the scope, as the caller may count them.
    pub count: u64,
    /// The first page, most recent activity first.
    pub users: Vec<PresenceView>,
    /// Where the next page starts (`GET /messenger/presence/online?cursor=`).
    pub next_cursor: Option<String>,
}

/// What a subscriber is shown of the present: by scope (keyed as the client wrote the scope)
/// and by user (`null` for a user without presence or hidden from the caller).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Scope → its snapshot.
    pub scopes: BTreeMap<String, ScopeSnapshot>,
    /// User id → view or `null`.
    pub users: BTreeMap<String, Option<PresenceView>>,
}

/// Every frame the server sends. It deserializes too, for clients (the Rust client reads
/// frames with it); a frame type it does not know fails to parse, so a client can skip it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServerFrame {
    /// `{"type": "system", "event": "connected", ...}`: the first frame of a connection.
    #[serde(rename = "system")]
    Connected {
        /// Always `"connected"`.
        event: Cow<'static, str>,
        /// The session this connection holds.
        session_id: SessionId,
        /// The node holding it.
        node_id: NodeId,
        /// The user's own view.
        presence: PresenceView,
    },
    /// The answer to `subscribe`: the present, and the feed position events continue from.
    #[serde(rename = "snapshot")]
    Snapshot {
        /// The `subscribe` frame's id.
        id: Option<FrameId>,
        /// Events after the snapshot continue from here (with `after`: `after` itself).
        feed_id: FeedId,
        /// Whether `after` had aged out of the feed and this is a fresh start.
        reset: bool,
        /// The present.
        #[serde(flatten)]
        snapshot: Snapshot,
    },
    /// A frame with an `id` succeeded.
    #[serde(rename = "ack")]
    Ack {
        /// The frame's id.
        id: FrameId,
    },
    /// A frame failed (or was dropped by the rate limit); the connection stays open.
    #[serde(rename = "error")]
    Error {
        /// The frame's id, when it had a readable one.
        id: Option<FrameId>,
        /// `invalid_frame`, or a REST code of SPEC §6.
        code: Cow<'static, str>,
        /// What went wrong, for people.
        message: String,
    },
    /// The answer to `ping`.
    #[serde(rename = "pong")]
    Pong {
        /// The ping's id.
        id: Option<FrameId>,
    },
    /// A counts-only subscription's scope changed (at most once a second per scope).
    #[serde(rename = "count")]
    Count {
        /// The scope as the subscriber wrote it.
        scope: String,
        /// Users online or away in it, as the subscriber may count them.
        count: u64,
    },
    /// A user started (`true`) or stopped (`false`, also when the indicator expired) typing in
    /// a conversation the subscriber follows.
    #[serde(rename = "typing")]
    Typing {
        /// The conversation.
        conversation_id: ConversationId,
        /// Who.
        user_id: UserId,
        /// Typing now or not any more.
        typing: bool,
    },
    /// A presence event (SPEC §4): the event's own JSON, `"type": "presence"` included.
    #[serde(untagged)]
    Presence(PresenceEvent),
}

impl ServerFrame {
    /// The connection's first frame.
    pub fn connected(session_id: SessionId, node_id: NodeId, presence: PresenceView) -> Self {
        Self::Connected {
            event: Cow::Borrowed("connected"),
            session_id,
            node_id,
            presence,
        }
    }

    /// An `error` frame with one of SPEC §6's codes.
    pub fn error(id: Option<FrameId>, code: &'static str, message: impl Into<String>) -> Self {
        Self::Error {
            id,
            code: Cow::Borrowed(code),
            message: message.into(),
        }
    }

    /// An `invalid_frame` error.
    pub fn invalid_frame(id: Option<FrameId>, message: impl Into<String>) -> Self {
        Self::error(id, "invalid_frame", message)
    }

    /// Reads a frame a server sent.
    pub fn decode(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The frame as JSON text: the only place a server frame is serialized.
    pub fn encode(&self) -> String {
        // Every field is a plain value or a map with string keys: serializing cannot fail.
        serde_json::to_string(self).expect("server frames serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_core::{DeviceSet, Status};
    use serde_json::{Value, json};

    fn view() -> PresenceView {
        PresenceView {
            user_id: UserId::new("1").unwrap(),
            status: Status::Online,
            away_reason: None,
            last_activity: Some(0),
            last_seen: None,
            zone_id: None,
            org_id: None,
            devices: DeviceSet::EMPTY,
            custom_status: None,
            metadata: None,
            invisible: false,
            privacy: None,
            version: 1,
            updated_at: Some(0),
            hidden: None,
            hidden_from_org: None,
        }
    }

    fn json_of(f: &ServerFrame) -> Value {
        serde_json::from_str(&f.encode()).unwrap()
    }

    #[test]
    fn frames_have_the_specs_shapes() {
        assert_eq!(
            json_of(&ServerFrame::Ack { id: json!(7) }),
            json!({"type": "ack", "id": 7})
        );
        assert_eq!(
            json_of(&ServerFrame::Pong { id: None }),
            json!({"type": "pong", "id": null})
        );
        assert_eq!(
            json_of(&ServerFrame::Count {
                scope: "zone:10".into(),
                count: 43
            }),
            json!({"type": "count", "scope": "zone:10", "count": 43})
        );
        assert_eq!(
            json_of(&ServerFrame::Typing {
                conversation_id: presence_core::ConversationId::new("c1").unwrap(),
                user_id: UserId::new("1").unwrap(),
                typing: true
            }),
            json!({"type": "typing", "conversation_id": "c1", "user_id": "1", "typing": true})
        );
        assert_eq!(
            json_of(&ServerFrame::invalid_frame(Some(json!("a")), "bad")),
            json!({"type": "error", "id": "a", "code": "invalid_frame", "message": "bad"})
        );
        let connected = json_of(&ServerFrame::connected(
            SessionId::new("s1").unwrap(),
            NodeId::new("n1").unwrap(),
            view(),
        ));
        assert_eq!(connected["type"], "system");
        assert_eq!(connected["event"], "connected");
        assert_eq!(connected["session_id"], "s1");
        assert_eq!(connected["presence"]["user_id"], "1");
        let mut snapshot = Snapshot::default();
        snapshot.scopes.insert(
            "zone:10".into(),
            ScopeSnapshot {
                count: 1,
                users: vec![view()],
                next_cursor: None,
            },
        );
        snapshot.users.insert("2".into(), None);
        let snap = json_of(&ServerFrame::Snapshot {
            id: Some(json!(1)),
            feed_id: FeedId { ms: 5, seq: 1 },
            reset: false,
            snapshot,
        });
        assert_eq!(snap["type"], "snapshot");
        assert_eq!(snap["feed_id"], "5-1");
        assert_eq!(snap["reset"], false);
        assert_eq!(snap["scopes"]["zone:10"]["count"], 1);
        assert_eq!(snap["scopes"]["zone:10"]["next_cursor"], Value::Null);
        assert_eq!(snap["users"]["2"], Value::Null);
    }

    #[test]
    fn every_frame_reads_back_as_it_was_written() {
        let event = PresenceEvent {
            feed_id: FeedId { ms: 5, seq: 2 },
            user: view(),
            prev_status: Status::Offline,
            prev_zone_id: None,
            prev_org_id: None,
            ts: 0,
            onlookers: Default::default(),
        };
        let mut snapshot = Snapshot::default();
        snapshot.users.insert("1".into(), Some(view()));
        snapshot.users.insert("2".into(), None);
        for frame in [
            ServerFrame::connected(
                SessionId::new("s1").unwrap(),
                NodeId::new("n1").unwrap(),
                view(),
            ),
            ServerFrame::Snapshot {
                id: Some(json!("x")),
                feed_id: FeedId { ms: 9, seq: 0 },
                reset: true,
                snapshot,
            },
            ServerFrame::Ack { id: json!(1) },
            ServerFrame::error(Some(json!(2)), "not_found", "no"),
            ServerFrame::Pong { id: None },
            ServerFrame::Count {
                scope: "global".into(),
                count: 3,
            },
            ServerFrame::Typing {
                conversation_id: presence_core::ConversationId::new("c").unwrap(),
                user_id: UserId::new("1").unwrap(),
                typing: false,
            },
            ServerFrame::Presence(event),
        ] {
            assert_eq!(ServerFrame::decode(&frame.encode()).unwrap(), frame);
        }
        assert!(ServerFrame::decode(r#"{"type": "from_the_future"}"#).is_err());
    }

    #[test]
    fn a_presence_frame_is_the_event_itself_with_one_type() {
        let e = PresenceEvent {
            feed_id: FeedId { ms: 5, seq: 0 },
            user: view(),
            prev_status: Status::Offline,
            prev_zone_id: None,
            prev_org_id: None,
            ts: 0,
            onlookers: Default::default(),
        };
        let text = ServerFrame::Presence(e.clone()).encode();
        assert_eq!(text, serde_json::to_string(&e).unwrap());
        assert_eq!(text.matches("\"type\"").count(), 1);
    }
}
