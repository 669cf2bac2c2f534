//! The supervisor's power steps: start, stop, kill, restart, suspend, resume, command, and
//! what happens when the server exits, whoever caused it (the crash policy included).

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use super::error::Failure;
use super::supervisor::{Intent, JobKind, Supervisor, Then};
use super::{bounded, JobResult, REMOVE_TIMEOUT};
use crate::console::{pump, stats, Event};
use crate::docker::{Docker, DockerError};
use crate::error::{conflict, Error, Result};
use crate::model::{now, InstallState, LastExit, PowerState};

/// Longest command accepted for stdin.
pub const MAX_COMMAND: usize = 4096;
/// What the record and the viewers say when the server's container was removed by hand.
pub const VANISHED: &str = "Docker container vanished (removed outside lightd); reinstall to recreate it";
/// How long a kill may take to be seen as an exit.
const KILL_WAIT: Duration = Duration::from_secs(30);
/// How long an exit waits for the console to deliver what the server printed last.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

impl Supervisor {
    /// Records the power state and tells the viewers (only when it changes).
    pub(super) async fn set_state(&self, to: PowerState) -> Result<()> {
        let moved = self
            .sups
            .store
            .update(|s| {
                let Some(r) = s.containers.get_mut(&self.id) else { return Ok(false) };
                if r.state == to {
                    return Ok(false);
                }
                r.state = to;
                r.updated_at = now();
                Ok::<_, Error>(true)
            })
            .await?;
        if moved {
            self.hub.news().publish(Event::Status(to));
        }
        Ok(())
    }

    /// The Docker id of the server's container.
    fn container(&self) -> Result<String> {
        let rec = self.record().ok_or_else(super::not_found)?;
        rec.container_id.ok_or_else(|| conflict("Container has no Docker container yet; reinstall it"))
    }

    /// `starting` now; `running` when `start_pattern` matches a console line (at once without
    /// one). The attach stream opens before the container starts, so no line is missed.
    pub(super) async fn start(&mut self) -> Result<()> {
        let rec = self.record().ok_or_else(super::not_found)?;
        let cid = self.container()?;
        super::mounts::verify(&self.sups, &rec).await.map_err(Error::Conflict)?;
        crate::volumes::mount_path_off(&self.sups.volumes, &rec.volume_id).await.map_err(Error::Conflict)?;
        let pattern = match rec.start_pattern.as_deref() {
            Some(p) => Some(super::request::compile_pattern(p)?),
            None => None,
        };
        self.run += 1;
        self.intent = Intent::None;
        self.pattern_pending = pattern.is_some();
        pump::open(&self.sups.docker, &self.sups.journals, &self.hub, &cid, self.run, pattern, 0, self.report())
            .await?;
        if !rec.firewall.is_empty() {
            // Its rules are in place before its ports are published (again, after a flush).
            self.sups.sync_firewall("a start").await;
        }
        self.set_state(PowerState::Starting).await?;
        if let Err(e) = bounded(REMOVE_TIMEOUT, "starting the container", self.sups.docker.start_container(&cid)).await
        {
            if let Some(p) = self.hub.tty().take_pump() {
                p.abort();
            }
            self.pattern_pending = false;
            self.set_state(PowerState::Offline).await?;
            self.say(format!("Start failed: {e}"));
            return Err(e.into());
        }
        self.hub.stats().started_at.store(now(), std::sync::atomic::Ordering::Release);
        self.sups.node.started(&rec);
        if !self.pattern_pending {
            self.set_state(PowerState::Running).await?;
        }
        stats::ensure(&self.sups.store, &self.sups.docker, &self.sups.runtime, &self.hub);
        Ok(())
    }

    pub(super) async fn pattern_matched(&mut self) {
        self.pattern_pending = false;
        let state = self.record().map(|r| r.state);
        if state == Some(PowerState::Starting) {
            if let Err(e) = self.set_state(PowerState::Running).await {
                crate::error!("{}: cannot record running: {e}", self.id);
            }
        }
    }

