//! One connection's life: open its session, send `connected`, serve it, close its session.

use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes};
use futures::{Sink, SinkExt, Stream, StreamExt};
use presence_core::{
    DeviceKind, FeedId, OpenSession, OrgId, SessionId, StoreError, TransitionError, ZoneId,
};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::close::CloseReason;
use super::rate_limit::{RateLimit, Verdict};
use crate::access::Access;
use crate::error::ApiError;
use crate::hub::{Delivered, Interest, Outbound, Subscription};
use crate::protocol::ServerFrame;
use crate::sessions::EndSignal;
use crate::state::AppState;
use crate::typing::SessionTyping;

/// An upgrade request that passed every check: who connects, where to, and the connection
/// slot it holds for as long as it lives.
#[derive(Debug)]
pub struct CheckedUpgrade {
    /// The caller's rights.
    pub access: Access,
    /// `zone_id`, if given.
    pub zone: Option<ZoneId>,
    /// `org_id`, if given.
    pub org: Option<OrgId>,
    /// `device` (default `web`).
    pub device: DeviceKind,
    /// `invisible=true`: the user is invisible from this open on (a client coming back
    /// invisible never shows a moment online).
    pub invisible: bool,
    /// One of `max_connections`, released when the connection ends.
    pub permit: OwnedSemaphorePermit,
}

/// Why reading the socket failed, as far as the connection cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// A message over the socket's size limit (close 1009).
    TooBig,
    /// Anything else: the connection is gone.
    Broken,
}

impl ReadError {
    /// Classifies an axum WebSocket error by the tungstenite error inside it.
    pub fn from_axum(e: axum::Error) -> Self {
        match e.into_inner().downcast::<tungstenite::Error>() {
            Ok(e) if matches!(*e, tungstenite::Error::Capacity(_)) => Self::TooBig,
            _ => Self::Broken,
        }
    }
}

/// An open connection's state.
pub(super) struct Connection {
    pub(super) state: AppState,
    pub(super) access: Access,
    pub(super) sub: Option<Subscription>,
    pub(super) interest: Interest,
    /// After a subscribe: events up to this feed id that the previous interest did not ask
    /// for are covered by the snapshot (or replay) and dropped.
    pub(super) covered: Option<(FeedId, Interest)>,
    /// A resume's replay, streamed right after its snapshot is sent.
    pub(super) replay: Option<Replay>,
    /// Frames' worth of rate limit the frame just handled costs beyond itself.
    pub(super) extra_cost: u32,
    /// The conversations this connection is typing in.
    pub(super) typing: SessionTyping,
}

/// The events a resume replays: those of `interest` in (`after`, `upto`].
pub(super) struct Replay {
    pub(super) after: FeedId,
    pub(super) upto: FeedId,
    pub(super) interest: Interest,
}

/// A client message, as the rate limit and the handlers see it.
enum Data {
    Text(Utf8Bytes),
    Binary,
    Control,
}

/// What woke the connection up.
enum Wake {
    End(CloseReason),
    Event(Outbound),
    PingDue,
    Read(Option<Result<Message, ReadError>>),
}

