//! The response envelope that `spaces-backup run` prints, the same shape a
//! DigitalOcean Function returns: `{"statusCode": 200, "body": {...}}`.

use serde_json::{json, Value};

/// `{"statusCode": status, "body": body}`, with `body` parsed as JSON when it
/// is JSON, else kept as a string (lossy UTF-8), so the envelope is always
/// valid JSON whatever the component answered.
pub fn envelope(status: u16, body: &[u8]) -> Value {
    let body = match serde_json::from_slice::<Value>(body) {
        Ok(v) => v,
        Err(_) => Value::String(String::from_utf8_lossy(body).into_owned()),
    };
    json!({ "statusCode": status, "body": body })
}

/// [`envelope`] as one line of JSON text with `statusCode` first and the
/// body's own key order kept (a `Value` would sort keys alphabetically).
pub fn envelope_line(status: u16, body: &[u8]) -> String {
    let body_json = match std::str::from_utf8(body) {
        Ok(text) if serde_json::from_str::<Value>(text).is_ok() => minify(text),
        _ => Value::String(String::from_utf8_lossy(body).into_owned()).to_string(),
    };
    format!("{{\"statusCode\":{status},\"body\":{body_json}}}")
}

/// Drops the whitespace outside strings of valid JSON text, so that a
/// pretty-printed body still fits on one line.
fn minify(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

/// The failure body for errors of the host itself (component that does not
/// load, trap, unreadable `.env`...), shaped like the component's own
/// failures so callers parse one format: `{"error":"Backup failed",
/// "message":..., "code":"HostError"}`.
pub fn host_error_body(message: &str) -> String {
    format!(
        r#"{{"error":"Backup failed","message":{},"code":"HostError"}}"#,
        Value::String(message.to_string())
    )
}

/// `{"statusCode": 500, "body": <host_error_body>}`.
pub fn host_error_envelope(message: &str) -> Value {
    envelope(500, host_error_body(message).as_bytes())
}

/// An error chain on one line: `outer: inner: root`. Wasm backtraces and other
/// multi-line parts are dropped, since users get one clear line, not a trace.
pub fn one_line_error(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        // Wasmtime attaches the wasm backtrace as a context layer of its own.
        if text.contains('\n') || text.starts_with("error while executing at wasm backtrace") {
            let first = text.lines().next().unwrap_or("").trim();
            if first.is_empty() || first.starts_with("error while executing") {
                continue;
            }
            parts.push(first.to_string());
            continue;
        }
        if parts.last().is_some_and(|p| p.ends_with(&text)) {
            continue;
        }
        parts.push(text);
    }
    if parts.is_empty() {
        return "unknown error".to_string();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_body_is_embedded() {
        let v = envelope(200, br#"{"message":"ok","filesBackedUp":3}"#);
        assert_eq!(v["statusCode"], 200);
        assert_eq!(v["body"]["filesBackedUp"], 3);
    }

    #[test]
    fn text_body_becomes_a_string() {
        let v = envelope(502, b"bad gateway");
        assert_eq!(v["statusCode"], 502);
        assert_eq!(v["body"], "bad gateway");
    }

    #[test]
    fn envelope_line_keeps_order_and_fits_one_line() {
        let body = b"{\n  \"message\": \"Backup completed successfully\",\n  \"archiveName\": \"a b\\\"c.zip\"\n}";
        let line = envelope_line(200, body);
        assert_eq!(
            line,
            r#"{"statusCode":200,"body":{"message":"Backup completed successfully","archiveName":"a b\"c.zip"}}"#
        );
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed, envelope(200, body));
        assert_eq!(
            envelope_line(502, b"oops \"x\""),
            r#"{"statusCode":502,"body":"oops \"x\""}"#
        );
        assert_eq!(envelope_line(204, b""), r#"{"statusCode":204,"body":""}"#);
    }

    #[test]
    fn host_error_has_the_failure_shape() {
        let v = host_error_envelope("no component");
        assert_eq!(v["statusCode"], 500);
        assert_eq!(v["body"]["error"], "Backup failed");
        assert_eq!(v["body"]["code"], "HostError");
        assert_eq!(v["body"]["message"], "no component");
    }

    #[test]
    fn error_chain_on_one_line() {
        let err = anyhow::anyhow!("root cause")
            .context("error while executing at wasm backtrace:\n    0: 0x1 - f")
            .context("component failed");
        assert_eq!(one_line_error(&err), "component failed: root cause");
    }
}
