//! Starts the real `presenced` binary for black-box tests and talks to it with real HTTP
//! and WebSocket clients. Each node is killed when its guard drops.

#![allow(dead_code, unreachable_pub)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
pub use presence_testkit::redis_url;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-0123456789-of-32-bytes+";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Redis,
}

pub struct Node {
    child: Child,
    pub addr: String,
    pub http: reqwest::Client,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Test timings: short enough to watch transitions happen.
pub const FAST: &str = r#"
[presence]
away_after = "2s"
offline_grace = "600ms"
sweep_interval = "100ms"
node_lease = "3s"
activity_flush_interval = "50ms"
"#;

impl Node {
    /// Starts a node of `kind` with the test secret, `FAST` timings and `extra` TOML.
    pub async fn start(kind: Kind, extra: &str) -> Node {
        Self::start_on(kind, None, extra).await
    }

    /// Starts `n` nodes on one Redis and one key prefix: one service.
    pub async fn cluster(n: usize, extra: &str) -> Vec<Node> {
        let prefix = unique("cluster");
        let mut nodes = Vec::new();
        for _ in 0..n {
            nodes.push(Self::start_on(Kind::Redis, Some(&prefix), extra).await);
        }
        nodes
    }

    /// Starts a node; Redis nodes use `prefix` (a fresh one when `None`). The node binds
    /// port 0 and says on stdout which port it got.
    pub async fn start_on(kind: Kind, prefix: Option<&str>, extra: &str) -> Node {
        let dir = std::env::temp_dir().join(unique("presenced-test"));
        std::fs::create_dir_all(&dir).unwrap();
        let store = match kind {
            Kind::Memory => "[store]\nkind = \"memory\"\n".to_string(),
            Kind::Redis => {
                let url = redis_url();
                let prefix = prefix.map_or_else(|| unique("svc"), str::to_string);
                format!(
                    "[store]\nkind = \"redis\"\nredis_url = \"{url}\"\nkey_prefix = \"{prefix}:\"\n"
                )
            }
        };
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[auth]\njwt_secret = \"{SECRET}\"\n{store}\n{FAST}\n{extra}"
        );
        let config = dir.join("presenced.toml");
        std::fs::write(&config, merge_sections(&toml)).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_presenced"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env_remove("PRESENCE_AUTH__JWT_SECRET")
            .env("RUST_LOG", "presenced=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the presenced binary");
        let addr = listening_addr(child.stdout.take().unwrap());
        let mut node = Node {
            child,
            addr: addr.unwrap_or_default(),
            http: reqwest::Client::new(),
            _dir: TempDir(dir),
        };
        for _ in 0..400 {
            if let Some(status) = node.child.try_wait().unwrap() {
                panic!(
                    "presenced exited with {status} before it was ready (Redis tests need PRESENCE_TEST_REDIS_URL or redis-server; bash .ci/run starts one)"
                );
            }
            if !node.addr.is_empty() && node.http.get(node.url("/healthz")).send().await.is_ok() {
                return node;
            }
            if node.addr.is_empty() {
                panic!("presenced never said where it listens");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = node.child.kill();
        panic!("presenced did not answer /healthz within 10 s");
    }

    /// Freezes the process (SIGSTOP), as a long GC pause or a stalled VM would.
    pub fn pause(&self) {
        let _ = Command::new("kill")
            .args(["-STOP", &self.child.id().to_string()])
            .status();
    }

    /// Thaws it (SIGCONT).
    pub fn resume(&self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
    }

    /// Kills the process outright, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM, as an orchestrator does on a rolling restart.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits until the process has exited (after [`Node::terminate`]).
    pub fn wait_exit(&mut self) {
        let _ = self.child.wait();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Opens a WebSocket and reads its `connected` frame.
    pub async fn connect(&self, token: &str, query: &str) -> Client {
        self.connect_hello(token, query).await.0
    }

    /// Opens a WebSocket; returns it with its `connected` frame (session and node ids).
    pub async fn connect_hello(&self, token: &str, query: &str) -> (Client, Value) {
        let mut c = self.ws(token, query).await;
        let hello = c.next().await;
        assert_eq!(hello["event"], "connected", "{hello}");
        (c, hello)
    }

    /// Opens a WebSocket; `query` is appended to `/messenger/ws?token=…`.
    pub async fn ws(&self, token: &str, query: &str) -> Client {
        let url = format!("ws://{}/messenger/ws?token={token}{query}", self.addr);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("upgrade");
        Client { ws }
    }
}

/// Reads the node's stdout until it names its address ("presenced listening on http://…"),
/// then keeps draining it in the background so the node never blocks on a full pipe.
fn listening_addr(stdout: std::process::ChildStdout) -> Option<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("presenced listening on http://")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20)).ok()
}

