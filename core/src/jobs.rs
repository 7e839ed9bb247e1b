//! What a job worker must do, as one typed value: its kind with its ids, the role it runs as and
//! the database it connects to. Encoded into `bgw_extra` (128 bytes) and decoded in the job
//! worker, here and nowhere else.

use std::fmt;

/// PostgreSQL's `BGW_EXTRALEN`: what `bgw_extra` holds, terminating NUL included.
pub const EXTRA_CAPACITY: usize = 128;

/// The work of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    /// One run of a maintenance schedule; the job creates run `run_id`.
    Maintenance { schedule_id: i32, run_id: i64 },
    /// The work of maintenance run `run_id` in another database than the toolkit's, handed
    /// over by its supervising maintenance job in request and outcome files.
    MaintenanceIn { run_id: i64 },
    /// The maintenance facts of the database the job connects to, for the worker.
    Facts,
    /// One run of a backup schedule; the job creates backup `backup_id`.
    Backup { schedule_id: i32, backup_id: i64 },
    /// One configuration change, handed over in a request file named by `request`.
    Config { request: String },
    /// Retention's deletions: the files of backups marked 'deleting' and the archived WAL no
    /// retained backup needs, in bounded batches, outside long transactions.
    Deletion,
    /// One restore drill; the job creates drill `drill_id`. `schedule_id` 0: run by hand;
    /// `backup_id` 0: the latest completed backup; `target` (microseconds since the epoch)
    /// none: the end of the archived WAL.
    Drill {
        schedule_id: i32,
        drill_id: i64,
        backup_id: i64,
        target: Option<i64>,
    },
}

/// A job: what to do, as which role (OID), in which database (OID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDescriptor {
    pub kind: JobKind,
    pub role: u32,
    pub database: u32,
}

const VERSION: &str = "job1";

impl JobDescriptor {
    /// The name the job shows in pg_stat_activity and the server log.
    pub fn title(&self) -> String {
        match &self.kind {
            JobKind::Maintenance { run_id, .. } => {
                format!("admin_toolkit maintenance run {run_id}")
            }
            JobKind::MaintenanceIn { run_id } => {
                format!("admin_toolkit maintenance run {run_id} (its database)")
            }
            JobKind::Facts => "admin_toolkit facts".to_string(),
            JobKind::Backup { backup_id, .. } => format!("admin_toolkit backup {backup_id}"),
            JobKind::Config { request } => format!("admin_toolkit configuration change {request}"),
            JobKind::Drill { drill_id, .. } => format!("admin_toolkit restore drill {drill_id}"),
            JobKind::Deletion => "admin_toolkit retention deletions".to_string(),
        }
    }

    /// The text stored in `bgw_extra`; refused when it would not fit.
    pub fn encode(&self) -> Result<String, JobError> {
        let work = match &self.kind {
            JobKind::Maintenance {
                schedule_id,
                run_id,
            } => format!("maintenance {schedule_id} {run_id}"),
            JobKind::MaintenanceIn { run_id } => format!("maintenance-in {run_id}"),
            JobKind::Facts => "facts".to_string(),
            JobKind::Deletion => "deletion".to_string(),
            JobKind::Backup {
                schedule_id,
                backup_id,
            } => format!("backup {schedule_id} {backup_id}"),
            JobKind::Config { request } => {
                if request.is_empty()
                    || !request
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-')
                {
                    return Err(JobError(format!(
                        "invalid configuration request id \"{request}\""
                    )));
                }
                format!("config {request}")
            }
            JobKind::Drill {
                schedule_id,
                drill_id,
                backup_id,
                target,
            } => format!(
                "drill {schedule_id} {drill_id} {backup_id} {}",
                target.map_or_else(|| "-".to_string(), |t| t.to_string())
            ),
        };
        let text = format!("{VERSION} {} {} {work}", self.role, self.database);
        if text.len() >= EXTRA_CAPACITY {
            return Err(JobError(format!(
                "job descriptor too long ({} bytes)",
                text.len()
            )));
        }
        Ok(text)
    }

