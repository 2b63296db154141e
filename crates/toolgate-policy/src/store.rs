//! Counter state: the [`CounterStore`] interface and [`MemoryStore`], the
//! in-memory implementation. A store checks and updates all of a call's
//! draws in one atomic step: either every draw is taken or none is.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::policy::{Draw, RuleRef};
use crate::window::{Room, Window};
use crate::{Millis, WindowMs};

/// The counter state interface. Each `acquire` checks and updates in one
/// atomic step (all-or-nothing over all draws), never a read followed by a
/// separate write.
///
/// Implementations: [`MemoryStore`] here; the embedded and Redis stores live
/// in crates of their own. `acquire` may block (a local database, a network
/// round trip); async callers use [`CounterStore::acquire_async`], which
/// stores that wait on the network override.
pub trait CounterStore: Send + Sync {
    /// Takes every draw at `now`, or none of them when one does not fit.
    fn acquire(&self, draws: &[Draw], now: Millis) -> Result<Grant, Refusal>;
    /// Gives back what a grant took (the gateway calls this when the
    /// upstream answers with a JSON-RPC error). Quota whose log entry has
    /// already expired is not given back twice. Best effort: a store that
    /// cannot be reached keeps the quota taken (fail closed).
    fn release(&self, grant: &Grant);
    /// [`CounterStore::acquire`] for callers on an async runtime.
    fn acquire_async<'a>(
        &'a self,
        draws: Vec<Draw>,
        now: Millis,
    ) -> BoxFuture<'a, Result<Grant, Refusal>> {
        let result = self.acquire(&draws, now);
        Box::pin(std::future::ready(result))
    }
}

/// What a store does when its backend cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Refuse calls that need counters ([`Refusal::Unavailable`]).
    #[default]
    Closed,
    /// Admit them without counting.
    Open,
}

/// A boxed future (the policy crate depends on no async runtime).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Why `acquire` did not take the draws.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// A limit has no room.
    Exhausted(Exhausted),
    /// The store could not be reached or failed; the text says why (for the
    /// agent and the log). Stores in fail-open mode never return this: they
    /// admit the call without counting it instead.
    Unavailable(String),
}

impl From<Exhausted> for Refusal {
    fn from(e: Exhausted) -> Refusal {
        Refusal::Exhausted(e)
    }
}

/// What a call took from counters; pass it to [`CounterStore::release`] to
/// give the quota back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grant {
    pub taken: Vec<Taken>,
}

/// One draw that was taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Taken {
    pub key: String,
    pub counter: String,
    pub at: Millis,
    pub cost: f64,
    /// Units in the window after this call was admitted.
    pub used: f64,
    pub max: f64,
    pub window: WindowMs,
}

impl Taken {
    /// `draw` taken at `now`, leaving `used` units in its window.
    pub fn new(draw: &Draw, now: Millis, used: f64) -> Taken {
        Taken {
            key: draw.key.clone(),
            counter: draw.counter.clone(),
            at: now,
            cost: draw.cost,
            used,
            max: draw.max,
            window: draw.window,
        }
    }
}

/// Why `acquire` refused: the first draw (in draw order) that did not fit.
#[derive(Debug, Clone, PartialEq)]
pub struct Exhausted {
    pub counter: String,
    pub rule: RuleRef,
    /// When every draw that did not fit has room again (at least 1 ms).
    pub retry_after_ms: u64,
    /// Units in the window now, for the refusing counter.
    pub used: f64,
    pub max: f64,
}

impl Exhausted {
    /// `draw` refused with `used` units in its window.
    pub fn new(draw: &Draw, retry_after_ms: u64, used: f64) -> Exhausted {
        Exhausted {
            counter: draw.counter.clone(),
            rule: draw.rule.clone(),
            retry_after_ms,
            used,
            max: draw.max,
        }
    }
}

/// The check half of an all-or-nothing acquire: every draw of a call
/// against its key's log, earlier draws of the call on the same key
/// counting too. `room(draw, extra)` answers for one draw (with `extra` units
/// already drawn on its key by this call) and the units its log holds. The
/// refusal names the first draw that does not fit and waits for all of them.
pub fn check_draws(
    draws: &[Draw],
    mut room: impl FnMut(&Draw, f64) -> (Room, f64),
) -> Result<(), Exhausted> {
    let mut refused: Option<Exhausted> = None;
    for (i, draw) in draws.iter().enumerate() {
        let extra: f64 = draws[..i]
            .iter()
            .filter(|d| d.key == draw.key)
            .map(|d| d.cost)
            .sum();
        if let (Room::Full { retry_after_ms }, used) = room(draw, extra) {
            match &mut refused {
                None => refused = Some(Exhausted::new(draw, retry_after_ms, used)),
                Some(first) => first.retry_after_ms = first.retry_after_ms.max(retry_after_ms),
            }
        }
    }
    refused.map_or(Ok(()), Err)
}

