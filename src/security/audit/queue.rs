//! The shared-memory hand-off between the hooks (every backend) and the worker, for what the
//! audit journal does not carry: events seen where WAL cannot be written (a hot standby), and
//! table-read counts. Events are copied in under one short
//! LWLock; nothing here allocates or touches the catalog. A full queue counts what it drops.
//!
//! Two structures: a ring of events (logins, DDL, application events) and a table of
//! (database, role, table) → read count, summarised periodically.

use pgrx::pg_sys;
use std::ffi::CStr;
use std::ptr::null_mut;

/// Events the queue holds before it starts dropping (and counting) new ones.
pub const QUEUE_CAPACITY: usize = 4096;
/// Distinct (database, role, table) read counters between two summaries.
pub const READ_SLOTS: usize = 4096;
const READ_PROBES: usize = 32;

const TRANCHE: &CStr = c"admin_toolkit_audit";

/// A fixed-size, NUL-free text field (truncated at a character boundary).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Text<const N: usize> {
    len: u16,
    bytes: [u8; N],
}

impl<const N: usize> Text<N> {
    pub fn set(&mut self, s: &[u8]) {
        let mut n = s.len().min(N);
        // Back off to a UTF-8 character boundary.
        while n > 0 && n < s.len() && (s[n] & 0xC0) == 0x80 {
            n -= 1;
        }
        self.bytes[..n].copy_from_slice(&s[..n]);
        self.len = n as u16;
    }

