//! The pipeline: list → fetch → archive → upload, one object after another, with
//! memory bounded by the part size. A failure after the upload was created aborts it.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::archive::{choose_method, Archive, SAMPLE_SIZE};
use crate::config::{BucketTarget, Config};
use crate::fetch::Download;
use crate::http;
use crate::list::Lister;
use crate::log;
use crate::naming::{archive_key, is_own_archive};
use crate::parts::{part_size_for, PartBuffer};
use crate::retry::RetryPolicy;
use crate::s3::{S3Error, S3};
use crate::upload::{MultipartUpload, PartUpload};
use crate::xml::ListedObject;

/// A failed backup, as the response reports it.
#[derive(Debug, Clone)]
pub struct BackupError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for BackupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Side {
    Source,
    Destination,
    /// Where a restore writes (on SOURCE_ENDPOINT).
    Target,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Destination => "destination",
            Side::Target => "target",
        }
    }
}

/// Turns an S3 failure into words a user can act on: which bucket, which key, what to check.
pub(crate) fn s3_failure(
    side: Side,
    target: &BucketTarget,
    doing: &str,
    key: Option<&str>,
    e: &S3Error,
) -> BackupError {
    let side_name = side.name();
    let bucket = &target.bucket;
    let at_key = key.map(|k| format!(", key '{k}'")).unwrap_or_default();
    let var = match side {
        Side::Source | Side::Target => "SOURCE",
        Side::Destination => "DEST",
    };
    let denied = matches!(
        e.code(),
        "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch"
    ) || matches!(e.status(), Some(401 | 403));
    let missing = e.code() == "NoSuchBucket" || (key.is_none() && e.status() == Some(404));
    let (status, code, message) = if denied {
        (
            403,
            "AccessDenied".to_string(),
            format!(
                "access denied to the {side_name} bucket '{bucket}' while {doing}{at_key} ({e}); \
                 check SPACES_KEY and SPACES_SECRET, and that the key may access this bucket"
            ),
        )
    } else if missing {
        (
            404,
            "NoSuchBucket".to_string(),
            format!(
                "the {side_name} bucket '{bucket}' does not exist at {} ({e}); check {var}_BUCKET and {var}_ENDPOINT",
                target.endpoint
            ),
        )
    } else if let S3Error::Transport(_) = e {
        (
            502,
            "NetworkError".to_string(),
            format!(
                "could not reach the {side_name} endpoint {} while {doing}{at_key}: {e}; check {var}_ENDPOINT",
                target.endpoint
            ),
        )
    } else {
        (
            502,
            e.code().to_string(),
            format!("{doing} failed for the {side_name} bucket '{bucket}'{at_key}: {e}"),
        )
    };
    BackupError {
        status,
        code,
        message,
    }
}

fn internal(code: &str, message: String) -> BackupError {
    BackupError {
        status: 500,
        code: code.to_string(),
        message,
    }
}

#[derive(Default)]
struct Progress {
    files: u64,
    bytes_read: u64,
    skipped: Vec<String>,
    /// Rewritten between the listing and their GET: archived as they were at the GET.
    changed: Vec<String>,
    excluded: u64,
    /// Left out by EXCLUDE.
    filtered: u64,
}

/// What a successful backup reports.
pub struct Summary {
    pub body: Value,
}

/// S3 clients for the source and the destination, counting retries in `retries`.
pub(crate) fn clients(config: &Config, retries: &Rc<Cell<u64>>) -> (S3, S3) {
    let policy = RetryPolicy::new(config.max_retries);
    let timeout = Duration::from_secs(config.timeout_seconds);
    let client = |target: &crate::config::BucketTarget| {
        S3::new(
            target.clone(),
            config.credentials.clone(),
            timeout,
            policy,
            retries.clone(),
        )
    };
    (client(&config.source), client(&config.dest))
}

