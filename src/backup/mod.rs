//! `backup`: every selected object of the source into one ZIP archive in the destination,
//! one file per stage in pipeline order:
//!
//! ```text
//! list.rs ──► fetch.rs ──► archive.rs (zip::write) ──► parts.rs ──► upload.rs
//!   1            2              3                         3→4           4
//! ```
//!
//! driven by [`pipeline`], with memory bounded by the part size. A failure after the
//! upload was created aborts it; [`retention`] runs only after a success.

pub mod archive;
pub mod chain;
pub mod checkpoint;
pub mod dry_run;
pub mod extras;
pub mod fetch;
pub mod link;
pub mod list;
pub mod orphans;
pub mod parts;
pub mod pipeline;
pub mod retention;
pub mod settings;
pub mod upload;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

use crate::config::Config;
use crate::error::{s3_failure, Failure, Kind, Side};
use crate::io::http;
use crate::io::log;
use crate::model::{hundredths, BackupReport, DryRunReport, ListedObject};
use crate::naming::archive_key;
use crate::s3::{clients, S3};
use crate::select::{Selection, Verdict};
use crate::zip::write::ZipWriter;
use chain::Chain;
use checkpoint::Checkpoint;
use list::Lister;
use parts::PartBuffer;
use pipeline::{Ended, Schedule, Start, Tallies};
use upload::MultipartUpload;

/// What a backup answers: the archive written, or what a dry run would write.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Outcome {
    Done(BackupReport),
    /// The run stopped at its deadline; the next run continues the same archive.
    Continuing(BackupReport),
    DryRun(DryRunReport),
    /// A backup too big for one upload, its fragments composed into the archive.
    Composed(crate::compose::ComposeReport),
}

impl Outcome {
    /// The HTTP status: 202 while the archive is not complete yet.
    pub fn status(&self) -> u16 {
        match self {
            Outcome::Continuing(_) => 202,
            _ => 200,
        }
    }
}

/// Seconds into the run at which it stops taking new entries: its budget (the nearer of
/// MAX_RUN_SECONDS and the function's deadline) less a reserve for the entry in hand,
/// the parts still on the wire and the checkpoint (a fifth of the budget, 0.5 s to 90 s).
pub fn stop_after(
    max_run_seconds: Option<u64>,
    deadline_ms: Option<u64>,
    now_ms: u64,
) -> Option<f64> {
    let from_deadline = deadline_ms.map(|d| d.saturating_sub(now_ms) as f64 / 1000.0);
    let budget = max_run_seconds
        .map(|s| s as f64)
        .into_iter()
        .chain(from_deadline)
        .reduce(f64::min)?;
    let reserve = (budget / 5.0).clamp(0.5, 90.0);
    Some((budget - reserve).max(0.0))
}

/// The first page of the listing, the writer, the buffer and the upload a run starts
/// from: a new archive, or the one a checkpoint continues.
struct Begun<'a> {
    lister: Lister<'a>,
    first: Vec<ListedObject>,
    writer: ZipWriter<PartBuffer>,
    buffer: PartBuffer,
    upload: MultipartUpload<'a>,
    config: Config,
    tallies: Tallies,
}

