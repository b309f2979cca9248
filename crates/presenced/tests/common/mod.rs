//! Starts the real `presenced` binary for black-box tests and talks to it with real HTTP
//! and WebSocket clients. Each node is killed when its guard drops.

#![allow(dead_code, unreachable_pub)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
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

    /// Starts a node; Redis nodes use `prefix` (a fresh one when `None`).
    pub async fn start_on(kind: Kind, prefix: Option<&str>, extra: &str) -> Node {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
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
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[auth]\njwt_secret = \"{SECRET}\"\n{store}\n{FAST}\n{extra}"
        );
        let (store_part, rest) = merge_sections(&toml);
        let config = dir.join("presenced.toml");
        std::fs::write(&config, format!("{store_part}{rest}")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_presenced"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env_remove("PRESENCE_AUTH__JWT_SECRET")
            .env("RUST_LOG", "presenced=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the presenced binary");
        let node = Node {
            child,
            addr: format!("127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _dir: TempDir(dir),
        };
        for _ in 0..200 {
            if node.http.get(node.url("/healthz")).send().await.is_ok() {
                return node;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "presenced did not start (Redis tests need PRESENCE_TEST_REDIS_URL or a Redis on 6379; bash .ci/run starts one)"
        );
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
        let mut c = self.ws(token, query).await;
        let hello = c.next().await;
        assert_eq!(hello["event"], "connected", "{hello}");
        c
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

/// TOML sections appear more than once when `extra` repeats one: merge same-named sections.
fn merge_sections(toml: &str) -> (String, String) {
    let mut order: Vec<String> = Vec::new();
    let mut sections: std::collections::HashMap<String, String> = Default::default();
    let mut current = String::new();
    for line in toml.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            current = t.to_string();
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
        out.push_str(&format!("{s}\n{}\n", sections[&s]));
    }
    (String::new(), out)
}

/// The Redis the tests share: `PRESENCE_TEST_REDIS_URL` (`.ci/run` starts one), or else a
/// private `redis-server` this test binary starts once, on a unix socket in a temporary
/// directory, stopped by a watchdog when the test process exits. Never a Redis the suite
/// did not start.
pub fn redis_url() -> String {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("PRESENCE_TEST_REDIS_URL") {
            return url;
        }
        let dir = std::env::temp_dir().join(unique("presenced-test-redis"));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("redis.sock");
        let script = format!(
            "redis-server --port 0 --unixsocket {sock} --save '' --appendonly no --dir {dir} >/dev/null & r=$!; \
             while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; kill $r; rm -rf {dir}",
            sock = sock.display(),
            dir = dir.display(),
            pid = std::process::id()
        );
        // Never waited for: the watchdog outlives this process on purpose, to stop the server.
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .spawn()
            .expect("sh");
        for _ in 0..200 {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                return format!("redis+unix://{}", sock.display());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("PRESENCE_TEST_REDIS_URL is not set and redis-server did not start (install redis-server, or run bash .ci/run)");
    })
    .clone()
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

    /// The next JSON frame (pings answered by the library), within 5 s.
    pub async fn next(&mut self) -> Value {
        self.next_within(Duration::from_secs(5))
            .await
            .expect("a frame within 5 s")
    }

    pub async fn next_within(&mut self, d: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??
                .ok()?;
            match msg {
                Message::Text(t) => return Some(serde_json::from_str(&t).unwrap()),
                Message::Close(c) => {
                    return Some(serde_json::json!({"closed": c.map(|c| u16::from(c.code))}));
                }
                _ => continue,
            }
        }
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

/// A `redis-server` of the test's own, to stop and start under running nodes.
pub struct OwnRedis {
    child: Option<Child>,
    pub port: u16,
}

impl OwnRedis {
    pub async fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = OwnRedis { child: None, port };
        r.restart().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again, empty (no persistence): as if it restarted and lost everything.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (bash .ci/run installs it)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not start");
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
    }
}
