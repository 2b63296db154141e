//! `toolgate serve`: the gateway as a service. Many agents connect over
//! Streamable HTTP, each with its own credential (a grant), to one endpoint
//! that fronts several MCP servers; the policy follows each agent.
//!
//! A tour:
//! - [`http`]: the HTTP front (`/mcp`): Host/Origin checks, bearer tokens,
//!   size limit, strict JSON, the routing headers of 2026-07-28, sessions;
//!   answers as JSON or as an SSE stream; graceful shutdown.
//! - `h1`: the HTTP/1.1 server under it (one task per connection; heads,
//!   bodies, chunked framing, keep-alive, answers written in one write).
//! - [`gateway`]: the `Gateway`, one per process: a composition of the
//!   parts below, each owning its state and its locks.
//! - `router`: each MCP method to what answers it; `call`: `tools/call`
//!   decided against every policy that applies, counted and audited;
//!   `approvals`: calls a `require_approval` rule holds.
//! - `forward`: a request on its way to a server (the client's side of it,
//!   streamed replies, cancellation, calls parked for a 2026-07-28 client).
//! - `upstreams`: the servers, reached through the `Upstream` trait (the
//!   real connection, or a fake in tests), their events and lists; `pins`:
//!   tools held back since their definition changed.
//! - `grants`, `sessions`, `streams`, `instances`: credentials; opened and
//!   ended sessions; GET streams, subscriptions and server requests waiting
//!   for a client; per-session server instances.
//! - [`catalog`]: the merged, namespaced list of tools, prompts and resources.
//! - `legacy`: the HTTP+SSE transport of 2024-11-05 (`GET /sse`, `POST
//!   /messages`) for older clients, on top of the same message handling.
//! - [`replay`]: streamed answers kept for resumption (`Last-Event-ID`).
//! - [`session`]: sealed session tokens, so that sessions need no
//!   stickiness and survive a restart.
//! - `rounds`: a stateless (2026-07-28) server's input-required answers,
//!   asked of a 2025 client or passed to a 2026 client with a sealed state.
//!
//! Upstream connections are `toolgate-upstream`'s; policy decisions are
//! `toolgate-policy`'s.

mod approvals;
mod call;
pub mod catalog;
mod forward;
pub mod gateway;
mod grants;
mod h1;
pub mod http;
mod instances;
mod legacy;
mod pins;
pub mod replay;
mod rounds;
mod router;
pub mod session;
mod sessions;
mod streams;
mod twins;
mod upstreams;

pub use gateway::{
    AuditApprovals, Gateway, GatewayOptions, GrantOptions, ServerOptions, StartError,
};
pub use http::{serve, HttpOptions};
pub use session::SessionKey;
