//! Presence events and their ids in the feed (SPEC §4).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{OrgId, ZoneId};
use crate::scope::Scope;
use crate::time::{Millis, rfc3339};
use crate::view::{Onlooker, PresenceView, Status};

/// A position in the feed. Opaque to clients; written `"{ms}-{seq}"`, the form of a Redis
/// stream id, in both stores. Ordered: later events have greater ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FeedId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl FeedId {
    /// The id before every event.
    pub const ZERO: FeedId = FeedId { ms: 0, seq: 0 };
}

impl fmt::Display for FeedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A string that is not a feed id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a feed id: {0:?}")]
pub struct BadFeedId(pub String);

impl FromStr for FeedId {
    type Err = BadFeedId;
    fn from_str(s: &str) -> Result<Self, BadFeedId> {
        let bad = || BadFeedId(s.chars().take(64).collect());
        let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(bad());
        }
        Ok(FeedId {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

impl Serialize for FeedId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FeedId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// One change of a user's public view: `{"type": "presence", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename = "presence")]
pub struct PresenceEvent {
    /// Where the event sits in the feed.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "1732616700123-0"))]
    pub feed_id: FeedId,
    /// The view after the change.
    pub user: PresenceView,
    /// The status before the change.
    pub prev_status: Status,
    /// The zone before the change.
    pub prev_zone_id: Option<ZoneId>,
    /// The org before the change.
    pub prev_org_id: Option<OrgId>,
    /// When the change happened.
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub ts: Millis,
    /// How the change looks to onlookers (neither the user nor privileged tokens). Not
    /// serialized.
    #[serde(skip)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub onlookers: Onlookers,
}

/// How an event looks to onlookers, per kind of onlooker ([`Onlooker`]): whether the user hid
/// from them before the change, and whether they see any change at all. The default is a
/// user who hides from nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Onlookers {
    /// The user hid from onlookers outside their org before the change.
    pub others_hidden_before: bool,
    /// Onlookers outside the org see no change.
    pub others_unchanged: bool,
    /// The user hid from their org's members before the change.
    pub org_hidden_before: bool,
    /// The org's members see no change.
    pub org_unchanged: bool,
}

impl Onlookers {
    /// Whether `who` sees no change at all.
    pub fn unchanged_for(&self, who: Onlooker) -> bool {
        self.of(who).1
    }

    fn of(&self, who: Onlooker) -> (bool, bool) {
        match who {
            Onlooker::Member => (self.org_hidden_before, self.org_unchanged),
            Onlooker::Other => (self.others_hidden_before, self.others_unchanged),
        }
    }
}

impl PresenceEvent {
    /// The event as an onlooker sees it at `now`, or `None` when they see no change.
    /// Beginning to hide from them looks like going offline, ending it like coming online
    /// (SPEC §3).
    pub fn as_seen_by(&self, who: Onlooker, now: Millis) -> Option<PresenceEvent> {
        let (hidden_before, unchanged) = self.onlookers.of(who);
        if unchanged {
            return None;
        }
        let mut e = self.clone();
        e.user = self.user.as_seen_by(who, now);
        e.onlookers = Onlookers::default();
        if hidden_before {
            e.prev_status = Status::Offline;
        }
        Some(e)
    }

    /// Whether the user hides from `who`, before or after the change: then `who` must be
    /// shown [`PresenceEvent::as_seen_by`], not the event itself.
    pub fn hides_from(&self, who: Onlooker) -> bool {
        self.onlookers.of(who).0 || self.user.hidden_from(who).is_some()
    }

    /// Every scope the event belongs to (SPEC §5: a scope the user is in now or was in before
    /// the change): `global`, the zone and org after the change, and the ones before it when
    /// they differ. Each scope appears once.
    pub fn scopes(&self) -> Vec<Scope> {
        let mut scopes = vec![Scope::Global];
        let zones = [&self.user.zone_id, &self.prev_zone_id];
        let orgs = [&self.user.org_id, &self.prev_org_id];
        for z in zones.into_iter().flatten() {
            let s = Scope::Zone(z.clone());
            if !scopes.contains(&s) {
                scopes.push(s);
            }
        }
        for o in orgs.into_iter().flatten() {
            let s = Scope::Org(o.clone());
            if !scopes.contains(&s) {
                scopes.push(s);
            }
        }
        scopes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_ids_round_trip_and_order() {
        let a: FeedId = "1732616700123-0".parse().unwrap();
        let b: FeedId = "1732616700123-7".parse().unwrap();
        let c: FeedId = "1732616700124-0".parse().unwrap();
        assert!(a < b && b < c);
        assert_eq!(b.to_string(), "1732616700123-7");
        for bad in [
            "",
            "1",
            "-1",
            "1-",
            "a-1",
            "1-2-3",
            "99999999999999999999999-0",
        ] {
            assert!(bad.parse::<FeedId>().is_err(), "{bad:?}");
        }
    }
}
