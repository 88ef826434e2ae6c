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
//! - bucket settings ([`MemBucketSettings`]): Get/PutBucketCors,
//!   Get/PutBucketLifecycleConfiguration, Get/PutBucketPolicy (`NoSuchCORSConfiguration`,
//!   `NoSuchLifecycleConfiguration`, `NoSuchBucketPolicy` when unset; the policy must be
//!   JSON), Get/PutBucketVersioning;
//! - objects: PutObject (Content-Type, `x-amz-meta-*`, the standard headers
//!   of [`ObjectHeaders`] kept and served again, Content-MD5 and
//!   `x-amz-checksum-*` verified, `If-Match`/`If-None-Match`), GetObject and
//!   HeadObject (`Range` → 206 + Content-Range or 416 `InvalidRange`;
//!   `If-Match`/`If-Unmodified-Since` → 412, `If-None-Match`/
//!   `If-Modified-Since` → 304), DeleteObject, DeleteObjects;
//! - listings: ListObjectsV2 (prefix, delimiter + CommonPrefixes, max-keys
//!   default and cap 1000, opaque continuation tokens, start-after,
//!   `encoding-type=url`) and ListObjects (v1, marker);
//! - multipart: CreateMultipartUpload (keeps Content-Type, metadata and headers for
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

#[macro_use]
mod checks;
mod listing;
mod service;

use checks::*;
use listing::*;

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

pub(super) const MAX_PART_NUMBER: i32 = 10_000;
pub(super) const MAX_LIST: usize = 1000;

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
    pub headers: ObjectHeaders,
    /// Its grants (PutObject's `x-amz-acl` or `x-amz-grant-*`; owner-only by default).
    pub acl: Vec<MemGrant>,
    /// Its tags (`x-amz-tagging`), in order.
    pub tags: Vec<(String, String)>,
    pub last_modified: SystemTime,
}

/// The canonical id of the one owner of everything in the store.
pub const OWNER_ID: &str = "75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a";
/// The group of anonymous requests.
pub const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
/// The group of every signed-in account.
pub const AUTHENTICATED_USERS: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";

/// One grant: its grantee as `x-amz-grant-*` names it (`id=...`, `uri=...`,
/// `emailAddress=...`, unquoted) and its permission.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemGrant {
    pub grantee: String,
    pub permission: String,
}

impl MemGrant {
    pub fn new(grantee: &str, permission: &str) -> Self {
        Self {
            grantee: grantee.to_string(),
            permission: permission.to_string(),
        }
    }

    /// The grants of a canned ACL; `None` for a name S3 does not know.
    pub fn canned(name: &str) -> Option<Vec<MemGrant>> {
        let owner = MemGrant::new(&format!("id={OWNER_ID}"), "FULL_CONTROL");
        let all = |p: &str| MemGrant::new(&format!("uri={ALL_USERS}"), p);
        Some(match name {
            "private" => vec![owner],
            "public-read" => vec![owner, all("READ")],
            "public-read-write" => vec![owner, all("READ"), all("WRITE")],
            "authenticated-read" => vec![
                owner,
                MemGrant::new(&format!("uri={AUTHENTICATED_USERS}"), "READ"),
            ],
            _ => return None,
        })
    }
}

/// The standard headers an object keeps besides Content-Type: PutObject and
/// CreateMultipartUpload set them, GetObject and HeadObject return them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectHeaders {
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    /// An HTTP date, as served.
    pub expires: Option<String>,
    pub website_redirect_location: Option<String>,
    /// `None`: STANDARD.
    pub storage_class: Option<String>,
}

impl ObjectHeaders {
    pub(super) fn expires_timestamp(&self) -> Option<Timestamp> {
        self.expires
            .as_deref()
            .and_then(|d| Timestamp::parse(TimestampFormat::HttpDate, d).ok())
    }

    pub(super) fn from_timestamp(t: Option<&Timestamp>) -> Option<String> {
        let mut out = Vec::new();
        t?.format(TimestampFormat::HttpDate, &mut out).ok()?;
        String::from_utf8(out).ok()
    }
}

/// A multipart upload neither completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenUpload {
    pub key: String,
    pub upload_id: String,
    /// Parts uploaded so far.
    pub parts: usize,
}

pub(super) struct State {
    pub(super) buckets: BTreeMap<String, BucketState>,
    /// By upload id.
    pub(super) uploads: HashMap<String, UploadState>,
    pub(super) upload_seq: u64,
    pub(super) min_part_size: u64,
    /// Every part but the last must have the same size (as Cloudflare R2 wants).
    pub(super) equal_parts: bool,
    /// UploadPartCopy is refused with 501 NotImplemented (as a service without it, or
    /// Spaces copying across regions).
    pub(super) no_part_copy: bool,
}

pub(super) struct BucketState {
    pub(super) created: SystemTime,
    pub(super) objects: BTreeMap<String, StoredObject>,
    pub(super) settings: MemBucketSettings,
}

/// A bucket's settings, as the Put operations stored them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemBucketSettings {
    pub cors: Option<CORSRules>,
    pub lifecycle: Option<LifecycleRules>,
    /// The policy document, as sent.
    pub policy: Option<String>,
    /// `Enabled` or `Suspended`.
    pub versioning: Option<String>,
}

