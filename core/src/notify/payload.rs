//! What each kind of channel receives for a notice.

use super::{Action, Notice};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// Same for every attempt of one delivery, different for every (event, action, channel): a
/// receiver that saw it already can drop a repeat.
pub fn idempotency_key(notice: &Notice, channel: &str) -> String {
    format!(
        "admin_toolkit:{}:{}:{}:{channel}",
        notice.cluster,
        notice.event_id,
        notice.action.as_str()
    )
}

/// One key per alert episode (rule and event), so PagerDuty pairs the resolve with its trigger.
pub fn dedup_key(notice: &Notice) -> String {
    format!(
        "admin_toolkit/{}/rule/{}/event/{}",
        notice.cluster, notice.rule_id, notice.event_id
    )
}

fn headline(notice: &Notice) -> String {
    let state = match notice.action {
        Action::Trigger => "FIRING",
        Action::Resolve => "RESOLVED",
    };
    format!("[{state}] {}: {}", notice.severity, notice.message)
}

/// PagerDuty Events API v2.
pub fn pagerduty_body(notice: &Notice, routing_key: &str) -> Value {
    let mut body = json!({
        "routing_key": routing_key,
        "event_action": notice.action.as_str(),
        "dedup_key": dedup_key(notice),
    });
    if notice.action == Action::Trigger {
        // PagerDuty's severities are critical, error, warning and info.
        body["payload"] = json!({
            "summary": notice.message,
            "source": format!("postgresql {}", notice.cluster),
            "severity": notice.severity,
            "timestamp": notice.fired_at,
            "component": "postgresql",
            "group": notice.metric,
            "class": notice.rule_name,
            "custom_details": {
                "rule": notice.rule_name,
                "metric": notice.metric,
                "value": notice.value,
                "threshold": notice.threshold,
                "event_id": notice.event_id,
            },
        });
    }
    body
}

/// A Slack incoming webhook message.
pub fn slack_body(notice: &Notice) -> Value {
    let emoji = match (notice.action, notice.severity.as_str()) {
        (Action::Resolve, _) => ":white_check_mark:",
        (_, "critical") => ":red_circle:",
        (_, "warning") => ":warning:",
        _ => ":information_source:",
    };
    json!({ "text": format!("{emoji} {}", headline(notice)) })
}

/// An alert event as JSON: the body of a generic webhook and the payload of the
/// `admin_toolkit_alerts` LISTEN channel, one shape for both.
pub fn event_json(notice: &Notice) -> Value {
    json!({
        "event": notice.action.event_word(),
        "cluster": notice.cluster,
        "event_id": notice.event_id,
        "rule_id": notice.rule_id,
        "rule": notice.rule_name,
        "severity": notice.severity,
        "metric": notice.metric,
        "operator": notice.operator,
        "value": notice.value,
        "threshold": notice.threshold,
        "message": notice.message,
        "fired_at": notice.fired_at,
        "resolved_at": notice.resolved_at,
        "notification_channels": notice.channels,
        "dedup_key": dedup_key(notice),
    })
}

/// `sha256=<hex HMAC-SHA256 of the body>`, the webhook's signature header.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Subject and plain-text body of the e-mail.
pub fn email_text(notice: &Notice, channel: &str) -> (String, String) {
    let mut body = format!(
        "{}\n\nrule:      {}\nseverity:  {}\nmetric:    {}\nvalue:     {}\nthreshold: {}\nfired at:  {}\n",
        headline(notice),
        notice.rule_name,
        notice.severity,
        notice.metric,
        notice.value.map_or("-".into(), |v| v.to_string()),
        notice.threshold.map_or("-".into(), |v| v.to_string()),
        notice.fired_at,
    );
    if let Some(at) = &notice.resolved_at {
        body.push_str(&format!("resolved:  {at}\n"));
    }
    body.push_str(&format!(
        "\nidempotency key: {}\n-- admin_toolkit on cluster {}\n",
        idempotency_key(notice, channel),
        notice.cluster
    ));
    (format!("[admin_toolkit] {}", headline(notice)), body)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn notice(action: Action) -> Notice {
        Notice {
            action,
            cluster: "7311".into(),
            event_id: 42,
            rule_id: 3,
            rule_name: "High connection usage".into(),
            severity: "critical".into(),
            metric: "connection/active_connections".into(),
            operator: ">".into(),
            message: "High connection usage: active_connections > 150 (current: 151)".into(),
            value: Some(151.0),
            threshold: Some(150.0),
            fired_at: "2026-11-25T06:00:00+00:00".into(),
            resolved_at: (action == Action::Resolve).then(|| "2026-11-25T06:05:00+00:00".into()),
            channels: vec!["pagerduty".into()],
        }
    }

    #[test]
    fn pagerduty_trigger_and_resolve_share_the_dedup_key() {
        let fire = pagerduty_body(&notice(Action::Trigger), "R");
        let resolve = pagerduty_body(&notice(Action::Resolve), "R");
        assert_eq!(fire["event_action"], "trigger");
        assert_eq!(resolve["event_action"], "resolve");
        assert_eq!(fire["dedup_key"], resolve["dedup_key"]);
        assert_eq!(fire["dedup_key"], "admin_toolkit/7311/rule/3/event/42");
        assert_eq!(fire["payload"]["severity"], "critical");
        assert_eq!(fire["payload"]["custom_details"]["value"], 151.0);
        assert!(
            resolve.get("payload").is_none(),
            "resolve carries no payload"
        );
    }

    #[test]
    fn slack_webhook_and_email_say_what_happened() {
        let s = slack_body(&notice(Action::Trigger));
        assert_eq!(
            s["text"],
            ":red_circle: [FIRING] critical: High connection usage: active_connections > 150 (current: 151)"
        );
        let w = event_json(&notice(Action::Resolve));
        assert_eq!(w["event"], "resolved");
        assert_eq!(w["resolved_at"], "2026-11-25T06:05:00+00:00");
        let (subject, body) = email_text(&notice(Action::Trigger), "oncall");
        assert!(subject.starts_with("[admin_toolkit] [FIRING] critical:"));
        assert!(body.contains("admin_toolkit:7311:42:trigger:oncall"));
        assert_ne!(
            idempotency_key(&notice(Action::Trigger), "a"),
            idempotency_key(&notice(Action::Resolve), "a")
        );
    }

    #[test]
    fn signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
