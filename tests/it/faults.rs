//! A realistic mix of faults, injected into real requests by a seeded hook on the S3
//! server: 503 SlowDown, 500 InternalError, a reset before the response, a GET body cut
//! mid-stream, a slow answer, and a 200-with-error on Complete. The backup must complete
//! and the archive match the source byte for byte.
//!
//! Each request's fate depends only on the seed, the request (method, path, query) and
//! how many times that same request was seen, never on timing or arrival order, so a
//! seed gives the same faults on every run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use crate::common::{
    backup_env, read_zip_with_python, run_backup, set, sha256_hex, Fault, RequestInfo,
};

/// SplitMix64: a well-mixed hash of the seed and the request.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What makes a request the same request again: the archive's key (a timestamp) and its
/// upload id change from run to run, so destination requests go by operation and part.
fn request_id(req: &RequestInfo) -> String {
    if req.path.starts_with("/dest/") {
        let part = req
            .query
            .split('&')
            .find(|p| p.starts_with("partNumber="))
            .unwrap_or_default();
        format!("{} {part}", req.operation())
    } else {
        format!("{} {}?{}", req.method, req.path, req.query)
    }
}

/// The fault for the `attempt`-th sighting (from 0) of a request. The first two
/// attempts may fail; later ones pass, so a budget of 5 retries always suffices.
fn fault_for(seed: u64, req: &RequestInfo, attempt: u32) -> Fault {
    let op = req.operation();
    if attempt >= 2 || op == "AbortMultipartUpload" || op == "HeadObject" {
        return Fault::Pass;
    }
    let id = request_id(req);
    let roll = mix(seed ^ fnv(&id) ^ u64::from(attempt).wrapping_mul(0x5851_F42D)) % 100;
    if op == "CompleteMultipartUpload" && attempt == 0 {
        // Complete answers 200 with an error in its body: it must be retried.
        return Fault::Status {
            status: 200,
            code: "InternalError".into(),
        };
    }
    match roll {
        0..=7 => Fault::Status {
            status: 503,
            code: "SlowDown".into(),
        },
        8..=12 => Fault::Status {
            status: 500,
            code: "InternalError".into(),
        },
        13..=17 => Fault::Disconnect,
        // Mid-body, or past the end of a small body (the connection then breaks
        // after the last byte).
        18..=27 if op == "GetObject" => Fault::CutOff(mix(roll ^ seed) % 40_000 + 1),
        28..=32 => Fault::Delay(Duration::from_millis(150)),
        _ => Fault::Pass,
    }
}

fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = mix(seed) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x = mix(x);
        // Half text-like (deflated), half noise (stored).
        if seed.is_multiple_of(2) {
            out.extend_from_slice(b"spaces backup ");
        } else {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

async fn backup_under_faults(seed: u64) {
    static SEEN: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);
    static SEED: Mutex<u64> = Mutex::new(0);
    *SEED.lock().unwrap() = seed;
    let s3 = crate::common::start_s3_with(|b| {
        b.fault(|req| {
            let id = request_id(req);
            let attempt = {
                let mut seen = SEEN.lock().unwrap();
                let n = seen.get_or_insert_with(HashMap::new).entry(id).or_insert(0);
                *n += 1;
                *n - 1
            };
            fault_for(*SEED.lock().unwrap(), req, attempt)
        })
    });
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    let mut objects = BTreeMap::new();
    // Two listing pages, several parts.
    for i in 0..1_100u64 {
        let len = match i % 100 {
            0 | 51 => 1_500_000 + (mix(i) % 500_000) as usize,
            1 => 0,
            _ => (mix(i) % 8_000) as usize,
        };
        objects.insert(format!("d{}/obj-{i:04}.bin", i % 6), content(i, len));
    }
    for (k, v) in &objects {
        s3.put_object("source", k, v).unwrap();
    }
    let mut env = backup_env(&s3, "source", "dest");
    set(&mut env, "MAX_RETRIES", "5");
    set(&mut env, "TIMEOUT_SECONDS", "10");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "seed {seed}: {body}");

    let faults: Vec<_> = s3.requests().into_iter().filter_map(|r| r.fault).collect();
    let kinds = |f: fn(&Fault) -> bool| faults.iter().filter(|x| f(x)).count();
    let slowdowns = kinds(|f| matches!(f, Fault::Status { status: 503, .. }));
    let errors = kinds(|f| matches!(f, Fault::Status { status: 500, .. }));
    let resets = kinds(|f| matches!(f, Fault::Disconnect));
    let cuts = kinds(|f| matches!(f, Fault::CutOff(_)));
    let slow = kinds(|f| matches!(f, Fault::Delay(_)));
    let complete = kinds(|f| matches!(f, Fault::Status { status: 200, .. }));
    eprintln!(
        "seed {seed}: 503 x{slowdowns}, 500 x{errors}, reset x{resets}, cut x{cuts}, slow x{slow}, \
         200-with-error x{complete}; retries reported: {}",
        body["retries"]
    );
    for (what, n) in [
        ("503 SlowDown", slowdowns),
        ("500", errors),
        ("reset", resets),
        ("cut body", cuts),
        ("slow answer", slow),
        ("200 with error", complete),
    ] {
        assert!(n > 0, "seed {seed} injected no {what}: pick another seed");
    }
    // Each error status and reset costs one retry (a cut past the end of a small body
    // cuts nothing), and cut bodies were resumed with Range.
    let retried = (slowdowns + errors + resets + complete) as u64;
    assert!(body["retries"].as_u64().unwrap() >= retried, "{body}");
    let resumed = s3.requests().iter().filter(|r| r.range.is_some()).count();
    assert!(resumed > 0, "seed {seed}: no GET was resumed");

    let path = crate::common::archive_path(&s3, "dest", &body);
    let mut entries = read_zip_with_python(&path);
    assert_eq!(entries.pop().unwrap().name, crate::common::MANIFEST);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let keys: Vec<&str> = objects.keys().map(String::as_str).collect();
    assert_eq!(names, keys, "seed {seed}");
    for e in &entries {
        assert_eq!(
            e.sha256,
            sha256_hex(&objects[&e.name]),
            "seed {seed}: {}",
            e.name
        );
    }
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
    assert_eq!(s3.leftover_part_files().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_mix_of_faults_still_gives_the_exact_archive() {
    backup_under_faults(7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_past_the_retry_budget_aborts_and_leaves_no_upload() {
    // The in-memory server keeps uploads as S3 does: ListMultipartUploads must be empty.
    let s3 = crate::common::start_s3_with(|b| {
        b.in_memory().fault(|req| match req.operation() {
            "UploadPart" => Fault::Status {
                status: 503,
                code: "SlowDown".into(),
            },
            _ => Fault::Pass,
        })
    });
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.put_object("source", "a.bin", &content(1, 6_000_000))
        .unwrap();
    let mut env = backup_env(&s3, "source", "dest");
    set(&mut env, "MAX_RETRIES", "2");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 502, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("SlowDown"), "{message}");
    assert!(
        message.contains("the multipart upload was aborted"),
        "{message}"
    );
    let creates = s3
        .requests()
        .iter()
        .filter(|r| r.operation == "CreateMultipartUpload")
        .count();
    assert_eq!(creates, 1);
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
    assert!(s3.object_keys("dest").unwrap().is_empty());
}
