//! One task per container, its supervisor: it owns the container's power and install state
//! and handles one message at a time. Users' actions arrive with their reply; facts arrive
//! from the console pump, the engine's events, background jobs and the reconcile. Long steps
//! (a graceful stop, a pull, an install, a rebind) run as jobs that report back, so the
//! supervisor stays free to escalate a stop, cancel an install or refuse what cannot run.
//! The state/action table it implements is written out in the README.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::action::{Action, Ask, EngineEvent, Fact, JobResult, Msg};
use super::Supervisors;
use crate::console::pump::Signal;
use crate::console::Hub;
use crate::error::{conflict, Error, Result};
use crate::model::{ContainerRecord, InstallState, PortBinding, PowerState};

/// The supervisor of one container.
pub struct Supervisor {
    pub(super) sups: Supervisors,
    pub(super) id: String,
    pub(super) hub: Arc<Hub>,
    /// Its own mailbox, for jobs and the pump to report to.
    pub(super) tx: mpsc::UnboundedSender<Msg>,
    pub(super) job: Option<Job>,
    /// Actions waiting for the job to finish, each until its deadline.
    deferred: Vec<Ask>,
    /// Numbers the runs of the server: a pump's report about an older run is stale.
    pub(super) run: u64,
    /// Why the current run is ending, when lightd ends it.
    pub(super) intent: Intent,
    /// The current run waits for `start_pattern`.
    pub(super) pattern_pending: bool,
    pub(super) last_crash: Option<std::time::Instant>,
    /// Set once the record is gone: the supervisor ends.
    pub(super) deleted: bool,
    /// A container was removed while a job ran: checked once the job is done.
    pub(super) gone_pending: bool,
}

/// A long step in the background, and what the supervisor does when it ends.
pub struct Job {
    pub kind: JobKind,
    pub task: JoinHandle<()>,
}

/// What the supervisor's one running job does.
pub enum JobKind {
    /// Pulling the image of a create or reinstall (the server, if any, still runs).
    Pull { rollback: Option<Rollback> },
    /// The server is being stopped (gracefully, or killed); `then` follows its exit.
    Stop { then: Then },
    /// The container is being made and the install script run.
    Install { start_after: bool },
    /// A new container with other ports is being made beside the old one.
    Rebind { ports: Vec<PortBinding>, start_after: bool },
}

/// What follows a stop.
pub enum Then {
    Nothing,
    Start,
    Install { start_after: bool },
    Rebind { ports: Vec<PortBinding>, start_after: bool },
    Delete(oneshot::Sender<Result<()>>),
}

/// What a reinstall puts back when its image cannot be had: the server stays as it was.
pub struct Rollback {
    pub image: String,
    pub install_script: Option<String>,
    pub install_state: InstallState,
}

/// Why the current run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Not by lightd: a crash.
    None,
    Stop,
    Kill,
    Restart,
    /// Stopped so that a reinstall, rebind or delete can proceed.
    For(&'static str),
}

/// How the supervisor answers an action now.
enum Decision {
    Run,
    Refuse(Error),
    /// Wait for the job to end (at most until the action's deadline).
    Defer,
}

impl Supervisor {
    /// Starts the supervisor of `id` (whose record exists) and returns its mailbox.
    /// `fresh`: the record was just created and its install begins now.
    pub fn spawn(sups: &Supervisors, id: &str, fresh: bool) -> mpsc::UnboundedSender<Msg> {
        let (tx, rx) = mpsc::unbounded_channel();
        Self::run(sups, id, tx.clone(), rx, fresh);
        tx
    }

    /// Starts the supervisor of `id` on a mailbox made (and maybe already written to) earlier.
    pub fn run(
        sups: &Supervisors,
        id: &str,
        tx: mpsc::UnboundedSender<Msg>,
        rx: mpsc::UnboundedReceiver<Msg>,
        fresh: bool,
    ) {
        let sup = Supervisor {
            sups: sups.clone(),
            id: id.to_string(),
            hub: sups.hubs.get(id),
            tx,
            job: None,
            deferred: Vec::new(),
            run: 0,
            intent: Intent::None,
            pattern_pending: false,
            last_crash: None,
            deleted: false,
            gone_pending: false,
        };
        sups.tasks.spawn(sup.serve(rx, fresh));
    }

