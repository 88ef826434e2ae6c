//! The thin `wasi:http` layer: send one request, write its body, read the answer in chunks
//! (or as a `std::io::Read`). Everything above it works with plain bytes and strings.

use std::rc::Rc;
use std::time::Duration;

use crate::bindings::wasi;
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingBody, IncomingResponse, Method,
    OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
pub use wasi::io::poll::Pollable;
use wasi::io::streams::{InputStream, OutputStream, StreamError};

/// A request ready to go: everything already signed.
pub struct Request<'a> {
    pub method: &'a str,
    pub https: bool,
    pub authority: &'a str,
    pub path_and_query: &'a str,
    pub headers: &'a [(String, String)],
    pub timeout: Duration,
}

/// What kind of failure below HTTP this was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// The host refused to send the request (not an allowed endpoint, or it is stopping):
    /// trying again cannot help.
    Denied,
    /// No answer, or no more bytes, within the timeout.
    Timeout,
    /// No connection, or it closed before the answer.
    Connection,
    /// The answer's body broke off, or the stream failed.
    Stream,
    /// The server's TLS certificate does not verify: it will not on a retry either.
    Certificate,
}

/// A failure below HTTP: no answer, or an answer cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    pub kind: TransportKind,
    pub message: String,
}

impl TransportError {
    pub fn new(kind: TransportKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn connection(message: impl Into<String>) -> Self {
        Self::new(TransportKind::Connection, message)
    }

    pub fn stream(message: impl Into<String>) -> Self {
        Self::new(TransportKind::Stream, message)
    }

    /// Worth another try: everything but a refusal by the host or a certificate that
    /// does not verify.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self.kind,
            TransportKind::Denied | TransportKind::Certificate
        )
    }

    /// The same failure, with where it happened after it.
    pub fn at(mut self, context: &str) -> Self {
        self.message = format!("{} {context}", self.message);
        self
    }
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TransportError {}

/// A transport failure inside an `io::Error`, to be told apart from bad data once it
/// comes back out of a reader that was handed a response body.
impl From<TransportError> for std::io::Error {
    fn from(e: TransportError) -> Self {
        std::io::Error::other(e)
    }
}

fn describe(code: &ErrorCode) -> TransportError {
    use TransportKind::*;
    let (kind, text) = match code {
        ErrorCode::DnsError(e) => (
            Connection,
            format!(
                "the host name could not be resolved ({})",
                e.rcode.as_deref().unwrap_or("DNS error")
            ),
        ),
        ErrorCode::ConnectionRefused => (Connection, "the connection was refused".into()),
        ErrorCode::ConnectionTimeout => (Timeout, "connecting timed out".into()),
        ErrorCode::ConnectionReadTimeout => {
            (Timeout, "the server stopped sending (read timeout)".into())
        }
        ErrorCode::ConnectionWriteTimeout => {
            (Timeout, "the server stopped receiving (write timeout)".into())
        }
        ErrorCode::ConnectionTerminated => (Connection, "the connection was closed early".into()),
        ErrorCode::TlsCertificateError => (
            Certificate,
            "the server's TLS certificate does not verify".into(),
        ),
        ErrorCode::InternalError(Some(m)) if m.starts_with(crate::model::CERTIFICATE_ERROR) => (
            Certificate,
            m[crate::model::CERTIFICATE_ERROR.len()..].to_string(),
        ),
        ErrorCode::TlsAlertReceived(_) => (
            Connection,
            "the TLS handshake failed (certificate or protocol)".into(),
        ),
        ErrorCode::HttpRequestDenied => (
            Denied,
            "the host refused to send this request (not an allowed endpoint, or the host is stopping)"
                .into(),
        ),
        ErrorCode::HttpResponseTimeout => (Timeout, "no response within the timeout".into()),
        other => (Connection, format!("HTTP error: {other:?}")),
    };
    TransportError::new(kind, text)
}

fn stream_error(e: StreamError) -> TransportError {
    match e {
        StreamError::Closed => TransportError::stream("the connection was closed early"),
        StreamError::LastOperationFailed(err) => {
            // Hosts may append a backtrace to the error text: keep only its first line.
            let text = err.to_debug_string();
            let first = text.lines().next().unwrap_or("").trim();
            TransportError::stream(format!("the transfer failed: {first}"))
        }
    }
}

fn method(m: &str) -> Method {
    match m {
        "GET" => Method::Get,
        "PUT" => Method::Put,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        other => Method::Other(other.to_string()),
    }
}

/// A request handed to the host: its body is written as the connection takes it, and
/// its answer is awaited, both without blocking, so several can be in flight at once.
/// Fields drop in order: the body stream, the body, then the future.
pub struct InFlight {
    stream: Option<OutputStream>,
    body: Option<OutgoingBody>,
    future: FutureIncomingResponse,
    data: Rc<Vec<u8>>,
    written: usize,
    flushing: bool,
    write_error: Option<TransportError>,
}

