//! The supervision loop: one tick under the lock per wake-up.

use super::clients::Clients;
use super::orphans;
use super::readiness::{Check, Readiness};
use super::server::{spawn_server, stop_left_behind, terminate, Server};
use super::wake::Wake;
use crate::error::Result;
use crate::logs::Pump;
use crate::name::ServerName;
use crate::process::{poll_timeout, ProcessId, POLL_INTERVAL};
use crate::record::{
    now_ms, AfterExit, ExitKind, LastExit, Record, StopRequest, Termination, DEFAULT_STOP_TIMEOUT,
};
use crate::spawn::Launch;
use crate::store::{Guard, Store};
use nix::poll::{poll, PollFd, PollFlags};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// How soon to retry a record write that failed.
const WRITE_RETRY: Duration = Duration::from_secs(1);

pub(super) struct Watcher<'a> {
    store: &'a Store,
    name: &'a ServerName,
    me: ProcessId,
    launch: Launch,
    ready: Readiness,
    /// None while waiting out a restart backoff.
    server: Option<Server>,
    wake: Wake,
    pump: Pump,
    clients: Clients,
    /// The last record we saw and wrote: used to restore a damaged record.
    known: Record,
    /// How the server ended when we stopped it, for the next tick to record.
    stopped: Option<Termination>,
}

/// What a tick decided to do after releasing the lock.
enum Next {
    Sleep(Option<Duration>),
    Stop(StopRequest),
    Exit,
}

impl<'a> Watcher<'a> {
    pub(super) fn new(
        store: &'a Store,
        name: &'a ServerName,
        launch: Launch,
        server: Server,
        wake: Wake,
        pump: Pump,
        known: Record,
    ) -> Self {
        let ready = Readiness::new(launch.ready.as_deref());
        Watcher {
            store,
            name,
            me: ProcessId::current(),
            launch,
            ready,
            server: Some(server),
            wake,
            pump,
            clients: Clients::new(),
            known,
            stopped: None,
        }
    }

    pub(super) fn run(mut self) -> Result<()> {
        loop {
            self.pump.drain();
            orphans::reap(&self.own_children());
            let next = match self.tick() {
                Ok(next) => next,
                Err(e) if !self.store.is_current() => {
                    // The lock directory was removed or replaced (a tmp
                    // cleaner, a logout). Nobody can reach this server by its
                    // name any more, and the next `use` would start a second
                    // one beside it: stop it and leave.
                    let why = format!("its lock directory is gone ({e})");
                    let request =
                        StopRequest::new(ExitKind::Orphaned, why, DEFAULT_STOP_TIMEOUT, now_ms());
                    self.carry_out(&request);
                    return Ok(());
                }
                Err(e) => {
                    // Never give up supervision over a transient failure
                    // (descriptors exhausted, a lock file removed by hand).
                    // Sleep the whole interval: the event that woke this tick
                    // (a client's death, the server's exit) is still pending,
                    // so waiting for events would return at once, a busy loop.
                    self.journal(&format!("tick failed ({e}); retrying in 1s"));
                    std::thread::sleep(WRITE_RETRY);
                    continue;
                }
            };
            match next {
                Next::Exit => return Ok(()),
                Next::Stop(request) => self.carry_out(&request),
                Next::Sleep(timeout) => {
                    if self.probe() {
                        continue;
                    }
                    // A probe started or ended just now moves the deadline.
                    let probe = self.ready.next_probe();
                    self.sleep(timeout.into_iter().chain(probe).min())
                }
            }
        }
    }

    fn journal(&self, line: &str) {
        self.store.journal(self.name, "watcher", line);
    }

    /// The children we spawned ourselves (their own code reaps them).
    fn own_children(&self) -> Vec<u32> {
        let server = self.server.as_ref().map(|s| s.id.pid);
        server.into_iter().chain(self.ready.probe_pid()).collect()
    }

