//! The browser side of a node: how the dashboard and `/client.js` are served (types, caching,
//! CSP, CORS), who gets a development token, and `presenced demo` giving a node life. (The
//! client's own behaviour is tested with `node --test` in clients/js, the dashboard in a real
//! browser by clients/js/test/dashboard.browser.mjs.)

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use presence_core::{NodeId, SharedClock, SystemClock};
use presenced::auth::Authenticator;
use presenced::config::Config;
use presenced::state::AppState;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use common::{Kind, Node, SECRET, token};

/// A node's router in process, with `generated_dev_secret` as a node on a made-up secret has it.
async fn app(dev: bool) -> (axum::Router, Authenticator) {
    let mut config = Config::default();
    config.auth.jwt_secret = SECRET.into();
    config.auth.generated_dev_secret = dev;
    let clock: SharedClock = Arc::new(SystemClock);
    let store = presenced::open_store(&config, NodeId::random(), clock.clone())
        .await
        .unwrap();
    let auth = Authenticator::hs256(SECRET.as_bytes(), &config.auth.token_rules(), clock.clone());
    let state = AppState::new(
        Arc::new(config),
        auth.clone(),
        store,
        clock,
        CancellationToken::new(),
        None,
    );
    (presenced::app::router(state), auth)
}

async fn get(app: &axum::Router, path: &str, headers: &[(&str, &str)]) -> axum::response::Response {
    let mut req = Request::builder().uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    app.clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

fn h<'a>(r: &'a axum::response::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_else(|| panic!("no {name} header"))
}

