//! Shared memory of the toolkit's own. Each user (the audit queue, the worker's signals)
//! registers its segment while preloading; one pair of hooks, chained to the previous ones,
//! asks for the space and attaches every segment at startup.

use pgrx::pg_sys;
use std::ffi::CStr;
use std::ptr::addr_of_mut;
use std::sync::Mutex;

/// One structure in shared memory.
pub struct Segment {
    pub name: &'static CStr,
    pub size: usize,
    /// Whether a named LWLock tranche of one lock, called `name`, comes with it.
    pub with_lock: bool,
    /// Receives the structure (zeroed when new: all-zero must be a valid value) once attached.
    pub attached: fn(*mut u8),
}

/// Filled in the postmaster while preloading; backends inherit it.
static SEGMENTS: Mutex<Vec<Segment>> = Mutex::new(Vec::new());

fn segments() -> std::sync::MutexGuard<'static, Vec<Segment>> {
    SEGMENTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP: pg_sys::shmem_startup_hook_type = None;

/// Registers a segment; call while preloading. The hooks are installed with the first one.
pub fn register(segment: Segment) {
    // SAFETY: runs in the postmaster while it loads preload libraries, before any fork.
    let mut segments = segments();
    unsafe {
        if segments.is_empty() {
            PREV_SHMEM_REQUEST = pg_sys::shmem_request_hook;
            pg_sys::shmem_request_hook = Some(shmem_request);
            PREV_SHMEM_STARTUP = pg_sys::shmem_startup_hook;
            pg_sys::shmem_startup_hook = Some(shmem_startup);
        }
        segments.push(segment);
    }
}

/// The named lock of a segment registered `with_lock`.
///
/// # Safety
/// Call from a segment's `attached` callback or later.
pub unsafe fn lock_of(name: &CStr) -> *mut pg_sys::LWLock {
    unsafe { addr_of_mut!((*pg_sys::GetNamedLWLockTranche(name.as_ptr())).lock) }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn shmem_request() {
    unsafe {
        if let Some(prev) = PREV_SHMEM_REQUEST {
            prev();
        }
        for segment in segments().iter() {
            pg_sys::RequestAddinShmemSpace(segment.size);
            if segment.with_lock {
                pg_sys::RequestNamedLWLockTranche(segment.name.as_ptr(), 1);
            }
        }
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn shmem_startup() {
    unsafe {
        if let Some(prev) = PREV_SHMEM_STARTUP {
            prev();
        }
        // AddinShmemInitLock is MainLWLockArray[21] (lwlocknames.txt).
        let init_lock = addr_of_mut!((*pg_sys::MainLWLockArray.add(21)).lock);
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        for segment in segments().iter() {
            let mut found = false;
            let memory = pg_sys::ShmemInitStruct(segment.name.as_ptr(), segment.size, &mut found)
                .cast::<u8>();
            if !found {
                std::ptr::write_bytes(memory, 0, segment.size);
            }
            (segment.attached)(memory);
        }
        pg_sys::LWLockRelease(init_lock);
    }
}
