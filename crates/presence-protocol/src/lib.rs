//! The WebSocket protocol of SPEC §5, both ways, shared by the service and its Rust client.
//!
//! - [`ClientMessage`] is every frame a client may send as it travels; the service checks it
//!   into a [`ClientFrame`] in one place ([`parse_frame`]).
//! - [`ServerFrame`] is every frame the server sends (and the snapshot SSE sends on a reset),
//!   serialized in one place ([`ServerFrame::encode`]) and read back by clients
//!   ([`ServerFrame::decode`]).
//!
//! The JavaScript and Python clients mirror these types.

mod client;
mod server;

pub use client::{ClientFrame, ClientMessage, parse_frame, privacy_change};
pub use server::{FrameId, ScopeSnapshot, ServerFrame, Snapshot};
