//! The public view of a user's presence (SPEC §3) and the enums it is made of.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{OrgId, UserId, ZoneId};
use crate::time::{Millis, rfc3339};

/// The seed's three states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Status {
    /// Connected and active within `away_after`.
    Online,
    /// Connected but inactive (auto) or away by choice (manual).
    Away,
    /// No session, and no offline grace pending.
    Offline,
}

impl Status {
    /// The wire name: `online`, `away`, `offline`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Away => "away",
            Status::Offline => "offline",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown status, device kind or away reason name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct UnknownName {
    /// What was being parsed.
    pub what: &'static str,
    /// The text that did not match.
    pub value: String,
}

impl FromStr for Status {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "online" => Ok(Status::Online),
            "away" => Ok(Status::Away),
            "offline" => Ok(Status::Offline),
            _ => Err(UnknownName {
                what: "status",
                value: s.into(),
            }),
        }
    }
}

/// Why an `away` user is away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AwayReason {
    /// Inactive for `away_after`; any activity brings the user back.
    Auto,
    /// The user asked; sticks until the user sets online.
    Manual,
}

impl AwayReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AwayReason::Auto => "auto",
            AwayReason::Manual => "manual",
        }
    }
}

impl FromStr for AwayReason {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "auto" => Ok(AwayReason::Auto),
            "manual" => Ok(AwayReason::Manual),
            _ => Err(UnknownName {
                what: "away reason",
                value: s.into(),
            }),
        }
    }
}

/// The kind of device a session runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DeviceKind {
    /// A browser tab (the default).
    Web,
    /// A desktop app.
    Desktop,
    /// A phone or tablet app.
    Mobile,
    /// Anything else (bots, integrations).
    Other,
}

impl DeviceKind {
    /// All kinds, in the order views list them.
    pub const ALL: [DeviceKind; 4] = [
        DeviceKind::Web,
        DeviceKind::Desktop,
        DeviceKind::Mobile,
        DeviceKind::Other,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Web => "web",
            DeviceKind::Desktop => "desktop",
            DeviceKind::Mobile => "mobile",
            DeviceKind::Other => "other",
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeviceKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        DeviceKind::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "device",
                value: s.into(),
            })
    }
}

/// The set of device kinds a user is connected from, as a small bit set: views list them in
/// [`DeviceKind::ALL`] order, without repeats, whichever order sessions opened in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DeviceSet(u8);

impl DeviceSet {
    /// No devices.
    pub const EMPTY: DeviceSet = DeviceSet(0);

    fn bit(d: DeviceKind) -> u8 {
        1 << DeviceKind::ALL.iter().position(|k| *k == d).unwrap_or(0)
    }

    /// Adds `d`.
    pub fn insert(&mut self, d: DeviceKind) {
        self.0 |= Self::bit(d);
    }

    /// Whether the set holds `d`.
    pub fn contains(self, d: DeviceKind) -> bool {
        self.0 & Self::bit(d) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The kinds in view order.
    pub fn iter(self) -> impl Iterator<Item = DeviceKind> {
        DeviceKind::ALL
            .into_iter()
            .filter(move |d| self.contains(*d))
    }
}

impl FromIterator<DeviceKind> for DeviceSet {
    fn from_iter<I: IntoIterator<Item = DeviceKind>>(iter: I) -> Self {
        let mut s = DeviceSet::EMPTY;
        for d in iter {
            s.insert(d);
        }
        s
    }
}

impl Serialize for DeviceSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for DeviceSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<DeviceKind>::deserialize(d)?.into_iter().collect())
    }
}

/// Who sees a user's real status (SPEC §3 privacy): everyone (the default), only tokens of
/// the user's org, or nobody (like invisible, but a setting that outlives sessions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PresenceVisibility {
    /// Everyone sees the real status.
    #[default]
    Everyone,
    /// Only tokens of the user's org; others see `offline`.
    Org,
    /// Nobody but the user and privileged tokens; others see `offline`.
    Nobody,
}

