//! Command-line parsing (clap derive): subcommands, their options and generated help. Every
//! S3 option and the key directory fall back to an environment variable, so restore_command
//! lines stay short and credentials stay out of the process list.

use admin_toolkit_core::backup::store::{Expected, Sealing};
use admin_toolkit_core::crypto::KeyDir;
use admin_toolkit_core::storage::S3Settings;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

pub const EXIT_CODES: &str = "\
Exit status:
  0    success
  1    failure: the backup does not verify, a restore was refused, or (wal-get) the WAL file is
       not in the archive, which ends recovery normally
  2    bad usage: unknown command or option, missing or malformed value
  126  (wal-get) the WAL file is damaged, the archive cannot be reached or the file cannot be
       written: PostgreSQL stops recovery instead of taking it for the end of WAL";

/// admin-toolkit: restore, fetch archived WAL and verify admin_toolkit backups, outside the
/// server (local directories or S3-compatible storage, encrypted or not).
#[derive(Debug, Parser)]
#[command(name = "admin-toolkit", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Restore a backup into an empty directory, ready for point-in-time recovery
    ///
    /// Verifies and decompresses a backup (applying its incremental chain) into an empty or new
    /// directory, then writes recovery.signal and the recovery settings to
    /// postgresql.auto.conf: restore_command (this tool's wal-get), the recovery target,
    /// recovery_target_action = 'promote'.
    #[command(after_help = EXIT_CODES)]
    Restore(RestoreArgs),
    /// Copy one archived WAL file out of the archive (for restore_command)
    ///
    /// Copies <WALFILE> from the archive to <DESTINATION>, checking its checksum; meant for
    /// restore_command = 'admin-toolkit wal-get --archive <archive> %f %p'.
    #[command(after_help = EXIT_CODES)]
    WalGet(WalGetArgs),
    /// Check every file of a backup and of its chain against the manifest's checksums
    #[command(after_help = EXIT_CODES)]
    Verify(VerifyArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    ///
    /// For example: admin-toolkit completions bash > /etc/bash_completion.d/admin-toolkit
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Object storage options, for s3:// locations.
#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// S3-compatible endpoint URL [default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the AWS config
    /// file's endpoint_url, else AWS]
    #[arg(
        long,
        env = "ADMIN_TOOLKIT_S3_ENDPOINT",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub s3_endpoint: Option<String>,
    /// Region [default: AWS_REGION, AWS_DEFAULT_REGION, the AWS config file's region, else
    /// us-east-1]
    #[arg(
        long,
        env = "ADMIN_TOOLKIT_S3_REGION",
        hide_env_values = true,
        value_name = "REGION"
    )]
    pub s3_region: Option<String>,
    /// Path-style bucket URLs (on or off)
    #[arg(long, env = "ADMIN_TOOLKIT_S3_PATH_STYLE", hide_env_values = true, value_name = "on|off", value_parser = parse_on_off)]
    pub s3_path_style: Option<bool>,
    /// AWS shared-credentials file; without one, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY,
    /// else AWS_SHARED_CREDENTIALS_FILE (~/.aws/credentials), else the AWS config file's profile
    #[arg(long, value_name = "FILE")]
    pub s3_credentials_file: Option<String>,
    /// Profile of the credentials and config files [default: AWS_PROFILE, else default]
    #[arg(long, value_name = "NAME")]
    pub s3_profile: Option<String>,
    /// Extra certificate authorities (PEM) for an https endpoint [default: AWS_CA_BUNDLE]
    #[arg(long, value_name = "PEM")]
    pub s3_ca_file: Option<String>,
    /// Where <key id>.key files are, for encrypted backups and WAL; a wrong or missing key, or
    /// any altered byte, is an error naming the object, never silent garbage
    #[arg(
        long,
        env = "ADMIN_TOOLKIT_ENCRYPTION_KEY_DIR",
        hide_env_values = true,
        value_name = "DIR"
    )]
    pub encryption_key_dir: Option<PathBuf>,
    /// Refuse anything unencrypted where an encrypted object is expected: a backup's manifest,
    /// an archived WAL file (whoever can write to the storage could have put it there)
    #[arg(long)]
    pub require_encryption: bool,
}

impl S3Args {
    /// The flags, what they leave empty taken from the AWS environment as the SDKs do.
    pub fn s3(&self) -> S3Settings {
        S3Settings {
            endpoint: self.s3_endpoint.clone().unwrap_or_default(),
            region: self.s3_region.clone().unwrap_or_default(),
            force_path_style: self.s3_path_style.unwrap_or(false),
            credentials_file: self.s3_credentials_file.clone().unwrap_or_default(),
            profile: self.s3_profile.clone().unwrap_or_default(),
            ca_file: self.s3_ca_file.clone().unwrap_or_default(),
            timeout_seconds: 0,
        }
        .with_aws_environment()
    }

