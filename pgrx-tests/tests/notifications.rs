//! Alert notifications through the outbox, to real receivers on 127.0.0.1: PagerDuty Events API
//! v2, a Slack incoming webhook, a signed webhook (checked with openssl) and e-mail (aiosmtpd).
//! A firing alert reaches every kind of channel with the right payload, its resolve follows with
//! the same dedup key, a hung receiver delays nobody else, a receiver that is down receives each
//! event exactly once when it is back, and no secret reaches a table or the server log.

use admin_toolkit_it::receiver::{HttpReceiver, PlainAuthSmtp, Received, ReservedPort, SmtpSink};
use admin_toolkit_it::{
    count, duty_done, wait_for, wait_for_todays_partition, Cluster, ClusterOptions, ScratchDir,
};
use postgres::Client;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const ROUTING_KEY: &str = "R0UT1NG-KEY-never-logged";
const SIGNING_SECRET: &str = "s1gn1ng-secret-never-logged";
const SLACK_PATH: &str = "/services/T000/B000/XXXXsecretpath";

/// A cluster whose worker reads `secrets`, retrying deliveries at most every second.
fn cluster_with_secrets(scratch: &ScratchDir, secrets: &str, extra: &[&str]) -> Cluster {
    let file = scratch.join("notification.secrets");
    std::fs::write(&file, secrets).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Passes logged: "nothing delivered twice" waits for the passes that would have.
    let mut options = ClusterOptions::default().logging_passes();
    options.settings.extend([
        format!("admin_toolkit.notification_secrets_file = '{file}'"),
        "admin_toolkit.notification_max_retry_interval = 1".to_string(),
    ]);
    options.settings.extend(extra.iter().map(|s| s.to_string()));
    Cluster::start_with(options)
}

fn set_orders(db: &mut Client, value: i32) {
    db.execute(
        "INSERT INTO admin_toolkit.performance_metrics (metric_type, metric_name, metric_value) VALUES ('app', 'orders', $1::int)",
        &[&value],
    )
    .unwrap();
}

fn rule_on(db: &mut Client, channels: &[&str]) {
    db.batch_execute(
        "INSERT INTO admin_toolkit.metric_definitions (metric_type, metric_name, metric_unit, description) \
         VALUES ('app', 'orders', 'count', 'Orders waiting')",
    )
    .unwrap();
    let channels: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
    db.execute(
        "INSERT INTO admin_toolkit.alert_rules (rule_name, metric_type, metric_name, condition_operator, threshold_value, severity, notification_channels) \
         VALUES ('Orders piling up', 'app', 'orders', '>', 10, 'critical', $1)",
        &[&channels],
    )
    .unwrap();
}

fn wait_requests(receiver: &HttpReceiver, n: usize, what: &str) -> Vec<Received> {
    wait_for(what, || {
        let r = receiver.requests();
        (r.len() >= n).then_some(r)
    })
}

