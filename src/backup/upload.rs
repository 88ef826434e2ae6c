//! Stage 4, the archive's way out: S3 multipart upload (create, upload part, complete,
//! abort). The restore's big objects go out the same way.

use std::rc::Rc;

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
    started: u32,
    /// Bytes of all parts started: the archive's size once complete.
    bytes: u64,
}

enum PartState {
    Sending(InFlight),
    /// Waiting until the monotonic deadline before the next attempt.
    Backoff(u64),
}

/// One part on its way to the destination.
pub struct PartUpload {
    pub number: u32,
    data: Rc<Vec<u8>>,
    sha256: String,
    state: PartState,
    retry: Retry,
}

impl PartUpload {
    pub fn len(&self) -> usize {
        self.data.len()
    }

    fn send(&self, upload: &MultipartUpload<'_>) -> Result<PartState, S3Error> {
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
            started: 0,
            bytes: 0,
        })
    }

    /// Parts stored so far.
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// Starts UploadPart for the next part number. The part is kept until it is stored,
    /// so a failed attempt can be sent again.
    pub fn start_part(&mut self, part: Part) -> Result<PartUpload, S3Error> {
        self.started += 1;
        self.bytes += part.data.len() as u64;
        let number = self.started;
        if number > MAX_PARTS {
            return Err(S3Error::Protocol(format!(
                "the archive needs more than {MAX_PARTS} parts; raise PART_SIZE"
            )));
        }
        let mut part = PartUpload {
            number,
            sha256: part.sha256,
            data: Rc::new(part.data),
            state: PartState::Backoff(0),
            retry: self.s3.retry(),
        };
        part.state = part.send(self)?;
        Ok(part)
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
                let stored = answer
                    .map_err(S3Error::from)
                    .and_then(check_status)
                    .and_then(|resp| {
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
                        part.data = Rc::default();
                        Ok(true)
                    }
                    Err(e) => {
                        let deadline =
                            self.s3
                                .backoff(&mut part.retry, "UploadPart", Some(&self.key), e)?;
                        part.state = PartState::Backoff(deadline);
                        Ok(false)
                    }
                }
            }
        }
    }

    /// CompleteMultipartUpload. A 200 whose body is an `<Error>` is a failure.
    pub fn complete(&mut self) -> Result<(), S3Error> {
        // Parts finish in any order; S3 wants them listed in order.
        self.parts.sort_unstable_by_key(|(n, _)| *n);
        let body = std::rc::Rc::new(xml::complete_body(&self.parts).into_bytes());
        let op = ops::complete_multipart_upload(&self.key, &self.upload_id);
        let payload = crate::s3::sigv4::sha256_hex(&body);
        self.s3.retrying(op.name, op.key, |retry| {
            let mut resp = match self.s3.send_once(&op, Some(body.clone()), &payload) {
                // An earlier attempt completed the upload but its answer was lost: the
                // upload is gone (S3 says NoSuchUpload; some servers 403 or 404).
                Err(e) if retry > 0 && !e.is_transient() && self.is_stored() => return Ok(()),
                other => other?,
            };
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
                None => {
                    S3Error::Protocol("CompleteMultipartUpload answered without a result".into())
                }
            })
        })
    }

    /// True if the archive exists at its key with exactly the bytes uploaded.
    fn is_stored(&self) -> bool {
        self.s3
            .call(&ops::head_object(&self.key), None)
            .is_ok_and(|resp| {
                resp.header("content-length")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    == Some(self.bytes)
            })
    }

    /// AbortMultipartUpload, so no orphan parts are left to pay for.
    pub fn abort(&self) -> Result<(), S3Error> {
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
