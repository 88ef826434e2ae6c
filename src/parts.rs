//! The bridge from the ZIP stream to the multipart upload: a buffer the archive writes
//! into, cut into fixed-size parts as it fills. Memory stays at about one part.

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;

/// S3's limit on parts in one multipart upload.
pub const MAX_PARTS: u32 = 10_000;

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
