//! Listings: pages, continuation tokens, `encoding-type=url`, and the small encoders
//! they need.

use super::*;

pub(super) fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) fn storage_class() -> ObjectStorageClass {
    ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)
}

/// `encoding-type`: `None`, or `Some(true)` for `url`; anything else is
/// S3's InvalidArgument.
pub(super) fn url_encoding(encoding: Option<&EncodingType>) -> S3Result<bool> {
    match encoding {
        None => Ok(false),
        Some(e) if e.as_str().eq_ignore_ascii_case(EncodingType::URL) => Ok(true),
        Some(_) => Err(s3_error!(
            InvalidArgument,
            "Invalid Encoding Method specified in Request"
        )),
    }
}

/// `max-keys`/`max-uploads`/`max-parts`: default and cap 1000.
pub(super) fn list_limit(max: Option<i32>, what: &str) -> S3Result<usize> {
    match max {
        None => Ok(MAX_LIST),
        Some(n) if n < 0 => Err(s3_error!(
            InvalidArgument,
            "Provided {what} not an integer or within integer range"
        )),
        Some(n) => Ok(usize::try_from(n).unwrap_or(MAX_LIST).min(MAX_LIST)),
    }
}

/// One listing entry: an object or a CommonPrefix.
pub(super) enum Entry<'a, T> {
    Item(&'a str, T),
    Prefix(&'a str),
}

pub(super) struct Page<'a, T> {
    pub(super) entries: Vec<Entry<'a, T>>,
    pub(super) truncated: bool,
    /// Name of the last entry returned (key or common prefix).
    pub(super) last: Option<&'a str>,
}

/// S3's listing walk over keys in byte order: those starting with `prefix`
/// and sorting after `after`, rolled up to CommonPrefixes at `delimiter`,
/// at most `max` entries (objects and prefixes together).
pub(super) fn list_page<'a, T>(
    items: impl Iterator<Item = (&'a str, T)>,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<&str>,
    max: usize,
) -> Page<'a, T> {
    let mut page = Page {
        entries: Vec::new(),
        truncated: false,
        last: None,
    };
    let mut last_prefix: Option<&'a str> = None;
    for (key, item) in items {
        if !key.starts_with(prefix) {
            continue;
        }
        if after.is_some_and(|a| key <= a) {
            continue;
        }
        let rest = &key[prefix.len()..];
        let entry = match delimiter.and_then(|d| rest.find(d).map(|i| i + d.len())) {
            Some(end) => {
                let common = &key[..prefix.len() + end];
                if last_prefix == Some(common) || after.is_some_and(|a| common <= a) {
                    continue;
                }
                last_prefix = Some(common);
                Entry::Prefix(common)
            }
            None => Entry::Item(key, item),
        };
        if page.entries.len() == max {
            page.truncated = max > 0;
            break;
        }
        page.last = Some(match entry {
            Entry::Item(k, _) | Entry::Prefix(k) => k,
        });
        page.entries.push(entry);
    }
    page
}

/// The keys of `objects` from where a listing of `prefix` after `after`
/// can start, in order.
pub(super) fn object_range<'a>(
    objects: &'a BTreeMap<String, StoredObject>,
    prefix: &'a str,
    after: Option<&'a str>,
) -> impl Iterator<Item = (&'a str, &'a StoredObject)> + 'a {
    let start = match after {
        Some(a) if a >= prefix => Bound::Excluded(a),
        _ => Bound::Included(prefix),
    };
    objects
        .range::<str, _>((start, Bound::Unbounded))
        .map(|(k, v)| (k.as_str(), v))
        // Keys with the prefix are contiguous: past them, nothing matches.
        .take_while(move |(k, _)| k.starts_with(prefix))
}

pub(super) fn object_entry(key: &str, o: &StoredObject, url: bool) -> Object {
    Object {
        key: Some(encode_if(url, key)),
        size: Some(to_i64(o.data.len())),
        e_tag: Some(o.e_tag()),
        last_modified: Some(o.timestamp()),
        storage_class: Some(storage_class()),
        ..Default::default()
    }
}

pub(super) fn encode_if(url: bool, s: &str) -> String {
    if url {
        s3_url_encode(s)
    } else {
        s.to_string()
    }
}

/// S3's `encoding-type=url`: bytes outside `A-Z a-z 0-9 - _ . / *` as `%XX`
/// (uppercase hex), space as `+` (MinIO's `s3URLEncode`, which mirrors S3).
pub fn s3_url_encode(s: &str) -> String {
    // Every byte but these as `%XX`; a space as `+`, as forms encode it.
    const KEPT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'/')
        .remove(b'*')
        .remove(b' ');
    percent_encoding::utf8_percent_encode(s, KEPT)
        .to_string()
        .replace(' ', "+")
}

pub(super) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

pub(super) const B64_STD: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
pub(super) const B64_URL: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64 without padding.
pub(super) fn b64_encode(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// Base64, padding optional; `None` if malformed.
pub(super) fn b64_decode(s: &str, alphabet: &[u8; 64]) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = alphabet.iter().position(|&a| a == c)?;
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Continuation tokens: the last key or prefix returned, base64url. Opaque
/// to clients, as S3's are.
pub(super) fn encode_token(last: &str) -> String {
    b64_encode(last.as_bytes(), B64_URL)
}

pub(super) fn decode_token(token: &str) -> S3Result<String> {
    b64_decode(token, B64_URL)
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "The continuation token provided is incorrect"
            )
        })
}

pub(super) fn new_upload_id(seq: u64) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let random = std::collections::hash_map::RandomState::new().hash_one((seq, nanos));
    format!("{seq:08x}{random:016x}")
}

// ---------------------------------------------------------------------------
// The S3 operations.
