//! `spaces-backup demo`: a whole backup on this machine with nothing to set
//! up. An in-process S3 server over a temporary folder, a seeded source
//! bucket, one run of the component, and the archive read back and compared
//! with what was seeded, byte for byte.

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::hash::{BuildHasher as _, Hasher as _};
use std::io::Read as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result};
use serde_json::Value;

use crate::Runner;
use spaces_backup::model::human_bytes;
use spaces_backup_testkit::S3Server;

pub const SOURCE_BUCKET: &str = "demo-source";
pub const DEST_BUCKET: &str = "demo-backups";
/// The S3 minimum, so that a ~12 MiB object already spans several parts.
pub const PART_SIZE: u64 = 5 * 1024 * 1024;

/// Optional tuning variables the demo passes through from the caller's
/// environment. Everything else (buckets, endpoints, keys) is the demo's own.
const PASS_THROUGH: &[&str] = &["LOG_LEVEL", "COMPRESSION_LEVEL"];

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Keep the temporary folder (and so the archive) after the run.
    pub keep: bool,
    /// How many objects to seed (at least 3: the empty and the large one
    /// are always there).
    pub objects: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            keep: false,
            objects: 300,
        }
    }
}

/// What the demo found; `ok()` is the verdict.
#[derive(Debug, Clone, Default)]
pub struct DemoOutcome {
    pub status: u16,
    pub body: Value,
    pub objects: usize,
    pub source_bytes: u64,
    pub archive_key: Option<String>,
    pub archive_path: Option<PathBuf>,
    pub archive_size: u64,
    pub entries: usize,
    pub verified: usize,
    /// Human-readable problems; empty when everything matched.
    pub problems: Vec<String>,
    pub seconds: f64,
    /// The component instance's linear memory at its largest.
    pub guest_memory_bytes: u64,
    pub largest_object: u64,
    pub kept_folder: Option<PathBuf>,
}

impl DemoOutcome {
    pub fn ok(&self) -> bool {
        self.status == 200 && self.problems.is_empty() && self.verified == self.objects
    }
}

/// Runs the demo and prints the report on stdout (progress goes to stderr).
pub async fn run(runner: &Runner, opts: &DemoOptions) -> Result<DemoOutcome> {
    let folder = tempfile::Builder::new()
        .prefix("spaces-backup-demo-")
        .tempdir()
        .context("cannot create a temporary folder")?;
    let access_key = random_token(20, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789");
    let secret_key = random_token(
        40,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    );
    let server = S3Server::start(folder.path().join("s3"), &access_key, &secret_key)?;
    server.create_bucket(SOURCE_BUCKET)?;
    server.create_bucket(DEST_BUCKET)?;

    let objects = sample_objects(opts.objects.max(3));
    let source_bytes: u64 = objects.values().map(|v| v.len() as u64).sum();
    let largest_object = objects.values().map(|v| v.len() as u64).max().unwrap_or(0);
    eprintln!(
        "demo: S3 server at {} (s3s-fs, SigV4 enforced); seeding {} objects ({}) into {SOURCE_BUCKET}",
        server.endpoint(),
        objects.len(),
        human_bytes(source_bytes)
    );
    for (key, data) in &objects {
        server.put_object(SOURCE_BUCKET, key, data)?;
    }

    let mut env: Vec<(String, String)> = vec![
        ("SOURCE_BUCKET".into(), SOURCE_BUCKET.into()),
        ("SOURCE_REGION".into(), "nyc3".into()),
        ("SOURCE_ENDPOINT".into(), server.endpoint().into()),
        ("DEST_BUCKET".into(), DEST_BUCKET.into()),
        ("DEST_REGION".into(), "nyc3".into()),
        ("DEST_ENDPOINT".into(), server.endpoint().into()),
        ("SPACES_KEY".into(), access_key.clone()),
        ("SPACES_SECRET".into(), secret_key.clone()),
        ("ARCHIVE_PREFIX".into(), "backups".into()),
        ("PART_SIZE".into(), PART_SIZE.to_string()),
    ];
    for name in PASS_THROUGH {
        if let Ok(value) = std::env::var(name) {
            env.push(((*name).into(), value));
        }
    }

    eprintln!("demo: running POST /backup through the component");
    let started = Instant::now();
    let handled = runner.handle_measured(&env, "POST", "/backup", "").await?;
    let seconds = started.elapsed().as_secs_f64();
    let (status, body) = (handled.status, handled.body);
    let body: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));

    let mut outcome = DemoOutcome {
        status,
        body: body.clone(),
        objects: objects.len(),
        source_bytes,
        seconds,
        guest_memory_bytes: handled.guest_memory_bytes,
        largest_object,
        ..Default::default()
    };

    if status != 200 {
        outcome.problems.push(format!(
            "the backup failed with status {status}: {}",
            body_message(&body)
        ));
    } else {
        verify(&server, &objects, &body, &mut outcome);
    }
    match server.open_multipart_uploads(DEST_BUCKET) {
        Ok(0) => {}
        Ok(n) => outcome.problems.push(format!(
            "{n} multipart upload(s) left open in {DEST_BUCKET}"
        )),
        Err(e) => outcome
            .problems
            .push(format!("cannot check multipart uploads: {e}")),
    }
    server.shutdown();

    if opts.keep {
        let kept = folder.keep();
        // The archive path was computed inside the temporary folder, which
        // stays where it is.
        outcome.kept_folder = Some(kept);
    }
    print_report(&outcome, opts.keep);
    Ok(outcome)
}

