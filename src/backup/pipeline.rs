//! The poll loop that drives the stages: GETs in flight ahead of the archive (stage 2),
//! the archive fed in listing order (stage 3), parts uploaded while the next ones fill
//! (stage 4), and the next listing page fetched ahead (stage 1).
//!
//! An object bigger than one range is fetched as consecutive ranges, several in flight
//! (within CONCURRENCY), so it moves at the speed of several connections; the archive
//! takes them in order. Each download may buffer a share of PREFETCH_BYTES (a whole
//! object's GET its even share, a range its own bytes) and new ones start only while the
//! shares fit in it, so memory stays at PREFETCH_BYTES however big the object is.
//!
//! Once the source turns out to be near ([`link`](crate::backup::link)), fewer GETs go
//! out at once and objects are no longer cut: the rest of an object being cut comes in
//! one GET, held to a whole object's share like any other.

use std::collections::VecDeque;

use md5::{Digest, Md5};
use serde_json::json;

use std::cell::Cell;
use std::rc::Rc;

use crate::backup::archive::{choose_method, SAMPLE_SIZE};
use crate::backup::chain::{counts_of, Chain};
use crate::backup::extras::{Extras, Refusal, Wanted, What};
use crate::backup::fetch::{md5_of_etag, Download, ObjectMeta};
use crate::backup::link::{gets_in_flight, Link};
use crate::backup::list::Lister;
use crate::backup::parts::PartBuffer;
use crate::backup::upload::{MultipartUpload, PartUpload};
use crate::config::Config;
use crate::error::{s3_failure, Failure, Kind, Side};
use crate::io::http;
use crate::io::log::{self, ProgressClock};
use crate::model::{ListedObject, Progress};
use crate::s3::sigv4::hex;
use crate::s3::{S3Error, S3};
use crate::select::{Selection, Tally};
use crate::zip::settings::SETTINGS_NAME;
use crate::zip::write::{ArchiveError, TailPiece, ZipWriter};

/// Where feeding the head download got to.
enum Step {
    /// Its entry is complete (or it needed none): on to the next download.
    Done,
    /// Bytes went in; it waits for more (or for an upload slot).
    Moved,
    /// Nothing could move.
    Waiting,
}

/// An object being cut into ranges.
enum Splitting {
    No,
    /// Its first range is out; the rest waits for its answer (the object's size, ETag
    /// and headers, which every later range needs).
    Learning(String),
    /// The next range starts at `next`.
    Going {
        obj: ListedObject,
        // Boxed: the headers make it much the biggest variant.
        meta: Box<ObjectMeta>,
        next: u64,
    },
}

/// The entry being written: what its ranges (or its one download) have brought so far.
struct OpenEntry {
    bytes: u64,
    /// The MD5 of an object fetched in ranges, hashed in order as they are archived, with
    /// the one its ETag names (a single download checks its own).
    md5: Option<(Md5, String)>,
    changed: bool,
    /// The object's side requests (ACL, tags), taken from its first download: the
    /// entry is finished once they have answered.
    extras: Extras,
}

/// The head download, with the archive it is fed to (both there whenever it is fed).
fn head_of<'b>(
    downloads: &'b mut VecDeque<Download>,
    archive: &'b mut Option<ZipWriter<PartBuffer>>,
) -> (&'b mut Download, &'b mut ZipWriter<PartBuffer>) {
    let head = downloads.front_mut().expect("fed only with a download");
    let archive = archive
        .as_mut()
        .expect("fed only while the archive is open");
    (head, archive)
}

fn archive_err(key: &str, e: ArchiveError) -> Failure {
    Failure::new(Kind::Archive, format!("archiving '{key}': {e}"))
}

/// How a run's pipeline ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The archive's last byte is stored: it can be completed.
    Complete,
    /// The run's deadline came first: a checkpoint holds where it got to.
    Stopped,
}

/// When this run checkpoints and when it stops (monotonic nanoseconds).
pub struct Schedule {
    /// From here on no new entry starts; the run checkpoints and stops at the next entry
    /// boundary.
    pub stop_at: Option<u64>,
    /// Between periodic checkpoints.
    pub every: u64,
    /// The run's start, and the seconds of earlier runs, for the checkpoint's total.
    pub started: u64,
    pub earlier_seconds: f64,
    /// Retries counted over the run (and the earlier ones).
    pub retries: Rc<Cell<u64>>,
}

