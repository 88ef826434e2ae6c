//! Pure types both sides share: every response body and the progress event (serde
//! structs, so the host reads fields rather than looking up strings), and the parsing of
//! sizes and endpoints. No I/O here: the host depends on this crate natively for them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One grant of an object's ACL: a grantee (a canonical user id, a group URI or an
/// e-mail address) and a permission (`FULL_CONTROL`, `READ`, `READ_ACP`, `WRITE_ACP`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub permission: String,
}

/// The group every anonymous request belongs to (`public-read`).
pub const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
/// The group of every signed-in AWS account (`authenticated-read`).
pub const AUTHENTICATED_USERS: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";

/// An object's ACL as the manifest keeps it: a canned ACL when it is one (`private`,
/// `public-read`, `public-read-write`, `authenticated-read`), else every grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Acl {
    Canned(String),
    Grants(Vec<Grant>),
}

impl Acl {
    /// From GetObjectAcl's owner and grants.
    pub fn from_policy(owner: &str, grants: &[Grant]) -> Acl {
        let group = |uri: &str, permission: &str| Grant {
            uri: Some(uri.to_string()),
            permission: permission.to_string(),
            ..Default::default()
        };
        // The owner's own FULL_CONTROL is in every canned ACL.
        let mut others: Vec<&Grant> = grants
            .iter()
            .filter(|g| !(g.id.as_deref() == Some(owner) && g.permission == "FULL_CONTROL"))
            .collect();
        others.sort_by(|a, b| (&a.uri, &a.permission).cmp(&(&b.uri, &b.permission)));
        let owner_has_it = grants.len() > others.len();
        let is = |want: &[Grant]| {
            others.len() == want.len() && others.iter().zip(want).all(|(a, b)| *a == b)
        };
        let canned = if !owner_has_it {
            None
        } else if others.is_empty() {
            Some("private")
        } else if is(&[group(ALL_USERS, "READ")]) {
            Some("public-read")
        } else if is(&[group(ALL_USERS, "READ"), group(ALL_USERS, "WRITE")]) {
            Some("public-read-write")
        } else if is(&[group(AUTHENTICATED_USERS, "READ")]) {
            Some("authenticated-read")
        } else {
            None
        };
        match canned {
            Some(c) => Acl::Canned(c.into()),
            None => Acl::Grants(grants.to_vec()),
        }
    }

    /// The headers that set it again with PutObject or CreateMultipartUpload: none for
    /// `private` (every new object is), `x-amz-acl` for a canned ACL, `x-amz-grant-*`
    /// for a grant list (WRITE, which objects do not take, left out).
    pub fn to_headers(&self) -> Vec<(String, String)> {
        match self {
            Acl::Canned(c) if c == "private" => Vec::new(),
            Acl::Canned(c) => vec![("x-amz-acl".into(), c.clone())],
            Acl::Grants(grants) => {
                let mut out: Vec<(String, String)> = Vec::new();
                for (permission, header) in [
                    ("FULL_CONTROL", "x-amz-grant-full-control"),
                    ("READ", "x-amz-grant-read"),
                    ("READ_ACP", "x-amz-grant-read-acp"),
                    ("WRITE_ACP", "x-amz-grant-write-acp"),
                ] {
                    let who: Vec<String> = grants
                        .iter()
                        .filter(|g| g.permission == permission)
                        .filter_map(|g| {
                            Some(match (&g.id, &g.uri, &g.email) {
                                (Some(id), _, _) => format!("id=\"{id}\""),
                                (_, Some(uri), _) => format!("uri=\"{uri}\""),
                                (_, _, Some(e)) => format!("emailAddress=\"{e}\""),
                                _ => return None,
                            })
                        })
                        .collect();
                    if !who.is_empty() {
                        out.push((header.to_string(), who.join(", ")));
                    }
                }
                out
            }
        }
    }
}

/// One object as a listing names it: what its archive entry is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
    /// As listed, quoted; empty when the service lists none.
    pub etag: String,
    pub last_modified: String,
}

