//! `restore`: an archive in `DEST_BUCKET` back into a bucket (on `SOURCE_ENDPOINT`),
//! optionally under a prefix. The central directory and the manifest are read with
//! `Range` requests; each entry is then streamed from the archive, inflated, checked
//! (CRC-32 and size) and uploaded with its exact key, `Content-Type` and user metadata:
//! one PUT when it fits in a part ([`puts`], several in flight), else a multipart upload
//! completed only once the CRC has been checked. No temporary file, and never more than
//! a part in memory.

pub mod puts;
pub mod settings;

use std::collections::{HashMap, HashSet};
use std::io::Read;

use crate::backup::list::Lister;
use crate::backup::parts::Part;
use crate::backup::upload::MultipartUpload;
use crate::config::{BucketTarget, Config};
use crate::error::{s3_failure, Failure, Kind, Side};
use crate::io::http;
use crate::io::log::ProgressClock;
use crate::model::{Progress, RestoreReport};
use crate::s3::sigv4::sha256_hex;
use crate::s3::{S3Error, S3};
use crate::zip::manifest::{ManifestLine, MANIFEST_NAME};
use crate::zip::remote::RemoteZip;
use crate::zip::settings::is_settings_entry;
use crate::zip::spec::CentralEntry;
use puts::{PutError, Puts};

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

/// The bucket a restore writes into: `bucket` on the source's endpoint and region.
pub fn target(config: &Config, bucket: &str) -> BucketTarget {
    BucketTarget {
        bucket: bucket.to_string(),
        ..config.source.clone()
    }
}

/// The object's headers, as the manifest recorded them.
fn object_headers(line: &ManifestLine) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    if let Some(ct) = &line.content_type {
        headers.push(("content-type".to_string(), ct.to_string()));
    }
    for (k, v) in line.metadata.as_deref().unwrap_or_default() {
        headers.push((format!("x-amz-meta-{k}"), v.clone()));
    }
    headers.extend(line.headers.to_set_again());
    if let Some(acl) = &line.acl {
        headers.extend(acl.to_headers());
    }
    if let Some(tags) = line.tags.as_deref().filter(|t| !t.is_empty()) {
        let encoded = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(tags)
            .finish();
        headers.push(("x-amz-tagging".into(), encoded));
    }
    headers
}

pub fn run(
    config: &Config,
    dst: &S3,
    target: &S3,
    archive: &str,
    prefix: &str,
    overwrite: bool,
    bucket_settings: bool,
) -> Result<RestoreReport, Failure> {
    let remote = RemoteZip::open(dst, archive)?;
    let mut entries = Vec::new();
    let manifest = remote.directory(|e| entries.push(e))?;
    // An entry by that name may be an object in an archive of an earlier version: the
    // manifest then names it, and it is restored as one.
    let recorded_settings = entries.iter().find(|e| is_settings_entry(e)).cloned();
    let manifest = manifest.ok_or_else(|| {
        remote.failure(
            "reading the archive",
            &S3Error::protocol("it has no manifest: it was not written by spaces-backup"),
        )
    })?;
    // Read (and checked) before any object is written, so a damaged entry stops the
    // restore before it begins.
    let wanted_settings = match (&recorded_settings, bucket_settings) {
        (Some(e), true) => Some(settings::read(&remote, e)?),
        _ => None,
    };
    if let Some(s) = &wanted_settings {
        if !prefix.is_empty() {
            // A lifecycle rule or policy would reach every object of the bucket, not only
            // those restored under the prefix.
            return Err(Failure::new(
                Kind::Request,
                "the bucket's settings apply to the whole bucket, so they are restored only \
                 into a bucket of their own: restore without a prefix, or without --bucket-settings",
            ));
        }
        if !overwrite {
            settings::refuse_changes(target, s)?;
        }
    }
    if !overwrite {
        refuse_overwrites(&remote, &manifest, target, prefix)?;
    }
    let restorer = Restorer {
        config,
        remote: &remote,
        target,
        prefix,
        by_name: entries.iter().map(|e| (e.name.as_str(), e)).collect(),
    };
    let (restored, bytes) = restorer.restore_all(&manifest, &entries)?;
    let mut message = "Restore completed successfully".to_string();
    let applied = match &wanted_settings {
        Some(s) => settings::apply(target, s)?,
        None => Vec::new(),
    };
    if bucket_settings && recorded_settings.is_none() {
        message.push_str("; the archive holds no bucket settings, so none were applied");
    } else if !bucket_settings && recorded_settings.is_some() {
        message.push_str(
            "; the archive also holds the source bucket's settings, left unapplied: \
             restore with --bucket-settings to apply them",
        );
    }
    Ok(RestoreReport {
        message,
        archive_name: archive.into(),
        target_bucket: target.target.bucket.clone(),
        prefix: prefix.into(),
        objects_restored: restored,
        bytes_restored: bytes,
        bucket_settings: applied,
        retries: 0,
    })
}

