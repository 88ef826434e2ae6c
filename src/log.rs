//! Structured log lines (one JSON object per line) on stderr, with secrets redacted.

use std::cell::RefCell;
use std::io::Write;

use serde_json::{Map, Value};

use crate::config::LogLevel;
use crate::util::redact;

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
