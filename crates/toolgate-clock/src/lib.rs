//! Time, passed in: the gateways never read the system clock directly.
//!
//! [`Clock`] is what every part that needs the time takes; [`SystemClock`]
//! is the real one and [`ManualClock`] the one tests hold still and move by
//! hand. [`monotonic_now`] is the monotonic clock for durations and
//! deadlines, [`unix_now`] the wall clock at full precision, and [`sleep`]
//! the one blocking wait. [`rfc3339`] writes a time as the audit trail and
//! the APIs show it.
//!
//! Invariants: no IO; this is the one module that reads the system clock or
//! blocks a thread on time (clippy's `disallowed-methods` keeps it so).
#![allow(clippy::disallowed_methods)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use toolgate_policy::Millis;

/// Now on the monotonic clock: what durations and deadlines are measured on.
pub fn monotonic_now() -> Instant {
    Instant::now()
}

/// The wall clock: the time since the Unix epoch (zero before it).
pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Blocks the calling thread for `d`.
pub fn sleep(d: Duration) {
    std::thread::sleep(d);
}

/// Wall-clock time in milliseconds since the Unix epoch, and the monotonic
/// clock that goes with it.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> Millis;

    /// Now on the monotonic clock ([`monotonic_now`] unless a test drives it).
    fn instant(&self) -> Instant {
        monotonic_now()
    }
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        unix_now().as_millis() as Millis
    }
}

/// A clock that stands still until it is moved: for tests. Its monotonic
/// clock moves with it, from the instant it was made.
#[derive(Debug)]
pub struct ManualClock {
    ms: AtomicU64,
    /// The instant that `start_ms` stands for.
    origin: Instant,
    start_ms: Millis,
}

impl Default for ManualClock {
    fn default() -> ManualClock {
        ManualClock::at(0)
    }
}

impl ManualClock {
    pub fn at(ms: Millis) -> ManualClock {
        ManualClock {
            ms: AtomicU64::new(ms),
            origin: monotonic_now(),
            start_ms: ms,
        }
    }
    pub fn set(&self, ms: Millis) {
        self.ms.store(ms, Ordering::SeqCst);
    }
    pub fn advance(&self, ms: Millis) {
        self.ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.ms.load(Ordering::SeqCst)
    }

    fn instant(&self) -> Instant {
        let now = self.now_ms();
        if now >= self.start_ms {
            self.origin + Duration::from_millis(now - self.start_ms)
        } else {
            let back = Duration::from_millis(self.start_ms - now);
            self.origin.checked_sub(back).unwrap_or(self.origin)
        }
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-21T23:00:00.123Z`.
pub fn rfc3339(ms: Millis) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{:03}Z",
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::at(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(500);
        assert_eq!(clock.now_ms(), 1_500);
        clock.set(7);
        assert_eq!(clock.now_ms(), 7);
    }

    #[test]
    fn a_manual_clock_drives_its_monotonic_clock() {
        let clock = ManualClock::at(1_000);
        let start = clock.instant();
        assert_eq!(clock.instant(), start);
        clock.advance(250);
        assert_eq!(clock.instant() - start, Duration::from_millis(250));
        clock.set(1_000);
        assert_eq!(clock.instant(), start);
    }

    #[test]
    fn the_system_clocks_agree_on_the_epoch() {
        let ms = SystemClock.now_ms();
        assert!(ms > 1_700_000_000_000);
        assert!(unix_now().as_millis() as Millis >= ms);
        let a = monotonic_now();
        sleep(Duration::from_millis(1));
        assert!(SystemClock.instant() > a);
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_302_000_123), "2026-11-21T23:00:00.123Z");
    }
}
