//! The REST API (SPEC §6) as typed calls, and Server-Sent Events.

use std::collections::BTreeMap;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use presence_core::{FeedId, PresenceEvent, PresenceView, Status};
use presence_protocol::{ServerFrame, Snapshot};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::Error;
use crate::session::{Session, SessionOptions};

/// A client of one presenced deployment, for one token. Cheap to clone (one connection pool).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// Which users `online` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnlineQuery {
    /// Only this zone (not with `org`).
    pub zone: Option<String>,
    /// Only this org (not with `zone`).
    pub org: Option<String>,
    /// Only online, or only away, users.
    pub status: Option<Status>,
    /// Users per page, 1–1000 (`None`: the service's 100).
    pub limit: Option<usize>,
}

/// One page of the online list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OnlinePage {
    /// Users, most recent activity first.
    pub online_users: Vec<PresenceView>,
    /// Users in the whole scope.
    pub count: u64,
    /// Where the next page starts.
    pub next_cursor: Option<String>,
}

/// Counts of the global scope and, when asked, a zone and an org.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Counts {
    /// Everyone online or away.
    pub global: u64,
    /// In the zone asked for.
    pub zone: Option<u64>,
    /// In the org asked for.
    pub org: Option<u64>,
}

/// A REST heartbeat (a session without a WebSocket, leased for `online_ttl`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Heartbeat {
    /// `web`, `desktop`, `mobile` or `other`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Zone to be in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<String>,
    /// Org to be in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    /// The session to renew (`None`: open a new one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// For a service token: whose session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// A heartbeat's lease.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Lease {
    /// Send it back to renew.
    pub session_id: String,
    /// When the lease runs out unless renewed (RFC 3339).
    pub expires_at: String,
}

/// What the event stream ([`Client::events`]) carries.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// A presence event; its `feed_id` is where to resume from.
    Event(Box<PresenceEvent>),
    /// The id asked to resume after had aged out: the present of the stream's scopes instead,
    /// then the events after `feed_id`.
    Reset {
        /// Where the events that follow continue from.
        feed_id: FeedId,
        /// The present.
        snapshot: Box<Snapshot>,
    },
}

