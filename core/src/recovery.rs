//! Recovery planning from the real archive: which timeline recovery follows, and the names of
//! every WAL segment it needs from a backup's start to the target, checked against what the
//! archive holds. Shared by plan_recovery/validate_recovery_point and the restore tool.

use crate::crypto::KeyDir;
use crate::lsn::{
    is_ancestor, parse_history, parse_segment_file_name, segment_file_name, timeline_of_segment,
    Lsn, TimelineSwitch,
};
use crate::storage::Storage;
use crate::wal::restore_wal;
use std::collections::{BTreeMap, HashMap};

/// What the archive holds: segments by (timeline, number) with their archive times in
/// microseconds since the epoch, and the timeline history files.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    pub segments: BTreeMap<(u32, u64), i64>,
    pub histories: HashMap<u32, Vec<TimelineSwitch>>,
}

impl Archive {
    /// Reads the archive of cluster `system_identifier` written by the archive module
    /// (`<name>.zst` objects), local or not; its history files must be sealed when
    /// `require_sealed`.
    pub fn read(
        storage: &dyn Storage,
        system_identifier: &str,
        segment_size: u64,
        keys: &KeyDir,
        require_sealed: bool,
    ) -> Result<Archive, String> {
        let objects = storage
            .list("")
            .map_err(|e| format!("cannot read the WAL archive: {e}"))?;
        let mut archive = Archive::default();
        for object in objects {
            let Some(base) = object.name.strip_suffix(".zst") else {
                continue;
            };
            if let Some((tli, seg)) = parse_segment_file_name(base, segment_size) {
                archive.segments.insert((tli, seg), object.modified_micros);
            } else if let Some(tli) = base
                .strip_suffix(".history")
                .and_then(|t| u32::from_str_radix(t, 16).ok())
            {
                let text =
                    restore_wal(storage, Some(system_identifier), base, keys, require_sealed)
                        .map_err(|e| e.to_string())?;
                archive
                    .histories
                    .insert(tli, parse_history(&String::from_utf8_lossy(&text))?);
            }
        }
        Ok(archive)
    }

    /// The timeline recovery follows from a backup on `timeline` (recovery_target_timeline =
    /// 'latest'): the newest one descending from it, with its history.
    pub fn target_timeline(&self, timeline: u32) -> (u32, Vec<TimelineSwitch>) {
        let mut candidates: Vec<u32> = self
            .histories
            .iter()
            .filter(|(tli, h)| **tli > timeline && is_ancestor(timeline, **tli, h))
            .map(|(tli, _)| *tli)
            .collect();
        candidates.sort_unstable();
        match candidates.last() {
            Some(tli) => (*tli, self.histories[tli].clone()),
            None => (timeline, Vec::new()),
        }
    }
}

/// Where recovery stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A time in microseconds since the epoch.
    Time(i64),
    Lsn(Lsn),
    /// The end of the archive (a named restore point whose position is not known).
    EndOfArchive,
}

/// What a backup contributes to planning.
#[derive(Debug, Clone, Copy)]
pub struct BackupPosition {
    pub start: Lsn,
    pub end: Lsn,
    pub timeline: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub timeline: u32,
    pub segments: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// A needed segment is not in the archive, though later ones are.
    Missing(String),
    /// The archive ends before the target (or before the backup's end).
    AfterArchive { last: Option<String> },
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanError::Missing(name) => write!(f, "WAL segment {name} is missing from the archive"),
            PlanError::AfterArchive { last: Some(last) } => {
                write!(
                    f,
                    "the target is after the last archived WAL (last archived segment: {last})"
                )
            }
            PlanError::AfterArchive { last: None } => {
                write!(f, "the archive holds no WAL for this backup")
            }
        }
    }
}

