//! RFC 3339 times, as the gateway writes them (`2026-11-21T23:00:00.123Z`), to
//! milliseconds since the Unix epoch.

/// Milliseconds since the Unix epoch for an RFC 3339 date-time:
/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)` (`t` or a space may stand
/// for `T`, `z` for `Z`). `None` for anything else or a time before 1970.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |from: usize, to: usize| digits(text.get(from..to)?);
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = text.get(19..)?;
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let padded = format!("{:0<3}", &frac[..n.min(3)]);
        millis = padded.parse::<i64>().ok()?;
        rest = &frac[n..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ => {
            let o = rest.as_bytes();
            if o.len() != 6 || !matches!(o[0], b'+' | b'-') || o[3] != b':' {
                return None;
            }
            let (h, m) = (digits(rest.get(1..3)?)?, digits(rest.get(4..6)?)?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if o[0] == b'-' {
                -minutes
            } else {
                minutes
            }
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_minutes * 60;
    u64::try_from(secs * 1000 + millis).ok()
}

/// The value of a run of ASCII digits (no sign, no space).
fn digits(part: &str) -> Option<i64> {
    if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's days_from_civil: days since 1970-01-01.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::parse_rfc3339;

    #[test]
    fn reads_what_the_gateway_writes() {
        for (text, ms) in [
            ("1970-01-01T00:00:00.000Z", Some(0)),
            ("2000-02-29T00:00:00.000Z", Some(951_782_400_000)),
            ("2026-11-21T23:00:00.123Z", Some(1_795_302_000_123)),
            ("2026-11-21T23:00:00Z", Some(1_795_302_000_000)),
            ("2026-11-21t23:00:00.1z", Some(1_795_302_000_100)),
            ("2026-11-21 23:00:00.123456Z", Some(1_795_302_000_123)),
            ("2026-11-22T01:00:00.123+02:00", Some(1_795_302_000_123)),
            ("2026-11-21T22:30:00.123-00:30", Some(1_795_302_000_123)),
        ] {
            assert_eq!(parse_rfc3339(text), ms, "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_rfc3339() {
        for text in [
            "",
            "2026-11-21",
            "2026-11-21T23:00:00",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-21T24:00:00Z",
            "2026-11-21T23:00:00.Z",
            "2026-11-21T23:00:00+0200",
            "1969-12-31T23:59:59Z",
            "2026-11-21T23:00:00Zjunk",
            "+026-11-21T23:00:00Z",
            "2026-11-21T23:00:00++1:00",
            "2026-11-21T23:00:0éZ",
        ] {
            assert_eq!(parse_rfc3339(text), None, "{text}");
        }
    }
}
