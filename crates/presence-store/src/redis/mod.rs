//! The Redis store: presence shared by any number of nodes through one Redis (≥ 7) or Valkey.
//!
//! Layout (after `key_prefix`; the seed's keys keep the seed's names and fields):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `presence:{user}` | hash | the seed's fields plus version, away reason, devices, sessions, custom status |
//! | `online:global`, `online:zone:{z}`, `online:org:{o}` | zset | online and away users by last activity (s) |
//! | `away_count` | hash | scope → how many of its users are away |
//! | `grace` | zset | users in the offline grace, by deadline (ms) |
//! | `leases` | zset | `user|session` of REST heartbeat sessions, by expiry (ms) |
//! | `nodes` | zset | node id → lease expiry (ms) |
//! | `node:{id}:users` | list | users with a session on that node, for reaping; each node's sweep drops those who left |
//! | `node:{id}:info` | hash | `started_at`, `last_renewal` (ms), `sessions` (as reported), for `nodes()`; `sc`: sessions the store records on the node, kept by every transition |
//! | `node:{id}:reaped` | string | set when the node was reaped, so its next renewal answers `Lost` (24 h TTL) |
//! | `ended:{user}|{session}` | string | a WebSocket's session the service ended: until when (ms) it may not open again, so its node closes the socket rather than re-assert it; a TTL of as long (`end_mark_lifetime`) |
//! | `last_seen` | zset | offline users by last seen (s), for retention |
//! | `expiring:custom` | zset | users whose custom status has an `expires_at`, by it (ms) |
//! | `feed` | stream | events, capped with `MAXLEN ~` |
//! | `history:{user}` | hash | UTC day number (days since 1970-01-01) → ms present that day, for `history_retention` |
//! | `history:due` | zset | users with history by their oldest day, for retention |
//! | `geo:global`, `geo:org:{o}` | zset (GEO) | users in the public scope sets who share a location, for nearby |
//! | `typing:{conversation}` | hash | user → `until ms|org`: who is typing; the key expires with its newest entry |
//! | `webhook:{endpoint}` | hash | a webhook endpoint's delivery lease: `holder`, `until` (ms), `acked` (feed id), `report` (see `webhooks.rs`) |
//! | `sweep:away_cutoff`, `sweep:stale_pos`, `sweep:scope_pos` | string | where the sweeps' windows stand |
//! | `repair:pos` | hash | where the periodic repair stands: `records` (SCAN cursor), `set` and `member` (index set and ZSCAN cursor), `scope` (SCAN cursor), `node` (rank in `nodes`) |
//!
//! and one Pub/Sub channel, `presenced:bus` (after the prefix): the bus (see `crate::bus`).
//!
//! No presence key carries a Redis TTL (only the `reaped` and `ended` marks and the ephemeral
//! typing keys above, which hold no presence): every expiry is decided by the sweep against
//! the nodes' `Clock`,
//! so a record and its index entries always leave together (the seed's TTLs left sorted-set
//! members behind), and tests can drive time.

mod codec;
mod failure;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::Duration;

use async_trait::async_trait;
use presence_core::scope::filtered_scan_budget;
use presence_core::settings::ms;
use presence_core::time::format_rfc3339;
use presence_core::{
    Activity, Applied, BusMessage, BusReceiver, Change, ConversationId, Day, FeedId, FeedRead,
    InactivePage, LeaseRenewal, ListCursor, ListQuery, Millis, NearbyQuery, NearbyUser, NodeId,
    NodeInfo, OpenSession, PresenceEvent, PresenceView, RepairMode, RepairReport, Scope,
    ScopeCount, ScopePage, SessionId, SharedClock, Store, StoreError, StoreSettings, SweepReport,
    TransitionError, Typer, TypingOutcome, TypingWrite, UserId, UserSessions,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Script, ScriptInvocation, Value};
use tokio::sync::Mutex;

use codec::{
    decode_activity, decode_applied, decode_closed, decode_count, decode_counts, decode_feed_head,
    decode_feed_read, decode_history, decode_inactive, decode_lease_lost, decode_leases,
    decode_list, decode_major_version, decode_members, decode_nearby, decode_node_sessions,
    decode_nodes, decode_opened_many, decode_reap_step, decode_renewal, decode_session_count,
    decode_sessions, decode_sweep_step, decode_typers, decode_typing, decode_views,
};

use failure::store_error;

