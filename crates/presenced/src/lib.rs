//! The presenced service: one node of the presence service.
//!
//! - [`config`]: settings (SPEC §9), layered and validated.
//! - [`auth`]: JWT checks, the `Caller` extractor and the `token` issuer (SPEC §7).
//! - [`access`]: who may see or do what — the one place every surface asks.
//! - [`protocol`]: the WebSocket frames, both ways (SPEC §5), from the `presence-protocol`
//!   crate the Rust client shares.
//! - [`app`]: the whole application as one router; [`http`]: the REST API and operations
//!   routes (SPEC §6); [`ws`]: the WebSocket gateway; [`openapi`]: `/openapi.json`.
//! - [`hub`]: fan-out of feed events to this node's subscribers; [`snapshot`]: snapshots and
//!   feed replays for subscribers.
//! - [`loops`]: lease renewal, the sweep, activity flushing, following the bus, the periodic
//!   repair.
//! - [`typing`]: typing indicators: what a connection types, what the node relayed.
//! - [`metered`]: the store wrapped so every call is measured; [`rate`]: rate limits.
//! - [`sessions`]: the sessions this node holds, re-asserted when the store forgot them.
//! - [`state`]: what every handler shares, including the node's [`presence_core::Clock`].
//! - [`web`]: the dashboard at `/` and the JavaScript client at `/client.js`, embedded.
//! - [`demo`]: `presenced demo`, simulated users that give a node life.
//! - [`webhooks`]: signed webhooks, one delivery lease per endpoint.
//! - [`serve`]: runs a node on a bound listener until its shutdown token fires.
//!
//! Presence rules and storage live in `presence-core` and `presence-store`; nothing here
//! decides a transition. Time comes from the injected clock, so tests drive it.

pub mod access;
pub mod app;
pub mod auth;
pub mod config;
pub mod demo;
pub mod error;
pub mod http;
pub mod hub;
pub mod loops;
pub mod metered;
pub mod openapi;
pub mod rate;
/// The WebSocket protocol, both ways: the `presence-protocol` crate, which the Rust client
/// shares.
pub use presence_protocol as protocol;
pub mod sessions;
pub mod snapshot;
pub mod state;
pub mod typing;
pub mod web;
pub mod webhooks;
pub mod ws;

use std::sync::Arc;

use presence_core::{NodeId, SharedClock, Store};
use presence_store::{MemoryStore, RedisConfig, RedisStore};
use tokio::net::TcpListener;

use crate::config::{Config, StoreKind};
use crate::metered::MeteredStore;
use crate::state::AppState;

/// Opens the configured store as node `node`, reading time from `clock`.
pub async fn open_store(
    config: &Config,
    node: NodeId,
    clock: SharedClock,
) -> anyhow::Result<Arc<dyn Store>> {
    let settings = config.store_settings();
    Ok(match config.store.kind {
        StoreKind::Memory if config.store.data_dir.is_empty() => {
            Arc::new(MeteredStore::new(MemoryStore::new(node, clock, settings)))
        }
        StoreKind::Memory => {
            let dir = &config.store.data_dir;
            let store = MemoryStore::with_data_dir(node, clock, settings, dir)
                .map_err(|e| anyhow::anyhow!("store.data_dir {dir}: {e}"))?;
            Arc::new(MeteredStore::new(store))
        }
        StoreKind::Redis => {
            let redis = RedisConfig {
                url: config.store.redis_url.clone(),
                key_prefix: config.store.key_prefix.clone(),
                command_timeout: config.store.command_timeout,
            };
            Arc::new(MeteredStore::new(
                RedisStore::connect(redis, node, clock, settings).await?,
            ))
        }
    })
}

