//! SIGTERM (or SIGINT) during `spaces-backup run` aborts the multipart upload before the
//! process exits, and the envelope says so.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use spaces_backup_testkit::server::{Fault, S3Server};

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
    let started = Instant::now();
    while !s3.requests().iter().any(|r| r.operation == "UploadPart") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no UploadPart seen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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
