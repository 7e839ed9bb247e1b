//! The credentials' shared memory: each role's failed logins and lock, and the password history,
//! for every database of the cluster. One LWLock of its own guards it; nothing done under the
//! lock can fail (no catalog, no ereport). The worker persists it (`duty`) and loads it back.

use crate::shared_memory::{self, Segment};
use admin_toolkit_core::credentials::{
    FailureOutcome, HistoryEntry, LockoutPolicy, LockoutState, SecretKind, SALT_LEN, UNTIL_UNLOCKED,
};
use pgrx::pg_sys;
use std::ffi::CStr;

/// Roles whose failed logins or lock are tracked at once. A slot is reused once its failures
/// are out of the window; a role finding none is not counted (`untracked_total`): another
/// role's count is never pushed out, so failing on many roles cannot reset a victim's.
pub const ROLE_SLOTS: usize = 4096;
/// History entries of every role together.
pub const HISTORY_SLOTS: usize = 4096;
/// Most history entries of one role: no role can push out many others' entries.
pub const HISTORY_PER_ROLE: usize = 128;

const NAME: &CStr = c"admin_toolkit_credentials";

#[repr(C)]
#[derive(Clone, Copy)]
pub struct RoleSlot {
    /// The role's OID; 0: free.
    pub role: u32,
    pub state: LockoutState,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct HistorySlot {
    /// The role's OID; 0: free.
    pub role: u32,
    pub kind: u8,
    pub set_at: i64,
    pub salt: [u8; SALT_LEN],
    pub hash: [u8; 32],
}

impl HistorySlot {
    pub fn entry(&self) -> Option<HistoryEntry> {
        Some(HistoryEntry {
            set_at: self.set_at,
            kind: SecretKind::from_u8(self.kind)?,
            salt: self.salt,
            hash: self.hash,
        })
    }
}

/// All-zero is the empty state.
#[repr(C)]
pub struct Credentials {
    /// When this shared memory was made (the server's start, or its restart after a crash).
    pub initialized_at: i64,
    /// Whether the worker has loaded what it persisted.
    pub loaded: bool,
    /// Moves at every change the worker has to persist.
    pub generation: u64,
    pub locks_total: u64,
    pub failures_counted_total: u64,
    pub refused_while_locked_total: u64,
    pub reuse_refused_total: u64,
    pub untracked_total: u64,
    pub history_evicted_total: u64,
    pub unlocks_total: u64,
    /// Role slots taken, as of the last change: 0 lets a successful login skip everything.
    pub roles_in_use: u32,
    pub roles: [RoleSlot; ROLE_SLOTS],
    pub history: [HistorySlot; HISTORY_SLOTS],
}

static mut STATE: *mut Credentials = std::ptr::null_mut();

/// Registers the segment; `_PG_init` calls this while preloading.
pub fn install() {
    shared_memory::register(Segment {
        name: NAME,
        size: std::mem::size_of::<Credentials>(),
        with_lock: true,
        attached,
    });
}

fn attached(memory: *mut u8) {
    // SAFETY: called once per process with the segment, under AddinShmemInitLock.
    unsafe {
        STATE = memory.cast();
        if (*STATE).initialized_at == 0 {
            (*STATE).initialized_at = pg_sys::GetCurrentTimestamp();
        }
    }
}

/// Whether the segment exists (the library was preloaded).
pub fn available() -> bool {
    // SAFETY: set once at attach.
    unsafe { !STATE.is_null() }
}

/// Runs `f` on the state under the lock in `mode`; `None` when not preloaded. `f` must not
/// raise an error: the lock would be held until the transaction's end.
fn locked<R>(mode: pg_sys::LWLockMode::Type, f: impl FnOnce(*mut Credentials) -> R) -> Option<R> {
    if !available() {
        return None;
    }
    // SAFETY: the lock and the state are in shared memory for the server's life; the state is
    // only touched under the lock.
    unsafe {
        let lock = shared_memory::lock_of(NAME);
        pg_sys::LWLockAcquire(lock, mode);
        let out = f(STATE);
        pg_sys::LWLockRelease(lock);
        Some(out)
    }
}

/// Reads the state under its lock, shared.
pub fn read<R>(f: impl FnOnce(&Credentials) -> R) -> Option<R> {
    // SAFETY: readers only, under the shared lock.
    locked(pg_sys::LWLockMode::LW_SHARED, |s| f(unsafe { &*s }))
}

/// Changes the state under its lock, exclusive.
pub fn write<R>(f: impl FnOnce(&mut Credentials) -> R) -> Option<R> {
    // SAFETY: the one writer, under the exclusive lock.
    locked(pg_sys::LWLockMode::LW_EXCLUSIVE, |s| {
        let s = unsafe { &mut *s };
        let out = f(s);
        s.roles_in_use = s.roles.iter().filter(|r| r.role != 0).count() as u32;
        out
    })
}

impl Credentials {
    fn role_slot(&self, role: u32) -> Option<usize> {
        self.roles.iter().position(|s| s.role == role)
    }

