//! `verify`: compares an archive with the source bucket as it is now. The archive's end
//! and its manifest are read with `Range` requests (never the whole archive), the
//! manifest is inflated as it streams, and it is merged with a fresh listing: both are in
//! key order, so memory stays flat whatever the bucket's size.
//!
//! - `missing`: in the archive, no longer in the source;
//! - `changed`: in both, with another size or ETag (with `deep`, other content: the
//!   source object's CRC-32 differs from the archived one; or other standard headers,
//!   Cache-Control, Content-Encoding and the rest a restore sets again, or another ACL
//!   or other tags than the archive recorded);
//! - `new`: in the source, not in the archive (added since, or skipped then).
//!
//! [`integrity`] checks the archive alone.

pub mod integrity;

use std::cell::Cell;
use std::cmp::Ordering;
use std::collections::VecDeque;
use std::io::Read;

use crate::backup::extras::refused_for_good;
use crate::backup::list::Lister;
use crate::config::Config;
use crate::error::{s3_failure, Failure, Side};
use crate::model::{Acl, Difference, ListedObject, VerifyReport};
use crate::s3::ops::{self, Range};
use crate::s3::{xml, S3Error, S3};
use crate::select::{Selection, Verdict};
use crate::zip::manifest::{ManifestLine, ManifestReader, ObjectHeaders, MANIFEST_NAME};
use crate::zip::remote::RemoteZip;

/// Differences named in the answer; all are counted.
pub const LISTED: usize = 1000;

/// The source's objects in key order, selected as a backup selects them.
struct Source<'a> {
    lister: Lister<'a>,
    page: VecDeque<ListedObject>,
    selection: Selection<'a>,
}

