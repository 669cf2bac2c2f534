//! One Docker `/events` stream for the whole daemon: exits, OOM kills and outside changes of
//! managed containers go to their supervisors as facts. Each time the stream (re)connects,
//! everything is reconciled, since anything may have happened while nobody listened.

use std::time::Duration;

use serde_json::Value;

use super::action::{EngineEvent, Fact};
use super::recover::{fix_port_pool, sweep_orphans};
use super::Supervisors;
use crate::console::Event;
use crate::docker::stream::LineSplitter;

/// Follows the engine's events until the daemon stops; reconnects with backoff.
pub async fn watch(sups: Supervisors) {
    let mut delay = Duration::from_millis(500);
    let mut lost = false;
    loop {
        // Only this daemon's containers (its instance label): another daemon on the same
        // engine has its own stream, and its containers are none of our business.
        let mine = format!("lightd.instance={}", sups.instance);
        if let Ok(mut chunks) = sups.docker.container_events(&mine).await {
            sups.metrics.set_events_stream(true);
            delay = Duration::from_millis(500);
            if std::mem::take(&mut lost) {
                sups.hubs.broadcast(Event::DaemonMessage("Docker engine reachable again".into()));
            }
            reconcile_all(&sups).await;
            let mut lines = LineSplitter::new(1 << 20);
            while let Some(Ok(chunk)) = chunks.next().await {
                let mut seen = Vec::new();
                lines.push(&chunk, |l| seen.extend(serde_json::from_str::<Value>(&l).ok()));
                for ev in seen {
                    route(&sups, &ev);
                }
            }
            sups.metrics.set_events_stream(false);
            lost = true;
            sups.hubs.broadcast(Event::DaemonMessage("Docker engine connection lost; reconnecting".into()));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// Asks every supervisor to reconcile, removes orphans, repairs the pool.
pub async fn reconcile_all(sups: &Supervisors) {
    sups.tell_all(|| Fact::Reconcile);
    sweep_orphans(sups).await;
    if let Err(e) = fix_port_pool(sups).await {
        crate::error!("reconcile of the port pool: {e}");
    }
}

/// Hands one engine event to the supervisor of the container it is about.
fn route(sups: &Supervisors, ev: &Value) {
    let attrs = &ev["Actor"]["Attributes"];
    let Some(id) = attrs["lightd.internal_id"].as_str() else { return };
    let Some(event) = ev["Action"].as_str().and_then(EngineEvent::parse) else { return };
    // Another daemon's container on the same engine is none of our business (the stream is
    // filtered by our instance label already; this holds whatever the engine sends).
    let mine = attrs["lightd.instance"].as_str() == Some(sups.instance.as_str());
    let server = attrs["lightd.role"].as_str() == Some("server");
    if !mine || !(server || event == EngineEvent::Create) {
        return;
    }
    // A container of ours made for a record already gone (a create that landed after the
    // install that asked for it was cancelled) is removed at once.
    if event == EngineEvent::Create && !sups.store.read(|s| s.containers.contains_key(id)) {
        if let Some(cid) = ev["Actor"]["ID"].as_str().or(ev["id"].as_str()).map(String::from) {
            let (sups, id) = (sups.clone(), id.to_string());
            crate::shutdown::detach(async move { super::recover::remove_orphan(&sups, &cid, &id).await });
        }
        return;
    }
    sups.tell(id, Fact::Docker(event));
}
