//! Durations as merchants write them in flow files: `30s`, `10m`, `1h30m`, `2d`.
//!
//! Pure parsing; no clock and no knowledge of which setting a duration belongs to.

use chrono::Duration;

/// Parses `30s`, `10m`, `1h30m`, `2d` (units s, m, h, d; at least one part; no zero total).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut total: i64 = 0;
    let mut digits = String::new();
    let mut parts = 0;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => {
                return Err(format!(
                    "`{text}` is not a duration (use e.g. 30s, 10m, 1h30m, 2d)"
                ))
            }
        };
        let n: i64 = digits
            .parse()
            .map_err(|_| format!("`{text}` is not a duration (a number must come before `{c}`)"))?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| format!("`{text}` is too long"))?;
        digits.clear();
        parts += 1;
    }
    if parts == 0 || !digits.is_empty() {
        return Err(format!(
            "`{text}` is not a duration (use e.g. 30s, 10m, 1h30m, 2d)"
        ));
    }
    if total == 0 {
        return Err(format!("`{text}` is zero"));
    }
    Ok(Duration::seconds(total))
}

/// Longest session deadline a flow may set.
pub const MAX_DEADLINE_SECS: i64 = 30 * 86_400;

/// Reads a deadline reminder as its time after the session's start: `-1h` is one hour before a
/// `deadline` that long after the start, `20h` is 20 hours after the start. It must fall
/// strictly between the start and the deadline.
pub fn parse_deadline_reminder(text: &str, deadline: Duration) -> Result<Duration, String> {
    let trimmed = text.trim();
    let offset = match trimmed.strip_prefix('-') {
        Some(before) => deadline - parse_duration(before)?,
        None => parse_duration(trimmed)?,
    };
    if offset <= Duration::zero() || offset >= deadline {
        return Err(format!(
            "deadline reminder `{text}` must fall after the start and before the deadline ({} after the start)",
            format_duration(deadline)
        ));
    }
    Ok(offset)
}

/// Formats a duration the way flow files write it.
pub fn format_duration(d: Duration) -> String {
    let mut s = d.num_seconds();
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if s >= len {
            out.push_str(&format!("{}{unit}", s / len));
            s %= len;
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::seconds(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::minutes(10)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::minutes(90)));
        assert_eq!(parse_duration("2d"), Ok(Duration::days(2)));
        assert_eq!(format_duration(Duration::minutes(90)), "1h30m");
    }

    #[test]
    fn deadline_reminders_count_back_from_the_deadline_or_on_from_the_start() {
        let day = Duration::hours(24);
        assert_eq!(parse_deadline_reminder("-1h", day), Ok(Duration::hours(23)));
        assert_eq!(parse_deadline_reminder("20h", day), Ok(Duration::hours(20)));
        for bad in ["-24h", "-2d", "24h", "30h", "-", "-x"] {
            assert!(parse_deadline_reminder(bad, day).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["", "10", "m", "10x", "0m", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