/// How precisely others see when a user was last there (SPEC §3 privacy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum LastSeenVisibility {
    /// The time (the default).
    #[default]
    Exact,
    /// A bucket: `recently`, `within_week`, `within_month`, `long_ago`.
    Approximate,
    /// Nothing: `null`.
    Hidden,
}

/// A user's privacy settings, kept with their record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Privacy {
    /// Who sees the real status.
    pub presence: PresenceVisibility,
    /// How others see `last_seen`.
    pub last_seen: LastSeenVisibility,
}

impl PresenceVisibility {
    /// The name in the API and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceVisibility::Everyone => "everyone",
            PresenceVisibility::Org => "org",
            PresenceVisibility::Nobody => "nobody",
        }
    }
}

impl FromStr for PresenceVisibility {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Ok(match s {
            "everyone" => PresenceVisibility::Everyone,
            "org" => PresenceVisibility::Org,
            "nobody" => PresenceVisibility::Nobody,
            _ => {
                return Err(UnknownName {
                    what: "presence visibility",
                    value: s.chars().take(32).collect(),
                });
            }
        })
    }
}

impl LastSeenVisibility {
    /// The name in the API and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            LastSeenVisibility::Exact => "exact",
            LastSeenVisibility::Approximate => "approximate",
            LastSeenVisibility::Hidden => "hidden",
        }
    }
}

impl FromStr for LastSeenVisibility {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Ok(match s {
            "exact" => LastSeenVisibility::Exact,
            "approximate" => LastSeenVisibility::Approximate,
            "hidden" => LastSeenVisibility::Hidden,
            _ => {
                return Err(UnknownName {
                    what: "last seen visibility",
                    value: s.chars().take(32).collect(),
                });
            }
        })
    }
}

/// The kinds of custom status (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CustomStatusKind {
    /// Do not disturb.
    Dnd,
    /// Busy.
    Busy,
    /// In a meeting.
    InMeeting,
    /// On a break.
    OnBreak,
    /// Free text.
    Custom,
}

impl CustomStatusKind {
    /// All kinds.
    pub const ALL: [CustomStatusKind; 5] = [
        CustomStatusKind::Dnd,
        CustomStatusKind::Busy,
        CustomStatusKind::InMeeting,
        CustomStatusKind::OnBreak,
        CustomStatusKind::Custom,
    ];

    /// The wire name: `dnd`, `busy`, `in_meeting`, `on_break`, `custom`.
    pub fn as_str(self) -> &'static str {
        match self {
            CustomStatusKind::Dnd => "dnd",
            CustomStatusKind::Busy => "busy",
            CustomStatusKind::InMeeting => "in_meeting",
            CustomStatusKind::OnBreak => "on_break",
            CustomStatusKind::Custom => "custom",
        }
    }
}

impl fmt::Display for CustomStatusKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CustomStatusKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        CustomStatusKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "custom status kind",
                value: s.into(),
            })
    }
}

/// Longest custom status text, in characters (Unicode scalar values, not bytes).
pub const CUSTOM_STATUS_TEXT_MAX_CHARS: usize = 140;
/// Longest custom status emoji, in UTF-8 bytes.
pub const CUSTOM_STATUS_EMOJI_MAX_BYTES: usize = 16;

/// A custom status (SPEC §3), set and cleared through `Change::SetCustomStatus` and
/// `Change::ClearCustomStatus`. It leaves `status` alone, survives reconnects and the offline
/// grace, and stays until it is cleared, it expires (the stores' sweep clears it at
/// `expires_at`), or the record is deleted after `last_seen_retention`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CustomStatus {
    /// What kind.
    pub kind: CustomStatusKind,
    /// Free text, at most 140 characters.
    pub text: Option<String>,
    /// An emoji, at most 16 bytes.
    pub emoji: Option<String>,
    /// When it clears itself.
    #[serde(with = "rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<Millis>,
}

