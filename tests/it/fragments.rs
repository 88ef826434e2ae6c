//! A backup too big for one upload (more parts than MAX_PARTS allows): planned as
//! fragments when it begins, the fragments written one after another (chained across
//! runs like any backup), then composed into the one archive. MAX_PARTS=6 with 5 MiB
//! parts makes an upload hold 30 MiB, so a bucket of about 48 MB needs four fragments.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::common::{backup_env, run_backup, set, unset, Fault, TestS3};
use crate::shards::{check_archive, noise, state_keys};

/// Eight objects of 6 MB that do not deflate, `small` little ones, and two keys whose
/// safe names collide (`./twin.txt` first, `twin.txt` last: different fragments).
fn seed(s3: &TestS3, small: u64) -> BTreeMap<String, Vec<u8>> {
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    let mut objects = BTreeMap::new();
    objects.insert("./twin.txt".to_string(), b"first twin".to_vec());
    for i in 0..8u64 {
        objects.insert(format!("big/{i}.bin"), noise(i, 6_000_000));
    }
    for i in 0..small {
        objects.insert(
            format!("small/{i:05}.txt"),
            format!("object {i}\n").into_bytes(),
        );
    }
    objects.insert("twin.txt".into(), b"second twin".to_vec());
    for (k, v) in &objects {
        s3.put_object("source", k, v).unwrap();
    }
    objects
}

fn small_uploads(s3: &TestS3) -> Vec<(String, String)> {
    let mut env = backup_env(s3, "source", "dest");
    set(&mut env, "PART_SIZE", "5MiB");
    set(&mut env, "MAX_PARTS", "6");
    env
}

/// An in-memory server whose every GET of a big object waits a second.
fn slow_big_gets() -> TestS3 {
    crate::common::start_s3_with(|b| {
        b.in_memory().fault(|req| {
            if req.operation() == "GetObject" && req.path.contains("/big/") {
                Fault::Delay(Duration::from_millis(1000))
            } else {
                Fault::Pass
            }
        })
    })
}

fn part_copies(s3: &TestS3) -> usize {
    s3.requests()
        .iter()
        .filter(|r| r.operation == "UploadPartCopy")
        .count()
}

fn archives(s3: &TestS3) -> Vec<String> {
    s3.object_keys("dest")
        .unwrap()
        .into_iter()
        .filter(|k| k.starts_with("backups/backup-source-"))
        .collect()
}

