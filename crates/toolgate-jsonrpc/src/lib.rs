//! JSON-RPC 2.0 as MCP carries it, for a gateway that must never disagree with
//! the server about what a message says.
//!
//! - [`parse_strict`] reads one framed message (a request, notification,
//!   response, or a batch of them) and refuses what a lenient parser would
//!   quietly resolve: duplicate object keys, invalid UTF-8, lone surrogates.
//! - [`read_message`] is the gateway's fast path: the same strictness,
//!   then only the envelope (`id`, `method`, `params`), borrowed.
//! - [`Message`] classifies a parsed value without copying it.
//! - [`peek`] reads only the `id` and `method` of a message from a trusted
//!   peer (the upstream server), without building a tree.
//! - [`canonical_json`] and [`args_sha256`] give arguments one spelling, for
//!   audit hashes and approval matching.
//!
//! This crate does no IO.

mod canonical;
mod envelope;
mod message;
mod strict;

pub use canonical::{args_sha256, canonical_json};
pub use envelope::{check_strict, incoming, one_line, read_message, Incoming, Read};
pub use message::{
    error_response, peek, peek_id, peek_raw_id, replace_raw, result_response, to_vec_with_id, Id,
    Message, Peek, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR,
};
pub use strict::{parse_object, parse_strict, Parsed, StrictError};
