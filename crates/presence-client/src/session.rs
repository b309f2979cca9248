//! A user's WebSocket session that outlives its connections.
//!
//! One task owns the socket. After a dropped connection it reconnects with backoff and
//! jitter, in the zone and org last set, and subscribes again to everything with `after` set
//! to the last feed id it saw: the node replays what was missed while the feed holds it, or
//! answers a fresh snapshot with `reset: true`, which [`SessionItem::Reset`] hands over. A
//! close that reconnecting cannot cure (a refused token, too many sessions, 4011: the service
//! ended this session) ends the session with [`SessionItem::Closed`].

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use presence_core::{
    ConversationId, CustomStatusKind, FeedId, Millis, PresenceEvent, PresenceView, UserId,
};
use presence_protocol::{ClientMessage, ServerFrame, Snapshot};
use rand::Rng;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::error::Error;
use crate::rest::Client;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a frame waits for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Activity frames are sent at most this often: the node needs one every few minutes at most.
const ACTIVITY_INTERVAL: Duration = Duration::from_secs(1);
/// Items not yet taken by [`Session::next`]: beyond, the session stops reading its socket, and
/// a node whose queue for it fills closes it as a slow consumer (then it reconnects and resumes).
const ITEM_QUEUE: usize = 4096;
/// Reconnect delays: from this, doubling up to the cap, each drawn from its upper half.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Where and how the session connects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionOptions {
    /// Zone to be in.
    pub zone: Option<String>,
    /// Org to be in.
    pub org: Option<String>,
    /// `web`, `desktop`, `mobile` or `other`.
    pub device: Option<String>,
    /// Open invisible (applies when the open starts a new presence).
    pub invisible: bool,
    /// Give up after this many failed reconnects in a row (`None`: never).
    pub max_retries: Option<u32>,
}

/// What to follow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    /// `global`, `zone:10`, `org:100`.
    pub scopes: Vec<String>,
    /// Users to follow.
    pub users: Vec<String>,
    /// Conversations whose typing to follow.
    pub conversations: Vec<String>,
    /// `count` frames for the scopes instead of their events.
    pub counts_only: bool,
}

impl Subscription {
    /// These scopes' events.
    pub fn scopes<S: Into<String>>(scopes: impl IntoIterator<Item = S>) -> Self {
        Self {
            scopes: scopes.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// These users' events.
    pub fn users<S: Into<String>>(users: impl IntoIterator<Item = S>) -> Self {
        Self {
            users: users.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }
}

/// What a session hands over, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionItem {
    /// A presence event newer than anything seen of its user.
    Event(Box<PresenceEvent>),
    /// After a reconnect the feed no longer held what was missed: the present of everything
    /// followed. Replace what you hold with it.
    Reset(Box<Snapshot>),
    /// A counts-only scope's count changed.
    Count {
        /// The scope.
        scope: String,
        /// Users online or away in it.
        count: u64,
    },
    /// Someone started or stopped typing in a followed conversation.
    Typing {
        /// The conversation.
        conversation_id: String,
        /// Who.
        user_id: String,
        /// Typing now or not any more.
        typing: bool,
    },
    /// The connection dropped and a new one is in place, resubscribed.
    Reconnected,
    /// The session ended for good (the last item).
    Closed(Error),
}

/// The connection now: its session and node, from the `connected` frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Connected {
    /// The session the connection holds.
    pub session_id: String,
    /// The node holding it.
    pub node_id: String,
    /// The user's own view when it connected.
    pub presence: PresenceView,
}

/// A user's WebSocket session; see the module docs. Dropping it closes the socket.
#[derive(Debug)]
pub struct Session {
    commands: mpsc::UnboundedSender<Command>,
    items: mpsc::Receiver<SessionItem>,
    connected: watch::Receiver<Option<Connected>>,
    last_activity: Option<Instant>,
}

/// Where a request's answer goes.
type Reply = oneshot::Sender<Result<ServerFrame, Error>>;

#[derive(Debug)]
enum Command {
    Send {
        message: ClientMessage,
        reply: Reply,
    },
    Close,
}

impl Session {
    pub(crate) async fn open(client: Client, options: SessionOptions) -> Result<Self, Error> {
        let (ws, hello) = connect(&client, &options).await.map_err(|f| f.error)?;
        let (commands, rx) = mpsc::unbounded_channel();
        let (items_tx, items) = mpsc::channel(ITEM_QUEUE);
        let (connected_tx, connected) = watch::channel(Some(hello));
        let driver = Driver {
            client,
            options,
            commands: rx,
            items: items_tx,
            connected: connected_tx,
            pending: HashMap::new(),
            next_id: 0,
            resuming: BTreeSet::new(),
            follows: Follows::default(),
            last_feed_id: None,
            gate: VersionGate::default(),
        };
        tokio::spawn(driver.run(ws));
        Ok(Self {
            commands,
            items,
            connected,
            last_activity: None,
        })
    }

