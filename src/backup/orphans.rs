//! Uploads left behind: a run killed before its first checkpoint (out of memory, a lost
//! machine, a SIGKILL) leaves a multipart upload that nothing will complete and that
//! costs storage until it is aborted. Each run looks for those of its own source's
//! naming under ARCHIVE_PREFIX and aborts the ones nothing vouches for (see
//! [`checkpoint::is_orphan`]): not the checkpoint's, no live claim.
//!
//! Never fatal: a service without ListMultipartUploads, or a key that may not list or
//! abort, only means nothing is cleaned up, and the log says so.

use serde_json::json;

use crate::backup::chain::{now_ms, Chain};
use crate::backup::checkpoint::{self, Claim};
use crate::io::log;
use crate::naming::archive_time;
use crate::s3::xml::{parse_uploads_page, UploadInProgress};
use crate::s3::{ops, S3Error, S3};

/// Pages of uploads looked at in one run (a thousand each): a bucket with more uploads of
/// one source's naming than this is cleaned up over several runs.
const MAX_PAGES: usize = 10;

/// Aborts this source's orphaned uploads; returns the archive names whose uploads were
/// aborted. `own` is the upload this run writes.
pub fn sweep(
    dst: &S3,
    chain: &Chain<'_>,
    archive_prefix: &str,
    source_bucket: &str,
    own: &str,
) -> Vec<String> {
    let prefix = format!("{archive_prefix}/backup-{source_bucket}-");
    let mut aborted = Vec::new();
    let mut after: Option<(String, String)> = None;
    for _ in 0..MAX_PAGES {
        let page = list_page(dst, &prefix, after.as_ref());
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                skipped(&e);
                return aborted;
            }
        };
        for u in &page.uploads {
            if u.upload_id == own {
                continue;
            }
            let Some(started) = archive_time(&u.key, archive_prefix, source_bucket) else {
                continue;
            };
            let started_ms = u64::try_from(started.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
            match judge(dst, chain, u, started_ms) {
                Ok(true) => match abort(dst, chain, u) {
                    Ok(()) => aborted.push(u.key.clone()),
                    Err(e) => log::warn(
                        "orphan_abort_failed",
                        json!({"archiveName": u.key, "uploadId": u.upload_id, "error": e.to_string()}),
                    ),
                },
                Ok(false) => {}
                Err(e) => log::warn(
                    "orphan_check_failed",
                    json!({"archiveName": u.key, "uploadId": u.upload_id, "error": e.to_string()}),
                ),
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    aborted
}

/// Aborts every multipart upload still open under `prefix` (a composed plan's fragments
/// folder: its shards are done, so an upload left there is a shard run killed before
/// its first checkpoint, or one whose fragment is no longer wanted). Returns how many.
pub fn sweep_all(dst: &S3, prefix: &str) -> usize {
    let mut aborted = 0;
    let mut after: Option<(String, String)> = None;
    for _ in 0..MAX_PAGES {
        let page = match list_page(dst, prefix, after.as_ref()) {
            Ok(p) => p,
            Err(e) => {
                skipped(&e);
                return aborted;
            }
        };
        for u in &page.uploads {
            match dst.call(&ops::abort_multipart_upload(&u.key, &u.upload_id), None) {
                Ok(_) => {
                    aborted += 1;
                    log::warn(
                        "orphan_aborted",
                        json!({"archiveName": u.key, "uploadId": u.upload_id}),
                    );
                }
                Err(e) if e.code() == "NoSuchUpload" => {}
                Err(e) => log::warn(
                    "orphan_abort_failed",
                    json!({"archiveName": u.key, "uploadId": u.upload_id, "error": e.to_string()}),
                ),
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    aborted
}

fn list_page(
    dst: &S3,
    prefix: &str,
    after: Option<&(String, String)>,
) -> Result<crate::s3::xml::UploadsPage, S3Error> {
    let op = ops::list_multipart_uploads(prefix, after.map(|(k, i)| (k.as_str(), i.as_str())));
    let body = dst.call_xml(&op, None)?;
    parse_uploads_page(&body).map_err(|e| S3Error::protocol(e.to_string()))
}

/// Whether `u` is an orphan, judged on its claim, then (since a run that stops writes
/// its checkpoint before it drops its claim) on the checkpoint read after the claim.
fn judge(
    dst: &S3,
    chain: &Chain<'_>,
    u: &UploadInProgress,
    started_ms: u64,
) -> Result<bool, S3Error> {
    let claim_key = Claim::key(&chain.dir, &u.upload_id);
    let claim: Option<Claim> = checkpoint::get(dst, &claim_key, 64 * 1024)?
        // An unreadable claim vouches for nothing; the hour's grace still holds.
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|c: &Claim| c.upload_id == u.upload_id);
    if !checkpoint::is_orphan(&u.upload_id, None, claim.as_ref(), started_ms, now_ms()) {
        return Ok(false);
    }
    let cp = chain.peek_upload_id()?;
    Ok(checkpoint::is_orphan(
        &u.upload_id,
        cp.as_deref(),
        claim.as_ref(),
        started_ms,
        now_ms(),
    ))
}

fn abort(dst: &S3, chain: &Chain<'_>, u: &UploadInProgress) -> Result<(), S3Error> {
    match dst.call(&ops::abort_multipart_upload(&u.key, &u.upload_id), None) {
        Ok(_) => {}
        // Gone meanwhile: completed or aborted by someone else.
        Err(e) if e.status() == Some(404) => return Ok(()),
        Err(e) => return Err(e),
    }
    log::warn(
        "orphan_aborted",
        json!({"archiveName": u.key, "uploadId": u.upload_id,
               "message": "an upload left by an earlier run that stopped before its first checkpoint was aborted"}),
    );
    checkpoint::delete_all(dst, &[Claim::key(&chain.dir, &u.upload_id)])
}

/// The service cannot list uploads (or this key may not): nothing is cleaned up.
fn skipped(e: &S3Error) {
    log::info(
        "orphan_check_skipped",
        json!({"error": e.to_string(),
               "message": "uploads left by killed runs cannot be looked for here; a lifecycle rule that aborts incomplete uploads cleans them up instead"}),
    );
}
