//! Stage 2: GetObject, several in flight, each read in chunks without blocking. A body
//! cut off mid-way resumes with a `Range` request from the byte it reached, pinned to
//! the listed ETag with `If-Match`; failures before the body are retried with backoff.
//!
//! Integrity: the byte count must be the listed size, and when the ETag is a plain MD5
//! (single-part uploads), the MD5 of the bytes read must match it. An object whose bytes
//! have not reached the archive yet is read again once on a mismatch; otherwise the
//! backup fails rather than keep a wrong entry.

use std::collections::VecDeque;
use std::time::Duration;

use crate::io::http::{self, InFlight, Pollable, Read, Response, TransportError};
use crate::io::log;
use crate::model::ListedObject;
use crate::s3::ops::{self, Range};
use crate::s3::retry::Retry;
use crate::s3::sigv4::{hex, EMPTY_SHA256};
use crate::s3::{check_status, Op, S3Error, S3};
use md5::{Digest, Md5};
use serde_json::json;

/// Largest chunk taken from the host at once.
pub const CHUNK_SIZE: usize = 256 * 1024;

enum State {
    Requesting(InFlight),
    Reading(Response),
    /// Waiting until the monotonic deadline before the next attempt.
    Backoff(u64),
    Done,
}

/// What GetObject says about an object beyond the listing; the manifest keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-*`), names without the prefix, in the order received.
    pub metadata: Vec<(String, String)>,
}

impl ObjectMeta {
    fn from_response(resp: &Response) -> Self {
        let mut meta = ObjectMeta {
            content_type: resp.header("content-type"),
            metadata: Vec::new(),
        };
        for (name, value) in &resp.headers {
            let lower = name.to_ascii_lowercase();
            if let Some(key) = lower.strip_prefix("x-amz-meta-") {
                meta.metadata
                    .push((key.to_string(), String::from_utf8_lossy(value).into_owned()));
            }
        }
        meta
    }
}

/// The MD5 an ETag stands for: 32 hex digits, quoted or not. Multipart ETags
/// (`"…-N"`) and encrypted objects' ETags are not content MD5s.
pub fn md5_of_etag(etag: &str) -> Option<String> {
    let bare = etag.trim().trim_matches('"');
    (bare.len() == 32 && bare.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| bare.to_ascii_lowercase())
}

/// One object on its way into the archive.
pub struct Download {
    pub obj: ListedObject,
    pub meta: ObjectMeta,
    state: State,
    chunks: VecDeque<Vec<u8>>,
    buffered: usize,
    /// Bytes received so far: where a resumed GET starts.
    received: u64,
    /// Retries spent on this object (resumes included), bounded by MAX_RETRIES.
    retry: Retry,
    /// Deleted between listing and GET.
    pub missing: bool,
    /// MD5 of the bytes received, while the ETag is a plain MD5 to compare with.
    md5: Option<(Md5, String)>,
    /// The object was read again after an MD5 mismatch.
    reread: bool,
    /// Some bytes went on to the archive: the object can no longer be read again.
    handed_on: bool,
    /// Rewritten between the listing and its GET (archived as it is now).
    pub changed: bool,
}

/// The whole object, or the rest of it from `offset`, pinned to the ETag it had.
fn op(obj: &ListedObject, offset: u64) -> Op<'_> {
    if offset == 0 {
        ops::get_object(&obj.key, Range::All, None)
    } else {
        ops::get_object(&obj.key, Range::From(offset), Some(&obj.etag))
    }
}

impl Download {
    /// A folder marker (zero bytes, key ending in `/`) becomes a directory entry.
    pub fn is_directory(obj: &ListedObject) -> bool {
        obj.key.ends_with('/') && obj.size == 0
    }

    pub fn start(s3: &S3, obj: ListedObject) -> Result<Self, S3Error> {
        let mut d = Download {
            obj,
            state: State::Done,
            chunks: VecDeque::new(),
            buffered: 0,
            received: 0,
            retry: s3.retry(),
            missing: false,
            meta: ObjectMeta::default(),
            md5: None,
            reread: false,
            handed_on: false,
            changed: false,
        };
        d.state = match s3.start(&op(&d.obj, 0), None, EMPTY_SHA256) {
            Ok(f) => State::Requesting(f),
            Err(e) => d.retry_or_fail(s3, e)?,
        };
        Ok(d)
    }

