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
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::lsn::{parse_segment_file_name, segment_file_name};

/// Segments kept fetched ahead by default (`wal-get --prefetch`).
pub const DEFAULT_PREFETCH: u8 = 8;
/// The last segment asked for, written by each `wal-get`.
const POSITION_FILE: &str = "position";
/// The size of the segments, learnt from the first one fetched.
const SEGMENT_SIZE_FILE: &str = "segment_size";
/// The system identifier of the cluster whose WAL the spool holds.
const CLUSTER_FILE: &str = "cluster";
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

/// A spool directory (mode 0700).
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// The spool of cluster `system_identifier`: one left by another cluster's recovery into
    /// the same path (a data directory restored again from another backup) is emptied first,
    /// since its segments, under the same names, are another cluster's WAL.
    pub fn open_for(dir: &Path, system_identifier: &str) -> Result<Spool, String> {
        let spool = Spool::open(dir)?;
        let cluster = dir.join(CLUSTER_FILE);
        if fs::read_to_string(&cluster).ok().as_deref() != Some(system_identifier) {
            spool.remove();
            let spool = Spool::open(dir)?;
            fs::write(&cluster, system_identifier)
                .map_err(|e| format!("cannot write \"{}\": {e}", cluster.display()))?;
            return Ok(spool);
        }
        Ok(spool)
    }

    pub fn open(dir: &Path) -> Result<Spool, String> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create the spool \"{}\": {e}", dir.display()))?;
        let meta = fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
        if !meta.is_dir() || meta.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "\"{}\" is not a private directory: not used as a spool",
                dir.display()
            ));
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Moves segment `name` from the spool to `destination`; false when it is not there.
    pub fn take(&self, name: &str, destination: &Path) -> Result<bool, String> {
        let held = self.dir.join(name);
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

    /// Stores a fetched segment whole: written under a temporary name, then renamed.
    pub fn put(&self, name: &str, bytes: &[u8]) -> Result<(), String> {
        let temporary = self.dir.join(format!("{name}.tmp"));
        File::create(&temporary)
            .and_then(|mut f| f.write_all(bytes))
            .and_then(|_| fs::rename(&temporary, self.dir.join(name)))
            .map_err(|e| {
                let _ = fs::remove_file(&temporary);
                format!("cannot spool {name}: {e}")
            })
    }

    /// Records the segment recovery asked for last.
    pub fn set_position(&self, name: &str) -> Result<(), String> {
        let temporary = self.dir.join(format!("{POSITION_FILE}.tmp"));
        fs::write(&temporary, name)
            .and_then(|_| fs::rename(&temporary, self.dir.join(POSITION_FILE)))
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
        let temporary = self.dir.join(format!("{SEGMENT_SIZE_FILE}.tmp"));
        fs::write(&temporary, bytes.to_string())
            .and_then(|_| fs::rename(&temporary, self.dir.join(SEGMENT_SIZE_FILE)))
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
            let segment = name.strip_suffix(".tmp").unwrap_or(&name);
            let is_spooled = segment.len() == 24 && segment.bytes().all(|b| b.is_ascii_hexdigit());
            if is_spooled && (name.ends_with(".tmp") || !keep.contains(&name)) {
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
        // taken: moved into place, gone from the spool
        let destination = tmp.path().join("RECOVERYXLOG");
        assert!(spool
            .take("000000010000000000000011", &destination)
            .unwrap());
        assert_eq!(fs::read(&destination).unwrap(), b"000000010000000000000011");
        assert!(!spool
            .take("000000010000000000000011", &destination)
            .unwrap());
        // a failure stops the fill and is reported, not spooled
        let failing = |_: &str| -> Result<Option<Vec<u8>>, String> { Err("timeout".into()) };
        assert!(
            matches!(fill(&spool, &names[2..], 2, &failing), Filled::Failed(e) if e.contains("timeout"))
        );
        // what falls out of the window, and half-written files, are removed
        fs::write(spool.path().join("000000010000000000000014.tmp"), b"half").unwrap();
        spool.set_position("000000010000000000000012").unwrap();
        assert_eq!(spool.position().unwrap(), "000000010000000000000012");
        assert_eq!(spool.segment_size(), None);
        assert!(spool.set_segment_size(1000).is_err());
        spool.set_segment_size(SEG16).unwrap();
        assert_eq!(spool.segment_size(), Some(SEG16));
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
