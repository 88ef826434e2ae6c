//! One constructor per S3 operation the jobs use: what each sends (method, key, query,
//! headers). Signing, sending and retries are the client's ([`crate::s3::S3`]).

/// One operation's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op<'a> {
    /// For logs and errors: `ListObjectsV2`, `GetObject`, ...
    pub name: &'static str,
    pub method: &'static str,
    pub key: Option<&'a str>,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
}

fn op<'a>(name: &'static str, method: &'static str, key: Option<&'a str>) -> Op<'a> {
    Op {
        name,
        method,
        key,
        query: Vec::new(),
        headers: Vec::new(),
    }
}

fn upload_id(upload_id: &str) -> (String, String) {
    ("uploadId".to_string(), upload_id.to_string())
}

/// One ListObjectsV2 page. Keys come as XML text, not `encoding-type=url`: servers differ
/// in how (and whether) they apply that encoding, while XML escaping is the same
/// everywhere.
pub fn list_objects_v2(
    prefix: &str,
    token: Option<&str>,
    start_after: Option<&str>,
) -> Op<'static> {
    let mut o = op("ListObjectsV2", "GET", None);
    o.query = vec![
        ("list-type".to_string(), "2".to_string()),
        ("max-keys".to_string(), "1000".to_string()),
    ];
    if !prefix.is_empty() {
        o.query.push(("prefix".to_string(), prefix.to_string()));
    }
    if let Some(t) = token {
        o.query
            .push(("continuation-token".to_string(), t.to_string()));
    }
    if let Some(k) = start_after {
        o.query.push(("start-after".to_string(), k.to_string()));
    }
    o
}

/// Which bytes of an object a GET asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Range {
    All,
    /// From this offset to the end (a resumed download).
    From(u64),
    /// These bytes, both ends included.
    Bytes(u64, u64),
}

/// GetObject; with `if_match`, only that version (a resume must not mix two).
pub fn get_object<'a>(key: &'a str, range: Range, if_match: Option<&str>) -> Op<'a> {
    let mut o = op("GetObject", "GET", Some(key));
    match range {
        Range::All => {}
        Range::From(a) => o.headers.push(("range".into(), format!("bytes={a}-"))),
        Range::Bytes(a, b) => o.headers.push(("range".into(), format!("bytes={a}-{b}"))),
    }
    if let Some(etag) = if_match.filter(|e| !e.is_empty()) {
        o.headers.push(("if-match".into(), etag.to_string()));
    }
    o
}

/// GetObjectAcl: the object's owner and grants.
pub fn get_object_acl(key: &str) -> Op<'_> {
    let mut o = op("GetObjectAcl", "GET", Some(key));
    o.query.push(("acl".into(), String::new()));
    o
}

/// GetObjectTagging: the object's tags.
pub fn get_object_tagging(key: &str) -> Op<'_> {
    let mut o = op("GetObjectTagging", "GET", Some(key));
    o.query.push(("tagging".into(), String::new()));
    o
}

/// One of the bucket's settings (GetBucketCors, ...): `op` names it, `subresource` is
/// its query (`cors`, `lifecycle`, `policy`, `versioning`).
pub fn get_bucket_setting(op_name: &'static str, subresource: &str) -> Op<'static> {
    let mut o = op(op_name, "GET", None);
    o.query.push((subresource.to_string(), String::new()));
    o
}

/// Sets one of the bucket's settings (PutBucketCors, ...) to the body sent with it. The
/// body's MD5 goes with it: S3 requires `Content-MD5` for CORS and lifecycle rules, and
/// Spaces takes no `x-amz-checksum-*` in its place.
pub fn put_bucket_setting(
    op_name: &'static str,
    subresource: &str,
    content_type: &str,
    content_md5: String,
) -> Op<'static> {
    let mut o = op(op_name, "PUT", None);
    o.query.push((subresource.to_string(), String::new()));
    o.headers = vec![
        ("content-type".into(), content_type.to_string()),
        ("content-md5".into(), content_md5),
    ];
    o
}

pub fn head_object(key: &str) -> Op<'_> {
    op("HeadObject", "HEAD", Some(key))
}

pub fn head_bucket() -> Op<'static> {
    op("HeadBucket", "HEAD", None)
}

