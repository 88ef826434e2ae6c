//! The manifest, the archive's last entry: one JSON line per source object, mapping entry
//! names back to exact keys, with what S3 said of each object. One line type,
//! [`ManifestLine`], for writing and for reading.

use std::borrow::Cow;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::model::Acl;

/// Where the manifest goes: the archive's last entry.
pub const MANIFEST_NAME: &str = ".spaces-backup/manifest.jsonl";
/// The manifest's folder: no entry may take its name.
pub const MANIFEST_DIR: &str = ".spaces-backup/";

/// One line of the manifest, for every source object. Borrowed when written, owned
/// (`ManifestLine<'static>`) when read back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestLine<'a> {
    pub key: Cow<'a, str>,
    /// Its name in the archive; `None` for a skipped object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<Cow<'a, str>>,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub etag: Cow<'a, str>,
    #[serde(default)]
    pub last_modified: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<Cow<'a, str>>,
    /// User metadata (`x-amz-meta-*` without the prefix), as a JSON object in the order
    /// the object gave it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "metadata_map"
    )]
    pub metadata: Option<Cow<'a, [(String, String)]>>,
    /// Its ACL (RECORD_ACL): a canned ACL's name, or its grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<Cow<'a, Acl>>,
    /// Its tags (RECORD_TAGS), as a JSON object in the object's order.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "metadata_map"
    )]
    pub tags: Option<Cow<'a, [(String, String)]>>,
    /// Its standard headers beyond Content-Type, and its storage class.
    #[serde(default, skip_serializing_if = "no_headers")]
    pub headers: Cow<'a, ObjectHeaders>,
    /// CRC-32 of the object's bytes, 8 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32: Option<String>,
    /// Why the object is not in the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<Cow<'a, str>>,
}

// serde hands `skip_serializing_if` a reference to the field, a `Cow`.
#[allow(clippy::ptr_arg)]
fn no_headers(h: &Cow<'_, ObjectHeaders>) -> bool {
    h.is_empty()
}

/// The standard headers GetObject returns and PutObject accepts beyond Content-Type and
/// user metadata, as the object had them (a site served from a bucket depends on them:
/// gzip-encoded assets, cache lifetimes, download names), and its storage class.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectHeaders {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    /// As the object gave it (an HTTP date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website_redirect_location: Option<String>,
    /// Recorded only: a restore leaves the class to the target's default (a class
    /// such as GLACIER, or one another service lacks, would refuse or cost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

impl ObjectHeaders {
    /// The headers PutObject takes again, by their HTTP names.
    const SET_AGAIN: [&'static str; 6] = [
        "cache-control",
        "content-disposition",
        "content-encoding",
        "content-language",
        "expires",
        "x-amz-website-redirect-location",
    ];

    fn fields(&self) -> [&Option<String>; 7] {
        [
            &self.cache_control,
            &self.content_disposition,
            &self.content_encoding,
            &self.content_language,
            &self.expires,
            &self.website_redirect_location,
            &self.storage_class,
        ]
    }

    /// From a GetObject answer's headers (`header` gives a header's value by name).
    pub fn from_response(header: impl Fn(&str) -> Option<String>) -> Self {
        let [cache_control, content_disposition, content_encoding, content_language, expires, website_redirect_location] =
            Self::SET_AGAIN.map(&header);
        Self {
            cache_control,
            content_disposition,
            content_encoding,
            content_language,
            expires,
            website_redirect_location,
            storage_class: header("x-amz-storage-class"),
        }
    }

    /// The headers a restore sends with PutObject or CreateMultipartUpload.
    pub fn to_set_again(&self) -> Vec<(String, String)> {
        Self::SET_AGAIN
            .iter()
            .zip(self.fields())
            .filter_map(|(name, value)| Some((name.to_string(), value.clone()?)))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.fields().iter().all(|v| v.is_none())
    }

    /// How the headers a restore sets differ from `now`'s, one phrase each (`none` for
    /// a header not set); empty when they are the same.
    pub fn differences(&self, now: &ObjectHeaders) -> Vec<String> {
        let shown = |v: &Option<String>| v.as_deref().map_or("none".into(), |v| format!("'{v}'"));
        Self::SET_AGAIN
            .iter()
            .zip(self.fields().into_iter().zip(now.fields()))
            .filter(|(_, (was, now))| was != now)
            .map(|(name, (was, now))| {
                format!("{name} {} in the archive, {} now", shown(was), shown(now))
            })
            .collect()
    }
}

