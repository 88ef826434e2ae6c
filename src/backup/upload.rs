//! Stage 4, the archive's way out: S3 multipart upload (create, upload part, complete,
//! abort). The restore's big objects go out the same way.

use std::rc::Rc;

use crate::backup::checkpoint::DonePart;
use crate::backup::parts::{Part, MAX_PARTS};
use crate::io::http::{self, InFlight, Pollable};
use crate::s3::retry::Retry;
use crate::s3::{check_status, ops, xml, S3Error, S3};

/// An open multipart upload. Dropping it does nothing: the caller completes or aborts.
pub struct MultipartUpload<'a> {
    s3: &'a S3,
    pub key: String,
    upload_id: String,
    parts: Vec<(u32, String)>,
    /// The size of each stored part, beside `parts` (same order), for checkpoints.
    sizes: Vec<(u32, u64)>,
    started: u32,
    /// Bytes of all parts started: the archive's size once complete.
    bytes: u64,
    /// A Complete's outcome could not be settled: the object may still appear, so the
    /// upload must not be aborted.
    unsettled: bool,
    /// The service's limit on parts (MAX_PARTS).
    max_parts: u32,
}

/// How long a CompleteMultipartUpload may take to answer, and between the bytes of its
/// answer: the service assembles the parts meanwhile (AWS documents minutes for big
/// uploads, keeping the connection open with whitespace), so it is not `TIMEOUT_SECONDS`
/// but two minutes and a second more for every 10 parts (about 19 minutes for 10,000).
pub fn complete_wait(parts: usize, timeout: std::time::Duration) -> std::time::Duration {
    let parts = u64::try_from(parts).unwrap_or(u64::MAX);
    std::time::Duration::from_secs(120)
        .saturating_add(std::time::Duration::from_millis(parts.saturating_mul(100)))
        .max(timeout)
}

/// How long an UploadPartCopy may take to answer: the service copies the whole range
/// before it does (AWS may send its 200 early and the result later), so TIMEOUT_SECONDS
/// plus a second for every 8 MiB, two minutes at least.
pub fn copy_wait(bytes: u64, timeout: std::time::Duration) -> std::time::Duration {
    let per_size = std::time::Duration::from_secs(bytes / (8 * 1024 * 1024));
    timeout
        .saturating_add(per_size)
        .max(std::time::Duration::from_secs(120))
}

/// After a Complete whose answer is lost, or that a retry finds already gone, the object
/// may be on its way: how long to look for it before deciding.
const SETTLE_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// What looking for a completed upload found.
#[derive(Debug, PartialEq, Eq)]
enum Settled {
    /// The archive is there with every byte.
    Stored,
    /// The upload is still there and no archive appeared: the Complete did not take.
    NotCompleted,
    /// The upload is gone and no archive appeared in the time allowed.
    Vanished,
    /// Neither could be told (the service did not answer).
    Unknown,
}

enum PartState {
    Sending(InFlight),
    /// Waiting until the monotonic deadline before the next attempt.
    Backoff(u64),
}

/// Bytes of an object in the destination bucket that a part is copied from, by the
/// service (UploadPartCopy): `first..=last` of `key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopySource {
    pub key: String,
    pub first: u64,
    pub last: u64,
}

/// One part on its way to the destination: bytes sent, or a range copied.
pub struct PartUpload {
    pub number: u32,
    data: Rc<Vec<u8>>,
    sha256: String,
    copy: Option<CopySource>,
    size: u64,
    state: PartState,
    retry: Retry,
}

impl PartUpload {
    /// Bytes held in memory for it.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the service copies it (UploadPartCopy).
    pub fn is_copy(&self) -> bool {
        self.copy.is_some()
    }

    fn send(&self, upload: &MultipartUpload<'_>) -> Result<PartState, S3Error> {
        if let Some(c) = &self.copy {
            let op = ops::upload_part_copy(
                &upload.key,
                &upload.upload_id,
                self.number,
                upload.s3.bucket(),
                &c.key,
                c.first,
                c.last,
            );
            return Ok(PartState::Sending(upload.s3.start_waiting(
                &op,
                None,
                crate::s3::sigv4::EMPTY_SHA256,
                copy_wait(self.size, upload.s3.timeout()),
            )?));
        }
        let op = ops::upload_part(&upload.key, &upload.upload_id, self.number);
        Ok(PartState::Sending(upload.s3.start(
            &op,
            Some(self.data.clone()),
            &self.sha256,
        )?))
    }

    /// Waits for an attempt on the wire to be answered, so that an abort cannot race a
    /// part still being stored.
    pub fn settle(self) {
        if let PartState::Sending(f) = self.state {
            let _ = f.wait();
        }
    }

