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
const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
/// The WAL page size this reader knows (`--with-wal-blocksize`'s default), checked against
/// each segment's long header.
const WAL_PAGE_SIZE: u32 = 8192;
const MAXALIGN: usize = 8;

/// What a segment leaves for its neighbours, and what ties it to them.
#[derive(Debug, Default)]
pub struct SegmentScan {
    /// The start of a record begun in the previous segment (at most `keep` bytes of it).
    pub head: Vec<u8>,
    /// The start of a record that goes on into the next segment (at most `keep` bytes).
    pub tail: Vec<u8>,
    /// The cluster whose WAL this is (the first page's long header).
    pub system_identifier: u64,
    /// The `xl_prev` of the first record that starts in the segment: the LSN of the last one
    /// that started in the previous segment, which chains the two.
    pub first_prev: Option<u64>,
    /// The LSN of the last record that starts in the segment.
    pub last_start: Option<u64>,
    /// The LSN of the last record that starts and ends in the segment (not the tail's).
    pub last_complete: Option<u64>,
    /// The first page says the previous segment's unfinished record was abandoned (crash
    /// recovery ended inside it, PostgreSQL 15+): that tail is no record, and the first record
    /// here names the last complete one before it.
    pub overwrites_contrecord: bool,
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

/// Whether a continuation of `rem_len` bytes (`head`) ends an XLOG_SWITCH record begun in the
/// last bytes of the previous segment: such a record (24 bytes, no data) may start 8 or 16
/// bytes before a segment's end, and the rest of the next segment is then unused.
fn ends_a_switch(head: &[u8], rem_len: usize) -> bool {
    let Some(at) = rem_len.checked_sub(8).filter(|_| rem_len <= 16) else {
        return false;
    };
    // The continuation holds the header's last `rem_len` bytes: xl_info, xl_rmid at 16, 17.
    let info = head.get(at).copied().unwrap_or(0xFF);
    let rmid = head.get(at + 1).copied().unwrap_or(0xFF);
    rmid == 0 && info & 0xF0 == 0x40
}

/// The first page's long header: the cluster's system identifier, once the segment and page
/// sizes are the ones this reader knows.
fn long_header(bytes: &[u8]) -> Result<u64, String> {
    let header = bytes
        .get(..LONG_PAGE_HEADER)
        .ok_or("a WAL segment is too short")?;
    let field = |at: usize| u32_at(header, at).unwrap_or(0);
    if field(36) != WAL_PAGE_SIZE || field(32) as usize != bytes.len() {
        return Err(format!(
            "a WAL segment of {} bytes in pages of {} bytes, not {} in pages of {WAL_PAGE_SIZE}",
            field(32),
            field(36),
            bytes.len()
        ));
    }
    Ok(u64::from_le_bytes(
        header[24..32].try_into().unwrap_or_default(),
    ))
}

/// Scans segment `bytes` (starting at LSN `segment_lsn`) for records beginning before
/// `until`, adding what they change to `out`. `keep` bounds the bytes of `head` and `tail`.
/// The segment must hold valid WAL up to its end, a switch, or `until`: one that ends sooner
/// (a page of another segment, never-written zeros) is an error, never a quiet stop.
pub fn scan_segment(
    bytes: &[u8],
    segment_lsn: u64,
    until: u64,
    keep: usize,
    out: &mut ChangedBlocks,
) -> Result<SegmentScan, String> {
    let mut scan = SegmentScan::default();
    let Some(first) = page(bytes, 0, segment_lsn).filter(|p| p.info & XLP_LONG_HEADER != 0) else {
        return Err(format!(
            "the WAL segment at {segment_lsn:X} does not start with its own page"
        ));
    };
    scan.system_identifier = long_header(bytes)?;
    let ends_early = |pos: usize| {
        format!(
            "the WAL ends at {:X}, before the end of its segment",
            segment_lsn + pos as u64
        )
    };
    scan.overwrites_contrecord = first.info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0;
    let mut pos = first.data;
    if first.info & XLP_FIRST_IS_CONTRECORD != 0 {
        match gather(bytes, segment_lsn, pos, first.rem_len, keep, &mut scan.head)? {
            Some(after) => pos = after.next_multiple_of(MAXALIGN),
            None => return Ok(scan), // a record longer than the segment
        }
        if ends_a_switch(&scan.head, first.rem_len) {
            return Ok(scan); // the rest of the segment is the switch's
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
                None => return Err(ends_early(pos)),
            }
        }
        let lsn = segment_lsn + pos as u64;
        if lsn >= until {
            return Ok(scan);
        }
        let total = u32_at(bytes, pos).unwrap_or(0) as usize;
        if total == 0 {
            return Err(ends_early(pos));
        }
        scan.last_start = Some(lsn);
        record.clear();
        let gathered = gather(bytes, segment_lsn, pos, total, usize::MAX, &mut record)?;
        if scan.first_prev.is_none() {
            scan.first_prev = record
                .get(8..16)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes);
        }
        match gathered {
            Some(after) => {
                scan.last_complete = Some(lsn);
                if decode(&record, out)? == Decoded::Switch {
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