/// TOML sections appear more than once when `extra` repeats one: merge same-named sections.
fn merge_sections(toml: &str) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut sections: std::collections::HashMap<String, String> = Default::default();
    let mut current = String::new();
    for line in toml.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            current = t.to_string();
            // An array of tables (`[[webhooks.endpoints]]`) is one table per header: never merged.
            if t.starts_with("[[") {
                current = format!("{t}#{}", order.len());
            }
            if !sections.contains_key(&current) {
                order.push(current.clone());
                sections.insert(current.clone(), String::new());
            }
        } else if !t.is_empty() {
            let body = sections.entry(current.clone()).or_default();
            // A later line for the same key replaces the earlier one.
            let key = t.split('=').next().unwrap_or("").trim().to_string();
            let kept: Vec<&str> = body
                .lines()
                .filter(|l| l.split('=').next().unwrap_or("").trim() != key)
                .collect();
            *body = kept.join("\n") + "\n" + t;
        }
    }
    let mut out = String::new();
    for s in order {
        let header = s.split('#').next().unwrap_or(&s);
        out.push_str(&format!("{header}\n{}\n", sections[&s]));
    }
    out
}

/// A token signed with the test secret.
pub fn token(sub: &str, role: &str, org: Option<&str>) -> String {
    let mut claims = serde_json::json!({"sub": sub, "exp": 4_000_000_000u64, "role": role});
    if let Some(o) = org {
        claims["org_id"] = o.into();
    }
    jwt(&claims)
}

/// Any claims, signed HS256 with the test secret.
pub fn jwt(claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key).unwrap()
}

/// A unique user id for one test.
pub fn user(tag: &str) -> String {
    unique(tag).replace('-', "_")
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send_text(&mut self, t: String) {
        self.ws.send(Message::Text(t.into())).await.unwrap();
    }

    /// Sends a `subscribe` frame and returns its snapshot.
    pub async fn subscribe(&mut self, frame: Value) -> Value {
        self.send(frame).await;
        self.until(|f| f["type"] == "snapshot").await
    }

    /// Sends a frame unless the connection is already closed.
    pub async fn try_send(&mut self, v: Value) -> Result<(), String> {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .map_err(|e| e.to_string())
    }

    /// The next JSON frame (pings answered by the library), within 5 s.
    pub async fn next(&mut self) -> Value {
        match self.next_within(Duration::from_secs(5)).await {
            Ok(Some(f)) => f,
            Ok(None) => panic!("no frame within 5 s"),
            Err(e) => panic!("the connection failed: {e}"),
        }
    }

    /// The next JSON frame within `d` (a close frame reads as `{"closed": code}`); `Ok(None)`
    /// when nothing came, `Err` when the connection failed or had ended.
    pub async fn next_within(&mut self, d: Duration) -> Result<Option<Value>, String> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => return Err("the connection had ended".into()),
                Ok(Some(Err(e))) => return Err(e.to_string()),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => return Ok(Some(serde_json::from_str(&t).unwrap())),
                Message::Close(c) => {
                    return Ok(Some(
                        serde_json::json!({"closed": c.map(|c| u16::from(c.code))}),
                    ));
                }
                _ => continue,
            }
        }
    }

    /// Asserts that nothing arrives for `d`, then that the connection is still alive (a
    /// ping gets its pong): a dead watcher proves nothing.
    pub async fn assert_quiet(&mut self, d: Duration, why: &str) {
        match self.next_within(d).await {
            Ok(None) => {}
            Ok(Some(f)) => panic!("{why}: got {f}"),
            Err(e) => panic!("{why}: the watcher itself failed: {e}"),
        }
        static PINGS: AtomicU64 = AtomicU64::new(0);
        let id = format!("alive-{}", PINGS.fetch_add(1, Ordering::SeqCst));
        self.send(serde_json::json!({"type": "ping", "id": id}))
            .await;
        let pong = self.next().await;
        assert_eq!(
            pong,
            serde_json::json!({"type": "pong", "id": id}),
            "{why}: after the quiet window the next frame is the liveness pong"
        );
    }

    /// Frames until one matches `pred`, within 5 s.
    pub async fn until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let f = self.next().await;
            if pred(&f) {
                return f;
            }
        }
    }

    /// The close code the server sends, within `d`.
    pub async fn closed_with(&mut self, d: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Close(c)))) => return c.map(|c| u16::from(c.code)),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

