//! CompleteMultipartUpload that is slow, whose answer is lost, or that is refused: a slow
//! one gets a wait of its own, a lost answer is settled by looking for the archive, and
//! a refusal is reported as what it is, never as a problem with the keys.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{backup_env, run_backup, set, Fault, TestS3};

/// A source of one object over two parts, and a destination, in memory; `complete` says
/// what the `n`-th CompleteMultipartUpload (from 1) meets.
fn server(complete: impl Fn(u32) -> Fault + Send + Sync + 'static) -> TestS3 {
    let seen = Arc::new(AtomicU32::new(0));
    let s3 = crate::common::start_s3_with(move |b| {
        b.in_memory().fault(move |req| {
            if req.operation() == "CompleteMultipartUpload" {
                return complete(seen.fetch_add(1, Ordering::SeqCst) + 1);
            }
            Fault::Pass
        })
    });
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    let data: Vec<u8> = (0..6_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    s3.put_object("source", "big.bin", &data).unwrap();
    s3.put_object("source", "small.txt", b"small").unwrap();
    s3
}

/// The backup's environment: stored entries, so the object spans two parts.
fn env(s3: &TestS3) -> Vec<(String, String)> {
    let mut env = backup_env(s3, "source", "dest");
    set(&mut env, "COMPRESSION", "store");
    env
}

fn completes(s3: &TestS3) -> usize {
    s3.requests()
        .iter()
        .filter(|r| r.operation == "CompleteMultipartUpload")
        .count()
}

/// The archive is there, whole, and no upload is left.
fn one_archive(s3: &TestS3, body: &serde_json::Value) {
    let key = body["archiveName"].as_str().unwrap();
    let stored = s3.read_object("dest", key).unwrap();
    assert_eq!(stored.len() as u64, body["archiveSize"].as_u64().unwrap());
    assert_eq!(s3.object_keys("dest").unwrap(), [key]);
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_slower_than_the_request_timeout_succeeds() {
    let s3 = server(|n| {
        if n == 1 {
            Fault::Delay(Duration::from_secs(3))
        } else {
            Fault::Pass
        }
    });
    let mut env = env(&s3);
    set(&mut env, "TIMEOUT_SECONDS", "1");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["parts"].as_u64().unwrap() >= 2, "{body}");
    one_archive(&s3, &body);
    assert_eq!(
        completes(&s3),
        1,
        "the slow Complete was waited for, not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_settled_once_the_archive_appears() {
    // The connection drops at once; the server completes the upload two seconds later.
    let s3 = server(|n| {
        if n == 1 {
            Fault::Detach(Duration::from_secs(2))
        } else {
            Fault::Pass
        }
    });
    let (status, body) = run_backup(&env(&s3)).await;
    assert_eq!(status, 200, "{body}");
    one_archive(&s3, &body);
    assert_eq!(completes(&s3), 1, "found, not completed again");
    let looked = s3
        .requests()
        .iter()
        .filter(|r| r.operation == "HeadObject")
        .count();
    assert!(looked >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_complete_answered_403_is_not_blamed_on_the_keys() {
    // The first Complete is lost before the server saw it, the retry is answered 403; the
    // upload is still there, so it is completed once more.
    let s3 = server(|n| match n {
        1 => Fault::Disconnect,
        2 => Fault::Status {
            status: 403,
            code: "AccessDenied".into(),
        },
        _ => Fault::Pass,
    });
    let (status, body) = run_backup(&env(&s3)).await;
    assert_eq!(status, 200, "{body}");
    one_archive(&s3, &body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_refused_for_good_fails_naming_the_upload() {
    let s3 = server(|_| Fault::Status {
        status: 400,
        code: "InvalidPart".into(),
    });
    let (status, body) = run_backup(&env(&s3)).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["code"], "InvalidPart");
    let message = body["message"].as_str().unwrap();
    let upload = s3
        .requests()
        .iter()
        .find(|r| r.operation == "CompleteMultipartUpload")
        .and_then(|r| {
            r.query
                .split('&')
                .find_map(|p| p.strip_prefix("uploadId=").map(str::to_string))
        })
        .unwrap();
    assert!(message.contains(&upload), "{message}");
    assert!(
        !message.contains("SPACES_KEY") && !message.contains("access denied"),
        "{message}"
    );
    assert!(message.contains("aborted"), "{message}");
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
    assert_eq!(completes(&s3), 1, "a refusal is not retried");
}
