//! presence-bench: the measurements behind BENCHMARKS.md.
//!
//! Each scenario maps to a row of SPEC §13 and compares presenced with the seed's own Redis
//! command sequence (`seed.rs`) on the same Redis, in the same run:
//!
//! - `memory` (P1): bytes per online and per offline user.
//! - `store-throughput` (P2, P3): activity events, and session open + close transitions, per
//!   second of Redis CPU.
//!
//! With no `--redis-url`, a scenario starts a private `redis-server` and stops it at the end.

mod redis_server;
mod seed;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures::{StreamExt, TryStreamExt};
use presence_core::settings::StoreSettings;
use presence_core::{
    Activity, DeviceKind, NodeId, OpenSession, OrgId, SessionId, Store, SystemClock, UserId, ZoneId,
};
use presence_store::{RedisConfig, RedisStore};
use rand::Rng;
use redis::aio::ConnectionManager;
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
    /// P2 and P3: activity events and open + close transitions per second of Redis CPU.
    StoreThroughput {
        /// Online users loaded first (the size of the sets the operations touch).
        #[arg(long, default_value_t = 100_000)]
        users: u64,
        /// Users opened and closed per run (P3).
        #[arg(long, default_value_t = 20_000)]
        transitions: u64,
        /// Activity events per run (P2), spread uniformly over the loaded users.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Events per coalescing window (one flush): 20,000 is 250 ms at 80,000 events/s.
        #[arg(long, default_value_t = 20_000)]
        window: u64,
        /// Runs; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
}

/// Users per seed pipeline and requests in flight for our store.
const PIPELINE: usize = 1000;
const IN_FLIGHT: usize = 256;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
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
        Scenario::StoreThroughput {
            users,
            transitions,
            events,
            window,
            runs,
        } => {
            bench
                .store_throughput(users, transitions, events, window, runs)
                .await?
        }
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(report: &serde_json::Value) {
    println!("{}", report["title"].as_str().unwrap_or(""));
    for (k, v) in report
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| *k != "title")
    {
        println!("  {k:<44} {v}");
    }
}

