//! Newline-delimited framing (MCP's stdio transport) with a size limit.
//!
//! A message longer than the limit is skipped up to its newline and reported
//! as [`Frame::Oversize`], so one bad message does not end the session.

use std::io::{BufRead, BufReader, Read};

/// One framed message, or the fact that one was too long.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A message without its line ending (`\n` or `\r\n`).
    Line(Vec<u8>),
    /// A message over the limit, skipped.
    Oversize,
}

/// Reads frames from a buffered reader.
pub struct FrameReader<R> {
    inner: BufReader<R>,
    limit: usize,
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R, limit: usize) -> Self {
        Self::with_capacity(inner, limit, 64 * 1024)
    }

    /// With a read buffer of `capacity` bytes (tests use a tiny one).
    pub fn with_capacity(inner: R, limit: usize, capacity: usize) -> Self {
        FrameReader {
            inner: BufReader::with_capacity(capacity, inner),
            limit,
        }
    }

    /// Whether more bytes are already buffered, so a writer can batch its flush.
    pub fn has_buffered(&self) -> bool {
        !self.inner.buffer().is_empty()
    }

    /// The next frame; `None` at end of input. Blank lines are skipped.
    pub fn read_frame(&mut self) -> std::io::Result<Option<Frame>> {
        let mut line = Vec::new();
        let mut oversize = false;
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                // End of input: a last message without a newline still counts.
                if oversize {
                    return Ok(Some(Frame::Oversize));
                }
                return Ok(finish(line));
            }
            let (chunk, found) = match memchr::memchr(b'\n', buf) {
                Some(i) => (&buf[..i], Some(i + 1)),
                None => (buf, None),
            };
            if !oversize {
                if line.len() + chunk.len() > self.limit {
                    oversize = true;
                    line = Vec::new();
                } else {
                    line.extend_from_slice(chunk);
                }
            }
            let used = found.unwrap_or(buf.len());
            self.inner.consume(used);
            if found.is_some() {
                if oversize {
                    return Ok(Some(Frame::Oversize));
                }
                match finish(std::mem::take(&mut line)) {
                    Some(frame) => return Ok(Some(frame)),
                    None => continue, // blank line
                }
            }
        }
    }
}

fn finish(mut line: Vec<u8>) -> Option<Frame> {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        None
    } else {
        Some(Frame::Line(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8], limit: usize) -> Vec<Frame> {
        let mut r = FrameReader::with_capacity(input, limit, 4);
        let mut out = Vec::new();
        while let Some(f) = r.read_frame().unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn splits_lines_and_skips_oversize() {
        let got = frames(b"{\"a\":1}\r\n\n  \n0123456789abc\n{}\nlast", 10);
        assert_eq!(
            got,
            vec![
                Frame::Line(b"{\"a\":1}".to_vec()),
                Frame::Oversize,
                Frame::Line(b"{}".to_vec()),
                Frame::Line(b"last".to_vec()),
            ]
        );
    }
}
