//! `spaces-backup`: run the backup component once, serve it over HTTP, or
//! try it end to end on an in-process S3 server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};

use spaces_backup::model::{ErrorBody, VerifyAnswer};
#[cfg(feature = "demo")]
use spaces_backup_host::demo::{self, DemoOptions};
use spaces_backup_host::progress::ProgressSink;
use spaces_backup_host::{env, envelope_line, host_error_body, one_line_error, Runner};

#[derive(Parser)]
#[command(
    name = "spaces-backup",
    version,
    about = "Back up every object of an S3 bucket into one ZIP archive"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one backup with the environment (and ./.env), print the response
    /// envelope as one JSON line on stdout; exit 0 only on success
    Run {
        #[command(flatten)]
        component: ComponentArg,
        /// Read variables from this file instead of ./.env (process env wins)
        #[arg(long, value_name = "PATH")]
        env_file: Option<PathBuf>,
    },
    /// Compare an archive in DEST_BUCKET with the source bucket as it is now: prints the
    /// objects missing, changed and new since the backup, then a summary; exits 0 only
    /// when they match
    Verify {
        #[command(flatten)]
        component: ComponentArg,
        /// The archive's key in DEST_BUCKET, e.g. backups/backup-my-bucket-2025-12-19T10-30-00-000Z.zip
        #[arg(long, value_name = "KEY")]
        archive: String,
        /// Also compare contents: read every source object and compare its CRC-32
        #[arg(long)]
        deep: bool,
        /// Check the archive itself instead, without the source: read it once and check
        /// every entry's CRC-32 and size
        #[arg(long, conflicts_with = "deep")]
        integrity: bool,
        /// Print the response envelope (JSON) instead of lines
        #[arg(long)]
        json: bool,
        /// Read variables from this file instead of ./.env (process env wins)
        #[arg(long, value_name = "PATH")]
        env_file: Option<PathBuf>,
    },
    /// Restore an archive in DEST_BUCKET into a bucket on SOURCE_ENDPOINT, with exact keys,
    /// Content-Type and user metadata; prints the response envelope
    Restore {
        #[command(flatten)]
        component: ComponentArg,
        /// The archive's key in DEST_BUCKET
        #[arg(long, value_name = "KEY")]
        archive: String,
        /// Where to restore: BUCKET, or BUCKET/PREFIX to put every key under PREFIX
        #[arg(long, value_name = "BUCKET[/PREFIX]")]
        to: String,
        /// Replace objects that already exist (otherwise the restore is refused)
        #[arg(long)]
        overwrite: bool,
        /// Read variables from this file instead of ./.env (process env wins)
        #[arg(long, value_name = "PATH")]
        env_file: Option<PathBuf>,
    },
    /// Serve POST /backup and GET /health over HTTP, like `wasmtime serve`
    Serve {
        #[command(flatten)]
        component: ComponentArg,
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
        addr: SocketAddr,
        /// Read variables from this file instead of ./.env (process env wins)
        #[arg(long, value_name = "PATH")]
        env_file: Option<PathBuf>,
    },
    /// Back up a generated bucket on an in-process S3 server (127.0.0.1, a
    /// temporary folder) and check the archive byte for byte
    #[cfg(feature = "demo")]
    Demo {
        #[command(flatten)]
        component: ComponentArg,
        /// Keep the temporary folder with the archive
        #[arg(long)]
        keep: bool,
        /// Number of objects to seed
        #[arg(long, default_value_t = 300, value_name = "N")]
        objects: usize,
    },
    /// Precompile the component for this host build (.cwasm), to skip
    /// compilation at start-up (e.g. in a serverless function)
    Compile {
        #[command(flatten)]
        component: ComponentArg,
        /// Where to write the precompiled component
        #[arg(
            long,
            short,
            default_value = "spaces_backup.cwasm",
            value_name = "PATH"
        )]
        output: PathBuf,
    },
}

#[derive(Args)]
struct ComponentArg {
    /// Run this component (.wasm, or .cwasm from `compile`) instead of the embedded one
    #[arg(long, value_name = "PATH")]
    component: Option<PathBuf>,
}

impl ComponentArg {
    fn runner(&self) -> Result<Runner> {
        match &self.component {
            Some(path) => Runner::from_file(path),
            None => Runner::embedded(),
        }
    }
}

