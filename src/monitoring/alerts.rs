//! Alert evaluation with state: each active rule is compared with the latest value of its metric
//! (an index probe per rule); a rule that starts holding opens an `alert_events` row and
//! notifies, one that stops holding resolves it and notifies. Conditions and transitions are
//! decided by `admin_toolkit_core::alerts`.

use admin_toolkit_core::alerts::{
    alert_message, condition_holds, transition, Operator, Transition,
};
use admin_toolkit_core::notify::{event_json, Action};
use pgrx::prelude::*;

/// The worker duty that evaluates alerts and sends what they queue (`duty::Alerting`).
pub const ALERTING_DUTY: &str = "alerting";

/// Channel that every fire and resolve is notified on.
pub const CHANNEL: &str = "admin_toolkit_alerts";

/// A rule that holds now, as a row of `process_alerts()`.
pub struct HoldingAlert {
    pub rule_name: String,
    pub severity: String,
    pub current_value: Option<AnyNumeric>,
    pub threshold_value: AnyNumeric,
    pub message: String,
}

/// Result of one evaluation.
pub struct Evaluation {
    pub holding: Vec<HoldingAlert>,
    /// Active rules whose metric has never been collected.
    pub no_data: Vec<String>,
    pub fired: usize,
    pub resolved: usize,
}

/// Every active rule (and inactive ones still holding an open event, so that they resolve),
/// with its metric's latest value (for a per-database metric, the largest of the latest
/// collection). Values travel as text as well, so that a threshold too large
/// for float8 cannot make a cast fail and stop the other rules.
const RULES: &str = "
SELECT r.rule_id, r.rule_name, r.severity, r.metric_type, r.metric_name, r.condition_operator,
       r.threshold_value, r.threshold_value::text, r.notification_channels, r.is_active,
       m.metric_value, m.metric_value::text, m.collected_at IS NOT NULL, e.event_id
  FROM admin_toolkit.alert_rules r
  LEFT JOIN LATERAL (
        SELECT pm.metric_value, pm.collected_at FROM admin_toolkit.performance_metrics pm
         WHERE pm.metric_type = r.metric_type AND pm.metric_name = r.metric_name
         ORDER BY pm.collected_at DESC, pm.metric_value DESC NULLS LAST LIMIT 1) m ON true
  LEFT JOIN admin_toolkit.alert_events e ON e.rule_id = r.rule_id AND e.resolved_at IS NULL
 WHERE r.is_active OR e.event_id IS NOT NULL
 ORDER BY r.rule_id";

struct RuleState {
    rule_id: i32,
    rule_name: String,
    severity: String,
    metric: String,
    operator: Operator,
    threshold: AnyNumeric,
    threshold_text: String,
    channels: Vec<String>,
    active: bool,
    value: Option<AnyNumeric>,
    value_text: Option<String>,
    has_data: bool,
    open_event: Option<i64>,
}

fn load_rules() -> spi::Result<Vec<RuleState>> {
    Spi::connect(|client| {
        let mut rules = Vec::new();
        for row in client.select(RULES, None, &[])? {
            let operator: String = row.get(6)?.unwrap_or_default();
            let Ok(operator) = operator.parse::<Operator>() else {
                continue; // the CHECK constraint makes this unreachable; never fire on it
            };
            let metric_type: String = row.get(4)?.unwrap_or_default();
            let metric_name: String = row.get(5)?.unwrap_or_default();
            rules.push(RuleState {
                rule_id: row.get(1)?.unwrap_or_default(),
                rule_name: row.get(2)?.unwrap_or_default(),
                severity: row.get(3)?.unwrap_or_default(),
                metric: format!("{metric_type}/{metric_name}"),
                operator,
                threshold: row.get(7)?.unwrap_or_default(),
                threshold_text: row.get(8)?.unwrap_or_default(),
                channels: row.get::<Vec<String>>(9)?.unwrap_or_default(),
                active: row.get(10)?.unwrap_or(false),
                value: row.get(11)?,
                value_text: row.get(12)?,
                has_data: row.get(13)?.unwrap_or(false),
                open_event: row.get(14)?,
            });
        }
        Ok(rules)
    })
}

/// Parses a numeric's text; values beyond float8 become ±infinity and still compare correctly.
fn as_f64(text: &str) -> Option<f64> {
    text.parse::<f64>().ok()
}

