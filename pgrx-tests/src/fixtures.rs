//! Rows and runs the tests make again and again: schedules inserted as a user would, a backup
//! run to its end, a program's output as text. One definition each, so a schedule table that
//! grows a column changes one place.

use postgres::Client;
use std::process::Output;

/// A backup schedule to insert; `BackupSchedule::new(kind, location).insert(db)`.
pub struct BackupSchedule<'a> {
    pub kind: &'a str,
    pub location: &'a str,
    pub compression_level: i32,
    pub encryption_key_id: Option<&'a str>,
    pub expression: &'a str,
}

impl<'a> BackupSchedule<'a> {
    /// Daily at 03:00 (so it never runs by itself during a test), compression level 1.
    pub fn new(kind: &'a str, location: &'a str) -> BackupSchedule<'a> {
        BackupSchedule {
            kind,
            location,
            compression_level: 1,
            encryption_key_id: None,
            expression: "0 3 * * *",
        }
    }

    /// Inserts it and returns its schedule_id.
    pub fn insert(&self, db: &mut Client) -> i32 {
        db.query_one(
            "INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, \
               storage_location, compression_level, encryption_key_id) \
             VALUES ($1, $2, 7, $3, $4, $5) RETURNING schedule_id",
            &[
                &self.kind,
                &self.expression,
                &self.location,
                &self.compression_level,
                &self.encryption_key_id,
            ],
        )
        .unwrap()
        .get(0)
    }
}

/// A maintenance schedule to insert; `MaintenanceSchedule::new(kind).insert(db)`.
pub struct MaintenanceSchedule<'a> {
    pub kind: &'a str,
    /// A table of schema public; `None`: the whole database.
    pub table: Option<&'a str>,
    pub expression: &'a str,
    pub options: &'a str,
    /// `None`: the toolkit's database.
    pub database: Option<&'a str>,
    /// `None`: the inserting role.
    pub owner: Option<&'a str>,
}

impl<'a> MaintenanceSchedule<'a> {
    /// Daily at 04:00, no options, the whole toolkit database, owned by the inserting role.
    pub fn new(kind: &'a str) -> MaintenanceSchedule<'a> {
        MaintenanceSchedule {
            kind,
            table: None,
            expression: "0 4 * * *",
            options: "{}",
            database: None,
            owner: None,
        }
    }

    /// Inserts it and returns its schedule_id.
    pub fn insert(&self, db: &mut Client) -> i32 {
        db.query_one(
            "INSERT INTO admin_toolkit.maintenance_schedules \
               (maintenance_type, target_schema, target_table, schedule_expression, maintenance_options, \
                target_database, owner) \
             VALUES ($1, CASE WHEN $2::text IS NOT NULL THEN 'public' END, $2, $3, $4::text::jsonb, $5, \
                     coalesce($6::name, current_user)) RETURNING schedule_id",
            &[
                &self.kind,
                &self.table,
                &self.expression,
                &self.options,
                &self.database,
                &self.owner,
            ],
        )
        .unwrap()
        .get(0)
    }
}

/// Runs backup schedule `schedule_id` now and waits for it; its backup_id.
pub fn run_backup(db: &mut Client, schedule_id: i32) -> i64 {
    db.query_one(
        "SELECT admin_toolkit.execute_backup($1, true)",
        &[&schedule_id],
    )
    .unwrap()
    .get(0)
}

/// A backup run to completion (the test fails on any other outcome, with its error).
pub struct CompletedBackup {
    pub id: i64,
    pub path: String,
    /// backup_history.metadata: the facts the run recorded.
    pub metadata: serde_json::Value,
}

/// Runs backup schedule `schedule_id` now and checks that it completed.
pub fn completed_backup(db: &mut Client, schedule_id: i32) -> CompletedBackup {
    let id = run_backup(db, schedule_id);
    let r = db
        .query_one(
            "SELECT status, backup_path, metadata::text, error_message \
               FROM admin_toolkit.backup_history WHERE backup_id = $1",
            &[&id],
        )
        .unwrap();
    let status: String = r.get(0);
    assert_eq!(status, "completed", "{:?}", r.get::<_, Option<String>>(3));
    CompletedBackup {
        id,
        path: r.get(1),
        metadata: serde_json::from_str(&r.get::<_, String>(2)).unwrap(),
    }
}

/// A program's standard output and error, as text.
pub fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
