//! The node's own loops: lease renewal, the sweep, activity flushing, following the bus, and
//! the periodic repair.
//! Each runs until its token is cancelled and survives store outages by trying again on its
//! next tick.

use std::time::Duration;

use presence_core::{BusMessage, BusReceiver, LeaseRenewal, StoreError};
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

fn ticker(period: Duration) -> Interval {
    let mut i = tokio::time::interval(period);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

/// Lease renewals between two full reconciles (a minute at the default `node_lease`).
const FULL_RECONCILE_EVERY: u64 = 12;
/// Lease renewals at least between two listings of the node's sessions when counts differ
/// (20 s at the default `node_lease`).
const LIST_AT_MOST_EVERY: u64 = 4;

/// Renews the node's lease every third of `node_lease`, and nothing else: the upkeep of the
/// node's sessions in the store runs beside it, one task at a time, so the lease is renewed
/// on time however long that takes (thousands of sessions on a slow store):
///
/// - after a failed renewal (the store was away: it may have restarted without its data) or a
///   lost lease (another node reaped this one's sessions during a pause), every session this
///   node holds is re-asserted, a batch per store call;
/// - otherwise the node's session count is compared with the store's, and the two are
///   reconciled when they differ (and every `FULL_RECONCILE_EVERY` renewals whatever the
///   counts say);
/// - closes that failed while the store was away are retried.
pub async fn renew_lease(state: AppState, stop: CancellationToken) {
    let period = state.config.presence.node_lease / 3;
    let mut tick = ticker(period);
    // Renewals that found the sessions forgotten, and how many of them the last successful
    // re-assert covered.
    let (mut forgotten, mut covered) = (0u64, 0u64);
    let mut upkeep: Option<(u64, tokio::task::JoinHandle<Upkeep>)> = None;
    let mut renewals: u64 = 0;
    let mut listed_at: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                if let Some((_, task)) = upkeep.take() {
                    task.abort();
                }
                return;
            }
            _ = tick.tick() => {}
        }
        if upkeep.as_ref().is_some_and(|(_, t)| t.is_finished()) {
            let (generation, task) = upkeep.take().expect("checked");
            match task.await {
                Ok(Upkeep::Reasserted(Ok(n))) => {
                    covered = generation;
                    metrics::counter!("presenced_sessions_reasserted_total").increment(n as u64);
                    tracing::info!(
                        reopened = n,
                        held = state.sessions.len(),
                        "sessions re-asserted"
                    );
                }
                Ok(Upkeep::Reasserted(Err(e))) => {
                    tracing::warn!(error = %e, "could not re-assert sessions; retrying")
                }
                Ok(Upkeep::Reconciled { listed }) => {
                    if listed {
                        listed_at = renewals;
                    }
                }
                Err(e) => tracing::error!(error = %e, "the session upkeep task failed; retrying"),
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
                forgotten += 1;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not renew the node lease");
                forgotten += 1;
                continue;
            }
        }
        if upkeep.is_none() {
            renewals += 1;
            let job = if covered < forgotten {
                Job::Reassert
            } else {
                Job::Reconcile {
                    // Sessions registered within the last period may still be opening.
                    settled: state.now() - presence_core::settings::ms(period),
                    full: renewals.is_multiple_of(FULL_RECONCILE_EVERY),
                    may_list: renewals >= listed_at + LIST_AT_MOST_EVERY,
                }
            };
            let state = state.clone();
            upkeep = Some((forgotten, tokio::spawn(upkeep_sessions(state, job))));
        }
    }
}

/// What one upkeep task does.
enum Job {
    Reassert,
    Reconcile {
        settled: presence_core::Millis,
        full: bool,
        may_list: bool,
    },
}

/// What one upkeep task did.
enum Upkeep {
    Reasserted(Result<usize, StoreError>),
    Reconciled { listed: bool },
}

