//! Times people type and read: `restore --at` arguments (dates in local
//! time or UTC, unix seconds, ages such as `1h30m`), and times shown in
//! local time with their zone, or as ages ("3 min ago").

use thiserror::Error;

const NS: i64 = 1_000_000_000;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WhenError {
    #[error(
        "{0:?} is not a time: use a date (2026-11-26T14:05:00 or \"2026-11-26 14:05\", local time; add Z for UTC), unix seconds, or an age (30m, 2h, 1h30m, 3d, 1w)"
    )]
    Unreadable(String),
    #[error("{input:?}: {what} {value} is out of range ({range})")]
    OutOfRange {
        input: String,
        what: &'static str,
        value: i64,
        range: &'static str,
    },
    #[error("{0:?} is in the future: history only holds what already happened")]
    Future(String),
}

/// Parses a time at or before `now` (nanoseconds since the epoch).
///
/// - an age: `90s`, `30m`, `2h`, `3d`, `1w`, compound `1h30m`, optionally
///   with a leading `-` (`-5m`: five minutes ago);
/// - unix seconds: `1764340000`;
/// - a date: `YYYY-MM-DD`, with `T` or a space and `HH:MM[:SS]`, in local
///   time, or UTC with a trailing `Z`.
pub fn parse_time(input: &str, now: i64) -> Result<i64, WhenError> {
    let s = input.trim();
    let bad = || WhenError::Unreadable(input.to_string());
    if s.is_empty() {
        return Err(bad());
    }
    let t = if let Some(age) = parse_age(s.strip_prefix('-').unwrap_or(s)) {
        now.saturating_sub(age.saturating_mul(NS))
    } else if s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<i64>().map_err(|_| bad())?.saturating_mul(NS)
    } else {
        parse_date(input, s)?
    };
    // A second of slack: "now" typed as a date is not the future.
    if t > now + NS {
        return Err(WhenError::Future(input.to_string()));
    }
    Ok(t)
}

/// `1h30m`, `90s`, `2d`, `1w`: seconds. None when not an age.
pub fn parse_age(s: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut num = String::new();
    let mut any = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return None,
        };
        let n: i64 = num.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        num.clear();
        any = true;
    }
    (any && num.is_empty()).then_some(total)
}

fn parse_date(input: &str, s: &str) -> Result<i64, WhenError> {
    let bad = || WhenError::Unreadable(input.to_string());
    let (s, utc) = match s.strip_suffix(['Z', 'z']) {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let (date, time) = s.split_once(['T', ' ']).unwrap_or((s, "00:00:00"));
    let num = |x: &str| -> Result<i64, WhenError> {
        if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) || x.len() > 4 {
            return Err(bad());
        }
        x.parse().map_err(|_| bad())
    };
    let d: Vec<i64> = date.split('-').map(num).collect::<Result<_, _>>()?;
    let t: Vec<i64> = time.trim().split(':').map(num).collect::<Result<_, _>>()?;
    if d.len() != 3 || !(2..=3).contains(&t.len()) {
        return Err(bad());
    }
    let (y, mo, day) = (d[0], d[1], d[2]);
    let (h, mi, sec) = (t[0], t[1], t.get(2).copied().unwrap_or(0));
    let range = |what, value, lo, hi, text| {
        if (lo..=hi).contains(&value) {
            Ok(())
        } else {
            Err(WhenError::OutOfRange {
                input: input.to_string(),
                what,
                value,
                range: text,
            })
        }
    };
    range("year", y, 1970, 9999, "1970-9999")?;
    range("month", mo, 1, 12, "1-12")?;
    range(
        "day",
        day,
        1,
        days_in_month(y, mo),
        "1 to the month's last day",
    )?;
    range("hour", h, 0, 23, "0-23")?;
    range("minute", mi, 0, 59, "0-59")?;
    range("second", sec, 0, 59, "0-59")?;
    let secs = if utc {
        days_from_civil(y, mo, day) * 86_400 + h * 3600 + mi * 60 + sec
    } else {
        local_to_utc(y, mo, day, h, mi, sec).ok_or_else(bad)?
    };
    Ok(secs * NS)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn local_to_utc(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> Option<i64> {
    // SAFETY: an all-zero tm is valid; mktime reads and normalises it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = (y - 1900) as i32;
    tm.tm_mon = (mo - 1) as i32;
    tm.tm_mday = d as i32;
    tm.tm_hour = h as i32;
    tm.tm_min = mi as i32;
    tm.tm_sec = s as i32;
    tm.tm_isdst = -1;
    // SAFETY: tm is a live local.
    let t = unsafe { libc::mktime(&mut tm) };
    (t != -1).then_some(t)
}

/// `2026-12-02 14:05:09 CET`: local time with its zone.
pub fn local(ns: i64) -> String {
    let secs = ns.div_euclid(NS);
    // SAFETY: an all-zero tm is valid; localtime_r fills it from a live time_t.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let t: libc::time_t = secs;
    // SAFETY: both pointers are to live locals.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        let (y, mo, d, h, mi, s) = crate::sync::utc_fields(secs);
        return format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC");
    }
    let zone = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: localtime_r sets tm_zone to a static NUL-terminated name.
        unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} {zone}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
    .trim_end()
    .to_string()
}

