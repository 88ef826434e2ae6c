//! The host runs the component against the in-process S3 server.

use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_200() {
    let s3 = crate::common::start_s3();
    s3.create_bucket("src-bucket").unwrap();
    s3.create_bucket("dst-bucket").unwrap();
    s3.put_object("src-bucket", "a/b.txt", b"hello").unwrap();
    assert_eq!(s3.read_object("src-bucket", "a/b.txt").unwrap(), b"hello");

    let env = crate::common::backup_env(&s3, "src-bucket", "dst-bucket");
    let (status, body) = crate::common::request(&env, "GET", "/health").await;
    assert_eq!(status, 200, "GET /health answered {status}: {body}");
    assert!(
        body.is_object(),
        "GET /health body is not a JSON object: {body}"
    );
    assert_eq!(s3.open_multipart_uploads("dst-bucket").unwrap(), 0);
}

#[test]
fn python_reads_a_zip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.zip");
    let status = Command::new("python3")
        .arg("-c")
        .arg("import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n    z.writestr('dir/é.txt', b'hello')\n    z.writestr('empty', b'')\n")
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let entries = crate::common::read_zip_with_python(&path);
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].name, "dir/é.txt");
    assert_eq!(entries[0].size, 5);
    assert_eq!(entries[0].crc32, 0x3610_a686);
    assert_eq!(entries[0].sha256, crate::common::sha256_hex(b"hello"));
    assert!(entries[0].utf8_flag);
    assert_eq!(entries[1].size, 0);
}
