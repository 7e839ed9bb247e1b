//! An S3-compatible bucket prefix as [`Storage`]. Requests are signed by `rusty-s3` (sans-I/O:
//! it creates no runtime and no threads) and sent by `ureq`, a blocking HTTP client, so the code
//! runs as well in the archiver process and a job worker as in the CLI. Large objects go up in
//! parts on a few plain threads, which touch nothing but the network.
//!
//! Every request has one overall deadline (connect, send, receive: a server trickling a byte a
//! minute cannot hold it), and is retried on network errors, 5xx and 429 with exponential
//! backoff while the retries' budget lasts, never once the process is asked to stop
//! ([`super::set_interrupt_check`]). A ranged read must be answered with 206 and is read no
//! further than asked. Credentials never appear in an error message.

mod answers;
mod client;
mod writer;

use super::{check_name, ObjectInfo, ObjectWriter, PutOutcome, Storage, StorageError};
use answers::{base64, uploads_in, xml_values};
pub(crate) use client::transport_error;
use client::Client;
use rusty_s3::actions::{ListObjectsV2, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};
use std::collections::VecDeque;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use writer::S3Writer;

/// How long a signed request stays valid: longer than a request and its retries may take
/// (see [`S3Settings::deadline`]), and no longer.
const SIGNED_FOR: Duration = Duration::from_secs(15 * 60);
const ATTEMPTS: u32 = 5;
/// The header carrying a PUT body's SHA-256 (base64), which S3 checks the body against.
const CHECKSUM_HEADER: &str = "x-amz-checksum-sha256";
/// One request's overall deadline when the settings name none.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);
/// Objects written through [`Storage::writer`] go up in parts of this size (S3's minimum part
/// size is 5 MiB; 16 MiB keeps a 100 GB pack under S3's 10,000 parts).
pub const PART_SIZE: usize = 16 << 20;
/// Parts in flight at once per object.
pub const PARALLEL_PARTS: usize = 4;

/// Where the S3 service is and how to authenticate, from the settings (or the CLI's flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// `http(s)://host:port` of an S3-compatible service; empty: AWS in `region`.
    pub endpoint: String,
    pub region: String,
    /// Path-style URLs (`endpoint/bucket/key`), as most S3-compatible servers need.
    pub force_path_style: bool,
    /// AWS shared-credentials (or config) file; empty: the `AWS_*` environment variables.
    /// [`S3Settings::with_aws_environment`] fills this and the fields below as the AWS SDKs do.
    pub credentials_file: String,
    /// Profile in the credentials file; empty: `AWS_PROFILE`, else `default`.
    pub profile: String,
    /// PEM file of extra certificate authorities to trust for `https` endpoints (a private CA);
    /// empty: the public roots only.
    pub ca_file: String,
    /// Overall deadline of one request in seconds (connect, send, receive); 0: 60 s. A
    /// request and its retries stop after three times this.
    pub timeout_seconds: u64,
}

impl S3Settings {
    /// One request's overall deadline.
    pub fn deadline(&self) -> Duration {
        match self.timeout_seconds {
            0 => DEFAULT_DEADLINE,
            s => Duration::from_secs(s.min(3600)),
        }
    }

    fn region(&self) -> String {
        if self.region.is_empty() {
            "us-east-1".into()
        } else {
            self.region.clone()
        }
    }

    fn credentials(&self) -> Result<Credentials, StorageError> {
        if !self.credentials_file.is_empty() {
            let path = PathBuf::from(&self.credentials_file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                StorageError::InvalidLocation(format!(
                    "cannot read the S3 credentials file \"{}\": {e}",
                    path.display()
                ))
            })?;
            let profile = if self.profile.is_empty() {
                std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into())
            } else {
                self.profile.clone()
            };
            return credentials_from_file(&text, &profile).ok_or_else(|| {
                StorageError::InvalidLocation(format!(
                    "the S3 credentials file \"{}\" has no aws_access_key_id and aws_secret_access_key in profile [{profile}]",
                    path.display()
                ))
            });
        }
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(key), Some(secret)) => Ok(match var("AWS_SESSION_TOKEN") {
                Some(token) => Credentials::new_with_token(key, secret, token),
                None => Credentials::new(key, secret),
            }),
            _ => Err(StorageError::InvalidLocation(
                "no S3 credentials: set admin_toolkit.s3_credentials_file (or --s3-credentials-file), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the server's environment".into(),
            )),
        }
    }
}

