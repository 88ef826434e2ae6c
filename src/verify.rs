//! `verify`: compares an archive with the source bucket as it is now. The archive's end
//! and its manifest are read with `Range` requests (never the whole archive), the
//! manifest is inflated as it streams, and it is merged with a fresh listing: both are in
//! key order, so memory stays flat whatever the bucket's size.
//!
//! - `missing`: in the archive, no longer in the source;
//! - `changed`: in both, with another size or ETag (with `deep`, other content: the
//!   source object's CRC-32 differs from the archived one);
//! - `new`: in the source, not in the archive (added since, or skipped then).

use std::cmp::Ordering;
use std::collections::VecDeque;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::backup::{s3_failure, BackupError, Side};
use crate::config::Config;
use crate::http::Response;
use crate::list::Lister;
use crate::naming::{is_own_archive, MANIFEST_NAME};
use crate::s3::{Op, S3Error, S3};
use crate::xml::ListedObject;
use crate::zipread::{self, CentralEntry};

/// Differences named in the answer; all are counted.
pub(crate) const LISTED: usize = 1000;

pub(crate) const CHUNK: usize = 256 * 1024;

pub(crate) fn protocol(what: impl Into<String>) -> S3Error {
    S3Error::Protocol(what.into())
}

pub(crate) fn get_op<'a>(key: &'a str, range: Option<(u64, u64)>) -> Op<'a> {
    Op {
        name: "GetObject",
        method: "GET",
        key: Some(key),
        query: vec![],
        headers: range
            .map(|(a, b)| vec![("range".to_string(), format!("bytes={a}-{b}"))])
            .unwrap_or_default(),
    }
}

fn read_all(resp: &mut Response, limit: usize) -> Result<Vec<u8>, S3Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .read_chunk(CHUNK)
        .map_err(|e| S3Error::Transport(e.0))?
    {
        out.extend_from_slice(&chunk);
        if out.len() > limit {
            return Err(protocol("more bytes than asked for"));
        }
    }
    Ok(out)
}

/// One manifest line, as `archive` writes it.
#[derive(Deserialize)]
pub(crate) struct Line {
    pub key: String,
    #[serde(default)]
    pub entry: Option<String>,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub etag: String,
    #[serde(default, rename = "contentType")]
    pub content_type: Option<String>,
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub crc32: Option<String>,
    #[serde(default)]
    pub skipped: Option<String>,
}

/// The manifest's lines, inflated from a ranged GET as they are needed.
pub(crate) struct Manifest {
    resp: Response,
    /// Compressed bytes still to come.
    left: u64,
    inflate: flate2::Decompress,
    text: Vec<u8>,
    done: bool,
}

impl Manifest {
    pub(crate) fn open(
        dst: &S3,
        archive: &str,
        entry: &CentralEntry,
        len: u64,
    ) -> Result<Self, S3Error> {
        if entry.method != 8 {
            return Err(protocol("the manifest is not deflated"));
        }
        // The local header's name and extra field: at most 2 × 64 KiB.
        let end = (entry.offset + 30 + 2 * 0xFFFF + entry.compressed).min(len) - 1;
        let mut resp = dst.call(&get_op(archive, Some((entry.offset, end))), None)?;
        let mut head = Vec::new();
        while head.len() < 30 {
            match resp
                .read_chunk(30 - head.len())
                .map_err(|e| S3Error::Transport(e.0))?
            {
                Some(c) => head.extend_from_slice(&c),
                None => return Err(protocol("the archive ends inside a local header")),
            }
        }
        let mut skip = zipread::local_header_len(&head).map_err(protocol)? - 30;
        while skip > 0 {
            let n = usize::try_from(skip.min(CHUNK as u64)).unwrap_or(CHUNK);
            match resp.read_chunk(n).map_err(|e| S3Error::Transport(e.0))? {
                Some(c) => skip -= c.len() as u64,
                None => return Err(protocol("the archive ends inside a local header")),
            }
        }
        Ok(Self {
            resp,
            left: entry.compressed,
            inflate: flate2::Decompress::new(false),
            text: Vec::new(),
            done: false,
        })
    }

