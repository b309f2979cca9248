//! presence-bench: the measurements behind BENCHMARKS.md.
//!
//! Each scenario maps to a row of SPEC §13 and compares presenced with the seed's own Redis
//! command sequence (`seed.rs`) on the same Redis, in the same run:
//!
//! - `memory` (P1): bytes per online and per offline user.
//! - `store-throughput` (P2, P3): activity events, and session open + close transitions, per
//!   second of Redis CPU.
//! - `list` (P4): list latency and Redis CPU per page in a zone of 100k users: through a
//!   node's HTTP API, the store call alone, and the seed's `get_online_users` as it ran and
//!   pipelined.
//! - `idle` (P5): node memory per idle WebSocket connection.
//! - `storm` (P8): clients connecting at once; connect-to-connected latency.
//! - `propagation` (P6): latency of a change from node A to a subscriber on node B.
//! - `counts`: a zone's subscriber on node B following every event, then counts only, while
//!   the zone's count changes at a set rate through node A.
//! - `typing`: typing frames through node A to subscribers on node B, beside presence changes
//!   at the same rate, and what eager repeated starts cost.
//! - `crash` (P7): kill -9 of a node holding many users; time until all are offline.
//! - `webhooks`: deliveries a second to one local receiver, and the lag from a change to its
//!   delivery.
//!
//! With no `--redis-url`, a scenario starts a private `redis-server` and stops it at the end.

mod list;
mod progress;
mod redis_server;
mod seed;
mod sockets;
mod typing;
mod webhooks;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures::{StreamExt, TryStreamExt};
use presence_core::settings::StoreSettings;
use presence_core::{
    Clock, DeviceKind, ManualClock, NodeId, OpenSession, OrgId, SessionId, SharedClock, Store,
    SystemClock, UserId, ZoneId,
};
use presence_store::{ActivityCoalescer, RedisConfig, RedisStore};
use rand::Rng;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use seed::{SeedFormat, SeedOp, Sending};
use serde_json::json;