    /// A graceful stop (SIGTERM, `containers.cleanup_timeout`, SIGKILL) in the background;
    /// `then` runs once the exit is recorded. During a stop already running, `stop` only
    /// drops a pending restart.
    pub(super) async fn stop(&mut self, intent: Intent, then: Then) -> Result<()> {
        if let Some(JobKind::Stop { then: pending }) = self.job.as_mut().map(|j| &mut j.kind) {
            if matches!(pending, Then::Start) {
                *pending = Then::Nothing;
                self.intent = Intent::Stop;
            }
            return Ok(());
        }
        let cid = self.container()?;
        self.unfreeze(&cid).await?;
        self.intent = intent;
        self.set_state(PowerState::Stopping).await?;
        if let Intent::For(what) = intent {
            self.say(format!("Stopping the server for {what}"));
        }
        let (sups, grace) = (self.sups.clone(), self.sups.config.containers.cleanup_timeout);
        let (hub, stop_command) = (self.hub.clone(), self.record().and_then(|r| r.stop_command));
        self.start_job(JobKind::Stop { then }, async move {
            let stopped = match stop_command {
                // The server's own way out (`quit`, `stop`): it saves and exits; SIGKILL if
                // it has not within the timeout. A command it cannot take falls back to SIGTERM.
                Some(cmd) if write_stdin(&hub, &cmd).await.is_ok() => {
                    let waited =
                        tokio::time::timeout(Duration::from_secs(grace), sups.docker.wait_container(&cid)).await;
                    match waited {
                        Ok(done) => done.map(drop),
                        Err(_) => match sigkill(&sups.docker, &cid).await {
                            Ok(()) => wait_killed(&sups.docker, &cid).await,
                            Err(e) => Err(e),
                        },
                    }
                }
                _ => sups.docker.stop_container(&cid, grace).await,
            };
            JobResult::Stopped(stopped.map_err(|e| e.to_string()))
        });
        Ok(())
    }

    /// SIGKILL at once; during a graceful stop, escalates it.
    pub(super) async fn kill(&mut self) -> Result<()> {
        let cid = self.container()?;
        if self.job.is_none() {
            self.unfreeze(&cid).await?;
            self.set_state(PowerState::Stopping).await?;
        }
        self.intent = Intent::Kill;
        sigkill(&self.sups.docker, &cid).await?;
        if self.job.is_none() {
            let sups = self.sups.clone();
            self.start_job(JobKind::Stop { then: Then::Nothing }, async move {
                JobResult::Stopped(wait_killed(&sups.docker, &cid).await.map_err(|e| e.to_string()))
            });
        }
        Ok(())
    }

    /// Stop (when up) then start; during a stop, adds the start.
    pub(super) async fn restart(&mut self) -> Result<()> {
        if let Some(JobKind::Stop { then }) = self.job.as_mut().map(|j| &mut j.kind) {
            *then = Then::Start;
            return Ok(());
        }
        match self.record().map(|r| r.state) {
            Some(PowerState::Offline) => self.start().await,
            _ => self.stop(Intent::Restart, Then::Start).await,
        }
    }

    /// A paused container cannot take a signal: unpause it first.
    async fn unfreeze(&self, cid: &str) -> Result<()> {
        if self.record().map(|r| r.state) == Some(PowerState::Suspended) {
            self.sups.docker.unpause_container(cid).await?;
        }
        Ok(())
    }

    /// Docker pause: the processes freeze, memory stays.
    pub(super) async fn suspend(&mut self) -> Result<()> {
        let cid = self.container()?;
        self.sups.docker.pause_container(&cid).await?;
        self.set_state(PowerState::Suspended).await
    }

    pub(super) async fn resume(&mut self) -> Result<()> {
        let cid = self.container()?;
        self.sups.docker.unpause_container(&cid).await?;
        self.set_state(self.up_state()).await
    }

    /// The state of a server that runs: `starting` until its pattern matched.
    fn up_state(&self) -> PowerState {
        if self.pattern_pending {
            PowerState::Starting
        } else {
            PowerState::Running
        }
    }

