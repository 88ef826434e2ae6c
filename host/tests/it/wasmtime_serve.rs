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

/// `wasmtime serve -Scli -Sinherit-env` on a free port with `env`, once it listens.
fn wasmtime_serve(env: Vec<(String, String)>) -> (Server, u16) {
    let version = Command::new("wasmtime")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!("wasmtime is needed by this test: cargo install wasmtime-cli@48.0.8 --locked (see tests/run.sh): {e}")
        });
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.contains("48.0.8"),
        "wasmtime 48.0.8 expected, found {version}"
    );
    let port = free_port();
    let mut cmd = crate::common::clean_command("wasmtime");
    cmd.args(["serve", "-Scli", "-Sinherit-env", "--addr"])
        .arg(format!("127.0.0.1:{port}"))
        .arg(EMBEDDED_COMPONENT_PATH)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .envs(env);
    let server = Server(cmd.spawn().unwrap());
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "wasmtime serve did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, port)
}

/// `curl -X method` to the server, with a bearer token or none: the status and body.
fn curl(port: u16, method: &str, path: &str, token: Option<&str>) -> (String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", method, "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl is needed by this test");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (code.to_string(), body.to_string())
}

#[test]
fn a_backup_through_wasmtime_serve() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::builder(dir.path().join("s3")).start().unwrap();
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.put_object("source", "a.txt", b"alpha").unwrap();
    s3.put_object("source", "dir/b.txt", b"beta").unwrap();
    let (_server, port) = wasmtime_serve(crate::common::backup_vars(&s3));

    let (code, body) = curl(port, "POST", "/backup", None);
    assert_eq!(code, "200", "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
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

/// The component enforces its own tokens, so `wasmtime serve`, which knows nothing of
/// them, is protected: the backup token for backups, the restore token for restores.
#[test]
fn wasmtime_serve_with_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::builder(dir.path().join("s3")).start().unwrap();
    for bucket in ["source", "dest", "restored"] {
        s3.create_bucket(bucket).unwrap();
    }
    s3.put_object("source", "a.txt", b"alpha").unwrap();
    let (backup_token, restore_token) = ("b-token-1234", "r-token-5678");
    let mut env = crate::common::backup_vars(&s3);
    env.push(("BACKUP_TOKEN".into(), backup_token.into()));
    env.push(("RESTORE_TOKEN".into(), restore_token.into()));
    let (mut server, port) = wasmtime_serve(env);

    assert_eq!(curl(port, "GET", "/health", None).0, "200");
    for token in [None, Some("wrong"), Some(restore_token)] {
        let (code, body) = curl(port, "POST", "/backup", token);
        assert_eq!(code, "401", "{token:?}: {body}");
        assert!(body.contains("BACKUP_TOKEN"), "{body}");
    }
    assert!(s3.list_objects("dest").unwrap().is_empty(), "nothing ran");
    let (code, body) = curl(port, "POST", "/backup", Some(backup_token));
    assert_eq!(code, "200", "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let key = body["archiveName"].as_str().unwrap();

    let restore = format!("/restore?archive={key}&to=restored");
    for token in [None, Some(backup_token)] {
        let (code, body) = curl(port, "POST", &restore, token);
        assert_eq!(code, "401", "{token:?}: {body}");
        assert!(body.contains("RESTORE_TOKEN"), "{body}");
    }
    assert!(s3.list_objects("restored").unwrap().is_empty());
    let (code, body) = curl(port, "POST", &restore, Some(restore_token));
    assert_eq!(code, "200", "{body}");
    assert_eq!(s3.read_object("restored", "a.txt").unwrap(), b"alpha");

    // No token reaches the log.
    let _ = server.0.kill();
    let mut log = String::new();
    std::io::Read::read_to_string(server.0.stderr.as_mut().unwrap(), &mut log).unwrap();
    for secret in [backup_token, restore_token, s3.secret_key()] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}
