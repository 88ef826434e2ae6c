//! Which keys a job takes: `INCLUDE_PREFIXES` (listed one prefix after another),
//! `EXCLUDE` glob patterns, and never this source's own archives when the source is also
//! the destination. Backup, dry run and verify all judge keys here. Pure logic.
//!
//! Pattern rules (also in the README):
//! - `*` matches any run of characters except `/`; `?` matches one character except `/`;
//!   `**` matches any run of characters, `/` included; everything else matches itself.
//! - A pattern with a `/` (other than a trailing one) matches the whole key, e.g.
//!   `logs/*/debug.log` or `tmp/**`. A pattern without one matches the key's last
//!   segment, in any folder, e.g. `*.tmp` or `.DS_Store`.
//! - A pattern ending in `/` matches that folder and everything in it, e.g. `cache/` or
//!   `**/node_modules/`.

use std::collections::HashSet;

use crate::config::Config;
use crate::naming::is_own_archive;

/// What a job does with a listed key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Take,
    /// An earlier archive of this source, in the bucket being backed up.
    OwnArchive,
    /// Left out by `EXCLUDE`.
    Excluded,
}

/// The rules of one job, from its configuration.
pub struct Selection<'a> {
    config: &'a Config,
    /// The source is the destination: its archives must not be backed up into new ones.
    same_bucket: bool,
}

impl<'a> Selection<'a> {
    pub fn new(config: &'a Config) -> Self {
        Self {
            config,
            same_bucket: config.source.bucket == config.dest.bucket
                && config.source.endpoint == config.dest.endpoint,
        }
    }

    pub fn judge(&self, key: &str) -> Verdict {
        let c = self.config;
        let own = |key: &str| {
            is_own_archive(key, &c.archive_prefix, &c.source.bucket)
                || crate::backup::checkpoint::is_state_key(key, &c.archive_prefix)
        };
        if self.same_bucket && own(key) {
            Verdict::OwnArchive
        } else if c.exclude.excludes(key) {
            Verdict::Excluded
        } else {
            Verdict::Take
        }
    }
}

/// Keys taken and left out, as the responses count them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub own_archives: u64,
    pub excluded: u64,
}

impl Tally {
    /// Counts `verdict`; true when the key is taken.
    pub fn take(&mut self, verdict: Verdict) -> bool {
        match verdict {
            Verdict::Take => return true,
            Verdict::OwnArchive => self.own_archives += 1,
            Verdict::Excluded => self.excluded += 1,
        }
        false
    }

    pub fn add(&mut self, other: &Tally) {
        self.own_archives += other.own_archives;
        self.excluded += other.excluded;
    }
}

/// The prefixes to list, in key order, none inside another (listing `a/` and `a/b/`
/// would copy `a/b/x` twice). No prefixes, or an empty one, means the whole bucket.
pub fn normalize_prefixes(prefixes: &[String]) -> Vec<String> {
    let mut sorted: Vec<&String> = prefixes.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut out: Vec<String> = Vec::new();
    for p in sorted {
        if p.is_empty() {
            return vec![String::new()];
        }
        if out.last().is_some_and(|last| p.starts_with(last.as_str())) {
            continue;
        }
        out.push(p.clone());
    }
    if out.is_empty() {
        out.push(String::new());
    }
    out
}

/// One `EXCLUDE` pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    chars: Vec<char>,
    /// Matched against the last segment only.
    name_only: bool,
}

impl Pattern {
    pub fn new(text: &str) -> Self {
        let mut text = text.to_string();
        if text.ends_with('/') {
            text.push_str("**");
        }
        let name_only = !text.contains('/');
        Self {
            chars: text.chars().collect(),
            name_only,
        }
    }

    pub fn matches(&self, key: &str) -> bool {
        let subject = if self.name_only {
            key.rsplit('/').next().unwrap_or(key)
        } else {
            key
        };
        let s: Vec<char> = subject.chars().collect();
        let mut failed = HashSet::new();
        glob(&self.chars, &s, 0, 0, &mut failed)
    }
}

