//! Online history: how long each user was present (online or away, visible or not) per UTC
//! day, kept for `history_retention`.
//!
//! History is written from transitions only, never per heartbeat or activity: when a presence
//! ends (the user goes offline), the stores add its span, `[start, last seen]`, to the user's
//! days, split at UTC midnights ([`split`]). A presence still going on is added when read
//! ([`open_span`]), up to now (or, in the offline grace, up to the last close: a grace that
//! ends without a reconnect does not count).
//!
//! A day is a number of days since 1970-01-01 UTC; unix time has no leap seconds, so a day is
//! exactly [`DAY_MS`] long.

use crate::record::UserRecord;
use crate::time::{Millis, civil_from_days, days_from_civil};
use crate::view::Status;

/// Days since 1970-01-01, UTC.
pub type Day = i64;

/// One UTC day in milliseconds.
pub const DAY_MS: Millis = 86_400_000;

/// The most days one presence writes: a span longer than this (a session open for years)
/// keeps only its last [`MAX_SPAN_DAYS`] days, far beyond any retention allowed
/// (`history_retention` is at most 366 days), so each offline transition writes a bounded
/// number of days.
pub const MAX_SPAN_DAYS: i64 = 400;

/// The UTC day holding `ms`.
pub fn day_of(ms: Millis) -> Day {
    ms.div_euclid(DAY_MS)
}

/// `[from, to)` split at UTC midnights: each day it touches with the milliseconds spent in it,
/// oldest first; nothing for an empty or reversed span. Only the last [`MAX_SPAN_DAYS`] days
/// of a longer span are kept.
pub fn split(from: Millis, to: Millis) -> impl Iterator<Item = (Day, Millis)> {
    let from = from.max(to.saturating_sub(MAX_SPAN_DAYS * DAY_MS));
    let mut at = from;
    std::iter::from_fn(move || {
        if at >= to {
            return None;
        }
        let day = day_of(at);
        let end = to.min((day + 1) * DAY_MS);
        let spent = end - at;
        at = end;
        Some((day, spent))
    })
}

/// A day as `YYYY-MM-DD`.
pub fn format_day(day: Day) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Reads `YYYY-MM-DD` (a real calendar date, years 1970–9999).
pub fn parse_day(s: &str) -> Option<Day> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = &s[r];
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if y < 1970 || !(1..=12).contains(&m) || d < 1 {
        return None;
    }
    let day = days_from_civil(y, m, d);
    // 2024-02-30 would land on 2024-03-01: only a date that maps back to itself is real.
    (civil_from_days(day) == (y, m, d)).then_some(day)
}

/// The span of the presence still going on, as far as it counts now: from its start to `now`
/// while a session is open, to the last close during the offline grace; `None` while offline
/// (or for a presence whose start was never recorded).
pub fn open_span(record: &UserRecord, now: Millis) -> Option<(Millis, Millis)> {
    if record.status == Status::Offline {
        return None;
    }
    let start = record.present_since?;
    let end = if record.sessions.is_empty() {
        record.last_seen.unwrap_or(now)
    } else {
        now
    };
    Some((start, end.max(start)))
}

/// The span a transition ended: the presence `old` was in, when `new` is offline. Stores add it
/// to the user's history in the same step as the transition.
pub fn ended_span(old: &UserRecord, new: &UserRecord) -> Option<(Millis, Millis)> {
    if old.status == Status::Offline || new.status != Status::Offline {
        return None;
    }
    let start = old.present_since?;
    let end = new.last_seen?;
    Some((start, end.max(start)))
}

/// Adds `[from, to)` to a per-day tally: what the stores do with an ended span, and what a
/// read does with the span still open.
pub fn add_span(days: &mut std::collections::BTreeMap<Day, Millis>, from: Millis, to: Millis) {
    for (day, spent) in split(from, to) {
        *days.entry(day).or_default() += spent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_rfc3339;

    fn t(s: &str) -> Millis {
        parse_rfc3339(s).unwrap()
    }

    #[test]
    fn a_span_across_midnight_is_split_at_it() {
        let from = t("2024-11-26T23:59:30.000Z");
        let to = t("2024-11-27T00:01:00.500Z");
        let days: Vec<_> = split(from, to).collect();
        assert_eq!(
            days,
            vec![
                (parse_day("2024-11-26").unwrap(), 30_000),
                (parse_day("2024-11-27").unwrap(), 60_500)
            ]
        );
        assert_eq!(split(to, from).count(), 0, "a reversed span is nothing");
        assert_eq!(split(from, from).count(), 0, "an empty span is nothing");
    }

    #[test]
    fn a_span_of_several_days_fills_the_middle_ones() {
        let days: Vec<_> = split(t("2024-02-28T12:00:00Z"), t("2024-03-01T06:00:00Z")).collect();
        assert_eq!(
            days.iter().map(|d| d.1).collect::<Vec<_>>(),
            vec![DAY_MS / 2, DAY_MS, DAY_MS / 4],
            "2024 is a leap year: Feb 29 is a whole day"
        );
        assert_eq!(format_day(days[1].0), "2024-02-29");
    }

    #[test]
    fn a_span_longer_than_the_cap_keeps_its_last_days() {
        let days: Vec<_> = split(0, 1000 * DAY_MS).collect();
        assert_eq!(days.len() as i64, MAX_SPAN_DAYS);
        assert_eq!(days[0].0, 1000 - MAX_SPAN_DAYS);
    }

    #[test]
    fn days_parse_and_print_and_reject_what_is_not_a_date() {
        assert_eq!(parse_day("1970-01-01"), Some(0));
        assert_eq!(format_day(parse_day("2024-11-26").unwrap()), "2024-11-26");
        for bad in [
            "2024-02-30",
            "2023-02-29",
            "2024-13-01",
            "2024-00-10",
            "2024-1-01",
            "24-11-26",
            "2024/11/26",
            "+024-11-26",
            "1969-12-31",
            "",
        ] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
        assert_eq!(parse_day("2024-02-29"), Some(days_from_civil(2024, 2, 29)));
    }
}
