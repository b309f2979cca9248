//! `list` (P4): `GET /messenger/presence/online?zone_id=…&limit=100` in a zone of N online
//! users, through the real HTTP stack of a node running in this process on loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use presence_core::{
    DeviceKind, NodeId, OpenSession, SessionId, SharedClock, Store, SystemClock, UserId, ZoneId,
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

/// Runs the scenario against the Redis at `url`; `users` in one zone, `requests` timed.
pub(crate) async fn run(url: &str, users: u64, requests: u64) -> anyhow::Result<serde_json::Value> {
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
                };
                loader.open_session(open).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(256)
        .try_collect::<Vec<()>>()
        .await?;
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
    let stop = CancellationToken::new();
    let state = AppState::new(Arc::new(config), auth, store, clock, stop.clone(), None);
    let node = tokio::spawn(presenced::serve(state, listener));

    let http = reqwest::Client::new();
    let url_list = format!("http://{addr}/messenger/presence/online?zone_id=big&limit=100");
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let evalsha = |info: String| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
            .and_then(|v| v.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    // Warm up: connections, scripts, caches.
    for _ in 0..50 {
        http.get(&url_list)
            .bearer_auth(&token)
            .send()
            .await?
            .error_for_status()?;
    }
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let before = evalsha(
        redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await?,
    );
    let mut count = 0;
    let bar = crate::progress::bar(requests, "GET /online?limit=100");
    for _ in 0..requests {
        bar.inc(1);
        let t = Instant::now();
        let r = http
            .get(&url_list)
            .bearer_auth(&token)
            .send()
            .await?
            .error_for_status()?;
        let body: serde_json::Value = r.json().await?;
        hist.record(t.elapsed().as_micros() as u64)?;
        count = body["count"].as_u64().unwrap_or(0);
        anyhow::ensure!(
            body["online_users"].as_array().map_or(0, Vec::len) == 100,
            "a full page"
        );
    }
    bar.finish_and_clear();
    let after = evalsha(
        redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await?,
    );
    stop.cancel();
    let _ = node.await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
    let ms = |q: f64| (hist.value_at_quantile(q) as f64 / 1000.0 * 100.0).round() / 100.0;
    Ok(json!({
        "title": format!("list (P4): GET /messenger/presence/online?zone_id=big&limit=100, zone of {users} online users, {requests} sequential requests, node in-process on loopback"),
        "zone_count_reported": count,
        "latency_ms_p50": ms(0.5),
        "latency_ms_p90": ms(0.9),
        "latency_ms_p99": ms(0.99),
        "latency_ms_max": (hist.max() as f64 / 1000.0 * 100.0).round() / 100.0,
        // The node's own loops (sweep, lease, feed) also run scripts: the figure is an upper bound.
        "redis_scripts_per_request_at_most": ((after - before) as f64 / requests as f64 * 100.0).round() / 100.0,
        "load_seconds": loaded.as_secs(),
        "seconds": started.elapsed().as_secs(),
    }))
}
