//! A backup too big for one upload: more than MAX_PARTS parts of the largest size the
//! memory budget allows (about 1.8 TB with 10,000 parts and 1 GiB). One upload cannot
//! grow its parts without growing memory, so such a backup is planned as fragments when
//! it begins, writes them one after another (each is a shard of the plan, chained
//! across runs like any backup), and is composed into the one archive at the end.
//!
//! ```text
//! new backup ──► weigh ──► fits: one upload, as always
//!                   └────► too big: plan (sequential) ──► fragment 1..N ──► compose
//! ```
//!
//! The plan is in the destination, so every later run (the next scheduled trigger, a
//! re-invocation) finds it and goes on with the first fragment not yet complete.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::backup::checkpoint::{self, fingerprint, state_dir};
use crate::backup::list::Lister;
use crate::backup::{self, chain, Outcome};
use crate::config::{Config, ShardIndex};
use crate::error::{s3_failure, Failure, Kind, Side};
use crate::io::{http, log};
use crate::model::{BackupReport, ListedObject};
use crate::s3::{ops, S3};
use crate::select::{Selection, Verdict};

use super::plan::{Plan, Planner, MAX_SHARDS};

/// Fragments are cut to a half of what one upload holds: a bucket that grows by as much
/// again while (or since) it was weighed still fits.
const FILL_DIVISOR: u64 = 2;

/// How many fragments a backup of `estimate` bytes needs, when one upload holds
/// `capacity`: `None` when one upload is enough.
pub fn fragments_for(estimate: u64, capacity: u64) -> Option<u32> {
    let per_fragment = (capacity / FILL_DIVISOR).max(1);
    (estimate > per_fragment).then(|| {
        estimate
            .div_ceil(per_fragment)
            .clamp(2, u64::from(MAX_SHARDS)) as u32
    })
}

