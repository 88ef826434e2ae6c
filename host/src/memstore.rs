//! An in-memory S3 storage backend for [s3s]: every legal key, exactly.
//!
//! [`MemStore`] implements [`s3s::S3`], so it runs behind s3s's real protocol
//! layer (routing, XML, SigV4) the way `s3s-fs` does, but keeps buckets in
//! memory: a key is any UTF-8 string of 1 to 1,024 bytes, stored as given
//! (no normalization), so `/a`, `a//b`, `./a`, `a/../b`, `folder/`, `/`,
//! `../`, NFC and NFD spellings, and segments over 255 bytes are all distinct
//! objects, listed in UTF-8 byte order.
//!
//! What it does, with S3's semantics and error codes:
//!
//! - buckets: CreateBucket (`BucketAlreadyOwnedByYou` if it exists),
//!   HeadBucket, DeleteBucket (`BucketNotEmpty`), ListBuckets,
//!   GetBucketLocation;
//! - objects: PutObject (Content-Type, `x-amz-meta-*`, Content-MD5 and
//!   `x-amz-checksum-*` verified, `If-Match`/`If-None-Match`), GetObject and
//!   HeadObject (`Range` → 206 + Content-Range or 416 `InvalidRange`;
//!   `If-Match`/`If-Unmodified-Since` → 412, `If-None-Match`/
//!   `If-Modified-Since` → 304), DeleteObject, DeleteObjects;
//! - listings: ListObjectsV2 (prefix, delimiter + CommonPrefixes, max-keys
//!   default and cap 1000, opaque continuation tokens, start-after,
//!   `encoding-type=url`) and ListObjects (v1, marker);
//! - multipart: CreateMultipartUpload (keeps Content-Type and metadata for
//!   the final object), UploadPart (quoted MD5 ETag), CompleteMultipartUpload
//!   (parts must exist, be ascending and carry their ETag: `InvalidPart`,
//!   `InvalidPartOrder`; every part but the last at least
//!   [`MemStore::min_part_size`]: `EntityTooSmall`; ETag
//!   `"<md5 of the part MD5s>-<n>"`), AbortMultipartUpload,
//!   ListMultipartUploads, ListParts (`NoSuchUpload` for unknown ids).
//!
//! Objects without a Content-Type are served as `binary/octet-stream`, as S3
//! does. With `encoding-type=url`, listed keys and prefixes are encoded the
//! way S3 (and MinIO) do: every byte but `A-Z a-z 0-9 - _ . / *` as `%XX`,
//! space as `+`, so clients decode them as form data (`+` → space).
//!
//! Nothing here panics on request input; a poisoned lock is recovered.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher as _;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use s3s::crypto::{Checksum as _, Md5};
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};

/// S3's minimum size for every part of a multipart upload but the last.
pub const DEFAULT_MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's maximum key length, in UTF-8 bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// What S3 serves as Content-Type for an object stored without one.
pub const DEFAULT_CONTENT_TYPE: &str = "binary/octet-stream";

const MAX_PART_NUMBER: i32 = 10_000;
const MAX_LIST: usize = 1000;

/// An S3 store in memory; clones share the same buckets.
#[derive(Clone)]
pub struct MemStore {
    state: Arc<Mutex<State>>,
}

