//! WAL positions and segment names: LSN parsing and formatting, which segment holds an LSN,
//! segment file names and back, timeline history files.

use std::fmt;

/// PostgreSQL's default WAL segment size; the server reports its own (`wal_segment_size`).
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// A WAL position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// `X/Y` in hex, as PostgreSQL prints pg_lsn.
    pub fn parse(text: &str) -> Option<Lsn> {
        let (hi, lo) = text.trim().split_once('/')?;
        let hex = |s: &str| {
            (!s.is_empty() && s.len() <= 8)
                .then(|| u32::from_str_radix(s, 16).ok())
                .flatten()
        };
        Some(Lsn((u64::from(hex(hi)?) << 32) | u64::from(hex(lo)?)))
    }

    /// The number of the segment holding this position.
    pub fn segment(self, segment_size: u64) -> u64 {
        self.0 / segment_size
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

fn segments_per_id(segment_size: u64) -> u64 {
    0x1_0000_0000 / segment_size
}

/// The file name of segment `segment` on timeline `timeline`.
pub fn segment_file_name(timeline: u32, segment: u64, segment_size: u64) -> String {
    let per = segments_per_id(segment_size);
    format!("{timeline:08X}{:08X}{:08X}", segment / per, segment % per)
}

/// Timeline and segment number of a segment file name (24 upper-case hex digits).
pub fn parse_segment_file_name(name: &str, segment_size: u64) -> Option<(u32, u64)> {
    if name.len() != 24
        || !name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    {
        return None;
    }
    let part = |i: usize| u32::from_str_radix(&name[i..i + 8], 16).ok();
    let (timeline, log, seg) = (part(0)?, u64::from(part(8)?), u64::from(part(16)?));
    let per = segments_per_id(segment_size);
    (seg < per).then_some((timeline, log * per + seg))
}

/// One line of a timeline history file: `timeline` ended (switched to a child) at `switch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineSwitch {
    pub timeline: u32,
    pub switch: Lsn,
}

/// Parses a `<tli>.history` file: the ancestors of that timeline and where each ended.
pub fn parse_history(contents: &str) -> Result<Vec<TimelineSwitch>, String> {
    let mut switches = Vec::new();
    for line in contents.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(tli), Some(lsn)) = (fields.next(), fields.next()) else {
            return Err(format!("malformed timeline history line \"{line}\""));
        };
        let timeline = tli
            .parse::<u32>()
            .map_err(|_| format!("malformed timeline id in \"{line}\""))?;
        let switch = Lsn::parse(lsn).ok_or(format!("malformed switch point in \"{line}\""))?;
        if switches
            .last()
            .is_some_and(|s: &TimelineSwitch| s.timeline >= timeline || s.switch > switch)
        {
            return Err(format!("timeline history is not in order at \"{line}\""));
        }
        switches.push(TimelineSwitch { timeline, switch });
    }
    Ok(switches)
}

/// The timeline in effect at segment `segment` when recovering onto `target_timeline`, whose
/// history is `history`: the first ancestor whose switch point lies after the segment's start.
/// A segment containing a switch point is read from the child timeline (as PostgreSQL does).
pub fn timeline_of_segment(
    segment: u64,
    target_timeline: u32,
    history: &[TimelineSwitch],
    segment_size: u64,
) -> u32 {
    history
        .iter()
        .find(|s| s.switch.segment(segment_size) > segment)
        .map_or(target_timeline, |s| s.timeline)
}

/// Whether `timeline` is `target_timeline` or one of its ancestors per `history`.
pub fn is_ancestor(timeline: u32, target_timeline: u32, history: &[TimelineSwitch]) -> bool {
    timeline == target_timeline || history.iter().any(|s| s.timeline == timeline)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = DEFAULT_SEGMENT_SIZE;

    #[test]
    fn lsn_round_trip_and_segments() {
        let lsn = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(Lsn::parse("0/0"), Some(Lsn(0)));
        for bad in ["", "1", "x/1", "1/", "123456789/0", "1/2/3"] {
            assert_eq!(Lsn::parse(bad), None, "{bad}");
        }
        let seg = lsn.segment(SEG);
        assert_eq!(segment_file_name(1, seg, SEG), "0000000100000016000000B3");
        assert_eq!(
            parse_segment_file_name("0000000100000016000000B3", SEG),
            Some((1, seg))
        );
        assert_eq!(
            parse_segment_file_name("0000000100000016000001B3", SEG),
            None
        );
        assert_eq!(
            parse_segment_file_name("0000000100000016000000b3", SEG),
            None
        );
        // 64 MB segments: 64 per log id
        assert_eq!(
            segment_file_name(2, 65, 64 << 20),
            "000000020000000100000001"
        );
    }

    #[test]
    fn history_and_timeline_per_segment() {
        let history = parse_history(
            "1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tbefore 2026-01-01\n",
        )
        .unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(timeline_of_segment(2, 3, &history, SEG), 1);
        // the segment holding the switch point comes from the child
        assert_eq!(timeline_of_segment(3, 3, &history, SEG), 2);
        assert_eq!(timeline_of_segment(4, 3, &history, SEG), 2);
        assert_eq!(timeline_of_segment(5, 3, &history, SEG), 3);
        assert!(is_ancestor(1, 3, &history) && is_ancestor(3, 3, &history));
        assert!(!is_ancestor(4, 3, &history));
        assert!(parse_history("2\t0/1\n1\t0/2\n").is_err());
        assert!(parse_history("x 0/1").is_err());
    }
}
