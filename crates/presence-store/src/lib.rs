//! The two stores behind [`presence_core::Store`]:
//!
//! - [`MemoryStore`]: embedded, one node, the default.
//! - [`RedisStore`]: Redis or Valkey, any number of nodes. Every transition is one Lua script
//!   (in `lua/`, loaded with `include_str!`) that re-checks the state and writes the record,
//!   the indexes and the feed entry together.
//!
//! - [`ActivityCoalescer`]: a node's activity buffer, so activity reaches a store in batches.
//! - `bus`: the bus's transport (a broadcast in process; Redis Pub/Sub between nodes).
//! - [`replay`]: the feed replay check (folding the feed from empty gives the current views),
//!   for the tests of both stores.
//!
//! Both stores pass one conformance suite (`tests/conformance.rs`) and one property test against a
//! naive reference model (`tests/model.rs`). This crate depends on the domain crate and the
//! storage clients only: no HTTP, no WebSockets.

mod bus;
mod coalesce;
mod memory;
mod redis;
pub mod replay;
mod snapshot;
mod sweep;

pub use coalesce::ActivityCoalescer;
pub use memory::MemoryStore;
pub use redis::{RedisConfig, RedisStore};
