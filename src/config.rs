//! Configuration from environment variables: names and defaults of the original function,
//! plus optional tuning. Everything is checked here, before any request is sent.

use std::collections::BTreeMap;
use std::fmt;

pub use crate::model::{parse_endpoint, parse_size, Endpoint, MIB};
use crate::s3::sigv4::Credentials;
use crate::select::{normalize_prefixes, split_list, Exclude, Pattern};

/// S3's smallest part (except the last one) and largest part.
pub const MIN_PART_SIZE: u64 = 5 * MIB;
pub const MAX_PART_SIZE: u64 = 5 * 1024 * MIB;
/// 5 MiB, S3's smallest: over a long path each part moves at one connection's speed, so
/// the parts in flight (not their size) set the upload's speed, and small parts keep
/// the memory they hold small.
pub const DEFAULT_PART_SIZE: u64 = 5 * MIB;
/// Over a long path each GET waits a round trip before its first byte: small objects go
/// as fast as there are GETs in flight.
pub const DEFAULT_CONCURRENCY: usize = 32;
/// The guest memory cap the host applies unless MAX_MEMORY says otherwise.
pub const DEFAULT_MAX_MEMORY: u64 = 1024 * MIB;
pub const MIN_MAX_MEMORY: u64 = 64 * MIB;
/// Bytes the GETs may buffer ahead of the archive, all together.
pub const PREFETCH_BYTES: u64 = 16 * MIB;
pub const MAX_CONCURRENCY: usize = 64;
/// DigitalOcean Spaces takes at most 10 concurrent PUT/COPY requests to one object: the
/// archive's parts in flight stay at or under that unless PARTS_IN_FLIGHT says otherwise.
pub const DEFAULT_MAX_PARTS_IN_FLIGHT: usize = 10;
/// S3's (and Spaces') limit on the parts of one multipart upload.
pub const MAX_UPLOAD_PARTS: u32 = crate::backup::parts::MAX_PARTS;
pub const DEFAULT_REGION: &str = "nyc3";
/// A long run saves a checkpoint this often, so a run killed without warning loses at
/// most these minutes of work.
pub const DEFAULT_CHECKPOINT_SECONDS: u64 = 300;
pub const DEFAULT_ARCHIVE_PREFIX: &str = "backups";
pub const DEFAULT_MAX_RETRIES: u32 = 5;
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 60;
pub const DEFAULT_COMPRESSION_LEVEL: u8 = 6;

/// One side of the copy: a bucket at an endpoint, signed for a region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketTarget {
    pub bucket: String,
    pub region: String,
    pub endpoint: Endpoint,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Deflate what shrinks, store what does not (judged per entry).
    Auto,
    Deflate,
    Store,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub source: BucketTarget,
    pub dest: BucketTarget,
    pub credentials: Credentials,
    pub archive_prefix: String,
    /// The first part's size; later parts grow unless `part_size_fixed`.
    pub part_size: u64,
    /// PART_SIZE was set: every part has that size.
    pub part_size_fixed: bool,
    /// GETs in flight (at most: on a near link the pipeline keeps fewer, unless set).
    pub concurrency: usize,
    /// CONCURRENCY was set: the pipeline keeps it whatever the link.
    pub concurrency_fixed: bool,
    /// UploadParts of the archive in flight at most (half CONCURRENCY, at most 10, by
    /// default).
    pub parts_in_flight: usize,
    pub compression: Compression,
    pub compression_level: u8,
    pub max_retries: u32,
    pub timeout_seconds: u64,
    pub log_level: LogLevel,
    /// The memory the host lets the component use (MAX_MEMORY, which the host enforces).
    pub max_memory: u64,
    /// Prefixes to list, in key order, none inside another; `[""]` is the whole bucket.
    pub include_prefixes: Vec<String>,
    pub exclude: Exclude,
    /// Report what would be archived, and write nothing.
    pub dry_run: bool,
    /// The destination wants every part but the last of one size (Cloudflare R2): parts
    /// do not grow, and their size is chosen from the listed total.
    pub equal_parts: bool,
    /// Retention: archives of this source to keep, by count and by age.
    pub keep_last: Option<u32>,
    pub keep_days: Option<u32>,
    /// This run's time budget (MAX_RUN_SECONDS): it stops before, with a checkpoint.
    pub max_run_seconds: Option<u64>,
    /// The DigitalOcean Function's deadline (`__OW_DEADLINE`, Unix milliseconds).
    pub deadline_ms: Option<u64>,
    /// Between checkpoints of a long run (CHECKPOINT_SECONDS).
    pub checkpoint_seconds: u64,
    /// Abandon the checkpoint an earlier run left (its upload is aborted) and start anew.
    pub discard_checkpoint: bool,
    /// Shards a plan divides the bucket into (SHARDS; `POST /plan` uses it by default).
    pub shards: Option<u32>,
    /// This run backs up one shard of the stored plan (SHARD=i/N, or Kubernetes'
    /// 0-based JOB_COMPLETION_INDEX with SHARDS=N).
    pub shard: Option<ShardIndex>,
    /// The shard's work, read from the plan when the run begins (never from the
    /// environment).
    pub shard_work: Option<ShardWork>,
    /// The most parts one multipart upload of the destination may have (MAX_PARTS:
    /// 10,000 on S3 and Spaces; some services are set lower). A backup that would need
    /// more is written as fragments and composed.
    pub max_parts: u32,
    /// Record each object's ACL (GetObjectAcl) and tags (GetObjectTagging) in the
    /// manifest, for restore: one request each per object.
    pub record_acl: bool,
    pub record_tags: bool,
    /// Record the source bucket's CORS, lifecycle, policy and versioning settings in the
    /// archive (RECORD_BUCKET_SETTINGS): four requests per run.
    pub record_bucket_settings: bool,
}

