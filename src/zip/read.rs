//! Reading archives from any `std::io::Read` (a response body): the central directory a
//! record at a time, and each entry's bytes, inflated and checked against its record. The
//! `zip` crate reads the entry stream (local header, stored or deflate data, CRC-32
//! against the central directory); the size check and the words for the user are ours.

use std::io::{self, Read};

use crate::zip::spec::{self, CentralEntry, DEFLATED, STORED};

/// The central directory's records, one at a time, from a reader positioned at its start
/// and ending at its end.
pub struct CentralDirectory<R: Read> {
    input: R,
    buf: Vec<u8>,
    at: usize,
    ended: bool,
}

impl<R: Read> CentralDirectory<R> {
    pub fn new(input: R) -> Self {
        Self {
            input,
            buf: Vec::new(),
            at: 0,
            ended: false,
        }
    }

    /// The next record, or `None` at the end of the directory.
    pub fn next_entry(&mut self) -> io::Result<Option<CentralEntry>> {
        loop {
            if let Some((entry, n)) = spec::central_entry(&self.buf[self.at..]).map_err(bad)? {
                self.at += n;
                return Ok(Some(entry));
            }
            if self.ended {
                if self.at < self.buf.len() {
                    return Err(bad("the central directory ends inside a record"));
                }
                return Ok(None);
            }
            // Keep only the unread part, then read more behind it.
            self.buf.drain(..self.at);
            self.at = 0;
            let len = self.buf.len();
            self.buf.resize(len + 64 * 1024, 0);
            let n = self.input.read(&mut self.buf[len..])?;
            self.buf.truncate(len + n);
            self.ended = n == 0;
        }
    }
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Reads the entry of record `e` from `input`, which is positioned at its local header:
/// `f` gets its uncompressed bytes, which fail with `InvalidData` at their end when their
/// CRC-32 or size differs from the record. `f` must read to the end for the check.
pub fn read_entry<R: Read, T>(
    input: &mut R,
    e: &CentralEntry,
    f: impl FnOnce(&mut dyn Read) -> io::Result<T>,
) -> io::Result<T> {
    if e.method != STORED && e.method != DEFLATED {
        return Err(bad(format!(
            "compression method {}, which this tool never writes",
            e.method
        )));
    }
    // Streamed entries say their CRC and compressed size only after their data: the
    // record's values are the ones to read by.
    let options = ::zip::read::ZipReadOptions::new()
        .override_compressed_size(e.compressed)
        .override_uncompressed_size(e.uncompressed)
        .override_crc(e.crc32);
    let file = ::zip::read::read_zipfile_from_stream_with_options(input, options)
        .map_err(zip_error)?
        .ok_or_else(|| bad("a local header is missing where the record points"))?;
    let mut checked = Checked {
        inner: file,
        record: e,
        read: 0,
    };
    f(&mut checked)
}

fn zip_error(e: ::zip::result::ZipError) -> io::Error {
    match e {
        ::zip::result::ZipError::Io(io) => io,
        other => bad(other.to_string()),
    }
}

/// An entry's bytes, counted, with the record's checks in words a user can act on.
struct Checked<'e, R: Read> {
    inner: R,
    record: &'e CentralEntry,
    read: u64,
}

impl<R: Read> Read for Checked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            // The zip crate's CRC check, at the end of the data.
            Err(e)
                if e.kind() == io::ErrorKind::InvalidData
                    && e.to_string() == "Invalid checksum" =>
            {
                return Err(bad(format!(
                    "CRC-32 of the bytes differs from its record's {:08x}",
                    self.record.crc32
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(bad(format!("does not inflate: {e}")))
            }
            Err(e) => return Err(e),
        };
        self.read += n as u64;
        let want = self.record.uncompressed;
        if self.read > want || (n == 0 && !buf.is_empty() && self.read != want) {
            return Err(bad(format!("{} bytes, its record says {want}", self.read)));
        }
        Ok(n)
    }
}

/// A reader that knows how far it has read: an archive read front to back.
pub struct Positioned<R: Read> {
    inner: R,
    pub offset: u64,
}

