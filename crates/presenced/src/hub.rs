//! Fan-out on one node: the feed loop reads every event once (`Store::wait_feed`), encodes it
//! once, and hands the same bytes to every local subscriber that asked for its user or one of
//! its scopes (before or after the change). Each subscriber has a bounded queue; a full queue
//! marks it slow, and its connection closes with 4008. The loop never waits on a client. When
//! the feed itself was reset under the loop (it fell behind the feed's length, or the store
//! lost its data), every subscriber is told so and closes with 4010: what it holds may be
//! stale, and it resumes with a snapshot.
//!
//! Typing (SPEC §5): the node's bus loop hands every typing message to [`Hub::relay_typing`];
//! the hub's [`TypingBoard`] turns it into changes (someone started, stopped, or their
//! indicator expired: [`Hub::expire_typing`]), and each change is encoded once and offered to
//! the subscribers following that conversation who may see that typer.
//!
//! Counts-only subscribers (SPEC §5 `counts_only`) get no events: the count loop reads the
//! counts of every scope they follow in one store call a second — O(scopes followed), not
//! O(events) — and sends each follower a `count` frame when its scope's count changed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use presence_core::{
    ConversationId, FeedId, Millis, PresenceEvent, Scope, Store, TypingSignal, UserId,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::access::{Access, Sight};
use crate::protocol::ServerFrame;
use crate::typing::{Shown, TypingBoard};

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

/// Events the feed loop reads per store call.
const FEED_BATCH: usize = 1000;
/// How long one feed read waits for an event before asking again.
const FEED_WAIT: Duration = Duration::from_secs(1);
/// Pause before the feed loop tries a store that failed again.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// How often counts-only subscribers' scopes are read (SPEC §5: at most once a second).
pub const COUNT_PERIOD: Duration = Duration::from_secs(1);

/// What a subscriber's queue carries.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A presence event.
    Event(Delivered),
    /// A `count` frame, encoded.
    Count(Arc<str>),
    /// A `typing` frame, encoded.
    Typing(Arc<str>),
}

/// What a subscriber listens to, and what it may see.
#[derive(Debug, Clone)]
pub struct Interest {
    /// Scopes.
    pub scopes: HashSet<Scope>,
    /// Users.
    pub users: HashSet<UserId>,
    /// Conversations whose typing it follows.
    pub conversations: HashSet<ConversationId>,
    /// Everything it may see (SSE with no `scope`).
    pub all: bool,
    /// Counts-only scopes, as read (after the access policy), with the scope as the
    /// subscriber wrote it and the count it was last shown.
    pub counts: HashMap<Scope, (String, u64)>,
    /// The subscriber's rights: an event it may not see is never offered.
    pub access: Access,
}

impl Interest {
    /// Nothing yet, for a subscriber with `access`.
    pub fn new(access: Access) -> Self {
        Self {
            scopes: HashSet::new(),
            users: HashSet::new(),
            conversations: HashSet::new(),
            all: false,
            counts: HashMap::new(),
            access,
        }
    }

    /// Whether the event concerns this interest and the subscriber may see any of it.
    pub fn matches(&self, e: &PresenceEvent) -> bool {
        self.sight(e) != Sight::Nothing
    }

    /// How much of the event goes to this subscriber: nothing unless it concerns the
    /// interest, then what the access policy allows.
    pub fn sight(&self, e: &PresenceEvent) -> Sight {
        let concerns = self.all
            || self.users.contains(&e.user.user_id)
            || e.scopes().iter().any(|s| self.scopes.contains(s));
        if concerns {
            self.access.event(e)
        } else {
            Sight::Nothing
        }
    }
}

struct Subscriber {
    interest: Interest,
    tx: mpsc::Sender<Outbound>,
    slow: CancellationToken,
    reset: CancellationToken,
}

impl Subscriber {
    /// Queues `item`, or marks the subscriber slow when its queue is full.
    fn offer(&self, item: Outbound) -> bool {
        if self.tx.try_send(item).is_err() {
            self.slow.cancel();
            false
        } else {
            true
        }
    }
}

/// One counts-only follower of a scope.
struct CountFollower {
    /// The scope as the subscriber wrote it (its `count` frames say this).
    label: String,
    /// The count it was last shown.
    shown: u64,
}

/// The subscribers, indexed by what they listen to, so an event is offered only to those
/// that may want it: the ones following its user, its scopes before and after the change, or
/// everything.
#[derive(Default)]
struct Registry {
    subs: HashMap<u64, Subscriber>,
    by_user: HashMap<UserId, HashSet<u64>>,
    by_scope: HashMap<Scope, HashSet<u64>>,
    by_conversation: HashMap<ConversationId, HashSet<u64>>,
    everything: HashSet<u64>,
    counted: HashMap<Scope, HashMap<u64, CountFollower>>,
}