impl CustomStatus {
    /// Why this status cannot be set at `now`, or `None` when it can: the message a service
    /// answers `invalid_argument` with. Empty `text` or `emoji` strings are refused (omit the
    /// field instead), so a stored status never holds an empty string.
    pub fn problem(&self, now: Millis) -> Option<String> {
        // Control characters and bidirectional overrides would reach every screen and
        // terminal that shows the status (escape sequences, text that reads backwards).
        let unsafe_char = |c: char| {
            c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        };
        for (field, value) in [("text", &self.text), ("emoji", &self.emoji)] {
            if value.as_deref().is_some_and(|v| v.chars().any(unsafe_char)) {
                return Some(format!(
                    "custom_status.{field} must not hold control characters or direction overrides"
                ));
            }
        }
        if let Some(text) = &self.text {
            let chars = text.chars().count();
            if chars == 0 {
                return Some("custom_status.text must not be empty (omit it or send null)".into());
            }
            if chars > CUSTOM_STATUS_TEXT_MAX_CHARS {
                return Some(format!(
                    "custom_status.text is {chars} characters, at most \
                     {CUSTOM_STATUS_TEXT_MAX_CHARS} allowed"
                ));
            }
        }
        if let Some(emoji) = &self.emoji {
            if emoji.is_empty() {
                return Some("custom_status.emoji must not be empty (omit it or send null)".into());
            }
            if emoji.len() > CUSTOM_STATUS_EMOJI_MAX_BYTES {
                return Some(format!(
                    "custom_status.emoji is {} bytes, at most {CUSTOM_STATUS_EMOJI_MAX_BYTES} \
                     allowed",
                    emoji.len()
                ));
            }
        }
        match self.expires_at {
            Some(t) if t <= now => Some("custom_status.expires_at must be in the future".into()),
            _ => None,
        }
    }

    /// Empty `text` and `emoji` as `None`: what the stores keep should a caller skip
    /// [`CustomStatus::problem`], so both stores hold the same value.
    pub fn normalised(mut self) -> Self {
        self.text = self.text.filter(|t| !t.is_empty());
        self.emoji = self.emoji.filter(|e| !e.is_empty());
        self
    }
}

/// What everyone sees of a user (SPEC §3). Every field is always present; `null` where it
/// does not apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PresenceView {
    /// Whose presence.
    pub user_id: UserId,
    /// Online, away or offline.
    pub status: Status,
    /// Set only while `away`.
    pub away_reason: Option<AwayReason>,
    /// The user's last counted activity. `null` only for onlookers of an offline user whose
    /// privacy shows last seen approximately or not at all.
    #[serde(with = "rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub last_activity: Option<Millis>,
    /// When the user's last session ended; set only while `offline`. A time, or for onlookers
    /// of a user whose privacy shows last seen approximately, one of `recently` (< 3 days),
    /// `within_week`, `within_month`, `long_ago`; `null` when it is hidden from them.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "2024-11-26T10:25:00.000Z"))]
    pub last_seen: Option<LastSeen>,
    /// The user's current zone.
    pub zone_id: Option<ZoneId>,
    /// The user's current organisation.
    pub org_id: Option<OrgId>,
    /// Kinds of device the user is connected from (kept through the offline grace).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<DeviceKind>))]
    pub devices: DeviceSet,
    /// The custom status, if any.
    pub custom_status: Option<CustomStatus>,
    /// Free-form JSON object set by the user or the app.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Whether the user hides as offline (only the user and privileged tokens see `true`).
    pub invisible: bool,
    /// The user's privacy settings: in the user's own view and for privileged tokens; `null`
    /// for everyone else.
    pub privacy: Option<Privacy>,
    /// Increases strictly with every event of this user.
    pub version: u64,
    /// When the view last changed (not counting `last_activity`). `null` only for onlookers of
    /// an offline user whose privacy shows last seen approximately or not at all (the last
    /// change is usually the going offline).
    #[serde(with = "rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub updated_at: Option<Millis>,
    /// While the user hides from onlookers outside their org (invisible, or privacy `org`
    /// or `nobody`): what those are shown instead. Never serialized; the access policy
    /// decides who sees the truth and who [`PresenceView::as_seen_by`] whom.
    #[serde(skip)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub hidden: Option<Hidden>,
    /// While the user hides from their own org too (invisible, or privacy `nobody`): what
    /// the org's members are shown instead. Never serialized.
    #[serde(skip)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub hidden_from_org: Option<Hidden>,
}

