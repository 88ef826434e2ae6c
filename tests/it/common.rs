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

/// The archive `body` names holds exactly `objects`, one entry per key in key order with
/// its bytes, the manifest last, and opens in every independent reader (Python's
/// `zipfile`, unzip, 7-Zip, bsdtar, Java's `ZipInputStream`). Returns the manifest's
/// lines, for what a test checks beyond.
pub fn check_archive(
    s3: &TestS3,
    body: &Value,
    objects: &std::collections::BTreeMap<String, Vec<u8>>,
) -> Vec<Value> {
    // Read back through the server, whatever keeps its objects, into a file of our own.
    let data = s3
        .read_object("dest", body["archiveName"].as_str().unwrap())
        .unwrap();
    assert_eq!(body["archiveSize"], data.len() as u64, "{body}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive.zip");
    std::fs::write(&path, &data).unwrap();
    let mut entries = read_zip_with_python(&path);
    assert_eq!(entries.pop().unwrap().name, MANIFEST);
    let manifest = read_manifest_with_python(&path);
    let keys: Vec<&str> = manifest
        .iter()
        .map(|l| l["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        objects.keys().map(String::as_str).collect::<Vec<_>>(),
        "one manifest line per object, in order"
    );
    assert_eq!(entries.len(), objects.len());
    for (line, e) in manifest.iter().zip(&entries) {
        assert_eq!(line["entry"], e.name.as_str());
        let want = &objects[line["key"].as_str().unwrap()];
        assert_eq!(e.size, want.len() as u64, "{}", e.name);
        assert_eq!(e.sha256, sha256_hex(want), "{}", e.name);
    }
    let path = path.to_str().unwrap();
    let unzip = tool("unzip", &["-t", path]);
    assert!(unzip.contains("No errors detected"), "{unzip}");
    let sevenzip = tool("7z", &["t", path]);
    assert!(sevenzip.contains("Everything is Ok"), "{sevenzip}");
    let bsdtar = tool("bsdtar", &["-tvf", path]);
    if let Some(last) = entries.last() {
        assert!(bsdtar.contains(&last.name), "{bsdtar}");
    }
    let java = read_zip_with_java_stream(std::path::Path::new(path));
    assert_eq!(java.len(), objects.len() + 1, "Java reads every entry");
    manifest
}
