//! The daemon's logger: one line per record on standard error, prefixed with
//! the seconds since start and the level, formatted into a fixed stack buffer
//! so that logging never allocates. Lines longer than
//! [`limits::LOG_LINE_BYTES_MAX`](crate::limits::LOG_LINE_BYTES_MAX) are cut
//! and end with `...`.

use core::fmt::Write as _;
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::Instant;

use crate::limits::LOG_LINE_BYTES_MAX;

static START: OnceLock<Instant> = OnceLock::new();
static LOGGER: StderrLogger = StderrLogger;

struct StderrLogger;

/// Installs the logger with the given maximum level. Call once from `main`.
pub fn install(level: log::LevelFilter) {
    START.get_or_init(Instant::now);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

/// A line buffer that drops what does not fit.
struct Line {
    bytes: [u8; LOG_LINE_BYTES_MAX],
    length: usize,
    cut: bool,
}

impl core::fmt::Write for Line {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        let room = LOG_LINE_BYTES_MAX - 4 - self.length;
        let take = text.len().min(room);
        self.bytes[self.length..self.length + take].copy_from_slice(&text.as_bytes()[..take]);
        self.length += take;
        if take < text.len() {
            self.cut = true;
        }
        Ok(())
    }
}

fn level_word(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "ERROR",
        log::Level::Warn => "WARN ",
        log::Level::Info => "INFO ",
        log::Level::Debug => "DEBUG",
        log::Level::Trace => "TRACE",
    }
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let elapsed = START.get_or_init(Instant::now).elapsed();
        let mut line = Line {
            bytes: [0; LOG_LINE_BYTES_MAX],
            length: 0,
            cut: false,
        };
        let _ = write!(
            line,
            "[{:>5}.{:03}] {} {}",
            elapsed.as_secs(),
            elapsed.subsec_millis(),
            level_word(record.level()),
            record.args()
        );
        if line.cut {
            line.bytes[line.length..line.length + 3].copy_from_slice(b"...");
            line.length += 3;
        }
        line.bytes[line.length] = b'\n';
        line.length += 1;
        let _ = std::io::stderr().write_all(&line.bytes[..line.length]);
    }

    fn flush(&self) {}
}