    /// The next item; `None` once the session has ended and everything was handed over.
    pub async fn next(&mut self) -> Option<SessionItem> {
        self.items.recv().await
    }

    /// The current connection, `None` while reconnecting.
    pub fn connected(&self) -> Option<Connected> {
        self.connected.borrow().clone()
    }

    async fn request(&self, message: ClientMessage) -> Result<ServerFrame, Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Send { message, reply })
            .map_err(|_| closed())?;
        match tokio::time::timeout(REPLY_TIMEOUT, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(closed()),
            Err(_) => Err(Error::Unreachable("no answer from the node".into())),
        }
    }

    /// Follows scopes, users or conversations; answers the snapshot of what was asked. What is
    /// followed is followed again after every reconnect.
    pub async fn subscribe(&self, s: Subscription) -> Result<Snapshot, Error> {
        let message = ClientMessage::Subscribe {
            scopes: s.scopes,
            users: ids(s.users)?,
            conversations: ids(s.conversations)?,
            after: None,
            counts_only: s.counts_only,
        };
        match self.request(message).await? {
            ServerFrame::Snapshot { snapshot, .. } => Ok(snapshot),
            other => Err(Error::decode(format!("a snapshot expected, got {other:?}"))),
        }
    }

    /// Stops following.
    pub async fn unsubscribe(&self, s: Subscription) -> Result<(), Error> {
        self.request(ClientMessage::Unsubscribe {
            scopes: s.scopes,
            users: ids(s.users)?,
            conversations: ids(s.conversations)?,
        })
        .await
        .map(drop)
    }

    /// Reports activity, at most once a second (a call within a second of the last one sent
    /// returns `Ok(false)` and sends nothing).
    pub async fn activity(&mut self) -> Result<bool, Error> {
        if self
            .last_activity
            .is_some_and(|t| t.elapsed() < ACTIVITY_INTERVAL)
        {
            return Ok(false);
        }
        self.request(ClientMessage::Activity {}).await?;
        self.last_activity = Some(Instant::now());
        Ok(true)
    }

    /// Manual away (`away`) or back online; `invisible` turns invisible on or off with it.
    pub async fn set_status(&self, away: bool, invisible: Option<bool>) -> Result<(), Error> {
        let status = if away { "away" } else { "online" };
        self.request(ClientMessage::StatusSet {
            status: status.into(),
            invisible,
        })
        .await
        .map(drop)
    }

    /// Moves to a zone (`None`: out of zones); a reconnect goes back to it.
    pub async fn set_zone(&self, zone: Option<&str>) -> Result<(), Error> {
        let zone_id = zone.map(str::parse).transpose().map_err(bad_id)?;
        self.request(ClientMessage::ZoneSet { zone_id })
            .await
            .map(drop)
    }

    /// Sets the custom status; `expires_at` in unix milliseconds.
    pub async fn set_custom_status(
        &self,
        kind: CustomStatusKind,
        text: Option<&str>,
        emoji: Option<&str>,
        expires_at: Option<Millis>,
    ) -> Result<(), Error> {
        self.request(ClientMessage::CustomStatusSet {
            kind,
            text: text.map(str::to_string),
            emoji: emoji.map(str::to_string),
            expires_at,
        })
        .await
        .map(drop)
    }

    /// Clears the custom status.
    pub async fn clear_custom_status(&self) -> Result<(), Error> {
        self.request(ClientMessage::CustomStatusClear {})
            .await
            .map(drop)
    }

    /// Starts (or renews: repeat every few seconds while typing) or stops typing.
    pub async fn typing(&self, conversation: &str, typing: bool) -> Result<(), Error> {
        let conversation_id: ConversationId = conversation.parse().map_err(bad_id)?;
        let message = if typing {
            ClientMessage::TypingStart { conversation_id }
        } else {
            ClientMessage::TypingStop { conversation_id }
        };
        self.request(message).await.map(drop)
    }

    /// A round trip to the node.
    pub async fn ping(&self) -> Result<(), Error> {
        self.request(ClientMessage::Ping {}).await.map(drop)
    }

    /// Closes the socket (its session ends through the offline grace) and ends the session.
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