/// What a successful backup answers. The first seven fields are the original function's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupReport {
    pub message: String,
    pub source_bucket: String,
    pub destination_bucket: String,
    pub archive_name: String,
    pub files_backed_up: u64,
    pub archive_size: u64,
    pub duration_seconds: f64,
    /// Bytes read from the source bucket.
    pub bytes_read: u64,
    pub parts: u64,
    pub part_size: u64,
    /// Deleted between the listing and their download (noted in the manifest).
    pub skipped: Vec<String>,
    /// Rewritten between the listing and their download, archived as downloaded.
    pub changed: Vec<String>,
    /// Earlier archives of this source left out (DEST_BUCKET = SOURCE_BUCKET).
    pub excluded_archives: u64,
    pub excluded_by_filter: u64,
    pub retries: u64,
    /// Older archives removed by KEEP_LAST / KEEP_DAYS.
    pub deleted: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_error: Option<String>,
    /// `completed`, or `continuing` when the run stopped at its deadline and the next
    /// one goes on with the same archive (HTTP 202, exit status 75).
    #[serde(default)]
    pub status: String,
    /// Runs this archive took so far, this one included.
    #[serde(default)]
    pub runs: u32,
    /// What the manifest lacks of some or all objects (ACLs, tags), and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_recorded: Vec<String>,
}

/// What DRY_RUN=true answers: nothing was written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DryRunReport {
    pub message: String,
    pub dry_run: bool,
    pub source_bucket: String,
    pub destination_bucket: String,
    pub archive_name: String,
    pub files_to_back_up: u64,
    pub bytes_to_read: u64,
    /// The first keys a backup would take, in order.
    pub first_keys: Vec<String>,
    pub excluded_archives: u64,
    pub excluded_by_filter: u64,
    pub duration_seconds: f64,
}

/// One difference between an archive and the source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// `missing`, `changed` or `new`.
    pub status: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What `verify` answers: the archive's manifest against the source as it is now.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    pub message: String,
    pub archive_name: String,
    pub source_bucket: String,
    pub destination_bucket: String,
    pub identical: bool,
    pub deep: bool,
    /// Entries of the archive, the manifest included.
    pub entries: u64,
    pub objects_in_archive: u64,
    pub unchanged: u64,
    pub missing: u64,
    pub changed: u64,
    pub new: u64,
    /// The first differences (all are counted).
    pub differences: Vec<Difference>,
    pub retries: u64,
}

/// One entry that failed the integrity check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Damaged {
    pub entry: String,
    pub reason: String,
}

/// What `verify --integrity` answers: every entry against its central-directory record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IntegrityReport {
    pub message: String,
    pub archive_name: String,
    pub identical: bool,
    pub intact: bool,
    pub archive_size: u64,
    pub entries: u64,
    pub damaged_entries: u64,
    pub bytes_checked: u64,
    pub damaged: Vec<Damaged>,
    pub retries: u64,
}

/// Either answer of `POST /verify`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VerifyAnswer {
    Integrity(IntegrityReport),
    Compare(VerifyReport),
}

/// What a successful restore answers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    pub message: String,
    pub archive_name: String,
    pub target_bucket: String,
    pub prefix: String,
    pub objects_restored: u64,
    pub bytes_restored: u64,
    /// The bucket's settings applied (`cors`, `lifecycle`, `policy`, `versioning`), with
    /// `--bucket-settings`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bucket_settings: Vec<String>,
    pub retries: u64,
}

/// Every failure's body: `error` says which job, `message` what to do, `code` what kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// `GET /health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub service: String,
    pub version: String,
}

/// The `progress` event, about once a second during a backup or restore: what a
/// terminal draws as a bar, and what log collectors keep.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub objects: u64,
    pub bytes_read: u64,
    pub listed_objects: u64,
    pub listed_bytes: u64,
    pub listing_done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts_started: Option<u32>,
    pub elapsed_seconds: f64,
}