use crate::bus::RedisBus;
use crate::sweep::Drain;

/// The bus's Pub/Sub channel, after the key prefix (channels are server-wide, not per
/// database: the prefix keeps deployments sharing one Redis apart).
const BUS_CHANNEL: &str = "presenced:bus";

/// How to reach Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://host:port/db` (or `rediss://`).
    pub url: String,
    /// Prepended to every key (`""` keeps the seed's names).
    pub key_prefix: String,
    /// How long one command may take before the call fails as unavailable.
    pub command_timeout: Duration,
}

impl RedisConfig {
    /// A config for `url` with no prefix and a 2 s command timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: String::new(),
            command_timeout: Duration::from_secs(2),
        }
    }
}

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("../../lua/common.lua"),
            "\n",
            include_str!(concat!("../../lua/", $file))
        ))
    };
}

/// The Lua scripts, one per transition kind; see the `.lua` files for KEYS and ARGV.
#[derive(Debug)]
struct Scripts {
    open: Script,
    close: Script,
    renew_session: Script,
    apply: Script,
    activity: Script,
    node_lease: Script,
    sweep_away: Script,
    sweep_grace: Script,
    sweep_leases: Script,
    reap_node: Script,
    sweep_custom: Script,
    sweep_retention: Script,
    sweep_stale: Script,
    sweep_scopes: Script,
    compact_node: Script,
    node_sessions: Script,
    list: Script,
    read_feed: Script,
    typing: Script,
    history: Script,
    sweep_history: Script,
    inactive: Script,
    nearby: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            open: script!("open.lua"),
            close: script!("close.lua"),
            renew_session: script!("renew_session.lua"),
            apply: script!("apply.lua"),
            activity: script!("activity.lua"),
            node_lease: script!("node_lease.lua"),
            sweep_away: script!("sweep_away.lua"),
            sweep_grace: script!("sweep_grace.lua"),
            sweep_leases: script!("sweep_leases.lua"),
            reap_node: script!("reap_node.lua"),
            sweep_custom: script!("sweep_custom.lua"),
            sweep_retention: script!("sweep_retention.lua"),
            sweep_stale: script!("sweep_stale.lua"),
            sweep_scopes: script!("sweep_scopes.lua"),
            compact_node: script!("compact_node.lua"),
            node_sessions: script!("node_sessions.lua"),
            list: script!("list.lua"),
            read_feed: script!("read_feed.lua"),
            typing: script!("typing.lua"),
            history: script!("history.lua"),
            sweep_history: script!("sweep_history.lua"),
            inactive: script!("inactive.lua"),
            nearby: script!("nearby.lua"),
        }
    }

    fn all(&self) -> [&Script; 23] {
        [
            &self.open,
            &self.close,
            &self.renew_session,
            &self.apply,
            &self.activity,
            &self.node_lease,
            &self.sweep_away,
            &self.sweep_grace,
            &self.sweep_leases,
            &self.reap_node,
            &self.sweep_custom,
            &self.sweep_retention,
            &self.sweep_stale,
            &self.sweep_scopes,
            &self.compact_node,
            &self.node_sessions,
            &self.list,
            &self.read_feed,
            &self.typing,
            &self.history,
            &self.sweep_history,
            &self.inactive,
            &self.nearby,
        ]
    }
}

/// Which sessions close.lua may close, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseMode {
    /// Any; an unknown one changes nothing (a socket's own close).
    Any,
    /// Only a REST heartbeat lease (`DELETE /heartbeat`).
    Lease,
    /// Any open one, for the service, marking a WebSocket's as ended (`DELETE /sessions`).
    End,
}

/// Most users one activity script call carries; bigger batches are split.
const ACTIVITY_CHUNK: usize = 500;

/// Most sessions one open script call re-opens (`reopen_sessions`); bigger batches are split,
/// so one call holds Redis for a bounded time (about a few milliseconds).
const REOPEN_CHUNK: usize = 1000;

/// A handle on the Redis store, speaking for one node. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    /// `XREAD BLOCK` holds its connection: waiting gets a connection of its own so it never
    /// stalls the commands multiplexed on `conn`.
    waiter: Arc<Mutex<Option<MultiplexedConnection>>>,
    client: Client,
    config: RedisConfig,
    node: NodeId,
    /// Whether this handle has renewed its node's lease before: a renewal that then finds the
    /// node unknown means its sessions were reaped or lost.
    renewed: Arc<AtomicBool>,
    clock: SharedClock,
    settings: StoreSettings,
    scripts: Arc<Scripts>,
    /// The bus: one subscriber connection, shared by this store's handles.
    bus: Arc<RedisBus>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("key_prefix", &self.config.key_prefix)
            .field("node", &self.node)
            .finish()
    }
}

