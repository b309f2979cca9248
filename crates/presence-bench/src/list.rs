//! `list` (P4): a page of 100 in a zone of N online users, four ways side by side in one run:
//!
//! - `http`: `GET /messenger/presence/online?zone_id=big&limit=100` through the real HTTP stack
//!   of a node running in this process on loopback (one `list.lua` call);
//! - `store`: the same page as a direct `Store::list` call on presenced's Redis store, no HTTP;
//! - `seed_as_run`: the seed's `get_online_users`, `ZREVRANGE` and then one `HGETALL` per user,
//!   each awaited (101 round trips);
//! - `seed_pipelined`: `ZREVRANGE`, then the 100 `HGETALL`s in one pipeline (2 round trips).
//!
//! Both layouts hold the same N users in the same Redis (presenced's under a key prefix). The
//! pages are taken in rounds, the four ways in turn, so each sees the same share of the
//! machine's other load; Redis CPU per page is `INFO cpu` around each way's block.

use std::sync::Arc;
use std::time::{Duration, Instant};

use presence_core::{
    DeviceKind, ListQuery, NodeId, OpenSession, Scope, SessionId, SharedClock, Store, SystemClock,
    UserId, ZoneId,
};
use presence_store::{RedisConfig, RedisStore};
use presenced::auth::{Authenticator, Role, TokenRules};
use presenced::config::{Config, StoreKind};
use presenced::state::AppState;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use futures::{StreamExt, TryStreamExt};

/// The node's HS256 secret (at least 32 bytes, as every node requires).
const BENCH_SECRET: &str = "bench-secret-for-the-list-benchmark";

/// Page size.
const LIMIT: usize = 100;

/// Untimed pages at the start of each block.
const BLOCK_WARMUP: usize = 10;

/// The four ways to get a page, in the order of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Http,
    Store,
    SeedAsRun,
    SeedPipelined,
}

impl Way {
    const ALL: [Way; 4] = [Way::Http, Way::Store, Way::SeedAsRun, Way::SeedPipelined];

    fn name(self) -> &'static str {
        match self {
            Way::Http => "http",
            Way::Store => "store",
            Way::SeedAsRun => "seed_as_run",
            Way::SeedPipelined => "seed_pipelined",
        }
    }

    /// Redis round trips per page, by construction.
    fn round_trips(self) -> usize {
        match self {
            Way::Http | Way::Store => 1,
            Way::SeedAsRun => 1 + LIMIT,
            Way::SeedPipelined => 2,
        }
    }
}

/// What one way measured.
struct Measured {
    latency: hdrhistogram::Histogram<u64>,
    /// Redis CPU µs per page, one figure per round.
    cpu_us_per_page: Vec<f64>,
    /// Redis commands per page (`total_commands_processed`), one figure per round.
    commands_per_page: Vec<f64>,
    pages: u64,
}

/// Redis counters read from one `INFO`.
struct Counters {
    cpu_s: f64,
    commands: f64,
    evalsha: f64,
}

