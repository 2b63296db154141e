//! Exact decimal numbers, for conditions that compare numbers.
//!
//! A [`Decimal`] is read from the text of a number (a policy's bound, or the
//! number token a client sent) and keeps its value exactly, whatever its
//! length or exponent: `100.00000000000001` is not `100`, and
//! `9007199254740993` is not `9007199254740992`. Reading and comparing take
//! time linear in the length of the text; nothing is ever converted to a
//! float to compare.
//!
//! [`compare_f64`] is for an argument whose text is gone (only the f64 that
//! serde_json read it as is left): it answers only when every decimal that
//! can read as that f64 is on the same side of the bound.

use std::cmp::Ordering;
use std::fmt;

/// An exact decimal: `(-1)^negative × 0.d₁d₂…dₙ × 10^exponent`, the digits
/// without leading or trailing zeros. Zero has no digits and no sign, so
/// `-0`, `0.0` and `0e7` are equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decimal {
    negative: bool,
    /// ASCII digits, the first and the last not `0`; empty for zero.
    digits: Box<str>,
    exponent: i64,
}

/// Exponents written beyond this are taken as this: a number that large or
/// that small is beyond any whose text can be held in memory, so the order
/// of two numbers is still right unless both have such an exponent (a
/// policy's bound never has: it must be within the range of an f64).
const EXPONENT_LIMIT: i64 = 1_000_000_000_000_000_000;

impl Decimal {
    /// Reads number text: JSON numbers and YAML 1.2 core ints and floats
    /// (`[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`). `None` for
    /// anything else.
    pub(crate) fn parse(text: &str) -> Option<Decimal> {
        let bytes = text.as_bytes();
        let mut i = 0;
        let negative = sign(bytes, &mut i);
        let int_digits = &text[i..digits_end(bytes, &mut i)];
        let mut frac_digits = "";
        if bytes.get(i) == Some(&b'.') {
            i += 1;
            let frac_start = i;
            frac_digits = &text[frac_start..digits_end(bytes, &mut i)];
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return None;
        }
        let mut written_exponent: i64 = 0;
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            i += 1;
            let exponent_negative = sign(bytes, &mut i);
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                written_exponent = written_exponent
                    .saturating_mul(10)
                    .saturating_add(i64::from(bytes[i] - b'0'))
                    .min(EXPONENT_LIMIT);
                i += 1;
            }
            if i == start {
                return None;
            }
            if exponent_negative {
                written_exponent = -written_exponent;
            }
        }
        if i != bytes.len() {
            return None;
        }
        // The digits of int and fraction as one run, the point after the
        // integer digits; then leading and trailing zeros are dropped.
        let int_trimmed = int_digits.trim_start_matches('0');
        let (significant, point): (String, i64) = if int_trimmed.is_empty() {
            let frac_trimmed = frac_digits.trim_start_matches('0');
            let skipped = (frac_digits.len() - frac_trimmed.len()) as i64;
            (frac_trimmed.trim_end_matches('0').to_string(), -skipped)
        } else {
            let mut run = String::with_capacity(int_trimmed.len() + frac_digits.len());
            run.push_str(int_trimmed);
            run.push_str(frac_digits);
            let point = int_trimmed.len() as i64;
            let kept = run.trim_end_matches('0').len();
            run.truncate(kept);
            (run, point)
        };
        if significant.is_empty() {
            return Some(Decimal::zero());
        }
        Some(Decimal {
            negative,
            digits: significant.into_boxed_str(),
            exponent: point.saturating_add(written_exponent),
        })
    }

    fn zero() -> Decimal {
        Decimal {
            negative: false,
            digits: "".into(),
            exponent: 0,
        }
    }

    pub(crate) fn from_i64(n: i64) -> Decimal {
        Decimal::parse(&n.to_string()).expect("an integer's text is a number")
    }

    pub(crate) fn from_u64(n: u64) -> Decimal {
        Decimal::parse(&n.to_string()).expect("an integer's text is a number")
    }

    /// The exact value of a serde_json number when it is an integer; an f64
    /// by its shortest text (what serde_json writes, the text most likely
    /// behind it).
    pub(crate) fn from_json(n: &serde_json::Number) -> Decimal {
        if let Some(i) = n.as_i64() {
            Decimal::from_i64(i)
        } else if let Some(u) = n.as_u64() {
            Decimal::from_u64(u)
        } else {
            Decimal::parse(&n.to_string()).unwrap_or_else(Decimal::zero)
        }
    }

    fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// The f64 nearest to this number (correctly rounded: Rust's own
    /// reading of decimal text); ±infinity or ±0 beyond the f64 range.
    pub(crate) fn nearest_f64(&self) -> f64 {
        if self.is_zero() {
            return 0.0;
        }
        let sign = if self.negative { "-" } else { "" };
        format!("{sign}0.{}e{}", self.digits, self.exponent)
            .parse()
            .unwrap_or(f64::NAN)
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Decimal) -> Ordering {
        let sign = |d: &Decimal| match (d.is_zero(), d.negative) {
            (true, _) => 0,
            (false, true) => -1,
            (false, false) => 1,
        };
        match sign(self).cmp(&sign(other)) {
            Ordering::Equal => {}
            unequal => return unequal,
        }
        if self.is_zero() {
            return Ordering::Equal;
        }
        // Same sign, neither zero: by exponent, then by digits (no leading
        // zeros, no trailing zeros: text order is numeric order).
        let magnitude = self
            .exponent
            .cmp(&other.exponent)
            .then_with(|| self.digits.as_bytes().cmp(other.digits.as_bytes()));
        if self.negative {
            magnitude.reverse()
        } else {
            magnitude
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Decimal) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Decimal {
    /// Plain notation for moderate exponents (`100`, `0.25`), scientific
    /// beyond (`1.5e40`); always the exact value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0");
        }
        if self.negative {
            f.write_str("-")?;
        }
        let digits = &*self.digits;
        let n = digits.len() as i64;
        let e = self.exponent;
        if (1..=21).contains(&e) {
            if e >= n {
                f.write_str(digits)?;
                (0..e - n).try_for_each(|_| f.write_str("0"))
            } else {
                let (int, frac) = digits.split_at(e as usize);
                write!(f, "{int}.{frac}")
            }
        } else if (-5..=0).contains(&e) {
            f.write_str("0.")?;
            (0..-e).try_for_each(|_| f.write_str("0"))?;
            f.write_str(digits)
        } else {
            let (first, rest) = digits.split_at(1);
            f.write_str(first)?;
            if !rest.is_empty() {
                write!(f, ".{rest}")?;
            }
            write!(f, "e{}", e - 1)
        }
    }
}

