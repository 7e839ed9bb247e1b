//! One WAL record's block references and the relation-level events that block references do
//! not show (a relation created or truncated, a database or tablespace created or dropped).
//! The record layout is PostgreSQL's `XLogRecord` and its block headers (xlogrecord.h), the
//! same from 15 to 18.

use super::{ChangedBlocks, RelFile};

pub const RECORD_HEADER: usize = 24;
const MAX_BLOCK_ID: u8 = 32;
const BLOCK_ID_DATA_SHORT: u8 = 255;
const BLOCK_ID_DATA_LONG: u8 = 254;
const BLOCK_ID_ORIGIN: u8 = 253;
const BLOCK_ID_TOPLEVEL_XID: u8 = 252;
const BKPBLOCK_FORK_MASK: u8 = 0x0F;
const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_SAME_REL: u8 = 0x80;
const BKPIMAGE_HAS_HOLE: u8 = 0x01;
/// pglz, lz4 and zstd (15+): a compressed image with a hole says the hole's length.
const BKPIMAGE_COMPRESSED: u8 = 0x04 | 0x08 | 0x10;

const RM_XLOG_ID: u8 = 0;
const RM_XACT_ID: u8 = 1;
const RM_SMGR_ID: u8 = 2;
const RM_DBASE_ID: u8 = 4;
const RM_TBLSPC_ID: u8 = 5;
const XLOG_SWITCH: u8 = 0x40;
const XLOG_SMGR_CREATE: u8 = 0x10;
const XLOG_SMGR_TRUNCATE: u8 = 0x20;
const XLOG_XACT_OPMASK: u8 = 0x70;
const XLOG_XACT_COMMIT: u8 = 0x00;
const XLOG_XACT_ABORT: u8 = 0x20;
const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;
const XLOG_XACT_HAS_INFO: u8 = 0x80;
const XACT_XINFO_HAS_DBINFO: u32 = 1;
const XACT_XINFO_HAS_SUBXACTS: u32 = 1 << 1;
const XACT_XINFO_HAS_RELFILENODES: u32 = 1 << 2;

/// What a record means for the scan that found it.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Record,
    /// `pg_switch_wal()`: the rest of the segment holds no records.
    Switch,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn rel_at(b: &[u8], at: usize) -> Option<RelFile> {
    Some(RelFile {
        tablespace: u32_at(b, at)?,
        database: u32_at(b, at + 4)?,
        relation: u32_at(b, at + 8)?,
    })
}

/// Reads a record's headers, within both its stated length and the bytes at hand.
struct Cursor<'a> {
    rec: &'a [u8],
    at: usize,
    remaining: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<usize, String> {
        if n > self.remaining || self.at + n > self.rec.len() {
            return Err("a WAL record is cut short".into());
        }
        let start = self.at;
        self.at += n;
        self.remaining -= n;
        Ok(start)
    }

    fn u8(&mut self) -> Result<u8, String> {
        let at = self.take(1)?;
        Ok(self.rec[at])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let at = self.take(2)?;
        u16_at(self.rec, at).ok_or_else(|| "a WAL record is cut short".into())
    }

    fn u32(&mut self) -> Result<u32, String> {
        let at = self.take(4)?;
        u32_at(self.rec, at).ok_or_else(|| "a WAL record is cut short".into())
    }
}