/// What is known of a stored object (see [`MemStore::object_info`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    /// As sent in the `ETag` header, quoted: `"<md5 hex>"`, or
    /// `"<md5 hex>-<parts>"` for a multipart upload.
    pub etag: String,
    /// As stored; `None` if the upload gave none (served as
    /// [`DEFAULT_CONTENT_TYPE`]).
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-<name>`), names lowercase.
    pub metadata: BTreeMap<String, String>,
    pub last_modified: SystemTime,
}

/// A multipart upload neither completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenUpload {
    pub key: String,
    pub upload_id: String,
    /// Parts uploaded so far.
    pub parts: usize,
}

struct State {
    buckets: BTreeMap<String, BucketState>,
    /// By upload id.
    uploads: HashMap<String, UploadState>,
    upload_seq: u64,
    min_part_size: u64,
}

struct BucketState {
    created: SystemTime,
    objects: BTreeMap<String, StoredObject>,
}

#[derive(Clone)]
struct StoredObject {
    data: Bytes,
    /// Unquoted.
    etag: String,
    last_modified: SystemTime,
    content_type: Option<String>,
    metadata: BTreeMap<String, String>,
}

struct UploadState {
    bucket: String,
    key: String,
    /// Creation order, for listing uploads of one key oldest first.
    seq: u64,
    initiated: SystemTime,
    content_type: Option<String>,
    metadata: BTreeMap<String, String>,
    parts: BTreeMap<i32, StoredPart>,
}

struct StoredPart {
    data: Bytes,
    md5: [u8; 16],
    last_modified: SystemTime,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("MemStore")
            .field("buckets", &state.buckets.len())
            .field("uploads", &state.uploads.len())
            .field("min_part_size", &state.min_part_size)
            .finish()
    }
}

impl StoredObject {
    fn new(
        data: Bytes,
        etag: String,
        content_type: Option<String>,
        metadata: BTreeMap<String, String>,
    ) -> Self {
        Self {
            data,
            etag,
            last_modified: SystemTime::now(),
            content_type,
            metadata,
        }
    }

    fn info(&self) -> ObjectInfo {
        ObjectInfo {
            size: self.data.len() as u64,
            etag: format!("\"{}\"", self.etag),
            content_type: self.content_type.clone(),
            metadata: self.metadata.clone(),
            last_modified: self.last_modified,
        }
    }

    fn e_tag(&self) -> ETag {
        ETag::Strong(self.etag.clone())
    }

    fn timestamp(&self) -> Timestamp {
        Timestamp::from(self.last_modified)
    }

    fn served_content_type(&self) -> String {
        self.content_type
            .clone()
            .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string())
    }

    fn served_metadata(&self) -> Option<Metadata> {
        (!self.metadata.is_empty()).then(|| {
            self.metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }
}

// ---------------------------------------------------------------------------
// Plain Rust API, for seeding and inspecting from tests.

impl MemStore {
    /// An empty store; multipart parts must be [`DEFAULT_MIN_PART_SIZE`].
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                buckets: BTreeMap::new(),
                uploads: HashMap::new(),
                upload_seq: 0,
                min_part_size: DEFAULT_MIN_PART_SIZE,
            })),
        }
    }

    /// Sets the minimum size of every multipart part but the last.
    pub fn with_min_part_size(self, bytes: u64) -> Self {
        self.set_min_part_size(bytes);
        self
    }

    /// Same as [`MemStore::with_min_part_size`], on a shared store.
    pub fn set_min_part_size(&self, bytes: u64) {
        self.lock().min_part_size = bytes;
    }

    pub fn min_part_size(&self) -> u64 {
        self.lock().min_part_size
    }

    /// Creates `bucket`; `false` if it already existed. The name is not
    /// checked here (s3s checks the ones that come over HTTP).
    pub fn create_bucket(&self, bucket: &str) -> bool {
        let mut state = self.lock();
        if state.buckets.contains_key(bucket) {
            return false;
        }
        state.buckets.insert(
            bucket.to_string(),
            BucketState {
                created: SystemTime::now(),
                objects: BTreeMap::new(),
            },
        );
        true
    }

    pub fn has_bucket(&self, bucket: &str) -> bool {
        self.lock().buckets.contains_key(bucket)
    }

    pub fn bucket_names(&self) -> Vec<String> {
        self.lock().buckets.keys().cloned().collect()
    }

    /// Stores an object as a PutObject would (MD5 ETag, modified now);
    /// metadata names are lowercased like HTTP header names.
    pub fn put_object(
        &self,
        bucket: &str,
        key: &str,
        data: impl Into<Bytes>,
        content_type: Option<&str>,
        metadata: &[(&str, &str)],
    ) -> Result<ObjectInfo> {
        check_key(key)?;
        let data = data.into();
        let etag = hex(&Md5::checksum(&data));
        let metadata = metadata
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_string()))
            .collect();
        let object = StoredObject::new(data, etag, content_type.map(str::to_string), metadata);
        let info = object.info();
        let mut state = self.lock();
        let Some(b) = state.buckets.get_mut(bucket) else {
            bail!("no such bucket: {bucket}");
        };
        b.objects.insert(key.to_string(), object);
        Ok(info)
    }

    /// Size, ETag, Content-Type, metadata and modification time of `key`.
    pub fn object_info(&self, bucket: &str, key: &str) -> Result<ObjectInfo> {
        self.with_object(bucket, key, StoredObject::info)
    }

    /// The bytes of `key` (a cheap clone of the stored buffer).
    pub fn object_data(&self, bucket: &str, key: &str) -> Result<Bytes> {
        self.with_object(bucket, key, |o| o.data.clone())
    }

    /// Deletes `key`; `false` if there was no such object.
    pub fn delete_object(&self, bucket: &str, key: &str) -> Result<bool> {
        let mut state = self.lock();
        let Some(b) = state.buckets.get_mut(bucket) else {
            bail!("no such bucket: {bucket}");
        };
        Ok(b.objects.remove(key).is_some())
    }

    /// Every key of `bucket`, exactly as stored, in S3's (UTF-8 byte) order.
    pub fn keys(&self, bucket: &str) -> Result<Vec<String>> {
        self.with_bucket(bucket, |b| b.objects.keys().cloned().collect())
    }

    /// Every object of `bucket` as `(key, size)`, in S3's order.
    pub fn objects(&self, bucket: &str) -> Result<Vec<(String, u64)>> {
        self.with_bucket(bucket, |b| {
            b.objects
                .iter()
                .map(|(k, o)| (k.clone(), o.data.len() as u64))
                .collect()
        })
    }

    /// Multipart uploads into `bucket` neither completed nor aborted, by
    /// key, then oldest first (ListMultipartUploads' order).
    pub fn open_uploads(&self, bucket: &str) -> Result<Vec<OpenUpload>> {
        let state = self.lock();
        if !state.buckets.contains_key(bucket) {
            bail!("no such bucket: {bucket}");
        }
        let mut uploads: Vec<(&String, u64, OpenUpload)> = state
            .uploads
            .iter()
            .filter(|(_, u)| u.bucket == bucket)
            .map(|(id, u)| {
                (
                    &u.key,
                    u.seq,
                    OpenUpload {
                        key: u.key.clone(),
                        upload_id: id.clone(),
                        parts: u.parts.len(),
                    },
                )
            })
            .collect();
        uploads.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        Ok(uploads.into_iter().map(|(_, _, u)| u).collect())
    }

    /// Parts held by open multipart uploads, all buckets together.
    pub fn open_part_count(&self) -> usize {
        self.lock().uploads.values().map(|u| u.parts.len()).sum()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with_bucket<T>(&self, bucket: &str, f: impl FnOnce(&BucketState) -> T) -> Result<T> {
        let state = self.lock();
        match state.buckets.get(bucket) {
            Some(b) => Ok(f(b)),
            None => bail!("no such bucket: {bucket}"),
        }
    }

    fn with_object<T>(
        &self,
        bucket: &str,
        key: &str,
        f: impl FnOnce(&StoredObject) -> T,
    ) -> Result<T> {
        let state = self.lock();
        let Some(b) = state.buckets.get(bucket) else {
            bail!("no such bucket: {bucket}");
        };
        match b.objects.get(key) {
            Some(o) => Ok(f(o)),
            None => bail!("no such key {key:?} in bucket {bucket}"),
        }
    }

    /// A copy of object `key` (its data is shared, not copied).
    fn lookup(&self, bucket: &str, key: &str) -> S3Result<StoredObject> {
        let state = self.lock();
        let b = state.buckets.get(bucket).ok_or_else(no_such_bucket)?;
        b.objects.get(key).cloned().ok_or_else(no_such_key)
    }

    fn require_bucket(&self, bucket: &str) -> S3Result<()> {
        if self.lock().buckets.contains_key(bucket) {
            Ok(())
        } else {
            Err(no_such_bucket())
        }
    }
}

/// Keys S3 accepts: 1 to 1,024 bytes of UTF-8.
fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        bail!("an S3 key cannot be empty");
    }
    if key.len() > MAX_KEY_LEN {
        bail!(
            "key of {} bytes: S3 keys are at most {MAX_KEY_LEN} bytes",
            key.len()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Errors, with S3's messages.

fn no_such_bucket() -> S3Error {
    s3_error!(NoSuchBucket, "The specified bucket does not exist")
}

fn no_such_key() -> S3Error {
    s3_error!(NoSuchKey, "The specified key does not exist.")
}

fn no_such_upload() -> S3Error {
    s3_error!(
        NoSuchUpload,
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
    )
}

fn precondition_failed() -> S3Error {
    s3_error!(
        PreconditionFailed,
        "At least one of the pre-conditions you specified did not hold"
    )
}

fn invalid_part() -> S3Error {
    s3_error!(
        InvalidPart,
        "One or more of the specified parts could not be found.  The part may not have been uploaded, or the specified entity tag may not match the part's entity tag."
    )
}

fn not_modified(object: &StoredObject) -> S3Error {
    let mut err = s3_error!(NotModified);
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = object.e_tag().to_http_header() {
        headers.insert(http::header::ETAG, v);
    }
    let mut date = Vec::new();
    if object
        .timestamp()
        .format(TimestampFormat::HttpDate, &mut date)
        .is_ok()
    {
        if let Ok(v) = http::HeaderValue::from_bytes(&date) {
            headers.insert(http::header::LAST_MODIFIED, v);
        }
    }
    err.set_headers(headers);
    err
}

// ---------------------------------------------------------------------------
// Helpers for the S3 operations.

/// The whole request body (s3s has already undone aws-chunked encoding).
async fn read_body(body: Option<StreamingBlob>) -> S3Result<Bytes> {
    let Some(body) = body else {
        return Ok(Bytes::new());
    };
    match s3s::Body::from(body).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(match e.downcast::<S3Error>() {
            Ok(s3) => *s3,
            Err(e) => S3Error::with_source(S3ErrorCode::IncompleteBody, e),
        }),
    }
}

/// Checks `Content-MD5` (base64) against `md5`.
fn check_content_md5(content_md5: Option<&str>, md5: &[u8; 16]) -> S3Result<()> {
    let Some(given) = content_md5 else {
        return Ok(());
    };
    match b64_decode(given.trim(), B64_STD) {
        Some(bytes) if bytes.len() == 16 => {
            if bytes == md5 {
                Ok(())
            } else {
                Err(s3_error!(
                    BadDigest,
                    "The Content-MD5 you specified did not match what we received."
                ))
            }
        }
        _ => Err(s3_error!(
            InvalidDigest,
            "The Content-MD5 you specified was invalid."
        )),
    }
}

/// Checksums the client announced (`x-amz-checksum-*` headers or
/// trailers, `x-amz-sdk-checksum-algorithm`), computed over `data` and
/// compared; the computed ones are returned for the response.
/// The body of a PutObject or UploadPart with its Content-MD5 and checksums checked, as
/// `(data, md5, checksum)`. A macro: the two inputs are distinct types with these fields.
macro_rules! checked_body {
    ($input:ident, $trailers:expr) => {{
        let data = read_body($input.body).await?;
        let md5 = Md5::checksum(&data);
        check_content_md5($input.content_md5.as_deref(), &md5)?;
        let checksum = check_checksums(
            &data,
            $input.checksum_algorithm.as_ref(),
            Checksum {
                checksum_crc32: $input.checksum_crc32,
                checksum_crc32c: $input.checksum_crc32c,
                checksum_crc64nvme: $input.checksum_crc64nvme,
                checksum_sha1: $input.checksum_sha1,
                checksum_sha256: $input.checksum_sha256,
                checksum_type: None,
            },
            $trailers,
        )?;
        (data, md5, checksum)
    }};
}

fn check_checksums(
    data: &[u8],
    algorithm: Option<&ChecksumAlgorithm>,
    mut given: Checksum,
    trailers: Option<&s3s::TrailingHeaders>,
) -> S3Result<Checksum> {
    if let Some(trailers) = trailers.and_then(s3s::TrailingHeaders::take) {
        let get = |name: &str| -> S3Result<Option<String>> {
            match trailers.get(name) {
                None => Ok(None),
                Some(v) => v
                    .to_str()
                    .map(|s| Some(s.to_string()))
                    .map_err(|_| s3_error!(InvalidArgument, "invalid trailer {name}")),
            }
        };
        given.checksum_crc32 = get("x-amz-checksum-crc32")?.or(given.checksum_crc32);
        given.checksum_crc32c = get("x-amz-checksum-crc32c")?.or(given.checksum_crc32c);
        given.checksum_sha1 = get("x-amz-checksum-sha1")?.or(given.checksum_sha1);
        given.checksum_sha256 = get("x-amz-checksum-sha256")?.or(given.checksum_sha256);
        given.checksum_crc64nvme = get("x-amz-checksum-crc64nvme")?.or(given.checksum_crc64nvme);
    }
    let mut hasher = s3s::checksum::ChecksumHasher::default();
    if given.checksum_crc32.is_some() {
        hasher.crc32 = Some(Default::default());
    }
    if given.checksum_crc32c.is_some() {
        hasher.crc32c = Some(Default::default());
    }
    if given.checksum_sha1.is_some() {
        hasher.sha1 = Some(Default::default());
    }
    if given.checksum_sha256.is_some() {
        hasher.sha256 = Some(Default::default());
    }
    if given.checksum_crc64nvme.is_some() {
        hasher.crc64nvme = Some(Default::default());
    }
    if let Some(alg) = algorithm {
        match alg.as_str() {
            ChecksumAlgorithm::CRC32 => hasher.crc32 = Some(Default::default()),
            ChecksumAlgorithm::CRC32C => hasher.crc32c = Some(Default::default()),
            ChecksumAlgorithm::SHA1 => hasher.sha1 = Some(Default::default()),
            ChecksumAlgorithm::SHA256 => hasher.sha256 = Some(Default::default()),
            ChecksumAlgorithm::CRC64NVME => hasher.crc64nvme = Some(Default::default()),
            other => {
                return Err(s3_error!(
                    InvalidRequest,
                    "unsupported checksum algorithm {other}"
                ))
            }
        }
    }
    hasher.update(data);
    let computed = hasher.finalize();
    let pairs = [
        ("CRC32", &given.checksum_crc32, &computed.checksum_crc32),
        ("CRC32C", &given.checksum_crc32c, &computed.checksum_crc32c),
        ("SHA1", &given.checksum_sha1, &computed.checksum_sha1),
        ("SHA256", &given.checksum_sha256, &computed.checksum_sha256),
        (
            "CRC64NVME",
            &given.checksum_crc64nvme,
            &computed.checksum_crc64nvme,
        ),
    ];
    for (name, given, computed) in pairs {
        if let Some(given) = given {
            if Some(given) != computed.as_ref() {
                return Err(s3_error!(
                    BadDigest,
                    "The {name} you specified did not match the calculated checksum."
                ));
            }
        }
    }
    Ok(computed)
}

fn etag_matches(condition: &ETagCondition, etag: &ETag) -> bool {
    match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(given) => given.value() == etag.value(),
    }
}

/// A time as HTTP dates carry it (whole seconds), for If-(Un)Modified-Since.
fn http_time(t: SystemTime) -> Timestamp {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    Timestamp::from(UNIX_EPOCH + Duration::from_secs(secs))
}

/// GET/HEAD preconditions, in S3's (RFC 9110's) order: If-Match, else
/// If-Unmodified-Since (412); If-None-Match, else If-Modified-Since (304).
fn check_read_preconditions(
    object: &StoredObject,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let etag = object.e_tag();
    let modified = http_time(object.last_modified);
    match (if_match, if_unmodified_since) {
        (Some(c), _) if !etag_matches(c, &etag) => return Err(precondition_failed()),
        (None, Some(t)) if modified > *t => return Err(precondition_failed()),
        _ => {}
    }
    match (if_none_match, if_modified_since) {
        (Some(c), _) if etag_matches(c, &etag) => Err(not_modified(object)),
        (None, Some(t)) if modified <= *t => Err(not_modified(object)),
        _ => Ok(()),
    }
}

/// Write preconditions (PutObject, CompleteMultipartUpload): `If-None-Match:
/// *` fails if the key exists; `If-Match` needs the object, with that ETag.
fn check_write_preconditions(
    existing: Option<&StoredObject>,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<()> {
    if let (Some(c), Some(o)) = (if_none_match, existing) {
        if etag_matches(c, &o.e_tag()) {
            return Err(precondition_failed());
        }
    }
    if let Some(c) = if_match {
        match existing {
            None => return Err(no_such_key()),
            Some(o) if !etag_matches(c, &o.e_tag()) => return Err(precondition_failed()),
            Some(_) => {}
        }
    }
    Ok(())
}

/// The slice a `Range` asks for and its Content-Range, or 416.
fn apply_range(data: &Bytes, range: Option<Range>) -> S3Result<(Bytes, Option<String>)> {
    let Some(range) = range else {
        return Ok((data.clone(), None));
    };
    let total = data.len() as u64;
    let r = range
        .check(total)
        .map_err(|_| s3_error!(InvalidRange, "The requested range is not satisfiable"))?;
    let (Ok(start), Ok(end)) = (usize::try_from(r.start), usize::try_from(r.end)) else {
        return Err(s3_error!(
            InvalidRange,
            "The requested range is not satisfiable"
        ));
    };
    if start >= end || end > data.len() {
        return Err(s3_error!(
            InvalidRange,
            "The requested range is not satisfiable"
        ));
    }
    let content_range = format!("bytes {}-{}/{total}", r.start, r.end - 1);
    Ok((data.slice(start..end), Some(content_range)))
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn storage_class() -> ObjectStorageClass {
    ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)
}

/// `encoding-type`: `None`, or `Some(true)` for `url`; anything else is
/// S3's InvalidArgument.
fn url_encoding(encoding: Option<&EncodingType>) -> S3Result<bool> {
    match encoding {
        None => Ok(false),
        Some(e) if e.as_str().eq_ignore_ascii_case(EncodingType::URL) => Ok(true),
        Some(_) => Err(s3_error!(
            InvalidArgument,
            "Invalid Encoding Method specified in Request"
        )),
    }
}

/// `max-keys`/`max-uploads`/`max-parts`: default and cap 1000.
fn list_limit(max: Option<i32>, what: &str) -> S3Result<usize> {
    match max {
        None => Ok(MAX_LIST),
        Some(n) if n < 0 => Err(s3_error!(
            InvalidArgument,
            "Provided {what} not an integer or within integer range"
        )),
        Some(n) => Ok(usize::try_from(n).unwrap_or(MAX_LIST).min(MAX_LIST)),
    }
}

/// One listing entry: an object or a CommonPrefix.
enum Entry<'a, T> {
    Item(&'a str, T),
    Prefix(&'a str),
}

struct Page<'a, T> {
    entries: Vec<Entry<'a, T>>,
    truncated: bool,
    /// Name of the last entry returned (key or common prefix).
    last: Option<&'a str>,
}

/// S3's listing walk over keys in byte order: those starting with `prefix`
/// and sorting after `after`, rolled up to CommonPrefixes at `delimiter`,
/// at most `max` entries (objects and prefixes together).
fn list_page<'a, T>(
    items: impl Iterator<Item = (&'a str, T)>,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<&str>,
    max: usize,
) -> Page<'a, T> {
    let mut page = Page {
        entries: Vec::new(),
        truncated: false,
        last: None,
    };
    let mut last_prefix: Option<&'a str> = None;
    for (key, item) in items {
        if !key.starts_with(prefix) {
            continue;
        }
        if after.is_some_and(|a| key <= a) {
            continue;
        }
        let rest = &key[prefix.len()..];
        let entry = match delimiter.and_then(|d| rest.find(d).map(|i| i + d.len())) {
            Some(end) => {
                let common = &key[..prefix.len() + end];
                if last_prefix == Some(common) || after.is_some_and(|a| common <= a) {
                    continue;
                }
                last_prefix = Some(common);
                Entry::Prefix(common)
            }
            None => Entry::Item(key, item),
        };
        if page.entries.len() == max {
            page.truncated = max > 0;
            break;
        }
        page.last = Some(match entry {
            Entry::Item(k, _) | Entry::Prefix(k) => k,
        });
        page.entries.push(entry);
    }
    page
}

