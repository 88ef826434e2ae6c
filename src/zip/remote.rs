//! A ZIP in a bucket, read with `Range` GETs and never whole: its end records from the
//! last bytes, the central directory streamed a record at a time, and each entry (the
//! manifest included) as a reader of its checked bytes. Restore, verify and the integrity
//! check all read archives through here.

use std::io::{self, BufReader, Read};

use crate::error::{s3_failure, Failure, Kind, Side};
use crate::s3::ops::{self, Range};
use crate::s3::{S3Error, S3};
use crate::zip::manifest::{ManifestReader, MANIFEST_NAME};
use crate::zip::read::{read_entry, CentralDirectory, Positioned};
use crate::zip::spec::{self, CentralEntry, Directory, LOCAL_HEADER_LEN, LOCAL_VARIABLE_MAX};

/// An archive in the destination bucket: where it is and how it ends.
pub struct RemoteZip<'a> {
    s3: &'a S3,
    pub key: &'a str,
    /// The archive's size.
    pub len: u64,
    pub dir: Directory,
}

impl<'a> RemoteZip<'a> {
    /// Finds the archive and its central directory (HeadObject, then its last bytes).
    pub fn open(s3: &'a S3, key: &'a str) -> Result<Self, Failure> {
        let fail = |doing: &str, e: &S3Error| {
            s3_failure(Side::Destination, &s3.target, doing, Some(key), e)
        };
        let head = s3
            .call(&ops::head_object(key), None)
            .map_err(|e| match e.status() {
                Some(404) if e.code() != "NoSuchBucket" => Failure::new(
                    Kind::MissingArchive,
                    format!(
                        "there is no archive '{key}' in the destination bucket '{}'",
                        s3.target.bucket
                    ),
                ),
                _ => fail("reading the archive", &e),
            })?;
        let len = head
            .header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                fail(
                    "reading the archive",
                    &S3Error::protocol("no Content-Length"),
                )
            })?;
        let tail_start = len.saturating_sub(spec::TAIL);
        let tail = s3
            .call(
                &ops::get_object(key, Range::Bytes(tail_start, len.max(1) - 1), None),
                None,
            )
            .and_then(|resp| read_at_most(resp, spec::TAIL))
            .map_err(|e| fail("reading the archive's end", &e))?;
        let dir = spec::find_directory(&tail, tail_start, len)
            .map_err(|m| fail("reading the archive's end", &S3Error::Protocol(m)))?;
        Ok(Self { s3, key, len, dir })
    }

    fn fail(&self, doing: &str, e: &S3Error) -> Failure {
        s3_failure(Side::Destination, &self.s3.target, doing, Some(self.key), e)
    }

    /// Streams the central directory, passing each record to `each`; returns the
    /// manifest's record, if the archive has one.
    pub fn directory(
        &self,
        mut each: impl FnMut(CentralEntry),
    ) -> Result<Option<CentralEntry>, Failure> {
        let doing = "reading the central directory";
        if self.dir.size == 0 {
            return Ok(None);
        }
        let range = Range::Bytes(self.dir.offset, self.dir.offset + self.dir.size - 1);
        let resp = self
            .s3
            .call(&ops::get_object(self.key, range, None), None)
            .map_err(|e| self.fail(doing, &e))?;
        let mut records = CentralDirectory::new(resp);
        let mut manifest = None;
        while let Some(entry) = records
            .next_entry()
            .map_err(|e| self.fail(doing, &S3Error::from_io(e)))?
        {
            if entry.name == MANIFEST_NAME {
                manifest = Some(entry.clone());
            }
            each(entry);
        }
        Ok(manifest)
    }

    /// Reads entry `e` with one ranged GET: `f` gets its checked, inflated bytes (see
    /// [`read_entry`]). Bad data and a broken connection alike come back as the
    /// [`S3Error`] they are.
    pub fn read_entry<T>(
        &self,
        e: &CentralEntry,
        f: impl FnOnce(&mut dyn Read) -> io::Result<T>,
    ) -> Result<T, S3Error> {
        // The local header's name and extra field are not in the record: room for the
        // largest they can be.
        let end = (e.offset + LOCAL_HEADER_LEN + LOCAL_VARIABLE_MAX + e.compressed).min(self.len);
        let mut resp = self.s3.call(
            &ops::get_object(self.key, Range::Bytes(e.offset, end.max(1) - 1), None),
            None,
        )?;
        read_entry(&mut resp, e, f).map_err(S3Error::from_io)
    }

    /// Reads the manifest (record `e`) a line at a time: `f` gets its reader.
    pub fn read_manifest<T>(
        &self,
        e: &CentralEntry,
        f: impl FnOnce(&mut ManifestReader<BufReader<&mut dyn Read>>) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let mut outcome = None;
        self.read_entry(e, |r| {
            let mut lines = ManifestReader::new(BufReader::new(r));
            let result = f(&mut lines);
            let ok = result.is_ok();
            outcome = Some(result);
            if ok {
                // The rest of the manifest, so that its CRC is checked.
                io::copy(lines.get_mut(), &mut io::sink())?;
            }
            Ok(())
        })
        .map_err(|e| self.fail("reading the manifest", &e))?;
        outcome
            .unwrap_or_else(|| Err(self.fail("reading the manifest", &S3Error::protocol("unread"))))
    }

    /// The whole archive front to back with one GET, for `f`.
    pub fn read_all<T>(
        &self,
        f: impl FnOnce(&mut Positioned<crate::io::http::Response>) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let resp = self
            .s3
            .call(&ops::get_object(self.key, Range::All, None), None)
            .map_err(|e| self.fail("reading the archive", &e))?;
        f(&mut Positioned::new(resp))
    }

    /// The failure for an error met while reading the archive.
    pub fn failure(&self, doing: &str, e: &S3Error) -> Failure {
        self.fail(doing, e)
    }
}

/// A short body whole, refusing more than `limit` bytes.
fn read_at_most(resp: crate::io::http::Response, limit: u64) -> Result<Vec<u8>, S3Error> {
    let mut out = Vec::new();
    resp.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(S3Error::from_io)?;
    if out.len() as u64 > limit {
        return Err(S3Error::protocol("more bytes than asked for"));
    }
    Ok(out)
}
