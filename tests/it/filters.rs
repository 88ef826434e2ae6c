//! INCLUDE_PREFIXES, EXCLUDE and DRY_RUN against the in-memory S3 server.

use crate::common::{backup_env, read_zip_with_python, run_backup, set};

fn seeded() -> crate::common::TestS3 {
    let s3 = crate::common::start_s3_with(|b| b.in_memory());
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    for (key, data) in [
        ("a/1.txt", "one"),
        ("a/2.tmp", "scratch"),
        ("b/x/keep.txt", "kept"),
        ("b/cache/junk", "junk"),
        ("c/3.txt", "not included"),
        ("d/.DS_Store", "finder"),
    ] {
        s3.put_object("source", key, data.as_bytes()).unwrap();
    }
    s3
}

fn filtered_env(s3: &crate::common::TestS3) -> Vec<(String, String)> {
    let mut env = backup_env(s3, "source", "dest");
    // Out of order and nested on purpose: listed as a/ then b/, once each.
    set(&mut env, "INCLUDE_PREFIXES", "b/, a/, b/x/");
    set(&mut env, "EXCLUDE", "*.tmp, b/cache/");
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_prefixes_and_exclude_patterns_choose_the_objects() {
    let s3 = seeded();
    let (status, body) = run_backup(&filtered_env(&s3)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["filesBackedUp"], 2, "{body}");
    assert_eq!(body["excludedByFilter"], 2, "{body}");
    let key = body["archiveName"].as_str().unwrap();
    let path = s3.dir.path().join("a.zip");
    std::fs::write(&path, s3.read_object("dest", key).unwrap()).unwrap();
    let names: Vec<String> = read_zip_with_python(&path)
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["a/1.txt", "b/x/keep.txt", crate::common::MANIFEST]);
    let lists: Vec<String> = s3
        .requests()
        .iter()
        .filter(|r| r.operation == "ListObjectsV2" && r.path.starts_with("/source"))
        .map(|r| r.query.clone())
        .collect();
    // Once each, though the backup was weighed first (its pages are kept for it).
    assert_eq!(lists.len(), 2, "{lists:?}");
    assert!(
        lists[0].contains("prefix=a%2F") && lists[1].contains("prefix=b%2F"),
        "{lists:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reports_and_writes_nothing() {
    let s3 = seeded();
    let mut env = filtered_env(&s3);
    set(&mut env, "DRY_RUN", "true");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dryRun"], true);
    assert_eq!(body["filesToBackUp"], 2);
    assert_eq!(body["bytesToRead"], 7);
    assert_eq!(
        body["firstKeys"],
        serde_json::json!(["a/1.txt", "b/x/keep.txt"])
    );
    assert_eq!(body["excludedByFilter"], 2);
    assert!(body["archiveName"]
        .as_str()
        .unwrap()
        .starts_with("backups/backup-source-"));
    assert!(s3.object_keys("dest").unwrap().is_empty());
    let ops: Vec<&str> = s3.requests().iter().map(|r| r.operation).collect();
    assert!(
        ops.iter()
            .all(|op| matches!(*op, "ListObjectsV2" | "HeadBucket")),
        "{ops:?}"
    );

    set(&mut env, "DRY_RUN", "perhaps");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("DRY_RUN"),
        "{body}"
    );
}