    /// Parses what [`encode`](Self::encode) wrote.
    pub fn decode(text: &str) -> Result<JobDescriptor, JobError> {
        let bad = || JobError(format!("malformed job descriptor \"{text}\""));
        let words: Vec<&str> = text.split_whitespace().collect();
        let [version, role, database, kind, rest @ ..] = words.as_slice() else {
            return Err(bad());
        };
        if *version != VERSION {
            return Err(bad());
        }
        let role: u32 = role.parse().map_err(|_| bad())?;
        let database: u32 = database.parse().map_err(|_| bad())?;
        if role == 0 || database == 0 {
            return Err(bad());
        }
        let kind = match (*kind, rest) {
            ("maintenance", [schedule, run]) => JobKind::Maintenance {
                schedule_id: schedule.parse().map_err(|_| bad())?,
                run_id: run.parse().map_err(|_| bad())?,
            },
            ("facts", []) => JobKind::Facts,
            ("deletion", []) => JobKind::Deletion,
            ("maintenance-in", [run]) => JobKind::MaintenanceIn {
                run_id: run.parse().map_err(|_| bad())?,
            },
            ("backup", [schedule, backup]) => JobKind::Backup {
                schedule_id: schedule.parse().map_err(|_| bad())?,
                backup_id: backup.parse().map_err(|_| bad())?,
            },
            ("config", [request]) => JobKind::Config {
                request: (*request).to_string(),
            },
            ("drill", [schedule, drill, backup, target]) => JobKind::Drill {
                schedule_id: schedule.parse().map_err(|_| bad())?,
                drill_id: drill.parse().map_err(|_| bad())?,
                backup_id: backup.parse().map_err(|_| bad())?,
                target: match *target {
                    "-" => None,
                    t => Some(t.parse().map_err(|_| bad())?),
                },
            },
            _ => return Err(bad()),
        };
        Ok(JobDescriptor {
            kind,
            role,
            database,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError(pub String);

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_fits() {
        let kinds = [
            JobKind::Maintenance {
                schedule_id: i32::MAX,
                run_id: i64::MAX,
            },
            JobKind::Backup {
                schedule_id: 1,
                backup_id: 42,
            },
            JobKind::MaintenanceIn { run_id: i64::MAX },
            JobKind::Facts,
            JobKind::Deletion,
            JobKind::Config {
                request: "12345-1732500000000000".into(),
            },
            JobKind::Drill {
                schedule_id: i32::MAX,
                drill_id: i64::MAX,
                backup_id: i64::MAX,
                target: Some(i64::MIN),
            },
            JobKind::Drill {
                schedule_id: 0,
                drill_id: 1,
                backup_id: 0,
                target: None,
            },
        ];
        for kind in kinds {
            let job = JobDescriptor {
                kind,
                role: u32::MAX,
                database: 5,
            };
            let text = job.encode().unwrap();
            assert!(text.len() < EXTRA_CAPACITY);
            assert_eq!(JobDescriptor::decode(&text).unwrap(), job);
        }
    }

    #[test]
    fn malformed_descriptors_are_refused() {
        for text in [
            "",
            "maintenance 1 2",
            "job1 10 5 maintenance 1",
            "job1 10 5 backup x 2",
            "job1 0 5 backup 1 2",
            "job1 10 0 backup 1 2",
            "job1 10 5 vacuum 1 2",
            "job2 10 5 backup 1 2",
            "job1 10 5 config a b",
            "job1 10 5 drill 1 2 3",
            "job1 10 5 maintenance-in x",
            "job1 10 5 facts 1",
            "job1 10 5 drill 1 2 3 x",
        ] {
            assert!(JobDescriptor::decode(text).is_err(), "{text:?}");
        }
        let odd = JobDescriptor {
            kind: JobKind::Config {
                request: "../x".into(),
            },
            role: 10,
            database: 5,
        };
        assert!(odd.encode().is_err());
    }
}