    fn tick(&mut self) -> Result<Next> {
        let guard = self.store.lock(self.name)?;
        let Some((mut rec, damage)) = self.read_own()? else {
            return Ok(Next::Exit);
        };
        // A damaged record is rewritten below; only then is it journaled as
        // restored, so a reader who sees that line also sees the record.
        let mut dirty = damage.is_some();
        let now = now_ms();
        // The server ended: by itself, or by the stop we just carried out.
        // (A stop during a restart backoff has no process left to end.)
        let ended = match self.server.as_mut() {
            Some(server) if server.exited() => Some(server.reap()),
            Some(_) => None,
            None => self
                .stopped
                .take()
                .or(rec.stop.is_some().then_some(Termination::Unknown)),
        };
        if let Some(how) = ended {
            // Killed by `admin kill` past a stuck lock holder: the request it
            // could not write. (Only a SIGKILL: a flag left by a kill that
            // failed must not relabel some later exit.)
            if self.wake.take_killed()
                && how == Termination::Signal(libc::SIGKILL)
                && rec.stop.is_none()
            {
                rec.stop = Some(StopRequest::new(
                    ExitKind::Killed,
                    "killed on request",
                    Duration::ZERO,
                    now,
                ));
            }
            self.ready.cancel();
            self.server = None;
            self.pump.drain();
            // What it started must not outlive it. Left behind by a server
            // that exited by itself, they mean it daemonized: a failure no
            // restart can fix.
            let left = stop_left_behind(self.store, self.name);
            let after = if left.is_empty() || rec.stop.is_some() {
                rec.on_exit(how, now)
            } else {
                AfterExit::Finish {
                    kind: ExitKind::Daemonized,
                    reason: crate::exit::daemonized_reason(&left),
                }
            };
            match after {
                AfterExit::Finish { kind, reason } => {
                    self.journal_damage(damage.as_deref());
                    self.finish(&guard, &rec, how, kind, &reason)?;
                    return Ok(Next::Exit);
                }
                AfterExit::Restart { last, backoff } => {
                    // Record first, then the exit: a reader that sees the new
                    // exit also sees the restart count that goes with it. (A
                    // failed write is retried by the tick that follows.)
                    let _ = self.store.write(&guard, self.name, &rec);
                    self.write_last(&guard, &last);
                    self.journal(&format!(
                        "server pid {} ended ({}; {how}); restart {} in {}",
                        last.pid,
                        last.reason,
                        rec.restarts_ms.len(),
                        crate::duration::format(backoff)
                    ));
                    dirty = true;
                }
            }
        }
        if self.server.is_none() && rec.restart_due(now) {
            match spawn_server(self.store, self.name, &self.launch) {
                Ok(server) => {
                    self.journal(&format!("restarted server as pid {}", server.id.pid));
                    rec.restarted(server.id, now);
                    // Readiness is the new process's own: forget the old
                    // one's log match and probe schedule.
                    self.pump.matched = false;
                    self.ready.reset();
                    self.server = Some(server);
                    dirty = true;
                }
                Err(message) => {
                    self.journal_damage(damage.as_deref());
                    self.finish(
                        &guard,
                        &rec,
                        Termination::Unknown,
                        ExitKind::RestartFailed,
                        &format!("restart failed: {message}"),
                    )?;
                    return Ok(Next::Exit);
                }
            }
        }
        dirty |= self.check_ready(&mut rec, now);
        let as_read = rec.clients.clone();
        let clients = &self.clients;
        dirty |= rec.settle(now, |id| clients.alive(id));
        for line in super::clients::changes(&self.known.clients, &as_read, &rec) {
            self.journal(&line);
        }
        // A write that fails (disk full, read-only) must not end supervision:
        // keep the settled record in memory and try again shortly.
        let mut retry = None;
        if dirty {
            match self.store.write(&guard, self.name, &rec) {
                Ok(()) => {
                    if let Some(what) = &damage {
                        self.journal(&format!("{what}; restored it from memory"));
                    }
                }
                Err(e) => {
                    self.journal_damage(damage.as_deref());
                    self.journal(&format!("cannot update the record ({e}); retrying in 1s"));
                    retry = Some(WRITE_RETRY);
                }
            }
        }
        self.known = rec.clone();
        if let Some(stop) = &rec.stop {
            return Ok(Next::Stop(stop.clone()));
        }
        let died = self.clients.watch(&rec);
        drop(guard);
        if died {
            return Ok(Next::Sleep(Some(Duration::ZERO)));
        }
        let deadlines = [
            rec.grace_until_ms
                .map(|u| Duration::from_millis(u.saturating_sub(now_ms()))),
            rec.restart_at_ms
                .map(|u| Duration::from_millis(u.saturating_sub(now_ms()))),
            self.ready.next_probe(),
            retry,
            self.clients.poll_interval(),
        ];
        Ok(Next::Sleep(deadlines.into_iter().flatten().min()))
    }

    /// Read the record, insisting that it is about our server and us.
    /// A missing or damaged record is replaced by what we remember (and
    /// what was wrong with it is returned, for the journal once the tick
    /// has written it back); a record about another live server means we
    /// were replaced and must leave.
    fn read_own(&mut self) -> Result<Option<(Record, Option<String>)>> {
        let what = match self.store.read(self.name) {
            Ok(Some(r)) if r.server == self.known.server && r.watcher == Some(self.me) => {
                return Ok(Some((r, None)));
            }
            Ok(Some(r)) if r.server == self.known.server => {
                let by = r.watcher.map(|w| w.pid);
                self.journal(&format!("superseded by watcher {by:?}"));
                return Ok(None);
            }
            Ok(Some(r))
                if r.watcher != Some(self.me) && r.watcher.is_some_and(|w| w.is_alive()) =>
            {
                self.journal(
                    "the record names another server; stopping ours, which nobody references",
                );
                if let Some(server) = self.server.as_mut().filter(|s| s.child.is_some()) {
                    terminate(server, &mut self.pump, DEFAULT_STOP_TIMEOUT);
                }
                return Ok(None);
            }
            Ok(Some(_)) => "record names a dead server".to_string(),
            Ok(None) => "record missing".to_string(),
            Err(e) => format!("record unreadable ({e})"),
        };
        Ok(Some((self.known.clone(), Some(what))))
    }

