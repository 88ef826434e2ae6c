//! The ZIP format in one place (PKWARE APPNOTE 6.3): signatures, methods, flags, the
//! ZIP64 rules, and every record both ways: local headers, data descriptors, central
//! directory records and end records are written here, and the end records, central
//! records and local header lengths parsed here. Pure byte layout; the writer decides
//! what goes where.

use time::OffsetDateTime;

/// The largest value a 32-bit field holds; the value itself means "see the ZIP64 extra".
pub const MAX32: u64 = 0xFFFF_FFFF;
const MAX16: u64 = 0xFFFF;

pub const LOCAL_SIG: u32 = 0x0403_4b50;
pub const CENTRAL_SIG: u32 = 0x0201_4b50;
const DESCRIPTOR_SIG: u32 = 0x0807_4b50;
const END_SIG: u32 = 0x0605_4b50;
const END64_SIG: u32 = 0x0606_4b50;
const LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EXTRA_ID: u16 = 0x0001;
/// A local header's fixed part, before its name and extra field.
pub const LOCAL_HEADER_LEN: u64 = 30;
/// A local header's name and extra field are at most this long, together.
pub const LOCAL_VARIABLE_MAX: u64 = 2 * 0xFFFF;

pub const STORED: u16 = 0;
pub const DEFLATED: u16 = 8;

/// CRC and sizes follow the data in a data descriptor.
const FLAG_DESCRIPTOR: u16 = 1 << 3;
/// Names are UTF-8.
const FLAG_UTF8: u16 = 1 << 11;

/// Version 2.0 (deflate, directories) or 4.5 (ZIP64) needed to extract.
fn version_needed(zip64: bool) -> u16 {
    if zip64 {
        45
    } else {
        20
    }
}

/// Made by Unix, spec 4.5: readers then take permissions from the external attributes.
const VERSION_MADE_BY: u16 = (3 << 8) | 45;

/// Largest deflate stored block.
pub const STORED_BLOCK: u64 = 0xFFFF;

/// The header of a deflate stored block of `len` bytes (RFC 1951 §3.2.4). Stored blocks
/// start byte-aligned and end byte-aligned, so they can be written back to back.
pub fn stored_block_header(len: u16, last: bool) -> [u8; 5] {
    let [lo, hi] = len.to_le_bytes();
    [u8::from(last), lo, hi, !lo, !hi]
}

/// Size of `size` bytes sent as deflate stored blocks of up to 65,535 bytes.
pub fn stored_blocks_size(size: u64) -> u64 {
    size + 5 * size.div_ceil(STORED_BLOCK).max(1)
}

/// MS-DOS time and date, as ZIP stores them (UTC here; years clamped to 1980..=2107).
pub fn dos_datetime(t: Option<OffsetDateTime>) -> (u16, u16) {
    let Some(t) = t else {
        return (0, (1 << 5) | 1);
    };
    if t.year() < 1980 {
        return (0, (1 << 5) | 1);
    }
    if t.year() > 2107 {
        return ((23 << 11) | (59 << 5) | 29, (127 << 9) | (12 << 5) | 31);
    }
    let time =
        (u16::from(t.hour()) << 11) | (u16::from(t.minute()) << 5) | (u16::from(t.second()) / 2);
    let date = ((t.year() - 1980) as u16) << 9
        | (u16::from(u8::from(t.month())) << 5)
        | u16::from(t.day());
    (time, date)
}

/// One entry as the central directory describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub name: &'a str,
    pub method: u16,
    /// CRC and sizes come after the data, in a data descriptor.
    pub descriptor: bool,
    /// The local header carries a ZIP64 extra and the descriptor has 8-byte sizes.
    pub zip64: bool,
    pub dos_time: u16,
    pub dos_date: u16,
    pub crc32: u32,
    pub compressed: u64,
    pub uncompressed: u64,
    /// Offset of the local header in the archive.
    pub offset: u64,
    pub directory: bool,
}

