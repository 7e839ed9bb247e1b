//! Restore drills: what a drill decides without a server. Free space before restoring, the
//! throwaway server's settings (private socket only, nothing that could reach the source or its
//! archive), the checks run on it and how their output reads, and the measures recorded.

pub mod checks;
pub mod restored;
pub mod server;

use crate::lsn::{parse_history, Lsn};
use std::path::Path;

/// Marks a drill's scratch directory: leftovers are removed only from directories carrying it.
pub const MARKER_FILE: &str = ".admin_toolkit_drill";
/// Name of a drill's scratch directory under `admin_toolkit.drill_directory`.
pub fn scratch_name(drill_id: i64) -> String {
    format!("drill-{drill_id}")
}

/// The drill id a scratch directory name belongs to.
pub fn drill_of_scratch(name: &str) -> Option<i64> {
    name.strip_prefix("drill-")?
        .parse()
        .ok()
        .filter(|id| *id > 0)
}

/// Space a drill needs in its scratch area, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceNeeded {
    pub restored: u64,
    pub wal: u64,
    pub margin: u64,
}

impl SpaceNeeded {
    pub fn total(&self) -> u64 {
        self.restored
            .saturating_add(self.wal)
            .saturating_add(self.margin)
    }

    /// Why a drill cannot start with `available` bytes free, or None when it can.
    pub fn refusal(&self, available: u64, dir: &Path) -> Option<String> {
        (available < self.total()).then(|| {
            format!(
                "not enough free space in \"{}\": {} MB available, {} MB needed (restored backup {} MB + WAL {} MB + margin {} MB); nothing was restored",
                dir.display(),
                mb(available),
                mb(self.total()),
                mb(self.restored),
                mb(self.wal),
                mb(self.margin)
            )
        })
    }
}

fn mb(bytes: u64) -> u64 {
    bytes.div_ceil(1_000_000)
}

