//! Delivering the alert outbox (alert_deliveries): the worker loads due deliveries in one short
//! transaction, sends each on a thread of its own (network I/O only, no PostgreSQL call), and
//! records the outcomes as they come back in another. A receiver that hangs delays nobody else;
//! one that is down is retried with backoff until it is back (or the delivery is given up).
//! A delivery is marked delivered only after the receiver accepted it; if the worker dies in
//! between, the delivery is sent again after the restart with the same idempotency key.

use crate::settings;
use crate::transaction::step::run_step;
use admin_toolkit_core::net::Reach;
use admin_toolkit_core::notify::{
    retry_delay, send, Action, Channel, ChannelKind, Delivery, Notice, Outcome, Policy, Secrets,
};
use admin_toolkit_core::threads::with_signals_blocked;
use pgrx::prelude::*;
use pgrx::spi::SpiHeapTupleData;
use std::collections::HashSet;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Deliveries in flight at most.
const MAX_IN_FLIGHT: usize = 16;
/// How often the worker looks for finished deliveries while some are in flight.
const IN_FLIGHT_TICK: Duration = Duration::from_millis(50);

/// One finished attempt.
struct Finished {
    delivery_id: i64,
    attempts_before: i32,
    started_micros: i64,
    outcome: Outcome,
}

/// The worker's side of the outbox.
pub struct Deliverer {
    in_flight: HashSet<i64>,
    sender: Sender<Finished>,
    receiver: Receiver<Finished>,
    /// Finished attempts not recorded yet (their recording failed: tried again next tick).
    unrecorded: Vec<Finished>,
    /// When the next pending delivery falls due (None: none pending, as last seen).
    next_due: Option<Instant>,
    /// Look now: an evaluation or a backend queued deliveries.
    pub requested: bool,
}

impl Default for Deliverer {
    fn default() -> Self {
        let (sender, receiver) = channel();
        Deliverer {
            in_flight: HashSet::new(),
            sender,
            receiver,
            unrecorded: Vec::new(),
            // Look once at startup: deliveries may be pending from before a restart.
            next_due: Some(Instant::now()),
            requested: false,
        }
    }
}

impl Deliverer {
    /// Whether there is anything to do now: takes the attempts that have come back (no
    /// transaction), so that a delivery still in flight costs the worker nothing.
    pub fn due(&mut self) -> bool {
        while let Ok(done) = self.receiver.try_recv() {
            self.in_flight.remove(&done.delivery_id);
            self.unrecorded.push(done);
        }
        self.requested
            || !self.unrecorded.is_empty()
            || self.next_due.is_some_and(|t| Instant::now() >= t)
    }