/// The stored plan of a backup written as fragments one after another, if there is one
/// (a plan of parallel shards is theirs: a whole backup leaves it alone).
/// One made with other settings is refused, or abandoned with DISCARD_CHECKPOINT (its
/// uploads aborted, its fragments and state deleted), and the backup begins anew.
pub fn stored(config: &Config, dst: &S3) -> Result<Option<Plan>, Failure> {
    let dir = state_dir(&config.archive_prefix, &config.source.bucket);
    let plan = match super::load_plan(config, dst, &dir) {
        Ok(plan) => plan.filter(|p| p.sequential),
        // Damaged: nothing of it can be used, and DISCARD_CHECKPOINT says to start anew.
        Err(e) if e.kind == Kind::Checkpoint && config.discard_checkpoint => {
            let key = Plan::key(&dir);
            checkpoint::delete_all(dst, std::slice::from_ref(&key))
                .map_err(|e| super::dst_failure(config, "removing a damaged plan", &key, &e))?;
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let Some(plan) = plan else {
        return Ok(None);
    };
    if plan.fingerprint == fingerprint(config) {
        return Ok(Some(plan));
    }
    if !config.discard_checkpoint {
        return Err(Failure::new(
            Kind::Checkpoint,
            format!(
                "an unfinished backup ('{}', written as {} fragments) was planned at '{}' with other \
                 settings (buckets, endpoints, ARCHIVE_PREFIX, filters, COMPRESSION, PART_SIZE or \
                 EQUAL_PARTS): run again with the settings it was started with, or set \
                 DISCARD_CHECKPOINT=true to abandon it (its uploads are aborted, its fragments deleted)",
                plan.archive_name,
                plan.shards.len(),
                Plan::key(&dir)
            ),
        ));
    }
    super::abandon_plan(config, dst, &plan, &dir)?;
    log::warn(
        "plan_discarded",
        json!({"planKey": Plan::key(&dir), "archiveName": plan.archive_name,
               "message": "DISCARD_CHECKPOINT: the unfinished fragments of the earlier backup were removed"}),
    );
    Ok(None)
}

/// What weighing a new backup found.
pub enum Weighed {
    /// One upload holds it: the backup goes on as always.
    Fits,
    /// It is written as `fragments`, planned from `planner`'s weights.
    TooBig {
        planner: Planner,
        planned_from: String,
        fragments: u32,
    },
    /// The listing pass ran out of this run's time; where it stopped is stored
    /// (`weigh.json`), and the next run goes on from there.
    Unfinished { objects: u64, bytes: u64 },
}

/// A listing pass that did not finish in its run, kept in the state folder.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Weighing {
    fingerprint: String,
    /// The last key listed.
    after: String,
    planner: Planner,
}

/// The largest `weigh.json` read back (4,096 boundary keys of up to 1 KiB, with room).
const MAX_WEIGHING_BYTES: usize = 8 * 1024 * 1024;

fn weighing_key(config: &Config) -> String {
    format!(
        "{}weigh.json",
        state_dir(&config.archive_prefix, &config.source.bucket)
    )
}

/// Pages a weighing keeps for the backup that follows, so a bucket of up to this many
/// thousand keys is listed once (about 2 MB; beyond, the backup lists the rest again).
const KEEP_PAGES: usize = 10;

/// Weighs a new backup before its upload is made: by the newest archive's size (one
/// listing of the archives), else by the source itself. `first` is the run's first
/// page and `lister` its listing after it; a listing pass goes on from there, keeping
/// its first pages for the backup, and stops at `stop_at` (nanoseconds) to go on in
/// the next run, so a bucket of millions of keys is weighed across runs too.
pub fn weigh<'a>(
    config: &Config,
    src: &'a S3,
    dst: &S3,
    first: &[ListedObject],
    lister: &mut Lister<'a>,
    stop_at: Option<u64>,
) -> Result<Weighed, Failure> {
    let capacity = config.upload_capacity();
    let selection = Selection::new(config);
    let decide = |planner: Planner| match fragments_for(planner.weight(), capacity) {
        Some(fragments) => Weighed::TooBig {
            planner,
            planned_from: "listing".into(),
            fragments,
        },
        None => Weighed::Fits,
    };
    let mut planner = Planner::new();
    let add = |planner: &mut Planner, page: &[ListedObject]| {
        for obj in page {
            if selection.judge(&obj.key) == Verdict::Take {
                planner.add(&obj.key, obj.size);
            }
        }
    };
    if lister.is_done() {
        // The whole selection is in hand: no request at all.
        add(&mut planner, first);
        return Ok(decide(planner));
    }
    if let Some((key, size)) = super::newest_archive(config, dst) {
        // The archive this one will be like: its size, compression and all.
        let Some(fragments) = fragments_for(size, capacity) else {
            return Ok(Weighed::Fits);
        };
        if let Some((planner, planned_from)) = super::weighed_from_manifest(config, dst, &key) {
            return Ok(Weighed::TooBig {
                planner,
                planned_from,
                fragments,
            });
        }
    }
    let state = weighing_key(config);
    let fp = fingerprint(config);
    let kept = checkpoint::get(dst, &state, MAX_WEIGHING_BYTES)
        .map_err(|e| super::dst_failure(config, "reading the weighing", &state, &e))?
        .and_then(|bytes| serde_json::from_slice::<Weighing>(&bytes).ok())
        .filter(|w| w.fingerprint == fp);
    // Going on from an earlier run's pass, in a listing of its own; else from this
    // run's, whose first pages are kept for the backup.
    let mut own;
    let mut last: Option<String>;
    let (pass, mut pages): (&mut Lister<'a>, Option<Vec<Vec<ListedObject>>>) = match kept {
        Some(w) => {
            planner = w.planner;
            own = backup::listing(config, src).after(&w.after);
            last = Some(w.after);
            (&mut own, None)
        }
        None => {
            add(&mut planner, first);
            last = first.last().map(|o| o.key.clone());
            (lister, Some(Vec::new()))
        }
    };
    let mut kept_until = last.clone();
    while let Some(page) = pass
        .next_page()
        .map_err(|e| s3_failure(Side::Source, &config.source, "listing objects", None, &e))?
    {
        add(&mut planner, &page);
        last = page.last().map(|o| o.key.clone()).or(last);
        match &mut pages {
            Some(p) if p.len() < KEEP_PAGES => {
                kept_until = last.clone();
                p.push(page);
            }
            _ => {}
        }
        if let (Some(stop), Some(after)) = (stop_at, &last) {
            if !pass.is_done() && http::now_nanos() >= stop {
                let (objects, bytes) = (planner.objects(), planner.bytes());
                let kept = Weighing {
                    fingerprint: fp,
                    after: after.clone(),
                    planner,
                };
                let body = serde_json::to_vec(&kept).unwrap_or_default();
                checkpoint::put(dst, &state, &body, "application/json")
                    .map_err(|e| super::dst_failure(config, "storing the weighing", &state, &e))?;
                log::info(
                    "weighing_continues",
                    json!({"objects": objects, "bytes": bytes, "after": after}),
                );
                return Ok(Weighed::Unfinished { objects, bytes });
            }
        }
    }
    if let Err(e) = checkpoint::delete_all(dst, std::slice::from_ref(&state)) {
        log::warn(
            "weighing_cleanup_failed",
            json!({"key": state, "error": e.to_string()}),
        );
    }
    // The backup takes the kept pages first, then lists on after them.
    if let Some(pages) = pages {
        let rest = match &kept_until {
            Some(key) if pages.len() == KEEP_PAGES => backup::listing(config, src).after(key),
            // Every page was kept: the listing is done.
            _ => std::mem::replace(lister, backup::listing(config, src)),
        };
        *lister = rest.with_pages(pages);
    }
    Ok(decide(planner))
}