/// The keys of `objects` from where a listing of `prefix` after `after`
/// can start, in order.
fn object_range<'a>(
    objects: &'a BTreeMap<String, StoredObject>,
    prefix: &'a str,
    after: Option<&'a str>,
) -> impl Iterator<Item = (&'a str, &'a StoredObject)> + 'a {
    let start = match after {
        Some(a) if a >= prefix => Bound::Excluded(a),
        _ => Bound::Included(prefix),
    };
    objects
        .range::<str, _>((start, Bound::Unbounded))
        .map(|(k, v)| (k.as_str(), v))
        // Keys with the prefix are contiguous: past them, nothing matches.
        .take_while(move |(k, _)| k.starts_with(prefix))
}

fn object_entry(key: &str, o: &StoredObject, url: bool) -> Object {
    Object {
        key: Some(encode_if(url, key)),
        size: Some(to_i64(o.data.len())),
        e_tag: Some(o.e_tag()),
        last_modified: Some(o.timestamp()),
        storage_class: Some(storage_class()),
        ..Default::default()
    }
}

fn encode_if(url: bool, s: &str) -> String {
    if url {
        s3_url_encode(s)
    } else {
        s.to_string()
    }
}

/// S3's `encoding-type=url`: bytes outside `A-Z a-z 0-9 - _ . / *` as `%XX`
/// (uppercase hex), space as `+` (MinIO's `s3URLEncode`, which mirrors S3).
pub fn s3_url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' | b'*' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
                out.push(char::from(HEX_UPPER[usize::from(b & 15)]));
            }
        }
    }
    out
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

