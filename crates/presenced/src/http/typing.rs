//! `GET /messenger/presence/typing/{conversation_id}`: who is typing in a conversation now
//! (SPEC §6), read from the store, so any node answers for typers on every node.

use axum::extract::State;
use presence_core::ConversationId;
use serde::Serialize;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, Path};
use crate::state::AppState;

/// Who is typing in a conversation now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TypingAnswer {
    conversation_id: String,
    /// User ids, in id order; entries live `presence.typing_ttl` after their last written
    /// `typing.start` unless stopped.
    users: Vec<String>,
}

/// Users typing in the conversation now (as the caller may see them: with tenant isolation,
/// a confined token lists typers of its own org only).
#[utoipa::path(get, path = "/messenger/presence/typing/{conversation_id}", params(("conversation_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = TypingAnswer), (status = 400, description = "invalid_argument", body = ErrorBody), (status = 401, description = "unauthenticated", body = ErrorBody), (status = 503, description = "unavailable", body = ErrorBody)))]
pub(crate) async fn typing_now(
    State(state): State<AppState>,
    who: Caller,
    Path(conversation_id): Path<String>,
) -> Result<axum::Json<TypingAnswer>, ApiError> {
    let conversation: ConversationId = conversation_id.parse()?;
    let access = state.access(who.0);
    let users = state
        .store
        .typing_now(&conversation)
        .await?
        .into_iter()
        .filter(|t| access.sees_typing(t.org.as_ref()))
        .map(|t| t.user.to_string())
        .collect();
    Ok(axum::Json(TypingAnswer {
        conversation_id: conversation.to_string(),
        users,
    }))
}