/// Checks the archive the backup reported against what was seeded: found, of the size
/// reported, every object inside byte for byte.
fn verify(
    server: &S3Server,
    objects: &BTreeMap<String, Vec<u8>>,
    body: &Value,
    outcome: &mut DemoOutcome,
) {
    let file = match find_archive(server, body, outcome) {
        Ok(f) => f,
        Err(problem) => {
            outcome.problems.push(problem);
            return;
        }
    };
    check_counts(objects, body, outcome);
    let mut archive = match zip::ZipArchive::new(file) {
        Ok(a) => a,
        Err(e) => {
            outcome
                .problems
                .push(format!("the archive does not open as a ZIP: {e}"));
            return;
        }
    };
    outcome.entries = archive.len();
    let seen = compare_entries(&mut archive, objects, outcome);
    let missing: Vec<&String> = objects.keys().filter(|k| !seen.contains(*k)).collect();
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(5).map(|s| s.as_str()).collect();
        outcome.problems.push(format!(
            "{} object(s) missing from the archive, e.g. {}",
            missing.len(),
            shown.join(", ")
        ));
    }
}

/// The archive named by the response, opened from the server's folder.
fn find_archive(
    server: &S3Server,
    body: &Value,
    outcome: &mut DemoOutcome,
) -> Result<std::fs::File, String> {
    let key = body
        .get("archiveName")
        .and_then(Value::as_str)
        .ok_or("the response has no archiveName")?;
    outcome.archive_key = Some(key.to_string());
    let path = server
        .object_path(DEST_BUCKET, key)
        .map_err(|e| format!("{e:#}"))?;
    outcome.archive_path = Some(path.clone());
    let file = std::fs::File::open(&path).map_err(|e| {
        format!(
            "archive {key} not found in {DEST_BUCKET} ({}): {e}",
            path.display()
        )
    })?;
    outcome.archive_size = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(file)
}

/// The response's counts against the stored archive and the seeded bucket.
fn check_counts(objects: &BTreeMap<String, Vec<u8>>, body: &Value, outcome: &mut DemoOutcome) {
    if let Some(reported) = body.get("archiveSize").and_then(Value::as_u64) {
        if reported != outcome.archive_size {
            outcome.problems.push(format!(
                "archiveSize says {reported} bytes, the stored archive has {}",
                outcome.archive_size
            ));
        }
    }
    if let Some(reported) = body.get("filesBackedUp").and_then(Value::as_u64) {
        if reported != objects.len() as u64 {
            outcome.problems.push(format!(
                "filesBackedUp says {reported}, the bucket has {}",
                objects.len()
            ));
        }
    }
}

