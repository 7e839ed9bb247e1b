//! Cron schedules in SQL: `cron_next_run()` and the checks that keep schedule tables valid
//! (an invalid expression is refused at insert with an error naming the bad field).

use crate::error::{require, ToolkitError};
use crate::jobs::due::schedule_time_zone;
use admin_toolkit_core::chrono::{DateTime, Utc};
use admin_toolkit_core::cron::CronSchedule;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

/// Microseconds since the Unix epoch (PostgreSQL counts from 2000-01-01).
pub fn unix_micros(t: TimestampWithTimeZone) -> i64 {
    t.into_inner() + 946_684_800_000_000
}

fn to_utc(t: TimestampWithTimeZone) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(unix_micros(t)).unwrap_or_default()
}

fn from_utc(t: DateTime<Utc>) -> TimestampWithTimeZone {
    let micros = t.timestamp_micros() - 946_684_800_000_000;
    TimestampWithTimeZone::try_from(micros).unwrap_or_else(|_| {
        ToolkitError::invalid_parameter("next run is out of the timestamp range").raise()
    })
}

/// Parses an expression, raising 22023 with the field at fault.
pub fn parse_or_raise(expression: &str) -> CronSchedule {
    CronSchedule::parse(expression).unwrap_or_else(|e| {
        ToolkitError::invalid_parameter(format!("invalid schedule_expression: {e}"))
            .with_hint("Use 5 cron fields (minute hour day-of-month month day-of-week) or @hourly, @daily, @weekly, @monthly, @yearly.")
            .raise()
    })
}

/// The first run of a cron expression strictly after `after` (NULL if it never runs), in the
/// schedules' time zone.
#[pg_extern(stable, parallel_safe)]
fn cron_next_run(
    expression: Option<&str>,
    after: default!(Option<TimestampWithTimeZone>, "now()"),
) -> Option<TimestampWithTimeZone> {
    let schedule = parse_or_raise(require(expression, "expression"));
    let after = to_utc(require(after, "after"));
    schedule
        .next_after(after, schedule_time_zone())
        .map(from_utc)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn next_run_is_filled_in_and_follows_the_expression() {
        Spi::run("SET TimeZone = 'UTC'").unwrap();
        Spi::run(
            "INSERT INTO admin_toolkit.maintenance_schedules (maintenance_type, schedule_expression) \
             VALUES ('analyze', '*/5 * * * *')",
        )
        .unwrap();
        let ok = Spi::get_one::<bool>(
            "SELECT next_run > now() AND next_run <= now() + interval '5 minutes' \
                    AND extract(minute FROM next_run)::int % 5 = 0 \
             FROM admin_toolkit.maintenance_schedules",
        );
        assert_eq!(ok, Ok(Some(true)));
        let moved = Spi::get_one::<bool>(
            "UPDATE admin_toolkit.maintenance_schedules SET schedule_expression = '@yearly' \
             RETURNING next_run = date_trunc('year', now() AT TIME ZONE 'UTC' + interval '1 year') AT TIME ZONE 'UTC'",
        );
        assert_eq!(moved, Ok(Some(true)));
    }

    #[pg_test]
    fn cron_next_run_in_sql() {
        let next = Spi::get_one::<String>(
            "SELECT to_char(admin_toolkit.cron_next_run('0 0 29 2 *', '2026-03-01 00:00+00') AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        );
        assert_eq!(next, Ok(Some("2028-02-29".into())));
        let never =
            Spi::get_one::<bool>("SELECT admin_toolkit.cron_next_run('0 0 30 2 *') IS NULL");
        assert_eq!(never, Ok(Some(true)));
    }

    #[pg_test(
        error = "invalid schedule_expression: invalid minute field \"60\": 60 is out of range 0-59"
    )]
    fn minute_sixty_is_refused() {
        Spi::run(
            "INSERT INTO admin_toolkit.maintenance_schedules (maintenance_type, schedule_expression) VALUES ('vacuum', '60 * * * *')",
        )
        .unwrap();
    }

    #[pg_test(
        error = "invalid schedule_expression: invalid schedule \"every tuesday\": expected 5 fields (minute hour day-of-month month day-of-week), found 2"
    )]
    fn words_are_refused() {
        Spi::run(
            "INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location) \
             VALUES ('full', 'every tuesday', 7, '/b')",
        )
        .unwrap();
    }

    #[pg_test(
        error = "invalid schedule_expression: invalid schedule \"* * * *\": expected 5 fields (minute hour day-of-month month day-of-week), found 4"
    )]
    fn four_fields_are_refused() {
        Spi::run(
            "INSERT INTO admin_toolkit.maintenance_schedules (maintenance_type, schedule_expression) VALUES ('vacuum', '* * * *')",
        )
        .unwrap();
    }
}
