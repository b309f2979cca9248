//! The browser side of a node: the dashboard at `/` and the JavaScript client at
//! `/client.js` (with its TypeScript declarations at `/client.d.ts`), embedded in the binary
//! from `assets/` — no build step, nothing read from disk at run time.
//!
//! Caching: every asset carries a strong `ETag` made from a hash of its bytes, computed at
//! compile time, and `Cache-Control: no-cache`, so a browser keeps its copy but asks again
//! each time and gets `304 Not Modified` until a new build changes the file. (A long
//! `max-age` would be cheaper, but `/client.js` is a fixed URL apps import: after an upgrade
//! they must get the new client at once, not after the cache runs out.)
//!
//! `/client.js` and `/client.d.ts` may be loaded from any origin (`Access-Control-Allow-Origin:
//! *`: an app on another origin imports the module; nothing secret is in it). The dashboard
//! gets a strict `Content-Security-Policy`: scripts, styles and connections to this origin only.
//!
//! `GET /dev-token`: a node that made up its own secret (no secret configured: it binds to
//! loopback only) hands an admin token to the dashboard, so a newcomer does not copy one from
//! the terminal. It answers only on such a node and only to a request whose `Host` names a
//! loopback address (so a page of another site that resolves its own name to 127.0.0.1 — DNS
//! rebinding — cannot read it; and it sends no CORS header, so no other origin can read it
//! either). Everywhere else it is 404, like a route that does not exist.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use presence_core::UserId;
use serde::Serialize;

use crate::auth::Role;
use crate::error::ApiError;
use crate::state::AppState;

/// The user the dev token is issued to: the dashboard's own (invisible) session.
pub const DEV_TOKEN_USER: &str = "dashboard";
/// How long a dev token lives; the dashboard fetches a fresh one when it expires.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

/// One embedded file and how it is served.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: &'static str,
}

