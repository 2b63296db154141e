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
//! - [`gateway`]: what happens to each MCP message; the policy decision for
//!   `tools/call` against every policy that applies; routing to servers;
//!   server-to-client requests and notifications back to the right client.
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
mod upstreams;

pub use gateway::{
    AuditApprovals, Gateway, GatewayOptions, GrantOptions, ServerOptions, StartError,
};
pub use http::{serve, HttpOptions};
pub use session::SessionKey;