struct Bench {
    url: String,
    conn: ConnectionManager,
    redis_version: String,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

impl Bench {
    async fn new(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        // FLUSHALL of a million users takes seconds: no short response timeout here.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(300)));
        let mut conn = ConnectionManager::new_with_config(client, config)
            .await
            .context("connecting to Redis")?;
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

    /// CPU seconds the Redis process has used (user + system).
    async fn redis_cpu(&self) -> anyhow::Result<f64> {
        Ok(self.info_field("cpu", "used_cpu_user").await?
            + self.info_field("cpu", "used_cpu_sys").await?)
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

    /// Our store, as a node with a realistic id, offline grace 0 (so a close is one
    /// transition, comparable to the seed's `set_offline`).
    async fn store(&self) -> anyhow::Result<Arc<RedisStore>> {
        let settings = StoreSettings {
            offline_grace: Duration::ZERO,
            ..Default::default()
        };
        let node = NodeId::random();
        let store = RedisStore::connect(
            RedisConfig::new(self.url.clone()),
            node,
            Arc::new(SystemClock),
            settings,
        )
        .await?;
        Ok(Arc::new(store))
    }

    async fn seed_each(&self, users: impl Iterator<Item = u64>, op: SeedOp) -> anyhow::Result<()> {
        let users: Vec<u64> = users.collect();
        for chunk in users.chunks(PIPELINE) {
            let mut c = self.conn.clone();
            match op {
                SeedOp::Online => seed::set_online(&mut c, chunk, now_ms()).await?,
                SeedOp::Offline => seed::set_offline(&mut c, chunk, now_ms()).await?,
                SeedOp::Activity => seed::update_activity(&mut c, chunk, now_ms()).await?,
            }
        }
        Ok(())
    }

    async fn open_all(
        store: &Arc<RedisStore>,
        users: impl Iterator<Item = u64>,
    ) -> anyhow::Result<Vec<(UserId, SessionId)>> {
        futures::stream::iter(users)
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
                    };
                    store.open_session(open.clone()).await?;
                    anyhow::Ok((open.user, open.session))
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect()
            .await
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

    async fn memory(&self, users: u64) -> anyhow::Result<serde_json::Value> {
        let started = Instant::now();
        self.flush().await?;
        let base = self.used_memory().await?;
        self.seed_each(0..users, SeedOp::Online).await?;
        let seed_online = (self.used_memory().await? - base) / users as f64;
        self.seed_each(0..users, SeedOp::Offline).await?;
        let seed_offline = (self.used_memory().await? - base) / users as f64;

        self.flush().await?;
        let store = self.store().await?;
        let base = self.used_memory().await?;
        let sessions = Self::open_all(&store, 0..users).await?;
        let ours_online = (self.used_memory().await? - base) / users as f64;
        let feed_online: Option<f64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg("feed")
            .query_async(&mut self.conn.clone())
            .await?;
        Self::close_all(&store, sessions).await?;
        let ours_offline = (self.used_memory().await? - base) / users as f64;
        let feed_offline: Option<f64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg("feed")
            .query_async(&mut self.conn.clone())
            .await?;
        self.flush().await?;
        Ok(json!({
            "title": format!("memory (P1): {users} users, Redis {}", self.redis_version),
            "users": users,
            "seed_bytes_per_online_user": seed_online.round(),
            "ours_bytes_per_online_user": ours_online.round(),
            "online_ratio_ours_to_seed": (ours_online / seed_online * 100.0).round() / 100.0,
            "seed_bytes_per_offline_user": seed_offline.round(),
            "ours_bytes_per_offline_user": ours_offline.round(),
            "offline_ratio_ours_to_seed": (ours_offline / seed_offline * 100.0).round() / 100.0,
            "ours_feed_bytes_online": feed_online.unwrap_or(0.0),
            "ours_feed_bytes_offline": feed_offline.unwrap_or(0.0),
            "seconds": started.elapsed().as_secs_f64().round(),
        }))
    }

    async fn store_throughput(
        &self,
        users: u64,
        transitions: u64,
        events: u64,
        window: u64,
        runs: usize,
    ) -> anyhow::Result<serde_json::Value> {
        let started = Instant::now();
        let (mut seed_tr, mut ours_tr, mut seed_act, mut ours_act, mut ours_writes) =
            (vec![], vec![], vec![], vec![], vec![]);
        let activity_events: Vec<Vec<u64>> = (0..runs)
            .map(|_| {
                let mut rng = rand::rng();
                (0..events).map(|_| rng.random_range(0..users)).collect()
            })
            .collect();

        // The seed's layout.
        self.flush().await?;
        self.seed_each(0..users, SeedOp::Online).await?;
        for (run, events) in activity_events.iter().enumerate() {
            let fresh = users + run as u64 * transitions..users + (run as u64 + 1) * transitions;
            let cpu = self.redis_cpu().await?;
            self.seed_each(fresh.clone(), SeedOp::Online).await?;
            self.seed_each(fresh, SeedOp::Offline).await?;
            seed_tr.push(2.0 * transitions as f64 / (self.redis_cpu().await? - cpu));

            let cpu = self.redis_cpu().await?;
            self.seed_each(events.iter().copied(), SeedOp::Activity)
                .await?;
            seed_act.push(events.len() as f64 / (self.redis_cpu().await? - cpu));
        }

        // Ours.
        self.flush().await?;
        let store = self.store().await?;
        Self::open_all(&store, 0..users).await?;
        for (run, events) in activity_events.iter().enumerate() {
            let fresh = users + run as u64 * transitions..users + (run as u64 + 1) * transitions;
            let cpu = self.redis_cpu().await?;
            let sessions = Self::open_all(&store, fresh).await?;
            Self::close_all(&store, sessions).await?;
            ours_tr.push(2.0 * transitions as f64 / (self.redis_cpu().await? - cpu));

            // The node coalesces a window of events into one flush: each user once, then
            // `record_activity` carries the whole batch (split in script calls of 500 users).
            let cpu = self.redis_cpu().await?;
            let mut writes = 0;
            for chunk in events.chunks(window as usize) {
                let mut unique: Vec<u64> = chunk.to_vec();
                unique.sort_unstable();
                unique.dedup();
                writes += unique.len();
                let at = now_ms();
                let batch: Vec<Activity> = unique
                    .iter()
                    .map(|u| Activity {
                        user: UserId::new(u.to_string()).expect("id"),
                        at,
                    })
                    .collect();
                store.record_activity(&batch).await?;
            }
            ours_act.push(events.len() as f64 / (self.redis_cpu().await? - cpu));
            ours_writes.push(writes as f64);
        }
        self.flush().await?;
        let (st, ot, sa, oa) = (
            median(seed_tr),
            median(ours_tr),
            median(seed_act),
            median(ours_act),
        );
        Ok(json!({
            "title": format!(
                "store-throughput (P2, P3): {users} online users, {transitions} open+close per run, {events} activity events per run in windows of {window}, median of {runs} runs, Redis {}",
                self.redis_version
            ),
            "p3_seed_transitions_per_redis_cpu_s": st.round(),
            "p3_ours_transitions_per_redis_cpu_s": ot.round(),
            "p3_ratio_ours_to_seed": (ot / st * 100.0).round() / 100.0,
            "p2_seed_activity_events_per_redis_cpu_s": sa.round(),
            "p2_ours_activity_events_per_redis_cpu_s": oa.round(),
            "p2_ratio_ours_to_seed": (oa / sa * 100.0).round() / 100.0,
            "p2_ours_user_writes_per_run_after_coalescing": median(ours_writes),
            "seconds": started.elapsed().as_secs_f64().round(),
        }))
    }
}

#[derive(Clone, Copy)]
enum SeedOp {
    Online,
    Offline,
    Activity,
}
