//! The ZIP stream writer: each object becomes one entry, written as its bytes arrive,
//! into any `Write` (the backup's part buffer).
//!
//! Our own entry writer rather than the `zip` crate's: data that is not worth deflating
//! goes out as deflate *stored blocks*, not as a STORED entry, because a streamed STORED
//! entry needs a data descriptor, which `java.util.zip.ZipInputStream` and other
//! streaming readers refuse; sizes known from the listing go into the local header; and
//! each entry costs only its central-directory record until the end.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::io::Write;

use crate::backup::checkpoint::{Segment, ZipState};
use crate::backup::fetch::ObjectMeta;
use crate::model::ListedObject;
use crate::naming::{parse_rfc3339, safe_entry_name, with_suffix};
use std::borrow::Cow;

use crate::zip::manifest::{Blocks, ManifestLine, ManifestWriter, MANIFEST_DIR, MANIFEST_NAME};
use crate::zip::settings::SETTINGS_NAME;
use crate::zip::spec::{
    self, central_record_len, dos_datetime, stored_block_header, stored_blocks_size, Entry,
    DEFLATED, MAX32, STORED, STORED_BLOCK,
};

/// How one entry's bytes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Store,
    Deflate,
}

#[derive(Debug)]
pub struct ArchiveError(pub String);

impl std::fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<std::io::Error> for ArchiveError {
    fn from(e: std::io::Error) -> Self {
        ArchiveError(format!("ZIP writer: {e}"))
    }
}

/// Entries from this size up that would be deflated are sent as stored blocks instead:
/// their compressed size is then known before the data, so the local header can say
/// for certain whether the entry is ZIP64 (deflate could grow past 4 GiB).
const ZIP64_GUARD: u64 = 0xFF00_0000;

/// A hasher for keys that are already 64-bit hashes.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Names are compared without a trailing slash: a file `a` and a folder `a/` cannot both
/// be extracted.
pub fn name_hash(name: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    name.trim_end_matches('/').hash(&mut h);
    h.finish()
}

/// How the open entry's bytes go out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    /// An empty file: stored, with its (zero) CRC and sizes in the local header.
    Empty,
    /// Deflate stored blocks: the bytes as they are, with a size known in advance.
    Blocks,
    Deflate,
}

/// The entry being written.
struct Open {
    name: String,
    body: Body,
    zip64: bool,
    dos: (u16, u16),
    offset: u64,
    expected: u64,
    written: u64,
    compressed: u64,
    crc: crc32fast::Hasher,
    /// Bytes still to come in the current stored block.
    block_left: u64,
}

/// The ZIP stream: entries one after another into the part buffer, each followed by a
/// data descriptor when its CRC was not known up front; the central directory and the
/// manifest wait in memory, compactly, for the end.
pub struct ZipWriter<W: Write> {
    sink: W,
    /// Bytes of the archive written so far: where the next entry starts.
    offset: u64,
    level: flate2::Compression,
    deflater: Option<flate2::Compress>,
    scratch: Vec<u8>,
    /// Hashes of the names taken (a rare false match only renames an entry).
    names: HashSet<u64, BuildHasherDefault<Prehashed>>,
    central: Blocks,
    manifest: ManifestWriter,
    entries: u64,
    renamed: u64,
    open: Option<Open>,
    /// Central-directory and manifest bytes written out at checkpoints (stored in the
    /// destination bucket), in order: they come before what is held here.
    prior: Vec<Segment>,
    /// No object took [`SETTINGS_NAME`] (false when continuing an archive an earlier
    /// version began).
    settings_reserved: bool,
}

/// A piece of the archive's end: bytes held in memory, or a segment a checkpoint stored.
#[derive(Debug)]
pub enum TailPiece {
    Bytes(Vec<u8>),
    /// Segment `n` (from 1), its `central` or `manifest` part, of `len` bytes.
    Stored {
        n: usize,
        what: &'static str,
        len: u64,
    },
}

/// What a checkpoint takes out of the writer: the central records and the flushed
/// manifest stream of the entries since the previous checkpoint.
pub struct Spilled {
    pub central: Vec<u8>,
    pub manifest: Vec<u8>,
}

fn joined(blocks: Blocks) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks.len as usize);
    for b in blocks.blocks {
        out.extend_from_slice(&b);
    }
    out
}

