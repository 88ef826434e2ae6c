//! `restore`: an archive in `DEST_BUCKET` back into a bucket (on `SOURCE_ENDPOINT`),
//! optionally under a prefix. The central directory and the manifest are read with
//! `Range` requests; each entry is then streamed from the archive, inflated, checked
//! (CRC-32 and size) and uploaded with its exact key, `Content-Type` and user metadata:
//! one PUT when it fits in a part, else a multipart upload completed only once the CRC
//! has been checked. No temporary file, and never more than a part in memory.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use crate::backup::{s3_failure, BackupError, Side};
use crate::config::{BucketTarget, Config};
use crate::http::Response;
use crate::list::Lister;
use crate::parts::Part;
use crate::puts::{PutError, Puts};
use crate::s3::{S3Error, S3};
use crate::sigv4::sha256_hex;
use crate::upload::MultipartUpload;
use crate::verify::{get_op, protocol, read_directory, Line, Manifest, CHUNK};
use crate::zipread::{self, CentralEntry};

/// Conflicting keys named when a restore is refused.
const CONFLICTS_NAMED: usize = 20;

/// `BUCKET` or `BUCKET/PREFIX` into its parts; the prefix is a folder (`PREFIX/`).
pub fn parse_target(to: &str) -> Result<(String, String), String> {
    let (bucket, prefix) = to.split_once('/').unwrap_or((to, ""));
    crate::config::validate_bucket(bucket).map_err(|e| format!("--to: {e}"))?;
    let mut prefix = prefix.to_string();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    Ok((bucket.to_string(), prefix))
}

/// The archive being restored: its bucket's client, key and size.
struct Archived<'a> {
    s3: &'a S3,
    key: &'a str,
    len: u64,
}

/// An entry's uncompressed bytes, from a ranged GET of the archive.
struct EntryData {
    resp: Response,
    /// Compressed bytes still to read.
    left: u64,
    inflate: Option<flate2::Decompress>,
    input: Vec<u8>,
    at: usize,
    ended: bool,
}

impl EntryData {
    fn open(archived: &Archived, e: &CentralEntry) -> Result<Self, S3Error> {
        let inflate = match e.method {
            0 => None,
            8 => Some(flate2::Decompress::new(false)),
            m => return Err(protocol(format!("compression method {m} is not supported"))),
        };
        let end = (e.offset + 30 + 2 * 0xFFFF + e.compressed).min(archived.len) - 1;
        let mut resp = archived
            .s3
            .call(&get_op(archived.key, Some((e.offset, end))), None)?;
        let mut head = Vec::new();
        while head.len() < 30 {
            let c = resp
                .read_chunk(30 - head.len())
                .map_err(|err| S3Error::Transport(err.0))?
                .ok_or_else(|| protocol("the archive ends inside a local header"))?;
            head.extend_from_slice(&c);
        }
        let mut skip = zipread::local_header_len(&head).map_err(protocol)? - 30;
        let mut input = Vec::new();
        while skip > 0 {
            let c = resp
                .read_chunk(CHUNK)
                .map_err(|err| S3Error::Transport(err.0))?
                .ok_or_else(|| protocol("the archive ends inside a local header"))?;
            let n = (c.len() as u64).min(skip) as usize;
            skip -= n as u64;
            input = c[n..].to_vec();
        }
        let left = e.compressed.saturating_sub(input.len() as u64);
        input.truncate(usize::try_from(e.compressed).unwrap_or(usize::MAX));
        Ok(Self {
            resp,
            left,
            inflate,
            input,
            at: 0,
            ended: e.compressed == 0,
        })
    }

    /// The next uncompressed bytes, or `None` at the end of the entry.
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, S3Error> {
        loop {
            if self.at == self.input.len() {
                if self.left == 0 {
                    if self.ended || self.inflate.is_none() {
                        return Ok(None);
                    }
                } else {
                    let want = usize::try_from(self.left.min(CHUNK as u64)).unwrap_or(CHUNK);
                    self.input = self
                        .resp
                        .read_chunk(want)
                        .map_err(|e| S3Error::Transport(e.0))?
                        .ok_or_else(|| protocol("the archive ended inside an entry"))?;
                    self.left -= self.input.len() as u64;
                    self.at = 0;
                }
            }
            let Some(inflate) = self.inflate.as_mut() else {
                let out = self.input[self.at..].to_vec();
                self.at = self.input.len();
                return Ok(Some(out));
            };
            let mut out = Vec::with_capacity(CHUNK);
            let before = inflate.total_in();
            let status = inflate
                .decompress_vec(
                    &self.input[self.at..],
                    &mut out,
                    flate2::FlushDecompress::None,
                )
                .map_err(|e| protocol(format!("an entry does not inflate: {e}")))?;
            self.at += (inflate.total_in() - before) as usize;
            if status == flate2::Status::StreamEnd {
                self.ended = true;
                self.at = self.input.len();
                self.left = 0;
            }
            if !out.is_empty() {
                return Ok(Some(out));
            }
            if self.ended {
                return Ok(None);
            }
            if self.at == self.input.len() && self.left == 0 {
                return Err(protocol("an entry's deflate data is cut short"));
            }
        }
    }
}

