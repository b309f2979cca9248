//! `presenced demo`: simulated users, so a fresh node (and its dashboard) shows life.
//!
//! Each simulated user is a task with a real WebSocket session, like a person in a chat
//! product: it comes online (web, desktop or mobile) in a zone and an org, reports activity,
//! moves between zones, sets and clears custom statuses, types in its zone's conversation,
//! goes idle (manual away) and comes back, and leaves, at a pace of a few frames a minute,
//! then comes back a while later. A user whose connection fails (the node restarted) retries
//! with backoff, as a real client would.
//!
//! Where the users come from: with `--url` the demo drives that node, signing the users' tokens
//! with its secret (`--secret`, `PRESENCE_AUTH__JWT_SECRET`, or `--config`'s `auth.jwt_secret`).
//! Without `--url` it starts a node of its own in this process (memory store, a random
//! development secret, `--listen`, default the usual 127.0.0.1:8000), so one command on a fresh
//! machine gives a dashboard with life in it.
//!
//! Exit codes: 0 when it ran until `--duration` or a Ctrl-C / SIGTERM; 1 when it could not
//! start (the node is not there, refused the token, the port is taken); 2 for bad flags or a
//! missing secret.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{SinkExt, StreamExt};
use presence_core::{NodeId, OrgId, SharedClock, SystemClock, UserId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::auth::{Authenticator, Role};
use crate::config::Config;
use crate::state::AppState;

/// Most simulated users one demo runs (each is a socket and a task).
pub const MAX_USERS: usize = 5000;

/// `presenced demo` flags.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The node to drive, e.g. http://127.0.0.1:8000. Without it the demo starts a node of its
    /// own (memory store, development secret) on --listen.
    #[arg(long)]
    pub url: Option<String>,
    /// How many simulated users.
    #[arg(long, default_value_t = 40)]
    pub users: usize,
    /// The node's HS256 secret, to sign the users' tokens (default: PRESENCE_AUTH__JWT_SECRET;
    /// a development node prints it at start).
    #[arg(long)]
    pub secret: Option<String>,
    /// A node configuration file: its auth.jwt_secret signs the users' tokens.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where the demo's own node listens (without --url); 127.0.0.1:0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: String,
    /// Stop after this long (e.g. 90s, 10m); default: until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// How often to print a report line.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub report_every: Duration,
    /// The same script of choices for the same seed (default: random).
    #[arg(long)]
    pub seed: Option<u64>,
    /// One JSON object per line (started, report, stopped) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Zones, most popular first (users pick them with falling weights, so some are busier).
const ZONES: &[&str] = &[
    "lobby",
    "engineering",
    "design",
    "sales",
    "support",
    "marketing",
    "ops",
    "random",
];
/// Orgs, most populous first.
const ORGS: &[&str] = &["acme", "globex", "initech", "umbrella"];
/// Custom statuses: kind, text, emoji.
const CUSTOM: &[(&str, &str, &str)] = &[
    ("in_meeting", "Standup", "📅"),
    ("busy", "Focus time", "🎧"),
    ("on_break", "Lunch", "🥪"),
    ("dnd", "Presenting", "⛔"),
    ("custom", "Working from the café", "☕"),
    ("custom", "Commuting", "🚆"),
];

/// What every simulated user reports to the summary lines.
#[derive(Default)]
struct Tally {
    connected: AtomicUsize,
    sessions: AtomicU64,
    frames: AtomicU64,
    failures: AtomicU64,
}

/// Who signs the users' tokens.
struct Signer(Authenticator);

impl Signer {
    fn token(&self, user: &str, org: &str) -> String {
        let user = UserId::new(user).expect("demo user ids are valid");
        let org = OrgId::new(org).expect("demo org ids are valid");
        self.0
            .issue(&user, Some(&org), Role::User, Duration::from_secs(3600))
            .expect("an HS256 authenticator issues tokens")
    }
}

fn usage(message: String) -> ! {
    clap::Error::raw(
        clap::error::ErrorKind::ValueValidation,
        format!("{message}\n"),
    )
    .exit()
}

/// Runs the demo until `--duration`, Ctrl-C or SIGTERM.
pub async fn run(a: DemoArgs) -> anyhow::Result<()> {
    if a.users == 0 || a.users > MAX_USERS {
        usage(format!("--users must be between 1 and {MAX_USERS}"));
    }
    if a.report_every.is_zero() {
        usage("--report-every must be above 0".into());
    }
    let clock: SharedClock = Arc::new(SystemClock);
    let stop = CancellationToken::new();
    let mut own_node = None;
    let (base, signer) = match &a.url {
        Some(url) => {
            let secret = secret(&a);
            let rules = Config::default().auth.token_rules();
            let signer = Signer(Authenticator::hs256(
                secret.as_bytes(),
                &rules,
                clock.clone(),
            ));
            (http_base(url), signer)
        }
        None => {
            let (addr, signer, node) = start_own_node(&a, clock.clone()).await?;
            own_node = Some(node);
            (format!("http://{addr}"), signer)
        }
    };
    let ws_url = format!("ws{}/messenger/ws", base.trim_start_matches("http"));
    let signer = Arc::new(signer);
    probe(&ws_url, &signer).await?;

    let out = Output { json: a.json };
    out.started(&base, a.users, own_node.is_some());
    let tally = Arc::new(Tally::default());
    let mut master = match a.seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::from_rng(&mut rand::rng()),
    };
    let mut users = Vec::with_capacity(a.users);
    for i in 1..=a.users {
        let user = SimUser {
            id: format!("demo-{i}"),
            org: pick(&mut master, ORGS).to_string(),
            device: match master.random_range(0..10) {
                0..5 => "web",
                5..8 => "desktop",
                _ => "mobile",
            },
            ws_url: ws_url.clone(),
            signer: signer.clone(),
            tally: tally.clone(),
            rng: StdRng::seed_from_u64(master.random()),
        };
        users.push(tokio::spawn(user.live(stop.clone())));
    }

    let started = Instant::now();
    let mut reports = tokio::time::interval(a.report_every);
    reports.tick().await;
    let until = async {
        match a.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let signal = wait_for_signal();
    tokio::pin!(until, signal);
    loop {
        tokio::select! {
            _ = &mut until => break,
            _ = &mut signal => break,
            _ = reports.tick() => out.report(started.elapsed(), a.users, &tally),
        }
    }
    stop.cancel();
    for u in users {
        let _ = u.await;
    }
    out.stopped(started.elapsed(), a.users, &tally);
    if let Some((shutdown, node)) = own_node {
        shutdown.cancel();
        node.await.context("the demo's node")??;
    }
    Ok(())
}

/// The secret that signs the users' tokens: `--secret`, `--config`, or the environment.
fn secret(a: &DemoArgs) -> String {
    if let Some(s) = &a.secret {
        return s.clone();
    }
    if let Some(file) = &a.config {
        match Config::load(Some(file), figment::Figment::new()) {
            Ok(c) if !c.auth.jwt_secret.is_empty() => return c.auth.jwt_secret,
            Ok(_) => usage(format!(
                "{} has no auth.jwt_secret: the demo signs its users' tokens with the node's HS256 secret",
                file.display()
            )),
            Err(e) => usage(format!("--config: {e}")),
        }
    }
    match std::env::var("PRESENCE_AUTH__JWT_SECRET") {
        Ok(s) if !s.is_empty() => s,
        _ => usage(
            "the demo signs its simulated users' tokens with the node's secret: pass --secret \
             (a development node prints it as `secret (PRESENCE_AUTH__JWT_SECRET): ...`), set \
             PRESENCE_AUTH__JWT_SECRET, or pass --config; or leave out --url and the demo starts \
             a node of its own"
                .into(),
        ),
    }
}

/// `http://host:port` from what the user gave (`ws://` accepted, a path or slash dropped).
fn http_base(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    let url = url.strip_suffix("/messenger/ws").unwrap_or(url);
    if let Some(rest) = url.strip_prefix("ws://") {
        return format!("http://{rest}");
    }
    if url.starts_with("https://") || url.starts_with("wss://") {
        usage(
            "the demo speaks plain http:// and ws:// only: run it next to the node and give its \
             address, e.g. --url http://127.0.0.1:8000"
                .into(),
        );
    }
    if !url.starts_with("http://") {
        usage(format!(
            "--url {url:?}: expected http://HOST:PORT, e.g. http://127.0.0.1:8000"
        ));
    }
    url.to_string()
}

type OwnNode = (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
);

/// A node in this process: memory store, a random development secret (so its dashboard offers
/// the development token), default settings otherwise.
async fn start_own_node(
    a: &DemoArgs,
    clock: SharedClock,
) -> anyhow::Result<(std::net::SocketAddr, Signer, OwnNode)> {
    let mut config = Config::default();
    config.server.listen = a.listen.clone();
    if let Err(e) = config.validate() {
        usage(format!("--listen: {e}"));
    }
    config.auth.jwt_secret = crate::auth::random_secret();
    config.auth.generated_dev_secret = true;
    let listener = config.bind().map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "{} is in use (a node already running?): drive it with `presenced demo --url http://{} --secret SECRET`, or pick another address with --listen 127.0.0.1:0",
                a.listen,
                a.listen
            )
        } else {
            anyhow::anyhow!("cannot listen on {}: {e}", a.listen)
        }
    })?;
    let addr = listener.local_addr()?;
    let rules = config.auth.token_rules();
    let signer = Signer(Authenticator::hs256(
        config.auth.jwt_secret.as_bytes(),
        &rules,
        clock.clone(),
    ));
    let admin = signer
        .0
        .issue(
            &UserId::new("1")?,
            None,
            Role::Admin,
            Duration::from_secs(86_400),
        )
        .expect("an HS256 authenticator issues tokens");
    let auth = Authenticator::hs256(config.auth.jwt_secret.as_bytes(), &rules, clock.clone());
    let store = crate::open_store(&config, NodeId::random(), clock.clone()).await?;
    let shutdown = CancellationToken::new();
    let secret = config.auth.jwt_secret.clone();
    let state = AppState::new(Arc::new(config), auth, store, clock, shutdown.clone(), None);
    let node = tokio::spawn(crate::serve(state, listener));
    // The same first line as `presenced serve`: scripts read the port from it.
    println!("presenced listening on http://{addr}");
    if !a.json {
        println!("demo node: http://{addr}/ (memory store, a random development secret)");
        println!("  dashboard: http://{addr}/ (it offers the development token itself)");
        println!("  secret (PRESENCE_AUTH__JWT_SECRET): {secret}");
        println!("  admin token for user 1, valid 24h: {admin}");
    }
    Ok((addr, signer, (shutdown, node)))
}

