//! Stage 2: GetObject, several in flight, each read in chunks without blocking. A body
//! cut off mid-way resumes with a `Range` request from the byte it reached, pinned to
//! the listed ETag with `If-Match`; failures before the body are retried with backoff.
//!
//! A big object is fetched as several ranges in flight at once (one connection carries
//! only so much over a long path): each range is a `Download` of its own, the first one
//! learns the object's size, ETag and headers, the later ones are pinned to that ETag and
//! checked against it, and the pipeline feeds them into the archive in order.
//!
//! Integrity: the byte count must be the listed size, and when the ETag is a plain MD5
//! (single-part uploads), the MD5 of the bytes read must match it. An object whose bytes
//! have not reached the archive yet is read again once on a mismatch; otherwise the
//! backup fails rather than keep a wrong entry.

use std::collections::VecDeque;
use std::time::Duration;

use crate::backup::extras::Extras;
use crate::io::http::{self, InFlight, Pollable, Read, Response, TransportError};
use crate::io::log;
use crate::model::{Acl, ListedObject};
use crate::s3::ops::{self, Range};
use crate::s3::retry::Retry;
use crate::s3::sigv4::{hex, EMPTY_SHA256};
use crate::s3::{check_status, Op, S3Error, S3};
use crate::select::Tally;
use crate::zip::manifest::ObjectHeaders;
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
    pub headers: ObjectHeaders,
    /// From the side requests ([`crate::backup::extras`]), when asked for.
    pub acl: Option<Acl>,
    pub tags: Vec<(String, String)>,
}

impl ObjectMeta {
    fn from_response(resp: &Response) -> Self {
        let mut meta = ObjectMeta {
            content_type: resp.header("content-type"),
            metadata: Vec::new(),
            headers: ObjectHeaders::from_response(|name| resp.header(name)),
            acl: None,
            tags: Vec::new(),
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

/// Which bytes of the object a download fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Span {
    /// The whole object, in one GET.
    Whole,
    /// Bytes `start..end` of an object fetched in several ranges.
    Range { start: u64, end: u64 },
}

/// `Content-Range: bytes a-b/total` (total `*` when unknown): the first byte and the total.
fn content_range(resp: &Response) -> Option<(u64, Option<u64>)> {
    let v = resp.header("content-range")?;
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, _) = range.split_once('-')?;
    Some((first.trim().parse().ok()?, total.trim().parse().ok()))
}

/// ETags compared as S3 clients do: the quotes are not part of the value.
fn same_etag(a: &str, b: &str) -> bool {
    a.trim().trim_matches('"') == b.trim().trim_matches('"')
}

/// One object, or one range of a big one, on its way into the archive.
pub struct Download {
    pub obj: ListedObject,
    pub meta: ObjectMeta,
    span: Span,
    /// The first answer has arrived (for a first range: the object's size is known).
    answered: bool,
    state: State,
    chunks: VecDeque<Vec<u8>>,
    buffered: usize,
    /// Bytes of this span received so far: a resumed GET starts after them.
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
    /// Keys left out of the selection just before this one: counted for a checkpoint
    /// once this object is archived, since the next run lists after it.
    pub left_before: Tally,
    /// When the request now on the wire was sent (monotonic nanoseconds).
    asked_at: u64,
    /// How long its answer took, until the pipeline takes it to judge the link.
    first_byte_ns: Option<u64>,
    /// The object's ACL and tags, asked for beside its first GET.
    pub extras: Extras,
}

impl Download {
    /// A folder marker (zero bytes, key ending in `/`) becomes a directory entry.
    pub fn is_directory(obj: &ListedObject) -> bool {
        obj.key.ends_with('/') && obj.size == 0
    }

    /// The whole object in one GET.
    pub fn start(s3: &S3, obj: ListedObject) -> Result<Self, S3Error> {
        Self::begin(s3, obj, ObjectMeta::default(), Span::Whole)
    }

    /// Bytes `start..end` of an object fetched in ranges. The range at 0 comes first and
    /// learns the object (size, ETag, headers); later ones take `obj` and `meta` from it.
    pub fn range(
        s3: &S3,
        obj: ListedObject,
        meta: ObjectMeta,
        start: u64,
        end: u64,
    ) -> Result<Self, S3Error> {
        Self::begin(s3, obj, meta, Span::Range { start, end })
    }