    /// The role's slot, made if need be: a free one, or one whose role has nothing left to
    /// keep (failures out of the window, lock over).
    fn role_slot_or_new(&mut self, role: u32, now: i64, policy: &LockoutPolicy) -> Option<usize> {
        if let Some(i) = self.role_slot(role) {
            return Some(i);
        }
        let free = self
            .roles
            .iter()
            .position(|s| s.role == 0 || s.state.is_clear(now, policy));
        match free {
            Some(i) => {
                self.roles[i] = RoleSlot {
                    role,
                    state: LockoutState::default(),
                };
                Some(i)
            }
            None => {
                self.untracked_total += 1;
                None
            }
        }
    }

    pub fn is_locked(&self, role: u32, now: i64) -> bool {
        self.role_slot(role)
            .is_some_and(|i| self.roles[i].state.is_locked(now))
    }

    /// Lifts every lock and count (the lockout was switched off).
    pub fn unlock_all(&mut self) {
        if self.roles.iter().any(|s| s.role != 0) {
            for s in self.roles.iter_mut() {
                *s = RoleSlot {
                    role: 0,
                    state: LockoutState::default(),
                };
            }
            self.generation += 1;
        }
    }

    /// Whether `role` has a slot (failures counted or a lock).
    pub fn tracks(&self, role: u32) -> bool {
        self.role_slot(role).is_some()
    }

    /// Roles locked at `now`.
    pub fn locked_count(&self, now: i64) -> usize {
        self.roles
            .iter()
            .filter(|s| s.role != 0 && s.state.is_locked(now))
            .count()
    }

    /// Counts a failed login of `role`.
    pub fn record_failure(
        &mut self,
        role: u32,
        now: i64,
        policy: &LockoutPolicy,
    ) -> FailureOutcome {
        let Some(i) = self.role_slot_or_new(role, now, policy) else {
            return FailureOutcome::Counted;
        };
        let outcome = self.roles[i].state.record_failure(now, policy);
        match outcome {
            FailureOutcome::Counted => self.failures_counted_total += 1,
            FailureOutcome::Locked => {
                self.failures_counted_total += 1;
                self.locks_total += 1;
            }
            FailureOutcome::AlreadyLocked => self.refused_while_locked_total += 1,
        }
        self.generation += 1;
        outcome
    }

    /// A successful login of `role`: clears its count unless it is locked (then the login is
    /// refused by the caller). Returns whether the role is locked.
    pub fn record_success(&mut self, role: u32, now: i64, policy: &LockoutPolicy) -> bool {
        let Some(i) = self.role_slot(role) else {
            return false;
        };
        if self.roles[i].state.is_locked(now) {
            self.refused_while_locked_total += 1;
            return true;
        }
        self.roles[i].state.record_success(now, policy);
        self.roles[i].role = 0;
        self.generation += 1;
        false
    }

    /// Lifts a role's lock and count; whether it was locked.
    pub fn unlock(&mut self, role: u32, now: i64) -> bool {
        let Some(i) = self.role_slot(role) else {
            return false;
        };
        let was = self.roles[i].state.is_locked(now);
        if was {
            self.unlocks_total += 1;
        }
        self.roles[i] = RoleSlot {
            role: 0,
            state: LockoutState::default(),
        };
        self.generation += 1;
        was
    }

    /// One role's history entries.
    pub fn history_of(&self, role: u32) -> Vec<HistoryEntry> {
        self.history
            .iter()
            .filter(|s| s.role == role)
            .filter_map(HistorySlot::entry)
            .collect()
    }

    /// Adds a history entry (an identical one is kept once). A role with `HISTORY_PER_ROLE`
    /// entries loses its own oldest; when the table is full, the oldest entry of the role with
    /// the most entries goes (counted in `history_evicted_total`).
    pub fn add_history(&mut self, role: u32, entry: &HistoryEntry) {
        if self
            .history
            .iter()
            .any(|s| s.role == role && s.set_at == entry.set_at && s.hash == entry.hash)
        {
            return;
        }
        let own = self.history.iter().filter(|s| s.role == role).count();
        let i = if own >= HISTORY_PER_ROLE {
            self.oldest_of(role)
        } else if let Some(free) = self.history.iter().position(|s| s.role == 0) {
            Some(free)
        } else {
            self.history_evicted_total += 1;
            let mut counts: Vec<u32> = self.history.iter().map(|s| s.role).collect();
            counts.sort_unstable();
            let biggest = counts
                .chunk_by(|a, b| a == b)
                .max_by_key(|run| run.len())
                .map_or(role, |run| run[0]);
            self.oldest_of(biggest)
        };
        let Some(i) = i else { return };
        self.history[i] = HistorySlot {
            role,
            kind: entry.kind as u8,
            set_at: entry.set_at,
            salt: entry.salt,
            hash: entry.hash,
        };
        self.generation += 1;
    }