fn closed() -> Error {
    Error::Closed {
        code: 1000,
        reason: "the session is closed".into(),
    }
}

fn bad_id(e: impl std::fmt::Display) -> Error {
    Error::Api {
        status: 0,
        code: "invalid_argument".into(),
        message: e.to_string(),
    }
}

fn ids<T: std::str::FromStr>(raw: Vec<String>) -> Result<Vec<T>, Error>
where
    T::Err: std::fmt::Display,
{
    raw.iter().map(|s| s.parse().map_err(bad_id)).collect()
}

/// Drops stale and repeated events: per user an event passes only when its version is above
/// the one held. A record deleted after `last_seen_retention` starts again at version 1: a
/// lower version with a later `updated_at` is such a new record, and passes.
#[derive(Debug, Default)]
struct VersionGate {
    seen: HashMap<UserId, (u64, Option<Millis>)>,
}

impl VersionGate {
    fn admit(&mut self, view: &PresenceView) -> bool {
        if let Some(&(version, updated)) = self.seen.get(&view.user_id) {
            let newer_record = view.version < version
                && matches!((view.updated_at, updated), (Some(a), Some(b)) if a > b);
            if view.version == version || (view.version < version && !newer_record) {
                return false;
            }
        }
        self.seen
            .insert(view.user_id.clone(), (view.version, view.updated_at));
        true
    }

    fn seed(&mut self, snapshot: &Snapshot) {
        let views = snapshot.scopes.values().flat_map(|s| s.users.iter());
        for v in views.chain(snapshot.users.values().flatten()) {
            self.admit(v);
        }
    }
}

/// What the session follows, to follow again after a reconnect.
#[derive(Debug, Default)]
struct Follows {
    scopes: BTreeSet<String>,
    users: BTreeSet<UserId>,
    conversations: BTreeSet<ConversationId>,
    count_scopes: BTreeSet<String>,
}

impl Follows {
    /// A request that succeeded changes what is followed (or where to reconnect).
    fn apply(&mut self, m: &ClientMessage, options: &mut SessionOptions) {
        match m {
            ClientMessage::Subscribe {
                scopes,
                users,
                conversations,
                counts_only,
                ..
            } => {
                let into = if *counts_only {
                    &mut self.count_scopes
                } else {
                    &mut self.scopes
                };
                into.extend(scopes.iter().cloned());
                self.users.extend(users.iter().cloned());
                self.conversations.extend(conversations.iter().cloned());
            }
            ClientMessage::Unsubscribe {
                scopes,
                users,
                conversations,
            } => {
                for s in scopes {
                    self.scopes.remove(s);
                    self.count_scopes.remove(s);
                }
                for u in users {
                    self.users.remove(u);
                }
                for c in conversations {
                    self.conversations.remove(c);
                }
            }
            ClientMessage::ZoneSet { zone_id } => {
                options.zone = zone_id.as_ref().map(ToString::to_string)
            }
            ClientMessage::OrgSet { org_id } => {
                options.org = org_id.as_ref().map(ToString::to_string)
            }
            _ => {}
        }
    }

    /// The subscriptions that follow everything again, resuming after `after`.
    fn again(&self, after: Option<FeedId>) -> Vec<ClientMessage> {
        let mut out = Vec::new();
        if !(self.scopes.is_empty() && self.users.is_empty() && self.conversations.is_empty()) {
            out.push(ClientMessage::Subscribe {
                scopes: self.scopes.iter().cloned().collect(),
                users: self.users.iter().cloned().collect(),
                conversations: self.conversations.iter().cloned().collect(),
                after,
                counts_only: false,
            });
        }
        if !self.count_scopes.is_empty() {
            out.push(ClientMessage::Subscribe {
                scopes: self.count_scopes.iter().cloned().collect(),
                users: Vec::new(),
                conversations: Vec::new(),
                after: None,
                counts_only: true,
            });
        }
        out
    }
}

