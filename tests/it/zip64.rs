//! ZIP64 at full size: more than 65,535 entries, one entry of 4 GiB + 1 byte and an archive
//! over 4 GiB, read back by Info-ZIP, 7-Zip, libarchive, Python and Java's streaming reader.
//!
//! These move ~9 GB through the local S3 server and take minutes, so they run only with
//! `SPACES_BACKUP_BIG_TESTS=1` (CI sets it: see `.ci/run`).

use std::path::Path;

use crate::common::{
    backup_env, read_zip_with_java_stream, read_zip_with_python, run_backup, set, tool,
};

const BIG: u64 = (4 << 30) + 1;
const MANY: usize = 70_000;

fn big_tests_enabled() -> bool {
    let on = std::env::var("SPACES_BACKUP_BIG_TESTS").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("skipped: set SPACES_BACKUP_BIG_TESTS=1 to run the ZIP64 tests");
    }
    on
}

/// An object of zeros, a sparse file in the server's folder, so 4 GiB cost no disk. The
/// server serves it like any uploaded object.
fn zeros_object(s3: &crate::common::TestS3, bucket: &str, key: &str, size: u64) {
    s3.put_zeros(bucket, key, size).unwrap();
}

fn small_object(s3: &crate::common::TestS3, bucket: &str, i: usize) -> (String, Vec<u8>) {
    let key = format!("many/{:03}/{i:05}.txt", i / 1000);
    // Every third object is empty (stored, no descriptor); the rest carry a line.
    let data = if i.is_multiple_of(3) {
        Vec::new()
    } else {
        format!("object {i}\n").into_bytes()
    };
    let path = s3.object_path(bucket, &key).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &data).unwrap();
    (key, data)
}

fn crc_of_zeros(mut n: u64) -> u32 {
    let block = vec![0u8; 1 << 20];
    let mut h = crc32fast::Hasher::new();
    while n > 0 {
        let take = n.min(block.len() as u64) as usize;
        h.update(&block[..take]);
        n -= take as u64;
    }
    h.finalize()
}

/// Every reader opens the archive and finds `entries` entries (the manifest included).
fn all_readers_agree(path: &Path, entries: usize) {
    let p = path.to_str().unwrap();
    let unzip = tool("unzip", &["-tqq", p]);
    assert!(!unzip.contains("error"), "{unzip}");
    let sevenzip = tool("7z", &["t", p]);
    assert!(sevenzip.contains("Everything is Ok"), "{sevenzip}");
    assert!(
        sevenzip.contains(&format!("Files: {entries}"))
            || sevenzip.contains(&format!("Files: {}", entries - 1)),
        "{sevenzip}"
    );
    let listing = tool("bsdtar", &["-tf", p]);
    assert_eq!(listing.lines().count(), entries, "bsdtar -tf");
    let java = read_zip_with_java_stream(path);
    assert_eq!(java.len(), entries, "java.util.zip.ZipInputStream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seventy_thousand_entries_and_a_4_gib_entry_in_a_4_gib_archive() {
    if !big_tests_enabled() {
        return;
    }
    let s3 = crate::common::start_s3();
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    zeros_object(&s3, "source", "big/zeros.bin", BIG);
    let small: Vec<(String, Vec<u8>)> = (0..MANY).map(|i| small_object(&s3, "source", i)).collect();

    // Stored, so the archive itself passes 4 GiB.
    let mut env = backup_env(&s3, "source", "dest");
    crate::common::unset(&mut env, "PART_SIZE");
    set(&mut env, "COMPRESSION", "store");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["filesBackedUp"], MANY as u64 + 1);
    let path = crate::common::archive_path(&s3, "dest", &body);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > BIG, "archive of {size} bytes");
    assert_eq!(body["archiveSize"], size);
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);

    let entries = read_zip_with_python(&path);
    assert_eq!(entries.len(), MANY + 2);
    let big = &entries[0];
    assert_eq!(big.name, "big/zeros.bin");
    assert_eq!(big.size, BIG);
    assert_eq!(big.crc32, crc_of_zeros(BIG));
    assert!(big.compressed_size > BIG);
    for (e, (key, data)) in entries[1..].iter().zip(&small) {
        assert_eq!(&e.name, key);
        assert_eq!(e.size, data.len() as u64, "{key}");
        assert_eq!(e.sha256, crate::common::sha256_hex(data), "{key}");
    }
    assert_eq!(entries[MANY + 1].name, crate::common::MANIFEST);
    all_readers_agree(&path, MANY + 2);
    let java = read_zip_with_java_stream(&path);
    assert_eq!(
        java[0],
        ("big/zeros.bin".to_string(), BIG, crc_of_zeros(BIG))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deflated_4_gib_entry() {
    if !big_tests_enabled() {
        return;
    }
    let s3 = crate::common::start_s3();
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    zeros_object(&s3, "source", "zeros.log", BIG);
    s3.put_object("source", "after.txt", b"after the big one")
        .unwrap();

    let mut env = backup_env(&s3, "source", "dest");
    set(&mut env, "COMPRESSION_LEVEL", "1");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    let path = crate::common::archive_path(&s3, "dest", &body);
    let entries = read_zip_with_python(&path);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["after.txt", "zeros.log", crate::common::MANIFEST]);
    let big = &entries[1];
    assert_eq!(big.method, 8);
    assert_eq!(big.size, BIG);
    assert_eq!(big.crc32, crc_of_zeros(BIG));
    assert!(big.compressed_size < BIG / 100, "zeros deflate");
    assert_eq!(
        entries[0].sha256,
        crate::common::sha256_hex(b"after the big one")
    );
    all_readers_agree(&path, 3);
}