async fn upkeep_sessions(state: AppState, job: Job) -> Upkeep {
    let store = state.store.as_ref();
    let done = match job {
        Job::Reassert => Upkeep::Reasserted(state.sessions.reassert(store).await),
        Job::Reconcile {
            settled,
            full,
            may_list,
        } => match state
            .sessions
            .reconcile(store, settled, full, may_list)
            .await
        {
            Ok(done) => {
                if done.ended > 0 {
                    tracing::info!(
                        sockets = done.ended,
                        "closed sockets whose sessions the service ended"
                    );
                }
                if done.closed + done.reopened > 0 {
                    tracing::warn!(
                        ?done,
                        "the store disagreed with this node's sockets; reconciled"
                    );
                    metrics::counter!("presenced_sessions_reconciled_total", "what" => "closed")
                        .increment(done.closed as u64);
                    metrics::counter!("presenced_sessions_reconciled_total", "what" => "reopened")
                        .increment(done.reopened as u64);
                }
                Upkeep::Reconciled {
                    listed: done.listed,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not reconcile sessions; retrying");
                Upkeep::Reconciled { listed: false }
            }
        },
    };
    if let Err(e) = state.sessions.retry_closes(store).await {
        tracing::warn!(error = %e, "could not close ended sessions yet; retrying");
    }
    done
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

/// Makes the store's in-process state durable every `store.snapshot_interval` (the memory
/// store's snapshot to its data directory; nothing for Redis).
pub async fn persist(state: AppState, stop: CancellationToken) {
    let mut tick = ticker(state.config.store.snapshot_interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = state.store.persist().await {
            metrics::counter!("presenced_snapshot_failures_total").increment(1);
            tracing::error!(error = %e, "snapshot failed; the previous one is kept");
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

/// Follows the bus from `bus` (a receiver made before the node serves, so nothing published
/// once it serves is missed): each typing message goes to the hub, and every
/// [`crate::typing::EXPIRY_TICK`] the hub ends the indicators whose `until` has passed by the
/// node's clock. Should the bus itself go away, a new receiver is asked for until one comes.
pub async fn follow_bus(state: AppState, mut bus: Box<dyn BusReceiver>, stop: CancellationToken) {
    let mut tick = ticker(crate::typing::EXPIRY_TICK);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => state.hub.expire_typing(state.now()),
            message = bus.recv() => match message {
                Some(BusMessage::Typing(mut signal)) => {
                    metrics::counter!("presenced_bus_messages_total", "kind" => "typing").increment(1);
                    // A typer's node whose clock runs ahead (or a foreign publisher) must not
                    // keep an indicator on longer than typing_ttl from now, by this clock.
                    let now = state.now();
                    let ttl = presence_core::settings::ms(state.config.presence.typing_ttl);
                    signal.until = signal.until.map(|u| u.min(now + ttl));
                    state.hub.relay_typing(signal, now);
                }
                Some(BusMessage::SessionEnded(ended)) => {
                    metrics::counter!("presenced_bus_messages_total", "kind" => "session_ended").increment(1);
                    state.sessions.end(&ended.user_id, &ended.session_id);
                }
                None => {
                    tracing::warn!("the bus closed; subscribing again");
                    bus = loop {
                        match state.store.bus().await {
                            Ok(b) => break b,
                            Err(e) => tracing::warn!(error = %e, "could not subscribe to the bus; retrying"),
                        }
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                        }
                    };
                }
            },
        }
    }
}

/// Runs a slice of the periodic repair every `repair_interval` (`0s`: never), each
/// examining `repair_batch` records and index entries and carrying on where the last slice,
/// on any node, stopped; what it fixed is counted in `presenced_repair_fixed_total{what}`.
pub async fn repair(state: AppState, stop: CancellationToken) {
    let p = &state.config.presence;
    if p.repair_interval.is_zero() {
        // Off: nothing to do, but a loop ends only when the node stops.
        return stop.cancelled().await;
    }
    let mut tick = ticker(p.repair_interval);
    let mode = presence_core::RepairMode {
        check_only: false,
        slice: Some(p.repair_batch),
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match state.store.repair(mode).await {
            Ok(report) => {
                if !report.is_clean() {
                    tracing::warn!(fixed = ?report.fixed, "the periodic repair fixed damage");
                }
                count_repaired(&report);
            }
            Err(e) => tracing::warn!(error = %e, "periodic repair failed"),
        }
    }
}

/// Counts what a repair fixed in `presenced_repair_fixed_total{what}`.
pub(crate) fn count_repaired(report: &presence_core::RepairReport) {
    for (what, n) in &report.fixed {
        metrics::counter!("presenced_repair_fixed_total", "what" => what.clone()).increment(*n);
    }
}