impl Client {
    /// A client of the service at `url` (`http://host:port`), calling with `token`.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: url.into().trim_end_matches('/').to_string(),
            token: token.into(),
        }
    }

    /// The service's address.
    pub fn url(&self) -> &str {
        &self.base
    }

    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends `req`; an error status becomes [`Error::Api`] with the service's code.
    async fn send(req: reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
        let resp = req.send().await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let text = |k: &str| body["error"][k].as_str().map(str::to_string);
        Err(Error::Api {
            status: status.as_u16(),
            code: text("code").unwrap_or_else(|| "internal".into()),
            message: text("message").unwrap_or_else(|| format!("HTTP {status}")),
        })
    }

    async fn call<T: DeserializeOwned>(req: reqwest::RequestBuilder) -> Result<T, Error> {
        Ok(Self::send(req).await?.json().await?)
    }

    /// One user's view; `None` when the user was never seen (or is hidden from this token).
    pub async fn status(&self, user: &str) -> Result<Option<PresenceView>, Error> {
        let path = format!("/messenger/presence/status/{user}");
        match Self::call(self.request(reqwest::Method::GET, &path)).await {
            Err(Error::Api { status: 404, .. }) => Ok(None),
            other => other.map(Some),
        }
    }

    /// Many users' views in one call (at most the service's `batch_ids`).
    pub async fn statuses(
        &self,
        users: &[&str],
    ) -> Result<BTreeMap<String, Option<PresenceView>>, Error> {
        #[derive(Deserialize)]
        struct Batch {
            users: BTreeMap<String, Option<PresenceView>>,
        }
        let req = self
            .request(reqwest::Method::POST, "/messenger/presence/status/batch")
            .json(&json!({ "user_ids": users }));
        Ok(Self::call::<Batch>(req).await?.users)
    }

    /// One page of the online list, from `cursor` (`None`: the first).
    pub async fn online_page(
        &self,
        query: &OnlineQuery,
        cursor: Option<&str>,
    ) -> Result<OnlinePage, Error> {
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(z) = &query.zone {
            params.push(("zone_id", z.clone()));
        }
        if let Some(o) = &query.org {
            params.push(("org_id", o.clone()));
        }
        if let Some(s) = query.status {
            params.push(("status", s.as_str().to_string()));
        }
        if let Some(l) = query.limit {
            params.push(("limit", l.to_string()));
        }
        if let Some(c) = cursor {
            params.push(("cursor", c.to_string()));
        }
        let req = self
            .request(reqwest::Method::GET, "/messenger/presence/online")
            .query(&params);
        Self::call(req).await
    }

    /// Everyone in the list, page after page, as a stream: a page is fetched when the last
    /// one is used up.
    pub fn online(&self, query: OnlineQuery) -> BoxStream<'_, Result<PresenceView, Error>> {
        futures::stream::try_unfold(Some(None::<String>), move |next| {
            let query = query.clone();
            async move {
                let Some(cursor) = next else {
                    return Ok::<_, Error>(None);
                };
                let page = self.online_page(&query, cursor.as_deref()).await?;
                let users = futures::stream::iter(page.online_users.into_iter().map(Ok));
                Ok(Some((users, page.next_cursor.map(Some))))
            }
        })
        .try_flatten()
        .boxed()
    }

    /// Counts of the global scope, and of `zone` and `org` when given.
    pub async fn count(&self, zone: Option<&str>, org: Option<&str>) -> Result<Counts, Error> {
        let mut params = Vec::new();
        if let Some(z) = zone {
            params.push(("zone_id", z));
        }
        if let Some(o) = org {
            params.push(("org_id", o));
        }
        let req = self
            .request(reqwest::Method::GET, "/messenger/presence/count")
            .query(&params);
        Self::call(req).await
    }

    /// Reports activity: of the token's user (`users` empty), or for a service token of
    /// these users.
    pub async fn activity(&self, users: &[&str]) -> Result<(), Error> {
        let mut req = self.request(reqwest::Method::POST, "/messenger/presence/activity");
        if !users.is_empty() {
            req = req.json(&json!({ "user_ids": users }));
        }
        Self::send(req).await.map(drop)
    }

    /// Manual away (`away`) or back online, for the token's user or `user`.
    pub async fn set_status(&self, away: bool, user: Option<&str>) -> Result<(), Error> {
        let path = if away {
            "/messenger/presence/away"
        } else {
            "/messenger/presence/online"
        };
        let mut req = self.request(reqwest::Method::POST, path);
        if let Some(u) = user {
            req = req.json(&json!({ "user_id": u }));
        }
        Self::send(req).await.map(drop)
    }

    /// Opens or renews a REST heartbeat session.
    pub async fn heartbeat(&self, beat: &Heartbeat) -> Result<Lease, Error> {
        let req = self
            .request(reqwest::Method::POST, "/messenger/presence/heartbeat")
            .json(beat);
        Self::call(req).await
    }

    /// Ends a REST heartbeat session.
    pub async fn end_heartbeat(&self, session_id: &str) -> Result<(), Error> {
        let req = self
            .request(reqwest::Method::DELETE, "/messenger/presence/heartbeat")
            .query(&[("session_id", session_id)]);
        Self::send(req).await.map(drop)
    }

    /// Sets the custom status (`kind`: `dnd`, `busy`, `in_meeting`, `on_break`, `custom`);
    /// `expires_at` RFC 3339. Answers the view.
    pub async fn set_custom_status(
        &self,
        kind: &str,
        text: Option<&str>,
        emoji: Option<&str>,
        expires_at: Option<&str>,
    ) -> Result<PresenceView, Error> {
        let req = self
            .request(reqwest::Method::PUT, "/messenger/presence/custom-status")
            .json(&json!({ "kind": kind, "text": text, "emoji": emoji, "expires_at": expires_at }));
        Self::call(req).await
    }

    /// Clears the custom status. Answers the view.
    pub async fn clear_custom_status(&self) -> Result<PresenceView, Error> {
        Self::call(self.request(reqwest::Method::DELETE, "/messenger/presence/custom-status")).await
    }

    /// Moves the token's user to a zone (`None`: out of zones). Answers the view.
    pub async fn set_zone(&self, zone: Option<&str>) -> Result<PresenceView, Error> {
        let req = self
            .request(reqwest::Method::PUT, "/messenger/presence/zone")
            .json(&json!({ "zone_id": zone }));
        Self::call(req).await
    }

    /// Presence events as Server-Sent Events: every event of `scopes` (`global`, `zone:10`,
    /// `org:100`, `user:123`; none: every event the token may see) after `after` (`None`: from
    /// now). To resume after a break, call again with the last event's `feed_id`.
    pub async fn events(
        &self,
        scopes: &[&str],
        after: Option<FeedId>,
    ) -> Result<BoxStream<'static, Result<StreamItem, Error>>, Error> {
        let mut params: Vec<(&str, String)> =
            scopes.iter().map(|s| ("scope", s.to_string())).collect();
        if let Some(a) = after {
            params.push(("after", a.to_string()));
        }
        let req = self
            .request(reqwest::Method::GET, "/messenger/presence/events")
            .query(&params);
        let resp = Self::send(req).await?;
        Ok(eventsource_stream::EventStream::new(resp.bytes_stream())
            .filter_map(|m| async move {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => return Some(Err(Error::unreachable(e))),
                };
                match m.event.as_str() {
                    "presence" => Some(
                        serde_json::from_str(&m.data)
                            .map(|e| StreamItem::Event(Box::new(e)))
                            .map_err(Error::decode),
                    ),
                    "snapshot" => Some(match ServerFrame::decode(&m.data) {
                        Ok(ServerFrame::Snapshot {
                            feed_id, snapshot, ..
                        }) => Ok(StreamItem::Reset {
                            feed_id,
                            snapshot: Box::new(snapshot),
                        }),
                        Ok(other) => Err(Error::decode(format!("a snapshot expected: {other:?}"))),
                        Err(e) => Err(Error::decode(e)),
                    }),
                    // Comments and events of kinds this client does not know.
                    _ => None,
                }
            })
            .boxed())
    }

    /// A WebSocket session for the token's user (see [`Session`]).
    pub async fn session(&self, options: SessionOptions) -> Result<Session, Error> {
        Session::open(self.clone(), options).await
    }
}
