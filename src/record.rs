//! The on-disk record of one running server, and the state machine that
//! every actor (CLI, native module, watcher) applies to it under the lock.
//!
//! A record exists exactly while a server process exists. Its state is
//! derived, never stored twice: a pending stop request means `stopping`,
//! no live clients means `grace`, otherwise `active`.

pub use crate::exit::{ExitKind, Termination};
use crate::process::ProcessId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Marks a file as ours; a JSON file without it is foreign and is left alone.
pub const FORMAT: &str = "sharedserver";
/// Bump when the layout changes incompatibly; older binaries then refuse it.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub format: String,
    pub version: u32,
    pub name: String,
    pub server: ProcessId,
    /// The process that supervises the server; None while it is being spawned.
    pub watcher: Option<ProcessId>,
    /// True when the watcher spawned the server (and can read its exit code).
    pub watcher_is_parent: bool,
    pub command: Vec<String>,
    pub cwd: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub log_file: Option<String>,
    pub grace_period_ms: u64,
    pub started_at_ms: u64,
    pub clients: Vec<Client>,
    /// Set while no client is attached: when the grace period runs out.
    pub grace_until_ms: Option<u64>,
    pub stop: Option<StopRequest>,
    /// Readiness spec (see `probe.rs`); the server is `starting` until it passes.
    #[serde(default)]
    pub ready: Option<String>,
    #[serde(default)]
    pub ready_timeout_ms: u64,
    #[serde(default)]
    pub ready_at_ms: Option<u64>,
    #[serde(default)]
    pub restart: Option<RestartPolicy>,
    /// When each automatic restart happened (pruned to the policy window).
    #[serde(default)]
    pub restarts_ms: Vec<u64>,
    /// Set while waiting out the backoff before the next restart.
    #[serde(default)]
    pub restart_at_ms: Option<u64>,
    /// The exit before this one (a crash it restarted from, or the previous
    /// server's end), kept here so a status needs to read only one file.
    #[serde(default)]
    pub last_exit: Option<LastExit>,
    /// How the watcher learns of exits (`pidfd` or `portable`); None in
    /// records written before the field existed.
    #[serde(default)]
    pub backend: Option<crate::process::Backend>,
    /// The TCP port found or checked at start (`port` option), given to
    /// the server as `$PORT`.
    #[serde(default)]
    pub port: Option<u16>,
}

/// `--restart on-failure[:MAX]`: restart after a non-zero exit or a signal,
/// with exponential backoff, giving up after MAX restarts within the window.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct RestartPolicy {
    pub max: u32,
    pub window_ms: u64,
}

impl RestartPolicy {
    pub const DEFAULT_MAX: u32 = 5;
    pub const WINDOW: Duration = Duration::from_secs(60);

    /// `no`, `on-failure` or `on-failure:MAX`.
    pub fn parse(text: &str) -> Result<Option<RestartPolicy>, String> {
        let policy = |max| {
            Some(RestartPolicy {
                max,
                window_ms: Self::WINDOW.as_millis() as u64,
            })
        };
        match text.split_once(':') {
            None if text == "no" || text == "never" => Ok(None),
            None if text == "on-failure" => Ok(policy(Self::DEFAULT_MAX)),
            Some(("on-failure", max)) => match max.parse::<u32>() {
                Ok(n) if n > 0 => Ok(policy(n)),
                _ => Err(format!("invalid restart limit {max:?} in {text:?} (a positive number, e.g. on-failure:5)")),
            },
            _ => Err(format!("invalid restart policy {text:?} (use no, on-failure or on-failure:MAX)")),
        }
    }

