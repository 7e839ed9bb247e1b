//! Archived WAL fetched ahead of recovery. PostgreSQL runs `restore_command` once per segment
//! and replays nothing while it runs, so one fetch at a time leaves replay waiting on every
//! round trip. `wal-get` therefore keeps the next segments of the one asked for in a spool
//! beside the data directory, fetched several at a time by a prefetcher process of its own;
//! the next call finds its segment there and only moves it into place.
//!
//! The spool holds what `restore_wal` returned (authenticated and decompressed), one file per
//! segment, written under a temporary name and renamed, so a file there is always whole. It is
//! bounded to the window after the last segment asked for (`position`), and removed once the
//! data directory has left recovery.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::lsn::{parse_segment_file_name, segment_file_name};

/// Segments kept fetched ahead by default (`wal-get --prefetch`).
pub const DEFAULT_PREFETCH: u8 = 8;
/// The last segment asked for, written by each `wal-get`.
const POSITION_FILE: &str = "position";
/// The size of the segments, learnt from the first one fetched.
const SEGMENT_SIZE_FILE: &str = "segment_size";
/// What the spooled WAL was fetched for: the cluster and the archive, keys and checks of the
/// wal-get that made the spool (`open_for`).
const SOURCE_FILE: &str = "source";
/// Temporary files of a prefetcher that died are removed after this long.
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(120);
/// Held (flock) by the one prefetcher of a spool.
pub const LOCK_FILE: &str = "prefetch.lock";

/// The spool of the data directory `data_dir`: `<parent>/<name>.wal-prefetch`, outside the data
/// directory (no backup copies it, no server reads it) and on its file system as a rule.
pub fn spool_of(data_dir: &Path) -> Option<PathBuf> {
    let name = data_dir.file_name()?.to_string_lossy();
    Some(data_dir.parent()?.join(format!("{name}.wal-prefetch")))
}

/// Whether `bytes` bytes can be a WAL segment: a power of two from 1 MB to 1 GB.
pub fn is_segment_size(bytes: u64) -> bool {
    bytes.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(&bytes)
}

/// The `n` segment names after `name`, on its timeline.
pub fn window(name: &str, segment_size: u64, n: u8) -> Vec<String> {
    let Some((timeline, segment)) = parse_segment_file_name(name, segment_size) else {
        return Vec::new();
    };
    (1..=u64::from(n))
        .map(|i| segment_file_name(timeline, segment + i, segment_size))
        .collect()
}

/// A spool directory (mode 0700, owned by this user).
pub struct Spool {
    dir: PathBuf,
    /// Device and inode of the directory when opened: a spool removed and made again (by a
    /// wal-get of other settings) is another spool, which this one's prefetcher leaves alone.
    identity: (u64, u64),
}

impl Spool {
    /// The spool for WAL fetched as `source` says (the cluster's system identifier and the
    /// archive, key directory and checks of the wal-get): one left by another recovery into
    /// the same path, or filled under other settings, is emptied first, since its segments,
    /// under the same names, may be another cluster's WAL or WAL this call would refuse.
    pub fn open_for(dir: &Path, source: &str) -> Result<Spool, String> {
        let spool = Spool::open(dir)?;
        if spool.source().as_deref() == Some(source) {
            return Ok(spool);
        }
        spool.remove();
        let spool = Spool::open(dir)?;
        let file = dir.join(SOURCE_FILE);
        fs::write(&file, source)
            .map_err(|e| format!("cannot write \"{}\": {e}", file.display()))?;
        Ok(spool)
    }

    /// What the spooled WAL was fetched for (`open_for`).
    pub fn source(&self) -> Option<String> {
        fs::read_to_string(self.dir.join(SOURCE_FILE)).ok()
    }

    /// Whether the directory is still the one opened (not removed, nor made again).
    pub fn still_there(&self) -> bool {
        fs::symlink_metadata(&self.dir).is_ok_and(|m| (m.dev(), m.ino()) == self.identity)
    }

