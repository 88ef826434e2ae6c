//! The bridge from the ZIP stream to the multipart upload: a buffer the archive writes
//! into, cut into fixed-size parts as it fills. Memory stays at about one part.

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;

use crate::config::MAX_PART_SIZE;

/// S3's limit on parts in one multipart upload.
pub const MAX_PARTS: u32 = 10_000;

/// Parts per size step: without an explicit PART_SIZE, the part size doubles after every
/// this many parts, so an archive of unknown size always fits in 10,000 parts.
pub const PARTS_PER_STEP: u32 = 1_000;

/// Size of part `number` (from 1). A PART_SIZE the user set is used as it is; the default
/// grows: 8 MiB parts for the first 8,000 MiB, 16 MiB for the next 16,000 MiB... up to
/// 4 GiB parts, which makes ~8 TiB in 10,000 parts (S3's own limit is 5 TiB).
pub fn part_size_for(number: u32, base: u64, fixed: bool) -> u64 {
    if fixed {
        return base;
    }
    let step = number.saturating_sub(1) / PARTS_PER_STEP;
    base.checked_shl(step)
        .unwrap_or(u64::MAX)
        .min(MAX_PART_SIZE)
}

/// The largest archive that fits in 10,000 parts with this sizing.
pub fn max_archive_size(base: u64, fixed: bool) -> u64 {
    (1..=MAX_PARTS).map(|n| part_size_for(n, base, fixed)).sum()
}

/// The buffer behind the archive. Cloning shares it: the ZIP writer holds one handle
/// and the uploader another.
#[derive(Clone, Default)]
pub struct PartBuffer {
    bytes: Rc<RefCell<Vec<u8>>>,
    total: Rc<RefCell<u64>>,
}

impl PartBuffer {
    pub fn new(part_size: u64) -> Self {
        // Room for one part plus the overflow of one write, so the buffer never regrows.
        let cap = usize::try_from(part_size)
            .unwrap_or(usize::MAX)
            .saturating_add(256 * 1024);
        Self {
            bytes: Rc::new(RefCell::new(Vec::with_capacity(cap))),
            total: Rc::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes written through this buffer so far: the archive's size.
    pub fn total(&self) -> u64 {
        *self.total.borrow()
    }

    /// A full part of exactly `part_size` bytes, if one is ready. Only the overflow past
    /// the part is copied, into a fresh buffer of the same capacity.
    pub fn take_part(&self, part_size: u64) -> Option<Vec<u8>> {
        let part_size = usize::try_from(part_size).ok()?;
        let mut bytes = self.bytes.borrow_mut();
        if bytes.len() < part_size {
            return None;
        }
        let mut next = Vec::with_capacity(bytes.capacity());
        next.extend_from_slice(&bytes[part_size..]);
        bytes.truncate(part_size);
        Some(std::mem::replace(&mut *bytes, next))
    }

    /// Whatever is left: the last part.
    pub fn take_rest(&self) -> Vec<u8> {
        std::mem::take(&mut *self.bytes.borrow_mut())
    }
}

impl Write for PartBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.borrow_mut().extend_from_slice(buf);
        *self.total.borrow_mut() += buf.len() as u64;
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

    #[test]
    fn default_parts_grow_to_fit_five_tib() {
        assert_eq!(part_size_for(1, DEFAULT_PART_SIZE, false), 8 * MIB);
        assert_eq!(part_size_for(1000, DEFAULT_PART_SIZE, false), 8 * MIB);
        assert_eq!(part_size_for(1001, DEFAULT_PART_SIZE, false), 16 * MIB);
        assert_eq!(part_size_for(10_000, DEFAULT_PART_SIZE, false), 4096 * MIB);
        assert!(max_archive_size(DEFAULT_PART_SIZE, false) >= 5 * 1024 * 1024 * MIB);
        // Even from the smallest part, growth stays within S3's 5 GiB part limit.
        assert!(part_size_for(10_000, MIN_PART_SIZE, false) <= MAX_PART_SIZE);
        assert!(part_size_for(10_000, 1024 * MIB, false) <= MAX_PART_SIZE);
    }

    #[test]
    fn explicit_part_size_is_kept() {
        assert_eq!(part_size_for(9_999, 5 * MIB, true), 5 * MIB);
        assert_eq!(max_archive_size(5 * MIB, true), 50_000 * MIB);
    }

    #[test]
    fn cuts_exact_parts_and_keeps_the_rest() {
        let mut buf = PartBuffer::new(10);
        let handle = buf.clone();
        buf.write_all(&[1; 7]).unwrap();
        assert!(handle.take_part(10).is_none());
        buf.write_all(&[2; 8]).unwrap();
        let part = handle.take_part(10).unwrap();
        assert_eq!(part.len(), 10);
        assert_eq!(&part[7..], &[2, 2, 2]);
        assert_eq!(handle.len(), 5);
        assert!(handle.take_part(10).is_none());
        assert_eq!(handle.take_rest(), vec![2; 5]);
        assert!(handle.is_empty());
        assert_eq!(handle.total(), 15);
    }
}
