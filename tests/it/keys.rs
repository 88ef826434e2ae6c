//! Every legal S3 key survives exactly: the backup runs against the in-memory S3 server
//! (s3s's real protocol layer and SigV4 over storage that keeps any key as given), and
//! the archive is read back by Python, Info-ZIP, 7-Zip, libarchive and Java.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use crate::common::{backup_env, read_zip_with_python, run_backup, sha256_hex, tool};

/// One key per category the issue names, with content that tells them apart.
fn legal_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "plain.txt",
        "with space.txt",
        "plus+sign.txt",
        "percent%20literal.txt",
        "hash#frag.txt",
        "question?mark.txt",
        "amp&and=equals.txt",
        "caf\u{e9}-nfc.txt",
        "cafe\u{301}-nfd.txt",
        "emoji-\u{1F600}/\u{1F4E6}.bin",
        "back\\slash\\name.txt",
        "double//slash.txt",
        "/leading-slash.txt",
        "./dot/segment.txt",
        "dot/./inside.txt",
        "../escape.txt",
        "a/../b.txt",
        "c:/drive-letter.txt",
        "word:prefix.txt",
        "folder/",
        "folder/inside.txt",
        "empty-folder/",
        "/",
        "../",
        ".spaces-backup/manifest.jsonl",
        "plain.txt/",
        "trailing-dot.",
        "tab\there.txt",
    ]
    .iter()
    .map(|k| k.to_string())
    .collect();
    // The longest key S3 allows: 1,024 bytes.
    let mut long = String::from("long/");
    while long.len() < 1_020 {
        long.push_str("segment/");
    }
    long.truncate(1_020);
    long.push_str(".bin");
    assert_eq!(long.len(), 1_024);
    keys.push(long);
    keys
}

fn data_for(key: &str) -> Vec<u8> {
    if key.ends_with('/') && key != "plain.txt/" {
        Vec::new()
    } else {
        format!("content of {key:?}\n").into_bytes()
    }
}

fn is_safe(name: &str) -> bool {
    let body = name.strip_suffix('/').unwrap_or(name);
    !body.is_empty()
        && !name.starts_with('/')
        && !name.contains('\\')
        && !name.chars().any(char::is_control)
        && body
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
        && !body.split('/').next().unwrap().ends_with(':')
}

