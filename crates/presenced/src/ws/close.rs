//! Why a connection ended, and the close frame that says so (SPEC §5 close codes).

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};

/// Why a connection ended: a close code and its reason text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    /// The WebSocket close code.
    pub code: u16,
    /// The reason sent with it.
    pub reason: &'static str,
}

impl CloseReason {
    /// The peer closed or the socket broke: nothing is sent.
    pub const GONE: Self = Self::new(1000, "");
    /// No answer to pings within `idle_timeout`.
    pub const SILENT: Self = Self::new(1001, "no answer to pings");
    /// A frame over `frame_bytes`.
    pub const TOO_BIG: Self = Self::new(1009, "frame too big");
    /// The node is shutting down: reconnect elsewhere (the grace keeps the user online).
    pub const RESTARTING: Self = Self::new(1012, "node restarting");
    /// The store could not open the session: try again later.
    pub const TRY_LATER: Self = Self::new(1013, "presence store unavailable");
    /// The token expired.
    pub const TOKEN_EXPIRED: Self = Self::new(4001, "token expired");
    /// Still over the frame rate limit 5 s after going over it.
    pub const RATE_LIMITED: Self = Self::new(4008, "rate limited");
    /// The outbound queue overflowed.
    pub const SLOW_CONSUMER: Self = Self::new(4008, "slow consumer");
    /// The user already holds `sessions_per_user` sessions.
    pub const TOO_MANY_SESSIONS: Self = Self::new(4009, "too many sessions");
    /// The service ended this session (`DELETE /messenger/presence/sessions/{user}/{session}`);
    /// the user's other sessions stay.
    pub const SESSION_ENDED: Self = Self::new(4011, "session ended by the service");
    /// The feed was reset under this node (it fell behind, or the store lost its data):
    /// reconnect and resume; the answer is a snapshot.
    pub const FEED_RESET: Self = Self::new(4010, "feed reset; reconnect and resume");

    const fn new(code: u16, reason: &'static str) -> Self {
        Self { code, reason }
    }

    /// The close frame to send, or `None` when the peer is already gone.
    pub fn frame(self) -> Option<Message> {
        (self != Self::GONE).then(|| {
            Message::Close(Some(CloseFrame {
                code: self.code,
                reason: Utf8Bytes::from_static(self.reason),
            }))
        })
    }
}