impl<W: Write> ZipWriter<W> {
    pub fn new(sink: W, deflate_level: u8) -> Self {
        let mut names = HashSet::default();
        for reserved in [MANIFEST_NAME, MANIFEST_DIR, SETTINGS_NAME] {
            names.insert(name_hash(reserved));
        }
        Self {
            sink,
            offset: 0,
            level: flate2::Compression::new(u32::from(deflate_level)),
            deflater: None,
            scratch: Vec::new(),
            names,
            central: Blocks::default(),
            manifest: ManifestWriter::new(),
            entries: 0,
            renamed: 0,
            open: None,
            prior: Vec::new(),
            settings_reserved: true,
        }
    }

    /// A writer that goes on where a checkpoint's `state` left off, with the names it
    /// had taken; `sink` already holds the bytes after the stored parts.
    pub fn resume(sink: W, deflate_level: u8, state: &ZipState, names: &[u64]) -> Self {
        let mut w = Self::new(sink, deflate_level);
        w.names.extend(names.iter().copied());
        w.offset = state.offset;
        w.entries = state.entries;
        w.renamed = state.renamed;
        w.manifest = ManifestWriter::resume(state.manifest_crc, state.manifest_len);
        w.prior = state.segments.clone();
        w.settings_reserved = state.settings_reserved;
        w
    }

    /// Where the writer is, for a checkpoint (at an entry boundary).
    pub fn state(&self) -> ZipState {
        let (manifest_crc, manifest_len) = self.manifest.crc_len();
        ZipState {
            offset: self.offset,
            entries: self.entries,
            renamed: self.renamed,
            manifest_crc,
            manifest_len,
            segments: self.prior.clone(),
            settings_reserved: self.settings_reserved,
        }
    }

    /// Whether the archive's own records may take their reserved names: an archive an
    /// earlier version began may hold an object under one.
    pub fn settings_reserved(&self) -> bool {
        self.settings_reserved
    }

    /// The hashes of the names taken, for a checkpoint.
    pub fn names(&self) -> Vec<u64> {
        self.names.iter().copied().collect()
    }

