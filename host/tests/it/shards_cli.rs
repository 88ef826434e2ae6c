//! `spaces-backup run --shards N`: the plan, N shard instances side by side in one
//! process, the compose, through the real CLI; the archive read back by Python.

use std::path::Path;
use std::process::Command;

use spaces_backup_testkit::server::S3Server;

fn run(s3: &S3Server, cwd: &Path, args: &[&str], extra: &[(&str, &str)]) -> (i32, String, String) {
    let out = crate::common::host_command()
        .args(args)
        .current_dir(cwd)
        .envs(crate::common::backup_vars(s3))
        .envs(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_with_shards_makes_one_archive_even_when_shards_chain() {
    let dir = tempfile::tempdir().unwrap();
    // Every request waits a little, so that a budget of 2 s takes each shard several runs.
    let s3 = S3Server::builder(dir.path().join("s3"))
        .in_memory()
        .latency(std::time::Duration::from_millis(30))
        .start()
        .unwrap();
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    let mut want = Vec::new();
    for i in 0..120 {
        let key = format!("k/{i:03}.txt");
        let body = format!("object {i} ").repeat(i * 10 + 1);
        s3.put_object("source", &key, body.as_bytes()).unwrap();
        want.push((key, body.len()));
    }
    let (code, out, log) = run(
        &s3,
        dir.path(),
        &["run", "--shards", "3"],
        &[
            ("MAX_RUN_SECONDS", "2"),
            ("CONCURRENCY", "1"),
            ("CHECKPOINT_SECONDS", "1"),
        ],
    );
    assert_eq!(code, 0, "{out}\n{log}");
    assert!(
        log.contains("backup_continuing"),
        "no shard chained:\n{log}"
    );
    let envelope: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let body = &envelope["body"];
    assert_eq!(envelope["statusCode"], 200, "{body}");
    assert_eq!(body["fragments"], 3, "{body}");
    assert_eq!(body["filesBackedUp"], 120, "{body}");
    let key = body["archiveName"].as_str().unwrap();
    let path = dir.path().join("archive.zip");
    std::fs::write(&path, s3.read_object("dest", key).unwrap()).unwrap();
    let listing = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\n\
             for i in z.infolist(): print(i.filename, i.file_size)",
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(listing.status.success(), "{listing:?}");
    let text = String::from_utf8(listing.stdout).unwrap();
    let got: Vec<(String, usize)> = text
        .lines()
        .filter(|l| !l.starts_with(".spaces-backup/"))
        .map(|l| {
            let (name, size) = l.rsplit_once(' ').unwrap();
            (name.to_string(), size.parse().unwrap())
        })
        .collect();
    assert_eq!(got, want);
    // Nothing of the plan, the fragments or the shards' chains is left.
    let state: Vec<String> = s3
        .object_keys("dest")
        .unwrap()
        .into_iter()
        .filter(|k| k.contains(".spaces-backup/"))
        .collect();
    assert!(state.is_empty(), "{state:?}");
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
}
