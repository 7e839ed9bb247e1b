//! Sending one delivery: HTTP POST for PagerDuty, Slack and webhooks, SMTP for e-mail. Errors
//! never carry a URL (a Slack webhook URL is a secret) nor any secret.
//!
//! A secret goes only where the secrets file says: a channel that uses one (a routing key, a
//! signing secret, an SMTP password) takes its destination from `<channel>.url` in the same
//! file (PagerDuty's own endpoint when neither names one), so whoever may change a row of
//! alert_channels can redirect alert text, never a secret. With credentials, SMTP requires TLS.

use super::payload::{
    email_text, event_json, idempotency_key, pagerduty_body, signature, slack_body,
};
use super::{ChannelKind, Delivery, Secrets};
use crate::net::{resolve, Reach};
use std::time::{Duration, Instant};

/// PagerDuty's Events API v2, when a pagerduty channel names no target.
const PAGERDUTY_EVENTS: &str = "https://events.pagerduty.com/v2/enqueue";
/// The most of a receiver's answer an attempt records.
const ANSWER_KEPT: usize = 200;
/// Secret keys of the secrets file, and what a recorded answer shows instead of their values.
const SECRET_KEYS: [&str; 4] = ["url", "routing_key", "secret", "password"];
const REDACTED: &str = "[redacted]";

/// How an attempt may go about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The most one attempt takes, name resolution included.
    pub timeout: Duration,
    /// Which addresses a target may resolve to.
    pub reach: Reach,
}

/// What one attempt gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub delivered: bool,
    /// HTTP status, or the SMTP reply code.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: f64,
}

/// Makes one attempt at `delivery`, taking at most about `policy.timeout`.
pub fn send(delivery: &Delivery, secrets: &Secrets, policy: Policy) -> Outcome {
    let started = Instant::now();
    let result = match delivery.channel.kind {
        ChannelKind::Email => send_email(delivery, secrets, policy),
        _ => send_http(delivery, secrets, policy),
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
            error: Some(redact(&error, delivery, secrets)),
            latency_ms,
        },
    }
}

type Attempt = Result<Option<u16>, (Option<u16>, String)>;

/// Whether the channel sends a secret from the secrets file.
fn uses_secret(delivery: &Delivery, secrets: &Secrets) -> bool {
    let channel = &delivery.channel;
    match channel.kind {
        ChannelKind::PagerDuty => true,
        ChannelKind::Webhook => secrets.get(&channel.name, "secret").is_some(),
        ChannelKind::Email => channel.options.get("username").is_some(),
        ChannelKind::Slack => false,
    }
}

/// Where the delivery goes: the secrets file's `<channel>.url`, else the row's target (only
/// for a channel that sends no secret), else PagerDuty's endpoint.
pub fn destination(delivery: &Delivery, secrets: &Secrets) -> Result<String, String> {
    let channel = &delivery.channel;
    if let Some(url) = secrets.get(&channel.name, "url") {
        return Ok(url.to_string());
    }
    let row = channel.target.as_deref();
    if channel.kind == ChannelKind::PagerDuty && row.is_none_or(|t| t == PAGERDUTY_EVENTS) {
        return Ok(PAGERDUTY_EVENTS.to_string());
    }
    match row {
        Some(_) if uses_secret(delivery, secrets) => Err(format!(
            "channel \"{0}\" sends a secret from the secrets file, so its destination must be named there too: add \"{0}.url = <target>\" (a secret never follows alert_channels.target)",
            channel.name
        )),
        Some(target) => Ok(target.to_string()),
        None => Err(format!(
            "channel \"{0}\" has no target: set alert_channels.target or \"{0}.url\" in the secrets file",
            channel.name
        )),
    }
}

/// `text` cut to what an attempt keeps, printable, with no value of the channel's secrets.
fn redact(text: &str, delivery: &Delivery, secrets: &Secrets) -> String {
    let mut text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    for key in SECRET_KEYS {
        if let Some(value) = secrets.get(&delivery.channel.name, key) {
            text = text.replace(value, REDACTED);
        }
    }
    text.chars().take(ANSWER_KEPT + 100).collect()
}

