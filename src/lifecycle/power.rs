//! Power actions (start, stop, kill, restart, suspend, resume, command) and what happens
//! when a server exits, whoever caused it.

use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::Duration;

use regex_lite::Regex;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::{actionable, begin, record};
use crate::app::App;
use crate::console::{pump, stats, Event, Hub, Intent};
use crate::error::{Error, Result};
use crate::model::{now, InstallState, LastExit, PowerState};

/// Longest command accepted for stdin.
pub const MAX_COMMAND: usize = 4096;

fn conflict(msg: &str) -> Error {
    Error::Conflict(msg.into())
}

/// Sets the power state when `allowed(current)` holds; publishes it. Returns whether it moved.
pub async fn set_state(app: &App, id: &str, to: PowerState, allowed: impl FnOnce(PowerState) -> bool) -> Result<bool> {
    let moved = app
        .store
        .update(|s| {
            let Some(r) = s.containers.get_mut(id) else { return Ok(false) };
            if r.state == to || !allowed(r.state) {
                return Ok(false);
            }
            r.state = to;
            r.updated_at = now();
            Ok::<_, Error>(true)
        })
        .await?;
    if moved {
        app.hubs.get(id).publish(Event::Status(to));
    }
    Ok(moved)
}

/// The Docker id of a server that may be powered: installed, not mid-operation.
fn container_of(app: &App, id: &str, action: &str) -> Result<(String, PowerState)> {
    let rec = actionable(app, id, action)?;
    if rec.install_state == InstallState::Failed {
        return Err(conflict(&format!("Cannot {action}: the install failed; reinstall the container first")));
    }
    let cid = rec.container_id.ok_or_else(|| conflict("Container has no Docker container yet; reinstall it"))?;
    Ok((cid, rec.state))
}

/// `starting` now; `running` when `start_pattern` matches a console line (at once without
/// one). The attach stream is opened before the container starts, so no line is missed.
pub async fn start(app: &Arc<App>, id: &str) -> Result<()> {
    let _op = begin(app, id, "start").await?;
    let (cid, state) = container_of(app, id, "start")?;
    match state {
        PowerState::Offline => {}
        PowerState::Suspended => return Err(conflict("Container is suspended; resume it instead")),
        _ => return Err(conflict("Container is already running")),
    }
    let rec = record(app, id)?;
    let pattern = rec.start_pattern.as_deref().and_then(|p| Regex::new(p).ok());
    let hub = app.hubs.get(id);
    hub.run.fetch_add(1, AcqRel);
    hub.set_intent(Intent::None);
    hub.awaiting_pattern.store(pattern.is_some(), Release);
    pump::open(app, &hub, &cid, pattern.clone(), Vec::new()).await?;
    set_state(app, id, PowerState::Starting, |s| s == PowerState::Offline).await?;
    if let Err(e) = app.docker.start_container(&cid).await {
        hub.awaiting_pattern.store(false, Release);
        set_state(app, id, PowerState::Offline, |_| true).await?;
        hub.publish(Event::DaemonMessage(format!("Start failed: {e}")));
        return Err(e.into());
    }
    hub.started_at.store(now(), Release);
    if pattern.is_none() {
        set_state(app, id, PowerState::Running, |s| s == PowerState::Starting).await?;
    }
    stats::ensure(app, &hub);
    Ok(())
}

/// Called by the pump when `start_pattern` matched.
pub async fn pattern_matched(app: Arc<App>, id: String) {
    if let Err(e) = set_state(&app, &id, PowerState::Running, |s| s == PowerState::Starting).await {
        eprintln!("lightd: {id}: cannot record running: {e}");
    }
}

/// SIGTERM, then SIGKILL after `containers.cleanup_timeout` seconds (Docker's own stop).
pub async fn stop(app: &Arc<App>, id: &str) -> Result<()> {
    let (cid, state) = {
        let _op = begin(app, id, "stop").await?;
        container_of(app, id, "stop")?
    };
    if matches!(state, PowerState::Offline) {
        return Err(conflict("Container is not running"));
    }
    if state == PowerState::Stopping {
        return Ok(());
    }
    begin_stop(app, id, &cid, state, Intent::Stop).await?;
    let app = Arc::clone(app);
    let id = id.to_string();
    tokio::spawn(async move {
        if let Err(e) = app.docker.stop_container(&cid, app.config.containers.cleanup_timeout).await {
            app.hubs.get(&id).publish(Event::DaemonMessage(format!("Stop failed: {e}")));
        }
        on_exit(&app, &id).await;
    });
    Ok(())
}