    /// Backoff before restart number `n` (0-based): 100 ms doubling, 30 s cap.
    pub fn backoff(n: usize) -> Duration {
        Duration::from_millis(100u64.saturating_mul(1 << n.min(9))).min(Duration::from_secs(30))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Client {
    #[serde(flatten)]
    pub id: ProcessId,
    pub attached_at_ms: u64,
    pub metadata: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StopRequest {
    /// What asked for the stop: decisions match on this, never on `reason`.
    /// (Records written before kinds existed read as a plain stop.)
    #[serde(default = "stopped_kind")]
    pub kind: ExitKind,
    pub reason: String,
    pub timeout_ms: u64,
    pub requested_at_ms: u64,
}

fn stopped_kind() -> ExitKind {
    ExitKind::Stopped
}

fn exited_kind() -> ExitKind {
    ExitKind::Exited
}

impl StopRequest {
    pub fn new(kind: ExitKind, reason: impl Into<String>, timeout: Duration, now_ms: u64) -> Self {
        StopRequest {
            kind,
            reason: reason.into(),
            timeout_ms: timeout.as_millis() as u64,
            requested_at_ms: now_ms,
        }
    }
}

/// What happened to the last server under a name; kept after its record goes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LastExit {
    pub format: String,
    pub version: u32,
    pub name: String,
    pub pid: u32,
    pub command: Vec<String>,
    /// Exit code or signal (`code`, `signal` in JSON), when we could see it.
    #[serde(flatten)]
    pub how: Termination,
    /// Why it ended: decisions match on this, never on `reason`.
    #[serde(default = "exited_kind")]
    pub kind: ExitKind,
    pub reason: String,
    pub at_ms: u64,
    /// Where its output went, so the log can be found after it stopped.
    #[serde(default)]
    pub log_file: Option<String>,
    /// The log's last lines, kept for a failure (the next start may
    /// overwrite the log).
    #[serde(default)]
    pub log_tail: Option<String>,
}

impl LastExit {
    /// How the server of `rec` ended. A failure keeps its log's last lines.
    pub fn of(rec: &Record, how: Termination, kind: ExitKind, reason: &str) -> LastExit {
        let log_tail = rec
            .log_file
            .as_deref()
            .filter(|_| kind.is_failure())
            .and_then(|log| crate::logs::tail(std::path::Path::new(log), 10));
        LastExit {
            command: rec.command.clone(),
            how,
            log_file: rec.log_file.clone(),
            log_tail,
            ..LastExit::unrecorded(&rec.name, rec.server.pid, kind, reason)
        }
    }

    /// An end known only by name and pid (its record was lost).
    pub fn unrecorded(name: &str, pid: u32, kind: ExitKind, reason: &str) -> LastExit {
        LastExit {
            format: FORMAT.into(),
            version: VERSION,
            name: name.to_string(),
            pid,
            command: vec![],
            how: Termination::Unknown,
            kind,
            reason: reason.to_string(),
            at_ms: now_ms(),
            log_file: None,
            log_tail: None,
        }
    }
}

/// What [`Record::on_exit`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum AfterExit {
    /// Supervision ends: record the exit as `kind` and remove the record.
    Finish { kind: ExitKind, reason: String },
    /// Restart after `backoff`; `last` is the exit to record meanwhile.
    Restart { last: LastExit, backoff: Duration },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Starting,
    Active,
    Grace,
    Stopping,
    Stopped,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Active => "active",
            State::Grace => "grace",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
        }
    }
}

pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

impl Record {
    pub fn state(&self) -> State {
        if self.stop.is_some() {
            State::Stopping
        } else if self.restart_at_ms.is_some()
            || (self.ready.is_some() && self.ready_at_ms.is_none())
        {
            State::Starting
        } else if self.clients.is_empty() {
            State::Grace
        } else {
            State::Active
        }
    }

    pub fn has_client(&self, pid: u32) -> bool {
        self.clients.iter().any(|c| c.id.pid == pid)
    }

