//! PutObject requests in flight together, for restore: each is sent without blocking,
//! polled with `wasi:io/poll`, and retried with backoff on transient failures, while
//! the next entries are read. Bounded in count and in bytes held.

use std::rc::Rc;

use crate::io::http::{self, InFlight, Pollable};
use crate::s3::retry::Retry;
use crate::s3::{check_status, ops, S3Error, S3};

enum State {
    Sending(InFlight),
    /// Waiting until this monotonic deadline before the next attempt.
    Backoff(u64),
}

struct Put {
    key: String,
    headers: Vec<(String, String)>,
    body: Rc<Vec<u8>>,
    sha256: String,
    state: State,
    retry: Retry,
}

/// A failed upload, with the key it was for.
pub struct PutError {
    pub key: String,
    pub error: S3Error,
}

pub struct Puts<'a> {
    s3: &'a S3,
    inflight: Vec<Put>,
    bytes: u64,
    max_count: usize,
    max_bytes: u64,
    /// Objects stored so far.
    pub stored: u64,
}

impl<'a> Puts<'a> {
    pub fn new(s3: &'a S3, max_count: usize, max_bytes: u64) -> Self {
        Self {
            s3,
            inflight: Vec::new(),
            bytes: 0,
            max_count: max_count.max(1),
            max_bytes,
            stored: 0,
        }
    }

    /// Sends `body` as `key`, after waiting for room if the pool is full.
    pub fn submit(
        &mut self,
        key: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<(), PutError> {
        let len = body.len() as u64;
        while !self.inflight.is_empty()
            && (self.inflight.len() >= self.max_count || self.bytes + len > self.max_bytes)
        {
            self.wait()?;
        }
        let mut put = Put {
            sha256: crate::s3::sigv4::sha256_hex(&body),
            key,
            headers,
            body: Rc::new(body),
            state: State::Backoff(0),
            retry: self.s3.retry(),
        };
        step(self.s3, &mut put)?;
        self.bytes += len;
        self.inflight.push(put);
        Ok(())
    }

    /// Moves every upload on without blocking; true if any finished.
    fn poll(&mut self) -> Result<bool, PutError> {
        let mut finished = false;
        let mut i = 0;
        while i < self.inflight.len() {
            if step(self.s3, &mut self.inflight[i])? {
                let put = self.inflight.swap_remove(i);
                self.bytes -= put.body.len() as u64;
                self.stored += 1;
                finished = true;
            } else {
                i += 1;
            }
        }
        Ok(finished)
    }

    /// Blocks until at least one upload finishes (or fails).
    fn wait(&mut self) -> Result<(), PutError> {
        loop {
            if self.poll()? || self.inflight.is_empty() {
                return Ok(());
            }
            let mut pollables: Vec<Pollable> = Vec::new();
            for put in &self.inflight {
                match &put.state {
                    State::Sending(f) => pollables.extend(f.pollables()),
                    State::Backoff(deadline) => pollables.push(http::timer(*deadline)),
                }
            }
            http::wait_any(&pollables);
        }
    }

    /// Waits for every upload.
    pub fn finish(&mut self) -> Result<(), PutError> {
        while !self.inflight.is_empty() {
            self.wait()?;
        }
        Ok(())
    }
}

fn send(s3: &S3, put: &Put) -> Result<InFlight, S3Error> {
    let op = ops::put_object(&put.key, put.headers.clone());
    s3.start(&op, Some(put.body.clone()), &put.sha256)
}

fn retry_or_fail(s3: &S3, put: &mut Put, e: S3Error) -> Result<State, PutError> {
    match s3.backoff(&mut put.retry, "PutObject", Some(&put.key), e) {
        Ok(deadline) => Ok(State::Backoff(deadline)),
        Err(error) => Err(PutError {
            key: put.key.clone(),
            error,
        }),
    }
}

/// Moves one upload on without blocking; true once the object is stored.
fn step(s3: &S3, put: &mut Put) -> Result<bool, PutError> {
    if let State::Backoff(deadline) = put.state {
        if http::now_nanos() >= deadline {
            put.state = match send(s3, put) {
                Ok(f) => State::Sending(f),
                Err(e) => retry_or_fail(s3, put, e)?,
            };
        }
        return Ok(false);
    }
    let State::Sending(f) = &mut put.state else {
        return Ok(false);
    };
    f.pump();
    let Some(answer) = f.try_response() else {
        return Ok(false);
    };
    match answer.map_err(S3Error::from).and_then(check_status) {
        Ok(_) => Ok(true),
        Err(e) => {
            put.state = retry_or_fail(s3, put, e)?;
            Ok(false)
        }
    }
}
