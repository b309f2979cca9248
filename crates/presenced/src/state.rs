//! What every handler shares: one [`AppState`], built once per node by [`AppState::new`].

use std::sync::{Arc, Mutex};

use axum::extract::FromRef;
use presence_core::{Applied, Change, Millis, SharedClock, Store, UserId};
use presence_store::ActivityCoalescer;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::access::Access;
use crate::auth::{Authenticator, Principal};
use crate::config::Config;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::rate::{OpenPerSubject, RestLimiter};
use crate::sessions::LocalSessions;

/// A user's activity is written at most once per this many milliseconds (with its newest
/// time): presence needs `last_activity` to about a second, and auto-away is minutes away.
const ACTIVITY_WRITE_INTERVAL_MS: Millis = 1000;

/// Shared by every route and connection: one `Arc`, so the clone axum makes for each request
/// (and each connection keeps) is a single reference count, not one per part.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// A node's state: `store` and `auth` read time from `clock`, as the node does.
    pub fn new(
        config: Arc<Config>,
        auth: Authenticator,
        store: Arc<dyn Store>,
        clock: SharedClock,
        shutdown: CancellationToken,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> Self {
        let limits = &config.limits;
        let rest_limiter = Arc::new(RestLimiter::new(
            limits.rest_per_second,
            limits.rest_burst,
            clock.clone(),
        ));
        let sse_streams = OpenPerSubject::new(limits.sessions_per_user);
        Self(Arc::new(Shared {
            rest_limiter,
            sse_streams,
            connections: Arc::new(Semaphore::new(config.server.max_connections)),
            activity: Mutex::new(ActivityCoalescer::new(ACTIVITY_WRITE_INTERVAL_MS)),
            hub: Arc::new(Hub::default()),
            sessions: LocalSessions::default(),
            store,
            auth,
            clock,
            shutdown,
            metrics,
            config,
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl FromRef<AppState> for Authenticator {
    fn from_ref(state: &AppState) -> Authenticator {
        state.auth.clone()
    }
}

impl FromRef<AppState> for Arc<RestLimiter> {
    fn from_ref(state: &AppState) -> Arc<RestLimiter> {
        state.rest_limiter.clone()
    }
}

/// What every route and connection shares: the store, the node's clock and settings, its
/// subscribers, sessions, buffered activity and connection slots.
pub struct Shared {
    /// The presence store.
    pub store: Arc<dyn Store>,
    /// Token checks.
    pub auth: Authenticator,
    /// The node's clock: every "now" the service needs comes from here.
    pub clock: SharedClock,
    /// Settings.
    pub config: Arc<Config>,
    /// Local subscribers.
    pub hub: Arc<Hub>,
    /// Sessions this node holds.
    pub sessions: LocalSessions,
    /// Activity waiting for the next flush.
    pub activity: Mutex<ActivityCoalescer>,
    /// REST requests (and WebSocket connects) per token subject.
    pub rest_limiter: Arc<RestLimiter>,
    /// SSE streams open per user-token subject (at most `sessions_per_user`).
    pub sse_streams: OpenPerSubject,
    /// `max_connections` permits: one per WebSocket or SSE stream.
    pub connections: Arc<Semaphore>,
    /// Cancelled on shutdown.
    pub shutdown: CancellationToken,
    /// Renders `/metrics`.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl Shared {
    /// Records activity for the next flush (no store call).
    pub fn record_activity(&self, user: &UserId) {
        let now = self.now();
        self.activity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(user, now);
    }

    /// The node's clock.
    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    /// What `who` may see and do on this node.
    pub fn access(&self, who: Principal) -> Access {
        Access::new(who, self.config.auth.tenant_isolation, self.clock.clone())
    }

    /// One of `max_connections`, held by a WebSocket or an SSE stream for its life; 503 when
    /// the node holds its maximum.
    pub fn connection_slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.connections.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("presenced_refusals_total", "reason" => "max_connections")
                .increment(1);
            ApiError::unavailable("this node holds its maximum of connections; try another")
        })
    }

    /// Applies a user's change, and remembers a move for a later re-assert of this node's
    /// sessions of the user (which puts them where they are now).
    /// A custom status is checked here (SPEC §3: text ≤ 140 characters, emoji ≤ 16 bytes,
    /// `expires_at` in the future by the node's clock), for REST and sockets alike.
    pub async fn apply_change(&self, user: &UserId, change: Change) -> Result<Applied, ApiError> {
        if let Change::SetCustomStatus(status) = &change
            && let Some(problem) = status.problem(self.now())
        {
            return Err(ApiError::invalid_argument(problem));
        }
        let moved = match &change {
            Change::SetZone(z) => Some((Some(z.clone()), None)),
            Change::SetOrg(o) => Some((None, Some(o.clone()))),
            _ => None,
        };
        let applied = self.store.apply(user, change).await?;
        if let Some((zone, org)) = moved {
            self.sessions.moved(user, zone, org);
        }
        Ok(applied)
    }
}
