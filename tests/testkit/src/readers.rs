//! Independent readers for the archives the tests produce: Python's `zipfile` (every
//! CRC), Java's `ZipInputStream` (a streaming reader), and command-line tools (Info-ZIP
//! `unzip`, 7-Zip, `bsdtar`). The tools are installed by `.ci/run`.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::server::S3Server;

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
    let checker = Path::new(env!("CARGO_MANIFEST_DIR")).join("readers/ZipStreamCheck.java");
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
