//! Configuration (SPEC §9): embedded defaults, then a TOML file, then `PRESENCE_*`
//! environment variables (`PRESENCE_STORE__REDIS_URL` is `store.redis_url`), then flags,
//! then [`Config::validate`], which refuses nonsense with a message naming the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use presence_core::StoreSettings;
use serde::{Deserialize, Serialize};

use crate::auth::TokenRules;

/// Every setting, with the SPEC's names and the seed's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[store]`
    pub store: StoreConfig,
    /// `[auth]`
    pub auth: AuthConfig,
    /// `[presence]`
    pub presence: PresenceConfig,
    /// `[limits]`
    pub limits: LimitsConfig,
    /// `[webhooks]`
    pub webhooks: WebhooksConfig,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; `0.0.0.0` must be asked for.
    pub listen: String,
    /// Most WebSocket connections this node holds; beyond, upgrades answer 503.
    pub max_connections: usize,
    /// How long a graceful shutdown waits for connections to close.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How often the server pings each WebSocket.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A WebSocket silent this long (no frame, no pong) is closed and its session ends.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Pending connections the kernel queues before `accept` (capped by `net.core.somaxconn`).
    /// A storm of clients connecting at once overflows a small queue and waits a second for
    /// each SYN retry.
    pub listen_backlog: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8000".into(),
            max_connections: 100_000,
            shutdown_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            listen_backlog: 8192,
        }
    }
}

/// Which store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Embedded, one node.
    #[default]
    Memory,
    /// Redis or Valkey, many nodes.
    Redis,
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `memory` or `redis`.
    pub kind: StoreKind,
    /// Where Redis is.
    pub redis_url: String,
    /// Prepended to every Redis key.
    pub key_prefix: String,
    /// Memory store: the directory its durable parts (records with their last seen, privacy
    /// and custom status; online history) are snapshotted to and read back from at start.
    /// Empty: nothing outlives the process.
    pub data_dir: String,
    /// Memory store with a `data_dir`: how often a snapshot is written (and once more when
    /// the node stops). What happened since the last one is lost with a crash.
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
    /// Events kept for resume.
    pub feed_max_len: usize,
    /// How long one Redis command may take.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: String::new(),
            data_dir: String::new(),
            snapshot_interval: Duration::from_secs(60),
            feed_max_len: StoreSettings::default().feed_max_len,
            command_timeout: Duration::from_secs(2),
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret (at least 32 bytes); empty with no public key: a random dev secret.
    pub jwt_secret: String,
    /// PEM public key for RS256 or ES256.
    pub jwt_public_key_file: String,
    /// A user token with `org_id` sees only users of that org.
    pub tenant_isolation: bool,
    /// Required `aud` claim; empty: not checked (a token with `aud` is still accepted).
    pub audience: String,
    /// Required `iss` claim; empty: not checked.
    pub issuer: String,
    /// Slack on `exp` and `nbf` for clocks that differ.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Set by the node itself, never read from a file or the environment: the node made up
    /// its secret at start (none configured), so `GET /dev-token` may hand tokens to loopback
    /// clients (see `web.rs`). A node with a configured secret or key never does.
    #[serde(skip)]
    pub generated_dev_secret: bool,
}

/// The shortest HS256 secret a node accepts (SPEC §10).
pub const MIN_SECRET_BYTES: usize = 32;

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: String::new(),
            jwt_public_key_file: String::new(),
            tenant_isolation: false,
            audience: String::new(),
            issuer: String::new(),
            leeway: TokenRules::default().leeway,
            generated_dev_secret: false,
        }
    }
}

impl AuthConfig {
    /// What tokens must satisfy beyond their signature.
    pub fn token_rules(&self) -> TokenRules {
        let given = |s: &str| (!s.is_empty()).then(|| s.to_string());
        TokenRules {
            audience: given(&self.audience),
            issuer: given(&self.issuer),
            leeway: self.leeway,
        }
    }
}