fn send_http(delivery: &Delivery, secrets: &Secrets, policy: Policy) -> Attempt {
    let channel = &delivery.channel;
    let notice = &delivery.notice;
    let url = destination(delivery, secrets).map_err(|e| (None, e))?;
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
        _ => event_json(notice),
    }
    .to_string();
    let timeout = policy.timeout;
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .redirects(0)
        .resolver(move |netloc: &str| resolve(netloc, timeout, policy.reach))
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
        Ok(response) if (200..300).contains(&response.status()) => Ok(Some(response.status())),
        // Redirects are not followed (the body, signed, goes only where the channel says), so
        // a 3xx is an attempt that did not deliver.
        Ok(response) => {
            let code = response.status();
            let to = response.header("Location").unwrap_or("nowhere").to_string();
            Err((
                Some(code),
                format!("HTTP {code} from the receiver (redirects to {to} are not followed)"),
            ))
        }
        Err(ureq::Error::Status(code, response)) => {
            let text: String = response
                .into_string()
                .unwrap_or_default()
                .chars()
                .take(ANSWER_KEPT)
                .collect();
            Err((
                Some(code),
                format!("HTTP {code} from the receiver: {}", text.trim()),
            ))
        }
        Err(ureq::Error::Transport(t)) => Err((None, crate::storage::transport_error(&t))),
    }
}