    async fn serve(mut self, mut rx: mpsc::UnboundedReceiver<Msg>, fresh: bool) {
        if fresh {
            self.begin_install(None);
        } else {
            self.boot();
        }
        // The daemon's one shutdown signal ends it (servers keep running).
        let mut stopping = self.sups.tasks.signal();
        loop {
            let next = self.deferred.iter().map(|a| a.deadline).min();
            let msg = tokio::select! {
                m = rx.recv() => m,
                () = stopping.wait() => None,
                _ = sleep_until(next) => {
                    self.expire_deferred();
                    continue;
                }
            };
            match msg {
                None => break,
                Some(Msg::Ask(ask)) => self.ask(ask).await,
                Some(Msg::Fact(fact)) => self.fact(fact).await,
            }
            if self.deleted {
                break;
            }
            self.retry_deferred().await;
        }
        self.end();
    }

    /// At daemon start (installs cut short are already marked failed by `lifecycle::boot`): a
    /// server that was up has its tail filled by the reconcile (viewers wait for it, bounded).
    fn boot(&mut self) {
        let Some(rec) = self.record() else { return };
        if rec.state != PowerState::Offline {
            self.hub.tty().set_filled(false);
            let hub = Arc::clone(&self.hub);
            crate::shutdown::detach(async move {
                tokio::time::sleep(super::FILL_WAIT * 2).await;
                hub.tty().set_filled(true);
            });
        }
    }

    /// Leaves: jobs are cut (a restart finds what they left), pending answers say why.
    fn end(&mut self) {
        let why = || match self.deleted {
            true => super::not_found(),
            false => Error::Unavailable("the daemon is shutting down".into()),
        };
        if let Some(job) = self.job.take() {
            job.task.abort();
            if let JobKind::Stop { then: Then::Delete(reply) } = job.kind {
                let _ = reply.send(Err(why()));
            }
        }
        for ask in std::mem::take(&mut self.deferred) {
            let _ = ask.reply.send(Err(why()));
        }
        self.sups.forget(&self.id, &self.tx);
    }

    /// The record as saved now (`None` once deleted).
    pub(super) fn record(&self) -> Option<ContainerRecord> {
        self.sups.store.read(|s| s.containers.get(&self.id).cloned())
    }

    /// Changes the record (stamping `updated_at`) and waits until it is saved.
    pub(super) async fn edit(&self, f: impl FnOnce(&mut ContainerRecord)) -> Result<()> {
        super::edit(&self.sups, &self.id, f).await
    }

    /// Where the pump reports: into this mailbox.
    pub(super) fn report(&self) -> crate::console::pump::Report {
        let tx = self.tx.clone();
        Arc::new(move |s: Signal| {
            let _ = tx.send(Msg::Fact(Fact::Console(s)));
        })
    }

    /// Runs `job` in the background; its result comes back as a fact.
    pub(super) fn start_job(
        &mut self,
        kind: JobKind,
        work: impl std::future::Future<Output = JobResult> + Send + 'static,
    ) {
        let tx = self.tx.clone();
        let task = crate::shutdown::detach(async move {
            let result = work.await;
            let _ = tx.send(Msg::Fact(Fact::Done(result)));
        });
        self.job = Some(Job { kind, task });
    }

    async fn ask(&mut self, ask: Ask) {
        match self.decide(&ask.action) {
            Decision::Refuse(e) => {
                let _ = ask.reply.send(Err(e));
            }
            Decision::Defer if Instant::now() < ask.deadline => self.deferred.push(ask),
            Decision::Defer => {
                let e = self.busy(&ask.action);
                let _ = ask.reply.send(Err(e));
            }
            Decision::Run => {
                if ask.action.needs_engine() {
                    if let Err(e) = self.sups.docker.ping().await {
                        let _ = ask.reply.send(Err(e.into()));
                        return;
                    }
                }
                self.perform(ask.action, ask.reply).await;
            }
        }
    }

