//! A backup split over shards: `POST /plan?shards=N`, each shard's `POST /backup` with
//! `SHARD=i/N` into a fragment, then `POST /compose` into one archive that reads like a
//! single run's: same names, manifest and readers, with the fragment data copied by the
//! service (UploadPartCopy) or, where it refuses, downloaded and uploaded again.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::common::{backup_env, request, run_backup, set, TestS3};

const STATE: &str = "backups/.spaces-backup/source/";

/// Bytes that do not deflate.
pub(crate) fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Small objects and a few of 7 MB (so some fragments are big enough to be copied and
/// others are under 5 MiB), two keys whose safe names collide (`./twin.txt` sorts
/// first, `twin.txt` last, so they land in different shards), a folder marker and an
/// empty object.
fn seed(s3: &TestS3) -> BTreeMap<String, Vec<u8>> {
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    let mut objects = BTreeMap::new();
    objects.insert("./twin.txt".to_string(), b"first twin".to_vec());
    for i in 0..90u64 {
        let len = if i % 30 == 7 {
            7_000_000
        } else {
            (i * 7919 % 60_000) as usize
        };
        objects.insert(format!("m/obj-{i:03}"), noise(i, len));
    }
    objects.insert("m/folder/".into(), Vec::new());
    objects.insert("m/empty".into(), Vec::new());
    objects.insert("twin.txt".into(), b"second twin".to_vec());
    for (k, v) in &objects {
        s3.put_object("source", k, v).unwrap();
    }
    objects
}

fn shard_env(env: &[(String, String)], i: u32, n: u32) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    set(&mut env, "SHARD", &format!("{i}/{n}"));
    env
}

