//! Signed webhooks (SPEC §9 `[webhooks]`): every configured endpoint gets the feed's events
//! it asked for, as a `POST` of the event JSON signed the Standard Webhooks way.
//!
//! - One **lease per endpoint** in the store ([`presence_core::Store::claim_webhook`]): the
//!   node holding it delivers that endpoint's events, in feed order, and acknowledges how far
//!   it got; the others stand by. A consumer group would split the feed among nodes and lose
//!   per-user order; a lease keeps one deliverer per endpoint. A node that dies stops
//!   renewing; after its lease (`presence.node_lease`) another node claims the endpoint and
//!   resumes after the last acknowledged id — at least once: what was delivered but not yet
//!   acknowledged is delivered again.
//! - Each endpoint runs as its own task ([`worker`]), so one that is slow or down holds back
//!   no other.
//! - An endpoint is an onlooker outside every org ([`Access::outsider`]): it gets each event
//!   as strangers see it, through the one access policy.
//! - [`sign`]: the signature; [`retry`]: what an outcome means, and the backoff.

pub mod retry;
pub mod sign;
pub mod worker;

use std::collections::HashSet;
use std::sync::Arc;

use presence_core::{EndpointId, PresenceEvent, Scope, UserId};
use reqwest::Url;
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;

use crate::access::Access;
use crate::config::WebhookEndpointConfig;
use crate::hub::Interest;
use crate::protocol::ServerFrame;
use crate::state::AppState;

pub use sign::decode_secret;

/// The event types there are: only `presence` (typing is not in the feed).
pub const EVENT_TYPES: [&str; 1] = ["presence"];

/// A configured endpoint URL, or what is wrong with it.
pub fn parse_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(parsed)
}

