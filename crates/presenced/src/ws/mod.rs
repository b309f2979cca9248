//! The WebSocket gateway at `/messenger/ws` (SPEC §5), one concern per file:
//!
//! - [`upgrade`]: what is checked before the upgrade (token, parameters, a free connection
//!   slot), answering 401 / 400 / 403 / 503 in the REST error shape.
//! - `connection`: one connection's life — open its session, send `connected`, then wait on
//!   client frames, subscribed events, the ping timer, the slow-consumer flag, token expiry and
//!   the node's shutdown; close the session at the end. Written against a `Sink + Stream` of
//!   messages, so it runs without a TCP socket in tests.
//! - `handlers`: what each client frame does.
//! - `rate_limit`: the per-connection token bucket of SPEC §10.
//! - [`close`]: the close codes and why a connection ended.
//!
//! The hub's bounded queue is the connection's outbound bound: a client that cannot keep up
//! is closed with 4008, never buffered without bound.

pub mod close;
mod connection;
mod handlers;
mod rate_limit;
pub mod upgrade;

pub use connection::{CheckedUpgrade, ReadError, run};