    /// Bring the record up to date at time `now`: drop clients that are no
    /// longer the process we recorded, start or cancel the grace countdown,
    /// and turn an expired grace period into a stop request.
    /// Returns true when anything changed (so idle settles write nothing).
    pub fn settle(&mut self, now_ms: u64, alive: impl Fn(&ProcessId) -> bool) -> bool {
        let before = self.clone();
        self.clients.retain(|c| alive(&c.id));
        if self.stop.is_none() {
            if !self.clients.is_empty() {
                self.grace_until_ms = None;
            } else {
                let until = *self
                    .grace_until_ms
                    .get_or_insert(now_ms.saturating_add(self.grace_period_ms));
                if now_ms >= until {
                    let reason = if self.grace_period_ms == 0 {
                        "last client left"
                    } else {
                        "grace period expired"
                    };
                    self.stop = Some(StopRequest::new(
                        ExitKind::GraceExpired,
                        reason,
                        DEFAULT_STOP_TIMEOUT,
                        now_ms,
                    ));
                }
            }
        }
        *self != before
    }

    /// The server exited with `how` at `now_ms`: decide whether it is
    /// restarted (on request, or by its restart policy after a failure) or
    /// its supervision ends. A restart is applied to the record at once (the
    /// exit recorded in `last_exit`, the restart scheduled); the caller only
    /// spawns the process when `restart_at_ms` comes (see [`Record::restarted`]).
    pub fn on_exit(&mut self, how: Termination, now_ms: u64) -> AfterExit {
        if let Some(stop) = &self.stop {
            if stop.kind != ExitKind::Restarted {
                return AfterExit::Finish {
                    kind: stop.kind,
                    reason: stop.reason.clone(),
                };
            }
            // A restart on request: not a crash, so not counted against
            // the policy, and at once.
            let last = LastExit::of(self, how, ExitKind::Restarted, &stop.reason);
            self.stop = None;
            return self.schedule_restart(last, now_ms, Duration::ZERO);
        }
        let before_ready = self.ready.is_some() && self.ready_at_ms.is_none();
        let policy = self.restart.filter(|_| how.failed());
        let Some(policy) = policy else {
            return if before_ready && self.restart.is_none() {
                AfterExit::Finish {
                    kind: ExitKind::ExitedBeforeReady,
                    reason: "exited before it was ready".into(),
                }
            } else {
                AfterExit::Finish {
                    kind: ExitKind::Exited,
                    reason: "exited on its own".into(),
                }
            };
        };
        self.restarts_ms
            .retain(|t| now_ms.saturating_sub(*t) < policy.window_ms);
        if self.restarts_ms.len() >= policy.max as usize {
            return AfterExit::Finish {
                kind: ExitKind::GaveUp,
                reason: format!(
                    "gave up after {} restarts within {}",
                    self.restarts_ms.len(),
                    crate::duration::format(Duration::from_millis(policy.window_ms))
                ),
            };
        }
        let backoff = RestartPolicy::backoff(self.restarts_ms.len());
        self.restarts_ms.push(now_ms);
        let last = LastExit::of(
            self,
            how,
            ExitKind::CrashedRestarting,
            "crashed; restarting",
        );
        self.schedule_restart(last, now_ms, backoff)
    }

    fn schedule_restart(&mut self, last: LastExit, now_ms: u64, backoff: Duration) -> AfterExit {
        self.last_exit = Some(last.clone());
        self.restart_at_ms = Some(now_ms.saturating_add(backoff.as_millis() as u64));
        AfterExit::Restart { last, backoff }
    }

    /// A scheduled restart is due, and nothing stands in its way.
    pub fn restart_due(&self, now_ms: u64) -> bool {
        self.stop.is_none() && self.restart_at_ms.is_some_and(|at| now_ms >= at)
    }

    /// The restart ran: `server` is the new process, started at `now_ms`.
    pub fn restarted(&mut self, server: ProcessId, now_ms: u64) {
        self.server = server;
        self.watcher_is_parent = true; // the watcher spawned it
        self.started_at_ms = now_ms;
        self.restart_at_ms = None;
        self.ready_at_ms = None;
    }