/// Runs one connection on `socket` until it ends: the session is opened first (a refusal
/// closes with 4009 or 1013) and closed last, which starts the offline grace. The service
/// ending the session ([`crate::sessions::LocalSessions::end`]) closes it with 4011.
pub async fn run<S>(state: AppState, checked: CheckedUpgrade, mut socket: S)
where
    S: Sink<Message> + Stream<Item = Result<Message, ReadError>> + Unpin,
{
    let CheckedUpgrade {
        access,
        zone,
        org,
        device,
        invisible,
        permit: _permit,
    } = checked;
    let session = SessionId::random();
    let user = access.principal().user.clone();
    let open = OpenSession {
        user: user.clone(),
        session: session.clone(),
        device,
        zone,
        org,
        leased: false,
        invisible,
    };
    // The open's answer and the `connected` frame are built and sent in here, so they are
    // freed before the connection goes idle: a local of `run` would live as long as the
    // connection does (this is most of what an idle connection would otherwise keep).
    // Registered before the open is sent: a reconcile never takes an open on its way for a
    // ghost.
    let ended = state.sessions.opening(&open, state.now());
    let hello = async {
        let applied = state.store.open_session(open).await?;
        metrics::counter!("presenced_sessions_opened_total").increment(1);
        let view = applied.view;
        state
            .sessions
            .opened(&user, view.zone_id.clone(), view.org_id.clone());
        let node = state.store.node_id().clone();
        Ok::<_, StoreError>(text(ServerFrame::connected(session.clone(), node, view)))
    };
    let hello = match hello.await {
        Ok(frame) => frame,
        Err(e) => {
            state.sessions.closed(&session);
            let why = match e {
                StoreError::Refused(TransitionError::TooManySessions { .. }) => {
                    CloseReason::TOO_MANY_SESSIONS
                }
                // A fresh random id the service ended: not in practice, but said as it is.
                StoreError::Refused(TransitionError::SessionEnded(_)) => CloseReason::SESSION_ENDED,
                _ => {
                    // The open may have run in the store though its answer was lost (a
                    // timeout): make sure it ends there.
                    state.sessions.must_close(&user, &session);
                    CloseReason::TRY_LATER
                }
            };
            if let Some(frame) = why.frame() {
                let _ = send(&mut socket, frame, state.config.limits.send_timeout).await;
            }
            return;
        }
    };
    let mut conn = Connection {
        interest: Interest::new(access.clone()),
        state: state.clone(),
        access,
        sub: None,
        covered: None,
        replay: None,
        extra_cost: 0,
        typing: SessionTyping::default(),
    };
    let limit_send = state.config.limits.send_timeout;
    let ending = match send(&mut socket, hello, limit_send).await {
        Ok(()) => conn.serve(&mut socket, ended).await,
        Err(why) => why,
    };
    if let Some(frame) = ending.frame() {
        let _ = tokio::time::timeout(limit_send, socket.send(frame)).await;
    }
    metrics::counter!("presenced_sessions_closed_total", "code" => ending.code.to_string())
        .increment(1);
    // A session that ends, however it ends, stops its typing at once (before the close,
    // which may wait on a store that is away).
    conn.stop_typing().await;
    state.sessions.closed(&session);
    // The close starts the offline grace; a restart (1012) leaves presence to it too.
    if let Err(e) = state.store.close_session(&user, &session).await {
        tracing::warn!(error = %e, "could not close a session; retrying at each lease renewal");
        state.sessions.must_close(&user, &session);
    }
}

fn text(frame: ServerFrame) -> Message {
    Message::Text(Utf8Bytes::from(frame.encode()))
}

