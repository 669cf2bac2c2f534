//! Counters and histograms kept while serving, and the Prometheus text of `GET /metrics`.
//! Every cell is an atomic in a fixed table, so counting costs no lock on the request path.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// Statuses counted one by one; anything else is counted under its class (`2xx`...).
const STATUSES: [u16; 23] =
    [200, 201, 202, 204, 206, 400, 401, 403, 404, 405, 406, 409, 413, 415, 416, 426, 429, 431, 500, 502, 503, 504, 507];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const COLUMNS: usize = STATUSES.len() + CLASSES.len();

/// Upper bounds (seconds) of the HTTP latency buckets.
const HTTP_BUCKETS: [f64; 12] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0];
/// Upper bounds (seconds) of the console delivery buckets: ring push to socket write done.
pub const DELIVERY_BUCKETS: [f64; 13] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0];

/// A histogram of fixed buckets, lock-free.
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.sum_nanos.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// Adds counts gathered elsewhere (per bucket, plus sum and count), in few atomic steps.
    pub fn merge(&self, local: &LocalHistogram) {
        for (i, n) in local.buckets.iter().enumerate().filter(|(_, n)| **n > 0) {
            self.buckets[i].fetch_add(*n, Relaxed);
        }
        self.sum_nanos.fetch_add(local.sum_nanos, Relaxed);
        self.count.fetch_add(local.count, Relaxed);
    }

    /// Adds this histogram's counts to `into` (bucket by bucket, then sum and count).
    fn add_to(&self, into: &mut LocalHistogram) {
        for (sum, n) in into.buckets.iter_mut().zip(self.buckets.iter()) {
            *sum += n.load(Relaxed);
        }
        into.sum_nanos += self.sum_nanos.load(Relaxed);
        into.count += self.count.load(Relaxed);
    }

    /// Appends the `_bucket`, `_sum` and `_count` samples of `name` with `labels`.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut all = LocalHistogram::new(self.bounds);
        self.add_to(&mut all);
        all.render(out, name, labels);
    }

    /// The quantile `q` (0-1) estimated from the buckets (the upper bound of its bucket).
    #[cfg(test)]
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count.load(Relaxed);
        if count == 0 {
            return None;
        }
        let want = (q * count as f64).ceil() as u64;
        let mut seen = 0;
        for (b, n) in self.bounds.iter().zip(self.buckets.iter()) {
            seen += n.load(Relaxed);
            if seen >= want {
                return Some(*b);
            }
        }
        Some(f64::INFINITY)
    }
}

/// Observations gathered by one task before they go to a shared [`Histogram`].
pub struct LocalHistogram {
    bounds: &'static [f64],
    buckets: Vec<u64>,
    sum_nanos: u64,
    count: u64,
}

impl LocalHistogram {
    pub fn new(bounds: &'static [f64]) -> LocalHistogram {
        LocalHistogram { bounds, buckets: vec![0; bounds.len()], sum_nanos: 0, count: 0 }
    }

    pub fn observe_nanos(&mut self, nanos: u64) {
        let secs = nanos as f64 / 1e9;
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.buckets[i] += 1;
        }
        self.sum_nanos = self.sum_nanos.saturating_add(nanos);
        self.count += 1;
    }

    pub fn clear(&mut self) {
        self.buckets.iter_mut().for_each(|b| *b = 0);
        self.sum_nanos = 0;
        self.count = 0;
    }

    /// Appends the `_bucket`, `_sum` and `_count` samples of `name` with `labels`.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, n) in self.bounds.iter().zip(self.buckets.iter()) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count;
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let sum = self.sum_nanos as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Process-wide counters: requests by route (method and pattern) and status, their latency,
/// console delivery and tail-on-connect latency.
///
/// Request counters are kept in shards, a thread always counting into the same one: two
/// cores counting requests never write the same memory, so counting costs no cache-line
/// traffic between them. `/metrics` sums the shards.
pub struct Metrics {
    routes: Vec<(&'static str, &'static str)>,
    shards: Box<[Shard]>,
    /// Ring push to socket write complete, for every console line every viewer got.
    pub delivery: Histogram,
    /// A WebSocket upgrade request handled to its `status` and tail written.
    pub tail: Histogram,
    events_stream: AtomicBool,
}

/// One shard of the request counters: a cell per (route, status) and a histogram per route.
struct Shard {
    http: Box<[AtomicU64]>,
    latency: Box<[Histogram]>,
}

/// Shards: enough that the runtime's worker threads rarely share one.
const SHARDS: usize = 8;

thread_local! {
    /// This thread's shard, handed out round-robin.
    static SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Relaxed) % SHARDS
    };
}