/// A bound of a condition: its exact value and the f64 nearest to it (for
/// comparing against an argument known only as an f64).
#[derive(Debug, Clone)]
pub(crate) struct Bound {
    pub exact: Decimal,
    pub nearest: f64,
}

impl Bound {
    pub(crate) fn new(exact: Decimal) -> Bound {
        let nearest = exact.nearest_f64();
        Bound { exact, nearest }
    }
}

/// How an argument known only as the f64 `x` compares with `bound`, when
/// that is the same for every decimal that can read as `x`; `None` when it
/// is not (the condition cannot be decided: it fails closed).
///
/// The decimals that can read as `x` are taken to lie strictly between the
/// f64 two steps below `x` and the one two steps above: a correctly rounded
/// reader is within half a step, serde_json's default reader within one
/// more. A bound within that interval, or one that rounds to its ends,
/// gives `None`: `lte 100` is not decided for an f64 100.0, which may have
/// been `100.00000000000001`.
pub(crate) fn compare_f64(x: f64, bound: &Bound) -> Option<Ordering> {
    let below = next_down(next_down(x));
    let above = next_up(next_up(x));
    // Rounding is monotonic and keeps f64s: bound < above ⇒ nearest ≤ above,
    // and bound > below ⇒ nearest ≥ below.
    if bound.nearest > above {
        Some(Ordering::Less)
    } else if bound.nearest < below {
        Some(Ordering::Greater)
    } else {
        None
    }
}

