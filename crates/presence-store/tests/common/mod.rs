//! Shared by the store test binaries: builds a fresh store of either kind on a manual clock.
//!
//! Redis tests use `presence_testkit::redis_url()`: `PRESENCE_TEST_REDIS_URL`, or a private
//! server of this test binary; never a Redis they were not given. Each test works under a
//! unique key prefix and never flushes anything.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use presence_core::*;
use presence_store::{MemoryStore, RedisConfig, RedisStore};
pub use presence_testkit::redis_url;

/// 2024-11-26T10:25:00Z, the seed's date.
pub const T0: Millis = 1_732_616_700_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Redis,
}

tokio::task_local! {
    /// The stores the kits of one scenario made, for [`checked_scenario`].
    /// With each: whether its feed is short on purpose (it may be trimmed by the end).
    static SCENARIO_STORES: std::cell::RefCell<Vec<(Arc<dyn Store>, bool)>>;
}

/// Runs one scenario, then checks every store it made, in one place for every scenario:
/// replaying the feed from empty gives every user's current view, and a repair check finds
/// nothing off (no transition leaves an index behind its record). A scenario that makes a
/// kit outside this (no conformance macro) is not checked.
pub async fn checked_scenario(scenario: impl Future<Output = ()>) {
    let stores = SCENARIO_STORES
        .scope(std::cell::RefCell::new(Vec::new()), async {
            scenario.await;
            SCENARIO_STORES.with(|s| s.take())
        })
        .await;
    for (store, short_feed) in stores {
        let replay = presence_store::replay::check(store.as_ref())
            .await
            .expect("replay check");
        assert!(
            replay.mismatches.is_empty(),
            "the feed replayed from empty disagrees with the store: {:#?}",
            replay.mismatches
        );
        // A check that compared nothing proves nothing: only a scenario that trims its feed
        // on purpose (a small feed_max_len) may end with a feed that no longer replays.
        assert!(
            replay.checked || short_feed,
            "the feed could not be replayed from empty (trimmed or undecodable)"
        );
        let check = store.repair(RepairMode::CHECK).await.expect("repair check");
        assert!(
            check.is_clean(),
            "a repair check after the scenario: {check:?}"
        );
    }
}

pub struct Kit {
    pub kind: Kind,
    pub clock: ManualClock,
    pub store: Arc<dyn Store>,
    pub settings: StoreSettings,
    memory: Option<MemoryStore>,
    redis: Option<RedisStore>,
}

/// A raw connection to the tests' Redis, to look at keys as an operator would.
pub async fn raw_redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url().as_str())
        .expect("Redis URL")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis at {}: {e}", redis_url()))
}

/// Every key matching `pattern` (a `SCAN MATCH` glob), without blocking the server as `KEYS`
/// would on a shared Redis.
pub async fn scan_keys(raw: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(raw)
            .await
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    keys
}

/// A key prefix no other test uses, in this run or another on the same Redis.
pub fn unique_prefix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "test:{}:{}:{}:",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

pub fn node(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}
pub fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}
pub fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}
pub fn zone(s: &str) -> ZoneId {
    ZoneId::new(s).unwrap()
}
pub fn org(s: &str) -> OrgId {
    OrgId::new(s).unwrap()
}

/// Default settings but for an offline grace of zero: a close is the offline transition.
pub fn no_grace() -> StoreSettings {
    StoreSettings {
        offline_grace: Duration::ZERO,
        ..Default::default()
    }
}

/// A WebSocket session on the web, keeping zone and org; change fields with `..request(…)`.
pub fn request(user: &str, session: &str) -> OpenSession {
    OpenSession {
        user: uid(user),
        session: sid(session),
        device: DeviceKind::Web,
        zone: None,
        org: None,
        leased: false,
        invisible: false,
    }
}

impl Kit {
    pub async fn new(kind: Kind) -> Self {
        Self::with(kind, StoreSettings::default()).await
    }

    pub async fn with(kind: Kind, settings: StoreSettings) -> Self {
        let kit = Self::unchecked(kind, settings).await;
        let short_feed = kit.settings.feed_max_len < StoreSettings::default().feed_max_len;
        let _ = SCENARIO_STORES.try_with(|s| s.borrow_mut().push((kit.store.clone(), short_feed)));
        kit
    }

