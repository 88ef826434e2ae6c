//! Stage 1: ListObjectsV2, page by page, following continuation tokens.

use crate::s3::{Op, S3Error, S3};
use crate::xml::{self, ListedObject};

/// The query of one ListObjectsV2 page. Keys come as XML text, not `encoding-type=url`:
/// servers differ in how (and whether) they apply that encoding, while XML escaping is
/// the same everywhere.
pub fn list_query(token: Option<&str>) -> Vec<(String, String)> {
    let mut q = vec![
        ("list-type".to_string(), "2".to_string()),
        ("max-keys".to_string(), "1000".to_string()),
    ];
    if let Some(t) = token {
        q.push(("continuation-token".to_string(), t.to_string()));
    }
    q
}

/// Yields the bucket's objects a page at a time; the whole listing is never held.
pub struct Lister<'a> {
    s3: &'a S3,
    token: Option<String>,
    done: bool,
}

impl<'a> Lister<'a> {
    pub fn new(s3: &'a S3) -> Self {
        Self {
            s3,
            token: None,
            done: false,
        }
    }

    pub fn next_page(&mut self) -> Result<Option<Vec<ListedObject>>, S3Error> {
        if self.done {
            return Ok(None);
        }
        let op = Op {
            name: "ListObjectsV2",
            method: "GET",
            key: None,
            query: list_query(self.token.as_deref()),
            headers: vec![],
        };
        let text = self.s3.call_xml(&op, None)?;
        let page = xml::parse_list_page(&text).map_err(|e| S3Error::Protocol(e.to_string()))?;
        if page.next_token.is_some() && page.next_token == self.token {
            return Err(S3Error::Protocol(
                "the listing returned the same continuation token twice".into(),
            ));
        }
        self.token = page.next_token;
        self.done = self.token.is_none();
        Ok(Some(page.objects))
    }
}
