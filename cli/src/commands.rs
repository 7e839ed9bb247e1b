//! The commands: restore, wal-get, verify.

use crate::args::{RecoveryTarget, RestoreArgs, VerifyArgs};
use admin_toolkit_core::backup::default_threads;
use admin_toolkit_core::backup::delta::restore_delta;
use admin_toolkit_core::backup::manifest::{data_dir_major, Manifest};
use admin_toolkit_core::backup::read::verify as verify_backup;
use admin_toolkit_core::backup::recovery_conf::{
    write_missing_configuration, write_recovery_settings, RecoverySettings,
};
use admin_toolkit_core::backup::restore::{
    is_empty_target, place_tablespaces, restore as restore_backup, undo_placements,
};
use admin_toolkit_core::backup::store::BackupStore;
use admin_toolkit_core::chrono::DateTime;
use admin_toolkit_core::copy_guard::HELD_MARKER;
use admin_toolkit_core::crypto::KeyDir;
use admin_toolkit_core::lsn::Lsn;
use admin_toolkit_core::recovery::{plan_segments, Archive, BackupPosition, Target};
use admin_toolkit_core::storage::{self, Location, S3Settings, StorageError};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

pub fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("admin-toolkit: {message}");
    ExitCode::from(1)
}

/// A progress display as the restore functions take it: shown, never asking them to stop.
fn never_stopping(
    mut show: Box<dyn FnMut(u64, u64)>,
) -> impl FnMut(u64, u64) -> Result<(), String> {
    move |done, total| {
        show(done, total);
        Ok(())
    }
}

/// Progress of a long operation on stderr: a bar when stderr is a terminal, otherwise a plain
/// line every tenth of the work (for logs and scripts).
fn progress(what: &'static str) -> Box<dyn FnMut(u64, u64)> {
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(what);
        return Box::new(move |done, total| {
            bar.set_length(total);
            bar.set_position(done);
            if done >= total {
                bar.finish();
            }
        });
    }
    let mut shown = 0u64;
    Box::new(move |done, total| {
        let tenth = done.saturating_mul(10).checked_div(total).unwrap_or(10);
        if tenth > shown {
            shown = tenth;
            eprintln!(
                "{what}: {}% ({} of {} MB)",
                tenth * 10,
                done / 1_000_000,
                total / 1_000_000
            );
        }
    })
}

/// A recovery_target_time as microseconds since the epoch; an explicit UTC offset is required
/// so that the tool and the server read the same instant.
pub fn parse_target_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    for format in [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f %#z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Ok(t.timestamp_micros());
        }
    }
    Err(format!(
        "cannot read target time \"{text}\": use 'YYYY-MM-DD HH:MM:SS[.ffffff]+HH' with a UTC offset, e.g. '2026-11-24 10:00:00+00'"
    ))
}

/// Removes what a failed restore wrote, leaving the target as it was (missing or empty).
fn undo(target: &Path, existed: bool) {
    let _ignored = std::fs::remove_dir_all(target);
    if existed {
        let _ignored = std::fs::create_dir(target);
    }
}