fn send_email(delivery: &Delivery, secrets: &Secrets, policy: Policy) -> Attempt {
    use lettre::message::{header::ContentType, Mailbox, Message};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::{SmtpTransport, Transport};

    let channel = &delivery.channel;
    let fail = |e: String| (None, e);
    let target = destination(delivery, secrets).map_err(fail)?;
    let url = url::Url::parse(&target)
        .ok()
        .filter(|u| matches!(u.scheme(), "smtp" | "smtps") && u.host_str().is_some())
        .ok_or_else(|| {
            fail(format!(
                "channel \"{}\": target must be smtp://host[:port] or smtps://host[:port]",
                channel.name
            ))
        })?;
    let host = url.host_str().unwrap_or_default().to_string();
    let wrapped = url.scheme() == "smtps";
    let port = url.port().unwrap_or(if wrapped { 465 } else { 25 });
    let address = resolve(&format!("{host}:{port}"), policy.timeout, policy.reach)
        .map_err(|e| fail(format!("SMTP: {e}")))?
        .into_iter()
        .next()
        .ok_or_else(|| fail(format!("SMTP: \"{host}\" has no address")))?;
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
    // TLS from the start for smtps; STARTTLS required with credentials (a password sent after
    // a STARTTLS an on-path attacker stripped would be read), taken when offered otherwise.
    let user = option("username").and_then(|v| v.as_str());
    let tls =
        TlsParameters::new(host.clone()).map_err(|e| fail(format!("TLS setup for {host}: {e}")))?;
    let tls = match (wrapped, user.is_some()) {
        (true, _) => Tls::Wrapper(tls),
        (false, true) => Tls::Required(tls),
        (false, false) => Tls::Opportunistic(tls),
    };
    // Connect to the address checked above; TLS verifies the name.
    let mut transport = SmtpTransport::builder_dangerous(address.ip().to_string())
        .port(address.port())
        .tls(tls)
        .timeout(Some(policy.timeout));
    if let Some(user) = user {
        let password = secrets.get(&channel.name, "password").unwrap_or_default();
        transport = transport.credentials(Credentials::new(user.to_string(), password.to_string()));
    }
    match transport.build().send(&message) {
        Ok(response) => Ok(Some(u16::from(response.code()))),
        Err(e) => Err((e.status().map(u16::from), format!("SMTP: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::payload::tests::notice;
    use crate::notify::{Action, Channel};

    fn delivery(kind: ChannelKind, target: Option<&str>, options: serde_json::Value) -> Delivery {
        Delivery {
            delivery_id: 1,
            channel: Channel {
                name: "ch".into(),
                kind,
                target: target.map(str::to_string),
                options,
            },
            notice: notice(Action::Trigger),
        }
    }

    #[test]
    fn a_secret_goes_only_where_the_secrets_file_says() {
        let none = Secrets::default();
        let key = Secrets::parse("ch.routing_key = K").unwrap();
        let bound = Secrets::parse("ch.routing_key = K\nch.url = https://pd.example/e").unwrap();
        let attacker = "http://attacker.example/e";
        let elsewhere = Some(attacker);
        let pd = |t| delivery(ChannelKind::PagerDuty, t, serde_json::json!({}));
        assert_eq!(destination(&pd(None), &key).unwrap(), PAGERDUTY_EVENTS);
        assert_eq!(
            destination(&pd(Some(PAGERDUTY_EVENTS)), &key).unwrap(),
            PAGERDUTY_EVENTS
        );
        let refused = destination(&pd(elsewhere), &key).unwrap_err();
        assert!(refused.contains("\"ch.url = <target>\""), "{refused}");
        assert_eq!(
            destination(&pd(elsewhere), &bound).unwrap(),
            "https://pd.example/e"
        );
        // No secret, the row decides; a signing secret or SMTP credentials bind like a key.
        let hook = |s: &Secrets| {
            destination(
                &delivery(ChannelKind::Webhook, elsewhere, serde_json::json!({})),
                s,
            )
        };
        assert_eq!(hook(&none).unwrap(), attacker);
        assert!(hook(&Secrets::parse("ch.secret = S").unwrap()).is_err());
        let mail = |options| delivery(ChannelKind::Email, Some("smtp://mx.example"), options);
        assert!(destination(&mail(serde_json::json!({})), &none).is_ok());
        assert!(destination(&mail(serde_json::json!({"username": "u"})), &none).is_err());
    }

    #[test]
    fn recorded_answers_are_cut_and_never_show_a_secret() {
        let secrets =
            Secrets::parse("ch.routing_key = R0UT1NG\nch.url = https://x/SECRETPATH").unwrap();
        let d = delivery(ChannelKind::PagerDuty, None, serde_json::json!({}));
        let echoed = format!(
            "bad key R0UT1NG for https://x/SECRETPATH\n{}",
            "x".repeat(1000)
        );
        let kept = redact(&echoed, &d, &secrets);
        assert!(
            !kept.contains("R0UT1NG") && !kept.contains("SECRETPATH"),
            "{kept}"
        );
        assert!(kept.starts_with("bad key [redacted] for [redacted] x"));
        assert!(kept.chars().count() <= ANSWER_KEPT + 100);
    }

    /// A receiver answering 3xx has not taken the alert: the attempt fails with its status, and
    /// the address it points to never receives the (signed) body.
    #[test]
    fn a_redirect_is_a_failed_attempt_and_is_not_followed() {
        use std::io::{Read, Write};
        let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        elsewhere.set_nonblocking(true).unwrap();
        let to = elsewhere.local_addr().unwrap().port();
        let receiver = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = receiver.local_addr().unwrap().port();
        let answering = std::thread::spawn(move || {
            let (mut stream, _) = receiver.accept().unwrap();
            let mut request = [0u8; 8192];
            let _ = stream.read(&mut request);
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{to}/hook\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(answer.as_bytes()).unwrap();
        });
        let d = delivery(
            ChannelKind::Webhook,
            Some(&format!("http://127.0.0.1:{port}/hook")),
            serde_json::json!({}),
        );
        let policy = Policy {
            timeout: Duration::from_secs(5),
            reach: Reach::NotLinkLocal,
        };
        let outcome = send(&d, &Secrets::default(), policy);
        answering.join().unwrap();
        assert!(!outcome.delivered);
        assert_eq!(outcome.status, Some(307));
        let error = outcome.error.unwrap();
        assert!(error.contains("HTTP 307"), "{error}");
        assert!(elsewhere.accept().is_err(), "the redirect was followed");
    }

    #[test]
    fn a_metadata_target_is_refused_before_any_request() {
        let d = delivery(
            ChannelKind::Webhook,
            Some("http://169.254.169.254/latest/meta-data/"),
            serde_json::json!({}),
        );
        let policy = Policy {
            timeout: Duration::from_secs(2),
            reach: Reach::NotLinkLocal,
        };
        let outcome = send(&d, &Secrets::default(), policy);
        assert!(!outcome.delivered);
        let error = outcome.error.unwrap();
        assert!(error.contains("link-local"), "{error}");
    }
}
