//! Structured log lines (one JSON object per line) on stderr, with secrets redacted.

use std::cell::RefCell;
use std::io::Write;

use serde_json::{Map, Value};

use crate::config::LogLevel;
use crate::model::Progress;

struct State {
    level: LogLevel,
    secrets: Vec<String>,
}

thread_local! {
    static STATE: RefCell<State> = const { RefCell::new(State { level: LogLevel::Info, secrets: Vec::new() }) };
}

/// Sets the level and the values that must never be printed (key, secret).
pub fn init(level: LogLevel, secrets: &[&str]) {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.level = level;
        s.secrets = secrets.iter().map(|x| x.to_string()).collect();
    });
}

/// Removes every configured secret from `text`.
pub fn scrub(text: &str) -> String {
    STATE.with(|s| {
        let s = s.borrow();
        let secrets: Vec<&str> = s.secrets.iter().map(String::as_str).collect();
        redact(text, &secrets)
    })
}

pub fn enabled(level: LogLevel) -> bool {
    STATE.with(|s| level <= s.borrow().level)
}

fn emit(level: LogLevel, event: &str, fields: Value) {
    if !enabled(level) {
        return;
    }
    let mut line = Map::new();
    line.insert(
        "level".into(),
        Value::from(match level {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }),
    );
    line.insert("event".into(), Value::from(event));
    if let Value::Object(map) = fields {
        line.extend(map);
    }
    let text = scrub(&Value::Object(line).to_string());
    // Logging must never fail a backup.
    let _ = writeln!(std::io::stderr(), "{text}");
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

/// How often a running job reports its progress.
const PROGRESS_EVERY_NANOS: u64 = 1_000_000_000;

/// The one place `progress` events come from: about once a second, and whenever asked.
pub struct ProgressClock {
    started: u64,
    last: u64,
}

impl ProgressClock {
    /// Starts counting at `now` (monotonic nanoseconds).
    pub fn new(now: u64) -> Self {
        Self {
            started: now,
            last: now,
        }
    }

    /// True once a second has passed since the last event (or with `force`).
    pub fn due(&self, now: u64, force: bool) -> bool {
        force || now.saturating_sub(self.last) >= PROGRESS_EVERY_NANOS
    }

    /// Seconds since the start, in hundredths.
    pub fn elapsed(&self, now: u64) -> f64 {
        (now.saturating_sub(self.started) / 10_000_000) as f64 / 100.0
    }

    /// Emits `progress` (its `elapsedSeconds` set here) and restarts the second.
    pub fn emit(&mut self, now: u64, mut progress: Progress) {
        self.last = now;
        progress.elapsed_seconds = self.elapsed(now);
        info(
            "progress",
            serde_json::to_value(progress).unwrap_or(Value::Null),
        );
    }
}

pub fn error(event: &str, fields: Value) {
    emit(LogLevel::Error, event, fields)
}
pub fn warn(event: &str, fields: Value) {
    emit(LogLevel::Warn, event, fields)
}
pub fn info(event: &str, fields: Value) {
    emit(LogLevel::Info, event, fields)
}
pub fn debug(event: &str, fields: Value) {
    emit(LogLevel::Debug, event, fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction() {
        assert_eq!(
            redact("key=SECRET1 and SECRET1", &["SECRET1", ""]),
            "key=<redacted> and <redacted>"
        );
    }

    #[test]
    fn progress_once_a_second() {
        let clock = ProgressClock::new(5);
        assert!(!clock.due(5 + 999_999_999, false));
        assert!(clock.due(5 + 1_000_000_000, false));
        assert!(clock.due(6, true));
        assert_eq!(clock.elapsed(5 + 2_345_000_000), 2.34);
    }
}