    pub fn pollables(&self, out: &mut Vec<Pollable>) {
        match &self.state {
            PartState::Sending(f) => out.extend(f.pollables()),
            PartState::Backoff(deadline) => out.push(http::timer(*deadline)),
        }
    }
}

/// The ETag in an UploadPartCopy's answer: a 200 may still carry an `<Error>` (the
/// service failed while copying), which is the error it names.
fn copied_etag(resp: &mut crate::io::http::Response, number: u32) -> Result<String, S3Error> {
    let text = resp.read_to_string(64 * 1024)?;
    if let Some(etag) = xml::parse_copy_part_etag(&text) {
        return Ok(etag);
    }
    Err(match xml::parse_error(&text) {
        Some(e) => S3Error::Status {
            status: if e.code == "SlowDown" { 503 } else { 500 },
            code: e.code,
            message: e.message,
        },
        None => S3Error::Protocol(format!("UploadPartCopy {number} answered without an ETag")),
    })
}

/// HeadBucket on the destination: a missing or forbidden bucket is reported before any
/// object is read, naming the destination rather than failing at the first part.
pub fn check_bucket(s3: &S3) -> Result<(), S3Error> {
    s3.call(&ops::head_bucket(), None).map(drop)
}

impl<'a> MultipartUpload<'a> {
    /// CreateMultipartUpload.
    pub fn create(s3: &'a S3, key: &str, content_type: &str) -> Result<Self, S3Error> {
        Self::create_with(s3, key, vec![("content-type".into(), content_type.into())])
    }

    /// With the object's headers (`content-type`, `x-amz-meta-*`), as restore sets them.
    pub fn create_with(
        s3: &'a S3,
        key: &str,
        headers: Vec<(String, String)>,
    ) -> Result<Self, S3Error> {
        let op = ops::create_multipart_upload(key, headers);
        // An empty body, with `Content-Length: 0`, which S3 requires of a POST.
        let text = s3.call_xml(&op, Some(b""))?;
        let upload_id =
            xml::parse_upload_id(&text).map_err(|e| S3Error::Protocol(e.to_string()))?;
        Ok(Self {
            s3,
            key: key.to_string(),
            upload_id,
            parts: Vec::new(),
            sizes: Vec::new(),
            started: 0,
            bytes: 0,
            unsettled: false,
            max_parts: MAX_PARTS,
        })
    }

    /// The upload a checkpoint recorded, with its stored parts; the next part is the one
    /// after them (parts a stopped run sent later are overwritten or left out).
    pub fn resume(s3: &'a S3, key: &str, upload_id: &str, parts: &[DonePart]) -> Self {
        Self {
            s3,
            key: key.to_string(),
            upload_id: upload_id.to_string(),
            parts: parts.iter().map(|p| (p.number, p.etag.clone())).collect(),
            sizes: parts.iter().map(|p| (p.number, p.size)).collect(),
            started: parts.len() as u32,
            bytes: parts.iter().map(|p| p.size).sum(),
            unsettled: false,
            max_parts: MAX_PARTS,
        }
    }

    /// With the destination's limit on parts (MAX_PARTS) instead of S3's 10,000.
    pub fn limited_to(mut self, max_parts: u32) -> Self {
        self.max_parts = max_parts.min(MAX_PARTS);
        self
    }

    /// The stored parts, in order, for a checkpoint.
    pub fn done_parts(&self) -> Vec<DonePart> {
        // `sizes` is pushed beside `parts`, in the same order.
        let mut parts: Vec<DonePart> = self
            .parts
            .iter()
            .zip(&self.sizes)
            .map(|((number, etag), (_, size))| DonePart {
                number: *number,
                etag: etag.clone(),
                size: *size,
            })
            .collect();
        parts.sort_unstable_by_key(|p| p.number);
        parts
    }

    /// Parts stored so far.
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// Starts UploadPart for the next part number. The part is kept until it is stored,
    /// so a failed attempt can be sent again.
    pub fn start_part(&mut self, part: Part) -> Result<PartUpload, S3Error> {
        let size = part.data.len() as u64;
        self.start(PartUpload {
            number: 0,
            sha256: part.sha256,
            data: Rc::new(part.data),
            copy: None,
            size,
            state: PartState::Backoff(0),
            retry: self.s3.retry(),
        })
    }

    /// Starts UploadPartCopy for the next part number: the bytes of `source`, an object
    /// in the same bucket, copied by the service without passing through here.
    pub fn start_copy(&mut self, source: CopySource) -> Result<PartUpload, S3Error> {
        self.start(PartUpload {
            number: 0,
            sha256: String::new(),
            data: Rc::default(),
            size: source.last + 1 - source.first,
            copy: Some(source),
            state: PartState::Backoff(0),
            retry: self.s3.retry(),
        })
    }

