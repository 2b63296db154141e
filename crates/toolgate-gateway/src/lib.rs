//! The toolgate gateways: the part that does IO.
//!
//! A tour:
//! - [`stdio`]: `toolgate run`, one MCP server spawned as a child process and
//!   one client on the gateway's own stdin/stdout. Every message passes
//!   through unchanged, except `tools/list` results (filtered) and
//!   `tools/call` requests (decided by the policy before they reach the
//!   server).
//! - [`frame`]: newline-delimited framing with a size limit.
//! - [`reload`]: the policy in force, swapped when its file changes.
//!
//! The policy itself (rules, conditions, counters) lives in `toolgate-policy`,
//! which does no IO; the answers given in the server's place in
//! `toolgate-call`, the audit trail in `toolgate-audit`, time in
//! `toolgate-clock`. This crate only feeds calls in and acts on decisions.

pub mod frame;
pub mod reload;
pub mod stdio;

pub use stdio::{run_stdio, StdioOptions};
