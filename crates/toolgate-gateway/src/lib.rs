//! The toolgate gateways: the part that does IO.
//!
//! A tour:
//! - [`stdio`]: `toolgate run`, one MCP server spawned as a child process and
//!   one client on the gateway's own stdin/stdout. Every message passes
//!   through unchanged, except `tools/list` results (filtered) and
//!   `tools/call` requests (decided by the policy before they reach the
//!   server).
//! - [`answer`]: how a refusal becomes a JSON-RPC answer. One `match` lists
//!   every decision.
//! - [`audit`]: one JSON line per decision, written off the hot path.
//! - [`frame`]: newline-delimited framing with a size limit.
//! - [`child`]: spawning the server so that it never outlives the gateway,
//!   and forwarding signals to it.
//! - [`clock`]: time comes in through a trait, so tests can hold it still.
//! - [`reload`]: the policy in force, swapped when its file changes.
//!
//! The policy itself (rules, conditions, counters) lives in `toolgate-policy`,
//! which does no IO; this crate only feeds it calls and acts on its decisions.

pub mod answer;
pub mod audit;
pub mod child;
pub mod clock;
pub mod frame;
pub mod reload;
pub mod stdio;

pub use clock::{Clock, SystemClock};
pub use stdio::{run_stdio, StdioOptions};
