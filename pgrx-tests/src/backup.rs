//! Helpers of the backup, archive and drill tests: archiving now, drill settings, key files.

use crate::{cli_for_postgres, is_root, wait_for};
use postgres::Client;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Switches WAL and waits until the archiver has stored everything up to the switch.
pub fn archive_now(db: &mut Client) {
    let segment: String = db
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .expect("pg_switch_wal")
        .get(0);
    wait_for("the archiver", || {
        let last: Option<String> = db
            .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
            .expect("pg_stat_archiver")
            .get(0);
        last.filter(|l| *l >= segment).map(|_| ())
    });
}

/// Settings for restore drills into `dir` with the admin-toolkit binary the server can run.
pub fn drill_settings(dir: &Path) -> Vec<String> {
    vec![
        format!("admin_toolkit.drill_directory = '{}'", dir.display()),
        format!(
            "admin_toolkit.cli_path = '{}'",
            cli_for_postgres().display()
        ),
    ]
}

/// A key file `<dir>/<id>.key` holding `hex`, owned by the postgres OS user, mode 0600, as the
/// server requires.
pub fn write_key(dir: &Path, id: &str, hex: &str) {
    fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("{id}.key"));
    fs::write(&path, hex).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam returns a pointer to static storage or null.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if !pw.is_null() && is_root() {
        // SAFETY: pw is not null.
        let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
    }
}
