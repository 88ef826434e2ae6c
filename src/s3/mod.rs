//! The S3 client: path-style addressing, signing, error documents and retries, shared by
//! every operation ([`ops`] builds each one; [`xml`] reads and writes their documents).

pub mod error;
pub mod ops;
pub mod retry;
pub mod sigv4;
pub mod xml;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

pub use error::S3Error;
pub use ops::Op;

use crate::config::BucketTarget;
use crate::io::http::{self, Response};
use crate::io::log;
use retry::{Retry, RetryPolicy};
use sigv4::{canonical_query, uri_encode, Credentials, SignableRequest, SigningTime};

/// A signed request: what the HTTP layer needs besides the endpoint.
#[derive(Debug)]
pub struct Prepared {
    pub method: &'static str,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
}

/// Builds and signs a path-style request (`/bucket/key`), pure so it can be tested.
pub fn prepare(
    target: &BucketTarget,
    creds: &Credentials,
    op: &Op<'_>,
    payload_sha256: &str,
    time: &SigningTime,
) -> Prepared {
    let path = match op.key {
        Some(key) => format!("/{}/{}", target.bucket, uri_encode(key, true)),
        None => format!("/{}", target.bucket),
    };
    let mut headers = vec![
        ("host".to_string(), target.endpoint.authority.clone()),
        (
            "x-amz-content-sha256".to_string(),
            payload_sha256.to_string(),
        ),
        ("x-amz-date".to_string(), time.amz_date.clone()),
    ];
    headers.extend(
        op.headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
    );
    let auth = sigv4::authorization(
        &SignableRequest {
            method: op.method,
            canonical_uri: &path,
            query: &op.query,
            headers: &headers,
            payload_sha256,
        },
        creds,
        &target.region,
        "s3",
        time,
    );
    // The host sets Host from the authority; sending it ourselves would be stripped.
    headers.retain(|(k, _)| k != "host");
    headers.push(("authorization".to_string(), auth));
    let query = canonical_query(&op.query);
    let path_and_query = if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    };
    Prepared {
        method: op.method,
        path_and_query,
        headers,
    }
}

/// A client for one bucket.
pub struct S3 {
    pub target: BucketTarget,
    creds: Credentials,
    timeout: Duration,
    policy: RetryPolicy,
    retries: Rc<Cell<u64>>,
}

impl S3 {
    pub fn new(
        target: BucketTarget,
        creds: Credentials,
        timeout: Duration,
        policy: RetryPolicy,
        retries: Rc<Cell<u64>>,
    ) -> Self {
        Self {
            target,
            creds,
            timeout,
            policy,
            retries,
        }
    }

    pub fn bucket(&self) -> &str {
        &self.target.bucket
    }

    /// Signs `op` now and hands it to the host; the answer is awaited by the caller.
    pub fn start(
        &self,
        op: &Op<'_>,
        body: Option<Rc<Vec<u8>>>,
        payload_sha256: &str,
    ) -> Result<http::InFlight, S3Error> {
        self.start_waiting(op, body, payload_sha256, self.timeout)
    }

    /// The request timeout per request (`TIMEOUT_SECONDS`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// [`S3::start`], waiting up to `timeout` for the answer and between its bytes.
    pub fn start_waiting(
        &self,
        op: &Op<'_>,
        body: Option<Rc<Vec<u8>>>,
        payload_sha256: &str,
        timeout: Duration,
    ) -> Result<http::InFlight, S3Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let prepared = prepare(
            &self.target,
            &self.creds,
            op,
            payload_sha256,
            &SigningTime::from_unix(now),
        );
        let request = http::Request {
            method: prepared.method,
            https: self.target.endpoint.https,
            authority: &self.target.endpoint.authority,
            path_and_query: &prepared.path_and_query,
            headers: &prepared.headers,
            timeout,
        };
        Ok(http::start(&request, body)?)
    }

    /// Sends `op` once and waits. A non-2xx answer becomes `S3Error::Status` with the
    /// code and message of its `<Error>` document.
    pub fn send_once(
        &self,
        op: &Op<'_>,
        body: Option<Rc<Vec<u8>>>,
        payload_sha256: &str,
    ) -> Result<Response, S3Error> {
        check_status(self.start(op, body, payload_sha256)?.wait()?)
    }

    /// Counts and logs a retry (without secrets).
    pub fn note_retry(
        &self,
        what: &str,
        key: Option<&str>,
        attempt: u32,
        wait: Duration,
        e: &S3Error,
    ) {
        self.retries.set(self.retries.get() + 1);
        log::warn(
            "retry",
            json!({"op": what, "bucket": self.target.bucket, "key": key,
                   "attempt": attempt, "waitMs": wait.as_millis() as u64,
                   "error": e.to_string()}),
        );
    }

    /// A fresh retry budget for one request (or one object's reads).
    pub fn retry(&self) -> Retry {
        Retry::new(self.policy)
    }

    /// After a failed attempt of `what`: the monotonic deadline of the next attempt, with
    /// the retry counted and logged; or the failure back when it is final or the budget of
    /// `retry` is spent. The non-blocking request kinds wait for the deadline in their poll
    /// loops.
    pub fn backoff(
        &self,
        retry: &mut Retry,
        what: &str,
        key: Option<&str>,
        e: S3Error,
    ) -> Result<u64, S3Error> {
        let wait = retry.next_wait(&e, http::random_u64());
        self.schedule(retry, what, key, e, wait)
    }

    /// [`S3::backoff`] for a failure known to be safe to try again, transient or not.
    pub fn backoff_anyway(
        &self,
        retry: &mut Retry,
        what: &str,
        key: Option<&str>,
        e: S3Error,
    ) -> Result<u64, S3Error> {
        let wait = retry.next_wait_anyway(http::random_u64());
        self.schedule(retry, what, key, e, wait)
    }

    /// The deadline of the retry after `wait`, counted and logged; `e` back without one.
    fn schedule(
        &self,
        retry: &Retry,
        what: &str,
        key: Option<&str>,
        e: S3Error,
        wait: Option<Duration>,
    ) -> Result<u64, S3Error> {
        let Some(wait) = wait else {
            return Err(e);
        };
        self.note_retry(what, key, retry.attempts(), wait, &e);
        Ok(http::now_nanos().saturating_add(wait.as_nanos().min(u64::MAX as u128) as u64))
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retry budget is spent,
    /// blocking through the waits. `attempt` must be repeatable: it gets the retry number
    /// (0 for the first try).
    pub fn retrying<T>(
        &self,
        what: &str,
        key: Option<&str>,
        mut attempt: impl FnMut(u32) -> Result<T, S3Error>,
    ) -> Result<T, S3Error> {
        let mut retry = self.retry();
        loop {
            match attempt(retry.attempts()) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let deadline = self.backoff(&mut retry, what, key, e)?;
                    http::timer(deadline).block();
                }
            }
        }
    }

    /// Sends `op` with retries; `body` is resent as it is on each attempt.
    pub fn call(&self, op: &Op<'_>, body: Option<&[u8]>) -> Result<Response, S3Error> {
        let payload = match body {
            Some(b) => sigv4::sha256_hex(b),
            None => sigv4::EMPTY_SHA256.to_string(),
        };
        let body = body.map(|b| Rc::new(b.to_vec()));
        self.retrying(op.name, op.key, |_| {
            self.send_once(op, body.clone(), &payload)
        })
    }

    /// Like `call`, for operations whose answer is a small XML document.
    pub fn call_xml(&self, op: &Op<'_>, body: Option<&[u8]>) -> Result<String, S3Error> {
        let payload = match body {
            Some(b) => sigv4::sha256_hex(b),
            None => sigv4::EMPTY_SHA256.to_string(),
        };
        let body = body.map(|b| Rc::new(b.to_vec()));
        self.retrying(op.name, op.key, |_| {
            let mut resp = self.send_once(op, body.clone(), &payload)?;
            Ok(resp.read_to_string(16 * 1024 * 1024)?)
        })
    }
}

