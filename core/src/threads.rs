//! Threads the toolkit starts inside PostgreSQL processes (copying and restoring chunks,
//! uploads, deliveries, name lookups). A thread inherits the signal mask of the thread that
//! creates it, and the process's signal handlers are PostgreSQL's (and the toolkit's, which
//! call into PostgreSQL): run on any other thread, they would touch PostgreSQL from it. So
//! every such thread is created with all signals blocked, and signals reach the main thread.

/// Runs `spawn` (which creates threads) with every signal blocked on the calling thread, and
/// restores its mask afterwards; signals arriving meanwhile are delivered then.
pub fn with_signals_blocked<R>(spawn: impl FnOnce() -> R) -> R {
    // SAFETY: sigset_t is plain data, filled by sigfillset; the mask is restored right after.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut before: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut before);
        let spawned = spawn();
        libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
        spawned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked_here() -> bool {
        // SAFETY: reads this thread's mask only.
        unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask);
            libc::sigismember(&mask, libc::SIGTERM) == 1
        }
    }

    #[test]
    fn threads_are_born_with_signals_blocked_and_the_caller_keeps_its_mask() {
        assert!(!blocked_here());
        let handle = with_signals_blocked(|| std::thread::spawn(blocked_here));
        assert!(handle.join().unwrap(), "the new thread blocks SIGTERM");
        assert!(!blocked_here(), "the caller's mask is restored");
    }
}
