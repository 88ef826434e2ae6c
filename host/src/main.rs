//! `spaces-backup`: run the backup component once, serve it over HTTP, or
//! try it end to end on an in-process S3 server. This file holds the arguments;
//! `cli.rs` what each command does.

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use cli::{compile, query_encode, report, request_once, run, serve, verify};
use spaces_backup_host::Runner;

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
        /// Split the backup over N shards run side by side in this process (a plan, N
        /// fragments, then one archive composed of them, mostly by server-side copy)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
        shards: Option<u32>,
    },
    /// Store the plan of a sharded backup: the bucket's keys cut into N ranges of about
    /// equal bytes; then run each shard (SHARD=i/N) and compose
    Plan {
        #[command(flatten)]
        component: ComponentArg,
        /// How many shards (default: SHARDS)
        #[arg(long, value_name = "N")]
        shards: Option<u32>,
        /// Read variables from this file instead of ./.env (process env wins)
        #[arg(long, value_name = "PATH")]
        env_file: Option<PathBuf>,
    },
    /// Compose the one archive of a sharded backup from its fragments, once every shard
    /// is done
    Compose {
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
        /// Also apply the source bucket's recorded settings (CORS, lifecycle, policy,
        /// versioning) to the target bucket, once the objects are back
        #[arg(long)]
        bucket_settings: bool,
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
pub(crate) struct ComponentArg {
    /// Run this component (.wasm, or .cwasm from `compile`) instead of the embedded one
    #[arg(long, value_name = "PATH")]
    pub(crate) component: Option<PathBuf>,
}

impl ComponentArg {
    pub(crate) fn runner(&self) -> Result<Runner> {
        match &self.component {
            Some(path) => Runner::from_file(path),
            None => Runner::embedded(),
        }
    }
}

/// Request and response bodies pass through the host in buffers of up to 1 MiB, made on
/// one thread and freed on another. glibc's malloc raises its mmap threshold after the
/// first such free and then keeps freed buffers in per-thread arenas, so the process's
/// resident memory drifts up by tens of MiB from run to run. A fixed threshold (which
/// turns the adjustment off) returns every large buffer to the system when it is freed,
/// and two arenas keep the small ones together.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator settings; called first thing in main,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
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

    return_freed_memory();
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
                shards,
            } => run(&component, env_file.as_deref(), shards).await,
            Command::Plan {
                component,
                shards,
                env_file,
            } => {
                let path = match shards {
                    Some(n) => format!("/plan?shards={n}"),
                    None => "/plan".to_string(),
                };
                request_once(&component, env_file.as_deref(), &path).await
            }
            Command::Compose {
                component,
                env_file,
            } => request_once(&component, env_file.as_deref(), "/compose").await,
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
                bucket_settings,
                env_file,
            } => {
                let path = format!(
                    "/restore?archive={}&to={}{}{}",
                    query_encode(&archive),
                    query_encode(&to),
                    if overwrite { "&overwrite=true" } else { "" },
                    if bucket_settings {
                        "&bucketSettings=true"
                    } else {
                        ""
                    }
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
            } => report(cli::run_demo(&component, keep, objects).await),
            Command::Compile { component, output } => report(compile(&component, &output)),
        }
    })
}