    /// Takes the central records and manifest bytes held so far out of memory, as the
    /// next segment; the caller stores it before [`Self::state`] is saved.
    pub fn spill(&mut self) -> Result<Spilled, ArchiveError> {
        if self.open.is_some() {
            return Err(ArchiveError("a checkpoint needs an entry boundary".into()));
        }
        let manifest = joined(self.manifest.flush_out()?);
        let central = joined(std::mem::take(&mut self.central));
        self.prior.push(Segment {
            central: central.len() as u64,
            manifest: manifest.len() as u64,
        });
        Ok(Spilled { central, manifest })
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Entries whose name differs from their key.
    pub fn renamed(&self) -> u64 {
        self.renamed
    }

    /// Memory held for the end of the archive: central directory, names and manifest.
    pub fn held_bytes(&self) -> usize {
        self.central.bytes() + self.names.capacity() * 9 + self.manifest.held_bytes()
    }

    /// The safe name for `key` or, if that is taken, its first free `~N` variant.
    fn claim_name(&mut self, key: &str, is_dir: bool) -> String {
        let mut safe = safe_entry_name(key).into_owned();
        // A name ending in '/' is a directory to every reader: an object with content
        // under such a key is stored as a file without the slash.
        if !is_dir {
            while safe.len() > 1 && safe.ends_with('/') {
                safe.pop();
            }
        }
        let mut name = safe.clone();
        let mut n = 1;
        while !self.names.insert(name_hash(&name)) {
            n += 1;
            name = with_suffix(&safe, n);
        }
        if name != key {
            self.renamed += 1;
        }
        name
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<(), ArchiveError> {
        self.sink.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Starts the entry for `obj`. Returns the entry name.
    pub fn start_file(
        &mut self,
        obj: &ListedObject,
        method: Method,
    ) -> Result<String, ArchiveError> {
        if self.open.is_some() {
            return Err(ArchiveError("an entry is already open".into()));
        }
        let name = self.claim_name(&obj.key, false);
        let size = obj.size;
        let body = match method {
            _ if size == 0 => Body::Empty,
            Method::Deflate if !(ZIP64_GUARD..=MAX32).contains(&size) => Body::Deflate,
            _ => Body::Blocks,
        };
        let compressed = match body {
            Body::Empty | Body::Deflate => 0,
            Body::Blocks => stored_blocks_size(size),
        };
        // The rule streaming readers (java.util.zip) apply to the descriptor: 8-byte sizes
        // when either size exceeds 32 bits. Known here for every body.
        let zip64 = size > MAX32 || compressed > MAX32;
        let open = Open {
            name,
            body,
            zip64,
            dos: dos_datetime(parse_rfc3339(&obj.last_modified)),
            offset: self.offset,
            expected: size,
            written: 0,
            compressed,
            crc: crc32fast::Hasher::new(),
            block_left: 0,
        };
        let mut head = Vec::with_capacity(30 + open.name.len() + 20);
        spec::local_header(&mut head, &Self::entry(&open, compressed, 0));
        self.emit(&head)?;
        if body == Body::Deflate {
            match &mut self.deflater {
                Some(d) => d.reset(),
                None => self.deflater = Some(flate2::Compress::new(self.level, false)),
            }
        }
        let name = open.name.clone();
        self.open = Some(open);
        Ok(name)
    }

    fn entry(open: &Open, compressed: u64, crc32: u32) -> Entry<'_> {
        Entry {
            name: &open.name,
            method: if open.body == Body::Empty {
                STORED
            } else {
                DEFLATED
            },
            descriptor: open.body != Body::Empty,
            zip64: open.zip64,
            dos_time: open.dos.0,
            dos_date: open.dos.1,
            crc32,
            compressed,
            uncompressed: open.expected,
            offset: open.offset,
            directory: false,
        }
    }

    /// Adds the open entry's next bytes.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), ArchiveError> {
        let Some(open) = self.open.as_mut() else {
            return Err(ArchiveError("no entry is open".into()));
        };
        if open.written + data.len() as u64 > open.expected {
            return Err(ArchiveError(format!(
                "more bytes than the {} listed",
                open.expected
            )));
        }
        open.crc.update(data);
        match open.body {
            Body::Empty => {}
            Body::Blocks => {
                while !data.is_empty() {
                    let open = self.open.as_mut().expect("checked above");
                    if open.block_left == 0 {
                        let left = open.expected - open.written;
                        let n = left.min(STORED_BLOCK);
                        open.block_left = n;
                        let header = stored_block_header(n as u16, n == left);
                        self.emit(&header)?;
                    }
                    let open = self.open.as_mut().expect("checked above");
                    let take = data.len().min(open.block_left as usize);
                    open.block_left -= take as u64;
                    open.written += take as u64;
                    let (now, rest) = data.split_at(take);
                    data = rest;
                    self.emit(now)?;
                }
            }
            Body::Deflate => {
                open.written += data.len() as u64;
                let compressed = self.deflate(data, flate2::FlushCompress::None)?;
                if let Some(open) = self.open.as_mut() {
                    open.compressed += compressed;
                }
            }
        }
        Ok(())
    }

    /// Runs the deflater over `input` into the archive; returns the bytes it emitted.
    fn deflate(
        &mut self,
        mut input: &[u8],
        flush: flate2::FlushCompress,
    ) -> Result<u64, ArchiveError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.reserve(64 * 1024);
        let mut emitted = 0;
        loop {
            let d = self
                .deflater
                .as_mut()
                .ok_or_else(|| ArchiveError("deflater missing".into()))?;
            scratch.clear();
            let before = d.total_in();
            let status = d
                .compress_vec(input, &mut scratch, flush)
                .map_err(|e| ArchiveError(format!("deflate: {e}")))?;
            input = &input[(d.total_in() - before) as usize..];
            self.emit(&scratch)?;
            emitted += scratch.len() as u64;
            let out_full = scratch.len() == scratch.capacity();
            let done = match flush {
                flate2::FlushCompress::Finish => status == flate2::Status::StreamEnd,
                _ => input.is_empty() && !out_full,
            };
            if done {
                break;
            }
        }
        self.scratch = scratch;
        Ok(emitted)
    }