/// `[presence]`: the timings of SPEC §3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// Inactivity before auto-away.
    #[serde(with = "humantime_serde")]
    pub away_after: Duration,
    /// Lease of a REST heartbeat session.
    #[serde(with = "humantime_serde")]
    pub online_ttl: Duration,
    /// Delay between the last session closing and offline.
    #[serde(with = "humantime_serde")]
    pub offline_grace: Duration,
    /// How long a crashed node's sessions outlive its last renewal.
    #[serde(with = "humantime_serde")]
    pub node_lease: Duration,
    /// How long an offline user's record is kept.
    #[serde(with = "humantime_serde")]
    pub last_seen_retention: Duration,
    /// The seed's cleanup period. Accepted so the seed's config files load, and ignored:
    /// retention and stale entries are handled by the sweep every `sweep_interval`.
    #[serde(with = "humantime_serde")]
    pub cleanup_interval: Duration,
    /// How often the sweep runs (auto-away, grace, leases, expiry).
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// How long a typing indicator lives after its last written `typing.start` (a client
    /// repeats the start every few seconds while the user types). At least 2 s: a start
    /// within a second of the last written one is not written again.
    #[serde(with = "humantime_serde")]
    pub typing_ttl: Duration,
    /// How long online history is kept, in whole UTC days back from today (1 to 366 days);
    /// the sweep drops older days.
    #[serde(with = "humantime_serde")]
    pub history_retention: Duration,
    /// How often buffered activity is written.
    #[serde(with = "humantime_serde")]
    pub activity_flush_interval: Duration,
    /// How often the node runs a slice of the periodic repair (README, "Repair"); `0s`, the
    /// default, turns it off.
    #[serde(with = "humantime_serde")]
    pub repair_interval: Duration,
    /// Records and index entries one slice of the periodic repair examines.
    pub repair_batch: usize,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        let s = StoreSettings::default();
        Self {
            away_after: s.away_after,
            online_ttl: s.online_ttl,
            offline_grace: s.offline_grace,
            node_lease: s.node_lease,
            last_seen_retention: s.last_seen_retention,
            cleanup_interval: Duration::from_secs(60),
            sweep_interval: Duration::from_secs(1),
            typing_ttl: Duration::from_secs(6),
            history_retention: Duration::from_secs(90 * 86_400),
            activity_flush_interval: Duration::from_millis(250),
            repair_interval: Duration::ZERO,
            repair_batch: presence_core::repair::REPAIR_BATCH,
        }
    }
}

/// `[limits]` (SPEC §10).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest client frame, bytes.
    pub frame_bytes: usize,
    /// Largest metadata object, bytes of JSON.
    pub metadata_bytes: usize,
    /// Sustained frames per second per connection.
    pub frames_per_second: u32,
    /// Burst of frames per connection.
    pub frame_burst: u32,
    /// Sessions per user.
    pub sessions_per_user: usize,
    /// Frames queued to one connection before it is closed as a slow consumer.
    pub outbound_queue: usize,
    /// Most ids in one batch call.
    pub batch_ids: usize,
    /// Distinct scopes and users (events or counts) one socket may follow.
    pub subscriptions_per_connection: usize,
    /// Most events one resume replays; beyond, the answer is a snapshot with `reset: true`.
    pub replay_events: usize,
    /// A socket write not done in this time closes the connection (4008).
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// REST requests a second per token subject.
    pub rest_per_second: u32,
    /// REST burst per token subject.
    pub rest_burst: u32,
    /// Conversations one socket may be typing in at once; a start for one more is refused
    /// (`invalid_argument`) until one stops or expires.
    pub typing_per_connection: usize,
    /// Users typing at once in one conversation; a start for one more is refused
    /// (`invalid_argument`) until one stops or expires.
    pub typers_per_conversation: usize,
    /// The largest `radius_m` a `nearby` query may ask, in metres: what one query costs Redis
    /// grows with the users inside the radius.
    pub nearby_radius_m: f64,
    /// Decimal places of a degree a shared location is rounded to before it is stored (3: a
    /// grid of about 111 m): nearby answers distances, and exact ones would let anyone who
    /// asks from three points work out where a user is. 0 to 7.
    pub location_decimals: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            frame_bytes: 16_384,
            metadata_bytes: 4096,
            frames_per_second: 20,
            frame_burst: 40,
            sessions_per_user: StoreSettings::default().sessions_per_user,
            outbound_queue: 1024,
            batch_ids: 1000,
            subscriptions_per_connection: 200,
            replay_events: 10_000,
            send_timeout: Duration::from_secs(10),
            rest_per_second: 50,
            rest_burst: 100,
            typing_per_connection: 10,
            typers_per_conversation: 50,
            nearby_radius_m: 50_000.0,
            location_decimals: 3,
        }
    }
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The sources could not be read or parsed.
    #[error("{0}")]
    Load(#[from] Box<figment::Error>),
    /// A setting is out of range.
    #[error("{setting}: {problem}")]
    Invalid {
        /// The setting, as `section.key`.
        setting: &'static str,
        /// What is wrong.
        problem: String,
    },
}