/// The answer of a run that spent its time weighing the bucket.
pub fn weighing(config: &Config, objects: u64, bytes: u64) -> Outcome {
    let mut report = empty_report(config);
    report.message = format!(
        "Backup will continue in the next run: the bucket is being weighed before its upload \
         is made ({objects} objects, {bytes} bytes listed so far)"
    );
    report.status = "continuing".into();
    Outcome::Continuing(report)
}

/// Stores the plan of a new backup too big for one upload, then runs it.
pub fn begin(
    config: &Config,
    dst: &S3,
    planner: Planner,
    planned_from: String,
    fragments: u32,
    started_ms: u64,
) -> Result<Outcome, Failure> {
    // Under the lease of the source's state folder, so two runs begun together store
    // one plan: the second finds the first's.
    let dir = state_dir(&config.archive_prefix, &config.source.bucket);
    let mut lease = chain::Chain::new(
        dst,
        &config.dest,
        dir,
        fingerprint(config),
        config.checkpoint_seconds,
    );
    lease.take_lease()?;
    let plan = match stored(config, dst) {
        Ok(Some(plan)) => Ok(plan),
        Ok(None) => super::store_plan(config, dst, planner, planned_from, fragments, true),
        Err(e) => Err(e),
    };
    lease.release();
    let plan = plan?;
    log::info(
        "backup_planned_as_fragments",
        json!({"archiveName": plan.archive_name, "fragments": fragments,
               "plannedFrom": plan.planned_from, "uploadCapacity": config.upload_capacity(),
               "maxParts": config.max_parts}),
    );
    run(config, dst, &plan, started_ms)
}