impl Registry {
    fn index(&mut self, id: u64, interest: &Interest) {
        for u in &interest.users {
            self.by_user.entry(u.clone()).or_default().insert(id);
        }
        for s in &interest.scopes {
            self.by_scope.entry(s.clone()).or_default().insert(id);
        }
        for c in &interest.conversations {
            self.by_conversation
                .entry(c.clone())
                .or_default()
                .insert(id);
        }
        if interest.all {
            self.everything.insert(id);
        }
        for (scope, (label, shown)) in &interest.counts {
            let followers = self.counted.entry(scope.clone()).or_default();
            // A follower already counted keeps what it was last shown.
            followers.entry(id).or_insert_with(|| CountFollower {
                label: label.clone(),
                shown: *shown,
            });
        }
    }

    fn unindex(&mut self, id: u64, interest: &Interest) {
        fn drop_from<K: std::hash::Hash + Eq>(
            map: &mut HashMap<K, HashSet<u64>>,
            key: &K,
            id: u64,
        ) {
            if let Some(set) = map.get_mut(key) {
                set.remove(&id);
                if set.is_empty() {
                    map.remove(key);
                }
            }
        }
        for u in &interest.users {
            drop_from(&mut self.by_user, u, id);
        }
        for s in &interest.scopes {
            drop_from(&mut self.by_scope, s, id);
        }
        for c in &interest.conversations {
            drop_from(&mut self.by_conversation, c, id);
        }
        self.everything.remove(&id);
        self.uncount(id, interest.counts.keys());
    }

    fn uncount<'a>(&mut self, id: u64, scopes: impl Iterator<Item = &'a Scope>) {
        for scope in scopes {
            if let Some(followers) = self.counted.get_mut(scope) {
                followers.remove(&id);
                if followers.is_empty() {
                    self.counted.remove(scope);
                }
            }
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(s) = self.subs.remove(&id) {
            self.unindex(id, &s.interest);
        }
    }

    fn set_interest(&mut self, id: u64, interest: Interest) {
        let Some(old) = self.subs.get(&id).map(|s| s.interest.clone()) else {
            return;
        };
        // Counted scopes it keeps stay as they are (with what they were last shown).
        let dropped: Vec<Scope> = old
            .counts
            .keys()
            .filter(|s| !interest.counts.contains_key(*s))
            .cloned()
            .collect();
        let kept = Interest {
            counts: HashMap::new(),
            ..old
        };
        self.unindex(id, &kept);
        self.uncount(id, dropped.iter());
        self.index(id, &interest);
        if let Some(s) = self.subs.get_mut(&id) {
            s.interest = interest;
        }
    }

    /// Subscribers that may want `e`, each once.
    fn candidates(&self, e: &PresenceEvent) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .by_user
            .get(&e.user.user_id)
            .into_iter()
            .flatten()
            .chain(
                e.scopes()
                    .iter()
                    .filter_map(|s| self.by_scope.get(s))
                    .flatten(),
            )
            .chain(self.everything.iter())
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// The node's subscribers.
#[derive(Default)]
pub struct Hub {
    registry: Mutex<Registry>,
    next: std::sync::atomic::AtomicU64,
    /// Who is typing where, as relayed by the bus. Only the bus loop changes it; never held
    /// together with the registry's lock.
    typing: Mutex<TypingBoard>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("subscribers", &self.len())
            .finish()
    }
}

/// A registration; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<Hub>,
    id: u64,
    /// Events in feed order, and count frames.
    pub rx: mpsc::Receiver<Outbound>,
    /// Cancelled when the queue overflowed: close the connection (4008).
    pub slow: CancellationToken,
    /// Cancelled when the feed was reset under the hub: close (4010) so the client resumes.
    pub reset: CancellationToken,
}

impl Subscription {
    /// Replaces what this subscription listens to.
    pub fn set_interest(&self, interest: Interest) {
        self.hub.lock().set_interest(self.id, interest);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.lock().remove(self.id);
    }
}

impl Hub {
    // std Mutex: held only for map updates and non-blocking sends, never across an await.
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a subscriber with a queue of `queue` events.
    pub fn subscribe(self: &Arc<Self>, interest: Interest, queue: usize) -> Subscription {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let slow = CancellationToken::new();
        let reset = CancellationToken::new();
        let mut reg = self.lock();
        reg.index(id, &interest);
        reg.subs.insert(
            id,
            Subscriber {
                interest,
                tx,
                slow: slow.clone(),
                reset: reset.clone(),
            },
        );
        drop(reg);
        Subscription {
            hub: self.clone(),
            id,
            rx,
            slow,
            reset,
        }
    }

