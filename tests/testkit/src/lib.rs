//! Test infrastructure for spaces-backup, apart from what ships: S3 servers on 127.0.0.1
//! that check SigV4 (s3s over s3s-fs, or the in-memory [`memstore`]), fault hooks, the
//! one signed test client, the environment builder both test suites use, and the
//! independent archive readers. The host's `demo` uses the server too (behind its `demo`
//! feature), so a release without it carries none of this.

pub mod client;
pub mod env;
pub mod faults;
pub mod memstore;
pub mod readers;
pub mod server;
pub mod sigv4;
pub mod tls;

use std::ops::Deref;

pub use server::{S3Server, S3ServerBuilder};

/// An S3 server over a temporary folder, removed with it. Derefs to [`S3Server`].
pub struct TestS3 {
    // Declared first so the server stops before its folder is removed.
    pub server: S3Server,
    pub dir: tempfile::TempDir,
}

impl Deref for TestS3 {
    type Target = S3Server;
    fn deref(&self) -> &S3Server {
        &self.server
    }
}

/// Starts an S3 server (s3s-fs) with fixed test credentials.
pub fn start_s3() -> TestS3 {
    start_s3_with(|b| b)
}

/// Starts an S3 server configured by `f`, e.g. with a fault hook:
/// `start_s3_with(|b| b.fault(|req| ...))`.
pub fn start_s3_with(f: impl FnOnce(S3ServerBuilder) -> S3ServerBuilder) -> TestS3 {
    let dir = tempfile::tempdir().expect("temporary folder");
    let server = f(S3Server::builder(dir.path().join("s3")))
        .start()
        .expect("start the S3 server");
    TestS3 { server, dir }
}