/// A Server-Sent Events reader.
pub struct Sse {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

/// One SSE message.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Value,
}

impl Node {
    /// Opens `GET /messenger/presence/events{query}`; `last_event_id` sets the header.
    pub async fn sse(
        &self,
        token: &str,
        query: &str,
        last_event_id: Option<&str>,
    ) -> Result<Sse, (u16, Value)> {
        let mut req = self
            .http
            .get(self.url(&format!("/messenger/presence/events{query}")))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let r = req.send().await.unwrap();
        if !r.status().is_success() {
            return Err((r.status().as_u16(), r.json().await.unwrap_or(Value::Null)));
        }
        Ok(Sse {
            body: Box::pin(r.bytes_stream()),
            buf: String::new(),
        })
    }
}

impl Sse {
    /// The next message (keep-alive comments skipped), within 5 s.
    pub async fn next(&mut self) -> SseEvent {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut e = SseEvent::default();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        e.id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        e.event = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                e.data = serde_json::from_str(&data).unwrap();
                return e;
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .expect("an SSE message within 5 s");
            self.buf.push_str(&String::from_utf8_lossy(
                &chunk.expect("stream open").unwrap(),
            ));
        }
    }
}

/// A `redis-server` of the test's own, to stop and start under running nodes. It listens on
/// a unix socket in its own directory, so a restart gets the same address back and no port
/// is ever given up to someone else.
pub struct OwnRedis {
    child: Option<Child>,
    dir: std::path::PathBuf,
}

impl OwnRedis {
    pub async fn start() -> OwnRedis {
        let dir = std::env::temp_dir().join(unique("presenced-own-redis"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = OwnRedis { child: None, dir };
        r.restart().await;
        r
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.join("redis.sock")
    }

    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// Starts it again, empty: as if it restarted and lost everything.
    pub async fn restart(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
        self.restart_with_data().await;
    }

    /// Stops it the way an orderly shutdown does, saving its data to disk first.
    pub fn shutdown_saving(&mut self) {
        self.cli(&["SHUTDOWN", "SAVE"]);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Starts it again with the data its last `shutdown_saving` wrote.
    pub async fn restart_with_data(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(self.socket());
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(self.socket())
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (bash .ci/run installs it)");
        self.child = Some(child);
        for _ in 0..200 {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not start");
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws it (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(ok.success(), "kill {sig} {pid}");
    }

    /// Runs `redis-cli` against it and returns what it printed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-s")
            .arg(self.socket())
            .args(args)
            .output()
            .expect("redis-cli on PATH");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An ordinary app's session through the Rust client (`presence-client`), for tests that
/// watch presence as an app would. Tests of the protocol itself (bad frames, close codes,
/// exact frames and their repeats) keep the raw [`Client`]: the Rust client hides what a raw
/// test must see (it drops repeated versions, reconnects by itself).
pub struct Watcher(presence_client::Session);

impl Node {
    /// The Rust client for this node, calling with `token`.
    pub fn presence(&self, token: &str) -> presence_client::Client {
        presence_client::Client::new(self.url(""), token)
    }

    /// A session for `token` following `users` (events and their snapshots).
    pub async fn watch_users(&self, token: &str, users: &[&str]) -> Watcher {
        let session = self
            .presence(token)
            .session(presence_client::SessionOptions::default())
            .await
            .expect("the watcher connects");
        session
            .subscribe(presence_client::Subscription::users(users.iter().copied()))
            .await
            .expect("the watcher subscribes");
        Watcher(session)
    }
}

impl Watcher {
    /// The next presence event (10 s at most).
    pub async fn event(&mut self) -> presence_client::PresenceEvent {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.0.next()).await {
                Err(_) => panic!("no event within 10 s"),
                Ok(None) => panic!("the watcher's session ended"),
                Ok(Some(presence_client::SessionItem::Event(e))) => return *e,
                Ok(Some(presence_client::SessionItem::Closed(e))) => panic!("watcher closed: {e}"),
                Ok(Some(_)) => {}
            }
        }
    }

    /// No presence event within `d`.
    pub async fn assert_no_event(&mut self, d: Duration, why: &str) {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.0.next()).await {
                Err(_) => return,
                Ok(Some(presence_client::SessionItem::Event(e))) => {
                    panic!("{why}: unexpected event {e:?}")
                }
                Ok(Some(presence_client::SessionItem::Closed(e))) => panic!("watcher closed: {e}"),
                Ok(None) => panic!("the watcher's session ended"),
                Ok(Some(_)) => {}
            }
        }
    }
}