    fn begin(s3: &S3, obj: ListedObject, meta: ObjectMeta, span: Span) -> Result<Self, S3Error> {
        let mut d = Download {
            obj,
            span,
            answered: false,
            state: State::Done,
            chunks: VecDeque::new(),
            buffered: 0,
            received: 0,
            retry: s3.retry(),
            missing: false,
            meta,
            md5: None,
            reread: false,
            handed_on: false,
            changed: false,
            left_before: Tally::default(),
            asked_at: http::now_nanos(),
            first_byte_ns: None,
            extras: Extras::default(),
        };
        d.state = match s3.start(&d.request(), None, EMPTY_SHA256) {
            Ok(f) => State::Requesting(f),
            Err(e) => d.retry_or_fail(s3, e)?,
        };
        Ok(d)
    }

    /// The GET for the bytes still missing. Every GET but the very first of an object is
    /// pinned to the ETag, so a resume or a later range cannot mix two versions.
    fn request(&self) -> Op<'_> {
        let at = self.offset();
        let key = &self.obj.key;
        match self.span {
            Span::Whole if at == 0 => ops::get_object(key, Range::All, None),
            Span::Whole => ops::get_object(key, Range::From(at), Some(&self.obj.etag)),
            Span::Range { end, .. } => ops::get_object(
                key,
                Range::Bytes(at, end - 1),
                (at > 0).then_some(self.obj.etag.as_str()),
            ),
        }
    }

    /// The object's byte the next one received will be.
    fn offset(&self) -> u64 {
        match self.span {
            Span::Whole => self.received,
            Span::Range { start, .. } => start + self.received,
        }
    }

    /// The bytes this download brings.
    pub fn span_len(&self) -> u64 {
        match self.span {
            Span::Whole => self.obj.size,
            Span::Range { start, end } => end - start,
        }
    }

    /// One of several ranges of its object.
    pub fn is_range(&self) -> bool {
        matches!(self.span, Span::Range { .. })
    }

    /// It brings the object's first byte: its entry starts here.
    pub fn is_first(&self) -> bool {
        matches!(self.span, Span::Whole | Span::Range { start: 0, .. })
    }

    /// It brings the object's last byte: its entry ends here.
    pub fn is_last(&self) -> bool {
        match self.span {
            Span::Whole => true,
            Span::Range { end, .. } => end >= self.obj.size,
        }
    }

    /// Where the next range of the object starts.
    pub fn end(&self) -> u64 {
        match self.span {
            Span::Whole => self.obj.size,
            Span::Range { end, .. } => end,
        }
    }

    /// The server has answered once (or the object is gone): size and ETag are known.
    pub fn knows_object(&self) -> bool {
        self.answered || self.missing
    }

    /// How long the last answer took to come (once: the pipeline takes it).
    pub fn take_first_byte(&mut self) -> Option<u64> {
        self.first_byte_ns.take()
    }

