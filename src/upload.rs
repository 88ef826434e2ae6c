//! The archive's way out: S3 multipart upload (create, upload part, complete, abort).

use crate::parts::MAX_PARTS;
use crate::s3::{Op, S3Error, S3};
use crate::xml;

/// An open multipart upload. Dropping it does nothing: the caller completes or aborts.
pub struct MultipartUpload<'a> {
    s3: &'a S3,
    pub key: String,
    upload_id: String,
    parts: Vec<(u32, String)>,
}

fn upload_id_query(upload_id: &str) -> (String, String) {
    ("uploadId".to_string(), upload_id.to_string())
}

/// HeadBucket on the destination: a missing or forbidden bucket is reported before any
/// object is read, naming the destination rather than failing at the first part.
pub fn check_bucket(s3: &S3) -> Result<(), S3Error> {
    let op = Op {
        name: "HeadBucket",
        method: "HEAD",
        key: None,
        query: vec![],
        headers: vec![],
    };
    s3.call(&op, None).map(drop)
}

impl<'a> MultipartUpload<'a> {
    /// CreateMultipartUpload.
    pub fn create(s3: &'a S3, key: &str, content_type: &str) -> Result<Self, S3Error> {
        let op = Op {
            name: "CreateMultipartUpload",
            method: "POST",
            key: Some(key),
            query: vec![("uploads".into(), String::new())],
            headers: vec![("content-type".into(), content_type.into())],
        };
        // An empty body, with `Content-Length: 0`, which S3 requires of a POST.
        let text = s3.call_xml(&op, Some(b""))?;
        let upload_id =
            xml::parse_upload_id(&text).map_err(|e| S3Error::Protocol(e.to_string()))?;
        Ok(Self {
            s3,
            key: key.to_string(),
            upload_id,
            parts: Vec::new(),
        })
    }

    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// UploadPart for the next part number; retried as a whole (the bytes are kept).
    pub fn upload_part(&mut self, data: &[u8]) -> Result<(), S3Error> {
        let number = u32::try_from(self.parts.len() + 1).unwrap_or(u32::MAX);
        if number > MAX_PARTS {
            return Err(S3Error::Protocol(format!(
                "the archive needs more than {MAX_PARTS} parts; raise PART_SIZE"
            )));
        }
        let op = Op {
            name: "UploadPart",
            method: "PUT",
            key: Some(&self.key),
            query: vec![
                ("partNumber".into(), number.to_string()),
                upload_id_query(&self.upload_id),
            ],
            headers: vec![],
        };
        let resp = self.s3.call(&op, Some(data))?;
        let etag = resp
            .header("etag")
            .filter(|e| !e.is_empty())
            .ok_or_else(|| {
                S3Error::Protocol(format!("UploadPart {number} answered without an ETag"))
            })?;
        self.parts.push((number, etag));
        Ok(())
    }

    /// CompleteMultipartUpload. A 200 whose body is an `<Error>` is a failure.
    pub fn complete(&self) -> Result<(), S3Error> {
        let body = xml::complete_body(&self.parts);
        let op = Op {
            name: "CompleteMultipartUpload",
            method: "POST",
            key: Some(&self.key),
            query: vec![upload_id_query(&self.upload_id)],
            headers: vec![("content-type".into(), "application/xml".into())],
        };
        let payload = crate::sigv4::sha256_hex(body.as_bytes());
        self.s3.retrying(op.name, op.key, |_| {
            let mut resp = self.s3.send_once(&op, Some(body.as_bytes()), &payload)?;
            let text = resp
                .read_to_string(1024 * 1024)
                .map_err(|e| S3Error::Transport(e.0))?;
            if xml::is_complete_result(&text) {
                return Ok(());
            }
            Err(match xml::parse_error(&text) {
                Some(e) => S3Error::Status {
                    status: resp.status,
                    code: e.code,
                    message: e.message,
                },
                None => {
                    S3Error::Protocol("CompleteMultipartUpload answered without a result".into())
                }
            })
        })
    }

    /// AbortMultipartUpload, so no orphan parts are left to pay for.
    pub fn abort(&self) -> Result<(), S3Error> {
        let op = Op {
            name: "AbortMultipartUpload",
            method: "DELETE",
            key: Some(&self.key),
            query: vec![upload_id_query(&self.upload_id)],
            headers: vec![],
        };
        match self.s3.call(&op, None) {
            Ok(_) => Ok(()),
            // Already gone: nothing is left behind.
            Err(e) if e.code() == "NoSuchUpload" => Ok(()),
            Err(e) => Err(e),
        }
    }
}
