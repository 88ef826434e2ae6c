//! The I/O of chained runs (the state is described in [`checkpoint`]): the lease that
//! keeps two runs from writing one backup, saving a checkpoint at an entry boundary,
//! loading one, and clearing the state once the archive is complete.
//!
//! Every run claims the upload it writes (`runs/<hash>.json`, renewed as the lease is),
//! so the next run can tell an upload left by a killed run from a live one's.
//!
//! A run takes the lease only when it needs the state: before continuing a checkpoint,
//! or before writing its first one. Two runs started together each begin an archive of
//! their own; the first to checkpoint holds the state, and the other, if it cannot
//! finish without one, stops, aborts its upload and says which run holds it.

use serde_json::json;
use time::OffsetDateTime;

use crate::backup::checkpoint::{self, names_to_bytes, Checkpoint, Claim, Counts, Lease, VERSION};
use crate::backup::parts::PartBuffer;
use crate::backup::upload::MultipartUpload;
use crate::config::BucketTarget;
use crate::error::{s3_failure, Failure, Kind, Side};
use crate::io::{http, log};
use crate::s3::{S3Error, S3};
use crate::zip::write::ZipWriter;

/// How long a lease holds unless renewed, at most: three checkpoint intervals, and never
/// more than a minute. A run renews it every third of that.
pub const MAX_LEASE_MS: u64 = 60_000;
/// After writing its lease, a run waits this long and reads it back: a run that read "no
/// lease" just before has written its own by then (S3 reads its writes at once), so the
/// later write wins and only one of the two goes on. The gap to cover is one request's
/// round trip; this is a few of them over a long path.
const LEASE_SETTLE_MS: u64 = 300;
/// State objects are small (a checkpoint's JSON, one segment); this bounds a read.
const MAX_STATE_OBJECT: usize = 256 * 1024 * 1024;

pub fn now_ms() -> u64 {
    u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// One backup's state in the destination bucket, as this run sees it.
pub struct Chain<'a> {
    dst: &'a S3,
    target: &'a BucketTarget,
    pub dir: String,
    owner: String,
    leased: bool,
    lease_ms: u64,
    renewed_ms: u64,
    /// This run's claim on its upload, once written, and when it was last renewed.
    claimed: bool,
    claimed_ms: u64,
    pub fingerprint: String,
    pub archive_name: String,
    pub upload_id: String,
    /// Runs of this backup so far, this one included.
    pub runs: u32,
    /// The last checkpoint's number (0: none yet).
    seq: u32,
    segments: usize,
    pub part_size: u64,
    /// Seconds the earlier runs took.
    pub earlier_seconds: f64,
}

impl<'a> Chain<'a> {
    pub fn new(
        dst: &'a S3,
        target: &'a BucketTarget,
        dir: String,
        fingerprint: String,
        checkpoint_seconds: u64,
    ) -> Self {
        Self {
            dst,
            target,
            dir,
            owner: format!("{:016x}{:016x}", http::random_u64(), http::random_u64()),
            leased: false,
            lease_ms: checkpoint_seconds
                .saturating_mul(3_000)
                .clamp(3_000, MAX_LEASE_MS),
            renewed_ms: 0,
            claimed: false,
            claimed_ms: 0,
            fingerprint,
            archive_name: String::new(),
            upload_id: String::new(),
            runs: 1,
            seq: 0,
            segments: 0,
            part_size: 0,
            earlier_seconds: 0.0,
        }
    }

    fn fail(&self, doing: &str, key: &str, e: &S3Error) -> Failure {
        s3_failure(Side::Destination, self.target, doing, Some(key), e)
    }

    /// The upload id the checkpoint holds now, if there is one (a damaged one holds none).
    pub fn peek_upload_id(&self) -> Result<Option<String>, S3Error> {
        let key = Checkpoint::key(&self.dir);
        Ok(checkpoint::get(self.dst, &key, MAX_STATE_OBJECT)?
            .and_then(|b| serde_json::from_slice::<Checkpoint>(&b).ok())
            .map(|cp| cp.upload_id))
    }