/// Every entry against the object of its name; returns the names found.
fn compare_entries(
    archive: &mut zip::ZipArchive<std::fs::File>,
    objects: &BTreeMap<String, Vec<u8>>,
    outcome: &mut DemoOutcome,
) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..archive.len() {
        let mut entry = match archive.by_index(i) {
            Ok(e) => e,
            Err(e) => {
                outcome.problems.push(format!("entry #{i}: {e}"));
                continue;
            }
        };
        let name = match entry.name() {
            Ok(n) => n.into_owned(),
            Err(e) => {
                outcome
                    .problems
                    .push(format!("entry #{i} has an unreadable name: {e}"));
                continue;
            }
        };
        let Some(expected) = objects.get(&name) else {
            // A manifest or other extra file is allowed; objects are what must all be
            // there, and nothing else is checked byte for byte.
            if !entry.is_dir() {
                eprintln!(
                    "demo: note: extra archive entry {name:?} ({} bytes)",
                    entry.size()
                );
            }
            continue;
        };
        let mut data = Vec::with_capacity(expected.len());
        // The zip reader checks each entry's CRC32 at its end.
        if let Err(e) = entry.read_to_end(&mut data) {
            outcome.problems.push(format!("entry {name:?}: {e}"));
            continue;
        }
        if data == *expected {
            outcome.verified += 1;
        } else {
            outcome.problems.push(format!(
                "entry {name:?} differs from the object ({} bytes read, {} expected)",
                data.len(),
                expected.len()
            ));
        }
        seen.insert(name);
    }
    seen
}

fn body_message(body: &Value) -> String {
    match body {
        Value::Object(map) => {
            let message = map.get("message").and_then(Value::as_str).unwrap_or("");
            let code = map.get("code").and_then(Value::as_str).unwrap_or("");
            match (message.is_empty(), code.is_empty()) {
                (false, false) => format!("{message} ({code})"),
                (false, true) => message.to_string(),
                _ => body.to_string(),
            }
        }
        other => other.to_string(),
    }
}

fn print_report(o: &DemoOutcome, keep: bool) {
    let throughput = if o.status == 200 && o.seconds > 0.0 {
        format!(
            "{}/s",
            human_bytes((o.source_bytes as f64 / o.seconds) as u64)
        )
    } else {
        String::new()
    };
    println!("spaces-backup demo");
    println!(
        "  source        s3://{SOURCE_BUCKET}: {} objects, {}",
        o.objects,
        human_bytes(o.source_bytes)
    );
    println!("  part size     {}", human_bytes(PART_SIZE));
    if o.status == 200 {
        println!(
            "  backup        HTTP 200 in {:.2} s ({throughput})",
            o.seconds
        );
    } else {
        println!("  backup        HTTP {} after {:.2} s", o.status, o.seconds);
    }
    if let Some(key) = &o.archive_key {
        println!("  archive       s3://{DEST_BUCKET}/{key}");
        println!(
            "  archive size  {} ({} entries)",
            human_bytes(o.archive_size),
            o.entries
        );
    }
    if let Some(parts) = o
        .body
        .get("partCount")
        .or_else(|| o.body.get("parts"))
        .and_then(Value::as_u64)
    {
        println!("  parts         {parts}");
    }
    if o.guest_memory_bytes > 0 {
        println!(
            "  guest memory  {} at most (largest object {})",
            human_bytes(o.guest_memory_bytes),
            human_bytes(o.largest_object)
        );
    }
    println!(
        "  verified      {}/{} objects byte for byte",
        o.verified, o.objects
    );
    if let Some(path) = &o.archive_path {
        if keep {
            println!("  local file    {}", path.display());
            if let Some(folder) = &o.kept_folder {
                println!(
                    "  kept folder   {} (the S3 server's data is in s3/)",
                    folder.display()
                );
            }
        } else {
            println!(
                "  local file    {} (deleted on exit; --keep keeps it)",
                path.display()
            );
        }
    }
    if o.ok() {
        println!("  result        OK");
    } else {
        println!("  result        FAILED");
        for p in &o.problems {
            println!("    - {p}");
        }
    }
}

/// Random enough for throwaway credentials of a server that lives for one
/// run on 127.0.0.1: std's randomly keyed hasher, no extra dependency.
fn random_token(len: usize, alphabet: &[u8]) -> String {
    let state = RandomState::new();
    let mut out = String::with_capacity(len);
    let mut counter = 0u64;
    while out.len() < len {
        let mut h = state.build_hasher();
        h.write_u64(counter);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        counter += 1;
        let mut v = h.finish();
        for _ in 0..8 {
            if out.len() == len {
                break;
            }
            out.push(char::from(alphabet[(v % alphabet.len() as u64) as usize]));
            v /= alphabet.len() as u64;
        }
    }
    out
}