/// The object's headers, as the manifest recorded them.
fn object_headers(line: &Line) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    if let Some(ct) = &line.content_type {
        headers.push(("content-type".to_string(), ct.clone()));
    }
    for (k, v) in &line.metadata {
        headers.push((format!("x-amz-meta-{k}"), v.clone()));
    }
    headers
}

/// Restores one entry as `key`; returns its size. An entry that fits in a part joins the
/// PUTs in flight; a bigger one waits for them, then goes up as a multipart upload.
fn restore_one(
    archived: &Archived,
    target: &S3,
    puts: &mut Puts,
    e: &CentralEntry,
    line: &Line,
    key: &str,
    part_size: u64,
) -> Result<u64, PutError> {
    let here = |error: S3Error| PutError {
        key: key.to_string(),
        error,
    };
    if e.uncompressed <= part_size {
        let (body, size) = read_small(archived, e).map_err(here)?;
        puts.submit(key.to_string(), object_headers(line), body)?;
        return Ok(size);
    }
    puts.finish()?;
    restore_large(archived, target, e, line, key, part_size).map_err(here)
}

/// The whole (small) entry, checked.
fn read_small(archived: &Archived, e: &CentralEntry) -> Result<(Vec<u8>, u64), S3Error> {
    let mut data = EntryData::open(archived, e)?;
    let mut crc = crc32fast::Hasher::new();
    let mut body = Vec::with_capacity(usize::try_from(e.uncompressed).unwrap_or(0));
    while let Some(chunk) = data.next_chunk()? {
        crc.update(&chunk);
        body.extend_from_slice(&chunk);
        if body.len() as u64 > e.uncompressed {
            break;
        }
    }
    check_entry(e, crc.finalize(), body.len() as u64)?;
    let size = body.len() as u64;
    Ok((body, size))
}

fn check_entry(e: &CentralEntry, crc: u32, size: u64) -> Result<(), S3Error> {
    if size != e.uncompressed || crc != e.crc32 {
        return Err(protocol(format!(
            "entry '{}' reads back as {size} bytes with CRC-32 {crc:08x}, the archive says {} bytes, {:08x}",
            e.name, e.uncompressed, e.crc32
        )));
    }
    Ok(())
}

/// An entry bigger than a part, as a multipart upload completed only once it checks out.
fn restore_large(
    archived: &Archived,
    target: &S3,
    e: &CentralEntry,
    line: &Line,
    key: &str,
    part_size: u64,
) -> Result<u64, S3Error> {
    let mut data = EntryData::open(archived, e)?;
    let mut crc = crc32fast::Hasher::new();
    let mut size = 0u64;
    let mut upload = MultipartUpload::create_with(target, key, object_headers(line))?;
    let result = (|| {
        let mut part = Vec::with_capacity(usize::try_from(part_size).unwrap_or(0));
        while let Some(chunk) = data.next_chunk()? {
            crc.update(&chunk);
            size += chunk.len() as u64;
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let room = usize::try_from(part_size).unwrap_or(usize::MAX) - part.len();
                let n = room.min(rest.len());
                part.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                if part.len() as u64 == part_size {
                    let full = std::mem::take(&mut part);
                    let sha256 = sha256_hex(&full);
                    upload.upload_part(Part { data: full, sha256 })?;
                }
            }
        }
        check_entry(e, crc.finalize(), size)?;
        if !part.is_empty() {
            let sha256 = sha256_hex(&part);
            upload.upload_part(Part { data: part, sha256 })?;
        }
        upload.complete()
    })();
    if let Err(e) = result {
        let _ = upload.abort();
        return Err(e);
    }
    Ok(size)
}

