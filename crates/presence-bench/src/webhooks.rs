//! `webhooks` (issue 11's measurement): one node on Redis with one webhook endpoint pointing at
//! a receiver in this process, which checks every signature (HMAC-SHA256, as a real receiver
//! would) and answers 204.
//!
//! - `burst`: `burst` status changes made as fast as the node takes them (a service token over
//!   REST, 32 requests in flight, spread over the users), delivered as they come; deliveries
//!   a second from the first delivery to the last (bounded by how fast changes are made).
//! - `backlog`: the same, with the receiver holding the first request until all the changes
//!   are made, then answering: how fast one endpoint drains a backlog, from the release to
//!   the last delivery.
//! - `paced`: `rate` changes a second for `seconds`; the lag of each delivery: the receiver's
//!   clock at arrival minus the event's `ts` (the node's clock; the same machine).
//!
//! `--receiver-delay-ms` makes the receiver answer each request that much later, as a
//! receiver across a network would (one round trip); `--max-in-flight` sets the node's
//! `webhooks.max_in_flight`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use hmac::Mac as _;
use presence_core::UserId;
use presenced::auth::Role;
use serde_json::json;

use crate::sockets::{authenticator, connect_drivers, start_node};

const SECRET_KEY: [u8; 32] = *b"presence-bench-webhook-secret-32";
/// Users whose status the drivers toggle.
const USERS: u64 = 100;
/// REST requests in flight during the burst.
const IN_FLIGHT: usize = 32;

#[derive(Default)]
struct Inbox {
    /// Per delivery: the receiver's time (ms) and the lag (ms).
    arrivals: Mutex<Vec<(i64, i64)>>,
    bad: std::sync::atomic::AtomicU64,
    /// `false`: requests wait until it turns `true` (the backlog run).
    open: Option<tokio::sync::watch::Receiver<bool>>,
    /// Each answer comes this much later.
    delay: Duration,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

async fn hook(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: String) -> StatusCode {
    if let Some(open) = &inbox.open {
        let _ = open.clone().wait_for(|o| *o).await;
    }
    if !inbox.delay.is_zero() {
        tokio::time::sleep(inbox.delay).await;
    }
    let arrived = now_ms();
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&SECRET_KEY).expect("any key");
    mac.update(format!("{}.{}.{body}", h("webhook-id"), h("webhook-timestamp")).as_bytes());
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    if h("webhook-signature") != expected {
        inbox.bad.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    let ts = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v["ts"]
                .as_str()
                .and_then(presence_core::time::parse_rfc3339)
        });
    if let Some(ts) = ts {
        inbox
            .arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((arrived, arrived - ts));
    }
    StatusCode::NO_CONTENT
}

/// What the scenario is asked for.
pub(crate) struct Load {
    pub(crate) burst: u64,
    pub(crate) rate: u64,
    pub(crate) seconds: u64,
    pub(crate) receiver_delay: Duration,
    pub(crate) max_in_flight: usize,
}

