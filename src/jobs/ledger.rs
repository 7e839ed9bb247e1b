//! The run tables' lifecycle in one place: a run gets its id before its job starts, the job
//! records its row and its outcome, a schedule whose owner cannot run jobs gets a refused run,
//! and the worker's upkeep fails runs whose job vanished. Every run table (backups,
//! maintenance runs, restore drills) goes through one [`Ledger`]; what each table calls a
//! status is [`RunStatus::text`]'s business.

use super::{bookkeeping, SHUTDOWN};
use crate::error::ToolkitError;
pub use admin_toolkit_core::runs::{RunStatus, RunTable};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

/// How one run table names its columns.
pub struct Ledger {
    pub table: RunTable,
    /// The run's id (its sequence is `<table>_<id>_seq`).
    id: &'static str,
    /// Why a run did not succeed.
    message: &'static str,
    /// When it ended.
    finished: &'static str,
    /// The pid of the run's job, as an expression over the row (alias `r`).
    pid: &'static str,
    /// Inserts a refused run: $1 id, $2 schedule id, $3 why, $4 owner, $5 the status.
    refused: &'static str,
    /// Run in the same transaction once a run has ended, with $1 the run's id.
    after_finish: Option<&'static str>,
}

pub const BACKUPS: Ledger = Ledger {
    table: RunTable::Backups,
    id: "backup_id",
    message: "error_message",
    finished: "end_time",
    pid: "(r.metadata->>'pid')::int",
    refused:
        "INSERT INTO admin_toolkit.backup_history (backup_id, schedule_id, backup_type, status, \
                backup_path, error_message, end_time, owner) \
              SELECT $1, schedule_id, backup_type, $5, storage_location, $3, clock_timestamp(), $4 \
                FROM admin_toolkit.backup_schedules WHERE schedule_id = $2",
    after_finish: None,
};

pub const MAINTENANCE: Ledger = Ledger {
    table: RunTable::Maintenance,
    id: "run_id",
    message: "error_message",
    finished: "finished_at",
    pid: "(r.details->>'pid')::int",
    refused: "INSERT INTO admin_toolkit.maintenance_runs (run_id, schedule_id, maintenance_type, \
                target_object, status, error_message, finished_at, owner) \
              SELECT $1, schedule_id, maintenance_type, \
                     coalesce(target_schema || coalesce('.' || target_table, ''), 'database'), \
                     $5, $3, clock_timestamp(), $4 \
                FROM admin_toolkit.maintenance_schedules WHERE schedule_id = $2",
    after_finish: Some(
        "UPDATE admin_toolkit.maintenance_schedules s SET last_run = r.started_at \
           FROM admin_toolkit.maintenance_runs r WHERE r.run_id = $1 AND s.schedule_id = r.schedule_id",
    ),
};

pub const DRILLS: Ledger = Ledger {
    table: RunTable::Drills,
    id: "drill_id",
    message: "failure_reason",
    finished: "finished_at",
    pid: "r.pid",
    refused:
        "INSERT INTO admin_toolkit.restore_drills (drill_id, schedule_id, status, failure_reason, \
                finished_at, owner) \
              VALUES ($1, $2, $5, $3, clock_timestamp(), $4)",
    after_finish: None,
};

