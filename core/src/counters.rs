//! Cumulative statistics counters (pg_stat_database, pg_stat_bgwriter, pg_stat_wal, ...) turned
//! into per-interval deltas and rates, the way a monitoring system must store them: a raw total
//! since the last statistics reset says nothing about what is happening now.

/// The previous reading of one counter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub value: f64,
    /// Seconds since the Unix epoch (any fixed origin works; only differences matter).
    pub at_seconds: f64,
}

/// Growth of a counter between two readings. A counter that went down was reset (by
/// `pg_stat_reset*` or a crash), so everything counted since the reset is the delta.
/// Returns `None` for the first reading: there is nothing to compare with yet.
pub fn delta(previous: Option<Sample>, current: f64) -> Option<f64> {
    let previous = previous?;
    Some(if current >= previous.value {
        current - previous.value
    } else {
        current
    })
}

/// Per-second rate of a counter between two readings; `None` for the first reading or when no
/// time has passed.
pub fn rate_per_second(previous: Option<Sample>, current: Sample) -> Option<f64> {
    let elapsed = current.at_seconds - previous?.at_seconds;
    if elapsed <= 0.0 {
        return None;
    }
    delta(previous, current.value).map(|d| d / elapsed)
}

/// Ratio of `part` to `total` deltas in percent, rounded to two decimals; 100 when nothing was
/// asked for at all in the interval (no block read means no miss).
pub fn percent_of_deltas(part: f64, total: f64) -> f64 {
    if total <= 0.0 {
        return 100.0;
    }
    (100.0 * part / total * 100.0).round() / 100.0
}

/// Transaction ID age as a percentage of the ~2^31 transactions after which PostgreSQL stops
/// accepting writes to prevent wraparound.
pub fn xid_wraparound_percent(age: f64) -> f64 {
    const WRAP_LIMIT: f64 = 2_147_483_648.0;
    (100.0 * age / WRAP_LIMIT * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(value: f64, at: f64) -> Sample {
        Sample {
            value,
            at_seconds: at,
        }
    }

    #[test]
    fn first_reading_has_no_delta() {
        assert_eq!(delta(None, 10.0), None);
        assert_eq!(rate_per_second(None, s(10.0, 5.0)), None);
    }

    #[test]
    fn growth_and_reset() {
        assert_eq!(delta(Some(s(100.0, 0.0)), 150.0), Some(50.0));
        // reset to zero, then 7 more since
        assert_eq!(delta(Some(s(100.0, 0.0)), 7.0), Some(7.0));
    }

    #[test]
    fn rates() {
        assert_eq!(
            rate_per_second(Some(s(100.0, 10.0)), s(400.0, 20.0)),
            Some(30.0)
        );
        assert_eq!(rate_per_second(Some(s(100.0, 10.0)), s(400.0, 10.0)), None);
    }

    #[test]
    fn percentages() {
        assert_eq!(percent_of_deltas(95.0, 100.0), 95.0);
        assert_eq!(percent_of_deltas(2.0, 3.0), 66.67);
        assert_eq!(percent_of_deltas(0.0, 0.0), 100.0);
        assert_eq!(xid_wraparound_percent(214_748_365.0), 10.0);
    }
}