/// Which shard of how many, from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardIndex {
    pub index: u32,
    pub count: u32,
}

/// A shard run's target, from the plan: its key range, its fragment and its chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardWork {
    pub index: ShardIndex,
    pub range: crate::compose::plan::ShardRange,
    pub fragment: String,
    pub chain_dir: String,
}

impl Config {
    /// Parts that may be uploading at once, in bytes (at least one part always may).
    pub fn upload_budget(&self) -> u64 {
        self.part_size.saturating_mul(self.parts_in_flight as u64)
    }

    /// The largest part MAX_MEMORY leaves room for (whole MiB, 5 MiB to 5 GiB), with a
    /// quarter of it kept for the archive's end (central directory, names, manifest;
    /// checkpoints take them out of memory): parts grow up to it and no further, so
    /// memory stops growing with the archive.
    pub fn part_cap(&self) -> u64 {
        let fixed = 512 * 1024 + PREFETCH_BYTES + self.max_memory / 4 + 16 * MIB;
        let room = self.max_memory.saturating_sub(fixed);
        let budget = self.upload_budget();
        // memory_needed(p) is 2p + fixed from p = budget up, budget + p + fixed below.
        let p = if room >= 2 * budget {
            room / 2
        } else {
            room.saturating_sub(budget)
        };
        (p / MIB * MIB).clamp(MIN_PART_SIZE, MAX_PART_SIZE)
    }

    /// The size of part `number` (from 1): PART_SIZE as set, or growing from it
    /// ([`crate::backup::parts::part_size_for`]) up to [`Self::part_cap`].
    pub fn part_size_of(&self, number: u32) -> u64 {
        let grown =
            crate::backup::parts::part_size_for(number, self.part_size, self.part_size_fixed);
        if self.part_size_fixed {
            grown
        } else {
            grown.min(self.part_cap().max(self.part_size))
        }
    }

    /// The largest archive one upload holds: MAX_PARTS parts of the sizes
    /// [`Self::part_size_of`] gives.
    pub fn upload_capacity(&self) -> u64 {
        (1..=self.max_parts).map(|n| self.part_size_of(n)).sum()
    }

    /// Memory the pipeline needs with parts of `part_size` and `held` bytes kept for the
    /// archive's end: parts in flight, the part filling (with room for one more write),
    /// the prefetch buffers, and a margin for the rest (deflate state, allocator slack).
    pub fn memory_needed(&self, part_size: u64, held: u64) -> u64 {
        self.upload_budget()
            .max(part_size)
            .saturating_add(part_size + 512 * 1024)
            .saturating_add(PREFETCH_BYTES)
            .saturating_add(held)
            .saturating_add(16 * MIB)
    }
}

/// One bad variable: its name and what is wrong, in words a user can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.problem)
    }
}

/// Every problem found, so a user fixes them in one go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration: ")?;
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

struct Reader<'a> {
    vars: &'a BTreeMap<String, String>,
    errors: Vec<ConfigError>,
}

