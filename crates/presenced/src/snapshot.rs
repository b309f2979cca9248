//! Snapshots and replays shared by the WebSocket gateway and the SSE feed.

use std::collections::HashMap;

use presence_core::{FeedId, ListQuery, OrgId, PresenceEvent, PresenceView, Scope, Store, UserId};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::hub::Interest;

/// Per scope: count, first page of users, next cursor; per user: view or null. `org` hides
/// users of other orgs (tenant isolation).
pub async fn current(
    store: &dyn Store,
    scopes: &[Scope],
    users: &[UserId],
    org: Option<&OrgId>,
) -> Result<(HashMap<String, Value>, HashMap<String, Value>), ApiError> {
    let visible = |v: PresenceView| match org {
        Some(o) if v.org_id.as_ref() != Some(o) => None,
        _ => Some(v),
    };
    let mut by_scope = HashMap::new();
    for scope in scopes {
        let page = store
            .list(
                scope,
                &ListQuery {
                    limit: 100,
                    cursor: None,
                    status: None,
                },
            )
            .await?;
        let list: Vec<_> = page.users.into_iter().filter_map(visible).collect();
        by_scope.insert(
            scope.to_string(),
            json!({"count": page.count, "users": list, "next_cursor": page.next_cursor.map(|c| c.encode())}),
        );
    }
    let views = store.views(users).await?;
    let by_user = users
        .iter()
        .zip(views)
        .map(|(u, v)| {
            (
                u.to_string(),
                serde_json::to_value(v.and_then(visible)).unwrap_or(Value::Null),
            )
        })
        .collect();
    Ok((by_scope, by_user))
}

/// What a resume from `after` found: the matching events in order and where reading stopped,
/// or `None` when `after` aged out of the feed (the reader needs a fresh snapshot).
pub async fn replay(
    store: &dyn Store,
    after: FeedId,
    interest: &Interest,
) -> Result<Option<(Vec<PresenceEvent>, FeedId)>, ApiError> {
    let mut events = Vec::new();
    let mut pos = after;
    loop {
        let read = store.read_feed(pos, 1000).await?;
        if read.reset {
            return Ok(None);
        }
        let Some(last) = read.events.last() else {
            break;
        };
        pos = last.feed_id;
        events.extend(read.events.into_iter().filter(|e| interest.matches(e)));
    }
    Ok(Some((events, pos)))
}