impl Entry<'_> {
    fn flags(&self) -> u16 {
        if self.descriptor {
            FLAG_UTF8 | FLAG_DESCRIPTOR
        } else {
            FLAG_UTF8
        }
    }
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A 32-bit field, or the marker when the value lives in the ZIP64 extra.
fn field32(v: u64, in_zip64: bool) -> u32 {
    if in_zip64 {
        u32::MAX
    } else {
        v as u32
    }
}

fn name_len(name: &str) -> u16 {
    // Entry names come from S3 keys (at most 1,024 bytes) plus a short suffix.
    u16::try_from(name.len()).unwrap_or(u16::MAX)
}

/// The local header. With a descriptor, the CRC is written as 0; sizes are written as
/// given (a compressed size of 0 means unknown), so streaming readers can plan ahead.
/// A ZIP64 local header carries both sizes in its extra field, as APPNOTE 4.5.3 asks.
pub fn local_header(out: &mut Vec<u8>, e: &Entry) {
    put32(out, LOCAL_SIG);
    put16(out, version_needed(e.zip64));
    put16(out, e.flags());
    put16(out, e.method);
    put16(out, e.dos_time);
    put16(out, e.dos_date);
    put32(out, if e.descriptor { 0 } else { e.crc32 });
    put32(out, field32(e.compressed, e.zip64));
    put32(out, field32(e.uncompressed, e.zip64));
    put16(out, name_len(e.name));
    put16(out, if e.zip64 { 20 } else { 0 });
    out.extend_from_slice(e.name.as_bytes());
    if e.zip64 {
        put16(out, ZIP64_EXTRA_ID);
        put16(out, 16);
        put64(out, e.uncompressed);
        put64(out, e.compressed);
    }
}

/// The data descriptor after an entry's data: 8-byte sizes exactly when the local header
/// had a ZIP64 extra, which is also when streaming readers expect them.
pub fn data_descriptor(out: &mut Vec<u8>, e: &Entry) {
    put32(out, DESCRIPTOR_SIG);
    put32(out, e.crc32);
    if e.zip64 {
        put64(out, e.compressed);
        put64(out, e.uncompressed);
    } else {
        put32(out, e.compressed as u32);
        put32(out, e.uncompressed as u32);
    }
}

/// The central directory record. Each field too big for 32 bits moves to the ZIP64 extra,
/// which holds exactly those fields, in APPNOTE order.
pub fn central_record(out: &mut Vec<u8>, e: &Entry) {
    let big_u = e.uncompressed >= MAX32;
    let big_c = e.compressed >= MAX32;
    let big_o = e.offset >= MAX32;
    let extra_len = 8 * (u16::from(big_u) + u16::from(big_c) + u16::from(big_o));
    let zip64 = extra_len > 0;
    put32(out, CENTRAL_SIG);
    put16(out, VERSION_MADE_BY);
    put16(out, version_needed(zip64 || e.zip64));
    put16(out, e.flags());
    put16(out, e.method);
    put16(out, e.dos_time);
    put16(out, e.dos_date);
    put32(out, e.crc32);
    put32(out, field32(e.compressed, big_c));
    put32(out, field32(e.uncompressed, big_u));
    put16(out, name_len(e.name));
    put16(out, if zip64 { 4 + extra_len } else { 0 });
    put16(out, 0); // comment length
    put16(out, 0); // disk number
    put16(out, 0); // internal attributes
    let mode: u32 = if e.directory { 0o040_755 } else { 0o100_644 };
    put32(out, (mode << 16) | if e.directory { 0x10 } else { 0 });
    put32(out, field32(e.offset, big_o));
    out.extend_from_slice(e.name.as_bytes());
    if zip64 {
        put16(out, ZIP64_EXTRA_ID);
        put16(out, extra_len);
        if big_u {
            put64(out, e.uncompressed);
        }
        if big_c {
            put64(out, e.compressed);
        }
        if big_o {
            put64(out, e.offset);
        }
    }
}

/// Size of the central directory record for `e`, without building it.
pub fn central_record_len(e: &Entry) -> usize {
    let zip64_fields = usize::from(e.uncompressed >= MAX32)
        + usize::from(e.compressed >= MAX32)
        + usize::from(e.offset >= MAX32);
    46 + e.name.len()
        + if zip64_fields > 0 {
            4 + 8 * zip64_fields
        } else {
            0
        }
}

