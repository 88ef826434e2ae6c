//! Names: the archive's key in the destination (and the times in it), and each object's
//! entry name in the ZIP.

use std::borrow::Cow;

use time::OffsetDateTime;

/// `2025-12-19T10:30:00.000Z`: ISO 8601 in UTC with milliseconds, as JavaScript's
/// `Date.toISOString()` writes it (the seed function's archive names use it).
pub fn iso_millis(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Parses S3's `LastModified` (`2009-10-12T17:50:30.000Z`, RFC 3339).
pub fn parse_rfc3339(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// `${prefix}/backup-${bucket}-${ISO time with ':' and '.' as '-'}.zip`, as the original
/// function names its archives.
pub fn archive_key(prefix: &str, source_bucket: &str, started: OffsetDateTime) -> String {
    let stamp = iso_millis(started).replace([':', '.'], "-");
    format!("{prefix}/backup-{source_bucket}-{stamp}.zip")
}

/// When the archive `key` was started, if it is exactly one of this tool's archive names
/// for `source_bucket` under `prefix` (retention deletes nothing else).
pub fn archive_time(key: &str, prefix: &str, source_bucket: &str) -> Option<OffsetDateTime> {
    let stamp = key
        .strip_prefix(prefix)?
        .strip_prefix("/backup-")?
        .strip_prefix(source_bucket)?
        .strip_prefix('-')?
        .strip_suffix(".zip")?;
    // 2025-12-19T10-30-00-000Z back to 2025-12-19T10:30:00.000Z
    let b = stamp.as_bytes();
    if b.len() != 24 || b[10] != b'T' || b[23] != b'Z' {
        return None;
    }
    let mut iso = stamp.to_string();
    iso.replace_range(13..14, ":");
    iso.replace_range(16..17, ":");
    iso.replace_range(19..20, ".");
    let t = parse_rfc3339(&iso)?;
    // Only a name this tool would have written for that time.
    (archive_key(prefix, source_bucket, t) == key).then_some(t)
}

/// True for an archive this tool wrote earlier for `source_bucket` (left out when the
/// source and destination are the same bucket, so backups do not nest).
pub fn is_own_archive(key: &str, prefix: &str, source_bucket: &str) -> bool {
    key.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.strip_prefix("backup-"))
        .and_then(|rest| rest.strip_prefix(source_bucket))
        .is_some_and(|rest| rest.starts_with('-') && rest.ends_with(".zip"))
}

/// A name that is safe to extract anywhere: relative, without empty, `.` or `..` segments,
/// backslashes, control characters or a drive letter. Keys that already are safe keep
/// their exact name; a folder marker (`a/b/`) keeps its trailing slash.
pub fn safe_entry_name(key: &str) -> Cow<'_, str> {
    let is_dir = key.ends_with('/');
    let mut out = String::with_capacity(key.len());
    for (i, segment) in key
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .enumerate()
    {
        if i > 0 {
            out.push('/');
        }
        if segment == ".." {
            out.push_str("__");
            continue;
        }
        let bytes = segment.as_bytes();
        let drive =
            i == 0 && bytes.len() == 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
        for c in segment.chars() {
            let bad = c == '\\' || c.is_control() || (drive && c == ':');
            out.push(if bad { '_' } else { c });
        }
    }
    if out.is_empty() {
        out.push('_');
    }
    if is_dir {
        out.push('/');
    }
    if out == key {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(out)
    }
}

/// The `n`th alternative for a name that is already taken: `a/b~2.txt`, `dir~2/`.
pub fn with_suffix(name: &str, n: u32) -> String {
    let (body, slash) = match name.strip_suffix('/') {
        Some(b) => (b, "/"),
        None => (name, ""),
    };
    let last_start = body.rfind('/').map_or(0, |i| i + 1);
    let ext_at = body[last_start..]
        .rfind('.')
        .filter(|&i| i > 0 && slash.is_empty())
        .map(|i| last_start + i);
    match ext_at {
        Some(i) => format!("{}~{n}{}{slash}", &body[..i], &body[i..]),
        None => format!("{body}~{n}{slash}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_key_matches_the_original() {
        let t = parse_rfc3339("2025-12-19T10:30:00.000Z").unwrap();
        assert_eq!(
            archive_key("backups", "my-source-bucket", t),
            "backups/backup-my-source-bucket-2025-12-19T10-30-00-000Z.zip"
        );
    }

    #[test]
    fn iso_and_back() {
        let t = parse_rfc3339("2025-12-19T10:30:00.123Z").unwrap();
        assert_eq!(iso_millis(t), "2025-12-19T10:30:00.123Z");
        assert!(parse_rfc3339("yesterday").is_none());
    }

    #[test]
    fn archive_times_round_trip() {
        let t = parse_rfc3339("2025-12-19T10:30:00.123Z").unwrap();
        let key = archive_key("backups", "my-src", t);
        assert_eq!(archive_time(&key, "backups", "my-src"), Some(t));
        assert_eq!(archive_time(&key, "backups", "my"), None);
        assert_eq!(archive_time(&key, "other", "my-src"), None);
        for bad in [
            "backups/backup-my-src-2025-12-19T10-30-00-123Z.zip.bak",
            "backups/backup-my-src-latest.zip",
            "backups/backup-my-src-2026-2025-12-19T10-30-00-123Z.zip",
            "backups/backup-my-src-2025-13-19T10-30-00-123Z.zip",
        ] {
            assert_eq!(archive_time(bad, "backups", "my-src"), None, "{bad}");
        }
    }

    #[test]
    fn own_archives_are_recognised() {
        assert!(is_own_archive(
            "backups/backup-src-2025-12-19T10-30-00-000Z.zip",
            "backups",
            "src"
        ));
        assert!(!is_own_archive(
            "backups/backup-src2-2025.zip",
            "backups",
            "src"
        ));
        assert!(!is_own_archive("backups/other.zip", "backups", "src"));
        assert!(!is_own_archive("data/backup-src-1.zip", "backups", "src"));
    }

    #[test]
    fn safe_keys_keep_their_name() {
        for key in [
            "a.txt",
            "dir/sub/file name+%#?&=.bin",
            "ünï/😀",
            "folder/",
            "a..b/c",
        ] {
            assert!(matches!(safe_entry_name(key), Cow::Borrowed(_)), "{key}");
        }
    }

    #[test]
    fn unsafe_keys_are_mapped() {
        let cases = [
            ("/abs/path", "abs/path"),
            ("a//b", "a/b"),
            ("./a/./b", "a/b"),
            ("../../etc/passwd", "__/__/etc/passwd"),
            ("a\\b", "a_b"),
            ("c:/windows", "c_/windows"),
            ("tab\there", "tab_here"),
            ("/", "_/"),
            ("../", "__/"),
            ("", "_"),
        ];
        for (key, want) in cases {
            assert_eq!(safe_entry_name(key), want, "{key:?}");
        }
    }

    #[test]
    fn suffixes() {
        assert_eq!(with_suffix("a/b.txt", 2), "a/b~2.txt");
        assert_eq!(with_suffix("a.d/b", 3), "a.d/b~3");
        assert_eq!(with_suffix("a/.hidden", 1), "a/.hidden~1");
        assert_eq!(with_suffix("dir.x/", 2), "dir.x~2/");
    }
}