/// "just now", "40 s ago", "5 min ago", "3 h ago", "2 days ago".
pub fn ago(then_ns: i64, now_ns: i64) -> String {
    let s = (now_ns - then_ns).div_euclid(NS);
    match s {
        i64::MIN..=4 => "just now".into(),
        5..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// A duration in words: "45 s", "3 min", "1 h 20 min".
pub fn duration(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs.div_ceil(60)),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

/// `1.5 GB`, `340 kB`, `12 bytes` (decimal units, as file managers show).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1000.0;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if v < 10.0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.0} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000 * NS;

    #[test]
    fn ages_simple_compound_and_negative() {
        assert_eq!(parse_time("30m", NOW), Ok(NOW - 1800 * NS));
        assert_eq!(parse_time("1h30m", NOW), Ok(NOW - 5400 * NS));
        assert_eq!(parse_time("-5m", NOW), Ok(NOW - 300 * NS));
        assert_eq!(parse_time("1w", NOW), Ok(NOW - 7 * 86_400 * NS));
        assert_eq!(
            parse_time("2d3h", NOW),
            Ok(NOW - (2 * 86_400 + 3 * 3600) * NS)
        );
        assert!(parse_time("5", NOW).is_ok()); // unix seconds
        assert!(matches!(
            parse_time("1h30", NOW),
            Err(WhenError::Unreadable(_))
        ));
        assert!(matches!(
            parse_time("h", NOW),
            Err(WhenError::Unreadable(_))
        ));
        assert!(matches!(parse_time("", NOW), Err(WhenError::Unreadable(_))));
    }

    #[test]
    fn dates_are_validated() {
        assert_eq!(
            parse_time("2026-11-26T14:05:00Z", NOW),
            Ok((days_from_civil(2026, 11, 26) * 86_400 + 14 * 3600 + 5 * 60) * NS)
        );
        assert!(matches!(
            parse_time("2026-13-45T00:00:00", NOW),
            Err(WhenError::OutOfRange { what: "month", .. })
        ));
        assert!(matches!(
            parse_time("2026-02-29Z", NOW),
            Err(WhenError::OutOfRange { what: "day", .. })
        ));
        assert!(parse_time("2024-02-29Z", NOW).is_ok());
        assert!(matches!(
            parse_time("2026-01-01 24:00Z", NOW),
            Err(WhenError::OutOfRange { what: "hour", .. })
        ));
        assert!(matches!(
            parse_time("2026-1-1x", NOW),
            Err(WhenError::Unreadable(_))
        ));
    }

    #[test]
    fn the_future_is_refused() {
        assert!(matches!(
            parse_time("2099-01-01Z", NOW),
            Err(WhenError::Future(_))
        ));
        assert!(matches!(
            parse_time("9999999999", NOW),
            Err(WhenError::Future(_))
        ));
    }

    #[test]
    fn shown_in_words() {
        assert_eq!(ago(NOW - 3 * 60 * NS, NOW), "3 min ago");
        assert_eq!(ago(NOW, NOW), "just now");
        assert_eq!(bytes(100_000_000), "100 MB");
        assert_eq!(bytes(1_500_000), "1.5 MB");
        assert_eq!(bytes(12), "12 bytes");
        assert_eq!(duration(4000), "1 h 6 min");
        // Within a day of UTC, whatever the zone.
        assert!(local(NOW).starts_with("2027-01-1"), "{}", local(NOW));
    }
}