/// Adds what record `rec` changed to `out`. `rec` holds the record from its start: all of it
/// (its CRC is then checked), or at least its headers when it was cut short where it crossed
/// a segment's edge (a record whose main data matters — relation, database and tablespace
/// events, commits and aborts — must then hold it, or the scan fails and the backup compares
/// files whole).
pub fn decode(rec: &[u8], out: &mut ChangedBlocks) -> Result<Decoded, String> {
    let short = || "a WAL record is cut short".to_string();
    let total = u32_at(rec, 0).ok_or_else(short)? as usize;
    if total < RECORD_HEADER || rec.len() < RECORD_HEADER {
        return Err(format!("a WAL record claims a length of {total} bytes"));
    }
    let whole = rec.len() >= total;
    if whole {
        let stored = u32_at(rec, 20).ok_or_else(short)?;
        if crc32c(&[&rec[RECORD_HEADER..total], &rec[..20]]) != stored {
            return Err("a WAL record fails its CRC".into());
        }
    }
    let (info, rmid) = (rec[16], rec[17]);
    let mut cur = Cursor {
        rec,
        at: RECORD_HEADER,
        remaining: total - RECORD_HEADER,
    };
    let (mut payload, mut main_data) = (0usize, 0usize);
    let mut last_rel: Option<RelFile> = None;
    while cur.remaining > payload {
        let id = cur.u8()?;
        match id {
            BLOCK_ID_DATA_SHORT => {
                main_data = cur.u8()? as usize;
                payload += main_data;
                break; // the main data's header is always the last
            }
            BLOCK_ID_DATA_LONG => {
                main_data = cur.u32()? as usize;
                payload += main_data;
                break;
            }
            BLOCK_ID_ORIGIN => {
                cur.take(2)?;
            }
            BLOCK_ID_TOPLEVEL_XID => {
                cur.take(4)?;
            }
            id if id <= MAX_BLOCK_ID => {
                let flags = cur.u8()?;
                payload += cur.u16()? as usize;
                if flags & BKPBLOCK_HAS_IMAGE != 0 {
                    payload += cur.u16()? as usize; // the image's length
                    cur.take(2)?; // hole offset
                    let image_info = cur.u8()?;
                    if image_info & BKPIMAGE_HAS_HOLE != 0 && image_info & BKPIMAGE_COMPRESSED != 0
                    {
                        cur.take(2)?;
                    }
                }
                let rel = if flags & BKPBLOCK_SAME_REL != 0 {
                    last_rel.ok_or("a WAL block reference names no relation")?
                } else {
                    let at = cur.take(12)?;
                    rel_at(rec, at).ok_or_else(short)?
                };
                last_rel = Some(rel);
                let block = cur.u32()?;
                out.block(rel, flags & BKPBLOCK_FORK_MASK, block);
            }
            other => return Err(format!("a WAL record has an unknown block id {other}")),
        }
    }
    if cur.remaining != payload {
        return Err("a WAL record's lengths do not add up".into());
    }
    out.records += 1;
    let kind = info & 0xF0;
    let main = || -> Result<&[u8], String> { rec.get(total - main_data..total).ok_or_else(short) };
    match rmid {
        RM_XLOG_ID if kind == XLOG_SWITCH => return Ok(Decoded::Switch),
        RM_SMGR_ID if kind == XLOG_SMGR_CREATE => {
            out.rewritten(rel_at(main()?, 0).ok_or_else(short)?);
        }
        RM_SMGR_ID if kind == XLOG_SMGR_TRUNCATE => {
            out.rewritten(rel_at(main()?, 4).ok_or_else(short)?);
        }
        RM_XACT_ID if ends_a_transaction(info) => {
            for rel in dropped_relations(main()?).ok_or_else(short)? {
                out.rewritten(rel);
            }
        }
        RM_DBASE_ID => out.database(u32_at(main()?, 0).ok_or_else(short)?),
        RM_TBLSPC_ID => out.tablespace(u32_at(main()?, 0).ok_or_else(short)?),
        _ => {}
    }
    Ok(Decoded::Record)
}

/// Whether an RM_XACT record is a commit or abort with an `xinfo` (the records that may drop
/// relations); others (prepare, assignment, invalidations) are not looked into.
fn ends_a_transaction(info: u8) -> bool {
    let ends = [
        XLOG_XACT_COMMIT,
        XLOG_XACT_ABORT,
        XLOG_XACT_COMMIT_PREPARED,
        XLOG_XACT_ABORT_PREPARED,
    ];
    ends.contains(&(info & XLOG_XACT_OPMASK)) && info & XLOG_XACT_HAS_INFO != 0
}

/// The relations a commit or abort record drops (xact.h: `xl_xact_commit`/`xl_xact_abort`,
/// then, as its `xinfo` says, database info, subtransactions and the dropped relfilenodes).
/// A dropped relation's relfilenode may be used again by a new relation, whose file the next
/// backup must not take for the old one's with a few blocks changed.
fn dropped_relations(main: &[u8]) -> Option<Vec<RelFile>> {
    let xinfo = u32_at(main, 8)?;
    let mut at = 12;
    if xinfo & XACT_XINFO_HAS_DBINFO != 0 {
        at += 8;
    }
    if xinfo & XACT_XINFO_HAS_SUBXACTS != 0 {
        at += 4 + 4 * u32_at(main, at)? as usize;
    }
    if xinfo & XACT_XINFO_HAS_RELFILENODES == 0 {
        return Some(Vec::new());
    }
    let count = u32_at(main, at)? as usize;
    (0..count).map(|i| rel_at(main, at + 4 + 12 * i)).collect()
}

/// CRC-32C (Castagnoli) of the concatenated `parts`, as PostgreSQL computes a record's.
pub fn crc32c(parts: &[&[u8]]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut crc = !0u32;
    for part in parts {
        crc = hardware_crc32c(crc, part).unwrap_or_else(|| {
            part.iter().fold(crc, |c, &b| {
                table[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8)
            })
        });
    }
    !crc
}

#[cfg(target_arch = "x86_64")]
fn hardware_crc32c(crc: u32, data: &[u8]) -> Option<u32> {
    if !std::arch::is_x86_feature_detected!("sse4.2") {
        return None;
    }
    // SAFETY: the CPU has SSE 4.2, checked above.
    Some(unsafe { sse42_crc32c(crc, data) })
}

#[cfg(not(target_arch = "x86_64"))]
fn hardware_crc32c(_crc: u32, _data: &[u8]) -> Option<u32> {
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn sse42_crc32c(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut c = u64::from(crc);
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        c = _mm_crc32_u64(c, u64::from_le_bytes(w.try_into().unwrap_or_default()));
    }
    let mut c = c as u32;
    for &b in words.remainder() {
        c = _mm_crc32_u8(c, b);
    }
    c
}
