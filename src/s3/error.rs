//! Why an S3 call failed, before the job adds which bucket and key it concerned.

use crate::io::http::TransportError;
use crate::s3::retry::is_transient;

#[derive(Clone, Debug)]
pub enum S3Error {
    /// No answer, or a cut-off one.
    Transport(TransportError),
    /// An answer with an error status (or a 200 carrying an `<Error>`).
    Status {
        status: u16,
        code: String,
        message: String,
    },
    /// An answer we could not understand, or data that failed a check.
    Protocol(String),
}

impl S3Error {
    pub fn protocol(what: impl Into<String>) -> Self {
        S3Error::Protocol(what.into())
    }

    /// What a reader over a response body failed with: the transport failure it wraps,
    /// or bad data.
    pub fn from_io(e: std::io::Error) -> Self {
        if let Some(t) = e.get_ref().and_then(|i| i.downcast_ref::<TransportError>()) {
            return S3Error::Transport(t.clone());
        }
        S3Error::Protocol(e.to_string())
    }

    pub fn is_transient(&self) -> bool {
        match self {
            // A refusal by the host (allow-list, or stopping) will not change on retry.
            S3Error::Transport(t) => t.is_transient(),
            S3Error::Status { status, code, .. } => is_transient(*status, code),
            S3Error::Protocol(_) => false,
        }
    }

    /// The keys were refused: wrong key or secret, or no access to the bucket.
    pub fn is_access_denied(&self) -> bool {
        matches!(
            self.code(),
            "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch"
        ) || matches!(self.status(), Some(401 | 403))
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            S3Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn code(&self) -> &str {
        match self {
            S3Error::Status { code, .. } => code,
            S3Error::Transport(_) => "NetworkError",
            S3Error::Protocol(_) => "ProtocolError",
        }
    }
}

impl From<TransportError> for S3Error {
    fn from(e: TransportError) -> Self {
        S3Error::Transport(e)
    }
}

impl std::fmt::Display for S3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            S3Error::Transport(t) => write!(f, "{t}"),
            S3Error::Status {
                status,
                code,
                message,
            } => {
                write!(f, "HTTP {status} {code}")?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            S3Error::Protocol(m) => write!(f, "{m}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::http::TransportKind;

    #[test]
    fn transport_failures_survive_a_reader() {
        let io: std::io::Error = TransportError::stream("cut").into();
        let back = S3Error::from_io(io);
        assert!(matches!(back, S3Error::Transport(ref t) if t.kind == TransportKind::Stream));
        assert!(back.is_transient());
        let bad = S3Error::from_io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "Invalid checksum",
        ));
        assert!(matches!(bad, S3Error::Protocol(_)));
        assert!(!bad.is_transient());
        let denied = S3Error::Transport(TransportError::new(TransportKind::Denied, "no"));
        assert!(!denied.is_transient());
    }
}
