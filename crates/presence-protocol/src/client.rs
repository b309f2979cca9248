//! Client frames (SPEC §5): JSON text with a `type`, and an optional `id` (string or number)
//! that the reply echoes.

use presence_core::{
    Change, ConversationId, CustomStatus, CustomStatusKind, FeedId, LastSeenVisibility, Metadata,
    Millis, OrgId, PresenceVisibility, Scope, UserId, ZoneId,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A frame the gateway understands.
#[derive(Debug)]
pub enum ClientFrame {
    /// `activity`.
    Activity,
    /// `ping`.
    Ping,
    /// `status.set`, `zone.set`, `org.set`, `metadata.set`, `custom_status.set`,
    /// `custom_status.clear`, `privacy.set`.
    Change(Change),
    /// `subscribe`.
    Subscribe {
        /// Scopes to follow.
        scopes: Vec<Scope>,
        /// Users to follow.
        users: Vec<UserId>,
        /// Conversations whose typing to follow.
        conversations: Vec<ConversationId>,
        /// Resume after this feed id.
        after: Option<FeedId>,
        /// `count` frames for the scopes instead of their events.
        counts_only: bool,
    },
    /// `unsubscribe`.
    Unsubscribe {
        /// Scopes to stop following.
        scopes: Vec<Scope>,
        /// Users to stop following.
        users: Vec<UserId>,
        /// Conversations to stop following.
        conversations: Vec<ConversationId>,
    },
    /// `typing.start` (`typing: true`) and `typing.stop`.
    Typing {
        /// The conversation.
        conversation: ConversationId,
        /// Start (or renew) or stop.
        typing: bool,
    },
}

/// A client frame as it travels, `id` apart: what a client writes (serialized with
/// [`ClientMessage::encode`]) and what the gateway reads before [`parse_frame`] checks it into
/// a [`ClientFrame`]. Fields that take ids accept strings or numbers on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
#[allow(missing_docs)] // each variant is the frame of SPEC §5 its `type` names
pub enum ClientMessage {
    #[serde(rename = "activity")]
    Activity {},
    #[serde(rename = "ping")]
    Ping {},
    #[serde(rename = "status.set")]
    StatusSet {
        status: String,
        #[serde(default)]
        invisible: Option<bool>,
    },
    #[serde(rename = "zone.set")]
    ZoneSet { zone_id: Option<ZoneId> },
    #[serde(rename = "org.set")]
    OrgSet { org_id: Option<OrgId> },
    #[serde(rename = "metadata.set")]
    MetadataSet { metadata: Option<Metadata> },
    #[serde(rename = "custom_status.set")]
    CustomStatusSet {
        kind: CustomStatusKind,
        #[serde(default)]
        text: Option<String>,
        #[serde(default)]
        emoji: Option<String>,
        #[serde(default, with = "presence_core::time::rfc3339::option")]
        expires_at: Option<Millis>,
    },
    #[serde(rename = "custom_status.clear")]
    CustomStatusClear {},
    #[serde(rename = "privacy.set")]
    PrivacySet {
        #[serde(default)]
        presence: Option<PresenceVisibility>,
        #[serde(default)]
        last_seen: Option<LastSeenVisibility>,
    },
    #[serde(rename = "subscribe")]
    Subscribe {
        #[serde(default)]
        scopes: Vec<String>,
        #[serde(default)]
        users: Vec<UserId>,
        #[serde(default)]
        conversations: Vec<ConversationId>,
        #[serde(default)]
        after: Option<FeedId>,
        #[serde(default)]
        counts_only: bool,
    },
    #[serde(rename = "unsubscribe")]
    Unsubscribe {
        #[serde(default)]
        scopes: Vec<String>,
        #[serde(default)]
        users: Vec<UserId>,
        #[serde(default)]
        conversations: Vec<ConversationId>,
    },
    #[serde(rename = "typing.start")]
    TypingStart { conversation_id: ConversationId },
    #[serde(rename = "typing.stop")]
    TypingStop { conversation_id: ConversationId },
}

impl ClientMessage {
    /// The frame as JSON text, with `id` when given (its reply echoes it).
    pub fn encode(&self, id: Option<&Value>) -> String {
        let mut v = serde_json::to_value(self).expect("client frames serialize");
        if let (Some(id), Some(o)) = (id, v.as_object_mut()) {
            o.insert("id".into(), id.clone());
        }
        v.to_string()
    }
}

/// The change a `privacy.set` frame or `PUT /privacy` asks for: at least one setting.
pub fn privacy_change(
    presence: Option<PresenceVisibility>,
    last_seen: Option<LastSeenVisibility>,
) -> Result<Change, String> {
    if presence.is_none() && last_seen.is_none() {
        return Err(
            "give presence (everyone, org, nobody), last_seen (exact, approximate, hidden) or both"
                .into(),
        );
    }
    Ok(Change::SetPrivacy {
        presence,
        last_seen,
    })
}

fn scopes(raw: Vec<String>) -> Result<Vec<Scope>, String> {
    raw.iter()
        .map(|s| s.parse::<Scope>().map_err(|e| format!("{s:?}: {e}")))
        .collect()
}

/// Parses a frame. On failure returns the frame's `id` (when it had a readable one) and why.
pub fn parse_frame(raw: &str) -> Result<(Option<Value>, ClientFrame), (Option<Value>, String)> {
    let mut value: Value =
        serde_json::from_str(raw).map_err(|e| (None, format!("not JSON: {e}")))?;
    let Some(object) = value.as_object_mut() else {
        return Err((None, "a frame is a JSON object".into()));
    };
    let id = object.remove("id");
    if id
        .as_ref()
        .is_some_and(|v| !(v.is_string() || v.is_number()))
    {
        return Err((None, "id must be a string or a number".into()));
    }
    let wire: ClientMessage = match value.get("type").and_then(Value::as_str) {
        Some(_) => serde_json::from_value(value).map_err(|e| (id.clone(), e.to_string()))?,
        None => return Err((id, "a frame needs a \"type\"".into())),
    };
    let frame = match wire {
        ClientMessage::Activity { .. } => ClientFrame::Activity,
        ClientMessage::Ping { .. } => ClientFrame::Ping,
        ClientMessage::StatusSet {
            status, invisible, ..
        } => {
            let away = match status.as_str() {
                "away" => true,
                "online" => false,
                _ => return Err((id, "status must be away or online".into())),
            };
            ClientFrame::Change(Change::SetStatus { away, invisible })
        }
        ClientMessage::ZoneSet { zone_id, .. } => ClientFrame::Change(Change::SetZone(zone_id)),
        ClientMessage::OrgSet { org_id, .. } => ClientFrame::Change(Change::SetOrg(org_id)),
        ClientMessage::MetadataSet { metadata, .. } => {
            ClientFrame::Change(Change::SetMetadata(metadata))
        }
        ClientMessage::CustomStatusSet {
            kind,
            text,
            emoji,
            expires_at,
        } => ClientFrame::Change(Change::SetCustomStatus(CustomStatus {
            kind,
            text,
            emoji,
            expires_at,
        })),
        ClientMessage::CustomStatusClear {} => ClientFrame::Change(Change::ClearCustomStatus),
        ClientMessage::PrivacySet {
            presence,
            last_seen,
        } => ClientFrame::Change(privacy_change(presence, last_seen).map_err(|e| (id.clone(), e))?),
        ClientMessage::Subscribe {
            scopes: s,
            users,
            conversations,
            after,
            counts_only,
            ..
        } => {
            if counts_only && (!users.is_empty() || !conversations.is_empty() || after.is_some()) {
                return Err((
                    id,
                    "a counts_only subscribe takes scopes only (no users, conversations or after)"
                        .into(),
                ));
            }
            ClientFrame::Subscribe {
                scopes: scopes(s).map_err(|e| (id.clone(), e))?,
                users,
                conversations,
                after,
                counts_only,
            }
        }
        ClientMessage::Unsubscribe {
            scopes: s,
            users,
            conversations,
            ..
        } => ClientFrame::Unsubscribe {
            scopes: scopes(s).map_err(|e| (id.clone(), e))?,
            users,
            conversations,
        },
        ClientMessage::TypingStart { conversation_id } => ClientFrame::Typing {
            conversation: conversation_id,
            typing: true,
        },
        ClientMessage::TypingStop { conversation_id } => ClientFrame::Typing {
            conversation: conversation_id,
            typing: false,
        },
    };
    Ok((id, frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_and_keep_their_id() {
        let (id, f) = parse_frame(r#"{"type": "status.set", "status": "away", "id": 7}"#).unwrap();
        assert_eq!(id, Some(Value::from(7)));
        assert!(matches!(
            f,
            ClientFrame::Change(Change::SetStatus {
                away: true,
                invisible: None
            })
        ));
        let (_, f) =
            parse_frame(r#"{"type": "status.set", "status": "online", "invisible": true}"#)
                .unwrap();
        assert!(matches!(
            f,
            ClientFrame::Change(Change::SetStatus {
                away: false,
                invisible: Some(true)
            })
        ));
        let (id, f) = parse_frame(
            r#"{"type": "subscribe", "scopes": ["zone:10"], "users": [1, "2"], "id": "a"}"#,
        )
        .unwrap();
        assert_eq!(id, Some(Value::from("a")));
        assert!(
            matches!(f, ClientFrame::Subscribe { ref scopes, ref users, after: None, counts_only: false, .. } if scopes.len() == 1 && users.len() == 2)
        );
    }

    #[test]
    fn typing_frames_and_conversations_parse() {
        let (_, f) = parse_frame(r#"{"type": "typing.start", "conversation_id": "c1"}"#).unwrap();
        assert!(
            matches!(f, ClientFrame::Typing { ref conversation, typing: true } if conversation.as_str() == "c1")
        );
        let (id, f) =
            parse_frame(r#"{"type": "typing.stop", "conversation_id": 7, "id": 3}"#).unwrap();
        assert_eq!(id, Some(Value::from(3)));
        assert!(
            matches!(f, ClientFrame::Typing { ref conversation, typing: false } if conversation.as_str() == "7")
        );
        let (_, f) =
            parse_frame(r#"{"type": "subscribe", "conversations": ["c1", "c2"]}"#).unwrap();
        assert!(
            matches!(f, ClientFrame::Subscribe { ref conversations, .. } if conversations.len() == 2)
        );
        let (_, f) = parse_frame(r#"{"type": "unsubscribe", "conversations": ["c1"]}"#).unwrap();
        assert!(
            matches!(f, ClientFrame::Unsubscribe { ref conversations, .. } if conversations.len() == 1)
        );
        for bad in [
            r#"{"type": "typing.start"}"#,
            r#"{"type": "typing.start", "conversation_id": "a b"}"#,
            r#"{"type": "typing.stop", "conversation_id": "c", "extra": 1}"#,
            r#"{"type": "subscribe", "conversations": ["a|b"]}"#,
            r#"{"type": "subscribe", "scopes": ["global"], "conversations": ["c"], "counts_only": true}"#,
        ] {
            assert!(parse_frame(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn what_a_client_writes_the_gateway_reads() {
        let frames = [
            ClientMessage::Activity {},
            ClientMessage::StatusSet {
                status: "away".into(),
                invisible: Some(true),
            },
            ClientMessage::Subscribe {
                scopes: vec!["zone:10".into()],
                users: vec![UserId::new("7").unwrap()],
                conversations: vec![],
                after: Some(FeedId { ms: 1, seq: 2 }),
                counts_only: false,
            },
            ClientMessage::CustomStatusSet {
                kind: CustomStatusKind::Busy,
                text: Some("x".into()),
                emoji: None,
                expires_at: Some(1_732_616_700_000),
            },
            ClientMessage::TypingStart {
                conversation_id: ConversationId::new("c").unwrap(),
            },
        ];
        for (i, m) in frames.into_iter().enumerate() {
            let text = m.encode(Some(&Value::from(i)));
            let (id, _) = parse_frame(&text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            assert_eq!(id, Some(Value::from(i)));
            let mut back: Value = serde_json::from_str(&text).unwrap();
            back.as_object_mut().unwrap().remove("id");
            assert_eq!(serde_json::from_value::<ClientMessage>(back).unwrap(), m);
        }
    }

    #[test]
    fn bad_frames_say_why() {
        assert!(parse_frame("{").is_err());
        assert_eq!(
            parse_frame(r#"{"type": "nope", "id": 1}"#).unwrap_err().0,
            Some(Value::from(1))
        );
        assert!(parse_frame(r#"{"type": "zone.set", "zone_id": "a b"}"#).is_err());
        assert!(parse_frame(r#"{"type": "subscribe", "scopes": ["room:1"]}"#).is_err());
        assert!(parse_frame(r#"{"type": "ping", "extra": 1}"#).is_err());
        assert!(parse_frame(r#"{"type": "ping", "id": {"x": 1}}"#).is_err());
    }
}