/// What onlookers see of a user who hides from them: the moment the user began hiding from
/// them (shown as both `last_seen` and `last_activity`), and the version and time of the last
/// change they were shown, so that a change only the user can see (auto-away, a second
/// device) moves nothing in the view they read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hidden {
    /// When the user began hiding from these onlookers.
    pub since: Millis,
    /// `version` of the last change these onlookers saw.
    pub version: u64,
    /// `updated_at` of the last change these onlookers saw.
    pub updated_at: Millis,
}

/// `last_seen` as shown: the time, or a bucket for onlookers of a user whose privacy shows it
/// approximately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LastSeen {
    /// The time (RFC 3339).
    At(#[serde(with = "rfc3339")] Millis),
    /// Roughly when.
    Around(LastSeenBucket),
}

impl LastSeen {
    /// The time, when shown as one.
    pub fn at(self) -> Option<Millis> {
        match self {
            LastSeen::At(t) => Some(t),
            LastSeen::Around(_) => None,
        }
    }
}

/// How long ago a user was last seen, roughly (SPEC §3 privacy `approximate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LastSeenBucket {
    /// Less than 3 days ago.
    Recently,
    /// Less than 7 days ago.
    WithinWeek,
    /// Less than 30 days ago.
    WithinMonth,
    /// Longer ago.
    LongAgo,
}

impl LastSeenBucket {
    /// The bucket of a time `ago` milliseconds back.
    pub fn of(ago: Millis) -> LastSeenBucket {
        const DAY: Millis = 86_400_000;
        match ago {
            a if a < 3 * DAY => LastSeenBucket::Recently,
            a if a < 7 * DAY => LastSeenBucket::WithinWeek,
            a if a < 30 * DAY => LastSeenBucket::WithinMonth,
            _ => LastSeenBucket::LongAgo,
        }
    }
}

/// Someone looking at a user who is neither that user nor a privileged token (those see the
/// truth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Onlooker {
    /// A token of the user's org: sees what privacy `org` shows members.
    Member,
    /// Anyone else.
    Other,
}

impl PresenceView {
    /// What `who` hides behind, if the user hides from them.
    pub fn hidden_from(&self, who: Onlooker) -> Option<Hidden> {
        match who {
            Onlooker::Member => self.hidden_from_org,
            Onlooker::Other => self.hidden,
        }
    }

    /// The view as an onlooker sees it at `now`: a user who hides from them looks offline
    /// since they began hiding, with no devices, and keeps what an offline user shows (zone,
    /// org, custom status, metadata); an offline user's last seen (and last activity) as
    /// precisely as the user's privacy allows. Never `invisible`, never the privacy settings.
    pub fn as_seen_by(&self, who: Onlooker, now: Millis) -> PresenceView {
        let mut v = match self.hidden_from(who) {
            None => self.clone(),
            Some(h) => PresenceView {
                status: Status::Offline,
                away_reason: None,
                last_activity: Some(h.since),
                last_seen: Some(LastSeen::At(h.since)),
                devices: DeviceSet::EMPTY,
                version: h.version,
                updated_at: Some(h.updated_at),
                ..self.clone()
            },
        };
        v.for_onlookers(now);
        v
    }