    /// The state/action table (README): what `action` does in the current state.
    fn decide(&self, action: &Action) -> Decision {
        let rec = self.record();
        let restoring = |volume: &str| self.sups.backups.is_restoring(volume);
        decide(rec.as_ref(), self.job.as_ref().map(|j| &j.kind), restoring, action)
    }

    /// The 409 for an action that waited its two seconds in vain.
    fn busy(&self, action: &Action) -> Error {
        busy(self.job.as_ref().map(|j| &j.kind), action)
    }

    async fn perform(&mut self, action: Action, reply: oneshot::Sender<Result<()>>) {
        let answer = match action {
            Action::Start => self.start().await,
            Action::Stop => self.stop(Intent::Stop, Then::Nothing).await,
            Action::Kill => self.kill().await,
            Action::Restart => self.restart().await,
            Action::Suspend => self.suspend().await,
            Action::Resume => self.resume().await,
            Action::Command(text) => return self.command(text, reply),
            Action::Reinstall { image, install_script } => self.reinstall(image, install_script).await,
            Action::Rebind(ports) => self.rebind(ports).await,
            Action::Delete => return self.delete(reply).await,
        };
        let answer = match answer {
            Err(Error::Docker(e)) if e.is_not_found() => self.not_found_by_docker(e).await,
            other => other,
        };
        let _ = reply.send(answer);
    }

    /// Docker answered 404 to a power step: if the server's container was removed outside
    /// lightd (before its `destroy` event reached us), the record says so and the user gets
    /// a 409 saying how to recover, not a 500.
    async fn not_found_by_docker(&mut self, e: crate::docker::DockerError) -> Result<()> {
        let Some(cid) = self.record().and_then(|r| r.container_id) else { return Err(e.into()) };
        if !self.is_gone(&cid).await {
            return Err(e.into());
        }
        self.vanished().await;
        Err(conflict(super::power::VANISHED))
    }

    async fn fact(&mut self, fact: Fact) {
        match fact {
            Fact::Console(Signal::PatternMatched { run }) if run == self.run => self.pattern_matched().await,
            Fact::Console(Signal::Ended { run }) if run == self.run => self.check_exit(None).await,
            Fact::Console(_) => {}
            Fact::Docker(EngineEvent::Die) => self.check_exit(None).await,
            Fact::Docker(EngineEvent::Destroy) => self.check_gone().await,
            Fact::Docker(EngineEvent::Pause) => self.paused_outside(true).await,
            Fact::Docker(EngineEvent::Unpause) => self.paused_outside(false).await,
            Fact::Docker(EngineEvent::Start | EngineEvent::Create) | Fact::Reconcile => self.reconcile().await,
            Fact::Done(result) => self.job_done(result).await,
        }
    }

    async fn job_done(&mut self, result: JobResult) {
        match result {
            JobResult::Stopped(outcome) => self.check_exit(Some(outcome)).await,
            JobResult::Pulled(outcome) => self.pulled(outcome).await,
            JobResult::Installed(outcome) => self.installed(outcome).await,
            JobResult::Rebound(outcome) => self.rebound(outcome).await,
        }
        if std::mem::take(&mut self.gone_pending) {
            self.check_gone().await;
        }
    }

    async fn retry_deferred(&mut self) {
        if self.job.is_some() || self.deferred.is_empty() {
            return;
        }
        for ask in std::mem::take(&mut self.deferred) {
            self.ask(ask).await;
            if self.deleted {
                return;
            }
        }
    }

    fn expire_deferred(&mut self) {
        let now = Instant::now();
        let (late, waiting): (Vec<Ask>, Vec<Ask>) = self.deferred.drain(..).partition(|a| a.deadline <= now);
        self.deferred = waiting;
        for ask in late {
            let e = self.busy(&ask.action);
            let _ = ask.reply.send(Err(e));
        }
    }

