//! Builds the `spaces-backup` component (the workspace root crate) for
//! `wasm32-wasip2` so that `cargo build -p spaces-backup-host` alone works from
//! a fresh clone, the way wasmtime's test-programs build their guests.
//!
//! The path of the resulting `.wasm` reaches the crate as the compile-time env
//! var `SPACES_BACKUP_WASM`, and `src/component.rs` embeds it.
//!
//! Set `SPACES_BACKUP_COMPONENT_WASM=/path/to/spaces_backup.wasm` to embed a
//! prebuilt component instead of building one (no wasm target needed then).

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const TARGET: &str = "wasm32-wasip2";
const OVERRIDE_VAR: &str = "SPACES_BACKUP_COMPONENT_WASM";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            // `cargo::error` shows the message on its own, without the build
            // script's captured output drowning it.
            for line in msg.lines() {
                println!("cargo::error={line}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    println!("cargo::rerun-if-env-changed={OVERRIDE_VAR}");
    if let Some(prebuilt) = env::var_os(OVERRIDE_VAR).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(prebuilt);
        let path = path
            .canonicalize()
            .map_err(|e| format!("{OVERRIDE_VAR}={}: {e}", path.display()))?;
        println!("cargo::rerun-if-changed={}", path.display());
        emit_wasm_path(&path);
        return Ok(());
    }

    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR not set")?);
    let workspace = manifest_dir
        .parent()
        .ok_or("host/ has no parent directory")?
        .to_path_buf();

    // Only paths that exist: a missing one would make cargo rerun this script
    // (and relink the host) on every build. `wit/` may be absent in a clone
    // while it is empty, since git keeps no empty directories.
    for rel in ["src", "wit", "Cargo.toml", "Cargo.lock"] {
        let p = workspace.join(rel);
        if p.exists() {
            println!("cargo::rerun-if-changed={}", p.display());
        }
    }
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_DIR");

    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    check_target_installed(Path::new(&rustc))?;

    // A separate target dir: the outer cargo holds the lock on its own.
    let target_dir = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
    .join("component");

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("-p")
        .arg("spaces-backup")
        .arg("--lib")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // Settings meant for the outer (native) build would break or slow the
    // nested one: host RUSTFLAGS (e.g. -Ctarget-cpu), clippy's wrapper and its
    // arguments, the outer target and target dir, profile overrides. The
    // jobserver (CARGO_MAKEFLAGS) stays, so both builds share the same cores.
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let drop = matches!(
            key,
            "RUSTFLAGS"
                | "CARGO_ENCODED_RUSTFLAGS"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "CLIPPY_ARGS"
                | "CLIPPY_CONF_DIR"
                | "CARGO_TARGET_DIR"
                | "CARGO_BUILD_TARGET"
                | "CARGO_BUILD_TARGET_DIR"
                | "CARGO_BUILD_RUSTFLAGS"
                | "CARGO_INCREMENTAL"
                | "CARGO_LLVM_COV"
                | "CARGO_LLVM_COV_TARGET_DIR"
                | "LLVM_PROFILE_FILE"
        ) || key.starts_with("CARGO_PROFILE_");
        if drop {
            cmd.env_remove(key);
        }
    }

    let status = cmd
        .status()
        .map_err(|e| format!("could not run cargo to build the component: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the spaces-backup component for {TARGET} failed ({status}); \
             the compiler messages are in this script's stderr below (cargo build --release --target {TARGET} -p spaces-backup)"
        ));
    }

    let wasm = target_dir
        .join(TARGET)
        .join("release")
        .join("spaces_backup.wasm");
    if !wasm.is_file() {
        return Err(format!(
            "the component build succeeded but {} is missing",
            wasm.display()
        ));
    }
    emit_wasm_path(&wasm);
    Ok(())
}

fn emit_wasm_path(path: &Path) {
    println!("cargo::rustc-env=SPACES_BACKUP_WASM={}", path.display());
}

/// Fails early with the fix in the message: cargo's own error for a missing
/// target ("can't find crate for `core`") does not say what to do.
fn check_target_installed(rustc: &Path) -> Result<(), String> {
    let out = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .map_err(|e| format!("could not run {}: {e}", rustc.display()))?;
    let libdir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let has_std = out.status.success()
        && std::fs::read_dir(&libdir)
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
            })
            .unwrap_or(false);
    if has_std {
        Ok(())
    } else {
        Err(format!(
            "the Rust target {TARGET} is not installed; run: rustup target add {TARGET}\n\
             (or set {OVERRIDE_VAR} to a prebuilt spaces_backup.wasm)"
        ))
    }
}