/// HMAC-SHA256 of `body` with `key` by openssl, not by our own code.
fn openssl_hmac(key: &str, body: &str) -> String {
    let mut child = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", key, "-r"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_firing_alert_reaches_every_kind_of_channel_and_its_resolve_follows() {
    let scratch = ScratchDir::new("admin_toolkit_notify_");
    let pagerduty = HttpReceiver::start(0);
    let slack = HttpReceiver::start(0);
    let webhook = HttpReceiver::start(0);
    let hung = HttpReceiver::black_hole();
    let maildir = scratch.path().join("maildir");
    let smtp = SmtpSink::start(maildir);
    let secrets = format!(
        "# test secrets\npager.routing_key = {ROUTING_KEY}\npager.url = http://127.0.0.1:{}/v2/enqueue\n\
         team.url = http://127.0.0.1:{}{SLACK_PATH}\n\
         hooks.secret = {SIGNING_SECRET}\nhooks.url = http://127.0.0.1:{}/alerts\n",
        pagerduty.port, slack.port, webhook.port
    );
    let cluster = cluster_with_secrets(
        &scratch,
        &secrets,
        &["admin_toolkit.notification_timeout = 60"],
    );
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    wait_for_todays_partition(&mut db);
    db.batch_execute(&format!(
        "INSERT INTO admin_toolkit.alert_channels (channel_name, kind, target, options) VALUES
           ('pager', 'pagerduty', NULL, '{{}}'),
           ('team', 'slack', NULL, '{{}}'),
           ('hooks', 'webhook', NULL, '{{}}'),
           ('hung', 'webhook', 'http://127.0.0.1:{}/never', '{{}}'),
           ('mail', 'email', 'smtp://127.0.0.1:{}', '{{\"from\": \"db@example.com\", \"to\": [\"oncall@example.com\"]}}')",
        hung.port, smtp.port
    ))
    .unwrap();
    // Refused when written: an unknown channel, a secret in a table.
    let unknown = db
        .batch_execute(
            "INSERT INTO admin_toolkit.metric_definitions (metric_type, metric_name, metric_unit, description) VALUES ('app', 'x', 'count', 'x');
             INSERT INTO admin_toolkit.alert_rules (rule_name, metric_type, metric_name, condition_operator, threshold_value, notification_channels)
             VALUES ('x', 'app', 'x', '>', 1, ARRAY['pager', 'nope'])",
        )
        .unwrap_err();
    let unknown = unknown.as_db_error().unwrap();
    assert_eq!(unknown.code().code(), "23503");
    assert!(
        unknown.message().contains("'nope'"),
        "{}",
        unknown.message()
    );
    let secret_in_table = db
        .batch_execute(
            "INSERT INTO admin_toolkit.alert_channels (channel_name, kind, options) VALUES ('leak', 'pagerduty', '{\"routing_key\": \"k\"}')",
        )
        .unwrap_err();
    assert_eq!(secret_in_table.code().unwrap().code(), "23514");

    rule_on(&mut db, &["pager", "team", "hooks", "hung", "mail"]);
    let fired = Instant::now();
    set_orders(&mut db, 11);

    // PagerDuty Events API v2: trigger, with the routing key from the secrets file.
    let pd = wait_requests(&pagerduty, 1, "the PagerDuty trigger");
    let trigger = pd[0].json();
    assert_eq!(pd[0].path, "/v2/enqueue");
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["routing_key"], ROUTING_KEY);
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert!(trigger["payload"]["summary"]
        .as_str()
        .unwrap()
        .contains("Orders piling up"));
    let dedup = trigger["dedup_key"].as_str().unwrap().to_string();
    // Slack, at the URL from the secrets file.
    let sl = wait_requests(&slack, 1, "the Slack message");
    assert_eq!(sl[0].path, SLACK_PATH);
    assert!(sl[0].json()["text"]
        .as_str()
        .unwrap()
        .contains("[FIRING] critical"));
    // Webhook: JSON signed with HMAC-SHA256 of the body.
    let wh = wait_requests(&webhook, 1, "the webhook");
    assert_eq!(wh[0].json()["event"], "fired");
    assert_eq!(
        wh[0].header("X-Admin-Toolkit-Signature"),
        Some(format!("sha256={}", openssl_hmac(SIGNING_SECRET, &wh[0].body)).as_str())
    );
    assert!(wh[0]
        .header("Idempotency-Key")
        .unwrap()
        .ends_with(":trigger:hooks"));
    // E-mail.
    let mail = wait_for("the e-mail", || {
        let m = smtp.messages();
        (!m.is_empty()).then_some(m)
    });
    assert!(
        mail[0].contains("Subject: [admin_toolkit] [FIRING] critical"),
        "{}",
        mail[0]
    );
    assert!(mail[0].contains("oncall@example.com"));
    // The hung receiver (60 s timeout) held up none of them.
    let slowest = [&pd[0], &sl[0], &wh[0]].iter().map(|r| r.at).max().unwrap();
    assert!(
        slowest.duration_since(fired) < Duration::from_secs(20),
        "delivered {:?} after firing",
        slowest.duration_since(fired)
    );

    // Resolve: the same dedup key; each receiver gets exactly two requests.
    set_orders(&mut db, 5);
    let pd = wait_requests(&pagerduty, 2, "the PagerDuty resolve");
    let resolve = pd[1].json();
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(resolve["dedup_key"], dedup.as_str());
    let sl = wait_requests(&slack, 2, "the Slack resolve");
    assert!(sl[1].json()["text"]
        .as_str()
        .unwrap()
        .contains("[RESOLVED]"));
    let wh = wait_requests(&webhook, 2, "the webhook resolve");
    assert_eq!(wh[1].json()["event"], "resolved");
    wait_for("the resolve e-mail", || {
        (smtp.messages().len() >= 2).then_some(())
    });
    wait_for("the eight events recorded as delivered", || {
        (count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.alert_deliveries WHERE status = 'delivered' AND channel_name <> 'hung'",
        ) == 8)
            .then_some(())
    });
    cluster.wait_for_passes(&duty_done("alerting"), 2);
    assert_eq!(pagerduty.requests().len(), 2, "nothing delivered twice");
    assert_eq!(slack.requests().len(), 2);
    assert_eq!(webhook.requests().len(), 2);
    assert_eq!(smtp.messages().len(), 2);

    // Every attempt is recorded; the hung one is still in flight, the rest delivered.
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.alert_deliveries WHERE status = 'delivered'"
        ),
        8
    );
    assert!(
        count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.alert_delivery_attempts WHERE succeeded AND latency_ms > 0 AND status_code IS NOT NULL"
        ) >= 8
    );
    // No secret in any table or in the server log.
    let dump: String = db
        .query_one(
            "SELECT concat_ws(' ', (SELECT string_agg(c::text, ' ') FROM admin_toolkit.alert_channels c), \
                    (SELECT string_agg(a::text, ' ') FROM admin_toolkit.alert_delivery_attempts a), \
                    (SELECT string_agg(d::text, ' ') FROM admin_toolkit.alert_deliveries d))",
            &[],
        )
        .unwrap()
        .get(0);
    let log = cluster.server_log();
    for secret in [ROUTING_KEY, SIGNING_SECRET, "XXXXsecretpath"] {
        assert!(!dump.contains(secret), "{secret} in a table");
        assert!(!log.contains(secret), "{secret} in the server log");
    }
}

