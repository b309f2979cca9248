//! One endpoint's worker. It claims the endpoint's lease and, while it holds it, follows the
//! feed from the acknowledged id, delivers each event the endpoint gets (retrying as
//! [`super::retry`] says), acknowledges what it delivered, and renews the lease beside the
//! deliveries; while another node holds the lease it stands by and tries again every third of
//! the lease.
//!
//! Deliveries to one endpoint run up to `webhooks.max_in_flight` at once, never two of one
//! user, each user's in feed order; an event being retried holds back its user's later events
//! (and, once `webhooks.read_ahead` events wait behind it, the endpoint's), never another
//! endpoint's: each has its own worker. With `max_in_flight = 1` deliveries follow the feed's
//! order.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use presence_core::time::format_rfc3339;
use presence_core::{FeedId, StoreError, UserId, WebhookClaim};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::Endpoint;
use super::retry::{Backoff, Verdict, classify_error, classify_status};
use crate::config::WebhooksConfig;
use crate::hub::Subscription;
use crate::state::AppState;

/// Events read from the feed per store call.
const FEED_BATCH: usize = 500;
/// How long an idle worker waits for the hub's ring before it reads the feed anyway.
const FEED_POLL: Duration = Duration::from_secs(1);
/// Pause before a worker tries a store that failed again.
const RETRY_STORE_AFTER: Duration = Duration::from_millis(500);
/// Delivered events are acknowledged at the end of every feed batch, and within a batch at
/// most this often: what a crash can make an endpoint receive twice.
const ACK_EVERY: Duration = Duration::from_millis(200);
/// Ring buffer of the hub subscription that wakes an idle worker: a full one only means
/// "there is more", and the worker reads the feed.
const BELL_QUEUE: usize = 64;
/// Most bytes of an answer's body read (and dropped) so the connection can be reused.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Most characters of an error kept in the report.
const MAX_ERROR_CHARS: usize = 300;

