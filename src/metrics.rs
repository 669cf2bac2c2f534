//! Counters kept while serving, and the Prometheus text of `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Statuses counted one by one; anything else is counted under its class (`2xx`...).
const STATUSES: [u16; 18] = [200, 201, 202, 204, 400, 401, 403, 404, 405, 406, 409, 413, 415, 426, 429, 431, 500, 503];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const COLUMNS: usize = STATUSES.len() + CLASSES.len();

/// Process-wide counters. The request counter is a fixed table of atomics (route x status),
/// so counting costs no lock on the request path.
pub struct Metrics {
    routes: Vec<&'static str>,
    http: Box<[AtomicU64]>,
    events_stream: AtomicBool,
}

impl Metrics {
    /// Counters for requests to `routes` (by index); one more row counts unmatched paths.
    pub fn new(routes: Vec<&'static str>) -> Metrics {
        let cells = (routes.len() + 1) * COLUMNS;
        Metrics { routes, http: (0..cells).map(|_| AtomicU64::new(0)).collect(), events_stream: AtomicBool::new(false) }
    }

    /// Counts one answered request to route `route` (`None`: no route matched).
    pub fn record_request(&self, route: Option<usize>, status: u16) {
        let row = route.filter(|r| *r < self.routes.len()).unwrap_or(self.routes.len());
        let col = STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or_else(|| STATUSES.len() + (usize::from(status / 100).clamp(1, 5) - 1));
        self.http[row * COLUMNS + col].fetch_add(1, Ordering::Relaxed);
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
        for (i, cell) in self.http.iter().enumerate() {
            let n = cell.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            let (row, col) = (i / COLUMNS, i % COLUMNS);
            let route = self.routes.get(row).copied().unwrap_or("unmatched");
            let status = match STATUSES.get(col) {
                Some(s) => s.to_string(),
                None => CLASSES[col - STATUSES.len()].to_string(),
            };
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
        let m = Metrics::new(vec!["/health", "/volumes/:volume_id"]);
        m.record_request(Some(0), 200);
        m.record_request(Some(0), 200);
        m.record_request(Some(1), 404);
        m.record_request(None, 418);
        let mut out = String::new();
        m.render_http(&mut out);
        assert!(out.contains("lightd_http_requests_total{route=\"/health\",status=\"200\"} 2\n"));
        assert!(out.contains("route=\"/volumes/:volume_id\",status=\"404\"} 1\n"));
        assert!(out.contains("route=\"unmatched\",status=\"4xx\"} 1\n"), "{out}");
        assert_eq!(escape("a\"b\\"), "a\\\"b\\\\");
        assert!(resident_bytes() > 0);
    }
}
