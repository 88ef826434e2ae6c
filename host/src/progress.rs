//! The component's log lines on a terminal: `progress` events become one live progress
//! bar (objects, bytes, throughput and ETA, against the listing as it grows) and the other
//! events are printed above it. When stderr is not a terminal the host does not use this:
//! the JSON lines go to log collectors as they are.

use std::io::Write as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use serde_json::Value;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Where the component's stdout and stderr go when the host draws progress.
#[derive(Clone, Default)]
pub struct ProgressSink {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    partial: Vec<u8>,
    bar_shown: bool,
    last_bar: String,
}

impl ProgressSink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends the live line, so what follows starts on a line of its own.
    pub fn finish(&self) {
        if let Ok(mut s) = self.state.lock() {
            if s.bar_shown {
                eprintln!();
                s.bar_shown = false;
            }
        }
    }

    fn feed(&self, bytes: &[u8]) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        s.partial.extend_from_slice(bytes);
        while let Some(nl) = s.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = s.partial.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line[..nl]).into_owned();
            let mut err = std::io::stderr().lock();
            match serde_json::from_str::<Value>(&text) {
                Ok(v) if v["event"] == "progress" => {
                    s.last_bar = bar_line(&v);
                    let _ = write!(err, "\r\x1b[2K{}", s.last_bar);
                    s.bar_shown = true;
                }
                _ => {
                    // Above the bar, which is then drawn again.
                    let _ = write!(err, "\r\x1b[2K{text}\n");
                    if s.bar_shown {
                        let _ = write!(err, "{}", s.last_bar);
                    }
                }
            }
            let _ = err.flush();
        }
    }
}

impl IsTerminal for ProgressSink {
    fn is_terminal(&self) -> bool {
        // The component writes JSON lines either way.
        false
    }
}

impl StdoutStream for ProgressSink {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for ProgressSink {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.feed(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn human(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = bytes;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// One line for a `progress` event: bar, objects, bytes, throughput, ETA. Until the
/// listing is done its totals are marked `+` and there is no ETA.
pub fn bar_line(p: &Value) -> String {
    let n = |k: &str| p[k].as_u64().unwrap_or(0);
    let (objects, listed) = (n("objects"), n("listedObjects"));
    let (read, listed_bytes) = (n("bytesRead"), n("listedBytes"));
    let done = p["listingDone"].as_bool().unwrap_or(false);
    let elapsed = p["elapsedSeconds"].as_f64().unwrap_or(0.0);
    let fraction = if listed_bytes > 0 {
        read as f64 / listed_bytes as f64
    } else if listed > 0 {
        objects as f64 / listed as f64
    } else {
        0.0
    }
    .clamp(0.0, 1.0);
    const WIDTH: usize = 24;
    let filled = (fraction * WIDTH as f64).round() as usize;
    let bar = format!("{}{}", "#".repeat(filled), "-".repeat(WIDTH - filled));
    let more = if done { "" } else { "+" };
    let rate = if elapsed > 0.0 {
        read as f64 / elapsed
    } else {
        0.0
    };
    let eta = if done && rate > 0.0 {
        format!(
            "ETA {}",
            duration(listed_bytes.saturating_sub(read) as f64 / rate)
        )
    } else {
        "ETA ?".to_string()
    };
    format!(
        "[{bar}] {:>3.0}%  {objects}/{listed}{more} objects  {}/{}{more}  {}/s  {eta}",
        fraction * 100.0,
        human(read as f64),
        human(listed_bytes as f64),
        human(rate),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bar_lines() {
        let p = json!({"objects": 5_000, "listedObjects": 10_000, "bytesRead": 50_000_000u64,
                       "listedBytes": 100_000_000u64, "listingDone": true, "elapsedSeconds": 2.0});
        assert_eq!(
            bar_line(&p),
            "[############------------]  50%  5000/10000 objects  50.0 MB/100.0 MB  25.0 MB/s  ETA 2s"
        );
        let p = json!({"objects": 10, "listedObjects": 1000, "bytesRead": 0,
                       "listedBytes": 0, "listingDone": false, "elapsedSeconds": 0.0});
        assert_eq!(
            bar_line(&p),
            "[------------------------]   1%  10/1000+ objects  0 B/0 B+  0 B/s  ETA ?"
        );
        assert_eq!(duration(3725.0), "1h02m");
        assert_eq!(human(1_234_567.0), "1.2 MB");
    }
}
