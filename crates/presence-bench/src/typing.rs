//! `typing` (issue 10's measurement): typing frames through node A to subscribers on node B,
//! side by side in one run with presence changes at the same rate through the same nodes:
//!
//! - `presence`: each driver sends `metadata.set` (a change of the view: a script, the feed,
//!   node B's feed loop): the path of P6, as the baseline;
//! - `typing`: each driver alternates `typing.start` and `typing.stop` in a conversation of
//!   its own, so every frame is one store write (typing.lua: the hash and a `PUBLISH`) and
//!   one `typing` frame to each subscriber on node B (through node B's bus subscription);
//! - `renewals`: each driver sends `typing.start` again and again, as an eager client would:
//!   all but one start a second are absorbed by the node (no store write, nothing to send).
//!
//! Latency: each driver records when it sent each frame; the first subscriber matches frames
//! to drivers by user id (frames of one driver arrive in order). Node CPU is read from /proc
//! and Redis CPU from `INFO cpu` around each drive.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::sockets::{
    FRAMES_PER_DRIVER, authenticator, connect_drivers, cpu_seconds, micros_now, redis_cpu_seconds,
    start_node, user_token,
};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Send times (µs) of one driver's frames that node B has not shown yet, oldest first.
type Pending = Arc<Vec<Mutex<VecDeque<u64>>>>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Presence,
    Typing,
    Renewals,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Presence => "presence",
            Mode::Typing => "typing",
            Mode::Renewals => "renewals",
        }
    }

    /// Driver `i`'s `n`-th frame.
    fn frame(self, i: usize, n: u64) -> serde_json::Value {
        let conversation = format!("t{i}");
        match self {
            Mode::Presence => json!({"type": "metadata.set", "metadata": {"n": n}}),
            Mode::Typing if n.is_multiple_of(2) => {
                json!({"type": "typing.start", "conversation_id": conversation})
            }
            Mode::Typing => json!({"type": "typing.stop", "conversation_id": conversation}),
            Mode::Renewals => json!({"type": "typing.start", "conversation_id": conversation}),
        }
    }

    /// Whether a frame node B sends is this mode's news.
    fn shows(self, v: &serde_json::Value) -> bool {
        match self {
            Mode::Presence => v["type"] == "presence",
            Mode::Typing | Mode::Renewals => v["type"] == "typing",
        }
    }
}

/// The driver index of a frame node B sent (users are `y{i}`).
fn driver_of(v: &serde_json::Value) -> Option<usize> {
    let user = v["user"]["user_id"]
        .as_str()
        .or_else(|| v["user_id"].as_str())?;
    user.strip_prefix('y')?.parse().ok()
}

pub(crate) async fn run(
    redis_url: &str,
    rate: u64,
    seconds: u64,
    subscribers: u64,
) -> anyhow::Result<serde_json::Value> {
    let (port_a, port_b) = (crate::free_port()?, crate::free_port()?);
    let node_a = start_node(redis_url, port_a, &[]).await?;
    let node_b = start_node(redis_url, port_b, &[]).await?;
    let (pid_a, pid_b) = (
        node_a.id().context("node A's pid")?,
        node_b.id().context("node B's pid")?,
    );
    let auth = authenticator();
    let conns = rate.div_ceil(FRAMES_PER_DRIVER);
    anyhow::ensure!(
        conns <= 200,
        "at most 3,000 frames a second: a subscriber follows at most 200 conversations"
    );
    let mut drivers = connect_drivers(&auth, port_a, "y", conns, "&zone_id=typing").await?;
    let conversations: Vec<String> = (0..conns).map(|i| format!("t{i}")).collect();
    let mut watchers = Vec::new();
    for w in 0..subscribers {
        let url = format!(
            "ws://127.0.0.1:{port_b}/messenger/ws?token={}",
            user_token(&auth, &format!("watcher{w}"))?
        );
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
        ws.next().await.context("connected")??;
        let subscribe = json!({"type": "subscribe", "scopes": ["zone:typing"], "conversations": conversations, "id": 1});
        ws.send(Message::Text(subscribe.to_string().into())).await?;
        watchers.push(ws);
    }
    // Let the online events and snapshots pass.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for w in &mut watchers {
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), w.next()).await {}
    }
    let mut report = serde_json::Map::new();
    for mode in [Mode::Presence, Mode::Typing, Mode::Renewals] {
        let (result, d, w) = drive(
            mode,
            drivers,
            watchers,
            rate,
            seconds,
            (pid_a, pid_b),
            redis_url,
        )
        .await?;
        (drivers, watchers) = (d, w);
        report.insert(mode.name().into(), result);
        // Whatever is still typing ends before the next mode.
        tokio::time::sleep(Duration::from_secs(7)).await;
        for w in &mut watchers {
            while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), w.next()).await
            {
            }
        }
    }
    report.insert(
        "title".into(),
        json!(format!(
            "typing: {rate} frames/s for {seconds} s through node A ({conns} connections, one conversation each), {subscribers} subscribers on node B following every conversation and the drivers' zone"
        )),
    );
    Ok(serde_json::Value::Object(report))
}