    /// Ends the open entry: its data descriptor, central record and manifest line.
    pub fn finish_file(
        &mut self,
        obj: &ListedObject,
        meta: &ObjectMeta,
    ) -> Result<(), ArchiveError> {
        let Some(open) = self.open.as_ref() else {
            return Err(ArchiveError("no entry is open".into()));
        };
        if open.written != open.expected {
            return Err(ArchiveError(format!(
                "{} bytes written, {} listed",
                open.written, open.expected
            )));
        }
        if open.body == Body::Deflate {
            let tail = self.deflate(&[], flate2::FlushCompress::Finish)?;
            if let Some(open) = self.open.as_mut() {
                open.compressed += tail;
            }
        }
        let open = self.open.take().expect("checked above");
        let crc32 = open.crc.clone().finalize();
        let entry = Self::entry(&open, open.compressed, crc32);
        if !open.zip64 && open.compressed > MAX32 {
            return Err(ArchiveError("entry outgrew 4 GiB without ZIP64".into()));
        }
        if entry.descriptor {
            let mut desc = Vec::with_capacity(24);
            spec::data_descriptor(&mut desc, &entry);
            self.emit(&desc)?;
        }
        spec::central_record(self.central.room(central_record_len(&entry)), &entry);
        self.entries += 1;
        self.manifest.add(&ManifestLine {
            key: Cow::Borrowed(&obj.key),
            entry: Some(Cow::Borrowed(&open.name)),
            size: obj.size,
            etag: Cow::Borrowed(&obj.etag),
            last_modified: Cow::Borrowed(&obj.last_modified),
            content_type: meta.content_type.as_deref().map(Cow::Borrowed),
            metadata: Some(Cow::Borrowed(&meta.metadata)),
            headers: Cow::Borrowed(&meta.headers),
            acl: meta.acl.as_ref().map(Cow::Borrowed),
            tags: (!meta.tags.is_empty()).then_some(Cow::Borrowed(&meta.tags[..])),
            crc32: Some(format!("{crc32:08x}")),
            skipped: None,
        })?;
        Ok(())
    }

    /// A folder marker (`a/b/`, zero bytes) becomes a directory entry.
    pub fn add_directory(
        &mut self,
        obj: &ListedObject,
        meta: &ObjectMeta,
    ) -> Result<String, ArchiveError> {
        if self.open.is_some() {
            return Err(ArchiveError("an entry is already open".into()));
        }
        let name = self.claim_name(&obj.key, true);
        let (dos_time, dos_date) = dos_datetime(parse_rfc3339(&obj.last_modified));
        let entry = Entry {
            name: &name,
            method: STORED,
            descriptor: false,
            zip64: false,
            dos_time,
            dos_date,
            crc32: 0,
            compressed: 0,
            uncompressed: 0,
            offset: self.offset,
            directory: true,
        };
        let mut head = Vec::with_capacity(30 + name.len());
        spec::local_header(&mut head, &entry);
        spec::central_record(self.central.room(central_record_len(&entry)), &entry);
        self.emit(&head)?;
        self.entries += 1;
        self.manifest.add(&ManifestLine {
            key: Cow::Borrowed(&obj.key),
            entry: Some(Cow::Borrowed(&name)),
            size: 0,
            etag: Cow::Borrowed(&obj.etag),
            last_modified: Cow::Borrowed(&obj.last_modified),
            content_type: meta.content_type.as_deref().map(Cow::Borrowed),
            metadata: Some(Cow::Borrowed(&meta.metadata)),
            headers: Cow::Borrowed(&meta.headers),
            acl: meta.acl.as_ref().map(Cow::Borrowed),
            tags: (!meta.tags.is_empty()).then_some(Cow::Borrowed(&meta.tags[..])),
            crc32: Some("00000000".into()),
            skipped: None,
        })?;
        Ok(name)
    }

    /// Records in the manifest an object that is not in the archive, and why.
    pub fn note_skipped(&mut self, obj: &ListedObject, reason: &str) -> Result<(), ArchiveError> {
        self.manifest.add(&ManifestLine {
            key: Cow::Borrowed(&obj.key),
            size: obj.size,
            etag: Cow::Borrowed(&obj.etag),
            last_modified: Cow::Borrowed(&obj.last_modified),
            skipped: Some(Cow::Borrowed(reason)),
            ..Default::default()
        })?;
        Ok(())
    }

