//! Go duration strings (`15s`, `1m30s`, `500ms`, `1.5h`), parsed and printed as Go's `time`
//! package does, so existing configs and log lines stay the same.

use std::time::Duration;

/// Parses a Go duration string into signed nanoseconds (Go accepts negative durations; callers
/// decide what is allowed). The error says what is wrong, without repeating the input.
pub fn parse_go_duration(s: &str) -> Result<i128, String> {
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err("empty duration".to_string());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number = &rest[..digits];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err("expected a number before each unit".to_string());
        }
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err("missing unit (use ns, us, ms, s, m or h)".to_string()),
            other => {
                return Err(format!(
                    "unknown unit {other:?} (use ns, us, ms, s, m or h)"
                ));
            }
        };
        let value: f64 = number
            .parse()
            .map_err(|_| "expected a number before each unit".to_string())?;
        total += (value * scale).round() as i128;
        if total > i64::MAX as i128 {
            return Err("duration is too large".to_string());
        }
    }
    Ok(if negative { -total } else { total })
}

/// Parses a Go duration that must be positive (intervals and timeouts: zero or negative ones
/// crash or stall the Go program; here they are rejected at start-up).
pub fn parse_positive(s: &str) -> Result<Duration, String> {
    let nanos = parse_go_duration(s)?;
    if nanos <= 0 {
        return Err("must be greater than zero".to_string());
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// Parses a Go duration that may be zero (controls that are off by default).
pub fn parse_non_negative(s: &str) -> Result<Duration, String> {
    let nanos = parse_go_duration(s)?;
    if nanos < 0 {
        return Err("must not be negative".to_string());
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// Formats like Go's `Duration.String()`: `15s`, `1m0s`, `1h30m0s`, `1.5s`, `250ms`.
pub fn format_go(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim_fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim_fraction(nanos, 1_000_000));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = (nanos / 60_000_000_000) % 60;
    let seconds = trim_fraction(nanos % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// `value / unit` as a decimal without trailing zeros (`1500, 1000` → `1.5`).
fn trim_fraction(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_syntax() {
        let s = 1_000_000_000i128;
        assert_eq!(parse_go_duration("15s"), Ok(15 * s));
        assert_eq!(parse_go_duration("1m30s"), Ok(90 * s));
        assert_eq!(parse_go_duration("1.5h"), Ok(5400 * s));
        assert_eq!(parse_go_duration("300ms"), Ok(300_000_000));
        assert_eq!(parse_go_duration("2us"), Ok(2_000));
        assert_eq!(parse_go_duration("2µs"), Ok(2_000));
        assert_eq!(parse_go_duration("-5s"), Ok(-5 * s));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration(".5s"), Ok(s / 2));
        assert!(
            parse_go_duration("15")
                .unwrap_err()
                .contains("missing unit")
        );
        assert!(
            parse_go_duration("1d")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("1 s").is_err());
        assert!(parse_go_duration("s").is_err());
        assert!(parse_go_duration("1..2s").is_err());
        assert!(parse_go_duration("9999999999h").is_err());
    }

    #[test]
    fn positive_only() {
        assert_eq!(parse_positive("15s"), Ok(Duration::from_secs(15)));
        assert!(parse_positive("0s").is_err());
        assert!(parse_positive("-1s").is_err());
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go(Duration::from_secs(15)), "15s");
        assert_eq!(format_go(Duration::from_secs(30)), "30s");
        assert_eq!(format_go(Duration::from_secs(60)), "1m0s");
        assert_eq!(format_go(Duration::from_secs(5400)), "1h30m0s");
        assert_eq!(format_go(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go(Duration::from_millis(250)), "250ms");
        assert_eq!(format_go(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(format_go(Duration::ZERO), "0s");
    }
}