pub fn restore(r: &RestoreArgs) -> ExitCode {
    match restore_into_target(r) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Every step of `restore`; the target directory is left as found when one fails after the
/// copy has started.
fn restore_into_target(r: &RestoreArgs) -> Result<(), String> {
    let (s3, keys) = (r.storage.s3(), r.storage.keys());
    let manifest = BackupStore::open(&r.backup, &s3)
        .and_then(|s| s.load_manifest(&keys, &r.storage.expected()))?;
    check_target_dir(r)?;
    let tablespaces = place_tablespaces(&manifest, &r.tablespace_mapping)?;
    let (recovery_target, target) = recovery_target(r)?;
    // A local archive is named by its absolute path in restore_command.
    let archive = r
        .archive
        .as_deref()
        .map(archive_location)
        .transpose()?
        .ok_or("--archive is needed: a base backup becomes consistent only by replaying the WAL archived while it ran, and PostgreSQL will not start a recovery without a restore_command (give admin_toolkit.archive_location)")?;
    check_archive(r, &manifest, &archive, target)?;
    let existed = r.target_dir.exists();
    let started = Instant::now();
    let threads = r.threads.map_or_else(default_threads, usize::from);
    if r.delta {
        return delta_into_target(r, &manifest, recovery_target.as_ref(), &archive, threads);
    }
    let restored = restore_backup(
        &manifest,
        &r.target_dir,
        &tablespaces,
        threads,
        &s3,
        &keys,
        &mut never_stopping(progress("restoring")),
    )
    .map_err(|e| {
        undo(&r.target_dir, existed);
        format!("restore refused, nothing left in the target directory: {e}")
    })?;
    let seconds = started.elapsed().as_secs_f64();
    configure_restored(r, recovery_target.as_ref(), &archive).inspect_err(|_| {
        undo(&r.target_dir, existed);
        undo_placements(&tablespaces);
    })?;
    eprintln!(
        "restored backup {} ({} files, {} MB) into \"{}\" in {seconds:.1} s ({:.0} MB/s)",
        manifest.backup_id,
        restored.files,
        restored.bytes / 1_000_000,
        r.target_dir.display(),
        restored.bytes as f64 / 1e6 / seconds.max(1e-6)
    );
    for placed in &tablespaces {
        eprintln!(
            "tablespace {} restored into \"{}\" (linked from pg_tblspc/{})",
            placed.oid,
            placed.directory.display(),
            placed.oid
        );
    }
    say_how_to_start(r);
    Ok(())
}

/// `restore --delta`: the copy in the target directory brought to the backup, then configured
/// as a plain restore is. A failure leaves the directory partly rewritten: run it again.
fn delta_into_target(
    r: &RestoreArgs,
    manifest: &Manifest,
    recovery_target: Option<&RecoveryTarget>,
    archive: &Location,
    threads: usize,
) -> Result<(), String> {
    let started = Instant::now();
    let (s3, keys) = (r.storage.s3(), r.storage.keys());
    let done = restore_delta(
        manifest,
        &r.target_dir,
        threads,
        &s3,
        &keys,
        &mut never_stopping(progress("checking and rewriting")),
    )
    .map_err(|e| {
        format!("delta restore stopped: {e} (the directory may be partly rewritten: run it again)")
    })?;
    configure_restored(r, recovery_target, archive)?;
    eprintln!(
        "brought \"{}\" to backup {} in {:.1} s: {} of {} files rewritten ({} chunks, {} MB written), {} MB checked, {} files or directories removed",
        r.target_dir.display(),
        manifest.backup_id,
        started.elapsed().as_secs_f64(),
        done.files_written,
        done.files,
        done.chunks_written,
        done.bytes_written / 1_000_000,
        done.bytes_checked / 1_000_000,
        done.removed
    );
    say_how_to_start(r);
    Ok(())
}

/// The target directory must be empty (or absent; with --delta, a copy of the cluster), and
/// short enough for the socket the restored server makes in it (108 bytes with
/// "/.s.PGSQL.<port>") unless --keep-network.
fn check_target_dir(r: &RestoreArgs) -> Result<(), String> {
    if !r.delta && !is_empty_target(&r.target_dir)? {
        return Err(format!(
            "target directory \"{}\" is not empty; refusing to restore into it",
            r.target_dir.display()
        ));
    }
    if !r.keep_network {
        let length = std::path::absolute(&r.target_dir).map_or(0, |p| p.as_os_str().len());
        if length + "/.s.PGSQL.65535".len() >= 108 {
            return Err(format!(
                "the target directory's path is too long for the restored server's socket, which goes there ({length} bytes): choose a shorter one, or --keep-network"
            ));
        }
    }
    Ok(())
}

/// The recovery target asked for, and what the WAL plan aims at.
fn recovery_target(r: &RestoreArgs) -> Result<(Option<RecoveryTarget>, Target), String> {
    let recovery_target = r.target();
    let target = match &recovery_target {
        Some(RecoveryTarget::Time(t)) => Target::Time(parse_target_time(t)?),
        Some(RecoveryTarget::Lsn(l)) => Target::Lsn(Lsn::parse(l).ok_or_else(|| {
            format!("cannot read target LSN \"{l}\": use the X/Y form, e.g. 0/5000060")
        })?),
        Some(RecoveryTarget::Name(_)) | None => Target::EndOfArchive,
    };
    Ok((recovery_target, target))
}

/// Every WAL segment recovery to `target` needs is in the archive, named before anything is
/// restored.
fn check_archive(
    r: &RestoreArgs,
    manifest: &Manifest,
    location: &Location,
    target: Target,
) -> Result<(), String> {
    let position = match (
        Lsn::parse(&manifest.start_lsn),
        Lsn::parse(&manifest.end_lsn),
    ) {
        (Some(start), Some(end)) => BackupPosition {
            start,
            end,
            timeline: manifest.timeline,
        },
        _ => return Err("the backup's manifest has no valid start and end LSN".into()),
    };
    let plan = storage::open(location, &r.storage.s3())
        .map_err(|e| e.to_string())
        .and_then(|s| {
            Archive::read(
                s.as_ref(),
                &manifest.system_identifier,
                manifest.wal_segment_size,
                &r.storage.keys(),
                r.storage.require_encryption,
            )
        })
        .and_then(|a| {
            plan_segments(&a, position, target, manifest.wal_segment_size)
                .map_err(|e| e.to_string())
        })
        .map_err(|e| {
            format!(
                "cannot recover backup {} from \"{}\": {e}",
                manifest.backup_id,
                location.display()
            )
        })?;
    eprintln!(
        "WAL: {} segments needed on timeline {}, from {} to {}, all in the archive",
        plan.segments.len(),
        plan.timeline,
        plan.segments.first().map_or("-", String::as_str),
        plan.segments.last().map_or("-", String::as_str)
    );
    Ok(())
}

/// The restored directory made startable: recovery settings, the configuration files the
/// backup did not hold, and the marker that holds the toolkit's schedules and retention (its
/// catalog names the original's storage) until the copy is adopted.
fn configure_restored(
    r: &RestoreArgs,
    target: Option<&RecoveryTarget>,
    archive: &Location,
) -> Result<(), String> {
    recovery_settings(r, target, Some(archive), &r.storage.s3(), &r.storage.keys())?;
    let written = write_missing_configuration(&r.target_dir)?;
    if !written.is_empty() {
        eprintln!(
            "the backup held no {} (the server kept its configuration elsewhere): written with only what starting needs",
            written.join(", ")
        );
    }
    let held = r.target_dir.join(HELD_MARKER);
    std::fs::write(
        &held,
        "admin-toolkit restore: schedules and retention are held here until SELECT admin_toolkit.adopt_as_primary()\n",
    )
    .map_err(|e| format!("cannot write \"{}\": {e}", held.display()))?;
    eprintln!("the toolkit's schedules and retention are held in the restored server until SELECT admin_toolkit.adopt_as_primary()");
    Ok(())
}

fn say_how_to_start(r: &RestoreArgs) {
    if !r.keep_archiving {
        eprintln!("archiving is off in the restored configuration (archive_mode = 'off'): this copy archives nothing into the original's archive; --keep-archiving keeps it");
    }
    // A data directory starts only under its own major's server: name it, with PGDG's path.
    let pg_ctl = match data_dir_major(&r.target_dir) {
        Ok(major) => {
            format!("PostgreSQL {major}'s pg_ctl (/usr/lib/postgresql/{major}/bin/pg_ctl)")
        }
        Err(_) => "pg_ctl".to_string(),
    };
    if r.keep_network {
        eprintln!(
            "start the server on it to recover with {pg_ctl}: pg_ctl -D {} start",
            r.target_dir.display()
        );
    } else {
        eprintln!(
            "start the server on it to recover with {pg_ctl}: pg_ctl -D {0} start; it listens on no TCP address, only on its socket in {0} (psql -h {0}); --keep-network keeps the backup's network settings",
            r.target_dir.display()
        );
    }
}

/// Writes the restored directory's recovery settings, restore_command running this program.
fn recovery_settings(
    r: &RestoreArgs,
    target: Option<&RecoveryTarget>,
    archive: Option<&Location>,
    s3: &S3Settings,
    keys: &KeyDir,
) -> Result<(), String> {
    let program =
        std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
    let keys = match &keys.0 {
        Some(dir) => {
            KeyDir(Some(std::path::absolute(dir).map_err(|e| {
                format!("cannot resolve --encryption-key-dir: {e}")
            })?))
        }
        None => KeyDir(None),
    };
    let target_dir = std::path::absolute(&r.target_dir)
        .map_err(|e| format!("cannot resolve --target-dir: {e}"))?;
    let settings = RecoverySettings {
        backup: &r.backup,
        program: &program,
        archive,
        target,
        s3,
        keys: &keys,
        require_sealed: r.storage.require_encryption,
        keep_archiving: r.keep_archiving,
        socket_directory: (!r.keep_network).then_some(target_dir.as_path()),
    };
    write_recovery_settings(&r.target_dir, &settings)
}

/// The archive location, a local one made absolute.
pub fn archive_location(text: &str) -> Result<Location, String> {
    match Location::parse(text) {
        Ok(location) => Ok(location),
        Err(StorageError::InvalidLocation(_)) if !text.contains("://") => std::path::absolute(text)
            .map(Location::Local)
            .map_err(|e| format!("cannot resolve --archive: {e}")),
        Err(e) => Err(e.to_string()),
    }
}

pub fn verify(v: &VerifyArgs) -> ExitCode {
    let (s3, keys) = (v.storage.s3(), v.storage.keys());
    let expected = v.storage.expected();
    let manifest =
        match BackupStore::open(&v.backup, &s3).and_then(|s| s.load_manifest(&keys, &expected)) {
            Ok(m) => m,
            Err(e) if v.json => {
                print_json(&serde_json::json!({
                    "backup": v.backup,
                    "ok": false,
                    "error": e.to_string(),
                }));
                return ExitCode::from(1);
            }
            Err(e) => return fail(e),
        };
    let report = verify_backup(
        &manifest,
        v.threads.map_or_else(default_threads, usize::from),
        &s3,
        &keys,
        &mut progress("verifying"),
    );
    let ok = report.problems.is_empty();
    if v.json {
        print_json(&serde_json::json!({
            "backup": v.backup,
            "backup_id": manifest.backup_id,
            "ok": ok,
            "files": report.files,
            "bytes": report.bytes,
            "problems": report.problems.iter()
                .map(|p| serde_json::json!({"path": p.path, "message": p.message}))
                .collect::<Vec<_>>(),
        }));
    } else {
        for p in &report.problems {
            if p.path.is_empty() {
                println!("ERROR {}", p.message);
            } else {
                println!("ERROR {}: {}", p.path, p.message);
            }
        }
        if ok {
            println!(
                "OK backup {}: {} files, {} bytes match their SHA-256 checksums",
                manifest.backup_id, report.files, report.bytes
            );
        } else {
            println!(
                "backup {}: {} problems",
                manifest.backup_id,
                report.problems.len()
            );
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_json(value: &serde_json::Value) {
    println!("{value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_times_need_an_offset() {
        assert_eq!(
            parse_target_time("2026-11-24 10:00:00+00").unwrap(),
            1_795_514_400_000_000
        );
        assert_eq!(
            parse_target_time("2026-11-24T11:00:00.5+01:00").unwrap(),
            1_795_514_400_500_000
        );
        assert!(parse_target_time("2026-11-24 10:00:00")
            .unwrap_err()
            .contains("UTC offset"));
        assert!(parse_target_time("yesterday").is_err());
    }
}
