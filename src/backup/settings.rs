//! Beside the objects: the source bucket's own settings (CORS, lifecycle, policy,
//! versioning), read once per run by the run that may finish the archive, and written as
//! its entry [`SETTINGS_NAME`] just before the manifest. A setting the bucket does not
//! have is left out; one the service or the key cannot read is noted in the response,
//! never fatal: the objects matter more.

use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::Failure;
use crate::io::log;
use crate::s3::{ops, xml, S3Error, S3};
use crate::zip::settings::{BucketSettings, Setting, SETTINGS_FORMAT, SETTINGS_NAME};

/// Settings that could not be read, by reason.
pub type Unread = Vec<(String, Vec<Setting>)>;

/// The settings `s3`'s bucket has, and those that could not be read. `between` runs
/// after each request (a run renews its lease there: a slow service must not let it
/// lapse).
pub fn read(
    s3: &S3,
    mut between: impl FnMut() -> Result<(), Failure>,
) -> Result<(BucketSettings, Unread), Failure> {
    let mut settings = BucketSettings {
        format: SETTINGS_FORMAT,
        source_bucket: s3.bucket().to_string(),
        recorded_at: OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default(),
        ..Default::default()
    };
    let mut unread: Unread = Vec::new();
    for setting in Setting::ALL {
        let sub = setting.subresource();
        let op = ops::get_bucket_setting(setting.get_op(), sub);
        let read = match s3.call_xml(&op, None) {
            Ok(text) => keep(setting, text, &mut settings).inspect_err(|why| {
                log::warn("setting_unread", json!({"what": sub, "message": why}));
            }),
            Err(e) if setting.is_absent(e.status(), e.code()) => Ok(()),
            Err(e) => {
                let why = refusal(&e);
                log::warn(
                    "setting_unread",
                    json!({"bucket": s3.bucket(), "what": sub, "message": why, "error": e.to_string()}),
                );
                Err(why)
            }
        };
        if let Err(why) = read {
            match unread.iter_mut().find(|(w, _)| *w == why) {
                Some((_, settings)) => settings.push(setting),
                None => unread.push((why, vec![setting])),
            }
        }
        between()?;
    }
    Ok((settings, unread))
}

/// The settings in words: "CORS rules, policy".
pub fn labels(settings: &[Setting]) -> String {
    settings
        .iter()
        .map(|s| s.label())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The settings `src`'s bucket has, as the entry's bytes (none when it has none), with
/// a note in `not_recorded` for those that could not be read.
pub fn record(
    src: &S3,
    not_recorded: &mut Vec<String>,
    between: impl FnMut() -> Result<(), Failure>,
) -> Result<Option<Vec<u8>>, Failure> {
    let (settings, unread) = read(src, between)?;
    // One note per reason: a service without any of them is named once.
    for (why, which) in unread {
        not_recorded.push(format!(
            "the source bucket's {} could not be recorded: {why}; \
             RECORD_BUCKET_SETTINGS=false leaves the bucket's settings out without asking",
            labels(&which)
        ));
    }
    let present = settings.present();
    if present.is_empty() {
        return Ok(None);
    }
    log::info(
        "bucket_settings_recorded",
        json!({"entry": SETTINGS_NAME,
               "settings": present.iter().map(|s| s.subresource()).collect::<Vec<_>>()}),
    );
    Ok(serde_json::to_vec_pretty(&settings).ok())
}

/// Why a read failed, in words shared by the settings it concerns (the service's own
/// message names the operation, so it is left to the log).
fn refusal(e: &S3Error) -> String {
    match e.status() {
        Some(501) => "the service does not implement them (HTTP 501)".into(),
        Some(405) => "the service does not allow them (HTTP 405)".into(),
        Some(s @ (401 | 403)) => format!("the key may not read them (HTTP {s} {})", e.code()),
        _ => e.to_string(),
    }
}

/// A 200's document into `settings` (left out when it is empty).
fn keep(setting: Setting, text: String, settings: &mut BucketSettings) -> Result<(), String> {
    let bad = |e: String| format!("the answer could not be read: {e}");
    match setting {
        Setting::Cors | Setting::Lifecycle => {
            let (root, child, field) = if setting == Setting::Cors {
                ("CORSConfiguration", "CORSRule", &mut settings.cors)
            } else {
                ("LifecycleConfiguration", "Rule", &mut settings.lifecycle)
            };
            if xml::count_children(&text, root, child).map_err(|e| bad(e.0))? > 0 {
                *field = Some(text);
            }
        }
        Setting::Policy => {
            if !text.trim().is_empty() {
                settings.policy =
                    Some(serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?);
            }
        }
        Setting::Versioning => match xml::parse_versioning(&text).map_err(|e| bad(e.0))? {
            None => {}
            Some(status) if status == "Enabled" || status == "Suspended" => {
                settings.versioning = Some(status)
            }
            Some(status) => return Err(bad(format!("unknown versioning state '{status}'"))),
        },
    }
    Ok(())
}
