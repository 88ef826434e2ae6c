//! The plan of a sharded backup: the key space cut into N ranges of about equal bytes,
//! stored in the destination bucket (`plan.json` in the source's state folder), read by
//! every shard and by the compose step.

use serde::{Deserialize, Serialize};

/// Bytes an object weighs beyond its size in a plan: an entry costs requests and
/// records whatever its size, so a shard of many small objects is not overloaded.
const ENTRY_WEIGHT: u64 = 1024;
/// Boundary candidates kept while listing: the listing is never held, and the plan is
/// accurate to about 1/2,048 of the bucket.
const MAX_CANDIDATES: usize = 4096;
/// The most shards a plan may have: a compose reads every fragment's directory.
pub const MAX_SHARDS: u32 = 1000;

/// One shard's part of the key space: the keys after `after` up to and including
/// `until` (`None`: from the first, to the last).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// What the listing put in the range when the plan was made.
    pub objects: u64,
    pub bytes: u64,
}

impl ShardRange {
    #[cfg(test)]
    pub fn holds(&self, key: &str) -> bool {
        self.after.as_deref().is_none_or(|a| key > a)
            && self.until.as_deref().is_none_or(|u| key <= u)
    }
}

/// `plan.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub version: u32,
    /// The archive the compose step writes (named when the plan was made).
    pub archive_name: String,
    /// The settings the shards must run with ([`crate::backup::checkpoint::fingerprint`]).
    pub fingerprint: String,
    pub shards: Vec<ShardRange>,
    /// What the ranges were weighed from: `listing`, or `the manifest of <archive>`.
    #[serde(default)]
    pub planned_from: String,
    /// Made by a backup too big for one upload, whose runs write the fragments one
    /// after another ([`crate::compose::sequence`]) rather than by shard runs.
    #[serde(default)]
    pub sequential: bool,
}

pub const PLAN_VERSION: u32 = 1;

impl Plan {
    /// Where the plan of the backup with state folder `dir` is stored.
    pub fn key(dir: &str) -> String {
        format!("{dir}plan.json")
    }

    /// The archive's file name without `.zip`: names the plan's fragments and chains.
    pub fn stem(&self) -> &str {
        let file = self.archive_name.rsplit('/').next().unwrap_or_default();
        file.strip_suffix(".zip").unwrap_or(file)
    }

    /// Where shard `index` (from 1) writes its fragment, itself a complete ZIP.
    pub fn fragment_key(&self, dir: &str, index: u32) -> String {
        format!(
            "{dir}fragments/{}/shard-{index:05}-of-{:05}.zip",
            self.stem(),
            self.shards.len()
        )
    }

    /// The folder of this plan's fragments.
    pub fn fragments_dir(&self, dir: &str) -> String {
        format!("{dir}fragments/{}/", self.stem())
    }

    /// The state folder of shard `index`'s chained runs.
    pub fn chain_dir(&self, dir: &str, index: u32) -> String {
        format!("{dir}shards/{}/{index:05}/", self.stem())
    }

    pub fn check(&self) -> Result<(), String> {
        if self.version != PLAN_VERSION {
            return Err(format!(
                "it is of version {}, this build reads version {PLAN_VERSION}",
                self.version
            ));
        }
        let n = self.shards.len();
        if n == 0 || n > MAX_SHARDS as usize {
            return Err(format!("it has {n} shards"));
        }
        // Ranges must follow one another with no gap and no overlap.
        let mut prev: Option<&String> = None;
        for (i, s) in self.shards.iter().enumerate() {
            let first = i == 0;
            let last = i + 1 == n;
            let joined = if first {
                s.after.is_none()
            } else {
                s.after.as_ref() == prev
            };
            if !joined || (last != s.until.is_none()) {
                return Err(format!(
                    "its ranges do not cover the key space (shard {})",
                    i + 1
                ));
            }
            if let (Some(a), Some(u)) = (&s.after, &s.until) {
                if a >= u {
                    return Err(format!("shard {} has an empty range", i + 1));
                }
            }
            prev = s.until.as_ref();
        }
        Ok(())
    }
}

