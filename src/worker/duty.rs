//! What the database worker runs: duties that features register (see `crate::worker_duties`).
//! The worker knows no feature: each tick it asks every duty whether it is due and runs those
//! that are, in the order registered, each in steps of its own (`run_step`), so that one duty's
//! failure is logged and retried without touching the others.

use std::time::Duration;

/// What the worker tells its duties about the tick.
#[derive(Debug, Default, Clone)]
pub struct Context {
    /// Why schedules and retention are held on this server (a restored copy), as the copy
    /// guard's duty last looked; duties that act on the original's storage wait while set.
    pub held: Option<String>,
    /// Unix time / 60: cron schedules fall on whole minutes.
    pub minute: u64,
    /// Days since the Unix epoch, in UTC.
    pub utc_day: i32,
}

/// One kind of routine work of the database worker.
pub trait Duty {
    /// What it is called in the log and in wake requests (`wake::at_commit`).
    fn name(&self) -> &'static str;
    /// Whether there is work now. Called every tick, most of them idle: no transaction, no
    /// catalog access.
    fn due(&mut self, context: &Context) -> bool;
    /// How long until it may be due, so the worker sleeps no longer; `None`: no opinion.
    fn wait(&self) -> Option<Duration> {
        None
    }
    /// Does the work, each part in a step of its own.
    fn run(&mut self, context: &mut Context);
    /// A backend asked this duty for work at commit (rows handed to the worker).
    fn woken(&mut self) {}
    /// The configuration was reloaded, or the extension reappeared: look afresh.
    fn restart(&mut self) {}
    /// The worker is stopping: finish what must not be lost.
    fn shutdown(&mut self) {}
}
