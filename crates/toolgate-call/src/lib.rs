//! What becomes of a `tools/call`, written once for `toolgate run` and
//! `toolgate serve`.
//!
//! - [`answer`]: what the client gets when the gateway answers in the
//!   server's place (every refusal of the policy, approvals, unknown tools);
//!   one `match` lists every decision.
//! - [`approval`]: the flow of a call a `require_approval` rule holds, from
//!   the question to the approved call's quota, with its audit records.
//! - [`record`]: the one constructor of a call's audit record.
//! - [`verdict`]: a decided call forwarded, held or answered (audited).
//!
//! Invariants: no IO of its own (stores, clock, timer, audit sink and the
//! way to ask the client are passed in); both gateways build their refusals
//! and records here, so a text, a `structuredContent` field or a record
//! field is written in one place.

pub mod answer;
pub mod approval;
pub mod record;
pub mod verdict;

#[cfg(test)]
mod trail;

pub use answer::Era;
