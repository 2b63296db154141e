//! The sliding log behind one counter key, and its stored form: every
//! counter store (in memory here, SQLite and Redis elsewhere) keeps this log.
//!
//! A limit admits at most `max` units in any interval of length `window`.
//! The log holds entries `(start, end, units)`; an admission less than
//! `window / 64` after the start of the newest entry merges into it, so a key
//! holds at most about 65 live entries whatever the call rate. An entry
//! expires when `end + window <= now`. That is exact for calls more than
//! `window / 64` apart and conservative otherwise: merged units are kept up
//! to `window / 64` longer than they need to be, never shorter.
//!
//! Stored ([`Window::encode`], [`Window::decode`]), a log is 24 bytes per
//! entry: start and end as little-endian `u64` milliseconds, units as a
//! little-endian `f64`.

use std::collections::VecDeque;

use crate::Millis;

/// Slack for float sums of fractional costs (units are checked as `f64`).
const EPSILON: f64 = 1e-9;

/// Bytes of one stored entry.
const ENTRY_BYTES: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    start: Millis,
    end: Millis,
    units: f64,
}

/// The sliding log of one counter key (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    length: u64,
    entries: VecDeque<Entry>,
    total: f64,
}

/// The answer to "may `cost` more units be taken now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    Fits,
    /// Does not fit; it will after this many milliseconds (or never, when
    /// the cost is above `max`: then the window length is reported).
    Full {
        retry_after_ms: u64,
    },
}

/// A stored log that is not a whole number of entries long (its length in
/// bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub usize);

impl Window {
    /// An empty log for a window of `length` milliseconds.
    pub fn new(length: u64) -> Window {
        Window {
            length: length.max(1),
            entries: VecDeque::new(),
            total: 0.0,
        }
    }

    /// The window length can change when a policy is reloaded; the log stays.
    pub fn set_length(&mut self, length: u64) {
        self.length = length.max(1);
    }

