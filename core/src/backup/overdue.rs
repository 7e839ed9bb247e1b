//! When a backup schedule is overdue: its last completed backup is older than the longest gap
//! between two of its runs, plus an hour for the run itself. The gap is read from the cron
//! expression (a weekly full allows a week, a Monday-to-Saturday incremental two days over the
//! weekend), so one rule fits every schedule.

use crate::cron::CronSchedule;
use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;

/// Time a run may take after it fell due before its schedule counts as overdue.
pub const GRACE: Duration = Duration::hours(1);

/// Runs looked at to find the longest gap: enough for any weekly pattern.
const RUNS_LOOKED_AT: usize = 16;

/// The longest gap between two consecutive runs of `schedule` from `now` on; `None` when it
/// runs fewer than twice in the years ahead.
pub fn longest_gap(schedule: &CronSchedule, now: DateTime<Utc>, tz: Tz) -> Option<Duration> {
    let mut runs = Vec::with_capacity(RUNS_LOOKED_AT);
    let mut at = now;
    while runs.len() < RUNS_LOOKED_AT {
        match schedule.next_after(at, tz) {
            Some(next) => {
                runs.push(next);
                at = next;
            }
            None => break,
        }
    }
    runs.windows(2).map(|w| w[1] - w[0]).max()
}

/// Whether a schedule whose last completed backup ended at `last_success` (or, with none, that
/// was created at `created`) is overdue at `now`.
pub fn is_overdue(
    schedule: &CronSchedule,
    last_success: Option<DateTime<Utc>>,
    created: DateTime<Utc>,
    now: DateTime<Utc>,
    tz: Tz,
) -> bool {
    let Some(gap) = longest_gap(schedule, now, tz) else {
        return false;
    };
    now - last_success.unwrap_or(created) > gap + GRACE
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(d: u32, h: u32) -> DateTime<Utc> {
        // 2026-11-01 is a Sunday.
        Utc.with_ymd_and_hms(2026, 11, d, h, 0, 0).unwrap()
    }

    #[test]
    fn the_allowed_age_follows_the_schedule() {
        let tz = chrono_tz::UTC;
        let weekly = CronSchedule::parse("0 2 * * 0").unwrap();
        let workdays = CronSchedule::parse("0 2 * * 1-6").unwrap();
        assert_eq!(longest_gap(&weekly, at(4, 12), tz), Some(Duration::days(7)));
        assert_eq!(
            longest_gap(&workdays, at(4, 12), tz),
            Some(Duration::days(2))
        );
        // A weekly full six days old is fine, eight days old is overdue.
        assert!(!is_overdue(&weekly, Some(at(1, 3)), at(1, 0), at(7, 3), tz));
        assert!(is_overdue(&weekly, Some(at(1, 3)), at(1, 0), at(9, 4), tz));
        // Never completed: counted from the schedule's creation.
        assert!(!is_overdue(&workdays, None, at(4, 0), at(5, 12), tz));
        assert!(is_overdue(&workdays, None, at(4, 0), at(7, 12), tz));
        // A schedule that never runs again is never overdue.
        let never = CronSchedule::parse("0 0 30 2 *").unwrap();
        assert!(!is_overdue(&never, None, at(1, 0), at(30, 0), tz));
    }
}
