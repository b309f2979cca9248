//! Scopes (`global`, `zone:{id}`, `org:{id}`) and list pages.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::ids::{IdError, OrgId, UserId, ZoneId};
use crate::time::Millis;
use crate::view::{PresenceView, Status};

/// A set of users presence is listed and counted over.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Everyone.
    Global,
    /// Users currently in a zone.
    Zone(ZoneId),
    /// Users currently in an org.
    Org(OrgId),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Zone(z) => write!(f, "zone:{z}"),
            Scope::Org(o) => write!(f, "org:{o}"),
        }
    }
}

/// A string that is not a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadScope {
    /// Not `global`, `zone:…` or `org:…`.
    #[error("scope must be global, zone:{{id}} or org:{{id}}")]
    Shape,
    /// The id part is not a valid id.
    #[error(transparent)]
    Id(#[from] IdError),
}

impl FromStr for Scope {
    type Err = BadScope;
    fn from_str(s: &str) -> Result<Self, BadScope> {
        if s == "global" {
            Ok(Scope::Global)
        } else if let Some(z) = s.strip_prefix("zone:") {
            Ok(Scope::Zone(ZoneId::new(z)?))
        } else if let Some(o) = s.strip_prefix("org:") {
            Ok(Scope::Org(OrgId::new(o)?))
        } else {
            Err(BadScope::Shape)
        }
    }
}

/// Where a list page ends: the last entry returned, in the list's order (most recent
/// activity first, then user id descending). Opaque to clients (base64url).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    /// Last activity of the last entry returned.
    pub activity: Millis,
    /// User id of the last entry returned.
    pub user: UserId,
}

/// A string that is not a cursor this service made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cursor is not one this service returned")]
pub struct BadCursor;

impl ListCursor {
    /// The opaque form.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}|{}", self.activity, self.user))
    }

    /// Reads the opaque form.
    pub fn decode(s: &str) -> Result<Self, BadCursor> {
        let raw = URL_SAFE_NO_PAD.decode(s).map_err(|_| BadCursor)?;
        let raw = String::from_utf8(raw).map_err(|_| BadCursor)?;
        let (a, u) = raw.split_once('|').ok_or(BadCursor)?;
        Ok(ListCursor {
            activity: a.parse().map_err(|_| BadCursor)?,
            user: UserId::new(u).map_err(|_| BadCursor)?,
        })
    }
}

/// What to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// At most this many users (1–1000).
    pub limit: usize,
    /// Continue after this entry.
    pub cursor: Option<ListCursor>,
    /// Only `online` or only `away` users (counts narrow too).
    pub status: Option<Status>,
}

/// How many index entries one filtered page may examine before it stops with a cursor. A
/// filtered page can therefore hold fewer than `limit` users while `next_cursor` is set: the
/// caller follows the cursor. It keeps a filtered list bounded work on one store call.
pub fn filtered_scan_budget(limit: usize) -> usize {
    (limit * 10).max(1000)
}

/// One page of a scope.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopePage {
    /// The users, most recent activity first.
    pub users: Vec<PresenceView>,
    /// How many users the whole scope holds (narrowed by the status filter).
    pub count: u64,
    /// Where the next page starts; `None` at the end.
    pub next_cursor: Option<ListCursor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_print() {
        for s in ["global", "zone:10", "org:100"] {
            assert_eq!(s.parse::<Scope>().unwrap().to_string(), s);
        }
        assert_eq!("room:1".parse::<Scope>(), Err(BadScope::Shape));
        assert!(matches!("zone:".parse::<Scope>(), Err(BadScope::Id(_))));
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = ListCursor {
            activity: 1_732_616_700_123,
            user: UserId::new("u:1").unwrap(),
        };
        assert_eq!(ListCursor::decode(&c.encode()), Ok(c));
        assert_eq!(ListCursor::decode("!!"), Err(BadCursor));
        assert_eq!(
            ListCursor::decode(&URL_SAFE_NO_PAD.encode("x|")),
            Err(BadCursor)
        );
    }
}
