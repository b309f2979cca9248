//! The WebSocket protocol of SPEC §5, both ways: [`ClientFrame`] is every frame a client
//! may send, parsed in one place; [`ServerFrame`] is every frame the server sends (and the
//! snapshot SSE sends on a reset), serialized in one place. The clients mirror these types.

mod client;
mod server;

pub use client::{ClientFrame, parse_frame, privacy_change};
pub use server::{FrameId, ScopeSnapshot, ServerFrame, Snapshot};