    pub fn set_cstr(&mut self, p: *const std::ffi::c_char) {
        if p.is_null() {
            self.len = 0;
        } else {
            // SAFETY: callers pass NUL-terminated strings owned by the server.
            self.set(unsafe { CStr::from_ptr(p) }.to_bytes());
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    pub fn get(&self) -> Option<String> {
        (self.len > 0)
            .then(|| String::from_utf8_lossy(&self.bytes[..self.len as usize]).into_owned())
    }
}

/// One audit event, as the hooks saw it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct AuditEvent {
    pub event_time: pg_sys::TimestampTz,
    pub pid: i32,
    pub session_start: i64,
    pub success: bool,
    pub username: Text<64>,
    pub database: Text<64>,
    pub client_ip: Text<48>,
    pub application: Text<64>,
    pub operation: Text<32>,
    pub object_type: Text<32>,
    pub schema: Text<64>,
    pub object: Text<192>,
    pub query: Text<1024>,
    pub error: Text<256>,
    /// Whether `additional_info` should say the query text was cut.
    pub query_truncated: bool,
    /// Whether the event came from log_security_event() rather than a hook.
    pub from_application: bool,
    /// Application-supplied additional_info (JSON text), if any.
    pub info: Text<256>,
    /// The session's login role (`username` is the current user, which SET ROLE and SECURITY
    /// DEFINER functions change).
    pub session_user: Text<64>,
}

impl AuditEvent {
    /// An event with every field empty.
    pub fn empty() -> Box<AuditEvent> {
        // SAFETY: every field is plain data for which all-zero bytes are a valid value.
        unsafe { Box::new(std::mem::zeroed()) }
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ReadCount {
    pub database: u32,
    pub role: u32,
    pub relation: u32,
    pub count: u64,
}

#[repr(C)]
struct Shared {
    /// Events pushed and popped since startup; `pushed - popped` are waiting.
    pushed: u64,
    popped: u64,
    /// Events dropped because the ring was full, since startup.
    dropped: u64,
    /// Read counts dropped because the counter table was full, since startup.
    reads_dropped: u64,
    /// Read-counter slots in use, so that "anything to summarise?" needs no scan.
    reads_used: u64,
    events: [AuditEvent; QUEUE_CAPACITY],
    reads: [ReadCount; READ_SLOTS],
}

static mut SHARED: *mut Shared = null_mut();
static mut LOCK: *mut pg_sys::LWLock = null_mut();

/// Registers the queue's shared memory; `_PG_init` calls this while preloading.
pub fn install() {
    crate::shared_memory::register(crate::shared_memory::Segment {
        name: TRANCHE,
        size: std::mem::size_of::<Shared>(),
        with_lock: true,
        attached: |memory| {
            // SAFETY: at startup, before any backend runs; the tranche was requested with it.
            unsafe {
                SHARED = memory.cast::<Shared>();
                LOCK = crate::shared_memory::lock_of(TRANCHE);
            }
        },
    });
}

/// Whether the queue exists (the library was preloaded).
pub fn available() -> bool {
    // SAFETY: set once at startup, before any backend runs.
    unsafe { !SHARED.is_null() }
}

/// Runs `f` on the shared state under the exclusive lock.
fn with_lock<R>(f: impl FnOnce(&mut Shared) -> R) -> Option<R> {
    if !available() {
        return None;
    }
    // SAFETY: SHARED and LOCK were set at startup; the lock serializes all access. `f` does
    // plain copies and arithmetic only, so it cannot raise an error while the lock is held.
    unsafe {
        pg_sys::LWLockAcquire(LOCK, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let result = f(&mut *SHARED);
        pg_sys::LWLockRelease(LOCK);
        Some(result)
    }
}

/// Hands an event to the worker. Never fails: a full queue counts the event as dropped. Once
/// a quarter of the queue is waiting, the worker is woken to drain it.
pub fn push(event: &AuditEvent) {
    let wake = with_lock(|s| {
        let waiting = s.pushed - s.popped;
        if waiting >= QUEUE_CAPACITY as u64 {
            s.dropped += 1;
        } else {
            s.events[(s.pushed % QUEUE_CAPACITY as u64) as usize] = *event;
            s.pushed += 1;
        }
        waiting + 1 >= (QUEUE_CAPACITY / 4) as u64
    });
    if wake == Some(true) {
        // The audit writer's `due` sees the waiting events; no request needed.
        crate::worker::signals::wake();
    }
}

/// Copies up to `max` waiting events without removing them; `commit(n)` removes the first `n`
/// once they are safely written, so a failed write leaves them queued for the next try.
pub fn peek(max: usize) -> Vec<AuditEvent> {
    with_lock(|s| {
        let waiting = (s.pushed - s.popped).min(max as u64);
        (0..waiting)
            .map(|i| s.events[((s.popped + i) % QUEUE_CAPACITY as u64) as usize])
            .collect()
    })
    .unwrap_or_default()
}

pub fn commit(n: usize) {
    with_lock(|s| s.popped = (s.popped + n as u64).min(s.pushed));
}

/// Whether events wait to be written or read counts to be summarised: a lock and two reads,
/// so that an idle worker tick starts no transaction.
pub fn pending() -> (bool, bool) {
    with_lock(|s| (s.pushed > s.popped, s.reads_used > 0)).unwrap_or((false, false))
}

/// What the /metrics endpoint shows of the queue and the worker.
pub struct QueueState {
    pub queued: u64,
    pub dropped: u64,
    pub reads_dropped: u64,
}

pub fn state() -> Option<QueueState> {
    with_lock(|s| QueueState {
        queued: s.pushed - s.popped,
        dropped: s.dropped,
        reads_dropped: s.reads_dropped,
    })
}

/// Events dropped and read counts dropped since startup.
pub fn dropped() -> (u64, u64) {
    with_lock(|s| (s.dropped, s.reads_dropped)).unwrap_or((0, 0))
}

fn slot_of(database: u32, role: u32, relation: u32) -> usize {
    let h = (u64::from(database).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        ^ (u64::from(role).wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
        ^ u64::from(relation).wrapping_mul(0x1656_67B1_9E37_79F9);
    (h >> 20) as usize % READ_SLOTS
}

/// Adds one read of each relation by `role` in `database`.
pub fn count_reads(database: u32, role: u32, relations: &[u32]) {
    with_lock(|s| {
        for &relation in relations {
            add_reads(s, database, role, relation, 1);
        }
    });
}

/// Puts back read counts taken by [`take_reads`] whose summary could not be written, so that
/// they are written with the next summary instead of being lost.
pub fn restore_reads(taken: &[ReadCount]) {
    with_lock(|s| {
        for r in taken {
            add_reads(s, r.database, r.role, r.relation, r.count);
        }
    });
}

/// Adds `count` reads to the (database, role, table) counter, under the lock.
fn add_reads(s: &mut Shared, database: u32, role: u32, relation: u32, count: u64) {
    let start = slot_of(database, role, relation);
    for probe in 0..READ_PROBES {
        let slot = &mut s.reads[(start + probe) % READ_SLOTS];
        if slot.count == 0 {
            *slot = ReadCount {
                database,
                role,
                relation,
                count,
            };
            s.reads_used += 1;
            return;
        }
        if slot.database == database && slot.role == role && slot.relation == relation {
            slot.count += count;
            return;
        }
    }
    s.reads_dropped += count;
}

/// Takes every read counter, leaving the table empty.
pub fn take_reads() -> Vec<ReadCount> {
    with_lock(|s| {
        let mut taken = Vec::new();
        for slot in s.reads.iter_mut().filter(|r| r.count > 0) {
            taken.push(*slot);
            *slot = ReadCount {
                database: 0,
                role: 0,
                relation: 0,
                count: 0,
            };
        }
        s.reads_used = 0;
        taken
    })
    .unwrap_or_default()
}