/// One connection before anything else, so a wrong address or secret fails now, with a
/// message that says what to do, rather than as a stream of retries.
async fn probe(ws_url: &str, signer: &Signer) -> anyhow::Result<()> {
    let token = signer.token("demo-1", ORGS[0]);
    let url = format!("{ws_url}?token={token}");
    let connect = tokio_tungstenite::connect_async(url.as_str());
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok((mut ws, _))) => {
            let _ = ws.close(None).await;
            Ok(())
        }
        Ok(Err(tungstenite::Error::Http(r))) if r.status() == 401 => anyhow::bail!(
            "the node at {} refused the demo's token (401): the secret is not the node's (a development node makes a new one at every start: copy it again)",
            ws_url.trim_end_matches("/messenger/ws")
        ),
        Ok(Err(e)) => anyhow::bail!(
            "cannot connect to {}: {e}; is a node running there (`presenced serve`)? Or run `presenced demo` without --url to start one",
            ws_url.trim_end_matches("/messenger/ws")
        ),
        Err(_) => anyhow::bail!(
            "no answer from {} within 10 s",
            ws_url.trim_end_matches("/messenger/ws")
        ),
    }
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    // Falling weights (n, n-1, ..., 1): the first items are the popular ones.
    let n = items.len();
    let total = n * (n + 1) / 2;
    let mut r = rng.random_range(0..total);
    for (i, item) in items.iter().enumerate() {
        let w = n - i;
        if r < w {
            return item;
        }
        r -= w;
    }
    &items[n - 1]
}

