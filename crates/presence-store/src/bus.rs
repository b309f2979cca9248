//! The bus's transport (see `presence_core::bus`): a tokio broadcast inside the process, fed
//!
//! - by the memory store directly (its handles share one process), and
//! - for Redis, by one dedicated SUBSCRIBE connection per store that relays what arrives on
//!   the channel `{key_prefix}presenced:bus`. Nodes publish with `PUBLISH` (inside the typing
//!   script, so a typing write and its message are one round trip).
//!
//! Why Pub/Sub for this: it stores nothing, needs no trimming, and a message costs Redis one
//! delivery per node. The feed's stream would keep every keystroke for `feed_max_len` entries
//! and wake every node's feed reader; a typing indicator that is lost is renewed by its client
//! within seconds and expires by itself everywhere, so at-most-once delivery is enough.
//!
//! The Redis subscriber reconnects after a blip with a backoff (100 ms doubling to 2 s), pings
//! its connection every few seconds so a silently dead one is noticed, and stops once nobody
//! listens. Whatever was published while it was cut off is lost (it is ephemeral). A payload
//! that is not a bus message is logged and dropped; it never stops the relay.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use presence_core::{BusMessage, BusReceiver, StoreError};
use tokio::sync::{broadcast, watch};

/// Messages one receiver may fall behind by before it skips (and logs) the oldest.
const CAPACITY: usize = 4096;
/// First pause before re-subscribing after the connection was lost; doubled up to
/// [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often an idle subscription checks its connection (and whether anyone still listens).
const PING_EVERY: Duration = Duration::from_secs(5);

/// The in-process side: every receiver made from it gets every message sent after it was made.
#[derive(Debug, Clone)]
pub(crate) struct LocalBus {
    tx: broadcast::Sender<BusMessage>,
}

impl LocalBus {
    pub(crate) fn new() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
        }
    }

    /// Hands `message` to every receiver (none listening is fine: the bus keeps nothing).
    pub(crate) fn send(&self, message: BusMessage) {
        let _ = self.tx.send(message);
    }

    pub(crate) fn receiver(&self) -> Box<dyn BusReceiver> {
        Box::new(Receiver(self.tx.subscribe()))
    }

    fn listened(&self) -> bool {
        self.tx.receiver_count() > 0
    }
}

#[derive(Debug)]
struct Receiver(broadcast::Receiver<BusMessage>);

#[async_trait]
impl BusReceiver for Receiver {
    async fn recv(&mut self) -> Option<BusMessage> {
        loop {
            match self.0.recv().await {
                Ok(m) => return Some(m),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "a bus receiver fell behind; skipped messages");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// The Redis side: one subscriber task per store (its handles share it), started by the first
/// receiver and ended once no receiver is left.
#[derive(Debug)]
pub(crate) struct RedisBus {
    client: redis::Client,
    channel: String,
    timeout: Duration,
    local: LocalBus,
    /// Whether the SUBSCRIBE is confirmed on a live connection.
    subscribed: watch::Sender<bool>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl RedisBus {
    /// The bus on `channel` (the full name, prefix included), reached through `client`.
    pub(crate) fn new(client: redis::Client, channel: String, timeout: Duration) -> Self {
        Self {
            client,
            channel,
            timeout,
            local: LocalBus::new(),
            subscribed: watch::channel(false).0,
            task: std::sync::Mutex::new(None),
        }
    }

    /// The channel's name.
    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    /// A receiver, once the subscription is in place (waits up to the command timeout).
    pub(crate) async fn receiver(self: &Arc<Self>) -> Result<Box<dyn BusReceiver>, StoreError> {
        // The receiver first: nothing relayed after the subscription is confirmed is missed.
        let receiver = self.local.receiver();
        self.ensure_running();
        let mut ready = self.subscribed.subscribe();
        match tokio::time::timeout(self.timeout, ready.wait_for(|s| *s)).await {
            Ok(Ok(_)) => Ok(receiver),
            _ => Err(StoreError::Unavailable(format!(
                "could not subscribe to {} within {:?}",
                self.channel, self.timeout
            ))),
        }
    }

    fn ensure_running(self: &Arc<Self>) {
        // std Mutex: held for a check and a spawn, never across an await.
        let mut task = self.task.lock().unwrap_or_else(|p| p.into_inner());
        if task.as_ref().is_none_or(|t| t.is_finished()) {
            *task = Some(tokio::spawn(self.clone().follow()));
        }
    }

    /// Subscribes, relays, and re-subscribes with a backoff after a failure, until nobody
    /// listens.
    async fn follow(self: Arc<Self>) {
        let mut backoff = BACKOFF_MIN;
        while self.local.listened() {
            match self.subscribe().await {
                Ok((sink, stream)) => {
                    backoff = BACKOFF_MIN;
                    self.subscribed.send_replace(true);
                    let why = self.relay(sink, stream).await;
                    self.subscribed.send_replace(false);
                    if !self.local.listened() {
                        return;
                    }
                    tracing::warn!(channel = %self.channel, why, "bus subscription lost; re-subscribing");
                }
                Err(e) => {
                    tracing::warn!(channel = %self.channel, error = %e, retry_in = ?backoff, "could not subscribe to the bus");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn subscribe(
        &self,
    ) -> Result<(redis::aio::PubSubSink, redis::aio::PubSubStream), String> {
        let connect = async {
            let (mut sink, stream) = self.client.get_async_pubsub().await?.split();
            sink.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>((sink, stream))
        };
        match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(pair)) => Ok(pair),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    /// Relays messages until the connection ends or fails a ping, or nobody listens; says why.
    async fn relay(
        &self,
        mut sink: redis::aio::PubSubSink,
        mut stream: redis::aio::PubSubStream,
    ) -> &'static str {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    None => return "connection closed",
                    Some(m) => match BusMessage::decode(m.get_payload_bytes()) {
                        Ok(message) => self.local.send(message),
                        Err(e) => tracing::warn!(channel = %self.channel, error = %e, "dropped a bus message"),
                    },
                },
                _ = ping.tick() => {
                    if !self.local.listened() {
                        return "nobody listens";
                    }
                    let pong = tokio::time::timeout(self.timeout, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        return "ping unanswered";
                    }
                }
            }
        }
    }
}