async fn counters(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<Counters> {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .arg("stats")
        .arg("commandstats")
        .query_async(conn)
        .await?;
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split(',').next()?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    Ok(Counters {
        cpu_s: field("used_cpu_user:") + field("used_cpu_sys:"),
        commands: field("total_commands_processed:"),
        evalsha: field("cmdstat_evalsha:calls="),
    })
}

/// Runs the scenario against the Redis at `url`; `users` in one zone, `requests` pages of each
/// way, taken in `rounds` rounds.
pub(crate) async fn run(
    url: &str,
    users: u64,
    requests: u64,
    rounds: u64,
) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let mut config = Config::default();
    config.store.kind = StoreKind::Redis;
    config.store.redis_url = url.to_string();
    config.store.key_prefix = "bench-list:".into();
    config.auth.jwt_secret = BENCH_SECRET.into();
    config.presence.away_after = Duration::from_secs(86_400);

    // Load the zone straight through the store.
    let redis = RedisConfig {
        url: url.into(),
        key_prefix: config.store.key_prefix.clone(),
        command_timeout: Duration::from_secs(10),
    };
    let loader = Arc::new(
        RedisStore::connect(
            redis,
            NodeId::random(),
            Arc::new(SystemClock),
            config.store_settings(),
        )
        .await?,
    );
    loader.renew_node_lease(0).await?;
    // The loader's sessions belong to its node id: keep its lease alive for the whole run, or
    // the serving node's sweep reaps them `node_lease` after the start (loading 100k users in
    // both layouts and taking the pages lasts longer than that).
    let stop = CancellationToken::new();
    let lease = tokio::spawn({
        let (loader, stop) = (loader.clone(), stop.clone());
        async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
                loader.renew_node_lease(users).await?;
            }
            anyhow::Ok(())
        }
    });
    let zone = ZoneId::new("big")?;
    futures::stream::iter(0..users)
        .map(|u| {
            let (loader, zone) = (loader.clone(), zone.clone());
            async move {
                let open = OpenSession {
                    user: UserId::new(u.to_string())?,
                    session: SessionId::random(),
                    device: DeviceKind::Web,
                    zone: Some(zone),
                    org: None,
                    leased: false,
                    invisible: false,
                };
                loader.open_session(open).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(256)
        .try_collect::<Vec<()>>()
        .await?;
    // The seed's layout, the same users in a zone of the same name (keys without the prefix).
    let seed_loader = redis::aio::ConnectionManager::new_with_config(
        redis::Client::open(url)?,
        redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(60))),
    )
    .await?;
    let ids: Vec<u64> = (0..users).collect();
    crate::seed::load_zone(&seed_loader, &ids, "big", crate::seed::SeedFormat::Python).await?;
    let loaded = started.elapsed();

    // The node, in this process, on a loopback listener.
    let clock: SharedClock = Arc::new(SystemClock);
    let auth = Authenticator::hs256(
        BENCH_SECRET.as_bytes(),
        &TokenRules::default(),
        clock.clone(),
    );
    let token = auth
        .issue(
            &UserId::new("bench")?,
            None,
            Role::Service,
            Duration::from_secs(3600),
        )
        .expect("hs256");
    let store = presenced::open_store(&config, NodeId::random(), clock.clone()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let state = AppState::new(Arc::new(config), auth, store, clock, stop.clone(), None);
    let node = tokio::spawn(presenced::serve(state, listener));

    let http = reqwest::Client::new();
    let url_list = format!("http://{addr}/messenger/presence/online?zone_id=big&limit={LIMIT}");
    let client = redis::Client::open(url)?;
    let mut info_conn = client.get_multiplexed_async_connection().await?;
    let mut seed_conn = client.get_multiplexed_async_connection().await?;
    let query = ListQuery {
        limit: LIMIT,
        cursor: None,
        status: None,
    };
    let scope = Scope::Zone(zone.clone());
    let mut count = 0;

    // One page one way; checks it is a full page.
    let mut page = async |way: Way| -> anyhow::Result<()> {
        let n = match way {
            Way::Http => {
                let r = http
                    .get(&url_list)
                    .bearer_auth(&token)
                    .send()
                    .await?
                    .error_for_status()?;
                let body: serde_json::Value = r.json().await?;
                count = body["count"].as_u64().unwrap_or(0);
                body["online_users"].as_array().map_or(0, Vec::len)
            }
            Way::Store => loader.list(&scope, &query).await?.users.len(),
            Way::SeedAsRun => {
                let p = crate::seed::get_online_users(&mut seed_conn, "big", LIMIT).await?;
                anyhow::ensure!(p.iter().all(|r| r.len() >= 5), "seed records");
                p.len()
            }
            Way::SeedPipelined => {
                let p =
                    crate::seed::get_online_users_pipelined(&mut seed_conn, "big", LIMIT).await?;
                anyhow::ensure!(p.iter().all(|r| r.len() >= 5), "seed records");
                p.len()
            }
        };
        anyhow::ensure!(n == LIMIT, "{way:?}: a full page, got {n}");
        Ok(())
    };

    // Warm up: connections, scripts, caches.
    for way in Way::ALL {
        for _ in 0..50 {
            page(way).await?;
        }
    }

    // Redis's own load with the node idle: its sweep, lease and feed loops.
    let idle = Duration::from_secs(2);
    let before = counters(&mut info_conn).await?;
    tokio::time::sleep(idle).await;
    let after = counters(&mut info_conn).await?;
    let background_cpu_ms_per_s = (after.cpu_s - before.cpu_s) * 1000.0 / idle.as_secs_f64();
    let background_commands_per_s = (after.commands - before.commands) / idle.as_secs_f64();

    let per_round = (requests / rounds.max(1)).max(1);
    let mut measured: Vec<Measured> = Way::ALL
        .iter()
        .map(|_| {
            Ok(Measured {
                latency: hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?,
                cpu_us_per_page: Vec::new(),
                commands_per_page: Vec::new(),
                pages: 0,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let mut http_evalsha = 0.0;
    let bar = crate::progress::bar(per_round * rounds * 4, "pages of 100, four ways");
    for round in 0..rounds {
        for k in 0..4 {
            // Each way goes first in a quarter of the rounds.
            let i = (k + round as usize) % 4;
            let way = Way::ALL[i];
            // A few untimed pages first: after the other ways' blocks, the first pages of a
            // block pay for threads waking and cold caches, which the 2,000 back-to-back
            // requests of a single block did not.
            for _ in 0..BLOCK_WARMUP {
                page(way).await?;
            }
            let before = counters(&mut info_conn).await?;
            for _ in 0..per_round {
                bar.inc(1);
                let t = Instant::now();
                page(way).await?;
                measured[i].latency.record(t.elapsed().as_micros() as u64)?;
            }
            let after = counters(&mut info_conn).await?;
            let m = &mut measured[i];
            m.pages += per_round;
            m.cpu_us_per_page
                .push((after.cpu_s - before.cpu_s) * 1e6 / per_round as f64);
            m.commands_per_page
                .push((after.commands - before.commands) / per_round as f64);
            if way == Way::Http {
                http_evalsha += after.evalsha - before.evalsha;
            }
        }
    }
    bar.finish_and_clear();
    stop.cancel();
    let _ = node.await;
    lease.await??;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut info_conn).await?;

    let hundredth = |x: f64| (x * 100.0).round() / 100.0;
    let tenth = |x: f64| (x * 10.0).round() / 10.0;
    let mut report = serde_json::Map::new();
    report.insert(
        "title".into(),
        json!(format!(
            "list (P4): a page of {LIMIT} in a zone of {users} online users, {} pages each way \
             in {rounds} rounds; http = GET /messenger/presence/online?zone_id=big&limit={LIMIT} \
             to a node in-process on loopback, store = Store::list, seed = get_online_users",
            per_round * rounds
        )),
    );
    report.insert("zone_count_reported".into(), json!(count));
    for (way, m) in Way::ALL.iter().zip(&measured) {
        let w = way.name();
        let ms = |q: f64| hundredth(m.latency.value_at_quantile(q) as f64 / 1000.0);
        report.insert(format!("{w}_latency_ms_p50"), json!(ms(0.5)));
        report.insert(format!("{w}_latency_ms_p90"), json!(ms(0.9)));
        report.insert(format!("{w}_latency_ms_p99"), json!(ms(0.99)));
        report.insert(
            format!("{w}_latency_ms_max"),
            json!(hundredth(m.latency.max() as f64 / 1000.0)),
        );
        report.insert(
            format!("{w}_redis_cpu_us_per_page_median"),
            json!(tenth(crate::median(m.cpu_us_per_page.clone()))),
        );
        report.insert(
            format!("{w}_redis_commands_per_page_median"),
            json!(hundredth(crate::median(m.commands_per_page.clone()))),
        );
        report.insert(
            format!("{w}_round_trips_per_page"),
            json!(way.round_trips()),
        );
    }
    let cpu = |w: Way| crate::median(measured[w as usize].cpu_us_per_page.clone());
    let p99 = |w: Way| measured[w as usize].latency.value_at_quantile(0.99) as f64;
    for seed in [Way::SeedAsRun, Way::SeedPipelined] {
        for ours in [Way::Http, Way::Store] {
            report.insert(
                format!("redis_cpu_ratio_{}_to_{}", ours.name(), seed.name()),
                json!(crate::ratio(cpu(ours), cpu(seed))),
            );
            report.insert(
                format!("p99_ratio_{}_to_{}", ours.name(), seed.name()),
                json!(crate::ratio(p99(ours), p99(seed))),
            );
        }
    }
    // The node's own loops (sweep, lease, feed) also run scripts: the figure is an upper bound.
    report.insert(
        "http_redis_scripts_per_request_at_most".into(),
        json!(hundredth(
            http_evalsha / measured[Way::Http as usize].pages as f64
        )),
    );
    report.insert(
        "background_redis_cpu_ms_per_s".into(),
        json!(hundredth(background_cpu_ms_per_s)),
    );
    report.insert(
        "background_redis_commands_per_s".into(),
        json!(tenth(background_commands_per_s)),
    );
    report.insert("load_seconds".into(), json!(loaded.as_secs()));
    report.insert("seconds".into(), json!(started.elapsed().as_secs()));
    Ok(serde_json::Value::Object(report))
}
