//! A Server-Sent Events parser: bytes in, events out (the parts of the
//! WHATWG event-stream format that MCP uses: `event`, `data`, `id`, `retry`).

/// One dispatched event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SseEvent {
    /// `event:` field; empty means the default `message`.
    pub event: String,
    pub data: String,
    /// The last event id seen on the stream when this event was dispatched.
    pub id: Option<String>,
}

/// Incremental parser; feed it chunks as they arrive.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buf: Vec<u8>,
    event: String,
    data: String,
    has_data: bool,
    /// The last `id:` seen (for `Last-Event-ID` on reconnect).
    pub last_id: Option<String>,
    /// The last `retry:` seen, in milliseconds.
    pub retry_ms: Option<u64>,
}

impl SseParser {
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            let mut line = &self.buf[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            self.line(&line, &mut out);
        }
        self.buf.drain(..start);
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if self.has_data {
                out.push(SseEvent {
                    event: std::mem::take(&mut self.event),
                    data: std::mem::take(&mut self.data),
                    id: self.last_id.clone(),
                });
            }
            self.event.clear();
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            "retry" => {
                if let Ok(ms) = value.parse() {
                    self.retry_ms = Some(ms);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&str]) -> (Vec<SseEvent>, SseParser) {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.push(c.as_bytes()));
        }
        (out, p)
    }

    #[test]
    fn one_event_split_across_chunks() {
        let (ev, p) = parse(&["event: mess", "age\nid: 7\ndata: {\"a\"", ":1}\n", "\n"]);
        assert_eq!(
            ev,
            vec![SseEvent {
                event: "message".into(),
                data: "{\"a\":1}".into(),
                id: Some("7".into())
            }]
        );
        assert_eq!(p.last_id.as_deref(), Some("7"));
    }

    #[test]
    fn crlf_comments_multiline_data_and_retry() {
        let (ev, p) = parse(&[": ping\r\n\r\nretry: 1500\r\ndata: a\r\ndata:b\r\n\r\n"]);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data, "a\nb");
        assert_eq!(ev[0].event, "");
        assert_eq!(p.retry_ms, Some(1500));
    }

    #[test]
    fn id_only_event_sets_last_id_without_dispatch() {
        let (ev, p) = parse(&["id: 42\n\n"]);
        assert!(ev.is_empty());
        assert_eq!(p.last_id.as_deref(), Some("42"));
    }
}