impl Reader<'_> {
    fn fail(&mut self, variable: &str, problem: impl Into<String>) {
        self.errors.push(ConfigError {
            variable: variable.to_string(),
            problem: problem.into(),
        });
    }

    /// Unset and empty (or blank) are the same: the default applies.
    fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// A comma-separated list; unset is empty.
    fn list(&self, name: &str) -> Vec<String> {
        self.get(name).map(split_list).unwrap_or_default()
    }

    fn required(&mut self, name: &str, what: &str) -> String {
        match self.get(name) {
            Some(v) => v.to_string(),
            None => {
                self.fail(name, format!("is required but not set ({what})"));
                String::new()
            }
        }
    }

    fn parse<T>(&mut self, name: &str, default: T, parse: impl Fn(&str) -> Result<T, String>) -> T {
        match self.get(name) {
            None => default,
            Some(v) => match parse(v) {
                Ok(x) => x,
                Err(problem) => {
                    self.fail(name, problem);
                    default
                }
            },
        }
    }

    fn target(&mut self, side: &str, what: &str) -> BucketTarget {
        let bucket_var = format!("{side}_BUCKET");
        let region_var = format!("{side}_REGION");
        let endpoint_var = format!("{side}_ENDPOINT");
        let bucket = self.required(&bucket_var, what);
        if !bucket.is_empty() {
            if let Err(problem) = validate_bucket(&bucket) {
                self.fail(&bucket_var, problem);
            }
        }
        let region = self.parse(&region_var, DEFAULT_REGION.to_string(), |v| {
            validate_region(v).map(|()| v.to_string())
        });
        let endpoint = self.parse(&endpoint_var, Endpoint::spaces(&region), parse_endpoint);
        BucketTarget {
            bucket,
            region,
            endpoint,
        }
    }
}

