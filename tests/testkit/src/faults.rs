//! Fault injection: a hook sees every request before the S3 service does and may answer
//! with an error status, delay it, cut its response body off after some bytes, corrupt a
//! byte of it, or drop the connection. Every request is recorded for assertions.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt as _;

pub(crate) type StdError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type ResponseBody = UnsyncBoxBody<Bytes, StdError>;

/// What the fault hook sees of a request.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// 1 for the first request the server received, then 2, 3...
    pub seq: u64,
    pub method: http::Method,
    /// Path as sent (percent-encoded), e.g. `/bucket/some%20key`.
    pub path: String,
    /// Raw query string, e.g. `partNumber=2&uploadId=...`; empty if none.
    pub query: String,
    pub headers: http::HeaderMap,
}

impl RequestInfo {
    /// The S3 operation, told apart the way S3 does for the calls a backup
    /// makes: `ListObjectsV2`, `GetObject`, `HeadObject`, `PutObject`,
    /// `GetObjectAcl`, `GetObjectTagging`, the bucket settings' Get and Put
    /// (`GetBucketCors`, `PutBucketPolicy`, ...),
    /// `CreateMultipartUpload`, `UploadPart`, `CompleteMultipartUpload`,
    /// `AbortMultipartUpload`, `ListParts`, `HeadBucket`, else `Other`.
    pub fn operation(&self) -> &'static str {
        let has = |name: &str| {
            self.query
                .split('&')
                .any(|kv| kv == name || kv.starts_with(&format!("{name}=")))
        };
        // "/bucket" or "/bucket/" addresses the bucket, "/bucket/key" an object.
        let object = self
            .path
            .trim_start_matches('/')
            .split_once('/')
            .is_some_and(|(_, k)| !k.is_empty());
        match (self.method.as_str(), object) {
            ("GET", false) if has("list-type") => "ListObjectsV2",
            ("GET", false) if has("uploads") => "ListMultipartUploads",
            ("HEAD", false) => "HeadBucket",
            ("GET", false) if has("cors") => "GetBucketCors",
            ("GET", false) if has("lifecycle") => "GetBucketLifecycleConfiguration",
            ("GET", false) if has("policy") => "GetBucketPolicy",
            ("GET", false) if has("versioning") => "GetBucketVersioning",
            ("PUT", false) if has("cors") => "PutBucketCors",
            ("PUT", false) if has("lifecycle") => "PutBucketLifecycleConfiguration",
            ("PUT", false) if has("policy") => "PutBucketPolicy",
            ("PUT", false) if has("versioning") => "PutBucketVersioning",
            ("GET", true) if has("uploadId") => "ListParts",
            ("GET", true) if has("acl") => "GetObjectAcl",
            ("GET", true) if has("tagging") => "GetObjectTagging",
            ("GET", true) => "GetObject",
            ("HEAD", true) => "HeadObject",
            ("POST", true) if has("uploads") => "CreateMultipartUpload",
            ("POST", true) if has("uploadId") => "CompleteMultipartUpload",
            ("PUT", true)
                if has("partNumber")
                    && has("uploadId")
                    && self.headers.contains_key("x-amz-copy-source") =>
            {
                "UploadPartCopy"
            }
            ("PUT", true) if has("partNumber") && has("uploadId") => "UploadPart",
            ("PUT", true) => "PutObject",
            ("DELETE", true) if has("uploadId") => "AbortMultipartUpload",
            ("DELETE", true) => "DeleteObject",
            _ => "Other",
        }
    }
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Serve it normally.
    Pass,
    /// Answer `status` with an S3 XML error body carrying `code` (e.g. 503
    /// `SlowDown`, 500 `InternalError`; 200 with a code gives the "200 with an
    /// error body" that CompleteMultipartUpload can return).
    Status { status: u16, code: String },
    /// Wait, then serve it normally.
    Delay(Duration),
    /// Serve it, but send only the first `n` bytes of the response body, then
    /// break the connection (the `Content-Length` still announces it all).
    CutOff(u64),
    /// Close the connection without answering.
    Disconnect,
    /// Take the whole request, close the connection without answering, and serve the
    /// request that long after, in the background: an answer lost while the server goes
    /// on (a CompleteMultipartUpload that finishes after its client gave up).
    Detach(Duration),
    /// Serve it, with the response body's byte at this offset flipped (data corrupted
    /// in transit, or a server bug); a body shorter than that is left alone.
    Corrupt(u64),
}

/// The hook type: called once per request, from the server's threads.
pub type FaultHook = Arc<dyn Fn(&RequestInfo) -> Fault + Send + Sync>;

/// One served request, for assertions (`S3Server::requests`).
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub query: String,
    pub operation: &'static str,
    /// The `Range` header, if any (resumed GETs).
    pub range: Option<String>,
    /// Response status, `None` if no response was sent (`Disconnect`, or the
    /// S3 service aborted the connection).
    pub status: Option<u16>,
    /// The fault the hook chose, if not `Pass`.
    pub fault: Option<Fault>,
}

