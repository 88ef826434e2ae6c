//! What PutObject, UploadPart and GetObject check: Content-MD5 and checksums,
//! conditional headers, ranges.

use super::*;

pub(super) fn check_content_md5(content_md5: Option<&str>, md5: &[u8; 16]) -> S3Result<()> {
    let Some(given) = content_md5 else {
        return Ok(());
    };
    match b64_decode(given.trim(), B64_STD) {
        Some(bytes) if bytes.len() == 16 => {
            if bytes == md5 {
                Ok(())
            } else {
                Err(s3_error!(
                    BadDigest,
                    "The Content-MD5 you specified did not match what we received."
                ))
            }
        }
        _ => Err(s3_error!(
            InvalidDigest,
            "The Content-MD5 you specified was invalid."
        )),
    }
}

/// Checksums the client announced (`x-amz-checksum-*` headers or
/// trailers, `x-amz-sdk-checksum-algorithm`), computed over `data` and
/// compared; the computed ones are returned for the response.
/// The body of a PutObject or UploadPart with its Content-MD5 and checksums checked, as
/// `(data, md5, checksum)`. A macro: the two inputs are distinct types with these fields.
macro_rules! checked_body {
    ($input:ident, $trailers:expr) => {{
        let data = read_body($input.body).await?;
        let md5 = Md5::checksum(&data);
        check_content_md5($input.content_md5.as_deref(), &md5)?;
        let checksum = check_checksums(
            &data,
            $input.checksum_algorithm.as_ref(),
            Checksum {
                checksum_crc32: $input.checksum_crc32,
                checksum_crc32c: $input.checksum_crc32c,
                checksum_crc64nvme: $input.checksum_crc64nvme,
                checksum_sha1: $input.checksum_sha1,
                checksum_sha256: $input.checksum_sha256,
                checksum_type: None,
            },
            $trailers,
        )?;
        (data, md5, checksum)
    }};
}

pub(super) fn check_checksums(
    data: &[u8],
    algorithm: Option<&ChecksumAlgorithm>,
    mut given: Checksum,
    trailers: Option<&s3s::TrailingHeaders>,
) -> S3Result<Checksum> {
    if let Some(trailers) = trailers.and_then(s3s::TrailingHeaders::take) {
        let get = |name: &str| -> S3Result<Option<String>> {
            match trailers.get(name) {
                None => Ok(None),
                Some(v) => v
                    .to_str()
                    .map(|s| Some(s.to_string()))
                    .map_err(|_| s3_error!(InvalidArgument, "invalid trailer {name}")),
            }
        };
        given.checksum_crc32 = get("x-amz-checksum-crc32")?.or(given.checksum_crc32);
        given.checksum_crc32c = get("x-amz-checksum-crc32c")?.or(given.checksum_crc32c);
        given.checksum_sha1 = get("x-amz-checksum-sha1")?.or(given.checksum_sha1);
        given.checksum_sha256 = get("x-amz-checksum-sha256")?.or(given.checksum_sha256);
        given.checksum_crc64nvme = get("x-amz-checksum-crc64nvme")?.or(given.checksum_crc64nvme);
    }
    let mut hasher = s3s::checksum::ChecksumHasher::default();
    if given.checksum_crc32.is_some() {
        hasher.crc32 = Some(Default::default());
    }
    if given.checksum_crc32c.is_some() {
        hasher.crc32c = Some(Default::default());
    }
    if given.checksum_sha1.is_some() {
        hasher.sha1 = Some(Default::default());
    }
    if given.checksum_sha256.is_some() {
        hasher.sha256 = Some(Default::default());
    }
    if given.checksum_crc64nvme.is_some() {
        hasher.crc64nvme = Some(Default::default());
    }
    if let Some(alg) = algorithm {
        match alg.as_str() {
            ChecksumAlgorithm::CRC32 => hasher.crc32 = Some(Default::default()),
            ChecksumAlgorithm::CRC32C => hasher.crc32c = Some(Default::default()),
            ChecksumAlgorithm::SHA1 => hasher.sha1 = Some(Default::default()),
            ChecksumAlgorithm::SHA256 => hasher.sha256 = Some(Default::default()),
            ChecksumAlgorithm::CRC64NVME => hasher.crc64nvme = Some(Default::default()),
            other => {
                return Err(s3_error!(
                    InvalidRequest,
                    "unsupported checksum algorithm {other}"
                ))
            }
        }
    }
    hasher.update(data);
    let computed = hasher.finalize();
    let pairs = [
        ("CRC32", &given.checksum_crc32, &computed.checksum_crc32),
        ("CRC32C", &given.checksum_crc32c, &computed.checksum_crc32c),
        ("SHA1", &given.checksum_sha1, &computed.checksum_sha1),
        ("SHA256", &given.checksum_sha256, &computed.checksum_sha256),
        (
            "CRC64NVME",
            &given.checksum_crc64nvme,
            &computed.checksum_crc64nvme,
        ),
    ];
    for (name, given, computed) in pairs {
        if let Some(given) = given {
            if Some(given) != computed.as_ref() {
                return Err(s3_error!(
                    BadDigest,
                    "The {name} you specified did not match the calculated checksum."
                ));
            }
        }
    }
    Ok(computed)
}