/// How the bundled host tells the component that a server's TLS certificate did not
/// verify (wasi:http's `TlsCertificateError` carries no reason): `internal-error` with a
/// message that starts with this, followed by the problem.
pub const CERTIFICATE_ERROR: &str = "the TLS certificate does not verify: ";

/// The variable that adds CA certificates for outgoing HTTPS (PEM), as OpenSSL and
/// rustls read it.
pub const CA_FILE_VAR: &str = "SSL_CERT_FILE";

/// Seconds rounded to hundredths, as every report gives them.
pub fn hundredths(seconds: f64) -> f64 {
    (seconds * 100.0).round() / 100.0
}

pub const MIB: u64 = 1024 * 1024;

/// Bytes, or a number with a binary suffix: `16777216`, `16MiB`, `16M`, `1GiB`.
pub fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1024,
        "m" | "mib" | "mb" => MIB,
        "g" | "gib" | "gb" => 1024 * MIB,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// `1.2 MB`-style sizes (powers of 1,000, as transfer rates are given).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Where requests go: scheme and the authority exactly as sent and signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub https: bool,
    /// `host` or `host:port`; the port only when it is not the scheme's default.
    pub authority: String,
}

impl Endpoint {
    /// DigitalOcean Spaces in `region`: the default of SOURCE_ENDPOINT and DEST_ENDPOINT.
    pub fn spaces(region: &str) -> Self {
        Self {
            https: true,
            authority: format!("{region}.digitaloceanspaces.com"),
        }
    }

    /// `host:port` with the port always given (443 or 80 when it is the default).
    pub fn host_port(&self) -> String {
        let bracketed_v6 = self.authority.starts_with('[') && self.authority.ends_with(']');
        if self.authority.contains(':') && !bracketed_v6 {
            return self.authority.clone();
        }
        let port = if self.https { 443 } else { 80 };
        format!("{}:{port}", self.authority)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority)
    }
}