/// SplitMix64: small, fast, and the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "backup",
    "bucket",
    "object",
    "archive",
    "stream",
    "part",
    "upload",
    "region",
    "quarterly",
    "report",
    "customer",
    "invoice",
    "summary",
    "draft",
    "final",
    "meeting",
    "notes",
    "project",
    "budget",
    "review",
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "for",
    "with",
    "on",
    "is",
];

fn text(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut out = String::with_capacity(n + 16);
    while out.len() < n {
        let words = rng.range(6, 14);
        for i in 0..words {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(rng.pick(WORDS));
        }
        out.push_str(".\n");
    }
    out.truncate(n);
    out.into_bytes()
}

fn log_lines(rng: &mut Rng, day: u64, n: usize) -> Vec<u8> {
    let mut out = String::with_capacity(n + 128);
    let mut second = 0;
    while out.len() < n {
        second += rng.range(1, 30);
        let level = rng.pick(&["INFO", "INFO", "INFO", "WARN", "DEBUG", "ERROR"]);
        let path = rng.pick(&[
            "/api/orders",
            "/api/users",
            "/health",
            "/api/backup",
            "/static/app.js",
        ]);
        let status = rng.pick(&["200", "200", "200", "201", "304", "404", "500"]);
        out.push_str(&format!(
            "2024-06-{day:02}T{:02}:{:02}:{:02}Z {level} request id={:016x} path={path} status={status} duration_ms={}\n",
            (second / 3600) % 24,
            (second / 60) % 60,
            second % 60,
            rng.next(),
            rng.range(1, 900)
        ));
    }
    out.truncate(n);
    out.into_bytes()
}

/// `count` objects in nested prefixes, the same on every run: an empty one,
/// one of ~12 MiB (more than two 5 MiB parts on its own), and a mix of
/// compressible text and incompressible bytes.
pub fn sample_objects(count: usize) -> BTreeMap<String, Vec<u8>> {
    let mut rng = Rng(0x5eed_5eed_5eed_5eed);
    let mut objects = BTreeMap::new();
    objects.insert("docs/empty.txt".to_string(), Vec::new());
    objects.insert(
        "media/video/big-recording.bin".to_string(),
        rng.bytes(12 * 1024 * 1024 + 12_345),
    );
    let mut i = 0u64;
    while objects.len() < count {
        let (key, data) = match i % 5 {
            0 | 1 => {
                let month = i % 12 + 1;
                let size = rng.range(4 * 1024, 96 * 1024) as usize;
                (
                    format!("photos/2024/{month:02}/IMG_{:04}.jpg", 1000 + i),
                    rng.bytes(size),
                )
            }
            2 => {
                let folder = rng.pick(&["projects", "reports", "notes"]);
                let size = rng.range(200, 40 * 1024) as usize;
                let name = match i % 7 {
                    0 => format!("meeting notes {i}.txt"),
                    1 => format!("résumé-{i}.md"),
                    _ => format!("doc-{i:04}.txt"),
                };
                (format!("docs/{folder}/{name}"), text(&mut rng, size))
            }
            3 => {
                let day = i % 28 + 1;
                let size = rng.range(1024, 64 * 1024) as usize;
                (
                    format!("logs/app/2024-06-{day:02}/app-{i:04}.log"),
                    log_lines(&mut rng, day, size),
                )
            }
            _ => {
                let size = rng.range(100, 8 * 1024) as usize;
                (
                    format!("data/exports/table-{i:04}.csv"),
                    text(&mut rng, size),
                )
            }
        };
        objects.insert(key, data);
        i += 1;
    }
    objects
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_is_deterministic_and_shaped() {
        let a = sample_objects(300);
        let b = sample_objects(300);
        assert_eq!(a, b);
        assert_eq!(a.len(), 300);
        assert!(a.values().any(|v| v.is_empty()));
        assert!(a.values().any(|v| v.len() as u64 > 2 * PART_SIZE));
        for prefix in ["photos/2024/", "docs/", "logs/app/"] {
            assert!(a.keys().any(|k| k.starts_with(prefix)), "{prefix}");
        }
        assert!(a
            .keys()
            .all(|k| !k.starts_with('/') && !k.ends_with('/') && !k.contains("//")));
    }

    #[test]
    fn tokens_have_the_requested_shape() {
        let t = random_token(20, b"AB");
        assert_eq!(t.len(), 20);
        assert!(t.bytes().all(|b| b == b'A' || b == b'B'));
    }
}
