//! How a server ended, as data: the kind of end (every decision matches on
//! it) and the exit code or signal. The `reason` next to them is for people.

use serde::{Deserialize, Serialize};

/// Why a server ended, or why it is being stopped. Serialized in kebab-case
/// (`"gave-up"`) in the status JSON, the Lua tables and the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitKind {
    /// It exited by itself (and no restart policy applied).
    Exited,
    /// It exited by itself before it passed its readiness check.
    ExitedBeforeReady,
    /// It exited within the start-up check, so `use` failed.
    ExitedAtStart,
    /// It crashed, and the watcher restarts it after a backoff.
    CrashedRestarting,
    /// It crashed more often than its restart policy allows.
    GaveUp,
    /// A restart could not run the command again.
    RestartFailed,
    /// It did not pass its readiness check in time, so it was stopped.
    NotReady,
    /// Stopped on request (`admin stop`, `:ServerStop`).
    Stopped,
    /// Killed on request (`admin kill`).
    Killed,
    /// Nobody was attached for its grace period (or, with no grace period,
    /// the last client left).
    GraceExpired,
    /// Restarted on request (`restart`): the old process ended, the
    /// clients stay attached to the new one.
    Restarted,
    /// It exited while no watcher supervised it.
    Unsupervised,
    /// `admin doctor` stopped it: its record was lost with its watcher.
    Orphaned,
    /// It exited but left processes running in the background (it
    /// daemonized); they were stopped.
    Daemonized,
}

impl ExitKind {
    /// The server ended in a way its user should hear about as a failure.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            ExitKind::ExitedBeforeReady
                | ExitKind::ExitedAtStart
                | ExitKind::GaveUp
                | ExitKind::RestartFailed
                | ExitKind::NotReady
                | ExitKind::Daemonized
        )
    }
}

/// Why a server that left `pids` behind failed, and what to do about it.
pub fn daemonized_reason(pids: &[u32]) -> String {
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    format!(
        "exited but left process(es) {} running in the background (it daemonized; they were stopped): run it in the foreground (often --foreground, --no-daemon, -f or `daemonize no`)",
        list.join(", ")
    )
}

/// How a process ended: its exit code, the signal that killed it, or
/// unknown (we were not its parent). In JSON: `code` and `signal`, at most
/// one of them set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "CodeSignal", into = "CodeSignal")]
pub enum Termination {
    Code(i32),
    Signal(i32),
    #[default]
    Unknown,
}

impl Termination {
    pub fn of(status: std::process::ExitStatus) -> Termination {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(c), _) => Termination::Code(c),
            (_, Some(s)) => Termination::Signal(s),
            _ => Termination::Unknown,
        }
    }

    /// Anything but a clean `exit 0` (an unknown end counts as a failure:
    /// a restart policy then restarts it, which is the safe side).
    pub fn failed(self) -> bool {
        self != Termination::Code(0)
    }

    pub fn code(self) -> Option<i32> {
        match self {
            Termination::Code(c) => Some(c),
            _ => None,
        }
    }

    pub fn signal(self) -> Option<i32> {
        match self {
            Termination::Signal(s) => Some(s),
            _ => None,
        }
    }
}

impl std::fmt::Display for Termination {
    /// `exit 7`, `signal 9` or `unknown status`: the same words everywhere.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Termination::Code(c) => write!(f, "exit {c}"),
            Termination::Signal(s) => write!(f, "signal {s}"),
            Termination::Unknown => f.write_str("unknown status"),
        }
    }
}

/// The JSON shape of a [`Termination`].
#[derive(Serialize, Deserialize)]
struct CodeSignal {
    #[serde(default)]
    code: Option<i32>,
    #[serde(default)]
    signal: Option<i32>,
}

impl From<CodeSignal> for Termination {
    fn from(raw: CodeSignal) -> Termination {
        match (raw.code, raw.signal) {
            (Some(c), _) => Termination::Code(c),
            (_, Some(s)) => Termination::Signal(s),
            _ => Termination::Unknown,
        }
    }
}

impl From<Termination> for CodeSignal {
    fn from(t: Termination) -> CodeSignal {
        CodeSignal {
            code: t.code(),
            signal: t.signal(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn termination_round_trips_as_code_and_signal() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Outer {
            pid: u32,
            #[serde(flatten)]
            how: Termination,
        }
        for how in [
            Termination::Code(7),
            Termination::Signal(9),
            Termination::Unknown,
        ] {
            let text = serde_json::to_string(&Outer { pid: 1, how }).unwrap();
            assert_eq!(serde_json::from_str::<Outer>(&text).unwrap().how, how);
        }
        let text = serde_json::to_string(&Outer {
            pid: 1,
            how: Termination::Signal(9),
        })
        .unwrap();
        assert_eq!(text, r#"{"pid":1,"code":null,"signal":9}"#);
        let old: Outer = serde_json::from_str(r#"{"pid":1}"#).unwrap();
        assert_eq!(old.how, Termination::Unknown);
    }

    #[test]
    fn kinds_are_kebab_case() {
        assert_eq!(
            serde_json::to_string(&ExitKind::CrashedRestarting).unwrap(),
            r#""crashed-restarting""#
        );
    }
}
