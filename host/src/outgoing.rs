//! Outgoing `wasi:http` requests over a pool of kept-alive connections.
//!
//! Wasmtime's `default_send_request` opens a new TCP (and TLS) connection for
//! every request. The component sends one GET per object and an UploadPart per
//! part, so against a remote HTTPS endpoint that is a handshake per object.
//! [`OutgoingPool`] sends them the same way (same timeouts, same errors, bodies
//! streamed both ways) but keeps HTTP/1.1 connections open and reuses them.
//!
//! One pool per [`crate::Runner`]: every instance of a runner shares it.
//!
//! Each instance also gets an [`AllowList`]: the only destinations its
//! requests may reach (by default the `SOURCE_ENDPOINT` and `DEST_ENDPOINT` of
//! its own environment). Anything else is refused with `HttpRequestDenied`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Scheme;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// What `default_send_request` uses when the guest sets no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Idle connections older than this are not reused: servers close idle
/// keep-alive connections after a while, and a request written into a
/// connection the server is closing fails without a way to resend its body.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle connections kept per destination (the component has at most 16
/// requests in flight).
const MAX_IDLE_PER_HOST: usize = 32;

/// A destination: TLS or not, and `host:port`.
type Key = (bool, String);

/// Kept-alive HTTP/1.1 connections, by destination. Cheap to clone.
#[derive(Clone)]
pub(crate) struct OutgoingPool {
    inner: Arc<Inner>,
}

struct Inner {
    idle: Mutex<HashMap<Key, Vec<Idle>>>,
    tls: tokio_rustls::TlsConnector,
    /// Set when the host is asked to stop: only DELETEs (AbortMultipartUpload) go out,
    /// so the component fails fast and cleans up after itself.
    stopping: AtomicBool,
}

struct Idle {
    sender: http1::SendRequest<WasiBody>,
    since: Instant,
}

impl OutgoingPool {
    /// A pool whose HTTPS connections trust `roots` (see [`crate::trust`]).
    pub(crate) fn new(roots: rustls::RootCertStore) -> Self {
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self {
            inner: Arc::new(Inner {
                idle: Mutex::new(HashMap::new()),
                tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
                stopping: AtomicBool::new(false),
            }),
        }
    }

    /// From now on, refuse every request but DELETE (see [`Inner::stopping`]).
    pub(crate) fn stop(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
    }

    /// The hooks for one instance's `WasiHttpCtxView`, whose requests may
    /// reach only the destinations in `allowed`.
    pub(crate) fn hooks(&self, allowed: Arc<AllowList>) -> PooledHooks {
        PooledHooks {
            pool: self.clone(),
            allowed,
        }
    }