/// One backup, from the first listing page to the report: a new archive, or the one an
/// earlier run's checkpoint continues; complete, or continuing in the next run.
pub fn run(config: &Config) -> Result<Outcome, Failure> {
    let started = OffsetDateTime::now_utc();
    let clock = Instant::now();
    let started_nanos = http::now_nanos();
    let started_ms = chain::now_ms();
    let retries = Rc::new(Cell::new(0));
    let (src, dst) = clients(config, &retries);
    // A shard's range, fragment and chain come from the stored plan.
    let sharded;
    let config = match config.shard {
        Some(index) => {
            sharded = crate::compose::shard_config(config, &dst, index)?;
            &sharded
        }
        None => config,
    };
    if config.dry_run {
        let key = match &config.shard_work {
            Some(w) => w.fragment.clone(),
            None => archive_key(&config.archive_prefix, &config.source.bucket, started),
        };
        let mut lister = listing(config, &src);
        let first = first_page(config, &mut lister, &dst)?;
        return dry_run::run(config, &key, &mut lister, first, clock).map(Outcome::DryRun);
    }
    // The source's first page and the destination's check come first, as in every run
    // (a wrong key or a missing bucket is named as such), then a checkpoint is looked for.
    let mut lister = listing(config, &src);
    let first = first_page(config, &mut lister, &dst)?;
    // A whole backup planned as fragments (too big for one upload) goes on with them.
    if config.shard.is_none() {
        if let Some(plan) = crate::compose::sequence::stored(config, &dst)? {
            return crate::compose::sequence::run(config, &dst, &plan, started_ms);
        }
    }
    let mut chain = Chain::new(
        &dst,
        &config.dest,
        chain_dir(config),
        checkpoint::fingerprint(config),
        config.checkpoint_seconds,
    );
    let found = found_checkpoint(config, &dst, &mut chain);
    // A new whole backup is weighed first: one too big for one upload is planned as
    // fragments.
    if let (Ok(None), None) = (&found, &config.shard_work) {
        use crate::compose::sequence::{self, Weighed};
        let stop_at = stop_after(config.max_run_seconds, config.deadline_ms, chain::now_ms())
            .map(|s| started_nanos.saturating_add((s * 1e9) as u64));
        match sequence::weigh(config, &src, &dst, &first, &mut lister, stop_at) {
            Ok(Weighed::Fits) => {}
            Ok(Weighed::TooBig {
                planner,
                planned_from,
                fragments,
            }) => {
                chain.release();
                return sequence::begin(config, &dst, planner, planned_from, fragments, started_ms);
            }
            Ok(Weighed::Unfinished { objects, bytes }) => {
                chain.release();
                return Ok(sequence::weighing(config, objects, bytes));
            }
            Err(e) => {
                chain.release();
                return Err(e);
            }
        }
    }
    let begun = found.and_then(|found| match &found {
        Some(cp) => match continue_backup(config, &src, &dst, &mut chain, cp, &retries) {
            // Damaged, or its upload gone: abandoned when asked, and a new archive begins.
            Err(e) if e.kind == Kind::Checkpoint && config.discard_checkpoint => {
                discard(config, &dst, &mut chain, cp, &e.message)?;
                chain = Chain::new(
                    &dst,
                    &config.dest,
                    chain_dir(config),
                    checkpoint::fingerprint(config),
                    config.checkpoint_seconds,
                );
                let mut lister = listing(config, &src);
                let first = first_page(config, &mut lister, &dst)?;
                begin_backup(config, &src, &dst, &mut chain, started, lister, first)
            }
            other => other,
        },
        None => begin_backup(config, &src, &dst, &mut chain, started, lister, first),
    });
    let mut begun = match begun {
        Ok(b) => b,
        Err(e) => {
            chain.release();
            return Err(e);
        }
    };
    // Claimed before anything is written, so no other run takes this upload for an
    // orphan; then the uploads that killed runs left behind are looked for.
    if let Err(e) = chain.claim(0) {
        return Err(abandon(&mut begun.upload, e, &mut chain));
    }
    // A shard leaves the sweep to whole backups: its claims are in its own chain's
    // folder, so it cannot tell the other shards' uploads from orphans.
    let aborted = if config.shard_work.is_some() {
        Vec::new()
    } else {
        orphans::sweep(
            &dst,
            &chain,
            &config.archive_prefix,
            &config.source.bucket,
            begun.upload.upload_id(),
        )
    };
    let config = &begun.config;
    log::info(
        "backup_start",
        json!({"sourceBucket": config.source.bucket, "source": config.source.endpoint.to_string(),
               "destinationBucket": config.dest.bucket, "destination": config.dest.endpoint.to_string(),
               "archiveName": chain.archive_name, "partSize": config.part_size, "run": chain.runs,
               "orphansAborted": aborted}),
    );
    let stop_at = stop_after(config.max_run_seconds, config.deadline_ms, chain::now_ms())
        .map(|s| started_nanos.saturating_add((s * 1e9) as u64));
    let schedule = Schedule {
        stop_at,
        every: config.checkpoint_seconds.saturating_mul(1_000_000_000),
        started: started_nanos,
        earlier_seconds: chain.earlier_seconds,
        retries: retries.clone(),
    };
    // Read by every run of the backup that holds the bucket's last keys, since any of
    // them may be the one that finishes the archive (four small requests).
    let settings = if records_bucket_settings(config) {
        let notes = &mut begun.tallies.not_recorded;
        match settings::record(&src, notes, || chain.renew_if_due()) {
            Ok(s) => s,
            Err(e) => return Err(abandon(&mut begun.upload, e, &mut chain)),
        }
    } else {
        None
    };
    let written = pipeline::archive_all(
        config,
        &src,
        Start {
            lister: &mut begun.lister,
            first: std::mem::take(&mut begun.first),
            writer: begun.writer,
            buffer: &begun.buffer,
            upload: &mut begun.upload,
            chain: &mut chain,
            schedule,
            settings,
        },
        &mut begun.tallies,
    );
    let (upload, buffer, tallies) = (&mut begun.upload, &begun.buffer, &begun.tallies);
    let ended = match written {
        Ok(Ended::Stopped) => {
            // The checkpoint just written vouches for the upload now.
            chain.drop_claim();
            chain.release();
            Ended::Stopped
        }
        other => {
            complete_or_abort(config, upload, other.map(drop), &mut chain)?;
            Ended::Complete
        }
    };
    let key = chain.archive_name.clone();
    let mut report = BackupReport {
        message: "Backup completed successfully".into(),
        source_bucket: config.source.bucket.clone(),
        destination_bucket: config.dest.bucket.clone(),
        archive_name: key.clone(),
        files_backed_up: tallies.files,
        archive_size: buffer.total(),
        duration_seconds: hundredths(clock.elapsed().as_secs_f64()),
        bytes_read: tallies.bytes_read,
        parts: upload.parts() as u64,
        part_size: config.part_size,
        skipped: tallies.skipped.clone(),
        changed: tallies.changed.clone(),
        excluded_archives: tallies.left_out.own_archives,
        excluded_by_filter: tallies.left_out.excluded,
        retries: retries.get(),
        deleted: Vec::new(),
        retention_error: None,
        status: "completed".into(),
        runs: chain.runs,
        not_recorded: not_recorded(config, tallies),
    };
    if ended == Ended::Stopped {
        report.message = "Backup will continue in the next run".into();
        report.status = "continuing".into();
        log::info(
            "backup_continuing",
            serde_json::to_value(&report).unwrap_or_default(),
        );
        return Ok(Outcome::Continuing(report));
    }
    if chain.runs > 1 || chain.has_checkpoint() {
        if let Err(e) = chain.clear() {
            log::warn(
                "checkpoint_cleanup_failed",
                json!({"message": format!("the archive is complete, but its checkpoint under '{}' could not be removed: {e}", chain.dir)}),
            );
        }
    }
    // A fragment is not an archive: retention waits for the composed one.
    let (deleted, retention_error) = if config.shard_work.is_some() {
        (Vec::new(), None)
    } else {
        apply_retention(config, &dst, &key, started)
    };
    report.deleted = deleted;
    report.retention_error = retention_error;
    log::info(
        "backup_done",
        serde_json::to_value(&report).unwrap_or_default(),
    );
    Ok(Outcome::Done(report))
}

