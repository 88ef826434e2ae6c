//! AWS Signature Version 4 for S3, as plain functions over strings and bytes.
//!
//! Split the way the specification is: canonical request, string to sign, signature.
//! The caller passes the time, so tests are deterministic.

use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

/// Lower-case hex, as SigV4 and MD5 comparisons want it.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// RFC 3986's unreserved characters stay; everything else is `%XX`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// The same, keeping `/` (object key paths).
const UNRESERVED_PATH: &AsciiSet = &UNRESERVED.remove(b'/');

/// SHA-256 of the empty payload, used by every request without a body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// An access key pair. `Debug` never shows either half.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials { <redacted> }")
    }
}

/// UTC time of a signature, in the two forms SigV4 uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningTime {
    /// `YYYYMMDD'T'HHMMSS'Z'`
    pub amz_date: String,
}

impl SigningTime {
    pub fn new(amz_date: impl Into<String>) -> Self {
        Self {
            amz_date: amz_date.into(),
        }
    }

    pub fn from_unix(secs: i64) -> Self {
        let t = time::OffsetDateTime::from_unix_timestamp(secs)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        Self::new(format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ))
    }

    fn date(&self) -> &str {
        &self.amz_date[..8]
    }
}

/// What is signed: the request as it goes on the wire.
pub struct SignableRequest<'a> {
    pub method: &'a str,
    /// Already URI-encoded path, exactly as sent (S3 paths are never normalised).
    pub canonical_uri: &'a str,
    /// Raw (unencoded) query parameters, in any order.
    pub query: &'a [(String, String)],
    /// Headers to sign, including `host` exactly as sent (with `:port` when not default).
    pub headers: &'a [(String, String)],
    pub payload_sha256: &'a str,
}

/// RFC 3986 percent-encoding as SigV4 wants it: unreserved characters stay, everything
/// else becomes `%XX` (upper case). `/` stays only when `keep_slash` (object key paths).
pub fn uri_encode(input: &str, keep_slash: bool) -> String {
    let set = if keep_slash {
        UNRESERVED_PATH
    } else {
        UNRESERVED
    };
    utf8_percent_encode(input, set).to_string()
}

/// The query string, encoded and sorted; the same text is sent and signed.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

fn canonical_headers(headers: &[(String, String)]) -> (String, String) {
    let mut hs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            let collapsed = v.split_whitespace().collect::<Vec<_>>().join(" ");
            (k.to_ascii_lowercase(), collapsed)
        })
        .collect();
    hs.sort();
    let mut canonical = String::new();
    let mut signed = String::new();
    for (i, (k, v)) in hs.iter().enumerate() {
        canonical.push_str(k);
        canonical.push(':');
        canonical.push_str(v);
        canonical.push('\n');
        if i > 0 {
            signed.push(';');
        }
        signed.push_str(k);
    }
    (canonical, signed)
}

/// Returns the canonical request and the signed-headers list.
pub fn canonical_request(req: &SignableRequest<'_>) -> (String, String) {
    let (headers, signed) = canonical_headers(req.headers);
    let text = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        req.canonical_uri,
        canonical_query(req.query),
        headers,
        signed,
        req.payload_sha256
    );
    (text, signed)
}

pub fn scope(time: &SigningTime, region: &str, service: &str) -> String {
    format!("{}/{region}/{service}/aws4_request", time.date())
}

pub fn string_to_sign(canonical_request: &str, time: &SigningTime, scope: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        time.amz_date,
        hex(&Sha256::digest(canonical_request.as_bytes()))
    )
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