    /// Bytes waiting to be archived.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Every byte has arrived (or the object is missing, or a directory).
    pub fn finished(&self) -> bool {
        matches!(self.state, State::Done)
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn pop_chunk(&mut self) -> Option<Vec<u8>> {
        let c = self.chunks.pop_front()?;
        self.buffered -= c.len();
        self.handed_on = true;
        Some(c)
    }

    /// The first `n` buffered bytes (fewer if fewer have arrived), to judge compression.
    pub fn sample(&self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n.min(self.buffered));
        for c in &self.chunks {
            let take = (n - out.len()).min(c.len());
            out.extend_from_slice(&c[..take]);
            if out.len() == n {
                break;
            }
        }
        out
    }

    /// What to wait on; `want` says whether more body bytes are wanted now.
    pub fn pollables(&self, want: bool, out: &mut Vec<Pollable>) {
        match &self.state {
            State::Requesting(f) => out.extend(f.pollables()),
            State::Reading(r) if want => out.extend(r.pollable()),
            State::Backoff(deadline) => out.push(http::timer(*deadline)),
            _ => {}
        }
    }

    /// Moves this download on without blocking; reads at most `budget` body bytes.
    /// True if anything changed.
    pub fn step(&mut self, s3: &S3, budget: usize) -> Result<bool, S3Error> {
        match &mut self.state {
            State::Done => Ok(false),
            State::Backoff(deadline) => {
                if http::now_nanos() < *deadline {
                    return Ok(false);
                }
                self.state = match s3.start(&op(&self.obj, self.received), None, EMPTY_SHA256) {
                    Ok(f) => State::Requesting(f),
                    Err(e) => self.retry_or_fail(s3, e)?,
                };
                Ok(true)
            }
            State::Requesting(f) => {
                f.pump();
                let Some(answer) = f.try_response() else {
                    return Ok(false);
                };
                self.state = self.answered(s3, answer)?;
                Ok(true)
            }
            State::Reading(_) => self.read_body(s3, budget),
        }
    }

    /// What the answer to a GET (or a resumed one) leads to.
    fn answered(
        &mut self,
        s3: &S3,
        answer: Result<Response, TransportError>,
    ) -> Result<State, S3Error> {
        let checked = answer
            .map_err(S3Error::from)
            .and_then(check_status)
            .and_then(|r| self.check_answer(r));
        Ok(match checked {
            Ok(resp) => {
                if self.received == 0 {
                    self.meta = ObjectMeta::from_response(&resp);
                    self.md5 = md5_of_etag(&self.obj.etag).map(|want| (Md5::new(), want));
                }
                State::Reading(resp)
            }
            Err(e)
                if self.received == 0 && e.status() == Some(404) && e.code() != "NoSuchBucket" =>
            {
                self.missing = true;
                State::Done
            }
            Err(e)
                if self.received > 0
                    && (e.code() == "PreconditionFailed" || e.status() == Some(404)) =>
            {
                return Err(S3Error::Protocol(format!(
                    "the object changed or was deleted while it was being read, after \
                     {} bytes ({e}); the backup stops rather than store a mixed or \
                     truncated entry: run it again",
                    self.received
                )))
            }
            Err(e) => self.retry_or_fail(s3, e)?,
        })
    }