    /// Hands one event to every subscriber that asked for it, as each may see it. The event
    /// is encoded once per form at most: whole (the truth), as the user shows it to members
    /// of their org and to anyone else, and as a departure for confined subscribers of the
    /// org the user left.
    pub fn dispatch(&self, event: &PresenceEvent) {
        type Form = Option<Option<(Arc<str>, Arc<PresenceEvent>)>>;
        let (mut whole, mut member, mut other, mut departed): (Form, Form, Form, Form) =
            (None, None, None, None);
        let encode = |e: PresenceEvent| {
            let json: Arc<str> = ServerFrame::Presence(e.clone()).encode().into();
            (json, Arc::new(e))
        };
        let mut delivered = 0u64;
        let reg = self.lock();
        for id in reg.candidates(event) {
            let Some(s) = reg.subs.get(&id) else { continue };
            if s.slow.is_cancelled() {
                continue;
            }
            // Candidates are a superset: the interest and the access policy decide.
            let sight = s.interest.sight(event);
            let form = match sight {
                Sight::Nothing => continue,
                Sight::Whole => &mut whole,
                Sight::As(presence_core::Onlooker::Member) => &mut member,
                Sight::As(presence_core::Onlooker::Other) => &mut other,
                Sight::Departure => &mut departed,
            };
            // Every subscriber shown a form is shown the same bytes, so the access policy of
            // the first one to need it makes it.
            let shown = form
                .get_or_insert_with(|| s.interest.access.show(event.clone(), sight).map(encode));
            let Some((json, ev)) = shown.clone() else {
                continue;
            };
            let item = Outbound::Event(Delivered {
                feed_id: event.feed_id,
                json,
                event: ev,
            });
            if s.offer(item) {
                delivered += 1;
            }
        }
        metrics::counter!("presenced_events_delivered_total").increment(delivered);
    }

