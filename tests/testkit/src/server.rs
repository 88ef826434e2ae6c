//! An S3-compatible server on 127.0.0.1 for the demo and the integration
//! tests: [s3s] (protocol, SigV4 verification) over one of two backends:
//!
//! - [s3s_fs], a folder ([`S3Server::start`], [`S3Server::builder`]): what
//!   lands can be looked at as files, but only keys that are plain relative
//!   paths can be stored (see below);
//! - [`MemStore`], in memory ([`S3ServerBuilder::in_memory`],
//!   [`S3Server::start_in_memory`]): every legal S3 key, stored exactly, with
//!   S3's ETags, Content-Type, user metadata, listings (ETag, `encoding-type=url`,
//!   continuation tokens) and multipart rules (ListMultipartUploads,
//!   EntityTooSmall with a configurable minimum part size). See
//!   [`crate::memstore`].
//!
//! Both get the same SigV4 check, fault hook, request log and helpers
//! ([`S3Server::create_bucket`], [`S3Server::put_object`],
//! [`S3Server::put_object_with`], [`S3Server::read_object`],
//! [`S3Server::object_info`], [`S3Server::object_keys`],
//! [`S3Server::list_objects`], [`S3Server::delete_object`],
//! [`S3Server::open_multipart_uploads`], [`S3Server::leftover_part_files`]);
//! [`S3Server::root`] and [`S3Server::object_path`] exist only for s3s-fs
//! and return an error in memory.
//!
//! It runs on a thread and Tokio runtime of its own, so it works the same from
//! sync code, from `#[tokio::test]` (even a current-thread one, where it would
//! otherwise share one thread with the component) and from the CLI; it stops
//! when the [`S3Server`] is dropped.
//!
//! # How s3s-fs stores things (0.14)
//!
//! - bucket `b` = directory `<root>/b`; object `k` = file `<root>/b/k`, with `/`
//!   in keys as directories. Listing walks the bucket directory; ETags are
//!   the MD5 of the file unless `<root>/.bucket-<b64>.object-<b64>.internal.json`
//!   holds one (multipart `{md5-of-md5s}-{n}`), and ListObjectsV2 returns none.
//! - keys that are not plain relative paths (leading `/`, `//`, `.`/`..`
//!   segments, trailing `/`) or with a segment over 255 bytes cannot be files;
//!   [`S3Server::put_object`] rejects them with a clear error.
//! - an in-progress multipart upload `u` is `<root>/.upload-<u>.json` (the
//!   access key that created it), its parts `<root>/.upload_id-<u>.part-<n>`,
//!   and `<root>/.bucket-<b64 bucket>.object-<b64 key>.upload-<u>.metadata.json`;
//!   Complete and Abort delete all three. s3s-fs has no ListMultipartUploads.
//!
//! # Keys over HTTP (s3s 0.14)
//!
//! s3s percent-decodes the request path once and takes everything after
//! `/<bucket>/` as the key, untouched (its `normalize_forward_slash_path`
//! option is off): `/b//a` is key `/a`, `/b//` key `/`, `/b/../` key `../`.
//! The SigV4 canonical URI is that decoded path encoded again (every byte
//! but `A-Za-z0-9-_.~/` as uppercase `%XX`), so clients must send the path
//! encoded exactly that way: a path with `%2F`, `%2E` or lowercase hex is
//! decoded fine but fails SignatureDoesNotMatch when signed as sent. In the
//! query, `+` means space (form decoding): a `+` in a prefix must be `%2B`.
//!
//! # Fault injection
//!
//! [`S3ServerBuilder::fault`] installs a hook that sees every request before
//! the S3 service does and may answer with an error status, delay it, cut its
//! response body off after some bytes, or drop the connection.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context as _, Result};
use http_body_util::BodyExt as _;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};

use crate::faults::{error_response, CorruptBody, CutOffBody, ResponseBody, StdError};
pub use crate::faults::{Fault, FaultHook, RequestInfo, RequestRecord};
pub use crate::memstore::{MemStore, ObjectInfo};