    /// The readiness deadline: when it passes before the server is ready,
    /// the server is stopped. Returns true if that stop was requested now.
    pub fn check_ready_deadline(&mut self, now_ms: u64) -> bool {
        let waiting = self.ready.is_some()
            && self.ready_at_ms.is_none()
            && self.restart_at_ms.is_none()
            && self.stop.is_none();
        if !waiting || now_ms < self.ready_deadline_ms() {
            return false;
        }
        self.stop = Some(StopRequest::new(
            ExitKind::NotReady,
            format!(
                "not ready within {}: waiting for {}",
                crate::duration::format(Duration::from_millis(self.ready_timeout_ms)),
                self.ready.as_deref().unwrap_or("?")
            ),
            DEFAULT_STOP_TIMEOUT,
            now_ms,
        ));
        true
    }

    /// When the current process must have passed its readiness check.
    pub fn ready_deadline_ms(&self) -> u64 {
        self.started_at_ms.saturating_add(self.ready_timeout_ms)
    }

    /// Add a client; attaching the same process twice counts once.
    pub fn attach(&mut self, id: ProcessId, metadata: Option<String>, now_ms: u64) -> bool {
        if let Some(existing) = self.clients.iter_mut().find(|c| c.id == id) {
            if metadata.is_some() {
                existing.metadata = metadata;
            }
            return false;
        }
        // A different process with the same pid is a recycled pid: replace it.
        self.clients.retain(|c| c.id.pid != id.pid);
        self.clients.push(Client {
            id,
            attached_at_ms: now_ms,
            metadata,
        });
        self.grace_until_ms = None;
        true
    }

