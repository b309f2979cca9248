//! Test support shared by the workspace's test suites (a dev-dependency only): the Redis
//! the tests use.
//!
//! Redis tests never touch a Redis they were not given. With `PRESENCE_TEST_REDIS_URL` set
//! (`.ci/run` sets it) they use that Redis, isolated by key prefix, and never flush anything.
//! Unset, the test binary starts a private `redis-server` once, on a unix socket in a temp
//! dir, which stops when the binary exits, however it exits. When Redis cannot be had the
//! tests fail with a message saying why: they never skip.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The Redis the tests use: `PRESENCE_TEST_REDIS_URL`, else this binary's private server.
pub fn redis_url() -> String {
    match std::env::var("PRESENCE_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => private_redis().to_string(),
    }
}

/// The private `redis-server` of this test binary, started on first use.
fn private_redis() -> &'static str {
    static SERVER: OnceLock<PrivateRedis> = OnceLock::new();
    &SERVER.get_or_init(start_private_redis).url
}

struct PrivateRedis {
    url: String,
    /// The keeper, never waited for: it ends after this process. Its stdin is a pipe this
    /// process never writes; the kernel closes it when the process ends, however it ends, and
    /// the keeper's read then sees end of file.
    _keeper: Child,
}

/// Shell run as the private server's keeper: it starts redis-server (no TCP port, a unix
/// socket only) in the temp dir $1, waits for end of file on its stdin — this test process
/// has exited, panicked or been killed — then stops the server and removes the dir. Rust runs
/// no destructors for statics at exit, so the keeper, not a guard, leaves no server behind;
/// and end of file, unlike polling the test's pid, comes even while the exited test process
/// waits as a zombie for its parent.
const KEEPER: &str = r#"
redis-server --port 0 --unixsocket "$1/redis.sock" --unixsocketperm 700 \
  --save '' --appendonly no --dir "$1" --logfile "$1/redis.log" </dev/null &
server=$!
trap 'kill "$server" 2>/dev/null; rm -rf "$1"; exit' HUP INT TERM
cat >/dev/null
kill "$server" 2>/dev/null
wait "$server"
rm -rf "$1"
"#;

fn start_private_redis() -> PrivateRedis {
    match Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        outcome => panic!(
            "The Redis tests need redis-server on PATH (apt-get install redis-server) to start \
             a private one, or PRESENCE_TEST_REDIS_URL naming a Redis they may use; \
             `redis-server --version` gave {outcome:?}"
        ),
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "presence-test-redis-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("temp dir {}: {e}", dir.display()));
    let mut keeper = Command::new("sh")
        .arg("-c")
        .arg(KEEPER)
        .arg("presence-test-redis")
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting the private redis-server: {e}"));
    let socket = dir.join("redis.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answers_ping(&socket) {
        if let Ok(Some(status)) = keeper.try_wait() {
            panic!("the private redis-server exited at start ({status})");
        }
        assert!(
            Instant::now() < deadline,
            "the private redis-server did not answer on {} within 10 s (log: {})",
            socket.display(),
            dir.join("redis.log").display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    PrivateRedis {
        url: format!("redis+unix://{}", socket.display()),
        _keeper: keeper,
    }
}

fn answers_ping(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let mut reply = [0u8; 7];
    s.set_read_timeout(Some(Duration::from_secs(1))).is_ok()
        && s.write_all(b"PING\r\n").is_ok()
        && s.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}