pub fn signing_key(secret: &str, time: &SigningTime, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), time.date().as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// The `Authorization` header value for `req`.
pub fn authorization(
    req: &SignableRequest<'_>,
    creds: &Credentials,
    region: &str,
    service: &str,
    time: &SigningTime,
) -> String {
    let (canonical, signed_headers) = canonical_request(req);
    let scope = scope(time, region, service);
    let sts = string_to_sign(&canonical, time, &scope);
    let signature = hex(&hmac(
        &signing_key(&creds.secret_key, time, region, service),
        sts.as_bytes(),
    ));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        creds.access_key
    )
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(a: &str, b: &str) -> (String, String) {
        (a.to_string(), b.to_string())
    }

    fn aws_s3_creds() -> Credentials {
        Credentials {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        }
    }

    fn signature_of(auth: &str) -> &str {
        auth.rsplit("Signature=").next().unwrap()
    }

    // The S3 documentation's examples ("Signature Calculations for the Authorization
    // Header: Transferring Payload in a Single Chunk"), bucket `examplebucket`.
    #[test]
    fn s3_doc_get_object() {
        let headers = [
            s("host", "examplebucket.s3.amazonaws.com"),
            s("range", "bytes=0-9"),
            s("x-amz-content-sha256", EMPTY_SHA256),
            s("x-amz-date", "20130524T000000Z"),
        ];
        let req = SignableRequest {
            method: "GET",
            canonical_uri: "/test.txt",
            query: &[],
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        let auth = authorization(
            &req,
            &aws_s3_creds(),
            "us-east-1",
            "s3",
            &SigningTime::new("20130524T000000Z"),
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn s3_doc_put_object() {
        let payload = sha256_hex(b"Welcome to Amazon S3.");
        assert_eq!(
            payload,
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        );
        let headers = [
            s("date", "Fri, 24 May 2013 00:00:00 GMT"),
            s("host", "examplebucket.s3.amazonaws.com"),
            s("x-amz-content-sha256", &payload),
            s("x-amz-date", "20130524T000000Z"),
            s("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ];
        let uri = format!("/{}", uri_encode("test$file.text", true));
        assert_eq!(uri, "/test%24file.text");
        let req = SignableRequest {
            method: "PUT",
            canonical_uri: &uri,
            query: &[],
            headers: &headers,
            payload_sha256: &payload,
        };
        let auth = authorization(
            &req,
            &aws_s3_creds(),
            "us-east-1",
            "s3",
            &SigningTime::new("20130524T000000Z"),
        );
        assert_eq!(
            signature_of(&auth),
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );
    }

    #[test]
    fn s3_doc_get_bucket_lifecycle() {
        let headers = [
            s("host", "examplebucket.s3.amazonaws.com"),
            s("x-amz-content-sha256", EMPTY_SHA256),
            s("x-amz-date", "20130524T000000Z"),
        ];
        let req = SignableRequest {
            method: "GET",
            canonical_uri: "/",
            query: &[s("lifecycle", "")],
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        let auth = authorization(
            &req,
            &aws_s3_creds(),
            "us-east-1",
            "s3",
            &SigningTime::new("20130524T000000Z"),
        );
        assert_eq!(
            signature_of(&auth),
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
        );
    }

    #[test]
    fn s3_doc_list_objects() {
        let headers = [
            s("host", "examplebucket.s3.amazonaws.com"),
            s("x-amz-content-sha256", EMPTY_SHA256),
            s("x-amz-date", "20130524T000000Z"),
        ];
        // Given out of order: the canonical query sorts them.
        let query = [s("prefix", "J"), s("max-keys", "2")];
        let req = SignableRequest {
            method: "GET",
            canonical_uri: "/",
            query: &query,
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        assert_eq!(canonical_query(&query), "max-keys=2&prefix=J");
        let auth = authorization(
            &req,
            &aws_s3_creds(),
            "us-east-1",
            "s3",
            &SigningTime::new("20130524T000000Z"),
        );
        assert_eq!(
            signature_of(&auth),
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
    }

    // The generic SigV4 test suite (`get-vanilla`), which signs only host and x-amz-date.
    #[test]
    fn sigv4_suite_get_vanilla() {
        let creds = Credentials {
            access_key: "AKIDEXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        };
        let headers = [
            s("host", "example.amazonaws.com"),
            s("x-amz-date", "20150830T123600Z"),
        ];
        let req = SignableRequest {
            method: "GET",
            canonical_uri: "/",
            query: &[],
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        let auth = authorization(
            &req,
            &creds,
            "us-east-1",
            "service",
            &SigningTime::new("20150830T123600Z"),
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn keys_are_encoded_once_and_never_normalised() {
        assert_eq!(
            uri_encode("a b+c%d/e//f/../ü.txt", true),
            "a%20b%2Bc%25d/e//f/../%C3%BC.txt"
        );
        assert_eq!(uri_encode("a/b=c&d", false), "a%2Fb%3Dc%26d");
        assert_eq!(uri_encode("-._~", false), "-._~");
    }

    #[test]
    fn headers_are_trimmed_lowercased_and_sorted() {
        let (canonical, signed) =
            canonical_headers(&[s("X-Amz-Date", "x"), s("Host", "  h:9000   a  b ")]);
        assert_eq!(canonical, "host:h:9000 a b\nx-amz-date:x\n");
        assert_eq!(signed, "host;x-amz-date");
    }

    #[test]
    fn signing_time_from_unix() {
        assert_eq!(
            SigningTime::from_unix(1369353600).amz_date,
            "20130524T000000Z"
        );
    }

    #[test]
    fn debug_never_shows_credentials() {
        let text = format!("{:?}", aws_s3_creds());
        assert!(!text.contains("AKIA") && !text.contains("EXAMPLEKEY"));
    }
}
