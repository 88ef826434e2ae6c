//! Chained runs: a backup that cannot finish before its deadline stops at an entry
//! boundary and leaves its state in the destination bucket, and the next run continues
//! the same multipart upload from the key after the last one archived. The same state is
//! written every few minutes, so a run killed without warning loses only those minutes.
//!
//! The state of one source's backup lives under `{ARCHIVE_PREFIX}/.spaces-backup/{source}/`
//! (never an archive name, so retention and the source selection leave it alone):
//!
//! ```text
//! checkpoint.json        what the next run needs (below), written last
//! lease.json             which run is writing this backup, until when
//! runs/<hash>.json       one per multipart upload being written: which run, until when
//! 000001.central ...     central-directory records of the entries of each checkpoint
//! 000001.manifest ...    the manifest's deflate stream, flushed at each checkpoint
//! names-N.bin            the hashes of the entry names taken (duplicates get `~2`)
//! pending-N.bin          archive bytes not yet in a part (less than one part)
//! ```
//!
//! Only the local headers, data and descriptors of a ZIP are in the parts; the records
//! with absolute offsets (central directory, end records) are written once, at the end,
//! from the segments: laid end to end they are the central directory of one archive.

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::s3::sigv4::sha256_hex;
use crate::s3::{ops, S3Error, S3};

/// Bumped when the state's meaning changes: an older checkpoint is then refused.
pub const VERSION: u32 = 1;

/// The folder of one source's backup state.
pub fn state_dir(archive_prefix: &str, source_bucket: &str) -> String {
    format!("{archive_prefix}/.spaces-backup/{source_bucket}/")
}

/// True for any object of this tool's state folders (left out of a backup of the
/// destination bucket itself).
pub fn is_state_key(key: &str, archive_prefix: &str) -> bool {
    key.strip_prefix(archive_prefix)
        .is_some_and(|rest| rest.starts_with("/.spaces-backup/"))
}

/// One stored part of the upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DonePart {
    pub number: u32,
    pub etag: String,
    pub size: u64,
}

/// The ZIP writer's state at an entry boundary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZipState {
    /// Archive bytes written: where the next entry starts.
    pub offset: u64,
    pub entries: u64,
    pub renamed: u64,
    /// CRC-32 and length of the manifest's text so far.
    pub manifest_crc: u32,
    pub manifest_len: u64,
    /// Bytes of each segment (`central`, `manifest`), in order; segment `i` is `i + 1`.
    pub segments: Vec<Segment>,
    /// The writer kept the settings entry's name from objects (false in checkpoints of
    /// earlier versions, whose archives may have an object of that name).
    #[serde(default)]
    pub settings_reserved: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub central: u64,
    pub manifest: u64,
}

/// What the counts of the response are made of, across runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub files: u64,
    pub bytes_read: u64,
    pub skipped: Vec<String>,
    pub changed: Vec<String>,
    pub own_archives: u64,
    pub excluded: u64,
    pub retries: u64,
}

/// `checkpoint.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub version: u32,
    /// [`fingerprint`] of the configuration that wrote it.
    pub fingerprint: String,
    pub archive_name: String,
    pub upload_id: String,
    /// Runs so far, this one included.
    pub runs: u32,
    /// Numbers this checkpoint's `names-N.bin` and `pending-N.bin`.
    pub seq: u32,
    pub parts: Vec<DonePart>,
    /// The part size the backup started with (planned from the listing with equal parts).
    pub part_size: u64,
    /// The last key archived (or noted as skipped): the next run lists after it.
    pub last_key: Option<String>,
    pub zip: ZipState,
    /// Bytes in `pending-N.bin`.
    pub pending: u64,
    pub counts: Counts,
    /// Seconds spent in earlier runs.
    pub seconds: f64,
}

impl Checkpoint {
    pub fn key(dir: &str) -> String {
        format!("{dir}checkpoint.json")
    }

    pub fn segment_key(dir: &str, n: usize, what: &str) -> String {
        format!("{dir}{n:06}.{what}")
    }

    pub fn names_key(dir: &str, seq: u32) -> String {
        format!("{dir}names-{seq}.bin")
    }

    pub fn pending_key(dir: &str, seq: u32) -> String {
        format!("{dir}pending-{seq}.bin")
    }