const B64_STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64 without padding.
fn b64_encode(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// Base64, padding optional; `None` if malformed.
fn b64_decode(s: &str, alphabet: &[u8; 64]) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = alphabet.iter().position(|&a| a == c)?;
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Continuation tokens: the last key or prefix returned, base64url. Opaque
/// to clients, as S3's are.
fn encode_token(last: &str) -> String {
    b64_encode(last.as_bytes(), B64_URL)
}

fn decode_token(token: &str) -> S3Result<String> {
    b64_decode(token, B64_URL)
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "The continuation token provided is incorrect"
            )
        })
}

fn new_upload_id(seq: u64) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let random = std::collections::hash_map::RandomState::new().hash_one((seq, nanos));
    format!("{seq:08x}{random:016x}")
}

// ---------------------------------------------------------------------------
// The S3 operations.

#[async_trait::async_trait]
impl S3 for MemStore {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = req.input.bucket;
        if !MemStore::create_bucket(self, &bucket) {
            return Err(s3_error!(
                BucketAlreadyOwnedByYou,
                "Your previous request to create the named bucket succeeded and you already own it."
            ));
        }
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.require_bucket(&req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.require_bucket(&req.input.bucket)?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let bucket = req.input.bucket;
        let mut state = self.lock();
        let b = state.buckets.get(&bucket).ok_or_else(no_such_bucket)?;
        if !b.objects.is_empty() {
            return Err(s3_error!(
                BucketNotEmpty,
                "The bucket you tried to delete is not empty"
            ));
        }
        state.buckets.remove(&bucket);
        state.uploads.retain(|_, u| u.bucket != bucket);
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let state = self.lock();
        let buckets = state
            .buckets
            .iter()
            .map(|(name, b)| Bucket {
                name: Some(name.clone()),
                creation_date: Some(Timestamp::from(b.created)),
                bucket_region: None,
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            ..Default::default()
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket)?;
        let (data, md5, checksum) = checked_body!(input, req.trailing_headers.as_ref());
        let etag = hex(&md5);
        let size = to_i64(data.len());
        let metadata = input.metadata.unwrap_or_default().into_iter().collect();
        let object = StoredObject::new(data, etag.clone(), input.content_type, metadata);

        let mut state = self.lock();
        let b = state
            .buckets
            .get_mut(&input.bucket)
            .ok_or_else(no_such_bucket)?;
        check_write_preconditions(
            b.objects.get(&input.key),
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
        )?;
        b.objects.insert(input.key, object);
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(etag)),
            size: Some(size),
            checksum_crc32: checksum.checksum_crc32,
            checksum_crc32c: checksum.checksum_crc32c,
            checksum_crc64nvme: checksum.checksum_crc64nvme,
            checksum_sha1: checksum.checksum_sha1,
            checksum_sha256: checksum.checksum_sha256,
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        if input.part_number.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "GetObject with partNumber is not supported by this server"
            ));
        }
        let object = self.lookup(&input.bucket, &input.key)?;
        check_read_preconditions(
            &object,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let (body, content_range) = apply_range(&object.data, input.range)?;
        Ok(S3Response::new(GetObjectOutput {
            content_length: Some(to_i64(body.len())),
            body: Some(StreamingBlob::from(s3s::Body::from(body))),
            content_range,
            accept_ranges: Some("bytes".to_string()),
            content_type: Some(object.served_content_type()),
            e_tag: Some(object.e_tag()),
            last_modified: Some(object.timestamp()),
            metadata: object.served_metadata(),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let object = self.lookup(&input.bucket, &input.key)?;
        check_read_preconditions(
            &object,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let (body, content_range) = apply_range(&object.data, input.range)?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(to_i64(body.len())),
            content_range,
            accept_ranges: Some("bytes".to_string()),
            content_type: Some(object.served_content_type()),
            e_tag: Some(object.e_tag()),
            last_modified: Some(object.timestamp()),
            metadata: object.served_metadata(),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        let mut state = self.lock();
        let b = state
            .buckets
            .get_mut(&input.bucket)
            .ok_or_else(no_such_bucket)?;
        if let Some(c) = &input.if_match {
            match b.objects.get(&input.key) {
                None => return Err(no_such_key()),
                Some(o) if !etag_matches(c, &o.e_tag()) => return Err(precondition_failed()),
                Some(_) => {}
            }
        }
        b.objects.remove(&input.key);
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut state = self.lock();
        let b = state
            .buckets
            .get_mut(&input.bucket)
            .ok_or_else(no_such_bucket)?;
        let mut deleted = Vec::new();
        for object in input.delete.objects {
            b.objects.remove(&object.key);
            if !quiet {
                deleted.push(DeletedObject {
                    key: Some(object.key),
                    version_id: object.version_id,
                    ..Default::default()
                });
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let url = url_encoding(input.encoding_type.as_ref())?;
        let max = list_limit(input.max_keys, "max-keys")?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.as_deref().filter(|d| !d.is_empty());
        // A continuation token, when given, says where to go on from;
        // start-after only applies to the first page.
        let after = match &input.continuation_token {
            Some(token) => Some(decode_token(token)?),
            None => input.start_after.clone().filter(|s| !s.is_empty()),
        };

        let state = self.lock();
        let b = state
            .buckets
            .get(&input.bucket)
            .ok_or_else(no_such_bucket)?;
        let page = list_page(
            object_range(&b.objects, &prefix, after.as_deref()),
            &prefix,
            delimiter,
            after.as_deref(),
            max,
        );
        let mut contents = Vec::new();
        let mut common_prefixes = Vec::new();
        for entry in &page.entries {
            match entry {
                Entry::Item(key, o) => contents.push(object_entry(key, o, url)),
                Entry::Prefix(p) => common_prefixes.push(CommonPrefix {
                    prefix: Some(encode_if(url, p)),
                }),
            }
        }
        let next = page.last.filter(|_| page.truncated).map(encode_token);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(encode_if(url, &prefix)),
            delimiter: input.delimiter.map(|d| encode_if(url, &d)),
            start_after: input.start_after.map(|s| encode_if(url, &s)),
            max_keys: Some(i32::try_from(max).unwrap_or(i32::MAX)),
            key_count: Some(i32::try_from(page.entries.len()).unwrap_or(i32::MAX)),
            is_truncated: Some(page.truncated),
            continuation_token: input.continuation_token,
            next_continuation_token: next,
            contents: Some(contents),
            common_prefixes: Some(common_prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let url = url_encoding(input.encoding_type.as_ref())?;
        let max = list_limit(input.max_keys, "max-keys")?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.as_deref().filter(|d| !d.is_empty());
        let after = input.marker.as_deref().filter(|m| !m.is_empty());

        let state = self.lock();
        let b = state
            .buckets
            .get(&input.bucket)
            .ok_or_else(no_such_bucket)?;
        let page = list_page(
            object_range(&b.objects, &prefix, after),
            &prefix,
            delimiter,
            after,
            max,
        );
        let mut contents = Vec::new();
        let mut common_prefixes = Vec::new();
        for entry in &page.entries {
            match entry {
                Entry::Item(key, o) => contents.push(object_entry(key, o, url)),
                Entry::Prefix(p) => common_prefixes.push(CommonPrefix {
                    prefix: Some(encode_if(url, p)),
                }),
            }
        }
        // S3 sends NextMarker only with a delimiter; without one, clients
        // go on from the last key.
        let next_marker = page
            .last
            .filter(|_| page.truncated && delimiter.is_some())
            .map(|m| encode_if(url, m));
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(encode_if(url, &prefix)),
            marker: Some(encode_if(url, input.marker.as_deref().unwrap_or(""))),
            delimiter: input.delimiter.map(|d| encode_if(url, &d)),
            max_keys: Some(i32::try_from(max).unwrap_or(i32::MAX)),
            is_truncated: Some(page.truncated),
            next_marker,
            contents: Some(contents),
            common_prefixes: Some(common_prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        let mut state = self.lock();
        if !state.buckets.contains_key(&input.bucket) {
            return Err(no_such_bucket());
        }
        state.upload_seq += 1;
        let seq = state.upload_seq;
        let id = new_upload_id(seq);
        state.uploads.insert(
            id.clone(),
            UploadState {
                bucket: input.bucket.clone(),
                key: input.key.clone(),
                seq,
                initiated: SystemTime::now(),
                content_type: input.content_type,
                metadata: input.metadata.unwrap_or_default().into_iter().collect(),
                parts: BTreeMap::new(),
            },
        );
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            checksum_algorithm: input.checksum_algorithm,
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        if !(1..=MAX_PART_NUMBER).contains(&input.part_number) {
            return Err(s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive"
            ));
        }
        let is_open = |state: &State| {
            state
                .uploads
                .get(&input.upload_id)
                .is_some_and(|u| u.bucket == input.bucket && u.key == input.key)
        };
        {
            let state = self.lock();
            if !state.buckets.contains_key(&input.bucket) {
                return Err(no_such_bucket());
            }
            if !is_open(&state) {
                return Err(no_such_upload());
            }
        }
        let (data, md5, checksum) = checked_body!(input, req.trailing_headers.as_ref());

        let mut state = self.lock();
        // Aborted or completed while the body was coming in?
        if !is_open(&state) {
            return Err(no_such_upload());
        }
        if let Some(upload) = state.uploads.get_mut(&input.upload_id) {
            upload.parts.insert(
                input.part_number,
                StoredPart {
                    data,
                    md5,
                    last_modified: SystemTime::now(),
                },
            );
        }
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(hex(&md5))),
            checksum_crc32: checksum.checksum_crc32,
            checksum_crc32c: checksum.checksum_crc32c,
            checksum_crc64nvme: checksum.checksum_crc64nvme,
            checksum_sha1: checksum.checksum_sha1,
            checksum_sha256: checksum.checksum_sha256,
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let listed = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();

        let mut state = self.lock();
        let min_part_size = state.min_part_size;
        let upload = state
            .uploads
            .get(&input.upload_id)
            .filter(|u| u.bucket == input.bucket && u.key == input.key)
            .ok_or_else(no_such_upload)?;
        if listed.is_empty() {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema"
            ));
        }
        let mut previous = 0;
        let mut chosen = Vec::with_capacity(listed.len());
        for part in &listed {
            let Some(number) = part.part_number else {
                return Err(s3_error!(
                    MalformedXML,
                    "The XML you provided was not well-formed or did not validate against our published schema"
                ));
            };
            if number <= previous {
                return Err(s3_error!(
                    InvalidPartOrder,
                    "The list of parts was not in ascending order. Parts must be ordered by part number."
                ));
            }
            previous = number;
            let stored = upload.parts.get(&number).ok_or_else(invalid_part)?;
            let given = part.e_tag.as_ref().map(ETag::value);
            if given != Some(hex(&stored.md5).as_str()) {
                return Err(invalid_part());
            }
            chosen.push(stored);
        }
        // Sizes once every listed part is known to be there.
        if let Some((_, all_but_last)) = chosen.split_last() {
            if all_but_last
                .iter()
                .any(|p| (p.data.len() as u64) < min_part_size)
            {
                return Err(s3_error!(
                    EntityTooSmall,
                    "Your proposed upload is smaller than the minimum allowed object size."
                ));
            }
        }

        let total = chosen.iter().map(|p| p.data.len()).sum();
        let mut data = BytesMut::with_capacity(total);
        let mut md5s = Vec::with_capacity(chosen.len() * 16);
        for part in &chosen {
            data.extend_from_slice(&part.data);
            md5s.extend_from_slice(&part.md5);
        }
        let etag = format!("{}-{}", hex(&Md5::checksum(&md5s)), chosen.len());
        let object = StoredObject::new(
            data.freeze(),
            etag.clone(),
            upload.content_type.clone(),
            upload.metadata.clone(),
        );

        let b = state
            .buckets
            .get_mut(&input.bucket)
            .ok_or_else(no_such_bucket)?;
        check_write_preconditions(
            b.objects.get(&input.key),
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
        )?;
        b.objects.insert(input.key.clone(), object);
        state.uploads.remove(&input.upload_id);
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(ETag::Strong(etag)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        let mut state = self.lock();
        if !state.buckets.contains_key(&input.bucket) {
            return Err(no_such_bucket());
        }
        let open = state
            .uploads
            .get(&input.upload_id)
            .is_some_and(|u| u.bucket == input.bucket && u.key == input.key);
        if !open {
            return Err(no_such_upload());
        }
        state.uploads.remove(&input.upload_id);
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let url = url_encoding(input.encoding_type.as_ref())?;
        let max = list_limit(input.max_uploads, "max-uploads")?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.as_deref().filter(|d| !d.is_empty());

        let state = self.lock();
        if !state.buckets.contains_key(&input.bucket) {
            return Err(no_such_bucket());
        }
        let mut uploads: Vec<(&String, &UploadState)> = state
            .uploads
            .iter()
            .filter(|(_, u)| u.bucket == input.bucket)
            .collect();
        uploads.sort_by(|a, b| (&a.1.key, a.1.seq).cmp(&(&b.1.key, b.1.seq)));
        // key-marker alone: keys after it; with upload-id-marker: also that
        // key's uploads created after the marker upload.
        let key_marker = input.key_marker.as_deref().filter(|k| !k.is_empty());
        let id_marker_seq = input
            .upload_id_marker
            .as_deref()
            .and_then(|id| state.uploads.get(id))
            .map(|u| u.seq);
        let items = uploads.into_iter().filter(|(_, u)| match key_marker {
            None => true,
            Some(km) => {
                u.key.as_str() > km || (u.key == km && id_marker_seq.is_some_and(|seq| u.seq > seq))
            }
        });
        let page = list_page(
            items.map(|(id, u)| (u.key.as_str(), (id, u))),
            &prefix,
            delimiter,
            None,
            max,
        );
        let mut listed = Vec::new();
        let mut common_prefixes = Vec::new();
        let mut next_markers = None;
        for entry in &page.entries {
            match entry {
                Entry::Item(key, (id, u)) => {
                    next_markers = Some((*key, id.as_str()));
                    listed.push(MultipartUpload {
                        key: Some(encode_if(url, key)),
                        upload_id: Some((*id).clone()),
                        initiated: Some(Timestamp::from(u.initiated)),
                        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                        ..Default::default()
                    });
                }
                Entry::Prefix(p) => {
                    next_markers = Some((*p, ""));
                    common_prefixes.push(CommonPrefix {
                        prefix: Some(encode_if(url, p)),
                    });
                }
            }
        }
        let (next_key_marker, next_upload_id_marker) = match next_markers {
            Some((key, id)) if page.truncated => (Some(encode_if(url, key)), Some(id.to_string())),
            _ => (None, None),
        };
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: Some(encode_if(url, &prefix)),
            delimiter: input.delimiter.map(|d| encode_if(url, &d)),
            key_marker: Some(encode_if(url, input.key_marker.as_deref().unwrap_or(""))),
            upload_id_marker: Some(input.upload_id_marker.unwrap_or_default()),
            next_key_marker,
            next_upload_id_marker,
            max_uploads: Some(i32::try_from(max).unwrap_or(i32::MAX)),
            is_truncated: Some(page.truncated),
            uploads: Some(listed),
            common_prefixes: Some(common_prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let max = list_limit(input.max_parts, "max-parts")?;
        let marker = input.part_number_marker.unwrap_or(0);
        let state = self.lock();
        if !state.buckets.contains_key(&input.bucket) {
            return Err(no_such_bucket());
        }
        let upload = state
            .uploads
            .get(&input.upload_id)
            .filter(|u| u.bucket == input.bucket && u.key == input.key)
            .ok_or_else(no_such_upload)?;
        let mut after = upload
            .parts
            .range((Bound::Excluded(marker), Bound::Unbounded))
            .peekable();
        let mut parts = Vec::new();
        while parts.len() < max {
            let Some((number, part)) = after.next() else {
                break;
            };
            parts.push(Part {
                part_number: Some(*number),
                e_tag: Some(ETag::Strong(hex(&part.md5))),
                size: Some(to_i64(part.data.len())),
                last_modified: Some(Timestamp::from(part.last_modified)),
                ..Default::default()
            });
        }
        let truncated = max > 0 && after.peek().is_some();
        let next = parts.last().and_then(|p| p.part_number);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            part_number_marker: Some(marker),
            next_part_number_marker: next.filter(|_| truncated),
            max_parts: Some(i32::try_from(max).unwrap_or(i32::MAX)),
            is_truncated: Some(truncated),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            parts: Some(parts),
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(page: &Page<'_, &()>) -> Vec<String> {
        page.entries
            .iter()
            .map(|e| match e {
                Entry::Item(k, _) => (*k).to_string(),
                Entry::Prefix(p) => format!("{p}(prefix)"),
            })
            .collect()
    }

    #[test]
    fn listing_walks_prefixes_delimiters_and_markers() {
        let all = ["a", "a/", "a/b", "a/c/d", "a/c/e", "b", "b/x"];
        let items = || all.iter().map(|k| (*k, &()));
        let page = list_page(items(), "", Some("/"), None, 1000);
        assert_eq!(keys(&page), ["a", "a/(prefix)", "b", "b/(prefix)"]);
        assert!(!page.truncated);

        let page = list_page(items(), "a/", Some("/"), None, 1000);
        assert_eq!(keys(&page), ["a/", "a/b", "a/c/(prefix)"]);

        let page = list_page(items(), "", Some("/"), None, 2);
        assert_eq!(keys(&page), ["a", "a/(prefix)"]);
        assert!(page.truncated);
        assert_eq!(page.last, Some("a/"));
        // Going on after a common prefix skips the keys under it.
        let page = list_page(items(), "", Some("/"), Some("a/"), 2);
        assert_eq!(keys(&page), ["b", "b/(prefix)"]);
        assert!(!page.truncated);

        let page = list_page(items(), "", None, Some("a/b"), 1000);
        assert_eq!(keys(&page), ["a/c/d", "a/c/e", "b", "b/x"]);
        let page = list_page(items(), "", None, None, 0);
        assert!(page.entries.is_empty() && !page.truncated);
    }

    #[test]
    fn url_encoding_is_s3s() {
        assert_eq!(s3_url_encode("a b+c/d*e~f"), "a+b%2Bc/d*e%7Ef");
        assert_eq!(s3_url_encode("é%"), "%C3%A9%25");
    }

    #[test]
    fn base64_round_trips() {
        for s in ["", "f", "fo", "foo", "foob", "/../ é 😀"] {
            let enc = b64_encode(s.as_bytes(), B64_URL);
            assert_eq!(b64_decode(&enc, B64_URL).unwrap(), s.as_bytes());
        }
        assert_eq!(b64_encode(b"foobar", B64_STD), "Zm9vYmFy");
        assert_eq!(
            b64_decode("1B2M2Y8AsgTpgAmY7PhCfg==", B64_STD)
                .unwrap()
                .len(),
            16
        );
        assert!(b64_decode("a", B64_STD).is_none());
        assert!(b64_decode("a!bc", B64_STD).is_none());
        assert!(decode_token("").is_err());
    }

    #[test]
    fn helper_api_keeps_keys_exactly() {
        let store = MemStore::new();
        assert!(store.create_bucket("b"));
        assert!(!store.create_bucket("b"));
        for key in ["/", "../", "a//b", "./x", "é", "e\u{301}"] {
            store
                .put_object("b", key, key.as_bytes().to_vec(), None, &[])
                .unwrap();
        }
        let mut expected = vec!["/", "../", "a//b", "./x", "é", "e\u{301}"];
        expected.sort();
        assert_eq!(store.keys("b").unwrap(), expected);
        assert!(store.put_object("b", "", b"".to_vec(), None, &[]).is_err());
        assert!(store
            .put_object("b", &"k".repeat(1025), b"".to_vec(), None, &[])
            .is_err());
        assert!(store
            .put_object("nope", "k", b"".to_vec(), None, &[])
            .is_err());
        let info = store
            .put_object(
                "b",
                "k",
                b"".to_vec(),
                Some("text/plain"),
                &[("Color", "blue")],
            )
            .unwrap();
        assert_eq!(info.etag, "\"d41d8cd98f00b204e9800998ecf8427e\"");
        assert_eq!(info.metadata.get("color").map(String::as_str), Some("blue"));
        assert!(store.delete_object("b", "k").unwrap());
        assert!(!store.delete_object("b", "k").unwrap());
    }
}
