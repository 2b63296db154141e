//! What becomes of a `tools/call`, written once for `toolgate run` and
//! `toolgate serve`.
//!
//! - [`answer`]: what the client gets when the gateway answers in the
//!   server's place (every refusal of the policy, approvals, unknown tools);
//!   one `match` lists every decision.
//!
//! Invariants: no IO; both gateways build their refusals here, so a text or
//! a `structuredContent` field is written in one place.

pub mod answer;

pub use answer::Era;
