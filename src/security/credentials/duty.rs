//! The worker's keeping of the credentials' state: loads what it persisted once after a start,
//! writes every change into admin_toolkit.role_lockouts and password_history (shared memory's
//! state over the tables', in one transaction), locks locked roles in the catalog and gives
//! them back their VALID UNTIL when the lock ends, forgets dropped roles and history entries no
//! rule needs any more.

use super::state::{self, HistorySlot, RoleSlot};
use crate::transaction::step::run_step;
use crate::worker::duty::{Context, Duty};
use admin_toolkit_core::credentials::{LockoutState, SecretKind, UNTIL_UNLOCKED};
use pgrx::prelude::*;
use std::time::{Duration, Instant};

pub const NAME: &str = "credentials";

/// How often dropped roles and expired entries are looked for without any change.
const UPKEEP_EVERY: Duration = Duration::from_secs(60);
/// Wait after a failed step before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct CredentialKeeper {
    /// The state's generation last written to the tables.
    persisted: Option<u64>,
    next_upkeep: Option<Instant>,
    /// After a failed pass: not before then.
    retry_at: Option<Instant>,
    /// The earliest end of a lock to come (PostgreSQL timestamp), as `due` last saw.
    next_lock_end: Option<i64>,
}

impl Duty for CredentialKeeper {
    fn name(&self) -> &'static str {
        NAME
    }

    fn due(&mut self, _: &Context) -> bool {
        // SAFETY: reads the clock.
        let clock = unsafe { pg_sys::GetCurrentTimestamp() };
        let Some((loaded, generation, (next_end, ended))) =
            state::read(|s| (s.loaded, s.generation, s.lock_ends(clock)))
        else {
            return false;
        };
        self.next_lock_end = next_end;
        let now = Instant::now();
        if self.retry_at.is_some_and(|t| now < t) {
            return false;
        }
        self.next_upkeep.is_none_or(|t| now >= t)
            || !loaded
            || ended
            || self.persisted != Some(generation)
    }

    fn wait(&self) -> Option<Duration> {
        // SAFETY: reads the clock.
        let now = unsafe { pg_sys::GetCurrentTimestamp() };
        let until_lock_end = self
            .next_lock_end
            .map(|end| Duration::from_micros(u64::try_from(end - now).unwrap_or(0)));
        let until_pass = self
            .retry_at
            .or(self.next_upkeep)
            .map(|t| t.saturating_duration_since(Instant::now()));
        match (until_pass, until_lock_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn run(&mut self, _: &mut Context) {
        let persisted = self.persisted;
        match run_step("credentials", || keep(persisted)) {
            Some(Ok(generation)) => {
                self.persisted = Some(generation);
                self.next_upkeep = Some(Instant::now() + UPKEEP_EVERY);
                self.retry_at = None;
            }
            Some(Err(e)) => {
                log!("admin_toolkit worker: credentials could not be persisted and will be retried: {e}");
                self.retry_at = Some(Instant::now() + RETRY_AFTER);
            }
            // run_step logged the error.
            None => self.retry_at = Some(Instant::now() + RETRY_AFTER),
        }
    }

    /// A role was dropped, or the state changed: a pass now.
    fn woken(&mut self) {
        self.next_upkeep = None;
    }

    fn restart(&mut self) {
        *self = CredentialKeeper::default();
    }

    fn shutdown(&mut self) {
        let generation = state::read(|s| s.generation);
        if generation.is_some() && generation != self.persisted {
            self.run(&mut Context::default());
        }
    }
}

/// Microseconds since 2000-01-01 of a timestamptz expression, exactly.
const MICROS_OF: &str = "((pg_catalog.extract('epoch', {}) OPERATOR(pg_catalog.*) 1000000)::int8 OPERATOR(pg_catalog.-) 946684800000000)";
/// A timestamptz of microseconds since 2000-01-01, exactly: seconds and microseconds apart, so
/// that neither product with an interval (computed in float8) exceeds 2^53.
const TIMESTAMP_OF: &str = "('2000-01-01 00:00:00+00'::timestamptz \
    OPERATOR(pg_catalog.+) (({} OPERATOR(pg_catalog./) 1000000) OPERATOR(pg_catalog.*) interval '1 second') \
    OPERATOR(pg_catalog.+) (({} OPERATOR(pg_catalog.%) 1000000) OPERATOR(pg_catalog.*) interval '1 microsecond'))";

fn micros_of(column: &str) -> String {
    MICROS_OF.replace("{}", column)
}

fn timestamp_of(value: &str) -> String {
    TIMESTAMP_OF.replace("{}", value)
}

/// One pass: load (once), forget dropped roles and expired history, persist what changed since
/// generation `persisted`. Returns the generation the tables now hold.
fn keep(persisted: Option<u64>) -> spi::Result<u64> {
    let present = Spi::get_one::<bool>(
        "SELECT pg_catalog.to_regclass('admin_toolkit.role_lockouts') IS NOT NULL",
    )?
    .unwrap_or(false);
    // SAFETY: reads the clock.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    // A session holding a row of role_lockouts or a role's pg_authid row must not stall the
    // worker (every duty waits on it): give up and retry.
    Spi::run("SET LOCAL lock_timeout = '5s'")?;
    if !present {
        // A schema older than 0.7.0: nothing persisted to load, nowhere to persist.
        return Ok(state::write(|s| {
            s.loaded = true;
            s.generation
        })
        .unwrap_or(0));
    }
    if !state::read(|s| s.loaded).unwrap_or(true) {
        let (roles, history) = load()?;
        let policy = super::lockout_policy();
        state::write(|s| s.merge_persisted(&roles, &history, now, &policy));
        log!(
            "admin_toolkit worker: credentials loaded ({} roles with failed logins or a lock, {} password history entries)",
            roles.len(),
            history.len()
        );
    }
    forget_dropped_roles()?;
    let reuse = super::reuse_policy();
    if reuse.enabled() {
        state::write(|s| {
            s.prune_history(|_, entries| {
                reuse.in_force(entries, now).into_iter().copied().collect()
            })
        });
    }
    let lockout = super::lockout_policy();
    state::write(|s| {
        if lockout.max_failures == 0 {
            s.unlock_all();
        }
        s.drop_clear(now, &lockout)
    });
    let generation = match state::read(|s| s.generation) {
        Some(generation) if Some(generation) == persisted => generation,
        _ => persist()?,
    };
    lock_in_catalog()?;
    Ok(generation)
}

/// The statement giving roles their own VALID UNTIL back, for the rows (`role_oid`,
/// `saved_valid_until`) of `source`; a value changed since the lock (no longer '-infinity') is
/// left as it is. Every place that lifts a catalog lock uses it.
pub fn give_back_valid_until(source: &str) -> String {
    format!(
        "UPDATE pg_catalog.pg_authid a SET rolvaliduntil = e.saved_valid_until \
           FROM {source} e \
          WHERE a.oid OPERATOR(pg_catalog.=) e.role_oid \
            AND a.rolvaliduntil OPERATOR(pg_catalog.=) '-infinity'::pg_catalog.timestamptz"
    )
}

/// A locked role's password counts as expired (`rolvaliduntil = '-infinity'`, its own value
/// kept in role_lockouts) until the lock ends: PostgreSQL's own password check then fails, with
/// its own message and its mock SCRAM exchange, so a right password gets exactly what a wrong
/// one gets (a SCRAM server signature is sent before any hook runs). A VALID UNTIL set during
/// the lock is kept in its turn and replaced again; a role already at '-infinity' (disabled by
/// hand) is left alone. The value is given back when the lock ends, unless someone changed it
/// meanwhile.
fn lock_in_catalog() -> spi::Result<()> {
    let locked = Spi::get_one::<i64>(
        "WITH locking AS ( \
             UPDATE admin_toolkit.role_lockouts l \
                SET valid_until_locked = true, saved_valid_until = a.rolvaliduntil \
               FROM pg_catalog.pg_authid a \
              WHERE a.oid OPERATOR(pg_catalog.=) l.role_oid \
                AND a.rolvaliduntil IS DISTINCT FROM '-infinity'::timestamptz \
                AND l.locked_at IS NOT NULL \
                AND (l.locked_until IS NULL OR l.locked_until OPERATOR(pg_catalog.>) pg_catalog.now()) \
             RETURNING l.role_oid), \
         applied AS ( \
             UPDATE pg_catalog.pg_authid SET rolvaliduntil = '-infinity' \
              WHERE oid IN (SELECT role_oid FROM locking) RETURNING oid) \
         SELECT pg_catalog.count(*) FROM applied",
    )?
    .unwrap_or(0);
    let unlocked = Spi::get_one::<i64>(&format!(
        "WITH ending AS ( \
             UPDATE admin_toolkit.role_lockouts SET valid_until_locked = false \
              WHERE valid_until_locked \
                AND NOT (locked_at IS NOT NULL \
                         AND (locked_until IS NULL OR locked_until OPERATOR(pg_catalog.>) pg_catalog.now())) \
             RETURNING role_oid, saved_valid_until), \
         restored AS ({} RETURNING a.oid) \
         SELECT pg_catalog.count(*) FROM restored",
        give_back_valid_until("ending")
    ))?
    .unwrap_or(0);
    Spi::run(
        "DELETE FROM admin_toolkit.role_lockouts \
          WHERE failed_logins OPERATOR(pg_catalog.=) 0 AND locked_at IS NULL AND NOT valid_until_locked",
    )?;
    if locked > 0 || unlocked > 0 {
        log!(
            "admin_toolkit worker: lockout: {locked} role(s) locked in the catalog (password expired), {unlocked} given back their VALID UNTIL"
        );
    }
    Ok(())
}

fn load() -> spi::Result<(Vec<RoleSlot>, Vec<HistorySlot>)> {
    let roles_query = format!(
        "SELECT role_oid, failed_logins, coalesce({}, 0), coalesce({}, 0), \
                CASE WHEN locked_at IS NULL THEN 0 ELSE coalesce({}, {UNTIL_UNLOCKED}) END \
           FROM admin_toolkit.role_lockouts WHERE failed_logins <> 0 OR locked_at IS NOT NULL",
        micros_of("first_failure_at"),
        micros_of("locked_at"),
        micros_of("locked_until"),
    );
    let history_query = format!(
        "SELECT role_oid, {}, secret_kind, salt, hash FROM admin_toolkit.password_history",
        micros_of("set_at")
    );
    Spi::connect(|client| {
        let mut roles = Vec::new();
        for row in client.select(&roles_query, None, &[])? {
            roles.push(RoleSlot {
                role: u32::from(row.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid)),
                state: LockoutState {
                    failures: u32::try_from(row.get::<i32>(2)?.unwrap_or(0)).unwrap_or(0),
                    first_failure_at: row.get::<i64>(3)?.unwrap_or(0),
                    locked_at: row.get::<i64>(4)?.unwrap_or(0),
                    locked_until: row.get::<i64>(5)?.unwrap_or(0),
                },
            });
        }
        let mut history = Vec::new();
        for row in client.select(&history_query, None, &[])? {
            let kind = match row.get::<String>(3)?.as_deref() {
                Some("verifier") => SecretKind::Verifier,
                _ => SecretKind::Plain,
            };
            let (Ok(salt), Ok(hash)) = (
                row.get::<Vec<u8>>(4)?.unwrap_or_default().try_into(),
                row.get::<Vec<u8>>(5)?.unwrap_or_default().try_into(),
            ) else {
                continue;
            };
            history.push(HistorySlot {
                role: u32::from(row.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid)),
                kind: kind as u8,
                set_at: row.get::<i64>(2)?.unwrap_or(0),
                salt,
                hash,
            });
        }
        roles.retain(|r| r.role != 0);
        history.retain(|h| h.role != 0);
        Ok((roles, history))
    })
}

