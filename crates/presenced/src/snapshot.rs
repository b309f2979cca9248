//! Snapshots and replays shared by the WebSocket gateway and the SSE feed.

use std::sync::Arc;

use futures::stream::{self, Stream, TryStreamExt};
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

/// Where a new subscriber's events start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// No `after`: live events from the feed's head on.
    Head(FeedId),
    /// Resume: the events in (`after`, `upto`] are replayed, then live ones after `upto`.
    Replay {
        /// The id resumed from.
        after: FeedId,
        /// The feed's position when the resume was read.
        upto: FeedId,
    },
    /// `after` aged out, came from before a data loss, or is too far back
    /// (`replay_events`): a snapshot with `reset: true`, then live events from `head`.
    Reset {
        /// The feed's head.
        head: FeedId,
    },
}

/// Where a subscriber resuming from `after` (or not resuming) starts, with at most `cap`
/// feed entries replayed.
pub async fn start(
    store: &dyn Store,
    after: Option<FeedId>,
    cap: usize,
) -> Result<Start, ApiError> {
    Ok(match after {
        None => Start::Head(store.feed_head().await?),
        Some(after) => match replay_end(store, after, cap).await? {
            Some(upto) => Start::Replay { after, upto },
            None => Start::Reset {
                head: store.feed_head().await?,
            },
        },
    })
}

/// Feed entries one read takes while replaying.
const REPLAY_CHUNK: usize = 1000;

/// Where a resume from `after` ends (the feed's position now), or `None` when it must answer
/// a fresh snapshot with `reset: true` instead: `after` aged out of the feed, or more than
/// `cap` feed entries came after it. The cap counts entries read, matching or not, because
/// that is what a resume costs the store; a client that was away that long is better served
/// by a snapshot. Reads a chunk at a time and keeps none of it.
async fn replay_end(
    store: &dyn Store,
    after: FeedId,
    cap: usize,
) -> Result<Option<FeedId>, ApiError> {
    let mut pos = after;
    let mut read_so_far = 0;
    loop {
        let read = store.read_feed(pos, REPLAY_CHUNK.min(cap + 1)).await?;
        if read.reset {
            return Ok(None);
        }
        if read.last_id.is_none() {
            return Ok(Some(pos));
        }
        read_so_far += read.events.len() + read.skipped as usize;
        if read_so_far > cap {
            return Ok(None);
        }
        pos = read.next_after(pos);
    }
}

/// The events of `interest` in (`after`, `upto`], in feed order, read a chunk at a time as
/// the consumer takes them: a replay is streamed, never held whole.
pub fn replay(
    store: Arc<dyn Store>,
    after: FeedId,
    upto: FeedId,
    interest: Interest,
) -> impl Stream<Item = Result<PresenceEvent, ApiError>> + Send {
    let start = (store, interest, after);
    stream::try_unfold(start, move |(store, interest, pos)| async move {
        if pos >= upto {
            return Ok::<_, ApiError>(None);
        }
        let read = store.read_feed(pos, REPLAY_CHUNK).await?;
        if read.reset {
            // Trimmed (or lost) under a slow replay: what is left cannot be made whole.
            return Err(ApiError::unavailable(
                "the feed moved on during the replay; resume again",
            ));
        }
        if read.last_id.is_none() {
            return Ok(None);
        }
        // Past undecodable entries too (the store skipped and logged them).
        let last = read.next_after(pos);
        let chunk: Vec<PresenceEvent> = read
            .events
            .into_iter()
            .filter(|e| e.feed_id <= upto && interest.matches(e))
            .filter_map(|e| interest.access.event_as_seen(e))
            .collect();
        Ok(Some((chunk, (store, interest, last))))
    })
    .map_ok(|chunk| stream::iter(chunk.into_iter().map(Ok)))
    .try_flatten()
}
