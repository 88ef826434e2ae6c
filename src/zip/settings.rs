//! The bucket's own settings, one entry of the archive (`.spaces-backup/bucket.json`,
//! written before the manifest): CORS rules, lifecycle rules, the bucket policy and the
//! versioning state, as the source gave them at backup time.
//!
//! CORS and lifecycle rules are kept as the XML documents the service sent, since
//! those are exactly what PutBucketCors and PutBucketLifecycleConfiguration take back:
//! no field a service adds is lost by a translation. The policy is JSON already.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::zip::spec::{CentralEntry, STORED};

/// The entry's name; no object's entry may take it.
pub const SETTINGS_NAME: &str = ".spaces-backup/bucket.json";

/// Whether `e` is the settings entry. Its form tells it apart from an object that took
/// the name in an archive of an earlier version: the record is stored and never empty,
/// while the writer deflates every object with data (stored blocks included).
pub fn is_settings_entry(e: &CentralEntry) -> bool {
    e.name == SETTINGS_NAME && e.method == STORED && e.uncompressed > 0
}

/// The entry's own format version.
pub const SETTINGS_FORMAT: u32 = 1;

/// One of the settings kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    Cors,
    Lifecycle,
    Policy,
    Versioning,
}

impl Setting {
    pub const ALL: [Setting; 4] = [
        Setting::Cors,
        Setting::Lifecycle,
        Setting::Policy,
        Setting::Versioning,
    ];

    /// The bucket's sub-resource (`?cors`, ...), also its field in the entry and in a
    /// restore's report.
    pub fn subresource(self) -> &'static str {
        match self {
            Setting::Cors => "cors",
            Setting::Lifecycle => "lifecycle",
            Setting::Policy => "policy",
            Setting::Versioning => "versioning",
        }
    }

    /// In words, for messages.
    pub fn label(self) -> &'static str {
        match self {
            Setting::Cors => "CORS rules",
            Setting::Lifecycle => "lifecycle rules",
            Setting::Policy => "policy",
            Setting::Versioning => "versioning state",
        }
    }

    pub fn get_op(self) -> &'static str {
        match self {
            Setting::Cors => "GetBucketCors",
            Setting::Lifecycle => "GetBucketLifecycleConfiguration",
            Setting::Policy => "GetBucketPolicy",
            Setting::Versioning => "GetBucketVersioning",
        }
    }

    pub fn put_op(self) -> &'static str {
        match self {
            Setting::Cors => "PutBucketCors",
            Setting::Lifecycle => "PutBucketLifecycleConfiguration",
            Setting::Policy => "PutBucketPolicy",
            Setting::Versioning => "PutBucketVersioning",
        }
    }

    /// The codes a service answers when the bucket has no such setting (not a refusal).
    pub fn is_absent(self, status: Option<u16>, code: &str) -> bool {
        let named = match self {
            Setting::Cors => "NoSuchCORSConfiguration",
            Setting::Lifecycle => "NoSuchLifecycleConfiguration",
            Setting::Policy => "NoSuchBucketPolicy",
            Setting::Versioning => "",
        };
        (!named.is_empty() && code == named) || (status == Some(404) && code == "NotFound")
    }
}

/// The entry's content.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketSettings {
    pub format: u32,
    pub source_bucket: String,
    /// When they were read (RFC 3339).
    pub recorded_at: String,
    /// `CORSConfiguration`, as GetBucketCors gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<String>,
    /// `LifecycleConfiguration`, as GetBucketLifecycleConfiguration gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Value>,
    /// `Enabled` or `Suspended`; none for a bucket never versioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versioning: Option<String>,
}

impl BucketSettings {
    /// The settings present, in the order a restore applies them.
    pub fn present(&self) -> Vec<Setting> {
        Setting::ALL
            .into_iter()
            .filter(|s| match s {
                Setting::Cors => self.cors.is_some(),
                Setting::Lifecycle => self.lifecycle.is_some(),
                Setting::Policy => self.policy.is_some(),
                Setting::Versioning => self.versioning.is_some(),
            })
            .collect()
    }

