//! The DigitalOcean Functions project as the deployer reads it: `doctl serverless deploy`
//! substitutes `${...}` from `.env` before it parses `project.yml`. Read here with the
//! library doctl's deployer grew from (`@nimbella/nimbella-deployer` 4.3.10, its
//! `readProject`; `tests/run.sh` installs it with npm) for a `.env` with only what is
//! required, one with every variable (globs and numbers included), and one without
//! `WEB_SECRET`.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Where tests/run.sh installs the deployer library.
fn deployer_modules() -> PathBuf {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-tools/deployer/node_modules");
    assert!(
        dir.join("@nimbella/nimbella-deployer").is_dir(),
        "the deployer library is needed by this test: run tests/run.sh, which installs it into {}",
        dir.display()
    );
    dir
}

/// The project folder with `env` as its `.env`, read by the deployer.
fn read_project(env: &str) -> Value {
    let function = Path::new(env!("CARGO_MANIFEST_DIR")).join("function");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(function.join("project.yml"), dir.path().join("project.yml")).unwrap();
    let package = dir.path().join("packages/backup/backup");
    std::fs::create_dir_all(&package).unwrap();
    for file in ["index.js", "package.json", ".include"] {
        std::fs::copy(
            function.join("packages/backup/backup").join(file),
            package.join(file),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join(".env"), env).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/deployer/read-project.js");
    let out = crate::common::clean_command("node")
        .arg(script)
        .arg(dir.path())
        .env("NODE_PATH", deployer_modules())
        .output()
        .unwrap_or_else(|e| panic!("node is needed by this test (see tests/run.sh): {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

const REQUIRED: &str = "SOURCE_BUCKET=my-source\nDEST_BUCKET=my-dest\nSPACES_KEY=DO00KEY\n\
                        SPACES_SECRET=s3cret/with+chars\nWEB_SECRET=w3b-s3cret\n";

/// The function the deploy would create, checked for what every deploy must have.
fn the_function(read: &Value) -> &Value {
    assert!(read.get("error").is_none(), "the deploy would fail: {read}");
    let functions = read["functions"].as_array().unwrap();
    assert_eq!(functions.len(), 1, "{read}");
    let f = &functions[0];
    assert_eq!(f["name"], "backup/backup");
    assert_eq!(f["runtime"], "nodejs:22");
    assert_eq!(f["main"], "main");
    assert_eq!(f["web"], true);
    assert_eq!(f["limits"]["timeout"], 900_000);
    assert_eq!(f["limits"]["memory"], 1024);
    // The action's own key, for a chain that invokes itself to continue.
    assert_eq!(f["annotations"]["provide-api-key"], true, "{f}");
    f
}

/// `NAME=...` with an upper-case name.
fn is_assignment(line: &str) -> bool {
    line.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
    })
}

/// `NAME=value` lines, as the environment must hold them: every one, as a string.
fn expected_env(env: &str) -> serde_json::Map<String, Value> {
    env.lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), Value::String(v.to_string()))
        })
        .collect()
}

#[test]
fn deploys_with_only_the_required_variables() {
    let read = read_project(REQUIRED);
    let f = the_function(&read);
    assert_eq!(f["webSecure"], "w3b-s3cret");
    assert_eq!(
        f["environment"].as_object().unwrap(),
        &expected_env(REQUIRED)
    );
    assert_eq!(f["triggers"][0]["sourceDetails"]["cron"], "0 2 * * *");
}

#[test]
fn deploys_with_every_variable_set() {
    // .env.example with every commented-out variable set, as a user fills it in.
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.env.example"))
            .unwrap();
    let mut env = String::new();
    for line in example.lines() {
        // `#NAME=value` is a variable left unset: set it.
        let line = match line.strip_prefix('#') {
            Some(rest) if is_assignment(rest) => rest,
            _ => line,
        };
        let line = match line {
            "SPACES_KEY=" => "SPACES_KEY=DO00KEY",
            "SPACES_SECRET=" => "SPACES_SECRET=s3cret",
            "WEB_SECRET=" => "WEB_SECRET=w3b",
            "BACKUP_TOKEN=" => "BACKUP_TOKEN=b-token",
            "RESTORE_TOKEN=" => "RESTORE_TOKEN=r-token",
            other => other,
        };
        env.push_str(line);
        env.push('\n');
    }
    assert!(
        env.contains("\nEXCLUDE=*.tmp,cache/\n") && env.contains("\nKEEP_LAST=7\n"),
        "{env}"
    );
    let read = read_project(&env);
    let f = the_function(&read);
    assert_eq!(f["webSecure"], "w3b");
    let environment = f["environment"].as_object().unwrap();
    assert_eq!(environment, &expected_env(&env));
    assert_eq!(environment["EXCLUDE"], "*.tmp,cache/");
    assert_eq!(environment["CONCURRENCY"], "32");
}

#[test]
fn a_missing_web_secret_fails_the_deploy_naming_it() {
    let env: String = REQUIRED
        .lines()
        .filter(|l| !l.starts_with("WEB_SECRET"))
        .map(|l| format!("{l}\n"))
        .collect();
    let read = read_project(&env);
    let error = read["error"]
        .as_str()
        .unwrap_or_else(|| panic!("deployed without a secret: {read}"));
    assert!(error.contains("WEB_SECRET"), "{error}");
}