/// In-memory counter store: one mutex around a map from draw key to its
/// sliding log. Keys whose logs have emptied are swept out lazily, so
/// memory follows the number of keys that are live, not all ever seen.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    windows: HashMap<String, Window>,
    /// Sweep expired keys when the map reaches this size.
    sweep_at: usize,
}

/// Below this many keys the map is never swept.
const MIN_SWEEP: usize = 1024;

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of counter keys held (including ones not yet swept).
    pub fn key_count(&self) -> usize {
        self.lock().windows.len()
    }

    /// Units currently counted for `key` at `now` (0 when unknown).
    pub fn used(&self, key: &str, now: Millis) -> f64 {
        let mut state = self.lock();
        match state.windows.get_mut(key) {
            Some(window) => {
                window.expire(now);
                window.used()
            }
            None => 0.0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update leaves the state consistent, so a panic elsewhere
        // while the lock was held does not make it unusable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn sweep(&mut self, now: Millis) {
        if self.windows.len() < self.sweep_at.max(MIN_SWEEP) {
            return;
        }
        self.windows.retain(|_, window| {
            window.expire(now);
            !window.is_empty()
        });
        self.sweep_at = (self.windows.len() * 2).max(MIN_SWEEP);
    }
}

impl State {
    fn acquire_one(&mut self, draw: &Draw, now: Millis) -> Result<Grant, Exhausted> {
        if let Some(window) = self.windows.get_mut(draw.key.as_str()) {
            window.set_length(draw.window);
            window.expire(now);
            if let Room::Full { retry_after_ms } = window.room(now, 0.0, draw.cost, draw.max) {
                return Err(Exhausted::new(draw, retry_after_ms, window.used()));
            }
            window.take(now, draw.cost);
            return Ok(Grant {
                taken: vec![Taken::new(draw, now, window.used())],
            });
        }
        let mut window = Window::new(draw.window);
        if let Room::Full { retry_after_ms } = window.room(now, 0.0, draw.cost, draw.max) {
            return Err(Exhausted::new(draw, retry_after_ms, 0.0));
        }
        window.take(now, draw.cost);
        let grant = Grant {
            taken: vec![Taken::new(draw, now, window.used())],
        };
        self.windows.insert(draw.key.clone(), window);
        Ok(grant)
    }
}

impl CounterStore for MemoryStore {
    fn acquire(&self, draws: &[Draw], now: Millis) -> Result<Grant, Refusal> {
        self.acquire_exact(draws, now).map_err(Refusal::Exhausted)
    }

    fn release(&self, grant: &Grant) {
        self.release_exact(grant)
    }
}

impl MemoryStore {
    fn acquire_exact(&self, draws: &[Draw], now: Millis) -> Result<Grant, Exhausted> {
        let mut guard = self.lock();
        let state = &mut *guard;
        state.sweep(now);

        // The common case, one draw: check and take with one lookup.
        if let [draw] = draws {
            return state.acquire_one(draw, now);
        }

        // Check every draw; none is taken unless all fit.
        check_draws(draws, |draw, extra| {
            match state.windows.get_mut(&draw.key) {
                Some(window) => {
                    window.set_length(draw.window);
                    window.expire(now);
                    (window.room(now, extra, draw.cost, draw.max), window.used())
                }
                None => (
                    Window::new(draw.window).room(now, extra, draw.cost, draw.max),
                    0.0,
                ),
            }
        })?;

        // Commit every draw.
        let mut taken = Vec::with_capacity(draws.len());
        for draw in draws {
            if !state.windows.contains_key(draw.key.as_str()) {
                state
                    .windows
                    .insert(draw.key.clone(), Window::new(draw.window));
            }
            let Some(window) = state.windows.get_mut(draw.key.as_str()) else {
                continue; // inserted just above
            };
            window.take(now, draw.cost);
            taken.push(Taken::new(draw, now, window.used()));
        }
        Ok(Grant { taken })
    }

    fn release_exact(&self, grant: &Grant) {
        if grant.taken.is_empty() {
            return;
        }
        let mut state = self.lock();
        for taken in &grant.taken {
            if let Some(window) = state.windows.get_mut(&taken.key) {
                window.give_back(taken.at, taken.cost);
            }
        }
    }
}