pub fn run(
    config: &Config,
    dst: &S3,
    target: &S3,
    archive: &str,
    prefix: &str,
    overwrite: bool,
) -> Result<Value, BackupError> {
    let dest_err = |doing: &str, e: &S3Error| {
        s3_failure(Side::Destination, &config.dest, doing, Some(archive), e)
    };
    let target_err = |doing: &str, key: Option<&str>, e: &S3Error| {
        s3_failure(Side::Target, &target.target, doing, key, e)
    };
    let mut entries = Vec::new();
    let (len, _, manifest_entry) = read_directory(config, dst, archive, |e| entries.push(e))?;
    let manifest_entry = manifest_entry.ok_or_else(|| {
        dest_err(
            "reading the archive",
            &protocol("it has no manifest: it was not written by spaces-backup"),
        )
    })?;
    let by_name: HashMap<&str, &CentralEntry> =
        entries.iter().map(|e| (e.name.as_str(), e)).collect();

    // Refuse before writing anything if a key would be overwritten.
    if !overwrite {
        let mut existing = HashSet::new();
        let mut lister = Lister::new(target, std::slice::from_ref(&prefix.to_string()));
        while let Some(page) = lister
            .next_page()
            .map_err(|e| target_err("listing the target", None, &e))?
        {
            existing.extend(page.into_iter().map(|o| o.key));
        }
        if !existing.is_empty() {
            let mut manifest = Manifest::open(dst, archive, &manifest_entry, len)
                .map_err(|e| dest_err("reading the manifest", &e))?;
            let (mut count, mut named) = (0u64, Vec::new());
            while let Some(line) = manifest
                .next_archived()
                .map_err(|e| dest_err("reading the manifest", &e))?
            {
                let key = format!("{prefix}{}", line.key);
                if existing.contains(&key) {
                    count += 1;
                    if named.len() < CONFLICTS_NAMED {
                        named.push(key);
                    }
                }
            }
            if count > 0 {
                return Err(BackupError {
                    status: 409,
                    code: "WouldOverwrite".into(),
                    message: format!(
                        "{count} key(s) of the archive already exist in '{}' (e.g. {}); nothing was restored: restore under another prefix, or pass --overwrite",
                        target.target.bucket,
                        named.join(", ")
                    ),
                });
            }
        }
    }

    let mut manifest = Manifest::open(dst, archive, &manifest_entry, len)
        .map_err(|e| dest_err("reading the manifest", &e))?;
    let (mut restored, mut bytes) = (0u64, 0u64);
    let mut puts = Puts::new(target, config.concurrency, config.upload_budget());
    let put_err = |pe: PutError, done: u64| {
        let mut err = target_err("restoring an object", Some(&pe.key), &pe.error);
        err.message.push_str(&format!(
            "; {done} object(s) were read before it, and the restore stopped"
        ));
        err
    };
    let total_objects = entries.len().saturating_sub(1) as u64;
    let total_bytes: u64 = entries
        .iter()
        .filter(|e| e.name != manifest_entry.name)
        .map(|e| e.uncompressed)
        .sum();
    let started = crate::http::now_nanos();
    let mut last = started;
    let progress = |restored: u64, bytes: u64| {
        crate::log::info(
            "progress",
            json!({"objects": restored, "bytesRead": bytes, "listedObjects": total_objects,
                   "listedBytes": total_bytes, "listingDone": true,
                   "elapsedSeconds": (crate::http::now_nanos().saturating_sub(started) / 10_000_000) as f64 / 100.0}),
        );
    };
    while let Some(line) = manifest
        .next_archived()
        .map_err(|e| dest_err("reading the manifest", &e))?
    {
        let name = line.entry.as_deref().unwrap_or(&line.key);
        let entry = by_name.get(name).ok_or_else(|| {
            dest_err(
                "reading the archive",
                &protocol(format!(
                    "the manifest names an entry '{name}' the archive lacks"
                )),
            )
        })?;
        let key = format!("{prefix}{}", line.key);
        let archived = Archived {
            s3: dst,
            key: archive,
            len,
        };
        let size = restore_one(
            &archived,
            target,
            &mut puts,
            entry,
            &line,
            &key,
            config.part_size,
        )
        .map_err(|pe| put_err(pe, restored))?;
        restored += 1;
        bytes += size;
        let now = crate::http::now_nanos();
        if now.saturating_sub(last) >= 1_000_000_000 {
            last = now;
            progress(restored, bytes);
        }
    }
    puts.finish().map_err(|pe| put_err(pe, restored))?;
    progress(restored, bytes);
    Ok(json!({
        "message": "Restore completed successfully",
        "archiveName": archive,
        "targetBucket": target.target.bucket,
        "prefix": prefix,
        "objectsRestored": restored,
        "bytesRestored": bytes,
    }))
}

/// The bucket a restore writes into: `bucket` on the source's endpoint and region.
pub fn target(config: &Config, bucket: &str) -> BucketTarget {
    BucketTarget {
        bucket: bucket.to_string(),
        ..config.source.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(parse_target("b-1").unwrap(), ("b-1".into(), "".into()));
        assert_eq!(parse_target("b-1/x").unwrap(), ("b-1".into(), "x/".into()));
        assert_eq!(
            parse_target("b-1/x/y/").unwrap(),
            ("b-1".into(), "x/y/".into())
        );
        assert!(parse_target("-b/x").is_err());
    }
}
