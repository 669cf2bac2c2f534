//! The daemon's log: one line per record on stderr, with a UTC timestamp and a level, as text
//! (`2026-11-30T01:02:03.456Z INFO message`) or as JSON (`{"ts":..,"level":..,"msg":..}`).
//!
//! Under systemd stderr goes to the journal (`journalctl -u lightd`), which adds its own
//! timestamp; the line's own keeps it meaningful when stderr goes to a file instead. When
//! stderr is the journal (`$JOURNAL_STREAM` names it), each line starts with its syslog
//! priority (`<4>` for warn), which journald strips and keeps, so `journalctl -p warning`
//! works. The level and format are process-wide and set once at start from `log.level` and
//! `log.format` ([`init`]); until then (command-line and config errors) records are `info`
//! and text.
//!
//! Every record is exactly one line, whatever its message holds: text escapes control
//! characters (a newline in a Docker error or a container's name cannot forge a second record),
//! JSON escapes them as JSON does. A record is written with one `write` under the stderr lock,
//! so records from different threads never interleave.
//!
//! Use the macros: `crate::info!("...")` (`lightd::info!` from the binary). A disabled level
//! costs one atomic load; its arguments are not even formatted.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// How much to say: each level includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    /// Something failed and lightd could not do what it was asked or meant to do.
    Error = 1,
    /// Something is wrong or degraded, and lightd carries on (engine unreachable, a limit lowered).
    Warn = 2,
    /// What an operator wants in the journal: start, stop, reconciles, servers' lifecycle notes.
    Info = 3,
    /// Everything else, such as one line per HTTP request.
    Debug = 4,
}

impl Level {
    /// The names `log.level` takes.
    pub const NAMES: [&'static str; 4] = ["error", "warn", "info", "debug"];

    /// `"error"`, `"warn"`, `"info"` or `"debug"`; anything else is `None`.
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "error" => Some(Level::Error),
            "warn" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }

    /// The level's name as JSON records and `log.level` spell it.
    pub fn name(self) -> &'static str {
        Level::NAMES[self as usize - 1]
    }

    /// The level as text records spell it.
    pub fn label(self) -> &'static str {
        ["ERROR", "WARN", "INFO", "DEBUG"][self as usize - 1]
    }

    /// The syslog priority journald records: err, warning, info, debug.
    pub fn priority(self) -> u8 {
        [3, 4, 6, 7][self as usize - 1]
    }

    fn from_u8(n: u8) -> Level {
        match n {
            1 => Level::Error,
            2 => Level::Warn,
            4 => Level::Debug,
            _ => Level::Info,
        }
    }
}

/// How a record is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    /// The names `log.format` takes.
    pub const NAMES: [&'static str; 2] = ["text", "json"];

    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "text" => Some(Format::Text),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
/// 0: text, 1: JSON.
static FORMAT: AtomicU8 = AtomicU8::new(0);
/// stderr is the journal: lines start with `<priority>`.
static JOURNAL: AtomicBool = AtomicBool::new(false);

/// Sets the level and format for the rest of the process (called once, at start).
pub fn init(level: Level, format: Format) {
    LEVEL.store(level as u8, Ordering::Relaxed);
    FORMAT.store(matches!(format, Format::Json) as u8, Ordering::Relaxed);
    let journal = std::env::var("JOURNAL_STREAM").ok().zip(stderr_id()).is_some_and(|(v, id)| names(&v, id));
    JOURNAL.store(journal, Ordering::Relaxed);
}

/// stderr's device and inode, as `$JOURNAL_STREAM` gives the journal's (`dev:ino`).
fn stderr_id() -> Option<(u64, u64)> {
    let st = rustix::fs::fstat(std::io::stderr()).ok()?;
    Some((st.st_dev as u64, st.st_ino as u64))
}

/// Whether `$JOURNAL_STREAM` (`dev:ino`) names the file `id`: stderr was not redirected since.
fn names(journal_stream: &str, id: (u64, u64)) -> bool {
    let parsed = journal_stream.split_once(':').and_then(|(d, i)| Some((d.parse().ok()?, i.parse().ok()?)));
    parsed == Some(id)
}

/// The level in force.
pub fn level() -> Level {
    Level::from_u8(LEVEL.load(Ordering::Relaxed))
}

/// Whether records of `level` are written.
#[inline]
pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Writes one record (the macros call this after checking [`enabled`]).
pub fn write(level: Level, args: fmt::Arguments<'_>) {
    let format = if FORMAT.load(Ordering::Relaxed) == 1 { Format::Json } else { Format::Text };
    let mut line = render(format, level, SystemTime::now(), &args.to_string());
    if JOURNAL.load(Ordering::Relaxed) {
        line.insert_str(0, &format!("<{}>", level.priority()));
    }
    line.push('\n');
    // One write under the lock: records never interleave. A closed stderr is nothing to die of.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// One record without its newline.
pub fn render(format: Format, level: Level, at: SystemTime, msg: &str) -> String {
    let ts = timestamp(at);
    match format {
        Format::Text => {
            let mut out = String::with_capacity(ts.len() + msg.len() + 8);
            let _ = write!(out, "{ts} {} ", level.label());
            escape_controls(msg, &mut out);
            out
        }
        Format::Json => {
            let msg = serde_json::to_string(msg).unwrap_or_else(|_| "\"\"".into());
            format!("{{\"ts\":\"{ts}\",\"level\":\"{}\",\"msg\":{msg}}}", level.name())
        }
    }
}

/// Appends `msg` with newlines, tabs and other control characters written as escapes
/// (`\n`, `\t`, `\u{1b}`), so a record stays on one line and a terminal shows it as is.
fn escape_controls(msg: &str, out: &mut String) {
    for c in msg.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// `at` as UTC RFC 3339 with milliseconds: `2026-11-30T01:02:03.456Z`.
pub fn timestamp(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Logs at `error`: something failed.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => {
        if $crate::log::enabled($crate::log::Level::Error) {
            $crate::log::write($crate::log::Level::Error, format_args!($($arg)+))
        }
    };
}

/// Logs at `warn`: something is wrong and lightd carries on.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => {
        if $crate::log::enabled($crate::log::Level::Warn) {
            $crate::log::write($crate::log::Level::Warn, format_args!($($arg)+))
        }
    };
}

/// Logs at `info`: what an operator wants to see.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => {
        if $crate::log::enabled($crate::log::Level::Info) {
            $crate::log::write($crate::log::Level::Info, format_args!($($arg)+))
        }
    };
}

