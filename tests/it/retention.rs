//! KEEP_LAST and KEEP_DAYS against the in-memory S3 server: only this source's older
//! archives under ARCHIVE_PREFIX are deleted, and only after a successful backup.

use crate::common::{backup_env, run_backup, set, Fault};
use spaces_backup::naming::archive_key;
use time::{Duration, OffsetDateTime};

/// Four older archives of `source` (1, 3, 10 and 40 days old) and objects that must
/// never be touched.
fn seeded(s3: &crate::common::TestS3) -> Vec<String> {
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.put_object("source", "a.txt", b"alpha").unwrap();
    let now = OffsetDateTime::now_utc();
    let old: Vec<String> = [1, 3, 10, 40]
        .iter()
        .map(|d| archive_key("backups", "source", now - Duration::days(*d)))
        .collect();
    for key in &old {
        s3.put_object("dest", key, b"old archive").unwrap();
    }
    for key in [
        "backups/notes.txt",
        "backups/backup-source-latest.zip",
        "backups/backup-other-2020-01-01T00-00-00-000Z.zip",
        "elsewhere/backup-source-2020-01-01T00-00-00-000Z.zip",
    ] {
        s3.put_object("dest", key, b"keep me").unwrap();
    }
    old
}

fn keys(s3: &crate::common::TestS3) -> Vec<String> {
    s3.object_keys("dest").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_last_deletes_only_older_archives_of_this_source() {
    let s3 = crate::common::start_s3_with(|b| b.in_memory());
    let old = seeded(&s3);
    let mut env = backup_env(&s3, "source", "dest");
    set(&mut env, "KEEP_LAST", "2");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    // The new archive and the newest old one stay.
    let mut want: Vec<&str> = old[1..].iter().map(String::as_str).collect();
    want.sort_unstable();
    let mut deleted: Vec<&str> = body["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    deleted.sort_unstable();
    assert_eq!(deleted, want, "{body}");
    let left = keys(&s3);
    assert!(left.contains(&old[0]));
    assert!(left
        .iter()
        .any(|k| k == body["archiveName"].as_str().unwrap()));
    for k in [
        "backups/notes.txt",
        "backups/backup-source-latest.zip",
        "backups/backup-other-2020-01-01T00-00-00-000Z.zip",
        "elsewhere/backup-source-2020-01-01T00-00-00-000Z.zip",
    ] {
        assert!(left.iter().any(|l| l == k), "{k} was touched");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_days_deletes_archives_older_than_that() {
    let s3 = crate::common::start_s3_with(|b| b.in_memory());
    let old = seeded(&s3);
    let mut env = backup_env(&s3, "source", "dest");
    set(&mut env, "KEEP_DAYS", "7");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    let deleted = body["deleted"].as_array().unwrap();
    assert_eq!(deleted.len(), 2, "{body}");
    let left = keys(&s3);
    assert!(left.contains(&old[0]) && left.contains(&old[1]));
    assert!(!left.contains(&old[2]) && !left.contains(&old[3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_backup_deletes_nothing() {
    let s3 = crate::common::start_s3_with(|b| {
        b.in_memory().fault(|req| match req.operation() {
            "CompleteMultipartUpload" => Fault::Status {
                status: 400,
                code: "InvalidPart".into(),
            },
            _ => Fault::Pass,
        })
    });
    let old = seeded(&s3);
    let mut env = backup_env(&s3, "source", "dest");
    set(&mut env, "KEEP_LAST", "1");
    let (status, body) = run_backup(&env).await;
    assert_ne!(status, 200, "{body}");
    let left = keys(&s3);
    for k in &old {
        assert!(left.contains(k), "{k} deleted by a failed backup");
    }
    // Its abort and the removal of its own claim on the upload are the only DELETEs.
    let deletes: Vec<(&str, bool)> = s3
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| {
            let claim = r.path.contains("/backups/.spaces-backup/source/runs/");
            (r.operation, claim)
        })
        .collect();
    assert_eq!(
        deletes,
        [("AbortMultipartUpload", false), ("DeleteObject", true)]
    );
}

/// KEEP_LAST=1 with an archive named a day ahead (another machine's clock): the archive
/// this run completed stays, and so does the newest; only the older ones go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_just_written_is_never_deleted() {
    let s3 = crate::common::start_s3_with(|b| b.in_memory());
    let old = seeded(&s3);
    let ahead = archive_key(
        "backups",
        "source",
        OffsetDateTime::now_utc() + Duration::days(1),
    );
    s3.put_object("dest", &ahead, b"from a clock that runs ahead")
        .unwrap();
    let mut env = backup_env(&s3, "source", "dest");
    set(&mut env, "KEEP_LAST", "1");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    let written = body["archiveName"].as_str().unwrap();
    let left = keys(&s3);
    assert!(left.iter().any(|k| k == written), "{body}");
    assert!(left.contains(&ahead));
    for k in &old {
        assert!(!left.contains(k), "{k} should have gone: {body}");
    }
}
