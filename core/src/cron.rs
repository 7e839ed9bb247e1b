//! Cron schedules as Vixie cron reads them: five fields (minute, hour, day of month, month, day
//! of week) with lists, ranges, steps, month and weekday names, Sunday as 0 or 7, the `@hourly`
//! family, and the day-of-month / day-of-week rule (when both are restricted, a day matching
//! either runs). Next runs are computed in a time zone, on wall-clock time, across DST changes.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use std::fmt;

/// A parsed schedule: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    /// Vixie cron: a day field that starts with `*` does not restrict (AND instead of OR).
    dom_star: bool,
    dow_star: bool,
}

/// Why an expression was refused, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError(pub String);

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CronError {}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
    },
    // 7 is Sunday too; folded onto 0 after parsing.
    Field {
        name: "day-of-week",
        min: 0,
        max: 7,
        names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    },
];

fn value(field: &Field, text: &str, whole: &str) -> Result<u32, CronError> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = field.names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + field.min);
    }
    let v: u32 = text.parse().map_err(|_| {
        CronError(format!(
            "invalid {} field \"{whole}\": \"{text}\" is not a number{}",
            field.name,
            names_hint(field)
        ))
    })?;
    if v < field.min || v > field.max {
        return Err(CronError(format!(
            "invalid {} field \"{whole}\": {v} is out of range {}-{}",
            field.name, field.min, field.max
        )));
    }
    Ok(v)
}

fn names_hint(field: &Field) -> &'static str {
    match field.name {
        "month" => " or a month name (jan-dec)",
        "day-of-week" => " or a day name (sun-sat)",
        _ => "",
    }
}

fn parse_field(field: &Field, text: &str) -> Result<u64, CronError> {
    let mut bits = 0u64;
    for part in text.split(',') {
        if part.is_empty() {
            return Err(CronError(format!(
                "invalid {} field \"{text}\": empty list element",
                field.name
            )));
        }
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    CronError(format!(
                        "invalid {} field \"{text}\": step \"{s}\" must be a positive number",
                        field.name
                    ))
                })?;
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (field.min, field.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(field, a, text)?, value(field, b, text)?);
            if a > b {
                return Err(CronError(format!(
                    "invalid {} field \"{text}\": range {a}-{b} is backwards",
                    field.name
                )));
            }
            (a, b)
        } else {
            let v = value(field, range, text)?;
            // "5/15" means from 5 to the end in steps of 15, as cronie reads it.
            (v, if step > 1 { field.max } else { v })
        };
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl CronSchedule {
    /// Parses a 5-field expression or one of `@yearly @annually @monthly @weekly @daily
    /// @midnight @hourly`.
    pub fn parse(expression: &str) -> Result<CronSchedule, CronError> {
        let expression = expression.trim();
        let expanded = match expression.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(CronError(format!(
                    "unknown schedule \"{expression}\" (use @yearly, @monthly, @weekly, @daily, @hourly or 5 fields)"
                )))
            }
            _ => expression,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(CronError(format!(
                "invalid schedule \"{expression}\": expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                parts.len()
            )));
        }
        let mut bits = [0u64; 5];
        for (i, (field, text)) in FIELDS.iter().zip(&parts).enumerate() {
            bits[i] = parse_field(field, text)?;
        }
        let mut dow = bits[4];
        if dow & (1 << 7) != 0 {
            dow = (dow | 1) & !(1 << 7);
        }
        Ok(CronSchedule {
            minutes: bits[0],
            hours: bits[1] as u32,
            days_of_month: bits[2] as u32,
            months: bits[3] as u16,
            days_of_week: dow as u8,
            dom_star: parts[2].starts_with('*'),
            dow_star: parts[4].starts_with('*'),
        })
    }

    fn day_matches(&self, day: NaiveDate) -> bool {
        if self.months & (1 << day.month()) == 0 {
            return false;
        }
        let dom = self.days_of_month & (1 << day.day()) != 0;
        let dow = self.days_of_week & (1 << day.weekday().num_days_from_sunday()) != 0;
        match (self.dom_star, self.dow_star) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// The first run strictly after `after`, in time zone `tz`; `None` if the schedule never
    /// runs (such as `0 0 30 2 *`). A wall-clock time skipped by a DST change runs at the first
    /// instant after the change; a repeated one runs once, at its first occurrence.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&tz).naive_local();
        let start_day = local.date();
        // Eight years cover every leap-day schedule; anything later never runs.
        for offset in 0..(366 * 8) {
            let day = start_day + Duration::days(offset);
            if !self.day_matches(day) {
                continue;
            }
            for hour in (0..24).filter(|h| self.hours & (1 << h) != 0) {
                for minute in (0..60).filter(|m| self.minutes & (1u64 << m) != 0) {
                    let wall = day.and_hms_opt(hour, minute, 0)?;
                    if let Some(instant) = resolve(wall, tz) {
                        if instant > after {
                            return Some(instant);
                        }
                    }
                }
            }
        }
        None
    }
}