    /// Takes up to `budget` body bytes that have arrived; at the body's end, checks it
    /// (size, MD5), and on a cut-off body, resumes (or fails when retries are spent).
    fn read_body(&mut self, s3: &S3, budget: usize) -> Result<bool, S3Error> {
        let State::Reading(resp) = &mut self.state else {
            return Ok(false);
        };
        let mut moved = false;
        let mut taken = 0;
        while taken < budget {
            let failure = match resp.try_read(CHUNK_SIZE.min(budget - taken)) {
                Ok(Read::Data(chunk)) => {
                    moved = true;
                    taken += chunk.len();
                    self.received += chunk.len() as u64;
                    if self.received > self.obj.size {
                        return Err(S3Error::Protocol(format!(
                            "the object has more than its listed {} bytes; it changed during the backup",
                            self.obj.size
                        )));
                    }
                    if let Some((md5, _)) = &mut self.md5 {
                        md5.update(&chunk);
                    }
                    self.buffered += chunk.len();
                    self.chunks.push_back(chunk);
                    continue;
                }
                Ok(Read::Pending) => break,
                Ok(Read::End) if self.received == self.obj.size => {
                    self.state = self.check_md5(s3)?;
                    return Ok(true);
                }
                Ok(Read::End) => TransportError::stream(format!(
                    "the body ended early at byte {} of {}",
                    self.received, self.obj.size
                )),
                Err(e) => e.at(&format!("at byte {} of {}", self.received, self.obj.size)),
            };
            self.state = self.retry_or_fail(s3, failure.into())?;
            return Ok(true);
        }
        Ok(moved)
    }

    /// A resumed GET must honour `Range`. The first answer describes the version that will
    /// be archived: an object rewritten since it was listed is taken as it is now, with
    /// the size and ETag of this answer (and resumes pinned to that ETag).
    fn check_answer(&mut self, resp: Response) -> Result<Response, S3Error> {
        if self.received > 0 {
            if resp.status != 206 {
                return Err(S3Error::Protocol(format!(
                    "the server ignored a Range request (HTTP {}); cannot resume",
                    resp.status
                )));
            }
            return Ok(resp);
        }
        let len = resp
            .header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        let etag = resp.header("etag").filter(|e| !e.trim().is_empty());
        let resized = len.is_some_and(|n| n != self.obj.size);
        let retagged = etag
            .as_deref()
            .is_some_and(|e| !self.obj.etag.is_empty() && e != self.obj.etag);
        if resized || retagged {
            log::warn(
                "changed_since_listed",
                json!({"key": self.obj.key, "listedSize": self.obj.size, "size": len,
                       "listedEtag": self.obj.etag, "etag": etag}),
            );
            self.changed = true;
        }
        if let Some(n) = len {
            self.obj.size = n;
        }
        if let Some(e) = etag {
            // s3s-fs and some services list no ETag: the GET's is the one to check.
            self.obj.etag = e;
        }
        Ok(resp)
    }

    /// Done if the MD5 matches (or there is none to check); else read the object once more
    /// while none of it has reached the archive, or fail.
    fn check_md5(&mut self, s3: &S3) -> Result<State, S3Error> {
        let Some((md5, want)) = self.md5.take() else {
            return Ok(State::Done);
        };
        let got = hex(&md5.finalize());
        if got == want {
            return Ok(State::Done);
        }
        let e = S3Error::Protocol(format!(
            "the bytes read have MD5 {got} but the object's ETag says {want}: it was corrupted in transit or changed during the backup"
        ));
        if self.reread || self.handed_on {
            return Err(e);
        }
        self.reread = true;
        self.chunks.clear();
        self.buffered = 0;
        self.received = 0;
        s3.note_retry("GetObject", Some(&self.obj.key), 1, Duration::ZERO, &e);
        Ok(State::Backoff(0))
    }

    fn retry_or_fail(&mut self, s3: &S3, e: S3Error) -> Result<State, S3Error> {
        let error = e.to_string();
        let deadline = s3.backoff(&mut self.retry, "GetObject", Some(&self.obj.key), e)?;
        if self.received > 0 {
            log::warn(
                "resume",
                json!({"bucket": s3.bucket(), "key": self.obj.key, "offset": self.received,
                       "size": self.obj.size, "attempt": self.retry.attempts(), "error": error}),
            );
        }
        Ok(State::Backoff(deadline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_md5_etags_are_checked() {
        assert_eq!(
            md5_of_etag("\"9B2CF535F27731C974343645A3985328\"").as_deref(),
            Some("9b2cf535f27731c974343645a3985328")
        );
        assert!(md5_of_etag("d41d8cd98f00b204e9800998ecf8427e").is_some());
        assert_eq!(md5_of_etag("\"3858f62230ac3c915f300c664312c11f-9\""), None);
        assert_eq!(md5_of_etag(""), None);
        assert_eq!(md5_of_etag("\"not-an-md5-but-32-characters-xx\""), None);
    }
}