    /// Sends `req` over a pooled connection (or a new one), with the semantics
    /// of `default_send_request`.
    async fn send(
        self,
        allowed: &AllowList,
        mut req: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<http::Response<WasiBody>, Error> {
        if self.inner.stopping.load(Ordering::SeqCst) && req.method() != http::Method::DELETE {
            return Err(Error::HttpRequestDenied);
        }
        let uri = req.uri();
        let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
        let use_tls = uri.scheme() == Some(&Scheme::HTTPS);
        let host_header = authority.as_str().to_string();
        // `host:port` without any user info, the port made explicit.
        let port = authority
            .port_u16()
            .unwrap_or(if use_tls { 443 } else { 80 });
        let authority = format!("{}:{port}", authority.host().to_ascii_lowercase());
        allowed.check(use_tls, &authority)?;

        let connect_timeout = options
            .and_then(|o| o.connect_timeout)
            .unwrap_or(DEFAULT_TIMEOUT);
        let first_byte_timeout = options
            .and_then(|o| o.first_byte_timeout)
            .unwrap_or(DEFAULT_TIMEOUT);
        let between_bytes_timeout = options
            .and_then(|o| o.between_bytes_timeout)
            .unwrap_or(DEFAULT_TIMEOUT)
            // Not zero: a zero sleep would fire before any frame could arrive.
            .max(Duration::from_nanos(1));

        // Wasmtime sets `Host` from the guest's authority already; keep it so.
        req.headers_mut().entry(http::header::HOST).or_insert(
            http::HeaderValue::from_str(&host_header).map_err(|_| Error::HttpRequestUriInvalid)?,
        );
        // The request line carries only the path: the scheme and authority go
        // in absolute form only to a proxy.
        *req.uri_mut() = http::Uri::builder()
            .path_and_query(
                req.uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/"),
            )
            .build()
            .map_err(|_| Error::HttpRequestUriInvalid)?;

        let key: Key = (use_tls, authority);
        let (sender, response) = loop {
            let (mut sender, reused) = match self.checkout(&key) {
                Some(sender) => (sender, true),
                None => (self.connect(&key, connect_timeout).await?, false),
            };
            let sent = tokio::time::timeout(first_byte_timeout, sender.try_send_request(req))
                .await
                .map_err(|_| Error::ConnectionReadTimeout)?;
            match sent {
                Ok(response) => break (sender, response),
                Err(mut e) => match e.take_message() {
                    // A kept-alive connection closed before the request went
                    // out: nothing was sent, so send it on another one.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(Error::from(e.into_error())),
                },
            }
        };

        let release = Release {
            pool: self,
            key,
            sender,
        };
        Ok(response.map(|incoming| {
            ResponseBody {
                incoming,
                between_bytes_timeout,
                sleep: Box::pin(tokio::time::sleep(between_bytes_timeout)),
                release: Some(release),
            }
            .boxed_unsync()
        }))
    }

    /// A ready idle connection to `key`, most recently used first.
    fn checkout(&self, key: &Key) -> Option<http1::SendRequest<WasiBody>> {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(key)?;
        let mut found = None;
        while let Some(entry) = list.pop() {
            if entry.since.elapsed() < IDLE_TIMEOUT && entry.sender.is_ready() {
                found = Some(entry.sender);
                break;
            }
        }
        if list.is_empty() {
            idle.remove(key);
        }
        found
    }

    fn checkin(&self, key: Key, sender: http1::SendRequest<WasiBody>) {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(key).or_default();
        list.retain(|entry| entry.since.elapsed() < IDLE_TIMEOUT && !entry.sender.is_closed());
        if list.len() < MAX_IDLE_PER_HOST {
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// A new connection, as `default_send_request` makes it, with its I/O
    /// driven by a task of its own so that it outlives this request.
    async fn connect(
        &self,
        (use_tls, authority): &Key,
        connect_timeout: Duration,
    ) -> Result<http1::SendRequest<WasiBody>, Error> {
        let stream =
            match tokio::time::timeout(connect_timeout, TcpStream::connect(authority)).await {
                Ok(stream) => stream.map_err(Error::Connect)?,
                Err(_) => return Err(Error::ConnectionTimeout),
            };
        // Small requests and the ends of bodies must not wait for an ACK.
        stream.set_nodelay(true).map_err(Error::Connect)?;
        let stream: Box<dyn Stream> = if *use_tls {
            let domain = tls_server_name(authority)?;
            let connecting = self.inner.tls.connect(domain, stream);
            match tokio::time::timeout(connect_timeout, connecting).await {
                Ok(stream) => Box::new(stream.map_err(Error::Tls)?),
                Err(_) => return Err(Error::ConnectionTimeout),
            }
        } else {
            Box::new(stream)
        };
        let (sender, conn) = tokio::time::timeout(
            connect_timeout,
            http1::Builder::new().handshake(TokioIo::new(stream)),
        )
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
        // Its errors reach the request or the response body that was using it.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T> Stream for T where T: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

/// The rustls server name for `host:port` (an IPv6 host in brackets), as
/// `default_send_request` derives it.
fn tls_server_name(
    authority: &str,
) -> Result<rustls::pki_types::ServerName<'static>, rustls::pki_types::InvalidDnsNameError> {
    use rustls::pki_types::ServerName;

    if let Ok(addr) = authority.parse::<std::net::SocketAddr>() {
        return Ok(ServerName::from(addr.ip()));
    }
    let host = match authority.split_once(':') {
        Some((host, _port)) => host,
        None => authority,
    };
    Ok(ServerName::try_from(host)?.to_owned())
}

/// A connection lent to one response, to give back once its body is read.
struct Release {
    pool: OutgoingPool,
    key: Key,
    sender: http1::SendRequest<WasiBody>,
}

impl Release {
    /// Back to the pool once the connection can take another request (the
    /// request body may still be going out, or the server may close it).
    fn release(self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Release {
            pool,
            key,
            mut sender,
        } = self;
        runtime.spawn(async move {
            if sender.ready().await.is_ok() {
                pool.checkin(key, sender);
            }
        });
    }
}

/// The response body: hyper's, with the guest's between-bytes timeout (as
/// `default_send_request` applies it), that returns its connection to the pool
/// at its end. Dropped before its end, it closes the connection instead.
struct ResponseBody {
    incoming: hyper::body::Incoming,
    between_bytes_timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    release: Option<Release>,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(None) => {
                if let Some(release) = this.release.take() {
                    release.release();
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(err))) => {
                this.release = None;
                let err = if err.is_timeout() {
                    Error::HttpResponseTimeout
                } else {
                    Error::from(err)
                };
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                let deadline = tokio::time::Instant::now() + this.between_bytes_timeout;
                this.sleep.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.release = None;
                    Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // An empty body (a 204, a HEAD, `Content-Length: 0`) may never be
        // polled to its end; its connection is still reusable.
        if let Some(release) = self.release.take() {
            if self.incoming.is_end_stream() {
                release.release();
            }
        }
    }
}

/// The destinations one instance may reach: `(tls, "host:port")`, host in
/// lower case, port explicit (443 for https, 80 for http by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    allowed: Vec<(bool, String)>,
}

impl AllowList {
    /// The endpoints of a backup with environment `env`, as the component
    /// reads them: `SOURCE_ENDPOINT` and `DEST_ENDPOINT`, each defaulting to
    /// `https://${REGION:-nyc3}.digitaloceanspaces.com`. A value the component
    /// would reject adds nothing (the component fails before any request).
    pub fn from_env(env: &[(impl AsRef<str>, impl AsRef<str>)]) -> Self {
        let get = |name: &str| {
            env.iter()
                .find(|(k, _)| k.as_ref() == name)
                .map(|(_, v)| v.as_ref().trim())
                .filter(|v| !v.is_empty())
        };
        let mut list = Self::default();
        for side in ["SOURCE", "DEST"] {
            let endpoint = match get(&format!("{side}_ENDPOINT")) {
                Some(url) => url.to_string(),
                None => {
                    let region = get(&format!("{side}_REGION")).unwrap_or("nyc3");
                    format!("https://{region}.digitaloceanspaces.com")
                }
            };
            if let Some(dest) = parse_endpoint(&endpoint) {
                list.push(dest);
            }
        }
        list
    }

    /// Exactly these endpoint URLs (`http(s)://host[:port]`); `None` if one
    /// of them is not such a URL.
    pub fn from_endpoints(urls: &[impl AsRef<str>]) -> Option<Self> {
        let mut list = Self::default();
        for url in urls {
            list.push(parse_endpoint(url.as_ref())?);
        }
        Some(list)
    }

    /// Whether `(tls, "host:port")` is allowed (`authority` as [`AllowList`]
    /// normalises it).
    pub fn allows(&self, tls: bool, authority: &str) -> bool {
        self.allowed
            .iter()
            .any(|(t, a)| *t == tls && a == authority)
    }

    fn push(&mut self, dest: (bool, String)) {
        if !self.allowed.contains(&dest) {
            self.allowed.push(dest);
        }
    }

    /// Every outgoing request passes here before any connection is made.
    fn check(&self, tls: bool, authority: &str) -> Result<(), Error> {
        if self.allows(tls, authority) {
            return Ok(());
        }
        let scheme = if tls { "https" } else { "http" };
        eprintln!(
            "spaces-backup: refused an outgoing request to {scheme}://{authority}: \
             not an allowed endpoint (only SOURCE_ENDPOINT and DEST_ENDPOINT may be reached)"
        );
        Err(Error::HttpRequestDenied)
    }
}

/// `http(s)://host[:port][/]` as `(tls, "host:port")`, normalised as
/// [`OutgoingPool::send`] normalises request URIs: the component's own endpoint parser,
/// with the port always given.
fn parse_endpoint(url: &str) -> Option<(bool, String)> {
    let endpoint = spaces_backup::model::parse_endpoint(url).ok()?;
    Some((endpoint.https, endpoint.host_port()))
}

/// The `wasi:http` hooks of one instance: outgoing requests go through the
/// runner's [`OutgoingPool`], if `allowed`; everything else is Wasmtime's
/// default.
pub(crate) struct PooledHooks {
    pool: OutgoingPool,
    allowed: Arc<AllowList>,
}

impl WasiHttpHooks for PooledHooks {
    /// A certificate that does not verify is told as such, with the problem, so the
    /// component fails at once (it retries other TLS failures).
    fn p2_error_from_tls(
        &mut self,
        err: &std::io::Error,
    ) -> wasmtime_wasi_http::p2::bindings::http::types::ErrorCode {
        use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
        match crate::trust::certificate_problem(err, "the server") {
            Some(problem) => {
                eprintln!("spaces-backup: TLS: {problem}");
                ErrorCode::InternalError(Some(format!(
                    "{}{problem}",
                    spaces_backup::model::CERTIFICATE_ERROR
                )))
            }
            None => ErrorCode::TlsProtocolError,
        }
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), Error>> + Send>,
                    ),
                    Error,
                >,
            > + Send,
    > {
        let pool = self.pool.clone();
        let allowed = self.allowed.clone();
        Box::new(async move {
            let response = pool.send(&allowed, request, options).await?;
            // The connection's I/O runs in its own task (see `connect`), so
            // there is nothing left for the caller to drive.
            let io: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(async { Ok(()) });
            Ok((response, io))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_follows_the_environment() {
        let list = AllowList::from_env(&[
            ("SOURCE_ENDPOINT", "http://127.0.0.1:9000/"),
            ("DEST_REGION", "FRA1"),
        ]);
        assert!(list.allows(false, "127.0.0.1:9000"));
        assert!(list.allows(true, "fra1.digitaloceanspaces.com:443"));
        assert!(!list.allows(true, "127.0.0.1:9000"), "scheme counts");
        assert!(!list.allows(true, "nyc3.digitaloceanspaces.com:443"));

        let defaults = AllowList::from_env(&[("SOURCE_ENDPOINT", ""), ("X", "y")]);
        assert!(defaults.allows(true, "nyc3.digitaloceanspaces.com:443"));
        assert_eq!(defaults.allowed.len(), 1);

        let ports = AllowList::from_env(&[
            ("SOURCE_ENDPOINT", "https://Example.com:443"),
            ("DEST_ENDPOINT", "http://[::1]"),
        ]);
        assert!(ports.allows(true, "example.com:443"));
        assert!(ports.allows(false, "[::1]:80"));

        assert!(AllowList::from_env(&[("SOURCE_ENDPOINT", "not-a-url")])
            .allows(true, "nyc3.digitaloceanspaces.com:443"));
        assert!(AllowList::from_endpoints(&["ftp://x"]).is_none());
        assert!(AllowList::from_endpoints(&["http://a@b"]).is_none());
        assert!(AllowList::from_endpoints(&["http://a:0"]).is_none());
        assert_eq!(
            AllowList::from_endpoints(&[] as &[&str]),
            Some(AllowList::default())
        );
    }
}
