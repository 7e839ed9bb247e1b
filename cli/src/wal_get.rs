//! `wal-get`, PostgreSQL's restore_command: one archived WAL file into place, and the next
//! segments fetched ahead into a spool by a prefetcher process (`core::wal_prefetch`), so that
//! the next call usually only moves a file.

use crate::args::WalGetArgs;
use crate::commands::archive_location;
use admin_toolkit_core::backup::delta::system_identifier_of;
use admin_toolkit_core::storage::{self, Location, Storage};
use admin_toolkit_core::wal::{archive_owner, data_object, is_wal_file_name, restore_wal};
use admin_toolkit_core::wal_prefetch::{fill, spool_of, window, Filled, Spool, LOCK_FILE};
use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Above 125: PostgreSQL stops recovery instead of taking the failure for the end of WAL.
const STOP_RECOVERY: u8 = 126;
/// Segments fetched at once by the prefetcher, at most.
const MOST_PARALLEL_FETCHES: usize = 4;
/// A prefetcher whose position has not moved for this long exits (the next call starts one).
const PREFETCHER_PATIENCE: Duration = Duration::from_secs(60);

/// What went wrong, with the exit code PostgreSQL reads.
struct Failure(u8, String);

pub fn wal_get(w: &WalGetArgs) -> ExitCode {
    if !is_wal_file_name(&w.file) {
        return crate::commands::fail(format!("\"{}\" is not a WAL file name", w.file));
    }
    let spool = prefetch_spool(w);
    if w.prefetch_worker {
        return match spool {
            Some(spool) => prefetch(w, spool),
            None => ExitCode::SUCCESS,
        };
    }
    if let Some(spool) = &spool {
        // The prefetcher follows this position; a segment already fetched only moves.
        let _ = spool.set_position(&w.file);
        if let Ok(true) = spool.take(&w.file, &w.destination) {
            start_prefetcher(spool);
            return ExitCode::SUCCESS;
        }
    }
    let fetched = open_archive(w)
        .and_then(|(storage, system)| fetch(storage.as_ref(), system.as_deref(), w, &w.file));
    let outcome = match fetched {
        Ok(Some(bytes)) => {
            if let Some(spool) = &spool {
                let _ = spool.set_segment_size(bytes.len() as u64);
            }
            write_destination(&w.destination, &bytes)
        }
        // The normal end of archived WAL during recovery: exit 1, quietly enough.
        Ok(None) => Err(Failure(1, format!("{} is not in the archive", w.file))),
        Err(failure) => Err(failure),
    };
    if let (Some(spool), Ok(_) | Err(Failure(1, _))) = (&spool, &outcome) {
        // Also at the end of the archive: the prefetcher removes the spool at promotion.
        start_prefetcher(spool);
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, message)) => {
            eprintln!("admin-toolkit: {message}");
            ExitCode::from(code)
        }
    }
}

/// The spool of the data directory wal-get runs in (PostgreSQL runs restore_command there),
/// when prefetching is on and the file asked for is a segment.
fn prefetch_spool(w: &WalGetArgs) -> Option<Spool> {
    if w.prefetch == 0 || w.file.len() != 24 {
        return None;
    }
    let data_dir = std::env::current_dir().ok()?;
    Spool::open_for(&spool_of(&data_dir)?, &source(w)?).ok()
}

/// What this wal-get fetches for: the cluster, and the archive, S3 settings, keys and checks
/// it fetches with. Segments spooled under another source are not taken (`Spool::open_for`).
fn source(w: &WalGetArgs) -> Option<String> {
    Some(format!(
        "{}|{}|{:?}|{:?}|{}",
        system_identifier_here()?,
        w.archive,
        w.storage.s3(),
        w.storage.keys().0,
        w.storage.require_encryption
    ))
}

/// The system identifier of the data directory wal-get runs in (PostgreSQL runs
/// restore_command there).
fn system_identifier_here() -> Option<String> {
    system_identifier_of(Path::new("."))
}

fn open_archive(w: &WalGetArgs) -> Result<(Box<dyn Storage>, Option<String>), Failure> {
    let location = Location::parse(&w.archive)
        .or_else(|e| archive_location(&w.archive).map_err(|_| e.to_string()));
    // A local archive that is not there is a mistyped path or an unmounted disk, never the
    // end of the WAL: recovery must stop (and nothing is created in its place).
    if let Ok(Location::Local(dir)) = &location {
        if !dir.is_dir() {
            return Err(Failure(
                STOP_RECOVERY,
                format!("the archive \"{}\" does not exist", dir.display()),
            ));
        }
    }
    let storage = location
        .and_then(|l| storage::open(&l, &w.storage.s3()).map_err(|e| e.to_string()))
        // Not "missing": an unusable archive must stop recovery, not end it early.
        .map_err(|e| Failure(STOP_RECOVERY, format!("cannot open the archive: {e}")))?;
    let system =
        archive_of_this_cluster(storage.as_ref()).map_err(|e| Failure(STOP_RECOVERY, e))?;
    Ok((storage, system))
}