    /// Every second: reads the counts of every scope a counts-only subscriber follows, in one
    /// store call, and sends a `count` frame to each follower whose scope's count changed.
    pub async fn run_counts(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        every: Duration,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let scopes: Vec<Scope> = self.lock().counted.keys().cloned().collect();
            if scopes.is_empty() {
                continue;
            }
            match store.counts(&scopes).await {
                Ok(counts) => self.send_counts(&scopes, &counts),
                Err(e) => tracing::warn!(error = %e, "count loop: store unavailable"),
            }
        }
    }

    fn send_counts(&self, scopes: &[Scope], counts: &[presence_core::ScopeCount]) {
        let mut reg = self.lock();
        let Registry { subs, counted, .. } = &mut *reg;
        let mut sent = 0u64;
        for (scope, count) in scopes.iter().zip(counts) {
            let Some(followers) = counted.get_mut(scope) else {
                continue;
            };
            for (id, f) in followers.iter_mut() {
                if f.shown == count.total {
                    continue;
                }
                let Some(sub) = subs.get(id) else { continue };
                let frame = ServerFrame::Count {
                    scope: f.label.clone(),
                    count: count.total,
                };
                if sub.offer(Outbound::Count(frame.encode().into())) {
                    f.shown = count.total;
                    sent += 1;
                }
            }
        }
        metrics::counter!("presenced_count_frames_total").increment(sent);
    }

    fn board(&self) -> MutexGuard<'_, TypingBoard> {
        self.typing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A typing message from the bus, at `now` (the node's clock): its changes go out.
    pub fn relay_typing(&self, signal: TypingSignal, now: Millis) {
        let shown = self.board().relay(signal, now);
        self.show_typing(&shown);
    }

    /// Ends the typing indicators whose `until` has passed by `now`, with `typing: false`.
    pub fn expire_typing(&self, now: Millis) {
        let shown = self.board().expire(now);
        if !shown.is_empty() {
            metrics::counter!("presenced_typing_expired_total").increment(shown.len() as u64);
            self.show_typing(&shown);
        }
    }

    /// `typing: true` frames for who is typing now in `conversations`, as `access` may see
    /// them: what a new subscriber is told right after its snapshot.
    pub fn typing_now(
        &self,
        conversations: &[ConversationId],
        access: &Access,
    ) -> Vec<ServerFrame> {
        let board = self.board();
        conversations
            .iter()
            .flat_map(|c| {
                board
                    .typers(c)
                    .into_iter()
                    .filter(|(_, org)| access.sees_typing(org.as_ref()))
                    .map(move |(user_id, _)| ServerFrame::Typing {
                        conversation_id: c.clone(),
                        user_id,
                        typing: true,
                    })
            })
            .collect()
    }

    /// Offers each change, encoded once, to the followers of its conversation who may see it.
    fn show_typing(&self, shown: &[Shown]) {
        let reg = self.lock();
        let mut delivered = 0u64;
        for change in shown {
            let Some(followers) = reg.by_conversation.get(&change.conversation) else {
                continue;
            };
            let mut json: Option<Arc<str>> = None;
            for id in followers {
                let Some(s) = reg.subs.get(id) else { continue };
                if s.slow.is_cancelled() || !s.interest.access.sees_typing(change.org.as_ref()) {
                    continue;
                }
                let json = json.get_or_insert_with(|| {
                    ServerFrame::Typing {
                        conversation_id: change.conversation.clone(),
                        user_id: change.user.clone(),
                        typing: change.typing,
                    }
                    .encode()
                    .into()
                });
                if s.offer(Outbound::Typing(json.clone())) {
                    delivered += 1;
                }
            }
        }
        metrics::counter!("presenced_typing_frames_total").increment(delivered);
    }

    /// Number of subscribers.
    pub fn len(&self) -> usize {
        self.lock().subs.len()
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
                        _ = tokio::time::sleep(RETRY_AFTER) => {}
                    }
                }
            }
        };
        loop {
            let read = tokio::select! {
                _ = stop.cancelled() => return,
                r = store.wait_feed(pos, FEED_BATCH, FEED_WAIT) => r,
            };
            match read {
                Ok(r) if r.reset => {
                    // Events were trimmed before this node read them, or the store lost its
                    // data (and versions start again): subscribers cannot be made whole, so
                    // they are closed and resume with a snapshot.
                    tracing::warn!(
                        "the feed was reset under this node (it fell behind, or the store lost its data); resetting subscribers"
                    );
                    for s in self.lock().subs.values() {
                        s.reset.cancel();
                    }
                    pos = store.feed_head().await.unwrap_or(pos);
                }
                Ok(r) => {
                    metrics::counter!("presenced_events_total").increment(r.events.len() as u64);
                    if r.skipped > 0 {
                        // Logged by the store; counted here, and delivery goes on after them.
                        metrics::counter!("presenced_feed_entries_skipped_total")
                            .increment(r.skipped);
                    }
                    for e in &r.events {
                        self.dispatch(e);
                    }
                    pos = r.next_after(pos);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "feed loop: store unavailable, retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(RETRY_AFTER) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_core::{DeviceSet, Status, ZoneId};

    fn event(user: &str, zone: Option<&str>, prev_zone: Option<&str>) -> PresenceEvent {
        PresenceEvent {
            feed_id: FeedId { ms: 1, seq: 0 },
            user: presence_core::PresenceView {
                user_id: UserId::new(user).unwrap(),
                status: Status::Online,
                away_reason: None,
                last_activity: Some(0),
                last_seen: None,
                zone_id: zone.map(|z| ZoneId::new(z).unwrap()),
                org_id: None,
                devices: DeviceSet::EMPTY,
                custom_status: None,
                metadata: None,
                invisible: false,
                privacy: None,
                version: 1,
                updated_at: Some(0),
                hidden: None,
                hidden_from_org: None,
            },
            prev_status: Status::Offline,
            prev_zone_id: prev_zone.map(|z| ZoneId::new(z).unwrap()),
            prev_org_id: None,
            ts: 0,
            onlookers: Default::default(),
        }
    }

    fn interest(scopes: &[&str], users: &[&str]) -> Interest {
        let watcher = crate::auth::Principal {
            user: UserId::new("watcher").unwrap(),
            org: None,
            role: crate::auth::Role::User,
            expires_at: u64::MAX,
        };
        Interest {
            scopes: scopes.iter().map(|s| s.parse().unwrap()).collect(),
            users: users.iter().map(|u| UserId::new(*u).unwrap()).collect(),
            ..Interest::new(Access::new(
                watcher,
                false,
                std::sync::Arc::new(presence_core::ManualClock::new(0)),
            ))
        }
    }

    #[test]
    fn events_reach_exactly_the_subscribers_that_asked() {
        let hub = Arc::new(Hub::default());
        let mut by_user = hub.subscribe(interest(&[], &["1"]), 8);
        let mut by_zone = hub.subscribe(interest(&["zone:10"], &[]), 8);
        let mut everyone = hub.subscribe(interest(&["global"], &[]), 8);
        let mut other = hub.subscribe(interest(&["zone:99"], &["2"]), 8);
        hub.dispatch(&event("1", Some("11"), Some("10")));
        assert!(by_user.rx.try_recv().is_ok());
        assert!(
            by_zone.rx.try_recv().is_ok(),
            "leaving the zone is news for the zone"
        );
        assert!(everyone.rx.try_recv().is_ok());
        assert!(other.rx.try_recv().is_err());
        // Changing or dropping a subscription leaves nothing behind in the index.
        by_zone.set_interest(interest(&["zone:12"], &[]));
        hub.dispatch(&event("3", Some("10"), None));
        assert!(by_zone.rx.try_recv().is_err());
        drop((by_user, by_zone, everyone, other));
        let reg = hub.lock();
        assert!(
            reg.subs.is_empty()
                && reg.by_user.is_empty()
                && reg.by_scope.is_empty()
                && reg.by_conversation.is_empty()
                && reg.everything.is_empty()
        );
    }

    fn typing(c: &str, u: &str, org: Option<&str>, until: Option<Millis>) -> TypingSignal {
        TypingSignal {
            conversation_id: ConversationId::new(c).unwrap(),
            user_id: UserId::new(u).unwrap(),
            org_id: org.map(|o| presence_core::OrgId::new(o).unwrap()),
            until,
        }
    }

    fn following(conversations: &[&str], org: Option<&str>) -> Interest {
        let watcher = crate::auth::Principal {
            user: UserId::new("watcher").unwrap(),
            org: org.map(|o| presence_core::OrgId::new(o).unwrap()),
            role: crate::auth::Role::User,
            expires_at: u64::MAX,
        };
        Interest {
            conversations: conversations
                .iter()
                .map(|c| ConversationId::new(*c).unwrap())
                .collect(),
            ..Interest::new(Access::new(
                watcher,
                true,
                std::sync::Arc::new(presence_core::ManualClock::new(0)),
            ))
        }
    }

    fn typing_frame(sub: &mut Subscription) -> Option<serde_json::Value> {
        match sub.rx.try_recv() {
            Ok(Outbound::Typing(json)) => Some(serde_json::from_str(&json).unwrap()),
            Ok(other) => panic!("not a typing frame: {other:?}"),
            Err(_) => None,
        }
    }

    #[test]
    fn typing_reaches_the_conversations_followers_in_the_typers_org_once_per_change() {
        let hub = Arc::new(Hub::default());
        let mut c1 = hub.subscribe(following(&["c1"], None), 8);
        let mut c1_org100 = hub.subscribe(following(&["c1"], Some("100")), 8);
        let mut c1_org200 = hub.subscribe(following(&["c1"], Some("200")), 8);
        let mut c2 = hub.subscribe(following(&["c2"], None), 8);
        hub.relay_typing(typing("c1", "1", Some("100"), Some(6000)), 0);
        let f = typing_frame(&mut c1).unwrap();
        assert_eq!(
            f,
            serde_json::json!({"type": "typing", "conversation_id": "c1", "user_id": "1", "typing": true})
        );
        assert_eq!(typing_frame(&mut c1_org100), Some(f));
        assert_eq!(typing_frame(&mut c1_org200), None, "another tenant's typer");
        assert_eq!(typing_frame(&mut c2), None, "another conversation");
        // A renewal shows nothing; the expiry shows `false` once.
        hub.relay_typing(typing("c1", "1", Some("100"), Some(7000)), 1000);
        assert_eq!(typing_frame(&mut c1), None);
        hub.expire_typing(6999);
        assert_eq!(typing_frame(&mut c1), None);
        hub.expire_typing(7000);
        assert_eq!(typing_frame(&mut c1).unwrap()["typing"], false);
        hub.expire_typing(8000);
        assert_eq!(typing_frame(&mut c1), None);
        // Who types now, for a new subscriber, as its access allows.
        hub.relay_typing(typing("c1", "2", Some("200"), Some(9000)), 8000);
        let confined = following(&[], Some("100")).access;
        let c1_id = ConversationId::new("c1").unwrap();
        assert!(
            hub.typing_now(std::slice::from_ref(&c1_id), &confined)
                .is_empty()
        );
        assert_eq!(
            hub.typing_now(&[c1_id], &following(&[], None).access).len(),
            1
        );
    }

    #[test]
    fn a_full_queue_marks_the_subscriber_slow_and_never_blocks() {
        let hub = Arc::new(Hub::default());
        let sub = hub.subscribe(interest(&[], &["1"]), 2);
        for _ in 0..3 {
            hub.dispatch(&event("1", None, None));
        }
        assert!(sub.slow.is_cancelled());
    }
}