async fn plan(env: &[(String, String)], n: u32) -> Value {
    let (status, body) = request(env, "POST", &format!("/plan?shards={n}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Runs every shard; returns the fragments' sizes.
async fn run_shards(env: &[(String, String)], n: u32) -> Vec<u64> {
    let mut sizes = Vec::new();
    for i in 1..=n {
        let (status, body) = run_backup(&shard_env(env, i, n)).await;
        assert_eq!(status, 200, "shard {i}/{n}: {body}");
        assert!(
            body["archiveName"].as_str().unwrap().starts_with(STATE),
            "{body}"
        );
        sizes.push(body["archiveSize"].as_u64().unwrap());
    }
    sizes
}

pub(crate) fn state_keys(s3: &TestS3) -> Vec<String> {
    s3.object_keys("dest")
        .unwrap()
        .into_iter()
        .filter(|k| k.starts_with(STATE))
        .collect()
}

/// The composed archive holds exactly `objects` and opens in every reader; the
/// manifest names the twin's second copy `twin~2.txt`.
pub(crate) fn check_archive(s3: &TestS3, body: &Value, objects: &BTreeMap<String, Vec<u8>>) {
    let manifest = crate::common::check_archive(s3, body, objects);
    assert_eq!(manifest[0]["entry"], "twin.txt");
    assert_eq!(manifest.last().unwrap()["entry"], "twin~2.txt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_compose_into_one_archive_copied_by_the_service() {
    let s3 = crate::common::start_s3_with(|b| b.in_memory());
    let objects = seed(&s3);
    let env = backup_env(&s3, "source", "dest");
    let planned = plan(&env, 4).await;
    assert_eq!(planned["plannedFrom"], "listing", "{planned}");
    assert_eq!(planned["shards"].as_array().unwrap().len(), 4, "{planned}");
    assert_eq!(planned["objects"], objects.len() as u64, "{planned}");
    // Asked again with the same settings, the plan is kept.
    assert_eq!(plan(&env, 4).await["reused"], true);
    let sizes = run_shards(&env, 4).await;
    // Fragments under 5 MiB (merged into a neighbouring part) and over it (copied).
    assert!(sizes.iter().any(|s| *s < 5 << 20), "{sizes:?}");
    assert!(sizes.iter().any(|s| *s > 6 << 20), "{sizes:?}");
    let (status, body) = request(&env, "POST", "/compose").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["archiveName"], planned["archiveName"], "{body}");
    assert_eq!(body["filesBackedUp"], objects.len() as u64, "{body}");
    assert_eq!(body["serverSideCopy"], true, "{body}");
    assert_eq!(body["renamed"], 1, "{body}");
    let copied = body["copiedBytes"].as_u64().unwrap();
    let uploaded = body["uploadedBytes"].as_u64().unwrap();
    let size = body["archiveSize"].as_u64().unwrap();
    assert_eq!(copied + uploaded, size, "{body}");
    assert!(copied > 14_000_000, "{body}");
    check_archive(&s3, &body, &objects);
    // The project's own readers take it as any archive: integrity, and verify against
    // the source.
    let archive = body["archiveName"].as_str().unwrap();
    let (status, v) = request(
        &env,
        "POST",
        &format!("/verify?archive={archive}&integrity=true"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["intact"], true, "{v}");
    assert_eq!(v["entries"], objects.len() as u64 + 1, "{v}");
    let (status, v) = request(&env, "POST", &format!("/verify?archive={archive}")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["identical"], true, "{v}");
    // The fragments, the plan and the shards' state are gone; nothing is left open.
    assert!(state_keys(&s3).is_empty(), "{:?}", state_keys(&s3));
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
    let copies = s3
        .requests()
        .iter()
        .filter(|r| r.operation == "UploadPartCopy")
        .count();
    assert!(copies >= 2, "{copies} copies");

    // The next plan weighs the ranges from that archive's manifest, not a listing.
    let lists_before = listings_of_source(&s3);
    assert!(lists_before > 0, "the shards listed the source");
    let next = plan(&env, 2).await;
    assert_eq!(
        next["plannedFrom"],
        format!("the manifest of {}", body["archiveName"].as_str().unwrap()),
        "{next}"
    );
    assert_eq!(next["objects"], objects.len() as u64, "{next}");
    assert_eq!(listings_of_source(&s3), lists_before);
}

fn listings_of_source(s3: &TestS3) -> usize {
    s3.requests()
        .iter()
        .filter(|r| r.operation == "ListObjectsV2" && r.path.starts_with("/source"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_downloads_the_data_where_the_copy_is_refused() {
    let s3 = crate::common::start_s3_with(|b| b.in_memory());
    let objects = seed(&s3);
    let env = backup_env(&s3, "source", "dest");
    plan(&env, 3).await;
    run_shards(&env, 3).await;
    s3.memory_store().unwrap().set_no_part_copy(true);
    let (status, body) = request(&env, "POST", "/compose").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["serverSideCopy"], false, "{body}");
    assert_eq!(body["copiedBytes"], 0, "{body}");
    let note = body["copyNote"].as_str().unwrap();
    assert!(note.contains("refused UploadPartCopy"), "{note}");
    assert_eq!(body["uploadedBytes"], body["archiveSize"], "{body}");
    check_archive(&s3, &body, &objects);
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_shard_stops_the_compose_and_a_rerun_is_harmless() {
    let s3 = crate::common::start_s3_with(|b| b.in_memory());
    let objects = seed(&s3);
    let env = backup_env(&s3, "source", "dest");
    // No plan yet: a shard says what to do first.
    let (status, body) = run_backup(&shard_env(&env, 1, 2)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("/plan?shards="),
        "{body}"
    );
    let planned = plan(&env, 2).await;
    // Another shard count while this plan is unfinished is refused, naming the way out.
    let (status, body) = request(&env, "POST", "/plan?shards=3").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("DISCARD_CHECKPOINT"),
        "{body}"
    );
    let (status, body) = run_backup(&shard_env(&env, 3, 3)).await;
    assert_eq!(status, 400, "{body}");

    let (status, body) = run_backup(&shard_env(&env, 1, 2)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = request(&env, "POST", "/compose").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("SHARD=2/2"),
        "{body}"
    );
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
    // Shard 2 twice, and shard 1 again: the fragments are written anew, nothing doubles.
    for i in [2, 2, 1] {
        let (status, body) = run_backup(&shard_env(&env, i, 2)).await;
        assert_eq!(status, 200, "{body}");
    }
    // A shard run killed before its first checkpoint left its upload open.
    let fragment = planned["shards"][1]["fragment"].as_str().unwrap();
    crate::chain::open_upload(&s3, fragment).await;
    let (status, body) = request(&env, "POST", "/compose").await;
    assert_eq!(status, 200, "{body}");
    check_archive(&s3, &body, &objects);
    assert!(state_keys(&s3).is_empty(), "{:?}", state_keys(&s3));
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
}