impl<R: Read> Positioned<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, offset: 0 }
    }

    /// Reads and drops bytes up to `offset`, which must not be behind.
    pub fn skip_to(&mut self, offset: u64) -> io::Result<()> {
        if offset < self.offset {
            return Err(bad("two entries overlap"));
        }
        let want = offset - self.offset;
        let skipped = io::copy(&mut (&mut *self).take(want), &mut io::sink())?;
        if skipped < want {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ended early",
            ));
        }
        Ok(())
    }
}

impl<R: Read> Read for Positioned<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::fetch::ObjectMeta;
    use crate::backup::parts::PartBuffer;
    use crate::model::ListedObject;
    use crate::zip::write::{Method, ZipWriter};

    fn archive(files: &[(&str, &[u8], Method)]) -> Vec<u8> {
        let buf = PartBuffer::new(1 << 30);
        let mut w = ZipWriter::new(buf.clone(), 6);
        for (key, data, method) in files {
            let obj = ListedObject {
                key: key.to_string(),
                size: data.len() as u64,
                etag: String::new(),
                last_modified: String::new(),
            };
            w.start_file(&obj, *method).unwrap();
            w.write(data).unwrap();
            w.finish_file(&obj, &ObjectMeta::default()).unwrap();
        }
        for piece in w.finish().unwrap() {
            let crate::zip::write::TailPiece::Bytes(block) = piece else {
                panic!("no checkpoint was made");
            };
            std::io::Write::write_all(&mut buf.clone(), &block).unwrap();
        }
        buf.take_rest().data
    }

    fn directory(bytes: &[u8]) -> Vec<CentralEntry> {
        let dir = spec::find_directory(bytes, 0, bytes.len() as u64).unwrap();
        let start = dir.offset as usize;
        let mut cd = CentralDirectory::new(&bytes[start..start + dir.size as usize]);
        let mut out = Vec::new();
        while let Some(e) = cd.next_entry().unwrap() {
            out.push(e);
        }
        assert_eq!(out.len() as u64, dir.entries);
        out
    }

    #[test]
    fn entries_read_back_checked() {
        let text = b"hello, hello, hello, zip ".repeat(1000);
        let noise: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let bytes = archive(&[
            ("t.txt", &text, Method::Deflate),
            ("n.bin", &noise, Method::Store),
            ("empty", b"", Method::Deflate),
        ]);
        let entries = directory(&bytes);
        assert_eq!(entries.len(), 4, "three files and the manifest");
        for (e, want) in entries.iter().zip([&text[..], &noise[..], b""]) {
            let mut input = &bytes[e.offset as usize..];
            let got = read_entry(&mut input, e, |r| {
                let mut v = Vec::new();
                r.read_to_end(&mut v).map(|_| v)
            })
            .unwrap();
            assert_eq!(got, want, "{}", e.name);
        }

        // One flipped byte inside the stored noise: the CRC check says so.
        let mut damaged = bytes.clone();
        let at = entries[1].offset as usize + 2_000;
        damaged[at] ^= 0xFF;
        let mut input = &damaged[entries[1].offset as usize..];
        let err =
            read_entry(&mut input, &entries[1], |r| r.read_to_end(&mut Vec::new())).unwrap_err();
        assert!(err.to_string().contains("CRC-32"), "{err}");

        // A record that claims another size.
        let mut wrong = entries[0].clone();
        wrong.uncompressed += 1;
        let mut input = &bytes[wrong.offset as usize..];
        let err = read_entry(&mut input, &wrong, |r| r.read_to_end(&mut Vec::new())).unwrap_err();
        assert!(err.to_string().contains("its record says"), "{err}");
    }

    #[test]
    fn positioned_reads_skip_forward_only() {
        let mut p = Positioned::new(&b"0123456789"[..]);
        p.skip_to(4).unwrap();
        let mut b = [0u8; 2];
        p.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"45");
        assert_eq!(p.offset, 6);
        assert!(p.skip_to(5).is_err());
        assert!(p.skip_to(20).is_err());
    }
}