/// Whether this backup writes the bucket's settings: a whole one, or the shard (or
/// fragment) that holds the last keys, so a composed archive has them once, where a
/// whole backup would.
fn records_bucket_settings(config: &Config) -> bool {
    config.record_bucket_settings
        && config
            .shard_work
            .as_ref()
            .is_none_or(|w| w.range.until.is_none())
}

/// What the manifest lacks, for the response: what was turned off, and what the
/// source refused.
pub(crate) fn not_recorded(config: &Config, tallies: &Tallies) -> Vec<String> {
    let mut out = Vec::new();
    if !config.record_acl {
        out.push("ACLs were not recorded (RECORD_ACL=false)".to_string());
    }
    if !config.record_tags {
        out.push("tags were not recorded (RECORD_TAGS=false)".to_string());
    }
    if !config.record_bucket_settings {
        out.push(
            "the bucket's settings were not recorded (RECORD_BUCKET_SETTINGS=false)".to_string(),
        );
    }
    out.extend(tallies.not_recorded.iter().cloned());
    out
}

/// The checkpoint this run continues, if any: checked against this run's configuration,
/// with the lease taken; or discarded (DISCARD_CHECKPOINT), its upload aborted.
fn found_checkpoint(
    config: &Config,
    dst: &S3,
    chain: &mut Chain<'_>,
) -> Result<Option<Checkpoint>, Failure> {
    let Some(cp) = chain.load()? else {
        return Ok(None);
    };
    let key = Checkpoint::key(&chain.dir);
    let mismatch = if cp.fingerprint != chain.fingerprint {
        Some("it was written with other settings (buckets, endpoints, ARCHIVE_PREFIX, filters, COMPRESSION, PART_SIZE or EQUAL_PARTS)".to_string())
    } else {
        cp.check().err()
    };
    if let Some(why) = mismatch {
        if config.discard_checkpoint {
            discard(config, dst, chain, &cp, &why)?;
            return Ok(None);
        }
        return Err(Failure::new(
            Kind::Checkpoint,
            format!(
                "an unfinished backup ('{}', {} entries so far) has a checkpoint at '{key}' that this run cannot continue: {why}; \
                 run again with the settings it was started with, or set DISCARD_CHECKPOINT=true to abandon it (its upload is then aborted)",
                cp.archive_name, cp.zip.entries
            ),
        ));
    }
    chain.take_lease()?;
    // Read again under the lease: the run that held it may have gone on meanwhile.
    match chain.load()? {
        Some(latest)
            if latest.archive_name == cp.archive_name && latest.fingerprint == cp.fingerprint =>
        {
            Ok(Some(latest))
        }
        // It finished (or was discarded) meanwhile: this run begins a new archive.
        _ => Ok(None),
    }
}

