//! Command-line parsing: subcommands, their options, and their help texts.

use admin_toolkit_core::crypto::KeyDir;
use admin_toolkit_core::storage::S3Settings;
use std::path::PathBuf;

pub const USAGE: &str = "\
usage: admin-toolkit <command> [options]

Commands:
  restore   restore a backup into an empty directory, ready for point-in-time recovery
  wal-get   copy one archived WAL file out of the archive (for restore_command)
  verify    check every file of a backup against its manifest
  help      show this text, or \"help <command>\" for one command
  version   show the version";

pub const RESTORE_HELP: &str = "\
usage: admin-toolkit restore --backup <backup_path> --target-dir <dir> [--archive <dir>]
                             [--target-time <timestamp> | --target-lsn <lsn> | --target-name <name>]

Verifies and decompresses a backup (applying its incremental chain) into an empty or new
directory, then writes recovery.signal and the recovery settings to postgresql.auto.conf:
restore_command (this tool's wal-get), the recovery target, recovery_target_action = 'promote'.

  --backup       the backup (backup_history.backup_path: a directory or s3:// location)
  --target-dir   where to restore; must be missing or empty
  --archive      the WAL archive (admin_toolkit.archive_location: a directory or s3://bucket/prefix);
                 checked before restoring, and written into restore_command with the S3 options
  --s3-*         see \"help wal-get\"
  --target-time  recover up to this time; include a UTC offset: '2026-11-24 10:00:00+00'
  --target-lsn   recover up to this WAL position, e.g. 0/5000060
  --target-name  recover up to this named restore point (pg_create_restore_point)
  --threads      decompression threads (default: cores, at most 4)";

pub const WAL_GET_HELP: &str = "\
usage: admin-toolkit wal-get --archive <dir|s3://bucket/prefix> [S3 options] <walfile> <destination>

Copies WAL file <walfile> from the archive to <destination>, checking its checksum; meant for
restore_command = 'admin-toolkit wal-get --archive <archive> %f %p'. Exit status 1 when the file
is not in the archive (recovery then goes on), 126 when it is there but damaged, or when the
archive cannot be reached (recovery stops: damaged or unreachable WAL must not pass for the end
of WAL).

S3 options (each also read from the environment variable named after it):
  --s3-endpoint <url>         S3-compatible endpoint (ADMIN_TOOLKIT_S3_ENDPOINT); default AWS
  --s3-region <region>        (ADMIN_TOOLKIT_S3_REGION), default us-east-1
  --s3-path-style <on|off>    path-style bucket URLs (ADMIN_TOOLKIT_S3_PATH_STYLE)
  --s3-credentials-file <f>   AWS shared-credentials file (AWS_SHARED_CREDENTIALS_FILE);
                              without one, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
  --s3-ca-file <pem>          extra certificate authorities for an https endpoint (AWS_CA_BUNDLE)

Encrypted backups and WAL:
  --encryption-key-dir <dir>  where <key id>.key files are (ADMIN_TOOLKIT_ENCRYPTION_KEY_DIR);
                              a wrong or missing key, or any altered byte, is an error naming
                              the object, never silent garbage";

pub const VERIFY_HELP: &str = "\
usage: admin-toolkit verify --backup <backup_path> [--threads <n>] [S3 options]

Rereads every file of a backup, and of the backups it references, and checks each against the
SHA-256 checksums of its manifest. <backup_path> is a directory or an s3:// location; the S3
options are those of \"help wal-get\". Exit status 0 when all match, 1 when not.";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    Time(String),
    Lsn(String),
    Name(String),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Restore {
    /// A directory or s3:// location (backup_history.backup_path).
    pub backup: String,
    pub target_dir: PathBuf,
    /// A directory or s3:// location.
    pub archive: Option<String>,
    pub s3: S3Settings,
    pub keys: KeyDir,
    pub target: Option<RecoveryTarget>,
    pub threads: Option<usize>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct WalGet {
    /// A directory or s3:// location.
    pub archive: String,
    pub s3: S3Settings,
    pub keys: KeyDir,
    pub file: String,
    pub destination: PathBuf,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Verify {
    /// A directory or s3:// location (backup_history.backup_path).
    pub backup: String,
    pub s3: S3Settings,
    pub keys: KeyDir,
    pub threads: Option<usize>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    Help(&'static str),
    Version,
    Restore(Restore),
    WalGet(WalGet),
    Verify(Verify),
}

/// Options (`--name value` or `--name=value`) and positional arguments.
struct Options {
    named: Vec<(String, String)>,
    positional: Vec<String>,
    help: bool,
}

fn split(args: &[String], known: &[&str]) -> Result<Options, String> {
    let mut out = Options {
        named: Vec::new(),
        positional: Vec::new(),
        help: false,
    };
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--help" || arg == "-h" {
            out.help = true;
        } else if let Some(name) = arg.strip_prefix("--") {
            let (name, value) = match name.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => {
                    i += 1;
                    let v = args
                        .get(i)
                        .ok_or(format!("option --{name} needs a value"))?;
                    (name.to_string(), v.clone())
                }
            };
            if !known.contains(&name.as_str()) {
                return Err(format!("unknown option --{name}"));
            }
            if out.named.iter().any(|(n, _)| *n == name) {
                return Err(format!("option --{name} given twice"));
            }
            out.named.push((name, value));
        } else {
            out.positional.push(arg.clone());
        }
        i += 1;
    }
    Ok(out)
}

impl Options {
    fn get(&self, name: &str) -> Option<String> {
        self.named
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
    fn require(&self, name: &str) -> Result<String, String> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or(format!("option --{name} is required"))
    }
    /// The S3 options, each defaulting to its environment variable.
    fn s3(&self) -> Result<S3Settings, String> {
        let pick = |option: &str, variable: &str| {
            self.get(option)
                .or_else(|| std::env::var(variable).ok())
                .unwrap_or_default()
        };
        let path_style = pick("s3-path-style", "ADMIN_TOOLKIT_S3_PATH_STYLE");
        let force_path_style = match path_style.to_ascii_lowercase().as_str() {
            "" | "off" | "false" | "0" => false,
            "on" | "true" | "1" => true,
            other => {
                return Err(format!(
                    "--s3-path-style must be on or off, not \"{other}\""
                ))
            }
        };
        Ok(S3Settings {
            endpoint: pick("s3-endpoint", "ADMIN_TOOLKIT_S3_ENDPOINT"),
            region: pick("s3-region", "ADMIN_TOOLKIT_S3_REGION"),
            force_path_style,
            credentials_file: pick("s3-credentials-file", "AWS_SHARED_CREDENTIALS_FILE"),
            profile: String::new(),
            ca_file: pick("s3-ca-file", "AWS_CA_BUNDLE"),
        })
    }

    /// Where encryption keys are: --encryption-key-dir or ADMIN_TOOLKIT_ENCRYPTION_KEY_DIR.
    fn keys(&self) -> KeyDir {
        let dir = self
            .get("encryption-key-dir")
            .or_else(|| std::env::var("ADMIN_TOOLKIT_ENCRYPTION_KEY_DIR").ok())
            .filter(|d| !d.is_empty());
        KeyDir(dir.map(PathBuf::from))
    }

    fn threads(&self) -> Result<Option<usize>, String> {
        self.get("threads")
            .map(|t| {
                t.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or(format!("--threads must be 1 to 64, not \"{t}\""))
            })
            .transpose()
    }
}

pub fn parse(args: &[String]) -> Result<Invocation, String> {
    let rest = args.get(1..).unwrap_or_default();
    match args.first().map(String::as_str) {
        None | Some("help" | "--help" | "-h") => {
            Ok(Invocation::Help(match rest.first().map(String::as_str) {
                Some("restore") => RESTORE_HELP,
                Some("wal-get") => WAL_GET_HELP,
                Some("verify") => VERIFY_HELP,
                _ => USAGE,
            }))
        }
        Some("version" | "--version" | "-V") => Ok(Invocation::Version),
        Some("restore") => {
            let o = split(
                rest,
                &[
                    "backup",
                    "target-dir",
                    "archive",
                    "target-time",
                    "target-lsn",
                    "target-name",
                    "threads",
                    "s3-endpoint",
                    "s3-region",
                    "s3-path-style",
                    "s3-credentials-file",
                    "s3-ca-file",
                    "encryption-key-dir",
                ],
            )?;
            if o.help {
                return Ok(Invocation::Help(RESTORE_HELP));
            }
            if let Some(p) = o.positional.first() {
                return Err(format!("restore takes no argument \"{p}\""));
            }
            let targets: Vec<RecoveryTarget> = [
                o.get("target-time").map(RecoveryTarget::Time),
                o.get("target-lsn").map(RecoveryTarget::Lsn),
                o.get("target-name").map(RecoveryTarget::Name),
            ]
            .into_iter()
            .flatten()
            .collect();
            if targets.len() > 1 {
                return Err(
                    "give at most one of --target-time, --target-lsn and --target-name".into(),
                );
            }
            Ok(Invocation::Restore(Restore {
                backup: o.require("backup")?,
                target_dir: o.require("target-dir")?.into(),
                archive: o.get("archive"),
                s3: o.s3()?,
                keys: o.keys(),
                target: targets.into_iter().next(),
                threads: o.threads()?,
            }))
        }
        Some("wal-get") => {
            let o = split(
                rest,
                &[
                    "archive",
                    "s3-endpoint",
                    "s3-region",
                    "s3-path-style",
                    "s3-credentials-file",
                    "s3-ca-file",
                    "encryption-key-dir",
                ],
            )?;
            if o.help {
                return Ok(Invocation::Help(WAL_GET_HELP));
            }
            let [file, destination] = &o.positional[..] else {
                return Err("wal-get needs <walfile> and <destination>".into());
            };
            Ok(Invocation::WalGet(WalGet {
                archive: o.require("archive")?,
                s3: o.s3()?,
                keys: o.keys(),
                file: file.clone(),
                destination: destination.into(),
            }))
        }
        Some("verify") => {
            let o = split(
                rest,
                &[
                    "backup",
                    "threads",
                    "s3-endpoint",
                    "s3-region",
                    "s3-path-style",
                    "s3-credentials-file",
                    "s3-ca-file",
                    "encryption-key-dir",
                ],
            )?;
            if o.help {
                return Ok(Invocation::Help(VERIFY_HELP));
            }
            Ok(Invocation::Verify(Verify {
                backup: o.require("backup")?,
                s3: o.s3()?,
                keys: o.keys(),
                threads: o.threads()?,
            }))
        }
        Some(other) => Err(format!("unknown command \"{other}\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_commands_and_refuses_mistakes() {
        assert_eq!(parse(&args(&[])).unwrap(), Invocation::Help(USAGE));
        assert_eq!(
            parse(&args(&["help", "restore"])).unwrap(),
            Invocation::Help(RESTORE_HELP)
        );
        assert_eq!(
            parse(&args(&["verify", "--help"])).unwrap(),
            Invocation::Help(VERIFY_HELP)
        );
        assert_eq!(parse(&args(&["-V"])).unwrap(), Invocation::Version);
        let r = parse(&args(&[
            "restore",
            "--backup",
            "/b",
            "--target-dir=/t",
            "--target-time",
            "2026-11-24 10:00:00+00",
        ]))
        .unwrap();
        // The S3 options and the key directory default to the environment: not compared here.
        let Invocation::Restore(r) = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            (
                r.backup.as_str(),
                r.target_dir.as_path(),
                r.archive,
                r.target,
                r.threads
            ),
            (
                "/b",
                std::path::Path::new("/t"),
                None,
                Some(RecoveryTarget::Time("2026-11-24 10:00:00+00".into())),
                None
            )
        );
        let w = parse(&args(&[
            "wal-get",
            "--archive",
            "/a",
            "000000010000000000000001",
            "pg_wal/RECOVERYXLOG",
        ]))
        .unwrap();
        assert!(
            matches!(w, Invocation::WalGet(WalGet { ref file, .. }) if file == "000000010000000000000001")
        );
        let s3 = parse(&args(&[
            "wal-get",
            "--archive=s3://bucket/wal",
            "--s3-endpoint",
            "http://127.0.0.1:9000",
            "--s3-path-style=on",
            "--s3-credentials-file",
            "/etc/creds",
            "000000010000000000000001",
            "x",
        ]))
        .unwrap();
        let Invocation::WalGet(w) = s3 else { panic!() };
        assert_eq!(w.archive, "s3://bucket/wal");
        assert_eq!(w.s3.endpoint, "http://127.0.0.1:9000");
        assert!(w.s3.force_path_style);
        assert_eq!(w.s3.credentials_file, "/etc/creds");
        assert!(parse(&args(&[
            "wal-get",
            "--archive=/a",
            "--s3-path-style=maybe",
            "f",
            "d"
        ]))
        .is_err());
        for bad in [
            &["restore", "--backup", "/b"][..],
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
            &["restore", "--bakup", "/b"],
            &["restore", "--backup"],
            &["wal-get", "--archive", "/a", "onlyone"],
            &["verify", "--backup", "/b", "--threads", "0"],
            &["frobnicate"],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