/// Fails, before anything is written, when a key of the archive exists in the target.
fn refuse_overwrites(
    remote: &RemoteZip,
    manifest: &CentralEntry,
    target: &S3,
    prefix: &str,
) -> Result<(), Failure> {
    let mut existing = HashSet::new();
    let mut lister = Lister::new(target, std::slice::from_ref(&prefix.to_string()));
    while let Some(page) = lister
        .next_page()
        .map_err(|e| s3_failure(Side::Target, &target.target, "listing the target", None, &e))?
    {
        existing.extend(page.into_iter().map(|o| o.key));
    }
    if existing.is_empty() {
        return Ok(());
    }
    let (count, named) = remote.read_manifest(manifest, |lines| {
        let (mut count, mut named) = (0u64, Vec::new());
        while let Some(line) = lines
            .next_archived()
            .map_err(|e| remote.failure("reading the manifest", &S3Error::from_io(e)))?
        {
            let key = format!("{prefix}{}", line.key);
            if existing.contains(&key) {
                count += 1;
                if named.len() < CONFLICTS_NAMED {
                    named.push(key);
                }
            }
        }
        Ok((count, named))
    })?;
    if count == 0 {
        return Ok(());
    }
    Err(Failure::new(
        Kind::Conflict,
        format!(
            "{count} key(s) of the archive already exist in '{}' (e.g. {}); nothing was restored: restore under another prefix, or pass --overwrite",
            target.target.bucket,
            named.join(", ")
        ),
    ))
}

/// One restore's parts: where entries come from and where they go.
struct Restorer<'a> {
    config: &'a Config,
    remote: &'a RemoteZip<'a>,
    target: &'a S3,
    prefix: &'a str,
    by_name: HashMap<&'a str, &'a CentralEntry>,
}

