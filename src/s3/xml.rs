//! S3's XML documents, parsed and written by plain functions over `&str` (quick-xml).

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::model::{Grant, ListedObject};

#[derive(Debug)]
pub struct XmlError(pub String);

impl std::fmt::Display for XmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed XML from the server: {}", self.0)
    }
}

/// Walks `xml` and calls `on_close(path, text)` as each element closes, with the
/// element's path from the root and its text content (entities resolved, nothing trimmed:
/// keys may begin or end with spaces).
fn walk(xml: &str, mut on_close: impl FnMut(&[String], String)) -> Result<(), XmlError> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(false);
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    loop {
        match reader.read_event() {
            Err(e) => return Err(XmlError(e.to_string())),
            Ok(Event::Start(e)) => {
                path.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                text.clear();
            }
            Ok(Event::Empty(e)) => {
                path.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                on_close(&path, String::new());
                path.pop();
            }
            Ok(Event::End(_)) => {
                on_close(&path, std::mem::take(&mut text));
                path.pop();
            }
            Ok(Event::Text(t)) => {
                let s = t.xml10_content().map_err(|e| XmlError(e.to_string()))?;
                text.push_str(&s);
            }
            Ok(Event::CData(t)) => {
                text.push_str(&String::from_utf8_lossy(&t));
            }
            Ok(Event::GeneralRef(r)) => {
                if let Some(c) = r.resolve_char_ref().map_err(|e| XmlError(e.to_string()))? {
                    text.push(c);
                } else {
                    let name = r.decode().map_err(|e| XmlError(e.to_string()))?;
                    match quick_xml::escape::resolve_xml_entity(&name) {
                        Some(s) => text.push_str(s),
                        None => return Err(XmlError(format!("unknown entity &{name};"))),
                    }
                }
            }
            Ok(Event::Eof) if path.is_empty() => break,
            Ok(Event::Eof) => {
                return Err(XmlError(format!(
                    "the document ends inside <{}>",
                    path.join("><")
                )))
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

fn is(path: &[String], want: &[&str]) -> bool {
    path.len() == want.len() && path.iter().zip(want).all(|(a, b)| a == b)
}

/// An S3 `<Error>` document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3ErrorBody {
    pub code: String,
    pub message: String,
}

/// Parses `<Error><Code>..</Code><Message>..</Message>..</Error>`; `None` if `xml` is not one.
pub fn parse_error(xml: &str) -> Option<S3ErrorBody> {
    let mut body = S3ErrorBody::default();
    let mut seen = false;
    walk(xml, |path, text| {
        if is(path, &["Error", "Code"]) {
            body.code = text;
            seen = true;
        } else if is(path, &["Error", "Message"]) {
            body.message = text;
        }
    })
    .ok()?;
    seen.then_some(body)
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    pub objects: Vec<ListedObject>,
    pub next_token: Option<String>,
}

/// Parses a ListObjectsV2 page (requested without `encoding-type`, so keys are XML text).
pub fn parse_list_page(xml: &str) -> Result<ListPage, XmlError> {
    const C: &str = "Contents";
    let mut page = ListPage::default();
    let mut truncated = false;
    let mut key = None;
    let mut size = None;
    let mut etag = String::new();
    let mut last_modified = String::new();
    let mut problem = None;
    walk(xml, |path, text| {
        if path.len() == 3 && path[1] == C {
            match path[2].as_str() {
                "Key" => key = Some(text),
                "Size" => size = Some(text),
                "ETag" => etag = text,
                "LastModified" => last_modified = text,
                _ => {}
            }
        } else if is(path, &["ListBucketResult", C]) {
            match (key.take(), size.take().map(|s| s.trim().parse::<u64>())) {
                (Some(k), Some(Ok(s))) => page.objects.push(ListedObject {
                    key: k,
                    size: s,
                    etag: std::mem::take(&mut etag),
                    last_modified: std::mem::take(&mut last_modified),
                }),
                (k, _) => {
                    problem.get_or_insert(format!("an entry without a valid Key and Size ({k:?})"));
                }
            }
        } else if is(path, &["ListBucketResult", "IsTruncated"]) {
            truncated = text.trim() == "true";
        } else if is(path, &["ListBucketResult", "NextContinuationToken"]) {
            page.next_token = Some(text);
        }
    })?;
    if let Some(p) = problem {
        return Err(XmlError(p));
    }
    if !truncated {
        page.next_token = None;
    } else if page.next_token.as_deref().unwrap_or("").is_empty() {
        return Err(XmlError(
            "the listing is truncated but has no NextContinuationToken".into(),
        ));
    }
    Ok(page)
}

/// One multipart upload in progress, as ListMultipartUploads lists it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UploadInProgress {
    pub key: String,
    pub upload_id: String,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct UploadsPage {
    pub uploads: Vec<UploadInProgress>,
    /// `(key-marker, upload-id-marker)` of the next page, when there is one.
    pub next: Option<(String, String)>,
}

/// Parses a ListMultipartUploads page (requested without `encoding-type`).
pub fn parse_uploads_page(xml: &str) -> Result<UploadsPage, XmlError> {
    const R: &str = "ListMultipartUploadsResult";
    let mut page = UploadsPage::default();
    let (mut truncated, mut next_key, mut next_id) = (false, String::new(), String::new());
    let (mut key, mut id) = (None, None);
    walk(xml, |path, text| {
        if is(path, &[R, "Upload", "Key"]) {
            key = Some(text);
        } else if is(path, &[R, "Upload", "UploadId"]) {
            id = Some(text);
        } else if is(path, &[R, "Upload"]) {
            if let (Some(key), Some(upload_id)) = (key.take(), id.take()) {
                page.uploads.push(UploadInProgress { key, upload_id });
            }
        } else if is(path, &[R, "IsTruncated"]) {
            truncated = text.trim() == "true";
        } else if is(path, &[R, "NextKeyMarker"]) {
            next_key = text;
        } else if is(path, &[R, "NextUploadIdMarker"]) {
            next_id = text;
        }
    })?;
    if truncated {
        if next_key.is_empty() {
            return Err(XmlError(
                "the upload listing is truncated but has no NextKeyMarker".into(),
            ));
        }
        page.next = Some((next_key, next_id));
    }
    Ok(page)
}

/// The `UploadId` of an `InitiateMultipartUploadResult`.
pub fn parse_upload_id(xml: &str) -> Result<String, XmlError> {
    let mut id = None;
    walk(xml, |path, text| {
        if is(path, &["InitiateMultipartUploadResult", "UploadId"]) {
            id = Some(text);
        }
    })?;
    id.filter(|s| !s.is_empty())
        .ok_or_else(|| XmlError("no UploadId in the CreateMultipartUpload answer".into()))
}

/// The `ETag` of an UploadPartCopy's `CopyPartResult`; `None` when the answer is not
/// one (a 200 can also carry an `<Error>`).
pub fn parse_copy_part_etag(xml: &str) -> Option<String> {
    let mut etag = None;
    walk(xml, |path, text| {
        if is(path, &["CopyPartResult", "ETag"]) {
            etag = Some(text);
        }
    })
    .ok()?;
    etag.filter(|e| !e.is_empty())
}

/// GetObjectAcl's `AccessControlPolicy`: the owner's id and the grants (the grantee's
/// kind is told by which of `ID`, `URI`, `EmailAddress` it has).
pub fn parse_acl(xml: &str) -> Result<(String, Vec<Grant>), XmlError> {
    let mut owner = String::new();
    let mut grants = Vec::new();
    let mut grant = Grant::default();
    let mut seen = false;
    walk(xml, |path, text| {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        match p.as_slice() {
            ["AccessControlPolicy"] => seen = true,
            ["AccessControlPolicy", "Owner", "ID"] => owner = text,
            ["AccessControlPolicy", "AccessControlList", "Grant", "Grantee", field] => match *field
            {
                "ID" => grant.id = Some(text),
                "URI" => grant.uri = Some(text),
                "EmailAddress" => grant.email = Some(text),
                _ => {}
            },
            ["AccessControlPolicy", "AccessControlList", "Grant", "Permission"] => {
                grant.permission = text
            }
            ["AccessControlPolicy", "AccessControlList", "Grant"] => {
                grants.push(std::mem::take(&mut grant))
            }
            _ => {}
        }
    })?;
    if !seen {
        return Err(XmlError(
            "no AccessControlPolicy in the GetObjectAcl answer".into(),
        ));
    }
    Ok((owner, grants))
}

/// GetObjectTagging's `TagSet`, in order.
pub fn parse_tagging(xml: &str) -> Result<Vec<(String, String)>, XmlError> {
    let mut tags = Vec::new();
    let (mut key, mut value) = (String::new(), String::new());
    let mut seen = false;
    walk(xml, |path, text| {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        match p.as_slice() {
            ["Tagging"] => seen = true,
            ["Tagging", "TagSet", "Tag", "Key"] => key = text,
            ["Tagging", "TagSet", "Tag", "Value"] => value = text,
            ["Tagging", "TagSet", "Tag"] => {
                tags.push((std::mem::take(&mut key), std::mem::take(&mut value)))
            }
            _ => {}
        }
    })?;
    if !seen {
        return Err(XmlError("no Tagging in the GetObjectTagging answer".into()));
    }
    Ok(tags)
}

/// How many `child` elements the document's `root` holds; an error when its root is
/// another element (an answer that is not the setting asked for).
pub fn count_children(xml: &str, root: &str, child: &str) -> Result<usize, XmlError> {
    let (mut seen, mut n) = (false, 0);
    walk(xml, |path, _| match path {
        [r] if r == root => seen = true,
        [r, c] if r == root && c == child => n += 1,
        _ => {}
    })?;
    if !seen {
        return Err(XmlError(format!("no {root} in the answer")));
    }
    Ok(n)
}

/// GetBucketVersioning's `Status`: none for a bucket never versioned.
pub fn parse_versioning(xml: &str) -> Result<Option<String>, XmlError> {
    let (mut seen, mut status) = (false, None);
    walk(xml, |path, text| {
        if is(path, &["VersioningConfiguration"]) {
            seen = true;
        } else if is(path, &["VersioningConfiguration", "Status"]) && !text.trim().is_empty() {
            status = Some(text.trim().to_string());
        }
    })?;
    if !seen {
        return Err(XmlError("no VersioningConfiguration in the answer".into()));
    }
    Ok(status)
}

/// PutBucketVersioning's body.
pub fn versioning_body(status: &str) -> String {
    format!(
        "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>{}</Status></VersioningConfiguration>",
        escape(status)
    )
}

/// True for a `CompleteMultipartUploadResult` (a 200 can also carry an `<Error>`).
pub fn is_complete_result(xml: &str) -> bool {
    let mut ok = false;
    let _ = walk(xml, |path, _| {
        if path.len() == 1 && path[0] == "CompleteMultipartUploadResult" {
            ok = true;
        }
    });
    ok
}

fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(text)
}

/// The CompleteMultipartUpload request body for `(part number, ETag)` pairs.
pub fn complete_body(parts: &[(u32, String)]) -> String {
    let mut out = String::from("<CompleteMultipartUpload>");
    for (n, etag) in parts {
        out.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
            escape(etag)
        ));
    }
    out.push_str("</CompleteMultipartUpload>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_settings_documents() {
        let cors = "<?xml version=\"1.0\"?><CORSConfiguration xmlns=\"x\"><CORSRule><AllowedMethod>GET</AllowedMethod></CORSRule><CORSRule/></CORSConfiguration>";
        assert_eq!(
            count_children(cors, "CORSConfiguration", "CORSRule").unwrap(),
            2
        );
        assert!(count_children(cors, "LifecycleConfiguration", "Rule").is_err());
        let v = "<VersioningConfiguration><Status>Suspended</Status></VersioningConfiguration>";
        assert_eq!(parse_versioning(v).unwrap().as_deref(), Some("Suspended"));
        assert_eq!(
            parse_versioning("<VersioningConfiguration/>").unwrap(),
            None
        );
        assert!(parse_versioning("<Error/>").is_err());
        assert_eq!(
            parse_versioning(&versioning_body("Enabled"))
                .unwrap()
                .as_deref(),
            Some("Enabled")
        );
    }

    #[test]
    fn acls_and_tags_are_read() {
        let acl = r#"<?xml version="1.0" encoding="UTF-8"?>
<AccessControlPolicy xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Owner><ID>o1</ID><DisplayName>me</DisplayName></Owner>
  <AccessControlList>
    <Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser"><ID>o1</ID></Grantee><Permission>FULL_CONTROL</Permission></Grant>
    <Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="Group"><URI>http://acs.amazonaws.com/groups/global/AllUsers</URI></Grantee><Permission>READ</Permission></Grant>
  </AccessControlList>
</AccessControlPolicy>"#;
        let (owner, grants) = parse_acl(acl).unwrap();
        assert_eq!(owner, "o1");
        assert_eq!(grants.len(), 2);
        assert_eq!(grants[1].uri.as_deref(), Some(crate::model::ALL_USERS));
        assert_eq!(grants[1].permission, "READ");
        assert!(parse_acl("<Error><Code>x</Code></Error>").is_err());
        let tags = r#"<Tagging><TagSet><Tag><Key>team</Key><Value>web &amp; co</Value></Tag><Tag><Key>empty</Key><Value></Value></Tag></TagSet></Tagging>"#;
        assert_eq!(
            parse_tagging(tags).unwrap(),
            [
                ("team".to_string(), "web & co".to_string()),
                ("empty".into(), String::new())
            ]
        );
        assert!(parse_tagging("<Tagging><TagSet/></Tagging>")
            .unwrap()
            .is_empty());
    }

    const PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bucket</Name><Prefix></Prefix><KeyCount>3</KeyCount><MaxKeys>3</MaxKeys>
  <IsTruncated>true</IsTruncated>
  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
  <Contents><Key>a &amp; b/ c .txt</Key><LastModified>2009-10-12T17:50:30.000Z</LastModified>
    <ETag>&quot;fba9dede5f27731c9771645a39863328&quot;</ETag><Size>434234</Size>
    <StorageClass>STANDARD</StorageClass></Contents>
  <Contents><Key>empty</Key><LastModified>2009-10-12T17:50:30.000Z</LastModified>
    <ETag>"d41d8cd98f00b204e9800998ecf8427e"</ETag><Size>0</Size></Contents>
  <Contents><Key>&#x1F600;&#13;</Key><Size>1</Size></Contents>