/// The segments recovery of `backup` to `target` reads, in order: from the backup's start
/// segment through its end segment, and on to the segment that covers the target (for a time,
/// the first segment archived at or after it).
pub fn plan_segments(
    archive: &Archive,
    backup: BackupPosition,
    target: Target,
    segment_size: u64,
) -> Result<Plan, PlanError> {
    let (timeline, history) = archive.target_timeline(backup.timeline);
    let first = backup.start.segment(segment_size);
    // The backup ends in the segment holding the byte before its end LSN.
    let end = Lsn(backup.end.0.saturating_sub(1)).segment(segment_size);
    let last_needed = match target {
        Target::Lsn(lsn) => Some(lsn.segment(segment_size).max(end)),
        _ => None,
    };
    let highest = archive.segments.keys().map(|(_, seg)| *seg).max();
    let name_of = |seg: u64| {
        segment_file_name(
            timeline_of_segment(seg, timeline, &history, segment_size),
            seg,
            segment_size,
        )
    };
    let mut segments = Vec::new();
    let mut seg = first;
    loop {
        let tli = timeline_of_segment(seg, timeline, &history, segment_size);
        let Some(archived_at) = archive.segments.get(&(tli, seg)) else {
            let done = matches!(target, Target::EndOfArchive)
                && seg > end
                && highest.is_none_or(|h| seg > h);
            if done {
                break;
            }
            return Err(if highest.is_some_and(|h| h > seg) {
                PlanError::Missing(name_of(seg))
            } else {
                PlanError::AfterArchive {
                    last: segments.last().cloned(),
                }
            });
        };
        segments.push(name_of(seg));
        let covers = match target {
            Target::Time(t) => *archived_at >= t,
            Target::Lsn(_) => Some(seg) >= last_needed,
            Target::EndOfArchive => false,
        };
        if seg >= end && covers {
            break;
        }
        seg += 1;
    }
    Ok(Plan { timeline, segments })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsn::DEFAULT_SEGMENT_SIZE as SEG;

    fn archive(segs: &[(u32, u64, i64)]) -> Archive {
        Archive {
            segments: segs.iter().map(|(t, s, at)| ((*t, *s), *at)).collect(),
            histories: HashMap::new(),
        }
    }

    fn backup(start_seg: u64, end_seg: u64) -> BackupPosition {
        BackupPosition {
            start: Lsn(start_seg * SEG + 40),
            end: Lsn(end_seg * SEG + 100),
            timeline: 1,
        }
    }

    #[test]
    fn time_targets_stop_at_the_first_segment_archived_after_them() {
        let a = archive(&[(1, 2, 100), (1, 3, 200), (1, 4, 300), (1, 5, 400)]);
        let plan = plan_segments(&a, backup(2, 3), Target::Time(250), SEG).unwrap();
        assert_eq!(
            plan.segments,
            [
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000000000004"
            ]
        );
        // never before the backup's end, even for an earlier time
        let plan = plan_segments(&a, backup(2, 3), Target::Time(50), SEG).unwrap();
        assert_eq!(plan.segments.len(), 2);
        assert_eq!(
            plan_segments(&a, backup(2, 3), Target::Time(500), SEG).unwrap_err(),
            PlanError::AfterArchive {
                last: Some("000000010000000000000005".into())
            }
        );
        let gap = archive(&[(1, 2, 100), (1, 4, 300)]);
        assert_eq!(
            plan_segments(&gap, backup(2, 2), Target::Time(250), SEG).unwrap_err(),
            PlanError::Missing("000000010000000000000003".into())
        );
    }

    #[test]
    fn lsn_and_end_of_archive_targets() {
        let a = archive(&[(1, 2, 100), (1, 3, 200), (1, 4, 300)]);
        let plan = plan_segments(&a, backup(2, 2), Target::Lsn(Lsn(3 * SEG + 5)), SEG).unwrap();
        assert_eq!(plan.segments.len(), 2);
        let plan = plan_segments(&a, backup(2, 2), Target::EndOfArchive, SEG).unwrap();
        assert_eq!(plan.segments.len(), 3);
        assert!(plan_segments(&a, backup(2, 2), Target::Lsn(Lsn(9 * SEG)), SEG).is_err());
    }

    #[test]
    fn follows_the_latest_timeline_through_its_history() {
        let mut a = archive(&[
            (1, 2, 100),
            (1, 3, 200),
            (2, 4, 300),
            (2, 5, 400),
            (3, 9, 500),
        ]);
        a.histories
            .insert(2, parse_history("1\t0/4000100\tx\n").unwrap());
        // the newest descendant wins, as with recovery_target_timeline = 'latest'
        a.histories
            .insert(3, parse_history("1\t0/2000000\tx\n").unwrap());
        let (tli, _) = a.target_timeline(1);
        assert_eq!(tli, 3);
        a.histories.remove(&3);
        let plan = plan_segments(&a, backup(2, 3), Target::Time(350), SEG).unwrap();
        assert_eq!(plan.timeline, 2);
        assert_eq!(
            plan.segments,
            [
                "000000010000000000000002",
                "000000010000000000000003",
                "000000020000000000000004",
                "000000020000000000000005"
            ]
        );
    }
}
