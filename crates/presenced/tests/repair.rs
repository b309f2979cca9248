//! Repair from outside: `presenced repair` (the binary, against a real Redis, beside a running
//! node), `POST /admin/repair`, and the periodic pass of a node.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

async fn within<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test timed out")
}

fn unique_prefix(tag: &str) -> String {
    user(tag)
}

async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Takes an online user out of `online:global`, as `redis-cli ZREM` would: damage the nodes'
/// own sweep does not mend (it removes stale members, and this one is missing).
async fn unlist(prefix: &str, user: &str) {
    let removed: i64 = redis::cmd("ZREM")
        .arg(format!("{prefix}:online:global"))
        .arg(user)
        .query_async(&mut raw().await)
        .await
        .unwrap();
    assert_eq!(removed, 1);
}

const MISSING: &str = "online_members_missing";

/// Runs `presenced repair` with `args`; its exit code and its stdout as JSON (`Null` when it
/// printed none), and its stderr.
fn cli(config: &std::path::Path, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_presenced"))
        .arg("repair")
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("PRESENCE_STORE__KIND")
        .output()
        .expect("the presenced binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(stdout.trim()).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config_file(tag: &str, toml: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", user(tag)));
    std::fs::write(&path, toml).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_checks_and_repairs_redis_beside_a_running_node() {
    within(async {
        let prefix = unique_prefix("repaircli");
        let node = Node::start_on(Kind::Redis, Some(&prefix), "").await;
        let u = user("u");
        let _client = node.connect(&token(&u, "user", None), "&zone_id=3").await;
        let config = config_file(
            "repair",
            &format!(
                "[store]\nkind = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"{prefix}:\"\n",
                redis_url()
            ),
        );
        let (code, report, err) = cli(&config, &["--check"]);
        assert_eq!((code, &report["fixed"]), (0, &serde_json::json!({})), "{report} {err}");
        assert!(report["checked"].as_u64().unwrap() >= 1, "{report}");
        unlist(&prefix, &u).await;
        for _ in 0..2 {
            let (code, report, _) = cli(&config, &["--check"]);
            assert_eq!(code, 1, "--check exits 1 when something is off");
            assert_eq!(report["fixed"], serde_json::json!({MISSING: 1}));
        }
        let (code, report, _) = cli(&config, &[]);
        assert_eq!((code, &report["fixed"]), (0, &serde_json::json!({MISSING: 1})));
        let (code, report, _) = cli(&config, &["--check"]);
        assert_eq!((code, &report["fixed"]), (0, &serde_json::json!({})));
        // The repair was never a node: the one node is the only one listed, and the user
        // it holds is online as before.
        let admin = token("ops", "admin", None);
        let (_, nodes) = node.get("/admin/nodes", &admin).await;
        assert_eq!(nodes["nodes"].as_array().unwrap().len(), 1, "{nodes}");
        let (_, count) = node.get("/messenger/presence/count?zone_id=3", &admin).await;
        assert_eq!((&count["global"], &count["zone"]), (&1.into(), &1.into()), "{count}");
        // An unreachable Redis is an error, with no report.
        let bad = config_file(
            "repair-bad",
            "[store]\nkind = \"redis\"\nredis_url = \"redis://127.0.0.1:1\"\ncommand_timeout = \"300ms\"\n",
        );
        let (code, report, err) = cli(&bad, &["--check"]);
        assert_ne!(code, 0, "{err}");
        assert_eq!(report, Value::Null);
        let _ = std::fs::remove_file(config);
        let _ = std::fs::remove_file(bad);
    })
    .await
}

#[test]
fn the_cli_on_the_memory_store_points_at_the_route() {
    let config = config_file("repair-mem", "[store]\nkind = \"memory\"\n");
    let (code, report, err) = cli(&config, &[]);
    assert_ne!(code, 0);
    assert_eq!(report, Value::Null);
    assert!(err.contains("POST /admin/repair"), "{err}");
    let _ = std::fs::remove_file(config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_is_for_admins_and_repairs_both_stores() {
    within(async {
        for kind in [Kind::Memory, Kind::Redis] {
            let prefix = unique_prefix("repairroute");
            let node = Node::start_on(kind, Some(&prefix), "").await;
            let u = user("u");
            let _client = node.connect(&token(&u, "user", None), "").await;
            let post = |path: &'static str, t: String| {
                let node = &node;
                async move { node.send(reqwest::Method::POST, path, &t, None).await }
            };
            for role in ["user", "service"] {
                let (s, e) = post("/admin/repair", token(&u, role, None)).await;
                assert_eq!(
                    (s, e["error"]["code"].as_str()),
                    (403, Some("permission_denied"))
                );
            }
            let admin = token("ops", "admin", None);
            let (s, r) = post("/admin/repair?check=true", admin.clone()).await;
            assert_eq!((s, &r["fixed"]), (200, &serde_json::json!({})), "{r}");
            assert!(r["checked"].as_u64().unwrap() >= 1, "{r}");
            let (s, e) = post("/admin/repair?check=maybe", admin.clone()).await;
            assert_eq!(
                (s, e["error"]["code"].as_str()),
                (400, Some("invalid_argument"))
            );
            if kind == Kind::Redis {
                unlist(&prefix, &u).await;
                let (_, r) = post("/admin/repair?check=true", admin.clone()).await;
                assert_eq!(r["fixed"], serde_json::json!({MISSING: 1}));
                let (s, r) = post("/admin/repair", admin.clone()).await;
                assert_eq!((s, &r["fixed"]), (200, &serde_json::json!({MISSING: 1})));
                let metrics = node.metrics().await;
                assert!(
                    metrics.contains(
                        "presenced_repair_fixed_total{what=\"online_members_missing\"} 1"
                    ),
                    "{metrics}"
                );
            }
            let (_, r) = post("/admin/repair", admin.clone()).await;
            assert_eq!(r["fixed"], serde_json::json!({}));
            let doc: Value = node
                .http
                .get(node.url("/openapi.json"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let route = &doc["paths"]["/admin/repair"]["post"];
            assert_eq!(route["parameters"][0]["name"], "check", "{route}");
            assert!(doc["components"]["schemas"]["RepairReport"].is_object());
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_pass_fixes_damage_on_its_own_and_counts_it() {
    within(async {
        let prefix = unique_prefix("repairloop");
        let node = Node::start_on(
            Kind::Redis,
            Some(&prefix),
            "[presence]\nrepair_interval = \"100ms\"\nrepair_batch = 200\n",
        )
        .await;
        let u = user("u");
        let _client = node.connect(&token(&u, "user", None), "").await;
        unlist(&prefix, &u).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let metrics = node.metrics().await;
            if metrics.contains("presenced_repair_fixed_total{what=\"online_members_missing\"} 1") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the periodic pass never fixed the list"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let admin = token("ops", "admin", None);
        let (_, count) = node.get("/messenger/presence/count", &admin).await;
        assert_eq!(count["global"], 1, "{count}");
    })
    .await
}
