//! WebSocket load from worker processes:
//!
//! - `idle` (P5): N idle connections held by one node; the node's resident memory per
//!   connection, read from /proc.
//! - `storm` (P8): N clients connecting at once; connect-to-`connected` latencies.
//! - `crash` (P7): kill -9 a node holding N users; time until another node has announced
//!   every one offline.
//!
//! The node runs as its own process (`presenced` beside this binary) on a private Redis, so
//! its RSS holds connections, not presence records. Clients come from worker processes (this
//! binary again, `idle-worker`), each binding its sockets to its own loopback address
//! 127.0.0.K: a process may hold at most 20,000 open files here.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use presence_core::UserId;
use presenced::auth::{Authenticator, Role, TokenRules};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const SECRET: &str = "bench-secret-for-load-generation-0123";

/// Signs the workers' tokens with the nodes' secret.
pub(crate) fn authenticator() -> Authenticator {
    let clock = std::sync::Arc::new(presence_core::SystemClock);
    Authenticator::hs256(SECRET.as_bytes(), &TokenRules::default(), clock)
}

/// CPU seconds (user + system) a process has used so far.
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

pub(crate) async fn redis_cpu_seconds(redis_url: &str) -> anyhow::Result<f64> {
    let mut c = redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await?;
    let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut c).await?;
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    Ok(field("used_cpu_user") + field("used_cpu_sys"))
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

