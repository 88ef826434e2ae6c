//! Reading a ZIP's end from its last bytes: the end records (ZIP64 included), central
//! directory records and local headers. Pure byte parsing, for `verify` (and restore).

const END_SIG: u32 = 0x0605_4b50;
const END64_SIG: u32 = 0x0606_4b50;
const LOCATOR_SIG: u32 = 0x0706_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;

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
    };
    // ZIP64: the fields set to all ones follow in the extra field, in this order.
    let extra = &buf[46 + name_len..46 + name_len + extra_len];
    let mut i = 0;
    while i + 4 <= extra.len() {
        let id = u16_at(extra, i).unwrap_or(0);
        let n = usize::from(u16_at(extra, i + 2).unwrap_or(0));
        if id == 1 {
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

/// The length of a local header (with its name and extra field), from its first 30 bytes.
pub fn local_header_len(head: &[u8]) -> Result<u64, String> {
    if u32_at(head, 0) != Some(LOCAL_SIG) {
        return Err("a local header is damaged".into());
    }
    let name = u64::from(u16_at(head, 26).ok_or("a local header is cut short")?);
    let extra = u64::from(u16_at(head, 28).ok_or("a local header is cut short")?);
    Ok(30 + name + extra)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zipformat::{central_record, end_records, local_header, Entry, DEFLATED};

    fn entry(name: &str, offset: u64, size: u64) -> Entry<'_> {
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
    fn reads_back_what_zipformat_writes() {
        for (entries, offset, size) in [(3u64, 1000u64, 10u64), (70_000, 5 << 30, (4 << 30) + 1)] {
            let mut cd = Vec::new();
            let e = entry("dir/big.bin", offset, size);
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
        }
    }

    #[test]
    fn local_headers_and_damage() {
        let mut head = Vec::new();
        local_header(&mut head, &entry("a.txt", 0, (5 << 30) + 7));
        assert_eq!(local_header_len(&head).unwrap(), head.len() as u64);
        assert!(local_header_len(b"garbage-garbage-garbage-garbage").is_err());
        assert!(find_directory(b"not a zip at all, not at all", 0, 28).is_err());
        assert!(central_entry(&[0u8; 50]).is_err());
    }
}
