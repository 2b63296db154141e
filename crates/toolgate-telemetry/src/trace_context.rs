//! W3C Trace Context: the `traceparent` a client sends, read strictly, and
//! the random ids of the gateway's own spans.
//!
//! Only version `00` is accepted, in exactly its 55 characters:
//! `00-<32 lower-case hex trace id>-<16 lower-case hex parent id>-<2 hex flags>`,
//! with neither id all zeros. Anything else is not trusted: the gateway
//! starts a trace of its own instead, as the recommendation says.

/// A trace id (16 bytes) and a span id (8 bytes).
pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

/// A valid `traceparent` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    pub flags: u8,
}

/// The `sampled` bit of the trace flags.
pub const SAMPLED: u8 = 0x01;

/// The longest `tracestate` passed on (the W3C limit is 512 characters).
const MAX_TRACESTATE: usize = 512;

impl TraceParent {
    /// Reads a `traceparent` value; `None` for anything that is not a valid
    /// version-00 value.
    pub fn parse(text: &str) -> Option<TraceParent> {
        let b = text.as_bytes();
        if b.len() != 55 || &b[..3] != b"00-" || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut parent_id = [0u8; 8];
        let mut flags = [0u8; 1];
        lower_hex(&b[3..35], &mut trace_id)?;
        lower_hex(&b[36..52], &mut parent_id)?;
        lower_hex(&b[53..55], &mut flags)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            parent_id,
            flags: flags[0],
        })
    }

    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The header value that names `span` (a span of this trace) as the parent.
    pub fn header(trace_id: &TraceId, span: &SpanId, flags: u8) -> String {
        format!(
            "00-{}-{}-{flags:02x}",
            hex::encode(trace_id),
            hex::encode(span)
        )
    }
}

/// Lower-case hex digits into `out` (exactly twice as many digits as bytes).
fn lower_hex(digits: &[u8], out: &mut [u8]) -> Option<()> {
    if digits.len() != out.len() * 2 {
        return None;
    }
    let value = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    for (i, pair) in digits.chunks(2).enumerate() {
        out[i] = value(pair[0])? << 4 | value(pair[1])?;
    }
    Some(())
}

/// A `tracestate` to pass on: printable ASCII of at most 512 characters, else
/// none (the W3C rule is to drop a `tracestate` that cannot be read).
pub fn tracestate(text: &str) -> Option<String> {
    let text = text.trim_matches([' ', '\t']);
    let ok = !text.is_empty()
        && text.len() <= MAX_TRACESTATE
        && text.bytes().all(|b| (0x20..0x7f).contains(&b));
    ok.then(|| text.to_string())
}

/// Random trace and span ids: SplitMix64 seeded from the OS once, so that
/// an id costs no system call (ids must be unique, not secret).
#[derive(Debug, Clone)]
pub struct Ids {
    state: u64,
}

impl Default for Ids {
    fn default() -> Ids {
        Ids::new()
    }
}

impl Ids {
    pub fn new() -> Ids {
        let mut seed = [0u8; 8];
        getrandom::getrandom(&mut seed).expect("the OS random source");
        Ids {
            state: u64::from_le_bytes(seed),
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A trace id, never all zeros.
    pub fn trace_id(&mut self) -> TraceId {
        loop {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&self.next_u64().to_be_bytes());
            id[8..].copy_from_slice(&self.next_u64().to_be_bytes());
            if id != [0; 16] {
                return id;
            }
        }
    }

    /// A span id, never all zeros.
    pub fn span_id(&mut self) -> SpanId {
        loop {
            let id = self.next_u64().to_be_bytes();
            if id != [0; 8] {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent() {
        let p = TraceParent::parse(GOOD).unwrap();
        assert_eq!(hex::encode(p.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(p.parent_id), "00f067aa0ba902b7");
        assert!(p.sampled());
        let unsampled = TraceParent::parse(&GOOD.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled());
        assert_eq!(
            TraceParent::header(&p.trace_id, &p.parent_id, p.flags),
            GOOD
        );
    }

    #[test]
    fn anything_else_is_not_trusted() {
        for bad in [
            "",
            "garbage",
            // Other versions, and the forbidden ff.
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Upper-case hex.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Wrong lengths, separators, characters.
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-é",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tracestate_is_passed_on_when_readable() {
        assert_eq!(
            tracestate("congo=t61rcWkgMzE").as_deref(),
            Some("congo=t61rcWkgMzE")
        );
        assert_eq!(tracestate(" a=1,b=2 ").as_deref(), Some("a=1,b=2"));
        assert_eq!(tracestate(""), None);
        assert_eq!(tracestate("a=\u{7}"), None);
        assert_eq!(tracestate(&"a".repeat(513)), None);
    }

    #[test]
    fn ids_are_random_and_never_zero() {
        let mut ids = Ids::new();
        let traces: std::collections::HashSet<TraceId> =
            (0..1000).map(|_| ids.trace_id()).collect();
        assert_eq!(traces.len(), 1000);
        assert_ne!(ids.span_id(), [0; 8]);
        // Two generators (two processes) do not start alike.
        assert_ne!(Ids::new().trace_id(), Ids::new().trace_id());
    }
}