/// Reads and checks every variable. `vars` is the whole environment. Every problem is
/// collected, so a user fixes them in one go; then the memory the settings need is
/// checked against MAX_MEMORY.
pub fn from_env(vars: &BTreeMap<String, String>) -> Result<Config, ConfigErrors> {
    let mut r = Reader {
        vars,
        errors: Vec::new(),
    };
    let source = r.target("SOURCE", "the bucket to back up");
    let dest = r.target("DEST", "the bucket that receives the archive");
    // Secrets are checked for presence only: their values never appear in an error.
    let credentials = Credentials {
        access_key: r.required("SPACES_KEY", "the access key id"),
        secret_key: r.required("SPACES_SECRET", "the secret access key"),
    };
    let concurrency = r.parse("CONCURRENCY", DEFAULT_CONCURRENCY, parse_concurrency);
    let config = Config {
        source,
        dest,
        credentials,
        archive_prefix: r.parse(
            "ARCHIVE_PREFIX",
            DEFAULT_ARCHIVE_PREFIX.to_string(),
            parse_prefix,
        ),
        part_size_fixed: r.get("PART_SIZE").is_some(),
        part_size: r.parse("PART_SIZE", DEFAULT_PART_SIZE, parse_part_size),
        concurrency,
        concurrency_fixed: r.get("CONCURRENCY").is_some(),
        parts_in_flight: r.parse(
            "PARTS_IN_FLIGHT",
            concurrency.div_ceil(2).min(DEFAULT_MAX_PARTS_IN_FLIGHT),
            parse_concurrency,
        ),
        compression: r.parse("COMPRESSION", Compression::Auto, parse_compression),
        compression_level: r.parse("COMPRESSION_LEVEL", DEFAULT_COMPRESSION_LEVEL, parse_level),
        max_retries: r.parse("MAX_RETRIES", DEFAULT_MAX_RETRIES, parse_retries),
        timeout_seconds: r.parse("TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS, parse_timeout),
        log_level: r.parse("LOG_LEVEL", LogLevel::Info, parse_log_level),
        max_memory: r.parse("MAX_MEMORY", DEFAULT_MAX_MEMORY, parse_max_memory),
        include_prefixes: normalize_prefixes(&r.list("INCLUDE_PREFIXES")),
        exclude: Exclude(r.list("EXCLUDE").iter().map(|p| Pattern::new(p)).collect()),
        dry_run: r.parse("DRY_RUN", false, parse_bool),
        equal_parts: false,
        keep_last: r.parse("KEEP_LAST", None, parse_count),
        keep_days: r.parse("KEEP_DAYS", None, parse_count),
        max_run_seconds: r.parse("MAX_RUN_SECONDS", None, parse_run_seconds),
        deadline_ms: r.parse("__OW_DEADLINE", None, parse_deadline),
        checkpoint_seconds: r.parse(
            "CHECKPOINT_SECONDS",
            DEFAULT_CHECKPOINT_SECONDS,
            parse_checkpoint_seconds,
        ),
        discard_checkpoint: r.parse("DISCARD_CHECKPOINT", false, parse_bool),
        shards: r.parse("SHARDS", None, parse_shards),
        shard: None,
        shard_work: None,
        max_parts: r.parse("MAX_PARTS", MAX_UPLOAD_PARTS, parse_max_parts),
        record_acl: r.parse("RECORD_ACL", true, parse_bool),
        record_tags: r.parse("RECORD_TAGS", true, parse_bool),
        record_bucket_settings: r.parse("RECORD_BUCKET_SETTINGS", true, parse_bool),
    };
    let mut config = config;
    // R2 wants equal parts; elsewhere growing parts reach 5 TiB without knowing the size.
    let r2 = config
        .dest
        .endpoint
        .authority
        .ends_with(".r2.cloudflarestorage.com");
    let auto = r
        .get("EQUAL_PARTS")
        .is_some_and(|v| v.eq_ignore_ascii_case("auto"));
    config.equal_parts = if auto {
        r2
    } else {
        r.parse("EQUAL_PARTS", r2, parse_equal_parts)
    };
    config.shard = shard_index(&mut r, config.shards);
    if !r.errors.is_empty() {
        return Err(ConfigErrors(r.errors));
    }
    check_memory(&config)?;
    Ok(config)
}

/// The settings must leave room in MAX_MEMORY for the parts they put in flight.
fn check_memory(c: &Config) -> Result<(), ConfigErrors> {
    let need = c.memory_needed(c.part_size, 0);
    if need <= c.max_memory {
        return Ok(());
    }
    Err(ConfigErrors(vec![ConfigError {
        variable: "MAX_MEMORY".into(),
        problem: format!(
            "{} bytes is too little for PART_SIZE {} with CONCURRENCY {} ({} parts in flight), which need about {need}; \
             raise MAX_MEMORY or lower PART_SIZE or PARTS_IN_FLIGHT",
            c.max_memory, c.part_size, c.concurrency, c.parts_in_flight
        ),
    }]))
}

fn parse_concurrency(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (1..=MAX_CONCURRENCY).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{v}' is not a whole number from 1 to {MAX_CONCURRENCY}"
        )),
    }
}

fn parse_compression(v: &str) -> Result<Compression, String> {
    match v.to_ascii_lowercase().as_str() {
        "auto" => Ok(Compression::Auto),
        "deflate" => Ok(Compression::Deflate),
        "store" | "none" => Ok(Compression::Store),
        _ => Err(format!("'{v}' is not one of auto, deflate, store")),
    }
}

fn parse_level(v: &str) -> Result<u8, String> {
    match v.parse::<u8>() {
        Ok(n) if (1..=9).contains(&n) => Ok(n),
        _ => Err(format!("'{v}' is not a deflate level from 1 to 9")),
    }
}

fn parse_retries(v: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if n <= 20 => Ok(n),
        _ => Err(format!("'{v}' is not a whole number from 0 to 20")),
    }
}

fn parse_timeout(v: &str) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if (1..=3600).contains(&n) => Ok(n),
        _ => Err(format!("'{v}' is not a number of seconds from 1 to 3600")),
    }
}

fn parse_log_level(v: &str) -> Result<LogLevel, String> {
    match v.to_ascii_lowercase().as_str() {
        "error" => Ok(LogLevel::Error),
        "warn" | "warning" => Ok(LogLevel::Warn),
        "info" => Ok(LogLevel::Info),
        "debug" => Ok(LogLevel::Debug),
        _ => Err(format!("'{v}' is not one of error, warn, info, debug")),
    }
}

fn parse_max_memory(v: &str) -> Result<u64, String> {
    match parse_size(v) {
        Some(n) if n >= MIN_MAX_MEMORY => Ok(n),
        Some(_) => Err(format!("'{v}' is below the 64 MiB a backup needs")),
        None => Err(format!("'{v}' is not a size (bytes, or e.g. 512MiB, 2GiB)")),
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("'{v}' is not true or false")),
    }
}