/// Bytes available to this OS user in the file system holding `dir`.
pub fn available_bytes(dir: &Path) -> Result<u64, String> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| format!("\"{}\" contains a NUL byte", dir.display()))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: a valid C string and a buffer of the right type.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(format!(
            "cannot read the free space of \"{}\": {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: statvfs succeeded, so it filled the buffer.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::unnecessary_cast)]
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// Settings of the throwaway server, given on its command line so that they win over whatever
/// the restored postgresql.auto.conf says: no TCP, a private socket directory, no archiving, no
/// connection to a primary, the toolkit not loaded, small memory, nothing that waits for a
/// standby. The recovery settings themselves come from postgresql.auto.conf, as written by
/// `admin-toolkit restore`.
pub fn server_settings(scratch: &Path, port: u16, drill_id: i64) -> Vec<(String, String)> {
    let at = |name: &str| scratch.join(name).to_string_lossy().into_owned();
    [
        ("config_file", at("drill.conf")),
        ("hba_file", at("pg_hba.conf")),
        ("ident_file", at("pg_ident.conf")),
        ("listen_addresses", String::new()),
        ("port", port.to_string()),
        ("unix_socket_directories", at("")),
        ("unix_socket_permissions", "0700".into()),
        ("cluster_name", format!("admin_toolkit drill {drill_id}")),
        ("archive_mode", "off".into()),
        ("archive_command", String::new()),
        ("archive_cleanup_command", String::new()),
        ("recovery_end_command", String::new()),
        ("primary_conninfo", String::new()),
        ("primary_slot_name", String::new()),
        ("synchronous_standby_names", String::new()),
        ("shared_preload_libraries", String::new()),
        ("session_preload_libraries", String::new()),
        ("local_preload_libraries", String::new()),
        ("hot_standby", "off".into()),
        ("shared_buffers", "128MB".into()),
        ("max_connections", "10".into()),
        ("max_wal_senders", "0".into()),
        ("max_replication_slots", "0".into()),
        ("max_logical_replication_workers", "0".into()),
        ("autovacuum", "off".into()),
        ("ssl", "off".into()),
        ("logging_collector", "off".into()),
        ("log_destination", "stderr".into()),
        ("log_min_messages", "warning".into()),
        ("log_checkpoints", "off".into()),
        ("jit", "off".into()),
        ("default_transaction_read_only", "off".into()),
        ("statement_timeout", "0".into()),
        // Nothing the restored cluster's settings name is written, loaded or run outside the
        // scratch directory (its postgresql.auto.conf is set aside anyway: restored.rs).
        ("external_pid_file", String::new()),
        ("log_directory", at("")),
        ("dynamic_library_path", "$libdir".into()),
        ("archive_library", String::new()),
        ("ssl_passphrase_command", String::new()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// pg_hba.conf of the throwaway server: local connections only, from its own OS user (the socket
/// sits in a directory only that user can enter).
pub const HBA: &str =
    "# admin_toolkit restore drill: its private Unix socket only\nlocal all all trust\n";

/// Where recovery ended on the new timeline: the switch point of the last line of the newest
/// timeline history file (pg_wal/<tli>.history).
pub fn end_of_recovery(history: &str) -> Result<Lsn, String> {
    parse_history(history)?
        .last()
        .map(|s| s.switch)
        .ok_or_else(|| "the new timeline's history file is empty".to_string())
}

/// The last lines of a server log that say why it stopped (FATAL, PANIC, ERROR, LOG lines about
/// recovery), at most `max`.
pub fn log_reason(log: &str, max: usize) -> String {
    let wanted: Vec<&str> = log
        .lines()
        .filter(|l| {
            ["FATAL:", "PANIC:", "ERROR:", "DETAIL:", "HINT:"]
                .iter()
                .any(|w| l.contains(w))
                || l.contains("admin-toolkit:")
        })
        .collect();
    let from = wanted.len().saturating_sub(max);
    wanted[from..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn space_refusal_names_the_figures() {
        let need = SpaceNeeded {
            restored: 500_000_000,
            wal: 32_000_000,
            margin: 100_000_000,
        };
        assert_eq!(need.total(), 632_000_000);
        assert!(need.refusal(632_000_000, Path::new("/d")).is_none());
        let why = need.refusal(10_000_000, Path::new("/d")).unwrap();
        assert!(why.contains("10 MB available, 632 MB needed"), "{why}");
        assert!(why.contains("restored backup 500 MB + WAL 32 MB + margin 100 MB"));
        assert!(available_bytes(Path::new("/")).unwrap() > 0);
        assert!(available_bytes(Path::new("/no/such/dir")).is_err());
    }

    #[test]
    fn throwaway_server_never_listens_on_tcp_nor_archives() {
        let settings = server_settings(&PathBuf::from("/s/drill-7"), 6543, 7);
        let get = |name: &str| {
            settings
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("listen_addresses"), Some(""));
        assert_eq!(get("archive_mode"), Some("off"));
        assert_eq!(get("primary_conninfo"), Some(""));
        assert_eq!(get("shared_preload_libraries"), Some(""));
        assert_eq!(get("unix_socket_directories"), Some("/s/drill-7/"));
        assert_eq!(get("port"), Some("6543"));
        assert_eq!(get("config_file"), Some("/s/drill-7/drill.conf"));
        assert_eq!(get("external_pid_file"), Some(""));
        assert_eq!(get("log_directory"), Some("/s/drill-7/"));
        assert!(
            get("restore_command").is_none(),
            "recovery settings come from the restore"
        );
    }

    #[test]
    fn scratch_names_round_trip() {
        assert_eq!(scratch_name(12), "drill-12");
        assert_eq!(drill_of_scratch("drill-12"), Some(12));
        assert_eq!(drill_of_scratch("drill-x"), None);
        assert_eq!(drill_of_scratch("backup-1"), None);
    }

    #[test]
    fn end_of_recovery_is_the_last_switch_point() {
        let history =
            "1\t0/3000000\tno recovery target specified\n\n2\t0/5000060\tbefore 2026-11-25\n";
        assert_eq!(end_of_recovery(history).unwrap(), Lsn(0x5000060));
        assert!(end_of_recovery("").is_err());
    }

    #[test]
    fn log_reason_keeps_the_last_errors() {
        let log = "LOG:  starting\nFATAL:  could not find x\nLOG:  done\nPANIC:  y\n";
        assert_eq!(log_reason(log, 1), "PANIC:  y");
        assert_eq!(log_reason(log, 5), "FATAL:  could not find x | PANIC:  y");
    }
}
