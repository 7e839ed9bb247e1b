//! The backup_label that pg_backup_stop returns: where recovery of the backup starts.

use crate::lsn::Lsn;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupLabel {
    pub start_lsn: Lsn,
    pub start_wal_file: String,
    pub checkpoint_lsn: Lsn,
    pub timeline: u32,
}

/// Parses the fields recovery planning needs; an error names the missing one.
pub fn parse_backup_label(text: &str) -> Result<BackupLabel, String> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).map(str::trim))
            .ok_or(format!(
                "backup_label has no \"{}\" line",
                key.trim_end_matches(':')
            ))
    };
    // START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
    let start = field("START WAL LOCATION:")?;
    let (lsn, file) = start
        .split_once(" (file ")
        .ok_or("malformed START WAL LOCATION in backup_label")?;
    Ok(BackupLabel {
        start_lsn: Lsn::parse(lsn).ok_or("malformed start LSN in backup_label")?,
        start_wal_file: file.trim_end_matches(')').to_string(),
        checkpoint_lsn: Lsn::parse(field("CHECKPOINT LOCATION:")?)
            .ok_or("malformed CHECKPOINT LOCATION in backup_label")?,
        timeline: field("START TIMELINE:")?
            .parse()
            .map_err(|_| "malformed START TIMELINE in backup_label".to_string())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_label() {
        let text = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                    CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
                    START TIME: 2026-11-24 10:00:00 UTC\nLABEL: admin_toolkit 7\nSTART TIMELINE: 1\n";
        let label = parse_backup_label(text).unwrap();
        assert_eq!(label.start_lsn, Lsn(0x2000028));
        assert_eq!(label.start_wal_file, "000000010000000000000002");
        assert_eq!(label.checkpoint_lsn, Lsn(0x2000060));
        assert_eq!(label.timeline, 1);
        let err = parse_backup_label("LABEL: x\n").unwrap_err();
        assert!(err.contains("START WAL LOCATION"), "{err}");
    }
}