/// A connection that failed or ended: why, and whether another may do better.
struct Failure {
    error: Error,
    retry: bool,
}

impl Failure {
    fn retry(error: Error) -> Self {
        Self { error, retry: true }
    }
}

/// The close codes of SPEC §5 that reconnecting cannot cure: 1009 a frame too big (a bug),
/// 4001 the token expired (this client holds one fixed token), 4003 not allowed, 4009 too
/// many sessions, 4011 the service ended this session.
fn final_close(code: u16) -> bool {
    matches!(code, 1009 | 4001 | 4003 | 4009 | 4011)
}

async fn connect(client: &Client, o: &SessionOptions) -> Result<(Socket, Connected), Failure> {
    let base = client.url();
    let ws_base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        format!("ws://{}", base.strip_prefix("http://").unwrap_or(base))
    };
    let mut query = Vec::new();
    for (k, v) in [
        ("zone_id", &o.zone),
        ("org_id", &o.org),
        ("device", &o.device),
    ] {
        if let Some(v) = v {
            query.push(format!("{k}={}", urlencode(v)));
        }
    }
    if o.invisible {
        query.push("invisible=true".into());
    }
    let url = format!("{ws_base}/messenger/ws?{}", query.join("&"));
    let mut request = url
        .into_client_request()
        .map_err(|e| Failure::retry(Error::unreachable(e)).final_if(true))?;
    let auth = format!("Bearer {}", client.token())
        .parse()
        .map_err(|_| Failure::retry(Error::decode("a token must be header-safe")).final_if(true))?;
    request.headers_mut().insert("authorization", auth);
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(refused)?;
    // The first frame is `connected`.
    let first = tokio::time::timeout(REPLY_TIMEOUT, ws.next())
        .await
        .map_err(|_| Failure::retry(Error::Unreachable("no connected frame".into())))?;
    match first {
        Some(Ok(Message::Text(t))) => match ServerFrame::decode(&t) {
            Ok(ServerFrame::Connected {
                session_id,
                node_id,
                presence,
                ..
            }) => Ok((
                ws,
                Connected {
                    session_id: session_id.to_string(),
                    node_id: node_id.to_string(),
                    presence,
                },
            )),
            _ => Err(Failure::retry(Error::decode(format!(
                "a connected frame expected, got {t}"
            )))),
        },
        Some(Ok(Message::Close(Some(c)))) => Err(close_failure(&c)),
        other => Err(Failure::retry(Error::Unreachable(format!(
            "the connection ended before it was set up: {other:?}"
        )))),
    }
}