    async fn unchecked(kind: Kind, settings: StoreSettings) -> Self {
        let clock = ManualClock::new(T0);
        let shared: SharedClock = Arc::new(clock.clone());
        match kind {
            Kind::Memory => {
                let m = MemoryStore::new(node("node-a"), shared, settings.clone());
                Kit {
                    kind,
                    clock,
                    store: Arc::new(m.clone()),
                    settings,
                    memory: Some(m),
                    redis: None,
                }
            }
            Kind::Redis => {
                let mut config = RedisConfig::new(redis_url());
                config.key_prefix = unique_prefix();
                let r = RedisStore::connect(config, node("node-a"), shared, settings.clone())
                    .await
                    .unwrap_or_else(|e| panic!("Redis tests need a Redis at {}: {e}", redis_url()));
                Kit {
                    kind,
                    clock,
                    store: Arc::new(r.clone()),
                    settings,
                    memory: None,
                    redis: Some(r),
                }
            }
        }
    }

    /// Another handle on the same store, speaking for node `id`.
    pub fn node(&self, id: &str) -> Arc<dyn Store> {
        match (&self.memory, &self.redis) {
            (Some(m), _) => Arc::new(m.handle(node(id))),
            (_, Some(r)) => Arc::new(r.handle(node(id))),
            _ => unreachable!(),
        }
    }

    /// The Redis store, for tests that look at the keys.
    pub fn redis(&self) -> Option<&RedisStore> {
        self.redis.as_ref()
    }

    /// Moves time on. The kit's own node renews its lease as a live node would; other
    /// handles renew only when a test says so.
    pub async fn advance(&self, d: Duration) {
        self.clock.advance(d);
        self.store.renew_node_lease(0).await.expect("renew lease");
    }

    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    pub async fn open(&self, user: &str, session: &str) -> Applied {
        self.open_with(&self.store, user, session, DeviceKind::Web, None, None)
            .await
    }

    pub async fn open_with(
        &self,
        store: &Arc<dyn Store>,
        user: &str,
        session: &str,
        device: DeviceKind,
        zone_id: Option<&str>,
        org_id: Option<&str>,
    ) -> Applied {
        let open = OpenSession {
            device,
            zone: zone_id.map(zone),
            org: org_id.map(org),
            ..request(user, session)
        };
        store.open_session(open).await.expect("open")
    }

    pub async fn close(&self, user: &str, session: &str) -> Applied {
        self.store
            .close_session(&uid(user), &sid(session))
            .await
            .expect("close")
    }

    /// Activity of one user, now; returns the events it made.
    pub async fn activity(&self, user: &str) -> Vec<PresenceEvent> {
        self.store
            .record_activity(&[Activity {
                user: uid(user),
                at: self.now(),
            }])
            .await
            .expect("activity")
    }

    pub async fn view(&self, user: &str) -> Option<PresenceView> {
        self.store.view(&uid(user)).await.expect("view")
    }

    pub async fn status(&self, user: &str) -> Option<Status> {
        self.view(user).await.map(|v| v.status)
    }

    pub async fn count(&self, scope: Scope) -> ScopeCount {
        self.store.counts(&[scope]).await.expect("counts")[0]
    }

    pub async fn list(&self, scope: Scope, limit: usize) -> ScopePage {
        self.store
            .list(
                &scope,
                &ListQuery {
                    limit,
                    cursor: None,
                    status: None,
                },
            )
            .await
            .expect("list")
    }

    pub async fn list_ids(&self, scope: Scope) -> Vec<String> {
        self.list(scope, 1000)
            .await
            .users
            .into_iter()
            .map(|v| v.user_id.to_string())
            .collect()
    }

    pub async fn head(&self) -> FeedId {
        self.store.feed_head().await.expect("head")
    }

    /// Every event after `after`.
    pub async fn events_since(&self, after: FeedId) -> Vec<PresenceEvent> {
        let read = self
            .store
            .read_feed(after, 100_000)
            .await
            .expect("read feed");
        assert!(!read.reset, "unexpected feed reset");
        read.events
    }

    pub async fn sweep(&self) -> SweepReport {
        self.store.sweep().await.expect("sweep")
    }
}
