//! `verify` with `integrity`: the archive's own integrity, no source needed. The central
//! directory comes first (Range requests); then one GET reads the archive front to back,
//! and every entry is inflated and its CRC-32 and size checked against its record.

use serde_json::{json, Value};

use crate::backup::{s3_failure, BackupError, Side};
use crate::config::Config;
use crate::http::Response;
use crate::s3::{S3Error, S3};
use crate::verify::{get_op, protocol, read_directory, CHUNK, LISTED};
use crate::zipread::{self, CentralEntry};

/// The archive's bytes in order, through one GET.
struct Stream {
    resp: Response,
    buf: Vec<u8>,
    at: usize,
    /// Offset in the archive of `buf[at]`.
    offset: u64,
}

impl Stream {
    /// Up to `max` bytes at the current position (at least one).
    fn take(&mut self, max: usize) -> Result<Vec<u8>, S3Error> {
        if self.at == self.buf.len() {
            self.buf = self
                .resp
                .read_chunk(CHUNK)
                .map_err(|e| S3Error::Transport(e.0))?
                .ok_or_else(|| protocol("the archive ended early"))?;
            self.at = 0;
        }
        let n = max.min(self.buf.len() - self.at);
        let out = self.buf[self.at..self.at + n].to_vec();
        self.at += n;
        self.offset += n as u64;
        Ok(out)
    }

    fn exact(&mut self, n: usize) -> Result<Vec<u8>, S3Error> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let more = self.take(n - out.len())?;
            out.extend_from_slice(&more);
        }
        Ok(out)
    }

    fn skip_to(&mut self, offset: u64) -> Result<(), S3Error> {
        if offset < self.offset {
            return Err(protocol("two entries overlap"));
        }
        while self.offset < offset {
            let n = usize::try_from(offset - self.offset)
                .unwrap_or(CHUNK)
                .min(CHUNK);
            self.take(n)?;
        }
        Ok(())
    }
}

/// Reads one entry's data; `Some(reason)` if it does not match its record.
fn check(stream: &mut Stream, e: &CentralEntry) -> Result<Option<String>, S3Error> {
    stream.skip_to(e.offset)?;
    let head = stream.exact(30)?;
    let rest = zipread::local_header_len(&head).map_err(protocol)? - 30;
    stream.exact(usize::try_from(rest).unwrap_or(0))?;
    let mut crc = crc32fast::Hasher::new();
    let mut size = 0u64;
    let mut left = e.compressed;
    let mut inflate = flate2::Decompress::new(false);
    let mut out = Vec::with_capacity(CHUNK);
    while left > 0 {
        let input = stream.take(usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK))?;
        left -= input.len() as u64;
        match e.method {
            0 => {
                crc.update(&input);
                size += input.len() as u64;
            }
            8 => {
                let mut rest = &input[..];
                loop {
                    out.clear();
                    let before = inflate.total_in();
                    let status =
                        match inflate.decompress_vec(rest, &mut out, flate2::FlushDecompress::None)
                        {
                            Ok(s) => s,
                            Err(err) => return Ok(Some(format!("does not inflate: {err}"))),
                        };
                    rest = &rest[(inflate.total_in() - before) as usize..];
                    crc.update(&out);
                    size += out.len() as u64;
                    if status == flate2::Status::StreamEnd
                        || (rest.is_empty() && out.len() < out.capacity())
                    {
                        break;
                    }
                }
            }
            m => {
                return Ok(Some(format!(
                    "compression method {m}, which this tool never writes"
                )))
            }
        }
    }
    let crc = crc.finalize();
    Ok(if size != e.uncompressed {
        Some(format!("{size} bytes, its record says {}", e.uncompressed))
    } else if crc != e.crc32 {
        Some(format!("CRC-32 {crc:08x}, its record says {:08x}", e.crc32))
    } else {
        None
    })
}

pub fn run(config: &Config, dst: &S3, archive: &str) -> Result<Value, BackupError> {
    let fail = |e: &S3Error| {
        s3_failure(
            Side::Destination,
            &config.dest,
            "reading the archive",
            Some(archive),
            e,
        )
    };
    let mut entries = Vec::new();
    let (len, dir, _) = read_directory(config, dst, archive, |e| entries.push(e))?;
    entries.sort_by_key(|e| e.offset);
    let resp = dst
        .call(&get_op(archive, None), None)
        .map_err(|e| fail(&e))?;
    let mut stream = Stream {
        resp,
        buf: Vec::new(),
        at: 0,
        offset: 0,
    };
    let mut damaged = Vec::new();
    let mut count = 0u64;
    let mut bytes = 0u64;
    for e in &entries {
        match check(&mut stream, e).map_err(|err| fail(&err))? {
            Some(reason) => {
                count += 1;
                if damaged.len() < LISTED {
                    damaged.push(json!({"entry": e.name, "reason": reason}));
                }
            }
            None => bytes += e.uncompressed,
        }
    }
    let intact = count == 0;
    Ok(json!({
        "message": if intact { "Every entry of the archive is intact" } else { "The archive is damaged" },
        "archiveName": archive,
        "identical": intact,
        "intact": intact,
        "archiveSize": len,
        "entries": dir.entries,
        "damagedEntries": count,
        "bytesChecked": bytes,
        "damaged": damaged,
    }))
}