/// Entries of roles that no longer exist go with them (renamed roles keep theirs: the key is
/// the role's OID).
fn forget_dropped_roles() -> spi::Result<()> {
    let (roles, history) = state::read(|s| s.snapshot()).unwrap_or_default();
    let mut oids: Vec<pg_sys::Oid> = roles
        .iter()
        .map(|r| r.role)
        .chain(history.iter().map(|h| h.role))
        .map(pg_sys::Oid::from)
        .collect();
    oids.sort_unstable_by_key(|o| u32::from(*o));
    oids.dedup();
    if oids.is_empty() {
        return Ok(());
    }
    let gone: Vec<u32> = Spi::connect(|client| {
        let mut gone = Vec::new();
        for row in client.select(
            "SELECT r FROM pg_catalog.unnest($1::pg_catalog.oid[]) r \
              WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_authid a WHERE a.oid OPERATOR(pg_catalog.=) r)",
            None,
            &[oids.into()],
        )? {
            if let Some(oid) = row.get::<pg_sys::Oid>(1)? {
                gone.push(u32::from(oid));
            }
        }
        Ok::<_, spi::Error>(gone)
    })?;
    if !gone.is_empty() {
        state::write(|s| s.forget_roles(&gone));
    }
    Ok(())
}

/// Writes shared memory's state over the tables', in the caller's transaction.
fn persist() -> spi::Result<u64> {
    let Some((generation, (roles, history))) = state::read(|s| (s.generation, s.snapshot())) else {
        return Ok(0);
    };
    let role_oids: Vec<pg_sys::Oid> = roles.iter().map(|r| pg_sys::Oid::from(r.role)).collect();
    let failures: Vec<i32> = roles
        .iter()
        .map(|r| i32::try_from(r.state.failures).unwrap_or(i32::MAX))
        .collect();
    let first: Vec<i64> = roles.iter().map(|r| r.state.first_failure_at).collect();
    let locked_at: Vec<i64> = roles.iter().map(|r| r.state.locked_at).collect();
    let locked_until: Vec<i64> = roles.iter().map(|r| r.state.locked_until).collect();
    Spi::run_with_args(
        &format!(
            "INSERT INTO admin_toolkit.role_lockouts (role_oid, failed_logins, first_failure_at, locked_at, locked_until) \
             SELECT o, n, CASE WHEN f <> 0 THEN {} END, CASE WHEN a <> 0 THEN {} END, \
                    CASE WHEN a <> 0 AND u <> {UNTIL_UNLOCKED} THEN {} END \
               FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.oid[]), pg_catalog.unnest($2::int4[]), pg_catalog.unnest($3::int8[]), \
                              pg_catalog.unnest($4::int8[]), pg_catalog.unnest($5::int8[])) AS t(o, n, f, a, u) \
             ON CONFLICT (role_oid) DO UPDATE SET failed_logins = EXCLUDED.failed_logins, \
                    first_failure_at = EXCLUDED.first_failure_at, locked_at = EXCLUDED.locked_at, \
                    locked_until = EXCLUDED.locked_until",
            timestamp_of("f"),
            timestamp_of("a"),
            timestamp_of("u"),
        ),
        &[
            role_oids.clone().into(),
            failures.into(),
            first.into(),
            locked_at.into(),
            locked_until.into(),
        ],
    )?;
    // Roles no longer tracked: nothing counted, no lock (their VALID UNTIL is given back next).
    Spi::run_with_args(
        "UPDATE admin_toolkit.role_lockouts \
            SET failed_logins = 0, first_failure_at = NULL, locked_at = NULL, locked_until = NULL \
          WHERE role_oid OPERATOR(pg_catalog.<>) ALL ($1::pg_catalog.oid[]) \
            AND (failed_logins OPERATOR(pg_catalog.<>) 0 OR locked_at IS NOT NULL)",
        &[role_oids.into()],
    )?;
    let history_oids: Vec<pg_sys::Oid> =
        history.iter().map(|h| pg_sys::Oid::from(h.role)).collect();
    let set_at: Vec<i64> = history.iter().map(|h| h.set_at).collect();
    let kinds: Vec<&str> = history
        .iter()
        .map(|h| match SecretKind::from_u8(h.kind) {
            Some(SecretKind::Verifier) => "verifier",
            _ => "password",
        })
        .collect();
    let salts: Vec<Vec<u8>> = history.iter().map(|h| h.salt.to_vec()).collect();
    let hashes: Vec<Vec<u8>> = history.iter().map(|h| h.hash.to_vec()).collect();
    Spi::run("DELETE FROM admin_toolkit.password_history")?;
    Spi::run_with_args(
        &format!(
            "INSERT INTO admin_toolkit.password_history (role_oid, set_at, secret_kind, salt, hash) \
             SELECT o, {}, k, s, h \
               FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.oid[]), pg_catalog.unnest($2::int8[]), pg_catalog.unnest($3::text[]), \
                              pg_catalog.unnest($4::bytea[]), pg_catalog.unnest($5::bytea[])) AS t(o, a, k, s, h) \
             ON CONFLICT DO NOTHING",
            timestamp_of("a"),
        ),
        &[
            history_oids.into(),
            set_at.into(),
            kinds.into(),
            salts.into(),
            hashes.into(),
        ],
    )?;
    Ok(generation)
}