/// What stopped a job: how its run ends and why.
pub type Interruption = (RunStatus, &'static str);

/// The run status of a job stopped by a shutdown (SIGTERM) or a cancellation.
pub fn interrupted(die: bool) -> Interruption {
    if die {
        (RunStatus::Failed, SHUTDOWN)
    } else {
        (RunStatus::Cancelled, "cancelled")
    }
}

impl Ledger {
    /// A new run's id, taken before its job starts so the caller can wait for its row.
    pub fn next_id(&self) -> i64 {
        let sql = format!(
            "SELECT nextval('admin_toolkit.{}_{}_seq')",
            self.table, self.id
        );
        Spi::get_one::<i64>(&sql).ok().flatten().unwrap_or_else(|| {
            ToolkitError::wrong_state(format!("cannot allocate an id in {}", self.table)).raise()
        })
    }

    /// Whether the run's row exists (its job has recorded it). Read-only.
    pub fn exists(&self, id: i64) -> bool {
        crate::query::read_scalar::<bool>(&format!(
            "SELECT EXISTS (SELECT 1 FROM admin_toolkit.{} WHERE {} = {id})",
            self.table, self.id
        ))
        .ok()
        .flatten()
            == Some(true)
    }

    /// Records run `id` of `schedule_id`, which could not start as `owner`, as failed with
    /// why. Logged, never raised: the worker's other schedules go on.
    pub fn refuse(&self, id: i64, schedule_id: i32, owner: &str, why: &str) {
        let status = RunStatus::Failed.text(self.table);
        let recorded = Spi::run_with_args(
            self.refused,
            &[
                id.into(),
                schedule_id.into(),
                why.into(),
                owner.into(),
                status.into(),
            ],
        );
        if let Err(e) = recorded {
            log!(
                "admin_toolkit worker: recording refused run {id} in {} failed: {e}",
                self.table
            );
        }
    }

    /// Records how run `id` ended, in a transaction of its own (a job calls this outside any):
    /// the status, why (`None` for a success), when, and `more` columns, each a `SET` item
    /// whose `$` is its argument (`("backup_size_bytes = $", size)`). Arguments are made
    /// before the transaction starts: scalars and text only. Logged when it fails.
    pub fn finish(
        &self,
        id: i64,
        status: RunStatus,
        why: Option<&str>,
        more: Vec<(&str, DatumWithOid)>,
    ) -> Result<(), String> {
        let mut sets = format!(
            "status = $2, {} = $3, {} = clock_timestamp()",
            self.message, self.finished
        );
        let mut args: Vec<DatumWithOid> =
            vec![id.into(), status.text(self.table).into(), why.into()];
        for (set, arg) in more {
            args.push(arg);
            sets.push_str(", ");
            sets.push_str(&set.replacen('$', &format!("${}", args.len()), 1));
        }
        let update = format!(
            "UPDATE admin_toolkit.{} SET {sets} WHERE {} = $1",
            self.table, self.id
        );
        let recorded = bookkeeping(|| {
            Spi::run_with_args(&update, &args)?;
            match self.after_finish {
                Some(then) => Spi::run_with_args(then, &[id.into()]),
                None => Ok(()),
            }
        });
        if let Err(e) = &recorded {
            log!(
                "admin_toolkit job: recording the end of run {id} in {} failed: {e}",
                self.table
            );
        }
        recorded
    }

    /// Fails the runs still 'running' whose job is gone (crash, kill, restart) and returns
    /// their ids. `noun` names a run in the message ("backup job", "drill job").
    pub fn sweep_vanished(&self, noun: &str) -> spi::Result<Vec<i64>> {
        let sql = format!(
            "UPDATE admin_toolkit.{table} r SET status = $1, {finished} = clock_timestamp(), \
                    {message} = $2 \
              WHERE status = $3 AND NOT EXISTS \
                    (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.pid = {pid} \
                        AND a.backend_type = 'admin_toolkit job') \
             RETURNING {id}",
            table = self.table,
            finished = self.finished,
            message = self.message,
            pid = self.pid,
            id = self.id,
        );
        let why = format!("interrupted: the {noun} exited before finishing");
        Spi::connect_mut(|c| {
            c.update(
                &sql,
                None,
                &[
                    RunStatus::Failed.text(self.table).into(),
                    why.as_str().into(),
                    RunStatus::Running.text(self.table).into(),
                ],
            )?
            .map(|r| Ok(r.get::<i64>(1)?.unwrap_or_default()))
            .collect()
        })
    }
}
