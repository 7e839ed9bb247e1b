//! Which backups and archived WAL files retention may delete.

use crate::lsn::parse_segment_file_name;
use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    pub backup_id: i64,
    pub full: bool,
    /// End time, for "newest".
    pub end_time: i64,
    /// Past its schedule's retention_days.
    pub expired: bool,
    /// Backups whose files this one references (its incremental chain).
    pub depends_on: Vec<i64>,
}

/// The backups to delete: expired ones, except the newest full backup and every backup a
/// retained backup depends on.
pub fn backups_to_delete(backups: &[BackupInfo]) -> Vec<i64> {
    let newest_full = backups
        .iter()
        .filter(|b| b.full)
        .max_by_key(|b| (b.end_time, b.backup_id))
        .map(|b| b.backup_id);
    let mut retained: HashSet<i64> = backups
        .iter()
        .filter(|b| !b.expired || Some(b.backup_id) == newest_full)
        .map(|b| b.backup_id)
        .collect();
    // depends_on lists the whole chain, so one pass closes it.
    let needed: Vec<i64> = backups
        .iter()
        .filter(|b| retained.contains(&b.backup_id))
        .flat_map(|b| b.depends_on.iter().copied())
        .collect();
    retained.extend(needed);
    let mut delete: Vec<i64> = backups
        .iter()
        .map(|b| b.backup_id)
        .filter(|id| !retained.contains(id))
        .collect();
    delete.sort_unstable();
    delete
}

/// The segment number an archived WAL file name belongs to (segments, partial segments and
/// backup history files); None for timeline history files, which are always kept.
fn wal_file_segment(name: &str, segment_size: u64) -> Option<u64> {
    let base = name.get(..24)?;
    let rest = &name[24..];
    let known = rest.is_empty()
        || rest == ".partial"
        || (rest.starts_with('.') && rest.ends_with(".backup"));
    known
        .then(|| parse_segment_file_name(base, segment_size).map(|(_, seg)| seg))
        .flatten()
}

/// The archived WAL files (by name, with their archive time in seconds) that no retained
/// backup needs: before the oldest retained backup's start segment, and archived before
/// `keep_after` when a WAL retention period applies. Nothing when no backup is retained.
pub fn wal_to_delete(
    files: &[(String, i64)],
    oldest_needed_segment: Option<u64>,
    keep_after: Option<i64>,
    segment_size: u64,
) -> Vec<String> {
    let Some(oldest) = oldest_needed_segment else {
        return Vec::new();
    };
    let mut delete: Vec<String> = files
        .iter()
        .filter(|(name, archived)| {
            wal_file_segment(name, segment_size).is_some_and(|seg| seg < oldest)
                && keep_after.is_none_or(|t| *archived < t)
        })
        .map(|(name, _)| name.clone())
        .collect();
    delete.sort();
    delete
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(id: i64, full: bool, end: i64, expired: bool, deps: &[i64]) -> BackupInfo {
        BackupInfo {
            backup_id: id,
            full,
            end_time: end,
            expired,
            depends_on: deps.to_vec(),
        }
    }

    #[test]
    fn expired_backups_go_but_not_the_newest_full_nor_a_needed_base() {
        // full 1 (expired), incr 2 on 1 (expired), full 3 (expired, newest full), incr 4 on 3.
        let list = [
            b(1, true, 10, true, &[]),
            b(2, false, 20, true, &[1]),
            b(3, true, 30, true, &[]),
            b(4, false, 40, false, &[3]),
        ];
        assert_eq!(backups_to_delete(&list), vec![1, 2]);
        // a retained incremental keeps its whole chain
        let chain = [
            b(1, true, 10, true, &[]),
            b(2, false, 20, true, &[1]),
            b(3, false, 30, false, &[2, 1]),
        ];
        assert_eq!(backups_to_delete(&chain), Vec::<i64>::new());
        // everything expired: the newest full stays
        let all = [b(5, true, 10, true, &[]), b(6, true, 20, true, &[])];
        assert_eq!(backups_to_delete(&all), vec![5]);
        assert!(backups_to_delete(&[]).is_empty());
    }

    #[test]
    fn wal_before_the_oldest_backup_goes() {
        let files: Vec<(String, i64)> = [
            ("000000010000000000000001", 100),
            ("000000010000000000000002", 100),
            ("000000010000000000000002.00000028.backup", 100),
            ("000000010000000000000003", 100),
            ("00000002.history", 100),
            ("000000010000000000000002.partial", 100),
            ("000000020000000000000001", 500),
        ]
        .iter()
        .map(|(n, t)| (n.to_string(), *t))
        .collect();
        let seg = crate::lsn::DEFAULT_SEGMENT_SIZE;
        assert_eq!(
            wal_to_delete(&files, Some(3), None, seg),
            vec![
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000002.00000028.backup",
                "000000010000000000000002.partial",
                "000000020000000000000001",
            ]
        );
        assert_eq!(
            wal_to_delete(&files, Some(3), Some(200), seg).len(),
            4,
            "a WAL retention period keeps recent files"
        );
        assert!(wal_to_delete(&files, None, None, seg).is_empty());
    }
}
