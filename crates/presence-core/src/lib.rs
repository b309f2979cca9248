//! The domain of presenced: who is online, away or offline, and the rules that change it.
//!
//! This crate holds no networking and no storage engine; the service and both stores build on
//! it. Its parts:
//!
//! - [`ids`]: validated user, zone, org, session and node ids (SPEC §2).
//! - [`view`]: statuses, devices and the public [`PresenceView`] (SPEC §3).
//! - [`record`]: a user's stored record and the state machine of SPEC §3.
//! - [`event`]: presence events and feed ids (SPEC §4).
//! - [`scope`]: scopes, list queries, pages and cursors.
//! - [`store`]: the [`Store`] trait both stores implement.
//! - [`history`]: online time per user per UTC day, from transitions.
//! - [`geo`]: locations and distances for `nearby`, as Redis GEO computes them.
//! - [`bus`]: ephemeral node-to-node messages (typing indicators) and the typing types.
//! - [`settings`]: timings and limits with their defaults.
//! - [`time`]: milliseconds, the [`Clock`], RFC 3339.
//! - [`repair`]: what a repair of the indexes reports, and its modes.
//! - [`webhook`]: webhook delivery leases: which node delivers an endpoint, how far it got.

pub mod bus;
pub mod event;
pub mod geo;
pub mod history;
pub mod ids;
pub mod record;
pub mod repair;
pub mod scope;
pub mod settings;
pub mod store;
pub mod time;
pub mod view;
pub mod webhook;

pub use bus::{
    BusError, BusMessage, BusReceiver, EndedSession, MAX_BUS_MESSAGE_BYTES, Typer, TypingOutcome,
    TypingSignal, TypingTable, TypingWrite,
};
pub use event::{FeedId, Onlookers, PresenceEvent};
pub use geo::{BadLocation, Location};
pub use history::Day;
pub use ids::{ConversationId, IdError, NodeId, OrgId, SessionId, UserId, ZoneId};
pub use record::{Change, Metadata, Session, TransitionError, UserRecord};
pub use repair::{RepairMode, RepairReport};
pub use scope::{ListCursor, ListQuery, Scope, ScopePage};
pub use settings::StoreSettings;
pub use store::{
    Activity, Applied, FeedRead, InactivePage, InactiveUser, LeaseRenewal, NearbyQuery, NearbyUser,
    NodeInfo, OpenSession, ScopeCount, SessionInfo, Store, StoreError, SweepReport, UserSessions,
};
pub use time::{Clock, ManualClock, Millis, SharedClock, SystemClock};
pub use view::{
    AwayReason, CustomStatus, CustomStatusKind, DeviceKind, DeviceSet, Hidden, LastSeen,
    LastSeenBucket, LastSeenVisibility, Onlooker, PresenceView, PresenceVisibility, Privacy,
    Status,
};
pub use webhook::{EndpointId, WebhookClaim, WebhookLease, WebhookLeaseTable};