    fn start(&mut self, mut part: PartUpload) -> Result<PartUpload, S3Error> {
        let number = self.started + 1;
        if number > self.max_parts {
            // A backup planned as one upload that outgrew it (the bucket grew well past
            // the estimate the run began with).
            return Err(S3Error::Protocol(format!(
                "the archive needs more than {} parts (MAX_PARTS): the bucket outgrew the estimate \
                 this backup began with (its last archive, or a listing), past what one upload \
                 holds; split it over shards (SHARDS, `spaces-backup run --shards N`)",
                self.max_parts
            )));
        }
        part.number = number;
        part.state = part.send(self)?;
        self.started = number;
        self.bytes += part.size;
        Ok(part)
    }

    /// Gives back the number of `part`, the last one started, which the service
    /// refused for good: the next part takes its number (part numbers stay 1..n).
    pub fn unstart(&mut self, part: PartUpload) {
        if part.number == self.started {
            self.started -= 1;
            self.bytes -= part.size;
        }
    }

    /// Parts started so far (the next part is this plus one).
    pub fn started(&self) -> u32 {
        self.started
    }

    /// Uploads `part` and waits until it is stored (with retries).
    pub fn upload_part(&mut self, part: Part) -> Result<(), S3Error> {
        let mut upload = self.start_part(part)?;
        while !self.step(&mut upload)? {
            let mut pollables = Vec::new();
            upload.pollables(&mut pollables);
            http::wait_any(&pollables);
        }
        Ok(())
    }

    /// Moves an in-flight part on without blocking. `Ok(true)` once it is stored.
    pub fn step(&mut self, part: &mut PartUpload) -> Result<bool, S3Error> {
        match &mut part.state {
            PartState::Backoff(deadline) => {
                if http::now_nanos() >= *deadline {
                    part.state = part.send(self)?;
                }
                Ok(false)
            }
            PartState::Sending(f) => {
                f.pump();
                let Some(answer) = f.try_response() else {
                    return Ok(false);
                };
                let copy = part.copy.is_some();
                let stored = answer
                    .map_err(S3Error::from)
                    .and_then(check_status)
                    .and_then(|mut resp| {
                        if copy {
                            return copied_etag(&mut resp, part.number);
                        }
                        resp.header("etag")
                            .filter(|e| !e.is_empty())
                            .ok_or_else(|| {
                                S3Error::Protocol(format!(
                                    "UploadPart {} answered without an ETag",
                                    part.number
                                ))
                            })
                    });
                match stored {
                    Ok(etag) => {
                        self.parts.push((part.number, etag));
                        self.sizes.push((part.number, part.size));
                        part.data = Rc::default();
                        Ok(true)
                    }
                    Err(e) => {
                        let name = if copy { "UploadPartCopy" } else { "UploadPart" };
                        let deadline =
                            self.s3.backoff(&mut part.retry, name, Some(&self.key), e)?;
                        part.state = PartState::Backoff(deadline);
                        Ok(false)
                    }
                }
            }
        }
    }

    /// The upload's id, for messages.
    pub fn upload_id(&self) -> &str {
        &self.upload_id
    }

    /// True when a Complete's outcome could not be settled (see [`Self::complete`]): the
    /// archive may still appear, and the upload is not to be aborted.
    pub fn is_unsettled(&self) -> bool {
        self.unsettled
    }

    /// CompleteMultipartUpload, with a wait of its own ([`complete_wait`]). A 200 whose
    /// body is an `<Error>` is a failure. When an answer is lost or times out, or a retry
    /// finds the upload gone (403, 404 `NoSuchUpload` or 409: an earlier attempt may have
    /// completed it), the outcome is settled before anything else: the archive is looked
    /// for (HeadObject, with backoff, its size checked) and accepted when it is there; the
    /// Complete is sent again only while the upload is certainly still there.
    pub fn complete(&mut self) -> Result<(), S3Error> {
        // Parts finish in any order; S3 wants them listed in order.
        self.parts.sort_unstable_by_key(|(n, _)| *n);
        let body = std::rc::Rc::new(xml::complete_body(&self.parts).into_bytes());
        let op = ops::complete_multipart_upload(&self.key, &self.upload_id);
        let payload = crate::s3::sigv4::sha256_hex(&body);
        let wait = complete_wait(self.parts.len(), self.s3.timeout());
        let mut retry = self.s3.retry();
        let mut attempt = 0u32;
        loop {
            let error = match self.complete_once(&op, &body, &payload, wait) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            attempt += 1;
            // Lost on the way (not refused by the host, which is stopping, or a certificate
            // that does not verify: nothing was sent then).
            let lost = matches!(&error, S3Error::Transport(t) if t.is_transient());
            let gone_on_retry = attempt > 1 && matches!(error.status(), Some(403 | 404 | 409));
            if lost || gone_on_retry {
                match self.settle(wait) {
                    Settled::Stored => return Ok(()),
                    Settled::NotCompleted => {}
                    Settled::Vanished => {
                        return Err(S3Error::protocol(format!(
                        "the multipart upload {} is gone but no archive appeared at '{}' ({error})",
                        self.upload_id, self.key
                    )))
                    }
                    Settled::Unknown => {
                        self.unsettled = true;
                        return Err(S3Error::protocol(format!(
                            "the outcome of completing the multipart upload {} is unknown ({error}): \
                             the archive may still appear at '{}'",
                            self.upload_id, self.key
                        )));
                    }
                }
                if gone_on_retry {
                    // Still there and never completed: a refusal, in words that do not
                    // blame the keys that just uploaded every part.
                    let gone = S3Error::protocol(format!(
                        "completing the multipart upload {} was refused after a retry ({error})",
                        self.upload_id
                    ));
                    let deadline = self.s3.backoff_anyway(&mut retry, op.name, op.key, gone)?;
                    http::timer(deadline).block();
                    continue;
                }
            }
            let deadline = self.s3.backoff(&mut retry, op.name, op.key, error)?;
            http::timer(deadline).block();
        }
    }