impl Restorer<'_> {
    fn target_err(&self, pe: PutError, done: u64) -> Failure {
        s3_failure(
            Side::Target,
            &self.target.target,
            "restoring an object",
            Some(&pe.key),
            &pe.error,
        )
        .and(&format!(
            "; {done} object(s) were read before it, and the restore stopped"
        ))
    }

    /// Every object the manifest names, in its order; returns the objects and bytes.
    fn restore_all(
        &self,
        manifest: &CentralEntry,
        entries: &[CentralEntry],
    ) -> Result<(u64, u64), Failure> {
        let objects = entries
            .iter()
            .filter(|e| e.name != MANIFEST_NAME && !is_settings_entry(e));
        let totals = Progress {
            listed_objects: objects.clone().count() as u64,
            listed_bytes: objects.map(|e| e.uncompressed).sum(),
            listing_done: true,
            ..Default::default()
        };
        let mut clock = ProgressClock::new(http::now_nanos());
        let mut puts = Puts::new(
            self.target,
            self.config.concurrency,
            self.config.upload_budget(),
        );
        let (restored, bytes) = self.remote.read_manifest(manifest, |lines| {
            let (mut restored, mut bytes) = (0u64, 0u64);
            while let Some(line) = lines.next_archived().map_err(|e| {
                self.remote
                    .failure("reading the manifest", &S3Error::from_io(e))
            })? {
                bytes += self
                    .restore_one(&mut puts, &line)?
                    .map_err(|pe| self.target_err(pe, restored))?;
                restored += 1;
                let now = http::now_nanos();
                if clock.due(now, false) {
                    let p = Progress {
                        objects: restored,
                        bytes_read: bytes,
                        ..totals.clone()
                    };
                    clock.emit(now, p);
                }
            }
            puts.finish().map_err(|pe| self.target_err(pe, restored))?;
            Ok((restored, bytes))
        })?;
        clock.emit(
            http::now_nanos(),
            Progress {
                objects: restored,
                bytes_read: bytes,
                ..totals
            },
        );
        Ok((restored, bytes))
    }

    /// Restores one object; returns its size. An entry that fits in a part joins the PUTs
    /// in flight; a bigger one waits for them, then goes up as a multipart upload. The
    /// outer error is the archive's, the inner one the target's.
    fn restore_one(
        &self,
        puts: &mut Puts,
        line: &ManifestLine,
    ) -> Result<Result<u64, PutError>, Failure> {
        let name = line.entry.as_deref().unwrap_or(&line.key);
        let entry = *self.by_name.get(name).ok_or_else(|| {
            self.remote.failure(
                "reading the archive",
                &S3Error::protocol(format!(
                    "the manifest names an entry '{name}' the archive lacks"
                )),
            )
        })?;
        let key = format!("{}{}", self.prefix, line.key);
        let here = |error: S3Error| PutError {
            key: key.clone(),
            error,
        };
        let part_size = self.config.part_size;
        if entry.uncompressed <= part_size {
            let body = match self.read_small(entry) {
                Ok(b) => b,
                Err(e) => return Ok(Err(here(e))),
            };
            let size = body.len() as u64;
            return Ok(puts
                .submit(key.clone(), object_headers(line), body)
                .map(|()| size));
        }
        if let Err(pe) = puts.finish() {
            return Ok(Err(pe));
        }
        Ok(self.restore_large(entry, line, &key).map_err(here))
    }

    /// The whole (small) entry, checked.
    fn read_small(&self, e: &CentralEntry) -> Result<Vec<u8>, S3Error> {
        self.remote.read_entry(e, |r| {
            let mut body = Vec::with_capacity(usize::try_from(e.uncompressed).unwrap_or(0));
            r.read_to_end(&mut body)?;
            Ok(body)
        })
    }

    /// An entry bigger than a part, as a multipart upload completed only once it checks
    /// out (the reader checks CRC and size before it ends).
    fn restore_large(
        &self,
        e: &CentralEntry,
        line: &ManifestLine,
        key: &str,
    ) -> Result<u64, S3Error> {
        let part_size = usize::try_from(self.config.part_size).unwrap_or(usize::MAX);
        let mut upload = MultipartUpload::create_with(self.target, key, object_headers(line))?;
        let mut upload_error = None;
        let read = self.remote.read_entry(e, |r| loop {
            let mut part = Vec::with_capacity(part_size);
            let n = (&mut *r).take(part_size as u64).read_to_end(&mut part)?;
            if n == 0 {
                return Ok(());
            }
            let sha256 = sha256_hex(&part);
            if let Err(err) = upload.upload_part(Part { data: part, sha256 }) {
                upload_error = Some(err);
                return Err(std::io::Error::other("the part upload failed"));
            }
        });
        let result = match (read, upload_error) {
            (_, Some(err)) => Err(err),
            (Err(err), None) => Err(err),
            (Ok(()), None) => upload.complete(),
        };
        if let Err(err) = result {
            let _ = upload.abort();
            return Err(err);
        }
        Ok(e.uncompressed)
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
