//! Credentials beyond a password's shape: which earlier passwords a new one may not repeat
//! (history and reuse interval), and when failed logins lock a role (lockout). Decisions only;
//! the server keeps the state (shared memory, persisted by the worker).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// PBKDF2 rounds of a history entry: SCRAM-SHA-256's default, so a copied history costs a
/// guesser what a copied pg_authid does.
pub const HASH_ROUNDS: u32 = 4096;
pub const SALT_LEN: usize = 16;

/// What a history entry was made from: a password in plain text, or a verifier sent already
/// hashed (psql's `\password`), which can only be compared with the same verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SecretKind {
    Plain = 1,
    Verifier = 2,
}

impl SecretKind {
    pub fn from_u8(v: u8) -> Option<SecretKind> {
        match v {
            1 => Some(SecretKind::Plain),
            2 => Some(SecretKind::Verifier),
            _ => None,
        }
    }
}

/// PBKDF2-HMAC-SHA-256 with a 32-byte result (one block).
pub fn pbkdf2_sha256(secret: &[u8], salt: &[u8], rounds: u32) -> [u8; 32] {
    let mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    let mut first = mac.clone();
    first.update(salt);
    first.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = first.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..rounds {
        let mut next = mac.clone();
        next.update(&u);
        u = next.finalize().into_bytes().into();
        for (o, b) in out.iter_mut().zip(u) {
            *o ^= b;
        }
    }
    out
}

/// The stored form of a secret: its kind is part of the hashed input, so a verifier never
/// matches a password that happens to be spelled like one.
pub fn history_hash(kind: SecretKind, secret: &[u8], salt: &[u8]) -> [u8; 32] {
    let mut input = Vec::with_capacity(secret.len() + 1);
    input.push(kind as u8);
    input.extend_from_slice(secret);
    pbkdf2_sha256(&input, salt, HASH_ROUNDS)
}

/// A password a role had, as kept: never the password, never PostgreSQL's verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Microseconds, any epoch (the caller's clock).
    pub set_at: i64,
    pub kind: SecretKind,
    pub salt: [u8; SALT_LEN],
    pub hash: [u8; 32],
}

impl HistoryEntry {
    /// The entry for a secret set at `set_at`, with a fresh random salt.
    pub fn new(kind: SecretKind, secret: &[u8], set_at: i64) -> Result<HistoryEntry, String> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::getrandom(&mut salt).map_err(|e| format!("no randomness for a salt: {e}"))?;
        Ok(HistoryEntry {
            set_at,
            kind,
            salt,
            hash: history_hash(kind, secret, &salt),
        })
    }
}

/// The reuse rules: the last `history` passwords, and any set within `interval_micros`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReusePolicy {
    pub history: u32,
    pub interval_micros: i64,
}

impl ReusePolicy {
    pub fn enabled(&self) -> bool {
        self.history > 0 || self.interval_micros > 0
    }

    /// The entries a new password is compared with: the `history` newest, and every one set
    /// within the interval before `now`. `entries` are one role's, in any order.
    pub fn in_force<'a>(&self, entries: &'a [HistoryEntry], now: i64) -> Vec<&'a HistoryEntry> {
        let mut newest_first: Vec<&HistoryEntry> = entries.iter().collect();
        newest_first.sort_by_key(|e| std::cmp::Reverse(e.set_at));
        newest_first
            .into_iter()
            .enumerate()
            .filter(|(i, e)| {
                (*i as u64) < u64::from(self.history)
                    || (self.interval_micros > 0
                        && now.saturating_sub(e.set_at) < self.interval_micros)
            })
            .map(|(_, e)| e)
            .collect()
    }

    /// Whether `secret` repeats an entry in force: the first such entry.
    pub fn reused<'a>(
        &self,
        entries: &'a [HistoryEntry],
        kind: SecretKind,
        secret: &[u8],
        now: i64,
    ) -> Option<&'a HistoryEntry> {
        self.in_force(entries, now)
            .into_iter()
            .filter(|e| e.kind == kind)
            .find(|e| constant_time_eq(&history_hash(kind, secret, &e.salt), &e.hash))
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// When failed logins lock a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failed logins that lock; 0: lockout off.
    pub max_failures: u32,
    /// Failures count within this long of the first one counted.
    pub window_micros: i64,
    /// How long a lock lasts; `None`: until unlocked.
    pub duration_micros: Option<i64>,
}

