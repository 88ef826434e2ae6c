//! Bad input through the real CLI (`spaces-backup run`, a child process): every case ends in
//! a non-zero exit and an error that names the culprit, and no output, whether stdout (the
//! response envelope, i.e. the HTTP body) or stderr (the logs), holds a secret, a key or a
//! signature. One case also goes through `spaces-backup serve` and its HTTP body.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use spaces_backup_testkit::server::{Fault, S3Server};

const KEY: &str = "SWEEPKEY7Q4XD2";
const SECRET: &str = "sweep-secret-Zk81mB0pQ7";
const WRONG_KEY: &str = "WRONGKEY5N8TLA";
const WRONG_SECRET: &str = "wrong-secret-Hy62vC3s";

fn server(root: &Path) -> S3Server {
    let s3 = S3Server::builder(root)
        .credentials(KEY, SECRET)
        .fault(|req| {
            // "read-only" is readable but refuses writes, as a key without write access.
            if req.path.starts_with("/read-only/") && req.method != http::Method::GET {
                Fault::Status {
                    status: 403,
                    code: "AccessDenied".into(),
                }
            } else if req.path.starts_with("/stalled") {
                Fault::Delay(Duration::from_secs(5))
            } else {
                Fault::Pass
            }
        })
        .start()
        .unwrap();
    for bucket in ["source", "dest", "read-only", "stalled"] {
        s3.create_bucket(bucket).unwrap();
    }
    s3.put_object("source", "a.txt", b"alpha").unwrap();
    s3
}

fn base_env(s3: &S3Server) -> Vec<(&'static str, String)> {
    vec![
        ("SOURCE_BUCKET", "source".into()),
        ("SOURCE_REGION", "nyc3".into()),
        ("SOURCE_ENDPOINT", s3.endpoint().into()),
        ("DEST_BUCKET", "dest".into()),
        ("DEST_REGION", "nyc3".into()),
        ("DEST_ENDPOINT", s3.endpoint().into()),
        ("SPACES_KEY", KEY.into()),
        ("SPACES_SECRET", SECRET.into()),
        ("MAX_RETRIES", "1".into()),
        ("TIMEOUT_SECONDS", "2".into()),
    ]
}

/// What a run printed.
struct Outcome {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn body(&self) -> Value {
        let envelope: Value = serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON envelope ({e}): {}", self.stdout));
        envelope["body"].clone()
    }
}

