//! What the host enforces around the component: the outgoing allow-list, and
//! `serve`'s bearer token and one-backup-at-a-time rule.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};

use serde_json::Value;
use spaces_backup_host::{serve_listener, AllowList};

use crate::common::{backup_env, runner, set, start_s3, start_s3_with, Fault};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_outside_the_allow_list_is_refused_before_any_request() {
    let s3 = start_s3();
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.put_object("source", "a.txt", b"alpha").unwrap();
    let mut env = backup_env(&s3, "source", "dest");
    set(&mut env, "MAX_RETRIES", "1");

    // The environment points at the real server, but this runner may reach
    // only a port nothing listens on.
    let elsewhere = AllowList::from_endpoints(&["http://127.0.0.1:1"]).unwrap();
    let restricted = runner().with_allow_list(Some(elsewhere));
    let (status, body) = restricted
        .handle(&env, "POST", "/backup", "")
        .await
        .expect("the host runs the component");
    let body = crate::common::to_json(&body);
    assert_ne!(status, 200, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("not an allowed endpoint"), "{body}");
    assert!(
        s3.requests().is_empty(),
        "requests reached the server: {:?}",
        s3.requests()
    );

    // By default the list is the environment's own endpoints.
    let (status, body) = crate::common::run_backup(&env).await;
    assert_eq!(status, 200, "{body}");
}

/// The allow-list holds for https endpoints too: the scheme counts, and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_list_applies_to_https_endpoints() {
    let ca = spaces_backup_testkit::tls::TestCa::new("test CA").unwrap();
    let s3 = crate::common::start_s3_with(|b| b.in_memory().tls(&ca).unwrap());
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    let env = backup_env(&s3, "source", "dest");
    let plain = s3.endpoint().replace("https://", "http://");
    let restricted = runner().with_allow_list(AllowList::from_endpoints(&[plain]));
    let (status, body) = restricted
        .handle(&env, "POST", "/backup", "")
        .await
        .expect("the host runs the component");
    let body = crate::common::to_json(&body);
    assert_ne!(status, 200, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not an allowed endpoint"),
        "{body}"
    );
    assert!(s3.requests().is_empty(), "{:?}", s3.requests());
}

/// A server on 127.0.0.1 with `env`, stopped when the returned sender drops.
async fn start_server(
    env: Vec<(String, String)>,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = runner().clone();
    tokio::spawn(async move {
        serve_listener(listener, runner, env, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (addr, stop)
}

/// One HTTP/1.1 request over a new connection: `(status, body as JSON)`.
async fn http(addr: SocketAddr, method: &str, path: &str, auth: Option<&str>) -> (u16, Value) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n{}\r\n",
        auth.map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default()
    );
    let raw = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        raw
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, crate::common::to_json(body.as_bytes()))
}

/// A chunked body, decoded.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").unwrap_or(&after[size..]);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_requires_the_bearer_token() {
    let s3 = start_s3();
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.put_object("source", "a.txt", b"alpha").unwrap();
    let token = "correct-horse-battery-staple";
    let mut env = backup_env(&s3, "source", "dest");
    set(&mut env, "BACKUP_TOKEN", token);
    let (addr, _stop) = start_server(env).await;

    // Health checks need no token.
    let (status, body) = http(addr, "GET", "/health", None).await;
    assert_eq!(status, 200, "{body}");

    let wrong_same_length = format!("Bearer {}", "x".repeat(token.len()));
    let shorter = format!("Bearer {}", &token[..token.len() - 1]);
    let longer = format!("Bearer {token}x");
    let basic = format!("Basic {token}");
    for auth in [
        None,
        Some("Bearer"),
        Some(wrong_same_length.as_str()),
        Some(shorter.as_str()),
        Some(longer.as_str()),
        Some(basic.as_str()),
    ] {
        for (method, path) in [("POST", "/backup"), ("GET", "/other")] {
            let (status, body) = http(addr, method, path, auth).await;
            assert_eq!(status, 401, "{method} {path} with {auth:?}: {body}");
            assert_eq!(body["error"], "Unauthorized", "{body}");
            assert!(body["message"].is_string(), "{body}");
            assert!(!body.to_string().contains(token), "{body}");
        }
    }
    assert!(
        s3.requests().is_empty(),
        "an unauthorized request reached S3: {:?}",
        s3.requests()
    );

    let (status, body) = http(addr, "POST", "/backup", Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["filesBackedUp"], 1, "{body}");
}

#[test]
fn serve_refuses_a_public_address_without_a_token() {
    let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
    let err = spaces_backup_host::check_listen_addr(public, &[]).unwrap_err();
    assert!(err.to_string().contains("BACKUP_TOKEN"), "{err}");
    let with_token = vec![("BACKUP_TOKEN".to_string(), "t0ken".to_string())];
    assert!(spaces_backup_host::check_listen_addr(public, &with_token).is_ok());
    assert!(spaces_backup_host::check_listen_addr("127.0.0.1:8080".parse().unwrap(), &[]).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_backup_while_one_runs_is_a_conflict() {
    // The first listing waits until the test lets it go, so the first backup
    // is certainly running when the second request arrives.
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let entered_tx = Mutex::new(entered_tx);
    let release_rx = Mutex::new(release_rx);
    let held = AtomicBool::new(false);
    let s3 = start_s3_with(move |b| {
        b.fault(move |req| {
            if req.operation() == "ListObjectsV2" && !held.swap(true, Ordering::SeqCst) {
                let _ = entered_tx.lock().unwrap().send(());
                // Returns when released, or when the test ends.
                let _ = release_rx.lock().unwrap().recv();
            }
            Fault::Pass
        })
    });
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.put_object("source", "a.txt", b"alpha").unwrap();
    let (addr, _stop) = start_server(backup_env(&s3, "source", "dest")).await;

    let first = tokio::spawn(http(addr, "POST", "/backup", None));
    tokio::task::spawn_blocking(move || entered_rx.recv().expect("the first backup lists"))
        .await
        .unwrap();

    let (status, body) = http(addr, "POST", "/backup", None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"error": "Conflict", "message": "a backup or restore is already running"})
    );
    // Other requests are not held up.
    let (status, body) = http(addr, "GET", "/health", None).await;
    assert_eq!(status, 200, "{body}");

    release_tx.send(()).unwrap();
    let (status, body) = first.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["filesBackedUp"], 1, "{body}");

    // Once the first instance has ended, backups are accepted again.
    let mut accepted = None;
    for _ in 0..200 {
        let (status, body) = http(addr, "POST", "/backup", None).await;
        if status != 409 {
            accepted = Some((status, body));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, body) = accepted.expect("the first backup's slot was never released");
    assert_eq!(status, 200, "{body}");
}
