//! SIGTERM (or SIGINT) during `spaces-backup run` aborts the multipart upload before the
//! process exits, and the envelope says so.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use spaces_backup_testkit::server::{Fault, S3Server};

/// Waits (a minute at most) until the run has sent its first UploadPart: it is mid-upload.
fn wait_for_a_part(s3: &S3Server) {
    let started = Instant::now();
    while !s3.requests().iter().any(|r| r.operation == "UploadPart") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no UploadPart seen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_during_a_run_aborts_the_upload() {
    let dir = tempfile::tempdir().unwrap();
    // Parts arrive slowly, so the run is surely mid-upload when the signal comes.
    let s3 = S3Server::builder(dir.path().join("s3"))
        .in_memory()
        .fault(|req| match req.operation() {
            "UploadPart" => Fault::Delay(Duration::from_millis(1500)),
            _ => Fault::Pass,
        })
        .start()
        .unwrap();
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    let noise: Vec<u8> = (0..30_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    s3.put_object("source", "big.bin", &noise).unwrap();

    let mut cmd = crate::common::host_command();
    cmd.arg("run")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .envs(crate::common::backup_vars(&s3))
        .envs([
            ("PART_SIZE", "5MiB"),
            ("CONCURRENCY", "2"),
            ("COMPRESSION", "store"),
        ]);
    let child = cmd.spawn().unwrap();
    wait_for_a_part(&s3);
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 1);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}");
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    let envelope: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let message = envelope["body"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("the multipart upload was aborted"),
        "{stdout}"
    );
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
    assert!(s3.object_keys("dest").unwrap().is_empty());
    let aborts = s3
        .requests()
        .iter()
        .filter(|r| r.operation == "AbortMultipartUpload")
        .count();
    assert_eq!(aborts, 1);
}

/// An in-memory server with buckets `source` and `dest` whose object GETs (not those of
/// the backup's own state) each wait `ms`, so a run archives only part of a bucket in time.
fn slow_gets(dir: &std::path::Path, ms: u64) -> S3Server {
    let s3 = S3Server::builder(dir.join("s3"))
        .in_memory()
        .fault(move |req| {
            if req.operation() == "GetObject" && !req.path.contains(".spaces-backup") {
                Fault::Delay(Duration::from_millis(ms))
            } else {
                Fault::Pass
            }
        })
        .start()
        .unwrap();
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3
}

/// SIGKILL between checkpoints loses only the work since the last one: the next
/// `spaces-backup run` waits out nothing but the dead run's lease, continues the same
/// upload, and completes one archive with every object (exit 0 after an exit 75 would
/// have told the same story).
#[test]
fn a_run_killed_between_checkpoints_is_continued_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = slow_gets(dir.path(), 20);
    let mut objects = Vec::new();
    for i in 0..300u32 {
        let data: Vec<u8> = (0..70_000u32)
            .map(|j| (j.wrapping_add(i).wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        let key = format!("obj-{i:04}");
        s3.put_object("source", &key, &data).unwrap();
        objects.push((key, data));
    }
    let vars = crate::common::backup_vars(&s3);
    let settings = [
        ("PART_SIZE", "5MiB"),
        ("CONCURRENCY", "2"),
        ("COMPRESSION", "store"),
        ("CHECKPOINT_SECONDS", "1"),
    ];
    let mut cmd = crate::common::host_command();
    cmd.arg("run")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .envs(vars.clone())
        .envs(settings);
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    let checkpoint = "backups/.spaces-backup/source/checkpoint.json";
    while !(s3
        .object_keys("dest")
        .unwrap()
        .iter()
        .any(|k| k == checkpoint)
        && s3.requests().iter().any(|r| r.operation == "UploadPart"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no checkpoint seen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Past the first checkpoint, mid-way to the next.
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 1);
    // Its lease (three checkpoint intervals) runs out; then the next run may continue.
    std::thread::sleep(Duration::from_millis(3_500));
    let out = crate::common::host_command()
        .arg("run")
        .current_dir(dir.path())
        .envs(vars)
        .envs(settings)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let envelope: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let body = &envelope["body"];
    assert_eq!(body["status"], "completed", "{stdout}");
    assert_eq!(body["runs"], 2, "{stdout}");
    assert_eq!(body["filesBackedUp"], objects.len() as u64, "{stdout}");
    let archive = s3
        .read_object("dest", body["archiveName"].as_str().unwrap())
        .unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive)).unwrap();
    assert_eq!(zip.len(), objects.len() + 1);
    for (key, data) in &objects {
        let mut entry = zip.by_name(key).unwrap();
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut got).unwrap();
        assert!(got == *data, "{key}");
    }
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
    let state: Vec<String> = s3
        .object_keys("dest")
        .unwrap()
        .into_iter()
        .filter(|k| k.contains(".spaces-backup"))
        .collect();
    assert!(state.is_empty(), "{state:?}");
}