pub fn run(config: &Config) -> Result<Summary, BackupError> {
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

    // The first page and the destination check come before the upload exists: a
    // missing or unreadable bucket fails with nothing to clean up.
    let mut lister = Lister::new(&src, &config.include_prefixes);
    let first = lister
        .next_page()
        .map_err(|e| s3_failure(Side::Source, &config.source, "listing objects", None, &e))?
        .unwrap_or_default();
    crate::upload::check_bucket(&dst).map_err(|e| {
        s3_failure(
            Side::Destination,
            &config.dest,
            "checking the bucket",
            None,
            &e,
        )
    })?;
    if config.dry_run {
        return dry_run(config, &key, &mut lister, first, clock);
    }
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
    let mut progress = Progress::default();
    let result = archive_all(
        config,
        &src,
        &mut lister,
        first,
        &buffer,
        &mut upload,
        &mut progress,
    )
    .and_then(|()| {
        upload.complete().map_err(|e| {
            s3_failure(
                Side::Destination,
                &config.dest,
                "completing the multipart upload",
                Some(&key),
                &e,
            )
        })
    });
    if let Err(mut err) = result {
        match upload.abort() {
            Ok(()) => {
                err.message
                    .push_str("; the multipart upload was aborted, so no partial archive was left");
                log::warn("upload_aborted", json!({"archiveName": key}));
            }
            Err(e) => {
                err.message.push_str(&format!(
                    "; aborting the multipart upload of '{key}' also failed ({e}): remove it with AbortMultipartUpload or a lifecycle rule"
                ));
                log::error(
                    "abort_failed",
                    json!({"archiveName": key, "error": e.to_string()}),
                );
            }
        }
        return Err(err);
    }

    // Retention runs only after a successful backup; its failure does not undo the
    // backup, it is reported beside it.
    let (deleted, retention_error) = match crate::retention::apply(
        &dst,
        &config.archive_prefix,
        &config.source.bucket,
        config.keep_last,
        config.keep_days,
        started,
    ) {
        Ok(keys) => (keys, None),
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
    };
    if !deleted.is_empty() {
        log::info("retention", json!({"deleted": deleted}));
    }
    let duration = clock.elapsed().as_secs_f64();
    let body = json!({
        "message": "Backup completed successfully",
        "sourceBucket": config.source.bucket,
        "destinationBucket": config.dest.bucket,
        "archiveName": key,
        "filesBackedUp": progress.files,
        "archiveSize": buffer.total(),
        "durationSeconds": (duration * 100.0).round() / 100.0,
        "bytesRead": progress.bytes_read,
        "parts": upload.parts(),
        "partSize": config.part_size,
        "skipped": progress.skipped,
        "changed": progress.changed,
        "excludedArchives": progress.excluded,
        "excludedByFilter": progress.filtered,
        "retries": retries.get(),
        "deleted": deleted,
    });
    let mut body = body;
    if let Some(message) = retention_error {
        body["retentionError"] = json!(message);
    }
    log::info("backup_done", body.clone());
    Ok(Summary { body })
}

/// How often a running backup reports its progress.
const PROGRESS_EVERY_NANOS: u64 = 1_000_000_000;

/// How many keys a dry run names.
const DRY_RUN_KEYS: usize = 100;

/// DRY_RUN: the whole listing, filtered as a backup would filter it, counted; nothing is
/// read or written beyond the listing and the destination check.
fn dry_run(
    config: &Config,
    key: &str,
    lister: &mut Lister<'_>,
    first: Vec<ListedObject>,
    clock: Instant,
) -> Result<Summary, BackupError> {
    let same_bucket = config.source.bucket == config.dest.bucket
        && config.source.endpoint == config.dest.endpoint;
    let (mut files, mut bytes, mut excluded, mut filtered) = (0u64, 0u64, 0u64, 0u64);
    let mut keys = Vec::new();
    let mut page = first;
    loop {
        for obj in page {
            if same_bucket
                && is_own_archive(&obj.key, &config.archive_prefix, &config.source.bucket)
            {
                excluded += 1;
            } else if config.exclude.excludes(&obj.key) {
                filtered += 1;
            } else {
                files += 1;
                bytes += obj.size;
                if keys.len() < DRY_RUN_KEYS {
                    keys.push(obj.key);
                }
            }
        }
        page = match lister.next_page() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => {
                return Err(s3_failure(
                    Side::Source,
                    &config.source,
                    "listing objects",
                    None,
                    &e,
                ))
            }
        };
    }
    let body = json!({
        "message": "Dry run: nothing was written",
        "dryRun": true,
        "sourceBucket": config.source.bucket,
        "destinationBucket": config.dest.bucket,
        "archiveName": key,
        "filesToBackUp": files,
        "bytesToRead": bytes,
        "firstKeys": keys,
        "excludedArchives": excluded,
        "excludedByFilter": filtered,
        "durationSeconds": (clock.elapsed().as_secs_f64() * 100.0).round() / 100.0,
    });
    log::info("dry_run_done", body.clone());
    Ok(Summary { body })
}

