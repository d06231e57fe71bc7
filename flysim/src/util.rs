//! Small formats the simulator speaks: RFC 3339 and HTTP dates, Go durations, query strings,
//! and the shapes of Fly ids. The autoscaler has its own copies on purpose: the simulator
//! checks it, so it does not borrow its code.

use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// RFC 3339 UTC timestamp (second precision) for milliseconds since the epoch.
pub(crate) fn rfc3339(ms: u64) -> String {
    let (y, m, d, secs) = civil(ms);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// IMF-fixdate for the `Date` header, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn http_date(ms: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d, secs) = civil(ms);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[(ms / 1000 / 86_400 % 7) as usize],
        MONTHS[(m - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// (year, month, day, seconds into the day) for milliseconds since the epoch.
fn civil(ms: u64) -> (i64, i64, i64, u64) {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d, rem)
}

/// Whether `s` is a Go `time.ParseDuration` string: `"0"`, `"0s"`, `"1m30s"`, `"1.5h"`, …
pub(crate) fn is_go_duration(s: &str) -> bool {
    let mut rest = s.strip_prefix(['-', '+']).unwrap_or(s);
    if rest == "0" {
        return true;
    }
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let number = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_digit() || c == '.')
                .len();
        if number == 0 || rest[..number].parse::<f64>().is_err() {
            return false;
        }
        rest = &rest[number..];
        let unit = rest.len()
            - rest
                .trim_start_matches(|c: char| !c.is_ascii_digit() && c != '.')
                .len();
        if !matches!(
            &rest[..unit],
            "ns" | "us" | "µs" | "μs" | "ms" | "s" | "m" | "h"
        ) {
            return false;
        }
        rest = &rest[unit..];
    }
    true
}

/// Decoded `key=value` pairs of a query string or form body (`+` and `%XX` decoded; a key
/// without `=` gets an empty value).
pub(crate) fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// ULID-like id (`instance_id`): 48-bit millisecond timestamp + 80 random bits, Crockford
/// base32, 26 characters.
pub(crate) fn ulid(ms: u64, random: u128) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let v = (u128::from(ms & 0xffff_ffff_ffff) << 80) | (random & ((1u128 << 80) - 1));
    (0..26)
        .map(|i| ALPHABET[((v >> (125 - 5 * i)) & 31) as usize] as char)
        .collect()
}

/// FNV-1a, for stable synthetic digests and app ids.
pub(crate) fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x1000_0000_01b3);
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x1000_0000_01b3);
    }
    h
}

/// xorshift64*: names, addresses and instance ids need variety, not quality.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn seeded() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64);
        Rng(nanos | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        // 2024-02-29T13:45:07Z, a Thursday in a leap year.
        let ms = 1_709_214_307_000;
        assert_eq!(rfc3339(ms), "2024-02-29T13:45:07Z");
        assert_eq!(http_date(ms), "Thu, 29 Feb 2024 13:45:07 GMT");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn go_durations() {
        for ok in ["0", "0s", "-1.5h", "1m30s", "300ms", "2us", "1µs"] {
            assert!(is_go_duration(ok), "{ok}");
        }
        for bad in ["", "5", "forever", "1x", "s", "1..2s"] {
            assert!(!is_go_duration(bad), "{bad}");
        }
    }

    #[test]
    fn queries() {
        assert_eq!(
            parse_query("a=1&b=x%20y+z&flag&bad=%zz"),
            [
                ("a".into(), "1".into()),
                ("b".into(), "x y z".into()),
                ("flag".into(), String::new()),
                ("bad".into(), "%zz".into()),
            ]
        );
    }

    #[test]
    fn ids() {
        let id = ulid(now_ms(), 42);
        assert_eq!(id.len(), 26);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
