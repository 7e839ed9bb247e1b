//! Daily range partitions of the metric and audit logs: names, bounds and what upkeep must do.
//!
//! Days are UTC days: a partition `<parent>_pYYYYMMDD` holds `[day 00:00 UTC, day+1 00:00 UTC)`.
//! UTC keeps every day 24 hours long whatever the server's time zone, so bounds never overlap
//! or leave gaps across daylight-saving changes.

use chrono::{Days, NaiveDate};
use std::collections::BTreeSet;

/// Name of the partition holding `day` of `parent` (an unqualified table name).
pub fn partition_name(parent: &str, day: NaiveDate) -> String {
    format!("{parent}_p{}", day.format("%Y%m%d"))
}

/// The day a partition name stands for, if it follows our naming scheme for `parent`.
/// Partitions named otherwise (made by hand) are never touched by upkeep.
pub fn parse_partition_day(parent: &str, name: &str) -> Option<NaiveDate> {
    let suffix = name.strip_prefix(parent)?.strip_prefix("_p")?;
    if suffix.len() != 8 || !suffix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    NaiveDate::parse_from_str(suffix, "%Y%m%d").ok()
}

/// Lower and upper bound of a day's partition, as timestamptz literals in UTC.
pub fn partition_bounds(day: NaiveDate) -> (String, String) {
    let next = day + Days::new(1);
    (
        format!("{} 00:00:00+00", day.format("%Y-%m-%d")),
        format!("{} 00:00:00+00", next.format("%Y-%m-%d")),
    )
}

/// What partition upkeep must do, computed from what exists.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionPlan {
    /// Days that need a partition, oldest first (rows for them in the default partition move in).
    pub create: Vec<NaiveDate>,
    /// Days whose partitions are entirely past retention, oldest first.
    pub drop: Vec<NaiveDate>,
    /// Rows of the default partition older than this instant's day are past retention.
    pub retention_cutoff: NaiveDate,
}

/// Plans upkeep for one partitioned log.
///
/// * `today`: the current UTC day;
/// * `existing`: days that already have a partition;
/// * `days_in_default`: days that have rows sitting in the default partition;
/// * `premake_days`: partitions are made for today and this many days ahead;
/// * `retention_days`: data older than this many whole days is dropped.
///
/// A day is dropped only once its whole range is older than `today - retention_days`, so no
/// row younger than the retention is ever removed. Rows waiting in the default partition for a
/// day still inside retention get a partition of their own, so they are kept and later dropped
/// with their day.
pub fn plan_daily_partitions(
    today: NaiveDate,
    existing: &[NaiveDate],
    days_in_default: &[NaiveDate],
    premake_days: u32,
    retention_days: u32,
) -> PartitionPlan {
    let existing: BTreeSet<NaiveDate> = existing.iter().copied().collect();
    let cutoff = today - Days::new(u64::from(retention_days));
    let keep = |d: &NaiveDate| *d >= cutoff;

    let mut create: BTreeSet<NaiveDate> = (0..=premake_days)
        .map(|i| today + Days::new(u64::from(i)))
        .collect();
    create.extend(days_in_default.iter().copied().filter(keep));
    let create = create
        .into_iter()
        .filter(|d| !existing.contains(d))
        .collect();
    let drop = existing.iter().copied().filter(|d| !keep(d)).collect();
    PartitionPlan {
        create,
        drop,
        retention_cutoff: cutoff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn names_round_trip() {
        let day = d("2026-02-28");
        let name = partition_name("performance_metrics", day);
        assert_eq!(name, "performance_metrics_p20260228");
        assert_eq!(parse_partition_day("performance_metrics", &name), Some(day));
    }

    #[test]
    fn foreign_names_are_ignored() {
        for name in [
            "performance_metrics_default",
            "performance_metrics_p2026022",
            "performance_metrics_p20261345",
            "security_audit_log_p20260101",
            "performance_metrics_p2026x228",
        ] {
            assert_eq!(
                parse_partition_day("performance_metrics", name),
                None,
                "{name}"
            );
        }
    }

    #[test]
    fn bounds_cross_month_and_leap_day() {
        assert_eq!(
            partition_bounds(d("2028-02-28")),
            (
                "2028-02-28 00:00:00+00".to_string(),
                "2028-02-29 00:00:00+00".to_string()
            )
        );
        assert_eq!(
            partition_bounds(d("2026-12-31")).1,
            "2027-01-01 00:00:00+00"
        );
    }

    #[test]
    fn fresh_install_makes_today_and_premade_days() {
        let plan = plan_daily_partitions(d("2026-11-24"), &[], &[], 3, 30);
        assert_eq!(
            plan.create,
            vec![
                d("2026-11-24"),
                d("2026-11-25"),
                d("2026-11-26"),
                d("2026-11-27")
            ]
        );
        assert!(plan.drop.is_empty());
    }

    #[test]
    fn existing_days_are_not_recreated_and_old_ones_drop() {
        let existing = [
            d("2026-10-24"),
            d("2026-10-25"),
            d("2026-11-24"),
            d("2026-11-25"),
        ];
        let plan = plan_daily_partitions(d("2026-11-24"), &existing, &[], 2, 30);
        assert_eq!(plan.create, vec![d("2026-11-26")]);
        // 2026-10-25 ends at 10-26 00:00, younger than the cutoff 10-25 00:00 plus a day: kept.
        assert_eq!(plan.drop, vec![d("2026-10-24")]);
        assert_eq!(plan.retention_cutoff, d("2026-10-25"));
    }

    #[test]
    fn rows_in_default_get_a_partition_only_within_retention() {
        let in_default = [d("2026-01-01"), d("2026-11-20")];
        let plan = plan_daily_partitions(d("2026-11-24"), &[], &in_default, 0, 30);
        assert_eq!(plan.create, vec![d("2026-11-20"), d("2026-11-24")]);
    }
}
