//! What a supervisor's mailbox carries: actions asked by users (each with its reply) and
//! facts reported by the console pump, the engine's events, background jobs and the reconcile.

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::console::pump::Signal;
use crate::error::Result;
use crate::model::PortBinding;

/// Something a user (REST, WebSocket `power`, an internal caller) asks of one server.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Start,
    Stop,
    Kill,
    Restart,
    Suspend,
    Resume,
    Command(String),
    Reinstall { image: Option<String>, install_script: Option<String> },
    Rebind(Vec<PortBinding>),
    Delete,
}

impl Action {
    /// The power actions reachable by URL, by name.
    pub fn power(name: &str) -> Option<Action> {
        Some(match name {
            "start" => Action::Start,
            "stop" => Action::Stop,
            "kill" => Action::Kill,
            "restart" => Action::Restart,
            "suspend" => Action::Suspend,
            "resume" => Action::Resume,
            _ => return None,
        })
    }

    /// How error messages name it: "Cannot <verb> while ...".
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Kill => "kill",
            Action::Restart => "restart",
            Action::Suspend => "suspend",
            Action::Resume => "resume",
            Action::Command(_) => "send a command",
            Action::Reinstall { .. } => "reinstall",
            Action::Rebind(_) => "rebind network",
            Action::Delete => "delete",
        }
    }

    /// Whether it needs the engine (answered `503` before `202` when the engine is away).
    pub fn needs_engine(&self) -> bool {
        !matches!(self, Action::Command(_) | Action::Delete)
    }
}

/// A user's action on its way to the supervisor, with where the answer goes.
pub struct Ask {
    pub action: Action,
    pub reply: oneshot::Sender<Result<()>>,
    /// Past this, an action that still cannot run is refused with a 409.
    pub deadline: Instant,
}

/// What happened, as reported to the supervisor by the parts that see it.
#[derive(Debug)]
pub enum Fact {
    Console(Signal),
    /// An engine event about the server's container.
    Docker(EngineEvent),
    /// Make the record agree with Docker (boot, the engine came back).
    Reconcile,
    /// A background job finished.
    Done(JobResult),
}

/// The engine's container events a supervisor reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineEvent {
    Die,
    Start,
    Pause,
    Unpause,
    Destroy,
    /// A container of this server that the supervisor may not know (a leftover).
    Create,
}

impl EngineEvent {
    pub fn parse(action: &str) -> Option<EngineEvent> {
        Some(match action {
            "die" => EngineEvent::Die,
            "start" => EngineEvent::Start,
            "pause" => EngineEvent::Pause,
            "unpause" => EngineEvent::Unpause,
            "destroy" => EngineEvent::Destroy,
            "create" => EngineEvent::Create,
            _ => return None,
        })
    }
}

/// How a background job ended.
#[derive(Debug)]
pub enum JobResult {
    /// The image is there (pulled or already present), or why not.
    Pulled(std::result::Result<(), String>),
    /// The install made this container, or failed (with the container it made, if any).
    Installed(std::result::Result<String, (String, Option<String>)>),
    /// The rebind made this container beside the old one, or why not.
    Rebound(std::result::Result<String, String>),
    /// A graceful stop or kill returned (the exit itself is checked with Docker).
    Stopped(std::result::Result<(), String>),
}

/// A supervisor's mailbox entry.
pub enum Msg {
    Ask(Ask),
    Fact(Fact),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_actions_by_name() {
        let named = [
            ("start", Action::Start),
            ("stop", Action::Stop),
            ("kill", Action::Kill),
            ("restart", Action::Restart),
            ("suspend", Action::Suspend),
            ("resume", Action::Resume),
        ];
        for (name, action) in named {
            assert_eq!(Action::power(name), Some(action.clone()));
            // The name is the verb its refusals use.
            assert_eq!(action.verb(), name);
        }
        for name in ["", "Start", "delete", "command", "reinstall", "rebind", "start "] {
            assert_eq!(Action::power(name), None, "{name:?}");
        }
    }

    #[test]
    fn verbs_and_engine_needs() {
        let others = [
            (Action::Command("x".into()), "send a command", false),
            (Action::Reinstall { image: None, install_script: None }, "reinstall", true),
            (Action::Rebind(Vec::new()), "rebind network", true),
            (Action::Delete, "delete", false),
        ];
        for (action, verb, engine) in others {
            assert_eq!((action.verb(), action.needs_engine()), (verb, engine), "{action:?}");
        }
        for name in ["start", "stop", "kill", "restart", "suspend", "resume"] {
            assert!(Action::power(name).is_some_and(|a| a.needs_engine()), "{name}");
        }
    }

    #[test]
    fn engine_events_by_name() {
        use EngineEvent::*;
        for (name, event) in [
            ("die", Die),
            ("start", Start),
            ("pause", Pause),
            ("unpause", Unpause),
            ("destroy", Destroy),
            ("create", Create),
        ] {
            assert_eq!(EngineEvent::parse(name), Some(event));
        }
        for name in ["", "kill", "stop", "exec_start", "Die"] {
            assert_eq!(EngineEvent::parse(name), None, "{name:?}");
        }
    }
}
