//! Admin routes (admin role): the nodes, repair, and the webhooks' delivery state.

use axum::extract::State;
use presence_core::time::format_rfc3339;
use presence_core::{RepairMode, RepairReport};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, Query};
use crate::state::AppState;

/// A live node.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct NodeAnswer {
    node_id: String,
    /// Sessions the node reported at its last renewal.
    sessions: u64,
    started_at: String,
    last_renewal: String,
}

/// Every live node on the store.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct NodesAnswer {
    nodes: Vec<NodeAnswer>,
}

/// Live nodes, their session counts and their last lease renewal.
#[utoipa::path(get, path = "/admin/nodes", security(("bearer" = [])),
    responses((status = 200, body = NodesAnswer), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn nodes(
    State(state): State<AppState>,
    who: Caller,
) -> Result<axum::Json<NodesAnswer>, ApiError> {
    state.access(who.0).administer()?;
    let nodes = state.store.nodes().await?;
    Ok(axum::Json(NodesAnswer {
        nodes: nodes
            .into_iter()
            .map(|n| NodeAnswer {
                node_id: n.node_id.to_string(),
                sessions: n.sessions,
                started_at: format_rfc3339(n.started_at),
                last_renewal: format_rfc3339(n.last_renewal),
            })
            .collect(),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct RepairParams {
    /// `true`: report what is off and change nothing.
    check: Option<bool>,
}

/// Checks every index against the records and fixes what is off (unless `check=true`):
/// `{"checked": N, "fixed": {"what": N, ...}}`, the kinds as README's "Repair" lists them.
/// Safe while nodes run. Costs Redis time in proportion to the store (README, "Repair").
#[utoipa::path(post, path = "/admin/repair", params(RepairParams), security(("bearer" = [])),
    responses((status = 200, body = presence_core::RepairReport), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn repair(
    State(state): State<AppState>,
    who: Caller,
    Query(q): Query<RepairParams>,
) -> Result<axum::Json<RepairReport>, ApiError> {
    state.access(who.0).administer()?;
    let check_only = q.check.unwrap_or(false);
    let report = state
        .store
        .repair(RepairMode {
            check_only,
            slice: None,
        })
        .await?;
    if !check_only {
        crate::loops::count_repaired(&report);
    }
    Ok(axum::Json(report))
}

/// One webhook endpoint's delivery state: its lease (from the store, the same on every node)
/// and what its holder reported at its last renewal (every third of `presence.node_lease`).
/// The secret is never shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct WebhookAnswer {
    /// From the URL: the label of its `/metrics` series.
    id: String,
    /// The URL, without a password.
    url: String,
    events: Vec<String>,
    scopes: Vec<String>,
    /// The node delivering it, `null` when none holds the lease (never claimed, or released).
    holder: Option<String>,
    /// When the holder's lease runs out unless renewed.
    lease_until: Option<String>,
    /// Every event up to this feed id was delivered (or given up on): a new holder resumes
    /// after it.
    acked_feed_id: Option<String>,
    /// The holder's report at its last renewal (counts are that node's since it started).
    #[schema(value_type = Option<Object>)]
    report: Option<crate::webhooks::worker::DeliveryReport>,
}

/// Every configured webhook endpoint.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct WebhooksAnswer {
    endpoints: Vec<WebhookAnswer>,
}

/// Webhook endpoints and their delivery state: holder, lease, acknowledged feed id, the last
/// delivery and the last error.
#[utoipa::path(get, path = "/admin/webhooks", security(("bearer" = [])),
    responses((status = 200, body = WebhooksAnswer), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn webhooks(
    State(state): State<AppState>,
    who: Caller,
) -> Result<axum::Json<WebhooksAnswer>, ApiError> {
    state.access(who.0).administer()?;
    let endpoints = crate::webhooks::endpoints(&state);
    let ids: Vec<_> = endpoints.iter().map(|e| e.id.clone()).collect();
    let leases = state.store.webhook_leases(&ids).await?;
    Ok(axum::Json(WebhooksAnswer {
        endpoints: endpoints
            .iter()
            .zip(leases)
            .map(|(e, lease)| {
                let lease = lease.as_ref();
                WebhookAnswer {
                    id: e.id.to_string(),
                    url: e.shown_url.clone(),
                    events: e.events.clone(),
                    scopes: e.scopes.clone(),
                    holder: lease.and_then(|l| l.holder.as_ref()).map(|h| h.to_string()),
                    lease_until: lease
                        .filter(|l| l.holder.is_some())
                        .map(|l| format_rfc3339(l.lease_until)),
                    acked_feed_id: lease.map(|l| l.acked.to_string()),
                    report: lease
                        .and_then(|l| l.report.as_deref())
                        .and_then(|r| serde_json::from_str(r).ok()),
                }
            })
            .collect(),
    }))
}
