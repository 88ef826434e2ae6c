//! `POST /verify`: an archive against the source bucket as it is now.

use crate::common::{backup_env, request, run_backup};

fn query(archive: &str, deep: bool) -> String {
    let mut q = String::from("/verify?archive=");
    for b in archive.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            q.push(char::from(b));
        } else {
            q.push_str(&format!("%{b:02X}"));
        }
    }
    if deep {
        q.push_str("&deep=true");
    }
    q
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_missing_changed_and_new_objects() {
    let s3 = crate::common::start_s3_with(|b| b.in_memory());
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    for i in 0..1_200 {
        s3.put_object(
            "source",
            &format!("k/{i:04}.txt"),
            format!("object {i}").as_bytes(),
        )
        .unwrap();
    }
    s3.put_object("source", "odd key/with space+plus.txt", b"odd")
        .unwrap();
    let env = backup_env(&s3, "source", "dest");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    let archive = body["archiveName"].as_str().unwrap().to_string();

    let (status, v) = request(&env, "POST", &query(&archive, false)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["identical"], true, "{v}");
    assert_eq!(v["unchanged"], 1_201);
    assert_eq!(v["entries"], 1_202, "objects and the manifest");

    s3.delete_object("source", "k/0005.txt").unwrap();
    s3.put_object("source", "k/0006.txt", b"longer than before")
        .unwrap();
    s3.put_object("source", "k/0007.txt", b"object X").unwrap(); // same size, new ETag
    s3.put_object("source", "k/0100a.txt", b"new").unwrap();
    let (status, v) = request(&env, "POST", &query(&archive, false)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["identical"], false);
    assert_eq!(
        (
            v["missing"].as_u64(),
            v["changed"].as_u64(),
            v["new"].as_u64()
        ),
        (Some(1), Some(2), Some(1)),
        "{v}"
    );
    assert_eq!(v["unchanged"], 1_198);
    let lines: Vec<(String, String)> = v["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["status"].as_str().unwrap().into(),
                d["key"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = [
        ("missing", "k/0005.txt"),
        ("changed", "k/0006.txt"),
        ("changed", "k/0007.txt"),
        ("new", "k/0100a.txt"),
    ];
    assert_eq!(
        lines,
        want.map(|(a, b)| (a.to_string(), b.to_string())).to_vec()
    );

    // Errors are named.
    let (status, v) = request(&env, "POST", "/verify").await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = request(&env, "POST", &query("backups/nope.zip", false)).await;
    assert_eq!(status, 404, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_verify_compares_contents() {
    // s3s-fs lists no ETags: a same-size rewrite shows only in the content.
    let s3 = crate::common::start_s3();
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.put_object("source", "a.txt", b"alpha").unwrap();
    s3.put_object("source", "b.txt", b"bravo").unwrap();
    let env = backup_env(&s3, "source", "dest");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    let archive = body["archiveName"].as_str().unwrap().to_string();
    s3.put_object("source", "b.txt", b"BRAVO").unwrap();

    let (_, v) = request(&env, "POST", &query(&archive, false)).await;
    assert_eq!(v["identical"], true, "size and (absent) ETag match: {v}");
    let (status, v) = request(&env, "POST", &query(&archive, true)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["identical"], false, "{v}");
    assert_eq!(v["changed"], 1);
    assert_eq!(v["differences"][0]["key"], "b.txt");
    assert!(v["differences"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("CRC-32"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_checks_every_entry_without_the_source() {
    let s3 = crate::common::start_s3();
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    let text = "a line of text that compresses\n".repeat(5_000);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    s3.put_object("source", "text.txt", text.as_bytes())
        .unwrap();
    s3.put_object("source", "noise.bin", &noise).unwrap();
    s3.put_object("source", "empty", b"").unwrap();
    let env = backup_env(&s3, "source", "dest");
    let (status, body) = run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
    let archive = body["archiveName"].as_str().unwrap().to_string();
    let q = format!("{}&integrity=true", query(&archive, false));

    // The source is gone: integrity needs only the archive.
    s3.put_object("source", "text.txt", b"changed").unwrap();
    let (status, v) = request(&env, "POST", &q).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["intact"], true, "{v}");
    assert_eq!(v["entries"], 4);
    // Every object's bytes, and the manifest's.
    assert!(v["bytesChecked"].as_u64().unwrap() > (text.len() + noise.len()) as u64);

    // One flipped byte inside the stored noise.
    let path = crate::common::archive_path(&s3, "dest", &body);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(64)
        .position(|w| w == &noise[100_000..100_064])
        .unwrap();
    bytes[at] ^= 0xFF;
    std::fs::write(&path, &bytes).unwrap();
    let (status, v) = request(&env, "POST", &q).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["intact"], false, "{v}");
    assert_eq!(v["damagedEntries"], 1);
    assert_eq!(v["damaged"][0]["entry"], "noise.bin");
    assert!(
        v["damaged"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("CRC-32"),
        "{v}"
    );
}