/// The next f64 towards +∞ (`f64::next_up`, stable only from Rust 1.86).
fn next_up(x: f64) -> f64 {
    if x.is_nan() || x == f64::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f64::from_bits(1);
    }
    let bits = x.to_bits();
    f64::from_bits(if x > 0.0 { bits + 1 } else { bits - 1 })
}

fn next_down(x: f64) -> f64 {
    -next_up(-x)
}

/// Reads an optional `-` or `+` at `*i`; whether it was `-`.
fn sign(bytes: &[u8], i: &mut usize) -> bool {
    match bytes.get(*i) {
        Some(b'-') => {
            *i += 1;
            true
        }
        Some(b'+') => {
            *i += 1;
            false
        }
        _ => false,
    }
}

/// Skips the ASCII digits from `*i`; where they end.
fn digits_end(bytes: &[u8], i: &mut usize) -> usize {
    while *i < bytes.len() && bytes[*i].is_ascii_digit() {
        *i += 1;
    }
    *i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::parse(text).unwrap_or_else(|| panic!("{text} does not read"))
    }

    #[test]
    fn reads_and_normalises() {
        assert_eq!(d("100"), d("1e2"));
        assert_eq!(d("100"), d("100.000"));
        assert_eq!(d("100"), d("0.1e3"));
        assert_eq!(d("100"), d("+100"));
        assert_eq!(d("-0"), d("0"));
        assert_eq!(d("0.0e-999"), d("0"));
        assert_eq!(d(".5"), d("0.5"));
        assert_eq!(d("1."), d("1"));
        for bad in [
            "", "-", "+", ".", "e1", "1e", "1e+", "1.2.3", "0x10", "1 ", "--1",
        ] {
            assert!(Decimal::parse(bad).is_none(), "{bad:?} read");
        }
    }

    #[test]
    fn orders_exactly() {
        let ordered = [
            "-1e400",
            "-9007199254740993",
            "-9007199254740992",
            "-100",
            "-99.5",
            "-1e-400",
            "0",
            "1e-400",
            "99.5",
            "99.99999999999999999999",
            "100",
            "100.00000000000001",
            "9007199254740992",
            "9007199254740993",
            "1e400",
            "1e1000000000000000000000",
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(d(a).cmp(&d(b)), i.cmp(&j), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn shows_the_exact_value() {
        for (text, shown) in [
            ("100", "100"),
            ("1e2", "100"),
            ("-99.50", "-99.5"),
            ("100.00000000000001", "100.00000000000001"),
            ("0.000125", "0.000125"),
            ("1.5e40", "1.5e40"),
            ("1e-400", "1e-400"),
            ("-0", "0"),
        ] {
            assert_eq!(d(text).to_string(), shown, "{text}");
        }
    }

    #[test]
    fn an_f64_is_compared_only_when_every_reading_agrees() {
        let bound = |t: &str| Bound::new(d(t));
        assert_eq!(compare_f64(99.5, &bound("100")), Some(Ordering::Less));
        assert_eq!(compare_f64(100.5, &bound("100")), Some(Ordering::Greater));
        assert_eq!(compare_f64(100.0, &bound("100")), None);
        assert_eq!(compare_f64(100.00000000000001, &bound("100")), None);
        assert_eq!(compare_f64(0.0, &bound("0")), None);
        assert_eq!(compare_f64(-0.0, &bound("1e-400")), None);
        assert_eq!(compare_f64(1e300, &bound("1e400")), Some(Ordering::Less));
        assert_eq!(compare_f64(f64::MAX, &bound("1e400")), None);
        assert_eq!(compare_f64(-f64::MAX, &bound("0")), Some(Ordering::Less));
        assert_eq!(next_up(-f64::from_bits(1)), -0.0);
        assert_eq!(next_down(0.0), -f64::from_bits(1));
    }

    #[test]
    fn long_numbers_take_linear_time() {
        let long = format!("1{}", "0".repeat(100_000));
        let longer = format!("1{}1", "0".repeat(100_000));
        assert!(d(&long) < d(&longer));
        assert_eq!(Bound::new(d(&long)).nearest, f64::INFINITY);
        let exponent = format!("1e{}", "9".repeat(100_000));
        assert!(d(&exponent) > d(&long));
    }
}
