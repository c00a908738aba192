//! Jaeger's search parameters (`/api/traces?...`) as the Jaeger UI and Grafana's Jaeger data
//! source send them: repeated `tag`/`tags` that all apply, `traceID` lists, durations exactly as
//! Go's `time.ParseDuration` reads them, and the lookbacks the UI offers.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::store::TraceQuery;

/// `limit` when none is given, or 0: Jaeger's own default (its query service's, and what its
/// Elasticsearch, Cassandra and Badger backends make of 0).
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `limit` accepted; larger ones are lowered to it.
pub const MAX_LIMIT: usize = 1500;

/// A query string's parameters in order, repeated ones included.
pub type Params = [(String, String)];

/// The last non-blank value of `k`.
fn one<'a>(q: &'a Params, k: &str) -> Option<&'a str> {
    q.iter()
        .rev()
        .find(|(key, v)| key == k && !v.trim().is_empty())
        .map(|(_, v)| v.trim())
}

/// Every non-blank value of `k`, in order.
pub fn all<'a>(q: &'a Params, k: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    q.iter()
        .filter(move |(key, v)| key == k && !v.trim().is_empty())
        .map(|(_, v)| v.trim())
}

/// A duration as Go's `time.ParseDuration` reads it (`300ms`, `-1.5h`, `2h45m`, `0`), in
/// microseconds, negative ones as 0; `None` for anything Go refuses (`1d`, `10`, `ms`).
pub fn go_duration_us(s: &str) -> Option<u64> {
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut ns = 0f64;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..n];
        if !number.bytes().any(|b| b.is_ascii_digit()) || number.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[u..];
        ns += value * factor;
    }
    let us = ns / 1000.0;
    if !us.is_finite() || us >= u64::MAX as f64 {
        return None;
    }
    Some(if negative { 0 } else { us as u64 })
}