fn check_composed(s3: &TestS3, body: &Value, objects: &BTreeMap<String, Vec<u8>>) {
    assert_eq!(body["status"], "completed", "{body}");
    assert_eq!(body["fragments"], 4, "{body}");
    assert_eq!(body["serverSideCopy"], true, "{body}");
    assert_eq!(body["filesBackedUp"], objects.len() as u64, "{body}");
    assert!(body["parts"].as_u64().unwrap() <= 6, "{body}");
    check_archive(s3, body, objects);
    // The plan, the fragments and their chains are gone; nothing is left open.
    assert!(state_keys(s3).is_empty(), "{:?}", state_keys(s3));
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_too_big_for_one_upload_is_written_as_fragments_and_composed() {
    let s3 = crate::common::start_s3_with(|b| b.in_memory());
    // More than a listing page: the first backup weighs the bucket with a listing.
    let objects = seed(&s3, 1_100);
    let env = small_uploads(&s3);
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    check_composed(&s3, &body, &objects);
    assert!(part_copies(&s3) >= 4, "{} copies", part_copies(&s3));
    assert_eq!(archives(&s3), vec![body["archiveName"].as_str().unwrap()]);

    // The next backup weighs it from that archive (its size, then its manifest), and is
    // written as fragments again.
    let copies = part_copies(&s3);
    let (status, next) = run_backup(&env).await;
    assert_eq!(status, 200, "{next}");
    check_composed(&s3, &next, &objects);
    assert!(part_copies(&s3) >= copies + 4);
    assert_eq!(archives(&s3).len(), 2);

    // The same bucket fits one upload of S3's 10,000 parts: no fragments.
    let mut roomy = env.clone();
    set(&mut roomy, "MAX_PARTS", "10000");
    let (status, one) = run_backup(&roomy).await;
    assert_eq!(status, 200, "{one}");
    assert!(one.get("fragments").is_none(), "{one}");
    assert_eq!(one["parts"], 10, "{one}");
    check_archive(&s3, &one, &objects);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_continue_across_runs_until_the_archive_is_composed() {
    // A run of MAX_RUN_SECONDS=3 writes about one fragment; the plan in the destination
    // tells each next run where to go on.
    let s3 = slow_big_gets();
    let objects = seed(&s3, 20);
    let mut env = small_uploads(&s3);
    set(&mut env, "MAX_RUN_SECONDS", "3");
    set(&mut env, "CONCURRENCY", "2");
    let mut answers = Vec::new();
    for _ in 0..20 {
        let (status, body) = run_backup(&env).await;
        let done = status != 202;
        answers.push((status, body));
        if done {
            break;
        }
    }
    let (status, last) = answers.pop().unwrap();
    assert_eq!(status, 200, "{last}");
    assert!(!answers.is_empty(), "no run continued");
    for (_, body) in &answers {
        assert_eq!(body["status"], "continuing", "{body}");
        assert_eq!(body["archiveName"], last["archiveName"], "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("4 fragments"), "{message}");
    }
    check_composed(&s3, &last, &objects);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_listing_is_weighed_across_runs() {
    // Each page of the source's listing takes 0.6 s: a run of MAX_RUN_SECONDS=2 (1.5 s
    // before its reserve) lists three of the five pages, so its weighing goes on in the
    // next run.
    let s3 = crate::common::start_s3_with(|b| {
        b.in_memory().fault(|req| {
            if req.operation() == "ListObjectsV2" && req.path.starts_with("/source") {
                Fault::Delay(Duration::from_millis(600))
            } else {
                Fault::Pass
            }
        })
    });
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    let mut objects = BTreeMap::new();
    for i in 0..4_100u32 {
        objects.insert(format!("k/{i:05}"), format!("{i}").into_bytes());
    }
    for (k, v) in &objects {
        s3.put_object("source", k, v).unwrap();
    }
    let mut env = backup_env(&s3, "source", "dest");
    set(&mut env, "MAX_RUN_SECONDS", "2");
    let (status, first) = run_backup(&env).await;
    assert_eq!(status, 202, "{first}");
    let message = first["message"].as_str().unwrap();
    assert!(message.contains("being weighed"), "{message}");
    assert_eq!(
        state_keys(&s3),
        vec!["backups/.spaces-backup/source/weigh.json".to_string()]
    );
    // The next run, without a deadline, goes on from the key it stopped at (a listing
    // that starts after it), not from the first, then backs the bucket up.
    let seen = s3.requests().len();
    unset(&mut env, "MAX_RUN_SECONDS");
    let (status, last) = run_backup(&env).await;
    assert_eq!(status, 200, "{last}");
    let resumed = s3.requests()[seen..]
        .iter()
        .filter(|r| {
            r.operation == "ListObjectsV2"
                && r.path.starts_with("/source")
                && r.query.contains("start-after=k%2F0")
        })
        .count();
    assert_eq!(resumed, 1, "the weighing went on where it stopped");
    // It fits one upload: an archive as always, its weighing removed.
    assert!(last.get("fragments").is_none(), "{last}");
    assert_eq!(last["filesBackedUp"], objects.len() as u64, "{last}");
    crate::common::check_archive(&s3, &last, &objects);
    assert!(state_keys(&s3).is_empty(), "{:?}", state_keys(&s3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_fragments_of_other_settings_are_refused_until_discarded() {
    let s3 = slow_big_gets();
    let objects = seed(&s3, 20);
    let mut env = small_uploads(&s3);
    set(&mut env, "MAX_RUN_SECONDS", "3");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 202, "{body}");
    assert!(state_keys(&s3).iter().any(|k| k.ends_with("plan.json")));

    // Other settings: refused, naming the way out; nothing is touched.
    let before = state_keys(&s3);
    unset(&mut env, "MAX_RUN_SECONDS");
    set(&mut env, "COMPRESSION", "deflate");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 409, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("DISCARD_CHECKPOINT"), "{message}");
    assert_eq!(state_keys(&s3), before);

    // Discarded: its uploads are aborted, its fragments and state go, and the backup
    // begins anew with these settings.
    set(&mut env, "DISCARD_CHECKPOINT", "true");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    check_composed(&s3, &body, &objects);
}