/// Logs at `debug`: detail (request lines).
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => {
        if $crate::log::enabled($crate::log::Level::Debug) {
            $crate::log::write($crate::log::Level::Debug, format_args!($($arg)+))
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn timestamps_are_utc_rfc3339_with_millis() {
        assert_eq!(timestamp(at(0, 0)), "1970-01-01T00:00:00.000Z");
        // date -u -d @951782400: the leap day of a year divisible by 400.
        assert_eq!(timestamp(at(951_782_400, 7)), "2000-02-29T00:00:00.007Z");
        assert_eq!(timestamp(at(1_709_251_199, 999)), "2024-02-29T23:59:59.999Z");
        assert_eq!(timestamp(at(1_796_000_523, 456)), "2026-11-30T01:02:03.456Z");
        assert_eq!(timestamp(at(4_102_444_800, 0)), "2100-01-01T00:00:00.000Z");
        assert_eq!(timestamp(at(4_107_542_399, 0)), "2100-02-28T23:59:59.000Z");
        assert_eq!(timestamp(at(4_107_542_400, 0)), "2100-03-01T00:00:00.000Z");
        // Before the epoch (a badly set clock): the epoch, never a panic.
        assert_eq!(timestamp(UNIX_EPOCH - Duration::from_secs(5)), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn every_day_of_four_centuries_follows_the_one_before() {
        let mut prev = civil_from_days(0);
        assert_eq!(prev, (1970, 1, 1));
        let month_len = |y: u64, m: u64| match m {
            2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        for d in 1..146_097 + 365 {
            let (y, m, day) = civil_from_days(d);
            let (py, pm, pd) = prev;
            let expected = if pd < month_len(py, pm) {
                (py, pm, pd + 1)
            } else if pm < 12 {
                (py, pm + 1, 1)
            } else {
                (py + 1, 1, 1)
            };
            assert_eq!((y, m, day), expected, "day {d}");
            prev = (y, m, day);
        }
    }

    #[test]
    fn text_records_are_one_line() {
        let t = at(1_796_000_523, 456);
        assert_eq!(render(Format::Text, Level::Info, t, "stopped"), "2026-11-30T01:02:03.456Z INFO stopped");
        assert_eq!(
            render(Format::Text, Level::Warn, t, "a\nfake 2026-11-30T00:00:00.000Z ERROR\r\t\u{1b}[31m"),
            "2026-11-30T01:02:03.456Z WARN a\\nfake 2026-11-30T00:00:00.000Z ERROR\\r\\t\\u{1b}[31m"
        );
    }

    #[test]
    fn json_records_parse_back() {
        let t = at(1_796_000_523, 456);
        let line = render(Format::Json, Level::Error, t, "quote \" backslash \\ newline \n é");
        assert!(!line.contains('\n'), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ts"], "2026-11-30T01:02:03.456Z");
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "quote \" backslash \\ newline \n é");
        assert_eq!(v.as_object().unwrap().len(), 3);
    }

    #[test]
    fn journal_stream_must_name_stderr() {
        assert!(names("64769:1234", (64769, 1234)));
        assert!(!names("64769:1235", (64769, 1234)));
        assert!(!names("64769", (64769, 1234)));
        assert!(!names("x:y", (64769, 1234)));
        assert!(!names("", (64769, 1234)));
    }

    #[test]
    fn levels_parse_and_order() {
        for name in Level::NAMES {
            assert_eq!(Level::parse(name).unwrap().name(), name);
        }
        assert_eq!(Level::parse("INFO"), None);
        assert_eq!(Level::parse("verbose"), None);
        assert!(Level::Error < Level::Warn && Level::Warn < Level::Info && Level::Info < Level::Debug);
        assert_eq!(Level::Debug.label(), "DEBUG");
        assert_eq!([Level::Error, Level::Warn, Level::Info, Level::Debug].map(Level::priority), [3, 4, 6, 7]);
        assert_eq!(Format::parse("json"), Some(Format::Json));
        assert_eq!(Format::parse("xml"), None);
    }
}
