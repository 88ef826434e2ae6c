//! The component unchanged under Wasmtime's own server, exactly as the README shows it:
//! `wasmtime serve -Scli -Sinherit-env spaces_backup.wasm`, then `curl -X POST /backup`.
//! Needs `wasmtime` 48.0.8 (wasmtime-cli) on PATH; `.ci/run` installs it when missing.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use spaces_backup_host::EMBEDDED_COMPONENT_PATH;
use spaces_backup_testkit::server::S3Server;

/// Stops the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_backup_through_wasmtime_serve() {
    let version = Command::new("wasmtime")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!("wasmtime is needed by this test: cargo install wasmtime-cli@48.0.8 --locked (see .ci/run): {e}")
        });
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.contains("48.0.8"),
        "wasmtime 48.0.8 expected, found {version}"
    );

    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::builder(dir.path().join("s3")).start().unwrap();
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.put_object("source", "a.txt", b"alpha").unwrap();
    s3.put_object("source", "dir/b.txt", b"beta").unwrap();

    let port = free_port();
    let mut cmd = crate::common::clean_command("wasmtime");
    cmd.args(["serve", "-Scli", "-Sinherit-env", "--addr"])
        .arg(format!("127.0.0.1:{port}"))
        .arg(EMBEDDED_COMPONENT_PATH)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .envs(crate::common::backup_vars(&s3));
    let _server = Server(cmd.spawn().unwrap());
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "wasmtime serve did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let out = Command::new("curl")
        .args(["-sS", "-X", "POST", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}/backup"))
        .output()
        .expect("curl is needed by this test");
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    assert_eq!(code, "200", "{text}");
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["message"], "Backup completed successfully");
    assert_eq!(body["filesBackedUp"], 2);
    let key = body["archiveName"].as_str().unwrap();
    let zip_path = dir.path().join("a.zip");
    std::fs::write(&zip_path, s3.read_object("dest", key).unwrap()).unwrap();
    let check = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; \
             print(z.read('a.txt').decode(), z.read('dir/b.txt').decode())",
            zip_path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&check.stdout), "alpha beta\n");
}