/// Marks the stop as ours and unfreezes a suspended server so it can receive its signal.
async fn begin_stop(app: &App, id: &str, cid: &str, state: PowerState, intent: Intent) -> Result<()> {
    app.hubs.get(id).set_intent(intent);
    if state == PowerState::Suspended {
        app.docker.unpause_container(cid).await?;
    }
    set_state(app, id, PowerState::Stopping, |s| s != PowerState::Offline).await?;
    Ok(())
}

/// SIGKILL at once.
pub async fn kill(app: &Arc<App>, id: &str) -> Result<()> {
    let (cid, state) = {
        let _op = begin(app, id, "kill").await?;
        container_of(app, id, "kill")?
    };
    if state == PowerState::Offline {
        return Err(conflict("Container is not running"));
    }
    begin_stop(app, id, &cid, state, Intent::Kill).await?;
    match app.docker.kill_container(&cid, "SIGKILL").await {
        // Already gone between our check and the signal: the exit handler records it.
        Err(crate::docker::DockerError::Api { status: 409, .. }) | Ok(()) => {}
        Err(e) => return Err(e.into()),
    }
    let (app, id) = (Arc::clone(app), id.to_string());
    tokio::spawn(async move {
        let _ = app.docker.wait_container(&cid).await;
        on_exit(&app, &id).await;
    });
    Ok(())
}

/// Stop (when up) then start, in the background.
pub async fn restart(app: &Arc<App>, id: &str) -> Result<()> {
    let (cid, state) = {
        let _op = begin(app, id, "restart").await?;
        container_of(app, id, "restart")?
    };
    if state != PowerState::Offline {
        begin_stop(app, id, &cid, state, Intent::Stop).await?;
    }
    let (app, id) = (Arc::clone(app), id.to_string());
    tokio::spawn(async move {
        let hub = app.hubs.get(&id);
        if state != PowerState::Offline {
            if let Err(e) = app.docker.stop_container(&cid, app.config.containers.cleanup_timeout).await {
                hub.publish(Event::DaemonMessage(format!("Restart failed while stopping: {e}")));
                return;
            }
            on_exit(&app, &id).await;
        }
        if let Err(e) = start(&app, &id).await {
            hub.publish(Event::DaemonMessage(format!("Restart failed while starting: {e}")));
        }
    });
    Ok(())
}

/// Docker pause: the processes freeze, memory stays.
pub async fn suspend(app: &Arc<App>, id: &str) -> Result<()> {
    let _op = begin(app, id, "suspend").await?;
    let (cid, state) = container_of(app, id, "suspend")?;
    match state {
        PowerState::Running | PowerState::Starting => {}
        PowerState::Suspended => return Err(conflict("Container is already suspended")),
        _ => return Err(conflict("Container is not running")),
    }
    app.docker.pause_container(&cid).await?;
    set_state(app, id, PowerState::Suspended, |_| true).await?;
    Ok(())
}

pub async fn resume(app: &Arc<App>, id: &str) -> Result<()> {
    let _op = begin(app, id, "resume").await?;
    let (cid, state) = container_of(app, id, "resume")?;
    if state != PowerState::Suspended {
        return Err(conflict("Container is not suspended"));
    }
    app.docker.unpause_container(&cid).await?;
    let hub = app.hubs.get(id);
    let to = if hub.awaiting_pattern.load(Acquire) { PowerState::Starting } else { PowerState::Running };
    set_state(app, id, to, |_| true).await?;
    Ok(())
}

/// Writes `command` and a newline to the server's stdin.
pub async fn command(app: &App, id: &str, command: &str) -> Result<()> {
    if command.is_empty() || command.len() > MAX_COMMAND || command.contains('\0') {
        return Err(Error::BadRequest(format!("command must be 1-{MAX_COMMAND} bytes without NUL")));
    }
    let (_, state) = container_of(app, id, "send a command")?;
    match state {
        PowerState::Running | PowerState::Starting => {}
        PowerState::Suspended => return Err(conflict("Container is suspended")),
        _ => return Err(conflict("Container is not running")),
    }
    let hub = app.hubs.get(id);
    let mut stdin = hub.stdin.lock().await;
    let pipe = stdin.as_mut().ok_or_else(|| conflict("Container is not running"))?;
    let mut line = command.trim_end_matches(['\r', '\n']).to_string();
    line.push('\n');
    tokio::time::timeout(Duration::from_secs(5), async {
        pipe.write_all(line.as_bytes()).await?;
        pipe.flush().await
    })
    .await
    .map_err(|_| Error::Internal("the server did not take the command within 5 s".into()))?
    .map_err(|e| Error::Internal(format!("cannot write to the server's stdin: {e}")))
}