/// Starts `req`. With a body, `Content-Length` is set and the body is never chunked;
/// requests that may carry a body say `Content-Length: 0` when they have none (some S3
/// servers refuse a POST or DELETE without it).
pub fn start(req: &Request<'_>, body: Option<Rc<Vec<u8>>>) -> Result<InFlight, TransportError> {
    let body = match (body, req.method) {
        (None, "GET" | "HEAD") => None,
        (None, _) => Some(Rc::new(Vec::new())),
        (b, _) => b,
    };
    let fields = Fields::new();
    let bad_header =
        |name: &str| TransportError::connection(format!("the header {name} was refused"));
    for (name, value) in req.headers {
        fields
            .append(name, value.as_bytes())
            .map_err(|_| bad_header(name))?;
    }
    if let Some(b) = &body {
        fields
            .append("content-length", b.len().to_string().as_bytes())
            .map_err(|_| bad_header("content-length"))?;
    }
    let request = OutgoingRequest::new(fields);
    let ok = request.set_method(&method(req.method)).is_ok()
        && request
            .set_scheme(Some(if req.https {
                &Scheme::Https
            } else {
                &Scheme::Http
            }))
            .is_ok()
        && request.set_authority(Some(req.authority)).is_ok()
        && request
            .set_path_with_query(Some(req.path_and_query))
            .is_ok();
    if !ok {
        return Err(TransportError::connection("the request line was refused"));
    }
    let outgoing_body = request
        .body()
        .map_err(|()| TransportError::connection("request body unavailable"))?;
    let options = RequestOptions::new();
    let nanos = req.timeout.as_nanos().min(u64::MAX as u128) as u64;
    // Setting options can fail on hosts that do not support them; the defaults then apply.
    let _ = options.set_connect_timeout(Some(nanos.min(15_000_000_000)));
    let _ = options.set_first_byte_timeout(Some(nanos));
    let _ = options.set_between_bytes_timeout(Some(nanos));
    // The request goes to the host before its body is written: the host then streams
    // the body out as it is written, and a body of any size never piles up.
    let future = outgoing_handler::handle(request, Some(options)).map_err(|e| describe(&e))?;
    let mut flight = InFlight {
        stream: None,
        body: Some(outgoing_body),
        future,
        data: body.clone().unwrap_or_default(),
        written: 0,
        flushing: false,
        write_error: None,
    };
    match body {
        Some(data) if !data.is_empty() => {
            let stream = flight
                .body
                .as_ref()
                .and_then(|b| b.write().ok())
                .ok_or_else(|| TransportError::connection("request body stream unavailable"))?;
            flight.stream = Some(stream);
        }
        _ => flight.close_body(),
    }
    Ok(flight)
}

impl InFlight {
    /// Writes as much of the body as the host takes now; never blocks. True if anything
    /// moved.
    pub fn pump(&mut self) -> bool {
        let mut moved = false;
        while let Some(stream) = &self.stream {
            let room = match stream.check_write() {
                Ok(n) => n,
                Err(e) => {
                    self.write_error = Some(stream_error(e));
                    self.close_body();
                    return true;
                }
            };
            if room == 0 {
                return moved;
            }
            moved = true;
            if self.flushing {
                // Room again after a flush: everything written has gone out.
                self.close_body();
                return true;
            }
            let rest = &self.data[self.written..];
            let result = if rest.is_empty() {
                self.flushing = true;
                stream.flush()
            } else {
                let k = rest.len().min(usize::try_from(room).unwrap_or(usize::MAX));
                self.written += k;
                stream.write(&rest[..k])
            };
            if let Err(e) = result {
                self.write_error = Some(stream_error(e));
                self.close_body();
            }
        }
        moved
    }

    fn close_body(&mut self) {
        self.stream = None;
        if let Some(body) = self.body.take() {
            if let Err(e) = OutgoingBody::finish(body, None) {
                self.write_error.get_or_insert(describe(&e));
            }
        }
    }

    /// What to wait on: room to write the body, and the answer.
    pub fn pollables(&self) -> Vec<Pollable> {
        let mut out = vec![self.future.subscribe()];
        if let Some(stream) = &self.stream {
            out.push(stream.subscribe());
        }
        out
    }

    /// The answer, once it has arrived. A server may answer (e.g. 403) before it has
    /// read the whole body: its answer is still returned.
    pub fn try_response(&mut self) -> Option<Result<Response, TransportError>> {
        let result = self.future.get()?;
        // Stop writing a body nobody reads any more.
        self.stream = None;
        self.body = None;
        Some(match result {
            Ok(Ok(resp)) => Response::new(resp),
            Ok(Err(code)) => Err(self.write_error.take().unwrap_or_else(|| describe(&code))),
            Err(()) => Err(TransportError::connection("response already taken")),
        })
    }

    /// Blocks until the answer arrives.
    pub fn wait(mut self) -> Result<Response, TransportError> {
        loop {
            self.pump();
            if let Some(r) = self.try_response() {
                return r;
            }
            wait_any(&self.pollables());
        }
    }
}

/// Blocks until at least one of `pollables` is ready.
pub fn wait_any(pollables: &[Pollable]) {
    if pollables.is_empty() {
        return;
    }
    let refs: Vec<&Pollable> = pollables.iter().collect();
    wasi::io::poll::poll(&refs);
}