fn main() -> ExitCode {
    // A bug must still end in one readable line, not a panic dump.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("spaces-backup: internal error: {msg}{at}");
    }));

    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("spaces-backup: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Run {
                component,
                env_file,
            } => run(&component, env_file.as_deref()).await,
            Command::Serve {
                component,
                addr,
                env_file,
            } => report(serve(&component, addr, env_file.as_deref()).await),
            Command::Restore {
                component,
                archive,
                to,
                overwrite,
                env_file,
            } => {
                let path = format!(
                    "/restore?archive={}&to={}{}",
                    query_encode(&archive),
                    query_encode(&to),
                    if overwrite { "&overwrite=true" } else { "" }
                );
                request_once(&component, env_file.as_deref(), &path).await
            }
            Command::Verify {
                component,
                archive,
                deep,
                integrity,
                json,
                env_file,
            } => {
                let mode = match (deep, integrity) {
                    (_, true) => "&integrity=true",
                    (true, _) => "&deep=true",
                    _ => "",
                };
                verify(&component, env_file.as_deref(), &archive, mode, json).await
            }
            #[cfg(feature = "demo")]
            Command::Demo {
                component,
                keep,
                objects,
            } => report(run_demo(&component, keep, objects).await),
            Command::Compile { component, output } => report(compile(&component, &output)),
        }
    })
}

fn report(result: Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("spaces-backup: error: {}", one_line_error(&e));
            ExitCode::FAILURE
        }
    }
}

fn load_env(env_file: Option<&Path>) -> Result<Vec<(String, String)>> {
    match env_file {
        Some(path) => env::load(path, true),
        None => env::load(Path::new(".env"), false),
    }
}

/// The component's environment and a runner for one command: memory capped by
/// MAX_MEMORY, progress drawn when stderr is a terminal.
fn prepare(component: &ComponentArg, env_file: Option<&Path>) -> Result<(env::EnvVars, Runner)> {
    let mut vars = load_env(env_file)?;
    // `serve`'s token is the host's, not the component's.
    vars.retain(|(k, _)| k != spaces_backup_host::TOKEN_VAR);
    let runner = component
        .runner()?
        .with_memory_limit(Some(env::max_memory(&vars)))
        .with_progress(terminal_progress());
    Ok((vars, runner))
}

/// `POST path` to the component; a failure of the host itself is printed as an envelope.
async fn call(
    component: &ComponentArg,
    env_file: Option<&Path>,
    path: &str,
) -> Result<(u16, Vec<u8>), ExitCode> {
    let result = async {
        let (vars, runner) = prepare(component, env_file)?;
        runner.handle(&vars, "POST", path, "").await
    }
    .await;
    if let Some(sink) = terminal_progress() {
        sink.finish();
    }
    result.map_err(|e| {
        let message = one_line_error(&e);
        eprintln!("spaces-backup: error: {message}");
        println!(
            "{}",
            envelope_line(500, host_error_body(&message).as_bytes())
        );
        ExitCode::FAILURE
    })
}

async fn run(component: &ComponentArg, env_file: Option<&Path>) -> ExitCode {
    let result = async {
        let (vars, runner) = prepare(component, env_file)?;
        let backup = runner.handle(&vars, "POST", "/backup", "");
        tokio::pin!(backup);
        tokio::select! {
            result = &mut backup => result,
            signal = stop_signal() => {
                // Refuse the component's further requests but its abort: it fails at
                // its next request and aborts its multipart upload, then answers.
                eprintln!("spaces-backup: {signal} received: stopping, the upload will be aborted");
                runner.stop_outgoing();
                match tokio::time::timeout(STOP_GRACE, &mut backup).await {
                    Ok(result) => result,
                    Err(_) => Err(anyhow::anyhow!(
                        "stopped by {signal} before the backup could abort its multipart upload; \
                         remove it with AbortMultipartUpload or a lifecycle rule"
                    )),
                }
            }
        }
    }
    .await;
    if let Some(sink) = terminal_progress() {
        sink.finish();
    }
    let (code, line) = match result {
        Ok((status, body)) => {
            let code = if status == 200 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
            (code, envelope_line(status, &body))
        }
        Err(e) => {
            let message = one_line_error(&e);
            eprintln!("spaces-backup: error: {message}");
            (
                ExitCode::FAILURE,
                envelope_line(500, host_error_body(&message).as_bytes()),
            )
        }
    };
    println!("{line}");
    code
}

/// How long a stopping backup may take to abort its upload and answer.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(25);

