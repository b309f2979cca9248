//! Admin routes (admin role).

use axum::extract::State;
use presence_core::time::format_rfc3339;
use serde::Serialize;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
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