/// Abandons `cp` (DISCARD_CHECKPOINT, for a checkpoint this run cannot continue): its
/// upload is aborted and its state removed, so nothing is left behind.
fn discard(
    config: &Config,
    dst: &S3,
    chain: &mut Chain<'_>,
    cp: &Checkpoint,
    why: &str,
) -> Result<(), Failure> {
    chain.take_lease()?;
    let abort = crate::s3::ops::abort_multipart_upload(&cp.archive_name, &cp.upload_id);
    match dst.call(&abort, None) {
        Ok(_) => {}
        Err(e) if e.status() == Some(404) => {}
        Err(e) => {
            return Err(s3_failure(
                Side::Destination,
                &config.dest,
                &format!(
                    "aborting the upload {} of the discarded checkpoint",
                    cp.upload_id
                ),
                Some(&cp.archive_name),
                &e,
            ))
        }
    }
    chain.discard(cp).map_err(|e| {
        s3_failure(
            Side::Destination,
            &config.dest,
            "removing the discarded checkpoint",
            Some(&Checkpoint::key(&chain.dir)),
            &e,
        )
    })?;
    log::warn(
        "checkpoint_discarded",
        json!({"archiveName": cp.archive_name, "reason": why,
               "message": "DISCARD_CHECKPOINT: the earlier runs' upload was aborted; a new archive begins"}),
    );
    Ok(())
}