/// `http(s)://host[:port][/]`: no user info, path, query or fragment. The host is lower
/// case, and a default port is dropped, as the Host header is sent and signed.
pub fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let bad = |why: &str| Err(format!("'{text}' is not an endpoint URL: {why}"));
    let (https, rest) = if let Some(rest) = text.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = text.strip_prefix("http://") {
        (false, rest)
    } else {
        return bad("it must start with https:// or http://");
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() {
        return bad("the host is missing");
    }
    if authority.contains(['/', '?', '#', '@']) {
        return bad("give only scheme, host and port (no path, query or user info)");
    }
    let (host, port) = if authority.starts_with('[') {
        let Some(end) = authority.find(']') else {
            return bad("an IPv6 address needs its closing ']'");
        };
        match &authority[end + 1..] {
            "" => (&authority[..=end], None),
            rest => match rest.strip_prefix(':') {
                Some(p) => (&authority[..=end], Some(p)),
                None => return bad("unexpected text after the IPv6 address"),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    };
    if !host_ok {
        return bad("the host name has characters a host cannot have");
    }
    let default_port = if https { 443 } else { 80 };
    let authority = match port {
        None => host.to_ascii_lowercase(),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n == default_port => host.to_ascii_lowercase(),
            Ok(n) if n > 0 => format!("{}:{n}", host.to_ascii_lowercase()),
            _ => return bad("the port is not a number from 1 to 65535"),
        },
    };
    Ok(Endpoint { https, authority })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acls_are_canned_when_they_are_and_set_again() {
        let user = |id: &str, p: &str| Grant {
            id: Some(id.into()),
            permission: p.into(),
            ..Default::default()
        };
        let group = |uri: &str, p: &str| Grant {
            uri: Some(uri.into()),
            permission: p.into(),
            ..Default::default()
        };
        let owner = user("o", "FULL_CONTROL");
        let canned = |grants: &[Grant]| match Acl::from_policy("o", grants) {
            Acl::Canned(c) => c,
            Acl::Grants(_) => "grants".into(),
        };
        assert_eq!(canned(std::slice::from_ref(&owner)), "private");
        assert_eq!(
            canned(&[owner.clone(), group(ALL_USERS, "READ")]),
            "public-read"
        );
        assert_eq!(
            canned(&[
                group(ALL_USERS, "WRITE"),
                owner.clone(),
                group(ALL_USERS, "READ")
            ]),
            "public-read-write"
        );
        assert_eq!(
            canned(&[owner.clone(), group(AUTHENTICATED_USERS, "READ")]),
            "authenticated-read"
        );
        // Without the owner's grant, or with another user's, it is a grant list.
        assert_eq!(canned(&[group(ALL_USERS, "READ")]), "grants");
        let shared = [
            owner.clone(),
            user("friend", "READ"),
            user("friend", "READ_ACP"),
        ];
        let acl = Acl::from_policy("o", &shared);
        assert_eq!(acl, Acl::Grants(shared.to_vec()));
        assert_eq!(
            acl.to_headers(),
            [
                (
                    "x-amz-grant-full-control".to_string(),
                    "id=\"o\"".to_string()
                ),
                ("x-amz-grant-read".into(), "id=\"friend\"".into()),
                ("x-amz-grant-read-acp".into(), "id=\"friend\"".into()),
            ]
        );
        assert!(Acl::Canned("private".into()).to_headers().is_empty());
        assert_eq!(
            Acl::Canned("public-read".into()).to_headers(),
            [("x-amz-acl".to_string(), "public-read".to_string())]
        );
        // In the manifest: a string, or the grants.
        assert_eq!(
            serde_json::to_string(&Acl::Canned("public-read".into())).unwrap(),
            r#""public-read""#
        );
        let back: Acl = serde_json::from_str(&serde_json::to_string(&acl).unwrap()).unwrap();
        assert_eq!(back, acl);
    }

    #[test]
    fn endpoints() {
        let e = parse_endpoint("https://nyc3.digitaloceanspaces.com:443").unwrap();
        assert_eq!(e.authority, "nyc3.digitaloceanspaces.com");
        assert_eq!(e.host_port(), "nyc3.digitaloceanspaces.com:443");
        let e = parse_endpoint("http://localhost:80").unwrap();
        assert_eq!(e.authority, "localhost");
        assert_eq!(e.host_port(), "localhost:80");
        let e = parse_endpoint("http://[::1]:9000").unwrap();
        assert_eq!(e.authority, "[::1]:9000");
        assert_eq!(e.host_port(), "[::1]:9000");
        assert_eq!(
            parse_endpoint("http://[::1]").unwrap().host_port(),
            "[::1]:80"
        );
        assert_eq!(
            parse_endpoint("HTTPS://x").map_err(|e| e.contains("https://")),
            Err(true)
        );
        for bad in [
            "nyc3.digitaloceanspaces.com",
            "https://",
            "https://host/path",
            "https://user@host",
            "https://host:99999",
            "https://host:",
            "https://host:0",
            "https://ho st",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16777216"), Some(16 * MIB));
        assert_eq!(parse_size("16MiB"), Some(16 * MIB));
        assert_eq!(parse_size("1g"), Some(1024 * MIB));
        assert_eq!(parse_size("12 parsecs"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1_234_567), "1.2 MB");
    }

    #[test]
    fn reports_keep_their_field_names() {
        let report = BackupReport {
            message: "Backup completed successfully".into(),
            files_backed_up: 3,
            ..Default::default()
        };
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(v["filesBackedUp"], 3);
        assert!(v.get("retentionError").is_none());
        let text = serde_json::to_string(&report).unwrap();
        assert!(text.starts_with(r#"{"message":"Backup completed successfully","sourceBucket""#));
        let integrity = serde_json::to_string(&VerifyAnswer::Integrity(IntegrityReport::default()));
        let back: VerifyAnswer = serde_json::from_str(&integrity.unwrap()).unwrap();
        assert!(matches!(back, VerifyAnswer::Integrity(_)));
        let compare = serde_json::to_string(&VerifyReport::default()).unwrap();
        let back: VerifyAnswer = serde_json::from_str(&compare).unwrap();
        assert!(matches!(back, VerifyAnswer::Compare(_)));
    }
}
