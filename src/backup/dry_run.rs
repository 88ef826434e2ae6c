//! `DRY_RUN=true`: the whole listing, selected as a backup would select it, counted;
//! nothing is read or written beyond the listing and the destination check.

use std::time::Instant;

use crate::backup::list::Lister;
use crate::config::Config;
use crate::error::{s3_failure, Failure, Side};
use crate::io::log;
use crate::model::{hundredths, DryRunReport, ListedObject};
use crate::select::{Selection, Tally};

/// How many keys a dry run names.
const DRY_RUN_KEYS: usize = 100;

pub fn run(
    config: &Config,
    key: &str,
    lister: &mut Lister<'_>,
    first: Vec<ListedObject>,
    clock: Instant,
) -> Result<DryRunReport, Failure> {
    let selection = Selection::new(config);
    let mut left_out = Tally::default();
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut keys = Vec::new();
    let mut page = first;
    loop {
        for obj in page {
            if left_out.take(selection.judge(&obj.key)) {
                files += 1;
                bytes += obj.size;
                if keys.len() < DRY_RUN_KEYS {
                    keys.push(obj.key);
                }
            }
        }
        page = match lister.next_page() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => {
                return Err(s3_failure(
                    Side::Source,
                    &config.source,
                    "listing objects",
                    None,
                    &e,
                ))
            }
        };
    }
    let report = DryRunReport {
        message: "Dry run: nothing was written".into(),
        dry_run: true,
        source_bucket: config.source.bucket.clone(),
        destination_bucket: config.dest.bucket.clone(),
        archive_name: key.to_string(),
        files_to_back_up: files,
        bytes_to_read: bytes,
        first_keys: keys,
        excluded_archives: left_out.own_archives,
        excluded_by_filter: left_out.excluded,
        duration_seconds: hundredths(clock.elapsed().as_secs_f64()),
    };
    log::info(
        "dry_run_done",
        serde_json::to_value(&report).unwrap_or_default(),
    );
    Ok(report)
}