/// `true` or `false` (`auto` is read before: what the endpoint needs).
fn parse_equal_parts(v: &str) -> Result<bool, String> {
    parse_bool(v).map_err(|_| format!("'{v}' is not true, false or auto"))
}

fn parse_run_seconds(v: &str) -> Result<Option<u64>, String> {
    match v.parse::<u64>() {
        Ok(n) if (1..=7 * 86_400).contains(&n) => Ok(Some(n)),
        _ => Err(format!("'{v}' is not a number of seconds from 1 to 604800")),
    }
}

fn parse_checkpoint_seconds(v: &str) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if (1..=86_400).contains(&n) => Ok(n),
        _ => Err(format!("'{v}' is not a number of seconds from 1 to 86400")),
    }
}

/// Unix milliseconds, as OpenWhisk sets it for each activation.
fn parse_deadline(v: &str) -> Result<Option<u64>, String> {
    match v.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(format!("'{v}' is not a time in Unix milliseconds")),
    }
}

fn parse_shards(v: &str) -> Result<Option<u32>, String> {
    let max = crate::compose::plan::MAX_SHARDS;
    match v.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
        _ => Err(format!("'{v}' is not a number of shards from 1 to {max}")),
    }
}

/// SHARD=i/N (from 1), or JOB_COMPLETION_INDEX (from 0, as a Kubernetes Indexed Job
/// sets it) with SHARDS=N. SHARD wins when both are set.
fn shard_index(r: &mut Reader<'_>, shards: Option<u32>) -> Option<ShardIndex> {
    let max = crate::compose::plan::MAX_SHARDS;
    if let Some(v) = r.get("SHARD").map(str::to_string) {
        let parsed = v.split_once('/').and_then(|(i, n)| {
            Some((i.trim().parse::<u32>().ok()?, n.trim().parse::<u32>().ok()?))
        });
        return match parsed {
            Some((index, count)) if index >= 1 && index <= count && count <= max => {
                if shards.is_some_and(|s| s != count) {
                    r.fail("SHARD", format!("'{v}' does not agree with SHARDS"));
                }
                Some(ShardIndex { index, count })
            }
            _ => {
                r.fail(
                    "SHARD",
                    format!(
                        "'{v}' is not INDEX/COUNT with 1 <= INDEX <= COUNT <= {max}, e.g. 3/16"
                    ),
                );
                None
            }
        };
    }
    let v = r.get("JOB_COMPLETION_INDEX")?.to_string();
    let Some(count) = shards else {
        r.fail(
            "JOB_COMPLETION_INDEX",
            "is set, so this run is one shard, but SHARDS (how many) is not",
        );
        return None;
    };
    match v.parse::<u32>() {
        Ok(i) if i < count => Some(ShardIndex {
            index: i + 1,
            count,
        }),
        _ => {
            r.fail(
                "JOB_COMPLETION_INDEX",
                format!(
                    "'{v}' is not an index from 0 to {} (SHARDS={count})",
                    count - 1
                ),
            );
            None
        }
    }
}

fn parse_max_parts(v: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if (2..=MAX_UPLOAD_PARTS).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{v}' is not a number of parts from 2 to {MAX_UPLOAD_PARTS}"
        )),
    }
}

fn parse_count(v: &str) -> Result<Option<u32>, String> {
    match v.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(format!("'{v}' is not a whole number of at least 1")),
    }
}