impl Failure {
    fn final_if(mut self, yes: bool) -> Self {
        self.retry &= !yes;
        self
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An upgrade the node refused: 400, 401, 403 and 409 are final; 429 and 503 are worth
/// another try later, as is a connection that could not be made.
fn refused(e: tungstenite::Error) -> Failure {
    match e {
        tungstenite::Error::Http(resp) => {
            let status = resp.status().as_u16();
            let body: Value = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            let text = |k: &str| body["error"][k].as_str().map(str::to_string);
            Failure {
                error: Error::Api {
                    status,
                    code: text("code").unwrap_or_else(|| "unavailable".into()),
                    message: text("message").unwrap_or_else(|| format!("HTTP {status}")),
                },
                retry: matches!(status, 429 | 502 | 503 | 504),
            }
        }
        e => Failure::retry(Error::unreachable(e)),
    }
}

fn close_failure(c: &CloseFrame) -> Failure {
    let code = u16::from(c.code);
    Failure {
        error: Error::Closed {
            code,
            reason: c.reason.to_string(),
        },
        retry: !final_close(code),
    }
}

/// The task that owns the socket.
struct Driver {
    client: Client,
    options: SessionOptions,
    commands: mpsc::UnboundedReceiver<Command>,
    items: mpsc::Sender<SessionItem>,
    connected: watch::Sender<Option<Connected>>,
    /// Requests sent on the current connection, by id, with what they asked.
    pending: HashMap<String, (ClientMessage, Option<Reply>)>,
    next_id: u64,
    /// Ids of the subscriptions a reconnect sent to resume.
    resuming: BTreeSet<String>,
    follows: Follows,
    last_feed_id: Option<FeedId>,
    gate: VersionGate,
}

/// How one connection ended.
enum Ended {
    /// The caller closed the session (or dropped it).
    ByCaller,
    /// The connection failed or the node closed it.
    Lost(Failure),
}

impl Driver {
    async fn run(mut self, mut ws: Socket) {
        let mut failures = 0u32;
        loop {
            let ended = self.follow(&mut ws).await;
            self.connected.send_replace(None);
            for (_, (_, reply)) in self.pending.drain() {
                if let Some(r) = reply {
                    let _ = r.send(Err(Error::Reconnecting));
                }
            }
            self.resuming.clear();
            let failure = match ended {
                Ended::ByCaller => {
                    let _ = ws.close(None).await;
                    return;
                }
                Ended::Lost(f) => f,
            };
            let mut last = failure;
            // Reconnect until it works, the failure is final, or the caller gives up.
            ws = loop {
                if !last.retry || self.options.max_retries.is_some_and(|m| failures >= m) {
                    let _ = self.items.send(SessionItem::Closed(last.error)).await;
                    return;
                }
                tracing::warn!(error = %last.error, "presence session lost; reconnecting");
                let delay = backoff(failures);
                failures += 1;
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    c = self.commands.recv() => match c {
                        None | Some(Command::Close) => return,
                        Some(Command::Send { reply, .. }) => {
                            let _ = reply.send(Err(Error::Reconnecting));
                            continue;
                        }
                    },
                }
                match connect(&self.client, &self.options).await {
                    Ok((ws, hello)) => {
                        self.connected.send_replace(Some(hello));
                        break ws;
                    }
                    Err(f) => last = f,
                }
            };
            failures = 0;
            if self.items.send(SessionItem::Reconnected).await.is_err() {
                return;
            }
            for m in self.follows.again(self.last_feed_id) {
                let id = self.id();
                self.resuming.insert(id.clone());
                let text = m.encode(Some(&Value::from(id.clone())));
                self.pending.insert(id, (m, None));
                if ws.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
        }
    }

    fn id(&mut self) -> String {
        self.next_id += 1;
        format!("c{}", self.next_id)
    }

    async fn follow(&mut self, ws: &mut Socket) -> Ended {
        loop {
            tokio::select! {
                c = self.commands.recv() => match c {
                    None | Some(Command::Close) => return Ended::ByCaller,
                    Some(Command::Send { message, reply }) => {
                        let id = self.id();
                        let text = message.encode(Some(&Value::from(id.clone())));
                        self.pending.insert(id, (message, Some(reply)));
                        if let Err(e) = ws.send(Message::text(text)).await {
                            return Ended::Lost(Failure::retry(Error::unreachable(e)));
                        }
                    }
                },
                m = ws.next() => match m {
                    Some(Ok(Message::Text(t))) => {
                        if !self.on_frame(&t).await {
                            return Ended::ByCaller;
                        }
                    }
                    Some(Ok(Message::Close(c))) => {
                        return Ended::Lost(c.as_ref().map_or_else(
                            || Failure::retry(Error::Unreachable("closed by the node".into())),
                            close_failure,
                        ));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Ended::Lost(Failure::retry(Error::unreachable(e))),
                    None => {
                        return Ended::Lost(Failure::retry(Error::Unreachable(
                            "connection lost".into(),
                        )));
                    }
                },
            }
        }
    }

    /// Handles one frame; `false` when nobody takes items any more.
    async fn on_frame(&mut self, text: &str) -> bool {
        let frame = match ServerFrame::decode(text) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "a frame this client cannot read; skipped");
                return true;
            }
        };
        let item = match &frame {
            ServerFrame::Presence(e) => {
                self.last_feed_id = Some(e.feed_id);
                self.gate
                    .admit(&e.user)
                    .then(|| SessionItem::Event(Box::new(e.clone())))
            }
            ServerFrame::Count { scope, count } => Some(SessionItem::Count {
                scope: scope.clone(),
                count: *count,
            }),
            ServerFrame::Typing {
                conversation_id,
                user_id,
                typing,
            } => Some(SessionItem::Typing {
                conversation_id: conversation_id.to_string(),
                user_id: user_id.to_string(),
                typing: *typing,
            }),
            ServerFrame::Snapshot {
                id,
                feed_id,
                reset,
                snapshot,
            } => {
                let resumed = id
                    .as_ref()
                    .and_then(Value::as_str)
                    .is_some_and(|id| self.resuming.remove(id));
                // A reset moves the resume point to the present. Otherwise only events move it:
                // a later subscription's snapshot may overtake events still on their way for
                // earlier ones; resuming from before it costs only repeats, which the gate drops.
                if *reset || self.last_feed_id.is_none() {
                    self.last_feed_id = Some(*feed_id);
                }
                if *reset {
                    self.gate = VersionGate::default();
                    self.gate.seed(snapshot);
                    Some(SessionItem::Reset(Box::new(snapshot.clone())))
                } else {
                    // A resumed snapshot shows the present, but the events replayed after it
                    // are what the caller has not seen: the gate must not take them for repeats.
                    if !resumed {
                        self.gate.seed(snapshot);
                    }
                    None
                }
            }
            _ => None,
        };
        if let Some(item) = item
            && self.items.send(item).await.is_err()
        {
            return false;
        }
        let id = match &frame {
            ServerFrame::Ack { id } => Some(id.clone()),
            ServerFrame::Snapshot { id, .. }
            | ServerFrame::Error { id, .. }
            | ServerFrame::Pong { id } => id.clone(),
            _ => None,
        };
        if let Some(key) = id.as_ref().and_then(Value::as_str)
            && let Some((message, reply)) = self.pending.remove(key)
        {
            let answer = match frame {
                ServerFrame::Error { code, message, .. } => Err(Error::Api {
                    status: 0,
                    code: code.into_owned(),
                    message,
                }),
                ok => {
                    self.follows.apply(&message, &mut self.options);
                    Ok(ok)
                }
            };
            match reply {
                Some(r) => {
                    let _ = r.send(answer);
                }
                None => {
                    if let Err(e) = answer {
                        tracing::warn!(error = %e, "resubscribing after a reconnect failed");
                    }
                }
            }
        }
        true
    }
}