/// Starts `presenced serve` beside this binary on Redis `redis_url`.
pub(crate) async fn start_node(
    redis_url: &str,
    port: u16,
    extra: &[&str],
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?.with_file_name("presenced");
    if !exe.exists() {
        bail!(
            "{} not found: cargo build --release -p presenced -p presence-bench",
            exe.display()
        );
    }
    let child = Command::new(exe)
        .args([
            "serve",
            "--store",
            "redis",
            "--redis-url",
            redis_url,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args([
            "--set",
            "server.max_connections=200000",
            "--set",
            "presence.away_after=1d",
        ])
        .args(extra)
        .env("PRESENCE_AUTH__JWT_SECRET", SECRET)
        .env("RUST_LOG", "presenced=warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("presenced did not start")
}

pub(crate) async fn run(
    redis_url: &str,
    connections: u64,
    workers: u64,
) -> anyhow::Result<serde_json::Value> {
    let port = crate::free_port()?;
    let node = start_node(redis_url, port, &[]).await?;
    let pid = node.id().context("node pid")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid)?;
    let started = Instant::now();
    let mut opened = 0;
    let mut held = Vec::new();
    let p = crate::progress::phase(&format!(
        "{workers} workers connecting {connections} clients"
    ));
    for (child, mut lines) in
        spawn_workers("idle-worker", port, connections, workers, 10, "").await?
    {
        let line = lines.next_line().await?.context("worker exited")?;
        opened += line
            .trim()
            .strip_prefix("ready ")
            .context("worker said something else")?
            .parse::<u64>()?;
        held.push(child);
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    p.finish_and_clear();
    // Let allocations settle, then read the node's RSS.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid)?;
    for mut c in held {
        if let Some(mut stdin) = c.stdin.take() {
            let _ = stdin.shutdown().await;
        }
        let _ = c.kill().await;
    }
    drop(node);
    let per_conn = (after.saturating_sub(before)) as f64 / opened as f64;
    Ok(json!({
        "title": format!("idle (P5): {opened} idle WebSocket connections to one node (Redis store), {workers} client processes"),
        "connections": opened,
        "node_rss_before_kib": before,
        "node_rss_after_kib": after,
        "node_kib_per_idle_connection": (per_conn * 100.0).round() / 100.0,
        "connect_all_seconds": (connect_seconds * 10.0).round() / 10.0,
    }))
}

/// A client WebSocket to the node on `port` from `source`, once its `connected` frame came.
async fn connect_client(
    port: u16,
    source: std::net::IpAddr,
    token: &str,
    query: &str,
) -> anyhow::Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind((source, 0).into())?;
    let stream = sock.connect(([127, 0, 0, 1], port).into()).await?;
    let url = format!("ws://127.0.0.1:{port}/messenger/ws?token={token}{query}");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    let hello = ws.next().await.context("closed")??;
    anyhow::ensure!(hello.to_text()?.contains("connected"), "no connected frame");
    Ok(ws)
}

/// A worker: opens `count` connections from `source`, prints `ready N`, holds them until its
/// stdin closes.
pub(crate) async fn worker(
    port: u16,
    count: u64,
    first: u64,
    source: &str,
    query: &str,
) -> anyhow::Result<()> {
    let auth = authenticator();
    let source: std::net::IpAddr = source.parse()?;
    let mut held = Vec::with_capacity(count as usize);
    let mut pending = futures::stream::iter(first..first + count)
        .map(|i| {
            let auth = auth.clone();
            async move {
                let token = auth
                    .issue(
                        &UserId::new(format!("idle{i}"))?,
                        None,
                        Role::User,
                        Duration::from_secs(3600),
                    )
                    .context("token")?;
                connect_client(port, source, &token, query).await
            }
        })
        .buffer_unordered(200);
    while let Some(ws) = pending.next().await {
        held.push(ws?);
    }
    let mut out = tokio::io::stdout();
    out.write_all(format!("ready {}\n", held.len()).as_bytes())
        .await?;
    out.flush().await?;
    // Idle: answer the server's pings (reading does), until told to stop.
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let readers = held.into_iter().map(|mut ws| {
        tokio::spawn(async move {
            while let Some(Ok(_)) = ws.next().await {}
            let _ = ws.close(None).await;
        })
    });
    let readers: Vec<_> = readers.collect();
    let _ = stdin.next_line().await;
    for r in readers {
        r.abort();
    }
    Ok(())
}

/// `storm` (P8): `connections` clients from `workers` processes connect at once.
pub(crate) async fn storm(
    redis_url: &str,
    connections: u64,
    workers: u64,
) -> anyhow::Result<serde_json::Value> {
    let port = crate::free_port()?;
    let node = start_node(redis_url, port, &[]).await?;
    let mut children = spawn_workers("storm-worker", port, connections, workers, 20, "").await?;
    let node_pid = node.id().context("node pid")?;
    // Every worker has its tokens signed; then all go at once.
    for (_, lines) in &mut children {
        anyhow::ensure!(
            lines.next_line().await?.as_deref() == Some("ready"),
            "worker did not get ready"
        );
    }
    let (node_cpu, redis_cpu, started) = (
        cpu_seconds(node_pid)?,
        redis_cpu_seconds(redis_url).await?,
        Instant::now(),
    );
    for (child, _) in &mut children {
        child
            .stdin
            .as_mut()
            .context("stdin")?
            .write_all(b"go\n")
            .await?;
    }
    let p = crate::progress::phase(&format!("{connections} clients connecting at once"));
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut failed = 0u64;
    for (_, lines) in &mut children {
        let line = lines.next_line().await?.context("worker exited")?;
        let result: serde_json::Value = serde_json::from_str(&line)?;
        for us in result["micros"].as_array().context("micros")? {
            hist.record(us.as_u64().unwrap_or(0).max(1))?;
        }
        failed += result["failed"].as_u64().unwrap_or(0);
    }
    p.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();
    let node_cpu = cpu_seconds(node_pid)? - node_cpu;
    let redis_cpu = redis_cpu_seconds(redis_url).await? - redis_cpu;
    // How many the node counts online now.
    let auth = authenticator();
    let token = auth
        .issue(
            &UserId::new("bench")?,
            None,
            Role::Service,
            Duration::from_secs(600),
        )
        .context("token")?;
    let count = presence_client::Client::new(format!("http://127.0.0.1:{port}"), token)
        .count(None, None)
        .await?;
    for (mut c, _) in children {
        let _ = c.kill().await;
    }
    drop(node);
    let ms = |v: u64| (v as f64 / 1000.0 * 10.0).round() / 10.0;
    Ok(json!({
        "title": format!("storm (P8): {connections} clients from {workers} processes connect at once to one node (Redis store)"),
        "connected": hist.len(),
        "failed": failed,
        "online_reported_by_node": count.global,
        "connect_to_connected_ms_p50": ms(hist.value_at_quantile(0.5)),
        "connect_to_connected_ms_p90": ms(hist.value_at_quantile(0.9)),
        "connect_to_connected_ms_p99": ms(hist.value_at_quantile(0.99)),
        "connect_to_connected_ms_max": ms(hist.max()),
        "storm_wall_seconds": (wall * 100.0).round() / 100.0,
        "node_cpu_seconds": (node_cpu * 100.0).round() / 100.0,
        "redis_cpu_seconds": (redis_cpu * 100.0).round() / 100.0,
    }))
}

/// A storm worker: signs its tokens, prints `ready`, waits for `go`, opens every connection at
/// once, prints `{"micros": [...], "failed": n}` and holds the connections until killed.
pub(crate) async fn storm_worker(
    port: u16,
    count: u64,
    first: u64,
    source: &str,
) -> anyhow::Result<()> {
    let auth = authenticator();
    let source: std::net::IpAddr = source.parse()?;
    let tokens: Vec<String> = (first..first + count)
        .map(|i| {
            auth.issue(
                &UserId::new(format!("storm{i}"))?,
                None,
                Role::User,
                Duration::from_secs(3600),
            )
            .context("token")
        })
        .collect::<anyhow::Result<_>>()?;
    let mut out = tokio::io::stdout();
    out.write_all(b"ready\n").await?;
    out.flush().await?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    anyhow::ensure!(
        stdin.next_line().await?.as_deref() == Some("go"),
        "expected go"
    );
    let attempts = tokens.into_iter().map(|token| {
        tokio::spawn(async move {
            let started = Instant::now();
            let ws = connect_client(port, source, &token, "").await?;
            anyhow::Ok((started.elapsed().as_micros() as u64, ws))
        })
    });
    let attempts: Vec<_> = attempts.collect();
    let (mut micros, mut held, mut failed) = (Vec::new(), Vec::new(), 0u64);
    for a in attempts {
        match a.await? {
            Ok((us, ws)) => {
                micros.push(us);
                held.push(ws);
            }
            Err(_) => failed += 1,
        }
    }
    out.write_all(format!("{}\n", json!({"micros": micros, "failed": failed})).as_bytes())
        .await?;
    out.flush().await?;
    // Hold the connections (and answer pings) until killed.
    let readers: Vec<_> = held
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} }))
        .collect();
    for r in readers {
        let _ = r.await;
    }
    Ok(())
}

