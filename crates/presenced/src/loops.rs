//! The node's own loops: lease renewal, the sweep, and activity flushing. Each runs until its
//! token is cancelled and survives store outages by trying again on its next tick.

use std::time::Duration;

use presence_core::LeaseRenewal;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

fn ticker(period: Duration) -> Interval {
    let mut i = tokio::time::interval(period);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

/// Renews the node's lease every third of `node_lease`.
pub async fn renew_lease(state: AppState, stop: CancellationToken) {
    let mut tick = ticker(state.config.presence.node_lease / 3);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let sessions = state.config.server.max_connections - state.connections.available_permits();
        match state.store.renew_node_lease(sessions as u64).await {
            Ok(LeaseRenewal::Held) => {}
            Ok(LeaseRenewal::Lost) => {
                // Another node reaped this one's sessions while it could not renew (a pause or
                // a partition). Its clients are connected but the store no longer knows them.
                tracing::warn!("node lease was lost and this node's sessions were reaped");
                metrics::counter!("presenced_lease_lost_total").increment(1);
            }
            Err(e) => tracing::warn!(error = %e, "could not renew the node lease"),
        }
    }
}

/// Runs the sweep every `sweep_interval`.
pub async fn sweep(state: AppState, stop: CancellationToken) {
    let mut tick = ticker(state.config.presence.sweep_interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match state.store.sweep().await {
            Ok(r) if r != Default::default() => tracing::debug!(?r, "sweep"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweep failed"),
        }
    }
}

/// Writes buffered activity every `activity_flush_interval`, in one store call.
pub async fn flush_activity(state: AppState, stop: CancellationToken) {
    let mut tick = ticker(state.config.presence.activity_flush_interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let due = state
            .activity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_due(state.store_now());
        if due.is_empty() {
            continue;
        }
        metrics::counter!("presenced_activity_writes_total").increment(due.len() as u64);
        if let Err(e) = state.store.record_activity(&due).await {
            tracing::warn!(error = %e, users = due.len(), "activity flush failed");
        }
    }
}