/// Runs a node on `listener` until `state.shutdown` is cancelled: the loops, the feed, the
/// HTTP and WebSocket server. On shutdown it stops accepting, closes WebSockets with 1012
/// (their sessions end through the offline grace) and returns.
pub async fn serve(state: AppState, listener: TcpListener) -> anyhow::Result<()> {
    let config = state.config.clone();
    let store = state.store.clone();
    let shutdown = state.shutdown.clone();
    store.renew_node_lease(0).await?;
    // Subscribed before the node serves: a typing start on another node after this one is
    // up reaches its subscribers.
    let bus = store.bus().await?;
    // Each endpoint's lease tried once before the node serves (a new endpoint starts at the
    // feed's head).
    let webhooks = webhooks::Webhooks::start(&state).await?;
    let loops = tokio_util::sync::CancellationToken::new();
    let tasks = [
        supervised(
            "lease",
            loops::renew_lease(state.clone(), loops.clone()),
            &loops,
            &shutdown,
        ),
        supervised(
            "sweep",
            loops::sweep(state.clone(), loops.clone()),
            &loops,
            &shutdown,
        ),
        supervised(
            "activity",
            loops::flush_activity(state.clone(), loops.clone()),
            &loops,
            &shutdown,
        ),
        supervised(
            "feed",
            state.hub.clone().run(store.clone(), loops.clone()),
            &loops,
            &shutdown,
        ),
        supervised(
            "bus",
            loops::follow_bus(state.clone(), bus, loops.clone()),
            &loops,
            &shutdown,
        ),
        supervised(
            "persist",
            loops::persist(state.clone(), loops.clone()),
            &loops,
            &shutdown,
        ),
        supervised(
            "counts",
            state
                .hub
                .clone()
                .run_counts(store.clone(), hub::COUNT_PERIOD, loops.clone()),
            &loops,
            &shutdown,
        ),
        supervised(
            "repair",
            loops::repair(state.clone(), loops.clone()),
            &loops,
            &shutdown,
        ),
        supervised("webhooks", webhooks.run(loops.clone()), &loops, &shutdown),
    ];
    let app = app::router(state.clone());
    let stop = shutdown.clone();
    // TCP_NODELAY: presence frames are small and must leave at once; Nagle's algorithm would
    // hold them back for an ACK (tens of ms with delayed ACKs).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let server =
        axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await });
    // Graceful: stop accepting, let connections close (1012); give up after shutdown_timeout.
    let served = server.into_future();
    tokio::pin!(served);
    let result = tokio::select! {
        r = &mut served => r.map_err(anyhow::Error::from),
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(config.server.shutdown_timeout).await;
        } => Ok(()),
    };
    // Upgraded WebSockets outlive the HTTP server: wait until they have sent their 1012 and
    // closed their sessions (each holds a connection permit), up to shutdown_timeout.
    let drained = async {
        while state.connections.available_permits() < config.server.max_connections {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let _ = tokio::time::timeout(config.server.shutdown_timeout, drained).await;
    // Write what activity is buffered, then stop the loops, then a last snapshot (the memory
    // store with a data directory).
    loops::flush_activity_once(&state, i64::MAX).await;
    loops.cancel();
    for t in tasks {
        let _ = t.await;
    }
    if let Err(e) = store.persist().await {
        tracing::error!(error = %e, "the last snapshot could not be written");
    }
    result
}

/// Runs one of the node's loops. A loop ends only when `loops` is cancelled; one that ends
/// before (a panic, a bug) would leave the node serving without a lease, a sweep or a feed,
/// so the node shuts down instead, and the orchestrator restarts it.
fn supervised(
    name: &'static str,
    run: impl Future<Output = ()> + Send + 'static,
    loops: &tokio_util::sync::CancellationToken,
    shutdown: &tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let task = tokio::spawn(run);
    let (loops, shutdown) = (loops.clone(), shutdown.clone());
    tokio::spawn(async move {
        let ended = task.await;
        if !loops.is_cancelled() {
            tracing::error!(
                node_loop = name,
                ?ended,
                "a node loop stopped; shutting the node down"
            );
            shutdown.cancel();
        }
    })
}
