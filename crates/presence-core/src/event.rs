//! Presence events and their ids in the feed (SPEC §4).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{OrgId, ZoneId};
use crate::scope::Scope;
use crate::time::{Millis, rfc3339};
use crate::view::{PresenceView, Status};

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
    /// The user was invisible before the change: others saw them offline. Not serialized.
    #[serde(skip)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub was_hidden: bool,
    /// Nothing others see changed (the user was and stays invisible, and only what they
    /// hide moved: status, devices). Not serialized.
    #[serde(skip)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub unseen_by_others: bool,
}

impl PresenceEvent {
    /// The event as everyone but the user and privileged tokens sees it, or `None` when they
    /// see no change. Going invisible looks like going offline, coming back like coming
    /// online (SPEC §3).
    pub fn as_others_see_it(&self) -> Option<PresenceEvent> {
        if self.unseen_by_others {
            return None;
        }
        if !self.was_hidden && self.user.hidden.is_none() {
            return Some(self.clone());
        }
        let mut e = self.clone();
        e.user = self.user.as_others_see_it();
        if self.was_hidden {
            e.prev_status = Status::Offline;
        }
        Some(e)
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
