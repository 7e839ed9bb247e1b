//! The HTTP side of the S3 client: one request with its deadline and retries, the answer read
//! no further than asked, and S3's error documents.

// The client is the other half of the S3 module: it shares its constants, settings and types.
use super::*;

/// What every request needs, shared with the part-upload threads.
pub(super) struct Client {
    pub(super) bucket: Bucket,
    pub(super) credentials: Credentials,
    pub(super) agent: ureq::Agent,
    /// One request's overall deadline.
    pub(super) deadline: Duration,
}

/// An HTTP answer, read whole.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) etag: Option<String>,
    pub(super) body: Vec<u8>,
}

/// The answer, its body read up to `limit` bytes and one more (a server that sends more than
/// was asked for is not read into memory; the caller sees the excess and refuses it).
pub(super) fn read_answer(response: ureq::Response, limit: Option<u64>) -> Result<Answer, String> {
    let status = response.status();
    let etag = response.header("ETag").map(str::to_string);
    let mut body = Vec::new();
    let reader = response.into_reader();
    let mut reader: Box<dyn Read> = match limit {
        Some(limit) => Box::new(reader.take(limit + 1)),
        None => Box::new(reader),
    };
    reader
        .read_to_end(&mut body)
        .map_err(|e| format!("reading the response failed: {e}"))?;
    Ok(Answer { status, etag, body })
}