/// S3 bucket naming rules, loosened to the legacy set (upper case, `_`) some services allow.
pub fn validate_bucket(name: &str) -> Result<(), String> {
    if !(3..=63).contains(&name.len()) {
        return Err(format!(
            "'{name}' is not a bucket name (3 to 63 characters)"
        ));
    }
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    let ok_ends = name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if !ok_chars || !ok_ends {
        return Err(format!(
            "'{name}' is not a bucket name (letters, digits, '.', '-', starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

fn validate_region(region: &str) -> Result<(), String> {
    let ok = region.len() <= 64
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{region}' is not a region slug (lower-case letters, digits and '-', e.g. nyc3)"
        ))
    }
}

fn parse_prefix(v: &str) -> Result<String, String> {
    let trimmed = v.trim_matches('/');
    if trimmed.is_empty() {
        return Err("must name a folder, e.g. backups".into());
    }
    if trimmed.len() > 512 || trimmed.chars().any(|c| c.is_control()) {
        return Err(format!(
            "'{v}' is not a usable folder name (at most 512 bytes, no control characters)"
        ));
    }
    Ok(trimmed.to_string())
}

fn parse_part_size(v: &str) -> Result<u64, String> {
    match parse_size(v) {
        None => Err(format!(
            "'{v}' is not a size (bytes, or a number with KiB, MiB or GiB)"
        )),
        Some(n) if n < MIN_PART_SIZE => Err(format!(
            "'{v}' is below S3's minimum part size of 5 MiB (5242880 bytes)"
        )),
        Some(n) if n > MAX_PART_SIZE => {
            Err(format!("'{v}' is above S3's maximum part size of 5 GiB"))
        }
        Some(n) => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn minimal() -> Vec<(&'static str, &'static str)> {
        vec![
            ("SOURCE_BUCKET", "my-source-bucket"),
            ("DEST_BUCKET", "my-backup-bucket"),
            ("SPACES_KEY", "DO00KEYKEYKEY"),
            ("SPACES_SECRET", "s3cr3t-value-xyz"),
        ]
    }

    #[test]
    fn defaults_match_the_original_function() {
        let c = from_env(&env(&minimal())).unwrap();
        assert_eq!(c.source.region, "nyc3");
        assert_eq!(
            c.source.endpoint.to_string(),
            "https://nyc3.digitaloceanspaces.com"
        );
        assert_eq!(c.dest.endpoint.authority, "nyc3.digitaloceanspaces.com");
        assert_eq!(c.archive_prefix, "backups");
        assert_eq!(c.part_size, DEFAULT_PART_SIZE);
        assert!(!c.part_size_fixed);
        assert_eq!(c.concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(c.parts_in_flight, 10);
        assert_eq!(c.compression, Compression::Auto);
    }

    #[test]
    fn memory_needs_are_checked_against_max_memory() {
        let c = from_env(&env(&minimal())).unwrap();
        assert_eq!(c.max_memory, DEFAULT_MAX_MEMORY);
        // 10 parts of 5 MiB in flight, one filling, prefetch and margin: about 88 MiB.
        let need = c.memory_needed(c.part_size, 0);
        assert!((72 * MIB..96 * MIB).contains(&need), "{need}");
        // Parts bigger than the upload budget: one in flight and one filling.
        assert!(c.memory_needed(1024 * MIB, 0) > 2048 * MIB);

        let mut vars = minimal();
        vars.push(("MAX_MEMORY", "64MiB"));
        let err = from_env(&env(&vars)).unwrap_err();
        assert_eq!(err.0[0].variable, "MAX_MEMORY");
        assert!(err.0[0].problem.contains("CONCURRENCY"), "{err}");
        vars.push(("CONCURRENCY", "1"));
        vars.push(("PART_SIZE", "5MiB"));
        assert!(from_env(&env(&vars)).is_ok());
        for bad in ["lots", "1MiB"] {
            let mut vars = minimal();
            vars.push(("MAX_MEMORY", bad));
            let err = from_env(&env(&vars)).unwrap_err();
            assert_eq!(err.0[0].variable, "MAX_MEMORY", "{bad}");
        }
    }

    #[test]
    fn chained_run_settings_are_checked() {
        let c = from_env(&env(&minimal())).unwrap();
        assert_eq!(c.max_run_seconds, None);
        assert_eq!(c.deadline_ms, None);
        assert_eq!(c.checkpoint_seconds, DEFAULT_CHECKPOINT_SECONDS);
        assert!(!c.discard_checkpoint);
        let mut vars = minimal();
        vars.extend([
            ("MAX_RUN_SECONDS", "840"),
            ("__OW_DEADLINE", "1764000000000"),
            ("CHECKPOINT_SECONDS", "60"),
            ("DISCARD_CHECKPOINT", "true"),
        ]);
        let c = from_env(&env(&vars)).unwrap();
        assert_eq!(c.max_run_seconds, Some(840));
        assert_eq!(c.deadline_ms, Some(1_764_000_000_000));
        assert_eq!(c.checkpoint_seconds, 60);
        assert!(c.discard_checkpoint);
        for (name, bad) in [
            ("MAX_RUN_SECONDS", "0"),
            ("MAX_RUN_SECONDS", "10m"),
            ("__OW_DEADLINE", "soon"),
            ("CHECKPOINT_SECONDS", "0"),
            ("DISCARD_CHECKPOINT", "maybe"),
        ] {
            let mut vars = minimal();
            vars.push((name, bad));
            let err = from_env(&env(&vars)).unwrap_err();
            assert_eq!(err.0[0].variable, name, "{bad}");
        }
    }

    #[test]
    fn parts_in_flight_stay_within_what_spaces_allows() {
        let mut vars = minimal();
        vars.push(("CONCURRENCY", "64"));
        let c = from_env(&env(&vars)).unwrap();
        assert_eq!(c.parts_in_flight, DEFAULT_MAX_PARTS_IN_FLIGHT);
        vars.push(("PARTS_IN_FLIGHT", "16"));
        assert_eq!(from_env(&env(&vars)).unwrap().parts_in_flight, 16);
        let mut one = minimal();
        one.push(("CONCURRENCY", "1"));
        assert_eq!(from_env(&env(&one)).unwrap().parts_in_flight, 1);
        one.push(("PARTS_IN_FLIGHT", "0"));
        assert_eq!(
            from_env(&env(&one)).unwrap_err().0[0].variable,
            "PARTS_IN_FLIGHT"
        );
    }

    #[test]
    fn equal_parts_follow_the_destination() {
        let c = from_env(&env(&minimal())).unwrap();
        assert!(!c.equal_parts);
        let mut vars = minimal();
        vars.push(("DEST_ENDPOINT", "https://abc123.r2.cloudflarestorage.com"));
        assert!(from_env(&env(&vars)).unwrap().equal_parts);
        vars.push(("EQUAL_PARTS", "false"));
        assert!(!from_env(&env(&vars)).unwrap().equal_parts);
        let mut vars = minimal();
        vars.push(("EQUAL_PARTS", "true"));
        assert!(from_env(&env(&vars)).unwrap().equal_parts);
        let mut vars = minimal();
        vars.push(("EQUAL_PARTS", "auto"));
        assert!(!from_env(&env(&vars)).unwrap().equal_parts);
        let mut vars = minimal();
        vars.push(("EQUAL_PARTS", "sometimes"));
        assert_eq!(
            from_env(&env(&vars)).unwrap_err().0[0].variable,
            "EQUAL_PARTS"
        );
    }

    #[test]
    fn endpoint_follows_region() {
        let mut vars = minimal();
        vars.push(("SOURCE_REGION", "fra1"));
        vars.push(("DEST_ENDPOINT", "http://127.0.0.1:9000/"));
        let c = from_env(&env(&vars)).unwrap();
        assert_eq!(c.source.endpoint.authority, "fra1.digitaloceanspaces.com");
        assert!(!c.dest.endpoint.https);
        assert_eq!(c.dest.endpoint.authority, "127.0.0.1:9000");
    }

    #[test]
    fn every_missing_variable_is_named() {
        let err = from_env(&env(&[])).unwrap_err();
        let names: Vec<_> = err.0.iter().map(|e| e.variable.as_str()).collect();
        assert_eq!(
            names,
            [
                "SOURCE_BUCKET",
                "DEST_BUCKET",
                "SPACES_KEY",
                "SPACES_SECRET"
            ]
        );
        assert!(err.to_string().contains("SOURCE_BUCKET: is required"));
    }

    #[test]
    fn malformed_values_are_named_and_secrets_never_echoed() {
        let mut vars = minimal();
        vars.extend([
            ("SOURCE_REGION", "NYC 3"),
            ("DEST_ENDPOINT", "ftp://x"),
            ("PART_SIZE", "1MiB"),
            ("COMPRESSION", "zstd"),
            ("MAX_RETRIES", "many"),
            ("CONCURRENCY", "0"),
        ]);
        let err = from_env(&env(&vars)).unwrap_err();
        let text = err.to_string();
        for name in [
            "SOURCE_REGION",
            "DEST_ENDPOINT",
            "PART_SIZE",
            "COMPRESSION",
            "MAX_RETRIES",
        ] {
            assert!(text.contains(name), "{name} missing from: {text}");
        }
        assert!(text.contains("minimum part size"));
        assert!(!text.contains("s3cr3t") && !text.contains("DO00KEY"));
    }

    #[test]
    fn parts_stop_growing_where_memory_ends() {
        let mut pairs = minimal();
        pairs.push(("MAX_MEMORY", "768MiB"));
        let c = from_env(&env(&pairs)).unwrap();
        let cap = c.part_cap();
        assert_eq!(cap, 271 * MIB);
        // Memory for parts of the cap, with the quarter kept for the end, fits.
        assert!(c.memory_needed(cap, c.max_memory / 4) <= c.max_memory);
        assert_eq!(c.part_size_of(1), 5 * MIB);
        assert_eq!(c.part_size_of(6_000), 160 * MIB);
        assert_eq!(c.part_size_of(6_001), cap);
        assert_eq!(c.part_size_of(10_000), cap);
        // 10,000 parts so capped hold about 1.47 TB (1 GiB: about 1.82 TB).
        let total: u64 = (1..=10_000).map(|n| c.part_size_of(n)).sum();
        assert_eq!(total / MIB, 1_399_000);
        let c = from_env(&env(&minimal())).unwrap();
        let total: u64 = (1..=10_000).map(|n| c.part_size_of(n)).sum();
        assert_eq!(total / MIB, 315_000 + 1_000 * 320 + 3_000 * 367);
        // A PART_SIZE set is kept as it is.
        let mut pairs = minimal();
        pairs.push(("PART_SIZE", "300MiB"));
        pairs.push(("PARTS_IN_FLIGHT", "1"));
        let c = from_env(&env(&pairs)).unwrap();
        assert_eq!(c.part_size_of(9_000), 300 * MIB);
    }

    #[test]
    fn an_upload_holds_max_parts_parts() {
        let c = from_env(&env(&minimal())).unwrap();
        assert_eq!(c.max_parts, 10_000);
        assert_eq!(
            c.upload_capacity() / MIB,
            315_000 + 1_000 * 320 + 3_000 * 367
        );
        let mut pairs = minimal();
        pairs.push(("MAX_PARTS", "6"));
        pairs.push(("PART_SIZE", "5MiB"));
        let c = from_env(&env(&pairs)).unwrap();
        assert_eq!(c.upload_capacity(), 30 * MIB);
        for bad in ["1", "10001", "many"] {
            let mut pairs = minimal();
            pairs.push(("MAX_PARTS", bad));
            let text = from_env(&env(&pairs)).unwrap_err().to_string();
            assert!(text.contains("MAX_PARTS"), "{bad}: {text}");
        }
    }

    #[test]
    fn shards_are_read_and_checked() {
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = minimal();
            pairs.extend_from_slice(extra);
            from_env(&env(&pairs))
        };
        let c = with(&[("SHARD", "3/16")]).unwrap();
        assert_eq!(
            c.shard,
            Some(ShardIndex {
                index: 3,
                count: 16
            })
        );
        let c = with(&[("JOB_COMPLETION_INDEX", "0"), ("SHARDS", "4")]).unwrap();
        assert_eq!(c.shard, Some(ShardIndex { index: 1, count: 4 }));
        assert_eq!(c.shards, Some(4));
        assert_eq!(with(&[("SHARDS", "4")]).unwrap().shard, None);
        for (bad, var) in [
            (vec![("SHARD", "0/4")], "SHARD"),
            (vec![("SHARD", "5/4")], "SHARD"),
            (vec![("SHARD", "x")], "SHARD"),
            (vec![("SHARD", "2/4"), ("SHARDS", "8")], "SHARD"),
            (vec![("JOB_COMPLETION_INDEX", "2")], "JOB_COMPLETION_INDEX"),
            (
                vec![("JOB_COMPLETION_INDEX", "4"), ("SHARDS", "4")],
                "JOB_COMPLETION_INDEX",
            ),
            (vec![("SHARDS", "0")], "SHARDS"),
            (vec![("SHARDS", "1001")], "SHARDS"),
        ] {
            let err = with(&bad).unwrap_err();
            assert!(err.0.iter().any(|e| e.variable == var), "{bad:?}: {err}");
        }
    }

    #[test]
    fn sizes() {
        assert!(parse_part_size("4MiB").is_err());
        assert!(parse_part_size("6GiB").is_err());
        assert_eq!(parse_part_size("5MiB"), Ok(MIN_PART_SIZE));
    }

    #[test]
    fn bucket_names() {
        assert!(validate_bucket("my-bucket.v2").is_ok());
        assert!(validate_bucket("ab").is_err());
        assert!(validate_bucket("-bucket").is_err());
        assert!(validate_bucket("a/b/c").is_err());
    }
}
