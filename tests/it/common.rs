//! What the component's tests share: the test kit's servers, environment and readers,
//! and the component itself, compiled once per test binary.
//!
//! Use `#[tokio::test(flavor = "multi_thread")]`: the component runs on the test's
//! runtime (the S3 server has a thread of its own).

#![allow(dead_code, unused_imports)]

use std::sync::OnceLock;

use serde_json::Value;

pub use spaces_backup_host::{envelope, Runner};
pub use spaces_backup_testkit::env::{set, unset};
pub use spaces_backup_testkit::readers::*;
pub use spaces_backup_testkit::server::{
    Fault, RequestInfo, RequestRecord, S3Server, S3ServerBuilder,
};
pub use spaces_backup_testkit::{start_s3, start_s3_with, TestS3};

/// The minimum part size S3 accepts; tests use it to get several parts from little data.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// The archive's last entry.
pub const MANIFEST: &str = ".spaces-backup/manifest.jsonl";

/// The environment of a backup from `source` to `dest` on `s3`, with the smallest part
/// size. Add or override variables with [`set`].
pub fn backup_env(s3: &S3Server, source: &str, dest: &str) -> Vec<(String, String)> {
    let mut env = spaces_backup_testkit::env::backup_env(s3, source, dest);
    set(&mut env, "PART_SIZE", &MIN_PART_SIZE.to_string());
    env
}

/// The embedded component, compiled on first use (once per test process; Wasmtime's
/// on-disk cache makes later processes fast).
pub fn runner() -> &'static Runner {
    static RUNNER: OnceLock<Runner> = OnceLock::new();
    RUNNER.get_or_init(|| match Runner::embedded() {
        Ok(r) => r,
        Err(e) => panic!("cannot load the component: {e:#}"),
    })
}

/// `POST /backup` with exactly `env` as the component's environment.
/// Returns the status and the body (JSON, or a JSON string if not JSON).
pub async fn run_backup(env: &[(impl AsRef<str>, impl AsRef<str>)]) -> (u16, Value) {
    request(env, "POST", "/backup").await
}

/// [`run_backup`], also returning the component instance's linear memory at its
/// largest, in bytes (to check that memory does not grow with objects).
pub async fn run_backup_measured(env: &[(impl AsRef<str>, impl AsRef<str>)]) -> (u16, Value, u64) {
    let handled = match runner().handle_measured(env, "POST", "/backup", "").await {
        Ok(h) => h,
        Err(e) => panic!("POST /backup: the host failed: {e:#}"),
    };
    (
        handled.status,
        to_json(&handled.body),
        handled.guest_memory_bytes,
    )
}

/// Any request to the component.
pub async fn request(
    env: &[(impl AsRef<str>, impl AsRef<str>)],
    method: &str,
    path: &str,
) -> (u16, Value) {
    let (status, body) = match runner().handle(env, method, path, "").await {
        Ok(r) => r,
        Err(e) => panic!("{method} {path}: the host failed: {e:#}"),
    };
    (status, to_json(&body))
}

/// The body as JSON, or as a JSON string when it is not JSON.
pub fn to_json(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}