pub(crate) async fn run(redis_url: &str, load: Load) -> anyhow::Result<serde_json::Value> {
    let Load {
        burst,
        rate,
        seconds,
        receiver_delay,
        max_in_flight,
    } = load;
    let (gate, open) = tokio::sync::watch::channel(true);
    let inbox = Arc::new(Inbox {
        open: Some(open),
        delay: receiver_delay,
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_url = format!("http://{}/hook", listener.local_addr()?);
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(inbox.clone());
    let receiver = tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = std::env::temp_dir().join(format!("presence-bench-webhooks-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("presenced.toml");
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(SECRET_KEY)
    );
    std::fs::write(
        &config,
        format!(
            "[webhooks]\nmax_in_flight = {max_in_flight}\n[[webhooks.endpoints]]\nurl = \"{hook_url}\"\nsecret = \"{secret}\"\nevents = [\"presence\"]\n"
        ),
    )?;
    let port = crate::free_port()?;
    let config_path = config.display().to_string();
    let mut node = start_node(redis_url, port, &["--config", &config_path]).await?;
    let auth = authenticator();
    // The users, online through WebSockets held for the whole run.
    let _drivers = connect_drivers(&auth, port, "wh", USERS, "&zone_id=hooks").await?;
    let service = auth
        .issue(
            &UserId::new("bench").context("id")?,
            None,
            Role::Service,
            Duration::from_secs(3600),
        )
        .context("token")?;
    let presence = presence_client::Client::new(format!("http://127.0.0.1:{port}"), service);
    // Let the online events be delivered, then start counting.
    wait_for(&inbox, USERS as usize, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    inbox
        .arrivals
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();

    // Burst: as fast as the node takes the changes.
    let change = |n: u64| {
        let presence = presence.clone();
        async move {
            let user = format!("wh{}", n % USERS);
            // Each user alternates away and online: every request is a change.
            let away = (n / USERS).is_multiple_of(2);
            presence.set_status(away, Some(&user)).await
        }
    };
    let started = Instant::now();
    let results: Vec<_> = futures::StreamExt::collect(futures::StreamExt::buffered(
        futures::stream::iter((0..burst).map(change)),
        IN_FLIGHT,
    ))
    .await;
    let made = Instant::now() - started;
    let failed = results.iter().filter(|r| r.is_err()).count();
    anyhow::ensure!(failed == 0, "{failed} changes failed");
    wait_for(&inbox, burst as usize, Duration::from_secs(120)).await;
    let burst_arrivals =
        std::mem::take(&mut *inbox.arrivals.lock().unwrap_or_else(|p| p.into_inner()));
    let first = burst_arrivals.iter().map(|a| a.0).min().unwrap_or(0);
    let last = burst_arrivals.iter().map(|a| a.0).max().unwrap_or(0);
    let per_second = burst_arrivals.len() as f64 / ((last - first).max(1) as f64 / 1000.0);

    // Backlog: the receiver holds the first request until every change is made.
    gate.send_replace(false);
    let results: Vec<_> = futures::StreamExt::collect(futures::StreamExt::buffered(
        futures::stream::iter((burst..2 * burst).map(change)),
        IN_FLIGHT,
    ))
    .await;
    anyhow::ensure!(results.iter().all(|r| r.is_ok()), "changes failed");
    let released = now_ms();
    gate.send_replace(true);
    wait_for(&inbox, burst as usize, Duration::from_secs(120)).await;
    let backlog = std::mem::take(&mut *inbox.arrivals.lock().unwrap_or_else(|p| p.into_inner()));
    let drained = backlog.iter().map(|a| a.0).max().unwrap_or(released);
    let backlog_per_second = backlog.len() as f64 / ((drained - released).max(1) as f64 / 1000.0);

    // Paced: lag from change to delivery at a rate the endpoint keeps up with.
    let total = rate * seconds;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let mut pending = Vec::new();
    for n in 0..total {
        tick.tick().await;
        pending.push(tokio::spawn(change(2 * burst + n)));
    }
    for p in pending {
        p.await??;
    }
    wait_for(&inbox, total as usize, Duration::from_secs(60)).await;
    let paced = std::mem::take(&mut *inbox.arrivals.lock().unwrap_or_else(|p| p.into_inner()));
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000, 3)?;
    for (_, lag) in &paced {
        hist.record((*lag).max(1) as u64)?;
    }
    let bad = inbox.bad.load(std::sync::atomic::Ordering::Relaxed);
    let _ = node.kill().await;
    receiver.abort();
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(bad == 0, "{bad} deliveries failed the signature check");
    Ok(json!({
        "title": format!("webhooks: one endpoint on a local receiver (signatures checked, answers after {} ms), max_in_flight {max_in_flight}; a burst of {burst} changes delivered live, {burst} more as a backlog, then {rate} changes/s for {seconds} s", receiver_delay.as_millis()),
        "burst_changes_made_per_s": (burst as f64 / made.as_secs_f64()).round(),
        "burst_delivered": burst_arrivals.len(),
        "burst_deliveries_per_s": per_second.round(),
        "backlog_delivered": backlog.len(),
        "backlog_deliveries_per_s": backlog_per_second.round(),
        "paced_delivered": paced.len(),
        "paced_lag_ms_p50": hist.value_at_quantile(0.5),
        "paced_lag_ms_p99": hist.value_at_quantile(0.99),
        "paced_lag_ms_max": hist.max(),
    }))
}

/// Waits until the receiver has `n` deliveries, or `limit` passed.
async fn wait_for(inbox: &Inbox, n: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while inbox
        .arrivals
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .len()
        < n
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
