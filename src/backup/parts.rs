//! Between stages 3 and 4: a buffer the ZIP stream writes into, cut into fixed-size parts
//! as it fills, and the part sizes. Memory stays at about one part.

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::config::MAX_PART_SIZE;
use crate::s3::sigv4::hex;

/// S3's limit on parts in one multipart upload.
pub const MAX_PARTS: u32 = 10_000;

/// Parts per size step: without an explicit PART_SIZE, the part size doubles after every
/// this many parts, so an archive of unknown size always fits in 10,000 parts.
pub const PARTS_PER_STEP: u32 = 1_000;

/// Size of part `number` (from 1). A PART_SIZE the user set is used as it is; the default
/// grows: 5 MiB parts for the first 5,000 MiB, 10 MiB for the next 10,000 MiB... up to
/// 2.5 GiB parts, which makes 5,115,000 MiB (4.88 TiB) in 10,000 parts (S3's own limit
/// on an object is 5 TiB).
pub fn part_size_for(number: u32, base: u64, fixed: bool) -> u64 {
    if fixed {
        return base;
    }
    let step = number.saturating_sub(1) / PARTS_PER_STEP;
    base.checked_shl(step)
        .unwrap_or(u64::MAX)
        .min(MAX_PART_SIZE)
}

/// Parts an equal-parts archive is planned for: 10 % of S3's 10,000 kept for what grows
/// between the listing that sizes the parts and the one that is archived.
pub const EQUAL_PARTS_PLANNED: u64 = 9_000;

/// The one part size of an archive whose parts must all be equal (Cloudflare R2), for an
/// archive of at most `archive_bytes`: at least `base`, whole MiB, within 5 GiB; `None`
/// when no part size fits it in 10,000 parts.
pub fn equal_part_size(archive_bytes: u64, base: u64) -> Option<u64> {
    const MIB: u64 = 1024 * 1024;
    let needed = archive_bytes.div_ceil(EQUAL_PARTS_PLANNED).div_ceil(MIB) * MIB;
    let size = needed.max(base);
    (size <= MAX_PART_SIZE).then_some(size)
}

/// The largest an archive of these objects can be: stored entries (deflate only
/// shrinks; stored blocks add 5 bytes per 65,535), each with its local header, ZIP64
/// extra, data descriptor, central record and manifest line.
pub fn archive_bound(bytes: u64, objects: u64, key_bytes: u64) -> u64 {
    let data = bytes + 5 * bytes.div_ceil(65_535) + 5 * objects;
    let per_entry = 30 + 20 + 24 + 46 + 28 + 512;
    data + objects * per_entry + 4 * key_bytes + 1024 * 1024
}

/// A cut part with the SHA-256 that signs its upload.
pub struct Part {
    pub data: Vec<u8>,
    pub sha256: String,
}

struct Inner {
    bytes: Vec<u8>,
    total: u64,
    /// Size of the part now filling.
    part_size: usize,
    /// Hash of `bytes[..hashed]`: the part is hashed as it fills, a little at a time
    /// between I/O, instead of in one pass that would stall every transfer.
    hasher: Sha256,
    hashed: usize,
}

impl Inner {
    fn catch_up(&mut self) {
        let end = self.bytes.len().min(self.part_size);
        if end > self.hashed {
            self.hasher.update(&self.bytes[self.hashed..end]);
            self.hashed = end;
        }
    }

    fn cut(&mut self, at: usize) -> Part {
        self.catch_up();
        let mut next = Vec::with_capacity(self.bytes.capacity().max(self.part_size));
        next.extend_from_slice(&self.bytes[at..]);
        self.bytes.truncate(at);
        let data = std::mem::replace(&mut self.bytes, next);
        let sha256 = hex(&std::mem::take(&mut self.hasher).finalize());
        self.hashed = 0;
        Part { data, sha256 }
    }
}

/// The buffer behind the archive. Cloning shares it: the ZIP writer holds one handle
/// and the uploader another.
#[derive(Clone)]
pub struct PartBuffer(Rc<RefCell<Inner>>);

impl PartBuffer {
    pub fn new(part_size: u64) -> Self {
        let part_size = usize::try_from(part_size).unwrap_or(usize::MAX);
        // Room for one part plus the overflow of one write, so the buffer never regrows.
        Self(Rc::new(RefCell::new(Inner {
            bytes: Vec::with_capacity(part_size.saturating_add(512 * 1024)),
            total: 0,
            part_size,
            hasher: Sha256::new(),
            hashed: 0,
        })))
    }

    /// A buffer that goes on after `stored` bytes of archive already in parts, holding
    /// `pending`, the bytes a checkpoint kept that were not yet a part.
    pub fn resumed(part_size: u64, stored: u64, pending: &[u8]) -> Self {
        let buf = Self::new(part_size);
        {
            let mut inner = buf.0.borrow_mut();
            inner.bytes.extend_from_slice(pending);
            inner.total = stored + pending.len() as u64;
            inner.catch_up();
        }
        buf
    }

    /// A copy of the bytes not yet cut into a part, for a checkpoint.
    pub fn pending(&self) -> Vec<u8> {
        self.0.borrow().bytes.clone()
    }

    /// Sets the size of the part now filling (parts only ever grow).
    pub fn set_part_size(&self, part_size: u64) {
        let mut inner = self.0.borrow_mut();
        inner.part_size = usize::try_from(part_size)
            .unwrap_or(usize::MAX)
            .max(inner.hashed);
    }

