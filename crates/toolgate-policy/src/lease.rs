//! Budget leasing: how a durable counter store (SQLite, Redis) admits most
//! calls of a large limit without a durable step per call.
//!
//! When a durable step admits a call on a key whose limit has a large
//! remaining budget, it also takes a *slice* ([`slice`]: `max / 4096` units,
//! at least [`MIN_SLICE`]) in the same atomic step, recorded in the key's
//! log ([`crate::window::Window::take_until`]) as one entry spanning
//! `[now, now + span]` ([`span`]: `window / 64`). The process then admits
//! later calls on that key from the slice in memory ([`Leases::spend`]),
//! for as long as the slice lasts and the clock is inside the span.
//!
//! Why the window guarantee holds: every unit spent from a slice is spent at
//! a time inside its entry's span, and an entry counts until `end + window`,
//! so for any interval of `window` length, the durable step that took the
//! latest slice (or call) spent inside it saw every other entry spent inside
//! it still unexpired, and admitted only when they all fit under `max`.
//!
//! Where it falls back to one durable step per call:
//! - limits whose slice would be below [`MIN_SLICE`] units (`max` under
//!   16,384 — every limit up to 1,000 is exact, as without leasing);
//! - the last [`RESERVE`] (1%) of a window's budget: no slice is taken
//!   that would leave less than that, so the last calls are exact too;
//! - a slice that is spent, out of its span, or for another `max` or
//!   window (a reloaded policy);
//! - a call that also draws on a limit that does not lease
//!   ([`call_leases`]): it takes a durable step anyway.
//!
//! What is given up: the unspent part of a slice counts as used in the
//! window of every other process until it is given back, which the next
//! durable step on that key does (in the same atomic step that takes the
//! next slice). So with other processes holding slices, a process may be
//! refused while up to `max / 4096` units per other process are unspent:
//! under 1% of `max` for up to 40 processes sharing a key. A slice of a
//! process that dies is never given back (lost to the window: the error is
//! on the safe side). Quota given back by [`crate::CounterStore::release`]
//! goes to the durable log, as before.
//!
//! No IO and no clock here: the stores keep a [`Leases`] beside their
//! connection, under the same lock.

use std::collections::HashMap;

use crate::policy::Draw;
use crate::store::{Grant, Taken};
use crate::Millis;

/// A slice is `max / SLICE_DIVISOR` units.
pub const SLICE_DIVISOR: f64 = 4096.0;

/// Below this many units a slice is not worth taking: the key goes one
/// durable step per call.
pub const MIN_SLICE: f64 = 4.0;

/// No slice is taken that would leave less than this fraction of `max` in
/// the durable log: the last of a window's budget goes call by call.
pub const RESERVE: f64 = 0.01;

/// Slack for float sums of fractional costs.
const EPSILON: f64 = 1e-9;

/// Below this many leases the map is never swept.
const MIN_SWEEP: usize = 1024;

/// How long a slice taken at `now` may be spent: until `now + span(window)`
/// (the window's merge span, `window / 64`, at least 1 ms).
pub fn span(window: u64) -> u64 {
    (window / 64).max(1)
}

/// Units to take ahead, beyond the call's own cost, on a key whose log will
/// hold `used` units once the call is counted: `max / 4096` when that is at
/// least [`MIN_SLICE`] and leaves at least [`RESERVE`] of `max`, else 0.
pub fn slice(max: f64, used: f64) -> f64 {
    let slice = slice_size(max);
    if slice > 0.0 && used + slice <= ceiling(max) {
        slice
    } else {
        0.0
    }
}

/// The units of a slice of `max`: `max / 4096`, or 0 when that is under
/// [`MIN_SLICE`] (the limit goes call by call).
pub fn slice_size(max: f64) -> f64 {
    let slice = (max / SLICE_DIVISOR).floor();
    if !max.is_finite() || slice.is_nan() || slice < MIN_SLICE {
        return 0.0;
    }
    slice
}

/// A slice is taken only while the log, the slice included, holds at most
/// this: `max` less [`RESERVE`].
pub fn ceiling(max: f64) -> f64 {
    max - max * RESERVE
}

/// Whether slices are worth taking for a call: only when every one of its
/// draws is on a limit that leases ([`slice_size`] above 0, one limit and
/// window per key). A call with a small limit takes a durable step every
/// time anyway, so slices of its other limits would save nothing (and
/// would only hold budget away from other processes).
pub fn call_leases(draws: &[Draw]) -> bool {
    !draws.is_empty()
        && draws.iter().all(|d| {
            slice_size(d.max) > 0.0
                && draws
                    .iter()
                    .filter(|o| o.key == d.key)
                    .all(|o| o.max == d.max && o.window == d.window)
        })
}

/// A slice held in memory: units taken durably at `start`, spendable until
/// `end` for draws with this `max` and `window`.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub start: Millis,
    pub end: Millis,
    pub max: f64,
    pub window: u64,
    /// Units not spent yet.
    pub left: f64,
    /// Units the durable log held, the slice included, when it was taken
    /// (what a grant from the slice reports as used, less `left`).
    pub used: f64,
}

impl Lease {
    /// A slice of `units` taken at `now` for `draw`, the log then holding
    /// `used` units.
    pub fn new(draw: &Draw, now: Millis, units: f64, used: f64) -> Lease {
        Lease {
            start: now,
            end: now.saturating_add(span(draw.window)),
            max: draw.max,
            window: draw.window,
            left: units,
            used,
        }
    }

    fn serves(&self, draw: &Draw, now: Millis) -> bool {
        self.max == draw.max && self.window == draw.window && self.start <= now && now <= self.end
    }
}