/// What the archive holds so far, as the response reports it.
#[derive(Default)]
pub struct Tallies {
    pub files: u64,
    pub bytes_read: u64,
    pub skipped: Vec<String>,
    /// Rewritten between the listing and their GET: archived as they were at the GET.
    pub changed: Vec<String>,
    pub left_out: Tally,
    /// What was not recorded of some or all objects (ACLs, tags), and why.
    pub not_recorded: Vec<String>,
}

/// The event loop: GETs in flight ahead of the archive, the archive fed in listing order,
/// parts uploaded while the next ones fill. Nothing here blocks except on `wasi:io/poll`
/// when no request can move (and on listing pages, a few per thousand objects).
struct Pipeline<'a, 'l, 'u> {
    config: &'a Config,
    selection: Selection<'a>,
    src: &'a S3,
    lister: &'a mut Lister<'l>,
    listed: VecDeque<ListedObject>,
    /// Objects and bytes listed so far, for progress.
    listed_objects: u64,
    listed_bytes: u64,
    clock: ProgressClock,
    listing_done: bool,
    downloads: VecDeque<Download>,
    splitting: Splitting,
    entry: Option<OpenEntry>,
    archive: Option<ZipWriter<PartBuffer>>,
    /// The archive's end (manifest, central directory), written out after the last entry.
    tail: VecDeque<TailPiece>,
    buffer: &'a PartBuffer,
    upload: &'a mut MultipartUpload<'u>,
    parts: Vec<PartUpload>,
    /// Bytes of parts that may be in flight at once; at least one part always may.
    upload_budget: u64,
    chain: &'a mut Chain<'u>,
    schedule: Schedule,
    next_checkpoint: u64,
    /// The deadline has passed: the run stops at the next entry boundary.
    stopping: bool,
    /// The last key whose download left the queue (archived, or noted as skipped).
    last_key: Option<String>,
    /// Keys left out since the last download started, and those before the last one
    /// archived: what a checkpoint may count (the next run judges the others again).
    left_pending: Tally,
    left_committed: Tally,
    /// What the run has learnt of the path to the source.
    link: Link,
    /// GETs in flight at most: CONCURRENCY, or fewer from a near source.
    gets: usize,
    /// What a whole object's GET may buffer: PREFETCH_BYTES shared by the GETs.
    per_download: usize,
    /// The size of one range of a big object: at least MIN_RANGE, since each range is a
    /// request, and on a near link requests, not bytes, cost the time.
    range_size: usize,
    /// Big objects are cut into ranges (until the source turns out to be near).
    cut_big: bool,
    progress: &'a mut Tallies,
    /// The side requests each object gets (turned off once the service refuses them).
    wanted: Wanted,
    settings: Option<Vec<u8>>,
}

/// A range is never smaller than this (unless it is an object's last).
const MIN_RANGE: usize = 1024 * 1024;

fn per_download(concurrency: usize) -> usize {
    (crate::config::PREFETCH_BYTES as usize / concurrency).max(SAMPLE_SIZE * 2)
}

/// Where a backup's stages start from: a new archive, or one a checkpoint continues.
pub struct Start<'a, 'l, 'u> {
    pub lister: &'a mut Lister<'l>,
    pub first: Vec<ListedObject>,
    pub writer: ZipWriter<PartBuffer>,
    pub buffer: &'a PartBuffer,
    pub upload: &'a mut MultipartUpload<'u>,
    pub chain: &'a mut Chain<'u>,
    pub schedule: Schedule,
    /// The bucket's settings entry, written before the manifest (none when this backup
    /// records none).
    pub settings: Option<Vec<u8>>,
}