/// The event loop: GETs in flight ahead of the archive, the archive fed in listing order,
/// parts uploaded while the next ones fill. Nothing here blocks except on `wasi:io/poll`
/// when no request can move (and on listing pages, a few per thousand objects).
struct Pipeline<'a, 'l, 'u> {
    config: &'a Config,
    src: &'a S3,
    lister: &'a mut Lister<'l>,
    listed: std::collections::VecDeque<ListedObject>,
    /// Objects and bytes listed so far, for progress.
    listed_objects: u64,
    listed_bytes: u64,
    /// When the last progress event went out (monotonic nanoseconds).
    last_progress: u64,
    started: u64,
    listing_done: bool,
    downloads: std::collections::VecDeque<Download>,
    entry_started: bool,
    archive: Option<Archive>,
    /// The archive's end (manifest, central directory), written out after the last entry.
    tail: std::collections::VecDeque<Vec<u8>>,
    buffer: &'a PartBuffer,
    upload: &'a mut MultipartUpload<'u>,
    parts: Vec<PartUpload>,
    /// Bytes of parts that may be in flight at once; at least one part always may.
    upload_budget: u64,
    per_download: usize,
    progress: &'a mut Progress,
}

fn archive_all(
    config: &Config,
    src: &S3,
    lister: &mut Lister<'_>,
    first: Vec<ListedObject>,
    buffer: &PartBuffer,
    upload: &mut MultipartUpload<'_>,
    progress: &mut Progress,
) -> Result<(), BackupError> {
    let mut p = Pipeline {
        config,
        src,
        lister,
        listed_objects: first.len() as u64,
        listed_bytes: first.iter().map(|o| o.size).sum(),
        last_progress: http::now_nanos(),
        started: http::now_nanos(),
        listed: first.into(),
        listing_done: false,
        downloads: Default::default(),
        entry_started: false,
        archive: Some(Archive::new(buffer.clone(), config.compression_level)),
        tail: Default::default(),
        buffer,
        upload,
        parts: Vec::new(),
        upload_budget: config.upload_budget(),
        per_download: (crate::config::PREFETCH_BYTES as usize / config.concurrency)
            .max(SAMPLE_SIZE * 2),
        progress,
    };
    let result = p.run();
    if result.is_err() {
        for part in p.parts.drain(..) {
            part.settle();
        }
    }
    result
}