/// Builds the shard ranges from one pass over the listing, in key order, holding at
/// most [`MAX_CANDIDATES`] keys: a key is a candidate boundary every `step` bytes of
/// weight; when the candidates are full, every other one is dropped and `step` doubles.
/// It is kept between runs while a big bucket is weighed (`weigh.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Planner {
    /// (key, weight of the keys up to and including it, objects up to it).
    candidates: Vec<(String, u64, u64)>,
    step: u64,
    next_at: u64,
    weight: u64,
    objects: u64,
    bytes: u64,
    last: Option<(String, u64, u64)>,
}

impl Default for Planner {
    fn default() -> Self {
        Self::new()
    }
}

impl Planner {
    pub fn new() -> Self {
        Self {
            candidates: Vec::new(),
            step: ENTRY_WEIGHT,
            next_at: ENTRY_WEIGHT,
            weight: 0,
            objects: 0,
            bytes: 0,
            last: None,
        }
    }

    /// The next object of the listing (keys in order).
    pub fn add(&mut self, key: &str, size: u64) {
        self.weight += size + ENTRY_WEIGHT;
        self.bytes += size;
        self.objects += 1;
        if self.weight >= self.next_at {
            self.candidates
                .push((key.to_string(), self.weight, self.objects));
            self.next_at = self.weight + self.step;
            if self.candidates.len() >= MAX_CANDIDATES {
                let kept: Vec<_> = self
                    .candidates
                    .drain(..)
                    .enumerate()
                    .filter(|(i, _)| i % 2 == 1)
                    .map(|(_, c)| c)
                    .collect();
                self.candidates = kept;
                self.step *= 2;
            }
        } else {
            self.last = Some((key.to_string(), self.weight, self.objects));
        }
    }

    /// The weight of every object added: its bytes, and [`ENTRY_WEIGHT`] each for its
    /// headers, directory record and manifest line.
    pub fn weight(&self) -> u64 {
        self.weight
    }