/// Archives every selected object of the listing (whose first page is `first`) into
/// `upload`, through `buffer`; returns once the archive's last byte is stored, or once
/// the run stopped at its deadline with a checkpoint saved. On a failure, parts still on
/// the wire are settled first, so an abort cannot race them.
pub fn archive_all(
    config: &Config,
    src: &S3,
    start: Start<'_, '_, '_>,
    progress: &mut Tallies,
) -> Result<Ended, Failure> {
    let Start {
        lister,
        first,
        writer,
        buffer,
        upload,
        chain,
        schedule,
        settings,
    } = start;
    let left_committed = progress.left_out.clone();
    let mut p = Pipeline {
        config,
        selection: Selection::new(config),
        src,
        lister,
        listed_objects: first.len() as u64,
        listed_bytes: first.iter().map(|o| o.size).sum(),
        clock: ProgressClock::new(http::now_nanos()),
        listed: first.into(),
        listing_done: false,
        downloads: Default::default(),
        splitting: Splitting::No,
        entry: None,
        archive: Some(writer),
        tail: Default::default(),
        buffer,
        upload,
        parts: Vec::new(),
        upload_budget: config.upload_budget(),
        chain,
        next_checkpoint: schedule.started.saturating_add(schedule.every),
        schedule,
        stopping: false,
        last_key: None,
        left_pending: Tally::default(),
        left_committed,
        link: Link::default(),
        gets: config.concurrency,
        per_download: per_download(config.concurrency),
        range_size: per_download(config.concurrency).max(MIN_RANGE),
        cut_big: true,
        progress,
        wanted: Wanted {
            acl: config.record_acl,
            tags: config.record_tags,
        },
        settings,
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
    fn source_err(&self, doing: &str, key: Option<&str>, e: &S3Error) -> Failure {
        s3_failure(Side::Source, &self.config.source, doing, key, e)
    }

    fn dest_err(&self, doing: &str, e: &S3Error) -> Failure {
        s3_failure(
            Side::Destination,
            &self.config.dest,
            doing,
            Some(&self.upload.key),
            e,
        )
    }

    fn run(&mut self) -> Result<Ended, Failure> {
        loop {
            self.report_progress(false);
            self.chain.renew_if_due()?;
            self.note_deadline();
            let pause = self.pause_due();
            if pause && self.stopping {
                // At an entry boundary: what is queued is fetched again by the next run.
                self.downloads.clear();
                self.splitting = Splitting::No;
            }
            let mut moved = self.take_listing_page()?;
            moved |= self.refill()?;
            moved |= self.step_downloads()?;
            moved |= self.feed_archive()?;
            moved |= self.step_uploads()?;
            if pause {
                moved |= self.start_parts(false)?;
                if self.parts.is_empty() && !self.buffer.part_ready() {
                    if self.checkpoint()? && self.stopping {
                        return Ok(Ended::Stopped);
                    }
                    moved = true;
                }
            }
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
                    return Ok(Ended::Complete);
                }
            }
            if !moved {
                let mut pollables = Vec::new();
                // A download with a full buffer waits for the archive to drain it: waking
                // on its socket then would only spin.
                for d in &self.downloads {
                    d.pollables(d.buffered() < self.share(d), &mut pollables);
                    d.extras.pollables(&mut pollables);
                }
                if let Some(entry) = &self.entry {
                    entry.extras.pollables(&mut pollables);
                }
                for part in &self.parts {
                    part.pollables(&mut pollables);
                }
                self.lister.pollables(&mut pollables);
                // Wake for the next checkpoint, the deadline or the lease's renewal even
                // when nothing moves (only for times still ahead: one passed already is
                // waiting on the transfers above).
                let now = http::now_nanos();
                let renew = self
                    .chain
                    .renew_in_ms()
                    .map(|ms| now.saturating_add(ms.max(1) * 1_000_000));
                let stop = self.schedule.stop_at.filter(|_| !self.stopping);
                let wake = [Some(self.next_checkpoint), stop, renew]
                    .into_iter()
                    .flatten()
                    .filter(|t| *t > now && *t != u64::MAX)
                    .min();
                if let Some(t) = wake {
                    pollables.push(http::timer(t));
                }
                http::wait_any(&pollables);
            }
        }
    }

    /// Latches `stopping` once the deadline has passed, unless nothing is left to fetch
    /// (then finishing is as quick as stopping).
    fn note_deadline(&mut self) {
        if self.stopping || self.archive.is_none() {
            return;
        }
        let Some(stop) = self.schedule.stop_at else {
            return;
        };
        let all_fetched = self.listing_done && self.listed.is_empty() && self.downloads.is_empty();
        // Every run moves the chain on by at least one object, however short its budget.
        let moved_on = self.last_key.is_some();
        if http::now_nanos() >= stop && moved_on && !all_fetched {
            log::info(
                "deadline",
                json!({"message": "stopping at the next entry boundary, to continue in the next run"}),
            );
            self.stopping = true;
        }
    }

    /// A checkpoint is due (periodic, or the deadline's) and the archive is between
    /// entries: no entry starts until it is saved.
    fn pause_due(&self) -> bool {
        self.archive.is_some()
            && self.entry.is_none()
            && (self.stopping || http::now_nanos() >= self.next_checkpoint)
    }

    /// Saves a checkpoint once every part is stored. Returns false when another run holds
    /// this backup's state: this one then goes on without checkpoints (and fails if it
    /// must stop).
    fn checkpoint(&mut self) -> Result<bool, Failure> {
        let now = http::now_nanos();
        self.next_checkpoint = now.saturating_add(self.schedule.every);
        let seconds =
            self.schedule.earlier_seconds + now.saturating_sub(self.schedule.started) as f64 / 1e9;
        let mut counts = counts_of(self.progress, self.schedule.retries.get());
        counts.own_archives = self.left_committed.own_archives;
        counts.excluded = self.left_committed.excluded;
        let Some(archive) = self.archive.as_mut() else {
            return Ok(false);
        };
        match self.chain.save(
            archive,
            self.buffer,
            self.upload,
            self.last_key.as_deref(),
            counts,
            seconds,
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.kind == Kind::Busy && !self.stopping => {
                log::warn("checkpoints_off", json!({"message": e.message}));
                self.next_checkpoint = u64::MAX;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Takes a prefetched listing page as soon as it has arrived, even while every GET
    /// slot is busy: an answer left unread keeps its pollable ready, so every wait would
    /// return at once and the loop would spin, starving the transfers it waits for.
    fn take_listing_page(&mut self) -> Result<bool, Failure> {
        match self.lister.poll() {
            Ok(Some(page)) => {
                self.count_listed(&page);
                self.listed.extend(page);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(self.source_err("listing objects", None, &e)),
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
        if !self.clock.due(t, now) {
            return;
        }
        let progress = Progress {
            objects: self.progress.files,
            bytes_read: self.progress.bytes_read,
            listed_objects: self.listed_objects,
            listed_bytes: self.listed_bytes,
            listing_done: self.listing_done || self.lister.is_done(),
            archive_bytes: Some(self.buffer.total()),
            parts_started: Some(self.upload.started()),
            elapsed_seconds: 0.0,
        };
        self.clock.emit(t, progress);
    }

    /// Starts GETs for the next ranges of a big object, or the next listed objects, up to
    /// CONCURRENCY in flight.
    fn refill(&mut self) -> Result<bool, Failure> {
        let mut moved = false;
        while self.downloads.len() < self.gets {
            if self.stopping && !self.splitting_open_entry() {
                break;
            }
            // From a near source the rest of the object comes in one GET.
            let (next_len, next_share) = if self.cut_big {
                (self.range_size as u64, self.range_size)
            } else {
                (u64::MAX, self.per_download)
            };
            let next_fits = self.fits(next_share);
            match &mut self.splitting {
                Splitting::Learning(_) => break,
                Splitting::Going { .. } if !next_fits => break,
                Splitting::Going { obj, meta, next } => {
                    let start = *next;
                    let end = start.saturating_add(next_len).min(obj.size);
                    let d = Download::range(self.src, obj.clone(), (**meta).clone(), start, end)
                        .map_err(|e| {
                            s3_failure(
                                Side::Source,
                                &self.config.source,
                                "reading an object",
                                Some(&obj.key),
                                &e,
                            )
                        })?;
                    *next = end;
                    if end >= obj.size {
                        self.splitting = Splitting::No;
                    }
                    self.downloads.push_back(d);
                    moved = true;
                    continue;
                }
                Splitting::No => {}
            }
            let Some(obj) = self.next_object()? else {
                break;
            };
            let cut = self.cut_big && obj.size > self.range_size as u64;
            if cut && !self.fits(self.range_size) {
                // Its first range waits for room, as its later ranges will.
                self.listed.push_front(obj);
                break;
            }
            let verdict = self.selection.judge(&obj.key);
            if !self.progress.left_out.take(verdict) {
                self.left_pending.take(verdict);
                continue;
            }
            let key = obj.key.clone();
            let d = if cut {
                self.splitting = Splitting::Learning(key.clone());
                let first = self.range_size as u64;
                Download::range(self.src, obj, ObjectMeta::default(), 0, first)
            } else {
                Download::start(self.src, obj)
            };
            let mut d = d.map_err(|e| self.source_err("reading an object", Some(&key), &e))?;
            d.extras = Extras::start(self.src, &key, self.wanted);
            d.left_before = std::mem::take(&mut self.left_pending);
            self.downloads.push_back(d);
            moved = true;
        }
        Ok(moved)
    }

    /// The object being split is the open entry's: a stopping run still needs its ranges.
    fn splitting_open_entry(&self) -> bool {
        let Splitting::Going { obj, .. } = &self.splitting else {
            return false;
        };
        self.entry.is_some() && self.downloads.front().is_some_and(|d| d.obj.key == obj.key)
    }

    /// What download `d` may buffer ahead of the archive: a range all of its bytes (so
    /// its connection is free once they are in), a whole object (or the rest of one, on a
    /// near link) its share, read no faster than the archive takes it.
    fn share(&self, d: &Download) -> usize {
        if d.is_range() && d.span_len() <= self.range_size as u64 {
            self.range_size
        } else {
            self.per_download
        }
    }

    /// A download holding `share` fits beside those in flight within PREFETCH_BYTES.
    fn fits(&self, share: usize) -> bool {
        let held: usize = self.downloads.iter().map(|d| self.share(d)).sum();
        held + share <= crate::config::PREFETCH_BYTES as usize
    }

    /// Judges the link by how soon answers come; a near one gets fewer GETs at once and
    /// no more ranges. Downloads in flight go on as they are.
    fn note_first_byte(&mut self, ns: u64) {
        if !self.link.note(ns) {
            return;
        }
        self.gets = gets_in_flight(self.config.concurrency, self.config.concurrency_fixed, true);
        self.per_download = per_download(self.gets);
        self.cut_big = false;
        log::info(
            "near_source",
            json!({"firstByteMs": self.link.fastest_ms(), "getsInFlight": self.gets,
                   "message": "the source answers within a few milliseconds: fewer GETs at once, and big objects are no longer fetched in ranges"}),
        );
    }

    /// Once the first range of the object being split has its answer, the next ranges
    /// can go out, pinned to the ETag it gave (or none, when it turned out to hold the
    /// whole object, or the object is gone). Called right after that download moved, so
    /// it is learnt before the archive can take the range and drop it.
    fn learn_split(&mut self, d_index: usize) {
        let Splitting::Learning(key) = &self.splitting else {
            return;
        };
        let d = &self.downloads[d_index];
        if !d.knows_object() || &d.obj.key != key || !d.is_first() {
            return;
        }
        self.splitting = if d.missing || d.is_last() {
            Splitting::No
        } else {
            Splitting::Going {
                obj: d.obj.clone(),
                meta: Box::new(d.meta.clone()),
                next: d.end(),
            }
        };
    }

    /// The next listed object. The following page is fetched ahead once this one is half
    /// used, so GETs never wait on the listing; only when it is late does this block.
    fn next_object(&mut self) -> Result<Option<ListedObject>, Failure> {
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

    fn step_downloads(&mut self) -> Result<bool, Failure> {
        let mut moved = false;
        if let Some(entry) = &mut self.entry {
            moved |= entry.extras.step(self.src);
            let refused = entry.extras.take_refused();
            if !refused.is_empty() {
                let key = self
                    .downloads
                    .front()
                    .map(|d| d.obj.key.clone())
                    .unwrap_or_default();
                self.note_refused(&key, refused);
            }
        }
        for i in 0..self.downloads.len() {
            let share = self.share(&self.downloads[i]);
            let d = &mut self.downloads[i];
            let budget = share.saturating_sub(d.buffered());
            let stepped = d.step(self.src, budget);
            moved |= d.extras.step(self.src);
            let refused = d.extras.take_refused();
            if let Some(ns) = d.take_first_byte() {
                self.note_first_byte(ns);
            }
            if !refused.is_empty() {
                let key = self.downloads[i].obj.key.clone();
                self.note_refused(&key, refused);
            }
            match stepped {
                Ok(m) => moved |= m,
                Err(e) => {
                    return Err(s3_failure(
                        Side::Source,
                        &self.config.source,
                        "reading an object",
                        Some(&self.downloads[i].obj.key),
                        &e,
                    ))
                }
            }
            self.learn_split(i);
        }
        Ok(moved)
    }

    /// Side requests that brought nothing: a refusal for good turns them off for the
    /// rest of the run, said once in the log and the response; another is logged with
    /// its key, and said once.
    fn note_refused(&mut self, key: &str, refused: Vec<Refusal>) {
        for r in refused {
            let what = match r.what {
                What::Acl => "ACLs",
                What::Tags => "tags",
            };
            if r.for_good {
                let on = match r.what {
                    What::Acl => &mut self.wanted.acl,
                    What::Tags => &mut self.wanted.tags,
                };
                if !std::mem::replace(on, false) {
                    continue;
                }
                let note = format!(
                    "{what} were not recorded from '{key}' on: the source refused them ({}); \
                     {}=false leaves them out without asking",
                    r.why,
                    r.what.setting()
                );
                log::warn("not_recorded", json!({"what": what, "message": note}));
                self.progress.not_recorded.push(note);
            } else {
                log::warn(
                    "not_recorded",
                    json!({"what": what, "key": key, "message": r.why}),
                );
                let note = format!("{what} of some objects were not recorded (see the log)");
                if !self.progress.not_recorded.contains(&note) {
                    self.progress.not_recorded.push(note);
                }
            }
        }
    }

    /// The next part's size: fixed, or growing with the part number.
    fn next_part_size(&self) -> u64 {
        self.config.part_size_of(self.upload.started() + 1)
    }

    /// Fails cleanly, before the host's cap would stop the component mid-write, when
    /// parts of `next_part` bytes and the archive's end held so far no longer fit in
    /// MAX_MEMORY.
    fn check_memory(&self, next_part: u64) -> Result<(), Failure> {
        let held = self.archive.as_ref().map_or(0, |a| a.held_bytes() as u64);
        let need = self.config.memory_needed(next_part, held);
        if need <= self.config.max_memory {
            return Ok(());
        }
        Err(Failure::new(
            Kind::Memory,
            format!(
                "the archive outgrew MAX_MEMORY ({} bytes): after {} bytes and {} entries, \
                 parts of {next_part} bytes and {held} bytes of central directory and manifest \
                 need about {need}; raise MAX_MEMORY",
                self.config.max_memory,
                self.buffer.total(),
                self.archive.as_ref().map_or(0, ZipWriter::entries),
            ),
        ))
    }

    /// True while a full part waits for an upload slot: the archive must not grow.
    fn backpressure(&self) -> bool {
        self.buffer.part_ready() && !self.upload_slot_free()
    }

    /// Another part may go out: at most PARTS_IN_FLIGHT of them (Spaces allows 10 writes
    /// to one object at once), and memory stays at the upload budget (or one part, when
    /// parts have grown past it).
    fn upload_slot_free(&self) -> bool {
        let in_flight: u64 = self.parts.iter().map(|p| p.len() as u64).sum();
        self.parts.is_empty()
            || (self.parts.len() < self.config.parts_in_flight
                && in_flight + self.next_part_size() <= self.upload_budget)
    }

    /// Writes the head download's bytes into the archive, in listing order: entries are
    /// finished one after another while their bytes are all there, and the open one takes
    /// what has arrived, as far as upload slots allow.
    fn feed_archive(&mut self) -> Result<bool, Failure> {
        let mut moved = false;
        while let Some(head) = self.downloads.front() {
            if self.archive.is_none() || self.pause_due() {
                break;
            }
            let step = if head.missing {
                self.skip_missing()?
            } else if Download::is_directory(&head.obj) {
                self.add_directory()?
            } else {
                self.feed_file()?
            };
            match step {
                Step::Done => {
                    if let Some(d) = self.downloads.pop_front() {
                        self.left_committed.add(&d.left_before);
                        if self.last_key.as_deref() != Some(d.obj.key.as_str()) {
                            self.last_key = Some(d.obj.key);
                        }
                    }
                    moved = true;
                }
                Step::Moved => return Ok(true),
                Step::Waiting => break,
            }
        }
        Ok(moved)
    }

    /// An object deleted after it was listed: skipped, reported, noted in the manifest.
    fn skip_missing(&mut self) -> Result<Step, Failure> {
        let (head, archive) = head_of(&mut self.downloads, &mut self.archive);
        let obj = &head.obj;
        log::warn(
            "skipped",
            json!({"key": obj.key, "reason": "deleted after it was listed"}),
        );
        archive
            .note_skipped(obj, "deleted after it was listed")
            .map_err(|e| archive_err(&obj.key, e))?;
        self.progress.skipped.push(obj.key.clone());
        Ok(Step::Done)
    }

    /// A folder marker: its GET brings its Content-Type and metadata for the manifest.
    fn add_directory(&mut self) -> Result<Step, Failure> {
        let (head, archive) = head_of(&mut self.downloads, &mut self.archive);
        if !head.finished() || !head.extras.done() {
            return Ok(Step::Waiting);
        }
        head.extras.apply(&mut head.meta);
        archive
            .add_directory(&head.obj, &head.meta)
            .map_err(|e| archive_err(&head.obj.key, e))?;
        self.progress.files += 1;
        Ok(Step::Done)
    }

    /// A file: its entry is started once its first bytes have chosen the method, then it
    /// takes the bytes that have arrived, and it is finished once they all have.
    /// A range of an object is one step of its entry: the entry starts with its first
    /// range and ends with its last.
    fn feed_file(&mut self) -> Result<Step, Failure> {
        let mut moved = false;
        if self.entry.is_none() {
            if !self.start_entry()? {
                return Ok(Step::Waiting);
            }
            moved = true;
        }
        while !self.backpressure() {
            let (head, archive) = head_of(&mut self.downloads, &mut self.archive);
            let Some(chunk) = head.pop_chunk() else {
                break;
            };
            archive
                .write(&chunk)
                .map_err(|e| archive_err(&head.obj.key, e))?;
            if let Some(entry) = &mut self.entry {
                entry.bytes += chunk.len() as u64;
                if let Some((md5, _)) = &mut entry.md5 {
                    md5.update(&chunk);
                }
            }
            moved = true;
            self.start_parts(false)?;
        }
        let (head, _) = head_of(&mut self.downloads, &mut self.archive);
        if head.finished() && head.buffered() == 0 {
            let last = head.is_last();
            if last && self.entry.as_ref().is_some_and(|e| !e.extras.done()) {
                // Every byte is in; its ACL or tags are still on their way.
                return Ok(if moved { Step::Moved } else { Step::Waiting });
            }
            if let Some(entry) = &mut self.entry {
                entry.changed |= head.changed;
            }
            if last {
                self.finish_entry()?;
            }
            return Ok(Step::Done);
        }
        Ok(if moved { Step::Moved } else { Step::Waiting })
    }

    /// Starts the head's entry once its first bytes (or all of them) are there to judge
    /// compression by; false while they are not.
    fn start_entry(&mut self) -> Result<bool, Failure> {
        let compression = self.config.compression;
        let (head, archive) = head_of(&mut self.downloads, &mut self.archive);
        if head.buffered() < SAMPLE_SIZE && !head.finished() {
            return Ok(false);
        }
        if !head.is_first() {
            // Ranges of one object follow each other in the queue, the first one first.
            return Err(Failure::new(
                Kind::Archive,
                format!(
                    "archiving '{}': a later range came before the entry was started",
                    head.obj.key
                ),
            ));
        }
        let obj = &head.obj;
        let method = choose_method(&obj.key, obj.size, &head.sample(SAMPLE_SIZE), compression);
        let name = archive
            .start_file(obj, method)
            .map_err(|e| archive_err(&obj.key, e))?;
        log::debug(
            "archiving",
            json!({"key": obj.key, "entry": name, "method": format!("{method:?}")}),
        );
        let md5 = head
            .is_range()
            .then(|| md5_of_etag(&head.obj.etag))
            .flatten()
            .map(|want| (Md5::new(), want));
        let extras = std::mem::take(&mut head.extras);
        self.entry = Some(OpenEntry {
            bytes: 0,
            md5,
            changed: false,
            extras,
        });
        Ok(true)
    }

    /// Ends the head's entry, every byte received (and matching its MD5, for an object
    /// fetched in ranges), and counts it.
    fn finish_entry(&mut self) -> Result<(), Failure> {
        let mut entry = self.entry.take().expect("an entry is open");
        let (head, archive) = head_of(&mut self.downloads, &mut self.archive);
        // `Download` finishes only at exactly the listed size; this guards it.
        if entry.bytes != head.obj.size {
            return Err(Failure::new(
                Kind::SizeMismatch,
                format!(
                    "'{}' gave {} bytes but was listed with {}",
                    head.obj.key, entry.bytes, head.obj.size
                ),
            ));
        }
        if let Some((md5, want)) = entry.md5 {
            let got = hex(&md5.finalize());
            if got != want {
                let e = S3Error::Protocol(format!(
                    "the bytes read have MD5 {got} but the object's ETag says {want}: it was \
                     corrupted in transit or changed during the backup"
                ));
                let key = head.obj.key.clone();
                return Err(self.source_err("reading an object", Some(&key), &e));
            }
        }
        entry.extras.apply(&mut head.meta);
        archive
            .finish_file(&head.obj, &head.meta)
            .map_err(|e| archive_err(&head.obj.key, e))?;
        if entry.changed {
            self.progress.changed.push(head.obj.key.clone());
        }
        self.progress.files += 1;
        self.progress.bytes_read += entry.bytes;
        if self.progress.files.is_multiple_of(4096) {
            // The archive's end grows with every entry, even when parts do not.
            self.check_memory(self.next_part_size())?;
        }
        Ok(())
    }

    /// Starts uploads for full parts while slots are free; with `last`, also the rest.
    fn start_parts(&mut self, last: bool) -> Result<bool, Failure> {
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

    fn step_uploads(&mut self) -> Result<bool, Failure> {
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

    fn finish_archive(&mut self) -> Result<(), Failure> {
        if let Some(mut archive) = self.archive.take() {
            let settings = self.settings.take();
            if settings.is_some() && !archive.settings_reserved() {
                // Begun by an earlier version: an object may hold the entry's name.
                self.progress.not_recorded.push(
                    "the bucket's settings were not recorded: this archive was begun by an \
                     earlier version, which left their entry's name to objects"
                        .into(),
                );
            } else if let Some(settings) = settings {
                archive.add_record(SETTINGS_NAME, &settings).map_err(|e| {
                    Failure::new(
                        Kind::Archive,
                        format!("writing the bucket's settings failed: {e}"),
                    )
                })?;
            }
            let entries = archive.entries();
            let renamed = archive.renamed();
            let held = archive.held_bytes();
            self.tail = archive.finish().map_err(|e| {
                Failure::new(Kind::Archive, format!("finishing the archive failed: {e}"))
            })?;
            log::info(
                "archive_finished",
                json!({"entries": entries, "renamed": renamed, "directoryBytes": held}),
            );
        }
        Ok(())
    }

    /// Writes the archive's end into parts, as upload slots allow.
    fn write_tail(&mut self) -> Result<bool, Failure> {
        let mut moved = false;
        while !self.backpressure() {
            let block = match self.tail.pop_front() {
                None => break,
                Some(TailPiece::Bytes(b)) => b,
                // Written at a checkpoint: read back one segment at a time.
                Some(TailPiece::Stored { n, what, len }) => self.chain.segment(n, what, len)?,
            };
            let mut sink = self.buffer.clone();
            std::io::Write::write_all(&mut sink, &block).map_err(|e| {
                Failure::new(Kind::Archive, format!("finishing the archive failed: {e}"))
            })?;
            self.start_parts(false)?;
            moved = true;
        }
        Ok(moved)
    }
}
