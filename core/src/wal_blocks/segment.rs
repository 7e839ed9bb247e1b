//! Walking the pages of one WAL segment (xlog_internal.h's page headers) and reassembling the
//! records on them. A record that began in the previous segment is that segment's business
//! (its continuation comes back as `head`); one that goes on into the next comes back as
//! `tail`, so that segments can be read apart and their edges joined.

use super::record::{decode, u32_at, Decoded};
use super::ChangedBlocks;

pub const PAGE_SIZE: usize = 8192;
const SHORT_PAGE_HEADER: usize = 24;
const LONG_PAGE_HEADER: usize = 40;
const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
const MAXALIGN: usize = 8;

/// What a segment leaves for its neighbours.
#[derive(Debug, Default)]
pub struct SegmentScan {
    /// The start of a record begun in the previous segment (at most `keep` bytes of it).
    pub head: Vec<u8>,
    /// The start of a record that goes on into the next segment (at most `keep` bytes).
    pub tail: Vec<u8>,
    /// The segment holds no valid WAL past some point (the server's end of WAL, or a recycled
    /// segment's old contents): nothing was cut off into a next segment.
    pub ended: bool,
}

struct Page {
    info: u16,
    rem_len: usize,
    data: usize,
}

/// The header of page `index`, or `None` where the page is not this segment's (recycled, or
/// never written).
fn page(bytes: &[u8], index: usize, segment_lsn: u64) -> Option<Page> {
    let start = index * PAGE_SIZE;
    let header = bytes.get(start..start + LONG_PAGE_HEADER)?;
    let info = u16::from_le_bytes([header[2], header[3]]);
    let address = u64::from_le_bytes(header[8..16].try_into().ok()?);
    if address != segment_lsn + start as u64 {
        return None;
    }
    let length = if info & XLP_LONG_HEADER != 0 {
        LONG_PAGE_HEADER
    } else {
        SHORT_PAGE_HEADER
    };
    Some(Page {
        info,
        rem_len: u32_at(header, 16)? as usize,
        data: start + length,
    })
}

/// Reads record bytes from `pos` on, across pages, until `want` bytes are in `out` (only the
/// first `keep` kept). Returns the position after them, or `None` when the segment ends
/// first.
fn gather(
    bytes: &[u8],
    segment_lsn: u64,
    mut pos: usize,
    want: usize,
    keep: usize,
    out: &mut Vec<u8>,
) -> Result<Option<usize>, String> {
    let mut left = want;
    loop {
        let page_end = (pos / PAGE_SIZE + 1) * PAGE_SIZE;
        let n = left.min(page_end - pos);
        let room = keep.saturating_sub(out.len()).min(n);
        out.extend_from_slice(&bytes[pos..pos + room]);
        left -= n;
        pos += n;
        if left == 0 {
            return Ok(Some(pos));
        }
        if pos >= bytes.len() {
            return Ok(None);
        }
        let next = page(bytes, pos / PAGE_SIZE, segment_lsn);
        let Some(next) = next.filter(|p| p.info & XLP_FIRST_IS_CONTRECORD != 0) else {
            return Err(format!(
                "WAL at {:X}: a record's continuation is missing",
                segment_lsn + pos as u64
            ));
        };
        if next.rem_len != left {
            return Err(format!(
                "WAL at {:X}: a record's continuation is missing",
                segment_lsn + pos as u64
            ));
        }
        pos = next.data;
    }
}

/// Scans segment `bytes` (starting at LSN `segment_lsn`) for records beginning before
/// `until`, adding what they change to `out`. `keep` bounds the bytes of `head` and `tail`.
pub fn scan_segment(
    bytes: &[u8],
    segment_lsn: u64,
    until: u64,
    keep: usize,
    out: &mut ChangedBlocks,
) -> Result<SegmentScan, String> {
    let mut scan = SegmentScan::default();
    let Some(first) = page(bytes, 0, segment_lsn) else {
        return Err(format!(
            "the WAL segment at {segment_lsn:X} does not start with its own page"
        ));
    };
    let mut pos = first.data;
    if first.info & XLP_FIRST_IS_CONTRECORD != 0 {
        match gather(bytes, segment_lsn, pos, first.rem_len, keep, &mut scan.head)? {
            Some(after) => pos = after.next_multiple_of(MAXALIGN),
            None => return Ok(scan), // a record longer than the segment
        }
    }
    let mut record = Vec::new();
    loop {
        if pos.is_multiple_of(PAGE_SIZE) {
            if pos >= bytes.len() {
                return Ok(scan);
            }
            match page(bytes, pos / PAGE_SIZE, segment_lsn) {
                Some(p) => pos = p.data,
                None => {
                    scan.ended = true;
                    return Ok(scan);
                }
            }
        }
        if segment_lsn + pos as u64 >= until {
            scan.ended = true;
            return Ok(scan);
        }
        let total = u32_at(bytes, pos).unwrap_or(0) as usize;
        if total == 0 {
            scan.ended = true; // the end of the WAL written so far
            return Ok(scan);
        }
        record.clear();
        match gather(bytes, segment_lsn, pos, total, usize::MAX, &mut record)? {
            Some(after) => {
                if decode(&record, out)? == Decoded::Switch {
                    scan.ended = true;
                    return Ok(scan);
                }
                pos = after.next_multiple_of(MAXALIGN);
            }
            None => {
                record.truncate(keep);
                scan.tail = record;
                return Ok(scan);
            }
        }
    }
}
