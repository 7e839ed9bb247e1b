//! The worker's duty of turning the audit journal into rows of security_audit_log, batch by
//! batch, summarising table reads every admin_toolkit.audit_read_interval seconds, and writing
//! whatever is still waiting when the worker stops.

use super::journal::{self, JournalRead};
use super::{
    insert_rows, queue, write_queued_events, write_read_summaries, AuditRow, JournalOrigin, BATCH,
};
use crate::settings;
use crate::transaction::step::run_step;
use crate::worker::duty::{Context, Duty};
use admin_toolkit_core::lsn::Lsn;
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// Longest an audit event waits in WAL while the worker works.
const AUDIT_TICK: Duration = Duration::from_secs(1);
/// Most WAL read in one transaction.
const READ_BYTES: u64 = 64 << 20;
/// WAL read without finding an event is stored as read this often (by size or by time), so
/// that an idle journal costs no writes and the slot still moves on.
const STORE_BYTES: u64 = 16 << 20;
const STORE_EVERY: Duration = Duration::from_secs(60);

/// Where the worker is in the journal.
#[derive(Default, Clone, Copy)]
struct Cursor {
    /// The position last committed to audit_journal (by this worker or, on a promoted standby
    /// or restored copy, by the primary's).
    stored: Option<u64>,
    /// Where reading goes on: at or past `stored`.
    scanned: u64,
    stored_at: Option<Instant>,
}

#[derive(Default)]
pub struct AuditWriter {
    /// When table reads were last summarised into the audit log.
    last_read_summary: Option<Instant>,
    /// Audit events dropped (queue full) as last reported.
    dropped_reported: (u64, u64),
    cursor: Cursor,
    /// Whether the slot could not be created, as last said in the log.
    said_no_slot: bool,
    /// Whether the slot was seen (or made) since the worker started.
    slot_kept: bool,
}

/// What one transaction of journal reading did.
struct Progress {
    stored: u64,
    stored_now: bool,
    scanned: u64,
    more: bool,
}

fn stored_position() -> spi::Result<Option<u64>> {
    let exists = Spi::get_one::<bool>(
        "SELECT pg_catalog.to_regclass('admin_toolkit.audit_journal') IS NOT NULL",
    )?;
    if exists != Some(true) {
        return Ok(None); // the schema predates the journal: ALTER EXTENSION UPDATE brings it
    }
    let stored = Spi::get_one::<i64>(
        "SELECT (read_through OPERATOR(pg_catalog.-) '0/0'::pg_lsn)::int8 FROM admin_toolkit.audit_journal",
    );
    match stored {
        Ok(Some(p)) => Ok(Some(p as u64)),
        // The row was deleted: put back from where WAL is still kept, and say so.
        Ok(None) | Err(spi::SpiError::InvalidPosition) => {
            let redo = Spi::get_one::<i64>(
                "SELECT ((pg_catalog.pg_control_checkpoint()).redo_lsn OPERATOR(pg_catalog.-) '0/0'::pg_lsn)::int8",
            )?
            .unwrap_or(0) as u64;
            Spi::run_with_args(
                "INSERT INTO admin_toolkit.audit_journal (read_through) \
                 VALUES ('0/0'::pg_lsn OPERATOR(pg_catalog.+) $1::numeric)",
                &[(redo as i64).into()],
            )?;
            record_gap(0, redo, "the audit_journal row was deleted by hand; reading went on from the last checkpoint")?;
            Ok(Some(redo))
        }
        Err(e) => Err(e),
    }
}

fn store_position(position: u64) -> spi::Result<()> {
    Spi::run_with_args(
        "UPDATE admin_toolkit.audit_journal \
            SET read_through = '0/0'::pg_lsn OPERATOR(pg_catalog.+) $1::numeric, updated_at = pg_catalog.now()",
        &[(position as i64).into()],
    )
}