    /// Publishes a note to the viewers and the daemon log.
    pub(super) fn say(&self, note: impl Into<String>) {
        let note = note.into();
        crate::info!("{}: {note}", self.id);
        self.hub.news().publish(crate::console::Event::DaemonMessage(note));
    }
}

/// The state/action table (README) as a pure function: what `action` does given the record
/// (`None`: deleted), the job running (if any) and whether a backup is being restored into a
/// volume. Kept apart from the supervisor so unit tests can walk the whole table.
fn decide(
    rec: Option<&ContainerRecord>,
    job: Option<&JobKind>,
    restoring: impl FnOnce(&str) -> bool,
    action: &Action,
) -> Decision {
    use Decision::*;
    use PowerState::*;
    let Some(rec) = rec else { return Refuse(super::not_found()) };
    let verb = action.verb();
    if rec.install_state == InstallState::Installing {
        return match action {
            Action::Delete => Run,
            _ => Refuse(conflict(format!("Cannot {verb} while container is installing"))),
        };
    }
    if matches!(action, Action::Start | Action::Restart) && restoring(&rec.volume_id) {
        return Refuse(conflict(format!("Cannot {verb} while a backup is being restored into its volume")));
    }
    match (job, action) {
        (Some(JobKind::Stop { then }), _) => {
            let plain = matches!(then, Then::Nothing | Then::Start);
            match action {
                Action::Stop | Action::Kill => Run,
                Action::Restart | Action::Delete if plain => Run,
                Action::Command(_) => Refuse(conflict("Cannot send a command while the server is stopping")),
                _ => Defer,
            }
        }
        (Some(_), _) => Defer,
        (None, Action::Reinstall { .. } | Action::Rebind(_) | Action::Delete) => Run,
        (None, _) if rec.install_state == InstallState::Failed => Refuse(conflict(format!(
            "Cannot {verb}: the install failed ({}); reinstall the container first",
            rec.error.as_deref().unwrap_or("no reason recorded")
        ))),
        (None, Action::Start) => match rec.state {
            Offline => Run,
            Suspended => Refuse(conflict("Container is suspended; resume it instead")),
            Stopping => Refuse(conflict("Cannot start while the server is stopping")),
            Starting | Running => Refuse(conflict("Container is already running")),
        },
        (None, Action::Stop | Action::Kill) if rec.state == Offline => Refuse(conflict("Container is not running")),
        (None, Action::Suspend) => match rec.state {
            Starting | Running => Run,
            Suspended => Refuse(conflict("Container is already suspended")),
            _ => Refuse(conflict("Container is not running")),
        },
        (None, Action::Resume) if rec.state != Suspended => Refuse(conflict("Container is not suspended")),
        (None, Action::Command(_)) => match rec.state {
            Starting | Running => Run,
            Suspended => Refuse(conflict("Container is suspended")),
            _ => Refuse(conflict("Container is not running")),
        },
        (None, _) => Run,
    }
}

