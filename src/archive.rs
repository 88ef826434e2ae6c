//! The ZIP stream: entries written one after another into a non-seekable sink (data
//! descriptors after each entry), with the `zip` crate computing CRC32 as bytes pass.

use std::io::Write;

use zip::write::{SimpleFileOptions, StreamWriter};
use zip::{CompressionMethod, DateTime, ZipWriter};

use crate::config::Compression;
use crate::naming::{safe_entry_name, with_suffix, MANIFEST_NAME};
use crate::parts::PartBuffer;
use crate::util::parse_rfc3339;

/// How one entry's bytes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Store,
    Deflate,
}

/// How many leading bytes of an object are test-compressed to choose its method.
pub const SAMPLE_SIZE: usize = 64 * 1024;

/// Entries at least this large carry ZIP64 sizes from the start; below it, even
/// deflate's worst-case growth stays under 4 GiB.
const ZIP64_THRESHOLD: u64 = 0xFF00_0000;

/// File types that are already compressed: deflating them costs CPU and saves nothing.
const COMPRESSED_EXTENSIONS: &[&str] = &[
    "7z", "aac", "apk", "avi", "avif", "br", "bz2", "deb", "docx", "epub", "flac", "gif", "gz",
    "heic", "jar", "jpeg", "jpg", "lz", "lz4", "lzma", "m4a", "m4v", "mkv", "mov", "mp3", "mp4",
    "mpeg", "mpg", "odp", "ods", "odt", "ogg", "opus", "pdf", "png", "pptx", "rar", "rpm", "tbz",
    "tgz", "txz", "webm", "webp", "whl", "woff", "woff2", "xlsx", "xz", "zip", "zst",
];

/// Chooses how to store an entry from its key, size and first bytes.
pub fn choose_method(key: &str, size: u64, sample: &[u8], mode: Compression) -> Method {
    if size == 0 {
        return Method::Store;
    }
    match mode {
        Compression::Store => Method::Store,
        Compression::Deflate => Method::Deflate,
        Compression::Auto => {
            let ext = key
                .rsplit('/')
                .next()
                .and_then(|name| name.rsplit_once('.'))
                .map(|(_, ext)| ext.to_ascii_lowercase());
            if ext.is_some_and(|e| COMPRESSED_EXTENSIONS.contains(&e.as_str())) {
                return Method::Store;
            }
            if sample.len() < 64 {
                // Too little to judge; deflate of a few bytes costs nothing.
                return Method::Deflate;
            }
            // Fast level-1 trial: data that does not shrink by 3% is stored.
            let mut enc = flate2::write::DeflateEncoder::new(
                Vec::with_capacity(sample.len()),
                flate2::Compression::fast(),
            );
            let shrunk = enc
                .write_all(sample)
                .and_then(|()| enc.finish())
                .map(|out| out.len() * 100 < sample.len() * 97)
                .unwrap_or(true);
            if shrunk {
                Method::Deflate
            } else {
                Method::Store
            }
        }
    }
}

#[derive(Debug)]
pub struct ArchiveError(pub String);

impl std::fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<zip::result::ZipError> for ArchiveError {
    fn from(e: zip::result::ZipError) -> Self {
        ArchiveError(format!("ZIP writer: {e}"))
    }
}

impl From<std::io::Error> for ArchiveError {
    fn from(e: std::io::Error) -> Self {
        ArchiveError(format!("ZIP writer: {e}"))
    }
}

fn zip_time(last_modified: &str) -> DateTime {
    parse_rfc3339(last_modified)
        .and_then(|t| {
            DateTime::from_date_and_time(
                u16::try_from(t.year()).ok()?,
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
            )
            .ok()
        })
        .unwrap_or_default()
}

fn is_duplicate(e: &zip::result::ZipError) -> bool {
    e.to_string().contains("Duplicate filename")
}

pub struct Archive {
    zip: ZipWriter<StreamWriter<PartBuffer>>,
    level: i64,
    /// `(key, entry name)` for every key whose entry name differs from it.
    renamed: Vec<(String, String)>,
    entries: u64,
}

