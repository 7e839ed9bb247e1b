//! The recovery settings of a restored data directory: restore_command running `admin-toolkit
//! wal-get` against the archive, the recovery target, promotion, and recovery.signal. Written
//! by `admin-toolkit restore` and by restore drills, so that a drill recovers exactly as an
//! administrator's restore would.

use super::restore::write_small;
use crate::crypto::KeyDir;
use crate::storage::{Location, S3Settings};
use std::path::Path;

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// A `recovery_target_time`, as PostgreSQL reads it (with its UTC offset).
    Time(String),
    Lsn(String),
    Name(String),
}

/// What the recovery settings of a restored directory are made from.
pub struct RecoverySettings<'a> {
    /// The backup restored (named in a comment).
    pub backup: &'a str,
    /// The admin-toolkit program restore_command runs.
    pub program: &'a Path,
    /// The WAL archive; none: the administrator supplies WAL.
    pub archive: Option<&'a Location>,
    pub target: Option<&'a RecoveryTarget>,
    pub s3: &'a S3Settings,
    /// An absolute key directory, when WAL may be encrypted.
    pub keys: &'a KeyDir,
    /// The archive is encrypted: wal-get refuses a plain file (`--require-encryption`).
    pub require_sealed: bool,
    /// Keep the restored configuration's archiving (a replacement of the lost primary);
    /// otherwise `archive_mode = 'off'`: a copy never archives into the original's archive.
    pub keep_archiving: bool,
    /// Where the restored server's socket goes, with no TCP listener, so that starting it
    /// beside the original cannot collide with it (nor take its clients); `None` keeps the
    /// restored configuration's network settings.
    pub socket_directory: Option<&'a Path>,
}

/// What a data directory needs to start when the backup holds no configuration files (the
/// server kept them elsewhere, as Debian does under /etc/postgresql): written only where
/// missing; gives the names of the files written.
pub fn write_missing_configuration(data_dir: &Path) -> Result<Vec<&'static str>, String> {
    const NOTE: &str = "# Written by admin-toolkit restore: the backup held no such file (the server kept its\n\
                        # configuration outside its data directory). Only what starting needs; add yours.\n";
    let files: [(&str, String); 3] = [
        (
            "postgresql.conf",
            format!("{NOTE}# Network settings: postgresql.auto.conf.\n"),
        ),
        (
            "pg_hba.conf",
            format!(
                "{NOTE}# Local connections as the same-named OS user only.\nlocal all all peer\n"
            ),
        ),
        ("pg_ident.conf", NOTE.to_string()),
    ];
    let mut written = Vec::new();
    for (name, text) in files {
        let path = data_dir.join(name);
        if !path.exists() {
            write_small(&path, text.as_bytes())?;
            written.push(name);
        }
    }
    Ok(written)
}

