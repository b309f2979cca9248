//! `GET /messenger/presence/events`: the feed as Server-Sent Events (SPEC §6). Each event is
//! `id: <feed_id>`, `event: presence`, `data: <event JSON>`. `?after=` or `Last-Event-ID`
//! resumes; an id that aged out gets one `event: snapshot` with `"reset": true` first.
//! `scope=` (repeatable) narrows; with none, every event the token may see.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use futures::stream::{self, StreamExt};
use presence_core::{FeedId, Scope};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::hub::{Interest, Outbound};
use crate::protocol::ServerFrame;
use crate::snapshot::Start;
use crate::state::AppState;

/// The feed as Server-Sent Events (`id`, `event: presence`, `data`); resume with `after` or
/// `Last-Event-ID`.
#[utoipa::path(get, path = "/messenger/presence/events",
    params(("after" = Option<String>, Query, description = "feed id to resume after"),
        ("scope" = Option<Vec<String>>, Query, description = "global, zone:{id} or org:{id}; repeatable")),
    security(("bearer" = [])),
    responses((status = 200, description = "text/event-stream of presence events"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn events(
    State(state): State<AppState>,
    who: Caller,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (interest, after) = what_to_follow(&state, who, &headers, query.as_deref())?;
    // A stream holds a connection slot for as long as it is open, like a socket.
    let who = interest.access.principal();
    let stream_guard = state
        .sse_streams
        .open(&who.user, who.role.is_privileged())?;
    if after.is_some() {
        // A resume may read a snapshot of every scope: it pays for each.
        let cost = u32::try_from(interest.scopes.len()).unwrap_or(u32::MAX);
        state
            .rest_limiter
            .charge(&who.user, who.role.is_privileged(), cost);
    }
    let permit = state.connection_slot()?;
    // Subscribe first, then read the feed: nothing after that point can be missed.
    let sub = state
        .hub
        .subscribe(interest.clone(), state.config.limits.outbound_queue);
    let store = state.store.clone();
    let cap = state.config.limits.replay_events;
    let (first, covered) = match crate::snapshot::start(store.as_ref(), after, cap).await? {
        Start::Head(head) => (stream::empty().boxed(), head),
        // Streamed as the client reads; a store failure part-way ends the stream, and the
        // client resumes from the last id it got.
        Start::Replay { after, upto } => (
            crate::snapshot::replay(store.clone(), after, upto, interest.clone())
                .map(|e| e.map(|e| presence_event(e.feed_id, &ServerFrame::Presence(e).encode())))
                .boxed(),
            upto,
        ),
        // The present of the stream's scopes (none without `scope=`: such a client reloads
        // what it needs over REST).
        Start::Reset { head } => {
            let scopes: Vec<Scope> = interest.scopes.iter().cloned().collect();
            let snapshot =
                crate::snapshot::current(store.as_ref(), &interest.access, &scopes, &[]).await?;
            let frame = ServerFrame::Snapshot {
                id: None,
                feed_id: head,
                reset: true,
                snapshot,
            };
            let event = Event::default()
                .event("snapshot")
                .id(head.to_string())
                .data(frame.encode());
            (stream::iter([Ok(event)]).boxed(), head)
        }
    };
    // The stream ends when the token expires, by the node's clock.
    let token_left = interest.access.principal().time_left(state.now());
    let expiry = Box::pin(tokio::time::sleep(token_left));
    let live = stream::unfold(
        (
            sub,
            covered,
            state.shutdown.clone(),
            expiry,
            (permit, stream_guard),
        ),
        |(mut sub, covered, stop, mut expiry, held)| async move {
            loop {
                let d = tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = &mut expiry => return None,
                    _ = sub.slow.cancelled() => return None,
                    _ = sub.reset.cancelled() => return None,
                    d = sub.rx.recv() => d?,
                };
                // SSE never follows counts only: every item is an event.
                let Outbound::Event(d) = d else { continue };
                if d.feed_id > covered {
                    let event = presence_event(d.feed_id, &d.json);
                    return Some((event, (sub, covered, stop, expiry, held)));
                }
            }
        },
    );
    // A store failure part-way through the replay ends the whole stream (not just the
    // replay): the client resumes from the last id it got, and misses nothing.
    let all = first
        .chain(live.map(Ok))
        .take_while(|e| std::future::ready(e.is_ok()))
        .filter_map(|e| std::future::ready(e.ok()))
        .map(Ok);
    Ok(Sse::new(all).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// What a stream follows (`scope=`, checked against the caller's rights and capped) and where
/// it resumes (`after`, else `Last-Event-ID`).
fn what_to_follow(
    state: &AppState,
    who: Caller,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(Interest, Option<FeedId>), ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| ApiError::invalid_argument(e.to_string()))?;
    let mut interest = Interest::new(state.access(who.0));
    let mut after: Option<FeedId> = None;
    for (k, v) in pairs {
        match k.as_str() {
            "scope" => {
                let scope = v
                    .parse::<Scope>()
                    .map_err(|e| ApiError::invalid_argument(format!("scope {v:?}: {e}")))?;
                interest.access.scope(&scope)?;
                interest.scopes.insert(scope);
            }
            "after" => {
                after = Some(
                    v.parse()
                        .map_err(|_| ApiError::invalid_argument("after is not a feed id"))?,
                )
            }
            other => {
                return Err(ApiError::invalid_argument(format!(
                    "unknown parameter {other:?}"
                )));
            }
        }
    }
    if after.is_none()
        && let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok())
    {
        after = Some(
            last.parse()
                .map_err(|_| ApiError::invalid_argument("Last-Event-ID is not a feed id"))?,
        );
    }
    let cap = state.config.limits.subscriptions_per_connection;
    if interest.scopes.len() > cap {
        metrics::counter!("presenced_refusals_total", "reason" => "subscriptions").increment(1);
        return Err(ApiError::invalid_argument(format!(
            "at most {cap} scope parameters"
        )));
    }
    interest.all = interest.scopes.is_empty();
    Ok((interest, after))
}

fn presence_event(id: FeedId, json: &str) -> Event {
    Event::default()
        .id(id.to_string())
        .event("presence")
        .data(json)
}
