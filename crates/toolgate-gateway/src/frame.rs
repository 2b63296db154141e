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

    /// A reader that hands out its bytes in the given chunk sizes (partial reads).
    struct Chunked<'a> {
        data: &'a [u8],
        sizes: Vec<usize>,
        next: usize,
    }

    impl Read for Chunked<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let size = self.sizes[self.next % self.sizes.len()].max(1);
            self.next += 1;
            let n = size.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// What the framing must give: split on LF, one trailing CR dropped,
    /// blank lines skipped, lines over the limit reported as such.
    fn reference(input: &[u8], limit: usize) -> Vec<Frame> {
        let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        if input.ends_with(b"\n") {
            parts.pop();
        }
        parts
            .into_iter()
            .filter_map(|part| {
                if part.len() > limit {
                    return Some(Frame::Oversize);
                }
                let line = part.strip_suffix(b"\r").unwrap_or(part);
                (!line.iter().all(u8::is_ascii_whitespace)).then(|| Frame::Line(line.to_vec()))
            })
            .collect()
    }

    #[test]
    fn agrees_with_a_reference_splitter_under_any_partial_reads() {
        use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
        let bytes = proptest::collection::vec(
            proptest::sample::select(vec![b'\n', b'\r', b' ', b'{', b'}', b'a', 0xE2, 0x80, 0xA8]),
            0..200,
        );
        let strategy = (
            bytes,
            proptest::collection::vec(1usize..9, 1..5),
            1usize..40,
        );
        let mut runner = TestRunner::new_with_rng(
            Config {
                cases: 3000,
                failure_persistence: None,
                ..Config::default()
            },
            TestRng::deterministic_rng(RngAlgorithm::ChaCha),
        );
        runner
            .run(&strategy, |(input, sizes, limit)| {
                let reader = Chunked {
                    data: &input,
                    sizes,
                    next: 0,
                };
                let mut r = FrameReader::with_capacity(reader, limit, 4);
                let mut got = Vec::new();
                while let Some(f) = r.read_frame().unwrap() {
                    got.push(f);
                }
                proptest::prop_assert_eq!(got, reference(&input, limit));
                Ok(())
            })
            .unwrap();
    }
}