/// A network error without its URL: a signed URL carries the access key id and a signature,
/// which must not reach a message or a log.
pub(crate) fn transport_error(t: &ureq::Transport) -> String {
    let mut text = t.kind().to_string();
    if let Some(message) = t.message() {
        text.push_str(": ");
        text.push_str(message);
    }
    let mut source = std::error::Error::source(t);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// S3's error code in an XML error body, for messages.
pub(super) fn error_code(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let code = text
        .split("<Code>")
        .nth(1)
        .and_then(|rest| rest.split("</Code>").next());
    code.unwrap_or("").to_string()
}

impl Client {
    /// Sends one request with retries; returns the final answer of any status (the caller
    /// judges 4xx), or an error after the retries when the service stays unreachable or 5xx.
    pub(super) fn send(
        &self,
        method: &str,
        url: &url::Url,
        headers: &[(&str, String)],
        body: Option<&[u8]>,
        what: &str,
    ) -> Result<Answer, StorageError> {
        self.send_limited(method, url, headers, body, what, None)
    }

    /// [`Client::send`], reading at most `limit` bytes of the answer's body.
    pub(super) fn send_limited(
        &self,
        method: &str,
        url: &url::Url,
        headers: &[(&str, String)],
        body: Option<&[u8]>,
        what: &str,
        limit: Option<u64>,
    ) -> Result<Answer, StorageError> {
        let mut delay = Duration::from_millis(100);
        let mut last = String::new();
        let started = std::time::Instant::now();
        let budget = self.deadline * 3;
        for attempt in 1..=ATTEMPTS {
            let mut request = self.agent.request_url(method, url);
            for (name, value) in headers {
                request = request.set(name, value);
            }
            let result = match body {
                Some(bytes) => request.send_bytes(bytes),
                None => request.call(),
            };
            let answer = match result {
                Ok(response) | Err(ureq::Error::Status(_, response)) => {
                    read_answer(response, limit)
                }
                Err(ureq::Error::Transport(t)) => Err(transport_error(&t)),
            };
            match answer {
                Ok(a) if a.status >= 500 || a.status == 429 => {
                    last = format!("HTTP {} {}", a.status, error_code(&a.body));
                }
                Ok(a) => return Ok(a),
                Err(e) => last = e,
            }
            if crate::storage::interrupted() {
                return Err(StorageError::Io(format!(
                    "{what}: {last} (stopped: the process was asked to stop)"
                )));
            }
            if attempt == ATTEMPTS || started.elapsed() + delay + self.deadline > budget {
                return Err(StorageError::Io(format!(
                    "{what}: {last} (after {attempt} attempts in {:.0} s)",
                    started.elapsed().as_secs_f64()
                )));
            }
            std::thread::sleep(delay);
            delay *= 2;
        }
        Err(StorageError::Io(format!(
            "{what}: {last} (after {ATTEMPTS} attempts)"
        )))
    }

    pub(super) fn failed(what: &str, answer: &Answer) -> StorageError {
        let code = error_code(&answer.body);
        let message = format!("{what}: HTTP {} {code}", answer.status);
        if answer.status == 404 && code != "NoSuchBucket" {
            StorageError::NotFound(message)
        } else {
            StorageError::Io(message)
        }
    }

    pub(super) fn put(
        &self,
        key: &str,
        bytes: &[u8],
        headers: &[(&str, String)],
        what: &str,
    ) -> Result<Answer, StorageError> {
        // The body's SHA-256 in a signed header: the service refuses a body that does not
        // match it, so the signature covers the payload too.
        let checksum = base64(&<sha2::Sha256 as sha2::Digest>::digest(bytes));
        let mut action = self.bucket.put_object(Some(&self.credentials), key);
        action
            .headers_mut()
            .insert(CHECKSUM_HEADER, checksum.clone());
        let url = action.sign(SIGNED_FOR);
        let mut headers = headers.to_vec();
        headers.push((CHECKSUM_HEADER, checksum));
        self.send("PUT", &url, &headers, Some(bytes), what)
    }

    pub(super) fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        bytes: &[u8],
    ) -> Result<String, StorageError> {
        let url = self
            .bucket
            .upload_part(Some(&self.credentials), key, number, upload_id)
            .sign(SIGNED_FOR);
        let what = format!("uploading part {number} of {key}");
        let answer = self.send("PUT", &url, &[], Some(bytes), &what)?;
        match (answer.status, answer.etag) {
            (200, Some(etag)) => Ok(etag),
            _ => Err(Self::failed(
                &what,
                &Answer {
                    etag: None,
                    ..answer
                },
            )),
        }
    }

    pub(super) fn abort(&self, key: &str, upload_id: &str) {
        let _best_effort = self.try_abort(key, upload_id);
    }

    pub(super) fn try_abort(&self, key: &str, upload_id: &str) -> Result<(), StorageError> {
        let url = self
            .bucket
            .abort_multipart_upload(Some(&self.credentials), key, upload_id)
            .sign(SIGNED_FOR);
        let what = format!("aborting an upload of {key}");
        let answer = self.send("DELETE", &url, &[], None, &what)?;
        match answer.status {
            200 | 204 | 404 => Ok(()),
            _ => Err(Self::failed(&what, &answer)),
        }
    }

    /// The unfinished multipart uploads (key, upload id) of keys starting with `prefix`
    /// (ListMultipartUploads, signed with rusty-s3's signer: it has no action for it).
    pub(super) fn open_uploads(&self, prefix: &str) -> Result<Vec<(String, String)>, StorageError> {
        let mut found = Vec::new();
        let (mut key_marker, mut id_marker) = (String::new(), String::new());
        loop {
            let mut query = vec![("prefix", prefix), ("uploads", "")];
            if !key_marker.is_empty() {
                query.push(("key-marker", key_marker.as_str()));
                query.push(("upload-id-marker", id_marker.as_str()));
            }
            let url = rusty_s3::signing::sign(
                &jiff::Timestamp::now(),
                rusty_s3::Method::Get,
                self.bucket.base_url().clone(),
                self.credentials.key(),
                self.credentials.secret(),
                self.credentials.token(),
                self.bucket.region(),
                SIGNED_FOR.as_secs(),
                query.iter().copied(),
                std::iter::empty(),
            );
            let what = format!("listing unfinished uploads under {prefix}");
            let answer = self.send("GET", &url, &[], None, &what)?;
            if answer.status != 200 {
                return Err(Self::failed(&what, &answer));
            }
            let text = String::from_utf8_lossy(&answer.body);
            let page = uploads_in(&text);
            let truncated =
                xml_values(&text, "IsTruncated").first().map(String::as_str) == Some("true");
            let next = page.last().filter(|_| truncated).cloned();
            found.extend(page);
            match next {
                Some((key, id)) => (key_marker, id_marker) = (key, id),
                None => return Ok(found),
            }
        }
    }
}
