//! Counters kept while serving, and the Prometheus text of `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Process-wide counters.
#[derive(Default)]
pub struct Metrics {
    http: Mutex<BTreeMap<(&'static str, u16), u64>>,
    events_stream: AtomicBool,
}

impl Metrics {
    /// Counts one answered request.
    pub fn record_request(&self, route: &'static str, status: u16) {
        *self.http.lock().unwrap_or_else(|p| p.into_inner()).entry((route, status)).or_default() += 1;
    }

    pub fn set_events_stream(&self, open: bool) {
        self.events_stream.store(open, Ordering::Relaxed);
    }

    pub fn events_stream(&self) -> bool {
        self.events_stream.load(Ordering::Relaxed)
    }

    /// Appends the request counter to `out`.
    pub fn render_http(&self, out: &mut String) {
        out.push_str("# HELP lightd_http_requests_total HTTP requests answered, by route and status.\n");
        out.push_str("# TYPE lightd_http_requests_total counter\n");
        let http = self.http.lock().unwrap_or_else(|p| p.into_inner());
        for ((route, status), n) in http.iter() {
            let _ = writeln!(out, "lightd_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}", escape(route));
        }
    }
}

/// Appends one gauge family with a single unlabelled sample.
pub fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n");
}

/// Escapes a label value per the Prometheus text format.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Resident set size of this process, from `/proc/self/statm`.
pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    pages * 4096
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_counter_text() {
        let m = Metrics::default();
        m.record_request("/health", 200);
        m.record_request("/health", 200);
        m.record_request("/volumes/:volume_id", 404);
        let mut out = String::new();
        m.render_http(&mut out);
        assert!(out.contains("lightd_http_requests_total{route=\"/health\",status=\"200\"} 2\n"));
        assert!(out.contains("route=\"/volumes/:volume_id\",status=\"404\"} 1\n"));
        assert_eq!(escape("a\"b\\"), "a\\\"b\\\\");
        assert!(resident_bytes() > 0);
    }
}