impl RedisStore {
    /// Connects, checks the server version and loads the scripts.
    pub async fn connect(
        config: RedisConfig,
        node: NodeId,
        clock: SharedClock,
        settings: StoreSettings,
    ) -> Result<Self, StoreError> {
        let client = Client::open(config.url.as_str())
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let manager = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.command_timeout))
            .set_connection_timeout(Some(config.command_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_with_config(client.clone(), manager)
            .await
            .map_err(store_error)?;
        let bus = Arc::new(RedisBus::new(
            client.clone(),
            format!("{}{BUS_CHANNEL}", config.key_prefix),
            config.command_timeout,
        ));
        let store = Self {
            conn,
            waiter: Arc::new(Mutex::new(None)),
            client,
            bus,
            config,
            node,
            renewed: Arc::new(AtomicBool::new(false)),
            clock,
            settings,
            scripts: Arc::new(Scripts::new()),
        };
        store.check_version().await?;
        let mut conn = store.conn.clone();
        for s in store.scripts.all() {
            s.prepare_invoke()
                .load_async(&mut conn)
                .await
                .map_err(store_error)?;
        }
        Ok(store)
    }

    /// Another handle on the same Redis and prefix, speaking for `node`.
    pub fn handle(&self, node: NodeId) -> Self {
        Self {
            node,
            waiter: Arc::new(Mutex::new(None)),
            renewed: Arc::new(AtomicBool::new(false)),

            ..self.clone()
        }
    }

    /// The key prefix in use.
    pub fn key_prefix(&self) -> &str {
        &self.config.key_prefix
    }

    async fn check_version(&self) -> Result<(), StoreError> {
        let info: Value = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        match decode_major_version(&info)? {
            Some(v) if v >= 7 => Ok(()),
            Some(v) => Err(StoreError::Unavailable(format!(
                "presenced needs Redis 7 or newer (found {v})"
            ))),
            None => Err(StoreError::Unavailable(
                "could not read the Redis version".into(),
            )),
        }
    }

    fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    /// An invocation with the common ARGV (prefix, now, now as text, feed length).
    fn invocation<'a>(&self, script: &'a Script, now: Millis) -> ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        inv.arg(&self.config.key_prefix)
            .arg(now)
            .arg(format_rfc3339(now))
            .arg(self.settings.feed_max_len);
        inv
    }

    async fn invoke(&self, inv: &ScriptInvocation<'_>) -> Result<Value, StoreError> {
        inv.invoke_async(&mut self.conn.clone())
            .await
            .map_err(store_error)
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.config.key_prefix)
    }

    /// Drains one sweep step (see [`crate::sweep`]) with `script`; `args` follow the common
    /// ARGV.
    async fn drain(&self, script: &Script, now: Millis, args: &[i64]) -> Result<usize, StoreError> {
        let mut drain = Drain::default();
        while drain.more() {
            let mut inv = self.invocation(script, now);
            for a in args {
                inv.arg(*a);
            }
            drain.record(decode_sweep_step(&self.invoke(&inv).await?)?);
        }
        Ok(drain.changed())
    }

    /// Ends the sessions of every node whose lease lapsed; returns (sessions, nodes reaped).
    async fn reap_dead_nodes(&self, now: Millis, batch: i64) -> Result<(usize, usize), StoreError> {
        let dead: Value = redis::cmd("ZRANGEBYSCORE")
            .arg(self.key("nodes"))
            .arg("-inf")
            .arg(format!("({now}"))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        let (mut sessions, mut nodes) = (0, 0);
        for node in decode_members(&dead)? {
            let mut drain = Drain::default();
            while drain.more() {
                let mut inv = self.invocation(&self.scripts.reap_node, now);
                inv.arg(&node).arg(batch);
                let (step, reaped) = decode_reap_step(&self.invoke(&inv).await?)?;
                nodes += usize::from(reaped);
                drain.record(step);
            }
            sessions += drain.changed();
        }
        Ok((sessions, nodes))
    }

    /// One call of open.lua for `opens`: one reply per session, in order.
    /// Opens sessions in one script call; `reassert`: a node re-asserting sessions the store
    /// lost (an invisible user stays invisible).
    async fn open_many(
        &self,
        opens: &[OpenSession],
        reassert: bool,
    ) -> Result<Vec<Result<Applied, StoreError>>, StoreError> {
        let now = self.now();
        let s = &self.settings;
        let mut inv = self.invocation(&self.scripts.open, now);
        inv.arg(s.sessions_per_user)
            .arg(ms(s.node_lease))
            .arg(if reassert { "1" } else { "" });
        for open in opens {
            inv.arg(open.user.as_str())
                .arg(open.session.as_str())
                .arg(open.device.as_str())
                .arg(if open.leased { "" } else { self.node.as_str() })
                .arg(open.zone.as_ref().map_or("", |z| z.as_str()))
                .arg(open.org.as_ref().map_or("", |o| o.as_str()))
                .arg(if open.leased {
                    (now + ms(s.online_ttl)).to_string()
                } else {
                    String::new()
                })
                .arg(if open.invisible { "1" } else { "" });
        }
        decode_opened_many(opens, &self.invoke(&inv).await?)
    }

    async fn close(
        &self,
        user: &UserId,
        session: &SessionId,
        mode: CloseMode,
    ) -> Result<Applied, StoreError> {
        let mut inv = self.invocation(&self.scripts.close, self.now());
        inv.arg(user.as_str())
            .arg(session.as_str())
            .arg(ms(self.settings.offline_grace));
        match mode {
            CloseMode::Any => inv.arg(""),
            CloseMode::Lease => inv.arg("lease"),
            CloseMode::End => inv
                .arg("end")
                .arg(ms(self.settings.end_mark_lifetime()).max(1)),
        };
        decode_closed(user, session, &self.invoke(&inv).await?)
    }

    async fn read_feed_at(&self, after: FeedId, limit: usize) -> Result<FeedRead, StoreError> {
        let mut inv = self.invocation(&self.scripts.read_feed, self.now());
        inv.arg(after.to_string()).arg(limit.max(1));
        decode_feed_read(&self.invoke(&inv).await?)
    }

    async fn waiter_connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut slot = self.waiter.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        // No response timeout here: XREAD BLOCK is bounded by its own BLOCK argument and the
        // tokio timeout around it.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.command_timeout))
            .set_response_timeout(None);
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(store_error)?;
        *slot = Some(c.clone());
        Ok(c)
    }
}

