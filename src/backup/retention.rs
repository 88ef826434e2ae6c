//! Retention after a successful backup: `KEEP_LAST=N` and/or `KEEP_DAYS=D` delete older
//! archives of the same source under `ARCHIVE_PREFIX`. Only keys that parse exactly as
//! this tool's archive names for this source are ever considered; anything else under
//! the prefix is left alone.

use time::{Duration, OffsetDateTime};

use crate::backup::list::Lister;
use crate::naming::archive_time;
use crate::s3::{ops, S3Error, S3};

/// Which of `archives` (`(key, time)`, this source's archives, the new one included) to
/// delete. An archive stays if any rule that is set keeps it: it is among the `keep_last`
/// newest, or younger than `keep_days`. The newest archive always stays, and so does
/// `completed`, the one this run just wrote, whatever the names say (an archive from a
/// machine whose clock runs ahead is named later than it).
pub fn expired(
    archives: &[(String, OffsetDateTime)],
    completed: &str,
    keep_last: Option<u32>,
    keep_days: Option<u32>,
    now: OffsetDateTime,
) -> Vec<String> {
    if keep_last.is_none() && keep_days.is_none() {
        return Vec::new();
    }
    let mut sorted: Vec<&(String, OffsetDateTime)> = archives.iter().collect();
    // Newest first; equal times by key, so the choice is stable.
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    sorted
        .iter()
        .enumerate()
        .filter(|(i, (_, t))| {
            let by_count = keep_last.is_some_and(|n| *i < n.max(1) as usize);
            let by_age = keep_days.is_some_and(|d| *t > now - Duration::days(i64::from(d)));
            *i > 0 && !by_count && !by_age
        })
        .map(|(_, (k, _))| k.clone())
        .filter(|k| k != completed)
        .collect()
}

/// Lists this source's archives in the destination and deletes the expired ones.
/// Returns the keys deleted.
pub fn apply(
    dst: &S3,
    prefix: &str,
    source_bucket: &str,
    completed: &str,
    keep_last: Option<u32>,
    keep_days: Option<u32>,
    now: OffsetDateTime,
) -> Result<Vec<String>, S3Error> {
    if keep_last.is_none() && keep_days.is_none() {
        return Ok(Vec::new());
    }
    let list_prefix = format!("{prefix}/backup-{source_bucket}-");
    let mut lister = Lister::new(dst, std::slice::from_ref(&list_prefix));
    let mut archives = Vec::new();
    while let Some(page) = lister.next_page()? {
        for obj in page {
            if let Some(t) = archive_time(&obj.key, prefix, source_bucket) {
                archives.push((obj.key, t));
            }
        }
    }
    let mut deleted = Vec::new();
    for key in expired(&archives, completed, keep_last, keep_days, now) {
        dst.call(&ops::delete_object(&key), None)?;
        deleted.push(key);
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming::archive_key;

    fn at(days_ago: i64, now: OffsetDateTime) -> (String, OffsetDateTime) {
        let t = now - Duration::days(days_ago);
        (archive_key("backups", "src", t), t)
    }

    #[test]
    fn keep_last_and_keep_days() {
        let now = crate::naming::parse_rfc3339("2026-06-30T02:00:00.000Z").unwrap();
        let archives: Vec<_> = [0, 1, 2, 5, 10, 40].iter().map(|d| at(*d, now)).collect();
        let names = |v: &[usize]| v.iter().map(|i| archives[*i].0.clone()).collect::<Vec<_>>();
        assert!(expired(&archives, "", None, None, now).is_empty());
        assert_eq!(
            expired(&archives, "", Some(3), None, now),
            names(&[3, 4, 5])
        );
        assert_eq!(expired(&archives, "", None, Some(7), now), names(&[4, 5]));
        // Either rule keeps an archive.
        assert_eq!(expired(&archives, "", Some(5), Some(7), now), names(&[5]));
        // The newest always stays, even with KEEP_DAYS alone and an old clock.
        let later = now + Duration::days(400);
        assert_eq!(expired(&archives, "", None, Some(1), later).len(), 5);
        assert_eq!(expired(&archives, "", Some(1), None, now).len(), 5);
    }

    #[test]
    fn the_archive_just_written_always_stays() {
        let now = crate::naming::parse_rfc3339("2026-06-30T02:00:00.000Z").unwrap();
        // Another machine's clock ran a day ahead: its archive is named later.
        let ahead = at(-1, now);
        let written = at(0, now);
        let older = at(3, now);
        let archives = vec![ahead.clone(), written.clone(), older.clone()];
        for (last, days) in [(Some(1), None), (None, Some(1)), (Some(1), Some(1))] {
            let gone = expired(&archives, &written.0, last, days, now + Duration::days(30));
            assert!(!gone.contains(&written.0), "{last:?} {days:?}: {gone:?}");
            assert!(!gone.contains(&ahead.0), "the newest stays too");
            assert!(gone.contains(&older.0));
        }
    }
}
