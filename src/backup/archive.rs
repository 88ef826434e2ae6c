//! Stage 3, the choice of each entry's method: data that does not shrink is not worth
//! deflating. The entry itself is written by [`crate::zip::write`].

use std::io::Write;

use crate::config::Compression;
pub use crate::zip::write::Method;

/// How many leading bytes of an object are test-compressed to choose its method.
pub const SAMPLE_SIZE: usize = 64 * 1024;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