/// Reads the journal on from where the cursor is, writes the events found and, with them (or
/// when enough WAL was read without any), the new position, in one transaction.
fn write_journal(cursor: Cursor) -> spi::Result<Option<Progress>> {
    let Some(stored) = stored_position()? else {
        return Ok(None);
    };
    let from = match cursor.stored {
        Some(s) if s == stored => cursor.scanned.max(stored),
        // Moved by someone else since this worker stored it: forward would skip events (a
        // gap, recorded), backward would write them twice (refused: on from where it was).
        Some(s) => {
            if stored > s {
                record_gap(
                    s,
                    stored,
                    "audit_journal.read_through was moved forward by hand",
                )?;
            } else {
                store_position(s)?;
            }
            s.max(stored)
        }
        None => stored,
    };
    if let Some(redo) = lost_wal(from)? {
        record_gap(
            from,
            redo,
            "WAL holding audit events was removed before the worker read it; events written in it are lost",
        )?;
        store_position(redo)?;
        return Ok(Some(Progress {
            stored: redo,
            stored_now: true,
            scanned: redo,
            more: true,
        }));
    }
    let JournalRead { events, end } = journal::read(from, BATCH, READ_BYTES);
    if !events.is_empty() {
        let rows: Vec<_> = events
            .iter()
            .map(|e| {
                let origin = JournalOrigin {
                    lsn: e.lsn,
                    xid: e.xid,
                };
                AuditRow::of_event(&e.event, Some(origin))
            })
            .collect();
        insert_rows(&rows)?;
    }
    let stale = cursor
        .stored_at
        .is_none_or(|at| at.elapsed() >= STORE_EVERY);
    let store = end > stored && (!events.is_empty() || end - stored >= STORE_BYTES || stale);
    if store {
        store_position(end)?;
    }
    Ok(Some(Progress {
        stored: if store { end } else { stored },
        stored_now: store,
        scanned: end,
        more: events.len() >= BATCH || end - from >= READ_BYTES,
    }))
}

/// When the WAL at `from` is gone (removed at a checkpoint before the worker read it: the slot
/// did not exist yet, could not be made, or was invalidated), where reading can go on: the last
/// checkpoint's redo point, from which WAL is always kept.
fn lost_wal(from: u64) -> spi::Result<Option<u64>> {
    // Only WAL before the last checkpoint's redo point can have been removed: pg_wal is listed
    // only then, not at every step.
    let redo = Spi::get_one::<i64>(
        "SELECT ((pg_catalog.pg_control_checkpoint()).redo_lsn OPERATOR(pg_catalog.-) '0/0'::pg_lsn)::int8",
    )?
    .unwrap_or(0) as u64;
    if redo <= from {
        return Ok(None);
    }
    // SAFETY: a server setting, fixed at startup.
    let segment_size = u64::try_from(unsafe { pgrx::pg_sys::wal_segment_size }).unwrap_or(16 << 20);
    // Any timeline: the file name's last 16 digits are the segment number.
    let name = admin_toolkit_core::lsn::segment_file_name(1, from / segment_size, segment_size);
    let suffix = &name[8..];
    // Unreadable pg_wal: nothing is skipped on a guess.
    let present = std::fs::read_dir("pg_wal").map_or(true, |entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            name.len() == 24 && name.to_string_lossy().ends_with(suffix)
        })
    });
    Ok((!present).then_some(redo))
}

/// Records that the events in WAL from `from` to `to` are lost, as an AUDIT_GAP event.
fn record_gap(from: u64, to: u64, why: &str) -> spi::Result<()> {
    let lsn = |p: u64| Lsn(p).to_string();
    let gap = AuditRow {
        username: Spi::get_one::<String>("SELECT current_user::text")?,
        database: Spi::get_one::<String>("SELECT pg_catalog.current_database()::text")?,
        operation: Some("AUDIT_GAP".into()),
        success: false,
        error: Some(why.into()),
        info: serde_json::json!({"from_lsn": lsn(from), "to_lsn": lsn(to), "source": "server"})
            .to_string(),
        ..AuditRow::default()
    };
    insert_rows(&[gap])?;
    warning!(
        "admin_toolkit worker: audit events in WAL from {} to {} are not written: {why}; recorded as AUDIT_GAP",
        lsn(from),
        lsn(to)
    );
    Ok(())
}

/// Creates the slot that keeps unread WAL if it is missing and moves it to the stored position.
/// False where no slot can exist (max_replication_slots = 0, wal_level = minimal).
fn keep_unread_wal() -> spi::Result<bool> {
    let possible = Spi::get_one::<bool>(
        "SELECT pg_catalog.current_setting('max_replication_slots')::int OPERATOR(pg_catalog.>) 0 \
            AND pg_catalog.current_setting('wal_level') OPERATOR(pg_catalog.<>) 'minimal'",
    )?;
    if possible != Some(true) {
        return Ok(false);
    }
    let Some(position) = stored_position()? else {
        return Ok(true);
    };
    // Invalidated (max_slot_wal_keep_size): made again; what it lost shows as AUDIT_GAP.
    Spi::run_with_args(
        "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots \
          WHERE slot_name OPERATOR(pg_catalog.=) $1 AND wal_status OPERATOR(pg_catalog.=) 'lost' AND NOT active",
        &[journal::SLOT.into()],
    )?;
    Spi::run_with_args(
        "SELECT pg_catalog.pg_create_physical_replication_slot($1, true) \
          WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_replication_slots WHERE slot_name OPERATOR(pg_catalog.=) $1)",
        &[journal::SLOT.into()],
    )?;
    Spi::run_with_args(
        "SELECT pg_catalog.pg_replication_slot_advance(slot_name, '0/0'::pg_lsn OPERATOR(pg_catalog.+) $2::numeric) \
           FROM pg_catalog.pg_replication_slots \
          WHERE slot_name OPERATOR(pg_catalog.=) $1 \
            AND restart_lsn OPERATOR(pg_catalog.<) ('0/0'::pg_lsn OPERATOR(pg_catalog.+) $2::numeric)",
        &[journal::SLOT.into(), (position as i64).into()],
    )?;
    Ok(true)
}