/// Archived WAL file `name`, authenticated and decompressed; `None` when the archive does not
/// hold it.
fn fetch(
    storage: &dyn Storage,
    system: Option<&str>,
    w: &WalGetArgs,
    name: &str,
) -> Result<Option<Vec<u8>>, Failure> {
    match storage.exists(&data_object(name)) {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(e) => {
            return Err(Failure(
                STOP_RECOVERY,
                format!("cannot reach the archive: {e}"),
            ))
        }
    }
    restore_wal(
        storage,
        system,
        name,
        &w.storage.keys(),
        w.storage.require_encryption,
    )
    .map(Some)
    .map_err(|e| Failure(STOP_RECOVERY, format!("archived {name} is damaged: {e}")))
}

fn write_destination(destination: &Path, bytes: &[u8]) -> Result<(), Failure> {
    File::create(destination)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
        .map_err(|e| {
            Failure(
                STOP_RECOVERY,
                format!("cannot write \"{}\": {e}", destination.display()),
            )
        })
}

/// Refuses an archive that belongs to another cluster than the one recovering: wal-get runs
/// in the data directory (PostgreSQL runs restore_command there), whose global/pg_control
/// starts with the cluster's system identifier. An archive without a marker, or a directory
/// without a control file, is not checked. Gives the cluster's system identifier (from the
/// control file, else the marker), which sealed WAL is bound to.
fn archive_of_this_cluster(storage: &dyn Storage) -> Result<Option<String>, String> {
    let here = system_identifier_here();
    let Some(owner) =
        archive_owner(storage).map_err(|e| format!("cannot reach the archive: {e}"))?
    else {
        return Ok(here);
    };
    let Some(here) = here else {
        return Ok(Some(owner));
    };
    if owner == here {
        Ok(Some(here))
    } else {
        Err(format!(
            "the archive belongs to cluster {owner}, not to the one recovering here ({here}): refused"
        ))
    }
}

/// Starts the spool's prefetcher unless one runs: this program again, with the same
/// arguments and `--prefetch-worker`, detached (its own process group, no output), so that
/// PostgreSQL, which waits for restore_command, does not wait for it.
fn start_prefetcher(spool: &Spool) {
    if spool.segment_size().is_none() || prefetcher_running(spool) {
        return;
    }
    let Ok(program) = std::env::current_exe() else {
        return;
    };
    // A prefetcher that cannot start only means no prefetching.
    let _ = Command::new(program)
        .args(std::env::args_os().skip(1))
        .arg("--prefetch-worker")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
}

fn prefetcher_running(spool: &Spool) -> bool {
    match File::create(spool.path().join(LOCK_FILE)) {
        Ok(lock) => lock.try_lock().is_err(),
        Err(_) => true,
    }
}

/// Whether the data directory (the working directory) is still recovering.
fn recovering() -> bool {
    Path::new("recovery.signal").exists() || Path::new("standby.signal").exists()
}

/// The prefetcher: keeps the `--prefetch` segments after the last one asked for in the spool,
/// several fetched at once; waits at the end of the archive for more; removes the spool once
/// the data directory has left recovery; exits when no segment was asked for in a while.
fn prefetch(w: &WalGetArgs, spool: Spool) -> ExitCode {
    let Ok(lock) = File::create(spool.path().join(LOCK_FILE)) else {
        return ExitCode::SUCCESS;
    };
    if lock.try_lock().is_err() {
        return ExitCode::SUCCESS; // another one runs
    }
    let Ok((storage, system)) = open_archive(w) else {
        return ExitCode::SUCCESS; // the next wal-get fetches itself and says why
    };
    let fetch_one =
        |name: &str| fetch(storage.as_ref(), system.as_deref(), w, name).map_err(|Failure(_, e)| e);
    let threads = usize::from(w.prefetch).min(MOST_PARALLEL_FETCHES);
    let (mut last_position, mut moved_at) = (None, Instant::now());
    // A spool emptied and made again for another source is another prefetcher's.
    let mine = spool.source();
    while recovering() && spool.still_there() && spool.source() == mine {
        let (Some(position), Some(segment_size)) = (spool.position(), spool.segment_size()) else {
            break;
        };
        if last_position.as_ref() != Some(&position) {
            (last_position, moved_at) = (Some(position.clone()), Instant::now());
        } else if moved_at.elapsed() > PREFETCHER_PATIENCE {
            break;
        }
        let wanted = window(&position, segment_size, w.prefetch);
        spool.forget_outside(&wanted);
        match fill(&spool, &wanted, threads, &fetch_one) {
            Filled::Full => std::thread::sleep(Duration::from_millis(10)),
            Filled::EndOfArchive(_) => std::thread::sleep(Duration::from_secs(1)),
            Filled::Failed(_) => break,
        }
    }
    if !recovering() && spool.still_there() {
        spool.remove();
    }
    ExitCode::SUCCESS
}
