//! A whole project at once: [`use_all`] attaches one client to every server
//! of a project, [`unuse_all`] detaches a client from every server it holds.
//!
//! The CLI (`use --all`, `unuse --all`, `exec --all`) builds the member list
//! from the config files; any other front end can build it from its own
//! definitions. Starts run in parallel, one thread per server, so a project
//! waits for its slowest server, not for the sum of them.

use crate::error::{Error, Result};
use crate::lifecycle::{AttachRequest, Attached, IfRunning, Lifecycle, StartSpec};
use crate::name::ServerName;
use crate::process::ProcessId;
use crate::record::State;
use crate::status::Status;
use std::ops::ControlFlow;

/// One server of a project.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: ServerName,
    pub spec: StartSpec,
    /// Joined only if already running, never started.
    pub lazy: bool,
}

/// What happened to one server.
#[derive(Debug)]
pub enum Outcome {
    /// Started by this call (and ready, if it has a readiness check).
    Started(Status),
    /// Already running; the client was added.
    Joined {
        status: Status,
        /// Set when the running server's options differ from the
        /// definition (see `Attached::warning`).
        warning: Option<String>,
    },
    /// A lazy server that is not running: left alone.
    SkippedLazy,
    /// The client was removed.
    Detached(Status),
    Failed(Error),
    /// The call was cancelled (see [`use_all`]) before this server was
    /// ready. `attached`: the client holds it all the same; `started`: this
    /// call started it. Undoing that is the caller's choice.
    Cancelled {
        attached: bool,
        started: bool,
    },
}

impl Outcome {
    pub fn failed(&self) -> bool {
        matches!(self, Outcome::Failed(_))
    }

    /// Whether this call attached the client (`Some`), and if so whether
    /// it also started the server (`Some(true)`): what undoing it means.
    pub fn attached(&self) -> Option<bool> {
        match self {
            Outcome::Started(_) => Some(true),
            Outcome::Joined { .. } => Some(false),
            Outcome::Cancelled {
                attached: true,
                started,
            } => Some(*started),
            _ => None,
        }
    }
}

/// Where a member stands after the first, joining pass.
enum Step {
    Done(Box<Outcome>),
    /// Not running: to be started.
    Start,
    /// Joined while it is still starting: to be waited for.
    Wait(Option<String>),
}

