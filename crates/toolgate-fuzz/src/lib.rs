//! The seeded runners of toolgate's fuzz tests, which run on stable Rust
//! inside `cargo test`, bounded and the same on every run. A dev-dependency
//! only.
//!
//! - [`runner`]: a proptest runner with a fixed seed and no failure files.
//! - [`Rng`] and [`rounds`]: a small seeded generator, and the bounded loop
//!   of mutation rounds that must all come back clean.
//! - [`Mutations`]: what one round does to a seed document (bytes and lines
//!   flipped, inserted, deleted, duplicated; deep nesting; long digits).
//! - [`best_of_three`] and [`assert_linear`]: input 10× as large must not
//!   take much more than 10× as long.

use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::time::Duration;
use toolgate_clock::monotonic_now;

/// A proptest runner of `cases` cases from a fixed seed, that writes no
/// failure files.
pub fn runner(cases: u32) -> TestRunner {
    runner_with(cases, TestRng::from_seed(RngAlgorithm::ChaCha, &[13; 32]))
}

/// [`runner`] with another generator.
pub fn runner_with(cases: u32, rng: TestRng) -> TestRunner {
    TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        rng,
    )
}

/// xorshift64*: small, seeded, the same numbers on every run.
pub struct Rng(pub u64);

impl Rng {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// How a document is mutated: the tokens to insert, and the nesting and
/// digit runs to grow.
pub struct Mutations<'a> {
    /// Bytes a mutation inserts: the syntax of the formats read, and what is
    /// awkward in them.
    pub tokens: &'a [&'a str],
    /// The openings a nesting mutation repeats (one picked per mutation).
    pub openings: &'a [&'a str],
    /// The most openings one nesting mutation inserts.
    pub max_nesting: usize,
    /// The longest run of digits a mutation inserts; `None`: none.
    pub max_digits: Option<usize>,
}

impl Mutations<'_> {
    /// `seed` with one to five mutations, each at a random place.
    pub fn mutate(&self, rng: &mut Rng, seed: &str) -> String {
        let mut bytes = seed.as_bytes().to_vec();
        let kinds = 7 + usize::from(self.max_digits.is_some());
        for _ in 0..=rng.below(4) {
            let at = rng.below(bytes.len() + 1);
            match rng.below(kinds) {
                0 if !bytes.is_empty() => {
                    let i = at.min(bytes.len() - 1);
                    bytes[i] ^= 1 << rng.below(8);
                }
                1 => {
                    let token = self.tokens[rng.below(self.tokens.len())];
                    bytes.splice(at..at, token.bytes());
                }
                2 if !bytes.is_empty() => {
                    let end = (at + 1 + rng.below(16)).min(bytes.len());
                    bytes.drain(at.min(end)..end);
                }
                3 => {
                    let end = (at + 1 + rng.below(32)).min(bytes.len());
                    let copy = bytes[at.min(end)..end].to_vec();
                    bytes.splice(at..at, copy);
                }
                4 | 5 => {
                    // Whole lines: delete, duplicate or swap one.
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    let mut lines: Vec<&str> = text.lines().collect();
                    if !lines.is_empty() {
                        let i = rng.below(lines.len());
                        match rng.below(3) {
                            0 => {
                                lines.remove(i);
                            }
                            1 => lines.insert(i, lines[i]),
                            _ => {
                                let j = rng.below(lines.len());
                                lines.swap(i, j);
                            }
                        }
                    }
                    bytes = lines.join("\n").into_bytes();
                }
                6 if self.max_digits.is_some() => self.nest(rng, &mut bytes, at),
                // The last kind, and what an empty document gets instead of
                // a flip or a deletion.
                _ => match self.max_digits {
                    Some(max) => {
                        let digits = "9".repeat(1 + rng.below(max));
                        bytes.splice(at..at, digits.bytes());
                    }
                    None => self.nest(rng, &mut bytes, at),
                },
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn nest(&self, rng: &mut Rng, bytes: &mut Vec<u8>, at: usize) {
        let n = 1 + rng.below(self.max_nesting);
        let open = self.openings[rng.below(self.openings.len())];
        bytes.splice(at..at, open.repeat(n).bytes());
    }
}

/// Runs `round` on a generator seeded with `seed` for 20,000 rounds or 4
/// seconds, whichever ends first; then asserts that at least 500 rounds
/// ran and that none found anything (a round returns what it found wrong).
pub fn rounds(seed: u64, mut round: impl FnMut(&mut Rng) -> Option<String>) {
    let mut rng = Rng(seed);
    let started = monotonic_now();
    let mut found = Vec::new();
    let mut rounds = 0;
    while rounds < 20_000 && started.elapsed() < Duration::from_secs(4) {
        found.extend(round(&mut rng));
        rounds += 1;
    }
    assert!(rounds >= 500, "only {rounds} rounds");
    assert!(
        found.is_empty(),
        "{} panics, the first: {}",
        found.len(),
        found[0]
    );
}

/// The best of three timings of `f`.
pub fn best_of_three(f: impl Fn()) -> Duration {
    (0..3)
        .map(|_| {
            let started = monotonic_now();
            f();
            started.elapsed()
        })
        .min()
        .unwrap()
}

/// `time(n)` takes at most ~10× `time(n / 10)`; the bound is 40× to stay
/// clear of timing noise, and still fails a quadratic path (100×).
pub fn assert_linear(what: &str, n: usize, time: impl Fn(usize) -> Duration) {
    let small = time(n / 10);
    let large = time(n);
    assert!(
        large <= small * 40 + Duration::from_millis(20),
        "{what}: n = {n} took {large:?}, n = {} took {small:?}",
        n / 10
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_the_same_on_every_run() {
        let mut a = Rng(7);
        let mut b = Rng(7);
        let first: Vec<u64> = (0..4).map(|_| a.next()).collect();
        assert_eq!(first, (0..4).map(|_| b.next()).collect::<Vec<_>>());
        assert!((0..100).all(|_| a.below(3) < 3));
        assert_eq!(a.below(0), 0);
    }

    #[test]
    fn mutations_are_the_same_on_every_run_and_change_the_document() {
        let mutations = Mutations {
            tokens: &["{"],
            openings: &["["],
            max_nesting: 3,
            max_digits: Some(4),
        };
        let run = |seed| {
            let mut rng = Rng(seed);
            (0..50)
                .map(|_| mutations.mutate(&mut rng, "a: 1\nb: 2\n"))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert!(run(3).iter().any(|m| m != "a: 1\nb: 2\n"));
        let mut rng = Rng(5);
        assert!((0..20).any(|_| !mutations.mutate(&mut rng, "").is_empty()));
    }

    #[test]
    #[should_panic(expected = "1 panics, the first: boom")]
    fn a_round_that_finds_something_fails() {
        let mut n = 0;
        rounds(1, |_| {
            n += 1;
            (n == 3).then(|| "boom".to_string())
        });
    }
}
