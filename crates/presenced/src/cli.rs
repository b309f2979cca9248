//! The `presenced` command line: `serve`, `token`, `repair` and `demo`, and the client
//! commands of `remote.rs` (`status`, `online`, `count`, `watch`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use figment::Figment;
use figment::providers::Serialized;
use presence_core::{NodeId, OrgId, SharedClock, SystemClock, UserId};
use presenced::auth::{Authenticator, Role};
use presenced::config::{Config, StoreKind};
use presenced::state::AppState;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "presenced",
    version,
    about = "Presence service: who is online, away or offline, right now"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a node. With no configuration: memory store on 127.0.0.1:8000 and a dev secret.
    Serve(ServeArgs),
    /// Prints one HS256 token signed with the configured secret.
    Token(TokenArgs),
    /// Shows one user's presence (exit 3 when the user has none).
    Status(crate::remote::StatusArgs),
    /// Lists users online or away, most recent activity first.
    Online(crate::remote::OnlineArgs),
    /// Shows how many users are online or away.
    Count(crate::remote::CountArgs),
    /// Prints presence events as they happen, one line each, until interrupted.
    Watch(crate::remote::WatchArgs),
    /// Simulated users coming and going, so a node and its dashboard show life. Without --url
    /// it starts a node of its own (memory store, development secret) on 127.0.0.1:8000.
    Demo(presenced::demo::DemoArgs),
    /// Checks the Redis store's indexes against its records and fixes what is off, talking to
    /// the store directly; safe while nodes run. Prints the report as JSON.
    Repair(RepairArgs),
}

/// Flags for the common settings; every setting is also a TOML key and a `PRESENCE_*`
/// variable (SPEC §9).
#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// `server.listen`, e.g. 127.0.0.1:8000.
    #[arg(long)]
    listen: Option<String>,
    /// `store.kind`: memory or redis.
    #[arg(long, value_parser = ["memory", "redis"])]
    store: Option<String>,
    /// `store.redis_url`.
    #[arg(long)]
    redis_url: Option<String>,
    /// `store.key_prefix`.
    #[arg(long)]
    key_prefix: Option<String>,
    /// `server.max_connections`.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Any setting, as `section.key=value` (repeatable), e.g. `--set presence.away_after=10m`.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("expected section.key=value")?;
    if !k.contains('.') {
        return Err("expected section.key=value, e.g. presence.away_after=10m".into());
    }
    Ok((k.trim().to_string(), v.trim().to_string()))
}

#[derive(clap::Args)]
struct TokenArgs {
    /// TOML configuration file holding `auth.jwt_secret` (or set PRESENCE_AUTH__JWT_SECRET).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The user (`sub`).
    #[arg(long)]
    sub: String,
    /// The org (`org_id`).
    #[arg(long)]
    org: Option<String>,
    /// user, service or admin.
    #[arg(long, default_value = "user", value_parser = ["user", "service", "admin"])]
    role: String,
    /// Lifetime, e.g. 1h, 30m, 7d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
}

impl Cli {
    /// Runs the command; the process's exit code on success (see `remote.rs` for the client
    /// commands' codes).
    pub(crate) async fn run(self) -> anyhow::Result<u8> {
        match self.command {
            Command::Serve(a) => serve(a).await.map(|()| 0),
            Command::Token(a) => token(a).map(|()| 0),
            Command::Status(a) => crate::remote::status(a).await,
            Command::Online(a) => crate::remote::online(a).await,
            Command::Count(a) => crate::remote::count(a).await,
            Command::Watch(a) => crate::remote::watch(a).await,
            Command::Demo(a) => presenced::demo::run(a).await.map(|()| 0),
            Command::Repair(a) => repair(a).await,
        }
    }
}

fn flags(a: &ServeArgs) -> Figment {
    let mut f = Figment::new();
    if let Some(v) = &a.listen {
        f = f.merge(Serialized::default("server.listen", v));
    }
    if let Some(v) = &a.store {
        f = f.merge(Serialized::default("store.kind", v));
    }
    if let Some(v) = &a.redis_url {
        f = f.merge(Serialized::default("store.redis_url", v));
    }
    if let Some(v) = &a.key_prefix {
        f = f.merge(Serialized::default("store.key_prefix", v));
    }
    if let Some(v) = a.max_connections {
        f = f.merge(Serialized::default("server.max_connections", v));
    }
    for (k, v) in &a.settings {
        // Parsed like an environment variable: numbers and booleans as such, else a string.
        let value: figment::value::Value = v.parse().unwrap_or_else(|_| v.as_str().into());
        f = f.merge(Serialized::default(k, value));
    }
    f
}

