//! Shared by the host's tests that run programs.

#![allow(dead_code)]

use std::process::Command;

use spaces_backup_testkit::server::S3Server;

/// `program` with an empty environment but `HOME` (Wasmtime's cache) and `PATH`, so
/// nothing from the test's own environment leaks into what is tested.
pub fn clean_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for var in ["HOME", "PATH"] {
        if let Ok(v) = std::env::var(var) {
            cmd.env(var, v);
        }
    }
    cmd
}

/// The host binary, with a clean environment.
pub fn host_command() -> Command {
    clean_command(env!("CARGO_BIN_EXE_spaces-backup"))
}

/// A backup of bucket `source` into `dest`, both on `s3` (the test kit's builder).
pub fn backup_vars(s3: &S3Server) -> Vec<(String, String)> {
    spaces_backup_testkit::env::backup_env(s3, "source", "dest")
}