async fn text(r: axum::response::Response) -> String {
    String::from_utf8(
        axum::body::to_bytes(r.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap()
}

#[tokio::test]
async fn assets_are_served_with_their_types_and_revalidated_by_etag() {
    let (app, _) = app(false).await;
    for (path, ty, needle) in [
        (
            "/",
            "text/html; charset=utf-8",
            "<script type=\"module\" src=\"/dashboard.js\">",
        ),
        (
            "/client.js",
            "text/javascript; charset=utf-8",
            "export function connect(",
        ),
        (
            "/client.d.ts",
            "application/typescript; charset=utf-8",
            "export declare function connect(",
        ),
        (
            "/dashboard.js",
            "text/javascript; charset=utf-8",
            "from './client.js'",
        ),
        ("/dashboard.css", "text/css; charset=utf-8", "#ticker"),
    ] {
        let r = get(&app, path, &[("host", "127.0.0.1:8000")]).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(h(&r, "content-type"), ty, "{path}");
        assert_eq!(h(&r, "cache-control"), "no-cache", "{path}");
        assert_eq!(h(&r, "x-content-type-options"), "nosniff", "{path}");
        let etag = h(&r, "etag").to_string();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
        assert!(text(r).await.contains(needle), "{path} lacks {needle}");
        // The same bytes: 304 with no body; another tag: the file again.
        let again = get(&app, path, &[("if-none-match", &etag)]).await;
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(h(&again, "etag"), etag);
        assert!(text(again).await.is_empty());
        let stale = get(&app, path, &[("if-none-match", "\"0000000000000000\"")]).await;
        assert_eq!(stale.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn the_dashboard_has_a_strict_csp_and_the_client_may_be_imported_from_anywhere() {
    let (app, _) = app(false).await;
    let page = get(&app, "/", &[("host", "presence.example:8000")]).await;
    let csp = h(&page, "content-security-policy");
    for part in [
        "default-src 'none'",
        "script-src 'self';",
        "connect-src 'self' ws://presence.example:8000 wss://presence.example:8000;",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp} lacks {part}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert!(page.headers().get("access-control-allow-origin").is_none());
    // A Host that would smuggle a directive is left out of the policy.
    let odd = get(&app, "/", &[("host", "a;script-src *")]).await;
    assert!(!h(&odd, "content-security-policy").contains("script-src *"));
    let client = get(&app, "/client.js", &[]).await;
    assert_eq!(h(&client, "access-control-allow-origin"), "*");
    assert_eq!(h(&client, "x-typescript-types"), "/client.d.ts");
    // Another route than these stays the API's 404.
    let missing = get(&app, "/nope.js", &[]).await;
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn a_dev_token_only_from_a_node_on_its_own_secret_and_only_to_loopback() {
    let (dev, auth) = app(true).await;
    for host in ["127.0.0.1:8000", "localhost:8000", "[::1]:8000"] {
        let r = get(&dev, "/dev-token", &[("host", host)]).await;
        assert_eq!(r.status(), 200, "{host}");
        assert_eq!(h(&r, "cache-control"), "no-store");
        assert!(r.headers().get("access-control-allow-origin").is_none());
        let body: Value = serde_json::from_str(&text(r).await).unwrap();
        let who = auth.verify(body["token"].as_str().unwrap()).unwrap();
        assert_eq!(who.user.as_str(), "dashboard");
        assert_eq!(body["role"], "admin");
    }
    // Another name for this machine (DNS rebinding), or no Host: nothing.
    for host in [
        "evil.example:8000",
        "127.0.0.1.evil.example",
        "10.0.0.2:8000",
    ] {
        let r = get(&dev, "/dev-token", &[("host", host)]).await;
        assert_eq!(r.status(), 404, "{host}");
    }
    assert_eq!(get(&dev, "/dev-token", &[]).await.status(), 404);
    // Through a reverse proxy (which forwards Host: 127.0.0.1), or asked by a page elsewhere.
    for extra in [
        ("x-forwarded-for", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9"),
        ("via", "1.1 nginx"),
        ("origin", "https://evil.example"),
    ] {
        let r = get(&dev, "/dev-token", &[("host", "127.0.0.1:8000"), extra]).await;
        assert_eq!(r.status(), 404, "{extra:?}");
    }
    let page = [
        ("host", "127.0.0.1:8000"),
        ("origin", "http://127.0.0.1:8000"),
    ];
    assert_eq!(
        get(&dev, "/dev-token", &page).await.status(),
        200,
        "the dashboard itself"
    );
    // A node with a configured secret never hands one out.
    let (configured, _) = app(false).await;
    let r = get(&configured, "/dev-token", &[("host", "127.0.0.1:8000")]).await;
    assert_eq!(r.status(), 404);
}

/// `presenced demo` with its arguments; returns the child with stdout piped.
fn demo(args: &[&str], secret_env: Option<&str>) -> std::process::Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_presenced"));
    c.arg("demo")
        .args(args)
        .env_remove("PRESENCE_AUTH__JWT_SECRET")
        .env_remove("RUST_BACKTRACE")
        .env("RUST_LOG", "presenced=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(s) = secret_env {
        c.env("PRESENCE_AUTH__JWT_SECRET", s);
    }
    c.spawn().expect("the presenced binary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_users_come_online_on_a_given_node_and_leave_when_it_stops() {
    let node = Node::start(Kind::Memory, "").await;
    let url = node.url("");
    let child = demo(
        &[
            "--url",
            &url,
            "--users",
            "6",
            "--duration",
            "60s",
            "--report-every",
            "1s",
            "--json",
            "--seed",
            "1",
        ],
        Some(common::SECRET),
    );
    let admin = token("ops", "admin", None);
    // Users arrive within 3 s (given 20 s on a loaded machine); then the demo is stopped
    // as Ctrl-C would, which is a clean exit.
    let mut most = 0;
    for _ in 0..800 {
        let (s, c) = node.get("/messenger/presence/count", &admin).await;
        assert_eq!(s, 200);
        most = most.max(c["global"].as_u64().unwrap());
        if most > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(most > 0, "no demo user came online");
    let (_, page) = node.get("/messenger/presence/online", &admin).await;
    let ids: Vec<&str> = page["online_users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["user_id"].as_str().unwrap())
        .collect();
    assert!(ids.iter().all(|id| id.starts_with("demo-")), "{ids:?}");
    // Reports come every second: let at least one go out before stopping it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(lines[0]["event"], "started");
    assert_eq!(lines.last().unwrap()["event"], "stopped");
    assert!(lines.iter().any(|l| l["event"] == "report"));
    // Every demo user left: after the grace, nobody is online.
    for _ in 0..200 {
        let (_, c) = node.get("/messenger/presence/count", &admin).await;
        if c["global"] == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("demo users still online after the demo stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_refusals_say_what_to_do_and_exit_with_codes_scripts_can_trust() {
    let node = Node::start(Kind::Memory, "").await;
    let url = node.url("");
    // No secret: a usage error (2) naming the ways to give one.
    let out = demo(&["--url", &url], None).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--secret") && err.contains("PRESENCE_AUTH__JWT_SECRET"),
        "{err}"
    );
    // The wrong secret: the node refuses, and the demo says so (1).
    let out = demo(
        &[
            "--url",
            &url,
            "--secret",
            "not-the-secret-0123456789-0123456789",
        ],
        None,
    )
    .wait_with_output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    // Nobody there (1).
    let out = demo(&["--url", "http://127.0.0.1:9", "--secret", "x"], None)
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a node running there"));
    // Bad flags (2).
    let out = demo(&["--users", "0"], None).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_without_url_runs_a_node_of_its_own_with_a_dashboard_and_dev_token() {
    let mut child = demo(
        &[
            "--listen",
            "127.0.0.1:0",
            "--users",
            "3",
            "--duration",
            "60s",
        ],
        None,
    );
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("presenced listening on http://")
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    let http = reqwest::Client::new();
    let page = http.get(format!("http://{addr}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let dev: Value = http
        .get(format!("http://{addr}/dev-token"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let t = dev["token"].as_str().unwrap();
    let mut online = 0;
    for _ in 0..400 {
        let c: Value = http
            .get(format!("http://{addr}/messenger/presence/count"))
            .bearer_auth(t)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        online = c["global"].as_u64().unwrap();
        if online > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(online > 0, "the demo's own node shows nobody online");
}
