//! The sliding log behind one counter key.
//!
//! A limit admits at most `max` units in any interval of length `window`.
//! The log holds entries `(start, end, units)`; an admission less than
//! `window / 64` after the start of the newest entry merges into it, so a key
//! holds at most about 65 live entries whatever the call rate. An entry
//! expires when `end + window <= now`. That is exact for calls more than
//! `window / 64` apart and conservative otherwise: merged units are kept up
//! to `window / 64` longer than they need to be, never shorter.

use std::collections::VecDeque;

use crate::Millis;

/// Slack for float sums of fractional costs (units are checked as `f64`).
const EPSILON: f64 = 1e-9;

#[derive(Debug, Clone, Copy)]
struct Entry {
    start: Millis,
    end: Millis,
    units: f64,
}

#[derive(Debug, Clone)]
pub(crate) struct Window {
    length: u64,
    entries: VecDeque<Entry>,
    total: f64,
}

/// The answer to "may `cost` more units be taken now?".
pub(crate) enum Room {
    Fits,
    /// Does not fit; it will after this many milliseconds (or never, when
    /// the cost is above `max`: then the window length is reported).
    Full {
        retry_after_ms: u64,
    },
}

impl Window {
    pub(crate) fn new(length: u64) -> Window {
        Window {
            length: length.max(1),
            entries: VecDeque::new(),
            total: 0.0,
        }
    }

    /// The window length can change when a policy is reloaded; the log stays.
    pub(crate) fn set_length(&mut self, length: u64) {
        self.length = length.max(1);
    }

    /// Drops entries that no longer count at `now`.
    pub(crate) fn expire(&mut self, now: Millis) {
        while let Some(first) = self.entries.front() {
            if first.end.saturating_add(self.length) <= now {
                self.total -= first.units;
                self.entries.pop_front();
            } else {
                break;
            }
        }
        if self.entries.is_empty() || self.total < 0.0 {
            self.total = 0.0;
        }
    }

    /// Units taken in the window ending at the last `expire`.
    pub(crate) fn used(&self) -> f64 {
        self.total
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `extra + cost` units fit under `max` (after `expire(now)`).
    /// `extra` is what earlier draws of the same call put on this key.
    pub(crate) fn room(&self, now: Millis, extra: f64, cost: f64, max: f64) -> Room {
        let needed = self.total + extra + cost;
        if needed <= max + EPSILON {
            return Room::Fits;
        }
        if extra + cost > max + EPSILON {
            return Room::Full {
                retry_after_ms: self.length,
            };
        }
        let mut remaining = self.total;
        for entry in &self.entries {
            remaining -= entry.units;
            if remaining + extra + cost <= max + EPSILON {
                let expires = entry.end.saturating_add(self.length);
                return Room::Full {
                    retry_after_ms: expires.saturating_sub(now).max(1),
                };
            }
        }
        Room::Full {
            retry_after_ms: self.length,
        }
    }

    /// Records `cost` units taken at `now`.
    pub(crate) fn take(&mut self, now: Millis, cost: f64) {
        if cost <= 0.0 {
            return;
        }
        self.total += cost;
        let merge_span = (self.length / 64).max(1);
        if let Some(last) = self.entries.back_mut() {
            // A clock that steps back merges into the newest entry: its units
            // then expire with it, which is later than they would otherwise.
            if now < last.end || now - last.start < merge_span {
                last.end = last.end.max(now);
                last.units += cost;
                return;
            }
        }
        self.entries.push_back(Entry {
            start: now,
            end: now,
            units: cost,
        });
    }

    /// Gives back `cost` units taken at `at`, if the entry holding them is
    /// still in the log.
    pub(crate) fn give_back(&mut self, at: Millis, cost: f64) {
        if cost <= 0.0 {
            return;
        }
        let Some(index) = self
            .entries
            .iter()
            .position(|e| e.start <= at && at <= e.end)
        else {
            return;
        };
        let entry = &mut self.entries[index];
        let returned = cost.min(entry.units);
        entry.units -= returned;
        self.total = (self.total - returned).max(0.0);
        if entry.units <= EPSILON {
            self.total = (self.total - entry.units).max(0.0);
            self.entries.remove(index);
        }
        if self.entries.is_empty() {
            self.total = 0.0;
        }
    }

    #[cfg(test)]
    pub(crate) fn entry_count(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;

    fn admit(w: &mut Window, now: Millis, cost: f64, max: f64) -> bool {
        w.expire(now);
        match w.room(now, 0.0, cost, max) {
            Room::Fits => {
                w.take(now, cost);
                true
            }
            Room::Full { .. } => false,
        }
    }

    #[test]
    fn entries_stay_bounded_under_dense_calls() {
        let mut w = Window::new(MINUTE);
        for t in 0..(3 * MINUTE) {
            admit(&mut w, t, 1.0, 1e12);
            assert!(w.entry_count() <= 66, "{} entries at {t}", w.entry_count());
        }
    }

    #[test]
    fn retry_after_points_at_the_oldest_entry_that_frees_room() {
        let mut w = Window::new(MINUTE);
        assert!(admit(&mut w, 0, 1.0, 2.0));
        assert!(admit(&mut w, 10_000, 1.0, 2.0));
        assert!(!admit(&mut w, 20_000, 1.0, 2.0));
        match w.room(20_000, 0.0, 1.0, 2.0) {
            Room::Full { retry_after_ms } => assert_eq!(retry_after_ms, 40_000),
            Room::Fits => panic!("should be full"),
        }
        match w.room(20_000, 0.0, 5.0, 2.0) {
            Room::Full { retry_after_ms } => assert_eq!(retry_after_ms, MINUTE),
            Room::Fits => panic!("should be full"),
        }
        assert!(admit(&mut w, 60_000, 1.0, 2.0));
    }

    #[test]
    fn give_back_only_touches_the_entry_that_holds_the_call() {
        let mut w = Window::new(MINUTE);
        w.take(0, 3.0);
        w.take(30_000, 2.0);
        w.give_back(30_000, 5.0);
        assert_eq!(w.used(), 3.0);
        w.give_back(12_345, 1.0); // no entry holds it
        assert_eq!(w.used(), 3.0);
        w.give_back(0, 1.0);
        assert_eq!(w.used(), 2.0);
    }
}
