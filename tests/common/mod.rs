//! Shared helpers for the integration tests: `mod common;` in a test file.
//!
//! - [`start_s3`]: an S3 server (s3s-fs, SigV4 enforced) on 127.0.0.1 over a
//!   temporary folder, stopped and removed when the returned value drops;
//! - [`runner`]: the component, compiled once per test process;
//! - [`run_backup`]: `POST /backup` with a given environment
//!   ([`run_backup_measured`] also gives the instance's peak memory);
//! - [`read_zip_with_python`]: an independent reader (Python's `zipfile`)
//!   that lists every entry with its size, CRC32 and SHA-256.
//!
//! Use `#[tokio::test(flavor = "multi_thread")]`: the component runs on the
//! test's runtime (the S3 server has a thread of its own).

#![allow(dead_code, unused_imports)]

use std::ops::Deref;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

pub use spaces_backup_host::s3server::{
    Fault, RequestInfo, RequestRecord, S3Server, S3ServerBuilder,
};
pub use spaces_backup_host::{envelope, Runner};

/// The minimum part size S3 accepts; tests use it to get several parts from
/// little data.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// The archive's last entry.
pub const MANIFEST: &str = ".spaces-backup/manifest.jsonl";

/// An S3 server over a temporary folder. Derefs to [`S3Server`].
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

/// Starts an S3 server with fixed test credentials.
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

/// The environment of a backup from `source` to `dest` on `s3`, with the
/// smallest part size. Add or override variables with [`set`].
pub fn backup_env(s3: &S3Server, source: &str, dest: &str) -> Vec<(String, String)> {
    vec![
        ("SOURCE_BUCKET".into(), source.into()),
        ("SOURCE_REGION".into(), "nyc3".into()),
        ("SOURCE_ENDPOINT".into(), s3.endpoint().into()),
        ("DEST_BUCKET".into(), dest.into()),
        ("DEST_REGION".into(), "nyc3".into()),
        ("DEST_ENDPOINT".into(), s3.endpoint().into()),
        ("SPACES_KEY".into(), s3.access_key().into()),
        ("SPACES_SECRET".into(), s3.secret_key().into()),
        ("PART_SIZE".into(), MIN_PART_SIZE.to_string()),
    ]
}

/// Sets (or replaces) `name` in `env`.
pub fn set(env: &mut Vec<(String, String)>, name: &str, value: &str) {
    env.retain(|(k, _)| k != name);
    env.push((name.into(), value.into()));
}

/// Removes `name` from `env`.
pub fn unset(env: &mut Vec<(String, String)>, name: &str) {
    env.retain(|(k, _)| k != name);
}

/// The embedded component, compiled on first use (once per test process;
/// Wasmtime's on-disk cache makes later processes fast).
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

/// [`run_backup`], also returning the component instance's linear memory at
/// its largest, in bytes (to check that memory does not grow with objects).
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

/// One archive entry as Python's `zipfile` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Decoded name (UTF-8 when the entry's UTF-8 flag is set, else CP437).
    pub name: String,
    /// Uncompressed size.
    pub size: u64,
    pub compressed_size: u64,
    pub crc32: u32,
    /// SHA-256 of the uncompressed bytes, lowercase hex.
    pub sha256: String,
    /// 0 stored, 8 deflate.
    pub method: u16,
    /// General purpose flag bit 11 (names are UTF-8).
    pub utf8_flag: bool,
    pub is_dir: bool,
}

const PY_READ_ZIP: &str = r#"
import hashlib, json, sys, zipfile
entries = []
with zipfile.ZipFile(sys.argv[1]) as z:
    for info in z.infolist():
        h = hashlib.sha256()
        # Reading to the end makes zipfile check the CRC32 (BadZipFile if wrong).
        with z.open(info) as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
        entries.append({
            "name": info.filename,
            "size": info.file_size,
            "compressed_size": info.compress_size,
            "crc32": info.CRC,
            "sha256": h.hexdigest(),
            "method": info.compress_type,
            "utf8_flag": bool(info.flag_bits & 0x800),
            "is_dir": info.is_dir(),
        })
json.dump(entries, sys.stdout)
"#;

/// Reads every entry of the ZIP at `path` with Python's `zipfile` (checking
/// each CRC32), in central-directory order. Panics with Python's error if the
/// archive does not read.
pub fn read_zip_with_python(path: &Path) -> Vec<Entry> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(PY_READ_ZIP)
        .arg(path)
        .output()
        .expect("run python3 (needed to read archives independently)");
    assert!(
        out.status.success(),
        "python3 zipfile could not read {}:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).expect("python3 printed JSON");
    list.iter()
        .map(|e| Entry {
            name: e["name"].as_str().unwrap_or_default().to_string(),
            size: e["size"].as_u64().unwrap_or_default(),
            compressed_size: e["compressed_size"].as_u64().unwrap_or_default(),
            crc32: e["crc32"].as_u64().unwrap_or_default() as u32,
            sha256: e["sha256"].as_str().unwrap_or_default().to_string(),
            method: e["method"].as_u64().unwrap_or_default() as u16,
            utf8_flag: e["utf8_flag"].as_bool().unwrap_or_default(),
            is_dir: e["is_dir"].as_bool().unwrap_or_default(),
        })
        .collect()
}

/// Lowercase hex SHA-256, to compare with [`Entry::sha256`].
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The archive a successful backup reported (`archiveName` in the body), as
/// a local file path on the server.
pub fn archive_path(s3: &S3Server, dest: &str, body: &Value) -> std::path::PathBuf {
    let key = body["archiveName"]
        .as_str()
        .unwrap_or_else(|| panic!("no archiveName in {body}"));
    s3.object_path(dest, key)
        .expect("archive key is a file path")
}

/// Runs `cmd` and returns its output; the test fails if the tool is missing or
/// fails (the tools are installed by `.ci/run`).
pub fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} is needed by this test (see .ci/run): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd} {args:?} failed:\n{text}");
    text
}

/// Reads the ZIP at `path` front to back with Java's `ZipInputStream` (a
/// streaming reader that ignores the central directory and checks every CRC).
/// Returns `(name, size, crc32)` per entry.
pub fn read_zip_with_java_stream(path: &Path) -> Vec<(String, u64, u32)> {
    let checker = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readers/ZipStreamCheck.java");
    let out = tool("java", &[checker.to_str().unwrap(), path.to_str().unwrap()]);
    let mut entries = Vec::new();
    let mut total = None;
    for line in out.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields[..] {
            ["total", n, _] => total = n.parse::<usize>().ok(),
            [name, size, crc] => entries.push((
                name.to_string(),
                size.parse().expect("size"),
                u32::from_str_radix(crc, 16).expect("crc"),
            )),
            _ => {}
        }
    }
    assert_eq!(total, Some(entries.len()), "java output:\n{out}");
    entries
}

/// The archive's manifest (`.spaces-backup/manifest.jsonl`), one JSON object
/// per source object, read with Python's `zipfile`.
pub fn read_manifest_with_python(path: &Path) -> Vec<Value> {
    let out = tool(
        "python3",
        &[
            "-c",
            "import sys, zipfile; sys.stdout.write(zipfile.ZipFile(sys.argv[1]).read('.spaces-backup/manifest.jsonl').decode())",
            path.to_str().unwrap(),
        ],
    );
    out.lines()
        .map(|l| serde_json::from_str(l).expect("manifest line is JSON"))
        .collect()
}