    /// The archive bytes stored in parts.
    pub fn stored_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }

    /// Checks that the pieces agree with each other (a damaged or hand-edited checkpoint
    /// is refused rather than continued into a broken archive).
    pub fn check(&self) -> Result<(), String> {
        if self.version != VERSION {
            return Err(format!(
                "it was written by another version of spaces-backup (state version {}, this one reads {VERSION})",
                self.version
            ));
        }
        let numbers_ok = self
            .parts
            .iter()
            .enumerate()
            .all(|(i, p)| p.number as usize == i + 1);
        if !numbers_ok {
            return Err("its parts are not numbered 1..n".into());
        }
        if self.stored_bytes() + self.pending != self.zip.offset {
            return Err(format!(
                "its parts ({} bytes) and pending bytes ({}) do not add up to the archive offset ({})",
                self.stored_bytes(),
                self.pending,
                self.zip.offset
            ));
        }
        Ok(())
    }
}

/// A digest of every setting that shapes the archive: a checkpoint is continued only by
/// a run that would have written the same archive. No secret goes into it.
pub fn fingerprint(config: &Config) -> String {
    let shape = format!(
        "v{VERSION}|{}|{}|{}|{}|{}|{:?}|{:?}|{}|{}|{}|{:?}|{:?}",
        config.source.endpoint,
        config.source.bucket,
        config.dest.endpoint,
        config.dest.bucket,
        config.archive_prefix,
        config.include_prefixes,
        config.exclude,
        config.part_size,
        config.part_size_fixed,
        config.equal_parts,
        config.compression,
        config.compression_level,
    );
    sha256_hex(shape.as_bytes())[..32].to_string()
}

