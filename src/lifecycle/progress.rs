//! Pull progress as viewers see it: the engine's many messages per second folded into
//! per-layer state, shown as at most one `install output` line per [`MIN_GAP`]:
//! `pulling <layer>: <phase> <percent>%` (several layers that changed since the last line
//! joined by `; `), closed by `pulled <image> (<digest>)`.

use std::time::{Duration, Instant};

use crate::docker::pull::PullMessage;

/// Shortest time between two lines of one pull (so at most 4 a second per container).
pub const MIN_GAP: Duration = Duration::from_millis(250);

/// One layer's latest state.
struct Layer {
    id: String,
    phase: String,
    /// Percent of the phase done, when the engine said how much there is.
    percent: Option<u64>,
    /// Bytes done, for phases of unknown size.
    bytes: Option<u64>,
    changed: bool,
}

/// The state of one pull, and when its last line went out.
pub struct Progress {
    layers: Vec<Layer>,
    digest: Option<String>,
    last_line: Instant,
}

impl Progress {
    /// A pull whose first line (`Pulling image ..`) went out at `now`.
    pub fn new(now: Instant) -> Progress {
        Progress { layers: Vec::new(), digest: None, last_line: now }
    }

    /// Takes in one engine message.
    pub fn update(&mut self, m: &PullMessage) {
        if let Some(d) = m.status.strip_prefix("Digest: ") {
            self.digest = Some(d.trim().to_string());
            return;
        }
        // Whole-image messages ("Pulling from ..", "Status: ..") carry no layer state.
        let Some(id) = m.id.as_deref().filter(|_| !m.status.starts_with("Pulling from")) else { return };
        if m.status.starts_with("Status:") {
            return;
        }
        let i = match self.layers.iter().position(|l| l.id == id) {
            Some(i) => i,
            None => {
                self.layers.push(Layer {
                    id: id.to_string(),
                    phase: String::new(),
                    percent: None,
                    bytes: None,
                    changed: false,
                });
                self.layers.len() - 1
            }
        };
        let layer = &mut self.layers[i];
        let (phase, percent) = match m.status.as_str() {
            "Pulling fs layer" | "Waiting" => ("waiting", Some(0)),
            "Downloading" => ("downloading", ratio(m)),
            "Verifying Checksum" => ("verifying", Some(100)),
            "Download complete" => ("downloaded", Some(100)),
            "Extracting" => ("extracting", ratio(m)),
            "Pull complete" => ("complete", Some(100)),
            "Already exists" => ("already present", Some(100)),
            other => (other, layer.percent),
        };
        layer.phase = phase.to_ascii_lowercase();
        layer.percent = percent;
        layer.bytes = m.current;
        layer.changed = true;
    }

    /// How long until a line may go out (zero: now).
    pub fn wait(&self, now: Instant) -> Duration {
        MIN_GAP.saturating_sub(now.saturating_duration_since(self.last_line))
    }

    /// The line for the layers that changed since the last one, when one is due at `now`.
    pub fn line(&mut self, now: Instant) -> Option<String> {
        if !self.wait(now).is_zero() || !self.layers.iter().any(|l| l.changed) {
            return None;
        }
        let parts: Vec<String> = self
            .layers
            .iter_mut()
            .filter(|l| l.changed)
            .map(|l| {
                l.changed = false;
                match (l.percent, l.bytes) {
                    (Some(p), _) => format!("{}: {} {p}%", l.id, l.phase),
                    (None, Some(b)) => format!("{}: {} {}", l.id, l.phase, human(b)),
                    (None, None) => format!("{}: {}", l.id, l.phase),
                }
            })
            .collect();
        self.last_line = now;
        Some(format!("pulling {}", parts.join("; ")))
    }

    /// The closing line (`pulled <image> (<digest>)`), when one is due at `now`.
    pub fn done(&mut self, image: &str, now: Instant) -> Option<String> {
        if !self.wait(now).is_zero() {
            return None;
        }
        self.last_line = now;
        Some(match &self.digest {
            Some(d) => format!("pulled {image} ({d})"),
            None => format!("pulled {image}"),
        })
    }
}

fn ratio(m: &PullMessage) -> Option<u64> {
    Some((m.current? * 100 / m.total?).min(100))
}

/// Bytes as `1.5 MB` (binary units, one decimal).
fn human(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str, status: &str, current: Option<u64>, total: Option<u64>) -> PullMessage {
        PullMessage { id: Some(id.into()), status: status.into(), current, total }
    }

    #[test]
    fn lines_show_layer_phase_and_percent() {
        let t0 = Instant::now();
        let mut p = Progress::new(t0);
        p.update(&PullMessage {
            id: Some("t".into()),
            status: "Pulling from lightd/busybox".into(),
            ..Default::default()
        });
        p.update(&msg("aaaaaaaaaaaa", "Already exists", None, None));
        p.update(&msg("bbbbbbbbbbbb", "Pulling fs layer", None, None));
        p.update(&msg("bbbbbbbbbbbb", "Downloading", Some(450), Some(1000)));
        assert_eq!(p.line(t0 + Duration::from_millis(100)), None, "too soon after the first line");
        let at = t0 + MIN_GAP;
        assert_eq!(p.line(at).unwrap(), "pulling aaaaaaaaaaaa: already present 100%; bbbbbbbbbbbb: downloading 45%");
        assert_eq!(p.line(at + MIN_GAP), None, "nothing changed");
        p.update(&msg("bbbbbbbbbbbb", "Extracting", Some(3 << 20), None));
        assert_eq!(p.line(at + MIN_GAP).unwrap(), "pulling bbbbbbbbbbbb: extracting 3.0 MB");
        p.update(&msg("bbbbbbbbbbbb", "Pull complete", None, None));
        p.update(&PullMessage { status: "Digest: sha256:abc".into(), ..Default::default() });
        p.update(&PullMessage { status: "Status: Downloaded newer image for x".into(), ..Default::default() });
        let end = at + MIN_GAP * 2;
        assert_eq!(p.line(end).unwrap(), "pulling bbbbbbbbbbbb: complete 100%");
        assert_eq!(p.done("x", end), None);
        assert_eq!(p.wait(end), MIN_GAP);
        assert_eq!(p.done("x", end + MIN_GAP).unwrap(), "pulled x (sha256:abc)");
    }

    #[test]
    fn a_flood_of_messages_gives_at_most_four_lines_a_second() {
        let t0 = Instant::now();
        let mut p = Progress::new(t0);
        let mut lines = 0;
        // 10 000 messages over 2 s (one every 200 µs), two layers.
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_micros(200 * i);
            let layer = if i % 2 == 0 { "aaaaaaaaaaaa" } else { "bbbbbbbbbbbb" };
            p.update(&msg(layer, "Downloading", Some(i), Some(10_000)));
            lines += usize::from(p.line(now).is_some());
        }
        assert_eq!(lines, 7, "at 0.25, 0.5, .. 1.75 s");
    }
}