    pub fn open(dir: &Path) -> Result<Spool, String> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create the spool \"{}\": {e}", dir.display()))?;
        let meta = fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if !meta.is_dir() || meta.permissions().mode() & 0o077 != 0 || meta.uid() != me {
            return Err(format!(
                "\"{}\" is not a private directory of this user: not used as a spool",
                dir.display()
            ));
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Moves segment `name` from the spool to `destination`; false when it is not there (or
    /// is not a whole segment of the recorded size: then it is dropped, and fetched again).
    pub fn take(&self, name: &str, destination: &Path) -> Result<bool, String> {
        let held = self.dir.join(name);
        match (fs::metadata(&held), self.segment_size()) {
            (Ok(meta), Some(size)) if meta.len() == size => {}
            (Ok(_), _) => {
                let _ = fs::remove_file(&held);
                return Ok(false);
            }
            (Err(_), _) => return Ok(false),
        }
        match fs::rename(&held, destination) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            // Another file system (pg_wal linked elsewhere): copy, then forget the spooled one.
            Err(e) if e.kind() == ErrorKind::CrossesDevices => {
                fs::copy(&held, destination)
                    .and_then(|_| File::open(destination)?.sync_all())
                    .map_err(|e| format!("cannot write \"{}\": {e}", destination.display()))?;
                let _ = fs::remove_file(&held);
                Ok(true)
            }
            Err(e) => Err(format!("cannot move \"{}\": {e}", held.display())),
        }
    }

    pub fn holds(&self, name: &str) -> bool {
        self.dir.join(name).is_file()
    }

    /// Stores a fetched segment whole and durably: written under a temporary name of this
    /// process, fsynced, then renamed.
    pub fn put(&self, name: &str, bytes: &[u8]) -> Result<(), String> {
        let temporary = self.dir.join(format!("{name}.{}.tmp", std::process::id()));
        File::options()
            .write(true)
            .create_new(true)
            .open(&temporary)
            .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
            .and_then(|_| fs::rename(&temporary, self.dir.join(name)))
            .map_err(|e| {
                let _ = fs::remove_file(&temporary);
                format!("cannot spool {name}: {e}")
            })
    }

    /// Replaces the small file `name` whole: written under a temporary name, then renamed.
    fn replace(&self, name: &str, text: &str) -> std::io::Result<()> {
        let temporary = self.dir.join(format!("{name}.tmp"));
        fs::write(&temporary, text).and_then(|_| fs::rename(&temporary, self.dir.join(name)))
    }

    /// Records the segment recovery asked for last.
    pub fn set_position(&self, name: &str) -> Result<(), String> {
        self.replace(POSITION_FILE, name)
            .map_err(|e| format!("cannot write the spool's position: {e}"))
    }

    pub fn position(&self) -> Option<String> {
        fs::read_to_string(self.dir.join(POSITION_FILE))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Records the segment size, once it is known from a fetched segment.
    pub fn set_segment_size(&self, bytes: u64) -> Result<(), String> {
        if !is_segment_size(bytes) {
            return Err(format!("{bytes} bytes is not a WAL segment size"));
        }
        if self.segment_size() == Some(bytes) {
            return Ok(());
        }
        self.replace(SEGMENT_SIZE_FILE, &bytes.to_string())
            .map_err(|e| format!("cannot write the spool's segment size: {e}"))
    }

    pub fn segment_size(&self) -> Option<u64> {
        fs::read_to_string(self.dir.join(SEGMENT_SIZE_FILE))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .filter(|&b| is_segment_size(b))
    }

    /// Removes spooled segments outside `keep` (consumed, skipped, or of another timeline),
    /// and temporary files of a prefetcher that died.
    pub fn forget_outside(&self, keep: &[String]) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let segment = name.split('.').next().unwrap_or_default();
            if segment.len() != 24 || !segment.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let stale = if name.ends_with(".tmp") {
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().unwrap_or_default() > STALE_TEMPORARY)
            } else {
                !keep.contains(&name)
            };
            if stale {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Removes the spool (recovery is over).
    pub fn remove(&self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Fetches one segment: its bytes, `None` when the archive does not hold it.
pub type Fetch<'a> = dyn Fn(&str) -> Result<Option<Vec<u8>>, String> + Sync + 'a;

/// How a `fill` ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Filled {
    /// Every segment of the window is spooled.
    Full,
    /// The archive does not hold this segment (yet): the end of archived WAL.
    EndOfArchive(String),
    /// A fetch failed; the `wal-get` that asks for the segment fetches it itself and says why.
    Failed(String),
}

/// Fetches the segments of `wanted` that the spool lacks, `threads` at a time, in order.
/// `fetch` gives a segment's bytes, `None` when the archive does not hold it. Stops at the
/// first segment missing from the archive or failing.
pub fn fill(spool: &Spool, wanted: &[String], threads: usize, fetch: &Fetch<'_>) -> Filled {
    let todo: Vec<&String> = wanted.iter().filter(|n| !spool.holds(n)).collect();
    for batch in todo.chunks(threads.max(1)) {
        let fetched: Vec<Result<Option<Vec<u8>>, String>> = std::thread::scope(|scope| {
            let running: Vec<_> = batch
                .iter()
                .map(|name| scope.spawn(move || fetch(name)))
                .collect();
            running
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("a fetch panicked".into())))
                .collect()
        });
        for (name, result) in batch.iter().zip(fetched) {
            match result {
                Ok(Some(bytes)) => {
                    if let Err(e) = spool.put(name, &bytes) {
                        return Filled::Failed(e);
                    }
                }
                Ok(None) => return Filled::EndOfArchive((*name).clone()),
                Err(e) => return Filled::Failed(format!("{name}: {e}")),
            }
        }
    }
    Filled::Full
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG16: u64 = 16 << 20;

    #[test]
    fn windows_follow_the_timeline_across_log_boundaries() {
        assert_eq!(
            window("0000000200000000000000FE", SEG16, 3),
            [
                "0000000200000000000000FF",
                "000000020000000100000000",
                "000000020000000100000001"
            ]
        );
        // 1 GB segments: four per log file
        assert_eq!(
            window("000000010000000500000003", 1 << 30, 1),
            ["000000010000000600000000"]
        );
        assert!(window("00000002.history", SEG16, 3).is_empty());
        assert!(is_segment_size(SEG16) && is_segment_size(1 << 30));
        assert!(!is_segment_size(SEG16 + 1) && !is_segment_size(512 << 10));
        assert_eq!(
            spool_of(Path::new("/var/lib/postgresql/15/restored")).unwrap(),
            Path::new("/var/lib/postgresql/15/restored.wal-prefetch")
        );
    }

    #[test]
    fn a_spool_holds_whole_segments_of_its_window_only() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(&tmp.path().join("data.wal-prefetch")).unwrap();
        assert_eq!(
            fs::metadata(spool.path()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let names: Vec<String> = window("000000010000000000000010", SEG16, 4);
        let fetched = std::sync::Mutex::new(Vec::new());
        let fetch = |name: &str| -> Result<Option<Vec<u8>>, String> {
            fetched.lock().unwrap().push(name.to_string());
            Ok((name < "000000010000000000000013").then(|| name.as_bytes().to_vec()))
        };
        assert_eq!(
            fill(&spool, &names, 2, &fetch),
            Filled::EndOfArchive("000000010000000000000013".into())
        );
        assert!(spool.holds("000000010000000000000011") && spool.holds("000000010000000000000012"));
        // spooled segments are not fetched again
        fetched.lock().unwrap().clear();
        fill(&spool, &names, 2, &fetch);
        assert!(!fetched
            .lock()
            .unwrap()
            .contains(&"000000010000000000000011".to_string()));
        // taken only whole (the recorded segment size): moved into place, gone from the spool
        let destination = tmp.path().join("RECOVERYXLOG");
        let segment = "000000010000000000000011";
        spool.set_segment_size(1 << 20).unwrap();
        assert!(!spool.take(segment, &destination).unwrap());
        assert!(!spool.holds(segment), "a partial segment is dropped");
        spool.put(segment, &[7u8; 1 << 20]).unwrap();
        assert!(spool.take(segment, &destination).unwrap());
        assert_eq!(fs::read(&destination).unwrap(), vec![7u8; 1 << 20]);
        assert!(!spool
            .take("000000010000000000000011", &destination)
            .unwrap());
        // a failure stops the fill and is reported, not spooled
        let failing = |_: &str| -> Result<Option<Vec<u8>>, String> { Err("timeout".into()) };
        assert!(
            matches!(fill(&spool, &names[2..], 2, &failing), Filled::Failed(e) if e.contains("timeout"))
        );
        // what falls out of the window, and half-written files of a dead prefetcher, are removed
        let half = spool.path().join("000000010000000000000014.999.tmp");
        fs::write(&half, b"half").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
        File::options()
            .write(true)
            .open(&half)
            .unwrap()
            .set_modified(old)
            .unwrap();
        spool.set_position("000000010000000000000012").unwrap();
        assert_eq!(spool.position().unwrap(), "000000010000000000000012");
        assert!(spool.set_segment_size(1000).is_err());
        spool.set_segment_size(SEG16).unwrap();
        assert_eq!(spool.segment_size(), Some(SEG16));
        spool.set_segment_size(1 << 20).unwrap();
        spool.forget_outside(&window("000000010000000000000012", SEG16, 4));
        let left: Vec<String> = fs::read_dir(spool.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let mut left = left;
        left.sort();
        assert_eq!(left, ["position", "segment_size"]);
        // a directory others may read is not used
        let open = tmp.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(Spool::open(&open).is_err());
        // another cluster's spool at the same path is emptied
        let dir = tmp.path().join("again.wal-prefetch");
        let first = Spool::open_for(&dir, "7001").unwrap();
        first
            .put("000000010000000000000002", b"cluster 7001's")
            .unwrap();
        assert!(Spool::open_for(&dir, "7001")
            .unwrap()
            .holds("000000010000000000000002"));
        assert!(!Spool::open_for(&dir, "7002")
            .unwrap()
            .holds("000000010000000000000002"));
    }
}