    /// The last steps of showing a view to an onlooker at `now`: an offline user's last seen
    /// (and last activity) as precisely as their privacy allows, and none of what only the
    /// user and privileged tokens see (`invisible`, the settings, what they hide behind).
    pub fn for_onlookers(&mut self, now: Millis) {
        let setting = self.privacy.map(|p| p.last_seen).unwrap_or_default();
        self.show_last_seen(setting, now);
        self.invisible = false;
        self.privacy = None;
        self.hidden = None;
        self.hidden_from_org = None;
    }

    /// An offline user's last seen (and last activity, and the time of the last change,
    /// which give it away) as precisely as `setting` allows onlookers at `now`.
    pub fn show_last_seen(&mut self, setting: LastSeenVisibility, now: Millis) {
        if self.status == Status::Offline && setting != LastSeenVisibility::Exact {
            self.last_activity = None;
            self.updated_at = None;
            self.last_seen = match (setting, self.last_seen.and_then(LastSeen::at)) {
                (LastSeenVisibility::Approximate, Some(t)) => {
                    Some(LastSeen::Around(LastSeenBucket::of(now - t)))
                }
                _ => None,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_are_the_seeds() {
        for (s, name) in [
            (Status::Online, "online"),
            (Status::Away, "away"),
            (Status::Offline, "offline"),
        ] {
            assert_eq!(s.as_str(), name);
            assert_eq!(name.parse::<Status>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{name}\""));
        }
        assert!("busy".parse::<Status>().is_err());
    }

    fn custom(text: Option<&str>, emoji: Option<&str>, expires_at: Option<Millis>) -> CustomStatus {
        CustomStatus {
            kind: CustomStatusKind::InMeeting,
            text: text.map(Into::into),
            emoji: emoji.map(Into::into),
            expires_at,
        }
    }

    #[test]
    fn custom_status_limits_count_characters_for_text_and_bytes_for_emoji() {
        let now = 1_000;
        assert_eq!(custom(None, None, None).problem(now), None);
        // 140 three-byte characters: 420 bytes, still within the limit.
        let long = "é".repeat(70) + &"€".repeat(70);
        assert_eq!(custom(Some(&long), None, None).problem(now), None);
        let too_long = "a".repeat(141);
        let p = custom(Some(&too_long), None, None).problem(now).unwrap();
        assert!(p.contains("141 characters"), "{p}");
        // 👩‍💻 is 11 bytes; 👨‍👩‍👧‍👦 is 25.
        assert_eq!(custom(None, Some("👩‍💻"), None).problem(now), None);
        let p = custom(None, Some("👨‍👩‍👧‍👦"), None).problem(now).unwrap();
        assert!(p.contains("25 bytes"), "{p}");
        for hostile in ["hi\u{1b}]0;PWNED\u{7}", "a\nb", "\u{202e}txt", "x\u{2066}y"] {
            let p = custom(Some(hostile), None, None).problem(now).unwrap();
            assert!(p.contains("control characters"), "{p}");
            assert!(custom(None, Some(hostile), None).problem(now).is_some());
        }
        assert!(
            custom(Some("Ünïcode ✓ 日本"), None, None)
                .problem(now)
                .is_none()
        );
        assert!(custom(Some(""), None, None).problem(now).is_some());
        assert!(custom(None, Some(""), None).problem(now).is_some());
        assert!(custom(None, None, Some(now)).problem(now).is_some());
        assert!(custom(None, None, Some(now - 1)).problem(now).is_some());
        assert_eq!(custom(None, None, Some(now + 1)).problem(now), None);
        assert_eq!(
            custom(Some(""), Some(""), None).normalised(),
            custom(None, None, None)
        );
    }

    #[test]
    fn custom_status_kinds_use_the_spec_names() {
        for k in CustomStatusKind::ALL {
            assert_eq!(k.as_str().parse::<CustomStatusKind>().unwrap(), k);
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        assert!("away".parse::<CustomStatusKind>().is_err());
    }

    #[test]
    fn last_seen_buckets_and_what_onlookers_see_of_an_offline_user() {
        const DAY: Millis = 86_400_000;
        for (ago, want) in [
            (0, LastSeenBucket::Recently),
            (3 * DAY - 1, LastSeenBucket::Recently),
            (3 * DAY, LastSeenBucket::WithinWeek),
            (7 * DAY - 1, LastSeenBucket::WithinWeek),
            (7 * DAY, LastSeenBucket::WithinMonth),
            (30 * DAY - 1, LastSeenBucket::WithinMonth),
            (30 * DAY, LastSeenBucket::LongAgo),
        ] {
            assert_eq!(LastSeenBucket::of(ago), want, "{ago}");
        }
        let offline = PresenceView {
            user_id: UserId::new("1").unwrap(),
            status: Status::Offline,
            away_reason: None,
            last_activity: Some(90),
            last_seen: Some(LastSeen::At(100)),
            zone_id: None,
            org_id: None,
            devices: DeviceSet::EMPTY,
            custom_status: None,
            metadata: None,
            invisible: false,
            privacy: Some(Privacy {
                presence: PresenceVisibility::Everyone,
                last_seen: LastSeenVisibility::Approximate,
            }),
            version: 1,
            updated_at: Some(100),
            hidden: None,
            hidden_from_org: None,
        };
        let seen = offline.as_seen_by(Onlooker::Other, 100 + 4 * DAY);
        assert_eq!(
            serde_json::to_value(&seen).unwrap()["last_seen"],
            "within_week"
        );
        assert_eq!((seen.last_activity, seen.privacy), (None, None));
        let mut hidden = offline.clone();
        hidden.privacy.as_mut().unwrap().last_seen = LastSeenVisibility::Hidden;
        assert_eq!(hidden.as_seen_by(Onlooker::Member, 0).last_seen, None);
        let mut online = hidden.clone();
        online.status = Status::Online;
        online.last_seen = None;
        assert_eq!(
            online.as_seen_by(Onlooker::Other, 0).last_activity,
            Some(90),
            "last seen hides nothing of a present user"
        );
        let back: PresenceView =
            serde_json::from_value(serde_json::to_value(&seen).unwrap()).unwrap();
        assert_eq!(
            back.last_seen,
            Some(LastSeen::Around(LastSeenBucket::WithinWeek)),
            "both shapes read back"
        );
    }

    #[test]
    fn device_sets_list_in_fixed_order_without_repeats() {
        let s: DeviceSet = [DeviceKind::Mobile, DeviceKind::Desktop, DeviceKind::Mobile]
            .into_iter()
            .collect();
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"["desktop","mobile"]"#
        );
    }

    #[test]
    fn the_view_serialises_every_field_with_nulls() {
        let v = PresenceView {
            user_id: UserId::new("123").unwrap(),
            status: Status::Online,
            away_reason: None,
            last_activity: Some(1_732_616_700_000),
            last_seen: None,
            zone_id: Some(ZoneId::new("10").unwrap()),
            org_id: None,
            devices: [DeviceKind::Web].into_iter().collect(),
            custom_status: None,
            metadata: None,
            invisible: false,
            privacy: None,
            version: 1,
            updated_at: Some(1_732_616_700_000),
            hidden: None,
            hidden_from_org: None,
        };
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(
            j,
            serde_json::json!({
                "user_id": "123", "status": "online", "away_reason": null,
                "last_activity": "2024-11-26T10:25:00.000Z", "last_seen": null,
                "zone_id": "10", "org_id": null, "devices": ["web"], "custom_status": null,
                "metadata": null, "invisible": false, "privacy": null, "version": 1,
                "updated_at": "2024-11-26T10:25:00.000Z"
            })
        );
        let back: PresenceView = serde_json::from_value(j).unwrap();
        assert_eq!(back, v);
    }
}