/// A lookback as the Jaeger UI offers them: a Go duration, or whole days and weeks (`2d`,
/// `2w`), in microseconds.
pub fn lookback_us(s: &str) -> Option<u64> {
    if let Some(us) = go_duration_us(s) {
        return Some(us);
    }
    if !s.is_ascii() {
        return None;
    }
    let (n, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    let day = 86_400_000_000u64;
    match unit {
        "d" => n.checked_mul(day),
        "w" => n.checked_mul(7 * day),
        _ => None,
    }
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// An RFC 3339 time (`2026-01-02T03:04:05.123456789Z`, or with an offset such as `+02:00`)
/// as microseconds since the Unix epoch; `None` if it is not one or is before 1970. A space
/// where the offset's `+` belongs is read as `+`: a client that puts the time in the query
/// string without encoding it sends exactly that.
pub fn rfc3339_us(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let d = b.get(r)?;
        d.iter()
            .all(u8::is_ascii_digit)
            .then(|| d.iter().fold(0i64, |n, c| n * 10 + i64::from(c - b'0')))
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || min > 59
        || sec > 60
    {
        return None;
    }
    let mut i = 19;
    let mut frac_us = 0i64;
    if b.get(i) == Some(&b'.') {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for (k, c) in b[i + 1..i + 1 + digits].iter().take(6).enumerate() {
            frac_us += i64::from(c - b'0') * 10i64.pow(5 - k as u32);
        }
        i += 1 + digits;
    }
    let offset_s = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-' | b' '), ..] if b.len() == i + 6 && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_s;
    u64::try_from(secs * 1_000_000 + frac_us).ok()
}

/// `s` seconds since the Unix epoch as RFC 3339 UTC text, e.g. `2021-09-10T11:03:43Z`.
pub fn rfc3339_of_s(s: u64) -> String {
    let days = (s / 86_400) as i64;
    let rem = s % 86_400;
    // The civil date of a day number (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Builds a store query from Jaeger's search parameters; the error names the bad parameter.
/// `max_bytes` bounds the answer.
pub fn parse_query(q: &Params, max_bytes: usize) -> Result<TraceQuery, String> {
    let dur = |k: &str| -> Result<Option<u64>, String> {
        one(q, k)
            .map(|v| {
                go_duration_us(v).ok_or_else(|| {
                    format!(
                        "cannot parse {k} '{v}': use a Go duration such as 1.2s, 100ms or 500us"
                    )
                })
            })
            .transpose()
    };
    let int = |k: &str| -> Result<Option<u64>, String> {
        one(q, k)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("cannot parse {k} '{v}' as an integer"))
            })
            .transpose()
    };
    let mut query = TraceQuery {
        service: one(q, "service").map(str::to_string),
        operation: one(q, "operation")
            .filter(|o| *o != "all")
            .map(str::to_string),
        min_duration_us: dur("minDuration")?,
        max_duration_us: dur("maxDuration")?,
        start_us: int("start")?,
        end_us: int("end")?,
        limit: int("limit")?
            .filter(|&l| l > 0)
            .map_or(DEFAULT_LIMIT, |l| (l as usize).min(MAX_LIMIT)),
        max_bytes,
        tags: Vec::new(),
    };
    if let (Some(min), Some(max)) = (query.min_duration_us, query.max_duration_us) {
        if max < min {
            return Err("'maxDuration' should be greater than 'minDuration'".into());
        }
    }
    // A given `start` decides where the window begins; else the lookback does, back from
    // `end` when that is given (the Jaeger UI sends both), or from now.
    if let Some(lb) = one(q, "lookback").filter(|l| *l != "custom") {
        let d = lookback_us(lb)
            .ok_or_else(|| format!("cannot parse lookback '{lb}': use e.g. 1h, 2d or 2w"))?;
        if query.start_us.is_none() {
            query.start_us = Some(query.end_us.unwrap_or_else(now_us).saturating_sub(d));
        }
    }
    for tags in all(q, "tags") {
        let map: HashMap<String, Value> =
            serde_json::from_str(tags).map_err(|e| format!("tags must be a JSON object: {e}"))?;
        query.tags.extend(
            map.into_iter()
                .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_string))),
        );
    }
    for tag in all(q, "tag") {
        let (k, v) = tag
            .split_once(':')
            .ok_or_else(|| format!("tag '{tag}' must be key:value"))?;
        query.tags.push((k.to_string(), v.to_string()));
    }
    Ok(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn durations_as_go_reads_them() {
        for (s, us) in [
            ("0", 0),
            ("+20ms", 20_000),
            ("1.5s", 1_500_000),
            ("1h30m", 5_400_000_000),
            ("250us", 250),
            ("250µs", 250),
            ("1000ns", 1),
            (".5s", 500_000),
            ("1.s", 1_000_000),
            ("-1s", 0),
        ] {
            assert_eq!(go_duration_us(s), Some(us), "{s}");
        }
        for bad in ["", "10", "ms", "1d", "1x", "1..2s", "+", "-", ".s"] {
            assert_eq!(go_duration_us(bad), None, "{bad}");
        }
        assert_eq!(lookback_us("2d"), Some(2 * 86_400_000_000));
        assert_eq!(lookback_us("3w"), Some(21 * 86_400_000_000));
        assert_eq!(lookback_us("1h"), Some(3_600_000_000));
        assert_eq!(lookback_us("w"), None);
        assert_eq!(lookback_us("1é"), None);
    }

    #[test]
    fn rfc3339_written_reads_back() {
        for s in [0u64, 951_782_400, 1_631_271_823, 4_102_444_799] {
            let text = rfc3339_of_s(s);
            assert_eq!(rfc3339_us(&text), Some(s * 1_000_000), "{text}");
        }
        assert_eq!(rfc3339_of_s(1_631_271_823), "2021-09-10T11:03:43Z");
    }

    #[test]
    fn rfc3339_times() {
        for (s, us) in [
            ("1970-01-01T00:00:00Z", 0),
            ("2026-01-01T00:00:00.000Z", 1_767_225_600_000_000),
            ("2026-01-01T01:00:00+01:00", 1_767_225_600_000_000),
            ("2026-01-01T01:00:00 01:00", 1_767_225_600_000_000),
            ("2025-12-31T23:00:00-01:00", 1_767_225_600_000_000),
            ("2024-02-29T12:34:56.123456789Z", 1_709_210_096_123_456),
            ("2000-03-01t00:00:00.5z", 951_868_800_500_000),
        ] {
            assert_eq!(rfc3339_us(s), Some(us), "{s}");
        }
        for bad in [
            "",
            "2026-01-01",
            "2026-01-01T00:00:00",
            "2026-13-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+0100",
            "1969-12-31T23:59:59Z",
            "2026-01-01T00:00:00Zjunk",
            "２026-01-01T00:00:00Z",
        ] {
            assert_eq!(rfc3339_us(bad), None, "{bad}");
        }
    }

    #[test]
    fn repeated_tags_all_apply_and_the_window_is_start_end_when_given() {
        let q = params(&[
            ("tags", r#"{"a":"1"}"#),
            ("tags", r#"{"b":2}"#),
            ("tag", "c:3"),
            ("tag", "d:x:y"),
            ("lookback", "2w"),
            ("start", "100"),
            ("end", "200"),
        ]);
        let query = parse_query(&q, 0).expect("parses");
        let mut tags = query.tags.clone();
        tags.sort();
        let want: Vec<(String, String)> = [("a", "1"), ("b", "2"), ("c", "3"), ("d", "x:y")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(tags, want);
        assert_eq!((query.start_us, query.end_us), (Some(100), Some(200)));
        let back_from_end = parse_query(&params(&[("end", "7200000000"), ("lookback", "1h")]), 0)
            .expect("end and lookback");
        assert_eq!(back_from_end.start_us, Some(3_600_000_000));
        let lookback = parse_query(&params(&[("lookback", "4w")]), 0).expect("4w");
        assert!(lookback
            .start_us
            .is_some_and(|s| s < now_us() - 27 * 86_400_000_000));
        assert!(parse_query(&params(&[("lookback", "custom")]), 0).is_ok());
        let e = parse_query(&params(&[("minDuration", "2s"), ("maxDuration", "1s")]), 0)
            .expect_err("max below min");
        assert!(e.contains("maxDuration"), "{e}");
        let e = parse_query(&params(&[("minDuration", "1d")]), 0).expect_err("not Go");
        assert!(e.contains("minDuration"), "{e}");
    }
}