/// `[(name, value)]` as a JSON object, both ways, keeping the order.
mod metadata_map {
    use std::borrow::Cow;

    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserializer, Serializer};

    type Pairs<'a> = Option<Cow<'a, [(String, String)]>>;

    pub fn serialize<S: Serializer>(pairs: &Pairs<'_>, s: S) -> Result<S::Ok, S::Error> {
        let pairs = pairs.as_deref().unwrap_or_default();
        let mut map = s.serialize_map(Some(pairs.len()))?;
        for (k, v) in pairs {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }

    pub fn deserialize<'de, 'a, D: Deserializer<'de>>(d: D) -> Result<Pairs<'a>, D::Error> {
        struct InOrder;
        impl<'de> Visitor<'de> for InOrder {
            type Value = Vec<(String, String)>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(pair) = map.next_entry::<String, String>()? {
                    out.push(pair);
                }
                Ok(out)
            }
        }
        d.deserialize_map(InOrder).map(|v| Some(Cow::Owned(v)))
    }
}

/// Memory for the central directory and manifest grows in blocks of this size, so no
/// reallocation ever copies all of it.
const BLOCK: usize = 256 * 1024;

/// Bytes kept in memory until the end of the archive, in blocks.
#[derive(Default)]
pub struct Blocks {
    pub blocks: Vec<Vec<u8>>,
    pub len: u64,
    allocated: usize,
}

impl Blocks {
    /// The block to append `n` more bytes to.
    pub fn room(&mut self, n: usize) -> &mut Vec<u8> {
        let full = self
            .blocks
            .last()
            .is_none_or(|b| b.capacity() - b.len() < n);
        if full {
            self.blocks.push(Vec::with_capacity(BLOCK.max(n)));
            self.allocated += BLOCK.max(n);
        }
        self.len += n as u64;
        self.blocks.last_mut().expect("a block was just ensured")
    }

    /// Memory held.
    pub fn bytes(&self) -> usize {
        self.allocated
    }
}

impl Write for Blocks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.room(buf.len()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The manifest being written: JSON lines deflated into memory as entries are written,
/// so it costs a few dozen bytes per object until it becomes the archive's last entry.
pub struct ManifestWriter {
    deflate: flate2::write::DeflateEncoder<Blocks>,
    crc: crc32fast::Hasher,
    len: u64,
    line: Vec<u8>,
}

/// The finished manifest: its deflated bytes, CRC-32 and uncompressed size.
pub struct FinishedManifest {
    pub deflated: Blocks,
    pub crc32: u32,
    pub len: u64,
}

impl Default for ManifestWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ManifestWriter {
    pub fn new() -> Self {
        Self {
            deflate: flate2::write::DeflateEncoder::new(
                Blocks::default(),
                flate2::Compression::default(),
            ),
            crc: crc32fast::Hasher::new(),
            len: 0,
            line: Vec::with_capacity(512),
        }
    }

    pub fn add(&mut self, line: &ManifestLine) -> std::io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, line)?;
        self.line.push(b'\n');
        self.crc.update(&self.line);
        self.len += self.line.len() as u64;
        self.deflate.write_all(&self.line)
    }

    pub fn held_bytes(&self) -> usize {
        self.deflate.get_ref().bytes()
    }

    /// Continues a manifest whose first `len` bytes (CRC-32 `crc`) were written and
    /// flushed by [`Self::flush_out`] earlier: a fresh deflate stream laid after a
    /// flushed one is still one valid stream, since it refers to nothing before it.
    pub fn resume(crc: u32, len: u64) -> Self {
        Self {
            crc: crc32fast::Hasher::new_with_initial_len(crc, len),
            len,
            ..Self::new()
        }
    }

    /// The deflated bytes so far, through a sync flush (they end on a byte boundary and
    /// hold every line added), taken out of memory; the stream goes on after them.
    pub fn flush_out(&mut self) -> std::io::Result<Blocks> {
        self.deflate.flush()?;
        Ok(std::mem::take(self.deflate.get_mut()))
    }

    /// CRC-32 and length of the text so far.
    pub fn crc_len(&self) -> (u32, u64) {
        (self.crc.clone().finalize(), self.len)
    }

    pub fn finish(self) -> std::io::Result<FinishedManifest> {
        Ok(FinishedManifest {
            deflated: self.deflate.finish()?,
            crc32: self.crc.finalize(),
            len: self.len,
        })
    }
}

/// The manifest read back, a line at a time, from its inflated bytes.
pub struct ManifestReader<R: BufRead> {
    input: R,
    line: Vec<u8>,
}

impl<R: BufRead> ManifestReader<R> {
    pub fn new(input: R) -> Self {
        Self {
            input,
            line: Vec::with_capacity(512),
        }
    }

