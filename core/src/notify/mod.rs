//! Alert notifications: what one delivery sends to one channel (PagerDuty Events API v2, a Slack
//! incoming webhook, a signed JSON webhook, an e-mail), the secrets file it takes keys from, and
//! the retry schedule. Sending is blocking I/O with timeouts and touches nothing of PostgreSQL,
//! so the worker may run deliveries on threads of their own.

mod payload;
mod send;

pub use payload::{
    dedup_key, email_text, event_json, idempotency_key, pagerduty_body, signature, slack_body,
};
pub use send::{destination, send, Outcome, Policy};

use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    Email,
    Slack,
    PagerDuty,
    Webhook,
}

impl ChannelKind {
    pub fn parse(text: &str) -> Option<ChannelKind> {
        Some(match text {
            "email" => ChannelKind::Email,
            "slack" => ChannelKind::Slack,
            "pagerduty" => ChannelKind::PagerDuty,
            "webhook" => ChannelKind::Webhook,
            _ => return None,
        })
    }
}

/// A row of notification_channels.
#[derive(Debug, Clone)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
    /// URL (slack, pagerduty, webhook) or smtp://host:port (email); a secret `<name>.url`
    /// overrides it (a Slack webhook URL is itself a secret), and a channel that sends a secret
    /// goes only there ([`destination`]).
    pub target: Option<String>,
    pub options: serde_json::Value,
}

/// Whether an alert episode starts or ends. One vocabulary in code; at the boundaries the
/// outbox (`alert_deliveries.action`, like PagerDuty's `event_action`) says trigger / resolve
/// and the event JSON says fired / resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Trigger,
    Resolve,
}

impl Action {
    pub fn parse(text: &str) -> Option<Action> {
        match text {
            "trigger" => Some(Action::Trigger),
            "resolve" => Some(Action::Resolve),
            _ => None,
        }
    }

    /// The outbox's word (and PagerDuty's).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Trigger => "trigger",
            Action::Resolve => "resolve",
        }
    }

    /// The event JSON's word: what happened to the alert.
    pub fn event_word(self) -> &'static str {
        match self {
            Action::Trigger => "fired",
            Action::Resolve => "resolved",
        }
    }
}

/// The alert event a delivery is about.
#[derive(Debug, Clone)]
pub struct Notice {
    pub action: Action,
    /// The cluster's system identifier: keys stay unique across servers sharing a receiver.
    pub cluster: String,
    pub event_id: i64,
    pub rule_id: i32,
    pub rule_name: String,
    pub severity: String,
    pub metric: String,
    /// The rule's comparison (`>`, `<=`, ...).
    pub operator: String,
    pub message: String,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    /// RFC 3339.
    pub fired_at: String,
    pub resolved_at: Option<String>,
    /// The rule's notification channels (names only).
    pub channels: Vec<String>,
}

/// One delivery: a notice to a channel.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub delivery_id: i64,
    pub channel: Channel,
    pub notice: Notice,
}

/// The notification secrets file: `<channel>.<key> = <value>` lines, `#` comments. Keys used:
/// `url` (any channel), `routing_key` (pagerduty), `secret` (webhook signing), `password` (email).
#[derive(Debug, Clone, Default)]
pub struct Secrets(HashMap<String, String>);

impl Secrets {
    pub fn parse(text: &str) -> Result<Secrets, String> {
        let mut map = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                // The line itself may be a secret: name only its number.
                return Err(format!(
                    "line {} is not \"<channel>.<key> = <value>\"",
                    n + 1
                ));
            };
            let key = key.trim();
            if !key.contains('.') {
                return Err(format!(
                    "line {}: the key must be \"<channel>.<key>\"",
                    n + 1
                ));
            }
            map.insert(key.to_string(), value.trim().to_string());
        }
        Ok(Secrets(map))
    }

    /// Reads the file; a missing file is an error only when `path` is set.
    pub fn load(path: &str) -> Result<Secrets, String> {
        if path.is_empty() {
            return Ok(Secrets::default());
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the notification secrets file \"{path}\": {e}"))?;
        Secrets::parse(&text).map_err(|e| format!("notification secrets file \"{path}\": {e}"))
    }

    pub fn get(&self, channel: &str, key: &str) -> Option<&str> {
        self.0
            .get(&format!("{channel}.{key}"))
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// Wait before the next attempt after `attempts` failed ones: 5 s, doubling, at most `max`.
pub fn retry_delay(attempts: u32, max: Duration) -> Duration {
    let base = Duration::from_secs(5);
    let factor = 1u32 << attempts.saturating_sub(1).min(16);
    (base * factor)
        .min(max)
        .max(Duration::from_secs(1).min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_file_lines() {
        let s = Secrets::parse(
            "# ops\nops-pager.routing_key = R0UT1NG\n\nhooks.secret=s3cr=t\nteam.url = https://hooks.slack.com/services/T/B/X\n",
        )
        .unwrap();
        assert_eq!(s.get("ops-pager", "routing_key"), Some("R0UT1NG"));
        assert_eq!(
            s.get("hooks", "secret"),
            Some("s3cr=t"),
            "value may hold '='"
        );
        assert_eq!(
            s.get("team", "url"),
            Some("https://hooks.slack.com/services/T/B/X")
        );
        assert_eq!(s.get("team", "secret"), None);
        let e = Secrets::parse("ok.url = x\nR0UT1NG-without-key\n").unwrap_err();
        assert_eq!(e, "line 2 is not \"<channel>.<key> = <value>\"");
        assert!(!e.contains("R0UT1NG"), "the bad line is not echoed");
        assert!(Secrets::parse("nodot = v").is_err());
        assert!(Secrets::load("").unwrap().get("a", "b").is_none());
        assert!(Secrets::load("/nonexistent/secrets").is_err());
    }

    #[test]
    fn retries_back_off_to_a_cap() {
        let max = Duration::from_secs(300);
        let delays: Vec<u64> = (1..=9).map(|a| retry_delay(a, max).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(
            retry_delay(3, Duration::from_secs(2)),
            Duration::from_secs(2)
        );
        assert_eq!(retry_delay(40, max), max, "no overflow");
    }
}