    /// What the reader expects of a backup: sealed with --require-encryption.
    pub fn expected(&self) -> Expected {
        Expected {
            sealing: if self.require_encryption {
                Sealing::Required
            } else {
                Sealing::Optional
            },
            ..Expected::default()
        }
    }

    pub fn keys(&self) -> KeyDir {
        KeyDir(
            self.encryption_key_dir
                .clone()
                .filter(|d| !d.as_os_str().is_empty()),
        )
    }
}

fn parse_on_off(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "" | "off" | "false" | "0" => Ok(false),
        "on" | "true" | "1" => Ok(true),
        _ => Err("use on or off".into()),
    }
}

fn non_empty(text: &str) -> Result<String, String> {
    if text.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(text.to_string())
    }
}

/// `OLD=NEW`, both absolute (pg_basebackup's `--tablespace-mapping`).
fn tablespace_mapping(text: &str) -> Result<(PathBuf, PathBuf), String> {
    let (old, new) = text
        .split_once('=')
        .ok_or("give OLD=NEW: the tablespace's location in the backup, and where to put it")?;
    let (old, new) = (PathBuf::from(old), PathBuf::from(new));
    if !old.is_absolute() || !new.is_absolute() {
        return Err("OLD and NEW must both be absolute paths".into());
    }
    Ok((old, new))
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup: backup_history.backup_path, a directory or an s3:// location
    #[arg(long, value_name = "BACKUP_PATH", value_parser = non_empty)]
    pub backup: String,
    /// Where to restore; must be missing or empty (unless --delta)
    #[arg(long, value_name = "DIR")]
    pub target_dir: PathBuf,
    /// The target directory holds a stopped copy of the same cluster (a standby to rebuild, an
    /// earlier restore): rewrite only the chunks whose checksums differ from the backup's,
    /// and remove what the backup does not have
    #[arg(long, conflicts_with = "tablespace_mapping")]
    pub delta: bool,
    /// Restore the tablespace that was at OLD into NEW (missing or empty) instead; repeat for
    /// each. Without it, a tablespace goes back to its original location, which must then be
    /// missing or empty
    #[arg(long, value_name = "OLD=NEW", value_parser = tablespace_mapping)]
    pub tablespace_mapping: Vec<(PathBuf, PathBuf)>,
    /// The WAL archive (admin_toolkit.archive_location: a directory or s3://bucket/prefix);
    /// checked before restoring, and written into restore_command with the S3 options.
    /// Required: a base backup becomes consistent only with the WAL archived while it ran
    #[arg(long, value_name = "ARCHIVE")]
    pub archive: Option<String>,
    /// Recover up to this time; include a UTC offset: '2026-11-24 10:00:00+00'
    #[arg(long, value_name = "TIMESTAMP", group = "target")]
    pub target_time: Option<String>,
    /// Recover up to this WAL position, e.g. 0/5000060
    #[arg(long, value_name = "LSN", group = "target")]
    pub target_lsn: Option<String>,
    /// Recover up to this named restore point (pg_create_restore_point)
    #[arg(long, value_name = "NAME", group = "target")]
    pub target_name: Option<String>,
    /// Decompression threads [default: cores, at most 4]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: Option<u16>,
    /// Keep the restored configuration's WAL archiving (for a server that replaces the lost
    /// primary); by default it is turned off, so a copy never archives into the original's
    /// archive
    #[arg(long)]
    pub keep_archiving: bool,
    /// Keep the restored configuration's network settings; by default the copy listens on no
    /// TCP address and puts its socket in the target directory, so it cannot collide with the
    /// original when started beside it
    #[arg(long)]
    pub keep_network: bool,
    #[command(flatten)]
    pub storage: S3Args,
}

#[derive(Debug, Args)]
pub struct WalGetArgs {
    /// The archive: a directory or s3://bucket/prefix
    #[arg(long, value_name = "ARCHIVE", value_parser = non_empty)]
    pub archive: String,
    #[command(flatten)]
    pub storage: S3Args,
    /// The WAL file name (%f)
    #[arg(value_name = "WALFILE")]
    pub file: String,
    /// Where to write it (%p)
    #[arg(value_name = "DESTINATION")]
    pub destination: PathBuf,
    /// Segments to keep fetched ahead, several at a time, in a spool beside the data directory
    /// (`<data directory>.wal-prefetch`, removed when recovery ends); 0: none
    #[arg(long, value_name = "N", default_value_t = admin_toolkit_core::wal_prefetch::DEFAULT_PREFETCH,
          value_parser = clap::value_parser!(u8).range(0..=64))]
    pub prefetch: u8,
    /// The prefetcher that wal-get starts (internal)
    #[arg(long, hide = true)]
    pub prefetch_worker: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The backup: backup_history.backup_path, a directory or an s3:// location
    #[arg(long, value_name = "BACKUP_PATH", value_parser = non_empty)]
    pub backup: String,
    /// Reading threads [default: cores, at most 4]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: Option<u16>,
    /// Print one JSON object (backup_id, ok, files, bytes, problems) instead of text
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub storage: S3Args,
}

