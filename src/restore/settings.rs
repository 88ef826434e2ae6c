//! The archive's bucket settings ([`SETTINGS_NAME`]) onto the target bucket, only when
//! asked (`--bucket-settings`): they change how the bucket behaves, for every object in
//! it. Applied after the objects are back, since a policy may refuse writes and a
//! lifecycle rule may expire what was just restored.

use std::borrow::Cow;

use base64::Engine;
use md5::{Digest, Md5};
use serde_json::json;

use crate::backup::settings::labels;
use crate::error::{s3_failure, Failure, Kind, Side};
use crate::io::log;
use crate::s3::{ops, xml, S3};
use crate::zip::remote::RemoteZip;
use crate::zip::settings::{policy_for, BucketSettings, Setting, SETTINGS_NAME};
use crate::zip::spec::CentralEntry;

/// More than any real set of rules (S3 allows 1,000 lifecycle rules and a 20 KB policy).
const MAX_SETTINGS_BYTES: u64 = 4 * 1024 * 1024;

/// The settings entry of an archive, read and checked.
pub fn read(remote: &RemoteZip, entry: &CentralEntry) -> Result<BucketSettings, Failure> {
    let bad = |why: String| {
        Failure::new(
            Kind::Archive,
            format!(
                "the archive's {SETTINGS_NAME} cannot be read: {why}; \
                 restore without --bucket-settings to bring back only the objects"
            ),
        )
    };
    if entry.uncompressed > MAX_SETTINGS_BYTES {
        return Err(bad(format!("{} bytes is too big", entry.uncompressed)));
    }
    let bytes = remote
        .read_entry(entry, |r| {
            let mut body = Vec::new();
            r.read_to_end(&mut body)?;
            Ok(body)
        })
        .map_err(|e| remote.failure("reading the bucket's settings", &e))?;
    BucketSettings::parse(&bytes).map_err(bad)
}

/// Refuses (409), before anything is written, to replace a setting the target bucket
/// has and that differs from the archive's, or that cannot be read to tell: the same
/// rule as for objects, which `--overwrite` lifts.
pub fn refuse_changes(target: &S3, archived: &BucketSettings) -> Result<(), Failure> {
    let bucket = target.bucket();
    let (now, unread) = crate::backup::settings::read(target, || Ok(()))?;
    let held = archived.present();
    let same = |mine: &Option<String>, theirs: &Option<String>| {
        theirs.as_ref().is_none_or(|t| Some(t) == mine.as_ref())
    };
    let mut other: Vec<Setting> = held
        .iter()
        .copied()
        .filter(|s| match s {
            Setting::Cors => !same(&archived.cors, &now.cors),
            Setting::Lifecycle => !same(&archived.lifecycle, &now.lifecycle),
            Setting::Policy => now.policy.as_ref().is_some_and(|p| {
                let mine = archived.policy.as_ref().unwrap_or(&serde_json::Value::Null);
                *p != policy_for(mine, &archived.source_bucket, bucket).0
            }),
            Setting::Versioning => !same(&archived.versioning, &now.versioning),
        })
        .collect();
    for (_, which) in unread {
        other.extend(which.into_iter().filter(|s| held.contains(s)));
    }
    if other.is_empty() {
        return Ok(());
    }
    Err(Failure::new(
        Kind::Conflict,
        format!(
            "the target bucket '{bucket}' already has {} other than the archive's (or they \
             cannot be read to compare); nothing was restored: pass --overwrite to replace \
             them, or restore into another bucket",
            labels(&other)
        ),
    ))
}

/// Applies every setting the archive holds to `target`'s bucket; returns their names.
/// The bucket policy's resources are renamed to the target bucket. A setting the
/// target refuses stops here, saying which were applied.
pub fn apply(target: &S3, settings: &BucketSettings) -> Result<Vec<String>, Failure> {
    let bucket = target.bucket().to_string();
    let mut applied = Vec::new();
    for setting in settings.present() {
        let (body, content_type): (Cow<'_, str>, _) = match setting {
            Setting::Cors => (
                settings.cors.as_deref().unwrap_or_default().into(),
                "application/xml",
            ),
            Setting::Lifecycle => (
                settings.lifecycle.as_deref().unwrap_or_default().into(),
                "application/xml",
            ),
            Setting::Policy => {
                let none = serde_json::Value::Null;
                let policy = settings.policy.as_ref().unwrap_or(&none);
                let (policy, renamed) = policy_for(policy, &settings.source_bucket, &bucket);
                if renamed > 0 {
                    log::info(
                        "bucket_policy_renamed",
                        json!({"from": settings.source_bucket, "to": bucket, "resources": renamed}),
                    );
                }
                (policy.to_string().into(), "application/json")
            }
            Setting::Versioning => (
                xml::versioning_body(settings.versioning.as_deref().unwrap_or_default()).into(),
                "application/xml",
            ),
        };
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(body.as_bytes()));
        let op =
            ops::put_bucket_setting(setting.put_op(), setting.subresource(), content_type, md5);
        if let Err(e) = target.call_xml(&op, Some(body.as_bytes())) {
            let done = if applied.is_empty() {
                "none of the bucket's settings were applied".to_string()
            } else {
                format!("only these were applied: {}", applied.join(", "))
            };
            return Err(s3_failure(
                Side::Target,
                &target.target,
                &format!("applying the bucket's {}", setting.label()),
                None,
                &e,
            )
            .and(&format!("; the objects were restored, {done}")));
        }
        applied.push(setting.subresource().to_string());
    }
    Ok(applied)
}