    /// The engine says the container was paused or unpaused (by us, or by hand). Events come
    /// late: the pause of our own `suspend` can arrive after the `resume` that followed it, so
    /// the engine is asked what holds now before the record follows the event.
    pub(super) async fn paused_outside(&mut self, paused: bool) {
        if self.job.is_some() {
            return;
        }
        let Some(rec) = self.record() else { return };
        let to = match (paused, rec.state) {
            (true, PowerState::Running | PowerState::Starting) => PowerState::Suspended,
            (false, PowerState::Suspended) => self.up_state(),
            _ => return,
        };
        let Some(cid) = rec.container_id.as_deref() else { return };
        match self.sups.docker.inspect_container(cid).await {
            Ok(info) if info["State"]["Paused"].as_bool() == Some(paused) => {
                let _ = self.set_state(to).await;
            }
            _ => {}
        }
    }

    /// Writes `text` and a newline to the server's stdin, off the supervisor (a server that
    /// does not read must not hold it up); the answer goes to `reply`.
    pub(super) fn command(&self, text: String, reply: oneshot::Sender<Result<()>>) {
        if text.is_empty() || text.len() > MAX_COMMAND || text.contains('\0') {
            let _ = reply.send(Err(Error::BadRequest(format!("command must be 1-{MAX_COMMAND} bytes without NUL"))));
            return;
        }
        let hub = self.hub.clone();
        crate::shutdown::detach(async move {
            let _ = reply.send(write_stdin(&hub, &text).await);
        });
    }

    /// Something says the server may have stopped (its stream ended, the engine's `die`, our
    /// own stop returned as `stopped`): asks Docker, and if it is down, records the exit once,
    /// tells the viewers why, and goes on with what follows (a pending action, or the crash
    /// policy).
    pub(super) async fn check_exit(&mut self, stopped: Option<std::result::Result<(), String>>) {
        let Some(rec) = self.record() else { return };
        let stopping = matches!(self.job.as_ref().map(|j| &j.kind), Some(JobKind::Stop { .. }));
        if !stopping && stopped.is_some() {
            return; // a stale report of a job already settled
        }
        if rec.state == PowerState::Offline && !stopping {
            return;
        }
        let Some(cid) = rec.container_id.clone() else { return };
        let info = match self.sups.docker.inspect_container(&cid).await {
            Ok(info) => info,
            Err(e) if e.is_not_found() => return self.vanished().await,
            Err(e) => {
                if let Some(Err(why)) = stopped {
                    self.stop_failed(format!("{why}; {e}")).await;
                }
                return;
            }
        };
        let st = &info["State"];
        if st["Running"].as_bool() == Some(true) {
            if let Some(Err(why)) = stopped {
                self.stop_failed(why).await;
            }
            return;
        }
        let never_ran = st["StartedAt"].as_str().is_some_and(|s| s.starts_with("0001"));
        if !never_ran {
            self.hub.tty().wait_drained(DRAIN_WAIT).await;
        }
        let exit = LastExit {
            code: st["ExitCode"].as_i64().unwrap_or(-1),
            oom_killed: st["OOMKilled"].as_bool().unwrap_or(false),
            at: now(),
        };
        let recorded = self
            .edit(|r| {
                r.state = PowerState::Offline;
                if !never_ran {
                    r.last_exit = Some(exit.clone());
                }
            })
            .await;
        if let Err(e) = recorded {
            crate::error!("{}: cannot record the exit: {e}", self.id);
            return;
        }
        self.pattern_pending = false;
        self.hub.stats().started_at.store(0, std::sync::atomic::Ordering::Release);
        self.hub.news().publish(Event::Status(PowerState::Offline));
        let intent = std::mem::replace(&mut self.intent, Intent::None);
        let then = match self.job.take() {
            Some(job) => {
                job.task.abort();
                match job.kind {
                    JobKind::Stop { then } => then,
                    _ => Then::Nothing,
                }
            }
            None => Then::Nothing,
        };
        if never_ran {
            return self.then(then).await;
        }
        self.say(exit_message(intent, &exit));
        if intent == Intent::None && rec.state != PowerState::Stopping {
            // The lines before the exit are taken before a restart adds new ones.
            let crash = (exit.code != 0 || exit.oom_killed).then_some(());
            let lines = match crash {
                Some(()) => self.last_lines(crate::journal::crashes::LINES).await,
                None => Vec::new(),
            };
            let restarted = self.crashed(rec.crash_restart).await;
            if crash.is_some() {
                self.sups.node.crashed(&rec);
                self.record_crash(&exit, restarted, lines).await;
            }
        } else {
            self.then(then).await;
        }
    }