fn secs(rng: &mut StdRng, lo: f64, hi: f64) -> Duration {
    Duration::from_secs_f64(rng.random_range(lo..hi))
}

struct SimUser {
    id: String,
    org: String,
    device: &'static str,
    ws_url: String,
    signer: Arc<Signer>,
    tally: Arc<Tally>,
    rng: StdRng,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl SimUser {
    /// Comes and goes until `stop`.
    async fn live(mut self, stop: CancellationToken) {
        // Staggered arrivals: the first users show within seconds.
        let mut wait = secs(&mut self.rng, 0.0, 3.0);
        let mut failures = 0u32;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let zone = pick(&mut self.rng, ZONES).to_string();
            match self.connect(&zone).await {
                Ok(ws) => {
                    failures = 0;
                    self.tally.sessions.fetch_add(1, Ordering::Relaxed);
                    self.tally.connected.fetch_add(1, Ordering::Relaxed);
                    let ended_by_us = self.session(ws, zone, &stop).await;
                    self.tally.connected.fetch_sub(1, Ordering::Relaxed);
                    if stop.is_cancelled() {
                        return;
                    }
                    wait = if ended_by_us {
                        secs(&mut self.rng, 5.0, 30.0)
                    } else {
                        // Dropped by the node (a restart): back soon, with jitter.
                        secs(&mut self.rng, 0.5, 2.0)
                    };
                }
                Err(_) => {
                    failures += 1;
                    self.tally.failures.fetch_add(1, Ordering::Relaxed);
                    let ceiling = (0.5 * 2f64.powi(failures.min(5) as i32)).min(10.0);
                    wait = secs(&mut self.rng, ceiling / 2.0, ceiling);
                }
            }
        }
    }