/// S3 clients for the source and the destination of `config`, counting retries in
/// `retries`.
pub fn clients(config: &crate::config::Config, retries: &Rc<Cell<u64>>) -> (S3, S3) {
    let policy = RetryPolicy::new(config.max_retries);
    let timeout = Duration::from_secs(config.timeout_seconds);
    let client = |target: &BucketTarget| {
        S3::new(
            target.clone(),
            config.credentials.clone(),
            timeout,
            policy,
            retries.clone(),
        )
    };
    (client(&config.source), client(&config.dest))
}

/// Passes a 2xx answer through; turns any other into `S3Error::Status`, reading its
/// (small) `<Error>` document.
pub fn check_status(mut resp: Response) -> Result<Response, S3Error> {
    if (200..300).contains(&resp.status) {
        return Ok(resp);
    }
    let status = resp.status;
    let text = resp.read_to_string(64 * 1024).unwrap_or_default();
    Err(match xml::parse_error(&text) {
        Some(e) => S3Error::Status {
            status,
            code: e.code,
            message: e.message,
        },
        None => S3Error::Status {
            status,
            code: default_code(status).to_string(),
            message: String::new(),
        },
    })
}

fn default_code(status: u16) -> &'static str {
    match status {
        400 => "BadRequest",
        401 | 403 => "AccessDenied",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        412 => "PreconditionFailed",
        416 => "InvalidRange",
        429 => "SlowDown",
        500 => "InternalError",
        501 => "NotImplemented",
        503 => "ServiceUnavailable",
        _ => "HttpError",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Endpoint;

    #[test]
    fn path_style_signed_with_port_and_encoded_key() {
        let target = BucketTarget {
            bucket: "source".into(),
            region: "nyc3".into(),
            endpoint: Endpoint {
                https: false,
                authority: "127.0.0.1:9000".into(),
            },
        };
        let creds = Credentials {
            access_key: "AKID".into(),
            secret_key: "SECRET".into(),
        };
        let op = Op {
            name: "GetObject",
            method: "GET",
            key: Some("dir//a b+c%.txt"),
            query: vec![],
            headers: vec![("Range".into(), "bytes=5-".into())],
        };
        let p = prepare(
            &target,
            &creds,
            &op,
            sigv4::EMPTY_SHA256,
            &SigningTime::new("20250101T000000Z"),
        );
        assert_eq!(p.path_and_query, "/source/dir//a%20b%2Bc%25.txt");
        assert!(p.headers.iter().all(|(k, _)| k != "host"));
        let auth = &p
            .headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1;
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKID/20250101/nyc3/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature="));
        assert!(!auth.contains("SECRET"));

        let list = Op {
            name: "ListObjectsV2",
            method: "GET",
            key: None,
            query: vec![
                ("list-type".into(), "2".into()),
                ("continuation-token".into(), "a/b+c=".into()),
            ],
            headers: vec![],
        };
        let p = prepare(
            &target,
            &creds,
            &list,
            sigv4::EMPTY_SHA256,
            &SigningTime::new("20250101T000000Z"),
        );
        assert_eq!(
            p.path_and_query,
            "/source?continuation-token=a%2Fb%2Bc%3D&list-type=2"
        );
    }
}