/// A new archive: the first page, the destination check, the part size, the upload.
#[allow(clippy::too_many_arguments)]
fn begin_backup<'a>(
    config: &Config,
    src: &'a S3,
    dst: &'a S3,
    chain: &mut Chain<'_>,
    started: OffsetDateTime,
    lister: Lister<'a>,
    first: Vec<ListedObject>,
) -> Result<Begun<'a>, Failure> {
    let key = match &config.shard_work {
        // A rerun of the shard writes the same fragment again.
        Some(w) => w.fragment.clone(),
        None => archive_key(&config.archive_prefix, &config.source.bucket, started),
    };
    let config = plan_equal_parts(config, src)?.unwrap_or_else(|| config.clone());
    let upload = MultipartUpload::create(dst, &key, "application/zip")
        .map_err(|e| {
            s3_failure(
                Side::Destination,
                &config.dest,
                "creating the multipart upload",
                Some(&key),
                &e,
            )
        })?
        .limited_to(config.max_parts);
    chain.archive_name = key;
    chain.upload_id = upload.upload_id().to_string();
    chain.part_size = config.part_size;
    let buffer = PartBuffer::new(config.part_size);
    let writer = ZipWriter::new(buffer.clone(), config.compression_level);
    Ok(Begun {
        lister,
        first,
        writer,
        buffer,
        upload,
        config,
        tallies: Tallies::default(),
    })
}

/// The archive `cp` holds so far, continued after its last key.
fn continue_backup<'a>(
    config: &Config,
    src: &'a S3,
    dst: &'a S3,
    chain: &mut Chain<'_>,
    cp: &Checkpoint,
    retries: &Rc<Cell<u64>>,
) -> Result<Begun<'a>, Failure> {
    chain.continue_from(cp);
    let mut config = config.clone();
    if config.equal_parts && !config.part_size_fixed {
        // Planned by the first run from its listing: kept, so every part has one size.
        config.part_size = cp.part_size;
        config.part_size_fixed = true;
    }
    let mut lister = listing(&config, src);
    if let Some(last) = &cp.last_key {
        lister = lister.after(last);
    }
    // The run's first page (listed before the checkpoint was read) is from the start.
    let first = lister
        .next_page()
        .map_err(|e| s3_failure(Side::Source, &config.source, "listing objects", None, &e))?
        .unwrap_or_default();
    // The upload must still be there (Spaces deletes incomplete uploads after 30 days).
    let probe = crate::s3::ops::list_parts(&cp.archive_name, &cp.upload_id);
    if let Err(e) = dst.call_xml(&probe, None) {
        let why = if e.status() == Some(404) {
            "it is gone (aborted, or removed by the service's cleanup of incomplete uploads)"
                .to_string()
        } else {
            e.to_string()
        };
        return Err(Failure::new(
            Kind::Checkpoint,
            format!(
                "the checkpoint continues the multipart upload {} of '{}', but {why}; \
                 set DISCARD_CHECKPOINT=true to abandon it and begin a new archive",
                cp.upload_id, cp.archive_name
            ),
        ));
    }
    let names = chain.names(cp.seq)?;
    let pending = chain.pending(cp.seq, cp.pending)?;
    let next = config.part_size_of(cp.parts.len() as u32 + 1);
    let buffer = PartBuffer::resumed(next, cp.stored_bytes(), &pending);
    let writer = ZipWriter::resume(buffer.clone(), config.compression_level, &cp.zip, &names);
    let upload = MultipartUpload::resume(dst, &cp.archive_name, &cp.upload_id, &cp.parts)
        .limited_to(config.max_parts);
    retries.set(cp.counts.retries);
    let c = &cp.counts;
    let tallies = Tallies {
        files: c.files,
        bytes_read: c.bytes_read,
        skipped: c.skipped.clone(),
        changed: c.changed.clone(),
        left_out: crate::select::Tally {
            own_archives: c.own_archives,
            excluded: c.excluded,
        },
        not_recorded: Vec::new(),
    };
    log::info(
        "checkpoint_found",
        json!({"archiveName": cp.archive_name, "entries": cp.zip.entries, "archiveBytes": cp.zip.offset,
               "lastKey": cp.last_key, "runs": cp.runs}),
    );
    Ok(Begun {
        lister,
        first,
        writer,
        buffer,
        upload,
        config,
        tallies,
    })
}

/// The listing a run archives: the selected prefixes, within the shard's range if any.
pub fn listing<'a>(config: &Config, src: &'a S3) -> Lister<'a> {
    let mut lister = Lister::new(src, &config.include_prefixes);
    if let Some(w) = &config.shard_work {
        if let Some(after) = &w.range.after {
            lister = lister.after(after);
        }
        if let Some(until) = &w.range.until {
            lister = lister.until(until);
        }
    }
    lister
}

