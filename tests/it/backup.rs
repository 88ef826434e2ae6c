//! End-to-end backups: the real component, run by the host, against a real S3 server
//! (s3s-fs, SigV4 enforced) on 127.0.0.1. Archives are read back from the server's
//! folder with Python's `zipfile`, an independent reader, and compared byte for byte.

use std::collections::BTreeMap;

use crate::common::{
    backup_env, read_zip_with_python, run_backup, set, sha256_hex, start_s3_with, tool, Fault,
    MIN_PART_SIZE,
};

/// Deterministic bytes: text-like (compressible) or noise (incompressible).
fn content(seed: u64, len: usize, text: bool) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    const WORDS: [&str; 8] = [
        "backup ", "spaces ", "bucket ", "object ", "zip ", "part ", "stream ", "\n",
    ];
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if text {
            out.extend_from_slice(WORDS[(x % 8) as usize].as_bytes());
        } else {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

/// More than one listing page (1,000 keys), nested prefixes, an empty object, one object
/// larger than two parts, and keys that need URI encoding.
fn seed_source(s3: &crate::common::TestS3, bucket: &str) -> BTreeMap<String, Vec<u8>> {
    let mut objects = BTreeMap::new();
    for i in 0..1_150u64 {
        let key = match i % 4 {
            0 => format!("photos/{}/{:02}/img-{i:05}.raw", 2020 + i % 5, i % 12 + 1),
            1 => format!("docs/team-{}/notes-{i:05}.txt", i % 7),
            2 => format!("logs/app/{}/run-{i:05}.log", i % 3),
            _ => format!("top-{i:05}.dat"),
        };
        let len = (i * 7919 % 20_000) as usize;
        objects.insert(key, content(i, len, i % 2 == 1));
    }
    objects.insert("empty/zero-bytes.txt".into(), Vec::new());
    objects.insert(
        "big/archive-part.bin".into(),
        content(7, 2 * MIN_PART_SIZE as usize + 1_234_567, false),
    );
    objects.insert("big/compressible.log".into(), content(8, 3_000_000, true));
    for key in [
        "special/with space.txt",
        "special/plus+sign.txt",
        "special/percent%20literal.txt",
        "special/hash#and?query&x=y.txt",
        "special/ünïcödé-ファイル.txt",
        "special/emoji-😀.txt",
        "special/semi;colon,comma(paren)'quote'.txt",
        "special/tilde~star*.txt",
    ] {
        objects.insert(key.into(), key.as_bytes().repeat(3));
    }
    s3.create_bucket(bucket).unwrap();
    for (key, data) in &objects {
        s3.put_object(bucket, key, data).unwrap();
    }
    objects
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backs_up_every_object_byte_for_byte() {
    let s3 = crate::common::start_s3();
    let objects = seed_source(&s3, "source");
    s3.create_bucket("dest").unwrap();

    let env = backup_env(&s3, "source", "dest");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "Backup completed successfully");
    assert_eq!(body["sourceBucket"], "source");
    assert_eq!(body["destinationBucket"], "dest");
    assert_eq!(body["filesBackedUp"], objects.len() as u64);
    assert!(body["durationSeconds"].as_f64().is_some());
    let name = body["archiveName"].as_str().unwrap();
    let stamp = name
        .strip_prefix("backups/backup-source-")
        .and_then(|s| s.strip_suffix(".zip"))
        .unwrap_or_else(|| panic!("archive name {name}"));
    // 2025-12-19T10-30-00-000Z
    assert_eq!(stamp.len(), 24, "{stamp}");
    assert!(
        stamp.ends_with('Z') && !stamp.contains(':') && !stamp.contains('.'),
        "{stamp}"
    );

    // ListObjectsV2 was followed across pages.
    let lists = s3
        .requests()
        .iter()
        .filter(|r| r.operation == "ListObjectsV2")
        .count();
    assert!(lists >= 2, "{lists} listing requests");

    let path = crate::common::archive_path(&s3, "dest", &body);
    let archive_size = std::fs::metadata(&path).unwrap().len();
    assert_eq!(body["archiveSize"], archive_size);
    assert!(body["parts"].as_u64().unwrap() >= 3, "{body}");
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
    assert_eq!(s3.leftover_part_files().unwrap(), 0);

    let mut entries = read_zip_with_python(&path);
    let manifest_entry = entries.pop().unwrap();
    assert_eq!(manifest_entry.name, crate::common::MANIFEST);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let keys: Vec<&str> = objects.keys().map(String::as_str).collect();
    assert_eq!(
        names, keys,
        "entries in listing order, named exactly as the keys, then the manifest"
    );
    let manifest = crate::common::read_manifest_with_python(&path);
    assert_eq!(manifest.len(), objects.len());
    for (line, e) in manifest.iter().zip(&entries) {
        assert_eq!(line["key"], e.name);
        assert_eq!(line["entry"], e.name);
        assert_eq!(line["size"], e.size);
        assert_eq!(line["crc32"], format!("{:08x}", e.crc32));
        assert!(
            line["lastModified"].as_str().unwrap().ends_with('Z'),
            "{line}"
        );
    }
    for e in &entries {
        let data = &objects[&e.name];
        assert_eq!(e.size, data.len() as u64, "{}", e.name);
        assert_eq!(e.sha256, sha256_hex(data), "{}", e.name);
        assert!(!e.is_dir);
        if !e.name.is_ascii() {
            assert!(e.utf8_flag, "{} lacks the UTF-8 flag", e.name);
        }
    }
    let by_name = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
    assert_eq!(
        by_name("empty/zero-bytes.txt").method,
        0,
        "empty files are stored"
    );
    // Noise is stored, as deflate stored blocks: 5 bytes per 65,535.
    let noise = by_name("big/archive-part.bin");
    assert_eq!(noise.method, 8);
    assert_eq!(
        noise.compressed_size,
        noise.size + 5 * noise.size.div_ceil(65_535)
    );
    let text = by_name("big/compressible.log");
    assert_eq!(text.method, 8, "text is deflated");
    assert!(text.compressed_size * 2 < text.size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_archive_is_one_part() {
    let s3 = crate::common::start_s3();
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.put_object("source", "a.txt", b"alpha").unwrap();
    s3.put_object("source", "folder/b.txt", b"beta").unwrap();

    let mut env = backup_env(&s3, "source", "dest");
    set(&mut env, "COMPRESSION", "deflate");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["parts"], 1);
    let entries = read_zip_with_python(&crate::common::archive_path(&s3, "dest", &body));
    assert_eq!(entries.len(), 3, "two objects and the manifest");
    let found: BTreeMap<_, _> = entries.iter().map(|e| (e.name.as_str(), e)).collect();
    assert_eq!(found["a.txt"].sha256, sha256_hex(b"alpha"));
    assert_eq!(found["a.txt"].method, 8);
    assert_eq!(found["folder/b.txt"].sha256, sha256_hex(b"beta"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_bucket_gives_an_empty_archive() {
    let s3 = crate::common::start_s3();
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    let (status, body) = run_backup(&backup_env(&s3, "source", "dest")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["filesBackedUp"], 0);
    let entries = read_zip_with_python(&crate::common::archive_path(&s3, "dest", &body));
    assert_eq!(entries.len(), 1, "only the (empty) manifest");
    assert_eq!(entries[0].name, crate::common::MANIFEST);
    assert_eq!(entries[0].size, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_bucket_leaves_earlier_archives_out() {
    let s3 = crate::common::start_s3();
    s3.create_bucket("both").unwrap();
    s3.put_object("both", "data/x.txt", b"x").unwrap();
    let env = backup_env(&s3, "both", "both");
    let (status, first) = run_backup(&env).await;
    assert_eq!(status, 200, "{first}");
    // Archive names have millisecond stamps: make sure the second differs.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (status, second) = run_backup(&env).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["filesBackedUp"], 1, "{second}");
    assert_eq!(second["excludedArchives"], 1, "{second}");
    let entries = read_zip_with_python(&crate::common::archive_path(&s3, "both", &second));
    let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["data/x.txt", crate::common::MANIFEST]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_fails_clearly_and_leaves_no_upload() {
    let s3 = crate::common::start_s3();
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.put_object("source", "a.txt", b"alpha").unwrap();
    let mut env = backup_env(&s3, "source", "dest");
    let wrong = "wrong-secret-value-0123456789";
    set(&mut env, "SPACES_SECRET", wrong);
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "Backup failed");
    assert_eq!(body["code"], "AccessDenied");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("access denied") && message.contains("'source'"),
        "{message}"
    );
    assert!(
        message.contains("SPACES_KEY") && message.contains("SPACES_SECRET"),
        "{message}"
    );
    let text = body.to_string();
    assert!(
        !text.contains(wrong) && !text.contains(s3.access_key()),
        "{text}"
    );
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
    assert!(s3.list_objects("dest").unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_source_bucket_is_named() {
    let s3 = crate::common::start_s3();
    s3.create_bucket("dest").unwrap();
    let (status, body) = run_backup(&backup_env(&s3, "no-such-bucket", "dest")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "NoSuchBucket");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("'no-such-bucket'") && message.contains("SOURCE_BUCKET"),
        "{message}"
    );
    assert!(s3.list_objects("dest").unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_destination_bucket_is_named() {
    let s3 = crate::common::start_s3();
    s3.create_bucket("source").unwrap();
    s3.put_object("source", "a.txt", b"alpha").unwrap();
    let (status, body) = run_backup(&backup_env(&s3, "source", "no-dest-here")).await;
    assert_eq!(status, 404, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("destination bucket 'no-dest-here'"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_is_400_before_any_request() {
    let s3 = crate::common::start_s3();
    let mut env = backup_env(&s3, "source", "dest");
    set(&mut env, "PART_SIZE", "1MiB");
    set(&mut env, "DEST_ENDPOINT", "not-a-url");
    crate::common::unset(&mut env, "SOURCE_BUCKET");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "InvalidConfiguration");
    let message = body["message"].as_str().unwrap();
    for name in ["SOURCE_BUCKET", "PART_SIZE", "DEST_ENDPOINT"] {
        assert!(message.contains(name), "{name} not named in: {message}");
    }
    assert!(!message.contains(s3.secret_key()));
    assert!(
        s3.requests().is_empty(),
        "requests were sent: {:?}",
        s3.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_after_create_aborts_the_upload() {
    // Every UploadPart fails for good: the run must abort its upload and say so.
    let s3 = start_s3_with(|b| {
        b.fault(|req| match req.operation() {
            "UploadPart" => Fault::Status {
                status: 500,
                code: "InternalError".into(),
            },
            _ => Fault::Pass,
        })
    });
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.put_object("source", "a.bin", &content(1, 6 * 1024 * 1024, false))
        .unwrap();
    let mut env = backup_env(&s3, "source", "dest");
    set(&mut env, "MAX_RETRIES", "2");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 502, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("aborted"), "{message}");
    assert!(!message.to_lowercase().contains("backtrace"), "{message}");
    let requests = s3.requests();
    let ops: Vec<_> = requests.iter().map(|r| r.operation).collect();
    let queries: Vec<_> = requests.iter().map(|r| r.query.as_str()).collect();
    let mut per_part = BTreeMap::new();
    for r in requests.iter().filter(|r| r.operation == "UploadPart") {
        let part = r.query.split('&').next().unwrap_or_default().to_string();
        *per_part.entry(part).or_insert(0) += 1;
    }
    // The part that gave up was tried once and retried twice; none was tried more.
    assert_eq!(per_part.values().max(), Some(&3), "{queries:?}");
    // In-flight parts settle before the abort, so none lands after it; only the run's
    // claim on the upload is removed after.
    let abort = ops
        .iter()
        .position(|o| *o == "AbortMultipartUpload")
        .unwrap();
    assert!(!ops[abort..].contains(&"UploadPart"), "{ops:?}");
    let after: Vec<_> = requests[abort + 1..]
        .iter()
        .map(|r| (r.operation, r.path.contains("/.spaces-backup/source/runs/")))
        .collect();
    assert_eq!(after, [("DeleteObject", true)], "{ops:?}");
    assert_eq!(body["code"], "InternalError");
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
    assert_eq!(s3.leftover_part_files().unwrap(), 0);
    assert!(s3.list_objects("dest").unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried_and_cut_bodies_resumed() {
    // One 503 SlowDown on the listing, a reset on a GET, a body cut mid-way, and a
    // 200-with-error on Complete: the archive must still match the source exactly.
    use std::sync::atomic::{AtomicU32, Ordering};
    static GETS: AtomicU32 = AtomicU32::new(0);
    static COMPLETES: AtomicU32 = AtomicU32::new(0);
    static LISTS: AtomicU32 = AtomicU32::new(0);
    let s3 = start_s3_with(|b| {
        b.fault(|req| match req.operation() {
            "ListObjectsV2" if LISTS.fetch_add(1, Ordering::SeqCst) == 0 => Fault::Status {
                status: 503,
                code: "SlowDown".into(),
            },
            "GetObject" => match GETS.fetch_add(1, Ordering::SeqCst) {
                2 => Fault::Disconnect,
                4 => Fault::CutOff(100_000),
                _ => Fault::Pass,
            },
            "CompleteMultipartUpload" if COMPLETES.fetch_add(1, Ordering::SeqCst) == 0 => {
                Fault::Status {
                    status: 200,
                    code: "InternalError".into(),
                }
            }
            _ => Fault::Pass,
        })
    });
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    let mut objects = BTreeMap::new();
    for i in 0..8u64 {
        let data = content(i, 300_000 + i as usize, i % 2 == 0);
        s3.put_object("source", &format!("obj-{i}"), &data).unwrap();
        objects.insert(format!("obj-{i}"), data);
    }
    let (status, body) = run_backup(&backup_env(&s3, "source", "dest")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["retries"].as_u64().unwrap() >= 3, "{body}");
    let ranged = s3.requests().iter().filter(|r| r.range.is_some()).count();
    assert!(ranged >= 1, "the cut-off GET was not resumed with Range");
    let mut entries = read_zip_with_python(&crate::common::archive_path(&s3, "dest", &body));
    assert_eq!(entries.pop().unwrap().name, crate::common::MANIFEST);
    assert_eq!(entries.len(), objects.len());
    for e in entries {
        assert_eq!(e.sha256, sha256_hex(&objects[&e.name]), "{}", e.name);
    }
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_whose_answer_is_lost_still_succeeds() {
    // The server completes the upload but the answer never arrives whole: the archive is
    // looked for, and found in place with every byte; nothing is completed twice.
    use std::sync::atomic::{AtomicU32, Ordering};
    static COMPLETES: AtomicU32 = AtomicU32::new(0);
    let s3 = start_s3_with(|b| {
        b.fault(|req| match req.operation() {
            "CompleteMultipartUpload" if COMPLETES.fetch_add(1, Ordering::SeqCst) == 0 => {
                Fault::CutOff(0)
            }
            _ => Fault::Pass,
        })
    });
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    let data = content(3, 700_000, true);
    s3.put_object("source", "doc.txt", &data).unwrap();
    let (status, body) = run_backup(&backup_env(&s3, "source", "dest")).await;
    assert_eq!(status, 200, "{body}");
    let ops: Vec<&str> = s3.requests().iter().map(|r| r.operation).collect();
    let complete = ops
        .iter()
        .position(|o| *o == "CompleteMultipartUpload")
        .unwrap();
    assert!(ops[complete + 1..].contains(&"HeadObject"), "{ops:?}");
    assert!(
        !ops[complete + 1..].contains(&"CompleteMultipartUpload"),
        "{ops:?}"
    );
    let entries = read_zip_with_python(&crate::common::archive_path(&s3, "dest", &body));
    assert_eq!(entries.len(), 2, "the object and the manifest");
    assert_eq!(entries[0].sha256, sha256_hex(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_fails_in_bounded_time() {
    let s3 = crate::common::start_s3();
    let mut env = backup_env(&s3, "source", "dest");
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    set(
        &mut env,
        "SOURCE_ENDPOINT",
        &format!("http://127.0.0.1:{port}"),
    );
    set(&mut env, "MAX_RETRIES", "1");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["code"], "NetworkError");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("127.0.0.1:{port}")) && message.contains("SOURCE_ENDPOINT"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_opens_in_info_zip_7zip_libarchive_and_java() {
    let s3 = crate::common::start_s3();
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    let mut objects = BTreeMap::new();
    objects.insert("text/a.txt".to_string(), content(1, 200_000, true));
    objects.insert("noise/b.bin".to_string(), content(2, 300_000, false));
    objects.insert("empty.txt".to_string(), Vec::new());
    objects.insert("ünï/ファイル.txt".to_string(), b"utf-8 name".to_vec());
    objects.insert("photo.jpg".to_string(), content(3, 70_000, true));
    for (k, v) in &objects {
        s3.put_object("source", k, v).unwrap();
    }
    let (status, body) = run_backup(&backup_env(&s3, "source", "dest")).await;
    assert_eq!(status, 200, "{body}");
    let path = crate::common::archive_path(&s3, "dest", &body);
    let path = path.to_str().unwrap();

    let unzip = tool("unzip", &["-t", path]);
    assert!(unzip.contains("No errors detected"), "{unzip}");
    let sevenzip = tool("7z", &["t", path]);
    assert!(sevenzip.contains("Everything is Ok"), "{sevenzip}");
    let listing = tool("bsdtar", &["-tf", path]);
    let mut names: Vec<&str> = listing.lines().collect();
    names.sort_unstable();
    let mut keys: Vec<&str> = objects.keys().map(String::as_str).collect();
    keys.push(crate::common::MANIFEST);
    keys.sort_unstable();
    assert_eq!(names, keys);
    // libarchive reading from a pipe must stream, front to back, checking every CRC.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("bsdtar -xf - -C \"$1\" < \"$2\"")
        .arg("sh")
        .arg(dir.path())
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (k, v) in &objects {
        assert_eq!(&std::fs::read(dir.path().join(k)).unwrap(), v, "{k}");
    }
    // Java's ZipInputStream: the strictest streaming reader.
    let java = crate::common::read_zip_with_java_stream(std::path::Path::new(path));
    let mut java_names: Vec<&str> = java.iter().map(|(n, _, _)| n.as_str()).collect();
    java_names.sort_unstable();
    assert_eq!(java_names, keys);
    for (name, size, crc) in &java {
        if let Some(v) = objects.get(name) {
            assert_eq!(*size, v.len() as u64, "{name}");
            assert_eq!(*crc, crc32(v), "{name}");
        }
    }
}

fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_rewritten_after_listing_is_archived_as_it_is_now() {
    use std::sync::{Mutex, OnceLock};
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    static DONE: Mutex<bool> = Mutex::new(false);
    let s3 = start_s3_with(|b| {
        b.fault(|req| {
            if req.operation() == "GetObject" && req.path.ends_with("/grows.txt") {
                let mut done = DONE.lock().unwrap();
                if !*done {
                    // Rewritten after the listing, before its GET is served.
                    std::fs::write(PATH.get().unwrap(), b"version two, a little longer").unwrap();
                    *done = true;
                }
            }
            Fault::Pass
        })
    });
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.put_object("source", "grows.txt", b"version one")
        .unwrap();
    s3.put_object("source", "stays.txt", b"unchanged").unwrap();
    PATH.set(s3.object_path("source", "grows.txt").unwrap())
        .unwrap();

    let (status, body) = run_backup(&backup_env(&s3, "source", "dest")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], serde_json::json!(["grows.txt"]));
    let path = crate::common::archive_path(&s3, "dest", &body);
    let entries = read_zip_with_python(&path);
    assert_eq!(entries[0].name, "grows.txt");
    assert_eq!(
        entries[0].sha256,
        sha256_hex(b"version two, a little longer")
    );
    let manifest = crate::common::read_manifest_with_python(&path);
    assert_eq!(manifest[0]["size"], 28);
    // The ETag of the version archived, not the listed one.
    use md5::Digest as _;
    let md5: String = md5::Md5::digest(b"version two, a little longer")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(manifest[0]["etag"].as_str().unwrap().trim_matches('"'), md5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_changed_mid_read_fails_and_aborts() {
    use std::sync::atomic::{AtomicU32, Ordering};
    static GETS: AtomicU32 = AtomicU32::new(0);
    let s3 = start_s3_with(|b| {
        b.fault(|req| {
            if req.operation() != "GetObject" || !req.path.ends_with("/big.bin") {
                return Fault::Pass;
            }
            match GETS.fetch_add(1, Ordering::SeqCst) {
                // Cut off mid-body; the resume, pinned to the ETag with If-Match, then finds
                // a new version, as S3 answers it.
                0 => Fault::CutOff(300_000),
                _ => {
                    assert!(
                        req.headers.contains_key("if-match"),
                        "resume without If-Match"
                    );
                    Fault::Status {
                        status: 412,
                        code: "PreconditionFailed".into(),
                    }
                }
            }
        })
    });
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.put_object("source", "big.bin", &content(9, 3_000_000, false))
        .unwrap();
    let (status, body) = run_backup(&backup_env(&s3, "source", "dest")).await;
    assert_eq!(status, 502, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("'big.bin'"), "{message}");
    assert!(
        message.contains("changed or was deleted while it was being read"),
        "{message}"
    );
    assert!(message.contains("aborted"), "{message}");
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
    assert!(s3.list_objects("dest").unwrap().is_empty());
}

/// Flips one byte of the named objects' GETs: the first GET only, or every one.
fn corrupting(key: &'static str, at: u64, every: bool) -> crate::common::TestS3 {
    use std::sync::atomic::{AtomicU32, Ordering};
    let seen = AtomicU32::new(0);
    start_s3_with(move |b| {
        b.fault(move |req| {
            if req.operation() == "GetObject" && req.path.ends_with(&format!("/{key}")) {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                if every || n == 0 {
                    return Fault::Corrupt(at);
                }
            }
            Fault::Pass
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_small_object_is_read_again() {
    let s3 = corrupting("small.txt", 10, false);
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    let data = content(4, 20_000, true);
    s3.put_object("source", "small.txt", &data).unwrap();
    let (status, body) = run_backup(&backup_env(&s3, "source", "dest")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["retries"], 1, "{body}");
    let entries = read_zip_with_python(&crate::common::archive_path(&s3, "dest", &body));
    assert_eq!(entries[0].sha256, sha256_hex(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_corrupted_every_time_fails_the_backup() {
    let s3 = corrupting("small.txt", 10, true);
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.put_object("source", "small.txt", &content(4, 20_000, true))
        .unwrap();
    let (status, body) = run_backup(&backup_env(&s3, "source", "dest")).await;
    assert_eq!(status, 502, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("'small.txt'") && message.contains("MD5"),
        "{message}"
    );
    assert!(message.contains("aborted"), "{message}");
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
    assert!(s3.list_objects("dest").unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_found_after_bytes_were_archived_fails() {
    // 6 MB streams through the archive before its end arrives: it cannot be read again.
    let s3 = corrupting("big.bin", 5_900_000, false);
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.put_object("source", "big.bin", &content(5, 6_000_000, false))
        .unwrap();
    let mut env = backup_env(&s3, "source", "dest");
    set(&mut env, "CONCURRENCY", "1");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 502, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("'big.bin'") && message.contains("MD5"),
        "{message}"
    );
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
}

/// Spaces rejects flexible checksums and aws-chunked bodies: no request of a backup (of
/// several parts) or of its restore carries them; every payload is signed by its SHA-256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_checksum_headers_and_no_aws_chunked_bodies() {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<(String, http::HeaderMap)>>> = Arc::default();
    let log = seen.clone();
    let s3 = crate::common::start_s3_with(move |b| {
        b.in_memory().fault(move |req| {
            log.lock()
                .unwrap()
                .push((req.operation().to_string(), req.headers.clone()));
            Fault::Pass
        })
    });
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.create_bucket("restored").unwrap();
    s3.put_object(
        "source",
        "big.bin",
        &content(3, 2 * MIN_PART_SIZE as usize + 77, false),
    )
    .unwrap();
    s3.put_object("source", "small.txt", b"small").unwrap();
    let env = backup_env(&s3, "source", "dest");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["parts"].as_u64().unwrap() >= 3, "{body}");
    let key = body["archiveName"].as_str().unwrap();
    let (status, body) =
        crate::common::request(&env, "POST", &format!("/restore?archive={key}&to=restored")).await;
    assert_eq!(status, 200, "{body}");

    let seen = seen.lock().unwrap();
    let ops: std::collections::BTreeSet<&str> = seen.iter().map(|(op, _)| op.as_str()).collect();
    for op in [
        "UploadPart",
        "CompleteMultipartUpload",
        "PutObject",
        "GetObject",
    ] {
        assert!(ops.contains(op), "{op} not seen: {ops:?}");
    }
    for (op, headers) in seen.iter() {
        for (name, value) in headers {
            let name = name.as_str();
            assert!(
                !name.starts_with("x-amz-checksum")
                    && name != "x-amz-sdk-checksum-algorithm"
                    && name != "x-amz-trailer"
                    && name != "x-amz-decoded-content-length",
                "{op} sent {name}"
            );
            if name == "content-encoding" {
                assert!(
                    !value.to_str().unwrap().contains("aws-chunked"),
                    "{op}: {value:?}"
                );
            }
        }
        let sha = headers["x-amz-content-sha256"].to_str().unwrap();
        assert!(
            sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
            "{op} signed its payload as {sha}"
        );
    }
}

/// A destination that wants equal parts (Cloudflare R2; the store enforces the rule):
/// with EQUAL_PARTS and no PART_SIZE, the parts are sized from the listed total and never
/// grow, and the archive completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_parts_where_the_service_needs_them() {
    let s3 = crate::common::start_s3_with(|b| b.equal_parts());
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    for i in 0..3u64 {
        s3.put_object(
            "source",
            &format!("noise-{i}.bin"),
            &content(i, 6_000_000, false),
        )
        .unwrap();
    }
    let mut env = backup_env(&s3, "source", "dest");
    crate::common::unset(&mut env, "PART_SIZE");
    set(&mut env, "EQUAL_PARTS", "true");
    set(&mut env, "COMPRESSION", "store");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["partSize"], 5 * 1024 * 1024, "{body}");
    // 18 MB stored: three parts of 5 MiB and a shorter last one.
    assert_eq!(body["parts"], 4, "{body}");
    let stored = s3
        .read_object("dest", body["archiveName"].as_str().unwrap())
        .unwrap();
    assert_eq!(stored.len() as u64, body["archiveSize"].as_u64().unwrap());
}

/// The `bytes=a-b` a GET asked for, if any.
/// An answer's delay that makes the source look far away (over the 3 ms of a near one).
const FAR: std::time::Duration = std::time::Duration::from_millis(5);

fn range_of(req: &crate::common::RequestInfo) -> Option<String> {
    req.headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

const MIB: usize = 1 << 20;

/// A big object goes out as several `bytes=a-b` GETs in flight (1 MiB each with
/// CONCURRENCY 16), later ones pinned to the ETag: one range cut mid-body is resumed
/// from where it stopped, one answered 503 is retried, and the entry is still exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_object_in_ranges_survives_a_cut_range_and_a_503() {
    use std::sync::Mutex;
    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let s3 = start_s3_with(|b| {
        // Far enough that the run keeps cutting big objects into ranges.
        b.latency(FAR).fault(|req| {
            if req.operation() != "GetObject" || !req.path.ends_with("/big.bin") {
                return Fault::Pass;
            }
            let range = range_of(req).unwrap_or_default();
            let mut seen = SEEN.lock().unwrap();
            let first_time = !seen.contains(&range);
            seen.push(range.clone());
            if range != format!("bytes=0-{}", MIB - 1) {
                assert!(
                    req.headers.contains_key("if-match"),
                    "{range} without If-Match"
                );
            }
            match range.as_str() {
                r if first_time && r == format!("bytes={}-{}", MIB, 2 * MIB - 1) => {
                    Fault::CutOff(300_000)
                }
                r if first_time && r == format!("bytes={}-{}", 3 * MIB, 4 * MIB - 1) => {
                    Fault::Status {
                        status: 503,
                        code: "SlowDown".into(),
                    }
                }
                _ => Fault::Pass,
            }
        })
    });
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    let big = content(21, 5 * MIB + 12_345, false);
    let text = content(22, 3 * MIB, true);
    s3.put_object("source", "big.bin", &big).unwrap();
    s3.put_object("source", "text.txt", &text).unwrap();
    s3.put_object("source", "z-small.txt", b"after the big ones")
        .unwrap();

    // 16 MiB of prefetch over 16 GETs: ranges of 1 MiB.
    let mut env = backup_env(&s3, "source", "dest");
    set(&mut env, "CONCURRENCY", "16");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["retries"], 2, "{body}");
    let seen = SEEN.lock().unwrap().clone();
    // Six ranges, the cut one resumed from byte 1 MiB + 300,000, the 503 one asked again.
    let resumed = format!("bytes={}-{}", MIB + 300_000, 2 * MIB - 1);
    assert!(seen.contains(&resumed), "{seen:?}");
    assert!(
        seen.contains(&format!("bytes={}-{}", 5 * MIB, 5 * MIB + 12_344)),
        "{seen:?}"
    );
    assert_eq!(seen.len(), 6 + 2, "{seen:?}");

    let path = crate::common::archive_path(&s3, "dest", &body);
    let entries = read_zip_with_python(&path);
    let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names[..3], ["big.bin", "text.txt", "z-small.txt"]);
    assert_eq!(entries[0].sha256, sha256_hex(&big));
    assert_eq!(entries[1].sha256, sha256_hex(&text));
    assert_eq!(entries[2].sha256, sha256_hex(b"after the big ones"));
    // The manifest keeps what the first range learnt: size and the object's ETag.
    let manifest = crate::common::read_manifest_with_python(&path);
    assert_eq!(manifest[0]["size"], big.len());
    use md5::Digest as _;
    let md5: String = md5::Md5::digest(&big)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(manifest[0]["etag"].as_str().unwrap().trim_matches('"'), md5);
}

/// The object is rewritten (same size) after its first ranges were read: the later ranges
/// no longer match the ETag, and the backup fails cleanly rather than mix two versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_rewritten_between_ranges_fails_and_aborts() {
    use std::sync::{Mutex, OnceLock};
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    static DONE: Mutex<bool> = Mutex::new(false);
    let s3 = start_s3_with(|b| {
        // Far enough that the run keeps cutting big objects into ranges.
        b.latency(FAR).fault(|req| {
            let range = range_of(req).unwrap_or_default();
            if req.operation() == "GetObject" && range.starts_with(&format!("bytes={}-", 2 * MIB)) {
                let mut done = DONE.lock().unwrap();
                if !*done {
                    std::fs::write(PATH.get().unwrap(), content(32, 4 * MIB, false)).unwrap();
                    *done = true;
                }
            }
            Fault::Pass
        })
    });
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.put_object("source", "big.bin", &content(31, 4 * MIB, false))
        .unwrap();
    PATH.set(s3.object_path("source", "big.bin").unwrap())
        .unwrap();
    // 16 MiB of prefetch over 16 GETs: ranges of 1 MiB.
    let mut env = backup_env(&s3, "source", "dest");
    set(&mut env, "CONCURRENCY", "16");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 502, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("'big.bin'"), "{message}");
    assert!(
        message.contains("changed or was deleted while it was being read"),
        "{message}"
    );
    assert!(message.contains("aborted"), "{message}");
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
    assert!(s3.list_objects("dest").unwrap().is_empty());
}

/// A byte flipped in a later range: the MD5, taken over the ranges in order, catches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_in_one_range_fails_the_backup() {
    let s3 = start_s3_with(|b| {
        // Far enough that the run keeps cutting big objects into ranges.
        b.latency(FAR).fault(|req| {
            let range = range_of(req).unwrap_or_default();
            if req.operation() == "GetObject" && range.starts_with(&format!("bytes={}-", 2 * MIB)) {
                return Fault::Corrupt(1000);
            }
            Fault::Pass
        })
    });
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.put_object("source", "big.bin", &content(33, 4 * MIB, false))
        .unwrap();
    // 16 MiB of prefetch over 16 GETs: ranges of 1 MiB.
    let mut env = backup_env(&s3, "source", "dest");
    set(&mut env, "CONCURRENCY", "16");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 502, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("'big.bin'") && message.contains("MD5"),
        "{message}"
    );
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
}

/// Next to the server the run finds its source near (answers within 3 ms): once the small
/// objects before it have shown that, a big object comes in one GET, not in 8 MiB ranges
/// (on such a link they only cost CPU), and every byte still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_near_source_gets_big_objects_whole() {
    let s3 = start_s3_with(|b| b);
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    let mut objects = BTreeMap::new();
    for i in 0..200u64 {
        objects.insert(format!("a/{i:03}"), content(100 + i, 2_000, i % 2 == 0));
    }
    objects.insert("z-big.bin".to_string(), content(99, 20 * MIB + 7, false));
    for (k, v) in &objects {
        s3.put_object("source", k, v).unwrap();
    }
    // Two GETs at a time: each answer's time is about the round trip, not a wait behind
    // many others on a busy machine. A far run would cut the big object into ranges of
    // 16 MiB / 2 (a set CONCURRENCY is kept on a near link).
    let mut env = backup_env(&s3, "source", "dest");
    set(&mut env, "CONCURRENCY", "2");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    let big_gets: Vec<Option<String>> = s3
        .requests()
        .into_iter()
        .filter(|r| r.operation == "GetObject" && r.path.ends_with("/z-big.bin"))
        .map(|r| r.range)
        .collect();
    assert_eq!(big_gets, [None], "one GET for the whole object");
    let data = s3
        .read_object("dest", body["archiveName"].as_str().unwrap())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive.zip");
    std::fs::write(&path, &data).unwrap();
    let entries = read_zip_with_python(&path);
    assert_eq!(entries.len(), objects.len() + 1, "and the manifest");
    for e in entries.iter().filter(|e| e.name != crate::common::MANIFEST) {
        let want = &objects[&e.name];
        assert_eq!((e.size, &e.sha256), (want.len() as u64, &sha256_hex(want)));
    }
}
