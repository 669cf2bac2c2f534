//! Warns the viewers of the servers on a loop volume when it is 95% full (once, until it drops
//! below 90% again), so an operator hears of it before the server's writes start failing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::console::{Event, Hubs};
use crate::model::Quota;
use crate::quota;

const EVERY: Duration = Duration::from_secs(10);

/// Checks every loop volume every few seconds, for the daemon's lifetime.
pub async fn watch(volumes: super::Volumes, hubs: Arc<Hubs>) {
    let mut warned: HashSet<String> = HashSet::new();
    loop {
        tokio::time::sleep(EVERY).await;
        let loops: Vec<(String, std::path::PathBuf, u64, Vec<String>)> = volumes.store.read(|s| {
            s.volumes
                .values()
                .filter(|v| v.quota == Quota::Loop)
                .map(|v| (v.volume_id.clone(), v.path.clone(), v.size_limit_bytes, super::used_by(s, &v.volume_id)))
                .collect()
        });
        for (id, path, limit, users) in loops {
            let Ok(Ok(u)) = tokio::task::spawn_blocking(move || quota::usage(&path)).await else { continue };
            let share = u.used_bytes as f64 / u.total_bytes.max(1) as f64;
            if share >= 0.95 && warned.insert(id.clone()) {
                let note = format!(
                    "Volume {id} is {:.0}% full ({} of {}); writes fail when it is full",
                    share * 100.0,
                    super::files::human(u.used_bytes),
                    super::files::human(limit)
                );
                for c in users {
                    hubs.get(&c).news().publish(Event::DaemonMessage(note.clone()));
                }
            } else if share < 0.90 {
                warned.remove(&id);
            }
        }
    }
}
