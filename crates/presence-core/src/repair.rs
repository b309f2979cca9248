//! Repair and anti-entropy (SPEC §6 `POST /admin/repair`, `presenced repair`): the indexes a
//! store keeps beside its records are rebuilt from the records, and what was off is counted
//! by kind.
//!
//! The records are the truth. Every index entry a record implies (its scope sets and their
//! scores, `hidden`, `grace`, REST `leases`, `last_seen`, `expiring:custom`, its node's list
//! and session count) is checked against what the store holds; what is missing is added,
//! what no record implies is removed, a wrong score or count is set right. A WebSocket session
//! whose node is gone (neither live nor waiting to be reaped) is a ghost nobody would close:
//! it is ended through the ordinary transition, with its one event. Each fix re-checks the
//! record at the moment it is made, so a repair is safe while nodes run.

use std::collections::BTreeMap;

use serde::Serialize;

/// Records (or index members) one repair call examines: about 5 ms of Redis time a call
/// (measured at 100k users: 20–28 ms at 500), so what a repair holds Redis for at once stays
/// near what a transition does. The whole pass uses it; the periodic pass's default slice
/// (`presence.repair_batch`) too.
pub const REPAIR_BATCH: usize = 100;

/// What a repair may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RepairMode {
    /// Count what is off and change nothing.
    pub check_only: bool,
    /// `None`: one whole pass over every record and index (the explicit repair). `Some(n)`:
    /// one slice of the periodic pass, about `n` records and index entries, continuing where
    /// the last slice (on any node) stopped; slices skip what cannot be checked in bounded
    /// time (see the store's documentation).
    pub slice: Option<usize>,
}

impl RepairMode {
    /// A whole pass that fixes what it finds.
    pub const FIX: RepairMode = RepairMode {
        check_only: false,
        slice: None,
    };
    /// A whole pass that only reports.
    pub const CHECK: RepairMode = RepairMode {
        check_only: true,
        slice: None,
    };
}

/// The kinds of damage a repair counts, by the name it reports them under. One list, so
/// every store, the route, the CLI and the metric say the same thing.
pub mod fixed {
    /// A record implies a member of a scope set (`online:global`, `online:zone:{z}`,
    /// `online:org:{o}`) that is not there: the user is online or away, visible, and missing
    /// from a list and a count.
    pub const ONLINE_MEMBERS_MISSING: &str = "online_members_missing";
    /// A record implies an entry of another index (`hidden`, `grace`, `leases`, `last_seen`,
    /// `expiring:custom`) that is not there: auto-away, the grace, a lease, retention or a
    /// custom status expiry would never come for that user.
    pub const INDEX_MEMBERS_MISSING: &str = "index_members_missing";
    /// An index member no record implies (the record is gone, offline, elsewhere, hiding or no
    /// longer hiding, the session or expiry is gone): removed.
    pub const STALE_MEMBERS: &str = "stale_members";
    /// An index member whose score is not the record's (last activity, deadline, expiry).
    pub const WRONG_SCORES: &str = "wrong_scores";
    /// A scope whose away count is not the number of away users in it (one per scope).
    pub const AWAY_COUNT: &str = "away_count";
    /// A WebSocket session whose node is neither live nor waiting to be reaped: ended as its
    /// node's reap would have ended it (one event when the view changes; a user left with no
    /// session goes offline at once).
    pub const ORPHAN_SESSIONS: &str = "orphan_sessions";
    /// A node's list of users (kept for reaping) lacking a user with a session on the node, or
    /// holding one twice; or a record naming a node list that does not hold it (`ni`).
    pub const NODE_LISTS: &str = "node_lists";
    /// A node's count of its sessions (`node:{id}:info` `sc`) that is not what its users'
    /// records hold (one per node).
    pub const NODE_SESSION_COUNTS: &str = "node_session_counts";
    /// Keys of a node that is neither live nor waiting to be reaped (its list, its info).
    pub const DEAD_NODE_KEYS: &str = "dead_node_keys";
}

/// What a repair found: `{"checked": N, "fixed": {"what": N, ...}}`. In check-only mode
/// `fixed` counts what would have been fixed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RepairReport {
    /// Records and index entries examined.
    pub checked: u64,
    /// What was off, by kind (see [`fixed`]); kinds with nothing off are left out.
    pub fixed: BTreeMap<String, u64>,
}

impl RepairReport {
    /// Whether nothing was off.
    pub fn is_clean(&self) -> bool {
        self.fixed.values().all(|&n| n == 0)
    }

    /// Counts `n` more of kind `what` (nothing when `n` is 0).
    pub fn add(&mut self, what: &str, n: u64) {
        if n > 0 {
            *self.fixed.entry(what.to_string()).or_default() += n;
        }
    }

    /// How many of kind `what` were off.
    pub fn count(&self, what: &str) -> u64 {
        self.fixed.get(what).copied().unwrap_or(0)
    }
}

impl std::ops::AddAssign for RepairReport {
    fn add_assign(&mut self, b: RepairReport) {
        self.checked += b.checked;
        for (k, n) in b.fixed {
            self.add(&k, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_add_up_and_zero_counts_are_left_out() {
        let mut a = RepairReport::default();
        a.add(fixed::STALE_MEMBERS, 0);
        assert!(a.is_clean() && a.fixed.is_empty());
        a.checked = 3;
        a.add(fixed::STALE_MEMBERS, 2);
        let mut b = RepairReport {
            checked: 1,
            ..Default::default()
        };
        b.add(fixed::STALE_MEMBERS, 1);
        b.add(fixed::AWAY_COUNT, 1);
        a += b;
        assert_eq!(a.checked, 4);
        assert_eq!(a.count(fixed::STALE_MEMBERS), 3);
        assert_eq!(a.count(fixed::AWAY_COUNT), 1);
        assert!(!a.is_clean());
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::json!({"checked": 4, "fixed": {"away_count": 1, "stale_members": 3}})
        );
    }
}