pub(super) fn etag_matches(condition: &ETagCondition, etag: &ETag) -> bool {
    match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(given) => given.value() == etag.value(),
    }
}

/// A time as HTTP dates carry it (whole seconds), for If-(Un)Modified-Since.
pub(super) fn http_time(t: SystemTime) -> Timestamp {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    Timestamp::from(UNIX_EPOCH + Duration::from_secs(secs))
}

/// GET/HEAD preconditions, in S3's (RFC 9110's) order: If-Match, else
/// If-Unmodified-Since (412); If-None-Match, else If-Modified-Since (304).
pub(super) fn check_read_preconditions(
    object: &StoredObject,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let etag = object.e_tag();
    let modified = http_time(object.last_modified);
    match (if_match, if_unmodified_since) {
        (Some(c), _) if !etag_matches(c, &etag) => return Err(precondition_failed()),
        (None, Some(t)) if modified > *t => return Err(precondition_failed()),
        _ => {}
    }
    match (if_none_match, if_modified_since) {
        (Some(c), _) if etag_matches(c, &etag) => Err(not_modified(object)),
        (None, Some(t)) if modified <= *t => Err(not_modified(object)),
        _ => Ok(()),
    }
}

/// Write preconditions (PutObject, CompleteMultipartUpload): `If-None-Match:
/// *` fails if the key exists; `If-Match` needs the object, with that ETag.
pub(super) fn check_write_preconditions(
    existing: Option<&StoredObject>,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<()> {
    if let (Some(c), Some(o)) = (if_none_match, existing) {
        if etag_matches(c, &o.e_tag()) {
            return Err(precondition_failed());
        }
    }
    if let Some(c) = if_match {
        match existing {
            None => return Err(no_such_key()),
            Some(o) if !etag_matches(c, &o.e_tag()) => return Err(precondition_failed()),
            Some(_) => {}
        }
    }
    Ok(())
}

/// The slice a `Range` asks for and its Content-Range, or 416.
pub(super) fn apply_range(data: &Bytes, range: Option<Range>) -> S3Result<(Bytes, Option<String>)> {
    let Some(range) = range else {
        return Ok((data.clone(), None));
    };
    let total = data.len() as u64;
    let r = range
        .check(total)
        .map_err(|_| s3_error!(InvalidRange, "The requested range is not satisfiable"))?;
    let (Ok(start), Ok(end)) = (usize::try_from(r.start), usize::try_from(r.end)) else {
        return Err(s3_error!(
            InvalidRange,
            "The requested range is not satisfiable"
        ));
    };
    if start >= end || end > data.len() {
        return Err(s3_error!(
            InvalidRange,
            "The requested range is not satisfiable"
        ));
    }
    let content_range = format!("bytes {}-{}/{total}", r.start, r.end - 1);
    Ok((data.slice(start..end), Some(content_range)))
}