    /// A container was removed: if it was the server's own (by hand, outside lightd), the
    /// record says so; a removal lightd made itself is none of this.
    pub(super) async fn check_gone(&mut self) {
        // A job removes containers itself (the old one of a rebind or reinstall), and may
        // record a container that is removed under it: looked at once the job is done.
        if self.job.is_some() {
            self.gone_pending = true;
            return;
        }
        let Some(cid) = self.record().and_then(|r| r.container_id) else { return };
        if self.is_gone(&cid).await {
            self.vanished().await;
        }
    }

    /// Whether Docker says container `cid` no longer exists (`false` when it cannot tell).
    pub(super) async fn is_gone(&self, cid: &str) -> bool {
        matches!(self.sups.docker.inspect_container(cid).await, Err(e) if e.is_not_found())
    }

    /// A stop that did not stop the server: it runs on, and what was to follow does not.
    async fn stop_failed(&mut self, why: String) {
        self.say(format!("Stop failed: {why}"));
        self.intent = Intent::None;
        if let Some(job) = self.job.take() {
            if let JobKind::Stop { then: Then::Delete(reply) } = job.kind {
                let _ = reply.send(Err(Failure::NotStopped(why.clone()).into()));
            }
        }
        let up = self.up_state();
        let _ = self.set_state(up).await;
    }

    /// The crash policy: start again, unless it crashed within `containers.crash_window`.
    /// Whether it was started again.
    async fn crashed(&mut self, restart: bool) -> bool {
        let window = Duration::from_secs(self.sups.config.containers.crash_window);
        let again = self.last_crash.is_some_and(|t| t.elapsed() < window);
        self.last_crash = Some(std::time::Instant::now());
        if !restart {
            return false;
        }
        if again {
            self.say(format!(
                "Server crashed again within {} s: not restarting it (containers.crash_window)",
                window.as_secs()
            ));
            return false;
        }
        self.say("Restarting the crashed server (crash_restart)");
        match self.start().await {
            Ok(()) => true,
            Err(e) => {
                self.say(format!("Restart after the crash failed: {e}"));
                false
            }
        }
    }

    /// The newest `n` console lines, as text (from memory, then the journal).
    async fn last_lines(&self, n: usize) -> Vec<String> {
        let (_, frames) = crate::journal::tail::console(&self.sups.journals, &self.hub, n, u64::MAX).await;
        frames.iter().map(|(_, f)| crate::console::line::text(f)).collect()
    }

    /// Keeps the crash with the lines before it (`GET /containers/:id/crashes`).
    async fn record_crash(&self, exit: &LastExit, restarted: bool, lines: Vec<String>) {
        let crash = crate::journal::crashes::Crash {
            at: exit.at,
            exit_code: exit.code,
            signal: crate::journal::crashes::Crash::signal_of(exit.code),
            oom_killed: exit.oom_killed,
            restarted,
            lines,
        };
        let (journals, id) = (self.sups.journals.clone(), self.id.clone());
        match tokio::task::spawn_blocking(move || journals.add_crash(&id, crash)).await {
            Ok(Ok(())) => self.say(format!("Crash recorded: GET /containers/{}/crashes", self.id)),
            Ok(Err(e)) => crate::warn!("{}: cannot record the crash: {e}", self.id),
            Err(e) => crate::warn!("{}: cannot record the crash: {e}", self.id),
        }
    }

