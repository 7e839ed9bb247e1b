//! The worker's duty of recording configuration changes made by other means than
//! track_config_change() (ALTER SYSTEM by hand, an edited file): looked for at startup and after
//! every reload.

use super::changes::detect_external_changes;
use crate::transaction::step::run_step;
use crate::worker::duty::{Context, Duty};
use pgrx::prelude::*;

#[derive(Default)]
pub struct ConfigDrift {
    /// Looked since the last start or reload.
    checked: bool,
}

impl Duty for ConfigDrift {
    fn name(&self) -> &'static str {
        "configuration drift"
    }

    fn due(&mut self, _: &Context) -> bool {
        !self.checked
    }

    fn run(&mut self, _: &mut Context) {
        match run_step("detect configuration changes", detect_external_changes) {
            Some(Ok(n)) => {
                if n > 0 {
                    log!("admin_toolkit worker: recorded {n} configuration change(s) made outside track_config_change()");
                }
                self.checked = true;
            }
            Some(Err(e)) => {
                log!("admin_toolkit worker: step \"detect configuration changes\" failed: {e}")
            }
            None => {}
        }
    }

    fn restart(&mut self) {
        self.checked = false;
    }
}
