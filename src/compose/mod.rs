//! `compose`: a backup split over parallel runs. A plan cuts the key space into ranges
//! ([`plan`]); each shard backs its range up into a fragment, itself a complete ZIP;
//! the compose step lays the fragments' data end to end into the one archive, copied
//! by the service (ranged UploadPartCopy) wherever a range makes a part of its own
//! ([`layout`]), then writes one merged manifest, one central directory with every
//! offset rebased, and the end records.
//!
//! ```text
//! plan ──► shard 1..N (backup of a range → fragment) ──► compose ──► archive
//! ```
//!
//! Only the central directory and the end records of a ZIP hold absolute offsets, so
//! the fragments' local headers, data and descriptors are reused byte for byte; a name
//! taken by two fragments (two keys that make the same safe name) is renamed in the
//! later one, its local header written anew.

pub mod layout;
pub mod plan;
pub mod sequence;

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::rc::Rc;
use std::time::Instant;

use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

use crate::backup::chain::Chain;
use crate::backup::checkpoint::{self, fingerprint, state_dir};
use crate::backup::list::Lister;
use crate::backup::parts::{self, Part, PartBuffer};
use crate::backup::upload::{CopySource, MultipartUpload, PartUpload};
use crate::config::{Config, ShardIndex, ShardWork};
use crate::error::{s3_failure, Failure, Kind, Side};
use crate::io::{http, log};
use crate::model::{hundredths, BackupReport};
use crate::naming::{archive_key, with_suffix};
use crate::s3::ops::{self, Range};
use crate::s3::{clients, S3Error, S3};
use crate::select::{Selection, Verdict};
use crate::zip::manifest::{ManifestWriter, MANIFEST_DIR, MANIFEST_NAME};
use crate::zip::remote::RemoteZip;
use crate::zip::spec::{self, CentralEntry, Entry, DEFLATED, MAX32};
use crate::zip::write::name_hash;
use layout::{Action, Piece};
use plan::{Plan, Planner, PLAN_VERSION};

/// The largest `plan.json` read back (a thousand ranges of 1 KiB keys, with room).
const MAX_PLAN_BYTES: usize = 4 * 1024 * 1024;

/// One shard as `POST /plan` answers it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedShard {
    /// `SHARD=` for this shard's runs, e.g. `3/16`.
    pub shard: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    pub objects: u64,
    pub bytes: u64,
    pub fragment: String,
}

/// What `POST /plan` answers.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    pub message: String,
    pub source_bucket: String,
    pub destination_bucket: String,
    pub plan_key: String,
    /// The archive the compose step will write.
    pub archive_name: String,
    pub objects: u64,
    pub bytes: u64,
    /// An existing plan with the same settings and shard count was kept (so shards
    /// already done stay done).
    pub reused: bool,
    /// What the ranges were weighed from: `listing`, or `the manifest of <archive>`.
    pub planned_from: String,
    pub shards: Vec<PlannedShard>,
}

/// What `POST /compose` answers: the backup's report, and how its bytes got there.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComposeReport {
    #[serde(flatten)]
    pub backup: BackupReport,
    pub fragments: u32,
    /// Archive bytes the service copied from the fragments (UploadPartCopy).
    pub copied_bytes: u64,
    /// Archive bytes that passed through this run: small ranges, renamed headers, the
    /// merged manifest, the central directory and the end records.
    pub uploaded_bytes: u64,
    pub server_side_copy: bool,
    /// Why the fragment data was not copied by the service, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_note: Option<String>,
    /// Entries renamed because an earlier fragment holds the same name.
    pub renamed: u64,
}

fn dst_failure(config: &Config, doing: &str, key: &str, e: &S3Error) -> Failure {
    s3_failure(Side::Destination, &config.dest, doing, Some(key), e)
}

/// The stored plan of this source's sharded backup, if there is one.
fn load_plan(config: &Config, dst: &S3, dir: &str) -> Result<Option<Plan>, Failure> {
    let key = Plan::key(dir);
    let Some(bytes) = checkpoint::get(dst, &key, MAX_PLAN_BYTES)
        .map_err(|e| dst_failure(config, "reading the shard plan", &key, &e))?
    else {
        return Ok(None);
    };
    let plan: Plan = serde_json::from_slice(&bytes).map_err(|e| {
        Failure::new(
            Kind::Checkpoint,
            format!("the shard plan '{key}' is damaged ({e}); make a new one with DISCARD_CHECKPOINT=true"),
        )
    })?;
    plan.check().map_err(|why| {
        Failure::new(
            Kind::Checkpoint,
            format!("the shard plan '{key}' cannot be used: {why}; make a new one with DISCARD_CHECKPOINT=true"),
        )
    })?;
    Ok(Some(plan))
}

