//! The lifecycle API that both the CLI and the Neovim module call:
//! attach (starting if needed), detach, stop, kill, status, list.
//!
//! Every check-then-change runs under the name's lock. Starting happens while
//! the lock is held, so concurrent callers serialise and exactly one starts.

use crate::duration;
use crate::error::{Error, Result};
use crate::name::ServerName;
use crate::process::{signal_group, ProcessId};
use crate::record::{now_ms, LastExit, Record, RestartPolicy, State, StopRequest, FORMAT, VERSION};
use crate::spawn::{self, Hello, Launch};
use crate::status::Status;
use crate::store::{Guard, Store};
use crate::watcher::poke;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How to start a server when nobody runs it yet.
#[derive(Debug, Clone)]
pub struct StartSpec {
    pub command: Vec<String>,
    /// Added to the inherited environment.
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    /// Where output goes; None means `NAME.log` in the lock directory.
    pub log_file: Option<PathBuf>,
    pub grace_period: Duration,
    /// Readiness spec (`tcp://…`, `http://…`, `unix://…`, `log:…`, `cmd:…`).
    pub ready: Option<String>,
    pub ready_timeout: Duration,
    pub restart: Option<RestartPolicy>,
    /// How long the fresh server must stay up for the start to count as a
    /// success (catches servers that exit at once). Zero: return on spawn.
    pub startup_check: Duration,
}

/// Default for `--ready-timeout`.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for `--startup-check`.
pub const DEFAULT_STARTUP_CHECK: Duration = Duration::from_millis(50);

impl StartSpec {
    /// A spec with every option at its default.
    pub fn new(command: Vec<String>, cwd: PathBuf) -> StartSpec {
        StartSpec {
            command,
            env: BTreeMap::new(),
            cwd,
            log_file: None,
            grace_period: Duration::ZERO,
            ready: None,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            restart: None,
            startup_check: DEFAULT_STARTUP_CHECK,
        }
    }
}

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
        /// The running server's command differs from the one requested.
        command_differs: bool,
    },
}

impl Attached {
    pub fn status(&self) -> &Status {
        match self {
            Attached::Started(s) | Attached::Joined { status: s, .. } => s,
        }
    }
}

/// The library's front door: a store plus the binary that runs watchers.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub store: Store,
    /// The `sharedserver` binary, needed to start or re-supervise servers.
    pub watcher_exe: Option<PathBuf>,
}

impl Lifecycle {
    pub fn new(store: Store, watcher_exe: Option<PathBuf>) -> Self {
        Lifecycle { store, watcher_exe }
    }

    /// Attach `client` to `name`, starting the server if the request allows.
    pub fn attach(&self, req: &AttachRequest) -> Result<Attached> {
        self.logged(&req.name, "attach", self.attach_inner(req))
    }

