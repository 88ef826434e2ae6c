//! Chained runs: a backup given MAX_RUN_SECONDS stops at an entry boundary with a
//! checkpoint in the destination bucket (202, `"status": "continuing"`), and the next
//! runs continue the same multipart upload into one archive that every reader opens.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::common::{backup_env, run_backup, set, sha256_hex, Fault, TestS3};

const STATE: &str = "backups/.spaces-backup/source/";

/// Bytes that deflate well (`text`) or not at all.
fn content(seed: u64, len: usize, text: bool) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if text {
            out.extend_from_slice(["chain ", "run ", "part ", "\n"][(x % 4) as usize].as_bytes());
        } else {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

/// 240 objects (12 MB, so parts are stored between checkpoints) and an empty one; with
/// `in_memory`, also a folder marker and two keys whose safe names collide in different
/// runs (`~2`), which s3s-fs cannot store.
fn seed(s3: &TestS3, in_memory: bool) -> BTreeMap<String, Vec<u8>> {
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    let mut objects = BTreeMap::new();
    for i in 0..236u64 {
        let len = (i * 104_729 % 100_000) as usize;
        objects.insert(
            format!("d{}/obj-{i:04}", i % 5),
            content(i, len, i % 3 == 0),
        );
    }
    if in_memory {
        objects.insert("folder/".into(), Vec::new());
        // The first key and the last: the second run still knows the name is taken.
        objects.insert("./zz_twin.txt".into(), b"first twin".to_vec());
        objects.insert("zz_twin.txt".into(), b"second twin".to_vec());
    }
    objects.insert("empty".into(), Vec::new());
    for (k, v) in &objects {
        s3.put_object("source", k, v).unwrap();
    }
    objects
}

/// Every GET waits a little, so a run of MAX_RUN_SECONDS=3 (new entries for 2.4 s, less
/// the run's start and its lease) archives only part of it.
fn slow_gets(s3: crate::common::S3ServerBuilder) -> crate::common::S3ServerBuilder {
    s3.fault(|req| {
        if req.operation() == "GetObject" && !req.path.contains(".spaces-backup") {
            Fault::Delay(Duration::from_millis(50))
        } else {
            Fault::Pass
        }
    })
}

fn chained_env(s3: &TestS3) -> Vec<(String, String)> {
    let mut env = backup_env(s3, "source", "dest");
    set(&mut env, "MAX_RUN_SECONDS", "3");
    set(&mut env, "CONCURRENCY", "2");
    env
}

/// Runs the backup until it completes; returns every response, the last one complete.
async fn run_to_completion(env: &[(String, String)]) -> Vec<(u16, Value)> {
    let mut answers = Vec::new();
    for _ in 0..40 {
        let (status, body) = run_backup(env).await;
        let done = status != 202;
        answers.push((status, body));
        if done {
            return answers;
        }
    }
    panic!("still continuing after 40 runs: {:?}", answers.last());
}

fn state_keys(s3: &TestS3) -> Vec<String> {
    s3.object_keys("dest")
        .unwrap()
        .into_iter()
        .filter(|k| k.starts_with(STATE))
        .collect()
}

/// The archive holds exactly `objects` and opens in every reader; a twin's second copy
/// is `zz_twin~2.txt`.
fn check_archive(s3: &TestS3, body: &Value, objects: &BTreeMap<String, Vec<u8>>) {
    let manifest = crate::common::check_archive(s3, body, objects);
    if objects.contains_key("zz_twin.txt") {
        assert_eq!(manifest[0]["entry"], "zz_twin.txt");
        assert_eq!(manifest.last().unwrap()["entry"], "zz_twin~2.txt");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_runs_over_several_deadlines_make_one_archive() {
    let s3 = crate::common::start_s3_with(slow_gets);
    let objects = seed(&s3, false);
    let mut env = chained_env(&s3);
    // s3s-fs serves faster than the in-memory store's hook allows for: fewer GETs at once.
    set(&mut env, "CONCURRENCY", "1");
    let answers = run_to_completion(&env).await;
    let runs = answers.len();
    assert!(runs >= 3, "{runs} runs: {:?}", answers.last());
    let mut names = Vec::new();
    for (status, body) in &answers[..runs - 1] {
        assert_eq!(*status, 202, "{body}");
        assert_eq!(body["status"], "continuing", "{body}");
        assert_eq!(body["message"], "Backup will continue in the next run");
        names.push(body["archiveName"].clone());
    }
    let (status, body) = answers.last().unwrap();
    assert_eq!(*status, 200, "{body}");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["runs"], runs as u64, "{body}");
    assert_eq!(body["filesBackedUp"], objects.len() as u64, "{body}");
    // Every run wrote into the archive the first one named.
    assert!(names.iter().all(|n| *n == body["archiveName"]), "{names:?}");
    check_archive(&s3, body, &objects);
    assert!(state_keys(&s3).is_empty(), "{:?}", state_keys(&s3));
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
    assert_eq!(s3.leftover_part_files().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_of_other_settings_is_refused_until_discarded() {
    let s3 = crate::common::start_s3_with(|b| slow_gets(b.in_memory()));
    let objects = seed(&s3, true);
    let env = chained_env(&s3);
    let (status, first) = run_backup(&env).await;
    assert_eq!(status, 202, "{first}");
    assert!(!state_keys(&s3).is_empty());
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 1);

    let mut other = env.clone();
    set(&mut other, "COMPRESSION", "store");
    let (status, body) = run_backup(&other).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "CheckpointMismatch", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("DISCARD_CHECKPOINT=true"), "{message}");
    assert!(message.contains("other settings"), "{message}");
    // Nothing was lost: the checkpoint and its upload are still there.
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 1);

    // Left set, it abandons only what cannot be continued: the runs after the first go on.
    set(&mut other, "DISCARD_CHECKPOINT", "true");
    let answers = run_to_completion(&other).await;
    assert!(answers.len() >= 2, "{answers:?}");
    let (status, body) = answers.last().unwrap();
    assert_eq!(*status, 200, "{body}");
    assert_ne!(body["archiveName"], first["archiveName"], "a new archive");
    check_archive(&s3, body, &objects);
    // The abandoned upload was aborted, its state removed.
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
    assert!(state_keys(&s3).is_empty(), "{:?}", state_keys(&s3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_started_together_never_write_one_backup() {
    let s3 = crate::common::start_s3_with(|b| slow_gets(b.in_memory()));
    let objects = seed(&s3, true);
    let env = chained_env(&s3);
    let (a, b) = tokio::join!(run_backup(&env), run_backup(&env));
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    // One holds the checkpoint; the other found it held and gave its own upload up.
    assert_eq!(statuses, [202, 409], "{} / {}", a.1, b.1);
    let refused = if a.0 == 409 { &a.1 } else { &b.1 };
    assert_eq!(refused["code"], "BackupInProgress", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("aborted"),
        "{refused}"
    );
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 1);
    // A run started while the state is free continues the one backup.
    let answers = run_to_completion(&env).await;
    let (status, body) = answers.last().unwrap();
    assert_eq!(*status, 200, "{body}");
    check_archive(&s3, body, &objects);
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
    let archives: Vec<String> = s3
        .object_keys("dest")
        .unwrap()
        .into_iter()
        .filter(|k| k.ends_with(".zip"))
        .collect();
    assert_eq!(archives.len(), 1, "{archives:?}");
}

/// Opens a multipart upload of `key` in `dest` (one part stored), as a run would have.
pub(crate) async fn open_upload(s3: &TestS3, key: &str) -> String {
    let mut c =
        spaces_backup_testkit::client::Client::connect(s3, s3.access_key(), s3.secret_key()).await;
    let path = format!("/dest/{key}");
    let r = c.send("POST", &path, &[("uploads", "")], &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let xml = r.text();
    let start = xml.find("<UploadId>").expect("UploadId") + "<UploadId>".len();
    let id = xml[start..start + xml[start..].find('<').unwrap()].to_string();
    let part = [("partNumber", "1"), ("uploadId", id.as_str())];
    let r = c.send("PUT", &path, &part, &[], b"left behind").await;
    assert_eq!(r.status, 200, "{}", r.text());
    id
}

/// A run's claim on `id` (as `runs/<hash>.json`), expiring at Unix ms `expires`.
fn write_claim(s3: &TestS3, key: &str, id: &str, expires: u64) {
    let claim = serde_json::json!({"archiveName": key, "uploadId": id, "owner": "killed", "expires": expires});
    let name = format!("{STATE}runs/{}.json", &sha256_hex(id.as_bytes())[..32]);
    s3.put_object("dest", &name, claim.to_string().as_bytes())
        .unwrap();
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `backups/backup-source-<time>.zip` for a time `ago_ms` back, as runs name archives.
fn archive_name_at(ago_ms: u64) -> String {
    let t = time::OffsetDateTime::now_utc() - time::Duration::milliseconds(ago_ms as i64);
    spaces_backup::naming::archive_key("backups", "source", t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_left_by_killed_runs_are_aborted_and_live_ones_kept() {
    let s3 = crate::common::start_s3_with(|b| b.in_memory());
    let objects = seed(&s3, true);
    const HOUR: u64 = 3_600_000;
    // Orphans: no claim and two hours old; a claim that lapsed long ago.
    let unclaimed = archive_name_at(2 * HOUR);
    open_upload(&s3, &unclaimed).await;
    let lapsed = archive_name_at(10 * 60_000);
    let lapsed_id = open_upload(&s3, &lapsed).await;
    write_claim(&s3, &lapsed, &lapsed_id, now_ms() - 5 * 60_000);
    // Kept: a run that just began (its claim not written yet), one whose claim is live,
    // another source's upload, and a key not of this tool's naming.
    let starting = archive_name_at(1_000);
    open_upload(&s3, &starting).await;
    let live = archive_name_at(3 * HOUR);
    let live_id = open_upload(&s3, &live).await;
    write_claim(&s3, &live, &live_id, now_ms() + 60_000);
    let other = "backups/backup-sourcery-2020-01-01T00-00-00-000Z.zip";
    open_upload(&s3, other).await;
    let foreign = "backups/backup-source-latest.zip";
    open_upload(&s3, foreign).await;

    let env = backup_env(&s3, "source", "dest");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    check_archive(&s3, &body, &objects);
    let mut open: Vec<String> = s3
        .memory_store()
        .unwrap()
        .open_uploads("dest")
        .unwrap()
        .into_iter()
        .map(|u| u.key)
        .collect();
    open.sort();
    let mut kept = vec![starting, live, other.to_string(), foreign.to_string()];
    kept.sort();
    assert_eq!(open, kept);
    // The orphans' claims went with them; the live one's stays, and the run's own is gone.
    let claims: Vec<String> = state_keys(&s3);
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert!(
        claims[0].contains(&sha256_hex(live_id.as_bytes())[..32]),
        "{claims:?}"
    );
}