/// Where this run's checkpoints and claims live: the source's state folder, or the
/// shard's own.
fn chain_dir(config: &Config) -> String {
    match &config.shard_work {
        Some(w) => w.chain_dir.clone(),
        None => checkpoint::state_dir(&config.archive_prefix, &config.source.bucket),
    }
}

/// The first listing page and the destination check come before the upload exists: a
/// missing or unreadable bucket fails with nothing to clean up.
fn first_page(
    config: &Config,
    lister: &mut Lister<'_>,
    dst: &S3,
) -> Result<Vec<ListedObject>, Failure> {
    let first = lister
        .next_page()
        .map_err(|e| s3_failure(Side::Source, &config.source, "listing objects", None, &e))?
        .unwrap_or_default();
    check_destination(config, dst)?;
    Ok(first)
}

/// The destination bucket is there and this key may use it (HeadBucket), named as the
/// destination when it is not.
pub(crate) fn check_destination(config: &Config, dst: &S3) -> Result<(), Failure> {
    upload::check_bucket(dst).map_err(|e| {
        s3_failure(
            Side::Destination,
            &config.dest,
            "checking the bucket",
            None,
            &e,
        )
    })
}

/// With equal parts (Cloudflare R2) and no PART_SIZE, parts cannot grow: one listing
/// pass first sizes them from the total, so that the archive fits in 10,000 parts.
fn plan_equal_parts(config: &Config, src: &S3) -> Result<Option<Config>, Failure> {
    if !config.equal_parts || config.part_size_fixed {
        return Ok(None);
    }
    let selection = Selection::new(config);
    let mut lister = listing(config, src);
    let (mut bytes, mut objects, mut key_bytes) = (0u64, 0u64, 0u64);
    while let Some(page) = lister
        .next_page()
        .map_err(|e| s3_failure(Side::Source, &config.source, "listing objects", None, &e))?
    {
        for obj in page {
            if selection.judge(&obj.key) == Verdict::Take {
                bytes += obj.size;
                objects += 1;
                key_bytes += obj.key.len() as u64;
            }
        }
    }
    let bound = parts::archive_bound(bytes, objects, key_bytes);
    let size = parts::equal_part_size(bound, config.part_size).ok_or_else(|| {
        Failure::new(
            Kind::Archive,
            format!(
                "the archive of {bytes} bytes needs parts over 5 GiB to fit in 10,000 equal parts (EQUAL_PARTS)"
            ),
        )
    })?;
    let mut planned = config.clone();
    planned.part_size = size;
    planned.part_size_fixed = true;
    let need = planned.memory_needed(size, 0);
    if need > planned.max_memory {
        return Err(Failure::new(
            Kind::Memory,
            format!(
                "equal parts of {size} bytes (EQUAL_PARTS, for {bytes} bytes of objects) need about {need} bytes, \
                 more than MAX_MEMORY ({}); raise MAX_MEMORY or lower PARTS_IN_FLIGHT",
                planned.max_memory
            ),
        ));
    }
    log::info(
        "equal_parts",
        json!({"partSize": size, "objects": objects, "bytes": bytes}),
    );
    Ok(Some(planned))
}

/// Completes the upload after a successful `written`; otherwise, or if completing fails,
/// aborts it, so no partial archive or orphan parts are left, and says so.
pub(crate) fn complete_or_abort(
    config: &Config,
    upload: &mut MultipartUpload<'_>,
    written: Result<(), Failure>,
    chain: &mut Chain<'_>,
) -> Result<(), Failure> {
    let result = written.and_then(|()| {
        // Held through the Complete (and its retries), however long the service takes.
        let wait = upload::complete_wait(
            upload.parts(),
            std::time::Duration::from_secs(config.timeout_seconds),
        );
        if let Err(e) = chain.claim(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX / 4) * 2) {
            log::warn("claim_renewal_failed", json!({"error": e.message}));
        }
        upload.complete().map_err(|e| {
            s3_failure(
                Side::Destination,
                &config.dest,
                &format!("completing the multipart upload {}", upload.upload_id()),
                Some(&upload.key),
                &e,
            )
        })
    });
    match result {
        Ok(()) => {
            chain.drop_claim();
            Ok(())
        }
        Err(err) => Err(abandon(upload, err, chain)),
    }
}