/// The plan, which must exist and match this run's settings.
fn plan_for(config: &Config, dst: &S3, dir: &str) -> Result<Plan, Failure> {
    let key = Plan::key(dir);
    let plan = load_plan(config, dst, dir)?.ok_or_else(|| {
        Failure::new(
            Kind::Request,
            format!(
                "there is no shard plan at '{key}' in '{}': make one first with POST /plan?shards=N \
                 (or `spaces-backup plan --shards N`)",
                config.dest.bucket
            ),
        )
    })?;
    if plan.fingerprint != fingerprint(config) {
        return Err(Failure::new(
            Kind::Checkpoint,
            format!(
                "the shard plan '{key}' was made with other settings (buckets, endpoints, ARCHIVE_PREFIX, \
                 filters, COMPRESSION, PART_SIZE or EQUAL_PARTS): run every shard and the compose with the \
                 settings of the plan, or make a new plan with DISCARD_CHECKPOINT=true"
            ),
        ));
    }
    Ok(plan)
}

/// The configuration of shard `index`'s run: its range, fragment and chain, from the
/// stored plan.
pub fn shard_config(config: &Config, dst: &S3, index: ShardIndex) -> Result<Config, Failure> {
    let dir = state_dir(&config.archive_prefix, &config.source.bucket);
    let plan = plan_for(config, dst, &dir)?;
    let n = plan.shards.len() as u32;
    if n != index.count {
        return Err(Failure::new(
            Kind::Configuration,
            format!(
                "SHARD: this run is shard {}/{}, but the plan '{}' has {n} shards",
                index.index,
                index.count,
                Plan::key(&dir)
            ),
        ));
    }
    let mut c = config.clone();
    c.shard_work = Some(ShardWork {
        index,
        range: plan.shards[index.index as usize - 1].clone(),
        fragment: plan.fragment_key(&dir, index.index),
        chain_dir: plan.chain_dir(&dir, index.index),
    });
    Ok(c)
}

/// Deletes every object under `prefix` in the destination.
fn delete_under(config: &Config, dst: &S3, prefix: &str) -> Result<(), Failure> {
    let mut lister = Lister::new(dst, std::slice::from_ref(&prefix.to_string()));
    let fail =
        |e: &S3Error| dst_failure(config, "removing an abandoned plan's fragments", prefix, e);
    while let Some(page) = lister.next_page().map_err(|e| fail(&e))? {
        let keys: Vec<String> = page.into_iter().map(|o| o.key).collect();
        checkpoint::delete_all(dst, &keys).map_err(|e| fail(&e))?;
    }
    Ok(())
}

/// Abandons `plan` (DISCARD_CHECKPOINT): the uploads its shards left open are aborted,
/// then its fragments, its shards' checkpoints and the plan itself are deleted.
pub(crate) fn abandon_plan(
    config: &Config,
    dst: &S3,
    plan: &Plan,
    dir: &str,
) -> Result<(), Failure> {
    crate::backup::orphans::sweep_all(dst, &plan.fragments_dir(dir));
    delete_under(config, dst, &plan.fragments_dir(dir))?;
    delete_under(config, dst, &format!("{dir}shards/{}/", plan.stem()))?;
    let key = Plan::key(dir);
    checkpoint::delete_all(dst, std::slice::from_ref(&key))
        .map_err(|e| dst_failure(config, "removing an abandoned plan", &key, &e))
}

/// Fragments and shard state older than this, of no stored plan, are stale.
const STALE_AFTER: time::Duration = time::Duration::days(1);

/// Removes what abandoned sharded backups left (fragments and shard folders of a plan
/// that is no longer stored, a day old at least, so a plan being made now is safe):
/// after a compose, and before a new plan. Returns how many objects went; a failure is only logged.
pub fn remove_stale(config: &Config, dst: &S3) -> usize {
    let dir = state_dir(&config.archive_prefix, &config.source.bucket);
    let now = OffsetDateTime::now_utc();
    let failed = |e: &dyn std::fmt::Display| {
        log::warn(
            "stale_fragments_check_failed",
            json!({"error": e.to_string()}),
        );
    };
    // Old objects of any plan first (usually none: one listing per folder), then the
    // plan, whose own are kept.
    let mut old: Vec<(String, String)> = Vec::new();
    for folder in ["fragments/", "shards/"] {
        let prefix = format!("{dir}{folder}");
        let mut lister = Lister::new(dst, std::slice::from_ref(&prefix));
        loop {
            match lister.next_page() {
                Ok(Some(page)) => old.extend(
                    page.into_iter()
                        .filter(|o| {
                            crate::naming::parse_rfc3339(&o.last_modified)
                                .is_some_and(|t| t < now - STALE_AFTER)
                        })
                        .map(|o| {
                            let stem = o.key[prefix.len()..].split('/').next().unwrap_or_default();
                            (stem.to_string(), o.key)
                        }),
                ),
                Ok(None) => break,
                Err(e) => {
                    failed(&e);
                    return 0;
                }
            }
        }
    }
    if old.is_empty() {
        return 0;
    }
    let current = match load_plan(config, dst, &dir) {
        Ok(plan) => plan.map(|p| p.stem().to_string()),
        // A plan that cannot be read is kept, and so is everything of any plan.
        Err(e) => {
            failed(&e.message);
            return 0;
        }
    };
    let stale: Vec<String> = old
        .into_iter()
        .filter(|(stem, _)| current.as_deref() != Some(stem.as_str()))
        .map(|(_, key)| key)
        .collect();
    if let Err(e) = checkpoint::delete_all(dst, &stale) {
        failed(&e);
        return 0;
    }
    if !stale.is_empty() {
        log::info("stale_fragments_removed", json!({"objects": stale.len()}));
    }
    stale.len()
}