    /// What follows a stop, now that the exit is recorded.
    pub(super) async fn then(&mut self, then: Then) {
        match then {
            Then::Nothing => {}
            Then::Start => {
                if let Err(e) = self.start().await {
                    self.say(format!("Restart failed while starting: {e}"));
                }
            }
            Then::Install { start_after } => self.begin_install_steps(start_after),
            Then::Rebind { ports, start_after } => self.begin_rebind(ports, start_after),
            Then::Delete(reply) => {
                let answer = self.remove().await;
                let _ = reply.send(answer);
            }
        }
    }

    /// The Docker container is gone (removed by hand): say so; a reinstall brings it back.
    pub(super) async fn vanished(&mut self) {
        let why = VANISHED;
        let then = self.job.take().and_then(|j| match j.kind {
            JobKind::Stop { then } => Some(then),
            _ => None,
        });
        self.pattern_pending = false;
        let changed = self
            .edit(|r| {
                r.container_id = None;
                r.install_state = InstallState::Failed;
                r.state = PowerState::Offline;
                r.error = Some(why.into());
            })
            .await;
        if changed.is_ok() {
            self.hub.news().publish(Event::Status(PowerState::Offline));
            self.say(why);
        }
        if let Some(Then::Delete(reply)) = then {
            let _ = reply.send(self.remove().await);
        }
    }
}

/// SIGKILL. A container already stopped between our check and the signal (409) counts as
/// killed: its exit is recorded anyway.
async fn sigkill(docker: &Docker, cid: &str) -> std::result::Result<(), DockerError> {
    match docker.kill_container(cid, "SIGKILL").await {
        Ok(()) | Err(DockerError::Api { status: 409, .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Waits, bounded, for a killed container to exit.
async fn wait_killed(docker: &Docker, cid: &str) -> std::result::Result<(), DockerError> {
    bounded(KILL_WAIT, "waiting for the kill", docker.wait_container(cid)).await.map(drop)
}

/// Writes `text` and a newline to the server's stdin (at most 5 s: a server that does not read
/// must not hold anyone up).
async fn write_stdin(hub: &crate::console::Hub, text: &str) -> Result<()> {
    let mut stdin = hub.tty().stdin.lock().await;
    let pipe = stdin.as_mut().ok_or_else(|| conflict("Container is not running"))?;
    let mut line = text.trim_end_matches(['\r', '\n']).to_string();
    line.push('\n');
    tokio::time::timeout(Duration::from_secs(5), async {
        pipe.write_all(line.as_bytes()).await?;
        pipe.flush().await
    })
    .await
    .map_err(|_| Failure::StdinTimeout)?
    .map_err(|e| Failure::Stdin(e).into())
}

/// What the viewers are told when the server went down.
fn exit_message(intent: Intent, exit: &LastExit) -> String {
    let code = exit.code;
    match intent {
        _ if exit.oom_killed => format!("Server was killed: out of memory (exit code {code})"),
        Intent::Stop => format!("Server stopped (exit code {code})"),
        Intent::Kill => format!("Server killed (exit code {code})"),
        Intent::Restart => format!("Server stopped for a restart (exit code {code})"),
        Intent::For(what) => format!("Server stopped for {what} (exit code {code})"),
        Intent::None => format!("Server crashed with exit code {code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_messages_say_who_ended_the_run() {
        let exit = |code, oom_killed| LastExit { code, oom_killed, at: 0 };
        let cases = [
            (Intent::Stop, "Server stopped (exit code 0)"),
            (Intent::Kill, "Server killed (exit code 0)"),
            (Intent::Restart, "Server stopped for a restart (exit code 0)"),
            (Intent::For("a reinstall"), "Server stopped for a reinstall (exit code 0)"),
            (Intent::None, "Server crashed with exit code 0"),
        ];
        for (intent, want) in cases {
            assert_eq!(exit_message(intent, &exit(0, false)), want);
            // Out of memory wins over whatever lightd meant.
            assert_eq!(exit_message(intent, &exit(137, true)), "Server was killed: out of memory (exit code 137)");
        }
        assert_eq!(exit_message(Intent::None, &exit(-1, false)), "Server crashed with exit code -1");
    }
}