    fn oldest_of(&self, role: u32) -> Option<usize> {
        self.history
            .iter()
            .enumerate()
            .filter(|(_, s)| s.role == role)
            .min_by_key(|(_, s)| s.set_at)
            .map(|(i, _)| i)
    }

    /// The earliest end of a lock still to come, and whether a lock has ended that the worker
    /// has not yet cleared (its VALID UNTIL is to be given back).
    pub fn lock_ends(&self, now: i64) -> (Option<i64>, bool) {
        let mut next = None::<i64>;
        let mut ended = false;
        for s in self
            .roles
            .iter()
            .filter(|s| s.role != 0 && s.state.locked_at != 0)
        {
            if s.state.locked_until <= now {
                ended = true;
            } else if s.state.locked_until != UNTIL_UNLOCKED {
                next = Some(next.map_or(s.state.locked_until, |n| n.min(s.state.locked_until)));
            }
        }
        (next, ended)
    }

    /// Frees the slots of roles with nothing left to keep (ended locks, old failures).
    pub fn drop_clear(&mut self, now: i64, policy: &LockoutPolicy) {
        let mut changed = false;
        for s in self
            .roles
            .iter_mut()
            .filter(|s| s.role != 0 && s.state.is_clear(now, policy))
        {
            s.role = 0;
            s.state = LockoutState::default();
            changed = true;
        }
        if changed {
            self.generation += 1;
        }
    }

    /// Forgets every entry of the given roles (dropped ones).
    pub fn forget_roles(&mut self, roles: &[u32]) {
        for s in self.roles.iter_mut().filter(|s| roles.contains(&s.role)) {
            s.role = 0;
            s.state = LockoutState::default();
        }
        for s in self.history.iter_mut().filter(|s| roles.contains(&s.role)) {
            s.role = 0;
        }
        self.generation += 1;
    }

    /// Keeps of each role's history only the entries `keep` says are still in force.
    pub fn prune_history(&mut self, keep: impl Fn(u32, &[HistoryEntry]) -> Vec<HistoryEntry>) {
        let mut roles: Vec<u32> = self
            .history
            .iter()
            .map(|s| s.role)
            .filter(|r| *r != 0)
            .collect();
        roles.sort_unstable();
        roles.dedup();
        for role in roles {
            let entries = self.history_of(role);
            let kept = keep(role, &entries);
            if kept.len() == entries.len() {
                continue;
            }
            for s in self.history.iter_mut().filter(|s| s.role == role) {
                if s.entry().is_none_or(|e| !kept.contains(&e)) {
                    s.role = 0;
                }
            }
            self.generation += 1;
        }
    }

    /// Tracked roles (locked or with failures) and every history entry, for persisting.
    pub fn snapshot(&self) -> (Vec<RoleSlot>, Vec<HistorySlot>) {
        (
            self.roles.iter().filter(|s| s.role != 0).copied().collect(),
            self.history
                .iter()
                .filter(|s| s.role != 0)
                .copied()
                .collect(),
        )
    }

    /// Adds what was persisted to what was counted since the start: a lock stays (the later
    /// end wins), failures add up.
    pub fn merge_persisted(
        &mut self,
        roles: &[RoleSlot],
        history: &[HistorySlot],
        now: i64,
        policy: &LockoutPolicy,
    ) {
        for persisted in roles {
            let Some(i) = self.role_slot_or_new(persisted.role, now, policy) else {
                continue;
            };
            let mine = &mut self.roles[i].state;
            let theirs = persisted.state;
            if mine.failures == 0 {
                *mine = theirs;
            } else {
                mine.failures = mine.failures.saturating_add(theirs.failures);
                mine.first_failure_at = mine.first_failure_at.min(theirs.first_failure_at);
                if theirs.locked_at != 0 && theirs.locked_until > mine.locked_until {
                    mine.locked_at = theirs.locked_at;
                    mine.locked_until = theirs.locked_until;
                }
            }
        }
        for h in history {
            if let Some(e) = h.entry() {
                self.add_history(h.role, &e);
            }
        }
        self.loaded = true;
        self.generation += 1;
    }
}