#[derive(Parser)]
#[command(about = "presenced's measurements (SPEC §13)")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Use this Redis instead of starting a private one. It is FLUSHALLed: never point it at
    /// data you want to keep.
    #[arg(long, global = true)]
    redis_url: Option<String>,
    /// Print the figures as JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Scenario {
    /// P1: Redis bytes per online and per offline user, ours vs the seed's layout.
    Memory {
        /// Users to load.
        #[arg(long, default_value_t = 100_000)]
        users: u64,
    },
    /// P4: list latency and Redis CPU per page in a zone of many online users: presenced over
    /// HTTP and as a store call, the seed's `get_online_users` as run and pipelined.
    List {
        /// Online users in the zone.
        #[arg(long, default_value_t = 100_000)]
        users: u64,
        /// Timed pages of each of the four ways.
        #[arg(long, default_value_t = 2000)]
        requests: u64,
        /// The pages are taken in this many rounds, the four ways in turn within each round;
        /// Redis CPU per page is the median over the rounds.
        #[arg(long, default_value_t = 10)]
        rounds: u64,
    },
    /// P5: node memory per idle WebSocket connection (needs `presenced` built beside this binary).
    Idle {
        /// Connections to hold.
        #[arg(long, default_value_t = 18_000)]
        connections: u64,
        /// Client processes (each binds its own 127.0.0.K and stays under the open-file cap).
        #[arg(long, default_value_t = 3)]
        workers: u64,
    },
    /// P8: clients connecting at once; connect-to-connected latency (needs `presenced` built).
    Storm {
        /// Clients.
        #[arg(long, default_value_t = 10_000)]
        connections: u64,
        /// Client processes.
        #[arg(long, default_value_t = 4)]
        workers: u64,
    },
    /// A client process of `storm` (not for direct use).
    #[command(hide = true)]
    StormWorker(WorkerArgs),
    /// A client process of `idle` and `crash` (not for direct use).
    #[command(hide = true)]
    IdleWorker(WorkerArgs),
    /// P6: changes on node A reaching a subscriber on node B, at a set rate.
    Propagation {
        /// Changes a second in total.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// How long to drive them.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Issue 10: one subscriber of a zone on node B, following every event and then counts
    /// only, while the zone's count changes at a set rate through node A.
    Counts {
        /// Count changes a second in total.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// How long to drive them, each way.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Issue 10: typing frames through node A to subscribers on node B, side by side with
    /// presence changes at the same rate, then repeated starts (absorbed by the node).
    Typing {
        /// Frames a second in total (at most 3,000: one conversation per 15 frames/s).
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// How long to drive them, each way.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Subscribers on node B.
        #[arg(long, default_value_t = 10)]
        subscribers: u64,
    },
    /// P7: kill -9 a node holding many users; time until another node announced them offline.
    Crash {
        /// Users on the node that crashes.
        #[arg(long, default_value_t = 10_000)]
        users: u64,
        /// Client processes.
        #[arg(long, default_value_t = 2)]
        workers: u64,
    },
    /// Issue 11: webhook deliveries a second to one local receiver, and the lag from a
    /// change to its delivery (needs `presenced` built).
    Webhooks {
        /// Changes made at once, for deliveries a second.
        #[arg(long, default_value_t = 5000)]
        burst: u64,
        /// Changes a second afterwards, for the lag.
        #[arg(long, default_value_t = 200)]
        rate: u64,
        /// How long to drive them (0: no lag run).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The receiver answers each request this much later (a round trip away).
        #[arg(long, default_value_t = 0)]
        receiver_delay_ms: u64,
        /// The node's `webhooks.max_in_flight`.
        #[arg(long, default_value_t = 8)]
        max_in_flight: usize,
    },
    /// P2 and P3: activity events and open + close transitions per second of Redis CPU.
    StoreThroughput {
        /// Online users loaded first (the size of the sets the operations touch).
        #[arg(long, default_value_t = 100_000)]
        users: u64,
        /// Users opened and closed per run (P3).
        #[arg(long, default_value_t = 20_000)]
        transitions: u64,
        /// Users sending activity (P2), out of the loaded ones.
        #[arg(long, default_value_t = 10_000)]
        active: u64,
        /// Activity events per second of each active user (frames, typing, messages).
        #[arg(long, default_value_t = 4.0)]
        rate: f64,
        /// Simulated seconds of activity per run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Runs; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
}

/// What a client worker process is told.
#[derive(clap::Args)]
struct WorkerArgs {
    /// The node's port on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// Clients to open.
    #[arg(long)]
    count: u64,
    /// User number of the first client (`u{n}`, `storm{n}`).
    #[arg(long)]
    first: u64,
    /// Source address to bind the clients to.
    #[arg(long)]
    source: String,
    /// Appended to the WebSocket URL.
    #[arg(long, default_value = "")]
    query: String,
}

/// Requests in flight for our store (the multiplexed connection pipelines them).
const IN_FLIGHT: usize = 256;

/// Simulated flush interval of a node (P2).
const TICK_MS: i64 = 250;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Client workers run on one thread each: on a 2-core machine they share the cores with
    // the node and Redis, and should take as little of them as they can.
    let worker = matches!(
        cli.scenario,
        Scenario::IdleWorker { .. } | Scenario::StormWorker { .. }
    );
    let runtime = if worker {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.scenario {
        Scenario::IdleWorker(w) => {
            return sockets::worker(w.port, w.count, w.first, &w.source, &w.query).await;
        }
        Scenario::StormWorker(w) => {
            return sockets::storm_worker(w.port, w.count, w.first, &w.source).await;
        }
        _ => {}
    }
    let private = match &cli.redis_url {
        Some(_) => None,
        None => Some(redis_server::PrivateRedis::start().await?),
    };
    let url = cli
        .redis_url
        .clone()
        .or_else(|| private.as_ref().map(|p| p.url.clone()))
        .expect("a url");
    let bench = Bench::new(&url).await?;
    let report = match cli.scenario {
        Scenario::Memory { users } => bench.memory(users).await?,
        Scenario::List {
            users,
            requests,
            rounds,
        } => list::run(&url, users, requests, rounds).await?,
        Scenario::Idle {
            connections,
            workers,
        } => sockets::run(&url, connections, workers).await?,
        Scenario::Storm {
            connections,
            workers,
        } => sockets::storm(&url, connections, workers).await?,
        Scenario::Crash { users, workers } => sockets::crash(&url, users, workers).await?,
        Scenario::Propagation { rate, seconds } => {
            sockets::propagation(&url, rate, seconds).await?
        }
        Scenario::Counts { rate, seconds } => sockets::counts(&url, rate, seconds).await?,
        Scenario::Typing {
            rate,
            seconds,
            subscribers,
        } => typing::run(&url, rate, seconds, subscribers).await?,
        Scenario::Webhooks {
            burst,
            rate,
            seconds,
            receiver_delay_ms,
            max_in_flight,
        } => {
            let load = webhooks::Load {
                burst,
                rate,
                seconds,
                receiver_delay: Duration::from_millis(receiver_delay_ms),
                max_in_flight,
            };
            webhooks::run(&url, load).await?
        }
        Scenario::IdleWorker(_) | Scenario::StormWorker(_) => unreachable!("handled above"),
        Scenario::StoreThroughput {
            users,
            transitions,
            active,
            rate,
            seconds,
            runs,
        } => {
            let load = ActivityLoad {
                active: active.min(users),
                rate,
                seconds,
            };
            bench
                .store_throughput(users, transitions, load, runs)
                .await?
        }
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report["title"].as_str().unwrap_or(""));
        for (k, v) in report
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| *k != "title")
        {
            println!("  {k:<48} {v}");
        }
    }
    Ok(())
}