/// Resolves on SIGINT or SIGTERM, with the signal's name.
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            return tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "SIGINT"
}

/// The progress bar, shared by the whole process, when stderr is a terminal.
fn terminal_progress() -> Option<ProgressSink> {
    static SINK: std::sync::OnceLock<Option<ProgressSink>> = std::sync::OnceLock::new();
    SINK.get_or_init(|| {
        use std::io::IsTerminal as _;
        std::io::stderr().is_terminal().then(ProgressSink::new)
    })
    .clone()
}

/// One request to the component; prints the envelope, exit 0 only on 200.
async fn request_once(component: &ComponentArg, env_file: Option<&Path>, path: &str) -> ExitCode {
    match call(component, env_file, path).await {
        Ok((status, body)) => {
            println!("{}", envelope_line(status, &body));
            if status == 200 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(code) => code,
    }
}

/// What a key keeps unencoded in a query string: unreserved characters and `/`.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Percent-encodes a key for a query string.
fn query_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, QUERY_VALUE).to_string()
}

async fn verify(
    component: &ComponentArg,
    env_file: Option<&Path>,
    archive: &str,
    mode: &str,
    json: bool,
) -> ExitCode {
    let path = format!("/verify?archive={}{mode}", query_encode(archive));
    let (status, body) = match call(component, env_file, &path).await {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    if json || status != 200 {
        println!("{}", envelope_line(status, &body));
    }
    if status != 200 {
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|e| e.message)
            .unwrap_or_else(|_| "no message".into());
        eprintln!("spaces-backup: verify failed: {message}");
        return ExitCode::FAILURE;
    }
    let answer = match serde_json::from_slice::<VerifyAnswer>(&body) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("spaces-backup: verify answered what this host does not read: {e}");
            return ExitCode::FAILURE;
        }
    };
    let identical = match &answer {
        VerifyAnswer::Integrity(r) => r.identical,
        VerifyAnswer::Compare(r) => r.identical,
    };
    if !json {
        print_verify(&answer, archive);
    }
    if identical {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One line per difference (or damaged entry), then the summary.
fn print_verify(answer: &VerifyAnswer, archive: &str) {
    match answer {
        VerifyAnswer::Integrity(r) => {
            for d in &r.damaged {
                println!("damaged  {}  ({})", d.entry, d.reason);
            }
            println!(
                "{}: {} entries, {} damaged, {} bytes checked ({archive})",
                r.message, r.entries, r.damaged_entries, r.bytes_checked,
            );
        }
        VerifyAnswer::Compare(r) => {
            for d in &r.differences {
                let reason = d
                    .reason
                    .as_deref()
                    .map(|r| format!("  ({r})"))
                    .unwrap_or_default();
                println!("{:<8} {}{reason}", d.status, d.key);
            }
            let total = r.missing + r.changed + r.new;
            if total > r.differences.len() as u64 {
                println!("... and {} more", total - r.differences.len() as u64);
            }
            println!(
                "{}: {} unchanged, {} missing, {} changed, {} new ({} objects in {archive}, {} entries)",
                r.message, r.unchanged, r.missing, r.changed, r.new, r.objects_in_archive, r.entries,
            );
        }
    }
}

async fn serve(
    component: &ComponentArg,
    addr: SocketAddr,
    env_file: Option<&Path>,
) -> Result<ExitCode> {
    let vars = load_env(env_file)?;
    // Before compiling the component: refuse at once.
    spaces_backup_host::check_listen_addr(addr, &vars)?;
    let runner = component
        .runner()?
        .with_memory_limit(Some(env::max_memory(&vars)));
    spaces_backup_host::serve(addr, runner, vars).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "demo")]
async fn run_demo(component: &ComponentArg, keep: bool, objects: usize) -> Result<ExitCode> {
    let runner = component.runner()?;
    let outcome = demo::run(&runner, &DemoOptions { keep, objects }).await?;
    Ok(if outcome.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn compile(component: &ComponentArg, output: &Path) -> Result<ExitCode> {
    let wasm = match &component.component {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        None => spaces_backup_host::EMBEDDED_COMPONENT.to_vec(),
    };
    let cwasm = Runner::precompile(&wasm)?;
    std::fs::write(output, &cwasm).with_context(|| format!("cannot write {}", output.display()))?;
    eprintln!(
        "spaces-backup: wrote {} ({} bytes); run it with --component {}",
        output.display(),
        cwasm.len(),
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}
