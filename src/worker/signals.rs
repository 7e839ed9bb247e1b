//! What backends and the database worker tell each other without a query, in shared memory of
//! its own: the worker's latch, work requested of one duty, and the worker's liveness and last
//! collection time (read by the /metrics endpoint). Plain atomics: no lock, nothing that can
//! raise an error, so a hook or a commit callback may use it.
//!
//! A request names a duty; names map to one of 32 bits, so two duties sharing a bit wake each
//! other needlessly (harmless) but a request never reaches no duty.

use pgrx::pg_sys;
use std::ffi::CStr;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicI64, AtomicPtr, AtomicU32, AtomicU64, Ordering};

const SEGMENT: &CStr = c"admin_toolkit_worker_signals";

#[repr(C)]
struct Signals {
    /// The database worker's latch (in its PGPROC, in shared memory); null while none runs.
    worker_latch: AtomicPtr<pg_sys::Latch>,
    /// Duties asked for work since the worker last looked, one bit per duty name.
    requests: AtomicU32,
    /// The worker's last tick (TimestampTz).
    worker_tick: AtomicI64,
    /// How long the last metrics collection took, in microseconds.
    collection_micros: AtomicU64,
}

static mut SIGNALS: *mut Signals = null_mut();

/// Registers the signals' shared memory; called while preloading.
pub fn install() {
    crate::shared_memory::register(crate::shared_memory::Segment {
        name: SEGMENT,
        size: std::mem::size_of::<Signals>(),
        with_lock: false,
        // All-zero is a valid value of every field: no worker, no request.
        // SAFETY: at startup, before any backend runs.
        attached: |memory| unsafe { SIGNALS = memory.cast::<Signals>() },
    });
}

fn signals() -> Option<&'static Signals> {
    // SAFETY: set once at startup, before any backend runs; the fields are atomics.
    unsafe { SIGNALS.as_ref() }
}

/// The bit a duty's requests use.
pub fn request_bit(duty: &str) -> u32 {
    // FNV-1a: stable across processes and builds, unlike the std hasher.
    let hash = duty.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    1 << (hash % 32)
}

fn set_worker_latch() {
    if let Some(latch) = signals()
        .map(|s| s.worker_latch.load(Ordering::Acquire))
        .filter(|l| !l.is_null())
    {
        // SAFETY: the latch lives in the worker's PGPROC in shared memory; setting a latch
        // that its owner has since left is harmless.
        unsafe { pg_sys::SetLatch(latch) };
    }
}

/// Wakes the worker for the duties whose bits are in `bits` (see `request_bit`).
pub fn request(bits: u32) {
    if let Some(s) = signals() {
        s.requests.fetch_or(bits, Ordering::AcqRel);
        set_worker_latch();
    }
}

/// Wakes the worker for a look at every duty's `due`, with no request.
pub fn wake() {
    set_worker_latch();
}

/// The requests since the last call (and clears them).
pub fn take_requests() -> u32 {
    signals().map_or(0, |s| s.requests.swap(0, Ordering::AcqRel))
}

/// The database worker announces (or, with `false`, withdraws) its latch.
pub fn worker_present(present: bool) {
    // SAFETY: MyLatch is this process's latch in shared memory while the process lives.
    let latch = if present {
        unsafe { pg_sys::MyLatch }
    } else {
        null_mut()
    };
    if let Some(s) = signals() {
        s.worker_latch.store(latch, Ordering::Release);
    }
}

/// The database worker says it is alive (once per loop).
pub fn worker_tick() {
    // SAFETY: reads the clock; no preconditions.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    if let Some(s) = signals() {
        s.worker_tick.store(now, Ordering::Release);
    }
}

/// The last metrics collection took `micros`.
pub fn record_collection(micros: u64) {
    if let Some(s) = signals() {
        s.collection_micros.store(micros, Ordering::Release);
    }
}

/// What the /metrics endpoint shows of the worker.
pub struct WorkerState {
    pub running: bool,
    pub tick: pg_sys::TimestampTz,
    pub collection_micros: u64,
}

/// The worker's state; `None` when the library was not preloaded.
pub fn state() -> Option<WorkerState> {
    signals().map(|s| WorkerState {
        running: !s.worker_latch.load(Ordering::Acquire).is_null(),
        tick: s.worker_tick.load(Ordering::Acquire),
        collection_micros: s.collection_micros.load(Ordering::Acquire),
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn every_duty_name_has_one_bit() {
        for name in ["alerting", "backup retention", "", "x"] {
            assert_eq!(super::request_bit(name).count_ones(), 1, "{name}");
            assert_eq!(super::request_bit(name), super::request_bit(name));
        }
        assert_ne!(
            super::request_bit("alerting"),
            super::request_bit("backup retention")
        );
    }
}