/// The P2 workload: `active` users each send `rate` activity events a second.
#[derive(Debug, Clone, Copy)]
struct ActivityLoad {
    active: u64,
    rate: f64,
    seconds: u64,
}

impl ActivityLoad {
    /// Events per tick: (user, ms since the start), users drawn uniformly from the active ones.
    fn ticks(&self) -> Vec<Vec<(u64, i64)>> {
        let mut rng = rand::rng();
        let ticks = self.seconds as i64 * 1000 / TICK_MS;
        let per_tick = (self.active as f64 * self.rate * TICK_MS as f64 / 1000.0).round() as usize;
        (0..ticks)
            .map(|t| {
                (0..per_tick)
                    .map(|_| {
                        (
                            rng.random_range(0..self.active),
                            t * TICK_MS + rng.random_range(0..TICK_MS),
                        )
                    })
                    .collect()
            })
            .collect()
    }
}

struct Bench {
    url: String,
    conn: ConnectionManager,
    /// The seed's connection pool, for [`Sending::AsTheSeed`].
    pool: Vec<MultiplexedConnection>,
    redis_version: String,
}

/// A loopback port nothing listens on now.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn ratio(a: f64, b: f64) -> f64 {
    (a / b * 100.0).round() / 100.0
}

impl Bench {
    async fn new(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        // FLUSHALL of a million users takes seconds: no short response timeout here.
        let config =
            ConnectionManagerConfig::new().set_response_timeout(Some(Duration::from_secs(300)));
        let mut conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .context("connecting to Redis")?;
        let mut pool = Vec::with_capacity(seed::POOL);
        for _ in 0..seed::POOL {
            pool.push(client.get_multiplexed_async_connection().await?);
        }
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await?;
        let redis_version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("?")
            .trim()
            .to_string();
        Ok(Self {
            url: url.into(),
            conn,
            pool,
            redis_version,
        })
    }