/// The end of the archive: ZIP64 end record and locator when the entry count, the central
/// directory's size or its offset do not fit the classic record, then the classic record.
pub fn end_records(out: &mut Vec<u8>, entries: u64, cd_offset: u64, cd_size: u64) {
    let zip64 = entries >= MAX16 || cd_offset >= MAX32 || cd_size >= MAX32;
    if zip64 {
        let end64_offset = cd_offset + cd_size;
        put32(out, END64_SIG);
        put64(out, 44); // size of the rest of this record
        put16(out, VERSION_MADE_BY);
        put16(out, 45);
        put32(out, 0); // this disk
        put32(out, 0); // disk with the central directory
        put64(out, entries);
        put64(out, entries);
        put64(out, cd_size);
        put64(out, cd_offset);
        put32(out, LOCATOR_SIG);
        put32(out, 0);
        put64(out, end64_offset);
        put32(out, 1); // total disks
    }
    let count = entries.min(MAX16) as u16;
    put32(out, END_SIG);
    put16(out, 0);
    put16(out, 0);
    put16(out, count);
    put16(out, count);
    put32(out, cd_size.min(MAX32) as u32);
    put32(out, cd_offset.min(MAX32) as u32);
    put16(out, 0); // comment length
}

// --- Parsing ---

/// Bytes from the end that always hold the end records (a 64 KiB comment at most).
pub const TAIL: u64 = 22 + 0xFFFF + 20 + 56;

/// Where the central directory is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Directory {
    pub offset: u64,
    pub size: u64,
    pub entries: u64,
}

/// One central directory record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CentralEntry {
    pub name: String,
    pub method: u16,
    pub crc32: u32,
    pub compressed: u64,
    pub uncompressed: u64,
    /// Offset of the local header.
    pub offset: u64,
    /// General purpose flags, version needed, DOS time and date, external attributes:
    /// what [`CentralEntry::entry`] needs to write the record again elsewhere.
    pub flags: u16,
    pub version_needed: u16,
    pub dos_time: u16,
    pub dos_date: u16,
    pub external: u32,
}

impl CentralEntry {
    /// The entry as [`central_record`] writes it, named `name` at `offset`: the record
    /// of the same entry in an archive where its local header is elsewhere.
    pub fn entry<'a>(&self, name: &'a str, offset: u64) -> Entry<'a> {
        Entry {
            name,
            method: self.method,
            descriptor: self.flags & FLAG_DESCRIPTOR != 0,
            zip64: self.version_needed >= 45,
            dos_time: self.dos_time,
            dos_date: self.dos_date,
            crc32: self.crc32,
            compressed: self.compressed,
            uncompressed: self.uncompressed,
            offset,
            directory: self.external & 0x10 != 0,
        }
    }
}

/// A copy of the local header `header` (as read from the archive, at least its fixed
/// part, name and extra field) with its name replaced by `name`; `None` when `header`
/// is not a whole local header.
pub fn renamed_local_header(header: &[u8], name: &str) -> Option<Vec<u8>> {
    if u32_at(header, 0) != Some(LOCAL_SIG) {
        return None;
    }
    let name_len = usize::from(u16_at(header, 26)?);
    let extra_len = usize::from(u16_at(header, 28)?);
    let extra = header.get(30 + name_len..30 + name_len + extra_len)?;
    let mut out = Vec::with_capacity(30 + name.len() + extra_len);
    out.extend_from_slice(&header[..26]);
    put16(&mut out, name_len16(name));
    put16(&mut out, extra_len as u16);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(extra);
    Some(out)
}

/// The length of the local header at the start of `header` (its fixed part at least).
pub fn local_header_len(header: &[u8]) -> Option<u64> {
    if u32_at(header, 0) != Some(LOCAL_SIG) {
        return None;
    }
    Some(30 + u64::from(u16_at(header, 26)?) + u64::from(u16_at(header, 28)?))
}

