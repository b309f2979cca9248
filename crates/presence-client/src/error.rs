//! What a call can fail with.

/// A failed call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The service answered with an error (SPEC §6's shape), or a WebSocket `error` frame.
    #[error("{code}: {message}")]
    Api {
        /// The HTTP status (0 for a WebSocket `error` frame).
        status: u16,
        /// `invalid_argument`, `not_found`, `permission_denied`, …
        code: String,
        /// What went wrong, for people.
        message: String,
    },
    /// The service could not be reached, or the connection broke mid-call.
    #[error("presenced unreachable: {0}")]
    Unreachable(String),
    /// The service answered something this client cannot read.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// The WebSocket was closed for a reason reconnecting cannot cure (a refused token,
    /// too many sessions, the service ended the session: 4011), or the session was closed.
    #[error("session closed ({code}): {reason}")]
    Closed {
        /// The close code (SPEC §5), 1000 when this side closed it.
        code: u16,
        /// The reason the node gave.
        reason: String,
    },
    /// The session is between connections: the call was not sent. Try again once it is back.
    #[error("the session is reconnecting")]
    Reconnecting,
}

impl Error {
    /// The service's error code, when it gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    pub(crate) fn unreachable(e: impl std::fmt::Display) -> Self {
        Error::Unreachable(e.to_string())
    }

    pub(crate) fn decode(e: impl std::fmt::Display) -> Self {
        Error::Decode(e.to_string())
    }
}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Self {
        if e.is_decode() {
            Error::decode(e)
        } else {
            Error::unreachable(e)
        }
    }
}