impl Pipeline<'_, '_, '_> {
    fn source_err(&self, doing: &str, key: Option<&str>, e: &S3Error) -> BackupError {
        s3_failure(Side::Source, &self.config.source, doing, key, e)
    }

    fn dest_err(&self, doing: &str, e: &S3Error) -> BackupError {
        s3_failure(
            Side::Destination,
            &self.config.dest,
            doing,
            Some(&self.upload.key),
            e,
        )
    }

    fn run(&mut self) -> Result<(), BackupError> {
        loop {
            self.report_progress(false);
            let mut moved = self.refill()?;
            moved |= self.step_downloads()?;
            moved |= self.feed_archive()?;
            moved |= self.step_uploads()?;
            if self.archive.is_some()
                && self.listing_done
                && self.listed.is_empty()
                && self.downloads.is_empty()
            {
                self.finish_archive()?;
                moved = true;
            }
            if self.archive.is_none() {
                moved |= self.write_tail()?;
            }
            if self.archive.is_none() && self.tail.is_empty() {
                moved |= self.start_parts(true)?;
                if self.parts.is_empty() && self.buffer.is_empty() {
                    self.report_progress(true);
                    return Ok(());
                }
            }
            if !moved {
                let mut pollables = Vec::new();
                // A download with a full buffer waits for the archive to drain it: waking
                // on its socket then would only spin.
                for d in &self.downloads {
                    d.pollables(d.buffered() < self.per_download, &mut pollables);
                }
                for part in &self.parts {
                    part.pollables(&mut pollables);
                }
                self.lister.pollables(&mut pollables);
                http::wait_any(&pollables);
            }
        }
    }

    fn count_listed(&mut self, page: &[ListedObject]) {
        self.listed_objects += page.len() as u64;
        self.listed_bytes += page.iter().map(|o| o.size).sum::<u64>();
    }

    /// A `progress` event about once a second (and with `now`): what a terminal shows as
    /// a progress bar, and what log collectors keep.
    fn report_progress(&mut self, now: bool) {
        let t = http::now_nanos();
        if !now && t.saturating_sub(self.last_progress) < PROGRESS_EVERY_NANOS {
            return;
        }
        self.last_progress = t;
        log::info(
            "progress",
            json!({
                "objects": self.progress.files,
                "bytesRead": self.progress.bytes_read,
                "listedObjects": self.listed_objects,
                "listedBytes": self.listed_bytes,
                "listingDone": self.listing_done || self.lister.is_done(),
                "archiveBytes": self.buffer.total(),
                "partsStarted": self.upload.started(),
                "elapsedSeconds": (t.saturating_sub(self.started) / 10_000_000) as f64 / 100.0,
            }),
        );
    }

    /// Starts GETs for the next listed objects, up to CONCURRENCY in flight.
    fn refill(&mut self) -> Result<bool, BackupError> {
        let mut moved = false;
        while self.downloads.len() < self.config.concurrency {
            let Some(obj) = self.next_object()? else {
                break;
            };
            let same_bucket = self.config.source.bucket == self.config.dest.bucket
                && self.config.source.endpoint == self.config.dest.endpoint;
            if same_bucket
                && is_own_archive(
                    &obj.key,
                    &self.config.archive_prefix,
                    &self.config.source.bucket,
                )
            {
                self.progress.excluded += 1;
                continue;
            }
            if self.config.exclude.excludes(&obj.key) {
                self.progress.filtered += 1;
                continue;
            }
            let d = Download::start(self.src, obj)
                .map_err(|e| self.source_err("reading an object", None, &e))?;
            self.downloads.push_back(d);
            moved = true;
        }
        Ok(moved)
    }

    /// The next listed object. The following page is fetched ahead once this one is half
    /// used, so GETs never wait on the listing; only when it is late does this block.
    fn next_object(&mut self) -> Result<Option<ListedObject>, BackupError> {
        loop {
            if self.listed.len() < 500 {
                self.lister.prefetch();
                match self.lister.poll() {
                    Ok(Some(page)) => {
                        self.count_listed(&page);
                        self.listed.extend(page);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(self.source_err("listing objects", None, &e)),
                }
            }
            if let Some(obj) = self.listed.pop_front() {
                return Ok(Some(obj));
            }
            if self.lister.is_done() {
                self.listing_done = true;
                return Ok(None);
            }
            if !self.downloads.is_empty() {
                // Work is in hand: come back when the page has arrived.
                return Ok(None);
            }
            match self.lister.next_page() {
                Ok(Some(page)) => {
                    self.count_listed(&page);
                    self.listed = page.into();
                }
                Ok(None) => {}
                Err(e) => return Err(self.source_err("listing objects", None, &e)),
            }
        }
    }

    fn step_downloads(&mut self) -> Result<bool, BackupError> {
        let mut moved = false;
        for d in &mut self.downloads {
            let budget = self.per_download.saturating_sub(d.buffered());
            match d.step(self.src, budget) {
                Ok(m) => moved |= m,
                Err(e) => {
                    return Err(s3_failure(
                        Side::Source,
                        &self.config.source,
                        "reading an object",
                        Some(&d.obj.key),
                        &e,
                    ))
                }
            }
        }
        Ok(moved)
    }

    /// The next part's size: fixed, or growing with the part number.
    fn next_part_size(&self) -> u64 {
        part_size_for(
            self.upload.started() + 1,
            self.config.part_size,
            self.config.part_size_fixed,
        )
    }

    /// Fails cleanly, before the host's cap would stop the component mid-write, when
    /// parts of `next_part` bytes and the archive's end held so far no longer fit in
    /// MAX_MEMORY.
    fn check_memory(&self, next_part: u64) -> Result<(), BackupError> {
        let held = self.archive.as_ref().map_or(0, |a| a.held_bytes() as u64);
        let need = self.config.memory_needed(next_part, held);
        if need <= self.config.max_memory {
            return Ok(());
        }
        Err(internal(
            "MemoryLimit",
            format!(
                "the archive outgrew MAX_MEMORY ({} bytes): after {} bytes and {} entries, \
                 parts of {next_part} bytes and {held} bytes of central directory and manifest \
                 need about {need}; raise MAX_MEMORY",
                self.config.max_memory,
                self.buffer.total(),
                self.archive.as_ref().map_or(0, Archive::entries),
            ),
        ))
    }

    /// True while a full part waits for an upload slot: the archive must not grow.
    fn backpressure(&self) -> bool {
        self.buffer.part_ready() && !self.upload_slot_free()
    }

    /// Another part may go out: memory stays at the upload budget (or one part, when
    /// parts have grown past it).
    fn upload_slot_free(&self) -> bool {
        let in_flight: u64 = self.parts.iter().map(|p| p.len() as u64).sum();
        self.parts.is_empty() || in_flight + self.next_part_size() <= self.upload_budget
    }

    /// Writes the head download's bytes into the archive, in listing order.
    fn feed_archive(&mut self) -> Result<bool, BackupError> {
        let mut moved = false;
        let archive_err = |key: &str, e: crate::archive::ArchiveError| {
            internal("ArchiveError", format!("archiving '{key}': {e}"))
        };
        while let Some(head) = self.downloads.front_mut() {
            let Some(archive) = self.archive.as_mut() else {
                break;
            };
            let obj = &head.obj;
            if head.missing {
                log::warn(
                    "skipped",
                    json!({"key": obj.key, "reason": "deleted after it was listed"}),
                );
                archive
                    .note_skipped(obj, "deleted after it was listed")
                    .map_err(|e| archive_err(&obj.key, e))?;
                self.progress.skipped.push(obj.key.clone());
                self.downloads.pop_front();
                moved = true;
                continue;
            }
            if Download::is_directory(obj) {
                // Its GET brings the marker's Content-Type and metadata for the manifest.
                if !head.finished() {
                    break;
                }
                archive
                    .add_directory(obj, &head.meta)
                    .map_err(|e| archive_err(&obj.key, e))?;
                self.progress.files += 1;
                self.downloads.pop_front();
                moved = true;
                continue;
            }
            if !self.entry_started {
                // The first bytes decide the entry's method, so they come before it starts.
                if head.buffered() < SAMPLE_SIZE && !head.finished() {
                    break;
                }
                let method = choose_method(
                    &obj.key,
                    obj.size,
                    &head.sample(SAMPLE_SIZE),
                    self.config.compression,
                );
                let name = archive
                    .start_file(obj, method)
                    .map_err(|e| archive_err(&obj.key, e))?;
                log::debug(
                    "archiving",
                    json!({"key": obj.key, "entry": name, "method": format!("{method:?}")}),
                );
                self.entry_started = true;
                moved = true;
            }
            while !self.backpressure() {
                let (Some(head), Some(archive)) =
                    (self.downloads.front_mut(), self.archive.as_mut())
                else {
                    break;
                };
                let Some(chunk) = head.pop_chunk() else {
                    break;
                };
                archive
                    .write(&chunk)
                    .map_err(|e| archive_err(&head.obj.key, e))?;
                moved = true;
                self.start_parts(false)?;
            }
            let Some(head) = self.downloads.front_mut() else {
                break;
            };
            if head.finished() && head.buffered() == 0 {
                // `Download` finishes only at exactly the listed size; this guards it.
                if head.received() != head.obj.size {
                    return Err(internal(
                        "SizeMismatch",
                        format!(
                            "'{}' gave {} bytes but was listed with {}",
                            head.obj.key,
                            head.received(),
                            head.obj.size
                        ),
                    ));
                }
                if let Some(archive) = self.archive.as_mut() {
                    archive
                        .finish_file(&head.obj, &head.meta)
                        .map_err(|e| archive_err(&head.obj.key, e))?;
                }
                if head.changed {
                    self.progress.changed.push(head.obj.key.clone());
                }
                self.progress.files += 1;
                self.progress.bytes_read += head.received();
                if self.progress.files.is_multiple_of(4096) {
                    // The archive's end grows with every entry, even when parts do not.
                    self.check_memory(self.next_part_size())?;
                }
                self.downloads.pop_front();
                self.entry_started = false;
                moved = true;
                continue;
            }
            break;
        }
        Ok(moved)
    }

    /// Starts uploads for full parts while slots are free; with `last`, also the rest.
    fn start_parts(&mut self, last: bool) -> Result<bool, BackupError> {
        let mut moved = false;
        while self.upload_slot_free() {
            let data = match self.buffer.take_part() {
                Some(d) => d,
                // The last part may be short; an archive smaller than one part is one part.
                None if last && (!self.buffer.is_empty() || self.upload.started() == 0) => {
                    self.buffer.take_rest()
                }
                None => break,
            };
            let part = self
                .upload
                .start_part(data)
                .map_err(|e| self.dest_err("uploading a part", &e))?;
            let next = self.next_part_size();
            self.check_memory(next)?;
            self.buffer.set_part_size(next);
            log::debug(
                "part_started",
                json!({"part": part.number, "bytes": part.len()}),
            );
            self.parts.push(part);
            moved = true;
            if last && self.buffer.is_empty() {
                break;
            }
        }
        Ok(moved)
    }

    fn step_uploads(&mut self) -> Result<bool, BackupError> {
        let mut moved = false;
        let mut i = 0;
        while i < self.parts.len() {
            match self.upload.step(&mut self.parts[i]) {
                Ok(true) => {
                    let part = self.parts.swap_remove(i);
                    log::debug("part_uploaded", json!({"part": part.number}));
                    moved = true;
                }
                Ok(false) => i += 1,
                Err(e) => return Err(self.dest_err("uploading a part", &e)),
            }
        }
        if self.archive.is_some() {
            moved |= self.start_parts(false)?;
        }
        Ok(moved)
    }

    fn finish_archive(&mut self) -> Result<(), BackupError> {
        if let Some(archive) = self.archive.take() {
            let entries = archive.entries();
            let renamed = archive.renamed();
            let held = archive.held_bytes();
            self.tail = archive.finish().map_err(|e| {
                internal("ArchiveError", format!("finishing the archive failed: {e}"))
            })?;
            log::info(
                "archive_finished",
                json!({"entries": entries, "renamed": renamed, "directoryBytes": held}),
            );
        }
        Ok(())
    }

    /// Writes the archive's end into parts, as upload slots allow.
    fn write_tail(&mut self) -> Result<bool, BackupError> {
        let mut moved = false;
        while !self.backpressure() {
            let Some(block) = self.tail.pop_front() else {
                break;
            };
            let mut sink = self.buffer.clone();
            std::io::Write::write_all(&mut sink, &block).map_err(|e| {
                internal("ArchiveError", format!("finishing the archive failed: {e}"))
            })?;
            self.start_parts(false)?;
            moved = true;
        }
        Ok(moved)
    }
}
