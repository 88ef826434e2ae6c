//! The DigitalOcean Function's entry point, run the way its Node.js runtime runs it:
//! `require` the file and call `main(args)` with the function's environment set, against
//! the local S3 server; the wrapper runs the host binary with a precompiled component.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use spaces_backup_testkit::server::S3Server;

fn function_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("function/packages/backup/backup")
}

/// The component precompiled by this build of the host, as build.sh does for the musl one.
fn precompiled(dir: &Path) -> PathBuf {
    let cwasm = dir.join("spaces_backup.cwasm");
    let out = Command::new(env!("CARGO_BIN_EXE_spaces-backup"))
        .args(["compile", "-o", cwasm.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cwasm
}

/// `main(args)` in a fresh Node.js process with `env`; returns its result and stderr.
fn invoke(env: &[(&str, String)], args: Value) -> (Value, String) {
    let script = "require(process.argv[1]).main(JSON.parse(process.argv[2]))\
                  .then((r) => process.stdout.write(JSON.stringify(r)))";
    let mut cmd = crate::common::clean_command("node");
    cmd.args([
        "-e",
        script,
        function_dir().join("index.js").to_str().unwrap(),
        &args.to_string(),
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("node is needed by this test (see .ci/run): {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "node failed:\n{stderr}");
    let result = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("main() gave no JSON ({e}):\n{stderr}"));
    (result, stderr)
}

#[test]
fn the_function_entry_point_backs_up_and_returns_the_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::builder(dir.path().join("s3")).start().unwrap();
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.put_object("source", "a.txt", b"alpha").unwrap();
    s3.put_object("source", "docs/b.txt", b"beta").unwrap();
    let cwasm = precompiled(dir.path());
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 600_000;
    let mut env: Vec<(&str, String)> = vec![
        (
            "SPACES_BACKUP_BIN",
            env!("CARGO_BIN_EXE_spaces-backup").into(),
        ),
        ("SPACES_BACKUP_COMPONENT", cwasm.to_str().unwrap().into()),
        ("__OW_DEADLINE", deadline.to_string()),
        ("SOURCE_BUCKET", "source".into()),
        ("SOURCE_REGION", "".into()),
        ("SOURCE_ENDPOINT", s3.endpoint().into()),
        ("DEST_BUCKET", "dest".into()),
        ("DEST_ENDPOINT", s3.endpoint().into()),
        ("SPACES_KEY", s3.access_key().into()),
        ("SPACES_SECRET", s3.secret_key().into()),
        ("ARCHIVE_PREFIX", "nightly".into()),
        // An empty optional variable takes its default.
        ("PART_SIZE", "".into()),
        ("ALLOW_PARAMETERS", "LOG_LEVEL,COMPRESSION,DRY_RUN".into()),
        ("ALLOW_RESTORE", "true".into()),
        ("WEB_SECRET", "w3b-s3cret".into()),
    ];

    // Web-call details and parameters the owner allows.
    let args = json!({"COMPRESSION": "store", "LOG_LEVEL": "debug", "__ow_method": "post",
                      "http": {"method": "POST"}});
    let (result, stderr) = invoke(&env, args);
    assert_eq!(result["statusCode"], 200, "{result}\n{stderr}");
    let body = &result["body"];
    assert_eq!(body["message"], "Backup completed successfully");
    assert_eq!(body["filesBackedUp"], 2);
    let key = body["archiveName"].as_str().unwrap();
    assert!(key.starts_with("nightly/backup-source-"), "{key}");
    assert!(
        stderr.contains("\"level\":\"debug\""),
        "LOG_LEVEL was passed on"
    );
    for secret in [s3.secret_key(), "w3b-s3cret"] {
        assert!(!stderr.contains(secret), "{stderr}");
    }
    let archive = s3.read_object("dest", key).unwrap();
    let zip_path = dir.path().join("a.zip");
    std::fs::write(&zip_path, archive).unwrap();
    let listing = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; \
             print(' '.join(z.namelist())); print(z.read('docs/b.txt').decode())",
            zip_path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert_eq!(
        listing,
        "a.txt docs/b.txt .spaces-backup/manifest.jsonl\nbeta\n"
    );

    // The same function verifies an archive: `action: verify`.
    let (result, stderr) = invoke(&env, json!({"action": "verify", "archive": key}));
    assert_eq!(result["statusCode"], 200, "{result}\n{stderr}");
    assert_eq!(result["body"]["identical"], true, "{result}");
    let (result, _) = invoke(
        &env,
        json!({"action": "verify", "archive": key, "mode": "integrity"}),
    );
    assert_eq!(result["body"]["intact"], true, "{result}");
    s3.create_bucket("restored").unwrap();
    let (result, stderr) = invoke(
        &env,
        json!({"action": "restore", "archive": key, "to": "restored/copy"}),
    );
    assert_eq!(result["statusCode"], 200, "{result}\n{stderr}");
    assert_eq!(result["body"]["objectsRestored"], 2);
    assert_eq!(
        s3.read_object("restored", "copy/docs/b.txt").unwrap(),
        b"beta"
    );
    let (result, _) = invoke(&env, json!({"action": "restore-everything"}));
    assert_eq!(result["statusCode"], 400, "{result}");

    // Bad configuration: the envelope's status and message, as the original returned them.
    env.retain(|(k, _)| *k != "SOURCE_BUCKET");
    let (result, _) = invoke(&env, json!({}));
    assert_eq!(result["statusCode"], 400, "{result}");
    assert_eq!(result["body"]["code"], "InvalidConfiguration");
    assert!(result["body"]["message"]
        .as_str()
        .unwrap()
        .contains("SOURCE_BUCKET"));

    // A runtime that unpacks the binary without its exec bit: the wrapper runs a copy.
    let unexecutable = dir.path().join("spaces-backup-no-exec");
    std::fs::copy(env!("CARGO_BIN_EXE_spaces-backup"), &unexecutable).unwrap();
    std::fs::set_permissions(
        &unexecutable,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    env.retain(|(k, _)| *k != "SPACES_BACKUP_BIN");
    env.push(("SPACES_BACKUP_BIN", unexecutable.to_str().unwrap().into()));
    env.push(("SOURCE_BUCKET", "source".into()));
    // The copy goes to the temporary folder (the test's own), once for warm invocations.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    env.push(("TMPDIR", tmp.to_str().unwrap().into()));
    for _ in 0..2 {
        let (result, stderr) = invoke(&env, json!({"DRY_RUN": true}));
        assert_eq!(result["statusCode"], 200, "{result}\n{stderr}");
        assert!(stderr.contains("\"arch\":\"x64\""), "{stderr}");
    }
    let copies: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    env.retain(|(k, _)| *k != "SOURCE_BUCKET" && *k != "TMPDIR");

    // A missing host binary is a clear failure, not a crash.
    env.retain(|(k, _)| *k != "SPACES_BACKUP_BIN");
    env.push(("SPACES_BACKUP_BIN", "/nonexistent/spaces-backup".into()));
    let (result, _) = invoke(&env, json!({}));
    assert_eq!(result["statusCode"], 500, "{result}");
    assert!(result["body"]["message"]
        .as_str()
        .unwrap()
        .contains("/nonexistent/spaces-backup"));
}

/// What a caller may not change: each dangerous parameter is refused by name, and no
/// request goes anywhere.
#[test]
fn the_function_refuses_what_the_owner_did_not_allow() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::builder(dir.path().join("s3")).start().unwrap();
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.put_object("source", "a.txt", b"alpha").unwrap();
    let cwasm = precompiled(dir.path());
    let mut env: Vec<(&str, String)> = vec![
        (
            "SPACES_BACKUP_BIN",
            env!("CARGO_BIN_EXE_spaces-backup").into(),
        ),
        ("SPACES_BACKUP_COMPONENT", cwasm.to_str().unwrap().into()),
        ("SOURCE_BUCKET", "source".into()),
        ("SOURCE_ENDPOINT", s3.endpoint().into()),
        ("DEST_BUCKET", "dest".into()),
        ("DEST_ENDPOINT", s3.endpoint().into()),
        ("SPACES_KEY", s3.access_key().into()),
        ("SPACES_SECRET", s3.secret_key().into()),
    ];
    let refused = [
        json!({"DEST_ENDPOINT": "https://their-server.example"}),
        json!({"SOURCE_ENDPOINT": "https://their-server.example"}),
        json!({"SOURCE_BUCKET": "other"}),
        json!({"DEST_BUCKET": "other"}),
        json!({"ARCHIVE_PREFIX": "elsewhere"}),
        json!({"KEEP_LAST": 1}),
        json!({"KEEP_DAYS": "1"}),
        json!({"MAX_MEMORY": "8GiB"}),
        json!({"SPACES_SECRET": "other"}),
        json!({"BACKUP_TOKEN": "x"}),
        json!({"ALLOW_PARAMETERS": "DEST_ENDPOINT"}),
        // Abandoning a checkpoint aborts the earlier runs' upload.
        json!({"DISCARD_CHECKPOINT": true}),
        // Whether a chain invokes itself is the owner's call.
        json!({"CONTINUE": false}),
        json!({"__OW_DEADLINE": "1"}),
        // Allowed only when the owner lists it.
        json!({"EXCLUDE": "*"}),
        json!({"INCLUDE_PREFIXES": "nothing/"}),
        json!({"NOT_A_SETTING": "1"}),
    ];
    for args in refused {
        let name = args.as_object().unwrap().keys().next().unwrap().clone();
        let (result, _) = invoke(&env, args);
        assert_eq!(result["statusCode"], 400, "{name}: {result}");
        assert_eq!(result["body"]["code"], "ParameterNotAllowed", "{result}");
        let message = result["body"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("'{name}'")), "{message}");
    }
    // Restore by invocation is off unless the owner enables it.
    let (result, _) = invoke(
        &env,
        json!({"action": "restore", "archive": "backups/x.zip", "to": "source", "overwrite": true}),
    );
    assert_eq!(result["statusCode"], 403, "{result}");
    assert!(result["body"]["message"]
        .as_str()
        .unwrap()
        .contains("ALLOW_RESTORE=true"));
    assert!(
        s3.requests().is_empty(),
        "a refused invocation sent requests"
    );

    // The owner may allow only what neither sends data elsewhere nor deletes anything.
    env.push(("ALLOW_PARAMETERS", "DRY_RUN,KEEP_LAST".into()));
    let (result, _) = invoke(&env, json!({"DRY_RUN": true}));
    assert_eq!(result["statusCode"], 500, "{result}");
    assert!(result["body"]["message"]
        .as_str()
        .unwrap()
        .contains("'KEEP_LAST'"));
    assert!(s3.requests().is_empty());

    // What the default allows: a dry run.
    env.retain(|(k, _)| *k != "ALLOW_PARAMETERS");
    let (result, stderr) = invoke(&env, json!({"DRY_RUN": "true"}));
    assert_eq!(result["statusCode"], 200, "{result}\n{stderr}");
    assert_eq!(result["body"]["dryRun"], true, "{result}");
}

/// A stand-in for the platform's REST API: records each request (request line,
/// Authorization, body) and answers 202 with an activation id, as OpenWhisk does for
/// `blocking=false`.
struct FakeApi {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String, Value)>>>,
}

fn fake_api() -> FakeApi {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let (mut auth, mut len) = (String::new(), 0usize);
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (name, value) = h.split_once(':').unwrap();
                match name.to_ascii_lowercase().as_str() {
                    "authorization" => auth = value.trim().to_string(),
                    "content-length" => len = value.trim().parse().unwrap(),
                    _ => {}
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let mut seen = log.lock().unwrap();
            seen.push((
                line.trim_end().to_string(),
                auth,
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            ));
            let answer = format!("{{\"activationId\":\"act-{}\"}}", seen.len());
            let _ = write!(
                stream,
                "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    FakeApi { url, seen }
}

/// A backup bigger than one run completes from one invocation: each run that stops at
/// its deadline invokes the function again (asynchronously, through the REST API with
/// the action's own key and the same parameters) until the archive is complete; with
/// CONTINUE=false the next trigger is left to do it. The key never reaches the log.
#[test]
fn a_continuing_backup_invokes_the_function_again_until_complete() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::builder(dir.path().join("s3"))
        .in_memory()
        .fault(|req| {
            if req.operation() == "GetObject" && !req.path.contains(".spaces-backup") {
                spaces_backup_testkit::server::Fault::Delay(std::time::Duration::from_millis(40))
            } else {
                spaces_backup_testkit::server::Fault::Pass
            }
        })
        .start()
        .unwrap();
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    for i in 0..80u32 {
        s3.put_object(
            "source",
            &format!("obj-{i:03}"),
            format!("object {i}").as_bytes(),
        )
        .unwrap();
    }
    let cwasm = precompiled(dir.path());
    let api = fake_api();
    let key = "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:k3y-s3cr3t-for-the-api";
    let mut env: Vec<(&str, String)> = vec![
        (
            "SPACES_BACKUP_BIN",
            env!("CARGO_BIN_EXE_spaces-backup").into(),
        ),
        ("SPACES_BACKUP_COMPONENT", cwasm.to_str().unwrap().into()),
        ("SOURCE_BUCKET", "source".into()),
        ("SOURCE_ENDPOINT", s3.endpoint().into()),
        ("DEST_BUCKET", "dest".into()),
        ("DEST_ENDPOINT", s3.endpoint().into()),
        ("SPACES_KEY", s3.access_key().into()),
        ("SPACES_SECRET", s3.secret_key().into()),
        ("MAX_RUN_SECONDS", "2".into()),
        ("CONCURRENCY", "1".into()),
        ("ALLOW_PARAMETERS", "LOG_LEVEL".into()),
        ("__OW_API_HOST", api.url.clone()),
        ("__OW_API_KEY", key.into()),
        ("__OW_ACTION_NAME", "/fn-test/backup/backup".into()),
        ("CONTINUE", "false".into()),
    ];
    let args = json!({"LOG_LEVEL": "info", "__ow_method": "post", "http": {"method": "POST"}});

    // Left to the schedule: no invocation.
    let (result, stderr) = invoke(&env, args.clone());
    assert_eq!(result["statusCode"], 202, "{result}\n{stderr}");
    assert!(result["body"].get("continuation").is_none(), "{result}");
    assert!(api.seen.lock().unwrap().is_empty());

    env.retain(|(k, _)| *k != "CONTINUE");
    env.push(("CONTINUE", "maybe".into()));
    let (result, _) = invoke(&env, args.clone());
    assert_eq!(result["statusCode"], 500, "{result}");
    assert!(
        result["body"]["message"]
            .as_str()
            .unwrap()
            .contains("CONTINUE"),
        "{result}"
    );
    env.retain(|(k, _)| *k != "CONTINUE");

    // By default each continuing run invokes the next; the platform is played here.
    // `run` is the chain's run number of each invocation (the first was above).
    let mut args = args;
    let mut run = 1;
    loop {
        run += 1;
        assert!(run < 30, "still continuing after {run} runs");
        let (result, stderr) = invoke(&env, args.clone());
        assert!(!stderr.contains("k3y-s3cr3t"), "{stderr}");
        let body = &result["body"];
        assert_eq!(body["runs"], run, "{result}\n{stderr}");
        let seen = api.seen.lock().unwrap().clone();
        if result["statusCode"] == 200 {
            assert_eq!(body["status"], "completed", "{result}");
            assert_eq!(seen.len(), run - 2, "the last run invokes nothing");
            assert_eq!(body["filesBackedUp"], 80, "{result}");
            assert!(body.get("continuation").is_none(), "{result}");
            break;
        }
        assert_eq!(result["statusCode"], 202, "{result}\n{stderr}");
        assert_eq!(seen.len(), run - 1, "{seen:?}");
        let (line, auth, params) = seen.last().unwrap().clone();
        assert_eq!(
            line,
            "POST /api/v1/namespaces/fn-test/actions/backup/backup?blocking=false HTTP/1.1"
        );
        let basic = base64::engine::general_purpose::STANDARD.encode(key);
        assert_eq!(auth, format!("Basic {basic}"));
        // The same request, without the platform's details of the web call.
        assert_eq!(params, json!({"LOG_LEVEL": "info"}));
        let expected = format!("act-{}", seen.len());
        assert_eq!(
            body["continuation"]["activationId"],
            expected.as_str(),
            "{result}"
        );
        args = params;
    }
    let runs = run;
    assert!(runs >= 3, "{runs} runs");
    assert_eq!(s3.open_multipart_uploads("dest").unwrap(), 0);
    let archives = s3
        .object_keys("dest")
        .unwrap()
        .into_iter()
        .filter(|k| k.ends_with(".zip"))
        .count();
    assert_eq!(archives, 1);
}

/// A sharded backup through the function, as README's `doctl` commands drive it:
/// `action: plan` with `shards`, `shard: "i/N"` for each shard, then `action: compose`.
#[test]
fn the_function_runs_a_sharded_backup_by_its_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::builder(dir.path().join("s3"))
        .in_memory()
        .start()
        .unwrap();
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    for i in 0..30 {
        s3.put_object(
            "source",
            &format!("k/{i:02}"),
            format!("object {i}").as_bytes(),
        )
        .unwrap();
    }
    let cwasm = precompiled(dir.path());
    let env: Vec<(&str, String)> = vec![
        (
            "SPACES_BACKUP_BIN",
            env!("CARGO_BIN_EXE_spaces-backup").into(),
        ),
        ("SPACES_BACKUP_COMPONENT", cwasm.to_str().unwrap().into()),
        ("SOURCE_BUCKET", "source".into()),
        ("SOURCE_ENDPOINT", s3.endpoint().into()),
        ("DEST_BUCKET", "dest".into()),
        ("DEST_ENDPOINT", s3.endpoint().into()),
        ("SPACES_KEY", s3.access_key().into()),
        ("SPACES_SECRET", s3.secret_key().into()),
        ("CONTINUE", "false".into()),
    ];
    let (result, stderr) = invoke(&env, json!({"action": "plan", "shards": 3}));
    assert_eq!(result["statusCode"], 200, "{result}\n{stderr}");
    assert_eq!(result["body"]["shards"].as_array().unwrap().len(), 3);
    let (result, _) = invoke(&env, json!({"shard": "4/3"}));
    assert_eq!(result["statusCode"], 400, "{result}");
    assert!(
        result["body"]["message"]
            .as_str()
            .unwrap()
            .contains("SHARD"),
        "{result}"
    );
    let (result, _) = invoke(&env, json!({"action": "compose"}));
    assert_eq!(result["statusCode"], 404, "a shard is missing: {result}");
    for i in 1..=3 {
        let (result, stderr) = invoke(&env, json!({"shard": format!("{i}/3")}));
        assert_eq!(result["statusCode"], 200, "{result}\n{stderr}");
    }
    let (result, stderr) = invoke(&env, json!({"action": "compose"}));
    assert_eq!(result["statusCode"], 200, "{result}\n{stderr}");
    assert_eq!(result["body"]["filesBackedUp"], 30, "{result}");
    assert_eq!(result["body"]["fragments"], 3, "{result}");
    let (result, _) = invoke(&env, json!({"action": "plan", "shards": 0}));
    assert_eq!(result["statusCode"], 400, "{result}");
}