/// A quoted configuration-file value.
pub fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Quotes a word for the shell that runs restore_command.
pub fn shell_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
    {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// The S3 options of `s3` as wal-get flags (the credentials file by path, never its keys).
fn s3_flags(s3: &S3Settings) -> Vec<String> {
    let mut flags = Vec::new();
    for (flag, value) in [
        ("--s3-endpoint", &s3.endpoint),
        ("--s3-region", &s3.region),
        ("--s3-credentials-file", &s3.credentials_file),
        ("--s3-ca-file", &s3.ca_file),
    ] {
        if !value.is_empty() {
            flags.push(format!("{flag}={}", shell_quote(value)));
        }
    }
    if !s3.profile.is_empty() && s3.profile != "default" {
        flags.push(format!("--s3-profile={}", shell_quote(&s3.profile)));
    }
    if s3.force_path_style {
        flags.push("--s3-path-style=on".into());
    }
    flags
}

/// The restore_command that fetches WAL from `archive` with `program`.
pub fn restore_command(r: &RecoverySettings, archive: &Location) -> String {
    let mut words = vec![
        shell_quote(&r.program.to_string_lossy()),
        "wal-get".to_string(),
        format!("--archive={}", shell_quote(&archive.display())),
    ];
    if matches!(archive, Location::S3 { .. }) {
        words.extend(s3_flags(r.s3));
    }
    if let Some(dir) = &r.keys.0 {
        words.push(format!(
            "--encryption-key-dir={}",
            shell_quote(&dir.to_string_lossy())
        ));
    }
    if r.require_sealed {
        words.push("--require-encryption".to_string());
    }
    words.extend(["%f".to_string(), "%p".to_string()]);
    words.join(" ")
}

/// The lines appended to postgresql.auto.conf.
pub fn recovery_lines(r: &RecoverySettings) -> Vec<String> {
    let mut lines = vec![format!(
        "# recovery settings written by admin-toolkit restore from {}",
        r.backup
    )];
    if let Some(archive) = r.archive {
        lines.push(format!(
            "restore_command = {}",
            conf_quote(&restore_command(r, archive))
        ));
    }
    match r.target {
        Some(RecoveryTarget::Time(t)) => {
            lines.push(format!("recovery_target_time = {}", conf_quote(t)))
        }
        Some(RecoveryTarget::Lsn(l)) => {
            lines.push(format!("recovery_target_lsn = {}", conf_quote(l)))
        }
        Some(RecoveryTarget::Name(n)) => {
            lines.push(format!("recovery_target_name = {}", conf_quote(n)))
        }
        None => {}
    }
    lines.push("recovery_target_timeline = 'latest'".into());
    lines.push("recovery_target_action = 'promote'".into());
    if let Some(dir) = r.socket_directory {
        lines.push(
            "# no TCP, and a socket of its own: this copy cannot collide with the original (restore --keep-network keeps its settings)".into(),
        );
        lines.push("listen_addresses = ''".into());
        // The default port, so that `psql -h <directory>` finds the socket.
        lines.push("port = 5432".into());
        lines.push(format!(
            "unix_socket_directories = {}",
            conf_quote(&dir.to_string_lossy())
        ));
    }
    if !r.keep_archiving {
        lines.push(
            "# a restored copy archives nothing into the original's archive (restore --keep-archiving keeps it)".into(),
        );
        lines.push("archive_mode = 'off'".into());
    }
    lines
}

/// Appends the recovery settings to `data_dir`'s postgresql.auto.conf and writes
/// recovery.signal.
pub fn write_recovery_settings(data_dir: &Path, r: &RecoverySettings) -> Result<(), String> {
    let auto = data_dir.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push('\n');
    text.push_str(&recovery_lines(r).join("\n"));
    text.push('\n');
    write_small(&auto, text.as_bytes())?;
    write_small(&data_dir.join("recovery.signal"), b"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn restore_command_names_archive_keys_and_s3_options_never_secrets() {
        let s3 = S3Settings {
            endpoint: "http://127.0.0.1:9000".into(),
            region: "us-east-1".into(),
            force_path_style: true,
            credentials_file: "/etc/pg creds".into(),
            profile: "backup".into(),
            ca_file: String::new(),
            timeout_seconds: 0,
        };
        let archive = Location::parse("s3://bucket/wal").unwrap();
        let keys = KeyDir(Some(PathBuf::from("/keys")));
        let target = RecoveryTarget::Time("2026-11-24 10:00:00+00".into());
        let r = RecoverySettings {
            backup: "s3://bucket/b1",
            program: Path::new("/usr/bin/admin-toolkit"),
            archive: Some(&archive),
            target: Some(&target),
            s3: &s3,
            keys: &keys,
            require_sealed: true,
            keep_archiving: false,
            socket_directory: None,
        };
        assert_eq!(
            restore_command(&r, &archive),
            "/usr/bin/admin-toolkit wal-get --archive='s3://bucket/wal/' --s3-endpoint='http://127.0.0.1:9000' \
             --s3-region=us-east-1 --s3-credentials-file='/etc/pg creds' --s3-profile=backup --s3-path-style=on \
             --encryption-key-dir=/keys --require-encryption %f %p"
        );
        let lines = recovery_lines(&r);
        assert!(lines.contains(&"recovery_target_time = '2026-11-24 10:00:00+00'".to_string()));
        assert!(lines.contains(&"recovery_target_action = 'promote'".to_string()));
        assert_eq!(lines.last().unwrap(), "archive_mode = 'off'");
        assert!(!recovery_lines(&RecoverySettings {
            keep_archiving: true,
            ..r
        })
        .iter()
        .any(|l| l.contains("archive_mode")));
        let local = Location::parse("/srv/wal").unwrap();
        let r = RecoverySettings {
            archive: Some(&local),
            keys: &KeyDir(None),
            target: None,
            require_sealed: false,
            ..r
        };
        assert_eq!(
            restore_command(&r, &local),
            "/usr/bin/admin-toolkit wal-get --archive=/srv/wal %f %p"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(conf_quote("it's"), "'it''s'");
        assert_eq!(shell_quote("/usr/bin/x"), "/usr/bin/x");
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn settings_are_appended_with_the_signal_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("postgresql.auto.conf"), "work_mem = '8MB'").unwrap();
        let archive = Location::parse("/srv/wal").unwrap();
        let r = RecoverySettings {
            backup: "/b/1",
            program: Path::new("/bin/admin-toolkit"),
            archive: Some(&archive),
            target: None,
            s3: &S3Settings::default(),
            keys: &KeyDir(None),
            require_sealed: false,
            keep_archiving: false,
            socket_directory: None,
        };
        write_recovery_settings(dir.path(), &r).unwrap();
        let text = std::fs::read_to_string(dir.path().join("postgresql.auto.conf")).unwrap();
        assert!(text.starts_with("work_mem = '8MB'\n\n# recovery settings"));
        assert!(text
            .contains("restore_command = '/bin/admin-toolkit wal-get --archive=/srv/wal %f %p'"));
        assert!(dir.path().join("recovery.signal").exists());
        // A copy started beside the original: no TCP, its own socket.
        let private = RecoverySettings {
            socket_directory: Some(Path::new("/srv/copy")),
            ..r
        };
        let lines = recovery_lines(&private);
        assert!(lines.contains(&"listen_addresses = ''".to_string()));
        assert!(lines.contains(&"unix_socket_directories = '/srv/copy'".to_string()));
    }

    #[test]
    fn missing_configuration_files_are_written_and_present_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("postgresql.conf"), "port = 5999\n").unwrap();
        assert_eq!(
            write_missing_configuration(dir.path()).unwrap(),
            ["pg_hba.conf", "pg_ident.conf"]
        );
        let conf = std::fs::read_to_string(dir.path().join("postgresql.conf")).unwrap();
        assert_eq!(conf, "port = 5999\n");
        let hba = std::fs::read_to_string(dir.path().join("pg_hba.conf")).unwrap();
        assert!(hba.ends_with("local all all peer\n"), "{hba}");
        assert!(write_missing_configuration(dir.path()).unwrap().is_empty());
    }
}
