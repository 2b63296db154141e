//! The one grammar of durations written as text in a document: a decimal
//! number and a unit with nothing around or between them, `250ms`, `30s`,
//! `1.5m`, `1h`, `2d`. [`parse`] reads it; each field then says which of
//! what was written it takes (a policy's approval `hold` and `expires` take
//! whole seconds, minutes, hours or days; the gateway config takes all) and
//! words its own message.

/// The longest duration anything holds: a year (365 days), in seconds.
pub const MAX_SECONDS: u64 = 31_536_000;

/// The unit after the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// `ms`
    Millis,
    /// `s`
    Seconds,
    /// `m`
    Minutes,
    /// `h`
    Hours,
    /// `d`
    Days,
}

impl Unit {
    fn from_text(text: &str) -> Option<Unit> {
        Some(match text {
            "ms" => Unit::Millis,
            "s" => Unit::Seconds,
            "m" => Unit::Minutes,
            "h" => Unit::Hours,
            "d" => Unit::Days,
            _ => return None,
        })
    }

    /// Milliseconds in one unit.
    pub fn millis(self) -> u64 {
        match self {
            Unit::Millis => 1,
            Unit::Seconds => 1_000,
            Unit::Minutes => 60_000,
            Unit::Hours => 3_600_000,
            Unit::Days => 86_400_000,
        }
    }

    /// Seconds in one unit.
    pub fn seconds(self) -> f64 {
        match self {
            Unit::Millis => 0.001,
            Unit::Seconds => 1.0,
            Unit::Minutes => 60.0,
            Unit::Hours => 3600.0,
            Unit::Days => 86400.0,
        }
    }
}

/// A duration as written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Written {
    /// The number before the unit (not negative).
    pub number: f64,
    /// Whether the number was written without a decimal point.
    pub whole: bool,
    pub unit: Unit,
}

impl Written {
    /// The duration in seconds.
    pub fn seconds(&self) -> f64 {
        self.number * self.unit.seconds()
    }

    /// The duration in whole milliseconds, for a whole number (saturating);
    /// `None` for a number with a fraction.
    pub fn whole_millis(&self) -> Option<u64> {
        self.whole
            .then(|| (self.number as u64).saturating_mul(self.unit.millis()))
    }
}

/// Reads `text` as digits (a decimal point between two of them allowed)
/// followed by a unit; `None` for anything else (no sign, no space, no
/// exponent, no unit missing).
pub fn parse(text: &str) -> Option<Written> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let unit = Unit::from_text(unit)?;
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return None;
    }
    Some(Written {
        number: number.parse().ok()?,
        whole: !number.contains('.'),
        unit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_and_unit() {
        let ms = |s: &str| parse(s).and_then(|w| w.whole_millis());
        assert_eq!(ms("250ms"), Some(250));
        assert_eq!(ms("30s"), Some(30_000));
        assert_eq!(ms("5m"), Some(300_000));
        assert_eq!(ms("1h"), Some(3_600_000));
        assert_eq!(ms("2d"), Some(172_800_000));
        assert_eq!(ms("007s"), Some(7_000));
        assert_eq!(parse("1.5s").map(|w| w.seconds()), Some(1.5));
        assert_eq!(ms("1.5s"), None);
        for bad in [
            "", "30", "s", "30 s", " 30s", "30s ", "-1s", "+1s", "1.s", ".5s", "1.2.3s", "3x",
            "1hour", "1e3s",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