    /// The checkpoint an earlier run left, if any.
    pub fn load(&self) -> Result<Option<Checkpoint>, Failure> {
        let key = Checkpoint::key(&self.dir);
        let Some(bytes) = checkpoint::get(self.dst, &key, MAX_STATE_OBJECT)
            .map_err(|e| self.fail("reading the checkpoint", &key, &e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Failure::new(
                Kind::Checkpoint,
                format!(
                    "the checkpoint '{key}' cannot be read ({e}); set DISCARD_CHECKPOINT=true to abandon it"
                ),
            )
        })
    }

    /// Goes on from `cp` (already checked against this run's configuration).
    pub fn continue_from(&mut self, cp: &Checkpoint) {
        self.archive_name = cp.archive_name.clone();
        self.upload_id = cp.upload_id.clone();
        self.runs = cp.runs + 1;
        self.seq = cp.seq;
        self.segments = cp.zip.segments.len();
        self.part_size = cp.part_size;
        self.earlier_seconds = cp.seconds;
    }

    /// A checkpoint of this backup is in the bucket (from an earlier run or this one).
    pub fn has_checkpoint(&self) -> bool {
        self.seq > 0
    }

    pub fn names(&self, seq: u32) -> Result<Vec<u64>, Failure> {
        let key = Checkpoint::names_key(&self.dir, seq);
        let bytes = self.state_object(&key)?;
        checkpoint::names_from_bytes(&bytes).map_err(|why| self.damaged(&key, &why))
    }

    pub fn pending(&self, seq: u32, len: u64) -> Result<Vec<u8>, Failure> {
        let key = Checkpoint::pending_key(&self.dir, seq);
        let bytes = self.state_object(&key)?;
        if bytes.len() as u64 != len {
            return Err(self.damaged(&key, "its pending bytes are not the size recorded"));
        }
        Ok(bytes)
    }

    /// Segment `n`'s `central` or `manifest` bytes, for the archive's end.
    pub fn segment(&self, n: usize, what: &str, len: u64) -> Result<Vec<u8>, Failure> {
        let key = Checkpoint::segment_key(&self.dir, n, what);
        let bytes = self.state_object(&key)?;
        if bytes.len() as u64 != len {
            return Err(self.damaged(&key, "it is not the size recorded"));
        }
        Ok(bytes)
    }

    fn state_object(&self, key: &str) -> Result<Vec<u8>, Failure> {
        checkpoint::get(self.dst, key, MAX_STATE_OBJECT)
            .map_err(|e| self.fail("reading the checkpoint", key, &e))?
            .ok_or_else(|| self.damaged(key, "it is missing"))
    }

    fn damaged(&self, key: &str, why: &str) -> Failure {
        Failure::new(
            Kind::Checkpoint,
            format!(
                "the checkpoint of this backup is damaged: '{key}': {why}; set DISCARD_CHECKPOINT=true to abandon it"
            ),
        )
    }