/// An endpoint's id, the same on every node: the first 16 hex digits of the SHA-256 of its
/// URL (as parsed, so `HTTP://Host` and `http://host` are one endpoint).
pub fn endpoint_id(url: &Url) -> EndpointId {
    let digest = sha2::Sha256::digest(url.as_str().as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    EndpointId::new(hex).expect("hex digits are an id")
}

/// The URL as logs, metrics and the admin route show it: without a password.
pub fn shown_url(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

/// Checks an endpoint's `events`: at least one, each an event type there is.
pub fn parse_events(events: &[String]) -> Result<(), String> {
    if events.is_empty() {
        return Err("must name at least one event type (\"presence\")".into());
    }
    for e in events {
        if !EVENT_TYPES.contains(&e.as_str()) {
            return Err(format!(
                "unknown event type {e:?}; the only one is \"presence\" (typing is not in the feed)"
            ));
        }
    }
    Ok(())
}

/// An endpoint's `scopes`: the scopes (`global`, `zone:…`, `org:…`) and the users (`user:…`)
/// it follows, as a subscription would.
pub fn parse_scopes(scopes: &[String]) -> Result<(HashSet<Scope>, HashSet<UserId>), String> {
    let (mut set, mut users) = (HashSet::new(), HashSet::new());
    for s in scopes {
        if let Some(u) = s.strip_prefix("user:") {
            users.insert(UserId::new(u).map_err(|e| format!("scope {s:?}: {e}"))?);
        } else {
            set.insert(
                s.parse::<Scope>()
                    .map_err(|e| format!("scope {s:?}: {e} or user:{{id}}"))?,
            );
        }
    }
    Ok((set, users))
}

/// One endpoint, ready to deliver to. Its secret is only ever used to sign.
pub struct Endpoint {
    /// Its id (from the URL).
    pub id: EndpointId,
    /// Where to POST.
    pub url: Url,
    /// The URL without a password, for logs and the admin route.
    pub shown_url: String,
    /// The secret's key bytes.
    key: Vec<u8>,
    /// `events` as configured.
    pub events: Vec<String>,
    /// `scopes` as configured.
    pub scopes: Vec<String>,
    /// What it follows, and as whom it sees: the hub's matching and the access policy.
    interest: Interest,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("url", &self.shown_url)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// The endpoint a validated configuration describes; events are seen as `access` (an
    /// outsider's) sees them.
    pub fn new(config: &WebhookEndpointConfig, access: Access) -> Result<Self, String> {
        let url = parse_url(&config.url)?;
        let key = decode_secret(&config.secret)?;
        parse_events(&config.events)?;
        let (scopes, users) = parse_scopes(&config.scopes)?;
        let mut interest = Interest::new(access);
        interest.all = scopes.is_empty() && users.is_empty();
        interest.scopes = scopes;
        interest.users = users;
        Ok(Self {
            id: endpoint_id(&url),
            shown_url: shown_url(&url),
            url,
            key,
            events: config.events.clone(),
            scopes: config.scopes.clone(),
            interest,
        })
    }

    /// The body this endpoint gets for `e` — the event JSON the SSE route sends, as an
    /// outsider sees the change — or `None` when the event is not for it (another scope, or a
    /// change it does not see).
    pub fn body(&self, e: &PresenceEvent) -> Option<String> {
        if !self.events.iter().any(|t| t == "presence") {
            return None;
        }
        let sight = self.interest.sight(e);
        let seen = self.interest.access.show(e.clone(), sight)?;
        Some(ServerFrame::Presence(seen).encode())
    }

    /// What the endpoint follows and as whom it sees, for the hub to ring its worker.
    pub fn interest(&self) -> Interest {
        self.interest.clone()
    }

    /// The `webhook-signature` of `body` sent as `id` at `timestamp` (unix seconds).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        sign::signature(&self.key, id, timestamp, body)
    }
}

/// The configured endpoints, as every node builds them.
pub fn endpoints(state: &AppState) -> Vec<Arc<Endpoint>> {
    state
        .config
        .webhooks
        .endpoints
        .iter()
        .map(|c| {
            let access = Access::outsider(state.clock.clone());
            Arc::new(Endpoint::new(c, access).expect("validated with the configuration"))
        })
        .collect()
}

/// The node's webhook senders, made before the node serves (see [`Webhooks::start`]).
pub struct Webhooks {
    workers: Vec<worker::Worker>,
}

impl Webhooks {
    /// Builds a worker per endpoint and tries each endpoint's lease once, before the node
    /// serves: an endpoint claimed for the first time starts at the feed's head, so the
    /// changes the node makes once it serves are delivered. (A store that does not answer
    /// yet is tried again by the worker.)
    pub async fn start(state: &AppState) -> anyhow::Result<Self> {
        let endpoints = endpoints(state);
        let mut workers = Vec::with_capacity(endpoints.len());
        if !endpoints.is_empty() {
            let client = worker::http_client(&state.config.webhooks)?;
            for e in endpoints {
                let mut w = worker::Worker::new(state.clone(), e, client.clone());
                w.first_claim().await;
                workers.push(w);
            }
        }
        Ok(Self { workers })
    }

    /// Runs every endpoint's worker until `stop`; a worker that holds a lease then
    /// acknowledges what it delivered and releases it, so another node takes over at once.
    pub async fn run(self, stop: CancellationToken) {
        let mut set = tokio::task::JoinSet::new();
        for w in self.workers {
            set.spawn(w.run(stop.clone()));
        }
        if set.is_empty() {
            stop.cancelled().await;
            return;
        }
        // A worker ends only at `stop`; one that ends early (a panic) ends this loop, and the
        // node's supervisor shuts the node down.
        while let Some(done) = set.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "a webhook worker failed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_events_and_scopes_are_checked() {
        assert!(parse_url("https://example.com/hook").is_ok());
        assert!(parse_url("http://127.0.0.1:9/x").is_ok());
        assert!(
            parse_url("ftp://example.com/")
                .unwrap_err()
                .contains("http")
        );
        assert!(parse_url("example.com/hook").unwrap_err().contains("URL"));
        assert!(parse_events(&["presence".into()]).is_ok());
        assert!(parse_events(&[]).is_err());
        assert!(
            parse_events(&["typing".into()])
                .unwrap_err()
                .contains("typing")
        );
        let (scopes, users) = parse_scopes(&[
            "global".into(),
            "zone:10".into(),
            "org:100".into(),
            "user:123".into(),
        ])
        .unwrap();
        assert_eq!(scopes.len(), 3);
        assert!(users.contains(&UserId::new("123").unwrap()));
        assert!(parse_scopes(&["room:1".into()]).is_err());
        assert!(parse_scopes(&["user:".into()]).is_err());
        assert!(parse_scopes(&["zone:a|b".into()]).is_err());
    }

    #[test]
    fn an_endpoint_id_is_stable_and_hides_nothing_it_should_not() {
        let a = endpoint_id(&parse_url("HTTP://Example.com/hook").unwrap());
        let b = endpoint_id(&parse_url("http://example.com/hook").unwrap());
        assert_eq!(a, b);
        assert_eq!(a.as_str().len(), 16);
        assert_ne!(
            a,
            endpoint_id(&parse_url("http://example.com/other").unwrap())
        );
        let shown = shown_url(&parse_url("https://u:pw@example.com/h").unwrap());
        assert!(!shown.contains("pw"), "{shown}");
    }
}
