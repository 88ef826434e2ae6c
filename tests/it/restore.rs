//! Backup, then `POST /restore` into an empty bucket: every key, byte, Content-Type and
//! user metadata comes back, with the standard headers (Cache-Control, Content-Encoding,
//! ...), keys that needed another entry name included.

use crate::common::{backup_env, request, run_backup};

/// The manifest line of each key of `archive`, read with Python's `zipfile`.
fn manifest_lines(s3: &crate::common::TestS3, archive: &str) -> impl Fn(&str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.zip");
    std::fs::write(&path, s3.read_object("dest", archive).unwrap()).unwrap();
    let manifest = crate::common::read_manifest_with_python(&path);
    move |key: &str| manifest.iter().find(|l| l["key"] == key).unwrap().clone()
}

/// `POST /verify?deep=true` of `archive`, answered 200.
async fn deep_verify(env: &[(String, String)], archive: &str) -> serde_json::Value {
    let (status, v) = request(env, "POST", &format!("/verify?archive={archive}&deep=true")).await;
    assert_eq!(status, 200, "{v}");
    v
}

/// The restore of `archive` into `to` with `bucketSettings=true`.
fn with_settings(archive: &str, to: &str) -> String {
    format!("{}&bucketSettings=true", query(archive, to, false))
}