    async fn connect(&mut self, zone: &str) -> anyhow::Result<Socket> {
        let token = self.signer.token(&self.id, &self.org);
        let url = format!(
            "{}?token={token}&zone_id={zone}&org_id={}&device={}",
            self.ws_url, self.org, self.device
        );
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(url.as_str()),
        )
        .await
        .context("connect timed out")??;
        Ok(ws)
    }

    /// One session: actions every few seconds until it is time to leave. Returns whether it
    /// ended by leaving (rather than the node dropping it).
    async fn session(
        &mut self,
        mut ws: Socket,
        mut zone: String,
        stop: &CancellationToken,
    ) -> bool {
        let leave_at = tokio::time::Instant::now() + secs(&mut self.rng, 20.0, 120.0);
        let mut idle = false;
        let mut typing: Option<(String, tokio::time::Instant)> = None;
        let mut custom = false;
        loop {
            let next = tokio::time::Instant::now() + secs(&mut self.rng, 2.0, 6.0);
            let wake = match &typing {
                Some((_, until)) => next.min(*until),
                None => next,
            };
            tokio::select! {
                _ = stop.cancelled() => {
                    let _ = ws.close(None).await;
                    return true;
                }
                frame = ws.next() => match frame {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return false,
                    Some(Ok(_)) => continue, // the hello, error frames: nothing to do
                },
                _ = tokio::time::sleep_until(wake) => {}
            }
            let now = tokio::time::Instant::now();
            if let Some((conv, until)) = &typing
                && *until <= now
            {
                let f = json!({"type": "typing.stop", "conversation_id": conv});
                if self.send(&mut ws, f).await.is_err() {
                    return false;
                }
                typing = None;
                continue;
            }
            if now >= leave_at {
                let _ = ws.close(None).await;
                return true;
            }
            let frame = if idle {
                // Idle users mostly stay idle; now and then they come back.
                if self.rng.random_bool(0.3) {
                    idle = false;
                    json!({"type": "status.set", "status": "online"})
                } else {
                    continue;
                }
            } else {
                match self.rng.random_range(0..100) {
                    0..55 => json!({"type": "activity"}),
                    55..67 => {
                        zone = pick(&mut self.rng, ZONES).to_string();
                        json!({"type": "zone.set", "zone_id": zone})
                    }
                    67..77 if !custom => {
                        custom = true;
                        let (kind, text, emoji) = *pick(&mut self.rng, CUSTOM);
                        json!({"type": "custom_status.set", "kind": kind, "text": text, "emoji": emoji})
                    }
                    67..77 => {
                        custom = false;
                        json!({"type": "custom_status.clear"})
                    }
                    77..92 if typing.is_none() => {
                        let conv = format!("room-{zone}");
                        typing = Some((conv.clone(), now + secs(&mut self.rng, 1.5, 4.0)));
                        json!({"type": "typing.start", "conversation_id": conv})
                    }
                    92..100 => {
                        idle = true;
                        json!({"type": "status.set", "status": "away"})
                    }
                    _ => json!({"type": "activity"}),
                }
            };
            if self.send(&mut ws, frame).await.is_err() {
                return false;
            }
        }
    }

    async fn send(&self, ws: &mut Socket, frame: Value) -> Result<(), tungstenite::Error> {
        ws.send(Message::text(frame.to_string())).await?;
        self.tally.frames.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

struct Output {
    json: bool,
}

impl Output {
    fn started(&self, url: &str, users: usize, own_node: bool) {
        if self.json {
            println!(
                "{}",
                json!({"event": "started", "url": url, "users": users, "own_node": own_node})
            );
        } else {
            println!(
                "{users} simulated users on {url}: connecting, moving between zones, going idle, \
                 typing and leaving. Ctrl-C stops."
            );
        }
    }

    fn report(&self, elapsed: Duration, users: usize, t: &Tally) {
        let (connected, sessions, frames, failures) = (
            t.connected.load(Ordering::Relaxed),
            t.sessions.load(Ordering::Relaxed),
            t.frames.load(Ordering::Relaxed),
            t.failures.load(Ordering::Relaxed),
        );
        if self.json {
            println!(
                "{}",
                json!({"event": "report", "elapsed_s": elapsed.as_secs(), "users": users,
                       "connected": connected, "sessions": sessions, "frames": frames,
                       "failures": failures})
            );
        } else {
            println!(
                "[{:>4}s] {connected}/{users} connected · {sessions} sessions opened · {frames} frames sent · {failures} failed connects",
                elapsed.as_secs()
            );
        }
    }

    fn stopped(&self, elapsed: Duration, users: usize, t: &Tally) {
        if self.json {
            println!(
                "{}",
                json!({"event": "stopped", "elapsed_s": elapsed.as_secs(), "users": users,
                       "sessions": t.sessions.load(Ordering::Relaxed),
                       "frames": t.frames.load(Ordering::Relaxed),
                       "failures": t.failures.load(Ordering::Relaxed)})
            );
        } else {
            self.report(elapsed, users, t);
            println!("demo stopped: every simulated user left.");
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_as_a_newcomer_would_write_them() {
        assert_eq!(http_base("http://127.0.0.1:8000/"), "http://127.0.0.1:8000");
        assert_eq!(
            http_base("ws://127.0.0.1:8000/messenger/ws"),
            "http://127.0.0.1:8000"
        );
        assert_eq!(http_base(" http://h:1 "), "http://h:1");
    }

    #[test]
    fn popular_items_are_picked_more_often() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut seen = [0usize; 4];
        for _ in 0..4000 {
            let picked = pick(&mut rng, ORGS);
            let i = ORGS.iter().position(|o| o == picked).unwrap();
            seen[i] += 1;
        }
        assert!(seen[0] > seen[3], "{seen:?}");
        assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
    }
}