    /// Reads the entry back; a newer format is refused rather than half applied.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let s: BucketSettings = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if s.format != SETTINGS_FORMAT {
            return Err(format!(
                "format {} is not one this version reads ({SETTINGS_FORMAT})",
                s.format
            ));
        }
        if let Some(v) = &s.versioning {
            if v != "Enabled" && v != "Suspended" {
                return Err(format!("unknown versioning state '{v}'"));
            }
        }
        Ok(s)
    }
}

/// The policy for bucket `to`: its resources (`Resource`, `NotResource`) that name bucket
/// `from` (`arn:aws:s3:::from`, `arn:aws:s3:::from/...`) name `to` instead, since a
/// service refuses a policy about another bucket. Returns it and how many were renamed.
pub fn policy_for(policy: &Value, from: &str, to: &str) -> (Value, usize) {
    let mut out = policy.clone();
    let mut renamed = 0;
    if from != to {
        rename_resources(&mut out, from, to, false, &mut renamed);
    }
    (out, renamed)
}

fn rename_resources(v: &mut Value, from: &str, to: &str, resource: bool, n: &mut usize) {
    match v {
        Value::String(s) if resource => {
            let arn = format!("arn:aws:s3:::{from}");
            if let Some(rest) = s.strip_prefix(&arn) {
                if rest.is_empty() || rest.starts_with('/') {
                    *s = format!("arn:aws:s3:::{to}{rest}");
                    *n += 1;
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                rename_resources(item, from, to, resource, n);
            }
        }
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                let is_resource = k == "Resource" || k == "NotResource";
                rename_resources(item, from, to, is_resource, n);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_and_present_settings() {
        let s = BucketSettings {
            format: SETTINGS_FORMAT,
            source_bucket: "b".into(),
            recorded_at: "2026-12-03T10:00:00Z".into(),
            cors: Some("<CORSConfiguration/>".into()),
            versioning: Some("Enabled".into()),
            ..Default::default()
        };
        let bytes = serde_json::to_vec(&s).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains("lifecycle") && text.contains("\"sourceBucket\":\"b\""));
        let back = BucketSettings::parse(&bytes).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.present(), [Setting::Cors, Setting::Versioning]);
        let newer = text.replace("\"format\":1", "\"format\":2");
        assert!(BucketSettings::parse(newer.as_bytes()).is_err());
        let odd = text.replace("Enabled", "Sometimes");
        assert!(BucketSettings::parse(odd.as_bytes()).is_err());
    }

    #[test]
    fn a_policy_follows_the_bucket_it_is_restored_into() {
        let p = json!({"Statement": [
            {"Effect": "Allow", "Resource": "arn:aws:s3:::src/*", "Principal": "*"},
            {"Effect": "Deny", "NotResource": ["arn:aws:s3:::src", "arn:aws:s3:::src-other/x"],
             "Condition": {"StringLike": {"aws:Referer": "arn:aws:s3:::src/*"}}}
        ]});
        let (q, n) = policy_for(&p, "src", "dst");
        assert_eq!(n, 2);
        assert_eq!(q["Statement"][0]["Resource"], "arn:aws:s3:::dst/*");
        assert_eq!(q["Statement"][1]["NotResource"][0], "arn:aws:s3:::dst");
        // Another bucket whose name begins the same, and a condition, stay as they are.
        assert_eq!(
            q["Statement"][1]["NotResource"][1],
            "arn:aws:s3:::src-other/x"
        );
        assert_eq!(
            q["Statement"][1]["Condition"]["StringLike"]["aws:Referer"],
            "arn:aws:s3:::src/*"
        );
        assert_eq!(policy_for(&p, "src", "src"), (p.clone(), 0));
    }

    #[test]
    fn absent_is_told_from_refused() {
        assert!(Setting::Cors.is_absent(Some(404), "NoSuchCORSConfiguration"));
        assert!(Setting::Policy.is_absent(Some(404), "NoSuchBucketPolicy"));
        assert!(!Setting::Policy.is_absent(Some(501), "NotImplemented"));
        assert!(!Setting::Lifecycle.is_absent(Some(403), "AccessDenied"));
        assert!(!Setting::Cors.is_absent(Some(404), "NoSuchBucket"));
    }
}