/// The slices a store holds, by draw key.
#[derive(Debug, Default)]
pub struct Leases {
    map: HashMap<String, Lease>,
    sweep_at: usize,
}

impl Leases {
    pub fn new() -> Leases {
        Leases::default()
    }

    /// Slices held (spent or not, until swept).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every slice held, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Lease)> {
        self.map.iter().map(|(k, l)| (k.as_str(), l))
    }

    /// The slice of `key`, if one is held.
    pub fn get(&self, key: &str) -> Option<&Lease> {
        self.map.get(key)
    }

    /// Whether the slice of `draw`'s key can pay for every draw of `draws`
    /// on that key at `now`.
    pub fn covers(&self, draws: &[Draw], draw: &Draw, now: Millis) -> bool {
        let Some(lease) = self.map.get(&draw.key) else {
            return false;
        };
        let mut need = 0.0;
        for d in draws.iter().filter(|d| d.key == draw.key) {
            if !lease.serves(d, now) {
                return false;
            }
            need += d.cost;
        }
        need <= lease.left + EPSILON
    }

    /// Admits the whole call from slices when they cover every draw
    /// ([`Leases::covers`]); `None`, with nothing spent, otherwise.
    pub fn spend(&mut self, draws: &[Draw], now: Millis) -> Option<Grant> {
        if draws.is_empty() || !draws.iter().all(|d| self.covers(draws, d, now)) {
            return None;
        }
        let taken = draws.iter().map(|d| self.spend_one(d, now)).collect();
        Some(Grant { taken })
    }

    /// Spends one draw from its key's slice, which must cover it.
    pub fn spend_one(&mut self, draw: &Draw, now: Millis) -> Taken {
        let lease = self
            .map
            .get_mut(&draw.key)
            .expect("spend_one on a key with a slice");
        lease.left = (lease.left - draw.cost).max(0.0);
        Taken::new(draw, now, lease.used - lease.left)
    }

    /// Drops the slice of `key` (its unspent units are for the caller to
    /// give back).
    pub fn remove(&mut self, key: &str) -> Option<Lease> {
        self.map.remove(key)
    }

    /// Holds `lease` for `key`, replacing any slice it had; slices past
    /// their span are swept (their unspent units lost to the window) when
    /// the map has doubled since the last sweep.
    pub fn insert(&mut self, key: &str, lease: Lease) {
        if self.map.len() >= self.sweep_at.max(MIN_SWEEP) {
            let now = lease.start;
            self.map.retain(|_, l| l.end >= now && l.left > EPSILON);
            self.sweep_at = (self.map.len() * 2).max(MIN_SWEEP);
        }
        match self.map.get_mut(key) {
            Some(held) => *held = lease,
            None => {
                self.map.insert(key.to_string(), lease);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RuleRef;

    fn draw(key: &str, max: f64, cost: f64) -> Draw {
        Draw {
            counter: key.into(),
            key: key.into(),
            window: 64_000,
            max,
            cost,
            rule: RuleRef::from_static("t"),
        }
    }

    #[test]
    fn small_limits_take_no_slice() {
        assert_eq!(slice(30.0, 1.0), 0.0);
        assert_eq!(slice(1_000.0, 1.0), 0.0);
        assert_eq!(slice(16_383.0, 1.0), 0.0);
        assert_eq!(slice(16_384.0, 1.0), 4.0);
        assert_eq!(slice(1e9, 1.0), 244_140.0);
    }

    #[test]
    fn the_last_percent_goes_call_by_call() {
        assert_eq!(slice(1e6, 1e6 * 0.98), 244.0);
        assert_eq!(slice(1e6, 1e6 * 0.99 - 243.0), 0.0);
        assert_eq!(slice(f64::INFINITY, 0.0), 0.0);
    }

    #[test]
    fn a_call_with_a_small_limit_takes_no_slices() {
        assert!(call_leases(&[draw("a", 1e6, 1.0), draw("b", 1e9, 1.0)]));
        assert!(!call_leases(&[draw("a", 1e6, 1.0), draw("b", 30.0, 1.0)]));
        assert!(!call_leases(&[draw("a", 1e6, 1.0), draw("a", 2e6, 1.0)]));
        assert!(!call_leases(&[]));
    }

    #[test]
    fn a_slice_serves_its_span_its_limit_and_its_units() {
        let d = draw("k", 1e6, 1.0);
        let mut leases = Leases::new();
        leases.insert("k", Lease::new(&d, 1_000, 2.0, 500.0));
        assert_eq!(leases.get("k").map(|l| l.end), Some(2_000));
        assert!(
            leases.spend(std::slice::from_ref(&d), 999).is_none(),
            "before"
        );
        assert!(
            leases.spend(std::slice::from_ref(&d), 2_001).is_none(),
            "after"
        );
        let other = draw("k", 2e6, 1.0);
        assert!(leases.spend(&[other], 1_500).is_none(), "another max");
        let grant = leases.spend(&[d.clone(), d.clone()], 1_500).expect("2 fit");
        assert_eq!(grant.taken[1].used, 500.0);
        assert!(
            leases.spend(std::slice::from_ref(&d), 1_501).is_none(),
            "spent"
        );
    }

    #[test]
    fn a_call_is_served_from_slices_only_when_all_its_draws_are() {
        let a = draw("a", 1e6, 1.0);
        let b = draw("b", 1e6, 1.0);
        let mut leases = Leases::new();
        leases.insert("a", Lease::new(&a, 0, 5.0, 5.0));
        assert!(leases.spend(&[a.clone(), b], 1).is_none());
        assert_eq!(leases.get("a").map(|l| l.left), Some(5.0), "nothing spent");
    }
}