fn query(archive: &str, to: &str, overwrite: bool) -> String {
    let enc = |t: &str| {
        t.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    let mut q = format!("/restore?archive={}&to={}", enc(archive), enc(to));
    if overwrite {
        q.push_str("&overwrite=true");
    }
    q
}

/// Key, bytes, Content-Type and user metadata of one source object.
type Object = (
    String,
    Vec<u8>,
    Option<&'static str>,
    Vec<(&'static str, &'static str)>,
);

fn objects() -> Vec<Object> {
    let mut big = Vec::new();
    let mut x = 7u64;
    while big.len() < 12_000_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.extend_from_slice(&x.to_le_bytes());
    }
    vec![
        (
            "plain.txt".into(),
            b"plain".to_vec(),
            Some("text/plain"),
            vec![("owner", "ops")],
        ),
        (
            "/leading/slash.txt".into(),
            b"leading".to_vec(),
            None,
            vec![],
        ),
        (
            "a//b/../c.txt".into(),
            b"dots".to_vec(),
            Some("text/x-odd"),
            vec![("k", "v")],
        ),
        (
            "folder/".into(),
            Vec::new(),
            Some("application/x-directory"),
            vec![],
        ),
        (
            "empty.bin".into(),
            Vec::new(),
            Some("application/octet-stream"),
            vec![],
        ),
        (
            "text/big.log".into(),
            "a compressible line of log text\n"
                .repeat(400_000)
                .into_bytes(),
            Some("text/plain; charset=utf-8"),
            vec![("source", "app"), ("level", "info")],
        ),
        (
            "noise/big.bin".into(),
            big,
            Some("application/octet-stream"),
            vec![("sum", "x")],
        ),
        (
            "caf\u{e9} \u{1F600}.txt".into(),
            b"unicode".to_vec(),
            None,
            vec![],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_then_restore_gives_back_every_key_byte_type_and_metadata() {
    let s3 = crate::common::start_s3_with(|b| b.in_memory());
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.create_bucket("restored").unwrap();
    let objects = objects();
    for (key, data, ct, meta) in &objects {
        s3.put_object_with("source", key, data, *ct, meta).unwrap();
    }
    let env = backup_env(&s3, "source", "dest");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    let archive = body["archiveName"].as_str().unwrap().to_string();

    let (status, r) = request(&env, "POST", &query(&archive, "restored", false)).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["objectsRestored"], objects.len() as u64);
    let mut want: Vec<String> = objects.iter().map(|o| o.0.clone()).collect();
    want.sort();
    assert_eq!(s3.object_keys("restored").unwrap(), want);
    for (key, data, ct, meta) in &objects {
        assert_eq!(&s3.read_object("restored", key).unwrap(), data, "{key}");
        let was = s3.object_info("source", key).unwrap();
        let now = s3.object_info("restored", key).unwrap();
        // As a GET shows it: S3 serves an object stored without one as binary/octet-stream.
        let shown = |t: Option<String>| t.unwrap_or_else(|| "binary/octet-stream".into());
        assert_eq!(
            shown(now.content_type.clone()),
            shown(was.content_type),
            "{key}"
        );
        assert_eq!(
            shown(now.content_type),
            shown(ct.map(String::from)),
            "{key}"
        );
        assert_eq!(now.metadata, was.metadata, "{key}");
        assert_eq!(now.metadata.len(), meta.len(), "{key}");
    }
    // The 12 MB objects went up in parts, as multipart uploads, all completed.
    assert!(s3
        .object_info("restored", "noise/big.bin")
        .unwrap()
        .etag
        .contains('-'));
    assert_eq!(s3.open_multipart_uploads("restored").unwrap(), 0);

    // Again over the same keys: refused, nothing written, unless --overwrite.
    let before = s3.requests().len();
    let (status, r) = request(&env, "POST", &query(&archive, "restored", false)).await;
    assert_eq!(status, 409, "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("--overwrite"),
        "{r}"
    );
    assert!(s3.requests()[before..]
        .iter()
        .all(|q| q.method == "GET" || q.method == "HEAD"));
    let (status, r) = request(&env, "POST", &query(&archive, "restored", true)).await;
    assert_eq!(status, 200, "{r}");

    // Under a prefix.
    let (status, r) = request(&env, "POST", &query(&archive, "restored/copy/", false)).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        s3.read_object("restored", "copy/a//b/../c.txt").unwrap(),
        b"dots"
    );

    // Bad requests name what is wrong.
    let (status, r) = request(&env, "POST", "/restore?archive=x.zip").await;
    assert_eq!(status, 400, "{r}");
    let (status, r) = request(&env, "POST", &query(&archive, "-bad-bucket", false)).await;
    assert_eq!(status, 400, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_retries_slowdowns_on_its_uploads() {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let s3 = crate::common::start_s3_with(|b| {
        b.in_memory().fault(|req| {
            // Every object's first PUT into the target is answered 503 SlowDown.
            if req.operation() == "PutObject" && req.path.starts_with("/restored/") {
                let mut seen = SEEN.lock().unwrap();
                if seen
                    .get_or_insert_with(HashSet::new)
                    .insert(req.path.clone())
                {
                    return crate::common::Fault::Status {
                        status: 503,
                        code: "SlowDown".into(),
                    };
                }
            }
            crate::common::Fault::Pass
        })
    });
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.create_bucket("restored").unwrap();
    for i in 0..200 {
        s3.put_object(
            "source",
            &format!("f/{i:03}"),
            format!("file {i}").as_bytes(),
        )
        .unwrap();
    }
    let env = backup_env(&s3, "source", "dest");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    let archive = body["archiveName"].as_str().unwrap().to_string();
    let (status, r) = request(&env, "POST", &query(&archive, "restored", false)).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["objectsRestored"], 200);
    assert!(r["retries"].as_u64().unwrap() >= 200, "{r}");
    assert_eq!(s3.object_keys("restored").unwrap().len(), 200);
    assert_eq!(s3.read_object("restored", "f/123").unwrap(), b"file 123");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_gives_back_each_objects_standard_headers() {
    use spaces_backup_testkit::memstore::ObjectHeaders;
    let s3 = crate::common::start_s3_with(|b| b.in_memory());
    for b in ["source", "dest", "restored"] {
        s3.create_bucket(b).unwrap();
    }
    // A site's assets: gzip-encoded with cache lifetimes, a download, a redirect; one
    // big enough to be restored as a multipart upload; one with no headers at all.
    let site = ObjectHeaders {
        cache_control: Some("public, max-age=31536000, immutable".into()),
        content_encoding: Some("gzip".into()),
        content_language: Some("de-CH".into()),
        ..Default::default()
    };
    let download = ObjectHeaders {
        content_disposition: Some("attachment; filename=\"report 2026.pdf\"".into()),
        expires: Some("Thu, 01 Dec 2033 16:00:00 GMT".into()),
        storage_class: Some("STANDARD_IA".into()),
        ..Default::default()
    };
    let moved = ObjectHeaders {
        website_redirect_location: Some("/new/index.html".into()),
        cache_control: Some("no-cache".into()),
        ..Default::default()
    };
    let big: Vec<u8> = (0..12_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let objects: Vec<(&str, Vec<u8>, Option<&str>, ObjectHeaders)> = vec![
        (
            "app.js",
            b"\x1f\x8b gz".to_vec(),
            Some("text/javascript"),
            site.clone(),
        ),
        ("big/video.bin", big, Some("video/mp4"), site),
        (
            "files/report.pdf",
            b"%PDF".to_vec(),
            Some("application/pdf"),
            download,
        ),
        (
            "old/index.html",
            b"moved".to_vec(),
            Some("text/html"),
            moved,
        ),
        (
            "plain.txt",
            b"plain".to_vec(),
            None,
            ObjectHeaders::default(),
        ),
    ];
    let store = s3.memory_store().unwrap();
    for (key, data, ct, headers) in &objects {
        s3.put_object_with("source", key, data, *ct, &[]).unwrap();
        store.set_headers("source", key, headers.clone()).unwrap();
    }
    let env = backup_env(&s3, "source", "dest");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    let archive = body["archiveName"].as_str().unwrap().to_string();

    // The manifest records them, the storage class too.
    let line = manifest_lines(&s3, &archive);
    assert_eq!(line("app.js")["headers"]["contentEncoding"], "gzip");
    assert_eq!(
        line("files/report.pdf")["headers"]["storageClass"],
        "STANDARD_IA"
    );
    assert!(line("plain.txt").get("headers").is_none());

    let (status, r) = request(&env, "POST", &query(&archive, "restored", false)).await;
    assert_eq!(status, 200, "{r}");
    for (key, data, _, headers) in &objects {
        assert_eq!(&s3.read_object("restored", key).unwrap(), data, "{key}");
        let now = s3.object_info("restored", key).unwrap();
        // Every header as it was; the storage class is left to the target's default.
        let want = ObjectHeaders {
            storage_class: None,
            ..headers.clone()
        };
        assert_eq!(now.headers, want, "{key}");
    }
    assert!(s3
        .object_info("restored", "big/video.bin")
        .unwrap()
        .etag
        .contains('-'));

    // A deep verify sees a header changed since (the listing alone cannot).
    store
        .set_headers(
            "source",
            "old/index.html",
            ObjectHeaders {
                website_redirect_location: Some("/new/index.html".into()),
                cache_control: Some("max-age=60".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let verify = format!("/verify?archive={archive}");
    let (status, v) = request(&env, "POST", &verify).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["identical"], true, "{v}");
    let (status, v) = request(&env, "POST", &format!("{verify}&deep=true")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["changed"], 1, "{v}");
    let reason = v["differences"][0]["reason"].as_str().unwrap();
    assert_eq!(
        reason, "headers: cache-control 'no-cache' in the archive, 'max-age=60' now",
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_gives_back_each_objects_acl_and_tags() {
    use spaces_backup_testkit::memstore::{MemGrant, ALL_USERS, OWNER_ID};
    let s3 = crate::common::start_s3_with(|b| b.in_memory());
    for b in ["source", "dest", "restored"] {
        s3.create_bucket(b).unwrap();
    }
    let owner = MemGrant::new(&format!("id={OWNER_ID}"), "FULL_CONTROL");
    let public = MemGrant::canned("public-read").unwrap();
    let shared = vec![
        owner.clone(),
        MemGrant::new("id=friend-canonical-id", "READ"),
        MemGrant::new(&format!("uri={ALL_USERS}"), "READ_ACP"),
    ];
    let big: Vec<u8> = (0..12_000_000u32).map(|i| (i * 13 % 251) as u8).collect();
    type Tags<'a> = Vec<(&'a str, &'a str)>;
    let objects: Vec<(&str, Vec<u8>, Vec<MemGrant>, Tags)> = vec![
        (
            "site/index.html",
            b"<html>".to_vec(),
            public.clone(),
            vec![],
        ),
        (
            "site/video.mp4",
            big,
            public,
            vec![("kind", "media"), ("team", "web & video")],
        ),
        (
            "private/notes.txt",
            b"secret".to_vec(),
            vec![owner],
            vec![("pii", "yes")],
        ),
        ("shared/plan.txt", b"plan".to_vec(), shared, vec![]),
    ];
    let store = s3.memory_store().unwrap();
    for (key, data, acl, tags) in &objects {
        s3.put_object("source", key, data).unwrap();
        store.set_access("source", key, acl.clone(), tags).unwrap();
    }
    let env = backup_env(&s3, "source", "dest");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("notRecorded").is_none(), "{body}");
    let archive = body["archiveName"].as_str().unwrap().to_string();
    let line = manifest_lines(&s3, &archive);
    assert_eq!(line("site/index.html")["acl"], "public-read");
    assert_eq!(line("private/notes.txt")["acl"], "private");
    assert_eq!(line("shared/plan.txt")["acl"].as_array().unwrap().len(), 3);
    assert_eq!(line("site/video.mp4")["tags"]["team"], "web & video");

    let (status, r) = request(&env, "POST", &query(&archive, "restored", false)).await;
    assert_eq!(status, 200, "{r}");
    for (key, data, acl, tags) in &objects {
        assert_eq!(&s3.read_object("restored", key).unwrap(), data, "{key}");
        let now = s3.object_info("restored", key).unwrap();
        let mut want = acl.clone();
        want.sort();
        let mut got = now.acl.clone();
        got.sort();
        assert_eq!(got, want, "{key}");
        let want_tags: Vec<(String, String)> = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(now.tags, want_tags, "{key}");
    }

    // A deep verify sees an object made public since, and tags changed.
    store
        .set_access(
            "source",
            "private/notes.txt",
            MemGrant::canned("public-read").unwrap(),
            &[("pii", "no")],
        )
        .unwrap();
    let v = deep_verify(&env, &archive).await;
    assert_eq!(v["changed"], 1, "{v}");
    assert_eq!(
        v["differences"][0]["reason"],
        r#"ACL "private" in the archive, "public-read" now; tags [pii=yes] in the archive, [pii=no] now"#,
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_acls_is_asked_once_and_the_answer_says_so() {
    let s3 = crate::common::start_s3_with(|b| {
        b.in_memory().fault(|req| {
            if req.operation() == "GetObjectAcl" {
                crate::common::Fault::Status {
                    status: 501,
                    code: "NotImplemented".into(),
                }
            } else {
                crate::common::Fault::Pass
            }
        })
    });
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    for i in 0..300 {
        s3.put_object("source", &format!("k/{i:03}"), b"x").unwrap();
    }
    let mut env = backup_env(&s3, "source", "dest");
    crate::common::set(&mut env, "CONCURRENCY", "4");
    crate::common::set(&mut env, "RECORD_TAGS", "false");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["filesBackedUp"], 300, "{body}");
    let notes: Vec<&str> = body["notRecorded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes.iter().any(|n| n.contains("RECORD_TAGS=false")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("ACLs were not recorded") && n.contains("NotImplemented")),
        "{notes:?}"
    );
    let asked = |op: &str| s3.requests().iter().filter(|r| r.operation == op).count();
    // Only the requests already on their way when the first refusal came.
    assert!(
        asked("GetObjectAcl") <= 8,
        "{} ACL requests",
        asked("GetObjectAcl")
    );
    assert_eq!(asked("GetObjectTagging"), 0);
}

const SETTINGS: &str = ".spaces-backup/bucket.json";

/// The archive's entry names (Python's `zipfile`), and its bucket settings entry read
/// with Info-ZIP's `unzip -p`, if it has one.
fn settings_entry(
    s3: &crate::common::TestS3,
    archive: &str,
) -> (Vec<String>, Option<serde_json::Value>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.zip");
    std::fs::write(&path, s3.read_object("dest", archive).unwrap()).unwrap();
    let names: Vec<String> = crate::common::read_zip_with_python(&path)
        .into_iter()
        .map(|e| e.name)
        .collect();
    let settings = names.iter().any(|n| n == SETTINGS).then(|| {
        let text = crate::common::tool("unzip", &["-p", path.to_str().unwrap(), SETTINGS]);
        serde_json::from_str(&text).unwrap()
    });
    (names, settings)
}

const CORS: &str = "<CORSConfiguration><CORSRule><AllowedHeader>*</AllowedHeader>\
    <AllowedMethod>GET</AllowedMethod><AllowedMethod>HEAD</AllowedMethod>\
    <AllowedOrigin>https://example.com</AllowedOrigin><MaxAgeSeconds>3000</MaxAgeSeconds>\
    </CORSRule><CORSRule><AllowedMethod>GET</AllowedMethod><AllowedOrigin>*</AllowedOrigin>\
    </CORSRule></CORSConfiguration>";
const LIFECYCLE: &str = "<LifecycleConfiguration><Rule><ID>tmp</ID><Filter><Prefix>tmp/</Prefix>\
    </Filter><Status>Enabled</Status><Expiration><Days>7</Days></Expiration></Rule><Rule>\
    <ID>uploads</ID><Filter><Prefix></Prefix></Filter><Status>Enabled</Status>\
    <AbortIncompleteMultipartUpload><DaysAfterInitiation>2</DaysAfterInitiation>\
    </AbortIncompleteMultipartUpload></Rule></LifecycleConfiguration>";

/// Sets every setting of `bucket` through the signed S3 API, as a user would.
async fn set_bucket_settings(s3: &crate::common::TestS3, bucket: &str, policy: &serde_json::Value) {
    let mut c =
        spaces_backup_testkit::client::Client::connect(s3, s3.access_key(), s3.secret_key()).await;
    let policy = policy.to_string();
    let versioning = "<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>";
    for (sub, body) in [
        ("cors", CORS),
        ("lifecycle", LIFECYCLE),
        ("policy", policy.as_str()),
        ("versioning", versioning),
    ] {
        let r = c
            .send(
                "PUT",
                &format!("/{bucket}"),
                &[(sub, "")],
                &[],
                body.as_bytes(),
            )
            .await;
        // PutBucketPolicy answers 204, as S3 does.
        assert!((200..300).contains(&r.status), "{sub}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_settings_round_trip_and_are_applied_only_when_asked() {
    let s3 = crate::common::start_s3_with(|b| {
        // A bucket on a service without any of them.
        b.in_memory().fault(|req| {
            if req.path.starts_with("/bare") && req.operation().starts_with("GetBucket") {
                crate::common::Fault::Status {
                    status: 501,
                    code: "NotImplemented".into(),
                }
            } else {
                crate::common::Fault::Pass
            }
        })
    });
    for b in ["source", "dest", "plain", "restored", "bare"] {
        s3.create_bucket(b).unwrap();
    }
    for key in ["site/index.html", "tmp/scratch.txt"] {
        s3.put_object("source", key, key.as_bytes()).unwrap();
        s3.put_object("bare", key, key.as_bytes()).unwrap();
    }
    let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [{
        "Sid": "public-site", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": ["arn:aws:s3:::source/site/*"]}]});
    set_bucket_settings(&s3, "source", &policy).await;
    let store = s3.memory_store().unwrap();
    let recorded = store.bucket_settings("source").unwrap();
    assert_eq!(recorded.cors.as_ref().unwrap().len(), 2);

    let env = backup_env(&s3, "source", "dest");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("notRecorded").is_none(), "{body}");
    assert_eq!(body["filesBackedUp"], 2, "{body}");
    let archive = body["archiveName"].as_str().unwrap().to_string();
    let (names, settings) = settings_entry(&s3, &archive);
    assert_eq!(
        names,
        [
            "site/index.html",
            "tmp/scratch.txt",
            SETTINGS,
            crate::common::MANIFEST
        ]
    );
    let settings = settings.expect("the settings entry");
    assert_eq!(settings["sourceBucket"], "source");
    assert!(settings["cors"]
        .as_str()
        .unwrap()
        .contains("https://example.com"));
    assert!(settings["lifecycle"]
        .as_str()
        .unwrap()
        .contains("<Days>7</Days>"));
    assert_eq!(settings["policy"], policy);
    assert_eq!(settings["versioning"], "Enabled");
    // Integrity verify checks it as any entry; a deep verify is not troubled by it.
    let v = deep_verify(&env, &archive).await;
    assert_eq!(v["identical"], true, "{v}");

    // Without --bucket-settings the target keeps its own settings, and is told why.
    let mut c =
        spaces_backup_testkit::client::Client::connect(&s3, s3.access_key(), s3.secret_key()).await;
    let own = "<CORSConfiguration><CORSRule><AllowedMethod>PUT</AllowedMethod>\
        <AllowedOrigin>https://plain.example</AllowedOrigin></CORSRule></CORSConfiguration>";
    let r = c
        .send("PUT", "/plain", &[("cors", "")], &[], own.as_bytes())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let before = store.bucket_settings("plain").unwrap();
    // Asked to apply them over its own, without --overwrite: refused before any write.
    let (status, r) = request(&env, "POST", &with_settings(&archive, "plain")).await;
    assert_eq!(status, 409, "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("already has CORS rules"),
        "{r}"
    );
    // Under a prefix: they would reach the whole bucket.
    let (status, r) = request(&env, "POST", &with_settings(&archive, "plain/p")).await;
    assert_eq!(status, 400, "{r}");
    assert!(s3.object_keys("plain").unwrap().is_empty());
    let (status, r) = request(&env, "POST", &query(&archive, "plain", false)).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["objectsRestored"], 2, "{r}");
    assert!(r.get("bucketSettings").is_none(), "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("--bucket-settings"),
        "{r}"
    );
    assert_eq!(store.bucket_settings("plain").unwrap(), before);
    assert!(s3
        .object_keys("plain")
        .unwrap()
        .iter()
        .all(|k| !k.contains(".spaces-backup")));

    // With it, every setting comes back; the policy names the bucket it is now about.
    let (status, r) = request(&env, "POST", &with_settings(&archive, "restored")).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        r["bucketSettings"],
        serde_json::json!(["cors", "lifecycle", "policy", "versioning"]),
        "{r}"
    );
    let back = store.bucket_settings("restored").unwrap();
    assert_eq!(back.cors, recorded.cors);
    assert_eq!(back.lifecycle, recorded.lifecycle);
    assert_eq!(back.versioning.as_deref(), Some("Enabled"));
    let mut renamed = policy.clone();
    renamed["Statement"][0]["Resource"][0] = "arn:aws:s3:::restored/site/*".into();
    let got: serde_json::Value = serde_json::from_str(back.policy.as_deref().unwrap()).unwrap();
    assert_eq!(got, renamed);
    assert_eq!(
        s3.object_keys("restored").unwrap(),
        ["site/index.html", "tmp/scratch.txt"]
    );

    // A service that has none of them: the backup goes on, says so once, and writes no
    // entry; a restore asked to apply them says there are none.
    let env = backup_env(&s3, "bare", "dest");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    let notes = body["notRecorded"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "{body}");
    let note = notes[0].as_str().unwrap();
    assert!(
        note.contains("CORS rules, lifecycle rules, policy, versioning state")
            && note.contains("HTTP 501"),
        "{note}"
    );
    let archive = body["archiveName"].as_str().unwrap().to_string();
    let (names, settings) = settings_entry(&s3, &archive);
    assert!(settings.is_none(), "{names:?}");
    s3.create_bucket("bare-copy").unwrap();
    let (status, r) = request(&env, "POST", &with_settings(&archive, "bare-copy")).await;
    assert_eq!(status, 200, "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("holds no bucket settings"),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_backup_keeps_the_bucket_settings_once() {
    let s3 = crate::common::start_s3_with(|b| b.in_memory());
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    for i in 0..30 {
        s3.put_object("source", &format!("k/{i:02}"), b"data")
            .unwrap();
    }
    let policy = serde_json::json!({"Statement": [{"Effect": "Allow", "Principal": "*",
        "Action": "s3:GetObject", "Resource": "arn:aws:s3:::source/*"}]});
    set_bucket_settings(&s3, "source", &policy).await;
    let env = backup_env(&s3, "source", "dest");
    let (status, plan) = request(&env, "POST", "/plan?shards=3").await;
    assert_eq!(status, 200, "{plan}");
    let mut fragments = Vec::new();
    for i in 1..=3 {
        let mut shard = env.clone();
        crate::common::set(&mut shard, "SHARD", &format!("{i}/3"));
        let (status, body) = run_backup(&shard).await;
        assert_eq!(status, 200, "shard {i}: {body}");
        fragments.push(body["archiveName"].as_str().unwrap().to_string());
    }
    // Only the shard with the last keys reads and writes them.
    for (i, f) in fragments.iter().enumerate() {
        let (_, settings) = settings_entry(&s3, f);
        assert_eq!(settings.is_some(), i == 2, "fragment {}", i + 1);
    }
    let reads = s3
        .requests()
        .iter()
        .filter(|r| r.operation == "GetBucketCors")
        .count();
    assert_eq!(reads, 1);
    let (status, body) = request(&env, "POST", "/compose").await;
    assert_eq!(status, 200, "{body}");
    let (names, settings) = settings_entry(&s3, body["archiveName"].as_str().unwrap());
    assert_eq!(
        names.iter().filter(|n| *n == SETTINGS).count(),
        1,
        "{names:?}"
    );
    assert_eq!(names.len(), 30 + 2, "{names:?}");
    assert_eq!(names[30], SETTINGS);
    assert_eq!(settings.unwrap()["policy"], policy);
}
