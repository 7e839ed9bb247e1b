//! The audit journal: every audit event is a WAL record of the toolkit's own resource manager,
//! written by the hook that saw the event, so that it is as durable as the transaction it
//! belongs to (flushed with its commit; flushed at once when nothing else would: failed logins,
//! failed statements, statements without a transaction ID such as ALTER SYSTEM). The worker
//! turns the records into rows of `security_audit_log`, reading WAL after the position it
//! stored with the last rows it wrote, in the same transaction: after a crash it reads again
//! from there, so each event is written exactly once. A replication slot keeps that WAL until
//! it is read. A standby replays the records like any other WAL; once promoted, its worker
//! goes on from the position the primary's worker last committed.

use super::queue::AuditEvent;
use admin_toolkit_core::audit::journal::{self as format, Header};
use admin_toolkit_core::lsn::Lsn;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{c_char, CStr};
use std::ptr::{null, null_mut};

/// The resource manager ID of the journal's records, in PostgreSQL's range for extensions
/// (128–255). A server that must replay WAL holding these records (crash recovery, a standby,
/// a restore) needs the library preloaded, as for any custom resource manager.
pub const RMGR_ID: u8 = 168;
/// The info bits of an event record (the low four bits are PostgreSQL's).
const XLOG_AUDIT_EVENT: u8 = 0x10;
/// The replication slot that keeps WAL the worker has not read yet.
pub const SLOT: &str = "admin_toolkit_audit";
const SLOT_C: &CStr = c"admin_toolkit_audit";

static mut REGISTERED: bool = false;

static mut RMGR: pg_sys::RmgrData = pg_sys::RmgrData {
    rm_name: c"admin_toolkit_audit".as_ptr(),
    rm_redo: Some(redo),
    rm_desc: Some(desc),
    rm_identify: Some(identify),
    rm_startup: None,
    rm_cleanup: None,
    rm_mask: None,
    rm_decode: None,
};

/// Registers the resource manager; `_PG_init` calls this while preloading.
pub fn install() {
    // SAFETY: in the postmaster while it loads preload libraries; RMGR lives forever.
    unsafe {
        pg_sys::RegisterCustomRmgr(RMGR_ID, &raw mut RMGR);
        REGISTERED = true;
    }
}

/// Replay has nothing to do: the records are read back by the worker, not applied to pages.
unsafe extern "C-unwind" fn redo(_: *mut pg_sys::XLogReaderState) {}

/// What pg_walinspect shows of a record: the operation, the user and the object.
#[pg_guard]
unsafe extern "C-unwind" fn desc(buf: pg_sys::StringInfo, record: *mut pg_sys::XLogReaderState) {
    // SAFETY: the server passes a decoded record of this resource manager.
    let data = unsafe { main_data(record) };
    let text = match format::decode(data) {
        Ok((_, fields)) => {
            let field = |i: usize| {
                String::from_utf8_lossy(fields.get(i).copied().unwrap_or_default()).into_owned()
            };
            format!("{} by {} on {}", field(4), field(0), field(7))
        }
        Err(e) => e.to_string(),
    };
    if let Ok(c) = std::ffi::CString::new(text) {
        // SAFETY: appends a copy of a NUL-terminated string to the server's buffer.
        unsafe { pg_sys::appendStringInfoString(buf, c.as_ptr()) };
    }
}

unsafe extern "C-unwind" fn identify(info: u8) -> *const c_char {
    if info & !(pg_sys::XLR_INFO_MASK as u8) == XLOG_AUDIT_EVENT {
        c"EVENT".as_ptr()
    } else {
        null()
    }
}

/// The main data of a decoded record.
unsafe fn main_data<'a>(reader: *mut pg_sys::XLogReaderState) -> &'a [u8] {
    unsafe {
        let record = (*reader).record;
        if record.is_null() || (*record).main_data.is_null() {
            return &[];
        }
        std::slice::from_raw_parts(
            (*record).main_data.cast::<u8>(),
            (*record).main_data_len as usize,
        )
    }
}

