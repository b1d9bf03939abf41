//! The ready check as the watcher runs it: when the next probe is due, and
//! running one. What a passed or missed check means for the record is
//! decided by the record (`Record::check_ready_deadline`).

use crate::probe::{self, ReadySpec};
use crate::record::{now_ms, Record};
use std::time::{Duration, Instant};

pub(super) struct Readiness {
    spec: Option<ReadySpec>,
    probe_at: Option<Instant>,
    interval: Option<Duration>,
    /// A probe is due; it runs after the tick releases the lock.
    due: bool,
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
        }
    }

    /// A new process: it must pass its own check, from the first probe.
    pub(super) fn reset(&mut self) {
        self.probe_at = None;
        self.interval = None;
        self.due = false;
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

    /// How long until the next probe, if one is scheduled.
    pub(super) fn next_probe(&self) -> Option<Duration> {
        self.probe_at
            .map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// Run the probe that `check` found due, if any, bounded by the time
    /// left before `rec`'s readiness deadline. True if it passed.
    pub(super) fn probe_if_due(&mut self, rec: &Record) -> bool {
        let Some(spec) = &self.spec else {
            return false;
        };
        if !std::mem::take(&mut self.due) {
            return false;
        }
        let left = Duration::from_millis(rec.ready_deadline_ms().saturating_sub(now_ms()));
        spec.check(left)
    }
}