/// Opens `connections` idle clients against `port` from `workers` processes (each with
/// `query` appended to the URL); returns the worker processes once every client is connected.
async fn hold_clients(
    port: u16,
    connections: u64,
    workers: u64,
    query: &str,
) -> anyhow::Result<Vec<Child>> {
    let mut children = Vec::new();
    let p = crate::progress::phase(&format!(
        "{workers} workers connecting {connections} clients"
    ));
    for (child, mut lines) in
        spawn_workers("idle-worker", port, connections, workers, 30, query).await?
    {
        let line = lines.next_line().await?.context("worker exited")?;
        anyhow::ensure!(line.starts_with("ready"), "worker: {line}");
        children.push(child);
    }
    p.finish_and_clear();
    Ok(children)
}

/// `crash` (P7): node A holds `users` users; node B's subscriber watches their zone; A is
/// killed with SIGKILL; the figure is the time until B has announced every one offline.
pub(crate) async fn crash(
    redis_url: &str,
    users: u64,
    workers: u64,
) -> anyhow::Result<serde_json::Value> {
    let (port_a, port_b) = (crate::free_port()?, crate::free_port()?);
    let mut node_a = start_node(redis_url, port_a, &[]).await?;
    let _node_b = start_node(redis_url, port_b, &[]).await?;
    let auth = authenticator();
    let token = auth
        .issue(
            &UserId::new("watcher")?,
            None,
            Role::Service,
            Duration::from_secs(3600),
        )
        .context("token")?;
    // The watcher is an ordinary client of node B (the Rust client): it follows the zone. Its
    // version gate drops an event delivered twice, not a second transition (each has a
    // version of its own), so `offline_events` still counts every event the store made.
    let mut watcher = presence_client::Client::new(format!("http://127.0.0.1:{port_b}"), token)
        .session(presence_client::SessionOptions::default())
        .await?;
    watcher
        .subscribe(presence_client::Subscription::scopes(["zone:crash"]))
        .await?;
    // The next presence event of the zone, as the watcher gets it.
    async fn next_event(
        watcher: &mut presence_client::Session,
        wait: Duration,
    ) -> anyhow::Result<Option<presence_client::PresenceEvent>> {
        loop {
            match tokio::time::timeout(wait, watcher.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => anyhow::bail!("the watcher's session ended"),
                Ok(Some(presence_client::SessionItem::Event(e))) => return Ok(Some(*e)),
                Ok(Some(presence_client::SessionItem::Closed(e))) => return Err(e.into()),
                Ok(Some(_)) => {}
            }
        }
    }
    let clients = hold_clients(port_a, users, workers, "&zone_id=crash").await?;
    let mut online = 0;
    while online < users {
        let e = next_event(&mut watcher, Duration::from_secs(30))
            .await?
            .context("online events")?;
        if e.user.status == presence_client::Status::Online {
            online += 1;
        }
    }
    let killed = Instant::now();
    node_a.start_kill()?;
    let _ = node_a.wait().await;
    // A spinner while node A's lease runs out, then a bar as node B announces the users.
    let waiting = crate::progress::phase("kill -9 sent: waiting for node A's lease to lapse");
    let bar = crate::progress::bar(users, "offline events on node B");
    let mut offline = std::collections::HashSet::new();
    let mut events = 0u64;
    let mut first = None;
    while (offline.len() as u64) < users {
        let e = next_event(&mut watcher, Duration::from_secs(60))
            .await?
            .context("offline events")?;
        events += 1;
        if e.user.status == presence_client::Status::Offline {
            if first.is_none() {
                waiting.finish_and_clear();
                bar.reset();
            }
            first.get_or_insert_with(|| killed.elapsed());
            offline.insert(e.user.user_id.to_string());
            bar.set_position(offline.len() as u64);
        }
    }
    let last = killed.elapsed();
    bar.finish_and_clear();
    // Anything more within a second would be a duplicate or a stray event.
    let mut extra = 0;
    while next_event(&mut watcher, Duration::from_secs(1))
        .await?
        .is_some()
    {
        extra += 1;
    }
    for mut c in clients {
        let _ = c.kill().await;
    }
    let s = |d: Duration| (d.as_secs_f64() * 100.0).round() / 100.0;
    Ok(json!({
        "title": format!("crash (P7): kill -9 of a node holding {users} users, watched from another node (node_lease 15 s, sweep 1 s)"),
        "users": users,
        "offline_events": events,
        "extra_events_after": extra,
        "seconds_to_first_offline": first.map(s),
        "seconds_to_last_offline": s(last),
        "target_seconds": 17,
    }))
}