#[test]
fn a_receiver_that_is_down_gets_each_event_once_when_it_is_back() {
    let scratch = ScratchDir::new("admin_toolkit_notify_");
    // The receiver's port, ours while it is down: connections are refused, nobody else binds it.
    let reserved = ReservedPort::new();
    let port = reserved.port;
    let cluster = cluster_with_secrets(&scratch, "", &[]);
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    wait_for_todays_partition(&mut db);
    db.batch_execute(&format!(
        "INSERT INTO admin_toolkit.alert_channels (channel_name, kind, target) VALUES ('late', 'webhook', 'http://127.0.0.1:{port}/hook')"
    ))
    .unwrap();
    rule_on(&mut db, &["late"]);
    set_orders(&mut db, 11);
    // Nothing listens: attempts fail and are retried.
    wait_for("failed attempts while the receiver is down", || {
        (count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.alert_delivery_attempts WHERE NOT succeeded",
        ) >= 2)
            .then_some(())
    });
    let error: String = db
        .query_one(
            "SELECT last_error FROM admin_toolkit.alert_deliveries WHERE channel_name = 'late'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(error.to_lowercase().contains("connect"), "{error}");
    // Meanwhile the alert resolves: its resolve waits behind the undelivered trigger.
    set_orders(&mut db, 5);
    wait_for("the resolve queued", || {
        (count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.alert_deliveries WHERE action = 'resolve'",
        ) == 1)
            .then_some(())
    });

    let receiver = HttpReceiver::start_on(reserved.listen());
    let got = wait_requests(&receiver, 2, "both events once the receiver is back");
    assert_eq!(got[0].json()["event"], "fired", "the trigger first");
    assert_eq!(got[1].json()["event"], "resolved");
    wait_for("both recorded as delivered", || {
        (count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.alert_deliveries WHERE status <> 'delivered'",
        ) == 0)
            .then_some(())
    });
    cluster.wait_for_passes(&duty_done("alerting"), 2);
    assert_eq!(receiver.requests().len(), 2, "each event exactly once");
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.alert_deliveries WHERE status = 'delivered' AND attempts >= 1"
        ),
        2
    );

    // A receiver that answers with an error is retried too, and the status is recorded.
    receiver.answer_with(503);
    set_orders(&mut db, 12);
    wait_for("a 503 recorded", || {
        (count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.alert_delivery_attempts WHERE status_code = 503",
        ) >= 1)
            .then_some(())
    });
    receiver.answer_with(200);
    wait_for("delivered after the 503", || {
        (count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.alert_deliveries WHERE status = 'delivered'",
        ) == 3)
            .then_some(())
    });
    cluster.assert_no_crash();
}

