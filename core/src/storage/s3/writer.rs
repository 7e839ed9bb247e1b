//! Large objects written in parts (multipart upload), a few parts in flight on threads.

use super::client::error_code;
use super::{Client, ObjectWriter, StorageError, PARALLEL_PARTS, PART_SIZE, SIGNED_FOR};
use rusty_s3::actions::{CreateMultipartUpload, S3Action};
use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;

type PartResult = Result<(u16, String), StorageError>;

/// A multipart upload: parts go up on threads as the buffer fills; the object appears only at
/// CompleteMultipartUpload. Dropped unfinished, it aborts the upload (its parts are removed).
pub(super) struct S3Writer {
    pub(super) client: Arc<Client>,
    pub(super) key: String,
    pub(super) shown: String,
    pub(super) buffer: Vec<u8>,
    pub(super) upload_id: Option<String>,
    pub(super) in_flight: VecDeque<JoinHandle<PartResult>>,
    pub(super) etags: Vec<(u16, String)>,
    pub(super) next_part: u16,
    pub(super) written: u64,
    pub(super) finished: bool,
}

impl S3Writer {
    fn start_upload(&mut self) -> Result<String, StorageError> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let url = self
            .client
            .bucket
            .create_multipart_upload(Some(&self.client.credentials), &self.key)
            .sign(SIGNED_FOR);
        let what = format!("starting the upload of {}", self.shown);
        let answer = self.client.send("POST", &url, &[], Some(b""), &what)?;
        if answer.status != 200 {
            return Err(Client::failed(&what, &answer));
        }
        let text = String::from_utf8_lossy(&answer.body);
        let id = CreateMultipartUpload::parse_response(&text)
            .map_err(|e| StorageError::Io(format!("{what}: unreadable answer: {e}")))?
            .upload_id()
            .to_string();
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    fn collect_one(&mut self) -> Result<(), StorageError> {
        if let Some(handle) = self.in_flight.pop_front() {
            let (number, etag) = handle.join().map_err(|_| {
                StorageError::Io(format!("uploading {}: a part upload panicked", self.shown))
            })??;
            self.etags.push((number, etag));
        }
        Ok(())
    }

    /// Sends the buffer as the next part, waiting first when enough parts are in flight.
    fn send_part(&mut self) -> Result<(), StorageError> {
        let upload_id = self.start_upload()?;
        while self.in_flight.len() >= PARALLEL_PARTS {
            self.collect_one()?;
        }
        let bytes = std::mem::replace(&mut self.buffer, Vec::with_capacity(PART_SIZE));
        let number = self.next_part;
        self.next_part = self.next_part.checked_add(1).ok_or_else(|| {
            StorageError::Io(format!("{} needs more than 65,535 parts", self.shown))
        })?;
        let client = Arc::clone(&self.client);
        let key = self.key.clone();
        let upload = crate::threads::with_signals_blocked(|| {
            std::thread::spawn(move || {
                client
                    .upload_part(&key, &upload_id, number, &bytes)
                    .map(|etag| (number, etag))
            })
        });
        self.in_flight.push_back(upload);
        Ok(())
    }
}

impl ObjectWriter for S3Writer {
    fn write(&mut self, mut bytes: &[u8]) -> Result<(), StorageError> {
        self.written += bytes.len() as u64;
        while !bytes.is_empty() {
            let room = PART_SIZE - self.buffer.len();
            let take = room.min(bytes.len());
            self.buffer.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buffer.len() == PART_SIZE {
                self.send_part()?;
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<u64, StorageError> {
        if self.upload_id.is_none() {
            // Small: one PUT, atomic by itself.
            let what = format!("storing {}", self.shown);
            let answer = self.client.put(&self.key, &self.buffer, &[], &what)?;
            if answer.status != 200 {
                return Err(Client::failed(&what, &answer));
            }
            self.finished = true;
            return Ok(self.written);
        }
        if !self.buffer.is_empty() {
            self.send_part()?;
        }
        while !self.in_flight.is_empty() {
            self.collect_one()?;
        }
        self.etags.sort_by_key(|(number, _)| *number);
        let upload_id = self.upload_id.clone().unwrap_or_default();
        let action = self.client.bucket.complete_multipart_upload(
            Some(&self.client.credentials),
            &self.key,
            &upload_id,
            self.etags.iter().map(|(_, etag)| etag.as_str()),
        );
        let url = action.sign(SIGNED_FOR);
        let body = action.body();
        let what = format!("completing the upload of {}", self.shown);
        let answer = self
            .client
            .send("POST", &url, &[], Some(body.as_bytes()), &what)?;
        // CompleteMultipartUpload can fail with 200 and an error document.
        if answer.status != 200 || !error_code(&answer.body).is_empty() {
            return Err(Client::failed(&what, &answer));
        }
        self.finished = true;
        Ok(self.written)
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        while let Some(handle) = self.in_flight.pop_front() {
            let _abandoned = handle.join();
        }
        if let Some(id) = &self.upload_id {
            self.client.abort(&self.key, id);
        }
    }
}