    fn next_line(&mut self) -> Result<Option<Line>, S3Error> {
        loop {
            if let Some(nl) = self.text.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.text.drain(..=nl).collect();
                return serde_json::from_slice(&line[..nl])
                    .map(Some)
                    .map_err(|e| protocol(format!("a manifest line is not JSON: {e}")));
            }
            if self.done {
                return Ok(None);
            }
            let want = usize::try_from(self.left.min(CHUNK as u64)).unwrap_or(CHUNK);
            let input = if want == 0 {
                Vec::new()
            } else {
                self.resp
                    .read_chunk(want)
                    .map_err(|e| S3Error::Transport(e.0))?
                    .ok_or_else(|| protocol("the archive ends inside the manifest"))?
            };
            self.left -= input.len() as u64;
            let mut rest = &input[..];
            loop {
                self.text.reserve(64 * 1024);
                let before = self.inflate.total_in();
                let status = self
                    .inflate
                    .decompress_vec(rest, &mut self.text, flate2::FlushDecompress::None)
                    .map_err(|e| protocol(format!("the manifest does not inflate: {e}")))?;
                rest = &rest[(self.inflate.total_in() - before) as usize..];
                if status == flate2::Status::StreamEnd {
                    self.done = true;
                    break;
                }
                if rest.is_empty() && self.text.len() < self.text.capacity() {
                    break;
                }
            }
            if self.left == 0 && !self.done && input.is_empty() {
                return Err(protocol("the manifest ends early"));
            }
        }
    }

    /// The next object the archive holds (lines of skipped objects are passed over).
    pub(crate) fn next_archived(&mut self) -> Result<Option<Line>, S3Error> {
        while let Some(line) = self.next_line()? {
            if line.skipped.is_none() {
                return Ok(Some(line));
            }
        }
        Ok(None)
    }
}

/// The source's objects in key order, filtered as a backup filters them.
struct Source<'a> {
    lister: Lister<'a>,
    page: VecDeque<ListedObject>,
    config: &'a Config,
}

impl Source<'_> {
    fn next(&mut self) -> Result<Option<ListedObject>, S3Error> {
        let same_bucket = self.config.source.bucket == self.config.dest.bucket
            && self.config.source.endpoint == self.config.dest.endpoint;
        loop {
            while let Some(obj) = self.page.pop_front() {
                let own = same_bucket
                    && is_own_archive(
                        &obj.key,
                        &self.config.archive_prefix,
                        &self.config.source.bucket,
                    );
                if !own && !self.config.exclude.excludes(&obj.key) {
                    return Ok(Some(obj));
                }
            }
            match self.lister.next_page()? {
                Some(p) => self.page = p.into(),
                None => return Ok(None),
            }
        }
    }
}

/// CRC-32 of the source object's bytes, for `deep`.
fn source_crc(src: &S3, key: &str) -> Result<u32, S3Error> {
    let mut resp = src.call(&get_op(key, None), None)?;
    let mut crc = crc32fast::Hasher::new();
    while let Some(chunk) = resp
        .read_chunk(CHUNK)
        .map_err(|e| S3Error::Transport(e.0))?
    {
        crc.update(&chunk);
    }
    Ok(crc.finalize())
}

/// Tallies and the first differences.
#[derive(Default)]
struct Report {
    unchanged: u64,
    missing: u64,
    changed: u64,
    new: u64,
    listed: Vec<Value>,
}

impl Report {
    fn note(&mut self, status: &str, key: &str, reason: Option<String>) {
        match status {
            "missing" => self.missing += 1,
            "changed" => self.changed += 1,
            _ => self.new += 1,
        }
        if self.listed.len() < LISTED {
            let mut line = json!({"status": status, "key": key});
            if let Some(r) = reason {
                line["reason"] = json!(r);
            }
            self.listed.push(line);
        }
    }
}

