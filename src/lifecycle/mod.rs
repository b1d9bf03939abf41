//! The lifecycle API that both the CLI and the Neovim module call:
//! attach (starting if needed), detach, stop, kill, status, list.
//!
//! Every check-then-change runs under the name's lock. Starting happens while
//! the lock is held, so concurrent callers serialise and exactly one starts.

use crate::error::{Error, Result};
use crate::exit::Termination;
use crate::name::ServerName;
use crate::process::ProcessId;
use crate::record::{now_ms, ExitKind, Record, State, StopRequest};
use crate::status::Status;
use crate::store::{Guard, Store};
use crate::watcher::{poke, poke_now};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod recover;
mod start;

pub use recover::Repair;
pub use start::{Difference, StartSpec, StartupCheck, DEFAULT_READY_TIMEOUT};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfRunning {
    /// Attach to the running server (the normal `use`).
    Attach,
    /// Fail: the caller wanted a fresh server (`admin start`).
    Fail,
}

#[derive(Debug)]
pub struct AttachRequest {
    pub name: ServerName,
    pub client: ProcessId,
    pub metadata: Option<String>,
    /// None: attach only if running (incref); Some: start if needed.
    pub start: Option<StartSpec>,
    pub if_running: IfRunning,
}

#[derive(Debug)]
pub enum Attached {
    Started(Status),
    Joined {
        status: Status,
        /// How the running server differs from the spec the client asked
        /// for (empty when it gave none, or when they agree).
        differences: Vec<Difference>,
    },
}

impl Attached {
    pub fn status(&self) -> &Status {
        match self {
            Attached::Started(s) | Attached::Joined { status: s, .. } => s,
        }
    }

    /// The warning for joining a server that runs with other options.
    pub fn warning(&self) -> Option<String> {
        match self {
            Attached::Started(_) => None,
            Attached::Joined {
                status,
                differences,
            } => Difference::warning(&status.name, differences),
        }
    }
}

