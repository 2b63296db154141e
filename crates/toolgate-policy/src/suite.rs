//! One behavioural suite for every [`CounterStore`]: the in-memory store
//! runs it in this crate's tests, the embedded and Redis stores in theirs.
//! Each check takes a fresh, empty store from `make` (a store may share a
//! backend with others if `make` gives each a fresh key prefix) and panics
//! with a message naming what failed.

use crate::policy::{Draw, RuleRef};
use crate::store::{CounterStore, Grant, Refusal};
use crate::Millis;
use std::sync::Arc;

const T0: Millis = 1_700_000_000_000;
const MINUTE: u64 = 60_000;

fn draw(key: &str, max: f64, cost: f64, window: u64) -> Draw {
    Draw {
        counter: key.to_string(),
        key: format!("{key}\u{1f}grant\u{1f}g"),
        window,
        max,
        cost,
        rule: RuleRef::from_static("tools[\"t\"]"),
    }
}

fn take(store: &dyn CounterStore, draws: &[Draw], now: Millis) -> Result<Grant, Refusal> {
    store.acquire(draws, now)
}

fn admitted(result: &Result<Grant, Refusal>) -> bool {
    match result {
        Ok(_) => true,
        Err(Refusal::Exhausted(_)) => false,
        Err(Refusal::Unavailable(why)) => panic!("store unavailable: {why}"),
    }
}

/// Runs every check.
pub fn run_all(make: &dyn Fn() -> Arc<dyn CounterStore>) {
    admits_up_to_max_then_refuses_with_a_retry_time(make());
    the_window_slides(make());
    draws_are_all_or_nothing(make());
    release_gives_quota_back(make());
    costs_are_counted(make());
    keys_are_independent(make());
    concurrent_callers_never_exceed_max(make);
    window_guarantee_under_pseudo_random_times(make());
}

pub fn admits_up_to_max_then_refuses_with_a_retry_time(store: Arc<dyn CounterStore>) {
    let d = [draw("a", 3.0, 1.0, MINUTE)];
    for i in 0..3 {
        assert!(
            admitted(&take(&*store, &d, T0 + i)),
            "call {i} of 3 must be admitted"
        );
    }
    match take(&*store, &d, T0 + 10) {
        Err(Refusal::Exhausted(e)) => {
            assert_eq!(e.counter, "a");
            assert!(
                e.retry_after_ms >= 1 && e.retry_after_ms <= MINUTE,
                "retry_after_ms {}",
                e.retry_after_ms
            );
            assert_eq!(e.max, 3.0);
        }
        other => panic!("the 4th call must be refused as exhausted, got {other:?}"),
    }
}

pub fn the_window_slides(store: Arc<dyn CounterStore>) {
    let d = [draw("b", 2.0, 1.0, MINUTE)];
    assert!(admitted(&take(&*store, &d, T0)));
    assert!(admitted(&take(&*store, &d, T0 + 30_000)));
    assert!(
        !admitted(&take(&*store, &d, T0 + 59_000)),
        "2 in the last minute"
    );
    assert!(
        admitted(&take(&*store, &d, T0 + MINUTE + 1)),
        "the first call has left the window"
    );
    assert!(!admitted(&take(&*store, &d, T0 + MINUTE + 2)));
}

pub fn draws_are_all_or_nothing(store: Arc<dyn CounterStore>) {
    let roomy = draw("c1", 10.0, 1.0, MINUTE);
    let tight = draw("c2", 1.0, 1.0, MINUTE);
    assert!(admitted(&take(
        &*store,
        &[roomy.clone(), tight.clone()],
        T0
    )));
    assert!(!admitted(&take(
        &*store,
        &[roomy.clone(), tight.clone()],
        T0 + 1
    )));
    // The refused call took nothing from the roomy counter: 9 more fit.
    for i in 0..9 {
        assert!(
            admitted(&take(&*store, std::slice::from_ref(&roomy), T0 + 2 + i)),
            "roomy call {i}"
        );
    }
    assert!(!admitted(&take(
        &*store,
        std::slice::from_ref(&roomy),
        T0 + 20
    )));
}

pub fn release_gives_quota_back(store: Arc<dyn CounterStore>) {
    let d = [draw("r", 1.0, 1.0, MINUTE)];
    let grant = take(&*store, &d, T0).expect("first call admitted");
    assert!(!admitted(&take(&*store, &d, T0 + 1)));
    store.release(&grant);
    assert!(
        admitted(&take(&*store, &d, T0 + 2)),
        "released quota is available again"
    );
}

pub fn costs_are_counted(store: Arc<dyn CounterStore>) {
    let big = [draw("s", 100.0, 60.0, MINUTE)];
    let small = [draw("s", 100.0, 40.0, MINUTE)];
    assert!(admitted(&take(&*store, &big, T0)));
    assert!(!admitted(&take(&*store, &big, T0 + 1)), "60 + 60 > 100");
    assert!(admitted(&take(&*store, &small, T0 + 2)), "60 + 40 = 100");
}

pub fn keys_are_independent(store: Arc<dyn CounterStore>) {
    let mut other = draw("k", 1.0, 1.0, MINUTE);
    other.key = "k\u{1f}grant\u{1f}h".into();
    assert!(admitted(&take(&*store, &[draw("k", 1.0, 1.0, MINUTE)], T0)));
    assert!(
        admitted(&take(&*store, &[other], T0)),
        "another grant's budget"
    );
}

/// 8 threads, 200 calls each, against max 30: exactly 30 admitted.
pub fn concurrent_callers_never_exceed_max(make: &dyn Fn() -> Arc<dyn CounterStore>) {
    let store = make();
    let d = Arc::new([draw("x", 30.0, 1.0, MINUTE)]);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            let d = d.clone();
            std::thread::spawn(move || {
                (0..200u64)
                    .filter(|i| admitted(&store.acquire(&d[..], T0 + t * 200 + i)))
                    .count()
            })
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
    assert_eq!(
        total, 30,
        "exactly max calls admitted by concurrent callers"
    );
}

/// Never more than `max` units in any window-length interval, whatever the
/// call times (a fixed pseudo-random sequence).
pub fn window_guarantee_under_pseudo_random_times(store: Arc<dyn CounterStore>) {
    let window = 10_000;
    let max = 5.0;
    let d = [draw("w", max, 1.0, window)];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut now = T0;
    let mut admitted_at = Vec::new();
    for _ in 0..400 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        now += seed % 1_500;
        if admitted(&take(&*store, &d, now)) {
            admitted_at.push(now);
        }
    }
    for (i, &start) in admitted_at.iter().enumerate() {
        let inside = admitted_at[i..]
            .iter()
            .take_while(|&&t| t < start + window)
            .count();
        assert!(
            inside as f64 <= max,
            "{inside} admitted within {window} ms from {start}"
        );
    }
    assert!(
        admitted_at.len() > 20,
        "the limit must not refuse everything"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_memory_store_passes_the_suite() {
        super::run_all(&|| std::sync::Arc::new(crate::MemoryStore::new()));
    }
}
