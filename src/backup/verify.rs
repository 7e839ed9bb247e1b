//! Verification (`verify_backup()` in `api`): rereads every file of a backup (and of the backups it references) and
//! checks it against the manifest's SHA-256 checksums.

use admin_toolkit_core::backup::default_threads;
use admin_toolkit_core::backup::read::verify;
use admin_toolkit_core::backup::store::BackupStore;

/// Problems listed one per row, up to this many; the rest are counted.
const MAX_PROBLEM_ROWS: usize = 100;

/// One row of a check: (check_name, status, details).
pub type CheckRow = (String, String, String);

pub fn row(check: &str, status: &str, details: String) -> CheckRow {
    (check.to_string(), status.to_string(), details)
}

/// Checks a backup against its manifest; the rows name every problem.
pub fn check_backup(backup_id: i64, path: &str, status: &str) -> Vec<CheckRow> {
    if status != "completed" {
        return vec![row(
            "backup",
            "ERROR",
            format!("backup {backup_id} is {status}, not completed"),
        )];
    }
    let s3 = crate::settings::s3();
    let keys = crate::settings::key_dir();
    // Checked against the catalog row: sealed with its key, this backup's, of this cluster,
    // its chain where the catalog has it.
    let manifest = match super::locations::expected_of(backup_id).and_then(|expected| {
        let manifest =
            BackupStore::open(path, &s3).and_then(|store| store.load_manifest(&keys, &expected))?;
        super::locations::check_chain(&manifest)?;
        Ok(manifest)
    }) {
        Ok(m) => m,
        Err(e) => return vec![row("manifest", "ERROR", e)],
    };
    let mut rows = vec![row(
        "manifest",
        "OK",
        format!(
            "{} files, {} bytes, chain of {} backups",
            manifest.files.len(),
            manifest.original_bytes(),
            manifest.chain.len()
        ),
    )];
    let report = verify(&manifest, default_threads(), &s3, &keys, &mut |_, _| {});
    let total = report.problems.len();
    for p in report.problems.iter().take(MAX_PROBLEM_ROWS) {
        let check = if p.path.is_empty() {
            "chain".to_string()
        } else {
            format!("file {}", p.path)
        };
        rows.push((check, "ERROR".into(), p.message.clone()));
    }
    if total > MAX_PROBLEM_ROWS {
        rows.push(row(
            "files",
            "ERROR",
            format!("{} more problems not listed", total - MAX_PROBLEM_ROWS),
        ));
    }
    if total == 0 {
        rows.push(row(
            "files",
            "OK",
            format!(
                "{} files, {} bytes match their SHA-256 checksums",
                report.files, report.bytes
            ),
        ));
    }
    rows
}
