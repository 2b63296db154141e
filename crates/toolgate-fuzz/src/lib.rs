//! The seeded runners of toolgate's fuzz tests, which run on stable Rust
//! inside `cargo test`, bounded and the same on every run. A dev-dependency
//! only.
//!
//! - [`runner`]: a proptest runner with a fixed seed and no failure files.
//! - [`Rng`] and [`rounds`]: a small seeded generator, and the bounded loop
//!   of mutation rounds that must all come back clean.
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
    #[should_panic(expected = "1 panics, the first: boom")]
    fn a_round_that_finds_something_fails() {
        let mut n = 0;
        rounds(1, |_| {
            n += 1;
            (n == 3).then(|| "boom".to_string())
        });
    }
}