/// Attach `client` to every member: non-lazy ones are started if needed,
/// lazy ones only joined when running. `done` is called as each one
/// finishes. The result is in the members' order.
///
/// Once `cancelled()` answers true (the user pressed Ctrl-C, say), no
/// further server is started and no wait for readiness goes on: those
/// members end as [`Outcome::Cancelled`], saying what the caller may want
/// to undo. The joins of the first pass take microseconds and still run.
///
/// Joining a running server takes microseconds, so every member is first
/// joined here, in turn. Only those that must be started or waited for are
/// then done at once (crate::fanout), so that their waits overlap: on a busy
/// machine, waking threads costs more than the joins themselves.
pub fn use_all(
    lc: &Lifecycle,
    members: &[Member],
    client: ProcessId,
    metadata: Option<&str>,
    done: &(dyn Fn(&ServerName, &Outcome) + Sync),
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Vec<(ServerName, Outcome)> {
    let request = |m: &Member| AttachRequest {
        name: m.name.clone(),
        client,
        metadata: metadata.map(str::to_string),
        start: Some(m.spec.clone()),
        if_running: IfRunning::Attach,
    };
    let steps: Vec<Step> = members
        .iter()
        .map(|m| {
            let step = match lc.join(&request(m)) {
                Ok(a) if a.status().state == State::Starting => Step::Wait(a.warning()),
                Ok(a) => Step::Done(Box::new(Outcome::Joined {
                    status: a.status().clone(),
                    warning: a.warning(),
                })),
                Err(Error::NotRunning(_)) if m.lazy => Step::Done(Box::new(Outcome::SkippedLazy)),
                Err(Error::NotRunning(_)) => Step::Start,
                Err(e) => Step::Done(Box::new(Outcome::Failed(e))),
            };
            if let Step::Done(outcome) = &step {
                done(&m.name, outcome);
            }
            step
        })
        .collect();
    // The starts and waits at once (crate::fanout), each reported as it ends.
    let pending: Vec<(&Member, &Step)> = members
        .iter()
        .zip(&steps)
        .filter(|(_, step)| !matches!(step, Step::Done(_)))
        .collect();
    let mut finished = crate::fanout::each(&pending, |(m, step)| {
        let outcome = match step {
            Step::Wait(warning) => match wait(lc, &m.name, cancelled) {
                Ok(status) => Outcome::Joined {
                    status,
                    warning: warning.clone(),
                },
                Err(Error::Cancelled(_)) => Outcome::Cancelled {
                    attached: true,
                    started: false,
                },
                Err(e) => Outcome::Failed(e),
            },
            _ if cancelled() => Outcome::Cancelled {
                attached: false,
                started: false,
            },
            _ => start(lc, &request(m), cancelled),
        };
        done(&m.name, &outcome);
        outcome
    })
    .into_iter();
    members
        .iter()
        .zip(steps)
        .map(|(m, step)| {
            let outcome = match step {
                Step::Done(outcome) => *outcome,
                Step::Start | Step::Wait(_) => finished.next().flatten().unwrap_or_else(|| {
                    Outcome::Failed(Error::Other(format!("'{}': attaching panicked", m.name)))
                }),
            };
            (m.name.clone(), outcome)
        })
        .collect()
}

/// Wait until `name` is ready, giving up once `cancelled()`.
fn wait(lc: &Lifecycle, name: &ServerName, cancelled: &dyn Fn() -> bool) -> Result<Status> {
    lc.wait_ready(name, |_| match cancelled() {
        true => ControlFlow::Break(()),
        false => ControlFlow::Continue(()),
    })
}

/// Attach, starting the server if it is still not running, and wait until
/// it is ready.
fn start(lc: &Lifecycle, req: &AttachRequest, cancelled: &dyn Fn() -> bool) -> Outcome {
    let attached = match lc.attach(req) {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(e),
    };
    let warning = attached.warning();
    let mut status = attached.status().clone();
    let started = matches!(attached, Attached::Started(_));
    if status.state == State::Starting {
        status = match wait(lc, &req.name, cancelled) {
            Ok(s) => s,
            Err(Error::Cancelled(_)) => {
                return Outcome::Cancelled {
                    attached: true,
                    started,
                }
            }
            Err(e) => return Outcome::Failed(e),
        };
    }
    match attached {
        Attached::Started(_) => Outcome::Started(status),
        Attached::Joined { .. } => Outcome::Joined { status, warning },
    }
}

/// Detach `pid` from every server that lists it, whatever config is
/// current. Servers that do not list it are not touched, nor reported.
pub fn unuse_all(lc: &Lifecycle, pid: u32) -> Result<Vec<(ServerName, Outcome)>> {
    let mut outcomes = Vec::new();
    for name in lc.store.names()? {
        let holds = match lc.store.read(&name) {
            Ok(Some(rec)) => rec.clients.iter().any(|c| c.id.pid == pid),
            Ok(None) => false,
            Err(e) => {
                outcomes.push((name, Outcome::Failed(e)));
                continue;
            }
        };
        if !holds {
            continue;
        }
        let outcome = match lc.detach(&name, pid) {
            Ok(status) => Outcome::Detached(status),
            // Gone between the look and the detach: nothing left to undo.
            Err(Error::NotRunning(_) | Error::BadClient(..)) => continue,
            Err(e) => Outcome::Failed(e),
        };
        outcomes.push((name, outcome));
    }
    Ok(outcomes)
}
