//! The ready check as the watcher runs it: when the next probe is due, and
//! running one. What a passed or missed check means for the record is
//! decided by the record (`Record::check_ready_deadline`).
//!
//! A `cmd:` probe is a process the watcher starts and then watches like any
//! other, so however long it runs, stops, kills and client deaths are
//! handled meanwhile. It runs in the server's directory, with its
//! environment.

use crate::probe::{self, ReadySpec};
use crate::process::Handle;
use crate::record::{now_ms, Record};
use crate::spawn::Launch;
use std::process::Child;
use std::time::{Duration, Instant};

pub(super) struct Readiness {
    spec: Option<ReadySpec>,
    probe_at: Option<Instant>,
    interval: Option<Duration>,
    /// A probe is due; it runs after the tick releases the lock.
    due: bool,
    /// The `cmd:` probe running now, if any.
    running: Option<Running>,
}

/// A `cmd:` probe in flight, killed if it is still running at `until`.
struct Running {
    child: Child,
    handle: Handle,
    until: Instant,
}

impl Drop for Readiness {
    /// A watcher that leaves never leaves a probe behind.
    fn drop(&mut self) {
        self.cancel();
    }
}

impl Running {
    fn kill(self) {
        kill_group(self.child);
    }
}

/// Kill a probe's whole group and reap it. (Its leader is our unreaped
/// child, so the group id cannot have been reused.)
fn kill_group(mut child: Child) {
    // SAFETY: plain syscall on the group our unreaped child leads.
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
    let _ = child.wait();
}

/// What [`Readiness::check`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Check {
    /// Nothing changed in the record.
    Unchanged,
    /// The server is ready now (its log matched).
    Ready,
    /// The deadline passed: the record now holds a stop request.
    TimedOut,
}

impl Readiness {
    /// `spec` was validated before the server started, so it parses.
    pub(super) fn new(spec: Option<&str>) -> Readiness {
        Readiness {
            spec: spec.and_then(|r| ReadySpec::parse(r).ok()),
            probe_at: None,
            interval: None,
            due: false,
            running: None,
        }
    }

    /// A new process: it must pass its own check, from the first probe.
    pub(super) fn reset(&mut self) {
        self.cancel();
        self.probe_at = None;
        self.interval = None;
        self.due = false;
    }

    /// Kill a `cmd:` probe still running (the server is going away).
    pub(super) fn cancel(&mut self) {
        if let Some(running) = self.running.take() {
            running.kill();
        }
    }

    /// The running `cmd:` probe's pid: a child of ours that is no orphan.
    pub(super) fn probe_pid(&self) -> Option<u32> {
        self.running.as_ref().map(|r| r.child.id())
    }

    /// The running `cmd:` probe's handle, for the watcher to sleep on.
    pub(super) fn probe_handle(&self) -> Option<&Handle> {
        self.running.as_ref().map(|r| &r.handle)
    }

    /// Under the lock: record readiness (`log_matched`: the server's log
    /// matched a `log:` check), apply the deadline, or schedule the next
    /// probe. `running`: a server process exists (not in a backoff).
    pub(super) fn check(
        &mut self,
        rec: &mut Record,
        now: u64,
        running: bool,
        log_matched: bool,
    ) -> Check {
        if self.spec.is_none() {
            return Check::Unchanged;
        }
        if rec.ready_at_ms.is_some() || !running || rec.stop.is_some() {
            self.probe_at = None;
            return Check::Unchanged;
        }
        if log_matched {
            rec.ready_at_ms = Some(now);
            self.probe_at = None;
            return Check::Ready;
        }
        if rec.check_ready_deadline(now) {
            return Check::TimedOut;
        }
        // Probes run after the lock is released: a slow one must never hold
        // up other callers.
        if self.probe_at.is_none_or(|t| Instant::now() >= t) {
            self.due = true;
            let interval = probe::next_interval(self.interval);
            self.interval = Some(interval);
            self.probe_at = Some(Instant::now() + interval);
        }
        Check::Unchanged
    }

    /// How long until the next probe is due, or a running one runs out.
    pub(super) fn next_probe(&self) -> Option<Duration> {
        let at = match &self.running {
            Some(r) => Some(r.until),
            None => self.probe_at,
        };
        at.map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// Outside the lock: finish a `cmd:` probe that ended, or start the
    /// probe that `check` found due (a `cmd:` one only starts; others run
    /// here, bounded by the time left before `rec`'s readiness deadline).
    /// True if a probe passed.
    pub(super) fn probe(&mut self, rec: &Record, launch: &Launch) -> bool {
        if let Some(running) = &mut self.running {
            let passed = match running.child.try_wait() {
                Ok(Some(status)) => status.success(),
                Ok(None) if Instant::now() < running.until => return false,
                Ok(None) | Err(_) => false,
            };
            if let Some(running) = self.running.take() {
                running.kill(); // reaps it; kills what it left in its group
            }
            if passed {
                return true;
            }
            // Failed: the next one may be due already.
        }
        let Some(spec) = &self.spec else {
            return false;
        };
        if !std::mem::take(&mut self.due) {
            return false;
        }
        let left = Duration::from_millis(rec.ready_deadline_ms().saturating_sub(now_ms()));
        let Some(cmd) = spec.cmd() else {
            return spec.check(left);
        };
        let cwd = std::path::Path::new(&launch.cwd);
        let Ok(child) = probe::spawn_cmd(cmd, cwd, &launch.env) else {
            return false;
        };
        match Handle::child(&child) {
            Ok(handle) => {
                let until = Instant::now() + left;
                self.running = Some(Running {
                    child,
                    handle,
                    until,
                });
            }
            Err(_) => kill_group(child), // cannot watch it: do not run it
        }
        false
    }
}