    async fn info_field(&self, section: &str, field: &str) -> anyhow::Result<f64> {
        let info: String = redis::cmd("INFO")
            .arg(section)
            .query_async(&mut self.conn.clone())
            .await?;
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("INFO {section} has no {field}"))
    }

    async fn used_memory(&self) -> anyhow::Result<f64> {
        self.info_field("memory", "used_memory").await
    }

    /// Runs `work` and returns `ops` per second of Redis CPU (user + system) it cost.
    async fn per_redis_cpu_s(
        &self,
        ops: usize,
        work: impl Future<Output = anyhow::Result<()>>,
    ) -> anyhow::Result<f64> {
        let cpu = || async {
            anyhow::Ok(
                self.info_field("cpu", "used_cpu_user").await?
                    + self.info_field("cpu", "used_cpu_sys").await?,
            )
        };
        let before = cpu().await?;
        work.await?;
        Ok(ops as f64 / (cpu().await? - before))
    }

    async fn flush(&self) -> anyhow::Result<()> {
        let _: () = redis::cmd("FLUSHALL")
            .query_async(&mut self.conn.clone())
            .await?;
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    async fn seed(
        &self,
        users: &[u64],
        op: SeedOp,
        format: SeedFormat,
        sending: Sending,
    ) -> anyhow::Result<()> {
        let p = progress::phase(&format!("seed: {op:?} x {} ({sending:?})", users.len()));
        let out = seed::run(&self.conn, &self.pool, users, op, format, sending).await;
        p.finish_and_clear();
        Ok(out?)
    }

    /// Our store as a node with a generated id, its lease renewed, offline grace 0 (so a close
    /// is one transition, comparable to the seed's `set_offline`).
    async fn store(&self, clock: SharedClock) -> anyhow::Result<Arc<RedisStore>> {
        let settings = StoreSettings {
            offline_grace: Duration::ZERO,
            ..Default::default()
        };
        let config = RedisConfig::new(self.url.clone());
        let store = RedisStore::connect(config, NodeId::random(), clock, settings).await?;
        store.renew_node_lease(0).await?;
        Ok(Arc::new(store))
    }

    async fn open_all(
        store: &Arc<RedisStore>,
        users: &[u64],
    ) -> anyhow::Result<Vec<(UserId, SessionId)>> {
        let bar = progress::bar(users.len() as u64, "presenced: opening sessions");
        let opened = futures::stream::iter(users.iter().copied())
            .map(|u| {
                let store = store.clone();
                async move {
                    let (z, o) = seed::place(u);
                    let open = OpenSession {
                        user: UserId::new(u.to_string())?,
                        session: SessionId::random(),
                        device: DeviceKind::Web,
                        zone: Some(ZoneId::new(z.to_string())?),
                        org: Some(OrgId::new(o.to_string())?),
                        leased: false,
                        invisible: false,
                    };
                    store.open_session(open.clone()).await?;
                    anyhow::Ok((open.user, open.session))
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .inspect(|_| bar.inc(1))
            .try_collect()
            .await;
        bar.finish_and_clear();
        opened
    }

    async fn close_all(
        store: &Arc<RedisStore>,
        sessions: Vec<(UserId, SessionId)>,
    ) -> anyhow::Result<()> {
        futures::stream::iter(sessions)
            .map(|(u, s)| {
                let store = store.clone();
                async move { store.close_session(&u, &s).await.map(|_| ()) }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Memory of the feed stream, a fixed-size buffer (`feed_max_len` events).
    /// Unlinks every key matching `pattern` (SCAN, then UNLINK in batches).
    async fn unlink_matching(&self, pattern: &str) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(10_000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let _: i64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    async fn feed_bytes(&self) -> anyhow::Result<f64> {
        let bytes: Option<f64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg("feed")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(bytes.unwrap_or(0.0))
    }

    /// Bytes per online and per offline user of the seed's sequence in `format`.
    async fn seed_memory(&self, users: &[u64], format: SeedFormat) -> anyhow::Result<(f64, f64)> {
        self.flush().await?;
        let base = self.used_memory().await?;
        self.seed(users, SeedOp::Online, format, Sending::Pipelined)
            .await?;
        let online = (self.used_memory().await? - base) / users.len() as f64;
        self.seed(users, SeedOp::Offline, format, Sending::Pipelined)
            .await?;
        let offline = (self.used_memory().await? - base) / users.len() as f64;
        Ok((online, offline))
    }

    async fn memory(&self, n: u64) -> anyhow::Result<serde_json::Value> {
        let started = Instant::now();
        let users: Vec<u64> = (0..n).collect();
        let (seed_online, seed_offline) = self.seed_memory(&users, SeedFormat::Python).await?;
        let (ms_online, ms_offline) = self.seed_memory(&users, SeedFormat::Millis).await?;

        self.flush().await?;
        let store = self.store(Arc::new(SystemClock)).await?;
        let base = self.used_memory().await?;
        let sessions = Self::open_all(&store, &users).await?;
        let ours_online = (self.used_memory().await? - base) / n as f64;
        let feed_online = self.feed_bytes().await? / n as f64;
        Self::close_all(&store, sessions).await?;
        let ours_offline = (self.used_memory().await? - base) / n as f64;
        let feed_offline = self.feed_bytes().await? / n as f64;
        // Online history (a hash per user who was ever present, and its retention index):
        // a feature the seed has not, measured apart.
        let with_history = self.used_memory().await?;
        self.unlink_matching("history:*").await?;
        let history_offline = (with_history - self.used_memory().await?) / n as f64;
        self.flush().await?;
        let tenth = |x: f64| (x * 10.0).round() / 10.0;
        Ok(json!({
            "title": format!("memory (P1): {n} users, Redis {}", self.redis_version),
            "seed_bytes_per_online_user": seed_online.round(),
            "ours_bytes_per_online_user": ours_online.round(),
            "online_ratio_ours_to_seed": ratio(ours_online, seed_online),
            "seed_bytes_per_offline_user": seed_offline.round(),
            "ours_bytes_per_offline_user": ours_offline.round(),
            "offline_ratio_ours_to_seed": ratio(ours_offline, seed_offline),
            "seed_ms_format_bytes_per_online_user": ms_online.round(),
            "seed_ms_format_bytes_per_offline_user": ms_offline.round(),
            "ours_feed_bytes_per_user_online": tenth(feed_online),
            "ours_feed_bytes_per_user_offline": tenth(feed_offline),
            "online_ratio_ours_without_feed_to_seed": ratio(ours_online - feed_online, seed_online),
            "ours_history_bytes_per_offline_user": history_offline.round(),
            "offline_ratio_ours_without_history_to_seed": ratio(ours_offline - history_offline, seed_offline),
            "seconds": started.elapsed().as_secs_f64().round(),
        }))
    }

    async fn store_throughput(
        &self,
        n: u64,
        transitions: u64,
        load: ActivityLoad,
        runs: usize,
    ) -> anyhow::Result<serde_json::Value> {
        let started = Instant::now();
        let loaded: Vec<u64> = (0..n).collect();
        // Every open + close uses users never seen before, so the sets stay at `n`.
        let fresh = |k: usize| -> Vec<u64> {
            let from = n + k as u64 * transitions;
            (from..from + transitions).collect()
        };
        let activity: Vec<Vec<Vec<(u64, i64)>>> = (0..runs).map(|_| load.ticks()).collect();
        let events_per_run: usize = activity[0].iter().map(Vec::len).sum();
        let mut figures: BTreeMap<&str, Vec<f64>> = BTreeMap::new();

        // The seed's layout, sent both ways; every activity event is one update_activity, in
        // both readings of the seed document (see `SeedOp::Activity`, `SeedOp::ActivityHsetOnly`).
        self.flush().await?;
        self.seed(
            &loaded,
            SeedOp::Online,
            SeedFormat::Python,
            Sending::Pipelined,
        )
        .await?;
        for (run, ticks) in activity.iter().enumerate() {
            for (k, (sending, tr, act, hset_act)) in [
                (
                    Sending::AsTheSeed,
                    "seed_as_run_tr",
                    "seed_as_run_act",
                    "seed_as_run_hset_act",
                ),
                (
                    Sending::Pipelined,
                    "seed_pipelined_tr",
                    "seed_pipelined_act",
                    "seed_pipelined_hset_act",
                ),
            ]
            .into_iter()
            .enumerate()
            {
                let users = fresh(run * 2 + k);
                let v = self
                    .per_redis_cpu_s(2 * users.len(), async {
                        self.seed(&users, SeedOp::Online, SeedFormat::Python, sending)
                            .await?;
                        self.seed(&users, SeedOp::Offline, SeedFormat::Python, sending)
                            .await
                    })
                    .await?;
                figures.entry(tr).or_default().push(v);
                let events: Vec<u64> = ticks.iter().flatten().map(|(u, _)| *u).collect();
                // Both readings on the same events; which goes first alternates between runs.
                let mut readings = [
                    (SeedOp::Activity, act),
                    (SeedOp::ActivityHsetOnly, hset_act),
                ];
                if run % 2 == 1 {
                    readings.reverse();
                }
                for (op, key) in readings {
                    let work = self.seed(&events, op, SeedFormat::Python, sending);
                    figures
                        .entry(key)
                        .or_default()
                        .push(self.per_redis_cpu_s(events.len(), work).await?);
                }
            }
        }

        // Ours, on a clock that follows the simulated activity.
        self.flush().await?;
        let clock = ManualClock::new(SystemClock.now_ms());
        let store = self.store(Arc::new(clock.clone())).await?;
        Self::open_all(&store, &loaded).await?;
        let mut writes = Vec::new();
        for (run, ticks) in activity.iter().enumerate() {
            let users = fresh(run);
            let v = self
                .per_redis_cpu_s(2 * users.len(), async {
                    let sessions = Self::open_all(&store, &users).await?;
                    Self::close_all(&store, sessions).await
                })
                .await?;
            figures.entry("ours_tr").or_default().push(v);

            // The node records every event and flushes every tick; the coalescer writes a
            // user at most once a second, with their newest time.
            let mut coalescer = ActivityCoalescer::new(1000);
            let mut written = 0;
            let start = clock.now_ms();
            let work = async {
                for (tick, events) in ticks.iter().enumerate() {
                    for (u, offset) in events {
                        coalescer.record(&UserId::new(u.to_string())?, start + offset);
                    }
                    let end = start + (tick as i64 + 1) * TICK_MS;
                    clock.set(end);
                    let due = coalescer.take_due(end);
                    written += due.len();
                    store.record_activity(&due).await?;
                }
                Ok(())
            };
            let v = self.per_redis_cpu_s(events_per_run, work).await?;
            figures.entry("ours_act").or_default().push(v);
            writes.push(written as f64);
        }
        self.flush().await?;
        let m = |k: &str| median(figures[k].clone());
        let writes = median(writes);
        Ok(json!({
            "title": format!(
                "store-throughput (P2, P3): {n} online users; {transitions} open+close per run; \
                 {} active users x {} events/s for {} s = {events_per_run} events per run; \
                 median of {runs} runs; Redis {}",
                load.active, load.rate, load.seconds, self.redis_version
            ),
            "p3_seed_as_run_transitions_per_redis_cpu_s": m("seed_as_run_tr").round(),
            "p3_seed_pipelined_transitions_per_redis_cpu_s": m("seed_pipelined_tr").round(),
            "p3_ours_transitions_per_redis_cpu_s": m("ours_tr").round(),
            "p3_ratio_ours_to_seed_as_run": ratio(m("ours_tr"), m("seed_as_run_tr")),
            "p3_ratio_ours_to_seed_pipelined": ratio(m("ours_tr"), m("seed_pipelined_tr")),
            "p2_ours_events_per_redis_cpu_s": m("ours_act").round(),
            // The seed's update_activity as its method list describes it: HGET + HSET + EXPIRE.
            "p2_seed_hget_hset_expire_as_run_events_per_redis_cpu_s": m("seed_as_run_act").round(),
            "p2_seed_hget_hset_expire_pipelined_events_per_redis_cpu_s": m("seed_pipelined_act").round(),
            "p2_ratio_ours_to_seed_hget_hset_expire_as_run": ratio(m("ours_act"), m("seed_as_run_act")),
            "p2_ratio_ours_to_seed_hget_hset_expire_pipelined": ratio(m("ours_act"), m("seed_pipelined_act")),
            // As the seed's performance table reads it: HSET only.
            "p2_seed_hset_only_as_run_events_per_redis_cpu_s": m("seed_as_run_hset_act").round(),
            "p2_seed_hset_only_pipelined_events_per_redis_cpu_s": m("seed_pipelined_hset_act").round(),
            "p2_ratio_ours_to_seed_hset_only_as_run": ratio(m("ours_act"), m("seed_as_run_hset_act")),
            "p2_ratio_ours_to_seed_hset_only_pipelined": ratio(m("ours_act"), m("seed_pipelined_hset_act")),
            "p2_ours_user_writes_per_run_after_coalescing": writes,
            "p2_ours_user_writes_per_redis_cpu_s": (m("ours_act") * writes / events_per_run as f64).round(),
            "seconds": started.elapsed().as_secs_f64().round(),
        }))
    }
}