    /// Bytes waiting to be archived.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Every byte has arrived (or the object is missing, or a directory).
    pub fn finished(&self) -> bool {
        matches!(self.state, State::Done)
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
                let now = http::now_nanos();
                if now < *deadline {
                    return Ok(false);
                }
                self.asked_at = now;
                self.state = match s3.start(&self.request(), None, EMPTY_SHA256) {
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
                if self.offset() == 0 {
                    self.meta = ObjectMeta::from_response(&resp);
                    // Ranges are hashed in order by the pipeline, which sees them all.
                    self.md5 = (self.span == Span::Whole)
                        .then(|| md5_of_etag(&self.obj.etag))
                        .flatten()
                        .map(|want| (Md5::new(), want));
                }
                self.answered = true;
                self.first_byte_ns = Some(http::now_nanos().saturating_sub(self.asked_at));
                State::Reading(resp)
            }
            Err(e)
                if self.offset() == 0 && e.status() == Some(404) && e.code() != "NoSuchBucket" =>
            {
                self.missing = true;
                State::Done
            }
            Err(e)
                // 416: a later range now lies past the end, the object shrank.
                if self.offset() > 0
                    && (e.code() == "PreconditionFailed"
                        || matches!(e.status(), Some(404 | 416))) =>
            {
                return Err(self.changed_while_read(&e.to_string()))
            }
            Err(e) => self.retry_or_fail(s3, e)?,
        })
    }

    /// Takes up to `budget` body bytes that have arrived; at the body's end, checks it
    /// (size, MD5), and on a cut-off body, resumes (or fails when retries are spent).
    fn read_body(&mut self, s3: &S3, budget: usize) -> Result<bool, S3Error> {
        // Where this span starts in the object, and how long it is.
        let base = self.offset() - self.received;
        let want = self.span_len();
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
                    if self.received > want {
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
                Ok(Read::End) if self.received == want => {
                    self.state = self.check_md5(s3)?;
                    return Ok(true);
                }
                Ok(Read::End) => TransportError::stream(format!(
                    "the body ended early at byte {} of {}",
                    base + self.received,
                    self.obj.size
                )),
                Err(e) => e.at(&format!(
                    "at byte {} of {}",
                    base + self.received,
                    self.obj.size
                )),
            };
            self.state = self.retry_or_fail(s3, failure.into())?;
            return Ok(true);
        }
        Ok(moved)
    }

    /// Every answer but an object's first must honour `Range` and come from the version
    /// the first one described. The first answer describes the version that will be
    /// archived: an object rewritten since it was listed is taken as it is now, with the
    /// size and ETag of this answer (and later GETs pinned to that ETag).
    fn check_answer(&mut self, resp: Response) -> Result<Response, S3Error> {
        let at = self.offset();
        if at > 0 {
            if resp.status != 206 {
                return Err(S3Error::Protocol(format!(
                    "the server ignored a Range request (HTTP {}); cannot resume",
                    resp.status
                )));
            }
            let range = content_range(&resp);
            if let Some((first, _)) = range.filter(|(first, _)| *first != at) {
                return Err(S3Error::Protocol(format!(
                    "asked for the bytes from {at}, the server sent them from {first}"
                )));
            }
            if let Some(total) = range.and_then(|(_, t)| t).filter(|t| *t != self.obj.size) {
                return Err(self.changed_while_read(&format!(
                    "it now has {total} bytes instead of {}",
                    self.obj.size
                )));
            }
            // A server that ignores If-Match still names the version it sends.
            if let Some(etag) = resp.header("etag").filter(|e| !e.trim().is_empty()) {
                if !self.obj.etag.is_empty() && !same_etag(&etag, &self.obj.etag) {
                    return Err(self.changed_while_read(&format!(
                        "its ETag is now {etag} instead of {}",
                        self.obj.etag
                    )));
                }
            }
            return Ok(resp);
        }
        let length = resp
            .header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        let size = match self.span {
            Span::Whole => length,
            // The first range: Content-Range gives the whole size; a server that ignores
            // Range sends the whole object, which this download then takes.
            Span::Range { end, .. } => {
                if resp.status == 206 {
                    let total = content_range(&resp).and_then(|(_, t)| t);
                    let Some(total) = total else {
                        return Err(S3Error::Protocol(
                            "a ranged GET was answered without the object's size \
                             (Content-Range)"
                                .into(),
                        ));
                    };
                    self.span = Span::Range {
                        start: 0,
                        end: end.min(total),
                    };
                    Some(total)
                } else {
                    self.span = Span::Whole;
                    length
                }
            }
        };
        let etag = resp.header("etag").filter(|e| !e.trim().is_empty());
        let resized = size.is_some_and(|n| n != self.obj.size);
        let retagged = etag
            .as_deref()
            .is_some_and(|e| !self.obj.etag.is_empty() && !same_etag(e, &self.obj.etag));
        if resized || retagged {
            log::warn(
                "changed_since_listed",
                json!({"key": self.obj.key, "listedSize": self.obj.size, "size": size,
                       "listedEtag": self.obj.etag, "etag": etag}),
            );
            self.changed = true;
        }
        if let Some(n) = size {
            self.obj.size = n;
            if let Span::Range { end, .. } = self.span {
                self.span = Span::Range {
                    start: 0,
                    end: end.min(n),
                };
            }
        }
        if let Some(e) = etag {
            // s3s-fs and some services list no ETag: the GET's is the one to check.
            self.obj.etag = e;
        }
        Ok(resp)
    }

    fn changed_while_read(&self, why: &str) -> S3Error {
        S3Error::Protocol(format!(
            "the object changed or was deleted while it was being read, after {} bytes \
             ({why}); the backup stops rather than store a mixed or truncated entry: run it \
             again",
            self.offset()
        ))
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
                json!({"bucket": s3.bucket(), "key": self.obj.key, "offset": self.offset(),
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