pub struct S3ServerBuilder {
    root: PathBuf,
    access_key: String,
    secret_key: String,
    fault: Option<FaultHook>,
    /// `Some`: serve this store instead of s3s-fs over `root`.
    memory: Option<MemStore>,
    /// `Some`: serve HTTPS with this certificate.
    tls: Option<Arc<rustls::ServerConfig>>,
    latency: Option<Duration>,
}

impl S3ServerBuilder {
    /// Access key and secret the server accepts (SigV4 is always enforced).
    pub fn credentials(mut self, access_key: &str, secret_key: &str) -> Self {
        self.access_key = access_key.to_string();
        self.secret_key = secret_key.to_string();
        self
    }

    /// Serves HTTPS (only) with the server certificate of `ca`; the endpoint is then
    /// `https://127.0.0.1:PORT`.
    pub fn tls(mut self, ca: &crate::tls::TestCa) -> Result<Self> {
        self.tls = Some(Arc::new(ca.server_config()?));
        Ok(self)
    }

    /// Every answer waits `d` before it is served, as over a long path: the client sees a
    /// far source (a component that finds its source near fetches big objects whole).
    pub fn latency(mut self, d: Duration) -> Self {
        self.latency = Some(d);
        self
    }

    /// Installs a fault-injection hook.
    pub fn fault(mut self, hook: impl Fn(&RequestInfo) -> Fault + Send + Sync + 'static) -> Self {
        self.fault = Some(Arc::new(hook));
        self
    }

    /// Stores buckets in memory ([`MemStore`], every legal key) instead of
    /// s3s-fs; the folder given to [`S3Server::builder`] is then not used.
    /// Keeps a store given by [`S3ServerBuilder::memory_store`].
    pub fn in_memory(mut self) -> Self {
        self.memory.get_or_insert_with(MemStore::new);
        self
    }

    /// Serves `store` (in memory), e.g. one made with
    /// [`MemStore::with_min_part_size`] or seeded beforehand; the test keeps
    /// a clone to look inside.
    pub fn memory_store(mut self, store: MemStore) -> Self {
        self.memory = Some(store);
        self
    }

    /// In memory, every multipart part but the last must have the same size (Cloudflare
    /// R2's rule); implies [`S3ServerBuilder::in_memory`].
    pub fn equal_parts(self) -> Self {
        let builder = self.in_memory();
        if let Some(store) = &builder.memory {
            store.set_equal_parts(true);
        }
        builder
    }

    /// In memory, the minimum size of every multipart part but the last
    /// (S3's 5 MiB by default); implies [`S3ServerBuilder::in_memory`].
    pub fn min_part_size(self, bytes: u64) -> Self {
        let builder = self.in_memory();
        if let Some(store) = &builder.memory {
            store.set_min_part_size(bytes);
        }
        builder
    }