/// `POST /plan?shards=N`: lists the source once and stores the plan. A plan already
/// there with the same settings and shard count is kept, so a rerun of the whole
/// sharded backup continues it; any other plan is refused unless DISCARD_CHECKPOINT.
pub fn make_plan(config: &Config, shards: u32) -> Result<PlanReport, Failure> {
    let retries = Rc::new(Cell::new(0));
    let (src, dst) = clients(config, &retries);
    crate::backup::check_destination(config, &dst)?;
    let dir = state_dir(&config.archive_prefix, &config.source.bucket);
    let key = Plan::key(&dir);
    let report = |plan: &Plan, reused: bool| PlanReport {
        message: if reused {
            "The existing plan has these settings and shards: it is kept".into()
        } else {
            "Plan stored: run each shard, then compose".into()
        },
        source_bucket: config.source.bucket.clone(),
        destination_bucket: config.dest.bucket.clone(),
        plan_key: key.clone(),
        archive_name: plan.archive_name.clone(),
        objects: plan.shards.iter().map(|s| s.objects).sum(),
        bytes: plan.shards.iter().map(|s| s.bytes).sum(),
        reused,
        planned_from: plan.planned_from.clone(),
        shards: plan
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| PlannedShard {
                shard: format!("{}/{}", i + 1, plan.shards.len()),
                after: s.after.clone(),
                until: s.until.clone(),
                objects: s.objects,
                bytes: s.bytes,
                fragment: plan.fragment_key(&dir, i as u32 + 1),
            })
            .collect(),
    };
    let existing = match load_plan(config, &dst, &dir) {
        Ok(p) => p,
        Err(e) if e.kind == Kind::Checkpoint && config.discard_checkpoint => None,
        Err(e) => return Err(e),
    };
    if let Some(old) = existing {
        if old.fingerprint == fingerprint(config) && old.shards.len() == shards as usize {
            log::info(
                "plan_kept",
                json!({"planKey": key, "archiveName": old.archive_name}),
            );
            return Ok(report(&old, true));
        }
        if !config.discard_checkpoint {
            return Err(Failure::new(
                Kind::Checkpoint,
                format!(
                    "a plan of {} shards for '{}' is already at '{key}' (made with {}): run its shards and \
                     compose it, or set DISCARD_CHECKPOINT=true to abandon it (its fragments are deleted)",
                    old.shards.len(),
                    old.archive_name,
                    if old.fingerprint == fingerprint(config) {
                        "these settings"
                    } else {
                        "other settings"
                    }
                ),
            ));
        }
        abandon_plan(config, &dst, &old, &dir)?;
        log::warn(
            "plan_discarded",
            json!({"planKey": key, "archiveName": old.archive_name,
                   "message": "DISCARD_CHECKPOINT: the earlier plan and its fragments were removed"}),
        );
    }
    remove_stale(config, &dst);
    let (planner, planned_from) = match planned_from_manifest(config, &dst) {
        Some(found) => found,
        None => (planned_from_listing(config, &src)?, "listing".to_string()),
    };
    let plan = store_plan(config, &dst, planner, planned_from, shards, false)?;
    let out = report(&plan, false);
    log::info(
        "plan_stored",
        json!({"planKey": key, "archiveName": plan.archive_name, "shards": shards,
               "objects": out.objects, "bytes": out.bytes}),
    );
    Ok(out)
}

/// Stores a new plan of `shards` ranges, weighed by `planner`, for the archive named now.
pub(crate) fn store_plan(
    config: &Config,
    dst: &S3,
    planner: Planner,
    planned_from: String,
    shards: u32,
    sequential: bool,
) -> Result<Plan, Failure> {
    let dir = state_dir(&config.archive_prefix, &config.source.bucket);
    let key = Plan::key(&dir);
    let plan = Plan {
        version: PLAN_VERSION,
        archive_name: archive_key(
            &config.archive_prefix,
            &config.source.bucket,
            OffsetDateTime::now_utc(),
        ),
        fingerprint: fingerprint(config),
        shards: planner.finish(shards),
        planned_from,
        sequential,
    };
    let body = serde_json::to_vec_pretty(&plan).unwrap_or_default();
    checkpoint::put(dst, &key, &body, "application/json")
        .map_err(|e| dst_failure(config, "storing the shard plan", &key, &e))?;
    Ok(plan)
}

/// The selected keys of a listing of the source, weighed.
fn planned_from_listing(config: &Config, src: &S3) -> Result<Planner, Failure> {
    let selection = Selection::new(config);
    let mut planner = Planner::new();
    let mut lister = Lister::new(src, &config.include_prefixes);
    while let Some(page) = lister
        .next_page()
        .map_err(|e| s3_failure(Side::Source, &config.source, "listing objects", None, &e))?
    {
        for obj in page {
            if selection.judge(&obj.key) == Verdict::Take {
                planner.add(&obj.key, obj.size);
            }
        }
    }
    Ok(planner)
}