/// One mode's drive; gives the sockets back for the next.
async fn drive(
    mode: Mode,
    drivers: Vec<Socket>,
    watchers: Vec<Socket>,
    rate: u64,
    seconds: u64,
    (pid_a, pid_b): (u32, u32),
    redis_url: &str,
) -> anyhow::Result<(serde_json::Value, Vec<Socket>, Vec<Socket>)> {
    let conns = drivers.len() as u64;
    let pending: Pending = Arc::new((0..conns).map(|_| Mutex::default()).collect());
    let interval = Duration::from_micros(1_000_000 * conns / rate);
    let (cpu_a, cpu_b) = (cpu_seconds(pid_a)?, cpu_seconds(pid_b)?);
    let redis_before = redis_cpu_seconds(redis_url).await?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let senders: Vec<_> = drivers
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            let pending = pending.clone();
            tokio::spawn(async move {
                tokio::time::sleep(interval * i as u32 / conns as u32).await;
                let mut tick = tokio::time::interval(interval);
                let mut sent = 0u64;
                while Instant::now() < deadline {
                    tick.tick().await;
                    let frame = mode.frame(i, sent);
                    pending[i]
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_back(micros_now());
                    if ws
                        .send(Message::Text(frame.to_string().into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    sent += 1;
                    while let Some(Some(Ok(_))) = futures::FutureExt::now_or_never(ws.next()) {}
                }
                (ws, sent)
            })
        })
        .collect();
    let readers: Vec<_> = watchers
        .into_iter()
        .enumerate()
        .map(|(w, mut ws)| {
            let pending = pending.clone();
            tokio::spawn(async move {
                let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
                let mut shown = 0u64;
                let end = deadline + Duration::from_secs(2);
                while Instant::now() < end {
                    let Ok(Some(m)) =
                        tokio::time::timeout(Duration::from_millis(200), ws.next()).await
                    else {
                        continue;
                    };
                    let Message::Text(text) = m? else { continue };
                    let v: serde_json::Value = serde_json::from_str(&text)?;
                    if !mode.shows(&v) {
                        continue;
                    }
                    shown += 1;
                    // The first subscriber times what it is shown.
                    if w == 0
                        && mode != Mode::Renewals
                        && let Some(i) = driver_of(&v)
                        && let Some(sent_at) = pending
                            .get(i)
                            .and_then(|p| p.lock().unwrap_or_else(|p| p.into_inner()).pop_front())
                    {
                        hist.record(micros_now().saturating_sub(sent_at).max(1))?;
                    }
                }
                Ok::<_, anyhow::Error>((ws, shown, hist))
            })
        })
        .collect();
    let mut drivers = Vec::new();
    let mut sent = 0;
    for s in senders {
        let (ws, n) = s.await?;
        drivers.push(ws);
        sent += n;
    }
    let mut watchers = Vec::new();
    let mut shown = Vec::new();
    let mut latency = None;
    for r in readers {
        let (ws, n, hist) = r.await??;
        watchers.push(ws);
        shown.push(n);
        latency.get_or_insert(hist);
    }
    let span = seconds as f64 + 2.0;
    let per_second = |cpu: f64| (cpu * 1000.0 / span * 10.0).round() / 10.0;
    let node_a = per_second(cpu_seconds(pid_a)? - cpu_a);
    let node_b = per_second(cpu_seconds(pid_b)? - cpu_b);
    let redis = per_second(redis_cpu_seconds(redis_url).await? - redis_before);
    let ms = |v: u64| (v as f64 / 1000.0 * 100.0).round() / 100.0;
    let mut out = json!({
        "frames_sent": sent,
        "frames_sent_per_second": (sent as f64 / seconds as f64).round(),
        "shown_to_first_subscriber": shown.first().copied().unwrap_or(0),
        "shown_to_all_subscribers": shown.iter().sum::<u64>(),
        "node_a_cpu_ms_per_second": node_a,
        "node_b_cpu_ms_per_second": node_b,
        "redis_cpu_ms_per_second": redis,
    });
    if let Some(h) = latency.filter(|h| !h.is_empty()) {
        out["latency_ms_p50"] = json!(ms(h.value_at_quantile(0.5)));
        out["latency_ms_p99"] = json!(ms(h.value_at_quantile(0.99)));
        out["latency_ms_max"] = json!(ms(h.max()));
    }
    Ok((out, drivers, watchers))
}