/// PutObject with the object's headers (`content-type`, `x-amz-meta-*`).
pub fn put_object(key: &str, headers: Vec<(String, String)>) -> Op<'_> {
    let mut o = op("PutObject", "PUT", Some(key));
    o.headers = headers;
    o
}

pub fn delete_object(key: &str) -> Op<'_> {
    op("DeleteObject", "DELETE", Some(key))
}

/// CreateMultipartUpload with the final object's headers.
pub fn create_multipart_upload(key: &str, headers: Vec<(String, String)>) -> Op<'_> {
    let mut o = op("CreateMultipartUpload", "POST", Some(key));
    o.query = vec![("uploads".into(), String::new())];
    o.headers = headers;
    o
}

pub fn upload_part<'a>(key: &'a str, id: &str, number: u32) -> Op<'a> {
    let mut o = op("UploadPart", "PUT", Some(key));
    o.query = vec![("partNumber".into(), number.to_string()), upload_id(id)];
    o
}

/// UploadPartCopy: part `number` is the bytes `first..=last` of `source_key` in
/// `source_bucket`, copied by the service (`bytes=a-b`, the form every service takes).
pub fn upload_part_copy<'a>(
    key: &'a str,
    id: &str,
    number: u32,
    source_bucket: &str,
    source_key: &str,
    first: u64,
    last: u64,
) -> Op<'a> {
    let mut o = op("UploadPartCopy", "PUT", Some(key));
    o.query = vec![("partNumber".into(), number.to_string()), upload_id(id)];
    let source = format!(
        "/{source_bucket}/{}",
        crate::s3::sigv4::uri_encode(source_key, true)
    );
    o.headers = vec![
        ("x-amz-copy-source".into(), source),
        (
            "x-amz-copy-source-range".into(),
            format!("bytes={first}-{last}"),
        ),
    ];
    o
}

pub fn complete_multipart_upload<'a>(key: &'a str, id: &str) -> Op<'a> {
    let mut o = op("CompleteMultipartUpload", "POST", Some(key));
    o.query = vec![upload_id(id)];
    o.headers = vec![("content-type".into(), "application/xml".into())];
    o
}

/// ListParts, one part at most: whether the upload is still there.
pub fn list_parts<'a>(key: &'a str, id: &str) -> Op<'a> {
    let mut o = op("ListParts", "GET", Some(key));
    o.query = vec![("max-parts".into(), "1".into()), upload_id(id)];
    o
}

/// One page of the multipart uploads in progress under `prefix`, after the markers.
pub fn list_multipart_uploads(prefix: &str, after: Option<(&str, &str)>) -> Op<'static> {
    let mut o = op("ListMultipartUploads", "GET", None);
    o.query = vec![
        ("uploads".to_string(), String::new()),
        ("prefix".to_string(), prefix.to_string()),
    ];
    if let Some((key, id)) = after {
        o.query.push(("key-marker".to_string(), key.to_string()));
        if !id.is_empty() {
            o.query
                .push(("upload-id-marker".to_string(), id.to_string()));
        }
    }
    o
}

pub fn abort_multipart_upload<'a>(key: &'a str, id: &str) -> Op<'a> {
    let mut o = op("AbortMultipartUpload", "DELETE", Some(key));
    o.query = vec![upload_id(id)];
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_conditions() {
        let o = get_object("k", Range::From(5), Some("\"e\""));
        assert_eq!(
            o.headers,
            [
                ("range".to_string(), "bytes=5-".to_string()),
                ("if-match".to_string(), "\"e\"".to_string())
            ]
        );
        let o = get_object("k", Range::Bytes(0, 9), Some(""));
        assert_eq!(o.headers, [("range".to_string(), "bytes=0-9".to_string())]);
        assert!(get_object("k", Range::All, None).headers.is_empty());
        let l = list_objects_v2("a/", Some("t"), None);
        assert_eq!(l.query.len(), 4);
        let l = list_objects_v2("", None, Some("a/k"));
        assert_eq!(l.query[2], ("start-after".to_string(), "a/k".to_string()));
        assert_eq!(upload_part("k", "u", 3).query[0].1, "3");
        let c = upload_part_copy("out.zip", "u", 2, "b", "f/a b.zip", 0, 99);
        assert_eq!(c.headers[0].1, "/b/f/a%20b.zip");
        assert_eq!(c.headers[1].1, "bytes=0-99");
    }
}
