//! The pipeline: list → fetch → archive → upload, one object after another, with
//! memory bounded by the part size. A failure after the upload was created aborts it.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::archive::{choose_method, Archive, SAMPLE_SIZE};
use crate::config::{BucketTarget, Config};
use crate::fetch;
use crate::list::Lister;
use crate::log;
use crate::naming::{archive_key, is_own_archive};
use crate::parts::PartBuffer;
use crate::retry::RetryPolicy;
use crate::s3::{S3Error, S3};
use crate::upload::MultipartUpload;
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
enum Side {
    Source,
    Destination,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Destination => "destination",
        }
    }
}

/// Turns an S3 failure into words a user can act on: which bucket, which key, what to check.
fn s3_failure(
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
        Side::Source => "SOURCE",
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
    excluded: u64,
}

/// What a successful backup reports.
pub struct Summary {
    pub body: Value,
}

pub fn run(config: &Config) -> Result<Summary, BackupError> {
    let started = OffsetDateTime::now_utc();
    let clock = Instant::now();
    let key = archive_key(&config.archive_prefix, &config.source.bucket, started);
    let retries = Rc::new(Cell::new(0));
    let policy = RetryPolicy::new(config.max_retries);
    let timeout = Duration::from_secs(config.timeout_seconds);
    let src = S3::new(
        config.source.clone(),
        config.credentials.clone(),
        timeout,
        policy,
        retries.clone(),
    );
    let dst = S3::new(
        config.dest.clone(),
        config.credentials.clone(),
        timeout,
        policy,
        retries.clone(),
    );
    log::info(
        "backup_start",
        json!({"sourceBucket": config.source.bucket, "source": config.source.endpoint.to_string(),
               "destinationBucket": config.dest.bucket, "destination": config.dest.endpoint.to_string(),
               "archiveName": key, "partSize": config.part_size}),
    );

    // The first page and the destination check come before the upload exists: a
    // missing or unreadable bucket fails with nothing to clean up.
    let mut lister = Lister::new(&src);
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
        "excludedArchives": progress.excluded,
        "retries": retries.get(),
    });
    log::info("backup_done", body.clone());
    Ok(Summary { body })
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
    let same_bucket = config.source.bucket == config.dest.bucket
        && config.source.endpoint == config.dest.endpoint;
    let mut archive = Archive::new(buffer.clone(), config.compression_level);
    let mut page = Some(first);
    while let Some(objects) = page {
        for obj in &objects {
            if same_bucket
                && is_own_archive(&obj.key, &config.archive_prefix, &config.source.bucket)
            {
                progress.excluded += 1;
                continue;
            }
            copy_object(config, src, obj, &mut archive, buffer, upload, progress)?;
        }
        page = lister
            .next_page()
            .map_err(|e| s3_failure(Side::Source, &config.source, "listing objects", None, &e))?;
    }
    let entries = archive.entries();
    let renamed = archive.renamed().len();
    archive
        .finish()
        .map_err(|e| internal("ArchiveError", format!("finishing the archive failed: {e}")))?;
    log::info(
        "archive_finished",
        json!({"entries": entries, "renamed": renamed}),
    );
    flush_parts(config, buffer, upload)?;
    // The last part may be short; an archive smaller than one part is a single part.
    let rest = buffer.take_rest();
    upload_part(config, upload, &rest)
}

fn upload_part(
    config: &Config,
    upload: &mut MultipartUpload<'_>,
    data: &[u8],
) -> Result<(), BackupError> {
    let key = upload.key.clone();
    upload.upload_part(data).map_err(|e| {
        s3_failure(
            Side::Destination,
            &config.dest,
            "uploading a part",
            Some(&key),
            &e,
        )
    })?;
    log::debug(
        "part_uploaded",
        json!({"part": upload.parts(), "bytes": data.len()}),
    );
    Ok(())
}

fn flush_parts(
    config: &Config,
    buffer: &PartBuffer,
    upload: &mut MultipartUpload<'_>,
) -> Result<(), BackupError> {
    while let Some(part) = buffer.take_part(config.part_size) {
        upload_part(config, upload, &part)?;
    }
    Ok(())
}

fn copy_object(
    config: &Config,
    src: &S3,
    obj: &ListedObject,
    archive: &mut Archive,
    buffer: &PartBuffer,
    upload: &mut MultipartUpload<'_>,
    progress: &mut Progress,
) -> Result<(), BackupError> {
    let key = obj.key.as_str();
    let archive_err = |e: crate::archive::ArchiveError| {
        internal("ArchiveError", format!("archiving '{key}': {e}"))
    };
    let fetch_err = |e: S3Error| {
        s3_failure(
            Side::Source,
            &config.source,
            "reading an object",
            Some(key),
            &e,
        )
    };
    if key.ends_with('/') && obj.size == 0 {
        archive
            .add_directory(key, &obj.last_modified)
            .map_err(archive_err)?;
        progress.files += 1;
        return Ok(());
    }
    let Some(mut stream) = fetch::open(src, obj, config.max_retries).map_err(fetch_err)? else {
        log::warn(
            "skipped",
            json!({"key": key, "reason": "deleted after it was listed"}),
        );
        progress.skipped.push(key.to_string());
        return Ok(());
    };
    // The first bytes decide the entry's method, so they are read before it starts.
    let mut head = Vec::new();
    while head.len() < SAMPLE_SIZE {
        match stream.next_chunk().map_err(fetch_err)? {
            Some(chunk) if head.is_empty() => head = chunk,
            Some(chunk) => head.extend_from_slice(&chunk),
            None => break,
        }
    }
    let method = choose_method(
        key,
        obj.size,
        &head[..head.len().min(SAMPLE_SIZE)],
        config.compression,
    );
    let name = archive
        .start_file(key, obj.size, &obj.last_modified, method)
        .map_err(archive_err)?;
    archive.write(&head).map_err(archive_err)?;
    let mut read = head.len() as u64;
    drop(head);
    flush_parts(config, buffer, upload)?;
    while let Some(chunk) = stream.next_chunk().map_err(fetch_err)? {
        read += chunk.len() as u64;
        archive.write(&chunk).map_err(archive_err)?;
        flush_parts(config, buffer, upload)?;
    }
    // `next_chunk` ends only at exactly the listed size; this guards that promise.
    if read != obj.size {
        return Err(internal(
            "SizeMismatch",
            format!("'{key}' gave {read} bytes but was listed with {}", obj.size),
        ));
    }
    progress.files += 1;
    progress.bytes_read += read;
    log::debug(
        "archived",
        json!({"key": key, "entry": name, "bytes": read, "method": format!("{method:?}")}),
    );
    Ok(())
}