/// Whoever may change a row of alert_channels redirects alert text, never a secret: a secret
/// goes only to the destination the secrets file names, SMTP credentials only over TLS, and no
/// target reaches a cloud metadata address.
#[test]
fn a_secret_never_follows_a_changed_target_and_needs_tls() {
    const PASSWORD: &str = "smtp-Passw0rd-never-sent";
    let scratch = ScratchDir::new("admin_toolkit_notify_");
    let pagerduty = HttpReceiver::start(0);
    let attacker = HttpReceiver::start(0);
    let smtp = PlainAuthSmtp::start();
    let secrets = format!(
        "bound.routing_key = {ROUTING_KEY}\nbound.url = http://127.0.0.1:{}/v2/enqueue\n\
         unbound.routing_key = {ROUTING_KEY}\n\
         mail.password = {PASSWORD}\nmail.url = smtp://127.0.0.1:{}\n",
        pagerduty.port, smtp.port
    );
    let cluster = cluster_with_secrets(&scratch, &secrets, &[]);
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    wait_for_todays_partition(&mut db);
    let to_attacker = format!("http://127.0.0.1:{}/steal", attacker.port);
    db.execute(
        "INSERT INTO admin_toolkit.alert_channels (channel_name, kind, target, options) VALUES
           ('bound', 'pagerduty', NULL, '{}'),
           ('unbound', 'pagerduty', $1, '{}'),
           ('mail', 'email', NULL, '{\"username\": \"alerts\", \"from\": \"db@example.com\", \"to\": \"oncall@example.com\"}'),
           ('metadata', 'webhook', 'http://169.254.169.254/latest/meta-data/', '{}')",
        &[&to_attacker],
    )
    .unwrap();
    rule_on(&mut db, &["bound", "unbound", "mail", "metadata"]);
    set_orders(&mut db, 11);
    let got = wait_requests(&pagerduty, 1, "the trigger at the bound destination");
    assert_eq!(got[0].json()["routing_key"], ROUTING_KEY);
    // The row now names the attacker: the resolve still goes where the secrets file says.
    db.execute(
        "UPDATE admin_toolkit.alert_channels SET target = $1 WHERE channel_name = 'bound'",
        &[&to_attacker],
    )
    .unwrap();
    set_orders(&mut db, 5);
    let got = wait_requests(&pagerduty, 2, "the resolve at the bound destination");
    assert_eq!(got[1].json()["event_action"], "resolve");

    let last_error = |db: &mut Client, channel: &str| -> String {
        wait_for(&format!("a failed attempt of {channel}"), || {
            db.query_opt(
                "SELECT last_error FROM admin_toolkit.alert_deliveries WHERE channel_name = $1 AND last_error IS NOT NULL LIMIT 1",
                &[&channel],
            )
            .unwrap()
            .map(|r| r.get::<_, String>(0))
        })
    };
    let unbound = last_error(&mut db, "unbound");
    assert!(unbound.contains("\"unbound.url = <target>\""), "{unbound}");
    let mail = last_error(&mut db, "mail");
    assert!(mail.to_lowercase().contains("tls"), "{mail}");
    let metadata = last_error(&mut db, "metadata");
    assert!(metadata.contains("link-local"), "{metadata}");
    assert!(
        attacker.requests().is_empty(),
        "the attacker's receiver got a request"
    );
    // The SMTP server offering AUTH without STARTTLS heard a greeting, never credentials.
    let heard = smtp.lines();
    assert!(heard.iter().any(|l| l.starts_with("EHLO")), "{heard:?}");
    assert!(
        !heard
            .iter()
            .any(|l| l.to_ascii_uppercase().starts_with("AUTH")),
        "{heard:?}"
    );
    assert!(!heard.iter().any(|l| l.starts_with("MAIL")), "{heard:?}");
}