    pub fn objects(&self) -> u64 {
        self.objects
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// `n` ranges of about equal weight, in key order. Fewer objects than shards leave
    /// the last shards empty (their fragments are empty archives), so `n` is kept.
    pub fn finish(mut self, n: u32) -> Vec<ShardRange> {
        if let Some(last) = self.last.take() {
            if self.candidates.last().is_none_or(|c| c.1 < last.1) {
                self.candidates.push(last);
            }
        }
        let n = n.max(1) as u64;
        let total = self.weight;
        let mut cuts: Vec<(String, u64, u64)> = Vec::new();
        for i in 1..n {
            let target = total.saturating_mul(i) / n;
            // The candidate nearest the target, after the previous cut.
            let floor = cuts.last().map_or(0, |c| c.1);
            let best = self
                .candidates
                .iter()
                .filter(|c| c.1 > floor && c.1 < total)
                .min_by_key(|c| c.1.abs_diff(target));
            if let Some(best) = best {
                if best.1.abs_diff(target) <= total / n {
                    cuts.push(best.clone());
                }
            }
        }
        let mut ranges = Vec::with_capacity(n as usize);
        let mut after: Option<(String, u64, u64)> = None;
        for cut in cuts {
            let (w0, o0) = after.as_ref().map_or((0, 0), |a| (a.1, a.2));
            ranges.push(ShardRange {
                after: after.as_ref().map(|a| a.0.clone()),
                until: Some(cut.0.clone()),
                objects: cut.2 - o0,
                bytes: (cut.1 - w0).saturating_sub((cut.2 - o0) * ENTRY_WEIGHT),
            });
            after = Some(cut);
        }
        let (w0, o0) = after.as_ref().map_or((0, 0), |a| (a.1, a.2));
        ranges.push(ShardRange {
            after: after.map(|a| a.0),
            until: None,
            objects: self.objects - o0,
            bytes: (total - w0).saturating_sub((self.objects - o0) * ENTRY_WEIGHT),
        });
        // Too few candidates for `n` cuts (a tiny bucket): the last shards stay empty,
        // each after a key past every listed one, so that every index still runs.
        while (ranges.len() as u64) < n {
            let last = ranges.last_mut().expect("one range at least");
            let bound = format!("{}\u{10FFFF}", last.after.clone().unwrap_or_default());
            last.until = Some(bound.clone());
            ranges.push(ShardRange {
                after: Some(bound),
                until: None,
                objects: 0,
                bytes: 0,
            });
        }
        ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(sizes: &[(String, u64)], n: u32) -> Vec<ShardRange> {
        let mut p = Planner::new();
        for (k, s) in sizes {
            p.add(k, *s);
        }
        p.finish(n)
    }

    fn plan(shards: Vec<ShardRange>) -> Plan {
        Plan {
            version: PLAN_VERSION,
            archive_name: "backups/backup-b-2026-01-01T00-00-00-000Z.zip".into(),
            fingerprint: "f".into(),
            shards,
            planned_from: "listing".into(),
            sequential: false,
        }
    }

    #[test]
    fn ranges_have_about_equal_bytes_and_cover_every_key() {
        let objects: Vec<(String, u64)> = (0..100_000)
            .map(|i| {
                (
                    format!("k/{i:07}"),
                    if i % 10 == 0 { 1_000_000 } else { 2_000 },
                )
            })
            .collect();
        let ranges = plan_of(&objects, 8);
        assert_eq!(ranges.len(), 8);
        plan(ranges.clone()).check().unwrap();
        let total: u64 = objects.iter().map(|o| o.1).sum();
        for r in &ranges {
            let held: u64 = objects.iter().filter(|o| r.holds(&o.0)).map(|o| o.1).sum();
            assert_eq!(held, r.bytes);
            assert!(
                held.abs_diff(total / 8) < total / 100,
                "{held} vs {}",
                total / 8
            );
        }
        for o in &objects {
            assert_eq!(ranges.iter().filter(|r| r.holds(&o.0)).count(), 1);
        }
        assert_eq!(ranges.iter().map(|r| r.objects).sum::<u64>(), 100_000);
    }

    #[test]
    fn a_big_object_gets_a_shard_of_its_own() {
        let mut objects: Vec<(String, u64)> = (0..10).map(|i| (format!("a{i}"), 10)).collect();
        objects.push(("b".into(), 1 << 30));
        objects.extend((0..10).map(|i| (format!("c{i}"), 10)));
        let ranges = plan_of(&objects, 3);
        plan(ranges.clone()).check().unwrap();
        assert_eq!(ranges.len(), 3);
        let with_b = ranges.iter().find(|r| r.holds("b")).unwrap();
        assert_eq!(with_b.bytes, 1 << 30);
    }

    #[test]
    fn fewer_objects_than_shards_leave_empty_shards() {
        let objects = vec![("only".to_string(), 5u64)];
        let ranges = plan_of(&objects, 4);
        assert_eq!(ranges.len(), 4);
        plan(ranges.clone()).check().unwrap();
        assert_eq!(ranges.iter().filter(|r| r.holds("only")).count(), 1);
        assert_eq!(plan_of(&[], 2).len(), 2);
        plan(plan_of(&[], 2)).check().unwrap();
    }

    #[test]
    fn names_and_checks() {
        let p = plan(plan_of(&[("a".into(), 1), ("b".into(), 1)], 2));
        assert_eq!(p.stem(), "backup-b-2026-01-01T00-00-00-000Z");
        assert_eq!(
            p.fragment_key("backups/.spaces-backup/b/", 2),
            "backups/.spaces-backup/b/fragments/backup-b-2026-01-01T00-00-00-000Z/shard-00002-of-00002.zip"
        );
        let mut bad = p.clone();
        bad.shards[1].after = Some("z".into());
        assert!(bad.check().is_err());
        let mut bad = p.clone();
        bad.version = 9;
        assert!(bad.check().is_err());
    }
}
