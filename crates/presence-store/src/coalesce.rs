//! Activity coalescing on a node (SPEC §8: "activity is coalesced per user and written in
//! batches").
//!
//! Clients report activity many times a second (every counted frame); presence only needs
//! `last_activity` to about a second. A node records activity here and flushes every few
//! hundred milliseconds: each flush carries every user with new activity in one
//! `Store::record_activity` call, except users written less than `min_interval` ago, whose
//! newest time waits for a later flush. Skipping them never delays a return from auto-away: a
//! user written within the last second had activity within `away_after` (minutes), so cannot
//! be auto-away.

use std::collections::HashMap;

use presence_core::{Activity, Millis, UserId};

/// Per-node activity buffer. Not thread-safe by itself: the node wraps it in a mutex.
#[derive(Debug)]
pub struct ActivityCoalescer {
    min_interval: Millis,
    users: HashMap<UserId, Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Newest activity not yet written.
    pending: Option<Millis>,
    /// When this node last wrote the user's activity.
    written: Millis,
}

impl ActivityCoalescer {
    /// A buffer writing each user at most once per `min_interval` ms.
    pub fn new(min_interval: Millis) -> Self {
        Self {
            min_interval,
            users: HashMap::new(),
        }
    }

    /// Records activity of `user` at `at`.
    pub fn record(&mut self, user: &UserId, at: Millis) {
        match self.users.get_mut(user) {
            Some(e) => e.pending = Some(e.pending.map_or(at, |p| p.max(at))),
            None => {
                self.users.insert(
                    user.clone(),
                    Entry {
                        pending: Some(at),
                        written: Millis::MIN,
                    },
                );
            }
        }
    }

    /// The batch to write now: every user with pending activity not written within
    /// `min_interval`. Forgets users with nothing pending whose interval has passed, so the
    /// buffer holds only users active in the last `min_interval`.
    pub fn take_due(&mut self, now: Millis) -> Vec<Activity> {
        let min = self.min_interval;
        let mut due = Vec::new();
        self.users.retain(|user, e| {
            let free = now.saturating_sub(e.written) >= min;
            match e.pending {
                Some(at) if free => {
                    due.push(Activity {
                        user: user.clone(),
                        at,
                    });
                    e.pending = None;
                    e.written = now;
                    true
                }
                Some(_) => true,
                None => !free,
            }
        });
        due
    }

    /// Puts back a batch from [`ActivityCoalescer::take_due`] whose write failed: each user's
    /// time is pending again (the newest of it and any activity recorded since), and the user
    /// is due at the next flush, not held back by `min_interval` for a write that did not
    /// happen.
    pub fn restore(&mut self, batch: Vec<Activity>) {
        for a in batch {
            let e = self.users.entry(a.user).or_insert(Entry {
                pending: None,
                written: Millis::MIN,
            });
            e.pending = Some(e.pending.map_or(a.at, |p| p.max(a.at)));
            e.written = Millis::MIN;
        }
    }

    /// Users held (pending or recently written).
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    #[test]
    fn a_burst_becomes_one_write_with_the_newest_time() {
        let mut c = ActivityCoalescer::new(1000);
        for at in [10, 50, 30] {
            c.record(&u("1"), at);
        }
        c.record(&u("2"), 20);
        let mut due = c.take_due(100);
        due.sort_by(|a, b| a.user.cmp(&b.user));
        assert_eq!(
            due,
            [
                Activity {
                    user: u("1"),
                    at: 50
                },
                Activity {
                    user: u("2"),
                    at: 20
                }
            ]
        );
        assert!(c.take_due(200).is_empty(), "nothing new");
    }

    #[test]
    fn a_user_written_recently_waits_then_gets_the_newest_time() {
        let mut c = ActivityCoalescer::new(1000);
        c.record(&u("1"), 0);
        assert_eq!(c.take_due(0).len(), 1);
        c.record(&u("1"), 300);
        c.record(&u("1"), 700);
        assert!(c.take_due(500).is_empty(), "written 500 ms ago");
        assert_eq!(
            c.take_due(1000),
            [Activity {
                user: u("1"),
                at: 700
            }]
        );
    }

    #[test]
    fn a_failed_batch_is_put_back_and_due_at_the_next_flush() {
        let mut c = ActivityCoalescer::new(1000);
        c.record(&u("1"), 100);
        c.record(&u("2"), 100);
        let failed = c.take_due(100);
        assert_eq!(failed.len(), 2);
        // Newer activity of user 1 arrives while the write fails.
        c.record(&u("1"), 150);
        c.restore(failed);
        let mut due = c.take_due(200);
        due.sort_by(|a, b| a.user.cmp(&b.user));
        assert_eq!(
            due,
            [
                Activity {
                    user: u("1"),
                    at: 150
                },
                Activity {
                    user: u("2"),
                    at: 100
                }
            ],
            "not held back by the min interval; the newest time per user"
        );
        // Restoring an older time than one already pending keeps the newer one, and a user
        // the buffer had forgotten comes back.
        c.record(&u("1"), 900);
        c.restore(vec![
            Activity {
                user: u("1"),
                at: 300,
            },
            Activity {
                user: u("3"),
                at: 50,
            },
        ]);
        let mut due = c.take_due(300);
        due.sort_by(|a, b| a.user.cmp(&b.user));
        assert_eq!(
            due,
            [
                Activity {
                    user: u("1"),
                    at: 900
                },
                Activity {
                    user: u("3"),
                    at: 50
                }
            ]
        );
    }

    #[test]
    fn idle_users_are_forgotten() {
        let mut c = ActivityCoalescer::new(1000);
        c.record(&u("1"), 0);
        c.take_due(0);
        assert_eq!(c.len(), 1);
        c.take_due(999);
        assert_eq!(c.len(), 1, "still inside its interval");
        c.take_due(1000);
        assert!(c.is_empty());
    }
}
