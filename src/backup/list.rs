//! Stage 1: ListObjectsV2, page by page, following continuation tokens.

use std::collections::VecDeque;

use crate::io::http::{InFlight, Pollable, Response, TransportError};
use crate::model::ListedObject;
use crate::s3::sigv4::EMPTY_SHA256;
use crate::s3::{check_status, ops, xml, Op, S3Error, S3};

/// The XML of a listing answer, or the S3 error it carries.
fn page_text(answer: Result<Response, TransportError>) -> Result<String, S3Error> {
    let mut resp = check_status(answer?)?;
    Ok(resp.read_to_string(16 * 1024 * 1024)?)
}

/// Whether prefix `p` may hold keys after `key`: it holds `key` itself, or sorts after
/// it (then so do all its keys); otherwise all its keys sort before `key`.
fn listed_after(p: &str, key: &str) -> bool {
    key.starts_with(p) || p > key
}

/// Whether every key under prefix `p` sorts after `key` (so none is wanted up to it).
fn listed_past(p: &str, key: &str) -> bool {
    p > key && !key.starts_with(p)
}

/// Yields the bucket's objects a page at a time; the whole listing is never held. The
/// next page can be fetched ahead (`prefetch` + `poll`) while objects of this one are
/// still being copied. With several prefixes (sorted, none inside another), each is
/// listed in turn, so keys still come in order.
pub struct Lister<'a> {
    s3: &'a S3,
    prefixes: Vec<String>,
    token: Option<String>,
    /// Keys up to this one are left out (a chained run goes on after the last key the
    /// previous run archived).
    start_after: Option<String>,
    /// Keys after this one are left out (a shard's range ends here).
    until: Option<String>,
    done: bool,
    ahead: Option<InFlight>,
    /// Pages already listed (while the backup was weighed), given out before any other.
    queued: VecDeque<Vec<ListedObject>>,
}

impl<'a> Lister<'a> {
    /// Lists the keys under `prefixes`, in order (`[""]`: the whole bucket).
    pub fn new(s3: &'a S3, prefixes: &[String]) -> Self {
        let mut prefixes: Vec<String> = prefixes.to_vec();
        if prefixes.is_empty() {
            prefixes.push(String::new());
        }
        // Taken from the back as each one is done.
        prefixes.reverse();
        Self {
            s3,
            prefixes,
            token: None,
            start_after: None,
            until: None,
            done: false,
            ahead: None,
            queued: VecDeque::new(),
        }
    }

    /// Gives out `pages` (listed before, in order, up to where this listing starts)
    /// before it lists any more.
    pub fn with_pages(mut self, pages: Vec<Vec<ListedObject>>) -> Self {
        self.queued = pages.into();
        self
    }

    /// Lists only the keys after `key`: prefixes whose keys all sort before it are
    /// dropped, and the one holding it starts after it.
    pub fn after(mut self, key: &str) -> Self {
        self.prefixes.retain(|p| listed_after(p, key));
        self.done = self.prefixes.is_empty();
        self.start_after = Some(key.to_string());
        self
    }

    /// Lists only the keys up to `key`, included: prefixes whose keys all sort after it
    /// are dropped, and the listing ends at the first key past it.
    pub fn until(mut self, key: &str) -> Self {
        self.prefixes.retain(|p| !listed_past(p, key));
        self.done = self.done || self.prefixes.is_empty();
        self.until = Some(key.to_string());
        self
    }

    pub fn is_done(&self) -> bool {
        self.done && self.queued.is_empty()
    }

    fn op(&self) -> Op<'static> {
        let prefix = self.prefixes.last().map_or("", String::as_str);
        // Only the first page of the prefix that holds the key needs it: a continuation
        // token carries it on, and a later prefix's keys all sort after it.
        let after = self
            .start_after
            .as_deref()
            .filter(|k| self.token.is_none() && k.starts_with(prefix));
        ops::list_objects_v2(prefix, self.token.as_deref(), after)
    }

    /// Starts fetching the next page without waiting for it. A failure here is not
    /// final: `next_page` then fetches the page again, with retries.
    pub fn prefetch(&mut self) {
        if !self.done && self.ahead.is_none() && self.queued.is_empty() {
            self.ahead = self.s3.start(&self.op(), None, EMPTY_SHA256).ok();
        }
    }

    /// What a prefetch waits on.
    pub fn pollables(&self, out: &mut Vec<Pollable>) {
        if let Some(f) = &self.ahead {
            out.extend(f.pollables());
        }
    }

    /// The prefetched page if it has arrived; `Ok(None)` while it is on its way (or none
    /// was started).
    pub fn poll(&mut self) -> Result<Option<Vec<ListedObject>>, S3Error> {
        if let Some(page) = self.queued.pop_front() {
            return Ok(Some(page));
        }
        let Some(f) = self.ahead.as_mut() else {
            return Ok(None);
        };
        let Some(answer) = f.try_response() else {
            return Ok(None);
        };
        self.ahead = None;
        match page_text(answer) {
            Ok(text) => self.accept(&text).map(Some),
            // Fetched again, with retries, by `next_page`.
            Err(e) if e.is_transient() => self.next_page(),
            Err(e) => Err(e),
        }
    }

    /// Fetches the next page and waits for it (with retries).
    pub fn next_page(&mut self) -> Result<Option<Vec<ListedObject>>, S3Error> {
        if let Some(page) = self.queued.pop_front() {
            return Ok(Some(page));
        }
        if self.done {
            return Ok(None);
        }
        if let Some(f) = self.ahead.take() {
            match page_text(f.wait()) {
                Ok(text) => return self.accept(&text).map(Some),
                Err(e) if !e.is_transient() => return Err(e),
                Err(_) => {}
            }
        }
        let text = self.s3.call_xml(&self.op(), None)?;
        self.accept(&text).map(Some)
    }

    fn accept(&mut self, text: &str) -> Result<Vec<ListedObject>, S3Error> {
        let page = xml::parse_list_page(text).map_err(|e| S3Error::Protocol(e.to_string()))?;
        if page.next_token.is_some() && page.next_token == self.token {
            return Err(S3Error::Protocol(
                "the listing returned the same continuation token twice".into(),
            ));
        }
        self.token = page.next_token;
        if self.token.is_none() {
            self.prefixes.pop();
            self.done = self.prefixes.is_empty();
        }
        let mut objects = page.objects;
        if let Some(end) = &self.until {
            if objects.last().is_some_and(|o| o.key > *end) {
                // Keys come in order: nothing after this one is wanted.
                objects.retain(|o| o.key <= *end);
                self.prefixes.clear();
                self.token = None;
                self.done = true;
            }
        }
        Ok(objects)
    }
}

#[cfg(test)]
mod tests {
    use super::{listed_after, listed_past};

    #[test]
    fn prefixes_wholly_after_the_end_are_dropped() {
        assert!(!listed_past("", "m"));
        assert!(!listed_past("a/", "m"));
        assert!(listed_past("n/", "m"));
        // "m/" holds keys after "m", but also keys up to a longer end inside it.
        assert!(listed_past("m/", "m"));
        assert!(!listed_past("m/", "m/x"));
    }

    #[test]
    fn prefixes_wholly_before_the_last_key_are_dropped() {
        assert!(listed_after("", "a/b"));
        assert!(listed_after("a/", "a/b"));
        assert!(listed_after("b/", "a/b"));
        assert!(listed_after("a/c", "a/b"));
        assert!(!listed_after("a/a", "a/b"));
        assert!(!listed_after("0/", "a/b"));
        // A prefix longer than the key, sorting after it.
        assert!(listed_after("a/b/", "a/b"));
    }
}
