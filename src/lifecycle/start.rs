//! Starting a server: the spec, and the start itself (under the lock).

use super::{AttachRequest, Lifecycle};
use crate::error::{Error, Result};
use crate::port::PortSpec;
use crate::record::{
    now_ms, ExitKind, LastExit, Record, RestartPolicy, Termination, FORMAT, VERSION,
};
use crate::spawn::{self, Hello, Launch};
use crate::store::Guard;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

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
    /// success (catches servers that exit at once).
    pub startup_check: StartupCheck,
    /// A port to find or check at start (`${PORT}` in command, env and
    /// ready is replaced by it).
    pub port: Option<PortSpec>,
}

/// The start-up check: `D` (until the server waits idle, at most D) or
/// `fixed:D` (all of D). Zero: return on spawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartupCheck {
    pub window: Duration,
    /// Wait out the whole window even once the server waits idle: for
    /// servers that wait on the network, a timer or another process before
    /// they fail.
    pub fixed: bool,
}

impl Default for StartupCheck {
    fn default() -> StartupCheck {
        StartupCheck::DEFAULT
    }
}

impl StartupCheck {
    /// Until idle, at most 50 ms.
    pub const DEFAULT: StartupCheck = StartupCheck {
        window: Duration::from_millis(50),
        fixed: false,
    };

    /// `D` or `fixed:D`, D as `duration::parse` reads it.
    pub fn parse(text: &str) -> Result<StartupCheck> {
        let (fixed, d) = match text.trim().strip_prefix("fixed:") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let window = crate::duration::parse(d).map_err(|e| match e {
            Error::BadDuration(_, why) => Error::BadDuration(
                text.to_string(),
                format!("{why}; expected D or fixed:D, such as 50ms or fixed:2s"),
            ),
            other => other,
        })?;
        Ok(StartupCheck { window, fixed })
    }
}

/// Default for `--ready-timeout`.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

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
            startup_check: StartupCheck::DEFAULT,
            port: None,
        }
    }

    /// The spec with `port` in place: `$PORT` set, and `${PORT}` replaced
    /// in the argv, the env values and the ready check.
    pub fn with_port(&self, port: u16) -> StartSpec {
        let sub = |t: &String| crate::port::substitute(t, port);
        let mut env: BTreeMap<String, String> =
            self.env.iter().map(|(k, v)| (k.clone(), sub(v))).collect();
        env.insert(crate::port::VAR.to_string(), port.to_string());
        StartSpec {
            command: self.command.iter().map(sub).collect(),
            env,
            ready: self.ready.as_ref().map(sub),
            ..self.clone()
        }
    }
}

/// One option in which a running server differs from the spec of a client
/// that joined it. The running server's value is what counts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "option")]
pub enum Difference {
    Command {
        running: Vec<String>,
    },
    Cwd {
        running: String,
    },
    /// The variables whose values differ (or that only one side sets).
    Env {
        names: Vec<String>,
    },
    GracePeriod {
        running: Duration,
    },
}

impl Difference {
    fn describe(&self) -> String {
        match self {
            Difference::Command { running } => {
                format!("command ({})", crate::status::shell_words(running))
            }
            Difference::Cwd { running } => format!("working directory ({running})"),
            Difference::Env { names } => format!("environment ({})", names.join(", ")),
            Difference::GracePeriod { running } => {
                format!("grace period ({})", crate::duration::format(*running))
            }
        }
    }

    /// The one-line warning for a client that joined `name` anyway, shown
    /// by the CLI and by Neovim alike. Short, so that Neovim shows it on
    /// one line, without a hit-enter prompt at start-up.
    pub fn warning(name: &str, differences: &[Difference]) -> Option<String> {
        if differences.is_empty() {
            return None;
        }
        let what: Vec<String> = differences.iter().map(Difference::describe).collect();
        Some(format!(
            "'{name}' already runs with another {}; joined it as it runs, with its own options",
            what.join(", ")
        ))
    }
}

impl StartSpec {
    /// How the running server `rec` differs from this spec.
    pub fn differences(&self, rec: &Record) -> Vec<Difference> {
        // With its port in place, as the running server got it.
        let with_port;
        let this = match rec.port {
            Some(p) => {
                with_port = self.with_port(p);
                &with_port
            }
            None => self,
        };
        this.differences_as_given(rec)
    }