    /// How long the worker may sleep as far as deliveries go.
    pub fn wait(&self) -> Option<Duration> {
        if !self.in_flight.is_empty() || !self.unrecorded.is_empty() {
            return Some(IN_FLIGHT_TICK);
        }
        self.next_due
            .map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// Records what came back, then starts what is due.
    pub fn run(&mut self) {
        self.requested = false;
        if !self.unrecorded.is_empty() {
            let finished = std::mem::take(&mut self.unrecorded);
            match run_step("record alert deliveries", || record(&finished)) {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    log!("admin_toolkit worker: recording alert deliveries failed and will be retried: {e}");
                    self.unrecorded = finished;
                }
                None => self.unrecorded = finished,
            }
        }
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            return;
        }
        let busy: Vec<i64> = self.in_flight.iter().copied().collect();
        let limit = (MAX_IN_FLIGHT - self.in_flight.len()) as i64;
        let loaded = run_step("load due alert deliveries", || load_due(&busy, limit));
        let Some(Ok((due, next_in))) = loaded else {
            if let Some(Err(e)) = loaded {
                log!("admin_toolkit worker: loading alert deliveries failed and will be retried: {e}");
            }
            self.next_due = Some(Instant::now() + Duration::from_secs(5));
            return;
        };
        // Nothing loaded although something is due (a resolve waiting for its trigger in
        // flight): look again in a second rather than at every tick.
        let floor = if due.is_empty() { 1.0 } else { 0.0 };
        self.next_due =
            next_in.map(|seconds| Instant::now() + Duration::from_secs_f64(seconds.max(floor)));
        if due.is_empty() {
            return;
        }
        // Read for every batch, so a changed file takes effect without a reload; a file that
        // cannot be read fails the attempts with the reason (never with its contents).
        let secrets = Secrets::load(&settings::notification_secrets_file());
        let policy = Policy {
            timeout: Duration::from_secs(
                u64::from(settings::non_negative(&settings::NOTIFICATION_TIMEOUT)).max(1),
            ),
            reach: if settings::NOTIFICATION_ALLOW_LINK_LOCAL.get() {
                Reach::Anywhere
            } else {
                Reach::NotLinkLocal
            },
        };
        for (delivery, attempts_before) in due {
            self.in_flight.insert(delivery.delivery_id);
            let sender = self.sender.clone();
            let secrets = secrets.clone();
            let started_micros = now_micros();
            let builder =
                std::thread::Builder::new().name(format!("delivery {}", delivery.delivery_id));
            // Signals stay on the worker's own thread (admin_toolkit_core::threads).
            let spawned = with_signals_blocked(|| {
                builder.spawn(move || {
                    let outcome = match &secrets {
                        Ok(secrets) => send(&delivery, secrets, policy),
                        Err(e) => Outcome {
                            delivered: false,
                            status: None,
                            error: Some(e.clone()),
                            latency_ms: 0.0,
                        },
                    };
                    let _worker_gone_means_retry_after_restart = sender.send(Finished {
                        delivery_id: delivery.delivery_id,
                        attempts_before,
                        started_micros,
                        outcome,
                    });
                })
            });
            if let Err(e) = spawned {
                log!("admin_toolkit worker: cannot start a delivery thread: {e}");
                self.in_flight.clear();
                return;
            }
        }
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Pending deliveries `d` (with channel `c`) the worker may send once due: on an active channel,
/// not in flight (`$1`), and a resolve only once its trigger is no longer pending.
const SENDABLE: &str = "d.status = 'pending' AND c.is_active AND d.delivery_id <> ALL ($1) \
    AND (d.action = 'trigger' OR NOT EXISTS ( \
         SELECT 1 FROM admin_toolkit.alert_deliveries t \
          WHERE t.event_id = d.event_id AND t.channel_name = d.channel_name \
            AND t.action = 'trigger' AND t.status = 'pending'))";

/// An alert event `e` of rule `r` as a notice, from column `first` on (see `read_notice`).
/// Numbers beyond float8's range (a rule may say 1e400) are shown as null, not an error.
const NOTICE_COLUMNS: &str = "e.event_id, r.rule_id, r.rule_name, r.severity, \
    r.metric_type || '/' || r.metric_name, r.condition_operator, e.message, \
    CASE WHEN abs(e.value_at_firing) < 1e308 THEN e.value_at_firing::float8 END, \
    CASE WHEN abs(e.threshold_value) < 1e308 THEN e.threshold_value::float8 END, \
    to_char(e.fired_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
    to_char(e.resolved_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
    (SELECT system_identifier::text FROM pg_catalog.pg_control_system()), r.notification_channels";

/// The notice in `NOTICE_COLUMNS`, which start at column `first` of `r`.
fn read_notice(r: &SpiHeapTupleData, first: usize, action: Action) -> spi::Result<Notice> {
    let text =
        |i: usize| -> spi::Result<String> { Ok(r.get::<String>(first + i)?.unwrap_or_default()) };
    Ok(Notice {
        action,
        event_id: r.get::<i64>(first)?.unwrap_or_default(),
        rule_id: r.get::<i32>(first + 1)?.unwrap_or_default(),
        rule_name: text(2)?,
        severity: text(3)?,
        metric: text(4)?,
        operator: text(5)?,
        message: text(6)?,
        value: r.get::<f64>(first + 7)?,
        threshold: r.get::<f64>(first + 8)?,
        fired_at: text(9)?,
        resolved_at: r.get::<String>(first + 10)?,
        cluster: text(11)?,
        channels: r.get::<Vec<String>>(first + 12)?.unwrap_or_default(),
    })
}

/// Alert event `event_id` as a notice of `action`, as the outbox will send it.
pub fn notice_of(event_id: i64, action: Action) -> spi::Result<Option<Notice>> {
    Spi::connect(|c| {
        let mut rows = c.select(
            &format!(
                "SELECT {NOTICE_COLUMNS} FROM admin_toolkit.alert_events e \
                   JOIN admin_toolkit.alert_rules r ON r.rule_id = e.rule_id WHERE e.event_id = $1"
            ),
            Some(1),
            &[event_id.into()],
        )?;
        rows.next().map(|r| read_notice(&r, 1, action)).transpose()
    })
}

/// Deliveries to start (each with its failed attempts so far), and the seconds until the next
/// pending one falls due.
type DueDeliveries = (Vec<(Delivery, i32)>, Option<f64>);

/// Pending deliveries due now (not those in flight; a resolve only once its trigger is no
/// longer pending), oldest first, and the seconds until the next pending one falls due. Gives up
/// deliveries older than admin_toolkit.notification_give_up_after first.
fn load_due(busy: &[i64], limit: i64) -> spi::Result<DueDeliveries> {
    let give_up = i64::from(settings::non_negative(
        &settings::NOTIFICATION_GIVE_UP_AFTER,
    ));
    Spi::run_with_args(
        "UPDATE admin_toolkit.alert_deliveries \
            SET status = 'failed', last_error = coalesce(last_error || '; ', '') || 'given up after ' || $1 || ' s' \
          WHERE status = 'pending' AND created_at < now() - make_interval(secs => $1)",
        &[give_up.into()],
    )?;
    let busy = busy.to_vec();
    Spi::connect(|c| {
        let rows = c.select(
            &format!(
                "SELECT d.delivery_id, d.action, d.attempts, c.channel_name, c.kind, c.target, c.options::text, \
                    {NOTICE_COLUMNS} \
               FROM admin_toolkit.alert_deliveries d \
               JOIN admin_toolkit.alert_channels c USING (channel_name) \
               JOIN admin_toolkit.alert_events e USING (event_id) \
               JOIN admin_toolkit.alert_rules r ON r.rule_id = e.rule_id \
              WHERE {SENDABLE} AND d.next_attempt_at <= now() \
              ORDER BY d.next_attempt_at, d.delivery_id LIMIT $2"
            ),
            None,
            &[busy.clone().into(), limit.into()],
        )?;
        let mut due = Vec::new();
        for r in rows {
            let text =
                |i: usize| -> spi::Result<String> { Ok(r.get::<String>(i)?.unwrap_or_default()) };
            let (Some(action), Some(kind)) =
                (Action::parse(&text(2)?), ChannelKind::parse(&text(5)?))
            else {
                continue; // both are constrained by CHECKs
            };
            let delivery = Delivery {
                delivery_id: r.get::<i64>(1)?.unwrap_or_default(),
                channel: Channel {
                    name: text(4)?,
                    kind,
                    target: r.get::<String>(6)?,
                    options: serde_json::from_str(&text(7)?).unwrap_or_default(),
                },
                notice: read_notice(&r, 8, action)?,
            };
            due.push((delivery, r.get::<i32>(3)?.unwrap_or_default()));
        }
        let next = c
            .select(
                &format!(
                    "SELECT extract(epoch FROM min(d.next_attempt_at) - now())::float8 \
                       FROM admin_toolkit.alert_deliveries d JOIN admin_toolkit.alert_channels c USING (channel_name) \
                      WHERE {SENDABLE}"
                ),
                Some(1),
                &[busy.into()],
            )?
            .first()
            .get::<f64>(1)?;
        Ok((due, next))
    })
}

/// Every finished attempt into alert_delivery_attempts, and its delivery moved on: delivered,
/// or pending with its next attempt after the backoff.
fn record(finished: &[Finished]) -> spi::Result<()> {
    let max = Duration::from_secs(u64::from(settings::non_negative(
        &settings::NOTIFICATION_MAX_RETRY_INTERVAL,
    )));
    for f in finished {
        let o = &f.outcome;
        let attempts = f.attempts_before.saturating_add(1);
        let delay = retry_delay(attempts as u32, max).as_secs_f64();
        Spi::run_with_args(
            "INSERT INTO admin_toolkit.alert_delivery_attempts \
                    (delivery_id, attempted_at, succeeded, status_code, error, latency_ms) \
             SELECT $1, to_timestamp($2::float8 / 1e6), $3, $4, $5, $6 \
              WHERE EXISTS (SELECT 1 FROM admin_toolkit.alert_deliveries WHERE delivery_id = $1)",
            &[
                f.delivery_id.into(),
                f.started_micros.into(),
                o.delivered.into(),
                o.status.map(i32::from).into(),
                o.error.clone().into(),
                o.latency_ms.into(),
            ],
        )?;
        Spi::run_with_args(
            "UPDATE admin_toolkit.alert_deliveries \
                SET attempts = $2, \
                    status = CASE WHEN $3 THEN 'delivered' ELSE status END, \
                    delivered_at = CASE WHEN $3 THEN now() END, \
                    next_attempt_at = CASE WHEN $3 THEN next_attempt_at ELSE now() + make_interval(secs => $4) END, \
                    last_error = CASE WHEN $3 THEN last_error ELSE $5 END \
              WHERE delivery_id = $1 AND status = 'pending'",
            &[
                f.delivery_id.into(),
                attempts.into(),
                o.delivered.into(),
                delay.into(),
                o.error.clone().into(),
            ],
        )?;
    }
    Ok(())
}