impl Metrics {
    /// Counters for requests to `routes` (by index); one more row counts unmatched paths.
    pub fn new(routes: Vec<(&'static str, &'static str)>) -> Metrics {
        let rows = routes.len() + 1;
        let shard = || Shard {
            http: (0..rows * COLUMNS).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..rows).map(|_| Histogram::new(&HTTP_BUCKETS)).collect(),
        };
        Metrics {
            routes,
            shards: (0..SHARDS).map(|_| shard()).collect(),
            delivery: Histogram::new(&DELIVERY_BUCKETS),
            tail: Histogram::new(&DELIVERY_BUCKETS),
            events_stream: AtomicBool::new(false),
        }
    }

    /// Counts one answered request to route `route` (`None`: no route matched).
    pub fn record_request(&self, route: Option<usize>, status: u16, took: Duration) {
        let row = route.filter(|r| *r < self.routes.len()).unwrap_or(self.routes.len());
        let col = STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or_else(|| STATUSES.len() + (usize::from(status / 100).clamp(1, 5) - 1));
        let shard = &self.shards[SHARD.with(|s| *s)];
        shard.http[row * COLUMNS + col].fetch_add(1, Relaxed);
        shard.latency[row].observe(took);
    }

    pub fn set_events_stream(&self, open: bool) {
        self.events_stream.store(open, Relaxed);
    }

    pub fn events_stream(&self) -> bool {
        self.events_stream.load(Relaxed)
    }

    fn row_labels(&self, row: usize) -> String {
        let (method, route) = self.routes.get(row).copied().unwrap_or(("other", "unmatched"));
        format!("method=\"{method}\",route=\"{}\"", escape(route))
    }

    /// Appends the request counter and the latency histograms to `out`.
    pub fn render_http(&self, out: &mut String) {
        out.push_str("# HELP lightd_http_requests_total HTTP requests answered, by method, route and status.\n");
        out.push_str("# TYPE lightd_http_requests_total counter\n");
        let cells = self.shards[0].http.len();
        for i in 0..cells {
            let n: u64 = self.shards.iter().map(|s| s.http[i].load(Relaxed)).sum();
            if n == 0 {
                continue;
            }
            let (row, col) = (i / COLUMNS, i % COLUMNS);
            let status = match STATUSES.get(col) {
                Some(s) => s.to_string(),
                None => CLASSES[col - STATUSES.len()].to_string(),
            };
            let _ = writeln!(out, "lightd_http_requests_total{{{},status=\"{status}\"}} {n}", self.row_labels(row));
        }
        out.push_str("# HELP lightd_http_request_duration_seconds Time to answer a request (to the response head).\n");
        out.push_str("# TYPE lightd_http_request_duration_seconds histogram\n");
        for row in 0..self.shards[0].latency.len() {
            let mut all = LocalHistogram::new(&HTTP_BUCKETS);
            self.shards.iter().for_each(|s| s.latency[row].add_to(&mut all));
            if all.count > 0 {
                all.render(out, "lightd_http_request_duration_seconds", &self.row_labels(row));
            }
        }
        out.push_str("# HELP lightd_console_delivery_seconds Console line delivery: ring push to socket write done.\n");
        out.push_str("# TYPE lightd_console_delivery_seconds histogram\n");
        self.delivery.render(out, "lightd_console_delivery_seconds", "");
        out.push_str(
            "# HELP lightd_console_tail_seconds Console tail-on-connect: WebSocket upgrade request handled to its \
             status and tail written.\n",
        );
        out.push_str("# TYPE lightd_console_tail_seconds histogram\n");
        self.tail.render(out, "lightd_console_tail_seconds", "");
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
        let m =
            Metrics::new(vec![("GET", "/health"), ("GET", "/volumes/:volume_id"), ("DELETE", "/volumes/:volume_id")]);
        let ms = Duration::from_millis(1);
        m.record_request(Some(0), 200, ms);
        m.record_request(Some(0), 200, ms);
        m.record_request(Some(1), 404, ms);
        m.record_request(Some(2), 404, ms);
        m.record_request(None, 418, ms);
        let mut out = String::new();
        m.render_http(&mut out);
        assert!(out.contains("lightd_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 2\n"));
        assert!(out.contains("{method=\"GET\",route=\"/volumes/:volume_id\",status=\"404\"} 1\n"), "{out}");
        assert!(out.contains("{method=\"DELETE\",route=\"/volumes/:volume_id\",status=\"404\"} 1\n"), "{out}");
        assert!(out.contains("method=\"other\",route=\"unmatched\",status=\"4xx\"} 1\n"), "{out}");
        assert!(
            out.contains(
                "lightd_http_request_duration_seconds_bucket{method=\"GET\",route=\"/health\",le=\"0.001\"} 2\n"
            ),
            "{out}"
        );
        assert!(out.contains("lightd_http_request_duration_seconds_count{method=\"GET\",route=\"/health\"} 2\n"));
        assert!(out.contains("lightd_console_delivery_seconds_bucket{le=\"+Inf\"} 0\n"));
        // No series twice.
        let series: Vec<&str> =
            out.lines().filter(|l| !l.starts_with('#')).map(|l| l.rsplit_once(' ').unwrap().0).collect();
        let unique: std::collections::HashSet<_> = series.iter().collect();
        assert_eq!(unique.len(), series.len(), "{out}");
        assert_eq!(escape("a\"b\\"), "a\\\"b\\\\");
        assert!(resident_bytes() > 0);
    }

    #[test]
    fn local_histograms_merge_and_quantiles() {
        let h = Histogram::new(&DELIVERY_BUCKETS);
        let mut local = LocalHistogram::new(&DELIVERY_BUCKETS);
        for us in [50u64, 80, 300, 4000] {
            local.observe_nanos(us * 1000);
        }
        h.merge(&local);
        assert_eq!(h.count.load(Relaxed), 4);
        assert_eq!(h.quantile(0.5), Some(0.0001));
        assert_eq!(h.quantile(0.99), Some(0.005));
    }
}