    /// One CompleteMultipartUpload and its answer.
    fn complete_once(
        &self,
        op: &crate::s3::Op<'_>,
        body: &std::rc::Rc<Vec<u8>>,
        payload: &str,
        wait: std::time::Duration,
    ) -> Result<(), S3Error> {
        let flight = self
            .s3
            .start_waiting(op, Some(body.clone()), payload, wait)?;
        let mut resp = check_status(flight.wait()?)?;
        let text = resp.read_to_string(1024 * 1024)?;
        if xml::is_complete_result(&text) {
            return Ok(());
        }
        Err(match xml::parse_error(&text) {
            Some(e) => S3Error::Status {
                status: resp.status,
                code: e.code,
                message: e.message,
            },
            None => S3Error::protocol("CompleteMultipartUpload answered without a result"),
        })
    }

    /// Looks for the archive, with backoff, for up to `wait`: stored (every byte), or
    /// not, and whether the upload is still there.
    fn settle(&self, wait: std::time::Duration) -> Settled {
        let started = http::now_nanos();
        let elapsed = || std::time::Duration::from_nanos(http::now_nanos().saturating_sub(started));
        let mut pause = std::time::Duration::from_millis(250);
        let mut gone = false;
        loop {
            if self.stored() == Some(true) {
                return Settled::Stored;
            }
            match self.upload_exists() {
                Some(false) => gone = true,
                // Still there after the grace: the Complete did not take.
                Some(true) if !gone && elapsed() >= SETTLE_GRACE => return Settled::NotCompleted,
                _ => {}
            }
            if elapsed() >= wait.max(SETTLE_GRACE) {
                return if gone {
                    Settled::Vanished
                } else {
                    Settled::Unknown
                };
            }
            http::timer(http::now_nanos().saturating_add(pause.as_nanos() as u64)).block();
            pause = (pause * 2).min(std::time::Duration::from_secs(10));
        }
    }

    /// Whether the archive is at its key with exactly the bytes uploaded; `None` when the
    /// service does not say.
    fn stored(&self) -> Option<bool> {
        let op = ops::head_object(&self.key);
        match self.s3.send_once(&op, None, crate::s3::sigv4::EMPTY_SHA256) {
            Ok(resp) => Some(
                resp.header("content-length")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    == Some(self.bytes),
            ),
            Err(e) if e.status() == Some(404) => Some(false),
            Err(_) => None,
        }
    }

    /// Whether the upload is still there (ListParts); `None` when the service does not say.
    fn upload_exists(&self) -> Option<bool> {
        let op = ops::list_parts(&self.key, &self.upload_id);
        match self.s3.send_once(&op, None, crate::s3::sigv4::EMPTY_SHA256) {
            Ok(_) => Some(true),
            Err(e) if e.code() == "NoSuchUpload" || e.status() == Some(404) => Some(false),
            Err(_) => None,
        }
    }

    /// AbortMultipartUpload, so no orphan parts are left to pay for.
    pub fn abort(&self) -> Result<(), S3Error> {
        if self.unsettled {
            return Err(S3Error::protocol(
                "not aborted: the archive may still appear, as the service may still be completing it",
            ));
        }
        match self.s3.call(
            &ops::abort_multipart_upload(&self.key, &self.upload_id),
            None,
        ) {
            Ok(_) => Ok(()),
            // Already gone: nothing is left behind.
            Err(e) if e.code() == "NoSuchUpload" => Ok(()),
            Err(e) => Err(e),
        }
    }
}
