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
    fn rejects_nonsense() {
        for bad in ["", "10", "m", "10x", "0m", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