/// Poll `check` with a growing pause (0.2 ms up to 20 ms) until it yields a
/// value, or until `deadline` passes (then `None`). For changes made by
/// another process that give us no event to wait on.
pub(crate) fn poll_until<T>(
    deadline: Option<Instant>,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    let mut pause = Duration::from_micros(200);
    loop {
        if let Some(found) = check()? {
            return Ok(Some(found));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// A server that is going away: a stop is pending, or it already exited
/// and its watcher is about to clean up (not a crash awaiting restart).
fn dying(rec: &Record) -> bool {
    rec.stop.is_some() || (!rec.server.is_alive() && rec.restart_at_ms.is_none())
}

/// How long `kill` waits for the name's lock before it kills without it.
const KILL_LOCK_WAIT: Duration = Duration::from_secs(2);

/// The library's front door: a store plus the binary that runs watchers.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub store: Store,
    /// The `sharedserver` binary, needed to start or re-supervise servers.
    pub watcher_exe: Option<PathBuf>,
    /// Whether an attach to a server that is stopping waits for it to go
    /// (the CLI), or fails at once with `Error::Stopping` for the caller to
    /// retry (the Neovim module: a slow stop must not freeze the editor).
    pub waits_for_stop: bool,
}

impl Lifecycle {
    pub fn new(store: Store, watcher_exe: Option<PathBuf>) -> Self {
        Lifecycle {
            store,
            watcher_exe,
            waits_for_stop: true,
        }
    }

    /// This lifecycle, never waiting for a stop (see `waits_for_stop`).
    pub fn without_waiting(self) -> Self {
        Lifecycle {
            waits_for_stop: false,
            ..self
        }
    }

    /// Attach `client` to `name`, starting the server if the request allows.
    pub fn attach(&self, req: &AttachRequest) -> Result<Attached> {
        self.logged(&req.name, "attach", self.attach_inner(req, true))
    }

    /// [`Lifecycle::attach`] to a server that runs, never starting one
    /// (`NotRunning` then, which is not journalled: it is a question). Unlike
    /// an attach without a spec, the spec is compared with the running
    /// server's, for the warning.
    pub fn join(&self, req: &AttachRequest) -> Result<Attached> {
        match self.attach_inner(req, false) {
            Err(Error::NotRunning(n)) => Err(Error::NotRunning(n)),
            other => self.logged(&req.name, "attach", other),
        }
    }

    /// Failures go to the journal too, so `admin debug` shows what went wrong.
    fn logged<T>(&self, name: &ServerName, op: &str, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            self.store.journal(name, op, &format!("failed: {e}"));
        }
        result
    }

    fn attach_inner(&self, req: &AttachRequest, may_start: bool) -> Result<Attached> {
        let name = &req.name;
        loop {
            let guard = self.store.lock(name)?;
            match self.supervised(&guard, name)? {
                Some(rec) if dying(&rec) => {
                    // Never rescue a dying server: wait, then start afresh.
                    drop(guard);
                    poke_now(&self.store, name);
                    if !self.waits_for_stop {
                        return Err(Error::Stopping(name.to_string()));
                    }
                    self.wait_gone(name, &rec)?;
                }
                Some(_) if req.if_running == IfRunning::Fail => {
                    let pid = self.store.read(name)?.map_or(0, |r| r.server.pid);
                    return Err(Error::AlreadyRunning(name.to_string(), pid));
                }
                Some(_)
                    if self.watcher_exe.is_none()
                        && !crate::watcher::listening(&self.store, name) =>
                {
                    // Attaching now would count on a watcher that is gone and
                    // that we cannot restore: nobody would ever stop it.
                    return Err(Error::LostWatcher(name.to_string()));
                }
                Some(mut rec) => {
                    // The watcher journals the change (it sees every one).
                    rec.attach(req.client, req.metadata.clone(), now_ms());
                    self.commit(guard, name, &mut rec)?;
                    let differences = req
                        .start
                        .as_ref()
                        .map(|s| s.differences(&rec))
                        .unwrap_or_default();
                    return Ok(Attached::Joined {
                        status: Status::of(&rec, now_ms()),
                        differences,
                    });
                }
                None => {
                    let Some(spec) = req.start.as_ref().filter(|_| may_start) else {
                        return Err(Error::NotRunning(name.to_string()));
                    };
                    if crate::watcher::listening(&self.store, name) {
                        // A watcher runs but the record is gone (removed by
                        // hand, or set aside by doctor): it restores the
                        // record from memory. Never start a second server.
                        drop(guard);
                        poke_now(&self.store, name);
                        self.wait_restored(name)?;
                        continue;
                    }
                    let rec = self.start_locked(&guard, req, spec)?;
                    return Ok(Attached::Started(Status::of(&rec, now_ms())));
                }
            }
        }
    }

    /// Detach `pid`. The watcher is woken to start the grace period.
    pub fn detach(&self, name: &ServerName, pid: u32) -> Result<Status> {
        self.logged(name, "detach", self.detach_inner(name, pid))
    }

    fn detach_inner(&self, name: &ServerName, pid: u32) -> Result<Status> {
        let guard = self.store.lock(name)?;
        let Some(mut rec) = self.supervised(&guard, name)? else {
            return Err(Error::NotRunning(name.to_string()));
        };
        if !rec.detach(pid) {
            return Err(Error::BadClient(
                name.to_string(),
                format!("pid {pid} is not attached (see `sharedserver info {name}`)"),
            ));
        }
        self.commit(guard, name, &mut rec)?;
        Ok(Status::of(&rec, now_ms()))
    }

    /// Wait (2 s at most) for a live watcher to restore a missing record.
    fn wait_restored(&self, name: &ServerName) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(2);
        match poll_until(Some(deadline), || Ok(self.store.read(name)?.map(|_| ())))? {
            Some(()) => Ok(()),
            None => Err(Error::RecordMissing(name.to_string())),
        }
    }

    /// Settle and write a changed record, release the lock, wake the watcher.
    /// The settle applies the grace rules only: the clients' liveness is the
    /// watcher's business (it holds a descriptor on each, and drops a dead
    /// one within milliseconds of its exit), so an attach or a detach does
    /// not look up every other client again. On a first look that is a
    /// descriptor and a /proc read per client per call, which was a third of
    /// an editor's attach (doc/PERFORMANCE.md, row 3).
    fn commit(&self, guard: Guard, name: &ServerName, rec: &mut Record) -> Result<()> {
        rec.settle(now_ms(), |_| true);
        self.store.write(&guard, name, rec)?;
        drop(guard);
        poke(&self.store, name);
        Ok(())
    }

    /// Stop the server (SIGTERM, then SIGKILL after `timeout`) and wait.
    pub fn stop(&self, name: &ServerName, force: bool, timeout: Duration) -> Result<Status> {
        let result = self.request_stop(name, timeout, false, |rec| {
            // No watcher would carry the stop out, and we never signal it.
            if self.not_ours(name, rec) {
                return Err(Error::NotOurs {
                    name: name.to_string(),
                    pid: rec.server.pid,
                    watched: false,
                });
            }
            if !force && !rec.clients.is_empty() {
                return Err(Error::InUse(name.to_string(), rec.clients.len()));
            }
            Ok((ExitKind::Stopped, "stopped on request"))
        });
        self.logged(name, "stop", result)
    }

    /// Restart the server in place: under the name's lock, ask its watcher
    /// to stop the process (SIGTERM, then SIGKILL after `timeout`) and run
    /// the command again. The record stays, so every client keeps its pid,
    /// start time, metadata and attach time, and other clients see a
    /// restart (`last_exit.kind` is `restarted`), never a stop. Returns the
    /// new process's status (`starting` while it has a ready check to pass).
    pub fn restart(&self, name: &ServerName, timeout: Duration) -> Result<Status> {
        self.logged(name, "restart", self.restart_inner(name, timeout))
    }

    fn restart_inner(&self, name: &ServerName, timeout: Duration) -> Result<Status> {
        let guard = self.store.lock(name)?;
        let Some(mut rec) = self.supervised(&guard, name)? else {
            return Err(Error::NotRunning(name.to_string()));
        };
        if dying(&rec) {
            return Err(Error::Stopping(name.to_string()));
        }
        // (Not `listening`: a watcher that has not opened its wake FIFO yet
        // still reads the request at its first tick.)
        if !rec.watcher.is_some_and(|w| w.is_alive()) {
            return Err(Error::NoWatcher(name.to_string()));
        }
        rec.stop = Some(StopRequest::new(
            ExitKind::Restarted,
            "restarted on request",
            timeout,
            now_ms(),
        ));
        self.store.write(&guard, name, &rec)?;
        self.store.journal(name, "restart", "restart requested");
        drop(guard);
        poke_now(&self.store, name);
        // The stop ends when the record names another process (restarted)
        // or none (the command could not run again).
        self.wait_gone(name, &rec)?;
        match self.store.read(name)? {
            Some(now) if now.server != rec.server => Ok(Status::of(&now, now_ms())),
            _ => {
                let last = self.store.read_last(name);
                let why = last.as_ref().map_or("it stopped", |l| l.reason.as_str());
                Err(Error::DiedAtStart {
                    name: name.to_string(),
                    detail: format!("did not come back from its restart: {why}"),
                    log_tail: last.and_then(|l| l.log_tail),
                })
            }
        }
    }

    /// SIGKILL the server's process group now, then clean up. If another
    /// process holds the name's lock for more than a moment (stuck, say),
    /// the server is killed without the lock, and its watcher records the
    /// end once the lock is free.
    pub fn kill(&self, name: &ServerName) -> Result<Status> {
        let kill_server = |rec: &Record| -> Result<()> {
            if let Some(server) = rec.server.open() {
                // We hold no child here: a record can be forged or stale, so
                // only a process that carries this name's tag is ours, and
                // its group only while it leads it.
                let (pid, dir) = (rec.server.pid, self.store.dir());
                if !crate::process::has_tag(pid, name.as_str(), dir) {
                    return Err(Error::NotOurs {
                        name: name.to_string(),
                        pid,
                        watched: crate::watcher::listening(&self.store, name),
                    });
                }
                if crate::process::is_tagged_leader(pid, name.as_str(), dir) {
                    server
                        .signal_group(libc::SIGKILL)
                        .map_err(|e| Error::Signal(name.to_string(), "SIGKILL", e))?;
                }
                // A server that moved out of its group is reached by pid.
                // (It may be gone by now: the group signal reached it.)
                let _ = server.signal(libc::SIGKILL);
            }
            Ok(())
        };
        let result = crate::lockwait::within(KILL_LOCK_WAIT, || {
            self.request_stop(name, Duration::ZERO, true, |rec| {
                kill_server(rec)?;
                Ok((ExitKind::Killed, "killed on request"))
            })
        });
        let result = match result {
            Err(busy @ Error::LockBusy { .. }) => match self.store.read(name)? {
                Some(rec) => {
                    // The request cannot be written without the lock: the
                    // watcher is told first, so that it records a kill
                    // (and restarts nothing) once the lock is free.
                    crate::watcher::poke_killed(&self.store, name);
                    kill_server(&rec).map(|()| Status::of(&rec, now_ms()))
                }
                None => Err(busy),
            },
            other => other,
        };
        self.logged(name, "kill", result)
    }

    /// `act` runs under the lock before the stop is recorded; `always` runs
    /// it even when a stop is already pending (a kill must not wait for a
    /// slow graceful stop).
    fn request_stop(
        &self,
        name: &ServerName,
        timeout: Duration,
        always: bool,
        act: impl FnOnce(&Record) -> Result<(ExitKind, &'static str)>,
    ) -> Result<Status> {
        let guard = self.store.lock(name)?;
        let Some(mut rec) = self.supervised(&guard, name)? else {
            return Err(Error::NotRunning(name.to_string()));
        };
        if always && rec.stop.is_some() {
            act(&rec)?;
        } else if rec.stop.is_none() {
            let (kind, reason) = act(&rec)?;
            rec.stop = Some(StopRequest::new(kind, reason, timeout, now_ms()));
            self.store.write(&guard, name, &rec)?;
            self.store.journal(name, "stop", "stop requested");
        }
        drop(guard);
        poke_now(&self.store, name);
        self.wait_gone(name, &rec)?;
        self.status(name)
    }

    /// A snapshot of one server. If its watcher died, this restores
    /// supervision (the only case in which a status query spawns a process).
    pub fn status(&self, name: &ServerName) -> Result<Status> {
        let now = now_ms();
        match self.store.read(name)? {
            None => Ok(self.stopped(name)),
            Some(rec) if self.healthy(&rec) => {
                let mut view = rec;
                view.settle(now, |id| id.is_alive());
                Ok(Status::of(&view, now_ms()))
            }
            Some(_) => {
                let guard = self.store.lock(name)?;
                let rec = self.supervised(&guard, name)?;
                drop(guard);
                Ok(match rec {
                    Some(mut view) => {
                        view.settle(now, |id| id.is_alive());
                        let mut status = Status::of(&view, now_ms());
                        // The server exited and its watcher is cleaning up:
                        // on its way out, though nobody asked it to stop.
                        if dying(&view) {
                            status.state = State::Stopping;
                        }
                        status
                    }
                    None => self.stopped(name),
                })
            }
        }
    }

    /// The status of a stopped server: its last exit, and where its log is.
    fn stopped(&self, name: &ServerName) -> Status {
        let mut s = Status::stopped(name.as_str(), self.store.read_last(name).as_ref());
        let chosen = s.log_file.as_deref().map(std::path::Path::new);
        let path = crate::logs::path_for(&self.store, name, chosen);
        s.log_file = Some(path.to_string_lossy().into_owned());
        s
    }

    /// Where `name`'s output is: its record's log, else its last exit's,
    /// else the default (see `logs::path_for`).
    pub fn log_path(&self, name: &ServerName) -> Result<PathBuf> {
        let status = self.status(name)?;
        let chosen = status.log_file.as_deref().map(std::path::Path::new);
        Ok(crate::logs::path_for(&self.store, name, chosen))
    }

    /// Every server with a record. A record that cannot be read is reported
    /// as an error for that name only, so one bad file hides nothing else.
    pub fn list(&self) -> Result<Vec<(ServerName, Result<Status>)>> {
        let names = self.store.names()?;
        Ok(names
            .into_iter()
            .map(|n| {
                let status = self.status(&n);
                (n, status)
            })
            .collect())
    }

    fn healthy(&self, rec: &Record) -> bool {
        (rec.server.is_alive() || rec.restart_at_ms.is_some())
            && rec.watcher.is_some_and(|w| w.is_alive())
    }

    /// Block until `name` has passed its readiness check. `progress` is
    /// called now and then with the elapsed time; `Break` gives up the wait
    /// (`Error::Cancelled`). Fails, with the reason and the log's last
    /// lines, if the server stops first (the watcher stops it when its
    /// readiness deadline passes).
    pub fn wait_ready(
        &self,
        name: &ServerName,
        mut progress: impl FnMut(Duration) -> ControlFlow<()>,
    ) -> Result<Status> {
        let started = Instant::now();
        let ready = poll_until(None, || {
            let status = self.status(name)?;
            match status.state {
                State::Active | State::Grace => return Ok(Some(status)),
                State::Stopped => {
                    // How it ended, when it ended by itself: its own code
                    // or signal says what went wrong.
                    let reason = status.last_exit.as_ref().map_or("stopped".into(), |l| {
                        match (l.kind, l.how) {
                            (
                                ExitKind::ExitedBeforeReady,
                                how @ (Termination::Code(_) | Termination::Signal(_)),
                            ) => {
                                format!("{} ({how})", l.reason)
                            }
                            _ => l.reason.clone(),
                        }
                    });
                    let log = status.log_file.as_deref().unwrap_or_default();
                    return Err(Error::DiedAtStart {
                        name: name.to_string(),
                        detail: format!("did not become ready: {reason}"),
                        log_tail: crate::logs::tail(std::path::Path::new(log), 10),
                    });
                }
                State::Starting | State::Stopping => {}
            }
            match progress(started.elapsed()) {
                ControlFlow::Continue(()) => Ok(None),
                ControlFlow::Break(()) => Err(Error::Cancelled(name.to_string())),
            }
        })?;
        // Without a deadline, poll_until returns only with a value.
        ready.ok_or_else(|| Error::Timeout(name.to_string(), "waiting for readiness".into()))
    }

    fn exe(&self) -> Result<PathBuf> {
        self.watcher_exe.clone().ok_or(Error::NoBinary)
    }
}