#[async_trait]
impl Store for RedisStore {
    fn node_id(&self) -> &NodeId {
        &self.node
    }

    async fn open_session(&self, open: OpenSession) -> Result<Applied, StoreError> {
        self.open_many(std::slice::from_ref(&open), false)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("open answered nothing".into()))?
    }

    async fn close_session(
        &self,
        user: &UserId,
        session: &SessionId,
    ) -> Result<Applied, StoreError> {
        self.close(user, session, CloseMode::Any).await
    }

    async fn close_leased_session(
        &self,
        user: &UserId,
        session: &SessionId,
    ) -> Result<Applied, StoreError> {
        self.close(user, session, CloseMode::Lease).await
    }

    async fn end_session(&self, user: &UserId, session: &SessionId) -> Result<Applied, StoreError> {
        self.close(user, session, CloseMode::End).await
    }

    async fn sessions(&self, user: &UserId) -> Result<Option<UserSessions>, StoreError> {
        let hash: Value = redis::cmd("HGETALL")
            .arg(self.key(&format!("presence:{user}")))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        decode_sessions(user, &hash)
    }

    async fn reopen_sessions(
        &self,
        opens: &[OpenSession],
    ) -> Result<Vec<Result<Applied, TransitionError>>, StoreError> {
        let mut out = Vec::with_capacity(opens.len());
        for chunk in opens.chunks(REOPEN_CHUNK) {
            for r in self.open_many(chunk, true).await? {
                out.push(match r {
                    Ok(a) => Ok(a),
                    Err(StoreError::Refused(e)) => Err(e),
                    Err(e) => return Err(e),
                });
            }
        }
        Ok(out)
    }

    async fn node_session_count(&self) -> Result<u64, StoreError> {
        let n: Value = redis::cmd("HGET")
            .arg(self.key(&format!("node:{}:info", self.node)))
            .arg("sc")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        decode_session_count(&n)
    }

    async fn node_sessions(&self) -> Result<Vec<(UserId, SessionId)>, StoreError> {
        let mut inv = self.invocation(&self.scripts.node_sessions, self.now());
        inv.arg(self.node.as_str());
        decode_node_sessions(&self.invoke(&inv).await?)
    }

    async fn renew_session(
        &self,
        user: &UserId,
        session: &SessionId,
    ) -> Result<Millis, StoreError> {
        let mut inv = self.invocation(&self.scripts.renew_session, self.now());
        inv.arg(user.as_str())
            .arg(session.as_str())
            .arg(ms(self.settings.online_ttl));
        decode_renewal(session, &self.invoke(&inv).await?)
    }

    async fn record_activity(&self, batch: &[Activity]) -> Result<Vec<PresenceEvent>, StoreError> {
        let mut events = Vec::new();
        for chunk in batch.chunks(ACTIVITY_CHUNK) {
            let mut inv = self.invocation(&self.scripts.activity, self.now());
            inv.arg(ms(self.settings.away_after));
            for a in chunk {
                inv.arg(a.user.as_str()).arg(a.at);
            }
            events.extend(decode_activity(&self.invoke(&inv).await?)?);
        }
        Ok(events)
    }

    async fn apply(&self, user: &UserId, change: Change) -> Result<Applied, StoreError> {
        let mut custom = None;
        let mut last_seen = None;
        let (op, value) = match change {
            Change::SetStatus { away, invisible } => (
                if away { "away" } else { "online" },
                match invisible {
                    None => "",
                    Some(true) => "1",
                    Some(false) => "0",
                }
                .to_string(),
            ),
            Change::SetZone(z) => ("zone", z.map(|z| z.to_string()).unwrap_or_default()),
            Change::SetOrg(o) => ("org", o.map(|o| o.to_string()).unwrap_or_default()),
            Change::SetMetadata(m) => (
                "metadata",
                m.map(|m| serde_json::Value::Object(m).to_string())
                    .unwrap_or_default(),
            ),
            Change::SetCustomStatus(c) => {
                let c = c.normalised();
                let kind = c.kind.as_str().to_string();
                custom = Some(c);
                ("custom", kind)
            }
            Change::ClearCustomStatus => ("clear_custom", String::new()),
            Change::SetPrivacy {
                presence,
                last_seen: l,
            } => {
                last_seen = Some(l.map_or("", |l| l.as_str()));
                ("privacy", presence.map_or("", |p| p.as_str()).to_string())
            }
            Change::SetLocation(l) => ("location", l.map(|l| l.encode()).unwrap_or_default()),
        };
        let mut inv = self.invocation(&self.scripts.apply, self.now());
        inv.arg(user.as_str()).arg(op).arg(value);
        if let Some(c) = custom {
            inv.arg(c.text.unwrap_or_default())
                .arg(c.emoji.unwrap_or_default())
                .arg(c.expires_at.map(|t| t.to_string()).unwrap_or_default());
        }
        if let Some(l) = last_seen {
            inv.arg(l);
        }
        decode_applied(user, &self.invoke(&inv).await?)
    }

    async fn view(&self, user: &UserId) -> Result<Option<PresenceView>, StoreError> {
        Ok(self
            .views(std::slice::from_ref(user))
            .await?
            .pop()
            .flatten())
    }

    async fn views(&self, users: &[UserId]) -> Result<Vec<Option<PresenceView>>, StoreError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for u in users {
            pipe.cmd("HGETALL").arg(self.key(&format!("presence:{u}")));
        }
        let replies: Vec<Value> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        decode_views(users, &replies)
    }

    async fn list(&self, scope: &Scope, query: &ListQuery) -> Result<ScopePage, StoreError> {
        let mut inv = self.invocation(&self.scripts.list, self.now());
        inv.arg(scope.to_string()).arg(query.limit);
        match &query.cursor {
            Some(c) => inv.arg(c.activity).arg(c.user.as_str()),
            None => inv.arg("").arg(""),
        };
        let budget = if query.status.is_some() {
            filtered_scan_budget(query.limit)
        } else {
            0 // no budget: an unfiltered page ends at `limit`
        };
        inv.arg(query.status.map_or("", |s| s.as_str())).arg(budget);
        decode_list(&self.invoke(&inv).await?, query.status)
    }

    async fn counts(&self, scopes: &[Scope]) -> Result<Vec<ScopeCount>, StoreError> {
        if scopes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for s in scopes {
            pipe.cmd("ZCARD").arg(self.key(&format!("online:{s}")));
            pipe.cmd("HGET")
                .arg(self.key("away_count"))
                .arg(s.to_string());
        }
        let replies: Vec<Value> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        decode_counts(&replies)
    }

    async fn renew_node_lease(&self, sessions: u64) -> Result<LeaseRenewal, StoreError> {
        let now = self.now();
        let mut inv = self.invocation(&self.scripts.node_lease, now);
        let before = if self.renewed.load(Ordering::Relaxed) {
            "1"
        } else {
            "0"
        };
        inv.arg(self.node.as_str())
            .arg(now + ms(self.settings.node_lease))
            .arg(sessions)
            .arg(before);
        let lost = decode_lease_lost(&self.invoke(&inv).await?)?;
        self.renewed.store(true, Ordering::Relaxed);
        Ok(if lost {
            LeaseRenewal::Lost
        } else {
            LeaseRenewal::Held
        })
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        let now = self.now();
        let live: Value = redis::cmd("ZRANGEBYSCORE")
            .arg(self.key("nodes"))
            .arg(now)
            .arg("+inf")
            .arg("WITHSCORES")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        let live = decode_leases(&live)?;
        if live.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (id, _) in &live {
            pipe.cmd("HMGET")
                .arg(self.key(&format!("node:{id}:info")))
                .arg("started_at")
                .arg("last_renewal")
                .arg("sessions");
        }
        let infos: Vec<Value> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        decode_nodes(live, &infos)
    }

    async fn sweep(&self) -> Result<SweepReport, StoreError> {
        let now = self.now();
        let s = &self.settings;
        let batch = s.sweep_batch.max(1) as i64;
        let scripts = &self.scripts;
        let mut r = SweepReport {
            auto_away: self
                .drain(&scripts.sweep_away, now, &[ms(s.away_after), batch])
                .await?,
            ..Default::default()
        };
        r.grace_expired = self.drain(&scripts.sweep_grace, now, &[batch]).await?;
        r.leases_expired = self.drain(&scripts.sweep_leases, now, &[batch]).await?;
        (r.node_sessions_reaped, r.nodes_reaped) = self.reap_dead_nodes(now, batch).await?;
        r.custom_expired = self.drain(&scripts.sweep_custom, now, &[batch]).await?;
        let cutoff = now - ms(s.last_seen_retention);
        r.records_deleted = self
            .drain(&scripts.sweep_retention, now, &[cutoff, batch])
            .await?;
        let first_day = s.history_first_day(now);
        r.history_pruned = self
            .drain(&scripts.sweep_history, now, &[first_day, batch])
            .await?;
        // One slice of the stale-entry walk per sweep: a background check, not a backlog.
        let mut inv = self.invocation(&scripts.sweep_stale, now);
        inv.arg(batch);
        r.stale_entries = decode_count(&self.invoke(&inv).await?)?;
        // And a few scope sets checked whole, their away counts repaired.
        let mut inv = self.invocation(&scripts.sweep_scopes, now);
        inv.arg(batch);
        r.stale_entries += decode_count(&self.invoke(&inv).await?)?;
        // And one slice of this node's own index list.
        let mut inv = self.invocation(&scripts.compact_node, now);
        inv.arg(self.node.as_str()).arg(batch);
        r.stale_entries += decode_count(&self.invoke(&inv).await?)?;
        Ok(r)
    }

    async fn feed_head(&self) -> Result<FeedId, StoreError> {
        let last: Value = redis::cmd("XREVRANGE")
            .arg(self.key("feed"))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        decode_feed_head(&last)
    }

    async fn read_feed(&self, after: FeedId, limit: usize) -> Result<FeedRead, StoreError> {
        self.read_feed_at(after, limit).await
    }

    async fn wait_feed(
        &self,
        after: FeedId,
        limit: usize,
        wait: Duration,
    ) -> Result<FeedRead, StoreError> {
        let read = self.read_feed_at(after, limit).await?;
        if read.reset || read.last_id.is_some() || wait.is_zero() {
            return Ok(read);
        }
        let mut conn = self.waiter_connection().await?;
        let mut xread = redis::cmd("XREAD");
        xread
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(wait.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(self.key("feed"))
            .arg(after.to_string());
        let block = xread.query_async::<Value>(&mut conn);
        match tokio::time::timeout(wait + self.config.command_timeout, block).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                *self.waiter.lock().await = None;
                return Err(store_error(e));
            }
            Err(_) => {
                *self.waiter.lock().await = None;
                return Err(StoreError::Unavailable("feed wait timed out".into()));
            }
        }
        // The blocking read only wakes us; the script decides what is new and whether it aged out.
        self.read_feed_at(after, limit).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.conn.clone())
            .await
            .map(|_| ())
            .map_err(store_error)
    }

    async fn typing(&self, write: &TypingWrite) -> Result<TypingOutcome, StoreError> {
        let mut inv = self.invocation(&self.scripts.typing, self.now());
        inv.arg(write.conversation.as_str())
            .arg(write.user.as_str())
            .arg(write.until.map(|t| t.to_string()).unwrap_or_default())
            .arg(write.max_typers)
            .arg(BUS_CHANNEL);
        decode_typing(&self.invoke(&inv).await?)
    }

    async fn typing_now(&self, conversation: &ConversationId) -> Result<Vec<Typer>, StoreError> {
        let all: Value = redis::cmd("HGETALL")
            .arg(self.key(&format!("typing:{conversation}")))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        decode_typers(&all, self.now())
    }

    async fn publish(&self, message: &BusMessage) -> Result<(), StoreError> {
        let text = message
            .encode()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        redis::cmd("PUBLISH")
            .arg(self.bus.channel())
            .arg(text)
            .query_async::<Value>(&mut self.conn.clone())
            .await
            .map(|_| ())
            .map_err(store_error)
    }

    async fn bus(&self) -> Result<Box<dyn BusReceiver>, StoreError> {
        self.bus.receiver().await
    }

    async fn history(
        &self,
        user: &UserId,
        first: Day,
        last: Day,
    ) -> Result<Vec<Millis>, StoreError> {
        let now = self.now();
        let mut inv = self.invocation(&self.scripts.history, now);
        inv.arg(user.as_str());
        for day in first..=last {
            inv.arg(day);
        }
        decode_history(user, &self.invoke(&inv).await?, first, last, now)
    }

    async fn inactive(
        &self,
        before: Millis,
        limit: usize,
        cursor: Option<&ListCursor>,
    ) -> Result<InactivePage, StoreError> {
        let mut inv = self.invocation(&self.scripts.inactive, self.now());
        inv.arg(before).arg(limit.max(1));
        match cursor {
            Some(c) => inv.arg(c.activity).arg(c.user.as_str()),
            None => inv.arg("").arg(""),
        };
        decode_inactive(&self.invoke(&inv).await?)
    }

    async fn nearby(&self, query: &NearbyQuery) -> Result<Vec<NearbyUser>, StoreError> {
        let set = match &query.org {
            Some(org) => format!("org:{org}"),
            None => "global".to_string(),
        };
        let mut inv = self.invocation(&self.scripts.nearby, self.now());
        inv.arg(set)
            .arg(query.at.lon().to_string())
            .arg(query.at.lat().to_string())
            .arg(query.radius_m.to_string())
            .arg(query.limit.max(1));
        decode_nearby(&self.invoke(&inv).await?, query.at)
    }

    async fn repair(&self, mode: RepairMode) -> Result<RepairReport, StoreError> {
        RedisStore::repair(self, mode).await
    }

    // --- Webhook delivery leases: see webhooks.rs.

    async fn claim_webhook(
        &self,
        endpoint: &presence_core::EndpointId,
        lease: Duration,
        report: Option<&str>,
    ) -> Result<presence_core::WebhookClaim, StoreError> {
        self.claim_webhook_lease(endpoint, lease, report).await
    }

    async fn ack_webhook(
        &self,
        endpoint: &presence_core::EndpointId,
        upto: FeedId,
    ) -> Result<bool, StoreError> {
        self.ack_webhook_lease(endpoint, upto).await
    }

    async fn release_webhook(
        &self,
        endpoint: &presence_core::EndpointId,
    ) -> Result<(), StoreError> {
        self.release_webhook_lease(endpoint).await
    }

    async fn webhook_leases(
        &self,
        endpoints: &[presence_core::EndpointId],
    ) -> Result<Vec<Option<presence_core::WebhookLease>>, StoreError> {
        self.webhook_lease_states(endpoints).await
    }
}

// The repair (its own file: it only reads and fixes what the transitions write).
mod repair;

// Declared after `script!`, which it uses.
mod webhooks;