#[derive(Clone)]
pub(super) struct StoredObject {
    pub(super) data: Bytes,
    /// Unquoted.
    pub(super) etag: String,
    pub(super) last_modified: SystemTime,
    pub(super) content_type: Option<String>,
    pub(super) metadata: BTreeMap<String, String>,
    pub(super) headers: ObjectHeaders,
    pub(super) acl: Vec<MemGrant>,
    pub(super) tags: Vec<(String, String)>,
}

pub(super) struct UploadState {
    pub(super) bucket: String,
    pub(super) key: String,
    /// Creation order, for listing uploads of one key oldest first.
    pub(super) seq: u64,
    pub(super) initiated: SystemTime,
    pub(super) content_type: Option<String>,
    pub(super) metadata: BTreeMap<String, String>,
    pub(super) headers: ObjectHeaders,
    pub(super) acl: Vec<MemGrant>,
    pub(super) tags: Vec<(String, String)>,
    pub(super) parts: BTreeMap<i32, StoredPart>,
}

pub(super) struct StoredPart {
    pub(super) data: Bytes,
    md5: [u8; 16],
    pub(super) last_modified: SystemTime,
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
            headers: ObjectHeaders::default(),
            acl: MemGrant::canned("private").unwrap_or_default(),
            tags: Vec::new(),
        }
    }

    fn with_headers(mut self, headers: ObjectHeaders) -> Self {
        self.headers = headers;
        self
    }

    fn with_access(mut self, acl: Vec<MemGrant>, tags: Vec<(String, String)>) -> Self {
        self.acl = acl;
        self.tags = tags;
        self
    }

    fn info(&self) -> ObjectInfo {
        ObjectInfo {
            size: self.data.len() as u64,
            etag: format!("\"{}\"", self.etag),
            content_type: self.content_type.clone(),
            metadata: self.metadata.clone(),
            headers: self.headers.clone(),
            acl: self.acl.clone(),
            tags: self.tags.clone(),
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
                equal_parts: false,
                no_part_copy: false,
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

    /// From now on, CompleteMultipartUpload refuses uploads whose parts (but the last)
    /// differ in size, with R2's `InvalidPart`.
    pub fn set_equal_parts(&self, equal: bool) {
        self.lock().equal_parts = equal;
    }

    /// From now on (with `true`), UploadPartCopy is refused with 501 NotImplemented.
    pub fn set_no_part_copy(&self, refuse: bool) {
        self.lock().no_part_copy = refuse;
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
                settings: MemBucketSettings::default(),
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

    /// Sets the standard headers `key` keeps (as a PutObject sending them would have).
    pub fn set_headers(&self, bucket: &str, key: &str, headers: ObjectHeaders) -> Result<()> {
        self.change_object(bucket, key, |o| o.headers = headers)
    }

    /// Sets the grants and the tags of `key` (as PutObjectAcl and PutObjectTagging).
    pub fn set_access(
        &self,
        bucket: &str,
        key: &str,
        acl: Vec<MemGrant>,
        tags: &[(&str, &str)],
    ) -> Result<()> {
        let tags = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.change_object(bucket, key, |o| {
            o.acl = acl;
            o.tags = tags;
        })
    }

    /// The bucket's CORS, lifecycle, policy and versioning settings.
    pub fn bucket_settings(&self, bucket: &str) -> Result<MemBucketSettings> {
        self.with_bucket(bucket, |b| b.settings.clone())
    }

    fn change_settings(
        &self,
        bucket: &str,
        f: impl FnOnce(&mut MemBucketSettings),
    ) -> S3Result<()> {
        let mut state = self.lock();
        let b = state.buckets.get_mut(bucket).ok_or_else(no_such_bucket)?;
        f(&mut b.settings);
        Ok(())
    }

    fn settings_of(&self, bucket: &str) -> S3Result<MemBucketSettings> {
        let state = self.lock();
        let b = state.buckets.get(bucket).ok_or_else(no_such_bucket)?;
        Ok(b.settings.clone())
    }

    /// Size, ETag, Content-Type, metadata, headers and modification time of `key`.
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

    fn change_object(
        &self,
        bucket: &str,
        key: &str,
        f: impl FnOnce(&mut StoredObject),
    ) -> Result<()> {
        let mut state = self.lock();
        let Some(object) = state
            .buckets
            .get_mut(bucket)
            .and_then(|b| b.objects.get_mut(key))
        else {
            bail!("no such key {key:?} in bucket {bucket}");
        };
        f(object);
        Ok(())
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
pub(super) fn check_key(key: &str) -> Result<()> {
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

pub(super) fn no_such_bucket() -> S3Error {
    s3_error!(NoSuchBucket, "The specified bucket does not exist")
}

pub(super) fn no_such_key() -> S3Error {
    s3_error!(NoSuchKey, "The specified key does not exist.")
}

pub(super) fn no_such_upload() -> S3Error {
    s3_error!(
        NoSuchUpload,
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
    )
}

pub(super) fn precondition_failed() -> S3Error {
    s3_error!(
        PreconditionFailed,
        "At least one of the pre-conditions you specified did not hold"
    )
}

pub(super) fn invalid_part() -> S3Error {
    s3_error!(
        InvalidPart,
        "One or more of the specified parts could not be found.  The part may not have been uploaded, or the specified entity tag may not match the part's entity tag."
    )
}

pub(super) fn not_modified(object: &StoredObject) -> S3Error {
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
