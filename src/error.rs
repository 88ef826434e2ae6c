//! A failed job, as its response reports it: a [`Kind`], from which the HTTP status and
//! the `code` follow, and a message in words a user can act on (which bucket, which key,
//! which variable to check).

use crate::config::BucketTarget;
use crate::s3::S3Error;

/// What went wrong, as far as the caller needs to know to act on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A variable is missing or malformed (named in the message).
    Configuration,
    /// The request itself is incomplete (a route without its parameters).
    Request,
    /// The keys may not do this: wrong key or secret, or no access to the bucket.
    Access,
    MissingBucket,
    /// The archive named by the request does not exist.
    MissingArchive,
    /// An endpoint could not be reached, or the connection broke for good.
    Network,
    /// An endpoint's TLS certificate does not verify.
    Certificate,
    /// The service answered with an error that is not one of the above (its S3 code).
    Service(String),
    /// The ZIP writer refused what it was given.
    Archive,
    /// An object gave another number of bytes than it was listed with.
    SizeMismatch,
    /// The job would outgrow MAX_MEMORY.
    Memory,
    /// A restore would overwrite existing objects.
    Conflict,
    /// Another run is writing this backup (it holds the lease on its checkpoint).
    Busy,
    /// A checkpoint left by an earlier run cannot be continued by this one.
    Checkpoint,
}

impl Kind {
    pub fn status(&self) -> u16 {
        match self {
            Kind::Configuration | Kind::Request => 400,
            Kind::Access => 403,
            Kind::MissingBucket | Kind::MissingArchive => 404,
            Kind::Conflict | Kind::Busy | Kind::Checkpoint => 409,
            Kind::Network | Kind::Certificate | Kind::Service(_) => 502,
            Kind::Archive | Kind::SizeMismatch | Kind::Memory => 500,
        }
    }

    pub fn code(&self) -> &str {
        match self {
            Kind::Configuration => "InvalidConfiguration",
            Kind::Request => "InvalidRequest",
            Kind::Access => "AccessDenied",
            Kind::MissingBucket => "NoSuchBucket",
            Kind::MissingArchive => "NoSuchKey",
            Kind::Network => "NetworkError",
            Kind::Certificate => "TlsCertificateError",
            Kind::Service(code) => code,
            Kind::Archive => "ArchiveError",
            Kind::SizeMismatch => "SizeMismatch",
            Kind::Memory => "MemoryLimit",
            Kind::Conflict => "WouldOverwrite",
            Kind::Busy => "BackupInProgress",
            Kind::Checkpoint => "CheckpointMismatch",
        }
    }
}

/// A job's failure: its kind and the words for the user.
#[derive(Clone, Debug)]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    pub fn code(&self) -> &str {
        self.kind.code()
    }

    /// The same failure with more said after it (e.g. what happened to the upload).
    pub fn and(mut self, more: &str) -> Self {
        self.message.push_str(more);
        self
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code())
    }
}

/// Which bucket an S3 failure concerned.
#[derive(Clone, Copy, Debug)]
pub enum Side {
    Source,
    Destination,
    /// Where a restore writes (on SOURCE_ENDPOINT).
    Target,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Destination => "destination",
            Side::Target => "target",
        }
    }

    /// The prefix of the variables that configure this side.
    fn variables(self) -> &'static str {
        match self {
            Side::Source | Side::Target => "SOURCE",
            Side::Destination => "DEST",
        }
    }
}

/// Turns an S3 failure into words a user can act on: which bucket, which key, what to check.
pub fn s3_failure(
    side: Side,
    target: &BucketTarget,
    doing: &str,
    key: Option<&str>,
    e: &S3Error,
) -> Failure {
    let side_name = side.name();
    let var = side.variables();
    let bucket = &target.bucket;
    let at_key = key.map(|k| format!(", key '{k}'")).unwrap_or_default();
    if e.is_access_denied() {
        return Failure::new(
            Kind::Access,
            format!(
                "access denied to the {side_name} bucket '{bucket}' while {doing}{at_key} ({e}); \
                 check SPACES_KEY and SPACES_SECRET, and that the key may access this bucket"
            ),
        );
    }
    if e.code() == "NoSuchBucket" || (key.is_none() && e.status() == Some(404)) {
        return Failure::new(
            Kind::MissingBucket,
            format!(
                "the {side_name} bucket '{bucket}' does not exist at {} ({e}); check {var}_BUCKET and {var}_ENDPOINT",
                target.endpoint
            ),
        );
    }
    if let S3Error::Transport(t) = e {
        if t.kind == crate::io::http::TransportKind::Certificate {
            return Failure::new(
                Kind::Certificate,
                format!(
                    "the TLS certificate of the {side_name} endpoint {} does not verify ({t}) while {doing}; \
                     this is not retried: if the endpoint uses a private CA or a TLS proxy, give its CA \
                     certificate (PEM) in {}",
                    target.endpoint,
                    crate::model::CA_FILE_VAR
                ),
            );
        }
        return Failure::new(
            Kind::Network,
            format!(
                "could not reach the {side_name} endpoint {} while {doing}{at_key}: {e}; check {var}_ENDPOINT",
                target.endpoint
            ),
        );
    }
    Failure::new(
        Kind::Service(e.code().to_string()),
        format!("{doing} failed for the {side_name} bucket '{bucket}'{at_key}: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::http::TransportError;
    use crate::model::Endpoint;

    fn target() -> BucketTarget {
        BucketTarget {
            bucket: "src".into(),
            region: "nyc3".into(),
            endpoint: Endpoint {
                https: true,
                authority: "nyc3.digitaloceanspaces.com".into(),
            },
        }
    }

    #[test]
    fn kinds_give_status_and_code() {
        let denied = S3Error::Status {
            status: 403,
            code: "SignatureDoesNotMatch".into(),
            message: String::new(),
        };
        let f = s3_failure(Side::Source, &target(), "listing objects", None, &denied);
        assert_eq!((f.status(), f.code()), (403, "AccessDenied"));
        assert!(f.message.contains("SPACES_SECRET"), "{f}");

        let gone = S3Error::Status {
            status: 404,
            code: "NoSuchBucket".into(),
            message: String::new(),
        };
        let f = s3_failure(Side::Destination, &target(), "checking", None, &gone);
        assert_eq!((f.status(), f.code()), (404, "NoSuchBucket"));
        assert!(f.message.contains("DEST_BUCKET"), "{f}");

        let net = S3Error::Transport(TransportError::connection("the connection was refused"));
        let f = s3_failure(Side::Source, &target(), "listing objects", None, &net);
        assert_eq!((f.status(), f.code()), (502, "NetworkError"));

        let cert = S3Error::Transport(TransportError::new(
            crate::io::http::TransportKind::Certificate,
            "unknown issuer",
        ));
        assert!(!cert.is_transient());
        let f = s3_failure(Side::Source, &target(), "listing objects", None, &cert);
        assert_eq!((f.status(), f.code()), (502, "TlsCertificateError"));
        assert!(
            f.message.contains("unknown issuer") && f.message.contains("SSL_CERT_FILE"),
            "{f}"
        );

        let slow = S3Error::Status {
            status: 503,
            code: "SlowDown".into(),
            message: String::new(),
        };
        let f = s3_failure(Side::Source, &target(), "reading", Some("k"), &slow);
        assert_eq!((f.status(), f.code()), (502, "SlowDown"));
        assert_eq!(Failure::new(Kind::Memory, "x").status(), 500);
        assert_eq!(Kind::Conflict.status(), 409);
    }
}