    /// Journal a damaged record that this tick does not write back.
    fn journal_damage(&self, what: Option<&str>) {
        if let Some(what) = what {
            self.journal(what);
        }
    }

    /// The ready check's part of a tick. Returns true if the record changed.
    fn check_ready(&mut self, rec: &mut Record, now: u64) -> bool {
        let running = self.server.is_some();
        match self.ready.check(rec, now, running, self.pump.matched) {
            Check::Unchanged => false,
            Check::Ready => {
                self.journal(&format!("ready ({})", rec.ready.as_deref().unwrap_or("")));
                true
            }
            Check::TimedOut => true,
        }
    }

    /// Run a due readiness probe outside the lock, bounded by the time left
    /// before the readiness deadline. Returns true if it passed (and the
    /// record now says so), so the caller ticks again at once.
    fn probe(&mut self) -> bool {
        if !self.ready.probe(&self.known, &self.launch) {
            return false;
        }
        let Ok(guard) = self.store.lock(self.name) else {
            return false;
        };
        match self.store.read(self.name) {
            Ok(Some(mut rec))
                if rec.server == self.known.server
                    && rec.watcher == Some(self.me)
                    && rec.ready_at_ms.is_none()
                    && rec.stop.is_none() =>
            {
                rec.ready_at_ms = Some(now_ms());
                if self.store.write(&guard, self.name, &rec).is_ok() {
                    self.journal(&format!("ready ({})", rec.ready.as_deref().unwrap_or("")));
                    self.known = rec;
                }
                true
            }
            _ => true,
        }
    }

    /// Stop the server as `request` asks (SIGTERM, then SIGKILL), outside
    /// the lock; the next tick records the end and decides what follows
    /// (see `Record::on_exit`).
    fn carry_out(&mut self, request: &StopRequest) {
        self.ready.cancel();
        if let Some(server) = &mut self.server {
            let line = format!("stopping pid {}: {}", server.id.pid, request.reason);
            self.store.journal(self.name, "watcher", &line);
            let timeout = Duration::from_millis(request.timeout_ms);
            self.stopped = Some(terminate(server, &mut self.pump, timeout));
            self.server = None;
        }
    }

    fn finish(
        &self,
        guard: &Guard,
        rec: &Record,
        how: Termination,
        kind: ExitKind,
        reason: &str,
    ) -> Result<()> {
        // The exit and the journal first: a reader that sees the record
        // gone must find both.
        self.write_last(guard, &LastExit::of(rec, how, kind, reason));
        self.journal(&format!(
            "server pid {} ended ({reason}); {how}",
            rec.server.pid
        ));
        self.store.remove(guard, self.name)?;
        Ok(())
    }

    fn write_last(&self, guard: &Guard, last: &LastExit) {
        if let Err(e) = self.store.write_last(guard, self.name, last) {
            self.journal(&format!("cannot record the exit: {e}"));
        }
    }

    fn sleep(&mut self, timeout: Option<Duration>) {
        // Under the portable backend every wait on a child (a readiness
        // probe's, too) empties the shared SIGCHLD pipe; look before
        // sleeping, so a server exit announced meanwhile is never missed.
        if self.server.as_ref().is_some_and(|s| s.exited()) {
            return;
        }
        let probe = self.ready.probe_handle();
        let handles = || {
            (self.server.iter().map(|s| &s.handle))
                .chain(self.clients.handles())
                .chain(probe)
        };
        let mut fds = vec![
            PollFd::new(self.wake.fd(), PollFlags::POLLIN),
            PollFd::new(self.pump.fifo().as_fd(), PollFlags::POLLIN),
        ];
        fds.extend(
            handles()
                .filter_map(|h| h.exit_fd())
                .chain(orphans::exits())
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
        );
        // Processes with no exit event (portable backend: clients and an
        // adopted server) are looked at every POLL_INTERVAL, and only while
        // there are any: with none, the watcher sleeps until an event.
        let polled = handles().any(|h| h.exit_fd().is_none());
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let step = match (polled, left) {
                (false, left) => left,
                (true, None) => Some(POLL_INTERVAL),
                (true, Some(left)) => Some(left.min(POLL_INTERVAL)),
            };
            match poll(&mut fds, poll_timeout(step)) {
                Ok(0) if polled => {
                    let due = deadline.is_some_and(|d| Instant::now() >= d);
                    if due || handles().any(|h| h.exit_fd().is_none() && h.has_exited()) {
                        return;
                    }
                }
                _ => break,
            }
        }
        self.wake.coalesce(&mut fds);
    }
}
