//! The Prometheus text exposition format (version 0.0.4) for the /metrics endpoint: metric
//! families with HELP and TYPE, escaped label values, bounded series counts, and the small
//! HTTP/1.0 exchange the endpoint needs (one GET, one response, close).

use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// One series: its labels (name, value) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn new(labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }
}

/// A metric family: every series of one metric name.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

impl Family {
    pub fn new(name: &str, kind: Kind, help: &str) -> Family {
        Family {
            name: metric_name(name),
            help: help.to_string(),
            kind,
            samples: Vec::new(),
        }
    }

    /// A family with one unlabelled series.
    pub fn single(name: &str, kind: Kind, help: &str, value: f64) -> Family {
        let mut f = Family::new(name, kind, help);
        f.samples.push(Sample::new(&[], value));
        f
    }

    pub fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        self.samples.push(Sample::new(labels, value));
    }
}

/// A valid metric or label name: `[a-zA-Z_:][a-zA-Z0-9_:]*` (colons not in label names), every
/// other character replaced by `_`.
pub fn metric_name(text: &str) -> String {
    sanitize(text, true)
}

fn label_name(text: &str) -> String {
    sanitize(text, false)
}

fn sanitize(text: &str, colon: bool) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn escape_label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// The exposition text of `families`: HELP and TYPE once per family, then its series. A family
/// without series is left out (a TYPE line with nothing under it says nothing).
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families.iter().filter(|f| !f.samples.is_empty()) {
        let kind = match f.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
        let _ = writeln!(out, "# TYPE {} {kind}", f.name);
        for s in &f.samples {
            out.push_str(&f.name);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{}=\"{}\"", label_name(k), escape_label_value(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", value(s.value));
        }
    }
    out
}

/// At most `limit` series: the largest values are kept and the rest summed into one series whose
/// `label` is `"(other)"` (its other labels emptied), so a server with 10,000 tables does not
/// send Prometheus 10,000 series per metric.
pub fn cap_series(mut samples: Vec<Sample>, limit: usize, label: &str) -> Vec<Sample> {
    if samples.len() <= limit {
        return samples;
    }
    samples.sort_by(|a, b| b.value.total_cmp(&a.value));
    let rest = samples.split_off(limit.saturating_sub(1));
    let labels = rest[0]
        .labels
        .iter()
        .map(|(k, _)| {
            let v = if k == label { "(other)" } else { "" };
            (k.clone(), v.to_string())
        })
        .collect();
    samples.push(Sample {
        labels,
        value: rest.iter().map(|s| s.value).sum(),
    });
    samples
}

/// What a scrape asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// GET (or HEAD) of this path.
    Get { path: String, head: bool },
    /// Anything else: answered 405.
    OtherMethod,
    /// Not HTTP at all: answered 400.
    Malformed,
}

/// The request line of an HTTP request (headers are read and ignored).
pub fn parse_request(head: &[u8]) -> Request {
    let text = String::from_utf8_lossy(head);
    let Some(line) = text.lines().next() else {
        return Request::Malformed;
    };
    let mut words = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (words.next(), words.next(), words.next())
    else {
        return Request::Malformed;
    };
    if !version.starts_with("HTTP/") {
        return Request::Malformed;
    }
    let path = target.split('?').next().unwrap_or("").to_string();
    match method {
        "GET" => Request::Get { path, head: false },
        "HEAD" => Request::Get { path, head: true },
        _ => Request::OtherMethod,
    }
}

/// Whether `buffer` holds a whole request head (ends with an empty line).
pub fn head_complete(buffer: &[u8]) -> bool {
    buffer.windows(4).any(|w| w == b"\r\n\r\n") || buffer.windows(2).any(|w| w == b"\n\n")
}

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A whole HTTP/1.1 response that closes the connection.
pub fn response(status: u16, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_with_escaped_labels() {
        let mut up = Family::new("admin_toolkit_up", Kind::Gauge, "Whether\nit runs");
        up.push(&[], 1.0);
        let mut alerts = Family::new("admin_toolkit_alert_firing", Kind::Gauge, "Firing rules");
        alerts.push(&[("rule", "CPU \"hot\"\\now\n")], 1.0);
        alerts.push(&[("rule", "calm"), ("severity", "info")], 0.0);
        let empty = Family::new("admin_toolkit_nothing", Kind::Counter, "never set");
        let text = render(&[up, alerts, empty]);
        assert_eq!(
            text,
            "# HELP admin_toolkit_up Whether\\nit runs\n\
             # TYPE admin_toolkit_up gauge\n\
             admin_toolkit_up 1\n\
             # HELP admin_toolkit_alert_firing Firing rules\n\
             # TYPE admin_toolkit_alert_firing gauge\n\
             admin_toolkit_alert_firing{rule=\"CPU \\\"hot\\\"\\\\now\\n\"} 1\n\
             admin_toolkit_alert_firing{rule=\"calm\",severity=\"info\"} 0\n"
        );
    }

    #[test]
    fn names_and_values_are_always_valid() {
        assert_eq!(
            metric_name("admin_toolkit_db size-bytes"),
            "admin_toolkit_db_size_bytes"
        );
        assert_eq!(metric_name("9lives"), "_9lives");
        assert_eq!(metric_name(""), "_");
        assert_eq!(label_name("a:b"), "a_b");
        assert_eq!(value(f64::NAN), "NaN");
        assert_eq!(value(f64::INFINITY), "+Inf");
        assert_eq!(value(0.25), "0.25");
        assert_eq!(value(1e21), "1000000000000000000000");
    }

    #[test]
    fn series_beyond_the_cap_are_summed() {
        let samples: Vec<Sample> = (1..=10)
            .map(|i| {
                Sample::new(
                    &[("schema", "public"), ("table", &format!("t{i}"))],
                    i as f64,
                )
            })
            .collect();
        let capped = cap_series(samples.clone(), 4, "table");
        assert_eq!(capped.len(), 4);
        let names: Vec<&str> = capped.iter().map(|s| s.labels[1].1.as_str()).collect();
        assert_eq!(names, ["t10", "t9", "t8", "(other)"]);
        assert_eq!(capped[3].labels[0].1, "");
        assert_eq!(capped[3].value, (1..=7).sum::<i32>() as f64);
        let total: f64 = capped.iter().map(|s| s.value).sum();
        assert_eq!(total, 55.0, "nothing lost, only summed");
        assert_eq!(cap_series(samples, 10, "table").len(), 10);
    }

    #[test]
    fn requests_and_responses() {
        assert_eq!(
            parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Request::Get {
                path: "/metrics".into(),
                head: false
            }
        );
        assert_eq!(
            parse_request(b"HEAD / HTTP/1.0\r\n\r\n"),
            Request::Get {
                path: "/".into(),
                head: true
            }
        );
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::OtherMethod
        );
        assert_eq!(parse_request(b"\x16\x03\x01 tls"), Request::Malformed);
        assert!(head_complete(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!head_complete(b"GET / HTTP/1.1\r\nHost: a\r\n"));
        let r = String::from_utf8(response(200, CONTENT_TYPE, "a 1\n", false)).unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(r.contains("Content-Length: 4\r\n"));
        assert!(r.ends_with("\r\n\r\na 1\n"));
        let h = String::from_utf8(response(200, CONTENT_TYPE, "a 1\n", true)).unwrap();
        assert!(h.ends_with("\r\n\r\n"));
    }
}
