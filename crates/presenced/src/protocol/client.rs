//! Client frames (SPEC §5): JSON text with a `type`, and an optional `id` (string or number)
//! that the reply echoes.

use presence_core::{
    Change, CustomStatus, CustomStatusKind, FeedId, LastSeenVisibility, Metadata, Millis, OrgId,
    PresenceVisibility, Scope, UserId, ZoneId,
};
use serde::Deserialize;
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
    },
}

#[derive(Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
enum Wire {
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
        conversations: Vec<String>,
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
        conversations: Vec<String>,
    },
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
    let unsupported = |what: &str| Err((id.clone(), format!("{what} is not supported yet")));
    let wire: Wire = match value.get("type").and_then(Value::as_str) {
        Some("typing.start" | "typing.stop") => return unsupported("typing"),
        Some(_) => serde_json::from_value(value).map_err(|e| (id.clone(), e.to_string()))?,
        None => return Err((id, "a frame needs a \"type\"".into())),
    };
    let frame = match wire {
        Wire::Activity { .. } => ClientFrame::Activity,
        Wire::Ping { .. } => ClientFrame::Ping,
        Wire::StatusSet {
            status, invisible, ..
        } => {
            let away = match status.as_str() {
                "away" => true,
                "online" => false,
                _ => return Err((id, "status must be away or online".into())),
            };
            ClientFrame::Change(Change::SetStatus { away, invisible })
        }
        Wire::ZoneSet { zone_id, .. } => ClientFrame::Change(Change::SetZone(zone_id)),
        Wire::OrgSet { org_id, .. } => ClientFrame::Change(Change::SetOrg(org_id)),
        Wire::MetadataSet { metadata, .. } => ClientFrame::Change(Change::SetMetadata(metadata)),
        Wire::CustomStatusSet {
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
        Wire::CustomStatusClear {} => ClientFrame::Change(Change::ClearCustomStatus),
        Wire::PrivacySet {
            presence,
            last_seen,
        } => ClientFrame::Change(privacy_change(presence, last_seen).map_err(|e| (id.clone(), e))?),
        Wire::Subscribe {
            scopes: s,
            users,
            conversations,
            after,
            counts_only,
            ..
        } => {
            if !conversations.is_empty() {
                return unsupported("subscribing to conversations (typing)");
            }
            if counts_only && (!users.is_empty() || after.is_some()) {
                return Err((
                    id,
                    "a counts_only subscribe takes scopes only (no users, no after)".into(),
                ));
            }
            ClientFrame::Subscribe {
                scopes: scopes(s).map_err(|e| (id.clone(), e))?,
                users,
                after,
                counts_only,
            }
        }
        Wire::Unsubscribe {
            scopes: s,
            users,
            conversations,
            ..
        } => {
            if !conversations.is_empty() {
                return unsupported("conversations (typing)");
            }
            ClientFrame::Unsubscribe {
                scopes: scopes(s).map_err(|e| (id.clone(), e))?,
                users,
            }
        }
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
            matches!(f, ClientFrame::Subscribe { ref scopes, ref users, after: None, counts_only: false } if scopes.len() == 1 && users.len() == 2)
        );
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