/// Nanoseconds on the host's monotonic clock.
pub fn now_nanos() -> u64 {
    wasi::clocks::monotonic_clock::now()
}

/// A pollable that is ready at `deadline` (monotonic nanoseconds).
pub fn timer(deadline: u64) -> Pollable {
    wasi::clocks::monotonic_clock::subscribe_instant(deadline)
}

/// The most a blocking read asks the host for at once.
const READ_CHUNK: usize = 256 * 1024;

/// One non-blocking read of a response body.
pub enum Read {
    Data(Vec<u8>),
    /// Nothing available yet.
    Pending,
    End,
}

/// A response whose body is read on demand. Fields drop in order: the stream before the
/// body, the body before the response, as `wasi:http` requires of child resources.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    /// What `Read` took from the host but has not handed out yet.
    pending: Vec<u8>,
    pending_at: usize,
    stream: Option<InputStream>,
    body: Option<IncomingBody>,
    _response: IncomingResponse,
}

impl Response {
    fn new(resp: IncomingResponse) -> Result<Self, TransportError> {
        let status = resp.status();
        let headers = resp.headers().entries();
        let body = resp
            .consume()
            .map_err(|()| TransportError::connection("response body unavailable"))?;
        let stream = body
            .stream()
            .map_err(|()| TransportError::connection("response body stream unavailable"))?;
        Ok(Self {
            status,
            headers,
            pending: Vec::new(),
            pending_at: 0,
            stream: Some(stream),
            body: Some(body),
            _response: resp,
        })
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// Up to `max` bytes (at least one), or `None` at the end of the body.
    pub fn read_chunk(&mut self, max: usize) -> Result<Option<Vec<u8>>, TransportError> {
        let Some(stream) = &self.stream else {
            return Ok(None);
        };
        loop {
            match stream.blocking_read(max as u64) {
                Ok(bytes) if bytes.is_empty() => continue,
                Ok(bytes) => return Ok(Some(bytes)),
                Err(StreamError::Closed) => {
                    self.stream = None;
                    self.body = None;
                    return Ok(None);
                }
                Err(e) => {
                    self.stream = None;
                    self.body = None;
                    return Err(stream_error(e));
                }
            }
        }
    }

    /// Blocks for at least one byte and copies what fits into `buf`; 0 at the end. Bytes
    /// the host handed over beyond `buf` wait in `pending` for the next call.
    fn read_chunk_into(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        if self.pending_at == self.pending.len() {
            match self.read_chunk(READ_CHUNK)? {
                Some(chunk) => {
                    self.pending = chunk;
                    self.pending_at = 0;
                }
                None => return Ok(0),
            }
        }
        let rest = &self.pending[self.pending_at..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pending_at += n;
        Ok(n)
    }

    /// Up to `max` bytes of what has arrived, without blocking.
    pub fn try_read(&mut self, max: usize) -> Result<Read, TransportError> {
        let Some(stream) = &self.stream else {
            return Ok(Read::End);
        };
        match stream.read(max as u64) {
            Ok(bytes) if bytes.is_empty() => Ok(Read::Pending),
            Ok(bytes) => Ok(Read::Data(bytes)),
            Err(StreamError::Closed) => {
                self.stream = None;
                self.body = None;
                Ok(Read::End)
            }
            Err(e) => {
                self.stream = None;
                self.body = None;
                Err(stream_error(e))
            }
        }
    }

    /// Ready when more of the body can be read.
    pub fn pollable(&self) -> Option<Pollable> {
        self.stream.as_ref().map(|s| s.subscribe())
    }

    /// The whole body, for small documents (XML answers); at most `limit` bytes are kept.
    pub fn read_to_string(&mut self, limit: usize) -> Result<String, TransportError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.read_chunk(64 * 1024)? {
            if out.len() < limit {
                out.extend_from_slice(&chunk[..chunk.len().min(limit - out.len())]);
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// The body as a blocking reader: what the ZIP reader and the manifest reader consume. A
/// transport failure comes out as an `io::Error` wrapping the [`TransportError`].
impl std::io::Read for Response {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        Ok(self.read_chunk_into(buf)?)
    }
}

impl Drop for Response {
    fn drop(&mut self) {
        self.stream.take();
        self.body.take();
    }
}

pub fn random_u64() -> u64 {
    wasi::random::random::get_random_u64()
}

/// Writes all of `data` to `stream`, blocking as needed (the handler's small response).
pub(crate) fn write_all(stream: &OutputStream, mut data: &[u8]) -> Result<(), TransportError> {
    let ready = stream.subscribe();
    while !data.is_empty() {
        let n = stream.check_write().map_err(stream_error)?;
        if n == 0 {
            ready.block();
            continue;
        }
        let k = data.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        stream.write(&data[..k]).map_err(stream_error)?;
        data = &data[k..];
    }
    stream.flush().map_err(stream_error)?;
    ready.block();
    stream.check_write().map_err(stream_error)?;
    Ok(())
}
