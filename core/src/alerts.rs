//! Alert rules: parsing operators, deciding whether a condition holds, and the state machine
//! that turns "holds now" into fire / resolve events (an alert fires once when its condition
//! starts holding and resolves once when it stops, never again every cycle).

use std::fmt;
use std::str::FromStr;

/// The six comparison operators of `alert_rules.condition_operator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Gt,
    Lt,
    Ge,
    Le,
    Eq,
    Ne,
}

impl FromStr for Operator {
    type Err = UnknownOperator;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            ">" => Operator::Gt,
            "<" => Operator::Lt,
            ">=" => Operator::Ge,
            "<=" => Operator::Le,
            "=" => Operator::Eq,
            "!=" => Operator::Ne,
            other => return Err(UnknownOperator(other.to_string())),
        })
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operator::Gt => ">",
            Operator::Lt => "<",
            Operator::Ge => ">=",
            Operator::Le => "<=",
            Operator::Eq => "=",
            Operator::Ne => "!=",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownOperator(pub String);

impl fmt::Display for UnknownOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown alert operator {:?} (use >, <, >=, <=, = or !=)",
            self.0
        )
    }
}

impl std::error::Error for UnknownOperator {}

/// Whether `value <op> threshold` holds. A missing value (NULL metric) never holds, and neither
/// does a comparison with NaN: an alert needs a real number to fire.
pub fn condition_holds(value: Option<f64>, op: Operator, threshold: f64) -> bool {
    let Some(v) = value else { return false };
    if v.is_nan() || threshold.is_nan() {
        return false;
    }
    match op {
        Operator::Gt => v > threshold,
        Operator::Lt => v < threshold,
        Operator::Ge => v >= threshold,
        Operator::Le => v <= threshold,
        Operator::Eq => v == threshold,
        Operator::Ne => v != threshold,
    }
}

/// What to do with a rule after evaluating it against its metric's latest value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The condition started holding: open an event and notify.
    Fire,
    /// The condition stopped holding: close the open event and notify.
    Resolve,
    /// Still holding (event stays open) or still clear: nothing to record.
    Unchanged,
}

/// The transition for a rule whose condition `holds` now, given whether it has an open event.
/// A rule with no data keeps its open event: silence of a collector is not recovery.
pub fn transition(has_open_event: bool, holds: Option<bool>) -> Transition {
    match (has_open_event, holds) {
        (false, Some(true)) => Transition::Fire,
        (true, Some(false)) => Transition::Resolve,
        _ => Transition::Unchanged,
    }
}

/// The message of an alert, as the seed words it: `<rule>: <metric> <op> <threshold> (current: <value>)`.
pub fn alert_message(
    rule: &str,
    metric: &str,
    op: Operator,
    threshold: &str,
    value: &str,
) -> String {
    format!("{rule}: {metric} {op} {threshold} (current: {value})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_round_trip_and_unknown_is_refused() {
        for op in [">", "<", ">=", "<=", "=", "!="] {
            assert_eq!(op.parse::<Operator>().unwrap().to_string(), op);
        }
        assert!("=~".parse::<Operator>().is_err());
        assert!("<>".parse::<Operator>().is_err());
    }

    #[test]
    fn conditions() {
        use Operator::*;
        assert!(condition_holds(Some(151.0), Gt, 150.0));
        assert!(!condition_holds(Some(150.0), Gt, 150.0));
        assert!(condition_holds(Some(150.0), Ge, 150.0));
        assert!(condition_holds(Some(94.9), Lt, 95.0));
        assert!(condition_holds(Some(95.0), Le, 95.0));
        assert!(condition_holds(Some(1.0), Eq, 1.0));
        assert!(condition_holds(Some(2.0), Ne, 1.0));
        assert!(!condition_holds(None, Ne, 1.0));
        assert!(!condition_holds(Some(f64::NAN), Ne, 1.0));
        assert!(condition_holds(Some(f64::INFINITY), Gt, 1e300));
    }

    #[test]
    fn fires_once_and_resolves_once() {
        // holds, holds, holds, clear, clear, holds
        let mut open = false;
        let mut events = Vec::new();
        for holds in [true, true, true, false, false, true] {
            let t = transition(open, Some(holds));
            match t {
                Transition::Fire => open = true,
                Transition::Resolve => open = false,
                Transition::Unchanged => {}
            }
            events.push(t);
        }
        use Transition::*;
        assert_eq!(
            events,
            vec![Fire, Unchanged, Unchanged, Resolve, Unchanged, Fire]
        );
    }

    #[test]
    fn no_data_changes_nothing() {
        assert_eq!(transition(true, None), Transition::Unchanged);
        assert_eq!(transition(false, None), Transition::Unchanged);
    }

    #[test]
    fn message_matches_seed_format() {
        assert_eq!(
            alert_message(
                "High connection usage",
                "active_connections",
                Operator::Gt,
                "150",
                "151"
            ),
            "High connection usage: active_connections > 150 (current: 151)"
        );
    }
}
