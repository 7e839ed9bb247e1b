//! Work handed to a job connected to another database, and its outcome, as JSON files in the
//! data directory's `pg_stat_tmp`: such a job cannot read or write the toolkit's tables, which
//! live in `admin_toolkit.database`. The supervising job writes the request before it starts the
//! job, and reads the outcome after the job has exited; both files are then removed.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// What a maintenance run in another database must do: its schedule's work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaintenanceRequest {
    pub run_id: i64,
    pub kind: String,
    pub schema: Option<String>,
    pub table: Option<String>,
    pub options: Value,
}

/// What it did, as the supervising job records it in maintenance_runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaintenanceOutcome {
    pub target: String,
    pub status: String,
    pub command: Option<String>,
    pub error: Option<String>,
    pub details: Value,
}

pub fn request_path(dir: &Path, run_id: i64) -> PathBuf {
    dir.join(format!("admin_toolkit_maintenance_{run_id}.request.json"))
}

pub fn outcome_path(dir: &Path, run_id: i64) -> PathBuf {
    dir.join(format!("admin_toolkit_maintenance_{run_id}.outcome.json"))
}

/// Where the facts job of database `database` (its OID) leaves them for the worker.
pub fn facts_path(dir: &Path, database: u32) -> PathBuf {
    dir.join(format!("admin_toolkit_facts_{database}.json"))
}

/// Writes `value` to `path` whole or not at all (a temporary file renamed into place), so a
/// reader never sees half a file.
pub fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let text = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    write_bytes(path, &text)
}

/// [`write`] for bytes already made.
pub fn write_bytes(path: &Path, text: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write \"{}\": {e}", path.display()))
}

pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text =
        std::fs::read(path).map_err(|e| format!("cannot read \"{}\": {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("malformed \"{}\": {e}", path.display()))
}

/// Removes both files of run `run_id` (missing ones are fine).
pub fn remove(dir: &Path, run_id: i64) {
    for path in [request_path(dir, run_id), outcome_path(dir, run_id)] {
        let _missing_is_fine = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_and_outcomes_round_trip_and_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let request = MaintenanceRequest {
            run_id: 7,
            kind: "vacuum".into(),
            schema: Some("public".into()),
            table: Some("t".into()),
            options: json!({"analyze": true}),
        };
        write(&request_path(dir.path(), 7), &request).unwrap();
        assert_eq!(
            read::<MaintenanceRequest>(&request_path(dir.path(), 7)).unwrap(),
            request
        );
        let outcome = MaintenanceOutcome {
            target: "public.t".into(),
            status: "success".into(),
            command: Some("VACUUM (ANALYZE) public.t".into()),
            error: None,
            details: json!({"warnings": []}),
        };
        write(&outcome_path(dir.path(), 7), &outcome).unwrap();
        assert_eq!(
            read::<MaintenanceOutcome>(&outcome_path(dir.path(), 7)).unwrap(),
            outcome
        );
        remove(dir.path(), 7);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no temporary file left"
        );
        assert!(read::<MaintenanceOutcome>(&outcome_path(dir.path(), 7))
            .unwrap_err()
            .contains("cannot read"));
    }
}