/// Tells LISTEN sessions of `CHANNEL` about event `event_id`, in the same JSON as the webhook
/// delivery (`event_json`), once this transaction commits.
fn notify(action: Action, event_id: i64) -> spi::Result<()> {
    let Some(notice) = super::notifications::notice_of(event_id, action)? else {
        return Ok(());
    };
    Spi::run_with_args(
        "SELECT pg_catalog.pg_notify($1, $2)",
        &[CHANNEL.into(), event_json(&notice).to_string().into()],
    )
}

/// The outbox rows of one fire or resolve, in the transaction that records it: one per active
/// channel of the rule (a resolve only where the trigger was queued, so a channel switched on
/// mid-episode gets no orphan resolve). The worker is woken once this commits.
fn queue_deliveries(event_id: i64, action: Action, channels: &[String]) -> spi::Result<()> {
    if channels.is_empty() {
        return Ok(());
    }
    let queued = Spi::get_one_with_args::<i64>(
        "WITH queued AS ( \
           INSERT INTO admin_toolkit.alert_deliveries (event_id, channel_name, action) \
           SELECT $1, c.channel_name, $2 FROM admin_toolkit.alert_channels c \
            WHERE c.channel_name = ANY ($3) AND c.is_active \
              AND ($2 = 'trigger' OR EXISTS (SELECT 1 FROM admin_toolkit.alert_deliveries t \
                    WHERE t.event_id = $1 AND t.channel_name = c.channel_name AND t.action = 'trigger')) \
           ON CONFLICT DO NOTHING RETURNING 1) \
         SELECT count(*) FROM queued",
        &[
            event_id.into(),
            action.as_str().into(),
            channels.to_vec().into(),
        ],
    )?;
    if queued.unwrap_or(0) > 0 {
        crate::worker::wake::at_commit(ALERTING_DUTY);
    }
    Ok(())
}

/// Evaluates every rule once, recording and notifying fire/resolve transitions. Serialized by an
/// advisory lock so that the worker and a manual `process_alerts()` never both open an event.
pub fn evaluate() -> spi::Result<Evaluation> {
    Spi::run(
        "SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('admin_toolkit.alerts'))",
    )?;
    let mut result = Evaluation {
        holding: Vec::new(),
        no_data: Vec::new(),
        fired: 0,
        resolved: 0,
    };
    for rule in load_rules()? {
        let value = rule.value_text.as_deref().and_then(as_f64);
        let holds = match (rule.active, rule.has_data) {
            (false, _) => Some(false), // deactivated: close its open event
            (true, false) => None,
            (true, true) => Some(condition_holds(
                value,
                rule.operator,
                as_f64(&rule.threshold_text).unwrap_or(f64::NAN),
            )),
        };
        if rule.active && !rule.has_data {
            result.no_data.push(rule.rule_name.clone());
        }
        let shown_value = rule.value_text.clone().unwrap_or_else(|| "NULL".into());
        let metric_name = rule
            .metric
            .split('/')
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let message = alert_message(
            &rule.rule_name,
            &metric_name,
            rule.operator,
            &rule.threshold_text,
            &shown_value,
        );
        match transition(rule.open_event.is_some(), holds) {
            Transition::Fire => {
                let event_id = Spi::get_one_with_args::<i64>(
                    "INSERT INTO admin_toolkit.alert_events (rule_id, value_at_firing, threshold_value, message) \
                     VALUES ($1, $2::numeric, $3::numeric, $4) RETURNING event_id",
                    &[
                        rule.rule_id.into(),
                        rule.value_text.clone().into(),
                        rule.threshold_text.clone().into(),
                        message.clone().into(),
                    ],
                )?
                .unwrap_or_default();
                notify(Action::Trigger, event_id)?;
                queue_deliveries(event_id, Action::Trigger, &rule.channels)?;
                result.fired += 1;
            }
            Transition::Resolve => {
                let event_id = rule.open_event.unwrap_or_default();
                Spi::run_with_args(
                    "UPDATE admin_toolkit.alert_events SET resolved_at = pg_catalog.now() WHERE event_id = $1",
                    &[event_id.into()],
                )?;
                notify(Action::Resolve, event_id)?;
                queue_deliveries(event_id, Action::Resolve, &rule.channels)?;
                result.resolved += 1;
            }
            Transition::Unchanged => {}
        }
        if holds == Some(true) {
            result.holding.push(HoldingAlert {
                rule_name: rule.rule_name,
                severity: rule.severity,
                current_value: rule.value,
                threshold_value: rule.threshold,
                message,
            });
        }
    }
    Ok(result)
}