    pub fn len(&self) -> usize {
        self.0.borrow().bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when a whole part is ready to be cut.
    pub fn part_ready(&self) -> bool {
        let inner = self.0.borrow();
        inner.bytes.len() >= inner.part_size
    }

    /// Bytes written through this buffer so far: the archive's size.
    pub fn total(&self) -> u64 {
        self.0.borrow().total
    }

    /// A full part of exactly the part size, if one is ready. Only the overflow past the
    /// part is copied, into a fresh buffer.
    pub fn take_part(&self) -> Option<Part> {
        let mut inner = self.0.borrow_mut();
        if inner.bytes.len() < inner.part_size {
            return None;
        }
        let at = inner.part_size;
        Some(inner.cut(at))
    }

    /// Whatever is left: the last part.
    pub fn take_rest(&self) -> Part {
        let mut inner = self.0.borrow_mut();
        let at = inner.bytes.len();
        inner.cut(at)
    }
}

impl Write for PartBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut inner = self.0.borrow_mut();
        inner.bytes.extend_from_slice(buf);
        inner.total += buf.len() as u64;
        inner.catch_up();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_PART_SIZE, MIB, MIN_PART_SIZE};

    /// The largest archive that fits in 10,000 parts with this sizing.
    fn max_archive_size(base: u64, fixed: bool) -> u64 {
        (1..=MAX_PARTS).map(|n| part_size_for(n, base, fixed)).sum()
    }

    #[test]
    fn default_parts_grow_to_about_five_tib() {
        assert_eq!(part_size_for(1, DEFAULT_PART_SIZE, false), 5 * MIB);
        assert_eq!(part_size_for(1000, DEFAULT_PART_SIZE, false), 5 * MIB);
        assert_eq!(part_size_for(1001, DEFAULT_PART_SIZE, false), 10 * MIB);
        assert_eq!(part_size_for(10_000, DEFAULT_PART_SIZE, false), 2560 * MIB);
        assert_eq!(max_archive_size(DEFAULT_PART_SIZE, false), 5_115_000 * MIB);
        // Even from the smallest part, growth stays within S3's 5 GiB part limit.
        assert!(part_size_for(10_000, MIN_PART_SIZE, false) <= MAX_PART_SIZE);
        assert!(part_size_for(10_000, 1024 * MIB, false) <= MAX_PART_SIZE);
    }

    #[test]
    fn equal_parts_are_sized_from_the_total() {
        assert_eq!(equal_part_size(1 << 30, DEFAULT_PART_SIZE), Some(5 * MIB));
        // 200 GB: about 21.2 MiB per part for 9,000 parts.
        let p = equal_part_size(200_000_000_000, DEFAULT_PART_SIZE).unwrap();
        assert_eq!(p, 22 * MIB);
        assert!(200_000_000_000u64.div_ceil(p) <= EQUAL_PARTS_PLANNED);
        // 5 TiB fits in parts under 5 GiB.
        let five_tib = 5 * 1024 * 1024 * MIB;
        let p = equal_part_size(five_tib, DEFAULT_PART_SIZE).unwrap();
        assert!(p <= MAX_PART_SIZE && five_tib.div_ceil(p) <= MAX_PARTS as u64);
        assert_eq!(
            equal_part_size(60 * 1024 * 1024 * MIB, DEFAULT_PART_SIZE),
            None
        );
        assert!(archive_bound(1000, 1, 10) > 1000 + 30);
    }

    #[test]
    fn explicit_part_size_is_kept() {
        assert_eq!(part_size_for(9_999, 5 * MIB, true), 5 * MIB);
        assert_eq!(max_archive_size(5 * MIB, true), 50_000 * MIB);
    }

    #[test]
    fn cuts_exact_parts_hashed_as_they_fill() {
        let mut buf = PartBuffer::new(10);
        let handle = buf.clone();
        buf.write_all(&[1; 7]).unwrap();
        assert!(handle.take_part().is_none());
        buf.write_all(&[2; 8]).unwrap();
        assert!(handle.part_ready());
        let part = handle.take_part().unwrap();
        assert_eq!(part.data.len(), 10);
        assert_eq!(&part.data[7..], &[2, 2, 2]);
        assert_eq!(part.sha256, crate::s3::sigv4::sha256_hex(&part.data));
        assert_eq!(handle.len(), 5);
        handle.set_part_size(20);
        buf.write_all(&[3; 6]).unwrap();
        assert!(handle.take_part().is_none());
        let rest = handle.take_rest();
        assert_eq!(rest.data, [vec![2; 5], vec![3; 6]].concat());
        assert_eq!(rest.sha256, crate::s3::sigv4::sha256_hex(&rest.data));
        assert!(handle.is_empty());
        assert_eq!(handle.total(), 21);
    }

    #[test]
    fn a_resumed_buffer_continues_the_archive() {
        let mut buf = PartBuffer::resumed(10, 100, &[7; 6]);
        assert_eq!(buf.total(), 106);
        assert_eq!(buf.pending(), [7; 6]);
        buf.write_all(&[8; 5]).unwrap();
        let part = buf.take_part().unwrap();
        assert_eq!(part.data, [vec![7; 6], vec![8; 4]].concat());
        assert_eq!(part.sha256, crate::s3::sigv4::sha256_hex(&part.data));
        assert_eq!(buf.total(), 111);
    }
}
