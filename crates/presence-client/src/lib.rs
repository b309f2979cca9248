//! The Rust client of presenced.
//!
//! - [`Client`]: typed REST calls (status, batch, the online list as a paged [`Stream`], counts,
//!   activity, heartbeats, custom status, zone) and Server-Sent Events ([`Client::events`]).
//! - [`Session`]: a user's WebSocket session ([`Client::session`]) that reconnects with backoff
//!   and jitter after a dropped connection and resumes every subscription from the last feed id
//!   it saw, so nothing is lost while the feed holds the events; otherwise it hands over a
//!   fresh snapshot (`reset`). Stale and repeated events are dropped by version.
//!
//! Frames are the service's own types, from `presence-protocol`; views and events are
//! `presence-core`'s.
//!
//! ```no_run
//! # async fn demo() -> Result<(), presence_client::Error> {
//! use presence_client::{Client, SessionItem, SessionOptions, Subscription};
//! let client = Client::new("http://127.0.0.1:8000", "<a JWT>");
//! let mut session = client.session(SessionOptions::default()).await?;
//! session.subscribe(Subscription::scopes(["zone:10"])).await?;
//! while let Some(item) = session.next().await {
//!     if let SessionItem::Event(e) = item { println!("{} is {:?}", e.user.user_id, e.user.status) }
//! }
//! # Ok(()) }
//! ```
//!
//! [`Stream`]: futures::Stream

mod error;
mod rest;
mod session;

pub use error::Error;
pub use presence_core::{FeedId, PresenceEvent, PresenceView, Status};
pub use presence_protocol::{ClientMessage, ScopeSnapshot, ServerFrame, Snapshot};
pub use rest::{Client, Counts, Heartbeat, Lease, OnlinePage, OnlineQuery, StreamItem};
pub use session::{Session, SessionItem, SessionOptions, Subscription};