/// The archive object, copied to a file for the readers.
fn archive_file(s3: &crate::common::TestS3, dest: &str, body: &serde_json::Value) -> PathBuf {
    let key = body["archiveName"].as_str().unwrap();
    let path = s3.dir.path().join("archive.zip");
    std::fs::write(&path, s3.read_object(dest, key).unwrap()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_legal_key_survives_exactly() {
    let s3 = crate::common::start_s3_with(|b| b.in_memory());
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    let keys = legal_keys();
    for key in &keys {
        s3.put_object_with(
            "source",
            key,
            &data_for(key),
            Some("application/x-test"),
            &[("origin", "keys-test")],
        )
        .unwrap();
    }
    assert_eq!(s3.object_keys("source").unwrap().len(), keys.len());

    let (status, body) = run_backup(&backup_env(&s3, "source", "dest")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["filesBackedUp"], keys.len() as u64, "{body}");
    let path = archive_file(&s3, "dest", &body);

    let entries = read_zip_with_python(&path);
    let by_name: BTreeMap<&str, &crate::common::Entry> =
        entries.iter().map(|e| (e.name.as_str(), e)).collect();
    assert_eq!(by_name.len(), entries.len(), "entry names are unique");
    for e in &entries {
        assert!(is_safe(&e.name), "unsafe entry name {:?}", e.name);
    }
    // Names unique even for extraction: no file and folder of the same name.
    let mut seen = HashSet::new();
    for e in &entries {
        assert!(
            seen.insert(e.name.trim_end_matches('/')),
            "{:?} twice",
            e.name
        );
    }

    let manifest = crate::common::read_manifest_with_python(&path);
    assert_eq!(manifest.len(), keys.len());
    let mut mapped = BTreeMap::new();
    for line in &manifest {
        let key = line["key"].as_str().unwrap();
        let entry = line["entry"].as_str().unwrap();
        mapped.insert(key.to_string(), entry.to_string());
        assert_eq!(line["contentType"], "application/x-test", "{line}");
        assert_eq!(line["metadata"]["origin"], "keys-test", "{line}");
        assert_eq!(line["size"], data_for(key).len() as u64, "{line}");
        assert!(line["etag"].as_str().unwrap().len() >= 32, "{line}");
    }
    for key in &keys {
        let entry = &mapped[key];
        if is_safe(key) && key != crate::common::MANIFEST && key != "plain.txt/" {
            assert_eq!(entry, key, "a safe key keeps its name");
        }
        let e = by_name[entry.as_str()];
        if key.ends_with('/') && data_for(key).is_empty() {
            assert!(e.is_dir, "{key:?} is a folder marker");
        } else {
            assert!(!e.is_dir, "{key:?}");
            assert_eq!(e.sha256, sha256_hex(&data_for(key)), "{key:?} as {entry:?}");
        }
    }
    assert_ne!(mapped[crate::common::MANIFEST], crate::common::MANIFEST);
    assert_eq!(entries.last().unwrap().name, crate::common::MANIFEST);
    // NFC and NFD spellings stay two keys, two entries.
    assert_ne!(mapped["caf\u{e9}-nfc.txt"], mapped["cafe\u{301}-nfd.txt"]);

    // Every reader opens it; libarchive extracts it into a folder without escaping it.
    let p = path.to_str().unwrap();
    let unzip = tool("unzip", &["-t", p]);
    assert!(unzip.contains("No errors detected"), "{unzip}");
    let sevenzip = tool("7z", &["t", p]);
    assert!(sevenzip.contains("Everything is Ok"), "{sevenzip}");
    let out = s3.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    tool("bsdtar", &["-xf", p, "-C", out.to_str().unwrap()]);
    for (key, entry) in &mapped {
        // libarchive composes decomposed (NFD) names as it extracts them.
        if entry.chars().any(|c| ('\u{300}'..='\u{36f}').contains(&c)) {
            continue;
        }
        let on_disk = out.join(entry);
        assert!(on_disk.exists(), "{key:?} extracted as {entry:?}");
    }
    let java = crate::common::read_zip_with_java_stream(&path);
    assert_eq!(java.len(), entries.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_bucket_backup_leaves_its_own_archives_out() {
    let s3 = crate::common::start_s3_with(|b| b.in_memory());
    s3.create_bucket("both").unwrap();
    s3.put_object("both", "data/x.txt", b"x").unwrap();
    // Not ours: another source's archive, and a look-alike outside the prefix.
    s3.put_object(
        "both",
        "backups/backup-other-2025-01-01T00-00-00-000Z.zip",
        b"z",
    )
    .unwrap();
    s3.put_object("both", "elsewhere/backup-both-1.zip", b"z")
        .unwrap();
    let env = backup_env(&s3, "both", "both");
    let (status, first) = run_backup(&env).await;
    assert_eq!(status, 200, "{first}");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (status, second) = run_backup(&env).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["excludedArchives"], 1, "{second}");
    assert_eq!(second["filesBackedUp"], 3, "{second}");
    let path = archive_file(&s3, "both", &second);
    let names: Vec<String> = read_zip_with_python(&path)
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(!names
        .iter()
        .any(|n| n == first["archiveName"].as_str().unwrap()));
    assert_eq!(names.len(), 4, "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_deleted_after_listing_is_skipped_and_reported() {
    use spaces_backup_testkit::server::MemStore;
    let store = MemStore::new();
    let hook_store = store.clone();
    let s3 = crate::common::start_s3_with(move |b| {
        b.memory_store(store).fault(move |req| {
            // Deleted after the listing, just before its GET is served.
            if req.operation() == "GetObject" && req.path.ends_with("/gone.txt") {
                let _ = hook_store.delete_object("source", "gone.txt");
            }
            crate::common::Fault::Pass
        })
    });
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.put_object("source", "gone.txt", b"soon deleted")
        .unwrap();
    s3.put_object("source", "kept.txt", b"kept").unwrap();
    let (status, body) = run_backup(&backup_env(&s3, "source", "dest")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["skipped"], serde_json::json!(["gone.txt"]));
    assert_eq!(body["filesBackedUp"], 1);
    let path = archive_file(&s3, "dest", &body);
    let names: Vec<String> = read_zip_with_python(&path)
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["kept.txt", crate::common::MANIFEST]);
    let manifest = crate::common::read_manifest_with_python(&path);
    assert_eq!(manifest[0]["key"], "gone.txt");
    assert_eq!(manifest[0]["skipped"], "deleted after it was listed");
    assert!(manifest[0].get("entry").is_none());
}