/// This source's newest archive under ARCHIVE_PREFIX: its key and size.
pub(crate) fn newest_archive(config: &Config, dst: &S3) -> Option<(String, u64)> {
    let prefix = format!("{}/backup-{}-", config.archive_prefix, config.source.bucket);
    let mut lister = Lister::new(dst, std::slice::from_ref(&prefix));
    let mut newest: Option<(OffsetDateTime, String, u64)> = None;
    while let Some(page) = lister.next_page().ok()? {
        for obj in page {
            if let Some(t) =
                crate::naming::archive_time(&obj.key, &config.archive_prefix, &config.source.bucket)
            {
                if newest.as_ref().is_none_or(|n| t > n.0) {
                    newest = Some((t, obj.key, obj.size));
                }
            }
        }
    }
    newest.map(|(_, key, size)| (key, size))
}

/// The keys of this source's newest archive, weighed, from its manifest (a few ranged
/// GETs instead of a listing of the whole bucket); `None` when there is no archive or
/// it cannot be read. Objects added or removed since only shift the balance: the ranges
/// always cover every key.
fn planned_from_manifest(config: &Config, dst: &S3) -> Option<(Planner, String)> {
    let (key, _) = newest_archive(config, dst)?;
    weighed_from_manifest(config, dst, &key)
}

/// The selected keys of archive `key`'s manifest, weighed.
pub(crate) fn weighed_from_manifest(
    config: &Config,
    dst: &S3,
    key: &str,
) -> Option<(Planner, String)> {
    let key = key.to_string();
    let selection = Selection::new(config);
    let wanted = |k: &str| {
        (config.include_prefixes.is_empty()
            || config
                .include_prefixes
                .iter()
                .any(|p| k.starts_with(p.as_str())))
            && selection.judge(k) == Verdict::Take
    };
    let read = (|| {
        let zip = RemoteZip::open(dst, &key)?;
        let manifest = zip
            .directory(|_| {})?
            .ok_or_else(|| Failure::new(Kind::Archive, "it has no manifest"))?;
        zip.read_manifest(&manifest, |lines| {
            let mut planner = Planner::new();
            while let Some(line) = lines
                .next_archived()
                .map_err(|e| Failure::new(Kind::Archive, e.to_string()))?
            {
                if wanted(&line.key) {
                    planner.add(&line.key, line.size);
                }
            }
            Ok(planner)
        })
    })();
    match read {
        Ok(planner) => {
            log::info("plan_from_manifest", json!({"archiveName": key}));
            Some((planner, format!("the manifest of {key}")))
        }
        Err(e) => {
            log::warn(
                "plan_from_manifest_failed",
                json!({"archiveName": key, "message": e.message, "then": "the source is listed"}),
            );
            None
        }
    }
}

/// One fragment as the compose step sees it.
struct Fragment<'a> {
    zip: RemoteZip<'a>,
    manifest: CentralEntry,
    /// Its data: every entry before the manifest, `0..data_end`.
    data_end: u64,
    /// Entries renamed here, by local header offset: (new name, old header length,
    /// new header).
    renamed: HashMap<u64, (String, u64, Vec<u8>)>,
    /// The same renames by old name, for the manifest lines.
    renamed_names: HashMap<String, String>,
    /// Where this fragment's data starts in the archive.
    base: u64,
    /// (offset of a renamed entry, bytes the headers grew up to and including it).
    shifts: Vec<(u64, i64)>,
}

impl Fragment<'_> {
    /// Where the local header at `offset` of this fragment is in the archive.
    fn rebased(&self, offset: u64) -> u64 {
        let before = self.shifts.partition_point(|(o, _)| *o < offset);
        let grown = before.checked_sub(1).map_or(0, |i| self.shifts[i].1);
        (self.base + offset).saturating_add_signed(grown)
    }
}

/// The archive's way out: parts cut from the buffer and parts copied by the service,
/// at most `cap` in flight (Spaces takes 10 concurrent PUT/COPY on one object).
struct Out<'a, 'c> {
    config: &'c Config,
    upload: MultipartUpload<'a>,
    buffer: PartBuffer,
    flying: Vec<PartUpload>,
    cap: usize,
    chain: &'c mut Chain<'a>,
    copied: u64,
    uploaded: u64,
}

impl Out<'_, '_> {
    fn fail(&self, doing: &str, e: &S3Error) -> Failure {
        dst_failure(self.config, doing, &self.upload.key.clone(), e)
    }

    /// Moves the parts in flight on; waits when none finished.
    fn pump(&mut self) -> Result<(), Failure> {
        let mut i = 0;
        let mut finished = false;
        while i < self.flying.len() {
            match self.upload.step(&mut self.flying[i]) {
                Ok(true) => {
                    self.flying.swap_remove(i);
                    finished = true;
                }
                Ok(false) => i += 1,
                Err(e) => {
                    let part = &self.flying[i];
                    let doing = if part.is_copy() {
                        format!("copying part {} from a fragment", part.number)
                    } else {
                        format!("uploading part {}", part.number)
                    };
                    return Err(self.fail(&doing, &e));
                }
            }
        }
        self.chain.renew_if_due()?;
        if !finished && !self.flying.is_empty() {
            let mut pollables = Vec::new();
            for p in &self.flying {
                p.pollables(&mut pollables);
            }
            if let Some(ms) = self.chain.renew_in_ms() {
                pollables.push(http::timer(
                    http::now_nanos().saturating_add(ms.saturating_mul(1_000_000)),
                ));
            }
            http::wait_any(&pollables);
        }
        Ok(())
    }

