//! Shared by the host's tests that run programs: `mod common;` in a test file.

#![allow(dead_code)]

pub mod sigv4;

use std::process::Command;

use spaces_backup_host::s3server::S3Server;

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

/// A backup of bucket `source` into `dest`, both on `s3`.
pub fn backup_vars(s3: &S3Server) -> Vec<(&'static str, String)> {
    vec![
        ("SOURCE_BUCKET", "source".into()),
        ("SOURCE_ENDPOINT", s3.endpoint().into()),
        ("DEST_BUCKET", "dest".into()),
        ("DEST_ENDPOINT", s3.endpoint().into()),
        ("SPACES_KEY", s3.access_key().into()),
        ("SPACES_SECRET", s3.secret_key().into()),
    ]
}