impl AuditWriter {
    fn read_interval() -> Duration {
        Duration::from_secs(u64::from(settings::non_negative(
            &settings::AUDIT_READ_INTERVAL,
        )))
    }

    fn reads_due(&self) -> bool {
        self.last_read_summary
            .is_none_or(|at| at.elapsed() >= Self::read_interval())
    }

    fn journal_due(&self) -> bool {
        // SAFETY: reads the flush position from shared memory.
        let flushed = unsafe { pgrx::pg_sys::GetFlushRecPtr(std::ptr::null_mut()) };
        self.cursor.stored.is_none() || flushed > self.cursor.scanned
    }

    fn write_journal(&mut self) {
        // The slot first: WAL from the stored position on is kept from now on.
        if !self.slot_kept {
            self.keep_unread_wal();
        }
        let before = self.cursor.stored;
        loop {
            let cursor = self.cursor;
            // An Err raised, not returned: the transaction must not commit half of the work.
            let step = || write_journal(cursor).unwrap_or_else(|e| error!("{e}"));
            let Some(Some(p)) = run_step("write audit events", step) else {
                break;
            };
            self.cursor.stored = Some(p.stored);
            self.cursor.scanned = p.scanned;
            if p.stored_now || cursor.stored_at.is_none() {
                self.cursor.stored_at = Some(Instant::now());
            }
            if !p.more {
                break;
            }
        }
        if self.cursor.stored != before {
            self.keep_unread_wal();
        }
    }

    fn keep_unread_wal(&mut self) {
        let step = || keep_unread_wal().unwrap_or_else(|e| error!("{e}"));
        match run_step("keep unread WAL", step) {
            Some(true) => {
                self.slot_kept = true;
                self.said_no_slot = false;
            }
            _ if !self.said_no_slot => {
                log!(
                    "admin_toolkit worker: replication slot \"{}\" cannot be kept (max_replication_slots, wal_level); \
                     WAL removed at a checkpoint before the worker reads it loses its audit events (recorded as AUDIT_GAP)",
                    journal::SLOT
                );
                self.said_no_slot = true;
            }
            _ => {}
        }
    }
}

impl Duty for AuditWriter {
    fn name(&self) -> &'static str {
        "audit writer"
    }

    fn due(&mut self, _: &Context) -> bool {
        let (events, reads) = queue::pending();
        events
            || (queue::available() && self.journal_due())
            || (reads && self.reads_due())
            || queue::dropped() != self.dropped_reported
    }

    fn wait(&self) -> Option<Duration> {
        queue::available().then_some(AUDIT_TICK)
    }

    fn run(&mut self, _: &mut Context) {
        if !queue::available() {
            return;
        }
        self.write_journal();
        while queue::pending().0 {
            let step = || write_queued_events().unwrap_or_else(|e| error!("{e}"));
            match run_step("write queued audit events", step) {
                Some(n) if n >= BATCH => continue,
                _ => {}
            }
            break;
        }
        if self.reads_due() && queue::pending().1 {
            let period = self
                .last_read_summary
                .map_or(Self::read_interval().as_secs_f64(), |at| {
                    at.elapsed().as_secs_f64()
                });
            self.last_read_summary = Some(Instant::now());
            if let Some(Err(e)) = run_step("summarise table reads", || write_read_summaries(period))
            {
                log!("admin_toolkit worker: step \"summarise table reads\" failed: {e}");
            }
        }
        let dropped = queue::dropped();
        if dropped != self.dropped_reported {
            log!(
                "admin_toolkit worker: audit queue full: {} events and {} table-read counts dropped since startup \
                 (metric security/audit_events_dropped)",
                dropped.0,
                dropped.1
            );
            self.dropped_reported = dropped;
        }
    }

    /// The extension was created again or the configuration reloaded: read the position anew.
    fn restart(&mut self) {
        self.cursor = Cursor::default();
        self.slot_kept = false;
    }

    /// Writes everything waiting, read counts included, whatever the interval.
    fn shutdown(&mut self) {
        self.last_read_summary = None;
        self.run(&mut Context::default());
        if queue::pending().0 {
            log!("admin_toolkit worker: audit events could not all be written at shutdown; see the errors above");
        }
    }
}