/// Records that the server went down (from the events stream, the pump's end or our own
/// stop): `offline`, `last_exit` from Docker, and a note that tells a crash from a stop.
/// Idempotent, and ignores a run that has since been restarted.
pub async fn on_exit(app: &App, id: &str) {
    // Only containers on record (the engine may host other daemons' containers too).
    let Ok(rec) = record(app, id) else { return };
    let hub = app.hubs.get(id);
    let run = hub.run.load(Acquire);
    let Some(cid) = rec.container_id else { return };
    let Ok(info) = app.docker.inspect_container(&cid).await else { return };
    let st = &info["State"];
    // Still running, or a container that never ran (made by a rebind or reinstall): no exit.
    if st["Running"].as_bool() == Some(true) || st["StartedAt"].as_str().is_some_and(|s| s.starts_with("0001")) {
        return;
    }
    let exit = LastExit {
        code: st["ExitCode"].as_i64().unwrap_or(-1),
        oom_killed: st["OOMKilled"].as_bool().unwrap_or(false),
        at: now(),
    };
    let recorded = app
        .store
        .update(|s| {
            let Some(r) = s.containers.get_mut(id) else { return Ok(false) };
            if r.state == PowerState::Offline || hub.run.load(Acquire) != run {
                return Ok(false);
            }
            r.state = PowerState::Offline;
            r.last_exit = Some(exit.clone());
            r.updated_at = now();
            Ok::<_, Error>(true)
        })
        .await;
    if !matches!(recorded, Ok(true)) {
        return;
    }
    hub.awaiting_pattern.store(false, Release);
    hub.publish(Event::Status(PowerState::Offline));
    hub.publish(Event::DaemonMessage(exit_message(&hub, &exit)));
}

fn exit_message(hub: &Hub, exit: &LastExit) -> String {
    match (hub.intent(), exit.oom_killed) {
        (_, true) => format!("Server was killed: out of memory (exit code {})", exit.code),
        (Intent::Stop, _) => format!("Server stopped (exit code {})", exit.code),
        (Intent::Kill, _) => format!("Server killed (exit code {})", exit.code),
        (Intent::None, _) => format!("Server crashed with exit code {}", exit.code),
    }
}

/// One Docker `/events` stream for the whole daemon: exits, OOM kills and outside
/// pause/unpause of managed servers. Reconnects with backoff when the engine goes away.
pub async fn watch_events(app: Arc<App>) {
    let mut delay = Duration::from_millis(500);
    let mut lost = false;
    loop {
        if let Ok(mut chunks) = app.docker.container_events("lightd.managed=true").await {
            app.metrics.set_events_stream(true);
            delay = Duration::from_millis(500);
            if std::mem::take(&mut lost) {
                app.hubs.broadcast(Event::DaemonMessage("Docker engine reachable again".into()));
            }
            // Anything that happened while we were not listening (or before boot).
            let again = Arc::clone(&app);
            tokio::spawn(async move { super::recover::reconcile(&again).await });
            let mut lines = crate::docker::stream::LineSplitter::new(1 << 20);
            while let Some(Ok(chunk)) = chunks.next().await {
                let mut seen = Vec::new();
                lines.push(&chunk, |l| seen.extend(serde_json::from_str::<Value>(&l).ok()));
                for ev in seen {
                    on_event(&app, &ev);
                }
            }
            app.metrics.set_events_stream(false);
            lost = true;
            app.hubs.broadcast(Event::DaemonMessage("Docker engine connection lost; reconnecting".into()));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

fn on_event(app: &Arc<App>, ev: &Value) {
    let attrs = &ev["Actor"]["Attributes"];
    let server = attrs["lightd.role"].as_str() == Some("server");
    let Some(id) = attrs["lightd.internal_id"].as_str() else { return };
    // Another daemon's container on the same engine is none of our business.
    if !app.store.read(|s| s.containers.contains_key(id)) {
        return;
    }
    let (app, id) = (Arc::clone(app), id.to_string());
    match ev["Action"].as_str().unwrap_or("") {
        // An install container made by a call still in flight when a daemon died is a leftover.
        "create" if !server => {
            tokio::spawn(async move { super::recover::reconcile_container(&app, &id).await });
        }
        _ if !server => {}
        "die" => {
            tokio::spawn(async move { on_exit(&app, &id).await });
        }
        "create" | "start" | "destroy" => {
            tokio::spawn(async move { super::recover::reconcile_container(&app, &id).await });
        }
        "pause" => {
            tokio::spawn(
                async move { set_state(&app, &id, PowerState::Suspended, |s| s != PowerState::Offline).await },
            );
        }
        "unpause" => {
            let waiting = app.hubs.get(&id).awaiting_pattern.load(Acquire);
            let to = if waiting { PowerState::Starting } else { PowerState::Running };
            tokio::spawn(async move { set_state(&app, &id, to, |s| s == PowerState::Suspended).await });
        }
        _ => {}
    }
}
