//! What each command of the CLI does: prepare the component's environment and runner,
//! send it one request (or serve), and print what it answers.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result};

use crate::ComponentArg;
use spaces_backup::auth::{BACKUP_TOKEN, RESTORE_TOKEN};
use spaces_backup::model::{ErrorBody, VerifyAnswer};
#[cfg(feature = "demo")]
use spaces_backup_host::demo::{self, DemoOptions};
use spaces_backup_host::progress::ProgressSink;
use spaces_backup_host::{env, envelope_line, host_error_body, one_line_error, trust, Runner};

pub(crate) fn report(result: Result<ExitCode>) -> ExitCode {
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
    // The tokens guard the HTTP entry points; the CLI is the owner's own.
    vars.retain(|(k, _)| k != BACKUP_TOKEN && k != RESTORE_TOKEN);
    let roots = trust::roots(&vars)?;
    let runner = component
        .runner()?
        .with_roots(roots)
        .with_memory_limit(Some(env::max_memory(&vars)))
        .with_progress(terminal_progress());
    Ok((vars, runner))
}

/// The envelope for a failure of the host itself: a CA file that cannot be used is bad
/// configuration (400, naming the variable); anything else is the host's (500).
fn host_failure(e: &anyhow::Error) -> String {
    let message = one_line_error(e);
    eprintln!("spaces-backup: error: {message}");
    if let Some(t) = e.downcast_ref::<trust::TrustError>() {
        let body = serde_json::json!({"error": "Backup failed", "message": t.0,
                                      "code": "InvalidConfiguration"});
        return envelope_line(400, body.to_string().as_bytes());
    }
    envelope_line(500, host_error_body(&message).as_bytes())
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
        println!("{}", host_failure(&e));
        ExitCode::FAILURE
    })
}

pub(crate) async fn run(
    component: &ComponentArg,
    env_file: Option<&Path>,
    shards: Option<u32>,
) -> ExitCode {
    let result = async {
        let (vars, runner) = prepare(component, env_file)?;
        let backup = async {
            match shards {
                Some(n) => run_sharded(&runner, &vars, n).await,
                None => runner.handle(&vars, "POST", "/backup", "").await,
            }
        };
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
            let code = match status {
                200 => ExitCode::SUCCESS,
                // Stopped at its deadline with a checkpoint: run again to continue.
                202 => ExitCode::from(EX_TEMPFAIL),
                _ => ExitCode::FAILURE,
            };
            (code, envelope_line(status, &body))
        }
        Err(e) => (ExitCode::FAILURE, host_failure(&e)),
    };
    println!("{line}");
    code
}

/// `run --shards N`: the plan, then N shard instances side by side in this process
/// (each run again while it stops at its deadline), then the compose. The answer is
/// the compose's, or the first failure's (nothing is composed then: the shards that
/// finished stay done, and running the same command again continues the same plan).
async fn run_sharded(runner: &Runner, vars: &env::EnvVars, n: u32) -> Result<(u16, Vec<u8>)> {
    let (status, body) = runner
        .handle(vars, "POST", &format!("/plan?shards={n}"), "")
        .await?;
    if status != 200 {
        return Ok((status, body));
    }
    eprintln!("spaces-backup: plan of {n} shards stored; running them");
    let mut shards = tokio::task::JoinSet::new();
    for i in 1..=n {
        let mut env = vars.clone();
        env.retain(|(k, _)| k != "SHARD" && k != "JOB_COMPLETION_INDEX");
        env.push(("SHARD".into(), format!("{i}/{n}")));
        let runner = runner.clone();
        shards.spawn(async move {
            let mut runs = 0u32;
            loop {
                runs += 1;
                let (status, body) = runner.handle(&env, "POST", "/backup", "").await?;
                // 202: stopped at MAX_RUN_SECONDS with a checkpoint; the next run goes on.
                if status != 202 || runs >= MAX_SHARD_RUNS {
                    return anyhow::Ok((i, status, body));
                }
            }
        });
    }
    let mut failed: Option<(u32, u16, Vec<u8>)> = None;
    while let Some(joined) = shards.join_next().await {
        let (i, status, body) = joined.context("a shard's task failed")??;
        if status == 200 {
            eprintln!("spaces-backup: shard {i}/{n} done");
        } else {
            eprintln!("spaces-backup: shard {i}/{n} failed ({status})");
            if failed.as_ref().is_none_or(|f| i < f.0) {
                failed = Some((i, status, body));
            }
        }
    }
    if let Some((_, status, body)) = failed {
        return Ok((status, body));
    }
    runner.handle(vars, "POST", "/compose", "").await
}

/// Runs of one shard within `run --shards` (each stopped at its MAX_RUN_SECONDS).
const MAX_SHARD_RUNS: u32 = 10_000;

/// sysexits.h's "temporary failure, try again": what `run` exits with when the backup
/// stopped at MAX_RUN_SECONDS (or the function's deadline) and continues in the next run.
pub(crate) const EX_TEMPFAIL: u8 = 75;

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
pub(crate) async fn request_once(
    component: &ComponentArg,
    env_file: Option<&Path>,
    path: &str,
) -> ExitCode {
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
pub(crate) fn query_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, QUERY_VALUE).to_string()
}

pub(crate) async fn verify(
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

pub(crate) async fn serve(
    component: &ComponentArg,
    addr: SocketAddr,
    env_file: Option<&Path>,
) -> Result<ExitCode> {
    let vars = load_env(env_file)?;
    // Before compiling the component: refuse at once.
    spaces_backup_host::check_listen_addr(addr, &vars)?;
    let roots = trust::roots(&vars)?;
    let runner = component
        .runner()?
        .with_roots(roots)
        .with_memory_limit(Some(env::max_memory(&vars)));
    spaces_backup_host::serve(addr, runner, vars).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "demo")]
pub(crate) async fn run_demo(
    component: &ComponentArg,
    keep: bool,
    objects: usize,
) -> Result<ExitCode> {
    let runner = component.runner()?;
    let outcome = demo::run(&runner, &DemoOptions { keep, objects }).await?;
    Ok(if outcome.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(crate) fn compile(component: &ComponentArg, output: &Path) -> Result<ExitCode> {
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