    /// Adds the archive's own record `name` (not an object: no manifest line), stored,
    /// its CRC and sizes in the local header.
    pub fn add_record(&mut self, name: &'static str, data: &[u8]) -> Result<(), ArchiveError> {
        if self.open.is_some() {
            return Err(ArchiveError("an entry is already open".into()));
        }
        if !self.settings_reserved {
            return Err(ArchiveError(format!(
                "'{name}' may be an object's name in this archive"
            )));
        }
        let entry = Entry {
            name,
            method: STORED,
            descriptor: false,
            zip64: false,
            dos_time: 0,
            dos_date: (1 << 5) | 1,
            crc32: crc32fast::hash(data),
            compressed: data.len() as u64,
            uncompressed: data.len() as u64,
            offset: self.offset,
            directory: false,
        };
        if entry.compressed >= MAX32 {
            return Err(ArchiveError(format!("'{name}' is too big for a record")));
        }
        let mut head = Vec::with_capacity(30 + name.len());
        spec::local_header(&mut head, &entry);
        spec::central_record(self.central.room(central_record_len(&entry)), &entry);
        self.emit(&head)?;
        self.emit(data)?;
        self.entries += 1;
        Ok(())
    }

    /// Ends the archive. Returns what is left to write, in order: the manifest entry, the
    /// central directory and the end records, as the blocks they are held in, after the
    /// segments earlier checkpoints stored.
    pub fn finish(mut self) -> Result<VecDeque<TailPiece>, ArchiveError> {
        if self.open.is_some() {
            return Err(ArchiveError("an entry is still open".into()));
        }
        let done = self.manifest.finish()?;
        let manifest = done.deflated;
        let prior_manifest: u64 = self.prior.iter().map(|s| s.manifest).sum();
        let prior_central: u64 = self.prior.iter().map(|s| s.central).sum();
        let manifest_len = prior_manifest + manifest.len;
        let entry = Entry {
            name: MANIFEST_NAME,
            method: DEFLATED,
            descriptor: false,
            zip64: done.len >= MAX32 || manifest_len >= MAX32,
            dos_time: 0,
            dos_date: (1 << 5) | 1,
            crc32: done.crc32,
            compressed: manifest_len,
            uncompressed: done.len,
            offset: self.offset,
            directory: false,
        };
        let mut head = Vec::new();
        spec::local_header(&mut head, &entry);
        spec::central_record(self.central.room(central_record_len(&entry)), &entry);
        let cd_offset = self.offset + head.len() as u64 + manifest_len;
        let mut end = Vec::new();
        spec::end_records(
            &mut end,
            self.entries + 1,
            cd_offset,
            prior_central + self.central.len,
        );
        let stored = |what: &'static str| {
            self.prior
                .iter()
                .enumerate()
                .map(move |(i, s)| TailPiece::Stored {
                    n: i + 1,
                    what,
                    len: if what == "manifest" {
                        s.manifest
                    } else {
                        s.central
                    },
                })
                .filter(|p| !matches!(p, TailPiece::Stored { len: 0, .. }))
        };
        let mut tail = VecDeque::new();
        tail.push_back(TailPiece::Bytes(head));
        tail.extend(stored("manifest"));
        tail.extend(manifest.blocks.into_iter().map(TailPiece::Bytes));
        tail.extend(stored("central"));
        tail.extend(self.central.blocks.into_iter().map(TailPiece::Bytes));
        tail.push_back(TailPiece::Bytes(end));
        Ok(tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::parts::PartBuffer;
    use std::io::Read;

    fn obj(key: &str, size: u64) -> ListedObject {
        ListedObject {
            key: key.into(),
            size,
            etag: "\"e\"".into(),
            last_modified: "2024-02-29T23:59:58.000Z".into(),
        }
    }

    fn add(a: &mut ZipWriter<PartBuffer>, key: &str, data: &[u8], method: Method) -> String {
        let o = obj(key, data.len() as u64);
        let name = a.start_file(&o, method).unwrap();
        for piece in data.chunks(70_000) {
            a.write(piece).unwrap();
        }
        let meta = ObjectMeta {
            content_type: Some("text/plain".into()),
            metadata: vec![("colour".into(), "blue".into())],
            ..Default::default()
        };
        a.finish_file(&o, &meta).unwrap();
        name
    }

    fn finish(a: ZipWriter<PartBuffer>, buf: &PartBuffer) -> Vec<u8> {
        for piece in a.finish().unwrap() {
            let TailPiece::Bytes(block) = piece else {
                panic!("no checkpoint was made");
            };
            buf.clone().write_all(&block).unwrap();
        }
        buf.take_rest().data
    }

    #[test]
    fn entries_read_back_with_the_zip_crate() {
        let buf = PartBuffer::new(1 << 30);
        let mut a = ZipWriter::new(buf.clone(), 6);
        let text = b"hello world, hello world! ".repeat(10_000);
        let noise: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert_eq!(add(&mut a, "t.txt", &text, Method::Deflate), "t.txt");
        assert_eq!(add(&mut a, "n.bin", &noise, Method::Store), "n.bin");
        assert_eq!(add(&mut a, "empty", b"", Method::Deflate), "empty");
        assert_eq!(
            a.add_directory(&obj("dir/", 0), &ObjectMeta::default())
                .unwrap(),
            "dir/"
        );
        a.note_skipped(&obj("gone", 5), "deleted").unwrap();
        let bytes = finish(a, &buf);
        let mut zip = ::zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(zip.len(), 5);
        for (name, want) in [("t.txt", &text[..]), ("n.bin", &noise[..]), ("empty", b"")] {
            let mut f = zip.by_name(name).unwrap();
            let mut got = Vec::new();
            f.read_to_end(&mut got).unwrap();
            assert_eq!(got, want, "{name}");
            assert_eq!(f.size(), want.len() as u64);
        }
        let c = zip.by_name("t.txt").unwrap().compressed_size();
        assert!(c < text.len() as u64 / 50, "{c}");
        assert_eq!(
            zip.by_name("empty").unwrap().compression(),
            ::zip::CompressionMethod::Stored
        );
        assert!(zip.by_name("dir/").unwrap().is_dir());
        let mut m = String::new();
        zip.by_name(MANIFEST_NAME)
            .unwrap()
            .read_to_string(&mut m)
            .unwrap();
        let lines: Vec<serde_json::Value> = m
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0]["key"], "t.txt");
        assert_eq!(lines[0]["crc32"], format!("{:08x}", crc32fast::hash(&text)));
        assert_eq!(lines[1]["size"], 300_000);
        assert_eq!(lines[1]["contentType"], "text/plain");
        assert_eq!(lines[1]["metadata"]["colour"], "blue");
        assert_eq!(lines[1]["lastModified"], "2024-02-29T23:59:58.000Z");
        assert_eq!(lines[1]["etag"], "\"e\"");
        assert_eq!(lines[4]["skipped"], "deleted");
        assert!(lines[4].get("entry").is_none());
    }

    #[test]
    fn an_archive_begun_by_an_earlier_version_gets_no_settings_record() {
        let buf = PartBuffer::new(1 << 20);
        let mut a = ZipWriter::new(buf.clone(), 6);
        add(&mut a, "x", b"x", Method::Store);
        let mut state = a.state();
        assert!(state.settings_reserved);
        // A checkpoint of an earlier version: its objects may hold the name.
        state.settings_reserved = false;
        let mut b = ZipWriter::resume(PartBuffer::new(1 << 20), 6, &state, &a.names());
        assert!(!b.settings_reserved());
        assert!(b.add_record(SETTINGS_NAME, b"{}").is_err());
    }

    #[test]
    fn sizes_are_checked_against_the_listing() {
        let buf = PartBuffer::new(1 << 20);
        let mut a = ZipWriter::new(buf.clone(), 6);
        let o = obj("a", 3);
        a.start_file(&o, Method::Store).unwrap();
        assert!(a.write(b"four").is_err());
        a.write(b"tw").unwrap();
        assert!(a.finish_file(&o, &ObjectMeta::default()).is_err());
    }

    #[test]
    fn duplicate_names_get_suffixes_and_a_manifest() {
        let buf = PartBuffer::new(1 << 20);
        let mut a = ZipWriter::new(buf.clone(), 6);
        assert_eq!(add(&mut a, "a//b.txt", b"one", Method::Deflate), "a/b.txt");
        assert_eq!(add(&mut a, "a/b.txt", b"two", Method::Store), "a/b~2.txt");
        assert_eq!(
            a.add_directory(&obj("dir/", 0), &ObjectMeta::default())
                .unwrap(),
            "dir/"
        );
        // A file and a folder of the same name cannot both be extracted.
        assert_eq!(add(&mut a, "dir", b"x", Method::Store), "dir~2");
        assert_eq!(
            add(&mut a, MANIFEST_NAME, b"mine", Method::Store),
            ".spaces-backup/manifest~2.jsonl"
        );
        assert_eq!(
            add(&mut a, SETTINGS_NAME, b"theirs", Method::Store),
            ".spaces-backup/bucket~2.json"
        );
        assert_eq!(a.renamed(), 5);
        // The archive's own record keeps its name, and has no manifest line.
        a.add_record(SETTINGS_NAME, b"{\"format\":1}").unwrap();
        let bytes = finish(a, &buf);
        let mut zip = ::zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let mut s = String::new();
        zip.by_name(SETTINGS_NAME)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "{\"format\":1}");
        s.clear();
        zip.by_name("a/b~2.txt")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "two");
        s.clear();
        zip.by_name(MANIFEST_NAME)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        let first: serde_json::Value = serde_json::from_str(s.lines().next().unwrap()).unwrap();
        assert_eq!(first["key"], "a//b.txt");
        assert_eq!(first["entry"], "a/b.txt");
        assert_eq!(s.lines().count(), 6);
    }

    #[test]
    fn a_writer_resumed_from_checkpoints_makes_one_archive() {
        // Run 1 writes two entries and checkpoints; run 2 resumes from the state alone
        // (names, offsets, manifest CRC), writes one more, checkpoints again and goes on
        // in the same writer; the end is assembled from the stored segments.
        let mut stored: Vec<Spilled> = Vec::new();
        let mut archive = Vec::new();
        let buf = PartBuffer::new(1 << 30);
        let mut a = ZipWriter::new(buf.clone(), 6);
        add(&mut a, "a//b.txt", &b"one ".repeat(1000), Method::Deflate);
        add(&mut a, "n.bin", b"noise", Method::Store);
        stored.push(a.spill().unwrap());
        let (state, names) = (a.state(), a.names());
        archive.extend(buf.take_rest().data);
        drop(a);

        let buf = PartBuffer::new(1 << 30);
        let mut a = ZipWriter::resume(buf.clone(), 6, &state, &names);
        // The name taken in run 1 is still taken.
        assert_eq!(add(&mut a, "a/b.txt", b"two", Method::Deflate), "a/b~2.txt");
        stored.push(a.spill().unwrap());
        add(&mut a, "z", b"last", Method::Deflate);
        a.note_skipped(&obj("gone", 1), "deleted").unwrap();
        for piece in a.finish().unwrap() {
            match piece {
                TailPiece::Bytes(b) => buf.clone().write_all(&b).unwrap(),
                TailPiece::Stored { n, what, len } => {
                    let s = &stored[n - 1];
                    let b = if what == "manifest" {
                        &s.manifest
                    } else {
                        &s.central
                    };
                    assert_eq!(b.len() as u64, len);
                    buf.clone().write_all(b).unwrap();
                }
            }
        }
        archive.extend(buf.take_rest().data);
        let mut zip = ::zip::ZipArchive::new(std::io::Cursor::new(archive)).unwrap();
        assert_eq!(zip.len(), 5);
        let mut s = String::new();
        zip.by_name("a/b~2.txt")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "two");
        s.clear();
        zip.by_name("a/b.txt")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s.len(), 4000);
        s.clear();
        // The manifest's CRC (checked by the reader) spans both runs.
        zip.by_name(MANIFEST_NAME)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        let keys: Vec<String> = s
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["key"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(keys, ["a//b.txt", "n.bin", "a/b.txt", "z", "gone"]);
    }

    #[test]
    fn many_entries_use_zip64_end_records() {
        let buf = PartBuffer::new(1 << 30);
        let mut a = ZipWriter::new(buf.clone(), 1);
        for i in 0..70_000 {
            add(
                &mut a,
                &format!("f/{i}"),
                if i % 2 == 0 { b"" } else { b"x" },
                Method::Deflate,
            );
        }
        // Compact: the central record plus a share of the name set and manifest.
        let per_entry = a.held_bytes() / 70_000;
        assert!(per_entry < 150, "{per_entry} bytes per entry");
        let bytes = finish(a, &buf);
        let zip = ::zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(zip.len(), 70_001);
    }
}
