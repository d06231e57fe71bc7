//! Wall time: the `Stamp` the scale controls and the backtest count in, civil dates (for the
//! expressions' time variables and log timestamps), and RFC 3339.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::expr::MetricValues;
pub use crate::plan::controls::Stamp;

/// The built-in variables of expressions, from the time of the cycle (or replayed step).
pub const TIME_VARIABLES: [&str; 5] = ["hour", "minute", "weekday", "day", "month"];

/// Now, in milliseconds since the Unix epoch.
pub fn now() -> Stamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| Stamp::try_from(d.as_millis()).unwrap_or(Stamp::MAX))
        .unwrap_or(0)
}

/// A date and time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
    /// 0 = Sunday … 6 = Saturday.
    pub weekday: u32,
}

/// The civil time of `at`, shifted by `offset_secs` east of UTC.
pub fn civil(at: Stamp, offset_secs: i32) -> Civil {
    let ms = at + i64::from(offset_secs) * 1000;
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    Civil {
        year: yoe + era * 400 + i64::from(month <= 2),
        month: month as u32,
        day: day as u32,
        hour: (of_day / 3600) as u32,
        minute: (of_day / 60 % 60) as u32,
        second: (of_day % 60) as u32,
        millis: ms.rem_euclid(1000) as u32,
        // 1970-01-01 was a Thursday.
        weekday: (days + 4).rem_euclid(7) as u32,
    }
}

/// Days since the epoch of a civil date (the inverse of the algorithm above).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-11-28T02:14:35.123Z`.
pub fn rfc3339(at: Stamp) -> String {
    let c = civil(at, 0);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.millis
    )
}

/// Parses RFC 3339 (`2026-11-20T00:00:00Z`, `…T01:00:00.5+01:00`).
pub fn parse_rfc3339(s: &str) -> Option<Stamp> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let ms: String = frac[..digits]
            .chars()
            .chain("000".chars())
            .take(3)
            .collect();
        millis = ms.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => i64::from(crate::config::parse_time_offset(rest).ok()?),
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset;
    Some(secs * 1000 + millis)
}

/// The time variables of `at`, in [`TIME_VARIABLES`] order.
pub fn time_variables(at: Stamp, offset_secs: i32) -> [(&'static str, f64); 5] {
    let c = civil(at, offset_secs);
    let values = [c.hour, c.minute, c.weekday, c.day, c.month];
    std::array::from_fn(|i| (TIME_VARIABLES[i], f64::from(values[i])))
}

/// Adds the time variables of `at` to a cycle's metric values; a metric with the same name
/// keeps its value (as in the Go program, which has no such variables).
pub fn add_time_variables(metrics: &mut MetricValues, at: Stamp, offset_secs: i32) {
    for (name, value) in time_variables(at, offset_secs) {
        metrics.entry(name.to_string()).or_insert(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_and_weekdays() {
        // 2026-11-28 07:27:59 UTC, a Saturday.
        let at = 1_795_850_879_000;
        let c = civil(at, 0);
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.minute, c.second),
            (2026, 11, 28, 7, 27, 59)
        );
        assert_eq!(c.weekday, 6);
        let ny = civil(at, -5 * 3600);
        assert_eq!((ny.day, ny.hour, ny.weekday), (28, 2, 6));
        assert_eq!(civil(0, 0).weekday, 4, "1970-01-01 was a Thursday");
        assert_eq!(civil(-1000, 0).year, 1969);
    }

    #[test]
    fn rfc3339_round_trips() {
        for at in [
            0,
            1_795_850_879_123,
            951_782_400_000, /* 2000-02-29 */
            -86_400_000,
        ] {
            assert_eq!(parse_rfc3339(&rfc3339(at)), Some(at), "{}", rfc3339(at));
        }
        assert_eq!(
            parse_rfc3339("2026-11-20T01:00:00+01:00"),
            parse_rfc3339("2026-11-20T00:00:00Z")
        );
        assert_eq!(
            parse_rfc3339("2026-11-20T00:00:00.5Z"),
            Some(1_795_132_800_500)
        );
        for bad in [
            "",
            "2026-11-20",
            "2026-13-20T00:00:00Z",
            "2026-11-20T00:00:00",
            "x026-11-20T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn time_variables_yield_to_metrics() {
        let mut m = MetricValues::new();
        m.insert("hour".into(), 99.0);
        add_time_variables(&mut m, 1_795_850_879_000, 0);
        assert_eq!(m["hour"], 99.0);
        assert_eq!(m["minute"], 27.0);
        assert_eq!(m["weekday"], 6.0);
        assert_eq!(m["day"], 28.0);
        assert_eq!(m["month"], 11.0);
    }
}