/// Whether `p[pi..]` matches `s[si..]`; `failed` remembers positions already tried, so
/// stars cannot make it exponential.
fn glob(
    p: &[char],
    s: &[char],
    pi: usize,
    si: usize,
    failed: &mut HashSet<(usize, usize)>,
) -> bool {
    if failed.contains(&(pi, si)) {
        return false;
    }
    let matched = match p.get(pi) {
        None => si == s.len(),
        Some('*') => {
            let double = p.get(pi + 1) == Some(&'*');
            let next = if double { pi + 2 } else { pi + 1 };
            // `**/` also matches no folder at all.
            if double && p.get(next) == Some(&'/') && glob(p, s, next + 1, si, failed) {
                return true;
            }
            let mut end = si;
            loop {
                if glob(p, s, next, end, failed) {
                    break true;
                }
                match s.get(end) {
                    Some('/') if !double => break false,
                    Some(_) => end += 1,
                    None => break false,
                }
            }
        }
        Some('?') => {
            matches!(s.get(si), Some(c) if *c != '/') && glob(p, s, pi + 1, si + 1, failed)
        }
        Some(c) => s.get(si) == Some(c) && glob(p, s, pi + 1, si + 1, failed),
    };
    if !matched {
        failed.insert((pi, si));
    }
    matched
}

/// Splits a comma-separated list, trimming items and dropping empty ones.
pub fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// What to leave out of a backup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exclude(pub Vec<Pattern>);

impl Exclude {
    pub fn excludes(&self, key: &str) -> bool {
        self.0.iter().any(|p| p.matches(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, key: &str) -> bool {
        Pattern::new(pattern).matches(key)
    }

    #[test]
    fn prefixes_are_sorted_and_never_nested() {
        let p =
            |v: &[&str]| normalize_prefixes(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(p(&[]), [""]);
        assert_eq!(p(&["b/", "a/", "a/x/", "b/"]), ["a/", "b/"]);
        assert_eq!(p(&["logs", "logs/2024/"]), ["logs"]);
        assert_eq!(p(&["x/", ""]), [""]);
    }

    #[test]
    fn stars_stop_at_slashes_double_stars_do_not() {
        assert!(m("logs/*.log", "logs/a.log"));
        assert!(!m("logs/*.log", "logs/2024/a.log"));
        assert!(m("logs/**.log", "logs/2024/a.log"));
        assert!(m("logs/**/a.log", "logs/a.log"));
        assert!(m("logs/**/a.log", "logs/x/y/a.log"));
        assert!(m("tmp/**", "tmp/a/b/c"));
        assert!(!m("tmp/**", "tmpx/a"));
        assert!(m("a?c/x", "abc/x"));
        assert!(!m("a?c/x", "a/c/x"));
        assert!(!m("logs/*.log", "logs/a.log.gz"));
    }

    #[test]
    fn patterns_without_a_slash_match_names_anywhere() {
        assert!(m("*.tmp", "a/b/c.tmp"));
        assert!(m("*.tmp", "c.tmp"));
        assert!(!m("*.tmp", "a.tmp/c"));
        assert!(m(".DS_Store", "photos/.DS_Store"));
        assert!(!m(".DS_Store", "photos/.DS_Store2"));
    }

    #[test]
    fn trailing_slash_means_the_folder_and_all_in_it() {
        assert!(m("cache/", "cache/a"));
        assert!(m("cache/", "cache/a/b"));
        assert!(!m("cache/", "cached/a"));
        assert!(m("**/node_modules/", "app/node_modules/x/y.js"));
        assert!(m("**/node_modules/", "node_modules/x.js"));
    }

    #[test]
    fn many_stars_stay_fast() {
        let key = "a".repeat(1000) + "b";
        assert!(!m("*a*a*a*a*a*a*a*a*a*a*c", &key));
        assert!(m("**a**a**a**b", &key));
    }

    #[test]
    fn lists_are_split_and_trimmed() {
        assert_eq!(split_list(" a/ , ,b/,"), ["a/", "b/"]);
        assert!(split_list("").is_empty());
        let ex = Exclude(
            split_list("*.tmp, cache/")
                .iter()
                .map(|p| Pattern::new(p))
                .collect(),
        );
        assert!(ex.excludes("x/y.tmp"));
        assert!(ex.excludes("cache/z"));
        assert!(!ex.excludes("keep.txt"));
    }
}