    /// Failures go to the journal too, so `admin debug` shows what went wrong.
    fn logged<T>(&self, name: &ServerName, op: &str, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            self.store.journal(name, op, &format!("failed: {e}"));
        }
        result
    }

    fn attach_inner(&self, req: &AttachRequest) -> Result<Attached> {
        let name = &req.name;
        loop {
            let guard = self.store.lock(name)?;
            match self.supervised(&guard, name)? {
                Some(rec) if rec.state() == State::Stopping => {
                    // Never rescue a dying server: wait, then start afresh.
                    drop(guard);
                    poke(&self.store, name);
                    self.wait_gone(name, &rec)?;
                }
                Some(_) if req.if_running == IfRunning::Fail => {
                    let pid = self.store.read(name)?.map_or(0, |r| r.server.pid);
                    return Err(Error::AlreadyRunning(name.to_string(), pid));
                }
                Some(mut rec) => {
                    let added = rec.attach(req.client, req.metadata.clone(), now_ms());
                    self.commit(guard, name, &mut rec)?;
                    self.store.journal(
                        name,
                        "attach",
                        &format!(
                            "client {} {} (refcount {})",
                            req.client.pid,
                            if added {
                                "attached"
                            } else {
                                "already attached"
                            },
                            rec.clients.len()
                        ),
                    );
                    let command_differs =
                        req.start.as_ref().is_some_and(|s| s.command != rec.command);
                    return Ok(Attached::Joined {
                        status: Status::of(&rec, None, now_ms()),
                        command_differs,
                    });
                }
                None => {
                    let Some(spec) = &req.start else {
                        return Err(Error::NotRunning(name.to_string()));
                    };
                    let rec = self.start_locked(&guard, req, spec)?;
                    return Ok(Attached::Started(Status::of(&rec, None, now_ms())));
                }
            }
        }
    }

    fn start_locked(&self, guard: &Guard, req: &AttachRequest, spec: &StartSpec) -> Result<Record> {
        let name = &req.name;
        if spec.command.is_empty() || spec.command[0].is_empty() {
            return Err(Error::Other(format!(
                "server '{name}' is not running and no command was given (add `-- CMD ARGS...`)"
            )));
        }
        if let Some(ready) = &spec.ready {
            crate::probe::ReadySpec::parse(ready)?;
        }
        let log_file = spec
            .log_file
            .clone()
            .unwrap_or_else(|| crate::logs::default_path(&self.store, name));
        let launch = Launch {
            command: spec.command.clone(),
            env: spec.env.clone(),
            cwd: spec.cwd.to_string_lossy().into_owned(),
            log_file: log_file.to_string_lossy().into_owned(),
            ready: spec.ready.clone(),
            startup_check_ms: spec.startup_check.as_millis() as u64,
            adopt: None,
        };
        let exe = self.exe()?;
        let handshake = spawn::watcher(&exe, self.store.dir(), name.as_str(), &launch)?;
        let (watcher, server, started_at_ms) = match handshake.hello.clone() {
            Hello::Ready {
                watcher,
                server,
                started_at_ms,
            } => (watcher, server, started_at_ms),
            Hello::SpawnFailed { message } => {
                return Err(Error::Spawn(spec.command[0].clone(), message));
            }
            Hello::DiedAtStart { code, signal } => {
                let detail = match (code, signal) {
                    (Some(c), _) => format!("exited at once with code {c}"),
                    (_, Some(s)) => format!("was killed at once by signal {s}"),
                    _ => "exited at once".to_string(),
                };
                return Err(Error::DiedAtStart {
                    name: name.to_string(),
                    detail,
                    log_tail: crate::logs::tail(&log_file, 10),
                });
            }
        };
        let mut rec = Record {
            format: FORMAT.into(),
            version: VERSION,
            name: name.to_string(),
            server,
            watcher: Some(watcher),
            watcher_is_parent: true,
            command: spec.command.clone(),
            cwd: launch.cwd,
            env: spec.env.clone(),
            log_file: Some(launch.log_file),
            grace_period_ms: spec.grace_period.as_millis() as u64,
            started_at_ms,
            clients: vec![],
            grace_until_ms: None,
            stop: None,
            ready: spec.ready.clone(),
            ready_timeout_ms: spec.ready_timeout.as_millis() as u64,
            ready_at_ms: None,
            restart: spec.restart,
            restarts_ms: vec![],
            restart_at_ms: None,
        };
        rec.attach(req.client, req.metadata.clone(), now_ms());
        self.store.write(guard, name, &rec)?;
        handshake.commit(&rec)?;
        self.store.journal(
            name,
            "start",
            &format!(
                "started pid {} (watcher {}) for client {}: {:?}",
                server.pid, watcher.pid, req.client.pid, rec.command
            ),
        );
        Ok(rec)
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
        self.store.journal(
            name,
            "detach",
            &format!("client {pid} detached (refcount {})", rec.clients.len()),
        );
        Ok(Status::of(&rec, None, now_ms()))
    }

    /// Settle and write a changed record, release the lock, wake the watcher.
    fn commit(&self, guard: Guard, name: &ServerName, rec: &mut Record) -> Result<()> {
        rec.settle(now_ms(), |id| id.is_alive());
        self.store.write(&guard, name, rec)?;
        drop(guard);
        poke(&self.store, name);
        Ok(())
    }

    /// Stop the server (SIGTERM, then SIGKILL after `timeout`) and wait.
    pub fn stop(&self, name: &ServerName, force: bool, timeout: Duration) -> Result<Status> {
        let result = self.request_stop(name, timeout, |rec| {
            if !force && !rec.clients.is_empty() {
                return Err(Error::InUse(name.to_string(), rec.clients.len()));
            }
            Ok("stopped on request".to_string())
        });
        self.logged(name, "stop", result)
    }

    /// SIGKILL the server's process group now, then clean up.
    pub fn kill(&self, name: &ServerName) -> Result<Status> {
        let result = self.request_stop(name, Duration::ZERO, |rec| {
            if let Some(fd) = rec.server.open() {
                signal_group(&fd, rec.server.pid, libc::SIGKILL)
                    .map_err(|e| Error::Other(format!("server '{name}': SIGKILL failed: {e}")))?;
            }
            Ok("killed on request".to_string())
        });
        self.logged(name, "kill", result)
    }

    fn request_stop(
        &self,
        name: &ServerName,
        timeout: Duration,
        act: impl FnOnce(&Record) -> Result<String>,
    ) -> Result<Status> {
        let guard = self.store.lock(name)?;
        let Some(mut rec) = self.supervised(&guard, name)? else {
            return Err(Error::NotRunning(name.to_string()));
        };
        if rec.stop.is_none() {
            let reason = act(&rec)?;
            rec.stop = Some(StopRequest {
                reason,
                timeout_ms: timeout.as_millis() as u64,
                requested_at_ms: now_ms(),
            });
            self.store.write(&guard, name, &rec)?;
            self.store.journal(name, "stop", "stop requested");
        }
        drop(guard);
        poke(&self.store, name);
        self.wait_gone(name, &rec)?;
        self.status(name)
    }

    /// A snapshot of one server. If its watcher died, this restores
    /// supervision (the only case in which a status query spawns a process).
    pub fn status(&self, name: &ServerName) -> Result<Status> {
        let now = now_ms();
        match self.store.read(name)? {
            None => Ok(Status::stopped(
                name.as_str(),
                self.store.read_last(name).as_ref(),
            )),
            Some(rec) if self.healthy(&rec) => {
                let mut view = rec;
                view.settle(now, |id| id.is_alive());
                Ok(Status::of(&view, self.store.read_last(name).as_ref(), now))
            }
            Some(_) => {
                let guard = self.store.lock(name)?;
                let rec = self.supervised(&guard, name)?;
                drop(guard);
                Ok(match rec {
                    Some(mut view) => {
                        view.settle(now, |id| id.is_alive());
                        Status::of(&view, self.store.read_last(name).as_ref(), now)
                    }
                    None => Status::stopped(name.as_str(), self.store.read_last(name).as_ref()),
                })
            }
        }
    }

    /// Every server with a record. A record that cannot be read is reported
    /// as an error for that name only, so one bad file hides nothing else.
    pub fn list(&self) -> Result<Vec<Result<Status>>> {
        Ok(self.store.names()?.iter().map(|n| self.status(n)).collect())
    }

    fn healthy(&self, rec: &Record) -> bool {
        (rec.server.is_alive() || rec.restart_at_ms.is_some())
            && rec.watcher.is_some_and(|w| w.is_alive())
    }

    /// Block until `name` has passed its readiness check. `progress` is
    /// called now and then with the elapsed time. Fails, with the reason and
    /// the log's last lines, if the server stops first (the watcher stops it
    /// when its readiness deadline passes).
    pub fn wait_ready(
        &self,
        name: &ServerName,
        mut progress: impl FnMut(Duration),
    ) -> Result<Status> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            let status = self.status(name)?;
            match status.state {
                State::Active | State::Grace => return Ok(status),
                State::Stopped => {
                    let last = self.store.read_last(name);
                    let reason = last
                        .as_ref()
                        .map_or("stopped".to_string(), |l| l.reason.clone());
                    let log = crate::logs::default_path(&self.store, name);
                    let log = status.log_file.as_ref().map(PathBuf::from).unwrap_or(log);
                    return Err(Error::DiedAtStart {
                        name: name.to_string(),
                        detail: format!("did not become ready: {reason}"),
                        log_tail: crate::logs::tail(&log, 10),
                    });
                }
                State::Starting | State::Stopping => {}
            }
            progress(started.elapsed());
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Read the record under the lock and repair what a crash left behind:
    /// a dead server's record is cleared; a live server whose watcher died
    /// gets a new watcher. Returns the record if a server is running.
    pub(crate) fn supervised(&self, guard: &Guard, name: &ServerName) -> Result<Option<Record>> {
        let Some(mut rec) = self.store.read(name)? else {
            return Ok(None);
        };
        let watcher_alive = rec.watcher.is_some_and(|w| w.is_alive());
        if watcher_alive {
            // Between a crash and its restart the server is legitimately dead.
            if !rec.server.is_alive() && rec.restart_at_ms.is_none() {
                // The watcher is about to clean up; report it as stopping.
                rec.stop.get_or_insert(StopRequest {
                    reason: "exited on its own".into(),
                    timeout_ms: 0,
                    requested_at_ms: now_ms(),
                });
            }
            return Ok(Some(rec));
        }
        if !rec.server.is_alive() {
            return self.clear_unsupervised(guard, name, &rec);
        }
        let Ok(exe) = self.exe() else {
            return Ok(Some(rec)); // cannot re-supervise from here; report as is
        };
        let launch = Launch {
            command: rec.command.clone(),
            env: rec.env.clone(),
            cwd: rec.cwd.clone(),
            log_file: rec.log_file.clone().unwrap_or_else(|| {
                crate::logs::default_path(&self.store, name)
                    .to_string_lossy()
                    .into_owned()
            }),
            ready: rec.ready.clone(),
            startup_check_ms: 0,
            adopt: Some(rec.server),
        };
        let handshake = spawn::watcher(&exe, self.store.dir(), name.as_str(), &launch)?;
        match handshake.hello.clone() {
            Hello::Ready { watcher, .. } => {
                rec.watcher = Some(watcher);
                rec.watcher_is_parent = false;
                self.store.write(guard, name, &rec)?;
                handshake.commit(&rec)?;
                self.store.journal(
                    name,
                    "recover",
                    &format!(
                        "watcher was gone; new watcher {} supervises pid {}",
                        watcher.pid, rec.server.pid
                    ),
                );
                Ok(Some(rec))
            }
            // It died while we were spawning its new watcher.
            _ => self.clear_unsupervised(guard, name, &rec),
        }
    }

    fn clear_unsupervised(
        &self,
        guard: &Guard,
        name: &ServerName,
        rec: &Record,
    ) -> Result<Option<Record>> {
        let reason = "exited while unsupervised (watcher was gone)";
        self.store
            .write_last(guard, name, &LastExit::of(rec, None, None, reason))?;
        self.store.remove(guard, name)?;
        self.store.journal(
            name,
            "recover",
            "cleared record of a dead server whose watcher was gone",
        );
        Ok(None)
    }

    /// Wait until the record of `seen`'s server is gone (its stop finished),
    /// or its watcher died (so the caller's next lock pass can recover).
    fn wait_gone(&self, name: &ServerName, seen: &Record) -> Result<()> {
        let budget = seen
            .stop
            .as_ref()
            .map_or(crate::record::DEFAULT_STOP_TIMEOUT, |s| {
                Duration::from_millis(s.timeout_ms)
            })
            + Duration::from_secs(10);
        let deadline = Instant::now() + budget;
        // Event-driven for the long part: the server's exit.
        if let Some(fd) = seen.server.open() {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut fds = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&fd),
                nix::poll::PollFlags::POLLIN,
            )];
            let ms =
                nix::poll::PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
                    .unwrap_or(nix::poll::PollTimeout::MAX);
            let _ = nix::poll::poll(&mut fds, ms);
        }
        // Then the watcher's cleanup, which takes a moment after the exit.
        let mut pause = Duration::from_micros(200);
        while Instant::now() < deadline {
            match self.store.read(name)? {
                Some(r) if r.server == seen.server => {
                    if !r.watcher.is_some_and(|w| w.is_alive()) {
                        return Ok(());
                    }
                }
                _ => return Ok(()),
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
        Err(Error::Timeout(
            name.to_string(),
            format!(
                "waiting {} for the server to stop",
                duration::format(budget)
            ),
        ))
    }

    fn exe(&self) -> Result<PathBuf> {
        self.watcher_exe.clone().ok_or_else(|| {
            Error::Other(
                "the sharedserver binary was not found (install it with `cargo install --path .`, or set the `binary` option)".into(),
            )
        })
    }
}
