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

/// Renews the node's lease every third of `node_lease`. After a failed renewal (the store was
/// away: it may have restarted without its data) or a lost lease (another node reaped this
/// one's sessions during a pause), re-asserts every session this node holds, so presence
/// converges without clients reconnecting.
pub async fn renew_lease(state: AppState, stop: CancellationToken) {
    let mut tick = ticker(state.config.presence.node_lease / 3);
    let mut must_reassert = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match state
            .store
            .renew_node_lease(state.sessions.len() as u64)
            .await
        {
            Ok(LeaseRenewal::Held) => {}
            Ok(LeaseRenewal::Lost) => {
                tracing::warn!(
                    "node lease was lost and this node's sessions were reaped; re-asserting them"
                );
                metrics::counter!("presenced_lease_lost_total").increment(1);
                must_reassert = true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not renew the node lease");
                must_reassert = true;
                continue;
            }
        }
        if must_reassert {
            match state.sessions.reassert(state.store.as_ref()).await {
                Ok(n) => {
                    must_reassert = false;
                    metrics::counter!("presenced_sessions_reasserted_total").increment(n as u64);
                    tracing::info!(
                        reopened = n,
                        held = state.sessions.len(),
                        "sessions re-asserted"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "could not re-assert sessions; retrying"),
            }
        }
        if let Err(e) = state.sessions.retry_closes(state.store.as_ref()).await {
            tracing::warn!(error = %e, "could not close ended sessions yet; retrying");
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
        flush_activity_once(&state, state.now()).await;
    }
}

/// Writes the activity due by `now` (`i64::MAX`: everything buffered) in one store call.
pub async fn flush_activity_once(state: &AppState, now: presence_core::Millis) {
    let due = state
        .activity
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take_due(now);
    if due.is_empty() {
        return;
    }
    metrics::counter!("presenced_activity_writes_total").increment(due.len() as u64);
    if let Err(e) = state.store.record_activity(&due).await {
        tracing::warn!(error = %e, users = due.len(), "activity flush failed");
    }
}
