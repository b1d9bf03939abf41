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
}

impl Outcome {
    pub fn failed(&self) -> bool {
        matches!(self, Outcome::Failed(_))
    }
}

/// Attach `client` to every member: non-lazy ones are started if needed,
/// lazy ones only joined when running. Each member runs on its own thread;
/// `done` is called (from that thread) as each one finishes. The result is
/// in the members' order.
pub fn use_all(
    lc: &Lifecycle,
    members: &[Member],
    client: ProcessId,
    metadata: Option<&str>,
    done: &(dyn Fn(&ServerName, &Outcome) + Sync),
) -> Vec<(ServerName, Outcome)> {
    std::thread::scope(|scope| {
        let workers: Vec<_> = members
            .iter()
            .map(|m| {
                scope.spawn(move || {
                    let outcome = use_one(lc, m, client, metadata);
                    done(&m.name, &outcome);
                    outcome
                })
            })
            .collect();
        members
            .iter()
            .zip(workers)
            .map(|(m, w)| {
                let outcome = w.join().unwrap_or_else(|_| {
                    Outcome::Failed(Error::Other(format!("'{}': attaching panicked", m.name)))
                });
                (m.name.clone(), outcome)
            })
            .collect()
    })
}

fn use_one(lc: &Lifecycle, m: &Member, client: ProcessId, metadata: Option<&str>) -> Outcome {
    let req = AttachRequest {
        name: m.name.clone(),
        client,
        metadata: metadata.map(str::to_string),
        start: (!m.lazy).then(|| m.spec.clone()),
        if_running: IfRunning::Attach,
    };
    let attached = match lc.attach(&req) {
        Ok(a) => a,
        Err(Error::NotRunning(_)) if m.lazy => return Outcome::SkippedLazy,
        Err(e) => return Outcome::Failed(e),
    };
    let warning = attached.warning();
    let mut status = attached.status().clone();
    if status.state == State::Starting {
        status = match lc.wait_ready(&m.name, |_| {}) {
            Ok(s) => s,
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