/// FNV-1a, 64 bits: enough to tell builds of a file apart; run by the compiler.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// `"` + 16 hex digits + `"`, built at compile time.
const fn etag_of(bytes: &[u8]) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let h = fnv1a(bytes);
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = HEX[((h >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

macro_rules! asset {
    ($file:literal, $content_type:literal) => {{
        const BODY: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/", $file));
        const TAG: [u8; 18] = etag_of(BODY);
        Asset {
            body: BODY,
            content_type: $content_type,
            etag: match std::str::from_utf8(&TAG) {
                Ok(s) => s,
                Err(_) => unreachable!(),
            },
        }
    }};
}

static INDEX_HTML: Asset = asset!("index.html", "text/html; charset=utf-8");
static DASHBOARD_JS: Asset = asset!("dashboard.js", "text/javascript; charset=utf-8");
static DASHBOARD_CSS: Asset = asset!("dashboard.css", "text/css; charset=utf-8");
static CLIENT_JS: Asset = asset!("client.js", "text/javascript; charset=utf-8");
static CLIENT_DTS: Asset = asset!("client.d.ts", "application/typescript; charset=utf-8");

/// The dashboard's policy: nothing inline, nothing from elsewhere. `connect-src` names the
/// WebSocket origin explicitly too, for browsers whose `'self'` does not cover `ws:`.
fn content_security_policy(headers: &HeaderMap) -> String {
    let ws = loopback_or_named_host(headers)
        .map(|h| format!(" ws://{h} wss://{h}"))
        .unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'{ws}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// The request's `Host` when it is a plain `host[:port]` (nothing that could smuggle another
/// directive into a header built from it).
fn loopback_or_named_host(headers: &HeaderMap) -> Option<&str> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let plain = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    plain.then_some(host)
}

/// Whether `Host` names this machine's loopback: `localhost`, `127.x.x.x` or `[::1]`, with
/// any port.
fn host_is_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = loopback_or_named_host(headers) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the request carries what a reverse proxy adds, or comes from a page elsewhere: a
/// proxy in front of a development node forwards `Host: 127.0.0.1`, so the `Host` check alone
/// would hand the outside world an admin token.
fn came_through_a_proxy(headers: &HeaderMap) -> bool {
    let proxied = [
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-real-ip",
        "via",
    ]
    .iter()
    .any(|h| headers.contains_key(*h));
    let foreign_origin = headers.get(header::ORIGIN).is_some_and(|o| {
        let mut m = HeaderMap::new();
        let host = o
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://").map(|(_, h)| h.to_string()));
        match host.and_then(|h| HeaderValue::from_str(&h).ok()) {
            Some(v) => {
                m.insert(header::HOST, v);
                !host_is_loopback(&m)
            }
            None => true,
        }
    });
    proxied || foreign_origin
}

fn serve(asset: &Asset, request: &HeaderMap, extra: &[(header::HeaderName, String)]) -> Response {
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == asset.etag || t.trim() == "*")
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = asset.body.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        r
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    for (name, value) in extra {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name.clone(), v);
        }
    }
    response
}

fn page(asset: &'static Asset) -> impl Fn(HeaderMap) -> std::future::Ready<Response> + Clone {
    move |headers: HeaderMap| {
        std::future::ready(serve(
            asset,
            &headers,
            &[
                (
                    header::CONTENT_SECURITY_POLICY,
                    content_security_policy(&headers),
                ),
                (header::REFERRER_POLICY, "no-referrer".into()),
            ],
        ))
    }
}

fn module(asset: &'static Asset) -> impl Fn(HeaderMap) -> std::future::Ready<Response> + Clone {
    move |headers: HeaderMap| {
        let mut extra = vec![(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".to_string())];
        if std::ptr::eq(asset, &CLIENT_JS) {
            // Deno (and tools that follow it) find the declarations here.
            extra.push((
                header::HeaderName::from_static("x-typescript-types"),
                "/client.d.ts".into(),
            ));
        }
        std::future::ready(serve(asset, &headers, &extra))
    }
}

/// What `GET /dev-token` answers.
#[derive(Debug, Serialize)]
struct DevToken {
    token: String,
    user_id: &'static str,
    role: &'static str,
    expires_in_s: u64,
}

async fn dev_token(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !state.config.auth.generated_dev_secret
        || !host_is_loopback(&headers)
        || came_through_a_proxy(&headers)
    {
        return ApiError::not_found("no such route").into_response();
    }
    let user = UserId::new(DEV_TOKEN_USER).expect("a valid user id");
    let Some(token) = state.auth.issue(&user, None, Role::Admin, DEV_TOKEN_TTL) else {
        return ApiError::not_found("no such route").into_response();
    };
    let mut r = axum::Json(DevToken {
        token,
        user_id: DEV_TOKEN_USER,
        role: "admin",
        expires_in_s: DEV_TOKEN_TTL.as_secs(),
    })
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The dashboard, its script and style, the client module and its declarations, and the
/// loopback-only dev token.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(page(&INDEX_HTML)))
        .route("/index.html", get(page(&INDEX_HTML)))
        .route("/dashboard.js", get(module(&DASHBOARD_JS)))
        .route("/dashboard.css", get(module(&DASHBOARD_CSS)))
        .route("/client.js", get(module(&CLIENT_JS)))
        .route("/client.d.ts", get(module(&CLIENT_DTS)))
        .route("/dev-token", get(dev_token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, HeaderValue::from_str(h).unwrap());
        m
    }

    #[test]
    fn only_loopback_hosts_count_as_loopback() {
        for h in [
            "127.0.0.1:8000",
            "localhost:8000",
            "LOCALHOST",
            "[::1]:8000",
            "127.1.2.3",
        ] {
            assert!(host_is_loopback(&host(h)), "{h}");
        }
        for h in [
            "example.com",
            "evil.example:8000",
            "10.0.0.1:8000",
            "127.0.0.1.evil.example",
            "localhost.evil.example:80",
            "[::2]:8000",
            "127.0.0.1:8000; script-src *",
        ] {
            assert!(!host_is_loopback(&host(h)), "{h}");
        }
        assert!(!host_is_loopback(&HeaderMap::new()));
    }

    #[test]
    fn etags_differ_with_the_bytes_and_are_quoted() {
        assert_ne!(etag_of(b"a"), etag_of(b"b"));
        let t = CLIENT_JS.etag;
        assert!(
            t.starts_with('"') && t.ends_with('"') && t.len() == 18,
            "{t}"
        );
        assert_ne!(CLIENT_JS.etag, INDEX_HTML.etag);
    }
}