/// `locked_until` of a lock that lasts until `unlock_role`.
pub const UNTIL_UNLOCKED: i64 = i64::MAX;

/// One role's failed logins and lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct LockoutState {
    pub failures: u32,
    /// When the first failure now counted happened.
    pub first_failure_at: i64,
    /// When the role was locked; 0: not locked.
    pub locked_at: i64,
    /// When the lock ends ([`UNTIL_UNLOCKED`]: never by itself).
    pub locked_until: i64,
}

/// What a failed login did to the role's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Counted; the role is not locked.
    Counted,
    /// This failure locked the role.
    Locked,
    /// The role was locked already: nothing counted.
    AlreadyLocked,
}

impl LockoutState {
    pub fn is_locked(&self, now: i64) -> bool {
        self.locked_at != 0 && now < self.locked_until
    }

    /// Forgets a lock that has run out and failures outside the window.
    fn expire(&mut self, now: i64, policy: &LockoutPolicy) {
        if self.locked_at != 0 && now >= self.locked_until {
            *self = LockoutState::default();
        }
        if self.locked_at == 0
            && self.failures > 0
            && now.saturating_sub(self.first_failure_at) >= policy.window_micros
        {
            *self = LockoutState::default();
        }
    }

    /// Counts a failed login at `now`.
    pub fn record_failure(&mut self, now: i64, policy: &LockoutPolicy) -> FailureOutcome {
        self.expire(now, policy);
        if self.is_locked(now) {
            return FailureOutcome::AlreadyLocked;
        }
        if self.failures == 0 {
            self.first_failure_at = now;
        }
        self.failures = self.failures.saturating_add(1);
        if policy.max_failures > 0 && self.failures >= policy.max_failures {
            self.locked_at = now;
            self.locked_until = policy
                .duration_micros
                .map_or(UNTIL_UNLOCKED, |d| now.saturating_add(d));
            return FailureOutcome::Locked;
        }
        FailureOutcome::Counted
    }

    /// A successful login (of a role not locked) clears the count.
    pub fn record_success(&mut self, now: i64, policy: &LockoutPolicy) {
        self.expire(now, policy);
        if !self.is_locked(now) {
            *self = LockoutState::default();
        }
    }

    /// Whether nothing is left worth keeping.
    pub fn is_clear(&self, now: i64, policy: &LockoutPolicy) -> bool {
        let mut copy = *self;
        copy.expire(now, policy);
        copy == LockoutState::default()
    }
}