/// The instant a wall-clock time stands for in `tz`: the earlier one when it is repeated, the
/// end of the gap when it was skipped.
fn resolve(wall: NaiveDateTime, tz: Tz) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        LocalResult::None => {
            // Step forward minute by minute to the first wall time that exists: the transition.
            let mut probe = wall;
            for _ in 0..(24 * 60) {
                probe += Duration::minutes(1);
                if let LocalResult::Single(t) | LocalResult::Ambiguous(t, _) =
                    tz.from_local_datetime(&probe)
                {
                    let t = t.with_timezone(&Utc);
                    // The first existing minute after a gap; the transition itself is at its start.
                    return Some(t - Duration::seconds(i64::from(t.second())));
                }
            }
            None
        }
    }
}

/// A time zone by its IANA name, as PostgreSQL's `TimeZone` setting holds it.
pub fn time_zone(name: &str) -> Result<Tz, CronError> {
    name.parse::<Tz>().map_err(|_| {
        CronError(format!(
            "unknown time zone \"{name}\" (use an IANA name such as Europe/Paris)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, after: &str, tz: &str) -> String {
        CronSchedule::parse(expr)
            .unwrap()
            .next_after(utc(after), time_zone(tz).unwrap())
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "never".into())
    }

    #[test]
    fn every_minute_and_steps() {
        assert_eq!(
            next("* * * * *", "2026-11-24T10:00:30Z", "UTC"),
            "2026-11-24T10:01:00+00:00"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-11-24T10:16:00Z", "UTC"),
            "2026-11-24T10:30:00+00:00"
        );
        assert_eq!(
            next("5/20 * * * *", "2026-11-24T10:26:00Z", "UTC"),
            "2026-11-24T10:45:00+00:00"
        );
        assert_eq!(
            next("0 9-17/4 * * *", "2026-11-24T13:00:00Z", "UTC"),
            "2026-11-24T17:00:00+00:00"
        );
    }

    #[test]
    fn names_lists_and_sunday_as_seven() {
        assert_eq!(
            next("0 2 * * MON-FRI", "2026-11-28T00:00:00Z", "UTC"),
            "2026-11-30T02:00:00+00:00"
        );
        assert_eq!(
            next("0 0 * * 7", "2026-11-24T00:00:00Z", "UTC"),
            "2026-11-29T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 * * 0", "2026-11-24T00:00:00Z", "UTC"),
            "2026-11-29T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 1 jan,Jul *", "2026-11-24T00:00:00Z", "UTC"),
            "2027-01-01T00:00:00+00:00"
        );
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // Both restricted: the 13th or any Friday, whichever comes first.
        assert_eq!(
            next("0 0 13 * 5", "2026-11-24T00:00:00Z", "UTC"),
            "2026-11-27T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 13 * 5", "2026-12-05T00:00:00Z", "UTC"),
            "2026-12-11T00:00:00+00:00"
        );
        // A day field starting with * does not restrict: only Fridays that are odd days.
        assert_eq!(
            next("0 0 */2 * 5", "2026-11-24T00:00:00Z", "UTC"),
            "2026-11-27T00:00:00+00:00"
        );
    }

    #[test]
    fn month_ends_and_leap_days() {
        assert_eq!(
            next("0 0 31 * *", "2026-11-24T00:00:00Z", "UTC"),
            "2026-12-31T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 29 2 *", "2026-03-01T00:00:00Z", "UTC"),
            "2028-02-29T00:00:00+00:00"
        );
        assert_eq!(next("0 0 30 2 *", "2026-03-01T00:00:00Z", "UTC"), "never");
        assert_eq!(
            next("@yearly", "2026-11-24T00:00:00Z", "UTC"),
            "2027-01-01T00:00:00+00:00"
        );
    }

    #[test]
    fn daylight_saving_changes() {
        // Europe/Paris springs forward on 2026-03-29 at 02:00 (to 03:00): 02:30 is skipped and
        // runs at the transition, 01:00 UTC.
        assert_eq!(
            next("30 2 * * *", "2026-03-28T12:00:00Z", "Europe/Paris"),
            "2026-03-29T01:00:00+00:00"
        );
        // It falls back on 2026-10-25 at 03:00 (to 02:00): 02:30 happens twice, runs once.
        assert_eq!(
            next("30 2 * * *", "2026-10-24T12:00:00Z", "Europe/Paris"),
            "2026-10-25T00:30:00+00:00"
        );
        assert_eq!(
            next("30 2 * * *", "2026-10-25T00:30:00Z", "Europe/Paris"),
            "2026-10-26T01:30:00+00:00"
        );
        // A daily job keeps its wall-clock time: 09:00 local is 08:00 UTC in winter, 07:00 in summer.
        assert_eq!(
            next("0 9 * * *", "2026-03-28T09:00:00Z", "Europe/Paris"),
            "2026-03-29T07:00:00+00:00"
        );
        assert_eq!(
            next("0 3 * * *", "2026-03-08T00:00:00Z", "America/New_York"),
            "2026-03-08T07:00:00+00:00"
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let err = |e: &str| CronSchedule::parse(e).unwrap_err().0;
        assert!(err("60 * * * *").contains("minute field \"60\": 60 is out of range 0-59"));
        assert!(err("* * * *").contains("expected 5 fields"));
        assert!(err("every tuesday").contains("expected 5 fields"));
        assert!(err("* 25 * * *").contains("hour field"));
        assert!(err("* * 0 * *").contains("day-of-month field"));
        assert!(err("* * * 13 *").contains("month field"));
        assert!(err("* * * * 8").contains("day-of-week field"));
        assert!(err("* * * * fri-mon").contains("backwards"));
        assert!(err("*/0 * * * *").contains("step"));
        assert!(err("1,,2 * * * *").contains("empty list element"));
        assert!(err("@fortnightly").contains("unknown schedule"));
        assert!(err("x * * * *").contains("\"x\" is not a number"));
    }

    /// Property: for many expressions and start times, the next run is after the start,
    /// matches, and no minute in between matches. The oracle is a predicate written by hand
    /// for each expression (standard cron semantics, including day-of-month OR day-of-week
    /// when both are restricted), not the parser under test.
    #[test]
    fn next_run_is_the_first_matching_minute() {
        use chrono::Weekday::{Fri, Sat, Sun};
        type Matches = fn(NaiveDateTime) -> bool;
        let cases: [(&str, Matches); 6] = [
            ("*/7 * * * *", |t| t.minute() % 7 == 0),
            ("0 */5 * * *", |t| t.minute() == 0 && t.hour() % 5 == 0),
            ("15 3 * * 1-5", |t| {
                t.minute() == 15 && t.hour() == 3 && !matches!(t.weekday(), Sat | Sun)
            }),
            ("0 0 1,15 * *", |t| {
                t.minute() == 0 && t.hour() == 0 && matches!(t.day(), 1 | 15)
            }),
            ("30 6 * 2 sun", |t| {
                t.minute() == 30 && t.hour() == 6 && t.month() == 2 && t.weekday() == Sun
            }),
            ("0 12 13 * 5", |t| {
                t.minute() == 0 && t.hour() == 12 && (t.day() == 13 || t.weekday() == Fri)
            }),
        ];
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for (expr, matches) in cases {
            let schedule = CronSchedule::parse(expr).unwrap();
            for _ in 0..20 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let start = utc("2026-01-01T00:00:00Z")
                    + Duration::minutes((seed % (366 * 24 * 60)) as i64)
                    + Duration::seconds((seed % 60) as i64);
                let found = schedule.next_after(start, Tz::UTC).unwrap();
                assert!(found > start, "{expr}: {found} is not after {start}");
                assert_eq!(found.second(), 0, "{expr}: {found} is not on a minute");
                assert!(matches(found.naive_utc()), "{expr}: {found} does not match");
                let mut t =
                    start - Duration::seconds(i64::from(start.second())) + Duration::minutes(1);
                while t < found {
                    assert!(
                        !matches(t.naive_utc()),
                        "{expr}: {t} matches before {found}"
                    );
                    t += Duration::minutes(1);
                }
            }
        }
    }
}
