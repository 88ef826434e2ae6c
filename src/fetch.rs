//! Stage 2: GetObject, read in chunks. A body cut off mid-way resumes with a `Range`
//! request from the byte it reached, pinned to the listed ETag with `If-Match`.

use serde_json::json;

use crate::http::Response;
use crate::log;
use crate::s3::{Op, S3Error, S3};
use crate::xml::ListedObject;

/// Largest chunk asked of the host at once.
pub const CHUNK_SIZE: usize = 256 * 1024;

pub struct ObjectStream<'a> {
    s3: &'a S3,
    key: &'a str,
    etag: &'a str,
    size: u64,
    offset: u64,
    resp: Response,
    resumes: u32,
    max_resumes: u32,
}

fn get(s3: &S3, key: &str, etag: &str, offset: u64) -> Result<Response, S3Error> {
    let mut headers = Vec::new();
    if offset > 0 {
        headers.push(("range".to_string(), format!("bytes={offset}-")));
        if !etag.is_empty() {
            headers.push(("if-match".to_string(), etag.to_string()));
        }
    }
    let op = Op {
        name: "GetObject",
        method: "GET",
        key: Some(key),
        query: vec![],
        headers,
    };
    s3.call(&op, None)
}

/// Opens `obj` for reading. `Ok(None)` when it no longer exists (deleted since listing).
pub fn open<'a>(
    s3: &'a S3,
    obj: &'a ListedObject,
    max_resumes: u32,
) -> Result<Option<ObjectStream<'a>>, S3Error> {
    let resp = match get(s3, &obj.key, &obj.etag, 0) {
        Ok(r) => r,
        Err(e) if e.status() == Some(404) && e.code() != "NoSuchBucket" => return Ok(None),
        Err(e) => return Err(e),
    };
    if let Some(len) = resp
        .header("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        if len != obj.size {
            return Err(S3Error::Protocol(format!(
                "the object is {len} bytes now but was listed with {}; it changed during the backup",
                obj.size
            )));
        }
    }
    Ok(Some(ObjectStream {
        s3,
        key: &obj.key,
        etag: &obj.etag,
        size: obj.size,
        offset: 0,
        resp,
        resumes: 0,
        max_resumes,
    }))
}

impl ObjectStream<'_> {
    /// The next chunk, or `None` once exactly the listed size has been read.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, S3Error> {
        loop {
            match self.resp.read_chunk(CHUNK_SIZE) {
                Ok(Some(chunk)) => {
                    self.offset += chunk.len() as u64;
                    if self.offset > self.size {
                        return Err(S3Error::Protocol(format!(
                            "the object has more than its listed {} bytes; it changed during the backup",
                            self.size
                        )));
                    }
                    return Ok(Some(chunk));
                }
                Ok(None) if self.offset == self.size => return Ok(None),
                Ok(None) => self.resume("the body ended early".to_string())?,
                Err(e) => self.resume(e.0)?,
            }
        }
    }

    fn resume(&mut self, why: String) -> Result<(), S3Error> {
        if self.resumes >= self.max_resumes {
            return Err(S3Error::Transport(format!(
                "{why} at byte {} of {}, after {} resumed attempts",
                self.offset, self.size, self.resumes
            )));
        }
        self.resumes += 1;
        log::warn(
            "resume",
            json!({"bucket": self.s3.bucket(), "key": self.key, "offset": self.offset,
                   "size": self.size, "attempt": self.resumes, "error": why}),
        );
        let resp = get(self.s3, self.key, self.etag, self.offset).map_err(|e| match e.code() {
            "PreconditionFailed" => S3Error::Protocol(
                "the object changed while it was being read (its ETag no longer matches)".into(),
            ),
            _ => e,
        })?;
        if self.offset > 0 && resp.status != 206 {
            return Err(S3Error::Protocol(format!(
                "the server ignored a Range request (HTTP {}); cannot resume",
                resp.status
            )));
        }
        self.resp = resp;
        Ok(())
    }
}