async fn until_cancelled(token: Option<tokio_util::sync::CancellationToken>) {
    match token {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
}

async fn next_event(sub: &mut Option<Subscription>) -> Option<Outbound> {
    match sub {
        Some(s) => s.rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Sends one message within `limit`: a failed send means the peer is gone, one that does not
/// complete in time means a client that stopped reading (closed as a slow consumer).
async fn send<S: Sink<Message> + Unpin>(
    socket: &mut S,
    m: Message,
    limit: Duration,
) -> Result<(), CloseReason> {
    match tokio::time::timeout(limit, socket.send(m)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(CloseReason::GONE),
        Err(_) => {
            metrics::counter!("presenced_refusals_total", "reason" => "send_timeout").increment(1);
            Err(CloseReason::SLOW_CONSUMER)
        }
    }
}

impl Connection {
    /// Serves the connection until it ends (`ended`: the service ended its session), and
    /// says why.
    async fn serve<S>(&mut self, socket: &mut S, ended: EndSignal) -> CloseReason
    where
        S: Sink<Message> + Stream<Item = Result<Message, ReadError>> + Unpin,
    {
        let cfg = self.state.config.clone();
        let mut limit = RateLimit::new(
            cfg.limits.frames_per_second,
            cfg.limits.frame_burst,
            Instant::now(),
        );
        let mut ping = tokio::time::interval(cfg.server.ping_interval);
        ping.tick().await;
        let mut heard = Instant::now();
        let limit_send = cfg.limits.send_timeout;
        let shutdown = self.state.shutdown.clone();
        let expiry = tokio::time::sleep(self.access.principal().time_left(self.state.now()));
        tokio::pin!(expiry);
        loop {
            let slow = self.sub.as_ref().map(|s| s.slow.clone());
            let reset = self.sub.as_ref().map(|s| s.reset.clone());
            // select! drops every branch's future before the chosen one is handled below, so
            // the handlers may use `self` again.
            let wake = tokio::select! {
                _ = shutdown.cancelled() => Wake::End(CloseReason::RESTARTING),
                _ = ended.ended() => Wake::End(CloseReason::SESSION_ENDED),
                _ = &mut expiry => Wake::End(CloseReason::TOKEN_EXPIRED),
                _ = until_cancelled(reset) => Wake::End(CloseReason::FEED_RESET),
                _ = until_cancelled(slow) => {
                    metrics::counter!("presenced_refusals_total", "reason" => "slow_consumer").increment(1);
                    Wake::End(CloseReason::SLOW_CONSUMER)
                }
                Some(d) = next_event(&mut self.sub) => Wake::Event(d),
                _ = ping.tick() => Wake::PingDue,
                msg = socket.next() => Wake::Read(msg),
            };
            let step = match wake {
                Wake::End(why) => Err(why),
                Wake::Event(Outbound::Event(d)) if self.wanted(&d) => {
                    send(socket, Message::Text(Utf8Bytes::from(&*d.json)), limit_send).await
                }
                Wake::Event(Outbound::Event(_)) => Ok(()),
                Wake::Event(Outbound::Count(frame) | Outbound::Typing(frame)) => {
                    send(socket, Message::Text(Utf8Bytes::from(&*frame)), limit_send).await
                }
                Wake::PingDue if heard.elapsed() >= cfg.server.idle_timeout => {
                    Err(CloseReason::SILENT)
                }
                Wake::PingDue => send(socket, Message::Ping(Default::default()), limit_send).await,
                Wake::Read(msg) => {
                    heard = Instant::now();
                    match self.on_message(msg, &mut limit).await {
                        Ok(replies) => {
                            let mut sent = Ok(());
                            for reply in replies {
                                sent = send(socket, text(reply), limit_send).await;
                                if sent.is_err() {
                                    break;
                                }
                            }
                            match (sent, self.replay.take()) {
                                (Ok(()), Some(replay)) => {
                                    self.stream_replay(socket, replay, limit_send).await
                                }
                                (sent, _) => sent,
                            }
                        }
                        Err(why) => Err(why),
                    }
                }
            };
            if let Err(why) = step {
                return why;
            }
        }
    }

    /// Sends a resume's replay a chunk of the feed at a time, each write awaited. A store
    /// failure part-way closes the connection (1013): the client resumes from the last event
    /// it got, rather than miss the rest.
    async fn stream_replay<S: Sink<Message> + Unpin>(
        &mut self,
        socket: &mut S,
        replay: Replay,
        limit_send: Duration,
    ) -> Result<(), CloseReason> {
        let store = self.state.store.clone();
        let events = crate::snapshot::replay(store, replay.after, replay.upto, replay.interest);
        let mut events = std::pin::pin!(events);
        while let Some(e) = events.next().await {
            let e = e.map_err(|_| CloseReason::TRY_LATER)?;
            send(socket, text(ServerFrame::Presence(e)), limit_send).await?;
        }
        Ok(())
    }

    /// One message from the client: the replies to send, or why the connection ends.
    async fn on_message(
        &mut self,
        msg: Option<Result<Message, ReadError>>,
        limit: &mut RateLimit,
    ) -> Result<Vec<ServerFrame>, CloseReason> {
        // Every frame counts toward the rate limit: text, binary, and pings and pongs too.
        let data = match msg {
            None | Some(Err(ReadError::Broken)) => return Err(CloseReason::GONE),
            Some(Err(ReadError::TooBig)) => return Err(CloseReason::TOO_BIG),
            Some(Ok(Message::Close(_))) => return Err(CloseReason::GONE),
            Some(Ok(Message::Text(t))) => Data::Text(t),
            Some(Ok(Message::Binary(_))) => Data::Binary,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Data::Control,
        };
        if matches!(&data, Data::Text(t) if t.len() > self.state.config.limits.frame_bytes) {
            return Err(CloseReason::TOO_BIG);
        }
        let now = Instant::now();
        match limit.take(now) {
            Verdict::Close => {
                metrics::counter!("presenced_refusals_total", "reason" => "rate_limited")
                    .increment(1);
                Err(CloseReason::RATE_LIMITED)
            }
            Verdict::Drop if limit.may_answer(now) => {
                let e = ApiError::rate_limited("too many frames; slow down");
                Ok(vec![e.frame(None)])
            }
            Verdict::Drop => Ok(Vec::new()),
            Verdict::Take => match data {
                Data::Control => Ok(Vec::new()),
                Data::Binary => Ok(vec![ServerFrame::invalid_frame(
                    None,
                    "frames are JSON text",
                )]),
                // Boxed: the handler's state is large and only needed while a frame is
                // handled, not for the life of an idle connection.
                Data::Text(raw) => {
                    let replies = Box::pin(self.handle(raw.as_str())).await;
                    // A frame that read many scopes and users from the store pays for each.
                    limit.charge(std::mem::take(&mut self.extra_cost));
                    Ok(replies)
                }
            },
        }
    }

    /// Whether a delivered event goes out (see `covered`).
    fn wanted(&mut self, d: &Delivered) -> bool {
        match &self.covered {
            Some((upto, before)) if d.feed_id <= *upto => before.matches(&d.event),
            Some(_) => {
                self.covered = None;
                true
            }
            None => true,
        }
    }
}