/// The text fields of an event, in the journal's order (new fields go at the end).
fn fields(e: &AuditEvent) -> [&[u8]; 12] {
    [
        e.username.bytes(),
        e.database.bytes(),
        e.client_ip.bytes(),
        e.application.bytes(),
        e.operation.bytes(),
        e.object_type.bytes(),
        e.schema.bytes(),
        e.object.bytes(),
        e.query.bytes(),
        e.error.bytes(),
        e.info.bytes(),
        e.session_user.bytes(),
    ]
}

fn header(e: &AuditEvent) -> Header {
    let flag = |on: bool, flag: u8| if on { flag } else { 0 };
    Header {
        event_time: e.event_time,
        pid: e.pid,
        session_start: e.session_start,
        flags: flag(e.success, Header::SUCCESS)
            | flag(e.query_truncated, Header::QUERY_TRUNCATED)
            | flag(e.from_application, Header::FROM_APPLICATION),
        // SAFETY: reads this backend's transaction state.
        transaction_id: unsafe { pg_sys::GetTopTransactionIdIfAny() }.into(),
    }
}

/// The event a journal record holds.
fn event_of(data: &[u8]) -> Result<(Box<AuditEvent>, u32), format::JournalError> {
    let (h, f) = format::decode(data)?;
    let mut e = AuditEvent::empty();
    e.event_time = h.event_time;
    e.pid = h.pid;
    e.session_start = h.session_start;
    e.success = h.has(Header::SUCCESS);
    e.query_truncated = h.has(Header::QUERY_TRUNCATED);
    e.from_application = h.has(Header::FROM_APPLICATION);
    let get = |i: usize| f.get(i).copied().unwrap_or_default();
    e.username.set(get(0));
    e.database.set(get(1));
    e.client_ip.set(get(2));
    e.application.set(get(3));
    e.operation.set(get(4));
    e.object_type.set(get(5));
    e.schema.set(get(6));
    e.object.set(get(7));
    e.query.set(get(8));
    e.error.set(get(9));
    e.info.set(get(10));
    e.session_user.set(get(11));
    Ok((e, h.transaction_id))
}

/// Writes the event into WAL; with `flush`, waits until it is on disk. False when this server
/// cannot write WAL (a standby) or the library was not preloaded: the caller queues it instead.
pub fn write(event: &AuditEvent, flush: bool) -> bool {
    // SAFETY: REGISTERED is set once in the postmaster; XLogInsertAllowed reads shared state.
    if unsafe { !REGISTERED || !pg_sys::XLogInsertAllowed() } {
        return false;
    }
    let record = format::encode(&header(event), &fields(event));
    // SAFETY: one record with one piece of main data, which outlives the insertion.
    unsafe {
        if !event.success {
            // The statement failed, maybe between another record's XLogBeginInsert and its
            // XLogInsert: drop that half-built record, as the abort that follows would.
            pg_sys::XLogResetInsertion();
        }
        pg_sys::XLogBeginInsert();
        pg_sys::XLogRegisterData(record.as_ptr().cast_mut().cast(), record.len() as _);
        let lsn = pg_sys::XLogInsert(RMGR_ID, XLOG_AUDIT_EVENT);
        if flush {
            pg_sys::XLogFlush(lsn);
        }
    }
    true
}

/// Whether an event written now needs its own flush: nothing else will flush it soon when the
/// statement failed or its transaction has no ID (no commit record).
pub fn needs_flush(success: bool) -> bool {
    // SAFETY: reads this backend's transaction state.
    !success || unsafe { pg_sys::GetTopTransactionIdIfAny() } == pg_sys::InvalidTransactionId
}

/// Drops the journal's slot if it exists (DROP EXTENSION).
pub fn drop_slot() {
    // SAFETY: what pg_drop_replication_slot() does, without its privilege check: the caller
    // just dropped the extension the slot belongs to.
    unsafe {
        if !pg_sys::SearchNamedReplicationSlot(SLOT_C.as_ptr(), true).is_null() {
            pg_sys::ReplicationSlotDrop(SLOT_C.as_ptr(), true);
        }
    }
}

/// An event read back from the journal, with where it was written and its top-level
/// transaction's ID (0: none).
pub struct JournalEvent {
    pub event: Box<AuditEvent>,
    pub lsn: u64,
    pub xid: u32,
}