fn invalid(setting: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        problem: problem.into(),
    }
}

impl Config {
    /// Defaults, then `file` (if any), then the environment, then `overrides` (flags).
    pub fn load(file: Option<&Path>, overrides: Figment) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(invalid(
                    "--config",
                    format!("{} does not exist", f.display()),
                ));
            }
            fig = fig.merge(Toml::file(f));
        }
        let config: Config = fig
            // Only `PRESENCE_SECTION__KEY` variables are settings; others with the prefix
            // (a test's PRESENCE_TEST_REDIS_URL, say) are not this node's business.
            .merge(
                Env::prefixed("PRESENCE_")
                    .filter(|k| k.as_str().contains("__"))
                    .split("__"),
            )
            .merge(overrides)
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Refuses settings that cannot work, naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let addr: SocketAddr = self.server.listen.parse().map_err(|_| {
            invalid(
                "server.listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:8000",
                    self.server.listen
                ),
            )
        })?;
        if self.server.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be at least 1"));
        }
        if self.server.listen_backlog == 0 {
            return Err(invalid("server.listen_backlog", "must be at least 1"));
        }
        if self.server.ping_interval.is_zero()
            || self.server.idle_timeout <= self.server.ping_interval
        {
            return Err(invalid(
                "server.idle_timeout",
                "must be longer than server.ping_interval (both positive)",
            ));
        }
        if self.store.kind == StoreKind::Redis && self.store.redis_url.is_empty() {
            return Err(invalid(
                "store.redis_url",
                "is required when store.kind = \"redis\"",
            ));
        }
        if !self.store.data_dir.is_empty() && self.store.kind == StoreKind::Redis {
            return Err(invalid(
                "store.data_dir",
                "is for the memory store (Redis keeps its own data); leave it empty with store.kind = \"redis\"",
            ));
        }
        if self.store.snapshot_interval.is_zero() {
            return Err(invalid("store.snapshot_interval", "must be positive"));
        }
        if self.store.feed_max_len == 0 {
            return Err(invalid("store.feed_max_len", "must be at least 1"));
        }
        if self.store.command_timeout.is_zero() {
            return Err(invalid("store.command_timeout", "must be positive"));
        }
        if !self.auth.jwt_secret.is_empty() && !self.auth.jwt_public_key_file.is_empty() {
            return Err(invalid(
                "auth.jwt_public_key_file",
                "set either auth.jwt_secret or a public key file, not both",
            ));
        }
        if !self.auth.jwt_secret.is_empty() && self.auth.jwt_secret.len() < MIN_SECRET_BYTES {
            return Err(invalid(
                "auth.jwt_secret",
                format!(
                    "is {} bytes; an HS256 secret needs at least {MIN_SECRET_BYTES} (openssl rand -base64 32 makes one)",
                    self.auth.jwt_secret.len()
                ),
            ));
        }
        if self.dev_secret() && !addr.ip().is_loopback() {
            return Err(invalid(
                "server.listen",
                "without auth.jwt_secret or auth.jwt_public_key_file the node runs on a random dev secret and binds to loopback only",
            ));
        }
        let p = &self.presence;
        for (setting, d) in [
            ("presence.away_after", p.away_after),
            ("presence.online_ttl", p.online_ttl),
            ("presence.node_lease", p.node_lease),
            ("presence.last_seen_retention", p.last_seen_retention),
            ("presence.sweep_interval", p.sweep_interval),
            ("presence.typing_ttl", p.typing_ttl),
            (
                "presence.activity_flush_interval",
                p.activity_flush_interval,
            ),
        ] {
            if d.is_zero() {
                return Err(invalid(setting, "must be positive"));
            }
        }
        if p.typing_ttl < Duration::from_secs(2) {
            return Err(invalid(
                "presence.typing_ttl",
                "must be at least 2s (a typing start within a second of the last written one is not written again)",
            ));
        }
        let day = Duration::from_secs(86_400);
        if p.history_retention < day || p.history_retention > 366 * day {
            return Err(invalid(
                "presence.history_retention",
                "must be between 1d and 366d",
            ));
        }
        if p.sweep_interval > p.node_lease {
            return Err(invalid(
                "presence.sweep_interval",
                "must not be longer than presence.node_lease",
            ));
        }
        if p.repair_batch == 0 {
            return Err(invalid("presence.repair_batch", "must be at least 1"));
        }
        if p.node_lease < Duration::from_secs(1) {
            return Err(invalid(
                "presence.node_lease",
                "must be at least 1s (the node renews every third of it)",
            ));
        }
        let l = &self.limits;
        for (setting, v) in [
            ("limits.frame_bytes", l.frame_bytes),
            ("limits.metadata_bytes", l.metadata_bytes),
            ("limits.sessions_per_user", l.sessions_per_user),
            ("limits.outbound_queue", l.outbound_queue),
            ("limits.batch_ids", l.batch_ids),
            ("limits.frames_per_second", l.frames_per_second as usize),
            ("limits.frame_burst", l.frame_burst as usize),
            (
                "limits.subscriptions_per_connection",
                l.subscriptions_per_connection,
            ),
            ("limits.replay_events", l.replay_events),
            ("limits.rest_per_second", l.rest_per_second as usize),
            ("limits.rest_burst", l.rest_burst as usize),
            ("limits.typing_per_connection", l.typing_per_connection),
            ("limits.typers_per_conversation", l.typers_per_conversation),
        ] {
            if v == 0 {
                return Err(invalid(setting, "must be at least 1"));
            }
        }
        if l.frame_burst < l.frames_per_second {
            return Err(invalid(
                "limits.frame_burst",
                "must be at least limits.frames_per_second",
            ));
        }
        if l.rest_burst < l.rest_per_second {
            return Err(invalid(
                "limits.rest_burst",
                "must be at least limits.rest_per_second",
            ));
        }
        if l.send_timeout.is_zero() {
            return Err(invalid("limits.send_timeout", "must be positive"));
        }
        if l.location_decimals > 7 {
            return Err(invalid(
                "limits.location_decimals",
                "must be at most 7 (about a centimetre)",
            ));
        }
        if !(l.nearby_radius_m > 0.0 && l.nearby_radius_m <= 20_037_509.0) {
            return Err(invalid(
                "limits.nearby_radius_m",
                "must be above 0 and at most half the Earth's circumference (20037509)",
            ));
        }
        self.webhooks.validate()?;
        Ok(())
    }

    /// Whether the node makes up a random HS256 secret (no secret and no key configured).
    pub fn dev_secret(&self) -> bool {
        self.auth.jwt_secret.is_empty() && self.auth.jwt_public_key_file.is_empty()
    }

    /// Binds the listen address with the configured backlog.
    pub fn bind(&self) -> std::io::Result<tokio::net::TcpListener> {
        let addr = self.listen_addr();
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(self.server.listen_backlog)
    }

    /// The listen address (valid after [`Config::validate`]).
    pub fn listen_addr(&self) -> SocketAddr {
        self.server.listen.parse().expect("validated")
    }

    /// The public key file, if one is configured.
    pub fn public_key_file(&self) -> Option<PathBuf> {
        (!self.auth.jwt_public_key_file.is_empty())
            .then(|| PathBuf::from(&self.auth.jwt_public_key_file))
    }

    /// What the stores enforce.
    pub fn store_settings(&self) -> StoreSettings {
        let p = &self.presence;
        StoreSettings {
            away_after: p.away_after,
            online_ttl: p.online_ttl,
            offline_grace: p.offline_grace,
            node_lease: p.node_lease,
            last_seen_retention: p.last_seen_retention,
            history_retention: p.history_retention,
            sessions_per_user: self.limits.sessions_per_user,
            feed_max_len: self.store.feed_max_len,
            ..StoreSettings::default()
        }
    }
}