    fn differences_as_given(&self, rec: &Record) -> Vec<Difference> {
        let mut out = Vec::new();
        if self.command != rec.command {
            out.push(Difference::Command {
                running: rec.command.clone(),
            });
        }
        let cwd =
            crate::options::absolute(std::path::Path::new(&rec.cwd), std::path::Path::new("/"));
        if self.cwd != cwd {
            out.push(Difference::Cwd {
                running: cwd.to_string_lossy().into_owned(),
            });
        }
        let names: Vec<String> = self
            .env
            .keys()
            .chain(rec.env.keys())
            .filter(|k| self.env.get(*k) != rec.env.get(*k))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !names.is_empty() {
            out.push(Difference::Env { names });
        }
        let running = Duration::from_millis(rec.grace_period_ms);
        if self.grace_period != running {
            out.push(Difference::GracePeriod { running });
        }
        out
    }
}

impl Lifecycle {
    pub(super) fn start_locked(
        &self,
        guard: &Guard,
        req: &AttachRequest,
        spec: &StartSpec,
    ) -> Result<Record> {
        let name = &req.name;
        if spec.command.is_empty() || spec.command[0].is_empty() {
            return Err(Error::NoCommand(name.to_string()));
        }
        // Found (or checked) under the name's lock, just before the spawn.
        let port = match spec.port {
            Some(p) => Some(
                p.claim()
                    .map_err(|why| Error::Port(name.to_string(), why))?,
            ),
            None => None,
        };
        let with_port;
        let spec = match port {
            Some(p) => {
                with_port = spec.with_port(p);
                &with_port
            }
            None => spec,
        };
        if let Some(ready) = &spec.ready {
            crate::probe::ReadySpec::parse(ready)?;
        }
        let log_file = crate::logs::path_for(&self.store, name, spec.log_file.as_deref());
        // A log that cannot be written fails the start here, with the path
        // and the reason, instead of losing the output in silence.
        crate::logs::prepare(&self.store, &log_file)?;
        // Where this run's output begins: a failure shows that, not the
        // lines an earlier server of the name left in the same log.
        let log_start = std::fs::metadata(&log_file).map_or(0, |m| m.len());
        let launch = Launch {
            command: spec.command.clone(),
            env: spec.env.clone(),
            cwd: spec.cwd.to_string_lossy().into_owned(),
            log_file: log_file.to_string_lossy().into_owned(),
            ready: spec.ready.clone(),
            startup_check_ms: spec.startup_check.window.as_millis() as u64,
            startup_check_fixed: spec.startup_check.fixed,
            adopt: None,
        };
        let exe = self.exe()?;
        let handshake = spawn::watcher(&exe, self.store.dir(), name.as_str(), &launch)?;
        let (watcher, server, started_at_ms, backend) = match handshake.hello.clone() {
            Hello::Ready {
                watcher,
                server,
                started_at_ms,
                backend,
            } => (watcher, server, started_at_ms, backend),
            Hello::SpawnFailed { message } => {
                return Err(Error::CommandFailed(name.to_string(), message));
            }
            Hello::DiedAtStart {
                pid,
                how,
                left_behind,
            } => {
                let (kind, detail) = if left_behind.is_empty() {
                    (ExitKind::ExitedAtStart, String::new())
                } else {
                    let why = crate::exit::daemonized_reason(&left_behind);
                    (ExitKind::Daemonized, why)
                };
                let detail = if !detail.is_empty() {
                    detail
                } else {
                    match how {
                    Termination::Code(0) => "exited at once with code 0 (a server that daemonizes must be told to stay in the foreground)".to_string(),
                    Termination::Code(c) => format!("exited at once with code {c}"),
                    Termination::Signal(s) => format!("was killed at once by signal {s}"),
                    Termination::Unknown => "exited at once".to_string(),
                    }
                };
                let log_tail = crate::logs::tail_since(&log_file, 10, log_start);
                // Leave a trace for `info`, health and the float: the
                // server never had a record, so this is all that is left.
                let last = LastExit {
                    command: spec.command.clone(),
                    how,
                    log_file: Some(launch.log_file.clone()),
                    log_tail: log_tail.clone(),
                    ..LastExit::unrecorded(name.as_str(), pid, kind, &detail)
                };
                if let Err(e) = self.store.write_last(guard, name, &last) {
                    self.store
                        .journal(name, "start", &format!("cannot record the exit: {e}"));
                }
                return Err(Error::DiedAtStart {
                    name: name.to_string(),
                    detail,
                    log_tail,
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
            last_exit: self.store.read_last(name),
            backend,
            port,
        };
        rec.attach(req.client, req.metadata.clone(), now_ms());
        self.store.write(guard, name, &rec)?;
        if let Err(e) = handshake.commit(&rec) {
            // The watcher stops the server it cannot supervise: forget it.
            let _ = self.store.remove(guard, name);
            return Err(e);
        }
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
}