fn run(env: &[(&str, String)], cwd: &Path) -> Outcome {
    let mut cmd = crate::common::host_command();
    cmd.arg("run").current_dir(cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run spaces-backup");
    Outcome {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Nothing secret anywhere in `text`.
fn assert_no_secrets(case: &str, text: &str) {
    for secret in [KEY, SECRET, WRONG_KEY, WRONG_SECRET] {
        assert!(
            !text.contains(secret),
            "{case}: output holds {secret}:\n{text}"
        );
    }
    for marker in [
        "Signature=",
        "Credential=",
        "X-Amz-Signature",
        "AWS4-HMAC-SHA256 ",
    ] {
        assert!(
            !text.contains(marker),
            "{case}: output holds {marker}:\n{text}"
        );
    }
}

/// A case's name, its variable overrides, and what the error must say.
type Case = (&'static str, Vec<(&'static str, String)>, Vec<&'static str>);

#[test]
fn bad_input_is_named_and_no_secret_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = server(&dir.path().join("s3"));
    let cwd = dir.path();
    let refused = "http://127.0.0.1:1".to_string();
    let cases: Vec<Case> = vec![
        (
            "source bucket empty",
            vec![("SOURCE_BUCKET", "".into())],
            vec!["SOURCE_BUCKET", "required"],
        ),
        (
            "key empty",
            vec![("SPACES_KEY", " ".into())],
            vec!["SPACES_KEY"],
        ),
        (
            "secret empty",
            vec![("SPACES_SECRET", "".into())],
            vec!["SPACES_SECRET"],
        ),
        (
            "region malformed",
            vec![("SOURCE_REGION", "NYC 3".into())],
            vec!["SOURCE_REGION", "NYC 3"],
        ),
        (
            "dest region malformed",
            vec![("DEST_REGION", "ams3/x".into())],
            vec!["DEST_REGION"],
        ),
        (
            "endpoint malformed",
            vec![("SOURCE_ENDPOINT", "s3.example.com".into())],
            vec!["SOURCE_ENDPOINT", "https://"],
        ),
        (
            "endpoint with a path",
            vec![("DEST_ENDPOINT", "https://x.example.com/bucket".into())],
            vec!["DEST_ENDPOINT"],
        ),
        (
            "part size not a number",
            vec![("PART_SIZE", "lots".into())],
            vec!["PART_SIZE", "lots"],
        ),
        (
            "part size too small",
            vec![("PART_SIZE", "1048576".into())],
            vec!["PART_SIZE", "5 MiB"],
        ),
        (
            "concurrency zero",
            vec![("CONCURRENCY", "0".into())],
            vec!["CONCURRENCY"],
        ),
        (
            "concurrency not a number",
            vec![("CONCURRENCY", "many".into())],
            vec!["CONCURRENCY", "many"],
        ),
        (
            "memory cap too small",
            vec![("MAX_MEMORY", "64MiB".into())],
            vec!["MAX_MEMORY", "CONCURRENCY"],
        ),
        (
            "wrong key",
            vec![("SPACES_KEY", WRONG_KEY.into())],
            vec!["access denied", "'source'", "SPACES_KEY", "SPACES_SECRET"],
        ),
        (
            "wrong secret",
            vec![("SPACES_SECRET", WRONG_SECRET.into())],
            vec!["access denied", "'source'", "SPACES_KEY", "SPACES_SECRET"],
        ),
        (
            "missing source bucket",
            vec![("SOURCE_BUCKET", "no-such-source".into())],
            vec!["no-such-source", "SOURCE_BUCKET"],
        ),
        (
            "missing destination bucket",
            vec![("DEST_BUCKET", "no-such-dest".into())],
            vec!["no-such-dest", "DEST_BUCKET"],
        ),
        (
            "refused endpoint",
            vec![("SOURCE_ENDPOINT", refused.clone())],
            vec!["127.0.0.1:1", "SOURCE_ENDPOINT"],
        ),
        (
            "stalled server",
            vec![("SOURCE_BUCKET", "stalled".into())],
            vec!["timeout", "SOURCE_ENDPOINT"],
        ),
        (
            "destination not writable",
            vec![("DEST_BUCKET", "read-only".into())],
            vec![
                "access denied",
                "destination bucket 'read-only'",
                "SPACES_KEY",
            ],
        ),
    ];
    for (case, overrides, expected) in cases {
        let mut env = base_env(&s3);
        for (k, v) in overrides {
            env.retain(|(name, _)| *name != k);
            env.push((k, v));
        }
        let out = run(&env, cwd);
        assert!(!out.success, "{case}: the run succeeded:\n{}", out.stdout);
        let body = out.body();
        let message = body["message"].as_str().unwrap_or_default();
        for want in expected {
            assert!(
                message.contains(want),
                "{case}: {want:?} not in {message:?}"
            );
        }
        assert!(!out.stderr.contains("panicked"), "{case}:\n{}", out.stderr);
        assert!(
            !out.stderr.contains("stack backtrace"),
            "{case}:\n{}",
            out.stderr
        );
        assert_no_secrets(case, &out.stdout);
        assert_no_secrets(case, &out.stderr);
    }
    // Nothing was left behind by any of them.
    for bucket in ["dest", "read-only"] {
        assert_eq!(s3.open_multipart_uploads(bucket).unwrap(), 0, "{bucket}");
    }
    assert!(s3.list_objects("dest").unwrap().is_empty());
}

#[test]
fn serve_answers_bad_input_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = server(&dir.path().join("s3"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut env = base_env(&s3);
    env.retain(|(k, _)| *k != "SPACES_SECRET");
    env.push(("SPACES_SECRET", WRONG_SECRET.into()));
    let mut cmd = crate::common::host_command();
    cmd.args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut response = String::new();
    for _ in 0..300 {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            stream
                .write_all(b"POST /backup HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .unwrap();
            stream.read_to_string(&mut response).unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert!(response.contains("SPACES_SECRET"), "{response}");
    assert_no_secrets("serve: HTTP response", &response);
    assert_no_secrets("serve: stderr", &stderr);
    assert_no_secrets("serve: stdout", &stdout);
}