</ListBucketResult>"#;

    #[test]
    fn list_page_with_entities_and_token() {
        let page = parse_list_page(PAGE).unwrap();
        assert_eq!(page.objects.len(), 3);
        assert_eq!(page.objects[0].key, "a & b/ c .txt");
        assert_eq!(page.objects[0].size, 434234);
        assert_eq!(page.objects[0].etag, "\"fba9dede5f27731c9771645a39863328\"");
        assert_eq!(page.objects[0].last_modified, "2009-10-12T17:50:30.000Z");
        assert_eq!(page.objects[1].size, 0);
        assert_eq!(page.objects[2].key, "\u{1F600}\r");
        assert_eq!(
            page.next_token.as_deref(),
            Some("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=")
        );
    }

    #[test]
    fn last_page_keeps_keys_verbatim() {
        let xml = "<ListBucketResult><IsTruncated>false</IsTruncated>\
                   <Contents><Key>a%20b+c%25 </Key><Size>5</Size></Contents></ListBucketResult>";
        let page = parse_list_page(xml).unwrap();
        assert_eq!(page.objects[0].key, "a%20b+c%25 ");
        assert_eq!(page.next_token, None);
        let empty = parse_list_page(
            "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>",
        )
        .unwrap();
        assert!(empty.objects.is_empty());
    }

    #[test]
    fn malformed_pages_are_errors() {
        assert!(parse_list_page(
            "<ListBucketResult><Contents><Key>x</Key></Contents></ListBucketResult>"
        )
        .is_err());
        assert!(parse_list_page(
            "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>"
        )
        .is_err());
        assert!(parse_list_page("<ListBucketResult><Contents>").is_err());
    }

    #[test]
    fn error_documents() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message>