/// The 409 for an action that waited for `job` in vain.
fn busy(job: Option<&JobKind>, action: &Action) -> Error {
    let what = match job {
        Some(JobKind::Stop { then: Then::Start }) => "the server is restarting",
        Some(JobKind::Stop { .. }) => "the server is stopping",
        Some(JobKind::Rebind { .. }) => "the network is being rebound",
        Some(_) => "container is installing",
        None => "another operation is running on this container",
    };
    conflict(format!("Cannot {} while {what}", action.verb()))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::record;

    /// Every action, in the order of the rows below.
    fn actions() -> [Action; 10] {
        [
            Action::Start,
            Action::Stop,
            Action::Kill,
            Action::Restart,
            Action::Suspend,
            Action::Resume,
            Action::Command("say hi".into()),
            Action::Reinstall { image: None, install_script: None },
            Action::Rebind(Vec::new()),
            Action::Delete,
        ]
    }

    /// A decision as text: `run`, `defer`, or the status and message of a refusal.
    fn show(d: Decision) -> String {
        match d {
            Decision::Run => "run".into(),
            Decision::Defer => "defer".into(),
            Decision::Refuse(Error::Conflict(m)) => format!("409 {m}"),
            Decision::Refuse(Error::NotFound(m)) => format!("404 {m}"),
            Decision::Refuse(e) => format!("other {e}"),
        }
    }

    /// The table's answers for `rec` and `job` to every action, restoring or not.
    fn row(rec: &ContainerRecord, job: Option<&JobKind>, restoring: bool) -> Vec<String> {
        actions().iter().map(|a| show(decide(Some(rec), job, |_| restoring, a))).collect()
    }

    const NOT_RUNNING: &str = "409 Container is not running";
    const NOT_SUSPENDED: &str = "409 Container is not suspended";

    /// The README's table with no job running: every state against every action.
    #[test]
    fn idle_table_by_power_state() {
        use PowerState::*;
        let up = ["409 Container is already running", "run", "run", "run", "run", NOT_SUSPENDED, "run"];
        let table: [(PowerState, [&str; 7]); 5] = [
            (Offline, ["run", NOT_RUNNING, NOT_RUNNING, "run", NOT_RUNNING, NOT_SUSPENDED, NOT_RUNNING]),
            (Starting, up),
            (Running, up),
            (
                Stopping,
                [
                    "409 Cannot start while the server is stopping",
                    "run",
                    "run",
                    "run",
                    NOT_RUNNING,
                    NOT_SUSPENDED,
                    NOT_RUNNING,
                ],
            ),
            (
                Suspended,
                [
                    "409 Container is suspended; resume it instead",
                    "run",
                    "run",
                    "run",
                    "409 Container is already suspended",
                    "run",
                    "409 Container is suspended",
                ],
            ),
        ];
        for (state, want) in table {
            let got = row(&record(state, InstallState::Ready), None, false);
            let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            // Reinstall, rebind and delete run in every state.
            want.extend(["run", "run", "run"].map(String::from));
            assert_eq!(got, want, "{state:?}");
        }
    }

    #[test]
    fn a_missing_record_is_404_for_every_action() {
        for a in actions() {
            let d = decide(None, None, |_| false, &a);
            assert_eq!(show(d), "404 Container not found", "{a:?}");
        }
    }

    #[test]
    fn installing_refuses_all_but_delete() {
        for state in PowerState::ALL {
            let rec = record(state, InstallState::Installing);
            // Whatever else holds: a restore, a job.
            for (job, restoring) in [(None, false), (Some(JobKind::Install { start_after: true }), true)] {
                let got = row(&rec, job.as_ref(), restoring);
                let want: Vec<String> = actions()
                    .iter()
                    .map(|a| match a {
                        Action::Delete => "run".into(),
                        a => format!("409 Cannot {} while container is installing", a.verb()),
                    })
                    .collect();
                assert_eq!(got, want, "{state:?}");
            }
        }
    }

    #[test]
    fn a_failed_install_allows_only_reinstall_rebind_and_delete() {
        for state in PowerState::ALL {
            let mut rec = record(state, InstallState::Failed);
            for (error, reason) in [(None, "no reason recorded"), (Some("pull failed".to_string()), "pull failed")] {
                rec.error = error;
                let got = row(&rec, None, false);
                let want: Vec<String> = actions()
                    .iter()
                    .map(|a| match a {
                        Action::Reinstall { .. } | Action::Rebind(_) | Action::Delete => "run".into(),
                        a => format!(
                            "409 Cannot {}: the install failed ({reason}); reinstall the container first",
                            a.verb()
                        ),
                    })
                    .collect();
                assert_eq!(got, want, "{state:?}");
            }
        }
    }

    /// A restore into the volume refuses start and restart only, and asks about this volume.
    #[test]
    fn a_restore_refuses_start_and_restart() {
        for state in PowerState::ALL {
            let rec = record(state, InstallState::Ready);
            let plain = row(&rec, None, false);
            let mut asked = Vec::new();
            let got: Vec<String> = actions()
                .iter()
                .map(|a| {
                    show(decide(
                        Some(&rec),
                        None,
                        |v| {
                            asked.push(v.to_string());
                            true
                        },
                        a,
                    ))
                })
                .collect();
            for (i, a) in actions().iter().enumerate() {
                match a {
                    Action::Start | Action::Restart => assert_eq!(
                        got[i],
                        format!("409 Cannot {} while a backup is being restored into its volume", a.verb())
                    ),
                    _ => assert_eq!(got[i], plain[i], "{state:?} {a:?}"),
                }
            }
            assert_eq!(asked, ["vol", "vol"], "asked for start and restart only, about the record's volume");
        }
        // Before a running stop job gets to say yes to a restart.
        let rec = record(PowerState::Stopping, InstallState::Ready);
        let stop = JobKind::Stop { then: Then::Nothing };
        assert!(show(decide(Some(&rec), Some(&stop), |_| true, &Action::Restart)).starts_with("409 Cannot restart"));
    }

    /// During a stop: stop and kill run (kill escalates), restart and delete join a plain stop,
    /// a command is refused, the rest waits.
    #[test]
    fn during_a_stop() {
        let (tx, _rx) = oneshot::channel();
        let thens = [
            (Then::Nothing, true),
            (Then::Start, true),
            (Then::Install { start_after: false }, false),
            (Then::Rebind { ports: Vec::new(), start_after: true }, false),
            (Then::Delete(tx), false),
        ];
        for (then, plain) in thens {
            let join = if plain { "run" } else { "defer" };
            let want = [
                "defer",
                "run",
                "run",
                join,
                "defer",
                "defer",
                "409 Cannot send a command while the server is stopping",
                "defer",
                "defer",
                join,
            ];
            let job = JobKind::Stop { then };
            // The job decides, whatever the record says (a failed install included).
            for install in [InstallState::Ready, InstallState::Failed] {
                for state in [PowerState::Stopping, PowerState::Offline] {
                    assert_eq!(row(&record(state, install), Some(&job), false), want, "{install:?} {state:?}");
                }
            }
        }
    }

    #[test]
    fn during_any_other_job_everything_waits() {
        let jobs = [
            JobKind::Pull { rollback: None },
            JobKind::Install { start_after: false },
            JobKind::Rebind { ports: Vec::new(), start_after: false },
        ];
        for job in jobs {
            for install in [InstallState::Ready, InstallState::Failed] {
                assert_eq!(row(&record(PowerState::Running, install), Some(&job), false), ["defer"; 10]);
            }
        }
    }

    #[test]
    fn busy_says_what_holds_the_action_up() {
        let (tx, _rx) = oneshot::channel();
        let cases = [
            (Some(JobKind::Stop { then: Then::Start }), "Cannot start while the server is restarting"),
            (Some(JobKind::Stop { then: Then::Nothing }), "Cannot start while the server is stopping"),
            (Some(JobKind::Stop { then: Then::Delete(tx) }), "Cannot start while the server is stopping"),
            (
                Some(JobKind::Rebind { ports: Vec::new(), start_after: false }),
                "Cannot start while the network is being rebound",
            ),
            (Some(JobKind::Install { start_after: true }), "Cannot start while container is installing"),
            (Some(JobKind::Pull { rollback: None }), "Cannot start while container is installing"),
            (None, "Cannot start while another operation is running on this container"),
        ];
        for (job, want) in cases {
            match busy(job.as_ref(), &Action::Start) {
                Error::Conflict(m) => assert_eq!(m, want),
                e => panic!("not a 409: {e}"),
            }
        }
        let e = busy(None, &Action::Command("x".into()));
        assert!(e.to_string().starts_with("Cannot send a command while"), "{e}");
    }
}
