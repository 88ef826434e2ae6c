//! HTTPS end to end: a local S3 server behind TLS with a private CA made by the test.
//! With the CA given by `SSL_CERT_FILE`, backup, verify and restore go through
//! `https://127.0.0.1:PORT`; without it, the first request fails at once, naming the
//! endpoint, the certificate problem and the variable, and nothing is retried.

use std::path::Path;

use serde_json::Value;
use spaces_backup_testkit::server::S3Server;
use spaces_backup_testkit::tls::TestCa;

/// The CLI with the backup's environment and `extra`; success, the envelope, stderr.
fn cli(s3: &S3Server, cwd: &Path, extra: &[(&str, &str)], args: &[&str]) -> (bool, Value, String) {
    let out = crate::common::host_command()
        .args(args)
        .current_dir(cwd)
        .envs(crate::common::backup_vars(s3))
        .envs(extra.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let envelope = stdout
        .lines()
        .find(|l| l.starts_with("{\"statusCode\""))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    (out.status.success(), envelope, stderr)
}

fn tls_server(dir: &Path, ca: &TestCa) -> S3Server {
    let s3 = S3Server::builder(dir.join("s3"))
        .in_memory()
        .tls(ca)
        .unwrap()
        .start()
        .unwrap();
    for bucket in ["source", "dest", "restored"] {
        s3.create_bucket(bucket).unwrap();
    }
    s3.put_object("source", "a.txt", b"alpha").unwrap();
    s3.put_object("source", "docs/b.txt", &b"bravo ".repeat(10_000))
        .unwrap();
    s3
}

#[test]
fn backup_verify_and_restore_over_https_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("spaces-backup test CA").unwrap();
    let s3 = tls_server(dir.path(), &ca);
    assert!(
        s3.endpoint().starts_with("https://127.0.0.1:"),
        "{}",
        s3.endpoint()
    );
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let trust = [("SSL_CERT_FILE", ca_file.to_str().unwrap())];

    let (ok, envelope, stderr) = cli(&s3, dir.path(), &trust, &["run"]);
    assert!(ok, "{envelope}\n{stderr}");
    assert_eq!(envelope["body"]["filesBackedUp"], 2);
    let archive = envelope["body"]["archiveName"]
        .as_str()
        .unwrap()
        .to_string();

    let (ok, envelope, stderr) = cli(
        &s3,
        dir.path(),
        &trust,
        &["verify", "--archive", &archive, "--json"],
    );
    assert!(ok, "{envelope}\n{stderr}");
    assert_eq!(envelope["body"]["identical"], true);

    let (ok, envelope, stderr) = cli(
        &s3,
        dir.path(),
        &trust,
        &["restore", "--archive", &archive, "--to", "restored"],
    );
    assert!(ok, "{envelope}\n{stderr}");
    assert_eq!(envelope["body"]["objectsRestored"], 2);
    assert_eq!(
        s3.read_object("restored", "docs/b.txt").unwrap(),
        b"bravo ".repeat(10_000)
    );
}

#[test]
fn a_certificate_that_does_not_verify_fails_at_once_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("a CA nobody trusts").unwrap();
    let s3 = tls_server(dir.path(), &ca);
    let (ok, envelope, stderr) = cli(&s3, dir.path(), &[], &["run"]);
    assert!(!ok);
    assert_eq!(envelope["statusCode"], 502, "{envelope}\n{stderr}");
    let body = &envelope["body"];
    assert_eq!(body["code"], "TlsCertificateError", "{body}");
    let message = body["message"].as_str().unwrap();
    for part in ["unknown issuer", "SSL_CERT_FILE", s3.endpoint()] {
        assert!(message.contains(part), "{part} missing: {message}");
    }
    assert!(
        !stderr.contains("\"event\":\"retry\""),
        "retried:\n{stderr}"
    );
    assert!(s3.requests().is_empty(), "{:?}", s3.requests());

    // A certificate for another name.
    let other = TestCa::for_names("test CA", &["localhost"]).unwrap();
    let s3 = tls_server(&dir.path().join("other"), &other);
    let ca_file = dir.path().join("other.pem");
    std::fs::write(&ca_file, &other.ca_pem).unwrap();
    let trust = [("SSL_CERT_FILE", ca_file.to_str().unwrap())];
    let (ok, envelope, _) = cli(&s3, dir.path(), &trust, &["run"]);
    assert!(!ok);
    let message = envelope["body"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("name mismatch"), "{envelope}");
}

#[test]
fn an_unusable_ca_file_is_a_configuration_error_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA").unwrap();
    let s3 = tls_server(dir.path(), &ca);
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "no certificate here").unwrap();
    for path in [dir.path().join("missing.pem"), garbage] {
        let (ok, envelope, _) = cli(
            &s3,
            dir.path(),
            &[("SSL_CERT_FILE", path.to_str().unwrap())],
            &["run"],
        );
        assert!(!ok);
        assert_eq!(envelope["statusCode"], 400, "{envelope}");
        assert_eq!(envelope["body"]["code"], "InvalidConfiguration");
        let message = envelope["body"]["message"].as_str().unwrap();
        assert!(message.starts_with("SSL_CERT_FILE: "), "{message}");
    }
    assert!(s3.requests().is_empty());
}
