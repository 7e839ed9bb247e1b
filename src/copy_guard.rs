//! A restored or copied server runs no schedule and no retention until an administrator adopts
//! it (core::copy_guard decides): its catalog names the original's storage, and its retention
//! would decide from a snapshot of the past.

use crate::error::ToolkitError;
use admin_toolkit_core::copy_guard::{held_reason, Identity, HELD_MARKER};
use pgrx::prelude::*;
use std::path::PathBuf;

fn data_directory() -> PathBuf {
    // SAFETY: DataDir is set for the life of every backend.
    PathBuf::from(
        unsafe { std::ffi::CStr::from_ptr(pg_sys::DataDir) }
            .to_string_lossy()
            .into_owned(),
    )
}

fn current() -> Identity {
    Identity {
        // SAFETY: the control file's system identifier, read once the server has started.
        system_identifier: unsafe { pg_sys::GetSystemIdentifier() }.to_string(),
        data_directory: data_directory().display().to_string(),
    }
}

fn recorded() -> spi::Result<Option<Identity>> {
    crate::query::one_row(
        "SELECT system_identifier, data_directory FROM admin_toolkit.cluster_identity",
        &[],
        |r| {
            Ok(Identity {
                system_identifier: r.get::<String>(1)?.unwrap_or_default(),
                data_directory: r.get::<String>(2)?.unwrap_or_default(),
            })
        },
    )
}

fn record(identity: &Identity) -> spi::Result<()> {
    Spi::run_with_args(
        "INSERT INTO admin_toolkit.cluster_identity (system_identifier, data_directory) VALUES ($1, $2) \
         ON CONFLICT (singleton) DO UPDATE SET system_identifier = excluded.system_identifier, \
                data_directory = excluded.data_directory, adopted_at = now()",
        &[
            identity.system_identifier.as_str().into(),
            identity.data_directory.as_str().into(),
        ],
    )
}

/// Why this server's schedules and retention are held, or None. The first look records the
/// server's identity. In a transaction, as the worker (a superuser).
pub fn held() -> spi::Result<Option<String>> {
    look(true)
}

/// [`held`] without recording anything (for /metrics).
pub fn held_now() -> spi::Result<Option<String>> {
    look(false)
}

fn look(record_first: bool) -> spi::Result<Option<String>> {
    let now = current();
    let marker = data_directory().join(HELD_MARKER).exists();
    let recorded = recorded()?;
    if record_first && recorded.is_none() && !marker {
        record(&now)?;
    }
    Ok(held_reason(marker, recorded.as_ref(), &now))
}

/// Makes this server the one its schedules and retention are for: removes the restore's hold
/// and records its identity. Returns what it did. Superusers only.
#[pg_extern(volatile)]
fn adopt_as_primary() -> String {
    // SAFETY: reads this backend's user.
    if !unsafe { pg_sys::superuser() } {
        ToolkitError::insufficient_privilege(
            "only superusers may adopt this server as the primary",
        )
        .raise();
    }
    // SAFETY: reads whether this server is a standby.
    if unsafe { pg_sys::RecoveryInProgress() } {
        ToolkitError::wrong_state("this server is in recovery: adopt it once it is promoted")
            .raise();
    }
    let was = held().unwrap_or_else(|e| ToolkitError::wrong_state(e.to_string()).raise());
    let marker = data_directory().join(HELD_MARKER);
    if let Err(e) = std::fs::remove_file(&marker) {
        if e.kind() != std::io::ErrorKind::NotFound {
            ToolkitError::wrong_state(format!("cannot remove \"{}\": {e}", marker.display()))
                .raise();
        }
    }
    record(&current()).unwrap_or_else(|e| ToolkitError::wrong_state(e.to_string()).raise());
    match was {
        Some(reason) => format!(
            "adopted: schedules and retention run here from now on (they were held: {reason})"
        ),
        None => "this server already ran its schedules; its identity is recorded again".into(),
    }
}

/// The worker's duty of looking, once a minute, whether schedules and retention are held here,
/// for the duties that act on the storage (logged when that changes).
#[derive(Default)]
pub struct CopyGuard {
    checked_minute: Option<u64>,
}

impl crate::worker::duty::Duty for CopyGuard {
    fn name(&self) -> &'static str {
        "copy guard"
    }

    fn due(&mut self, context: &crate::worker::duty::Context) -> bool {
        self.checked_minute != Some(context.minute)
    }

    fn run(&mut self, context: &mut crate::worker::duty::Context) {
        self.checked_minute = Some(context.minute);
        let Some(Ok(now_held)) =
            crate::transaction::step::run_step("look whether schedules are held", held)
        else {
            return;
        };
        if now_held != context.held {
            match &now_held {
                Some(reason) => log!(
                    "admin_toolkit worker: {}",
                    admin_toolkit_core::copy_guard::held_message(reason)
                ),
                None if context.held.is_some() => {
                    log!("admin_toolkit worker: schedules and retention run again (adopted)")
                }
                None => {}
            }
            context.held = now_held;
        }
    }
}
