//! `verify` with `integrity`: the archive's own integrity, no source needed. The central
//! directory comes first (Range requests); then one GET reads the archive front to back,
//! and every entry is inflated and its CRC-32 and size checked against its record.

use std::io;

use crate::error::Failure;
use crate::model::{Damaged, IntegrityReport};
use crate::s3::{S3Error, S3};
use crate::verify::LISTED;
use crate::zip::read::read_entry;
use crate::zip::remote::RemoteZip;

pub fn run(dst: &S3, archive: &str) -> Result<IntegrityReport, Failure> {
    let remote = RemoteZip::open(dst, archive)?;
    let mut entries = Vec::new();
    remote.directory(|e| entries.push(e))?;
    entries.sort_by_key(|e| e.offset);
    let fail = |e: io::Error| remote.failure("reading the archive", &S3Error::from_io(e));
    let (mut count, mut bytes, mut damaged) = (0u64, 0u64, Vec::new());
    remote.read_all(|stream| {
        for e in &entries {
            stream.skip_to(e.offset).map_err(fail)?;
            match read_entry(stream, e, |r| io::copy(r, &mut io::sink())) {
                Ok(_) => bytes += e.uncompressed,
                // A broken connection fails the check; bad data is what it looks for.
                Err(err) => {
                    let as_s3 = S3Error::from_io(err);
                    if let S3Error::Transport(_) = as_s3 {
                        return Err(remote.failure("reading the archive", &as_s3));
                    }
                    count += 1;
                    if damaged.len() < LISTED {
                        damaged.push(Damaged {
                            entry: e.name.clone(),
                            reason: as_s3.to_string(),
                        });
                    }
                }
            }
        }
        Ok(())
    })?;
    let intact = count == 0;
    Ok(IntegrityReport {
        message: if intact {
            "Every entry of the archive is intact"
        } else {
            "The archive is damaged"
        }
        .into(),
        archive_name: archive.into(),
        identical: intact,
        intact,
        archive_size: remote.len,
        entries: remote.dir.entries,
        damaged_entries: count,
        bytes_checked: bytes,
        damaged,
        retries: 0,
    })
}
