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

/// Runs every check of stores that share one backend: `group(n)` gives `n`
/// stores on one fresh, empty backend (as gateway processes or replicas
/// sharing a data directory or a Redis are), each holding slices of its own
/// ([`crate::lease`]).
pub fn run_shared(group: &dyn Fn(usize) -> Vec<Arc<dyn CounterStore>>) {
    small_limits_are_exact_across_stores(group);
    a_large_limit_admits_exactly_max_from_one_store(group(1).remove(0));
    large_limits_are_all_or_nothing_with_small_ones(group(1).remove(0));
    concurrent_callers_spend_a_large_limit_exactly(group(1).remove(0));
    large_limits_keep_the_window_across_concurrent_stores(group);
}

/// Three stores, calls in turn: exactly `max` of them admitted, for `max`
/// 30 (the replica bar: 30 of 60) and 1,000.
pub fn small_limits_are_exact_across_stores(group: &dyn Fn(usize) -> Vec<Arc<dyn CounterStore>>) {
    for (max, calls) in [(30.0, 60u64), (1_000.0, 3_000)] {
        let stores = group(3);
        let d = [draw("exact", max, 1.0, MINUTE)];
        let admitted_count = (0..calls)
            .filter(|&i| admitted(&take(&*stores[(i % 3) as usize], &d, T0 + i / 10)))
            .count();
        assert_eq!(admitted_count as f64, max, "{max} per minute over 3 stores");
    }
}

/// One store alone spends its slices to the last unit: exactly `max`
/// admitted, and a released call (one spent from a slice) frees one unit.
pub fn a_large_limit_admits_exactly_max_from_one_store(store: Arc<dyn CounterStore>) {
    let max = 20_000u64;
    let d = [draw("large", max as f64, 1.0, MINUTE)];
    let mut grants = Vec::new();
    let mut refused = 0;
    for i in 0..max + 500 {
        match take(&*store, &d, T0 + i / 10) {
            Ok(grant) => grants.push(grant),
            Err(Refusal::Exhausted(_)) => refused += 1,
            Err(Refusal::Unavailable(why)) => panic!("store unavailable: {why}"),
        }
    }
    assert_eq!(
        grants.len() as u64,
        max,
        "exactly max admitted, {refused} refused"
    );
    let now = T0 + (max + 500) / 10;
    store.release(&grants[1_234]);
    assert!(admitted(&take(&*store, &d, now)), "the released unit");
    assert!(!admitted(&take(&*store, &d, now + 1)), "and no more");
}

/// 8 threads on one store, 3,000 calls each in one millisecond, against
/// 20,000 per minute: exactly 20,000 admitted (slices race, none is lost).
pub fn concurrent_callers_spend_a_large_limit_exactly(store: Arc<dyn CounterStore>) {
    let d = Arc::new([draw("racing", 20_000.0, 1.0, MINUTE)]);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let d = d.clone();
            std::thread::spawn(move || {
                (0..3_000)
                    .filter(|_| admitted(&store.acquire(&d[..], T0)))
                    .count()
            })
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
    assert_eq!(total, 20_000, "exactly max admitted by concurrent callers");
}

/// A call drawing on a large limit (held in a slice) and a small one
/// (exhausted) is refused and spends nothing of the large one.
pub fn large_limits_are_all_or_nothing_with_small_ones(store: Arc<dyn CounterStore>) {
    let roomy = draw("roomy", 20_000.0, 1.0, MINUTE);
    let tight = draw("tight", 1.0, 1.0, MINUTE);
    let both = [roomy.clone(), tight];
    assert!(admitted(&take(&*store, &both, T0)));
    for i in 0..100 {
        assert!(
            !admitted(&take(&*store, &both, T0 + 1 + i / 10)),
            "call {i}"
        );
    }
    let alone = (0..20_100u64)
        .filter(|i| {
            admitted(&take(
                &*store,
                std::slice::from_ref(&roomy),
                T0 + 20 + i / 10,
            ))
        })
        .count();
    assert_eq!(alone, 19_999, "the refused calls took nothing");
}

/// Three stores on three threads against 20,000 per 10 s, 1.5 times as
/// many calls as fit, over three windows: never more than `max` admitted in
/// any 10 s, and the first window admits all but at most 1%. The threads
/// share a fake clock, held across each call so that the stores see times
/// in the order they are called (the sliding log assumes that of its
/// clocks); which store calls next is up to the scheduler.
pub fn large_limits_keep_the_window_across_concurrent_stores(
    group: &dyn Fn(usize) -> Vec<Arc<dyn CounterStore>>,
) {
    let window = 10_000;
    let max = 20_000.0;
    let per_store = 30_000;
    let clock = Arc::new(std::sync::Mutex::new(0u64));
    let threads: Vec<_> = group(3)
        .into_iter()
        .map(|store| {
            let clock = clock.clone();
            std::thread::spawn(move || {
                let d = [draw("shared", max, 1.0, window)];
                let mut at = Vec::new();
                for _ in 0..per_store {
                    let mut ticks = clock.lock().expect("clock");
                    *ticks += 1;
                    let now = T0 + *ticks / 3;
                    if admitted(&take(&*store, &d, now)) {
                        at.push(now);
                    }
                }
                at
            })
        })
        .collect();
    let mut at: Vec<Millis> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("caller thread"))
        .collect();
    at.sort_unstable();
    let mut end = 0;
    for (i, &start) in at.iter().enumerate() {
        while end < at.len() && at[end] < start + window {
            end += 1;
        }
        assert!(
            (end - i) as f64 <= max,
            "{} admitted within {window} ms from {start}",
            end - i
        );
    }
    let first = at.iter().take_while(|&&t| t < T0 + window).count();
    assert!(
        first as f64 >= max * 0.99,
        "{first} of {max} admitted in the first window"
    );
    assert!(at.len() as f64 >= 2.0 * max, "{} admitted in all", at.len());
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_memory_store_passes_the_suite() {
        super::run_all(&|| std::sync::Arc::new(crate::MemoryStore::new()));
    }

    #[test]
    fn the_memory_store_passes_the_shared_suite() {
        super::run_shared(&|n| {
            let store: std::sync::Arc<dyn crate::CounterStore> =
                std::sync::Arc::new(crate::MemoryStore::new());
            vec![store; n]
        });
    }
}
