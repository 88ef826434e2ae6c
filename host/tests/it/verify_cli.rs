//! `spaces-backup run` then `spaces-backup verify --archive KEY`: lines, summary and
//! exit codes, through the real CLI.

use std::path::Path;

use spaces_backup_testkit::server::S3Server;

fn cli(s3: &S3Server, cwd: &Path, args: &[&str]) -> (bool, String) {
    let out = crate::common::host_command()
        .args(args)
        .current_dir(cwd)
        .envs(crate::common::backup_vars(s3))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn verify_prints_differences_and_exits_non_zero_on_any() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::builder(dir.path().join("s3"))
        .in_memory()
        .start()
        .unwrap();
    s3.create_bucket("source").unwrap();
    s3.create_bucket("dest").unwrap();
    s3.put_object("source", "a.txt", b"alpha").unwrap();
    s3.put_object("source", "b.txt", b"bravo").unwrap();
    let (ok, out) = cli(&s3, dir.path(), &["run"]);
    assert!(ok, "{out}");
    let envelope: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let archive = envelope["body"]["archiveName"]
        .as_str()
        .unwrap()
        .to_string();

    let (ok, out) = cli(&s3, dir.path(), &["verify", "--archive", &archive]);
    assert!(ok, "{out}");
    assert!(
        out.starts_with("The archive matches the source: 2 unchanged, 0 missing, 0 changed, 0 new"),
        "{out}"
    );

    s3.delete_object("source", "a.txt").unwrap();
    s3.put_object("source", "c.txt", b"charlie").unwrap();
    let (ok, out) = cli(&s3, dir.path(), &["verify", "--archive", &archive]);
    assert!(!ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "missing  a.txt");
    assert_eq!(lines[1], "new      c.txt");
    assert!(lines[2].starts_with("The archive differs from the source: 1 unchanged, 1 missing"));

    let (ok, out) = cli(
        &s3,
        dir.path(),
        &["verify", "--archive", &archive, "--integrity"],
    );
    assert!(ok, "{out}");
    assert!(
        out.starts_with("Every entry of the archive is intact: 3 entries, 0 damaged"),
        "{out}"
    );

    s3.create_bucket("restored").unwrap();
    let (ok, out) = cli(
        &s3,
        dir.path(),
        &["restore", "--archive", &archive, "--to", "restored/again"],
    );
    assert!(ok, "{out}");
    assert_eq!(s3.read_object("restored", "again/a.txt").unwrap(), b"alpha");
    let (ok, out) = cli(
        &s3,
        dir.path(),
        &["restore", "--archive", &archive, "--to", "restored/again"],
    );
    assert!(!ok, "a second restore over the same keys is refused: {out}");

    let (ok, out) = cli(
        &s3,
        dir.path(),
        &["verify", "--archive", &archive, "--json"],
    );
    assert!(!ok);
    let envelope: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(envelope["statusCode"], 200);
    assert_eq!(envelope["body"]["new"], 1);
}