/// SIGKILL before the first checkpoint leaves an upload that nothing will continue. Its
/// claim keeps it from the next run while it could still be live; once the claim has
/// lapsed (written back two minutes stale here, rather than waited out), the next run
/// aborts it, and nothing is left.
#[test]
fn an_upload_left_before_any_checkpoint_is_aborted_once_its_claim_lapses() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = slow_gets(dir.path(), 20);
    for i in 0..120u32 {
        let data: Vec<u8> = (0..70_000u32)
            .map(|j| (j.wrapping_add(i).wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        s3.put_object("source", &format!("obj-{i:04}"), &data)
            .unwrap();
    }
    let vars = crate::common::backup_vars(&s3);
    let settings = [
        ("PART_SIZE", "5MiB"),
        ("CONCURRENCY", "2"),
        ("COMPRESSION", "store"),
    ];
    let run = || {
        let out = crate::common::host_command()
            .arg("run")
            .current_dir(dir.path())
            .envs(vars.clone())
            .envs(settings)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let claims = || -> Vec<String> {
        s3.object_keys("dest")
            .unwrap()
            .into_iter()
            .filter(|k| k.starts_with("backups/.spaces-backup/source/runs/"))
            .collect()
    };
    let mut child = crate::common::host_command()
        .arg("run")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .envs(vars.clone())
        .envs(settings)
        .spawn()
        .unwrap();
    wait_for_a_part(&s3);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 1);
    let left = claims();
    assert_eq!(left.len(), 1, "the killed run's claim: {left:?}");
    assert!(!s3
        .object_keys("dest")
        .unwrap()
        .iter()
        .any(|k| k.ends_with("checkpoint.json")));

    // Right after, the killed run could still be a live one: its upload is kept.
    let log = run();
    assert!(!log.contains("orphan_aborted"), "{log}");
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 1);
    assert_eq!(claims(), left, "the finished run removed its own claim");

    let mut claim: serde_json::Value =
        serde_json::from_slice(&s3.read_object("dest", &left[0]).unwrap()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    claim["expires"] = (now - 121_000).into();
    s3.put_object("dest", &left[0], claim.to_string().as_bytes())
        .unwrap();
    let log = run();
    assert!(log.contains("orphan_aborted"), "{log}");
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
    assert!(claims().is_empty(), "{:?}", claims());
    let archives = s3
        .object_keys("dest")
        .unwrap()
        .into_iter()
        .filter(|k| k.ends_with(".zip"))
        .count();
    assert_eq!(archives, 2, "the two complete runs' archives, nothing else");
}

/// A run stopped at MAX_RUN_SECONDS exits 75 (EX_TEMPFAIL), so a shell loop or a
/// scheduler can tell "run again" from done and from failed.
#[test]
fn a_run_stopped_at_its_deadline_exits_75() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = slow_gets(dir.path(), 50);
    for i in 0..120u32 {
        s3.put_object("source", &format!("k{i:03}"), b"x").unwrap();
    }
    let mut codes = Vec::new();
    for _ in 0..20 {
        let out = crate::common::host_command()
            .arg("run")
            .current_dir(dir.path())
            .envs(crate::common::backup_vars(&s3))
            .envs([("MAX_RUN_SECONDS", "2"), ("CONCURRENCY", "2")])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let code = out.status.code();
        codes.push(code);
        if code != Some(75) {
            assert_eq!(code, Some(0), "{stdout}");
            assert!(stdout.contains("\"statusCode\":200"), "{stdout}");
            break;
        }
        assert!(stdout.contains("\"statusCode\":202"), "{stdout}");
        assert!(stdout.contains("\"status\":\"continuing\""), "{stdout}");
    }
    assert!(codes.len() >= 2, "{codes:?}");
    assert_eq!(codes.last(), Some(&Some(0)), "{codes:?}");
}
