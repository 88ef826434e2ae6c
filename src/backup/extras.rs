//! Stage 2, beside an object's first GET: what S3 keeps about it apart from its bytes
//! and headers, its ACL (GetObjectAcl) and its tags (GetObjectTagging). One request
//! each, sent with the GET, so they add requests but no round trip in a row; the entry
//! is finished once they have answered.
//!
//! A service (or a key) that cannot give them (501 Not Implemented, 403, 405) is
//! reported once; the pipeline then stops asking for the rest of the run.

use crate::backup::fetch::ObjectMeta;
use crate::io::http::{self, InFlight, Pollable, Response, TransportError};
use crate::model::Acl;
use crate::s3::retry::Retry;
use crate::s3::sigv4::EMPTY_SHA256;
use crate::s3::{check_status, ops, xml, S3Error, S3};

/// What to ask for, besides the bytes (RECORD_ACL, RECORD_TAGS; turned off for the
/// rest of the run once the service cannot give it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    pub acl: bool,
    pub tags: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    Acl,
    Tags,
}

impl What {
    pub fn setting(self) -> &'static str {
        match self {
            What::Acl => "RECORD_ACL",
            What::Tags => "RECORD_TAGS",
        }
    }

    fn op(self) -> &'static str {
        match self {
            What::Acl => "GetObjectAcl",
            What::Tags => "GetObjectTagging",
        }
    }
}

enum State {
    Requesting(InFlight),
    Backoff(u64),
    Done,
}

/// One side request.
struct Side {
    what: What,
    state: State,
    retry: Retry,
}

/// The side requests of one object, and what they brought.
#[derive(Default)]
pub struct Extras {
    key: String,
    sides: Vec<Side>,
    acl: Option<Acl>,
    tags: Vec<(String, String)>,
    /// What could not be read (taken by the pipeline).
    refused: Vec<Refusal>,
}

/// A side request that brought nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub what: What,
    pub why: String,
    /// The service (or the key's permissions) will refuse it for every object.
    pub for_good: bool,
}

/// Whether a failure says the service (or this key's permissions) will not give this:
/// asking again for other objects would fail the same way.
pub fn refused_for_good(e: &S3Error) -> bool {
    matches!(e.status(), Some(403 | 405 | 501))
        || matches!(
            e.code(),
            "NotImplemented" | "AccessDenied" | "MethodNotAllowed"
        )
}

impl Extras {
    /// Sends what `wanted` asks for about `key`.
    pub fn start(s3: &S3, key: &str, wanted: Wanted) -> Self {
        let mut extras = Extras {
            key: key.to_string(),
            ..Default::default()
        };
        for (what, on) in [(What::Acl, wanted.acl), (What::Tags, wanted.tags)] {
            if on {
                let mut side = Side {
                    what,
                    state: State::Done,
                    retry: s3.retry(),
                };
                side.send(s3, key, &mut extras.refused);
                extras.sides.push(side);
            }
        }
        extras
    }

    /// Every side request has answered (or there is none).
    pub fn done(&self) -> bool {
        self.sides.iter().all(|s| matches!(s.state, State::Done))
    }

    pub fn pollables(&self, out: &mut Vec<Pollable>) {
        for s in &self.sides {
            match &s.state {
                State::Requesting(f) => out.extend(f.pollables()),
                State::Backoff(deadline) => out.push(http::timer(*deadline)),
                State::Done => {}
            }
        }
    }

    /// Moves the side requests on without blocking; true if anything changed.
    pub fn step(&mut self, s3: &S3) -> bool {
        let mut moved = false;
        for side in &mut self.sides {
            match &mut side.state {
                State::Done => {}
                State::Backoff(deadline) => {
                    if http::now_nanos() >= *deadline {
                        side.send(s3, &self.key, &mut self.refused);
                        moved = true;
                    }
                }
                State::Requesting(f) => {
                    f.pump();
                    let Some(answer) = f.try_response() else {
                        continue;
                    };
                    moved = true;
                    match body(answer) {
                        Ok(text) => {
                            side.state = State::Done;
                            let parsed = match side.what {
                                What::Acl => xml::parse_acl(&text).map(|(owner, grants)| {
                                    self.acl = Some(Acl::from_policy(&owner, &grants))
                                }),
                                What::Tags => xml::parse_tagging(&text).map(|t| self.tags = t),
                            };
                            if let Err(e) = parsed {
                                self.refused.push(Refusal {
                                    what: side.what,
                                    why: e.to_string(),
                                    for_good: false,
                                });
                            }
                        }
                        Err(e) => side.failed(s3, &self.key, e, &mut self.refused),
                    }
                }
            }
        }
        moved
    }

    /// What could not be read since the last call, and why.
    pub fn take_refused(&mut self) -> Vec<Refusal> {
        std::mem::take(&mut self.refused)
    }

    /// Into the object's record for the manifest (moved: the entry is finished next).
    pub fn apply(&mut self, meta: &mut ObjectMeta) {
        meta.acl = self.acl.take();
        meta.tags = std::mem::take(&mut self.tags);
    }
}

fn body(answer: Result<Response, TransportError>) -> Result<String, S3Error> {
    let mut resp = check_status(answer?)?;
    Ok(resp.read_to_string(1024 * 1024)?)
}

impl Side {
    fn send(&mut self, s3: &S3, key: &str, refused: &mut Vec<Refusal>) {
        let op = match self.what {
            What::Acl => ops::get_object_acl(key),
            What::Tags => ops::get_object_tagging(key),
        };
        match s3.start(&op, None, EMPTY_SHA256) {
            Ok(f) => self.state = State::Requesting(f),
            Err(e) => self.failed(s3, key, e, refused),
        }
    }

    /// Tried again while the failure is transient and retries are left; else it is
    /// left out of the record, and said why.
    fn failed(&mut self, s3: &S3, key: &str, e: S3Error, refused: &mut Vec<Refusal>) {
        if e.status() == Some(404) && e.code() != "NoSuchBucket" {
            // Deleted since it was listed: its GET says so.
            self.state = State::Done;
            return;
        }
        match s3.backoff(&mut self.retry, self.what.op(), Some(key), e) {
            Ok(deadline) => self.state = State::Backoff(deadline),
            Err(e) => {
                self.state = State::Done;
                refused.push(Refusal {
                    what: self.what,
                    for_good: refused_for_good(&e),
                    why: e.to_string(),
                });
            }
        }
    }
}