/// Options for [`S3Server`]; see [`S3Server::builder`].
pub(crate) fn error_response(
    status: u16,
    code: &str,
    resource: &str,
) -> http::Response<ResponseBody> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>injected fault</Message><Resource>{}</Resource><RequestId>fault</RequestId></Error>",
        xml_escape(code),
        xml_escape(resource)
    );
    let body = http_body_util::Full::new(Bytes::from(xml))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = http::Response::new(body);
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    response
}

pub(crate) fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Passes `inner` with the byte at offset `at` inverted.
pub(crate) struct CorruptBody {
    pub(crate) inner: ResponseBody,
    /// Offset of the byte to flip, counted from the start of what is still to come.
    pub(crate) at: Option<u64>,
}

impl http_body::Body for CorruptBody {
    type Data = Bytes;
    type Error = StdError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StdError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let Poll::Ready(Some(Ok(frame))) = polled else {
            return polled;
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => return Poll::Ready(Some(Ok(frame))),
        };
        let len = data.len() as u64;
        match self.at {
            Some(at) if at < len => {
                let mut bytes = data.to_vec();
                bytes[at as usize] ^= 0xFF;
                self.at = None;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(bytes)))))
            }
            Some(at) => {
                self.at = Some(at - len);
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            None => Poll::Ready(Some(Ok(Frame::data(data)))),
        }
    }
}

/// Passes the first `remaining` bytes of `inner`, then fails, which makes
/// hyper abort the connection mid-body.
pub(crate) struct CutOffBody {
    inner: s3s::Body,
    remaining: u64,
    /// Set once the cut-off point is reached. The error waits for this short
    /// timer so that hyper, seeing the body pending, flushes the headers and
    /// bytes already written; an immediate error would drop them unsent.
    cut: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl CutOffBody {
    pub(crate) fn new(inner: s3s::Body, remaining: u64) -> Self {
        Self {
            inner,
            remaining,
            cut: None,
        }
    }
}

impl http_body::Body for CutOffBody {
    type Data = Bytes;
    type Error = StdError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StdError>>> {
        if let Some(timer) = self.cut.as_mut() {
            return match timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    Poll::Ready(Some(Err("injected fault: response body cut off".into())))
                }
                Poll::Pending => Poll::Pending,
            };
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    let len = data.len() as u64;
                    if len >= self.remaining {
                        data.truncate(self.remaining as usize);
                        self.remaining = 0;
                        self.cut = Some(Box::pin(tokio::time::sleep(Duration::from_millis(20))));
                    } else {
                        self.remaining -= len;
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            // The body ended before the cut-off point: break it all the same.
            Poll::Ready(None) => {
                self.cut = Some(Box::pin(tokio::time::sleep(Duration::from_millis(20))));
                Poll::Ready(Some(Ok(Frame::data(Bytes::new()))))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_recognised() {
        let info = |method: &str, path: &str, query: &str| RequestInfo {
            seq: 1,
            method: method.parse().unwrap(),
            path: path.into(),
            query: query.into(),
            headers: http::HeaderMap::new(),
        };
        assert_eq!(
            info("GET", "/b", "list-type=2").operation(),
            "ListObjectsV2"
        );
        assert_eq!(
            info("GET", "/b/", "list-type=2&prefix=x").operation(),
            "ListObjectsV2"
        );
        assert_eq!(info("GET", "/b/k", "").operation(), "GetObject");
        assert_eq!(info("GET", "/b/k", "acl=").operation(), "GetObjectAcl");
        assert_eq!(
            info("GET", "/b/k", "tagging=").operation(),
            "GetObjectTagging"
        );
        assert_eq!(info("GET", "/b", "cors=").operation(), "GetBucketCors");
        assert_eq!(info("PUT", "/b/", "policy=").operation(), "PutBucketPolicy");
        assert_eq!(
            info("POST", "/b/k", "uploads").operation(),
            "CreateMultipartUpload"
        );
        assert_eq!(
            info("PUT", "/b/k", "partNumber=1&uploadId=u").operation(),
            "UploadPart"
        );
        assert_eq!(
            info("POST", "/b/k", "uploadId=u").operation(),
            "CompleteMultipartUpload"
        );
        assert_eq!(
            info("DELETE", "/b/k", "uploadId=u").operation(),
            "AbortMultipartUpload"
        );
        assert_eq!(info("PUT", "/b/k", "").operation(), "PutObject");
        assert_eq!(info("DELETE", "/b/k", "").operation(), "DeleteObject");
        assert_eq!(
            info("GET", "/b", "uploads&prefix=x").operation(),
            "ListMultipartUploads"
        );
    }
}
