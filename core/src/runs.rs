//! How a run (a backup, a maintenance run, a restore drill) stands, as one type. Each run table
//! keeps the words its users know (the specification's 'completed', 'success', 'passed'); the
//! words are only spelled at the boundary, here.

use std::fmt;

/// The tables that record runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunTable {
    /// `backup_history`
    Backups,
    /// `maintenance_runs`
    Maintenance,
    /// `restore_drills`
    Drills,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    /// It did its work: a backup completed, a maintenance command succeeded, a drill passed.
    Succeeded,
    Failed,
    /// Stopped on request (pg_cancel_backend) before it finished.
    Cancelled,
    /// A maintenance run that found nothing to do.
    Skipped,
}

impl RunStatus {
    /// The status as `table` spells it. Maintenance runs have no 'cancelled' (a cancelled
    /// command is an 'error' there); only they have 'skipped'.
    pub fn text(self, table: RunTable) -> &'static str {
        use RunStatus::*;
        use RunTable::*;
        match (self, table) {
            (Running, _) => "running",
            (Succeeded, Backups) => "completed",
            (Succeeded, Maintenance) => "success",
            (Succeeded, Drills) => "passed",
            (Failed, Maintenance) | (Cancelled, Maintenance) => "error",
            (Failed, _) => "failed",
            (Cancelled, _) => "cancelled",
            // Only maintenance runs are skipped; elsewhere nothing done is a success.
            (Skipped, Maintenance) => "skipped",
            (Skipped, _) => Succeeded.text(table),
        }
    }

    /// The status `text` means in `table`; `None` for a word the table does not use for a
    /// run's outcome (a backup's 'deleting' and 'deleted' are retention's, not the run's).
    pub fn parse(table: RunTable, text: &str) -> Option<RunStatus> {
        use RunStatus::*;
        [Running, Succeeded, Failed, Skipped, Cancelled]
            .into_iter()
            .find(|s| s.text(table) == text)
    }

    /// Whether the run has ended.
    pub fn finished(self) -> bool {
        self != RunStatus::Running
    }
}

impl fmt::Display for RunTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunTable::Backups => "backup_history",
            RunTable::Maintenance => "maintenance_runs",
            RunTable::Drills => "restore_drills",
        })
    }
}

/// Seconds spent in each step of a run, in the order taken, for its record.
pub struct PhaseTimer {
    last: std::time::Instant,
    steps: Vec<(&'static str, f64)>,
}

impl Default for PhaseTimer {
    fn default() -> Self {
        PhaseTimer {
            last: std::time::Instant::now(),
            steps: Vec::new(),
        }
    }
}

impl PhaseTimer {
    /// Ends step `name`, begun when the previous one ended (or the timer was made).
    pub fn mark(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        let seconds = now.duration_since(self.last).as_secs_f64();
        self.steps.push((name, (seconds * 1000.0).round() / 1000.0));
        self.last = now;
    }

    /// The steps and their seconds (to the millisecond).
    pub fn steps(&self) -> &[(&'static str, f64)] {
        &self.steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CHECK constraints of the three tables (sql/bootstrap.sql, sql/drills.sql), copied
    /// by hand: an independent statement of what each table accepts.
    const ALLOWED: [(RunTable, &[&str]); 3] = [
        (
            RunTable::Backups,
            &[
                "running",
                "completed",
                "failed",
                "cancelled",
                "deleting",
                "deleted",
            ],
        ),
        (
            RunTable::Maintenance,
            &["running", "success", "error", "skipped"],
        ),
        (
            RunTable::Drills,
            &["running", "passed", "failed", "cancelled"],
        ),
    ];

    #[test]
    fn every_status_is_a_word_its_table_accepts_and_reads_back() {
        use RunStatus::*;
        for (table, allowed) in ALLOWED {
            for status in [Running, Succeeded, Failed, Cancelled, Skipped] {
                let text = status.text(table);
                assert!(allowed.contains(&text), "{table}: {status:?} -> {text}");
                let back = RunStatus::parse(table, text).unwrap();
                assert_eq!(back.text(table), text, "{table}: {text}");
            }
        }
        assert_eq!(RunStatus::parse(RunTable::Backups, "deleted"), None);
        assert_eq!(RunStatus::parse(RunTable::Drills, "success"), None);
        assert_eq!(
            RunStatus::parse(RunTable::Maintenance, "error"),
            Some(Failed)
        );
        assert!(!Running.finished() && Cancelled.finished());
    }
}