/// A small state object, or `None` when it does not exist.
pub fn get(s3: &S3, key: &str, limit: usize) -> Result<Option<Vec<u8>>, S3Error> {
    let op = ops::get_object(key, ops::Range::All, None);
    let got = s3.retrying(op.name, op.key, |_| {
        let mut resp = s3.send_once(&op, None, crate::s3::sigv4::EMPTY_SHA256)?;
        let mut out = Vec::new();
        while let Some(chunk) = resp.read_chunk(256 * 1024)? {
            out.extend_from_slice(&chunk);
            if out.len() > limit {
                return Err(S3Error::protocol(format!(
                    "'{key}' is larger than the {limit} bytes a state object may have"
                )));
            }
        }
        Ok(out)
    });
    match got {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn put(s3: &S3, key: &str, body: &[u8], content_type: &str) -> Result<(), S3Error> {
    let op = ops::put_object(key, vec![("content-type".into(), content_type.into())]);
    s3.call(&op, Some(body)).map(drop)
}

/// Deletes `keys`, one by one (DeleteObjects needs Content-MD5, which not every service
/// takes alike); a key already gone is fine.
pub fn delete_all(s3: &S3, keys: &[String]) -> Result<(), S3Error> {
    for key in keys {
        match s3.call(&ops::delete_object(key), None) {
            Ok(_) => {}
            Err(e) if e.status() == Some(404) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `lease.json`: the run that writes this backup, and until when its claim holds unless
/// it renews it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub owner: String,
    /// Unix milliseconds.
    pub expires: u64,
}

impl Lease {
    pub fn key(dir: &str) -> String {
        format!("{dir}lease.json")
    }

    pub fn held_by_other(&self, owner: &str, now_ms: u64) -> bool {
        self.owner != owner && self.expires > now_ms
    }
}

/// `runs/<hash>.json`: a run's claim on the multipart upload it writes, renewed while it
/// runs (beside the lease, which only a run with a checkpoint takes). An upload of this
/// source's naming that neither a live claim nor the checkpoint vouches for was left by a
/// run that died before its first checkpoint: the next run aborts it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    pub archive_name: String,
    pub upload_id: String,
    pub owner: String,
    /// Unix milliseconds.
    pub expires: u64,
}

impl Claim {
    pub fn key(dir: &str, upload_id: &str) -> String {
        format!("{dir}runs/{}.json", &sha256_hex(upload_id.as_bytes())[..32])
    }
}

/// An upload with no claim at all is left alone this long after its archive's start: the
/// run that made it writes its claim right after, so only a run killed in between (or a
/// release before claims) leaves none.
pub const UNCLAIMED_GRACE_MS: u64 = 60 * 60 * 1000;

/// A claim is dead this long after it expired: a live run renews it every third of its
/// lease (a minute at most), and this covers a run held up meanwhile by retries of a
/// blocking request (a listing page, a checkpoint), or clocks a little apart.
pub const CLAIM_GRACE_MS: u64 = 2 * 60 * 1000;

/// Whether the upload `upload_id` (of this source's naming) is an orphan: not the
/// checkpoint's, and its claim is dead, or it has none and its archive began over
/// [`UNCLAIMED_GRACE_MS`] ago (`started_ms`: the time in its name).
pub fn is_orphan(
    upload_id: &str,
    checkpoint_upload: Option<&str>,
    claim: Option<&Claim>,
    started_ms: u64,
    now_ms: u64,
) -> bool {
    if checkpoint_upload == Some(upload_id) {
        return false;
    }
    match claim {
        Some(c) => now_ms > c.expires.saturating_add(CLAIM_GRACE_MS),
        None => now_ms > started_ms.saturating_add(UNCLAIMED_GRACE_MS),
    }
}

/// Names as the writer keeps them: 8 bytes each, little-endian.
pub fn names_to_bytes(names: &[u64]) -> Vec<u8> {
    names.iter().flat_map(|n| n.to_le_bytes()).collect()
}

pub fn names_from_bytes(bytes: &[u8]) -> Result<Vec<u64>, String> {
    if !bytes.len().is_multiple_of(8) {
        return Err("its name list is cut short".into());
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("chunks of 8")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            version: VERSION,
            fingerprint: "f".into(),
            archive_name: "backups/backup-s-2025.zip".into(),
            upload_id: "u".into(),
            runs: 1,
            seq: 3,
            parts: vec![
                DonePart {
                    number: 1,
                    etag: "\"a\"".into(),
                    size: 10,
                },
                DonePart {
                    number: 2,
                    etag: "\"b\"".into(),
                    size: 10,
                },
            ],
            part_size: 10,
            last_key: Some("k".into()),
            zip: ZipState {
                offset: 25,
                segments: vec![Segment::default(); 2],
                ..Default::default()
            },
            pending: 5,
            counts: Counts::default(),
            seconds: 1.5,
        }
    }

    #[test]
    fn round_trips_and_checks_its_pieces() {
        let c = checkpoint();
        let text = serde_json::to_string(&c).unwrap();
        let back: Checkpoint = serde_json::from_str(&text).unwrap();
        assert_eq!(back, c);
        assert!(c.check().is_ok());
        let mut bad = c.clone();
        bad.pending = 6;
        assert!(bad.check().unwrap_err().contains("do not add up"));
        let mut bad = c.clone();
        bad.parts.remove(0);
        assert!(bad.check().unwrap_err().contains("numbered"));
        let mut bad = c.clone();
        bad.version = 99;
        assert!(bad.check().unwrap_err().contains("version"));
    }

    #[test]
    fn state_keys_are_not_archives() {
        let dir = state_dir("backups", "src");
        assert_eq!(dir, "backups/.spaces-backup/src/");
        assert!(is_state_key(&Checkpoint::key(&dir), "backups"));
        assert!(!is_state_key("backups/backup-src-x.zip", "backups"));
        assert!(!crate::naming::is_own_archive(
            &Checkpoint::key(&dir),
            "backups",
            "src"
        ));
    }

    #[test]
    fn names_and_leases() {
        let names = vec![1, u64::MAX, 42];
        assert_eq!(names_from_bytes(&names_to_bytes(&names)).unwrap(), names);
        assert!(names_from_bytes(&[1, 2, 3]).is_err());
        let lease = Lease {
            owner: "a".into(),
            expires: 1000,
        };
        assert!(lease.held_by_other("b", 999));
        assert!(!lease.held_by_other("b", 1000));
        assert!(!lease.held_by_other("a", 10));
    }
    #[test]
    fn an_upload_is_an_orphan_only_when_nothing_vouches_for_it() {
        let claim = Claim {
            archive_name: "b/backup-s-x.zip".into(),
            upload_id: "u1".into(),
            owner: "run-a".into(),
            expires: 10_000,
        };
        let dead = 10_001 + CLAIM_GRACE_MS;
        // The checkpoint's upload never is, whatever its claim says.
        assert!(!is_orphan("u1", Some("u1"), Some(&claim), 0, 1 << 40));
        // A claim holds until the grace after its expiry has passed.
        assert!(!is_orphan("u1", None, Some(&claim), 0, dead - 1));
        assert!(!is_orphan("u1", Some("other"), Some(&claim), 0, 10_001));
        assert!(is_orphan("u1", Some("other"), Some(&claim), 0, dead));
        assert!(is_orphan("u1", None, Some(&claim), 0, dead));
        // No claim: an hour's grace from the archive's start.
        assert!(!is_orphan(
            "u1",
            None,
            None,
            5_000,
            5_000 + UNCLAIMED_GRACE_MS
        ));
        assert!(is_orphan(
            "u1",
            None,
            None,
            5_000,
            5_001 + UNCLAIMED_GRACE_MS
        ));
        // Claims of different uploads live apart.
        assert_ne!(Claim::key("d/", "u1"), Claim::key("d/", "u2"));
        assert!(Claim::key("d/", "u1").starts_with("d/runs/"));
    }
}
