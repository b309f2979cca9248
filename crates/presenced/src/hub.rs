//! Fan-out on one node: the feed loop reads every event once (`Store::wait_feed`), encodes it
//! once, and hands the same bytes to every local subscriber that asked for its user or one of
//! its scopes (before or after the change). Each subscriber has a bounded queue; a full queue
//! marks it slow, and its connection closes with 4008. The loop never waits on a client.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use presence_core::{FeedId, OrgId, PresenceEvent, Scope, Store, UserId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// An event as a subscriber receives it: its id and its JSON, shared by every subscriber.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// Feed position, to drop what a snapshot or replay already covered.
    pub feed_id: FeedId,
    /// The event's JSON text.
    pub json: Arc<str>,
    /// The event itself.
    pub event: Arc<PresenceEvent>,
}

/// What a subscriber listens to.
#[derive(Debug, Default, Clone)]
pub struct Interest {
    /// Scopes.
    pub scopes: HashSet<Scope>,
    /// Users.
    pub users: HashSet<UserId>,
    /// Everything (SSE with no scope from a privileged token).
    pub all: bool,
    /// Tenant isolation: only users of this org.
    pub org: Option<OrgId>,
}

impl Interest {
    /// Whether the event concerns this interest.
    pub fn matches(&self, e: &PresenceEvent) -> bool {
        if let Some(org) = &self.org
            && e.user.org_id.as_ref() != Some(org)
            && e.prev_org_id.as_ref() != Some(org)
        {
            return false;
        }
        self.all
            || self.users.contains(&e.user.user_id)
            || self.scopes.contains(&Scope::Global)
            || [e.user.zone_id.clone(), e.prev_zone_id.clone()]
                .into_iter()
                .flatten()
                .any(|z| self.scopes.contains(&Scope::Zone(z)))
            || [e.user.org_id.clone(), e.prev_org_id.clone()]
                .into_iter()
                .flatten()
                .any(|o| self.scopes.contains(&Scope::Org(o)))
    }
}

struct Subscriber {
    interest: Interest,
    tx: mpsc::Sender<Delivered>,
    slow: CancellationToken,
}

/// The node's subscribers.
#[derive(Default)]
pub struct Hub {
    subs: Mutex<HashMap<u64, Subscriber>>,
    next: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("subscribers", &self.lock().len())
            .finish()
    }
}

/// A registration; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<Hub>,
    id: u64,
    /// Events, in feed order.
    pub rx: mpsc::Receiver<Delivered>,
    /// Cancelled when the queue overflowed: close the connection (4008).
    pub slow: CancellationToken,
}

impl Subscription {
    /// Replaces what this subscription listens to.
    pub fn set_interest(&self, interest: Interest) {
        if let Some(s) = self.hub.lock().get_mut(&self.id) {
            s.interest = interest;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.lock().remove(&self.id);
    }
}

impl Hub {
    // std Mutex: held only for map updates and non-blocking sends, never across an await.
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Subscriber>> {
        self.subs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a subscriber with a queue of `queue` events.
    pub fn subscribe(self: &Arc<Self>, interest: Interest, queue: usize) -> Subscription {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let slow = CancellationToken::new();
        self.lock().insert(
            id,
            Subscriber {
                interest,
                tx,
                slow: slow.clone(),
            },
        );
        Subscription {
            hub: self.clone(),
            id,
            rx,
            slow,
        }
    }

    /// Hands one event to every matching subscriber.
    pub fn dispatch(&self, event: &PresenceEvent) {
        let mut shared: Option<(Arc<str>, Arc<PresenceEvent>)> = None;
        let mut delivered = 0u64;
        for s in self.lock().values() {
            if s.slow.is_cancelled() || !s.interest.matches(event) {
                continue;
            }
            let (json, ev) = shared
                .get_or_insert_with(|| {
                    (
                        serde_json::to_string(event).unwrap_or_default().into(),
                        Arc::new(event.clone()),
                    )
                })
                .clone();
            if s.tx
                .try_send(Delivered {
                    feed_id: event.feed_id,
                    json,
                    event: ev,
                })
                .is_err()
            {
                s.slow.cancel();
            } else {
                delivered += 1;
            }
        }
        metrics::counter!("presenced_events_delivered_total").increment(delivered);
    }

    /// Number of subscribers.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Follows the feed from its current head and dispatches every event until `stop`.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, stop: CancellationToken) {
        let mut pos = loop {
            match store.feed_head().await {
                Ok(h) => break h,
                Err(e) => {
                    tracing::warn!(error = %e, "feed loop: store unavailable, retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        loop {
            let read = tokio::select! {
                _ = stop.cancelled() => return,
                r = store.wait_feed(pos, 1000, Duration::from_secs(1)) => r,
            };
            match read {
                Ok(r) if r.reset => {
                    // Events were trimmed before this node read them: subscribers cannot be
                    // made whole, so they are closed and resume with a snapshot.
                    tracing::warn!(
                        "feed loop fell behind the feed's length; resetting subscribers"
                    );
                    for s in self.lock().values() {
                        s.slow.cancel();
                    }
                    pos = store.feed_head().await.unwrap_or(pos);
                }
                Ok(r) => {
                    metrics::counter!("presenced_events_total").increment(r.events.len() as u64);
                    for e in &r.events {
                        self.dispatch(e);
                        pos = e.feed_id;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "feed loop: store unavailable, retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}