    fn make_room(&mut self) -> Result<(), Failure> {
        while self.flying.len() >= self.cap {
            self.pump()?;
        }
        Ok(())
    }

    fn drain(&mut self) -> Result<(), Failure> {
        while !self.flying.is_empty() {
            self.pump()?;
        }
        Ok(())
    }

    fn send(&mut self, part: Part) -> Result<(), Failure> {
        self.make_room()?;
        self.uploaded += part.data.len() as u64;
        let started = self
            .upload
            .start_part(part)
            .map_err(|e| self.fail("uploading a part", &e))?;
        self.flying.push(started);
        Ok(())
    }

    /// Sends every whole part the buffer holds.
    fn cut_ready(&mut self) -> Result<(), Failure> {
        while let Some(part) = self.buffer.take_part() {
            self.send(part)?;
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        // The buffer is memory: writing to it cannot fail.
        let _ = self.buffer.write_all(bytes);
        self.cut_ready()
    }

    /// The buffer's bytes, whatever their size, as a part (before a copied one, or the
    /// last).
    fn cut(&mut self) -> Result<(), Failure> {
        if !self.buffer.is_empty() {
            let part = self.buffer.take_rest();
            self.send(part)?;
        }
        Ok(())
    }

    fn copy(&mut self, source: CopySource) -> Result<(), Failure> {
        self.make_room()?;
        self.copied += source.last + 1 - source.first;
        let started = self
            .upload
            .start_copy(source)
            .map_err(|e| self.fail("copying a part from a fragment", &e))?;
        self.flying.push(started);
        Ok(())
    }

    /// The first copy, alone and waited for: `Ok(false)` when the service refuses
    /// UploadPartCopy (its number is given back, nothing was stored).
    fn probe_copy(&mut self, source: CopySource) -> Result<Result<(), String>, Failure> {
        self.drain()?;
        let len = source.last + 1 - source.first;
        let mut part = self
            .upload
            .start_copy(source)
            .map_err(|e| self.fail("copying a part from a fragment", &e))?;
        loop {
            match self.upload.step(&mut part) {
                Ok(true) => {
                    self.copied += len;
                    return Ok(Ok(()));
                }
                Ok(false) => {
                    let mut pollables = Vec::new();
                    part.pollables(&mut pollables);
                    http::wait_any(&pollables);
                }
                Err(e) if copy_refused(&e) => {
                    self.upload.unstart(part);
                    return Ok(Err(e.to_string()));
                }
                Err(e) => return Err(self.fail("copying the first part from a fragment", &e)),
            }
        }
    }

    /// Waits for every part still on the wire (before an abort).
    fn settle(&mut self) {
        for p in self.flying.drain(..) {
            p.settle();
        }
    }
}

/// Whether an UploadPartCopy failure means the service will not copy (not a failure
/// of this copy): not implemented, refused as a request, or not allowed.
fn copy_refused(e: &S3Error) -> bool {
    matches!(e.status(), Some(400 | 403 | 405 | 501))
        || matches!(
            e.code(),
            "NotImplemented" | "InvalidRequest" | "AccessDenied"
        )
}

/// Downloads bytes `start..end` of `key` into the buffer, parts going out as they
/// fill; a broken download goes on from where it stopped.
fn fetch(out: &mut Out<'_, '_>, dst: &S3, key: &str, start: u64, end: u64) -> Result<(), Failure> {
    let config = out.config;
    let fail = |e: &S3Error| dst_failure(config, "reading a fragment", key, e);
    let mut pos = start;
    let mut breaks = 0;
    while pos < end {
        let mut resp = dst
            .call(
                &ops::get_object(key, Range::Bytes(pos, end - 1), None),
                None,
            )
            .map_err(|e| fail(&e))?;
        let mut broken = None;
        loop {
            match resp.read_chunk(256 * 1024) {
                Ok(Some(chunk)) => {
                    if pos + chunk.len() as u64 > end {
                        return Err(fail(&S3Error::protocol(
                            "more bytes than the range asked for",
                        )));
                    }
                    pos += chunk.len() as u64;
                    out.write(&chunk)?;
                }
                Ok(None) => break,
                Err(e) => {
                    broken = Some(S3Error::from(e));
                    break;
                }
            }
        }
        if pos < end {
            // Broken or short: asked again from where it stopped, a few times.
            breaks += 1;
            if breaks > config.max_retries {
                let e = broken.unwrap_or_else(|| S3Error::protocol("the download ended early"));
                return Err(fail(&e));
            }
        }
    }
    Ok(())
}

/// `POST /compose`: the one archive of a sharded backup, from its fragments.
pub fn compose(config: &Config) -> Result<ComposeReport, Failure> {
    let clock = Instant::now();
    let started = OffsetDateTime::now_utc();
    let retries = Rc::new(Cell::new(0));
    let (_, dst) = clients(config, &retries);
    let dir = state_dir(&config.archive_prefix, &config.source.bucket);
    let plan = plan_for(config, &dst, &dir)?;
    let n = plan.shards.len() as u32;
    let keys: Vec<String> = (1..=n).map(|i| plan.fragment_key(&dir, i)).collect();

    // Pass 1 over the fragments' directories: their manifests, and the names taken.
    let mut names: HashSet<u64> = [name_hash(MANIFEST_NAME), name_hash(MANIFEST_DIR)]
        .into_iter()
        .collect();
    let mut taken_twice: Vec<(usize, u64, String)> = Vec::new();
    let mut frags: Vec<Fragment<'_>> = Vec::with_capacity(keys.len());
    for (f, key) in keys.iter().enumerate() {
        let zip = RemoteZip::open(&dst, key).map_err(|e| match e.kind {
            Kind::MissingArchive => Failure::new(
                Kind::MissingArchive,
                format!(
                    "shard {}/{n} has not finished: its fragment '{key}' is not there yet; \
                     run it (SHARD={}/{n}) and compose again",
                    f + 1,
                    f + 1
                ),
            ),
            _ => e,
        })?;
        let mut last_offset = 0;
        let manifest = zip.directory(|e| {
            if e.name == MANIFEST_NAME {
                return;
            }
            last_offset = last_offset.max(e.offset);
            if !names.insert(name_hash(&e.name)) {
                taken_twice.push((f, e.offset, e.name));
            }
        })?;
        let manifest = manifest
            .filter(|m| m.offset >= last_offset)
            .ok_or_else(|| {
                Failure::new(
                    Kind::Archive,
                    format!("'{key}' is not a shard's fragment: its manifest is missing or not its last entry"),
                )
            })?;
        frags.push(Fragment {
            data_end: manifest.offset,
            zip,
            manifest,
            renamed: HashMap::new(),
            renamed_names: HashMap::new(),
            base: 0,
            shifts: Vec::new(),
        });
    }
    // A name an earlier fragment holds gets its first free `~N` variant, as the writer
    // does within one archive.
    let renamed = taken_twice.len() as u64;
    for (f, offset, name) in taken_twice {
        let mut k = 2;
        let new = loop {
            let candidate = with_suffix(&name, k);
            if names.insert(name_hash(&candidate)) {
                break candidate;
            }
            k += 1;
        };
        let frag = &mut frags[f];
        let header = read_local_header(config, &dst, &frag.zip, offset, frag.data_end)?;
        let old_len = spec::local_header_len(&header).unwrap_or(0);
        let new_header = spec::renamed_local_header(&header, &new).ok_or_else(|| {
            Failure::new(
                Kind::Archive,
                format!(
                    "the local header of '{name}' in '{}' is damaged",
                    frag.zip.key
                ),
            )
        })?;
        frag.renamed_names.insert(name.clone(), new.clone());
        frag.renamed.insert(offset, (new, old_len, new_header));
    }
    drop(names);

    // The data: every fragment's entries, renamed headers written in their place.
    let mut pieces = Vec::new();
    let mut base = 0u64;
    for (f, frag) in frags.iter_mut().enumerate() {
        frag.base = base;
        let mut at: Vec<u64> = frag.renamed.keys().copied().collect();
        at.sort_unstable();
        let (mut pos, mut grown) = (0u64, 0i64);
        for o in at {
            let (_, old_len, header) = &frag.renamed[&o];
            pieces.push(Piece::Range {
                frag: f,
                start: pos,
                end: o,
            });
            grown += header.len() as i64 - *old_len as i64;
            pieces.push(Piece::Bytes(header.clone()));
            pos = o + old_len;
            frag.shifts.push((o, grown));
        }
        pieces.push(Piece::Range {
            frag: f,
            start: pos,
            end: frag.data_end,
        });
        base = (base + frag.data_end).saturating_add_signed(grown);
    }
    let data_len = base;
    let tails: u64 = frags
        .iter()
        .map(|f| f.manifest.compressed + f.zip.dir.size)
        .sum();
    let bound = data_len + tails + renamed * 64 + 1024 * 1024;
    // Parts through this run all have one size, small enough for 10,000 parts even when
    // nothing can be copied (and as Cloudflare R2 wants).
    let buffer_part = parts::equal_part_size(bound, config.part_size).ok_or_else(|| {
        Failure::new(
            Kind::Archive,
            format!("an archive of {bound} bytes needs parts over 5 GiB"),
        )
    })?;
    let need = config.memory_needed(buffer_part, 0);
    if need > config.max_memory {
        return Err(Failure::new(
            Kind::Memory,
            format!(
                "composing {bound} bytes takes parts of {buffer_part} bytes, about {need} bytes in all, \
                 more than MAX_MEMORY ({}); raise MAX_MEMORY or lower PARTS_IN_FLIGHT",
                config.max_memory
            ),
        ));
    }
    let mut copy_note = config.equal_parts.then(|| {
        "EQUAL_PARTS: every part must have one size, so fragment data was downloaded and uploaded again"
            .to_string()
    });
    let copy_part = copy_note
        .is_none()
        .then(|| layout::copy_part_size(data_len, config.max_parts));
    let actions = layout::plan(pieces, buffer_part, copy_part);

    // The upload, claimed in the source's state folder (as a whole backup's is), so no
    // other run takes it for an orphan.
    let mut chain = Chain::new(
        &dst,
        &config.dest,
        dir.clone(),
        fingerprint(config),
        config.checkpoint_seconds,
    );
    chain.take_lease()?;
    let upload = match MultipartUpload::create(&dst, &plan.archive_name, "application/zip") {
        Ok(u) => u.limited_to(config.max_parts),
        Err(e) => {
            chain.release();
            return Err(dst_failure(
                config,
                "creating the multipart upload",
                &plan.archive_name,
                &e,
            ));
        }
    };
    chain.archive_name = plan.archive_name.clone();
    chain.upload_id = upload.upload_id().to_string();
    log::info(
        "compose_start",
        json!({"archiveName": plan.archive_name, "fragments": n, "dataBytes": data_len,
               "renamed": renamed, "copyPartSize": copy_part, "partSize": buffer_part}),
    );
    let mut out = Out {
        config,
        upload,
        buffer: PartBuffer::new(buffer_part),
        flying: Vec::new(),
        cap: config.parts_in_flight.max(1),
        chain: &mut chain,
        copied: 0,
        uploaded: 0,
    };
    let written = out
        .chain
        .claim(0)
        .and_then(|()| write_archive(&dst, &frags, actions, &mut out, &mut copy_note, data_len));
    let (copied, uploaded) = (out.copied, out.uploaded);
    if written.is_err() {
        out.settle();
    }
    let Out { mut upload, .. } = out;
    // Completed, or aborted (after a failure, or a Complete that fails), and said so.
    let (written, result) = match written {
        Ok(w) => (Some(w), Ok(())),
        Err(e) => (None, Err(e)),
    };
    crate::backup::complete_or_abort(config, &mut upload, result, &mut chain)?;
    chain.release();
    let Some(written) = written else {
        return Err(Failure::new(Kind::Archive, "the archive was not written"));
    };
    // The archive is complete: uploads shard runs left open (killed before their first
    // checkpoint), then the fragments, the plan and the shards' folders go.
    crate::backup::orphans::sweep_all(&dst, &plan.fragments_dir(&dir));
    let mut doomed = keys.clone();
    doomed.push(Plan::key(&dir));
    let cleanup = checkpoint::delete_all(&dst, &doomed)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            delete_under(config, &dst, &format!("{dir}shards/{}/", plan.stem()))
                .map_err(|e| e.message)
        });
    if let Err(e) = cleanup {
        log::warn(
            "fragment_cleanup_failed",
            json!({"message": format!("the archive is complete, but its fragments or plan could not all be removed: {e}")}),
        );
    }
    let (deleted, retention_error) =
        crate::backup::apply_retention(config, &dst, &plan.archive_name, started);
    remove_stale(config, &dst);
    let report = ComposeReport {
        backup: BackupReport {
            message: "Backup completed successfully".into(),
            source_bucket: config.source.bucket.clone(),
            destination_bucket: config.dest.bucket.clone(),
            archive_name: plan.archive_name.clone(),
            files_backed_up: written.files,
            archive_size: written.size,
            duration_seconds: hundredths(clock.elapsed().as_secs_f64()),
            bytes_read: 0,
            parts: upload.parts() as u64,
            part_size: buffer_part,
            skipped: written.skipped,
            changed: Vec::new(),
            excluded_archives: 0,
            excluded_by_filter: 0,
            retries: retries.get(),
            deleted,
            retention_error,
            status: "completed".into(),
            runs: 1,
            // What each shard's runs could not record they said in their own answers.
            not_recorded: crate::backup::not_recorded(config, &Default::default()),
        },
        fragments: n,
        copied_bytes: copied,
        uploaded_bytes: uploaded,
        server_side_copy: copy_note.is_none() && copied > 0,
        copy_note,
        renamed,
    };
    log::info(
        "compose_done",
        serde_json::to_value(&report).unwrap_or_default(),
    );
    Ok(report)
}

