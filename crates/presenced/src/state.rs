//! What every handler shares.

use std::sync::{Arc, Mutex};

use presence_core::{Store, UserId};
use presence_store::ActivityCoalescer;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::auth::{Authenticator, Principal};
use crate::config::Config;
use crate::error::ApiError;
use crate::hub::Hub;

/// Shared by every route and connection: one `Arc`, so the clone axum makes for each request
/// (and each connection keeps) is a single reference count, not one per part.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// Wraps the parts.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    /// The presence store.
    pub store: Arc<dyn Store>,
    /// Token checks.
    pub auth: Authenticator,
    /// Settings.
    pub config: Arc<Config>,
    /// Local subscribers.
    pub hub: Arc<Hub>,
    /// Sessions this node holds.
    pub sessions: Arc<crate::sessions::LocalSessions>,
    /// Activity waiting for the next flush.
    pub activity: Arc<Mutex<ActivityCoalescer>>,
    /// `max_connections` permits: one per WebSocket.
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

    /// The node's wall clock (the stores read the same `SystemClock` in production).
    pub fn now(&self) -> presence_core::Millis {
        presence_core::Clock::now_ms(&presence_core::SystemClock)
    }

    /// The user a request acts on: the token's own, or for a service token the `user_id` it
    /// names. A user token naming someone else is refused.
    pub fn acting_user(&self, who: &Principal, named: Option<UserId>) -> Result<UserId, ApiError> {
        match named {
            None => Ok(who.user.clone()),
            Some(u) if u == who.user => Ok(u),
            Some(u) if who.role.is_privileged() => Ok(u),
            Some(_) => Err(ApiError::permission_denied(
                "a user token acts only on its own presence",
            )),
        }
    }

    /// Tenant isolation: the org a caller is confined to, if any.
    pub fn confined_org(&self, who: &Principal) -> Option<presence_core::OrgId> {
        (self.config.auth.tenant_isolation && !who.role.is_privileged())
            .then(|| who.org.clone())
            .flatten()
    }
}