impl Source<'_> {
    fn next(&mut self) -> Result<Option<ListedObject>, S3Error> {
        loop {
            while let Some(obj) = self.page.pop_front() {
                if self.selection.judge(&obj.key) == Verdict::Take {
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

/// CRC-32 of the source object's bytes, and its headers, for `deep`.
fn source_crc(src: &S3, key: &str) -> Result<(u32, ObjectHeaders), S3Error> {
    let mut resp = src.call(&ops::get_object(key, Range::All, None), None)?;
    let headers = ObjectHeaders::from_response(|name| resp.header(name));
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = resp.read(&mut buf).map_err(S3Error::from_io)?;
        if n == 0 {
            return Ok((crc.finalize(), headers));
        }
        crc.update(&buf[..n]);
    }
}

/// Tallies and the first differences.
#[derive(Default)]
struct Tally {
    unchanged: u64,
    missing: u64,
    changed: u64,
    new: u64,
    archived: u64,
    listed: Vec<Difference>,
}

impl Tally {
    fn note(&mut self, status: &str, key: &str, reason: Option<String>) {
        match status {
            "missing" => self.missing += 1,
            "changed" => self.changed += 1,
            _ => self.new += 1,
        }
        if self.listed.len() < LISTED {
            self.listed.push(Difference {
                status: status.into(),
                key: key.into(),
                reason,
            });
        }
    }
}

/// Why an object in both the archive and the source differs, if it does.
fn difference(
    src: &S3,
    archived: &ManifestLine,
    now: &ListedObject,
    deep: bool,
    asks: &Asks,
) -> Result<Option<String>, S3Error> {
    let etags_differ =
        !archived.etag.is_empty() && !now.etag.is_empty() && archived.etag != now.etag;
    if archived.size != now.size {
        return Ok(Some(format!(
            "size {} in the archive, {} now",
            archived.size, now.size
        )));
    }
    if etags_differ {
        return Ok(Some(format!(
            "ETag {} in the archive, {} now",
            archived.etag, now.etag
        )));
    }
    if !deep {
        return Ok(None);
    }
    let (crc, headers) = source_crc(src, &now.key)?;
    let crc = format!("{crc:08x}");
    let was = archived.crc32.as_deref().unwrap_or_default();
    if crc != was {
        return Ok(Some(format!(
            "content (CRC-32 {was} in the archive, {crc} now)"
        )));
    }
    // What a restore would set again differs: the object is served otherwise now.
    let headers = archived.headers.differences(&headers);
    let mut changed = Vec::new();
    if !headers.is_empty() {
        changed.push(format!("headers: {}", headers.join("; ")));
    }
    if let Some(was) = archived.acl.as_deref().filter(|_| asks.acl.get()) {
        if let Some(text) = side(src, ops::get_object_acl(&now.key), &asks.acl)? {
            let (owner, grants) =
                xml::parse_acl(&text).map_err(|e| S3Error::Protocol(e.to_string()))?;
            let acl = Acl::from_policy(&owner, &grants);
            if acl != *was {
                changed.push(format!(
                    "ACL {} in the archive, {} now",
                    shown(was),
                    shown(&acl)
                ));
            }
        }
    }
    if let Some(was) = archived.tags.as_deref().filter(|_| asks.tags.get()) {
        if let Some(text) = side(src, ops::get_object_tagging(&now.key), &asks.tags)? {
            let tags = xml::parse_tagging(&text).map_err(|e| S3Error::Protocol(e.to_string()))?;
            if tags != was {
                changed.push(format!(
                    "tags {} in the archive, {} now",
                    pairs(was),
                    pairs(&tags)
                ));
            }
        }
    }
    Ok((!changed.is_empty()).then(|| changed.join("; ")))
}

/// What a deep verify still asks the source for besides the bytes: an ACL or tags the
/// archive recorded, until the source refuses them (then not again).
struct Asks {
    acl: Cell<bool>,
    tags: Cell<bool>,
}

/// A side request's answer; `None`, and `on` turned off, when the source refuses it for
/// good (a service without ACLs, a key without the permission).
fn side(src: &S3, op: ops::Op<'_>, on: &Cell<bool>) -> Result<Option<String>, S3Error> {
    match src.call_xml(&op, None) {
        Ok(text) => Ok(Some(text)),
        Err(e) if refused_for_good(&e) => {
            on.set(false);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn shown(acl: &Acl) -> String {
    serde_json::to_string(acl).unwrap_or_default()
}

fn pairs(tags: &[(String, String)]) -> String {
    let inner: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("[{}]", inner.join(", "))
}

/// The manifest's lines and the source's listing, both in key order, merged: every key
/// is unchanged, missing, changed or new.
fn merge<R: std::io::BufRead>(
    config: &Config,
    src: &S3,
    remote: &RemoteZip,
    lines: &mut ManifestReader<R>,
    source: &mut Source<'_>,
    deep: bool,
) -> Result<Tally, Failure> {
    let manifest_err =
        |e: std::io::Error| remote.failure("reading the manifest", &S3Error::from_io(e));
    let src_err = |doing: &str, key: Option<&str>, e: &S3Error| {
        s3_failure(Side::Source, &config.source, doing, key, e)
    };
    let mut tally = Tally::default();
    let asks = Asks {
        acl: Cell::new(true),
        tags: Cell::new(true),
    };
    let mut m = lines.next_archived().map_err(manifest_err)?;
    let mut s = source
        .next()
        .map_err(|e| src_err("listing objects", None, &e))?;
    loop {
        let order = match (&m, &s) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => a.key.as_ref().cmp(b.key.as_str()),
        };
        match (order, &m, &s) {
            (Ordering::Less, Some(a), _) => tally.note("missing", &a.key, None),
            (Ordering::Greater, _, Some(b)) => tally.note("new", &b.key, None),
            (Ordering::Equal, Some(a), Some(b)) => {
                match difference(src, a, b, deep, &asks)
                    .map_err(|e| src_err("reading an object", Some(&b.key), &e))?
                {
                    Some(r) => tally.note("changed", &a.key, Some(r)),
                    None => tally.unchanged += 1,
                }
            }
            _ => break,
        }
        if order != Ordering::Greater {
            tally.archived += 1;
            m = lines.next_archived().map_err(manifest_err)?;
        }
        if order != Ordering::Less {
            s = source
                .next()
                .map_err(|e| src_err("listing objects", None, &e))?;
        }
    }
    Ok(tally)
}

pub fn run(
    config: &Config,
    src: &S3,
    dst: &S3,
    archive: &str,
    deep: bool,
) -> Result<VerifyReport, Failure> {
    let remote = RemoteZip::open(dst, archive)?;
    let mut entries = 0u64;
    let manifest = remote.directory(|_| entries += 1)?.ok_or_else(|| {
        remote.failure(
            "reading the archive",
            &S3Error::protocol(format!(
                "the archive has no {MANIFEST_NAME}: it was not written by spaces-backup 0.1 or later"
            )),
        )
    })?;
    let mut source = Source {
        lister: Lister::new(src, &config.include_prefixes),
        page: VecDeque::new(),
        selection: Selection::new(config),
    };
    let tally = remote.read_manifest(&manifest, |lines| {
        merge(config, src, &remote, lines, &mut source, deep)
    })?;
    let identical = tally.missing + tally.changed + tally.new == 0;
    Ok(VerifyReport {
        message: if identical {
            "The archive matches the source"
        } else {
            "The archive differs from the source"
        }
        .into(),
        archive_name: archive.into(),
        source_bucket: config.source.bucket.clone(),
        destination_bucket: config.dest.bucket.clone(),
        identical,
        deep,
        entries,
        objects_in_archive: tally.archived,
        unchanged: tally.unchanged,
        missing: tally.missing,
        changed: tally.changed,
        new: tally.new,
        differences: tally.listed,
        retries: 0,
    })
}