/// What writing the archive counted.
struct Written {
    files: u64,
    size: u64,
    skipped: Vec<String>,
}

/// The local header at `offset` of a fragment, read whole.
fn read_local_header(
    config: &Config,
    dst: &S3,
    zip: &RemoteZip<'_>,
    offset: u64,
    data_end: u64,
) -> Result<Vec<u8>, Failure> {
    let get = |len: u64| -> Result<Vec<u8>, Failure> {
        let end = (offset + len).min(data_end);
        let fail = |e: &S3Error| dst_failure(config, "reading a local header", zip.key, e);
        let mut resp = dst
            .call(
                &ops::get_object(zip.key, Range::Bytes(offset, end.max(offset + 1) - 1), None),
                None,
            )
            .map_err(|e| fail(&e))?;
        let mut out = Vec::new();
        while let Some(chunk) = resp
            .read_chunk(64 * 1024)
            .map_err(|e| fail(&S3Error::from(e)))?
        {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    };
    // Names are at most 1,024 bytes and our extra fields 20: one read nearly always.
    let first = get(30 + 2048)?;
    match spec::local_header_len(&first) {
        Some(len) if len <= first.len() as u64 => Ok(first),
        Some(len) => get(len),
        None => Err(Failure::new(
            Kind::Archive,
            format!("a local header in '{}' is damaged", zip.key),
        )),
    }
}

/// The whole archive: the data by `actions`, then the merged manifest, the central
/// directory and the end records.
fn write_archive(
    dst: &S3,
    frags: &[Fragment<'_>],
    actions: Vec<Action>,
    out: &mut Out<'_, '_>,
    copy_note: &mut Option<String>,
    data_len: u64,
) -> Result<Written, Failure> {
    let mut probed = false;
    for action in actions {
        let copying = copy_note.is_none();
        match action {
            Action::Write(bytes) => out.write(&bytes)?,
            Action::Fetch { frag, start, end } => fetch(out, dst, frags[frag].zip.key, start, end)?,
            Action::Cut if copying => out.cut()?,
            Action::Cut => {}
            Action::Copy { frag, start, end } if copying => {
                let source = CopySource {
                    key: frags[frag].zip.key.to_string(),
                    first: start,
                    last: end - 1,
                };
                if probed {
                    out.copy(source)?;
                    continue;
                }
                probed = true;
                if let Err(why) = out.probe_copy(source)? {
                    let note = format!(
                        "the destination refused UploadPartCopy ({why}): fragment data was downloaded and uploaded again"
                    );
                    log::warn("compose_copy_refused", json!({"message": note}));
                    *copy_note = Some(note);
                    fetch(out, dst, frags[frag].zip.key, start, end)?;
                }
            }
            Action::Copy { frag, start, end } => fetch(out, dst, frags[frag].zip.key, start, end)?,
        }
    }

    // The merged manifest, streamed with a data descriptor: its size is known only at
    // its end, and it may not fit in memory.
    let text_bound: u64 = frags.iter().map(|f| f.manifest.uncompressed).sum::<u64>()
        + 64 * frags.iter().map(|f| f.renamed.len() as u64).sum::<u64>()
        + 1024 * 1024;
    let zip64 = text_bound >= MAX32;
    let mut entry = Entry {
        name: MANIFEST_NAME,
        method: DEFLATED,
        descriptor: true,
        zip64,
        dos_time: 0,
        dos_date: (1 << 5) | 1,
        crc32: 0,
        compressed: 0,
        uncompressed: 0,
        offset: data_len,
        directory: false,
    };
    let mut head = Vec::new();
    spec::local_header(&mut head, &entry);
    out.write(&head)?;
    let mut at = data_len + head.len() as u64;
    let mut manifest = ManifestWriter::new();
    let (mut files, mut skipped) = (0u64, Vec::new());
    for frag in frags {
        frag.zip.read_manifest(&frag.manifest, |lines| {
            let bad = |e: std::io::Error| {
                Failure::new(
                    Kind::Archive,
                    format!("the manifest of '{}' cannot be read: {e}", frag.zip.key),
                )
            };
            while let Some(mut line) = lines.next_line().map_err(bad)? {
                match &line.entry {
                    Some(name) => {
                        files += 1;
                        if let Some(new) = frag.renamed_names.get(name.as_ref()) {
                            line.entry = Some(Cow::Owned(new.clone()));
                        }
                    }
                    None => skipped.push(line.key.to_string()),
                }
                manifest.add(&line).map_err(bad)?;
                if manifest.held_bytes() >= 1024 * 1024 {
                    for block in manifest.flush_out().map_err(bad)?.blocks {
                        at += block.len() as u64;
                        out.write(&block)?;
                    }
                }
            }
            Ok(())
        })?;
    }
    let done = manifest
        .finish()
        .map_err(|e| Failure::new(Kind::Archive, format!("the merged manifest: {e}")))?;
    for block in done.deflated.blocks {
        at += block.len() as u64;
        out.write(&block)?;
    }
    entry.crc32 = done.crc32;
    entry.compressed = at - data_len - head.len() as u64;
    entry.uncompressed = done.len;
    if !zip64 && (entry.compressed >= MAX32 || entry.uncompressed >= MAX32) {
        return Err(Failure::new(
            Kind::Archive,
            "the merged manifest outgrew 4 GiB without ZIP64",
        ));
    }
    let mut desc = Vec::new();
    spec::data_descriptor(&mut desc, &entry);
    out.write(&desc)?;
    let cd_offset = at + desc.len() as u64;

    // Pass 2: the central directory, every record rebased (and renamed).
    let mut cd_size = 0u64;
    let mut entries = 0u64;
    let mut record = Vec::new();
    for frag in frags {
        let mut failed = None;
        frag.zip.directory(|e| {
            if e.name == MANIFEST_NAME || failed.is_some() {
                return;
            }
            let name = frag
                .renamed
                .get(&e.offset)
                .map_or(e.name.as_str(), |r| r.0.as_str());
            record.clear();
            spec::central_record(&mut record, &e.entry(name, frag.rebased(e.offset)));
            cd_size += record.len() as u64;
            entries += 1;
            if let Err(err) = out.write(&record) {
                failed = Some(err);
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
    }
    record.clear();
    spec::central_record(&mut record, &entry);
    cd_size += record.len() as u64;
    out.write(&record)?;
    let mut end = Vec::new();
    spec::end_records(&mut end, entries + 1, cd_offset, cd_size);
    out.write(&end)?;
    out.cut()?;
    out.drain()?;
    Ok(Written {
        files,
        size: cd_offset + cd_size + end.len() as u64,
        skipped,
    })
}