fn authenticator(config: &Config, clock: SharedClock) -> anyhow::Result<Authenticator> {
    let rules = config.auth.token_rules();
    if let Some(file) = config.public_key_file() {
        let pem = std::fs::read(&file)
            .map_err(|e| anyhow::anyhow!("auth.jwt_public_key_file {}: {e}", file.display()))?;
        return Authenticator::public_key(&pem, &rules, clock)
            .map_err(|e| anyhow::anyhow!("auth.jwt_public_key_file: {e}"));
    }
    Ok(Authenticator::hs256(
        config.auth.jwt_secret.as_bytes(),
        &rules,
        clock,
    ))
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::load(a.config.as_deref(), flags(&a))?;
    let dev = config.dev_secret();
    if dev {
        config.auth.jwt_secret = presenced::auth::random_secret();
        config.auth.generated_dev_secret = true;
    }
    let clock: SharedClock = Arc::new(SystemClock);
    let auth = authenticator(&config, clock.clone())?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .ok();
    let node = NodeId::random();
    let store = presenced::open_store(&config, node.clone(), clock.clone()).await?;
    let listener = config.bind()?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, %node, store = ?config.store.kind, "presenced listening");
    // On stdout too, so whoever started the node with `listen = "127.0.0.1:0"` (tests,
    // scripts) learns the port it got.
    println!("presenced listening on http://{addr}");
    if dev {
        let t = auth
            .issue(
                &UserId::new("1")?,
                None,
                Role::Admin,
                Duration::from_secs(86_400),
            )
            .expect("an HS256 authenticator issues tokens");
        println!("presenced is running on http://{addr}/ with a random development secret.");
        println!(
            "  secret (PRESENCE_AUTH__JWT_SECRET): {}",
            config.auth.jwt_secret
        );
        println!("  admin token for user 1, valid 24h: {t}");
        println!("  dashboard: http://{addr}/ (it offers a development token by itself)");
        println!(
            "  try: curl -H 'Authorization: Bearer {t}' http://{addr}/messenger/presence/count"
        );
    }
    if config.store.kind == StoreKind::Memory {
        tracing::info!("memory store: presence lives in this process only");
    }
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: closing connections with 1012");
        stop.cancel();
    });
    let state = AppState::new(Arc::new(config), auth, store, clock, shutdown, metrics);
    presenced::serve(state, listener).await
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn token(a: TokenArgs) -> anyhow::Result<()> {
    let config = Config::load(a.config.as_deref(), Figment::new())?;
    if config.auth.jwt_secret.is_empty() {
        anyhow::bail!(
            "auth.jwt_secret is not set: pass --config FILE or set PRESENCE_AUTH__JWT_SECRET"
        );
    }
    let role = match a.role.as_str() {
        "service" => Role::Service,
        "admin" => Role::Admin,
        _ => Role::User,
    };
    let org = a
        .org
        .map(OrgId::new)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--org: {e}"))?;
    let sub = UserId::new(a.sub).map_err(|e| anyhow::anyhow!("--sub: {e}"))?;
    let t = authenticator(&config, Arc::new(SystemClock))?
        .issue(&sub, org.as_ref(), role, a.ttl)
        .expect("an HS256 authenticator issues tokens");
    println!("{t}");
    Ok(())
}

#[derive(clap::Args)]
struct RepairArgs {
    /// The nodes' TOML configuration file (`[store]` says where Redis is).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Change nothing; exit with 1 when anything is off.
    #[arg(long)]
    check: bool,
}

/// `presenced repair`: one whole pass on the configured Redis store. It speaks to the store
/// under an id no node has and never renews a lease or opens a session, so to the nodes it
/// is not a node: nothing of it is ever reaped or listed. Exits 1 when `--check` found
/// something off, and on any error (an error message on stderr, no report).
async fn repair(a: RepairArgs) -> anyhow::Result<u8> {
    let config = Config::load(a.config.as_deref(), Figment::new())?;
    if config.store.kind == StoreKind::Memory {
        anyhow::bail!(
            "store.kind is \"memory\": its presence lives inside the running node, so there is nothing to repair from outside; ask the node with POST /admin/repair (admin token), or pass --config with store.kind = \"redis\""
        );
    }
    let redis = presence_store::RedisConfig {
        url: config.store.redis_url.clone(),
        key_prefix: config.store.key_prefix.clone(),
        command_timeout: config.store.command_timeout,
    };
    let node = NodeId::new("presenced-repair").expect("a valid id");
    let store = presence_store::RedisStore::connect(
        redis,
        node,
        Arc::new(SystemClock),
        config.store_settings(),
    )
    .await?;
    let report = presence_core::Store::repair(
        &store,
        presence_core::RepairMode {
            check_only: a.check,
            slice: None,
        },
    )
    .await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(u8::from(a.check && !report.is_clean()))
}