/// The most deliveries to one endpoint at once (`webhooks.max_in_flight`).
pub const MAX_WEBHOOK_IN_FLIGHT: usize = 256;

/// The most events one endpoint's worker reads ahead (`webhooks.read_ahead`).
pub const MAX_WEBHOOK_READ_AHEAD: usize = 100_000;

/// `[webhooks]` (SPEC §9): signed deliveries of the feed to HTTP endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Retrying one event stops (it is given up on) this long after its first attempt.
    #[serde(with = "humantime_serde")]
    pub max_retry_duration: Duration,
    /// One delivery attempt's timeout (connect, send, answer).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The first retry's delay; each next one doubles, with jitter, up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// The longest delay between two attempts (also caps a `Retry-After`).
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Deliveries to one endpoint at once, never two of one user (each user's events arrive
    /// in feed order); 1: one at a time, in feed order.
    pub max_in_flight: usize,
    /// Events one endpoint's worker reads ahead of the oldest not yet delivered: what it
    /// holds while an event is retried (the other users' events keep going up to here).
    pub read_ahead: usize,
    /// `[[webhooks.endpoints]]`, any number.
    pub endpoints: Vec<WebhookEndpointConfig>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            max_retry_duration: Duration::from_secs(24 * 3600),
            request_timeout: Duration::from_secs(10),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            max_in_flight: 8,
            read_ahead: 1000,
            endpoints: Vec::new(),
        }
    }
}