/// After `err`, the upload is aborted (so no partial archive or orphan parts are left),
/// or kept when a checkpoint holds it (or the service may still be completing it); the
/// failure says which.
fn abandon(upload: &mut MultipartUpload<'_>, err: Failure, chain: &mut Chain<'_>) -> Failure {
    let key = upload.key.clone();
    if chain.has_checkpoint() && !upload.is_unsettled() {
        // Earlier work is in the checkpoint: the next run goes on from it.
        chain.drop_claim();
        chain.release();
        log::warn("upload_kept", json!({"archiveName": key}));
        return err.and(&format!(
            "; the upload was kept: the next run continues it from the checkpoint under '{}' \
             (DISCARD_CHECKPOINT=true abandons it and aborts the upload)",
            chain.dir
        ));
    }
    chain.release();
    if upload.is_unsettled() {
        log::warn("upload_unsettled", json!({"archiveName": key}));
        return err.and(&format!(
            "; the upload was not aborted, since the service may still be completing it: \
             look for '{key}' later, or abort the upload {} with AbortMultipartUpload",
            upload.upload_id()
        ));
    }
    // Aborted first: the claim keeps the upload from other runs until it is gone (and
    // lapses by itself if the abort fails, so the next run aborts it).
    let aborted = upload.abort();
    chain.drop_claim();
    match aborted {
        Ok(()) => {
            log::warn("upload_aborted", json!({"archiveName": key}));
            err.and("; the multipart upload was aborted, so no partial archive was left")
        }
        Err(e) => {
            log::error(
                "abort_failed",
                json!({"archiveName": key, "error": e.to_string()}),
            );
            err.and(&format!(
                "; aborting the multipart upload of '{key}' also failed ({e}): remove it with AbortMultipartUpload or a lifecycle rule"
            ))
        }
    }
}

/// Retention runs only after a successful backup; its failure does not undo the backup,
/// it is reported beside it. Returns the keys deleted, and the failure if any.
pub(crate) fn apply_retention(
    config: &Config,
    dst: &S3,
    completed: &str,
    started: OffsetDateTime,
) -> (Vec<String>, Option<String>) {
    match retention::apply(
        dst,
        &config.archive_prefix,
        &config.source.bucket,
        completed,
        config.keep_last,
        config.keep_days,
        started,
    ) {
        Ok(keys) => {
            if !keys.is_empty() {
                log::info("retention", json!({"deleted": keys}));
            }
            (keys, None)
        }
        Err(e) => {
            let err = s3_failure(
                Side::Destination,
                &config.dest,
                "deleting older archives (KEEP_LAST/KEEP_DAYS)",
                None,
                &e,
            );
            log::warn("retention_failed", json!({"message": err.message}));
            (Vec::new(), Some(err.message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::stop_after;

    #[test]
    fn a_run_stops_a_fifth_of_its_budget_early() {
        assert_eq!(stop_after(None, None, 0), None);
        // 2 s: the reserve is at least 0.5 s.
        assert_eq!(stop_after(Some(2), None, 0), Some(1.5));
        assert_eq!(stop_after(Some(3), None, 0), Some(2.4));
        assert_eq!(stop_after(Some(100), None, 0), Some(80.0));
        // A function's 15 minutes: at most 90 s are kept back.
        assert_eq!(stop_after(None, Some(900_000 + 5_000), 5_000), Some(810.0));
        // The nearer of the two wins; a deadline already past stops at once.
        assert_eq!(stop_after(Some(100), Some(60_000), 0), Some(48.0));
        assert_eq!(stop_after(Some(100), Some(1_000), 2_000), Some(0.0));
    }
}