/// The HTTP client every endpoint's worker shares: rustls, the platform's roots, no
/// redirects (a 3xx is a final failure), `request_timeout` for a whole attempt.
pub fn http_client(config: &WebhooksConfig) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(config.request_timeout)
        .connect_timeout(config.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("presenced-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// What the holder of an endpoint's lease reports with every renewal (stored with the lease,
/// shown by `GET /admin/webhooks` on any node). Counts are this node's since it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryReport {
    /// The node reporting.
    pub node_id: String,
    /// When it reported (its last renewal).
    pub reported_at: Option<String>,
    /// Events delivered.
    pub delivered: u64,
    /// Events given up on (a final refusal, or retried for `max_retry_duration`).
    pub given_up: u64,
    /// When the last delivery succeeded.
    pub last_delivery_at: Option<String>,
    /// The feed id it delivered.
    pub last_delivered_feed_id: Option<String>,
    /// The last failed attempt, without the URL.
    pub last_error: Option<String>,
    /// When it failed.
    pub last_error_at: Option<String>,
    /// The event being retried, if one is.
    pub retrying_feed_id: Option<String>,
    /// Attempts at that event so far.
    pub attempts: u32,
    /// When the next attempt is due.
    pub next_attempt_at: Option<String>,
}

/// One event in a worker's window.
struct Slot {
    id: FeedId,
    /// Whose event; `None` for a position only (a reset, undecodable entries).
    user: Option<UserId>,
    state: SlotState,
}

enum SlotState {
    /// To deliver: its body and the event's time.
    Waiting {
        body: String,
        ts: presence_core::Millis,
    },
    /// Being delivered.
    Started,
    /// Delivered, given up on, or not for this endpoint.
    Done,
}

/// How one event ended for this worker.
enum Outcome {
    /// Delivered, not for this endpoint, or given up on: the worker moves past it.
    Done,
    /// The lease was lost or the node stops: not acknowledged, the next holder delivers it.
    Interrupted,
}

/// One endpoint's worker.
pub struct Worker {
    state: AppState,
    endpoint: Arc<Endpoint>,
    client: reqwest::Client,
    backoff: Backoff,
    report: Arc<Mutex<DeliveryReport>>,
    first: Option<Result<WebhookClaim, StoreError>>,
}

impl Worker {
    /// A worker for `endpoint` on the node of `state`.
    pub fn new(state: AppState, endpoint: Arc<Endpoint>, client: reqwest::Client) -> Self {
        let w = &state.config.webhooks;
        let backoff = Backoff {
            initial: w.retry_initial,
            max: w.retry_max,
        };
        let report = DeliveryReport {
            node_id: state.store.node_id().to_string(),
            ..Default::default()
        };
        Self {
            state,
            endpoint,
            client,
            backoff,
            report: Arc::new(Mutex::new(report)),
            first: None,
        }
    }

    /// Tries the lease once (before the node serves); [`Worker::run`] starts from the answer.
    pub async fn first_claim(&mut self) {
        self.first = Some(claim(&self.state, &self.endpoint, &self.report).await);
    }

    fn label(&self) -> String {
        self.endpoint.id.to_string()
    }

    /// Claims the lease, delivers while holding it, stands by while another node does, until
    /// `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let period = self.state.config.presence.node_lease / 3;
        let held_gauge =
            metrics::gauge!("presenced_webhook_lease_held", "endpoint" => self.label());
        held_gauge.set(0.0);
        loop {
            let answer = match self.first.take() {
                Some(a) => a,
                None => claim(&self.state, &self.endpoint, &self.report).await,
            };
            match answer {
                Ok(WebhookClaim::Held { acked, until }) => {
                    tracing::info!(endpoint = %self.endpoint.id, url = %self.endpoint.shown_url,
                        after = %acked, "delivering this endpoint's webhooks");
                    held_gauge.set(1.0);
                    self.hold(acked, until, &stop).await;
                    held_gauge.set(0.0);
                }
                Ok(WebhookClaim::Taken { holder, .. }) => {
                    tracing::debug!(endpoint = %self.endpoint.id, %holder, "another node delivers this endpoint");
                }
                Err(e) => {
                    tracing::warn!(endpoint = %self.endpoint.id, error = %e, "could not claim the webhook lease; retrying")
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
        }
    }

    /// Delivers after `acked` while the lease holds; on `stop`, acknowledges what was
    /// delivered and releases the lease.
    async fn hold(&self, acked: FeedId, until: presence_core::Millis, stop: &CancellationToken) {
        let held = stop.child_token();
        let keeper = tokio::spawn(keep_lease(
            self.state.clone(),
            self.endpoint.clone(),
            self.report.clone(),
            held.clone(),
            until,
        ));
        let delivered_to = self.follow(acked, &held).await;
        held.cancel();
        let _ = keeper.await;
        if stop.is_cancelled() {
            let store = &self.state.store;
            if delivered_to > acked
                && let Err(e) = store.ack_webhook(&self.endpoint.id, delivered_to).await
            {
                tracing::warn!(endpoint = %self.endpoint.id, error = %e, "could not acknowledge on shutdown; the next holder delivers those events again");
            }
            if let Err(e) = store.release_webhook(&self.endpoint.id).await {
                tracing::warn!(endpoint = %self.endpoint.id, error = %e, "could not release the webhook lease; another node takes over when it lapses");
            }
        }
    }

    /// Follows the feed from `from`, delivering, until `held` is cancelled; returns how far
    /// it delivered (every event up to there is done).
    ///
    /// Up to `webhooks.max_in_flight` deliveries run at once, never two of one user: an event
    /// starts only once every earlier event of its user is done, so each user's events arrive
    /// in feed order. Events read but not done wait in a window of at most
    /// `webhooks.read_ahead`; what is acknowledged is the prefix of the window that is done.
    async fn follow(&self, from: FeedId, held: &CancellationToken) -> FeedId {
        let store = self.state.store.clone();
        let limit = self.state.config.webhooks.max_in_flight.max(1);
        let window_len = self.state.config.webhooks.read_ahead.max(limit);
        let (mut pos, mut acked, mut read_to) = (from, from, from);
        let mut window: VecDeque<Slot> = VecDeque::new();
        let mut in_flight = FuturesUnordered::new();
        let mut caught_up = false;
        let mut last_ack = Instant::now();
        // The hub rings this worker when an event for its endpoint passes: subscribed before
        // each idle wait, so nothing after the last read is missed.
        let mut bell: Option<Subscription> = None;
        loop {
            // Start what may start, in feed order: an event whose user has an earlier event
            // not done yet waits for it.
            // Stops once `limit` are in flight: nothing more may start.
            let mut blocked: HashSet<&UserId> = HashSet::new();
            for slot in window.iter_mut() {
                if in_flight.len() >= limit {
                    break;
                }
                let Some(user) = &slot.user else { continue };
                match &mut slot.state {
                    SlotState::Done => {}
                    SlotState::Started => {
                        blocked.insert(user);
                    }
                    SlotState::Waiting { .. } if !blocked.insert(user) => {}
                    waiting @ SlotState::Waiting { .. } => {
                        let SlotState::Waiting { body, ts } =
                            std::mem::replace(waiting, SlotState::Started)
                        else {
                            unreachable!("matched above")
                        };
                        let id = slot.id;
                        in_flight
                            .push(async move { (id, self.deliver(id, ts, &body, held).await) });
                    }
                }
            }
            // Move past the done prefix; acknowledge it now and then.
            while window
                .front()
                .is_some_and(|s| matches!(s.state, SlotState::Done))
            {
                pos = window.pop_front().expect("checked").id;
            }
            if pos > acked && (window.is_empty() || last_ack.elapsed() >= ACK_EVERY) {
                if !self.ack(pos, held).await {
                    return pos;
                }
                (acked, last_ack) = (pos, Instant::now());
            }
            // Read more once half the window is free: in batches, not a read per delivery.
            if window.len() <= window_len / 2 && !caught_up {
                let read = tokio::select! {
                    biased;
                    _ = held.cancelled() => return pos,
                    r = store.read_feed(read_to, (window_len - window.len()).min(FEED_BATCH)) => r,
                };
                let read = match read {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(endpoint = %self.endpoint.id, error = %e, "could not read the feed for webhooks; retrying");
                        if !pause(held, RETRY_STORE_AFTER).await {
                            return pos;
                        }
                        continue;
                    }
                };
                if read.reset {
                    let head = match store.feed_head().await {
                        Ok(h) => h,
                        Err(e) => {
                            tracing::warn!(endpoint = %self.endpoint.id, error = %e, "could not read the feed head; retrying");
                            if !pause(held, RETRY_STORE_AFTER).await {
                                return pos;
                            }
                            continue;
                        }
                    };
                    tracing::error!(endpoint = %self.endpoint.id, url = %self.endpoint.shown_url,
                        after = %read_to, %head,
                        "this endpoint's feed position aged out of the feed: the events in between are lost to it; continuing from the feed's head");
                    metrics::counter!("presenced_webhook_feed_resets_total", "endpoint" => self.label())
                        .increment(1);
                    // Done at once: once what the window holds is done, the position jumps
                    // to the head.
                    window.push_back(Slot {
                        id: head,
                        user: None,
                        state: SlotState::Done,
                    });
                    read_to = head;
                    continue;
                }
                caught_up = read.last_id.is_none();
                let next = read.next_after(read_to);
                let last_id = read.last_id;
                for e in read.events {
                    let state = match self.endpoint.body(&e) {
                        Some(body) => SlotState::Waiting { body, ts: e.ts },
                        None => SlotState::Done,
                    };
                    window.push_back(Slot {
                        id: e.feed_id,
                        user: Some(e.user.user_id),
                        state,
                    });
                }
                read_to = next;
                if let Some(last) = last_id
                    && window.back().is_none_or(|s| s.id < last)
                {
                    // Undecodable entries at the end still move the position on.
                    window.push_back(Slot {
                        id: last,
                        user: None,
                        state: SlotState::Done,
                    });
                }
                continue;
            }
            if caught_up {
                let ringing = bell
                    .as_ref()
                    .is_some_and(|b| !b.slow.is_cancelled() && !b.reset.is_cancelled());
                if !ringing {
                    bell = Some(
                        self.state
                            .hub
                            .subscribe(self.endpoint.interest(), BELL_QUEUE),
                    );
                    // Something may have come before the subscription was in place.
                    caught_up = false;
                    continue;
                }
            }
            // Wait for a delivery to end, for the hub's ring (or a while) when caught up, or
            // for the time to acknowledge.
            let bell_ref = bell.as_mut();
            let ring = async {
                match bell_ref {
                    Some(b) => {
                        tokio::select! {
                            _ = b.rx.recv() => {}
                            _ = b.slow.cancelled() => {}
                            _ = tokio::time::sleep(FEED_POLL) => {}
                        }
                        while b.rx.try_recv().is_ok() {}
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = held.cancelled() => return pos,
                Some((id, outcome)) = in_flight.next(), if !in_flight.is_empty() => match outcome {
                    Outcome::Interrupted => return pos,
                    Outcome::Done => {
                        if let Ok(i) = window.binary_search_by_key(&id, |s| s.id) {
                            window[i].state = SlotState::Done;
                        }
                    }
                },
                _ = ring, if caught_up => caught_up = false,
                _ = tokio::time::sleep(ACK_EVERY), if pos > acked => {}
            }
        }
    }

    /// Acknowledges `upto`; `false` when the lease is lost (`held` is then cancelled). A
    /// store failure is logged and tried again with the next acknowledgement.
    async fn ack(&self, upto: FeedId, held: &CancellationToken) -> bool {
        match self.state.store.ack_webhook(&self.endpoint.id, upto).await {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!(endpoint = %self.endpoint.id, "lost the webhook lease to another node; stopping deliveries");
                metrics::counter!("presenced_webhook_lease_lost_total", "endpoint" => self.label())
                    .increment(1);
                held.cancel();
                false
            }
            Err(e) => {
                tracing::warn!(endpoint = %self.endpoint.id, error = %e, "could not acknowledge webhook deliveries; retrying with the next");
                true
            }
        }
    }

    /// Delivers one event, retrying until it is delivered, refused for good, or retried for
    /// `max_retry_duration`.
    async fn deliver(
        &self,
        feed_id: FeedId,
        ts: presence_core::Millis,
        body: &str,
        held: &CancellationToken,
    ) -> Outcome {
        let id = feed_id.to_string();
        let label = self.label();
        let max = self.state.config.webhooks.max_retry_duration;
        let first = self.state.now();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let timestamp = self.state.now().div_euclid(1000);
            let request = self
                .client
                .post(self.endpoint.url.clone())
                .header("content-type", "application/json")
                .header("webhook-id", &id)
                .header("webhook-timestamp", timestamp.to_string())
                .header(
                    "webhook-signature",
                    self.endpoint.sign(&id, timestamp, body.as_bytes()),
                )
                .body(body.to_string());
            let (verdict, detail) = tokio::select! {
                biased;
                _ = held.cancelled() => return Outcome::Interrupted,
                answer = attempt_once(request) => answer,
            };
            let now = self.state.now();
            match verdict {
                Verdict::Delivered => {
                    metrics::counter!("presenced_webhook_deliveries_total", "endpoint" => label.clone())
                        .increment(1);
                    let lag = (now - ts).max(0) as f64 / 1000.0;
                    metrics::histogram!("presenced_webhook_lag_seconds", "endpoint" => label)
                        .record(lag);
                    let mut r = self.report();
                    r.delivered += 1;
                    r.last_delivery_at = Some(format_rfc3339(now));
                    if r.retrying_feed_id.as_ref() == Some(&id) {
                        (r.retrying_feed_id, r.attempts, r.next_attempt_at) = (None, 0, None);
                    }
                    r.last_delivered_feed_id = Some(id);
                    return Outcome::Done;
                }
                Verdict::Final { kind } => {
                    metrics::counter!("presenced_webhook_failures_total", "endpoint" => label.clone(), "kind" => kind)
                        .increment(1);
                    metrics::counter!("presenced_webhook_given_up_total", "endpoint" => label, "reason" => "refused")
                        .increment(1);
                    tracing::warn!(endpoint = %self.endpoint.id, url = %self.endpoint.shown_url,
                        feed_id = %id, answer = %detail,
                        "the endpoint refused a webhook for good; skipping that event");
                    self.failed(&detail, now, &id, None);
                    self.report().given_up += 1;
                    return Outcome::Done;
                }
                Verdict::Retry { kind, after } => {
                    metrics::counter!("presenced_webhook_failures_total", "endpoint" => label.clone(), "kind" => kind)
                        .increment(1);
                    let delay = self.backoff.delay(attempt, after);
                    let spent = Duration::from_millis(u64::try_from(now - first).unwrap_or(0));
                    if spent + delay > max {
                        metrics::counter!("presenced_webhook_given_up_total", "endpoint" => label, "reason" => "max_retry_duration")
                            .increment(1);
                        tracing::error!(endpoint = %self.endpoint.id, url = %self.endpoint.shown_url,
                            feed_id = %id, attempts = attempt, last = %detail,
                            "gave up on a webhook after webhooks.max_retry_duration; skipping that event");
                        self.failed(&detail, now, &id, None);
                        self.report().given_up += 1;
                        return Outcome::Done;
                    }
                    metrics::counter!("presenced_webhook_retries_total", "endpoint" => label.clone())
                        .increment(1);
                    tracing::debug!(endpoint = %self.endpoint.id, feed_id = %id, attempt, ?delay, last = %detail, "webhook attempt failed; retrying");
                    let next = now + presence_core::settings::ms(delay);
                    self.failed(&detail, now, &id, Some((attempt, next)));
                    tokio::select! {
                        biased;
                        _ = held.cancelled() => return Outcome::Interrupted,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    fn report(&self) -> std::sync::MutexGuard<'_, DeliveryReport> {
        // std Mutex: held for a few field writes, never across an await.
        self.report.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports a failed attempt at event `id`; `retry`: its attempts so far and when the
    /// next is due, `None` when it is given up on.
    fn failed(
        &self,
        detail: &str,
        now: presence_core::Millis,
        id: &str,
        retry: Option<(u32, presence_core::Millis)>,
    ) {
        let mut r = self.report();
        r.last_error = Some(detail.chars().take(MAX_ERROR_CHARS).collect());
        r.last_error_at = Some(format_rfc3339(now));
        match retry {
            Some((attempts, next)) => {
                r.retrying_feed_id = Some(id.to_string());
                r.attempts = attempts;
                r.next_attempt_at = Some(format_rfc3339(next));
            }
            None if r.retrying_feed_id.as_deref() == Some(id) => {
                (r.retrying_feed_id, r.attempts, r.next_attempt_at) = (None, 0, None);
            }
            None => {}
        }
    }
}

/// One attempt: its verdict, and what to log and report (never the URL or the secret).
async fn attempt_once(request: reqwest::RequestBuilder) -> (Verdict, String) {
    match request.send().await {
        Ok(mut answer) => {
            let status = answer.status().as_u16();
            let retry_after = answer
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            // Read (a bounded part of) the body so the connection can be used again.
            let mut read = 0;
            while read < MAX_ANSWER_BYTES {
                match answer.chunk().await {
                    Ok(Some(c)) => read += c.len(),
                    _ => break,
                }
            }
            (
                classify_status(status, retry_after.as_deref()),
                format!("HTTP {status}"),
            )
        }
        Err(e) => {
            let verdict = classify_error(&e);
            let kind = match verdict {
                Verdict::Retry { kind, .. } => kind,
                _ => "network",
            };
            (
                verdict,
                format!("{kind}: {}", error_chain(&e.without_url())),
            )
        }
    }
}

/// An error and its sources, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Claims (or renews) `endpoint`'s lease for `presence.node_lease`, with the report.
async fn claim(
    state: &AppState,
    endpoint: &Endpoint,
    report: &Mutex<DeliveryReport>,
) -> Result<WebhookClaim, StoreError> {
    let json = {
        let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
        r.reported_at = Some(format_rfc3339(state.now()));
        serde_json::to_string(&*r).unwrap_or_default()
    };
    state
        .store
        .claim_webhook(&endpoint.id, state.config.presence.node_lease, Some(&json))
        .await
}

/// Renews the lease every third of it while `held`; cancels `held` when another node holds
/// it, or when renewals failed until the lease ran out (by the node's clock): from then on,
/// another node may deliver.
async fn keep_lease(
    state: AppState,
    endpoint: Arc<Endpoint>,
    report: Arc<Mutex<DeliveryReport>>,
    held: CancellationToken,
    mut until: presence_core::Millis,
) {
    let period = state.config.presence.node_lease / 3;
    loop {
        tokio::select! {
            _ = held.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        match claim(&state, &endpoint, &report).await {
            Ok(WebhookClaim::Held { until: u, .. }) => until = u,
            Ok(WebhookClaim::Taken { holder, .. }) => {
                tracing::warn!(endpoint = %endpoint.id, %holder, "another node took this endpoint's webhook lease; stopping deliveries");
                metrics::counter!("presenced_webhook_lease_lost_total", "endpoint" => endpoint.id.to_string())
                    .increment(1);
                held.cancel();
                return;
            }
            Err(e) if state.now() > until => {
                tracing::warn!(endpoint = %endpoint.id, error = %e, "could not renew the webhook lease before it ran out; stopping deliveries");
                held.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(endpoint = %endpoint.id, error = %e, "could not renew the webhook lease; retrying")
            }
        }
    }
}

/// Waits `d` unless `held` is cancelled first (`false` then).
async fn pause(held: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = held.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}