    fn read_lease(&self) -> Result<Option<Lease>, Failure> {
        let key = Lease::key(&self.dir);
        let bytes = checkpoint::get(self.dst, &key, 64 * 1024)
            .map_err(|e| self.fail("reading the lease", &key, &e))?;
        // A lease that cannot be read holds nothing: it is overwritten.
        Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    fn write_lease(&mut self) -> Result<(), Failure> {
        let key = Lease::key(&self.dir);
        let now = now_ms();
        let lease = Lease {
            owner: self.owner.clone(),
            expires: now + self.lease_ms,
        };
        let body = serde_json::to_vec(&lease).unwrap_or_default();
        checkpoint::put(self.dst, &key, &body, "application/json")
            .map_err(|e| self.fail("writing the lease", &key, &e))?;
        self.renewed_ms = now;
        Ok(())
    }

    fn busy(&self, lease: &Lease) -> Failure {
        let left = lease.expires.saturating_sub(now_ms()).div_ceil(1000);
        Failure::new(
            Kind::Busy,
            format!(
                "another run is writing this backup (its lease '{}' holds for {left} s more, renewed while it runs); \
                 try again later",
                Lease::key(&self.dir)
            ),
        )
    }

    /// Claims the backup's state for this run, or fails with [`Kind::Busy`].
    pub fn take_lease(&mut self) -> Result<(), Failure> {
        if self.leased {
            return Ok(());
        }
        if let Some(lease) = self.read_lease()? {
            if lease.held_by_other(&self.owner, now_ms()) {
                return Err(self.busy(&lease));
            }
        }
        self.write_lease()?;
        http::timer(http::now_nanos() + LEASE_SETTLE_MS * 1_000_000).block();
        match self.read_lease()? {
            Some(lease) if lease.owner == self.owner => {
                self.leased = true;
                Ok(())
            }
            Some(lease) => Err(self.busy(&lease)),
            None => Err(Failure::new(
                Kind::Busy,
                "another run of this backup removed its lease as this one took it; try again later",
            )),
        }
    }

    /// Writes (or renews) this run's claim on its upload, holding `extra_ms` beyond a
    /// lease (the wait for a long CompleteMultipartUpload).
    pub fn claim(&mut self, extra_ms: u64) -> Result<(), Failure> {
        let key = Claim::key(&self.dir, &self.upload_id);
        let now = now_ms();
        let claim = Claim {
            archive_name: self.archive_name.clone(),
            upload_id: self.upload_id.clone(),
            owner: self.owner.clone(),
            expires: now + self.lease_ms + extra_ms,
        };
        let body = serde_json::to_vec(&claim).unwrap_or_default();
        checkpoint::put(self.dst, &key, &body, "application/json")
            .map_err(|e| self.fail("writing this run's claim on its upload", &key, &e))?;
        self.claimed = true;
        self.claimed_ms = now;
        Ok(())
    }

    /// Removes this run's claim: its upload is complete, aborted, or vouched for by the
    /// checkpoint just written.
    pub fn drop_claim(&mut self) {
        if !self.claimed {
            return;
        }
        self.claimed = false;
        let key = Claim::key(&self.dir, &self.upload_id);
        if let Err(e) = checkpoint::delete_all(self.dst, &[key]) {
            log::warn("claim_release_failed", json!({"error": e.to_string()}));
        }
    }

    /// Renews the lease and the claim when a third of each has passed (small PUTs,
    /// between transfers).
    pub fn renew_if_due(&mut self) -> Result<(), Failure> {
        let now = now_ms();
        if self.leased && now >= self.renewed_ms + self.lease_ms / 3 {
            self.write_lease()?;
        }
        if self.claimed && now >= self.claimed_ms + self.lease_ms / 3 {
            self.claim(0)?;
        }
        Ok(())
    }

    /// Milliseconds until the lease or the claim wants renewing (`None` without either).
    pub fn renew_in_ms(&self) -> Option<u64> {
        let now = now_ms();
        let due = |held: bool, at: u64| held.then(|| (at + self.lease_ms / 3).saturating_sub(now));
        match (
            due(self.leased, self.renewed_ms),
            due(self.claimed, self.claimed_ms),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Saves a checkpoint: `writer` is at an entry boundary, every part is stored and
    /// `buffer` holds less than a part. The segment, names and pending bytes go first,
    /// `checkpoint.json` last, so a run killed halfway leaves the previous checkpoint
    /// whole; the previous names and pending bytes are removed after.
    pub fn save(
        &mut self,
        writer: &mut ZipWriter<PartBuffer>,
        buffer: &PartBuffer,
        upload: &MultipartUpload<'_>,
        last_key: Option<&str>,
        counts: Counts,
        seconds: f64,
    ) -> Result<(), Failure> {
        self.take_lease()?;
        let spilled = writer
            .spill()
            .map_err(|e| Failure::new(Kind::Archive, format!("checkpointing the archive: {e}")))?;
        let n = self.segments + 1;
        let seq = self.seq + 1;
        let pending = buffer.pending();
        let pending_len = pending.len() as u64;
        let names = names_to_bytes(&writer.names());
        let objects = [
            (
                Checkpoint::segment_key(&self.dir, n, "central"),
                spilled.central,
            ),
            (
                Checkpoint::segment_key(&self.dir, n, "manifest"),
                spilled.manifest,
            ),
            (Checkpoint::names_key(&self.dir, seq), names),
            (Checkpoint::pending_key(&self.dir, seq), pending),
        ];
        for (key, body) in &objects {
            checkpoint::put(self.dst, key, body, "application/octet-stream")
                .map_err(|e| self.fail("writing the checkpoint", key, &e))?;
        }
        let cp = Checkpoint {
            version: VERSION,
            fingerprint: self.fingerprint.clone(),
            archive_name: self.archive_name.clone(),
            upload_id: self.upload_id.clone(),
            runs: self.runs,
            seq,
            parts: upload.done_parts(),
            part_size: self.part_size,
            last_key: last_key.map(str::to_string),
            zip: writer.state(),
            pending: pending_len,
            counts,
            seconds,
        };
        if let Err(why) = cp.check() {
            return Err(Failure::new(
                Kind::Archive,
                format!("the checkpoint would not be whole: {why}"),
            ));
        }
        let key = Checkpoint::key(&self.dir);
        let body = serde_json::to_vec(&cp).unwrap_or_default();
        checkpoint::put(self.dst, &key, &body, "application/json")
            .map_err(|e| self.fail("writing the checkpoint", &key, &e))?;
        let old = self.seq;
        self.seq = seq;
        self.segments = n;
        if old > 0 {
            let stale = [
                Checkpoint::names_key(&self.dir, old),
                Checkpoint::pending_key(&self.dir, old),
            ];
            if let Err(e) = checkpoint::delete_all(self.dst, &stale) {
                log::warn("checkpoint_cleanup_failed", json!({"error": e.to_string()}));
            }
        }
        log::info(
            "checkpoint",
            json!({"seq": seq, "entries": cp.zip.entries, "archiveBytes": cp.zip.offset,
                   "parts": cp.parts.len(), "lastKey": cp.last_key}),
        );
        Ok(())
    }

    /// Every state object this backup wrote, once its archive is complete (or it is
    /// abandoned), then the lease.
    pub fn clear(&mut self) -> Result<(), S3Error> {
        let mut keys = Vec::new();
        for n in 1..=self.segments {
            keys.push(Checkpoint::segment_key(&self.dir, n, "central"));
            keys.push(Checkpoint::segment_key(&self.dir, n, "manifest"));
        }
        if self.seq > 0 {
            keys.push(Checkpoint::names_key(&self.dir, self.seq));
            keys.push(Checkpoint::pending_key(&self.dir, self.seq));
        }
        keys.push(Checkpoint::key(&self.dir));
        checkpoint::delete_all(self.dst, &keys)?;
        self.seq = 0;
        self.segments = 0;
        self.release();
        Ok(())
    }

    /// Abandons `cp`'s state as found, for DISCARD_CHECKPOINT (not this run's own).
    pub fn discard(&mut self, cp: &Checkpoint) -> Result<(), S3Error> {
        self.seq = cp.seq;
        self.segments = cp.zip.segments.len();
        self.clear()
    }

    /// Gives the lease up (a stopped run, so the next one need not wait it out).
    pub fn release(&mut self) {
        if !self.leased {
            return;
        }
        self.leased = false;
        let key = Lease::key(&self.dir);
        if let Ok(Some(lease)) = self.read_lease() {
            if lease.owner != self.owner {
                return;
            }
        }
        if let Err(e) = checkpoint::delete_all(self.dst, &[key]) {
            log::warn("lease_release_failed", json!({"error": e.to_string()}));
        }
    }
}

/// Counts of an entry-boundary state, from the pipeline's tallies.
pub fn counts_of(t: &crate::backup::pipeline::Tallies, retries: u64) -> Counts {
    Counts {
        files: t.files,
        bytes_read: t.bytes_read,
        skipped: t.skipped.clone(),
        changed: t.changed.clone(),
        own_archives: t.left_out.own_archives,
        excluded: t.left_out.excluded,
        retries,
    }
}