    /// The window length in milliseconds.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// Reads a stored log; `length` is the window length of the draw now.
    pub fn decode(bytes: &[u8], length: u64) -> Result<Window, Malformed> {
        if bytes.len() % ENTRY_BYTES != 0 {
            return Err(Malformed(bytes.len()));
        }
        let mut window = Window::new(length);
        window.entries.reserve(bytes.len() / ENTRY_BYTES);
        for chunk in bytes.chunks_exact(ENTRY_BYTES) {
            let word = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&chunk[i * 8..i * 8 + 8]);
                b
            };
            let entry = Entry {
                start: u64::from_le_bytes(word(0)),
                end: u64::from_le_bytes(word(1)),
                units: f64::from_le_bytes(word(2)),
            };
            window.total += entry.units;
            window.entries.push_back(entry);
        }
        Ok(window)
    }

    /// The stored form (see the module docs), written over `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.entries.len() * ENTRY_BYTES);
        for entry in &self.entries {
            out.extend_from_slice(&entry.start.to_le_bytes());
            out.extend_from_slice(&entry.end.to_le_bytes());
            out.extend_from_slice(&entry.units.to_le_bytes());
        }
    }

    /// When every entry has expired (a stored log may then be swept).
    pub fn empty_at(&self) -> Millis {
        self.entries
            .back()
            .map_or(0, |last| last.end.saturating_add(self.length))
    }

    /// Drops entries that no longer count at `now`; whether any were dropped.
    pub fn expire(&mut self, now: Millis) -> bool {
        let mut expired = false;
        while let Some(first) = self.entries.front() {
            if first.end.saturating_add(self.length) <= now {
                self.total -= first.units;
                self.entries.pop_front();
                expired = true;
            } else {
                break;
            }
        }
        if self.entries.is_empty() || self.total < 0.0 {
            self.total = 0.0;
        }
        expired
    }

    /// Units taken in the window ending at the last `expire`.
    pub fn used(&self) -> f64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in the log (at most about 65 once expired).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether `extra + cost` units fit under `max` (after `expire(now)`).
    /// `extra` is what earlier draws of the same call put on this key.
    pub fn room(&self, now: Millis, extra: f64, cost: f64, max: f64) -> Room {
        if self.total + extra + cost <= max + EPSILON {
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
    pub fn take(&mut self, now: Millis, cost: f64) {
        self.take_until(now, now, cost);
    }

    /// Records `cost` units taken at `now` to be spent until `until` (a
    /// slice of [`crate::lease`]): they count until `until + length`. Merges
    /// as [`Window::take`] does, the entry then ending at `until` or later.
    pub fn take_until(&mut self, now: Millis, until: Millis, cost: f64) {
        if cost <= 0.0 {
            return;
        }
        let until = until.max(now);
        self.total += cost;
        let merge_span = (self.length / 64).max(1);
        if let Some(last) = self.entries.back_mut() {
            // A clock that steps back (or another process's clock a little
            // behind this one) merges into the newest entry: its units then
            // expire with it, later than they would otherwise, never sooner.
            if now < last.end || now - last.start < merge_span {
                last.end = last.end.max(until);
                last.units += cost;
                return;
            }
        }
        self.entries.push_back(Entry {
            start: now,
            end: until,
            units: cost,
        });
    }

    /// Gives back the unspent `units` of a slice taken at `start`, from the
    /// newest entry that holds `start` (the one [`Window::take_until`] put
    /// them in: entries start where the one before ends, or later).
    pub fn give_back_unspent(&mut self, start: Millis, units: f64) -> bool {
        if units <= 0.0 {
            return false;
        }
        let Some(index) = self
            .entries
            .iter()
            .rposition(|e| e.start <= start && start <= e.end)
        else {
            return false;
        };
        self.remove_units(index, units);
        true
    }

    /// Gives back `cost` units taken at `at`, if the entry holding them is
    /// still in the log; whether anything was given back.
    pub fn give_back(&mut self, at: Millis, cost: f64) -> bool {
        if cost <= 0.0 {
            return false;
        }
        let Some(index) = self
            .entries
            .iter()
            .position(|e| e.start <= at && at <= e.end)
        else {
            return false;
        };
        self.remove_units(index, cost);
        true
    }

    fn remove_units(&mut self, index: usize, cost: f64) {
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

    fn round_trip(w: &Window) -> Window {
        let mut bytes = Vec::new();
        w.encode(&mut bytes);
        Window::decode(&bytes, w.length()).expect("a log it encoded")
    }

    #[test]
    fn encoding_round_trips() {
        let mut w = Window::new(MINUTE);
        assert_eq!(round_trip(&w), w);
        w.take(1_700_000_000_000, 1.5);
        w.take(1_700_000_010_000, 0.25);
        assert_eq!(round_trip(&w), w);
    }

    #[test]
    fn the_stored_form_is_24_bytes_an_entry() {
        let mut w = Window::new(MINUTE);
        w.take(1, 0.5);
        let mut bytes = Vec::new();
        w.encode(&mut bytes);
        let mut expected = Vec::new();
        expected.extend_from_slice(&1u64.to_le_bytes());
        expected.extend_from_slice(&1u64.to_le_bytes());
        expected.extend_from_slice(&0.5f64.to_le_bytes());
        assert_eq!(bytes, expected);
    }

    #[test]
    fn a_log_that_is_not_whole_entries_is_refused() {
        assert_eq!(Window::decode(&[0; 25], MINUTE), Err(Malformed(25)));
    }

    #[test]
    fn entries_stay_bounded_under_dense_calls() {
        let mut w = Window::new(MINUTE);
        for t in 0..(3 * MINUTE) {
            admit(&mut w, t, 1.0, 1e12);
            assert!(w.len() <= 66, "{} entries at {t}", w.len());
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
        assert!(w.give_back(30_000, 5.0));
        assert_eq!(w.used(), 3.0);
        assert!(!w.give_back(12_345, 1.0), "no entry holds it");
        assert_eq!(w.used(), 3.0);
        assert!(w.give_back(0, 1.0));
        assert_eq!(w.used(), 2.0);
    }

    #[test]
    fn a_slice_counts_until_a_window_after_its_span() {
        let mut w = Window::new(MINUTE);
        w.take_until(1_000, 1_937, 10.0);
        assert_eq!(w.empty_at(), 1_937 + MINUTE);
        w.take(1_500, 1.0);
        assert_eq!(w.len(), 1, "a call inside the span merges");
        assert!(w.give_back_unspent(1_000, 4.0));
        assert_eq!(w.used(), 7.0);
        w.take(1_937 + MINUTE / 64, 1.0);
        assert!(w.give_back_unspent(1_000, 100.0));
        assert_eq!(w.used(), 1.0, "only the slice's entry gave units back");
        assert!(!w.expire(1_937 + MINUTE - 1));
    }

    #[test]
    fn the_log_is_empty_one_window_after_its_newest_entry() {
        let mut w = Window::new(MINUTE);
        w.take(1_000, 1.0);
        w.take(5_000, 1.0);
        assert_eq!(w.empty_at(), 5_000 + MINUTE);
        assert!(w.expire(1_000 + MINUTE));
        assert!(!w.is_empty());
        assert!(w.expire(5_000 + MINUTE));
        assert!(w.is_empty());
    }
}
