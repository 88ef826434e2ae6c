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
pub mod dry_run;
pub mod fetch;
pub mod list;
pub mod parts;
pub mod pipeline;
pub mod retention;
pub mod upload;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

use crate::config::Config;
use crate::error::{s3_failure, Failure, Kind, Side};
use crate::io::log;
use crate::model::{hundredths, BackupReport, DryRunReport, ListedObject};
use crate::naming::archive_key;
use crate::s3::{clients, S3};
use crate::select::{Selection, Verdict};
use list::Lister;
use parts::PartBuffer;
use pipeline::Tallies;
use upload::MultipartUpload;

/// What a backup answers: the archive written, or what a dry run would write.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Outcome {
    Done(BackupReport),
    DryRun(DryRunReport),
}

/// One backup, from the first listing page to the report.
pub fn run(config: &Config) -> Result<Outcome, Failure> {
    let started = OffsetDateTime::now_utc();
    let clock = Instant::now();
    let key = archive_key(&config.archive_prefix, &config.source.bucket, started);
    let retries = Rc::new(Cell::new(0));
    let (src, dst) = clients(config, &retries);
    log::info(
        "backup_start",
        json!({"sourceBucket": config.source.bucket, "source": config.source.endpoint.to_string(),
               "destinationBucket": config.dest.bucket, "destination": config.dest.endpoint.to_string(),
               "archiveName": key, "partSize": config.part_size}),
    );
    let mut lister = Lister::new(&src, &config.include_prefixes);
    let first = first_page(config, &mut lister, &dst)?;
    if config.dry_run {
        return dry_run::run(config, &key, &mut lister, first, clock).map(Outcome::DryRun);
    }
    let planned = plan_equal_parts(config, &src)?;
    let config = planned.as_ref().unwrap_or(config);
    let mut upload = MultipartUpload::create(&dst, &key, "application/zip").map_err(|e| {
        s3_failure(
            Side::Destination,
            &config.dest,
            "creating the multipart upload",
            Some(&key),
            &e,
        )
    })?;
    let buffer = PartBuffer::new(config.part_size);
    let mut tallies = Tallies::default();
    let written = pipeline::archive_all(
        config,
        &src,
        &mut lister,
        first,
        &buffer,
        &mut upload,
        &mut tallies,
    );
    complete_or_abort(config, &mut upload, written)?;
    let (deleted, retention_error) = apply_retention(config, &dst, &key, started);
    let report = BackupReport {
        message: "Backup completed successfully".into(),
        source_bucket: config.source.bucket.clone(),
        destination_bucket: config.dest.bucket.clone(),
        archive_name: key,
        files_backed_up: tallies.files,
        archive_size: buffer.total(),
        duration_seconds: hundredths(clock.elapsed().as_secs_f64()),
        bytes_read: tallies.bytes_read,
        parts: upload.parts() as u64,
        part_size: config.part_size,
        skipped: tallies.skipped,
        changed: tallies.changed,
        excluded_archives: tallies.left_out.own_archives,
        excluded_by_filter: tallies.left_out.excluded,
        retries: retries.get(),
        deleted,
        retention_error,
    };
    log::info(
        "backup_done",
        serde_json::to_value(&report).unwrap_or_default(),
    );
    Ok(Outcome::Done(report))
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
    upload::check_bucket(dst).map_err(|e| {
        s3_failure(
            Side::Destination,
            &config.dest,
            "checking the bucket",
            None,
            &e,
        )
    })?;
    Ok(first)
}

/// With equal parts (Cloudflare R2) and no PART_SIZE, parts cannot grow: one listing
/// pass first sizes them from the total, so that the archive fits in 10,000 parts.
fn plan_equal_parts(config: &Config, src: &S3) -> Result<Option<Config>, Failure> {
    if !config.equal_parts || config.part_size_fixed {
        return Ok(None);
    }
    let selection = Selection::new(config);
    let mut lister = Lister::new(src, &config.include_prefixes);
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
fn complete_or_abort(
    config: &Config,
    upload: &mut MultipartUpload<'_>,
    written: Result<(), Failure>,
) -> Result<(), Failure> {
    let result = written.and_then(|()| {
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
    let Err(err) = result else {
        return Ok(());
    };
    let key = upload.key.clone();
    if upload.is_unsettled() {
        log::warn("upload_unsettled", json!({"archiveName": key}));
        return Err(err.and(&format!(
            "; the upload was not aborted, since the service may still be completing it: \
             look for '{key}' later, or abort the upload {} with AbortMultipartUpload",
            upload.upload_id()
        )));
    }
    Err(match upload.abort() {
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
    })
}

/// Retention runs only after a successful backup; its failure does not undo the backup,
/// it is reported beside it. Returns the keys deleted, and the failure if any.
fn apply_retention(
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
