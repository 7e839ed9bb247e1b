//! WAL archived ahead of PostgreSQL. An archive module is called once per segment, and the
//! archiver waits for each call: one upload at a time, however fast the server writes WAL.
//! While PostgreSQL hands the module one segment, `AheadPusher` uploads the next ready ones
//! (those with a `.ready` file in `pg_wal/archive_status`) on threads of their own, so that
//! the module's call for them usually finds them already stored and returns at once.
//!
//! A segment counts as archived only when the archiver's own call for it returns true, and
//! that call returns true only for an upload that finished with the object stored (or already
//! there with the same content) under the settings in force at the call (`fingerprint`):
//! anything else is archived again by the call itself, exactly as without the pusher. The
//! threads do file and network I/O only, nothing of PostgreSQL's.

use crate::storage::PutOutcome;
use std::collections::HashMap;
use std::path::Path;
use std::thread::JoinHandle;

/// Archives one file: its name and the settings it was started under are the pusher's.
pub type Push = dyn Fn(&str) -> Result<PutOutcome, String> + Send + Sync;

type Outcome = Result<PutOutcome, String>;

/// Uploads of ready WAL files ahead of the archiver's calls.
#[derive(Default)]
pub struct AheadPusher {
    /// Uploads running, by file name, with the settings they run under.
    running: HashMap<String, (String, JoinHandle<Outcome>)>,
    /// Uploads finished and not yet asked for, by file name, with their settings.
    finished: HashMap<String, (String, Outcome)>,
}

impl AheadPusher {
    /// The outcome of an upload of `name` started under `fingerprint`, waiting for it when it
    /// runs; `None` when there was none (or under other settings: then it is forgotten).
    pub fn take(&mut self, name: &str, fingerprint: &str) -> Option<Outcome> {
        if let Some((under, handle)) = self.running.remove(name) {
            let outcome = handle
                .join()
                .unwrap_or_else(|_| Err("an upload ahead panicked".into()));
            self.finished.insert(name.to_string(), (under, outcome));
        }
        let (under, outcome) = self.finished.remove(name)?;
        (under == fingerprint).then_some(outcome)
    }

    /// Starts uploads of the ready files after `current` (in name order, which is WAL order),
    /// so that at most `parallelism` run; forgets finished uploads of files no longer ready
    /// (archived by a call that did not wait for them, or under settings since changed).
    pub fn start_ahead(
        &mut self,
        current: &str,
        ready: &[String],
        parallelism: usize,
        fingerprint: &str,
        push: &std::sync::Arc<Push>,
    ) {
        self.collect_finished();
        self.finished
            .retain(|name, (under, _)| under == fingerprint && ready.contains(name));
        for name in ready.iter().filter(|n| n.as_str() > current) {
            if self.running.len() >= parallelism {
                break;
            }
            if self.running.contains_key(name) || self.finished.contains_key(name) {
                continue;
            }
            let push = std::sync::Arc::clone(push);
            let file = name.clone();
            let spawned = spawn_without_signals(move || push(&file));
            match spawned {
                Ok(handle) => {
                    self.running
                        .insert(name.clone(), (fingerprint.to_string(), handle));
                }
                Err(_) => break, // no thread: the archiver's own calls do the work
            }
        }
    }

    /// How many uploads run.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    fn collect_finished(&mut self) {
        let done: Vec<String> = self
            .running
            .iter()
            .filter(|(_, (_, h))| h.is_finished())
            .map(|(n, _)| n.clone())
            .collect();
        for name in done {
            if let Some((under, handle)) = self.running.remove(&name) {
                let outcome = handle
                    .join()
                    .unwrap_or_else(|_| Err("an upload ahead panicked".into()));
                self.finished.insert(name, (under, outcome));
            }
        }
    }
}

/// A thread with every signal blocked (`crate::threads`).
fn spawn_without_signals(
    f: impl FnOnce() -> Outcome + Send + 'static,
) -> std::io::Result<JoinHandle<Outcome>> {
    crate::threads::with_signals_blocked(|| {
        std::thread::Builder::new()
            .name("wal ahead".into())
            .spawn(f)
    })
}

/// The WAL files waiting for the archiver, in order: names of `<file>.ready` in
/// `archive_status` (the directory `pg_wal/archive_status`).
pub fn ready_files(archive_status: &Path) -> Vec<String> {
    let mut ready: Vec<String> = std::fs::read_dir(archive_status)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".ready")
                        .filter(|n| crate::wal::is_wal_file_name(n))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    ready.sort();
    ready
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn names(range: std::ops::Range<u32>) -> Vec<String> {
        range.map(|i| format!("0000000100000000{i:08X}")).collect()
    }

    #[test]
    fn uploads_run_ahead_at_most_parallelism_and_count_only_under_their_settings() {
        let pushed = Arc::new(Mutex::new(Vec::<String>::new()));
        let log = Arc::clone(&pushed);
        let push: Arc<Push> = Arc::new(move |name: &str| {
            log.lock().unwrap().push(name.to_string());
            if name.ends_with('6') {
                Err("the bucket said no".into())
            } else {
                Ok(PutOutcome::Stored)
            }
        });
        let ready = names(1..10);
        let mut pusher = AheadPusher::default();
        pusher.start_ahead(&ready[0], &ready, 3, "A", &push);
        assert!(pusher.running() <= 3);
        // the archiver's call for the current file finds nothing: it archives it itself
        assert!(pusher.take(&ready[0], "A").is_none());
        // the next ones were started ahead, in order, and their outcomes are waited for
        assert_eq!(pusher.take(&ready[1], "A"), Some(Ok(PutOutcome::Stored)));
        assert_eq!(pusher.take(&ready[2], "A"), Some(Ok(PutOutcome::Stored)));
        pusher.start_ahead(&ready[3], &ready[3..], 3, "A", &push);
        assert_eq!(pusher.take(&ready[4], "A"), Some(Ok(PutOutcome::Stored)));
        // a failed upload ahead is reported as failed: the call archives the file itself
        assert!(matches!(pusher.take(&ready[5], "A"), Some(Err(_))));
        let mut started = pushed.lock().unwrap().clone();
        started.sort();
        started.dedup();
        assert_eq!(
            started.len(),
            pushed.lock().unwrap().len(),
            "each file pushed once"
        );
        assert!(
            !started.contains(&ready[0]),
            "the current file is the archiver's own"
        );
        // under other settings (archive location or key changed), an upload does not count
        pusher.start_ahead(&ready[6], &ready[6..], 3, "A", &push);
        assert_eq!(pusher.take(&ready[7], "B"), None);
        // finished uploads of files no longer ready are forgotten
        pusher.start_ahead(&ready[8], &ready[8..], 3, "B", &push);
        assert!(pusher.finished.keys().all(|n| ready[8..].contains(n)));
    }

    #[test]
    fn ready_files_are_wal_files_with_a_ready_flag_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "000000010000000000000003.ready",
            "000000010000000000000002.ready",
            "000000010000000000000001.done",
            "00000002.history.ready",
            "junk.ready",
        ] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        assert_eq!(
            ready_files(dir.path()),
            [
                "000000010000000000000002",
                "000000010000000000000003",
                "00000002.history"
            ]
        );
    }
}