    /// The reader under the lines.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.input
    }

    /// The next line, or `None` at the end.
    pub fn next_line(&mut self) -> std::io::Result<Option<ManifestLine<'static>>> {
        self.line.clear();
        if self.input.read_until(b'\n', &mut self.line)? == 0 {
            return Ok(None);
        }
        let text = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
        serde_json::from_slice(text).map(Some).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a manifest line is not JSON: {e}"),
            )
        })
    }

    /// The next object the archive holds (lines of skipped objects are passed over).
    pub fn next_archived(&mut self) -> std::io::Result<Option<ManifestLine<'static>>> {
        while let Some(line) = self.next_line()? {
            if line.skipped.is_none() {
                return Ok(Some(line));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_set_again_but_the_storage_class() {
        let h = ObjectHeaders::from_response(|name| match name {
            "cache-control" => Some("no-cache".into()),
            "expires" => Some("Thu, 01 Dec 2033 16:00:00 GMT".into()),
            "x-amz-website-redirect-location" => Some("/new".into()),
            "x-amz-storage-class" => Some("GLACIER".into()),
            _ => None,
        });
        assert_eq!(h.storage_class.as_deref(), Some("GLACIER"));
        assert_eq!(
            h.to_set_again(),
            [
                ("cache-control".to_string(), "no-cache".to_string()),
                ("expires".into(), "Thu, 01 Dec 2033 16:00:00 GMT".into()),
                ("x-amz-website-redirect-location".into(), "/new".into()),
            ]
        );
        assert!(ObjectHeaders::default().is_empty() && !h.is_empty());
        let now = ObjectHeaders {
            cache_control: Some("max-age=60".into()),
            storage_class: None,
            ..h.clone()
        };
        // The storage class is not a header a restore sets: no difference.
        assert_eq!(
            h.differences(&now),
            ["cache-control 'no-cache' in the archive, 'max-age=60' now"]
        );
        assert!(h.differences(&h).is_empty());
        assert_eq!(
            ObjectHeaders::default().differences(&now)[0],
            "cache-control none in the archive, 'max-age=60' now"
        );
    }

    #[test]
    fn lines_round_trip() {
        let meta = vec![
            ("zebra".to_string(), "1".to_string()),
            ("apple".into(), "2".into()),
        ];
        let tags = vec![("team".to_string(), "web".to_string())];
        let line = ManifestLine {
            key: "a//b".into(),
            entry: Some("a/b".into()),
            size: 3,
            etag: "\"e\"".into(),
            last_modified: "2024-02-29T23:59:58.000Z".into(),
            content_type: Some("text/plain".into()),
            metadata: Some(Cow::Borrowed(&meta)),
            headers: Cow::Owned(ObjectHeaders {
                cache_control: Some("public, max-age=3600".into()),
                content_encoding: Some("gzip".into()),
                storage_class: Some("STANDARD_IA".into()),
                ..Default::default()
            }),
            acl: Some(Cow::Owned(Acl::Canned("public-read".into()))),
            tags: Some(Cow::Borrowed(&tags)),
            crc32: Some("0000abcd".into()),
            skipped: None,
        };
        let skipped = ManifestLine {
            key: "gone".into(),
            skipped: Some("deleted".into()),
            ..Default::default()
        };
        let mut w = ManifestWriter::new();
        w.add(&line).unwrap();
        w.add(&skipped).unwrap();
        let done = w.finish().unwrap();
        let deflated: Vec<u8> = done.deflated.blocks.concat();
        let text = {
            let mut out = String::new();
            std::io::Read::read_to_string(
                &mut flate2::read::DeflateDecoder::new(&deflated[..]),
                &mut out,
            )
            .unwrap();
            out
        };
        assert_eq!(done.len, text.len() as u64);
        assert_eq!(done.crc32, crc32fast::hash(text.as_bytes()));
        assert!(
            text.starts_with(r#"{"key":"a//b","entry":"a/b","size":3"#),
            "{text}"
        );
        assert!(
            text.contains(r#""metadata":{"zebra":"1","apple":"2"}"#),
            "{text}"
        );
        assert!(
            text.contains(r#""headers":{"cacheControl":"public, max-age=3600","contentEncoding":"gzip","storageClass":"STANDARD_IA"}"#),
            "{text}"
        );
        assert!(
            text.contains(r#""acl":"public-read","tags":{"team":"web"}"#),
            "{text}"
        );
        // A line without headers (an old archive's, or a skipped object) has none.
        assert!(!text.lines().nth(1).unwrap().contains("headers"), "{text}");
        let mut r = ManifestReader::new(text.as_bytes());
        let back = r.next_line().unwrap().unwrap();
        assert_eq!(back, line);
        assert_eq!(
            r.next_line().unwrap().unwrap().skipped.as_deref(),
            Some("deleted")
        );
        assert!(r.next_line().unwrap().is_none());
        let mut r = ManifestReader::new(text.as_bytes());
        assert_eq!(r.next_archived().unwrap().unwrap().key, "a//b");
        assert!(r.next_archived().unwrap().is_none());
        assert!(ManifestReader::new(&b"{not json\n"[..])
            .next_line()
            .is_err());
    }
}