impl Archive {
    pub fn new(sink: PartBuffer, deflate_level: u8) -> Self {
        Self {
            zip: ZipWriter::new_stream(sink),
            level: i64::from(deflate_level),
            renamed: Vec::new(),
            entries: 0,
        }
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    pub fn renamed(&self) -> &[(String, String)] {
        &self.renamed
    }

    /// Starts the entry for `key`, under its safe name or, if that is taken, the first free
    /// `~N` variant. Returns the entry name.
    pub fn start_file(
        &mut self,
        key: &str,
        size: u64,
        last_modified: &str,
        method: Method,
    ) -> Result<String, ArchiveError> {
        let (compression, level) = match method {
            Method::Store => (CompressionMethod::Stored, None),
            Method::Deflate => (CompressionMethod::Deflated, Some(self.level)),
        };
        let options = SimpleFileOptions::default()
            .compression_method(compression)
            .compression_level(level)
            .last_modified_time(zip_time(last_modified))
            .unix_permissions(0o644)
            .large_file(size >= ZIP64_THRESHOLD);
        self.start(key, false, |zip, name| zip.start_file(name, options))
    }

    /// A folder marker (`a/b/`, zero bytes) becomes a directory entry.
    pub fn add_directory(
        &mut self,
        key: &str,
        last_modified: &str,
    ) -> Result<String, ArchiveError> {
        let options = SimpleFileOptions::default()
            .last_modified_time(zip_time(last_modified))
            .unix_permissions(0o755);
        self.start(key, true, |zip, name| zip.add_directory(name, options))
    }

    fn start(
        &mut self,
        key: &str,
        is_dir: bool,
        mut add: impl FnMut(
            &mut ZipWriter<StreamWriter<PartBuffer>>,
            &str,
        ) -> zip::result::ZipResult<()>,
    ) -> Result<String, ArchiveError> {
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
        // The writer rejects a duplicate before writing anything, so trying the next
        // variant is safe. Names stay unique without a second index of every name.
        loop {
            match add(&mut self.zip, &name) {
                Ok(()) => break,
                Err(e) if is_duplicate(&e) && n < 1000 => {
                    n += 1;
                    name = with_suffix(&safe, n);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if name != key {
            self.renamed.push((key.to_string(), name.clone()));
        }
        self.entries += 1;
        Ok(name)
    }

    pub fn write(&mut self, data: &[u8]) -> Result<(), ArchiveError> {
        self.zip.write_all(data)?;
        Ok(())
    }

    /// Ends the archive: the manifest entry when any key was renamed, then the central
    /// directory.
    pub fn finish(mut self) -> Result<(), ArchiveError> {
        if !self.renamed.is_empty() {
            let mut manifest = String::new();
            for (key, entry) in &self.renamed {
                let line = serde_json::json!({"key": key, "entry": entry});
                manifest.push_str(&line.to_string());
                manifest.push('\n');
            }
            let options = SimpleFileOptions::default()
                .compression_method(CompressionMethod::Deflated)
                .unix_permissions(0o644);
            self.zip.start_file(MANIFEST_NAME, options)?;
            self.zip.write_all(manifest.as_bytes())?;
        }
        self.zip.finish()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn methods() {
        let text = b"hello world, hello world, hello world! ".repeat(100);
        let mut noise = vec![0u8; 4096];
        let mut x: u32 = 12345;
        for b in &mut noise {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (x >> 16) as u8;
        }
        assert_eq!(
            choose_method("a.txt", 0, b"", Compression::Auto),
            Method::Store
        );
        assert_eq!(
            choose_method("a.txt", 4000, &text, Compression::Auto),
            Method::Deflate
        );
        assert_eq!(
            choose_method("a.bin", 4096, &noise, Compression::Auto),
            Method::Store
        );
        assert_eq!(
            choose_method("a/b.JPG", 4000, &text, Compression::Auto),
            Method::Store
        );
        assert_eq!(
            choose_method("a.bin", 4096, &noise, Compression::Deflate),
            Method::Deflate
        );
        assert_eq!(
            choose_method("a.txt", 4000, &text, Compression::Store),
            Method::Store
        );
    }

    #[test]
    fn zip_time_from_listing() {
        let t = zip_time("2024-02-29T23:59:58.000Z");
        assert_eq!(
            (
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            ),
            (2024, 2, 29, 23, 59, 58)
        );
        assert_eq!(zip_time("garbage"), DateTime::default());
    }

    #[test]
    fn duplicate_names_get_suffixes_and_a_manifest() {
        let buf = PartBuffer::new(1 << 20);
        let mut a = Archive::new(buf.clone(), 6);
        assert_eq!(
            a.start_file("a//b.txt", 3, "", Method::Deflate).unwrap(),
            "a/b.txt"
        );
        a.write(b"one").unwrap();
        assert_eq!(
            a.start_file("a/b.txt", 3, "", Method::Store).unwrap(),
            "a/b~2.txt"
        );
        a.write(b"two").unwrap();
        assert_eq!(a.add_directory("dir/", "").unwrap(), "dir/");
        assert_eq!(a.renamed().len(), 2);
        a.finish().unwrap();
        let bytes = buf.take_rest().data;
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let mut s = String::new();
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
        assert_eq!(
            s,
            "{\"entry\":\"a/b.txt\",\"key\":\"a//b.txt\"}\n{\"entry\":\"a/b~2.txt\",\"key\":\"a/b.txt\"}\n"
        );
        assert!(zip.by_name("dir/").unwrap().is_dir());
    }
}
