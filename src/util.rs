//! Small pure helpers shared by the pipeline stages.

use time::OffsetDateTime;

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

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

/// Decodes `%XX` escapes (and `+` as a space, as forms encode it) in a query value.
pub fn percent_decode(text: &str) -> String {
    fn hex_digit(b: u8) -> Option<u8> {
        char::from(b).to_digit(16).map(|d| d as u8)
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| Some(hex_digit(*bytes.get(i + 1)?)? * 16 + hex_digit(*bytes.get(i + 2)?)?))
            .flatten();
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses S3's `LastModified` (`2009-10-12T17:50:30.000Z`, RFC 3339).
pub fn parse_rfc3339(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// Replaces every occurrence of each secret with `<redacted>`: the last guard before text
/// leaves the component.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for secret in secrets {
        if secret.len() >= 4 && out.contains(secret) {
            out = out.replace(secret, "<redacted>");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_encodes() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
    }

    #[test]
    fn iso_and_back() {
        let t = parse_rfc3339("2025-12-19T10:30:00.123Z").unwrap();
        assert_eq!(iso_millis(t), "2025-12-19T10:30:00.123Z");
        assert!(parse_rfc3339("yesterday").is_none());
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact("key=SECRET1 and SECRET1", &["SECRET1", ""]),
            "key=<redacted> and <redacted>"
        );
    }

    #[test]
    fn query_values_decode() {
        assert_eq!(percent_decode("backups%2Fa%20b.zip"), "backups/a b.zip");
        assert_eq!(percent_decode("a+b%2Bc"), "a b+c");
        assert_eq!(percent_decode("caf%C3%A9%"), "café%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