/// What one read of the journal found.
pub struct JournalRead {
    pub events: Vec<JournalEvent>,
    /// Where the next read starts: just past the last record read.
    pub end: u64,
}

/// The server's own callbacks for reading its WAL, as C functions (pgrx's wrappers of them are
/// Rust functions, which the reader cannot call).
mod callbacks {
    use pgrx::pg_sys::{TimeLineID, XLogReaderState, XLogRecPtr, XLogSegNo};
    unsafe extern "C-unwind" {
        pub fn read_local_xlog_page_no_wait(
            state: *mut XLogReaderState,
            target_page: XLogRecPtr,
            request_length: i32,
            target_record: XLogRecPtr,
            page: *mut std::ffi::c_char,
        ) -> i32;
        pub fn wal_segment_open(
            state: *mut XLogReaderState,
            segment: XLogSegNo,
            timeline: *mut TimeLineID,
        );
        pub fn wal_segment_close(state: *mut XLogReaderState);
    }
}

/// Frees the reader however the read ends.
struct Reader(*mut pg_sys::XLogReaderState);

impl Drop for Reader {
    fn drop(&mut self) {
        // SAFETY: allocated by XLogReaderAllocate and freed once.
        unsafe { pg_sys::XLogReaderFree(self.0) };
    }
}

/// Reads journal records from `from` up to WAL flushed now, at most `max_events` events and
/// about `max_bytes` of WAL. Records of a format this build does not know are logged and
/// skipped.
pub fn read(from: u64, max_events: usize, max_bytes: u64) -> JournalRead {
    let mut read = JournalRead {
        events: Vec::new(),
        end: from,
    };
    // SAFETY: the reader reads flushed WAL of this server, as pg_walinspect does; the private
    // state lives in this transaction's memory context, longer than the reader.
    unsafe {
        if from >= pg_sys::GetFlushRecPtr(null_mut()) {
            return read;
        }
        let private =
            pg_sys::palloc0(std::mem::size_of::<pg_sys::ReadLocalXLogPageNoWaitPrivate>())
                .cast::<pg_sys::ReadLocalXLogPageNoWaitPrivate>();
        let mut routine = pg_sys::XLogReaderRoutine {
            page_read: Some(callbacks::read_local_xlog_page_no_wait),
            segment_open: Some(callbacks::wal_segment_open),
            segment_close: Some(callbacks::wal_segment_close),
        };
        let reader = pg_sys::XLogReaderAllocate(
            pg_sys::wal_segment_size,
            null(),
            &mut routine,
            private.cast(),
        );
        if reader.is_null() {
            error!("out of memory while reading the audit journal");
        }
        let reader = Reader(reader);
        if pg_sys::XLogFindNextRecord(reader.0, from) == 0 {
            if (*private).end_of_wal {
                return read;
            }
            error!(
                "could not find a WAL record after {} for the audit journal",
                Lsn(from)
            );
        }
        loop {
            let mut message: *mut c_char = null_mut();
            if pg_sys::XLogReadRecord(reader.0, &mut message).is_null() {
                if (*private).end_of_wal {
                    return read;
                }
                let why = if message.is_null() {
                    "no reason given".into()
                } else {
                    CStr::from_ptr(message).to_string_lossy()
                };
                error!(
                    "could not read the audit journal in WAL at {}: {why}",
                    Lsn(read.end)
                );
            }
            read.end = (*reader.0).EndRecPtr;
            let record = (*reader.0).record;
            if (*record).header.xl_rmid == RMGR_ID
                && (*record).header.xl_info & !(pg_sys::XLR_INFO_MASK as u8) == XLOG_AUDIT_EVENT
            {
                let lsn = (*reader.0).ReadRecPtr;
                match event_of(main_data(reader.0)) {
                    Ok((event, xid)) => read.events.push(JournalEvent { event, lsn, xid }),
                    Err(e) => warning!(
                        "admin_toolkit: audit journal record at {} skipped: {e}",
                        Lsn(lsn)
                    ),
                }
            }
            if read.events.len() >= max_events || read.end - from >= max_bytes {
                return read;
            }
        }
    }
}