/// Goes on with the stored plan: each fragment not yet complete, in order, as far as
/// this run's time allows (it began at `started_ms`), then the compose.
pub fn run(config: &Config, dst: &S3, plan: &Plan, started_ms: u64) -> Result<Outcome, Failure> {
    let dir = state_dir(&config.archive_prefix, &config.source.bucket);
    let n = plan.shards.len() as u32;
    // One deadline for the run, however many fragments it writes: MAX_RUN_SECONDS
    // counts from the run's start, not from each fragment's.
    let deadline = config
        .max_run_seconds
        .map(|s| started_ms.saturating_add(s.saturating_mul(1000)))
        .into_iter()
        .chain(config.deadline_ms)
        .min();
    let mut last: Option<BackupReport> = None;
    for i in 1..=n {
        let key = plan.fragment_key(&dir, i);
        if fragment_stored(config, dst, &key)? {
            continue;
        }
        if out_of_time(deadline) {
            return Ok(continuing(config, plan, i, last));
        }
        let mut shard = config.clone();
        shard.shard = Some(ShardIndex { index: i, count: n });
        shard.max_run_seconds = None;
        shard.deadline_ms = deadline;
        match backup::run(&shard)? {
            Outcome::Done(report) => last = Some(report),
            Outcome::Continuing(report) => return Ok(continuing(config, plan, i, Some(report))),
            other => return Ok(other),
        }
    }
    // The compose copies server-side, but a run with no time left leaves it to the next.
    if out_of_time(deadline) {
        return Ok(continuing(config, plan, n + 1, last));
    }
    super::compose(config).map(Outcome::Composed)
}

/// Whether the run's budget is spent (what is left is its reserve).
fn out_of_time(deadline: Option<u64>) -> bool {
    backup::stop_after(None, deadline, chain::now_ms()).is_some_and(|s| s <= 0.0)
}

/// Whether fragment `key` is complete (it exists only once its upload completed).
fn fragment_stored(config: &Config, dst: &S3, key: &str) -> Result<bool, Failure> {
    match dst.call(&ops::head_object(key), None) {
        Ok(_) => Ok(true),
        Err(e) if e.status() == Some(404) && e.code() != "NoSuchBucket" => Ok(false),
        Err(e) => Err(s3_failure(
            Side::Destination,
            &config.dest,
            "looking for a fragment",
            Some(key),
            &e,
        )),
    }
}

/// The answer of a run that stops before the archive is composed: fragment `at` (or,
/// past the last, the compose) is next. `last` is this run's latest fragment report.
fn continuing(config: &Config, plan: &Plan, at: u32, last: Option<BackupReport>) -> Outcome {
    let n = plan.shards.len() as u32;
    let next = if at > n {
        "the compose".to_string()
    } else {
        format!("fragment {at} of {n}")
    };
    let mut report = last.unwrap_or_else(|| empty_report(config));
    report.message = format!(
        "Backup will continue in the next run: the archive is too big for one upload, so it \
         is written as {n} fragments and composed; {next} is next"
    );
    report.archive_name = plan.archive_name.clone();
    report.status = "continuing".into();
    log::info(
        "backup_continuing",
        json!({"archiveName": plan.archive_name, "next": next, "fragments": n}),
    );
    Outcome::Continuing(report)
}

/// A report of a run that archived nothing yet.
fn empty_report(config: &Config) -> BackupReport {
    BackupReport {
        message: String::new(),
        source_bucket: config.source.bucket.clone(),
        destination_bucket: config.dest.bucket.clone(),
        archive_name: String::new(),
        files_backed_up: 0,
        archive_size: 0,
        duration_seconds: 0.0,
        bytes_read: 0,
        parts: 0,
        part_size: config.part_size,
        skipped: Vec::new(),
        changed: Vec::new(),
        excluded_archives: 0,
        excluded_by_filter: 0,
        retries: 0,
        deleted: Vec::new(),
        retention_error: None,
        status: String::new(),
        runs: 0,
        not_recorded: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_hold_half_an_upload_each() {
        let cap = 1000;
        assert_eq!(fragments_for(0, cap), None);
        assert_eq!(fragments_for(500, cap), None);
        assert_eq!(fragments_for(501, cap), Some(2));
        assert_eq!(fragments_for(1000, cap), Some(2));
        assert_eq!(fragments_for(1001, cap), Some(3));
        assert_eq!(fragments_for(u64::MAX, cap), Some(MAX_SHARDS));
    }
}