    pub fn detach(&mut self, pid: u32) -> bool {
        let before = self.clients.len();
        self.clients.retain(|c| c.id.pid != pid);
        self.clients.len() != before
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn rfc3339(ms: u64) -> String {
    // humantime cannot format years past 9999; a record claiming such a
    // time is wrong, but must not make a status query panic.
    const LAST_MS: u64 = 253_402_300_799_000; // 9999-12-31T23:59:59Z
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.min(LAST_MS));
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(grace_ms: u64) -> Record {
        Record {
            format: FORMAT.into(),
            version: VERSION,
            name: "t".into(),
            server: ProcessId {
                pid: 10,
                start_time: 1,
            },
            watcher: None,
            watcher_is_parent: true,
            command: vec!["true".into()],
            cwd: "/".into(),
            env: BTreeMap::new(),
            log_file: None,
            grace_period_ms: grace_ms,
            started_at_ms: 0,
            clients: vec![],
            grace_until_ms: None,
            stop: None,
            ready: None,
            ready_timeout_ms: 0,
            ready_at_ms: None,
            restart: None,
            restarts_ms: vec![],
            restart_at_ms: None,
            last_exit: None,
            backend: None,
            port: None,
        }
    }
    const A: ProcessId = ProcessId {
        pid: 1,
        start_time: 5,
    };

    #[test]
    fn last_client_leaving_starts_grace_then_stop() {
        let mut r = rec(1000);
        r.attach(A, None, 0);
        assert!(!r.settle(10, |_| true));
        assert_eq!(r.state(), State::Active);
        assert!(r.settle(20, |_| false), "dead client pruned");
        assert_eq!((r.state(), r.grace_until_ms), (State::Grace, Some(1020)));
        assert!(!r.settle(500, |_| false), "idle settle changes nothing");
        assert!(r.settle(1020, |_| false));
        assert_eq!(r.state(), State::Stopping);
    }

    #[test]
    fn attach_during_grace_cancels_it_and_counts_once() {
        let mut r = rec(1000);
        r.settle(0, |_| true);
        assert_eq!(r.state(), State::Grace);
        assert!(r.attach(A, None, 5));
        assert!(!r.attach(A, None, 6));
        assert_eq!((r.clients.len(), r.grace_until_ms), (1, None));
    }

    fn finish_kind(a: AfterExit) -> ExitKind {
        match a {
            AfterExit::Finish { kind, .. } => kind,
            other => panic!("expected a finish, got {other:?}"),
        }
    }

    #[test]
    fn an_exit_without_a_policy_finishes_and_says_why() {
        let mut r = rec(0);
        assert_eq!(
            finish_kind(r.on_exit(Termination::Code(3), 5)),
            ExitKind::Exited
        );
        r.ready = Some("tcp://127.0.0.1:1".into());
        assert_eq!(
            finish_kind(r.on_exit(Termination::Code(0), 5)),
            ExitKind::ExitedBeforeReady
        );
        r.stop = Some(StopRequest::new(ExitKind::Killed, "k", Duration::ZERO, 1));
        assert_eq!(
            finish_kind(r.on_exit(Termination::Signal(9), 5)),
            ExitKind::Killed
        );
    }

    #[test]
    fn failures_restart_with_backoff_until_the_policy_gives_up() {
        let mut r = rec(0);
        r.restart = Some(RestartPolicy {
            max: 2,
            window_ms: 1000,
        });
        assert_eq!(
            finish_kind(r.on_exit(Termination::Code(0), 0)),
            ExitKind::Exited,
            "a clean exit is not a failure"
        );
        let AfterExit::Restart { last, backoff } = r.on_exit(Termination::Code(1), 10) else {
            panic!("first failure restarts");
        };
        assert_eq!(
            (last.kind, backoff),
            (ExitKind::CrashedRestarting, RestartPolicy::backoff(0))
        );
        assert_eq!(r.state(), State::Starting);
        assert!(!r.restart_due(10 + 99) && r.restart_due(10 + 100));
        r.restarted(
            ProcessId {
                pid: 11,
                start_time: 2,
            },
            110,
        );
        assert_eq!((r.restart_at_ms, r.server.pid), (None, 11));
        assert!(matches!(
            r.on_exit(Termination::Signal(9), 120),
            AfterExit::Restart { .. }
        ));
        r.restarted(
            ProcessId {
                pid: 12,
                start_time: 3,
            },
            400,
        );
        assert_eq!(
            finish_kind(r.on_exit(Termination::Code(1), 500)),
            ExitKind::GaveUp
        );
        // Outside the window the old restarts no longer count.
        assert!(matches!(
            r.on_exit(Termination::Code(1), 5000),
            AfterExit::Restart { .. }
        ));
    }

    #[test]
    fn a_restart_on_request_keeps_the_clients_and_is_not_a_crash() {
        let mut r = rec(0);
        r.restart = Some(RestartPolicy {
            max: 1,
            window_ms: 1000,
        });
        r.attach(A, Some("x".into()), 0);
        r.stop = Some(StopRequest::new(
            ExitKind::Restarted,
            "restarted on request",
            Duration::ZERO,
            1,
        ));
        let AfterExit::Restart { last, backoff } = r.on_exit(Termination::Signal(15), 2) else {
            panic!("a requested restart restarts");
        };
        assert_eq!((last.kind, backoff), (ExitKind::Restarted, Duration::ZERO));
        assert_eq!(
            (r.stop.as_ref(), r.restarts_ms.len(), r.clients.len()),
            (None, 0, 1)
        );
        assert!(r.restart_due(2));
    }

    #[test]
    fn the_ready_deadline_requests_a_stop_once() {
        let mut r = rec(0);
        r.attach(A, None, 0);
        assert!(
            !r.check_ready_deadline(1_000_000),
            "no ready check, no deadline"
        );
        r.ready = Some("log:up".into());
        r.ready_timeout_ms = 100;
        assert!(!r.check_ready_deadline(99));
        assert!(r.check_ready_deadline(100));
        assert_eq!(r.stop.as_ref().map(|s| s.kind), Some(ExitKind::NotReady));
        assert!(!r.check_ready_deadline(200), "already stopping");
    }

    #[test]
    fn recycled_pid_replaces_the_stale_client() {
        let mut r = rec(0);
        r.attach(A, None, 0);
        r.attach(
            ProcessId {
                pid: 1,
                start_time: 6,
            },
            None,
            1,
        );
        assert_eq!(r.clients.len(), 1);
        assert_eq!(r.clients[0].id.start_time, 6);
    }
}
