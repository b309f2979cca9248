//! The timings and limits the stores enforce, with the SPEC §9 defaults in one place.

use std::time::Duration;

/// Everything a store needs to decide transitions. Every node on one Redis must use the same
/// values: the scripts take them as arguments from whichever node calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Inactivity before `online` turns `away (auto)`.
    pub away_after: Duration,
    /// Lease of a REST heartbeat session.
    pub online_ttl: Duration,
    /// Delay between the last session closing and `offline`.
    pub offline_grace: Duration,
    /// How long a node's sessions outlive its last lease renewal.
    pub node_lease: Duration,
    /// How long an offline user's record (last seen) is kept.
    pub last_seen_retention: Duration,
    /// How long online history is kept, in whole UTC days (see [`crate::history`]).
    pub history_retention: Duration,
    /// Most sessions one user may hold at once.
    pub sessions_per_user: usize,
    /// Events kept in the feed for resume (trimmed approximately in Redis).
    pub feed_max_len: usize,
    /// Most candidates one sweep step handles per store call.
    pub sweep_batch: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            away_after: Duration::from_secs(300),
            online_ttl: Duration::from_secs(300),
            offline_grace: Duration::from_secs(5),
            node_lease: Duration::from_secs(15),
            last_seen_retention: Duration::from_secs(30 * 86_400),
            history_retention: Duration::from_secs(90 * 86_400),
            sessions_per_user: 10,
            feed_max_len: 100_000,
            sweep_batch: 500,
        }
    }
}

/// How many node leases a WebSocket's session ended by the service ([`crate::Store::end_session`])
/// stays marked, so that the node holding the socket, should it find the session missing from
/// the store, closes the socket rather than re-open the session. A node lists its sessions
/// within 4/3 of a lease of the store's count changing, and compares the lists whatever the
/// counts say every 4 leases (presenced's `loops.rs`); the mark outlives that twice over.
pub const END_MARK_NODE_LEASES: u32 = 8;

impl StoreSettings {
    /// The oldest UTC day history keeps at `now`: days before it are pruned by the sweep.
    /// `history_retention` counts whole days back from today (90 days: today and the 89 before).
    pub fn history_first_day(&self, now: crate::Millis) -> crate::Day {
        let days = (ms(self.history_retention) / crate::history::DAY_MS).max(1);
        crate::history::day_of(now) - days + 1
    }

    /// How long a session ended by the service stays marked (see [`END_MARK_NODE_LEASES`]).
    pub fn end_mark_lifetime(&self) -> Duration {
        self.node_lease * END_MARK_NODE_LEASES
    }
}

/// A duration in whole milliseconds, as stores and scripts count time.
pub fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}
