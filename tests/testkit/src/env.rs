//! The environment of a backup against a test server: the one builder both test suites
//! (the component's and the host's) start from.

use crate::server::S3Server;

/// A backup of bucket `source` into `dest`, both on `s3`, with its keys. Add or override
/// variables with [`set`].
pub fn backup_env(s3: &S3Server, source: &str, dest: &str) -> Vec<(String, String)> {
    vec![
        ("SOURCE_BUCKET".into(), source.into()),
        ("SOURCE_REGION".into(), "nyc3".into()),
        ("SOURCE_ENDPOINT".into(), s3.endpoint().into()),
        ("DEST_BUCKET".into(), dest.into()),
        ("DEST_REGION".into(), "nyc3".into()),
        ("DEST_ENDPOINT".into(), s3.endpoint().into()),
        ("SPACES_KEY".into(), s3.access_key().into()),
        ("SPACES_SECRET".into(), s3.secret_key().into()),
    ]
}

/// Sets (or replaces) `name` in `env`.
pub fn set(env: &mut Vec<(String, String)>, name: &str, value: &str) {
    env.retain(|(k, _)| k != name);
    env.push((name.into(), value.into()));
}

/// Removes `name` from `env`.
pub fn unset(env: &mut Vec<(String, String)>, name: &str) {
    env.retain(|(k, _)| k != name);
}
