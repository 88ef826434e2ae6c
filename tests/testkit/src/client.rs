//! The one signed test client: a keep-alive HTTP/1 connection to a test server that signs
//! requests with SigV4 over `host`, `x-amz-content-sha256: UNSIGNED-PAYLOAD` and
//! `x-amz-date` (extra headers are sent unsigned), enough to drive a server without an
//! SDK and check what it answers.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};

use crate::server::S3Server;
use crate::sigv4::{amz_dates, authorization, enc};

/// The region test requests are signed for.
pub const REGION: &str = "nyc3";

pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    access_key: String,
    secret_key: String,
}

/// A response, read whole.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    /// The body as far as it came.
    pub body: Vec<u8>,
    /// Why the body broke off, if it did.
    pub body_error: Option<String>,
}

impl Reply {
    pub fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.body).into_owned();
        match &self.body_error {
            Some(e) => format!("{text}<body error: {e}>"),
            None => text,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `<Code>` of an S3 error body.
    pub fn code(&self) -> String {
        let text = self.text();
        text.split_once("<Code>")
            .and_then(|(_, rest)| rest.split_once("</Code>"))
            .map(|(code, _)| code.to_string())
            .unwrap_or_default()
    }
}

impl Client {
    pub async fn connect(server: &S3Server, access_key: &str, secret_key: &str) -> Client {
        let stream = tokio::net::TcpStream::connect(server.addr())
            .await
            .expect("connect to the test server");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("HTTP/1 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Client {
            sender,
            host: server.addr().to_string(),
            access_key: access_key.into(),
            secret_key: secret_key.into(),
        }
    }

    /// A signed request: `path` is sent and signed as given (already URI-encoded);
    /// `query` pairs are encoded here. Panics if no response comes.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let reply = self
            .try_send(method, path, query, headers, body, true)
            .await;
        expect_reply(reply, method, path)
    }

    /// Like `send`, signed or not; `Err` when the connection closed without a response.
    pub async fn try_send(
        &mut self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: &[u8],
        sign: bool,
    ) -> Result<Reply, String> {
        let query = canonical_query(query);
        self.request(
            method,
            path,
            &query,
            sign.then_some(query.as_str()),
            headers,
            body,
        )
        .await
    }

    /// Sends `raw_query` as is, signed as if it were `canonical_query`.
    pub async fn send_raw(
        &mut self,
        method: &str,
        path: &str,
        raw_query: &str,
        canonical_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        self.request(
            method,
            path,
            raw_query,
            Some(canonical_query),
            headers,
            body,
        )
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        raw_query: &str,
        signed_query: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply, String> {
        let uri = if raw_query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{raw_query}")
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (_, amz_date) = amz_dates(now);
        let mut req = http::Request::builder()
            .method(method)
            .uri(&uri)
            .header("host", &self.host)
            .header("x-amz-date", &amz_date)
            .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD");
        if !body.is_empty() || !matches!(method, "GET" | "HEAD") {
            req = req.header("content-length", body.len().to_string());
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(query) = signed_query {
            req = req.header(
                "authorization",
                authorization(
                    method,
                    path,
                    query,
                    &self.host,
                    &amz_date,
                    REGION,
                    &self.access_key,
                    &self.secret_key,
                ),
            );
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| e.to_string())?;
        // A response can end a moment before its connection is idle again; a request
        // sent in between fails with "operation was canceled".
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let (body, body_error) = match resp.into_body().collect().await {
            Ok(b) => (b.to_bytes().to_vec(), None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        Ok(Reply {
            status,
            headers,
            body,
            body_error,
        })
    }

    pub async fn put(
        &mut self,
        bucket: &str,
        key: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        self.send("PUT", &object_path(bucket, key), &[], headers, body)
            .await
    }

    pub async fn get(&mut self, bucket: &str, key: &str, headers: &[(&str, &str)]) -> Reply {
        self.send("GET", &object_path(bucket, key), &[], headers, b"")
            .await
    }

    pub async fn list(&mut self, bucket: &str, query: &[(&str, &str)]) -> Reply {
        let mut q = vec![("list-type", "2")];
        q.extend_from_slice(query);
        self.send("GET", &format!("/{bucket}"), &q, &[], b"").await
    }
}

/// A test request must be answered: the test fails, naming it, when it is not.
fn expect_reply(reply: Result<Reply, String>, method: &str, path: &str) -> Reply {
    reply.unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Query pairs encoded and sorted, as sent and as signed.
fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut q: Vec<(String, String)> = query.iter().map(|(k, v)| (enc(k), enc(v))).collect();
    q.sort();
    q.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The request path of an object: the key encoded as SigV4 wants it for S3 (`/` kept
/// as is, so `//`, a leading `/` and `..` go over literally).
pub fn object_path(bucket: &str, key: &str) -> String {
    let encoded: Vec<String> = key.split('/').map(enc).collect();
    format!("/{bucket}/{}", encoded.join("/"))
}
