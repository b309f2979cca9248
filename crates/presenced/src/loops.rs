//! The node's own loops: lease renewal, the sweep, and activity flushing. Each runs until its
//! token is cancelled and survives store outages by trying again on its next tick.

use std::time::Duration;

use presence_core::{LeaseRenewal, StoreError};
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::sessions::Reconciled;
use crate::state::AppState;

fn ticker(period: Duration) -> Interval {
    let mut i = tokio::time::interval(period);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

/// Lease renewals between two full reconciles (a minute at the default `node_lease`).
const FULL_RECONCILE_EVERY: u64 = 12;

/// Renews the node's lease every third of `node_lease`, and keeps the store's sessions of this
/// node in agreement with its sockets:
///
/// - after a failed renewal (the store was away: it may have restarted without its data) or a
///   lost lease (another node reaped this one's sessions during a pause), every session this
///   node holds is re-asserted — in the background, a batch per store call, so the lease keeps
///   being renewed meanwhile however many sessions there are;
/// - otherwise the node's session count is compared with the store's, and the two are
///   reconciled when they differ;
/// - closes that failed while the store was away are retried.
pub async fn renew_lease(state: AppState, stop: CancellationToken) {
    let period = state.config.presence.node_lease / 3;
    let mut tick = ticker(period);
    let mut must_reassert = false;
    let mut reasserting: Option<tokio::task::JoinHandle<Result<usize, StoreError>>> = None;
    let mut renewals: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if reasserting.as_ref().is_some_and(|t| t.is_finished()) {
            let outcome = reasserting.take().expect("checked").await;
            match outcome {
                Ok(Ok(n)) => {
                    must_reassert = false;
                    metrics::counter!("presenced_sessions_reasserted_total").increment(n as u64);
                    tracing::info!(
                        reopened = n,
                        held = state.sessions.len(),
                        "sessions re-asserted"
                    );
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "could not re-assert sessions; retrying"),
                Err(e) => tracing::error!(error = %e, "the re-assert task failed; retrying"),
            }
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
            if reasserting.is_none() {
                let state = state.clone();
                reasserting = Some(tokio::spawn(async move {
                    state.sessions.reassert(state.store.as_ref()).await
                }));
            }
        } else if reasserting.is_none() {
            // Sessions registered within the last period may still be opening. Counts are
            // compared every period; the lists every FULL_RECONCILE_EVERY periods.
            let settled = state.now() - presence_core::settings::ms(period);
            renewals += 1;
            let full = renewals.is_multiple_of(FULL_RECONCILE_EVERY);
            match state
                .sessions
                .reconcile(state.store.as_ref(), settled, full)
                .await
            {
                Ok(done) if done != Reconciled::default() => {
                    tracing::warn!(
                        ?done,
                        "the store disagreed with this node's sockets; reconciled"
                    );
                    metrics::counter!("presenced_sessions_reconciled_total", "what" => "closed")
                        .increment(done.closed as u64);
                    metrics::counter!("presenced_sessions_reconciled_total", "what" => "reopened")
                        .increment(done.reopened as u64);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not reconcile sessions; retrying"),
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
        tracing::warn!(error = %e, users = due.len(), "activity flush failed; kept for the next");
        // `POST /activity` already said 204: nothing reported is dropped.
        state
            .activity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .restore(due);
    }
}