/// A delivery that keeps failing is given up once admin_toolkit.notification_give_up_after has
/// passed since its event, with the reason, and is not tried again.
#[test]
fn a_delivery_failing_past_the_give_up_time_is_marked_failed_and_left() {
    let scratch = ScratchDir::new("admin_toolkit_notify_");
    // A port nobody listens on while the test runs: every attempt is refused.
    let down = ReservedPort::new();
    let cluster = cluster_with_secrets(
        &scratch,
        "",
        &["admin_toolkit.notification_give_up_after = 60"],
    );
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    wait_for_todays_partition(&mut db);
    db.batch_execute(&format!(
        "INSERT INTO admin_toolkit.alert_channels (channel_name, kind, target) VALUES ('down', 'webhook', 'http://127.0.0.1:{}/hook')",
        down.port
    ))
    .unwrap();
    rule_on(&mut db, &["down"]);
    set_orders(&mut db, 11);
    wait_for("a failed attempt", || {
        (count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.alert_delivery_attempts WHERE NOT succeeded",
        ) >= 1)
            .then_some(())
    });
    // The delivery is older than the give-up time (60 s) as far as the outbox can tell.
    db.batch_execute(
        "UPDATE admin_toolkit.alert_deliveries SET created_at = now() - interval '61 s' WHERE channel_name = 'down'",
    )
    .unwrap();
    let (status, error): (String, String) = wait_for("the delivery given up", || {
        let r = db
            .query_one(
                "SELECT status, coalesce(last_error, '') FROM admin_toolkit.alert_deliveries WHERE channel_name = 'down'",
                &[],
            )
            .unwrap();
        let status: String = r.get(0);
        (status != "pending").then(|| (status, r.get(1)))
    });
    assert_eq!(status, "failed");
    assert!(error.contains("given up after 60 s"), "{error}");
    // Given up means left: no attempt after it (waiting for two retry intervals of 1 s).
    let attempts = |db: &mut Client| {
        count(
            db,
            "SELECT count(*) FROM admin_toolkit.alert_delivery_attempts",
        )
    };
    let before = attempts(&mut db);
    let later = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < later {
        assert_eq!(attempts(&mut db), before, "an attempt after giving up");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// admin_toolkit.notification_allow_link_local: off (the default), a link-local target (the
/// range of cloud metadata services) is refused before any connection; switched on, it is tried
/// like any other address (169.254.0.1, port 9: on most machines nothing answers there).
#[test]
fn a_link_local_target_is_refused_unless_allowed() {
    let scratch = ScratchDir::new("admin_toolkit_notify_");
    let cluster = cluster_with_secrets(&scratch, "", &["admin_toolkit.notification_timeout = 2"]);
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    wait_for_todays_partition(&mut db);
    db.batch_execute(
        "INSERT INTO admin_toolkit.alert_channels (channel_name, kind, target, options) \
         VALUES ('meta', 'webhook', 'http://169.254.0.1:9/alerts', '{}')",
    )
    .unwrap();
    rule_on(&mut db, &["meta"]);
    set_orders(&mut db, 11);
    let last_error = |db: &mut Client| -> Option<String> {
        db.query_opt(
            "SELECT error FROM admin_toolkit.alert_delivery_attempts ORDER BY attempt_id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .and_then(|r| r.get(0))
    };
    let refused = wait_for("a refused attempt", || last_error(&mut db));
    assert!(refused.contains("link-local"), "{refused}");

    db.batch_execute("ALTER SYSTEM SET admin_toolkit.notification_allow_link_local = on")
        .unwrap();
    cluster.reload_until("admin_toolkit.notification_allow_link_local", Some("on"));
    // Whatever is (or is not) at that address, the attempt is no longer refused.
    wait_for("an attempt made, not refused", || {
        last_error(&mut db).filter(|e| !e.contains("link-local"))
    });
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.alert_deliveries WHERE status = 'delivered'"
        ),
        0
    );
}