<BucketName>nope</BucketName><RequestId>4442587FB7D0A2F9</RequestId></Error>"#;
        let e = parse_error(xml).unwrap();
        assert_eq!(e.code, "NoSuchBucket");
        assert_eq!(e.message, "The specified bucket does not exist");
        assert_eq!(parse_error("<ListBucketResult/>"), None);
        assert_eq!(parse_error("not xml at all <"), None);
    }

    #[test]
    fn multipart_documents() {
        let xml = "<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key>\
                   <UploadId>VXBsb2FkIElE</UploadId></InitiateMultipartUploadResult>";
        assert_eq!(parse_upload_id(xml).unwrap(), "VXBsb2FkIElE");
        assert!(parse_upload_id("<InitiateMultipartUploadResult/>").is_err());
        assert!(is_complete_result(
            "<?xml version=\"1.0\"?>\n<CompleteMultipartUploadResult><ETag>\"x-2\"</ETag></CompleteMultipartUploadResult>"
        ));
        assert!(!is_complete_result(
            "<Error><Code>InternalError</Code></Error>"
        ));
        assert_eq!(
            complete_body(&[(1, "\"a\"".into()), (2, "\"b\"".into())]),
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&quot;a&quot;</ETag></Part>\
             <Part><PartNumber>2</PartNumber><ETag>&quot;b&quot;</ETag></Part></CompleteMultipartUpload>"
        );
    }
    #[test]
    fn upload_listing_pages() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>dest</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>b/k &amp; 2.zip</NextKeyMarker><NextUploadIdMarker>id-2</NextUploadIdMarker>
  <MaxUploads>2</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>a.zip</Key><UploadId>id-1</UploadId><Initiated>2026-12-01T00:00:00.000Z</Initiated></Upload>
  <Upload><Key>b/k &amp; 2.zip</Key><UploadId>id-2</UploadId></Upload>
</ListMultipartUploadsResult>"#;
        let page = parse_uploads_page(xml).unwrap();
        assert_eq!(page.uploads.len(), 2);
        assert_eq!(page.uploads[1].key, "b/k & 2.zip");
        assert_eq!(page.uploads[1].upload_id, "id-2");
        assert_eq!(page.next, Some(("b/k & 2.zip".into(), "id-2".into())));
        let last = xml.replace("<IsTruncated>true", "<IsTruncated>false");
        assert_eq!(parse_uploads_page(&last).unwrap().next, None);
        let broken = xml.replace("<NextKeyMarker>b/k &amp; 2.zip</NextKeyMarker>", "");
        assert!(parse_uploads_page(&broken).is_err());
    }
}