/// Whether a role name is in a comma-separated list (`lockout_exempt_roles`); names compare
/// as PostgreSQL's identifiers do once unquoted: exactly, after trimming spaces and quotes.
pub fn role_listed(list: &str, role: &str) -> bool {
    list.split(',')
        .map(|n| n.trim().trim_matches('"'))
        .any(|n| !n.is_empty() && n == role)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn pbkdf2_matches_published_vectors() {
        assert_eq!(
            hex(&pbkdf2_sha256(b"password", b"salt", 1)),
            "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"
        );
        assert_eq!(
            hex(&pbkdf2_sha256(b"password", b"salt", 2)),
            "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43"
        );
        assert_eq!(
            hex(&pbkdf2_sha256(b"password", b"salt", 4096)),
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"
        );
    }

    fn entry(set_at: i64, secret: &str, salt: u8) -> HistoryEntry {
        let salt = [salt; SALT_LEN];
        HistoryEntry {
            set_at,
            kind: SecretKind::Plain,
            salt,
            hash: history_hash(SecretKind::Plain, secret.as_bytes(), &salt),
        }
    }

    const DAY: i64 = 86_400_000_000;

    #[test]
    fn history_counts_the_newest_entries() {
        let entries = [entry(1, "one", 1), entry(2, "two", 2), entry(3, "three", 3)];
        let policy = ReusePolicy {
            history: 2,
            interval_micros: 0,
        };
        let now = 10 * DAY;
        assert!(policy
            .reused(&entries, SecretKind::Plain, b"three", now)
            .is_some());
        assert!(policy
            .reused(&entries, SecretKind::Plain, b"two", now)
            .is_some());
        assert!(policy
            .reused(&entries, SecretKind::Plain, b"one", now)
            .is_none());
        assert!(policy
            .reused(&entries, SecretKind::Plain, b"four", now)
            .is_none());
        // A verifier spelled like a password is another secret.
        assert!(policy
            .reused(&entries, SecretKind::Verifier, b"three", now)
            .is_none());
    }

    #[test]
    fn interval_counts_recent_entries_beyond_the_history() {
        let entries = [
            entry(0, "old", 1),
            entry(5 * DAY, "recent", 2),
            entry(6 * DAY, "newest", 3),
        ];
        let policy = ReusePolicy {
            history: 1,
            interval_micros: 3 * DAY,
        };
        let now = 7 * DAY;
        assert!(policy
            .reused(&entries, SecretKind::Plain, b"recent", now)
            .is_some());
        assert!(policy
            .reused(&entries, SecretKind::Plain, b"old", now)
            .is_none());
        // Once the interval has passed, only the history counts.
        assert!(policy
            .reused(&entries, SecretKind::Plain, b"recent", 9 * DAY)
            .is_none());
        assert!(policy
            .reused(&entries, SecretKind::Plain, b"newest", 100 * DAY)
            .is_some());
        assert!(!ReusePolicy::default().enabled());
        let fresh = HistoryEntry::new(SecretKind::Plain, b"recent", 8 * DAY).unwrap();
        let again = HistoryEntry::new(SecretKind::Plain, b"recent", 8 * DAY).unwrap();
        assert_ne!(fresh.salt, again.salt, "each entry is salted afresh");
        assert_ne!(fresh.hash, again.hash);
        assert!(policy
            .reused(&[fresh], SecretKind::Plain, b"recent", 9 * DAY)
            .is_some());
    }

    fn policy() -> LockoutPolicy {
        LockoutPolicy {
            max_failures: 3,
            window_micros: 60_000_000,
            duration_micros: Some(600_000_000),
        }
    }

    #[test]
    fn the_nth_failure_locks_and_later_ones_are_not_counted() {
        let mut s = LockoutState::default();
        assert_eq!(s.record_failure(1, &policy()), FailureOutcome::Counted);
        assert_eq!(s.record_failure(2, &policy()), FailureOutcome::Counted);
        assert_eq!(s.record_failure(3, &policy()), FailureOutcome::Locked);
        assert!(s.is_locked(4));
        for t in 4..100 {
            assert_eq!(
                s.record_failure(t, &policy()),
                FailureOutcome::AlreadyLocked
            );
        }
        assert_eq!(s.failures, 3);
        // A right password while locked changes nothing.
        s.record_success(200, &policy());
        assert!(s.is_locked(201));
        // The lock runs out.
        assert!(!s.is_locked(3 + 600_000_000));
        assert!(s.is_clear(3 + 600_000_000, &policy()));
    }

    #[test]
    fn failures_outside_the_window_and_successes_reset_the_count() {
        let mut s = LockoutState::default();
        s.record_failure(0, &policy());
        s.record_failure(1, &policy());
        assert_eq!(
            s.record_failure(60_000_000, &policy()),
            FailureOutcome::Counted
        );
        assert_eq!(s.failures, 1);
        s.record_success(60_000_001, &policy());
        assert_eq!(s, LockoutState::default());
        let forever = LockoutPolicy {
            duration_micros: None,
            ..policy()
        };
        for t in 0..3 {
            s.record_failure(t, &forever);
        }
        assert!(s.is_locked(i64::MAX - 1));
        assert!(!s.is_clear(i64::MAX - 1, &forever));
    }

    #[test]
    fn exempt_list() {
        assert!(role_listed("app, \"Ops Admin\" ,batch", "Ops Admin"));
        assert!(role_listed("app,batch", "batch"));
        assert!(!role_listed("app,batch", "App"));
        assert!(!role_listed("", "app"));
    }
}
