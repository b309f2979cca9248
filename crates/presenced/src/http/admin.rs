//! Admin routes (admin role): the nodes, and repair.

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
