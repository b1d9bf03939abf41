//! The on-disk record of one running server, and the state machine that
//! every actor (CLI, native module, watcher) applies to it under the lock.
//!
//! A record exists exactly while a server process exists. Its state is
//! derived, never stored twice: a pending stop request means `stopping`,
//! no live clients means `grace`, otherwise `active`.

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
    pub reason: String,
    pub timeout_ms: u64,
    pub requested_at_ms: u64,
}

/// What happened to the last server under a name; kept after its record goes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LastExit {
    pub format: String,
    pub version: u32,
    pub name: String,
    pub pid: u32,
    pub command: Vec<String>,
    /// Exit code, when the server exited normally and we could see it.
    pub code: Option<i32>,
    /// Terminating signal, when it was killed by one.
    pub signal: Option<i32>,
    pub reason: String,
    pub at_ms: u64,
    /// Where its output went, so the log can be found after it stopped.
    #[serde(default)]
    pub log_file: Option<String>,
}

impl LastExit {
    /// How the server of `rec` ended.
    pub fn of(rec: &Record, code: Option<i32>, signal: Option<i32>, reason: &str) -> LastExit {
        LastExit {
            command: rec.command.clone(),
            code,
            signal,
            log_file: rec.log_file.clone(),
            ..LastExit::unrecorded(&rec.name, rec.server.pid, reason)
        }
    }

    /// An end known only by name and pid (its record was lost).
    pub fn unrecorded(name: &str, pid: u32, reason: &str) -> LastExit {
        LastExit {
            format: FORMAT.into(),
            version: VERSION,
            name: name.to_string(),
            pid,
            command: vec![],
            code: None,
            signal: None,
            reason: reason.to_string(),
            at_ms: now_ms(),
            log_file: None,
        }
    }
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
                    self.stop = Some(StopRequest {
                        reason: if self.grace_period_ms == 0 {
                            "last client left".to_string()
                        } else {
                            "grace period expired".to_string()
                        },
                        timeout_ms: DEFAULT_STOP_TIMEOUT.as_millis() as u64,
                        requested_at_ms: now_ms,
                    });
                }
            }
        }
        *self != before
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