/// A worker process and the lines it prints.
type Worker = (
    Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
);

/// Starts `workers` processes of this binary in `mode` (`idle-worker`, `storm-worker`) that
/// share `connections` clients between them, each from its own source address
/// 127.0.0.`source_base + w`, with `query` appended to their WebSocket URLs.
async fn spawn_workers(
    mode: &str,
    port: u16,
    connections: u64,
    workers: u64,
    source_base: u64,
    query: &str,
) -> anyhow::Result<Vec<Worker>> {
    let per = connections.div_ceil(workers);
    let mut out = Vec::new();
    for w in 0..workers {
        let count = per.min(connections - w * per);
        let mut child = Command::new(std::env::current_exe()?)
            .arg(mode)
            .args([
                "--port",
                &port.to_string(),
                "--count",
                &count.to_string(),
                "--first",
                &(w * per).to_string(),
            ])
            .args([
                "--source",
                &format!("127.0.0.{}", source_base + w),
                "--query",
                query,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let lines = BufReader::new(child.stdout.take().context("worker stdout")?).lines();
        out.push((child, lines));
    }
    Ok(out)
}

pub(crate) fn micros_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

/// Frames a second one driver connection sends: under the per-connection limit of 20.
pub(crate) const FRAMES_PER_DRIVER: u64 = 15;

/// A token for user `u`, signed with the nodes' secret.
pub(crate) fn user_token(auth: &Authenticator, u: &str) -> anyhow::Result<String> {
    auth.issue(
        &UserId::new(u).context("user id")?,
        None,
        Role::User,
        Duration::from_secs(3600),
    )
    .context("token")
}

/// `conns` WebSocket connections to the node on `port`, one user each (`{name}{i}`), with
/// `query` appended to the URL, each past its `connected` frame.
pub(crate) async fn connect_drivers(
    auth: &Authenticator,
    port: u16,
    name: &str,
    conns: u64,
    query: &str,
) -> anyhow::Result<
    Vec<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
> {
    let mut drivers = Vec::new();
    for i in 0..conns {
        let url = format!(
            "ws://127.0.0.1:{port}/messenger/ws?token={}{query}",
            user_token(auth, &format!("{name}{i}"))?
        );
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
        ws.next().await.context("connected")??;
        drivers.push(ws);
    }
    Ok(drivers)
}

/// `propagation` (P6): changes made through node A at `rate` a second for `seconds`; latency
/// until a subscriber on node B receives each. Drivers and subscriber share this process's
/// clock: each change carries its send time in its metadata.
pub(crate) async fn propagation(
    redis_url: &str,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<serde_json::Value> {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let (port_a, port_b) = (crate::free_port()?, crate::free_port()?);
    let _node_a = start_node(redis_url, port_a, &[]).await?;
    let _node_b = start_node(redis_url, port_b, &[]).await?;
    let auth = authenticator();
    let token = |u: &str| user_token(&auth, u);

    let watcher_url = format!(
        "ws://127.0.0.1:{port_b}/messenger/ws?token={}",
        token("watcher")?
    );
    let (mut watcher, _) =
        tokio_tungstenite::connect_async_with_config(watcher_url, None, true).await?;
    watcher.next().await.context("connected")??;
    watcher
        .send(Message::Text(
            json!({"type": "subscribe", "scopes": ["zone:prop"], "id": 1})
                .to_string()
                .into(),
        ))
        .await?;

    let conns = rate.div_ceil(FRAMES_PER_DRIVER);
    let drivers = connect_drivers(&auth, port_a, "p", conns, "&zone_id=prop").await?;
    // Let the online events pass before timing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), watcher.next()).await {
    }

    let expected = rate * seconds;
    let interval = Duration::from_micros(1_000_000 * conns / rate);
    let tasks: Vec<_> = drivers
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            tokio::spawn(async move {
                // Spread the connections' ticks over one interval.
                tokio::time::sleep(interval * i as u32 / conns as u32).await;
                let mut tick = tokio::time::interval(interval);
                let mut sent = 0u64;
                let deadline = Instant::now() + Duration::from_secs(seconds);
                while Instant::now() < deadline {
                    tick.tick().await;
                    let frame = json!({"type": "metadata.set", "metadata": {"t": micros_now()}});
                    if ws
                        .send(Message::Text(frame.to_string().into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    sent += 1;
                    // Drain acks/errors without blocking.
                    while let Some(Some(Ok(_))) = futures::FutureExt::now_or_never(ws.next()) {}
                }
                sent
            })
        })
        .collect();
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let started = Instant::now();
    let mut received = 0u64;
    let bar = crate::progress::bar(expected, "events received on node B");
    while received < expected && started.elapsed() < Duration::from_secs(seconds + 10) {
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), watcher.next()).await else {
            break;
        };
        let text = m?.into_text()?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        if let Some(t) = v["user"]["metadata"]["t"].as_u64() {
            hist.record(micros_now().saturating_sub(t).max(1))?;
            received += 1;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let mut sent = 0;
    for t in tasks {
        sent += t.await?;
    }
    let ms = |v: u64| (v as f64 / 1000.0 * 100.0).round() / 100.0;
    Ok(json!({
        "title": format!("propagation (P6): {rate} changes/s for {seconds} s through node A ({conns} connections), one subscriber on node B"),
        "changes_sent": sent,
        "events_received": received,
        "latency_ms_p50": ms(hist.value_at_quantile(0.5)),
        "latency_ms_p90": ms(hist.value_at_quantile(0.9)),
        "latency_ms_p99": ms(hist.value_at_quantile(0.99)),
        "latency_ms_max": ms(hist.max()),
    }))
}

/// `counts` (issue 10's measurement): what one subscriber of a zone costs node B while the
/// zone's count changes `rate` times a second through node A, followed two ways in the same
/// run: not at all (the baseline), every event (`subscribe`), then counts only (`subscribe`
/// with `counts_only`). Drivers
/// move their users in and out of the zone (`zone.set`), so every change changes the count.
pub(crate) async fn counts(
    redis_url: &str,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<serde_json::Value> {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let (port_a, port_b) = (crate::free_port()?, crate::free_port()?);
    let _node_a = start_node(redis_url, port_a, &[]).await?;
    let node_b = start_node(redis_url, port_b, &[]).await?;
    let pid_b = node_b.id().context("node B's pid")?;
    let auth = authenticator();
    let token = |u: &str| user_token(&auth, u);
    let conns = rate.div_ceil(FRAMES_PER_DRIVER);
    let mut drivers = connect_drivers(&auth, port_a, "c", conns, "").await?;
    let mut report = serde_json::Map::new();
    // "none": the watcher subscribes to nothing, to show what node B spends anyway (its feed
    // loop reads every event, whoever follows what).
    for mode in ["none", "events", "counts_only"] {
        let url = format!(
            "ws://127.0.0.1:{port_b}/messenger/ws?token={}",
            token(&format!("watcher_{mode}"))?
        );
        let (mut watcher, _) =
            tokio_tungstenite::connect_async_with_config(url, None, true).await?;
        watcher.next().await.context("connected")??;
        if mode != "none" {
            let subscribe = json!({"type": "subscribe", "scopes": ["zone:counted"], "counts_only": mode == "counts_only", "id": 1});
            watcher
                .send(Message::Text(subscribe.to_string().into()))
                .await?;
            watcher.next().await.context("snapshot")??;
        }
        let interval = Duration::from_micros(1_000_000 * conns / rate);
        let cpu_before = cpu_seconds(pid_b)?;
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let tasks: Vec<_> = drivers
            .drain(..)
            .enumerate()
            .map(|(i, mut ws)| {
                tokio::spawn(async move {
                    tokio::time::sleep(interval * i as u32 / conns as u32).await;
                    let mut tick = tokio::time::interval(interval);
                    let mut inside = false;
                    while Instant::now() < deadline {
                        tick.tick().await;
                        inside = !inside;
                        let zone = if inside { "counted" } else { "elsewhere" };
                        let frame = json!({"type": "zone.set", "zone_id": zone});
                        if ws
                            .send(Message::Text(frame.to_string().into()))
                            .await
                            .is_err()
                        {
                            break;
                        }
                        while let Some(Some(Ok(_))) = futures::FutureExt::now_or_never(ws.next()) {}
                    }
                    ws
                })
            })
            .collect();
        let mut frames = 0u64;
        let bar = crate::progress::phase(&format!("{mode}: frames received on node B"));
        while Instant::now() < deadline + Duration::from_secs(1) {
            match tokio::time::timeout(Duration::from_millis(200), watcher.next()).await {
                Ok(Some(m)) => {
                    let text = m?.into_text()?;
                    if text.contains("\"type\":\"presence\"") || text.contains("\"type\":\"count\"")
                    {
                        frames += 1;
                    }
                }
                Ok(None) => break,
                Err(_) => continue,
            }
        }
        bar.finish_and_clear();
        let cpu = cpu_seconds(pid_b)? - cpu_before;
        for t in tasks {
            drivers.push(t.await?);
        }
        report.insert(
            mode.to_string(),
            json!({
                "frames_received": frames,
                "frames_per_second": frames as f64 / seconds as f64,
                "node_b_cpu_ms_per_second": (cpu * 1000.0 / (seconds as f64 + 1.0) * 10.0).round() / 10.0,
            }),
        );
    }
    report.insert(
        "title".into(),
        json!(format!("counts: one subscriber of a zone on node B while its count changes {rate} times a second through node A ({conns} connections), {seconds} s each way")),
    );
    Ok(serde_json::Value::Object(report))
}
