//! The component's log lines on a terminal: `progress` events become one live progress
//! bar (objects, bytes, throughput and ETA, against the listing as it grows) and the other
//! events are printed above it. When stderr is not a terminal the host does not use this:
//! the JSON lines go to log collectors as they are.

use std::io::Write as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use serde::Deserialize;
use spaces_backup::model::{human_bytes, Progress};
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
            match progress_event(&text) {
                Some(p) => {
                    s.last_bar = bar_line(&p);
                    let _ = write!(err, "\r\x1b[2K{}", s.last_bar);
                    s.bar_shown = true;
                }
                None => {
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

/// The log line's event name: all a line needs to say to be told apart.
#[derive(Deserialize)]
struct Event {
    event: String,
}

/// The progress event a log line carries, if it is one.
fn progress_event(line: &str) -> Option<Progress> {
    let e: Event = serde_json::from_str(line).ok()?;
    if e.event != "progress" {
        return None;
    }
    serde_json::from_str(line).ok()
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
pub fn bar_line(p: &Progress) -> String {
    let (objects, listed) = (p.objects, p.listed_objects);
    let (read, listed_bytes) = (p.bytes_read, p.listed_bytes);
    let done = p.listing_done;
    let elapsed = p.elapsed_seconds;
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
        human_bytes(read),
        human_bytes(listed_bytes),
        human_bytes(rate as u64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_lines() {
        let p = Progress {
            objects: 5_000,
            listed_objects: 10_000,
            bytes_read: 50_000_000,
            listed_bytes: 100_000_000,
            listing_done: true,
            elapsed_seconds: 2.0,
            ..Default::default()
        };
        assert_eq!(
            bar_line(&p),
            "[############------------]  50%  5000/10000 objects  50.0 MB/100.0 MB  25.0 MB/s  ETA 2s"
        );
        let p = Progress {
            objects: 10,
            listed_objects: 1000,
            ..Default::default()
        };
        assert_eq!(
            bar_line(&p),
            "[------------------------]   1%  10/1000+ objects  0 B/0 B+  0 B/s  ETA ?"
        );
        assert_eq!(duration(3725.0), "1h02m");
        let line = r#"{"event":"progress","level":"info","objects":3,"bytesRead":9,"listedObjects":4,"listedBytes":12,"listingDone":true,"elapsedSeconds":1.5}"#;
        assert_eq!(progress_event(line).map(|p| p.objects), Some(3));
        assert!(progress_event(r#"{"event":"retry","level":"warn"}"#).is_none());
    }
}