pub use admin_toolkit_core::backup::recovery_conf::RecoveryTarget;

impl RestoreArgs {
    /// The one recovery target given, if any (clap's group refuses more than one).
    pub fn target(&self) -> Option<RecoveryTarget> {
        self.target_time
            .clone()
            .map(RecoveryTarget::Time)
            .or_else(|| self.target_lsn.clone().map(RecoveryTarget::Lsn))
            .or_else(|| self.target_name.clone().map(RecoveryTarget::Name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(a: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("admin-toolkit").chain(a.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// `admin-toolkit --version` names the release it belongs to: the extension's version (the
    /// root package's), which the packages carry too.
    #[test]
    fn the_version_is_the_extensions() {
        let extension = include_str!("../../Cargo.toml")
            .lines()
            .find_map(|l| l.strip_prefix("version = \""))
            .and_then(|v| v.strip_suffix('"'))
            .expect("the extension's version");
        assert_eq!(
            Cli::command().get_version(),
            Some(extension),
            "cli/Cargo.toml's version is not the extension's"
        );
    }

    #[test]
    fn parses_commands_and_refuses_mistakes() {
        let Command::Restore(r) = parse(&[
            "restore",
            "--backup",
            "/b",
            "--target-dir=/t",
            "--target-time",
            "2026-11-24 10:00:00+00",
            "--tablespace-mapping=/srv/ts1=/t/ts1",
            "--tablespace-mapping",
            "/srv/ts2=/t/ts2",
        ])
        .unwrap()
        .command
        else {
            panic!("not restore")
        };
        assert_eq!(
            (
                r.backup.as_str(),
                r.target_dir.as_path(),
                r.archive,
                r.threads
            ),
            ("/b", std::path::Path::new("/t"), None, None)
        );
        assert_eq!(
            r.tablespace_mapping,
            [("/srv/ts1", "/t/ts1"), ("/srv/ts2", "/t/ts2")].map(|(o, n)| (o.into(), n.into()))
        );
        assert_eq!(
            r.target_time.map(RecoveryTarget::Time),
            Some(RecoveryTarget::Time("2026-11-24 10:00:00+00".into()))
        );
        let Command::WalGet(w) = parse(&[
            "wal-get",
            "--archive=s3://bucket/wal",
            "--s3-endpoint",
            "http://127.0.0.1:9000",
            "--s3-path-style=on",
            "--s3-credentials-file",
            "/etc/creds",
            "000000010000000000000001",
            "pg_wal/RECOVERYXLOG",
        ])
        .unwrap()
        .command
        else {
            panic!("not wal-get")
        };
        assert_eq!(w.file, "000000010000000000000001");
        let s3 = w.storage.s3();
        assert_eq!(s3.endpoint, "http://127.0.0.1:9000");
        assert!(s3.force_path_style);
        assert_eq!(s3.credentials_file, "/etc/creds");
        let Command::Verify(v) = parse(&["verify", "--backup", "/b", "--json"])
            .unwrap()
            .command
        else {
            panic!("not verify")
        };
        assert!(v.json);

        use clap::error::ErrorKind::*;
        for (bad, kind) in [
            (&["restore", "--backup", "/b"][..], MissingRequiredArgument),
            (
                &[
                    "restore",
                    "--backup",
                    "/b",
                    "--target-dir",
                    "/t",
                    "--target-lsn",
                    "0/1",
                    "--target-name",
                    "x",
                ],
                ArgumentConflict,
            ),
            (&["restore", "--bakup", "/b"], UnknownArgument),
            (&["restore", "--backup"], InvalidValue),
            (
                &["wal-get", "--archive", "/a", "onlyone"],
                MissingRequiredArgument,
            ),
            (
                &["verify", "--backup", "/b", "--threads", "0"],
                ValueValidation,
            ),
            (&["verify", "--backup", ""], ValueValidation),
            (
                &["wal-get", "--archive=/a", "--s3-path-style=maybe", "f", "d"],
                ValueValidation,
            ),
            (&["frobnicate"], InvalidSubcommand),
            (
                &[
                    "restore",
                    "--backup=/b",
                    "--target-dir=/t",
                    "--tablespace-mapping=/a",
                ],
                ValueValidation,
            ),
            (
                &[
                    "restore",
                    "--backup=/b",
                    "--target-dir=/t",
                    "--tablespace-mapping=a=/b",
                ],
                ValueValidation,
            ),
        ] {
            let e = parse(bad).expect_err(&format!("{bad:?}"));
            assert_eq!(e.kind(), kind, "{bad:?}: {e}");
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }
}