/// The wait before reconnect attempt `n` (from 0): doubling from [`BACKOFF_FIRST`] up to
/// [`BACKOFF_CAP`], drawn from the upper half so that clients dropped together spread out.
fn backoff(n: u32) -> Duration {
    let full = BACKOFF_FIRST
        .saturating_mul(1u32 << n.min(16))
        .min(BACKOFF_CAP);
    let half = full / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_core::{DeviceSet, Status};

    fn view(user: &str, version: u64, updated_at: Millis) -> PresenceView {
        PresenceView {
            user_id: UserId::new(user).unwrap(),
            status: Status::Online,
            away_reason: None,
            last_activity: Some(0),
            last_seen: None,
            zone_id: None,
            org_id: None,
            devices: DeviceSet::EMPTY,
            custom_status: None,
            metadata: None,
            invisible: false,
            privacy: None,
            version,
            updated_at: Some(updated_at),
            hidden: None,
            hidden_from_org: None,
        }
    }

    #[test]
    fn the_gate_drops_stale_and_repeated_versions_and_admits_a_new_record() {
        let mut g = VersionGate::default();
        assert!(g.admit(&view("1", 5, 100)));
        assert!(!g.admit(&view("1", 5, 100)), "a repeat");
        assert!(!g.admit(&view("1", 4, 90)), "stale");
        assert!(g.admit(&view("1", 6, 110)));
        assert!(
            g.admit(&view("1", 1, 200)),
            "a record made again after retention starts at 1, later"
        );
        assert!(g.admit(&view("2", 1, 0)), "users are apart");
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_in_the_upper_half() {
        for n in 0..40 {
            let full = BACKOFF_FIRST
                .saturating_mul(1 << n.min(16))
                .min(BACKOFF_CAP);
            let d = backoff(n);
            assert!(d >= full / 2 && d <= full, "{n}: {d:?} of {full:?}");
        }
    }

    #[test]
    fn only_incurable_closes_are_final() {
        for code in [1009, 4001, 4003, 4009, 4011] {
            assert!(final_close(code), "{code}");
        }
        for code in [1000, 1001, 1006, 1011, 1012, 4008] {
            assert!(!final_close(code), "{code}");
        }
    }
}
