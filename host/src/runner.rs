//! Compile the component once, then run each request in a fresh instance.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use tokio::task::JoinHandle;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::outgoing::{AllowList, OutgoingPool, PooledHooks};
use crate::progress::ProgressSink;

/// The component built by `build.rs` (or `SPACES_BACKUP_COMPONENT_WASM`).
pub const EMBEDDED_COMPONENT: &[u8] = include_bytes!(env!("SPACES_BACKUP_WASM"));

/// Where the embedded component was read from at build time.
pub const EMBEDDED_COMPONENT_PATH: &str = env!("SPACES_BACKUP_WASM");

/// Per-request store data: WASI (env, stdio, clocks, random) plus wasi:http.
struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    memory: MemoryMeter,
    /// Outgoing requests go through the runner's connection pool.
    hooks: PooledHooks,
}

/// Counts the instance's linear memory (all memories together; wasm memory
/// never shrinks, so the final size is the peak) and enforces an optional cap.
/// This is how tests check the "bounded memory" invariant from outside.
struct MemoryMeter {
    used: u64,
    limit: Option<u64>,
    peak: Arc<AtomicU64>,
}

impl ResourceLimiter for MemoryMeter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let next = self.used + desired.saturating_sub(current) as u64;
        if let Some(limit) = self.limit {
            if next > limit {
                // An error (a trap) rather than `Ok(false)`: the guest would
                // abort with a vaguer "memory allocation failed".
                return Err(wasmtime::format_err!(
                    "the component needs more than the memory limit of {limit} bytes (it asked for {next}); raise MAX_MEMORY"
                ));
            }
        }
        self.used = next;
        self.peak.fetch_max(next, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

/// A finished request, see [`Runner::handle_measured`].
#[derive(Debug, Clone)]
pub struct Handled {
    pub status: u16,
    pub body: Vec<u8>,
    /// Linear memory of the instance at its largest, in bytes.
    pub guest_memory_bytes: u64,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// A compiled, linked component, ready to serve requests.
///
/// Cheap to clone (everything inside is reference counted) and `Send + Sync`,
/// so one `Runner` can be shared by a server or by every test of a process.
#[derive(Clone)]
pub struct Runner {
    pre: ProxyPre<HostState>,
    memory_limit: Option<u64>,
    /// Kept-alive connections for the component's outgoing requests, shared
    /// by every instance (and every clone) of this runner.
    outgoing: OutgoingPool,
    /// Where instances may send requests: `None` (the default), the
    /// `SOURCE_ENDPOINT` and `DEST_ENDPOINT` of each instance's environment.
    allowed: Option<Arc<AllowList>>,
    /// Where the component's log lines go: the host's stderr as they are (`None`), or
    /// drawn as a progress bar on a terminal.
    progress: Option<ProgressSink>,
}

impl Runner {
    /// The embedded component.
    pub fn embedded() -> Result<Self> {
        Self::from_bytes(EMBEDDED_COMPONENT).context("cannot load the embedded component")
    }

    /// A component from a file: a `.wasm` component, or a `.cwasm` made by
    /// [`Runner::precompile`] with this same build of the host.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read component {}", path.display()))?;
        Self::from_bytes(&bytes)
            .with_context(|| format!("cannot load component {}", path.display()))
    }

    /// A component from bytes (`.wasm` component or precompiled `.cwasm`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let engine = new_engine()?;
        let started = Instant::now();
        let component = if bytes.starts_with(b"\0asm") {
            Component::new(&engine, bytes).map_err(anyhow::Error::from)?
        } else if bytes.starts_with(b"\x7fELF") {
            // SAFETY: Wasmtime requires that precompiled artifacts are trusted
            // (it maps them as executable code). They come from the user's own
            // disk, produced by `spaces-backup compile`; Wasmtime still checks
            // that the engine version and configuration match.
            unsafe { Component::deserialize(&engine, bytes) }.map_err(anyhow::Error::from)?
        } else {
            bail!("not a WebAssembly component (expected a .wasm component or a .cwasm precompiled by `spaces-backup compile`)");
        };
        let elapsed = started.elapsed();
        if elapsed.as_secs() >= 2 {
            eprintln!(
                "spaces-backup: compiled the component in {:.1} s",
                elapsed.as_secs_f64()
            );
        }

        let mut linker = Linker::<HostState>::new(&engine);
        // The full WASI p2 command world (a Rust wasip2 std links filesystem,
        // sockets... even if unused) plus wasi:http, as `wasmtime serve -Scli`.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)?;
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .context("the component imports something this host does not provide")?;
        let pre = ProxyPre::new(instance_pre)
            .map_err(anyhow::Error::from)
            .context("the component does not export wasi:http/incoming-handler")?;
        Ok(Self {
            pre,
            memory_limit: None,
            outgoing: OutgoingPool::new(crate::trust::default_roots()),
            allowed: None,
            progress: None,
        })
    }

    /// Compiles a `.wasm` component into a `.cwasm` for this host build, so
    /// that start-up skips compilation (e.g. in a serverless function).
    pub fn precompile(wasm: &[u8]) -> Result<Vec<u8>> {
        let engine = new_engine()?;
        engine
            .precompile_component(wasm)
            .map_err(anyhow::Error::from)
    }

    /// Asks running instances to stop: from now on their outgoing requests are refused,
    /// except DELETEs, so a backup fails at its next request and aborts its multipart
    /// upload (SIGINT/SIGTERM). Shared by every clone of this runner.
    pub fn stop_outgoing(&self) {
        self.outgoing.stop();
    }

    /// The same component with each instance's linear memory capped at
    /// `bytes` (`None`: no cap, the default). Going over traps the instance.
    pub fn with_memory_limit(&self, bytes: Option<u64>) -> Self {
        Self {
            pre: self.pre.clone(),
            memory_limit: bytes,
            outgoing: self.outgoing.clone(),
            allowed: self.allowed.clone(),
            progress: self.progress.clone(),
        }
    }

    /// The same component with its outgoing HTTPS trusting `roots` (a pool of its own;
    /// see [`crate::trust::roots`]).
    pub fn with_roots(&self, roots: rustls::RootCertStore) -> Self {
        Self {
            pre: self.pre.clone(),
            memory_limit: self.memory_limit,
            outgoing: OutgoingPool::new(roots),
            allowed: self.allowed.clone(),
            progress: self.progress.clone(),
        }
    }

    /// The same component with its log lines drawn by `sink` (a terminal's progress bar).
    pub fn with_progress(&self, sink: Option<ProgressSink>) -> Self {
        Self {
            pre: self.pre.clone(),
            memory_limit: self.memory_limit,
            outgoing: self.outgoing.clone(),
            allowed: self.allowed.clone(),
            progress: sink,
        }
    }

    /// The same component with the destinations its instances may reach
    /// fixed to `allowed`, whatever their environment says (`None`: each
    /// instance may reach only the `SOURCE_ENDPOINT` and `DEST_ENDPOINT` of
    /// its own environment, the default). Other requests are refused with
    /// `HttpRequestDenied` before any connection is made.
    pub fn with_allow_list(&self, allowed: Option<AllowList>) -> Self {
        Self {
            pre: self.pre.clone(),
            memory_limit: self.memory_limit,
            outgoing: self.outgoing.clone(),
            allowed: allowed.map(Arc::new),
            progress: self.progress.clone(),
        }
    }

    /// Runs one request through a fresh instance with `env` as its whole
    /// environment, and returns the response status and body.
    ///
    /// `path` is a path with optional query, e.g. `/backup`.
    pub async fn handle(
        &self,
        env: &[(impl AsRef<str>, impl AsRef<str>)],
        method: &str,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<(u16, Vec<u8>)> {
        let handled = self.handle_measured(env, method, path, body).await?;
        Ok((handled.status, handled.body))
    }

    /// [`Runner::handle`], also reporting how much memory the instance used.
    pub async fn handle_measured(
        &self,
        env: &[(impl AsRef<str>, impl AsRef<str>)],
        method: &str,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<Handled> {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("http://localhost{path}"))
            .header(http::header::HOST, "localhost")
            .body(Full::new(body.into()))
            .context("invalid request")?;
        let peak = Arc::new(AtomicU64::new(0));
        let (response, task) = self.start(env, request, peak.clone()).await?;
        let status = response.status().as_u16();
        let collected = response.into_body().collect().await;
        // The instance keeps running until `handle` returns; a trap after the
        // response started still means the run failed.
        let outcome = task.await;
        let body = match (collected, outcome) {
            (Ok(body), Ok(Ok(()))) => body.to_bytes(),
            (_, Ok(Err(e))) => return Err(e.context("the component failed")),
            (_, Err(join)) => return Err(anyhow!(join).context("the component task failed")),
            (Err(e), Ok(Ok(()))) => {
                return Err(anyhow!(e).context("reading the component's response body"))
            }
        };
        Ok(Handled {
            status,
            body: body.to_vec(),
            guest_memory_bytes: peak.load(Ordering::Relaxed),
        })
    }

    /// Starts one request in a fresh instance and returns as soon as the
    /// component has set its response (headers); the body streams from the
    /// still-running instance. The returned task ends when the component's
    /// handler returns, with its error (e.g. a trap) if any.
    pub async fn call<B>(
        &self,
        env: &[(impl AsRef<str>, impl AsRef<str>)],
        request: http::Request<B>,
    ) -> Result<(http::Response<HyperOutgoingBody>, JoinHandle<Result<()>>)>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        self.start(env, request, Arc::new(AtomicU64::new(0))).await
    }

    async fn start<B>(
        &self,
        env: &[(impl AsRef<str>, impl AsRef<str>)],
        request: http::Request<B>,
        peak: Arc<AtomicU64>,
    ) -> Result<(http::Response<HyperOutgoingBody>, JoinHandle<Result<()>>)>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let mut store = self.new_store(env, peak);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .map_err(anyhow::Error::from)?;
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .map_err(anyhow::Error::from)?;
        let pre = self.pre.clone();

        // A task of its own, as `wasmtime serve` does: the instance must keep
        // running after the response headers are out, to stream the body.
        let task = tokio::task::spawn(async move {
            let proxy = pre
                .instantiate_async(&mut store)
                .await
                .map_err(anyhow::Error::from)?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
                .map_err(anyhow::Error::from)
        });

        match receiver.await {
            Ok(Ok(response)) => Ok((response, task)),
            Ok(Err(code)) => Err(anyhow!(
                "the component answered with wasi:http error {code:?}"
            )),
            // The sender was dropped with the store: the handler returned or
            // trapped without setting a response.
            Err(_) => {
                let err = match task.await {
                    Ok(Ok(())) => anyhow!("the component returned without sending a response"),
                    Ok(Err(e)) => e,
                    Err(e) => anyhow!(e),
                };
                Err(err.context("the component did not answer"))
            }
        }
    }

    fn new_store(
        &self,
        env: &[(impl AsRef<str>, impl AsRef<str>)],
        peak: Arc<AtomicU64>,
    ) -> Store<HostState> {
        let allowed = match &self.allowed {
            Some(fixed) => fixed.clone(),
            None => Arc::new(AllowList::from_env(env)),
        };
        let mut wasi = WasiCtx::builder();
        wasi.envs(env);
        // Guest stdout goes to the host's stderr too: the host's stdout is
        // reserved for the JSON envelope of `spaces-backup run`.
        match &self.progress {
            Some(sink) => {
                wasi.stdout(sink.clone());
                wasi.stderr(sink.clone());
            }
            None => {
                wasi.stdout(wasmtime_wasi::cli::stderr());
                wasi.stderr(wasmtime_wasi::cli::stderr());
            }
        }
        let mut store = Store::new(
            self.pre.engine(),
            HostState {
                wasi: wasi.build(),
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
                memory: MemoryMeter {
                    used: 0,
                    limit: self.memory_limit,
                    peak,
                },
                hooks: self.outgoing.hooks(allowed),
            },
        );
        store.limiter(|state| &mut state.memory);
        store
    }
}

fn new_engine() -> Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // Compiling the component takes seconds (longer in a debug build of the
    // host), so reuse compiled code across runs from Wasmtime's on-disk cache
    // (~/.cache/wasmtime). Best effort: without a writable home the host
    // still works, it just compiles every time.
    #[cfg(feature = "cache")]
    if std::env::var_os("SPACES_BACKUP_NO_CACHE").is_none() {
        match wasmtime::Cache::new(wasmtime::CacheConfig::new()) {
            Ok(cache) => {
                config.cache(Some(cache));
            }
            Err(e) => eprintln!("spaces-backup: compilation cache disabled: {e}"),
        }
    }
    Engine::new(&config).map_err(anyhow::Error::from)
}