/// One `[[webhooks.endpoints]]`.
#[derive(Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookEndpointConfig {
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// Standard Webhooks secret: `whsec_` + base64 of 24 to 64 bytes.
    pub secret: String,
    /// Event types to send; only `presence` exists (typing is not in the feed).
    pub events: Vec<String>,
    /// `global`, `zone:{id}`, `org:{id}` or `user:{id}`, matched as subscriptions are (a
    /// user's zone or org before or after the change); empty: every event.
    pub scopes: Vec<String>,
}

/// The secret never shows, not even in a debug print of the configuration.
impl std::fmt::Debug for WebhookEndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpointConfig")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("events", &self.events)
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl WebhooksConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (setting, d) in [
            ("webhooks.max_retry_duration", self.max_retry_duration),
            ("webhooks.request_timeout", self.request_timeout),
            ("webhooks.retry_initial", self.retry_initial),
            ("webhooks.retry_max", self.retry_max),
        ] {
            if d.is_zero() {
                return Err(invalid(setting, "must be positive"));
            }
        }
        if !(1..=MAX_WEBHOOK_IN_FLIGHT).contains(&self.max_in_flight) {
            return Err(invalid(
                "webhooks.max_in_flight",
                format!("must be between 1 and {MAX_WEBHOOK_IN_FLIGHT}"),
            ));
        }
        if self.read_ahead < self.max_in_flight || self.read_ahead > MAX_WEBHOOK_READ_AHEAD {
            return Err(invalid(
                "webhooks.read_ahead",
                format!("must be between webhooks.max_in_flight and {MAX_WEBHOOK_READ_AHEAD}"),
            ));
        }
        if self.retry_max < self.retry_initial {
            return Err(invalid(
                "webhooks.retry_max",
                "must be at least webhooks.retry_initial",
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            let at = |problem: String| format!("endpoint {} ({}): {problem}", i + 1, e.url);
            let url = crate::webhooks::parse_url(&e.url)
                .map_err(|p| invalid("webhooks.endpoints.url", at(p)))?;
            if !ids.insert(crate::webhooks::endpoint_id(&url)) {
                return Err(invalid(
                    "webhooks.endpoints.url",
                    at("appears twice".into()),
                ));
            }
            crate::webhooks::decode_secret(&e.secret)
                .map_err(|p| invalid("webhooks.endpoints.secret", at(p)))?;
            crate::webhooks::parse_events(&e.events)
                .map_err(|p| invalid("webhooks.endpoints.events", at(p)))?;
            crate::webhooks::parse_scopes(&e.scopes)
                .map_err(|p| invalid("webhooks.endpoints.scopes", at(p)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_specs_and_valid() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8000");
        assert_eq!(c.presence.away_after, Duration::from_secs(300));
        assert_eq!(c.presence.offline_grace, Duration::from_secs(5));
        assert_eq!(c.limits.frame_bytes, 16_384);
        assert_eq!(c.store.kind, StoreKind::Memory);
    }

    #[test]
    fn toml_durations_and_sections_parse() {
        let toml = r#"
            [presence]
            away_after = "5m"
            offline_grace = "250ms"
            last_seen_retention = "30d"
            [store]
            kind = "redis"
            key_prefix = "tenantA:"
        "#;
        let c: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(toml))
            .extract()
            .unwrap();
        assert_eq!(c.presence.away_after, Duration::from_secs(300));
        assert_eq!(c.presence.offline_grace, Duration::from_millis(250));
        assert_eq!(
            c.presence.last_seen_retention,
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(c.store.kind, StoreKind::Redis);
        assert_eq!(c.store.key_prefix, "tenantA:");
    }

    #[test]
    fn nonsense_is_refused_naming_the_setting() {
        let mut c = Config::default();
        c.limits.frame_bytes = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("limits.frame_bytes")
        );
        let mut c = Config::default();
        c.server.listen = "0.0.0.0:8000".into();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("server.listen"),
            "dev secret binds loopback only"
        );
        c.auth.jwt_secret = "s3cret".into();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("auth.jwt_secret"),
            "a 6-byte secret is refused (SPEC §10: at least 32 bytes)"
        );
        c.auth.jwt_secret = "x".repeat(MIN_SECRET_BYTES);
        c.validate().unwrap();
        let mut c = Config::default();
        c.presence.typing_ttl = Duration::from_secs(1);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("presence.typing_ttl")
        );
        let mut c = Config::default();
        c.limits.typers_per_conversation = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("limits.typers_per_conversation")
        );
        let mut c = Config::default();
        c.presence.sweep_interval = Duration::from_secs(60);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("presence.sweep_interval")
        );
        for (history_retention, nearby_radius_m, setting) in [
            (
                Duration::from_secs(3600),
                1000.0,
                "presence.history_retention",
            ),
            (
                Duration::from_secs(367 * 86_400),
                1000.0,
                "presence.history_retention",
            ),
            (Duration::from_secs(86_400), 0.0, "limits.nearby_radius_m"),
            (
                Duration::from_secs(86_400),
                f64::NAN,
                "limits.nearby_radius_m",
            ),
            (Duration::from_secs(86_400), 3e7, "limits.nearby_radius_m"),
        ] {
            let mut c = Config::default();
            c.presence.history_retention = history_retention;
            c.limits.nearby_radius_m = nearby_radius_m;
            let e = c.validate().unwrap_err().to_string();
            assert!(e.starts_with(setting), "{e}");
        }
        let mut c = Config::default();
        assert!(
            c.presence.repair_interval.is_zero(),
            "the periodic repair is off"
        );
        c.presence.repair_batch = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("presence.repair_batch")
        );
        let unknown: Result<Config, _> = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string("[server]\nlisten_on = \"x\""))
            .extract();
        assert!(unknown.is_err(), "unknown keys are refused");
    }

    #[test]
    fn webhooks_are_a_checked_section() {
        let load = |toml: &str| -> Result<Config, String> {
            let c: Config = Figment::from(Serialized::defaults(Config::default()))
                .merge(Toml::string(toml))
                .extract()
                .map_err(|e| e.to_string())?;
            c.validate().map_err(|e| e.to_string())?;
            Ok(c)
        };
        let good = r#"
            [webhooks]
            max_retry_duration = "1h"
            request_timeout = "2s"
            [[webhooks.endpoints]]
            url = "https://example.com/presence-hook"
            secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            events = ["presence"]
            scopes = ["zone:10", "org:100", "user:123", "global"]
            [[webhooks.endpoints]]
            url = "http://127.0.0.1:9000/hook"
            secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            events = ["presence"]
        "#;
        let c = load(good).unwrap();
        assert_eq!(c.webhooks.endpoints.len(), 2);
        assert_eq!(c.webhooks.max_retry_duration, Duration::from_secs(3600));
        assert_eq!(
            Config::default().webhooks.max_retry_duration,
            Duration::from_secs(24 * 3600)
        );
        assert_eq!(
            Config::default().webhooks.request_timeout,
            Duration::from_secs(10)
        );
        let endpoint = |field: &str, value: &str| {
            let mut lines = vec![
                ("url", "\"https://example.com/h\""),
                ("secret", "\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\""),
                ("events", "[\"presence\"]"),
                ("scopes", "[]"),
            ];
            for l in &mut lines {
                if l.0 == field {
                    l.1 = value;
                }
            }
            let body: Vec<String> = lines.iter().map(|(k, v)| format!("{k} = {v}")).collect();
            format!("[[webhooks.endpoints]]\n{}", body.join("\n"))
        };
        for (field, value, named) in [
            ("url", "\"ftp://example.com/h\"", "webhooks.endpoints.url"),
            ("url", "\"not a url\"", "webhooks.endpoints.url"),
            (
                "secret",
                "\"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"",
                "webhooks.endpoints.secret",
            ),
            ("secret", "\"whsec_%%%\"", "webhooks.endpoints.secret"),
            ("events", "[\"typing\"]", "webhooks.endpoints.events"),
            ("events", "[]", "webhooks.endpoints.events"),
            ("scopes", "[\"room:1\"]", "webhooks.endpoints.scopes"),
            ("scopes", "[\"zone:\"]", "webhooks.endpoints.scopes"),
        ] {
            let err = load(&endpoint(field, value)).unwrap_err();
            assert!(err.starts_with(named), "{field} = {value}: {err}");
            assert!(!err.contains("MfKQ9r8G"), "the secret never shows: {err}");
        }
        let twice = format!(
            "{}\n{}",
            endpoint("url", "\"https://a.example/h\""),
            endpoint("url", "\"https://a.example/h\"")
        );
        assert!(load(&twice).unwrap_err().contains("appears twice"));
        for (key, named) in [
            ("request_timeout = \"0s\"", "webhooks.request_timeout"),
            ("max_retry_duration = \"0s\"", "webhooks.max_retry_duration"),
            ("retry_initial = \"10m\"", "webhooks.retry_max"),
            ("max_in_flight = 0", "webhooks.max_in_flight"),
            ("max_in_flight = 100000", "webhooks.max_in_flight"),
            ("read_ahead = 4", "webhooks.read_ahead"),
        ] {
            let err = load(&format!("[webhooks]\n{key}")).unwrap_err();
            assert!(err.starts_with(named), "{key}: {err}");
        }
        assert!(
            load("[webhooks]\nendpoint = []").is_err(),
            "unknown keys are refused"
        );
        assert!(
            !format!("{:?}", c.webhooks).contains("MfKQ9r8G"),
            "a debug print hides the secret"
        );
    }
}
