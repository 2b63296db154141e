//! What the audit record of a call (built by `toolgate_call::record`) needs
//! to know about it in `toolgate run`: one server, named in no record, and
//! the trace context in the call's `_meta`.

use super::*;
use toolgate_call::record::{CallFacts, TraceContext};

/// The facts of a call received at `received`, with its `_meta` (raw JSON).
pub(super) fn call_facts<'a>(
    shared: &'a Shared,
    tool: &'a str,
    arguments: &'a Value,
    received: Instant,
    meta: Option<&'a str>,
) -> CallFacts<'a> {
    CallFacts {
        grant: &shared.grant,
        session: &shared.session,
        server: None,
        tool,
        arguments,
        received,
        trace: TraceContext::Meta(meta),
        protocol_version: None,
        keep_args: shared.audit_args,
    }
}