/// Cloudflare R2's rule at full scale: a destination that refuses parts of unequal size
/// (the in-memory store, told to enforce it) takes an archive of more than 1,000 parts,
/// the point where growing parts would double. The source is a second server (s3s-fs,
/// sparse files of zeros) with the same keys, so only the archive is held in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_a_thousand_equal_parts() {
    if !big_tests_enabled() {
        return;
    }
    const OBJECT: u64 = 1001 << 20;
    let source = crate::common::start_s3();
    let dest = crate::common::S3Server::in_memory_builder()
        .credentials(source.access_key(), source.secret_key())
        .equal_parts()
        .start()
        .unwrap();
    source.create_bucket("source").unwrap();
    dest.create_bucket("dest").unwrap();
    for i in 0..5 {
        zeros_object(&source, "source", &format!("zeros-{i}.bin"), OBJECT);
    }
    let mut env = backup_env(&source, "source", "dest");
    set(&mut env, "DEST_ENDPOINT", dest.endpoint());
    crate::common::unset(&mut env, "PART_SIZE");
    set(&mut env, "EQUAL_PARTS", "true");
    // Stored: the archive is as big as the data.
    set(&mut env, "COMPRESSION", "store");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["partSize"], 5 << 20, "{body}");
    assert!(body["parts"].as_u64().unwrap() > 1000, "{body}");
    let key = body["archiveName"].as_str().unwrap();
    let stored = dest
        .memory_store()
        .unwrap()
        .object_data("dest", key)
        .unwrap();
    assert_eq!(stored.len() as u64, body["archiveSize"].as_u64().unwrap());
    // The store's ETag counts the parts it joined.
    let info = dest.object_info("dest", key).unwrap();
    let parts = format!("-{}", body["parts"]);
    assert!(
        info.etag.trim_matches('"').ends_with(&parts),
        "{}",
        info.etag
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive.zip");
    std::fs::write(&path, &stored).unwrap();
    drop(stored);
    drop(dest);
    let entries = read_zip_with_python(&path);
    assert_eq!(entries.len(), 6);
    for (i, e) in entries[..5].iter().enumerate() {
        assert_eq!(e.name, format!("zeros-{i}.bin"));
        assert_eq!(e.size, OBJECT);
        assert_eq!(e.crc32, crc_of_zeros(OBJECT));
    }
    assert_eq!(entries[5].name, crate::common::MANIFEST);
}

/// A sharded backup whose composed archive passes 4 GiB: the second fragment's entries
/// sit past 4 GiB, so the composed central directory carries their offsets in ZIP64
/// extras (the fragments themselves need none), and the end records are ZIP64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_composed_archive_past_4_gib() {
    if !big_tests_enabled() {
        return;
    }
    const HALF: u64 = (2 << 30) + (64 << 20);
    let s3 = crate::common::start_s3();
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    zeros_object(&s3, "source", "a/zeros.bin", HALF);
    zeros_object(&s3, "source", "b/zeros.bin", HALF);
    for shard in ["a", "b"] {
        for i in 0..3 {
            s3.put_object(
                "source",
                &format!("{shard}/zz-{i}.txt"),
                format!("{shard}{i}\n").as_bytes(),
            )
            .unwrap();
        }
    }
    let mut env = backup_env(&s3, "source", "dest");
    crate::common::unset(&mut env, "PART_SIZE");
    set(&mut env, "COMPRESSION", "store");
    let (status, body) = crate::common::request(&env, "POST", "/plan?shards=2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["shards"][0]["until"], "a/zz-2.txt", "{body}");
    for i in 1..=2 {
        let mut shard = env.clone();
        set(&mut shard, "SHARD", &format!("{i}/2"));
        let (status, body) = run_backup(&shard).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = crate::common::request(&env, "POST", "/compose").await;
    assert_eq!(status, 200, "{body}");
    let size = body["archiveSize"].as_u64().unwrap();
    assert!(size > 4 << 30, "{body}");
    // Nearly every byte was copied by the server.
    assert!(
        body["uploadedBytes"].as_u64().unwrap() < size / 100,
        "{body}"
    );
    let path = crate::common::archive_path(&s3, "dest", &body);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    let entries = read_zip_with_python(&path);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "a/zeros.bin",
            "a/zz-0.txt",
            "a/zz-1.txt",
            "a/zz-2.txt",
            "b/zeros.bin",
            // Past 4 GiB in the composed archive: their offsets are ZIP64 extras.
            "b/zz-0.txt",
            "b/zz-1.txt",
            "b/zz-2.txt",
            crate::common::MANIFEST
        ]
    );
    for e in &entries[..8] {
        if e.name.ends_with("zeros.bin") {
            assert_eq!((e.size, e.crc32), (HALF, crc_of_zeros(HALF)), "{}", e.name);
        } else {
            let want = format!("{}{}\n", &e.name[..1], &e.name[5..6]);
            assert_eq!(
                e.sha256,
                crate::common::sha256_hex(want.as_bytes()),
                "{}",
                e.name
            );
        }
    }
    all_readers_agree(&path, 9);
}
