//! Snapshots and replays shared by the WebSocket gateway and the SSE feed.

use presence_core::{FeedId, ListQuery, PresenceEvent, Scope, Store, UserId};

use crate::access::Access;
use crate::error::ApiError;
use crate::hub::Interest;
use crate::protocol::{ScopeSnapshot, Snapshot};

/// How many users a snapshot shows per scope; the rest are paged over REST.
const SNAPSHOT_PAGE: usize = 100;

/// The present as `access` may see it: per scope its count, first page and next cursor; per
/// user the view or `null`.
pub async fn current(
    store: &dyn Store,
    access: &Access,
    scopes: &[Scope],
    users: &[UserId],
) -> Result<Snapshot, ApiError> {
    let mut snapshot = Snapshot::default();
    for asked in scopes {
        let scope = access.scope(asked)?;
        let query = ListQuery {
            limit: SNAPSHOT_PAGE,
            cursor: None,
            status: None,
        };
        let page = store.list(&scope, &query).await?;
        snapshot.scopes.insert(
            asked.to_string(),
            ScopeSnapshot {
                count: page.count,
                users: page
                    .users
                    .into_iter()
                    .filter_map(|v| access.view(v))
                    .collect(),
                next_cursor: page.next_cursor.map(|c| c.encode()),
            },
        );
    }
    let views = store.views(users).await?;
    for (u, v) in users.iter().zip(views) {
        snapshot
            .users
            .insert(u.to_string(), v.and_then(|v| access.view(v)));
    }
    Ok(snapshot)
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