    /// Binds 127.0.0.1 on a free port and starts serving.
    pub fn start(self) -> Result<S3Server> {
        let (backend, mut builder) = match self.memory {
            Some(store) => (Backend::Memory(store.clone()), S3ServiceBuilder::new(store)),
            None => {
                std::fs::create_dir_all(&self.root)
                    .with_context(|| format!("cannot create {}", self.root.display()))?;
                let root = self
                    .root
                    .canonicalize()
                    .with_context(|| format!("cannot resolve {}", self.root.display()))?;
                let fs = s3s_fs::FileSystem::new(&root)
                    .map_err(|e| anyhow!("s3s-fs on {}: {e:?}", root.display()))?;
                (Backend::Fs(root), S3ServiceBuilder::new(fs))
            }
        };
        builder.set_auth(SimpleAuth::from_single(
            self.access_key.clone(),
            self.secret_key.clone(),
        ));
        let service = builder.build();

        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-server")
            .enable_all()
            .build()
            .context("cannot start the S3 server's runtime")?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let shared = Arc::new(Shared {
            service,
            fault: self.fault,
            latency: self.latency,
            seq: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
        });
        let thread_shared = shared.clone();
        let tls = self.tls.map(tokio_rustls::TlsAcceptor::from);
        let thread_tls = tls.clone();
        let thread = std::thread::Builder::new()
            .name("s3-server".into())
            .spawn(move || {
                runtime.block_on(accept_loop(listener, thread_shared, thread_tls, stop_rx));
                // Connections still open are dropped here, not waited for.
                runtime.shutdown_timeout(Duration::from_millis(500));
            })
            .context("cannot spawn the S3 server thread")?;

        Ok(S3Server {
            endpoint: format!("{}://{addr}", if tls.is_some() { "https" } else { "http" }),
            addr,
            backend,
            access_key: self.access_key,
            secret_key: self.secret_key,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

struct Shared {
    service: S3Service,
    fault: Option<FaultHook>,
    latency: Option<Duration>,
    seq: AtomicU64,
    log: Mutex<Vec<RequestRecord>>,
}

/// Where a server keeps its buckets.
enum Backend {
    /// s3s-fs over this folder (canonical path).
    Fs(PathBuf),
    Memory(MemStore),
}

/// A running server. Dropping it stops the server (the folder stays; an
/// in-memory store lives on in clones of its [`MemStore`], if any).
pub struct S3Server {
    endpoint: String,
    addr: SocketAddr,
    backend: Backend,
    access_key: String,
    secret_key: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl S3Server {
    /// A server over `root` (created if missing) that accepts only
    /// `access_key`/`secret_key`.
    pub fn start(root: impl AsRef<Path>, access_key: &str, secret_key: &str) -> Result<Self> {
        Self::builder(root)
            .credentials(access_key, secret_key)
            .start()
    }

    /// Options beyond [`S3Server::start`], e.g. a fault hook. Default
    /// credentials: `test-access-key` / `test-secret-key`.
    pub fn builder(root: impl AsRef<Path>) -> S3ServerBuilder {
        S3ServerBuilder {
            root: root.as_ref().to_path_buf(),
            access_key: "test-access-key".into(),
            secret_key: "test-secret-key".into(),
            fault: None,
            memory: None,
            tls: None,
            latency: None,
        }
    }

    /// A server in memory ([`MemStore`]) that accepts only
    /// `access_key`/`secret_key`.
    pub fn start_in_memory(access_key: &str, secret_key: &str) -> Result<Self> {
        Self::in_memory_builder()
            .credentials(access_key, secret_key)
            .start()
    }

    /// [`S3Server::builder`] for a server in memory (no folder).
    pub fn in_memory_builder() -> S3ServerBuilder {
        Self::builder("").in_memory()
    }

    /// The in-memory store, `None` for s3s-fs.
    pub fn memory_store(&self) -> Option<&MemStore> {
        match &self.backend {
            Backend::Memory(store) => Some(store),
            Backend::Fs(_) => None,
        }
    }

    pub fn is_in_memory(&self) -> bool {
        matches!(self.backend, Backend::Memory(_))
    }

    /// `http://127.0.0.1:PORT` (path-style requests).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The folder s3s-fs stores buckets in (canonical path); an error for
    /// a server in memory.
    pub fn root(&self) -> Result<&Path> {
        match &self.backend {
            Backend::Fs(root) => Ok(root),
            Backend::Memory(_) => {
                bail!("this S3 server keeps its buckets in memory: it has no folder")
            }
        }
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// Creates a bucket (no error if it exists; for s3s-fs, a directory).
    pub fn create_bucket(&self, bucket: &str) -> Result<()> {
        check_bucket_name(bucket)?;
        match &self.backend {
            Backend::Memory(store) => {
                store.create_bucket(bucket);
                Ok(())
            }
            Backend::Fs(root) => {
                let dir = root.join(bucket);
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create bucket directory {}", dir.display()))
            }
        }
    }

    /// Stores an object as a PutObject without Content-Type or metadata
    /// would. s3s-fs: writes the file itself and no metadata file, so
    /// s3s-fs serves its MD5 as ETag; only keys that are plain relative
    /// paths. In memory: any legal key (1 to 1,024 bytes).
    pub fn put_object(&self, bucket: &str, key: &str, data: &[u8]) -> Result<()> {
        match &self.backend {
            Backend::Memory(store) => {
                store.put_object(bucket, key, data.to_vec(), None, &[])?;
                Ok(())
            }
            Backend::Fs(root) => fs_write_object(root, bucket, key, data).map(drop),
        }
    }

    /// Stores an object as a PutObject with this Content-Type and these
    /// `x-amz-meta-*` headers would (metadata names are lowercased, as
    /// header names are). For s3s-fs also writes its metadata file, and
    /// drops any stored ETag so the MD5 is served.
    pub fn put_object_with(
        &self,
        bucket: &str,
        key: &str,
        data: &[u8],
        content_type: Option<&str>,
        metadata: &[(&str, &str)],
    ) -> Result<()> {
        match &self.backend {
            Backend::Memory(store) => {
                store.put_object(bucket, key, data.to_vec(), content_type, metadata)?;
                Ok(())
            }
            Backend::Fs(root) => {
                fs_write_object(root, bucket, key, data)?;
                let attrs_path = fs_sidecar(root, bucket, key, "metadata.json");
                if content_type.is_none() && metadata.is_empty() {
                    remove_if_exists(&attrs_path)?;
                } else {
                    let mut attrs = serde_json::Map::new();
                    if !metadata.is_empty() {
                        let meta: serde_json::Map<String, serde_json::Value> = metadata
                            .iter()
                            .map(|(k, v)| (k.to_ascii_lowercase(), (*v).into()))
                            .collect();
                        attrs.insert("user_metadata".into(), meta.into());
                    }
                    if let Some(ct) = content_type {
                        attrs.insert("content_type".into(), ct.into());
                    }
                    let json = serde_json::to_vec(&attrs)?;
                    std::fs::write(&attrs_path, json)
                        .with_context(|| format!("cannot write {}", attrs_path.display()))?;
                }
                remove_if_exists(&fs_sidecar(root, bucket, key, "internal.json"))
            }
        }
    }

    /// An object of `size` zero bytes, for tests of big archives. For s3s-fs: a sparse
    /// file (no disk used) and the ETag (the MD5 of the zeros) recorded beside it as
    /// s3s-fs records it after a PutObject; without it s3s-fs would hash the whole file
    /// again for every GET, ranged or not.
    pub fn put_zeros(&self, bucket: &str, key: &str, size: u64) -> Result<()> {
        use s3s::crypto::{Checksum as _, Md5};
        let Backend::Fs(root) = &self.backend else {
            bail!("put_zeros makes sparse files: a server in memory would hold {size} bytes");
        };
        let path = self.object_path(bucket, key)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::File::create(&path)?.set_len(size)?;
        let block = vec![0u8; 1 << 20];
        let mut md5 = Md5::new();
        let mut left = size;
        while left > 0 {
            let take = left.min(block.len() as u64) as usize;
            md5.update(&block[..take]);
            left -= take as u64;
        }
        let etag: String = md5
            .finalize()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let info = serde_json::json!({ "e_tag": etag });
        let sidecar = fs_sidecar(root, bucket, key, "internal.json");
        std::fs::write(&sidecar, serde_json::to_vec(&info)?)
            .with_context(|| format!("cannot write {}", sidecar.display()))
    }

    /// The file holding object `key` (whether or not it exists); an error
    /// for a server in memory, or a key s3s-fs cannot store.
    pub fn object_path(&self, bucket: &str, key: &str) -> Result<PathBuf> {
        match &self.backend {
            Backend::Fs(root) => Ok(root.join(bucket).join(key_to_relative_path(key)?)),
            Backend::Memory(_) => bail!(
                "this S3 server keeps its buckets in memory: object {key:?} has no file; \
                 use read_object or object_info"
            ),
        }
    }

    /// The bytes of object `key`.
    pub fn read_object(&self, bucket: &str, key: &str) -> Result<Vec<u8>> {
        if let Backend::Memory(store) = &self.backend {
            return Ok(store.object_data(bucket, key)?.to_vec());
        }
        let path = self.object_path(bucket, key)?;
        std::fs::read(&path).with_context(|| {
            format!(
                "cannot read object {key:?} in bucket {bucket} ({})",
                path.display()
            )
        })
    }

    /// Size, ETag (quoted, as in the `ETag` header), Content-Type, user
    /// metadata and modification time of object `key`, as GetObject would
    /// serve them (for s3s-fs, from the file and s3s-fs's metadata files).
    pub fn object_info(&self, bucket: &str, key: &str) -> Result<ObjectInfo> {
        let root = match &self.backend {
            Backend::Memory(store) => return store.object_info(bucket, key),
            Backend::Fs(root) => root,
        };
        let path = self.object_path(bucket, key)?;
        let data = std::fs::read(&path).with_context(|| {
            format!(
                "cannot read object {key:?} in bucket {bucket} ({})",
                path.display()
            )
        })?;
        let last_modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now());
        let read_json = |name: &str| -> Result<serde_json::Map<String, serde_json::Value>> {
            let p = fs_sidecar(root, bucket, key, name);
            match std::fs::read(&p) {
                Ok(bytes) => serde_json::from_slice(&bytes)
                    .with_context(|| format!("cannot parse {}", p.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
                Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
            }
        };
        let internal = read_json("internal.json")?;
        let attrs = read_json("metadata.json")?;
        let etag = match internal.get("e_tag").and_then(|v| v.as_str()) {
            Some(etag) => etag.to_string(),
            None => {
                use s3s::crypto::Checksum as _;
                s3s::crypto::Md5::checksum(&data)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            }
        };
        let metadata: BTreeMap<String, String> = attrs
            .get("user_metadata")
            .and_then(|m| m.as_object())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(ObjectInfo {
            size: data.len() as u64,
            etag: format!("\"{etag}\""),
            content_type: attrs
                .get("content_type")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            metadata,
            // s3s-fs keeps Content-Type and metadata only.
            headers: Default::default(),
            acl: Vec::new(),
            tags: Vec::new(),
            last_modified,
        })
    }

    /// Deletes object `key` as DeleteObject would; `false` if there was
    /// none. For s3s-fs also deletes its metadata files.
    pub fn delete_object(&self, bucket: &str, key: &str) -> Result<bool> {
        let root = match &self.backend {
            Backend::Memory(store) => return store.delete_object(bucket, key),
            Backend::Fs(root) => root,
        };
        self.bucket_dir(bucket)?;
        let path = self.object_path(bucket, key)?;
        let existed = path.is_file();
        remove_if_exists(&path)?;
        remove_if_exists(&fs_sidecar(root, bucket, key, "metadata.json"))?;
        remove_if_exists(&fs_sidecar(root, bucket, key, "internal.json"))?;
        Ok(existed)
    }

    /// The keys of `bucket`, exactly as stored, in S3's (UTF-8 byte) order.
    pub fn object_keys(&self, bucket: &str) -> Result<Vec<String>> {
        if let Backend::Memory(store) = &self.backend {
            return store.keys(bucket);
        }
        Ok(self
            .list_objects(bucket)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Every object of `bucket` as `(key, size)`, sorted by key like S3.
    pub fn list_objects(&self, bucket: &str) -> Result<Vec<(String, u64)>> {
        if let Backend::Memory(store) = &self.backend {
            return store.objects(bucket);
        }
        let dir = self.bucket_dir(bucket)?;
        let mut out = Vec::new();
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for entry in
                std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?
            {
                let entry = entry?;
                let ty = entry.file_type()?;
                if ty.is_dir() {
                    stack.push(entry.path());
                } else if ty.is_file() {
                    let rel = entry.path();
                    let rel = rel.strip_prefix(&dir)?;
                    let key = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join("/");
                    out.push((key, entry.metadata()?.len()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Multipart uploads into `bucket` that were created but neither
    /// completed nor aborted (what ListMultipartUploads lists; for s3s-fs,
    /// see the module docs for how they are stored).
    pub fn open_multipart_uploads(&self, bucket: &str) -> Result<usize> {
        let root = match &self.backend {
            Backend::Memory(store) => return Ok(store.open_uploads(bucket)?.len()),
            Backend::Fs(root) => root,
        };
        let prefix = format!(".bucket-{}.object-", b64url(bucket));
        let mut count = 0;
        for entry in std::fs::read_dir(root)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            let Some(rest) = rest.strip_suffix(".metadata.json") else {
                continue;
            };
            let Some((_, upload_id)) = rest.rsplit_once(".upload-") else {
                continue;
            };
            if root.join(format!(".upload-{upload_id}.json")).exists() {
                count += 1;
            }
        }
        Ok(count)
    }

    /// Parts of uploads never completed nor aborted, all buckets together
    /// (s3s-fs's part files do not record their bucket).
    pub fn leftover_part_files(&self) -> Result<usize> {
        let root = match &self.backend {
            Backend::Memory(store) => return Ok(store.open_part_count()),
            Backend::Fs(root) => root,
        };
        let mut count = 0;
        for entry in std::fs::read_dir(root)? {
            let name = entry?.file_name();
            if name.to_str().is_some_and(|n| n.starts_with(".upload_id-")) {
                count += 1;
            }
        }
        Ok(count)
    }

    /// Requests served so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        let mut log = self
            .shared
            .log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        log.sort_by_key(|r| r.seq);
        log
    }

    /// Stops the server and waits for its thread (dropping does the same).
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// s3s-fs only: the directory of `bucket`, which must exist.
    fn bucket_dir(&self, bucket: &str) -> Result<PathBuf> {
        check_bucket_name(bucket)?;
        let dir = self.root()?.join(bucket);
        if !dir.is_dir() {
            bail!("no such bucket: {bucket}");
        }
        Ok(dir)
    }
}

/// Writes object `key` as s3s-fs keeps it: the file `<root>/<bucket>/<key>`.
fn fs_write_object(root: &Path, bucket: &str, key: &str, data: &[u8]) -> Result<PathBuf> {
    check_bucket_name(bucket)?;
    let bucket_dir = root.join(bucket);
    if !bucket_dir.is_dir() {
        bail!("no such bucket: {bucket}");
    }
    let path = bucket_dir.join(key_to_relative_path(key)?);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(&path, data).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// s3s-fs's file `<root>/.bucket-<b64>.object-<b64>.<suffix>` for an object
/// (`metadata.json`: Content-Type and user metadata; `internal.json`: ETag).
fn fs_sidecar(root: &Path, bucket: &str, key: &str, suffix: &str) -> PathBuf {
    root.join(format!(
        ".bucket-{}.object-{}.{suffix}",
        b64url(bucket),
        b64url(key)
    ))
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot delete {}", path.display())),
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn check_bucket_name(bucket: &str) -> Result<()> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !bucket.starts_with(['-', '.'])
        && !bucket.contains("..");
    if ok {
        Ok(())
    } else {
        bail!("invalid bucket name {bucket:?}")
    }
}

/// The file path s3s-fs uses for `key`, for keys it can represent as files.
fn key_to_relative_path(key: &str) -> Result<PathBuf> {
    let why = if key.is_empty() {
        Some("it is empty")
    } else if key.starts_with('/') {
        Some("it starts with '/'")
    } else if key.ends_with('/') {
        Some("it ends with '/' (a folder marker)")
    } else if key.split('/').any(|s| s.is_empty()) {
        Some("it contains '//'")
    } else if key.split('/').any(|s| s == "." || s == "..") {
        Some("it has a '.' or '..' segment")
    } else if key.split('/').any(|s| s.len() > 255) {
        Some("a '/'-separated segment is longer than 255 bytes")
    } else if key.contains('\0') {
        Some("it contains NUL")
    } else {
        None
    };
    if let Some(why) = why {
        bail!("key {key:?} cannot be stored by s3s-fs, which keeps objects as files: {why}");
    }
    let path = PathBuf::from(key);
    debug_assert!(path.components().all(|c| matches!(c, Component::Normal(_))));
    Ok(path)
}

/// URL-safe base64 without padding, as s3s-fs names its metadata files.
fn b64url(s: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

async fn accept_loop(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("s3 server: cannot listen: {e}");
            return;
        }
    };
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => return,
        };
        // Without it, a small response (a GET of a tiny object) waits for
        // the client's delayed ACK: ~40 ms per request.
        let _ = socket.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let http = http1::Builder::new().keep_alive(true).clone();
            match tls {
                // A client that does not trust the certificate ends the handshake: the
                // connection is simply dropped, as a real server's would be.
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(socket).await {
                        let _ = http
                            .serve_connection(TokioIo::new(stream), Service(shared))
                            .await;
                    }
                }
                None => {
                    let _ = http
                        .serve_connection(TokioIo::new(socket), Service(shared))
                        .await;
                }
            }
        });
    }
}

/// A named service type: with `service_fn` and an async closure, rustc
/// cannot prove the error type `'static` for every lifetime (HRTB limitation).
struct Service(Arc<Shared>);

type ServiceFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<ResponseBody>, StdError>> + Send>>;

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for Service {
    type Response = http::Response<ResponseBody>;
    type Error = StdError;
    type Future = ServiceFuture;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let shared = self.0.clone();
        Box::pin(async move { Shared::handle(&shared, req).await })
    }
}

impl Shared {
    async fn handle(
        self: &Arc<Self>,
        req: http::Request<hyper::body::Incoming>,
    ) -> Result<http::Response<ResponseBody>, StdError> {
        let info = RequestInfo {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            method: req.method().clone(),
            path: req.uri().path().to_string(),
            query: req.uri().query().unwrap_or("").to_string(),
            headers: req.headers().clone(),
        };
        let fault = self.fault.as_ref().map_or(Fault::Pass, |hook| hook(&info));
        let mut record = RequestRecord {
            seq: info.seq,
            method: info.method.to_string(),
            path: info.path.clone(),
            query: info.query.clone(),
            operation: info.operation(),
            range: info
                .headers
                .get(http::header::RANGE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            status: None,
            fault: (fault != Fault::Pass).then(|| fault.clone()),
        };

        if let Some(d) = self.latency {
            tokio::time::sleep(d).await;
        }
        let result = match fault {
            Fault::Pass => self.call_s3(req, None).await,
            Fault::Delay(d) => {
                tokio::time::sleep(d).await;
                self.call_s3(req, None).await
            }
            Fault::CutOff(n) => self.call_s3(req, Some(n)).await,
            Fault::Corrupt(at) => self.call_s3(req, None).await.map(|r| {
                r.map(|body| {
                    CorruptBody {
                        inner: body,
                        at: Some(at),
                    }
                    .boxed_unsync()
                })
            }),
            Fault::Status { status, code } => {
                // Like a real server, take the whole request before answering, so the
                // client sees the error status rather than a reset mid-upload.
                let _ = req.into_body().collect().await;
                Ok(error_response(status, &code, &info.path))
            }
            Fault::Disconnect => Err("injected fault: connection dropped".into()),
            Fault::Detach(after) => {
                let (parts, body) = req.into_parts();
                let bytes = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let detached = http::Request::from_parts(parts, s3s::Body::from(bytes));
                let shared = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let _ = shared.service.call(detached).await;
                });
                Err("injected fault: answer lost, request served later".into())
            }
        };
        record.status = result.as_ref().ok().map(|r| r.status().as_u16());
        if let Ok(mut log) = self.log.lock() {
            log.push(record);
        }
        result
    }

    async fn call_s3(
        &self,
        req: http::Request<hyper::body::Incoming>,
        cut_off: Option<u64>,
    ) -> Result<http::Response<ResponseBody>, StdError> {
        let response = self
            .service
            .call(req.map(s3s::Body::from))
            .await
            .map_err(|e| -> StdError { e.into() })?;
        Ok(response.map(|body| match cut_off {
            None => body.boxed_unsync(),
            Some(n) => CutOffBody::new(body, n).boxed_unsync(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64url_matches_reference() {
        assert_eq!(b64url(""), "");
        assert_eq!(b64url("f"), "Zg");
        assert_eq!(b64url("fo"), "Zm8");
        assert_eq!(b64url("foo"), "Zm9v");
        assert_eq!(b64url("demo-backups"), "ZGVtby1iYWNrdXBz");
        assert_eq!(b64url("\u{ff}\u{fe}"), "w7_Dvg");
    }

    #[test]
    fn keys_that_are_not_files_are_rejected() {
        assert!(key_to_relative_path("photos/2024/a b+c%#?.jpg").is_ok());
        for bad in ["", "/a", "a/", "a//b", "a/../b", "./a", &"x".repeat(256)] {
            assert!(key_to_relative_path(bad).is_err(), "{bad:?}");
        }
    }
}