fn name_len16(name: &str) -> u16 {
    name_len(name)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Finds the central directory from the archive's last bytes (`tail`, which starts at
/// `tail_start` in an archive of `len` bytes).
pub fn find_directory(tail: &[u8], tail_start: u64, len: u64) -> Result<Directory, String> {
    let not_zip = || "not a ZIP archive (no end of central directory record)".to_string();
    let mut at = tail.len().checked_sub(22).ok_or_else(not_zip)?;
    // The end record is the last one whose comment runs exactly to the end.
    loop {
        if u32_at(tail, at) == Some(END_SIG)
            && at + 22 + usize::from(u16_at(tail, at + 20).unwrap_or(0)) == tail.len()
        {
            break;
        }
        at = at.checked_sub(1).ok_or_else(not_zip)?;
    }
    let entries = u64::from(u16_at(tail, at + 10).unwrap_or(0));
    let size = u64::from(u32_at(tail, at + 12).unwrap_or(0));
    let offset = u64::from(u32_at(tail, at + 16).unwrap_or(0));
    let mut dir = Directory {
        offset,
        size,
        entries,
    };
    if at >= 20 && u32_at(tail, at - 20) == Some(LOCATOR_SIG) {
        let end64 = u64_at(tail, at - 20 + 8).ok_or_else(not_zip)?;
        let rel = end64
            .checked_sub(tail_start)
            .and_then(|r| usize::try_from(r).ok())
            .filter(|r| u32_at(tail, *r) == Some(END64_SIG))
            .ok_or("the ZIP64 end record is missing or out of place")?;
        dir = Directory {
            entries: u64_at(tail, rel + 32).ok_or_else(not_zip)?,
            size: u64_at(tail, rel + 40).ok_or_else(not_zip)?,
            offset: u64_at(tail, rel + 48).ok_or_else(not_zip)?,
        };
    }
    if dir.offset.checked_add(dir.size).is_none_or(|end| end > len) {
        return Err("the central directory lies outside the archive".into());
    }
    Ok(dir)
}

/// Parses the record at the start of `buf`. `Ok(None)` when `buf` holds only part of it.
/// Returns the entry and the record's length.
pub fn central_entry(buf: &[u8]) -> Result<Option<(CentralEntry, usize)>, String> {
    if buf.len() < 46 {
        return Ok(None);
    }
    if u32_at(buf, 0) != Some(CENTRAL_SIG) {
        return Err("a central directory record is damaged".into());
    }
    let get16 = |at| u16_at(buf, at).map(usize::from).unwrap_or(0);
    let (name_len, extra_len, comment_len) = (get16(28), get16(30), get16(32));
    let total = 46 + name_len + extra_len + comment_len;
    if buf.len() < total {
        return Ok(None);
    }
    let name = String::from_utf8_lossy(&buf[46..46 + name_len]).into_owned();
    let mut entry = CentralEntry {
        name,
        method: u16_at(buf, 10).unwrap_or(0),
        crc32: u32_at(buf, 16).unwrap_or(0),
        compressed: u64::from(u32_at(buf, 20).unwrap_or(0)),
        uncompressed: u64::from(u32_at(buf, 24).unwrap_or(0)),
        offset: u64::from(u32_at(buf, 42).unwrap_or(0)),
        flags: u16_at(buf, 8).unwrap_or(0),
        version_needed: u16_at(buf, 6).unwrap_or(0),
        dos_time: u16_at(buf, 12).unwrap_or(0),
        dos_date: u16_at(buf, 14).unwrap_or(0),
        external: u32_at(buf, 38).unwrap_or(0),
    };
    // ZIP64: the fields set to all ones follow in the extra field, in this order.
    let extra = &buf[46 + name_len..46 + name_len + extra_len];
    let mut i = 0;
    while i + 4 <= extra.len() {
        let id = u16_at(extra, i).unwrap_or(0);
        let n = usize::from(u16_at(extra, i + 2).unwrap_or(0));
        if id == ZIP64_EXTRA_ID {
            let mut at = i + 4;
            for field in [
                &mut entry.uncompressed,
                &mut entry.compressed,
                &mut entry.offset,
            ] {
                if *field == 0xFFFF_FFFF {
                    *field = u64_at(extra, at).ok_or("a ZIP64 extra field is too short")?;
                    at += 8;
                }
            }
        }
        i += 4 + n;
    }
    Ok(Some((entry, total)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn entry(name: &str) -> Entry<'_> {
        Entry {
            name,
            method: STORED,
            descriptor: false,
            zip64: false,
            dos_time: 0,
            dos_date: 33,
            crc32: 0,
            compressed: 0,
            uncompressed: 0,
            offset: 0,
            directory: false,
        }
    }

    #[test]
    fn stored_blocks_inflate_back() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut out = Vec::new();
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = rest.len().min(STORED_BLOCK as usize);
            out.extend_from_slice(&stored_block_header(n as u16, n == rest.len()));
            out.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        assert_eq!(out.len() as u64, stored_blocks_size(data.len() as u64));
        let mut back = Vec::new();
        flate2::read::DeflateDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        assert_eq!(stored_blocks_size(1), 6);
        assert_eq!(stored_blocks_size(65_535), 65_540);
        assert_eq!(stored_blocks_size(65_536), 65_546);
    }

    #[test]
    fn dos_times() {
        let t = crate::naming::parse_rfc3339("2024-02-29T23:59:58.000Z");
        let (time, date) = dos_datetime(t);
        assert_eq!(time, (23 << 11) | (59 << 5) | 29);
        assert_eq!(date, (44 << 9) | (2 << 5) | 29);
        assert_eq!(dos_datetime(None), (0, 33));
        assert_eq!(
            dos_datetime(crate::naming::parse_rfc3339("1970-01-01T00:00:00Z")),
            (0, 33)
        );
    }

    #[test]
    fn small_records_have_no_zip64() {
        let mut e = entry("a/b.txt");
        e.method = DEFLATED;
        e.descriptor = true;
        e.uncompressed = 10;
        let mut out = Vec::new();
        local_header(&mut out, &e);
        assert_eq!(out.len(), 30 + 7);
        assert_eq!(&out[6..8], &(FLAG_UTF8 | FLAG_DESCRIPTOR).to_le_bytes());
        assert_eq!(&out[22..26], &10u32.to_le_bytes());
        out.clear();
        data_descriptor(&mut out, &e);
        assert_eq!(out.len(), 16);
        out.clear();
        central_record(&mut out, &e);
        assert_eq!(out.len(), central_record_len(&e));
        assert_eq!(out.len(), 46 + 7);
        out.clear();
        end_records(&mut out, 65_534, 100, 100);
        assert_eq!(out.len(), 22);
    }

    #[test]
    fn big_values_move_to_zip64() {
        let mut e = entry("big");
        e.method = DEFLATED;
        e.descriptor = true;
        e.zip64 = true;
        e.uncompressed = (4 << 30) + 1;
        e.compressed = 5_000;
        e.offset = 5 << 30;
        let mut out = Vec::new();
        local_header(&mut out, &e);
        assert_eq!(out.len(), 30 + 3 + 20);
        assert_eq!(&out[18..26], &[0xFF; 8]);
        assert_eq!(&out[37..45], &e.uncompressed.to_le_bytes());
        out.clear();
        data_descriptor(&mut out, &e);
        assert_eq!(out.len(), 24);
        out.clear();
        central_record(&mut out, &e);
        // Only the uncompressed size and the offset overflow.
        assert_eq!(out.len(), 46 + 3 + 4 + 16);
        assert_eq!(out.len(), central_record_len(&e));
        assert_eq!(&out[20..24], &5_000u32.to_le_bytes());
        assert_eq!(&out[24..28], &[0xFF; 4]);
        out.clear();
        end_records(&mut out, 70_000, 10, 10);
        assert_eq!(out.len(), 56 + 20 + 22);
        assert_eq!(&out[out.len() - 12..out.len() - 10], &[0xFF, 0xFF]);
    }

    /// A whole archive from these records, read back by the `zip` crate.
    #[test]
    fn an_archive_reads_back() {
        let data = b"hello, zip";
        let crc = crc32fast::hash(data);
        let mut out = Vec::new();
        let mut central = Vec::new();
        let mut file = entry("dir/hello.txt");
        file.method = DEFLATED;
        file.descriptor = true;
        file.uncompressed = data.len() as u64;
        local_header(&mut out, &file);
        out.extend_from_slice(&stored_block_header(data.len() as u16, true));
        out.extend_from_slice(data);
        file.crc32 = crc;
        file.compressed = stored_blocks_size(data.len() as u64);
        data_descriptor(&mut out, &file);
        central_record(&mut central, &file);
        let mut dir = entry("dir/");
        dir.directory = true;
        dir.offset = out.len() as u64;
        local_header(&mut out, &dir);
        central_record(&mut central, &dir);
        let cd_offset = out.len() as u64;
        out.extend_from_slice(&central);
        end_records(&mut out, 2, cd_offset, central.len() as u64);

        let mut zip = ::zip::ZipArchive::new(std::io::Cursor::new(out)).unwrap();
        let mut s = String::new();
        zip.by_name("dir/hello.txt")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "hello, zip");
        let d = zip.by_name("dir/").unwrap();
        assert!(d.is_dir());
        assert_eq!(d.unix_mode(), Some(0o040_755));
    }

    fn sized(name: &str, offset: u64, size: u64) -> Entry<'_> {
        Entry {
            name,
            method: DEFLATED,
            descriptor: true,
            zip64: size > 0xFFFF_FFFF,
            dos_time: 0,
            dos_date: 33,
            crc32: 0x1234_5678,
            compressed: size / 2,
            uncompressed: size,
            offset,
            directory: false,
        }
    }

    #[test]
    fn reads_back_what_it_writes() {
        for (entries, offset, size) in [(3u64, 1000u64, 10u64), (70_000, 5 << 30, (4 << 30) + 1)] {
            let mut cd = Vec::new();
            let e = sized("dir/big.bin", offset, size);
            central_record(&mut cd, &e);
            let mut archive = vec![0u8; 64];
            let cd_offset = archive.len() as u64;
            archive.extend_from_slice(&cd);
            end_records(&mut archive, entries, cd_offset, cd.len() as u64);
            let len = archive.len() as u64;
            let dir = find_directory(&archive, 0, len).unwrap();
            assert_eq!(
                dir,
                Directory {
                    offset: cd_offset,
                    size: cd.len() as u64,
                    entries
                }
            );
            let (got, n) = central_entry(&archive[cd_offset as usize..])
                .unwrap()
                .unwrap();
            assert_eq!(n, cd.len());
            assert_eq!(got.name, "dir/big.bin");
            assert_eq!(
                (got.offset, got.uncompressed, got.compressed),
                (offset, size, size / 2)
            );
            assert_eq!(got.crc32, 0x1234_5678);
            assert!(central_entry(&cd[..cd.len() - 1]).unwrap().is_none());
            // The record written again from what was parsed is the same record.
            let mut again = Vec::new();
            central_record(&mut again, &got.entry(&got.name, got.offset));
            assert_eq!(again, cd);
        }
    }

    #[test]
    fn a_local_header_is_renamed_with_its_extra() {
        let mut e = entry("a/b");
        e.zip64 = true;
        e.uncompressed = 7;
        let mut head = Vec::new();
        local_header(&mut head, &e);
        assert_eq!(local_header_len(&head), Some(head.len() as u64));
        let renamed = renamed_local_header(&head, "a/b~2").unwrap();
        let mut want = Vec::new();
        local_header(&mut want, &Entry { name: "a/b~2", ..e });
        assert_eq!(renamed, want);
        assert!(renamed_local_header(&head[..head.len() - 1], "x").is_none());
        let mut dir = entry("d/");
        dir.directory = true;
        let mut cd = Vec::new();
        central_record(&mut cd, &dir);
        let (got, _) = central_entry(&cd).unwrap().unwrap();
        assert!(got.entry("d/", 0).directory);
    }

    #[test]
    fn damage_is_an_error() {
        assert!(find_directory(b"not a zip at all, not at all", 0, 28).is_err());
        assert!(central_entry(&[0u8; 50]).is_err());
    }
}