/// The archive's size, where its directory is, and each central directory record passed
/// to `each` as it streams in. Returns the manifest's record too.
pub(crate) fn read_directory(
    config: &Config,
    dst: &S3,
    archive: &str,
    mut each: impl FnMut(CentralEntry),
) -> Result<(u64, zipread::Directory, Option<CentralEntry>), BackupError> {
    let dest_err = |doing: &str, e: &S3Error| {
        s3_failure(Side::Destination, &config.dest, doing, Some(archive), e)
    };
    let head = Op {
        name: "HeadObject",
        method: "HEAD",
        key: Some(archive),
        query: vec![],
        headers: vec![],
    };
    let len = dst
        .call(&head, None)
        .map_err(|e| match e.status() {
            Some(404) if e.code() != "NoSuchBucket" => BackupError {
                status: 404,
                code: "NoSuchKey".into(),
                message: format!(
                    "there is no archive '{archive}' in the destination bucket '{}'",
                    config.dest.bucket
                ),
            },
            _ => dest_err("reading the archive", &e),
        })?
        .header("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| dest_err("reading the archive", &protocol("no Content-Length")))?;
    let tail_start = len.saturating_sub(zipread::TAIL);
    let tail = dst
        .call(&get_op(archive, Some((tail_start, len.max(1) - 1))), None)
        .and_then(|mut r| read_all(&mut r, zipread::TAIL as usize))
        .map_err(|e| dest_err("reading the archive's end", &e))?;
    let dir = zipread::find_directory(&tail, tail_start, len)
        .map_err(|m| dest_err("reading the archive's end", &protocol(m)))?;
    let mut manifest = None;
    if dir.size > 0 {
        let mut resp = dst
            .call(
                &get_op(archive, Some((dir.offset, dir.offset + dir.size - 1))),
                None,
            )
            .map_err(|e| dest_err("reading the central directory", &e))?;
        let mut buf = Vec::new();
        loop {
            while let Some((entry, n)) = zipread::central_entry(&buf)
                .map_err(|m| dest_err("reading the central directory", &protocol(m)))?
            {
                if entry.name == MANIFEST_NAME {
                    manifest = Some(entry.clone());
                }
                each(entry);
                buf.drain(..n);
            }
            match resp
                .read_chunk(CHUNK)
                .map_err(|e| dest_err("reading the central directory", &S3Error::Transport(e.0)))?
            {
                Some(chunk) => buf.extend_from_slice(&chunk),
                None => break,
            }
        }
    }
    Ok((len, dir, manifest))
}

pub fn run(
    config: &Config,
    src: &S3,
    dst: &S3,
    archive: &str,
    deep: bool,
) -> Result<Value, BackupError> {
    let dest_err = |doing: &str, e: &S3Error| {
        s3_failure(Side::Destination, &config.dest, doing, Some(archive), e)
    };
    let src_err = |doing: &str, key: Option<&str>, e: &S3Error| {
        s3_failure(Side::Source, &config.source, doing, key, e)
    };

    let mut entries = 0u64;
    let (len, _, manifest_entry) = read_directory(config, dst, archive, |_| entries += 1)?;
    let manifest_entry = manifest_entry.ok_or_else(|| {
        dest_err(
            "reading the archive",
            &protocol(format!("the archive has no {MANIFEST_NAME}: it was not written by spaces-backup 0.1 or later")),
        )
    })?;
    let mut manifest = Manifest::open(dst, archive, &manifest_entry, len)
        .map_err(|e| dest_err("reading the manifest", &e))?;
    let mut source = Source {
        lister: Lister::new(src, &config.include_prefixes),
        page: VecDeque::new(),
        config,
    };

    let mut report = Report::default();
    let mut archived = 0u64;
    let mut m = manifest
        .next_archived()
        .map_err(|e| dest_err("reading the manifest", &e))?;
    let mut s = source
        .next()
        .map_err(|e| src_err("listing objects", None, &e))?;
    loop {
        let order = match (&m, &s) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => a.key.as_str().cmp(b.key.as_str()),
        };
        if order != Ordering::Greater {
            archived += 1;
        }
        match (order, &m, &s) {
            (Ordering::Less, Some(a), _) => report.note("missing", &a.key, None),
            (Ordering::Greater, _, Some(b)) => report.note("new", &b.key, None),
            (Ordering::Equal, Some(a), Some(b)) => {
                let etags_differ = !a.etag.is_empty() && !b.etag.is_empty() && a.etag != b.etag;
                let reason = if a.size != b.size {
                    Some(format!("size {} in the archive, {} now", a.size, b.size))
                } else if etags_differ {
                    Some(format!("ETag {} in the archive, {} now", a.etag, b.etag))
                } else if deep {
                    let now = source_crc(src, &b.key)
                        .map_err(|e| src_err("reading an object", Some(&b.key), &e))?;
                    let was = a.crc32.as_deref().unwrap_or_default();
                    (format!("{now:08x}") != was)
                        .then(|| format!("content (CRC-32 {was} in the archive, {now:08x} now)"))
                } else {
                    None
                };
                match reason {
                    Some(r) => report.note("changed", &a.key, Some(r)),
                    None => report.unchanged += 1,
                }
            }
            _ => break,
        }
        if order != Ordering::Greater {
            m = manifest
                .next_archived()
                .map_err(|e| dest_err("reading the manifest", &e))?;
        }
        if order != Ordering::Less {
            s = source
                .next()
                .map_err(|e| src_err("listing objects", None, &e))?;
        }
    }
    let identical = report.missing + report.changed + report.new == 0;
    Ok(json!({
        "message": if identical { "The archive matches the source" } else { "The archive differs from the source" },
        "archiveName": archive,
        "sourceBucket": config.source.bucket,
        "destinationBucket": config.dest.bucket,
        "identical": identical,
        "deep": deep,
        "entries": entries,
        "objectsInArchive": archived,
        "unchanged": report.unchanged,
        "missing": report.missing,
        "changed": report.changed,
        "new": report.new,
        "differences": report.listed,
    }))
}