/// The keys of `profile` in an AWS shared-credentials or config file.
pub fn credentials_from_file(text: &str, profile: &str) -> Option<Credentials> {
    let mut section = super::aws_environment::ini_section(text, profile);
    let key = section.remove("aws_access_key_id")?;
    let secret = section.remove("aws_secret_access_key")?;
    Some(match section.remove("aws_session_token") {
        Some(token) => Credentials::new_with_token(key, secret, token),
        None => Credentials::new(key, secret),
    })
}

fn tls_trusting(ca_file: &str) -> Result<Arc<rustls::ClientConfig>, StorageError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let invalid = |e: String| {
        StorageError::InvalidLocation(format!("admin_toolkit.s3_ca_file \"{ca_file}\": {e}"))
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut added = 0;
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| invalid(e.to_string()))? {
        roots
            .add(cert.map_err(|e| invalid(e.to_string()))?)
            .map_err(|e| invalid(e.to_string()))?;
        added += 1;
    }
    if added == 0 {
        return Err(invalid("no certificate in it".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

pub struct S3Storage {
    client: Arc<Client>,
    /// Empty, or ending in `/`.
    prefix: String,
}

impl S3Storage {
    pub fn open(
        bucket: &str,
        prefix: &str,
        settings: &S3Settings,
    ) -> Result<S3Storage, StorageError> {
        let region = settings.region();
        let endpoint = if settings.endpoint.is_empty() {
            format!("https://s3.{region}.amazonaws.com")
        } else {
            settings.endpoint.trim_end_matches('/').to_string()
        };
        let url: url::Url = endpoint.parse().map_err(|e| {
            StorageError::InvalidLocation(format!(
                "invalid admin_toolkit.s3_endpoint \"{endpoint}\": {e}"
            ))
        })?;
        let style = if settings.force_path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(url, style, bucket.to_string(), region).map_err(|e| {
            StorageError::InvalidLocation(format!(
                "cannot address bucket \"{bucket}\" at \"{endpoint}\": {e} (set admin_toolkit.s3_force_path_style for an IP address)"
            ))
        })?;
        let deadline = settings.deadline();
        // The system resolver has no timeout: look names up within the deadline too.
        // Redirects are not followed: a signed request (and a PUT's body) goes to the endpoint
        // configured, never to wherever an answer points; a 3xx fails with its status.
        let mut agent = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout_connect(deadline.min(Duration::from_secs(10)))
            .timeout(deadline)
            .resolver(move |netloc: &str| {
                crate::net::resolve(netloc, deadline, crate::net::Reach::Anywhere)
            });
        if !settings.ca_file.is_empty() {
            agent = agent.tls_config(tls_trusting(&settings.ca_file)?);
        }
        let agent = agent.build();
        Ok(S3Storage {
            client: Arc::new(Client {
                bucket,
                credentials: settings.credentials()?,
                agent,
                deadline,
            }),
            prefix: prefix.to_string(),
        })
    }

    /// Creates `bucket` (for tests and first-time setup; backups never create buckets).
    pub fn create_bucket(bucket: &str, settings: &S3Settings) -> Result<(), StorageError> {
        let storage = S3Storage::open(bucket, "", settings)?;
        let url = storage
            .client
            .bucket
            .create_bucket(&storage.client.credentials)
            .sign(SIGNED_FOR);
        let what = format!("creating bucket {bucket}");
        let answer = storage.client.send("PUT", &url, &[], Some(b""), &what)?;
        match answer.status {
            200 => Ok(()),
            _ => Err(Client::failed(&what, &answer)),
        }
    }

    fn key(&self, name: &str) -> Result<String, StorageError> {
        check_name(name)?;
        Ok(format!("{}{name}", self.prefix))
    }

    fn get_with(&self, name: &str, range: Option<(u64, u64)>) -> Result<Vec<u8>, StorageError> {
        let key = self.key(name)?;
        let url = self
            .client
            .bucket
            .get_object(Some(&self.client.credentials), &key)
            .sign(SIGNED_FOR);
        let headers: Vec<(&str, String)> = range
            .map(|(offset, len)| {
                (
                    "Range",
                    format!("bytes={offset}-{}", offset + len.max(1) - 1),
                )
            })
            .into_iter()
            .collect();
        let what = format!("reading {}", self.describe(name));
        let limit = range.map(|(_, len)| len);
        let answer = self
            .client
            .send_limited("GET", &url, &headers, None, &what, limit)?;
        match (answer.status, range) {
            (200, None) | (206, Some(_)) => Ok(answer.body),
            (200, Some(_)) => Err(StorageError::Io(format!(
                "{what}: the server ignored the Range header (HTTP 200 instead of 206)"
            ))),
            _ => Err(Client::failed(&what, &answer)),
        }
    }
}

impl Storage for S3Storage {
    fn put_new(&self, name: &str, bytes: &[u8]) -> Result<PutOutcome, StorageError> {
        let key = self.key(name)?;
        let what = format!("storing {}", self.describe(name));
        let compare = || -> Result<PutOutcome, StorageError> {
            if self.get(name)? == bytes {
                Ok(PutOutcome::AlreadyPresent)
            } else {
                Err(StorageError::Conflict(format!(
                    "{} already exists with different content; refusing to overwrite it",
                    self.describe(name)
                )))
            }
        };
        // Look first (servers that ignore If-None-Match), then write only if still absent.
        if self.exists(name)? {
            return compare();
        }
        let answer = self
            .client
            .put(&key, bytes, &[("If-None-Match", "*".into())], &what)?;
        match answer.status {
            200 => Ok(PutOutcome::Stored),
            412 | 409 => compare(),
            _ => Err(Client::failed(&what, &answer)),
        }
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, StorageError> {
        self.get_with(name, None)
    }

    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let bytes = self.get_with(name, Some((offset, len)))?;
        if bytes.len() as u64 != len {
            return Err(StorageError::Io(format!(
                "reading {}: asked for {len} bytes at {offset}, got {}",
                self.describe(name),
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    fn exists(&self, name: &str) -> Result<bool, StorageError> {
        let key = self.key(name)?;
        let url = self
            .client
            .bucket
            .head_object(Some(&self.client.credentials), &key)
            .sign(SIGNED_FOR);
        let what = format!("looking for {}", self.describe(name));
        let answer = self.client.send("HEAD", &url, &[], None, &what)?;
        match answer.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(Client::failed(&what, &answer)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let full = format!("{}{prefix}", self.prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action =
                ListObjectsV2::new(&self.client.bucket, Some(&self.client.credentials));
            action.with_prefix(full.as_str());
            if let Some(t) = &token {
                action.with_continuation_token(t.as_str());
            }
            let url = action.sign(SIGNED_FOR);
            let what = format!("listing {}", self.describe(prefix));
            let answer = self.client.send("GET", &url, &[], None, &what)?;
            if answer.status != 200 {
                return Err(Client::failed(&what, &answer));
            }
            let text = String::from_utf8_lossy(&answer.body);
            let page = ListObjectsV2::parse_response(&text)
                .map_err(|e| StorageError::Io(format!("{what}: unreadable answer: {e}")))?;
            for object in page.contents {
                let Some(name) = object.key.strip_prefix(&self.prefix) else {
                    continue;
                };
                out.push(ObjectInfo {
                    name: name.to_string(),
                    size: object.size.unwrap_or(0),
                    modified_micros: object
                        .last_modified
                        .as_deref()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map_or(0, |t| t.timestamp_micros()),
                });
            }
            match page.next_continuation_token {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete(&self, name: &str) -> Result<(), StorageError> {
        let key = self.key(name)?;
        let url = self
            .client
            .bucket
            .delete_object(Some(&self.client.credentials), &key)
            .sign(SIGNED_FOR);
        let what = format!("deleting {}", self.describe(name));
        let answer = self.client.send("DELETE", &url, &[], None, &what)?;
        match answer.status {
            200 | 204 | 404 => Ok(()),
            _ => Err(Client::failed(&what, &answer)),
        }
    }

    fn writer(&self, name: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        Ok(Box::new(S3Writer {
            client: Arc::clone(&self.client),
            key: self.key(name)?,
            shown: self.describe(name),
            buffer: Vec::with_capacity(PART_SIZE),
            upload_id: None,
            in_flight: VecDeque::new(),
            etags: Vec::new(),
            next_part: 1,
            written: 0,
            finished: false,
        }))
    }

    fn describe(&self, name: &str) -> String {
        format!("s3://{}/{}{name}", self.client.bucket.name(), self.prefix)
    }

    fn abort_uploads(&self, prefix: &str) -> Result<usize, StorageError> {
        let uploads = self
            .client
            .open_uploads(&format!("{}{prefix}", self.prefix))?;
        for (key, id) in &uploads {
            self.client.try_abort(key, id)?;
        }
        Ok(uploads.len())
    }
}

#[cfg(test)]
mod tests {
    use super::client::error_code;
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    /// A loopback "S3 endpoint" that answers every connection by trickling one byte of a
    /// status line every `every`, or with `answer` at once when given.
    fn endpoint(every: Duration, answer: Option<&'static [u8]>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(20) {
                let Ok(mut stream) = stream else { break };
                std::thread::spawn(move || {
                    let mut request = [0u8; 4096];
                    let _ = std::io::Read::read(&mut stream, &mut request);
                    if let Some(answer) = answer {
                        let _ = stream.write_all(answer);
                        return;
                    }
                    for byte in b"HTTP/1.1 200 OK\r\n" {
                        if stream.write_all(&[*byte]).is_err() {
                            return;
                        }
                        std::thread::sleep(every);
                    }
                });
            }
        });
        format!("http://127.0.0.1:{port}")
    }

    fn storage(endpoint: String) -> S3Storage {
        let settings = S3Settings {
            endpoint,
            region: "us-east-1".into(),
            force_path_style: true,
            timeout_seconds: 1,
            ..S3Settings::default()
        };
        // SAFETY: set for this test process only; the credentials are a test's.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", "test");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        }
        S3Storage::open("bucket", "wal/", &settings).unwrap()
    }

    #[test]
    fn a_trickling_endpoint_fails_within_the_deadline() {
        let s3 = storage(endpoint(Duration::from_millis(400), None));
        let started = std::time::Instant::now();
        let err = s3
            .get("000000010000000000000001.zst")
            .unwrap_err()
            .to_string();
        let took = started.elapsed();
        // Each attempt ends at its 1 s deadline; retries stop within three deadlines.
        assert!(took < Duration::from_secs(10), "{took:?}: {err}");
        assert!(err.contains("attempts"), "{err}");
    }

    #[test]
    fn a_server_ignoring_range_is_refused_without_reading_the_whole_object() {
        let mut answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
        answer.extend(std::iter::repeat_n(b'x', 100_000));
        let s3 = storage(endpoint(Duration::ZERO, Some(answer.leak())));
        let err = s3.get_range("data.pack", 10, 100).unwrap_err().to_string();
        assert!(err.contains("ignored the Range header"), "{err}");
    }

    #[test]
    fn retries_stop_when_the_process_is_asked_to_stop() {
        // The check is the process's; only this test's thread is asked to stop.
        thread_local! {
            static STOP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        }
        fn this_thread_stops() -> bool {
            STOP.with(std::cell::Cell::get)
        }
        super::super::set_interrupt_check(this_thread_stops);
        STOP.with(|s| s.set(true));
        let s3 = storage(endpoint(
            Duration::ZERO,
            Some(b"HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\n\r\n"),
        ));
        let err = s3.get("x.zst").unwrap_err().to_string();
        assert!(err.contains("asked to stop"), "{err}");
    }

    /// A loopback endpoint answering its n-th connection with `answers[n]` (the last one
    /// again after that); the count of requests it received.
    fn scripted(answers: Vec<&'static [u8]>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(20) {
                let Ok(mut stream) = stream else { break };
                let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answer = answers[n.min(answers.len() - 1)];
                let mut request = [0u8; 4096];
                let _ = std::io::Read::read(&mut stream, &mut request);
                let _ = stream.write_all(answer);
            }
        });
        (format!("http://127.0.0.1:{port}"), seen)
    }

    #[test]
    fn server_errors_and_throttling_are_retried_until_an_answer() {
        let (url, seen) = scripted(vec![
            b"HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        ]);
        assert_eq!(storage(url).get("x.zst").unwrap(), b"ok");
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[test]
    fn client_errors_are_not_retried() {
        let (url, seen) = scripted(vec![
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 45\r\nConnection: close\r\n\r\n<Error><Code>InvalidRequest</Code></Error>\n\n\n",
        ]);
        let err = storage(url).get("x.zst").unwrap_err().to_string();
        assert!(err.contains("HTTP 400 InvalidRequest"), "{err}");
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// An answer pointing elsewhere is not followed: the request, signed for the endpoint and
    /// perhaps carrying a backup's bytes, never reaches the other address.
    #[test]
    fn redirects_are_refused_not_followed() {
        let elsewhere = TcpListener::bind("127.0.0.1:0").unwrap();
        elsewhere.set_nonblocking(true).unwrap();
        let to = elsewhere.local_addr().unwrap().port();
        let answer = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{to}/bucket/wal/x.zst\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let (url, seen) = scripted(vec![answer.leak().as_bytes()]);
        let s3 = storage(url);
        let get = s3.get("x.zst").unwrap_err().to_string();
        assert!(get.contains("HTTP 307"), "{get}");
        let put = s3.put_new("y", b"backup bytes").unwrap_err().to_string();
        assert!(put.contains("HTTP 307"), "{put}");
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(
            elsewhere.accept().is_err(),
            "a request reached the address the redirect named"
        );
    }

    /// Another writer stores the object between our look and our conditional PUT: the server
    /// answers 412 (AWS) or 409 (a concurrent conditional write); the object is then read and
    /// compared, never overwritten.
    #[test]
    fn a_conditional_write_losing_the_race_compares_and_never_overwrites() {
        const ABSENT: &[u8] =
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        const THEIRS_SAME: &[u8] =
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nours";
        const THEIRS_OTHER: &[u8] =
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\ntheirs";
        for lost in [
            &b"HTTP/1.1 412 Precondition Failed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                [..],
            &b"HTTP/1.1 409 Conflict\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"[..],
        ] {
            let (url, seen) = scripted(vec![ABSENT, lost, THEIRS_SAME]);
            let outcome = storage(url).put_new("x.zst", b"ours").unwrap();
            assert!(matches!(outcome, PutOutcome::AlreadyPresent));
            assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);

            let (url, seen) = scripted(vec![ABSENT, lost, THEIRS_OTHER]);
            let err = storage(url).put_new("x.zst", b"ours").unwrap_err();
            assert!(matches!(err, StorageError::Conflict(_)), "{err}");
            assert_eq!(
                seen.load(std::sync::atomic::Ordering::SeqCst),
                3,
                "no second PUT"
            );
        }
    }

    #[test]
    fn credentials_files_are_read_by_profile() {
        let text = "# comment\n[default]\naws_access_key_id = AKIA1\naws_secret_access_key=s1\n\n[backup]\naws_access_key_id=AKIA2\naws_secret_access_key = s2\naws_session_token = t2\n";
        let default = credentials_from_file(text, "default").unwrap();
        assert_eq!(
            (default.key(), default.secret(), default.token()),
            ("AKIA1", "s1", None)
        );
        let backup = credentials_from_file(text, "backup").unwrap();
        assert_eq!((backup.key(), backup.token()), ("AKIA2", Some("t2")));
        assert!(credentials_from_file(text, "other").is_none());
    }

    #[test]
    fn base64_is_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn unfinished_uploads_are_read_from_list_multipart_uploads_answers() {
        let xml = "<ListMultipartUploadsResult><Bucket>b</Bucket><IsTruncated>false</IsTruncated>\
            <Upload><Key>p/backup_1/data.pack</Key><UploadId>u1</UploadId><Initiated>x</Initiated></Upload>\
            <Upload><Key>p/a&amp;b</Key><UploadId>u2</UploadId></Upload></ListMultipartUploadsResult>";
        assert_eq!(
            uploads_in(xml),
            [
                ("p/backup_1/data.pack".to_string(), "u1".to_string()),
                ("p/a&b".to_string(), "u2".to_string())
            ]
        );
        assert_eq!(xml_values(xml, "IsTruncated"), ["false"]);
    }

    #[test]
    fn error_codes_are_read_from_s3_error_documents() {
        let body =
            b"<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>x</Message></Error>";
        assert_eq!(error_code(body), "NoSuchKey");
        assert_eq!(error_code(b""), "");
    }
}
