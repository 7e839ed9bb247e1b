//! Sending one delivery: HTTP POST for PagerDuty, Slack and webhooks, SMTP for e-mail. Errors
//! never carry a URL (a Slack webhook URL is a secret) nor any secret.

use super::payload::{
    email_text, idempotency_key, pagerduty_body, signature, slack_body, webhook_body,
};
use super::{ChannelKind, Delivery, Secrets};
use std::time::{Duration, Instant};

/// PagerDuty's Events API v2, when a pagerduty channel names no target.
const PAGERDUTY_EVENTS: &str = "https://events.pagerduty.com/v2/enqueue";

/// What one attempt gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub delivered: bool,
    /// HTTP status, or the SMTP reply code.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: f64,
}

/// Makes one attempt at `delivery`, taking at most about `timeout`.
pub fn send(delivery: &Delivery, secrets: &Secrets, timeout: Duration) -> Outcome {
    let started = Instant::now();
    let result = match delivery.channel.kind {
        ChannelKind::Email => send_email(delivery, secrets, timeout),
        _ => send_http(delivery, secrets, timeout),
    };
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(status) => Outcome {
            delivered: true,
            status,
            error: None,
            latency_ms,
        },
        Err((status, error)) => Outcome {
            delivered: false,
            status,
            error: Some(error),
            latency_ms,
        },
    }
}

type Attempt = Result<Option<u16>, (Option<u16>, String)>;

fn target(delivery: &Delivery, secrets: &Secrets) -> Option<String> {
    let channel = &delivery.channel;
    secrets
        .get(&channel.name, "url")
        .map(str::to_string)
        .or_else(|| channel.target.clone())
        .or_else(|| (channel.kind == ChannelKind::PagerDuty).then(|| PAGERDUTY_EVENTS.to_string()))
}

fn send_http(delivery: &Delivery, secrets: &Secrets, timeout: Duration) -> Attempt {
    let channel = &delivery.channel;
    let notice = &delivery.notice;
    let url = target(delivery, secrets).ok_or((
        None,
        format!(
            "channel \"{}\" has no target: set notification_channels.target or \"{}.url\" in the secrets file",
            channel.name, channel.name
        ),
    ))?;
    let body = match channel.kind {
        ChannelKind::PagerDuty => {
            let key = secrets.get(&channel.name, "routing_key").ok_or((
                None,
                format!(
                    "channel \"{}\" has no routing key: set \"{}.routing_key\" in the secrets file",
                    channel.name, channel.name
                ),
            ))?;
            pagerduty_body(notice, key)
        }
        ChannelKind::Slack => slack_body(notice),
        _ => webhook_body(notice),
    }
    .to_string();
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .redirects(0)
        .build();
    let mut request = agent
        .post(&url)
        .set("Content-Type", "application/json")
        .set(
            "User-Agent",
            concat!("admin_toolkit/", env!("CARGO_PKG_VERSION")),
        )
        .set("Idempotency-Key", &idempotency_key(notice, &channel.name));
    if channel.kind == ChannelKind::Webhook {
        if let Some(secret) = secrets.get(&channel.name, "secret") {
            request = request.set(
                "X-Admin-Toolkit-Signature",
                &signature(secret, body.as_bytes()),
            );
        }
    }
    match request.send_string(&body) {
        Ok(response) => Ok(Some(response.status())),
        Err(ureq::Error::Status(code, response)) => {
            let text: String = response
                .into_string()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect();
            Err((
                Some(code),
                format!("HTTP {code} from the receiver: {}", text.trim()),
            ))
        }
        Err(ureq::Error::Transport(t)) => Err((None, crate::storage::transport_error(&t))),
    }
}

fn send_email(delivery: &Delivery, secrets: &Secrets, timeout: Duration) -> Attempt {
    use lettre::message::{header::ContentType, Mailbox, Message};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::{SmtpTransport, Transport};

    let channel = &delivery.channel;
    let fail = |e: String| (None, e);
    let target = target(delivery, secrets).ok_or_else(|| {
        fail(format!(
            "channel \"{}\" has no SMTP server: set target to smtp://host:port",
            channel.name
        ))
    })?;
    let url = url::Url::parse(&target)
        .ok()
        .filter(|u| u.scheme() == "smtp" && u.host_str().is_some())
        .ok_or_else(|| {
            fail(format!(
                "channel \"{}\": target must be smtp://host[:port]",
                channel.name
            ))
        })?;
    let host = url.host_str().unwrap_or_default().to_string();
    let option = |key: &str| channel.options.get(key);
    let from: Mailbox = option("from")
        .and_then(|v| v.as_str())
        .unwrap_or("admin_toolkit@localhost")
        .parse()
        .map_err(|e| {
            fail(format!(
                "channel \"{}\": bad options.from: {e}",
                channel.name
            ))
        })?;
    let recipients: Vec<&str> = match option("to") {
        Some(serde_json::Value::String(one)) => vec![one.as_str()],
        Some(serde_json::Value::Array(many)) => many.iter().filter_map(|v| v.as_str()).collect(),
        _ => vec![],
    };
    if recipients.is_empty() {
        return Err(fail(format!(
            "channel \"{}\": options.to names no recipient",
            channel.name
        )));
    }
    let (subject, text) = email_text(&delivery.notice, &channel.name);
    let mut message = Message::builder()
        .from(from)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    for to in recipients {
        let mailbox: Mailbox = to
            .parse()
            .map_err(|e| fail(format!("channel \"{}\": bad recipient: {e}", channel.name)))?;
        message = message.to(mailbox);
    }
    let message = message
        .body(text)
        .map_err(|e| fail(format!("cannot build the e-mail: {e}")))?;
    // STARTTLS whenever the server offers it.
    let tls =
        TlsParameters::new(host.clone()).map_err(|e| fail(format!("TLS setup for {host}: {e}")))?;
    let mut transport = SmtpTransport::builder_dangerous(host)
        .port(url.port().unwrap_or(25))
        .tls(Tls::Opportunistic(tls))
        .timeout(Some(timeout));
    if let Some(user) = option("username").and_then(|v| v.as_str()) {
        let password = secrets.get(&channel.name, "password").unwrap_or_default();
        transport = transport.credentials(Credentials::new(user.to_string(), password.to_string()));
    }
    match transport.build().send(&message) {
        Ok(response) => Ok(Some(u16::from(response.code()))),
        Err(e) => Err((e.status().map(u16::from), format!("SMTP: {e}"))),
    }
}
