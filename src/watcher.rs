//! The watcher: one detached process per server, the server's parent.
//!
//! It sleeps in a single `poll(2)` on: the server's pidfd (exit), one pidfd
//! per client (crash), the name's wake FIFO (a CLI or Neovim changed the
//! record) and the server's output FIFO (log lines to copy). The only
//! timeouts are deadlines: a grace period, a restart backoff, the next
//! readiness probe. An idle watcher therefore never wakes and never writes.
//!
//! Each wake-up runs one tick under the name's lock: read the record, settle
//! it (see `Record::settle`), write it only if it changed, and act.

use crate::error::{Error, Result};
use crate::logs::Pump;
use crate::name::ServerName;
use crate::probe::{self, ReadySpec};
use crate::process::{signal_group, PidFd, ProcessId};
use crate::record::{now_ms, LastExit, Record, RestartPolicy, DEFAULT_STOP_TIMEOUT};
use crate::spawn::{self, Hello, Launch};
use crate::store::{Guard, Store};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

/// How soon to retry a record write that failed.
const WRITE_RETRY: Duration = Duration::from_secs(1);
/// After SIGKILL, how long to wait for the group leader to go.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Entry point of `sharedserver __watch NAME`. Returns the exit code.
pub fn main(raw_name: &str) -> i32 {
    match watch(raw_name) {
        Ok(()) => 0,
        Err(e) => {
            if let (Ok(store), Ok(name)) = (Store::open(), ServerName::parse(raw_name)) {
                store.journal(&name, "watcher", &format!("error: {e}"));
            }
            1
        }
    }
}

fn watch(raw_name: &str) -> Result<()> {
    let name = ServerName::parse(raw_name)?;
    let store = Store::open()?;
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|e| Error::Other(format!("watcher: reading launch spec: {e}")))?;
    let launch: Launch = serde_json::from_str(&line)
        .map_err(|e| Error::Other(format!("watcher: bad launch spec: {e}")))?;
    let wake = open_wake_fifo(&store, &name)?;
    let ready = launch.ready.as_deref().map(ReadySpec::parse).transpose()?;
    let matcher = ready.as_ref().and_then(|r| r.log_regex().cloned());
    let mut pump = Pump::open(&store, &name, launch.log_file.as_ref(), matcher)?;

    let started = begin(&store, &name, &launch, &mut pump);
    let hello = match &started {
        Ok(server) => Hello::Ready {
            watcher: ProcessId::current(),
            server: server.id,
            started_at_ms: now_ms(),
        },
        Err(hello) => hello.clone(),
    };
    let mut out = std::io::stdout();
    let line = serde_json::to_string(&hello).expect("hello serializes");
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
    let Ok(mut server) = started else {
        detach_stdio();
        return Ok(());
    };
    // The caller now writes the record and hands it to us. If it fails or
    // dies first, nobody knows this server exists: stop it (unless we were
    // only adopting a server someone else started).
    let mut commit = String::new();
    let _ = input.read_line(&mut commit);
    drop(input);
    detach_stdio();
    let Ok(known) = serde_json::from_str::<Record>(commit.trim()) else {
        if launch.adopt.is_none() {
            store.journal(
                &name,
                "watcher",
                "the caller never recorded the new server; stopping it",
            );
            terminate(&mut server, &mut pump, DEFAULT_STOP_TIMEOUT);
        }
        return Ok(());
    };
    trim_resident_code();
    Watcher {
        store: &store,
        name: &name,
        me: ProcessId::current(),
        launch,
        ready,
        server: Some(server),
        wake,
        pump,
        clients: HashMap::new(),
        known,
        probe_at: None,
        probe_interval: None,
    }
    .run()
}

/// The supervised server: a pidfd always, the Child too when we spawned it.
struct Server {
    id: ProcessId,
    pidfd: PidFd,
    child: Option<std::process::Child>,
}

impl Server {
    fn exited(&self) -> bool {
        self.pidfd.has_exited()
    }

    /// Exit code and signal, when we are the parent and can see them.
    fn reap(&mut self) -> (Option<i32>, Option<i32>) {
        match self.child.as_mut().map(|c| c.wait()) {
            Some(Ok(status)) => (status.code(), status.signal()),
            _ => (None, None),
        }
    }
}

/// Start (or adopt) the server. Errors become the handshake's answer.
fn begin(
    store: &Store,
    name: &ServerName,
    launch: &Launch,
    pump: &mut Pump,
) -> std::result::Result<Server, Hello> {
    if let Some(id) = launch.adopt {
        let pidfd = id.open().ok_or_else(|| Hello::SpawnFailed {
            message: format!("server pid {} exited before supervision resumed", id.pid),
        })?;
        return Ok(Server {
            id,
            pidfd,
            child: None,
        });
    }
    let server =
        spawn_server(store, name, launch).map_err(|message| Hello::SpawnFailed { message })?;
    let window = Duration::from_millis(launch.startup_check_ms);
    if !window.is_zero() && wait_exit(&server.pidfd, Some(pump), window) {
        let mut server = server;
        let (code, signal) = server.reap();
        pump.drain();
        return Err(Hello::DiedAtStart { code, signal });
    }
    Ok(server)
}

fn spawn_server(
    store: &Store,
    name: &ServerName,
    launch: &Launch,
) -> std::result::Result<Server, String> {
    let output = Pump::server_end(store, name).map_err(|e| e.to_string())?;
    let child = spawn::server(launch, output).map_err(|e| e.to_string())?;
    let pid = child.id();
    // The child is unreaped, so neither its pid nor its identity can change.
    let id = ProcessId::of(pid).unwrap_or(ProcessId { pid, start_time: 0 });
    let pidfd = PidFd::open(pid)
        .map_err(|e| format!("pidfd_open({pid}) failed: {e} (Linux 5.3 or newer is required)"))?;
    Ok(Server {
        id,
        pidfd,
        child: Some(child),
    })
}

struct Watcher<'a> {
    store: &'a Store,
    name: &'a ServerName,
    me: ProcessId,
    launch: Launch,
    ready: Option<ReadySpec>,
    /// None while waiting out a restart backoff.
    server: Option<Server>,
    wake: File,
    pump: Pump,
    clients: HashMap<ProcessId, PidFd>,
    /// The last record we saw and wrote: used to restore a damaged record.
    known: Record,
    probe_at: Option<Instant>,
    probe_interval: Option<Duration>,
}

/// What a tick decided to do after releasing the lock.
enum Next {
    Sleep(Option<Duration>),
    Stop(String, Duration),
    Exit,
}

impl Watcher<'_> {
    fn run(mut self) -> Result<()> {
        loop {
            self.pump.drain();
            match self.tick()? {
                Next::Exit => return Ok(()),
                Next::Stop(reason, timeout) => return self.stop(&reason, timeout),
                Next::Sleep(timeout) => self.sleep(timeout),
            }
        }
    }

    fn journal(&self, line: &str) {
        self.store.journal(self.name, "watcher", line);
    }

    fn tick(&mut self) -> Result<Next> {
        let guard = self.store.lock(self.name)?;
        let Some((mut rec, mut dirty)) = self.read_own()? else {
            return Ok(Next::Exit);
        };
        let now = now_ms();
        if let Some(server) = self.server.as_mut().filter(|s| s.exited()) {
            let (code, signal) = server.reap();
            self.server = None;
            self.pump.drain();
            match self.after_exit(&guard, &mut rec, code, signal)? {
                Some(next) => return Ok(next),
                None => dirty = true,
            }
        }
        if self.server.is_none()
            && rec.restart_at_ms.is_some_and(|at| now >= at)
            && rec.stop.is_none()
        {
            match spawn_server(self.store, self.name, &self.launch) {
                Ok(server) => {
                    self.journal(&format!("restarted server as pid {}", server.id.pid));
                    rec.server = server.id;
                    rec.started_at_ms = now;
                    rec.restart_at_ms = None;
                    rec.ready_at_ms = None;
                    self.probe_interval = None;
                    self.probe_at = None;
                    self.server = Some(server);
                    dirty = true;
                }
                Err(message) => {
                    self.finish(
                        &guard,
                        &rec,
                        None,
                        None,
                        &format!("restart failed: {message}"),
                    )?;
                    return Ok(Next::Exit);
                }
            }
        }
        dirty |= self.check_ready(&mut rec, now);
        dirty |= rec.settle(now, |id| id.is_alive());
        // A write that fails (disk full, read-only) must not end supervision:
        // keep the settled record in memory and try again shortly.
        let mut retry = None;
        if dirty {
            if let Err(e) = self.store.write(&guard, self.name, &rec) {
                self.journal(&format!("cannot update the record ({e}); retrying in 1s"));
                retry = Some(WRITE_RETRY);
            }
        }
        self.known = rec.clone();
        if let Some(stop) = &rec.stop {
            return Ok(Next::Stop(
                stop.reason.clone(),
                Duration::from_millis(stop.timeout_ms),
            ));
        }
        let died = self.watch_clients(&rec);
        drop(guard);
        if died {
            return Ok(Next::Sleep(Some(Duration::ZERO)));
        }
        let deadlines = [
            rec.grace_until_ms
                .map(|u| Duration::from_millis(u.saturating_sub(now_ms()))),
            rec.restart_at_ms
                .map(|u| Duration::from_millis(u.saturating_sub(now_ms()))),
            self.probe_at
                .map(|t| t.saturating_duration_since(Instant::now())),
            retry,
        ];
        Ok(Next::Sleep(deadlines.into_iter().flatten().min()))
    }

    /// Read the record, insisting that it is about our server and us.
    /// A missing or damaged record is restored from memory; a record about
    /// another live server means we were replaced and must leave.
    fn read_own(&mut self) -> Result<Option<(Record, bool)>> {
        let what = match self.store.read(self.name) {
            Ok(Some(r)) if r.server == self.known.server && r.watcher == Some(self.me) => {
                return Ok(Some((r, false)));
            }
            Ok(Some(r)) if r.server == self.known.server => {
                let by = r.watcher.map(|w| w.pid);
                self.journal(&format!("superseded by watcher {by:?}"));
                return Ok(None);
            }
            Ok(Some(r)) if r.watcher.is_some_and(|w| w.is_alive()) => {
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
        self.journal(&format!("{what}; restored it from memory"));
        Ok(Some((self.known.clone(), true)))
    }

    /// The server exited. Returns what to do next, or None to carry on
    /// (a restart was scheduled).
    fn after_exit(
        &mut self,
        guard: &Guard,
        rec: &mut Record,
        code: Option<i32>,
        signal: Option<i32>,
    ) -> Result<Option<Next>> {
        let reason = if let Some(stop) = &rec.stop {
            stop.reason.clone()
        } else if rec.state() == crate::record::State::Starting && rec.restart.is_none() {
            "exited before it was ready".to_string()
        } else {
            "exited on its own".to_string()
        };
        let failed = code != Some(0);
        let policy = rec.restart.filter(|_| failed && rec.stop.is_none());
        let Some(policy) = policy else {
            self.finish(guard, rec, code, signal, &reason)?;
            return Ok(Some(Next::Exit));
        };
        let now = now_ms();
        rec.restarts_ms
            .retain(|t| now.saturating_sub(*t) < policy.window_ms);
        if rec.restarts_ms.len() >= policy.max as usize {
            let why = format!(
                "gave up after {} restarts within {}",
                rec.restarts_ms.len(),
                crate::duration::format(Duration::from_millis(policy.window_ms))
            );
            self.finish(guard, rec, code, signal, &why)?;
            return Ok(Some(Next::Exit));
        }
        let backoff = RestartPolicy::backoff(rec.restarts_ms.len());
        rec.restarts_ms.push(now);
        rec.restart_at_ms = Some(now + backoff.as_millis() as u64);
        self.write_last(guard, rec, code, signal, "crashed; restarting");
        self.journal(&format!(
            "server pid {} crashed (code={code:?} signal={signal:?}); restart {} in {}",
            rec.server.pid,
            rec.restarts_ms.len(),
            crate::duration::format(backoff)
        ));
        Ok(None)
    }

    /// Run a readiness probe if one is due. Returns true if the record changed.
    fn check_ready(&mut self, rec: &mut Record, now: u64) -> bool {
        let Some(spec) = &self.ready else {
            return false;
        };
        if rec.ready_at_ms.is_some() || self.server.is_none() || rec.stop.is_some() {
            self.probe_at = None;
            return false;
        }
        let passed = self.pump.matched
            || (self.probe_at.is_none_or(|t| Instant::now() >= t) && spec.check());
        if passed {
            rec.ready_at_ms = Some(now);
            self.probe_at = None;
            self.journal(&format!("ready ({})", rec.ready.as_deref().unwrap_or("")));
            return true;
        }
        if now >= rec.started_at_ms + rec.ready_timeout_ms {
            rec.stop = Some(crate::record::StopRequest {
                reason: format!(
                    "not ready within {} (waiting for {})",
                    crate::duration::format(Duration::from_millis(rec.ready_timeout_ms)),
                    rec.ready.as_deref().unwrap_or("?")
                ),
                timeout_ms: DEFAULT_STOP_TIMEOUT.as_millis() as u64,
                requested_at_ms: now,
            });
            return true;
        }
        let interval = probe::next_interval(self.probe_interval);
        self.probe_interval = Some(interval);
        self.probe_at = Some(Instant::now() + interval);
        false
    }

    /// Keep exactly one pidfd per recorded client. Returns true if one of
    /// them is already dead (the caller should tick again at once).
    fn watch_clients(&mut self, rec: &Record) -> bool {
        self.clients
            .retain(|id, _| rec.clients.iter().any(|c| c.id == *id));
        let mut died = false;
        for c in &rec.clients {
            if self.clients.contains_key(&c.id) {
                continue;
            }
            match c.id.open() {
                Some(fd) => {
                    self.clients.insert(c.id, fd);
                }
                None => died |= !c.id.is_alive(),
            }
        }
        died
    }

    fn stop(mut self, reason: &str, timeout: Duration) -> Result<()> {
        let (mut code, mut signal) = (None, None);
        if let Some(server) = &mut self.server {
            let line = format!("stopping pid {}: {reason}", server.id.pid);
            self.store.journal(self.name, "watcher", &line);
            (code, signal) = terminate(server, &mut self.pump, timeout);
        }
        let guard = self.store.lock(self.name)?;
        let rec = self.known.clone();
        // Clean only if the record is still about this server.
        let current = self.store.read(self.name).ok().flatten();
        if current.as_ref().is_none_or(|r| r.server == rec.server) {
            self.finish(&guard, &rec, code, signal, reason)?;
        }
        Ok(())
    }

    fn finish(
        &self,
        guard: &Guard,
        rec: &Record,
        code: Option<i32>,
        signal: Option<i32>,
        reason: &str,
    ) -> Result<()> {
        // The exit first: a reader that sees the record gone must find it.
        self.write_last(guard, rec, code, signal, reason);
        self.store.remove(guard, self.name)?;
        self.journal(&format!(
            "server pid {} ended ({reason}); code={code:?} signal={signal:?}",
            rec.server.pid
        ));
        Ok(())
    }

    fn write_last(
        &self,
        guard: &Guard,
        rec: &Record,
        code: Option<i32>,
        signal: Option<i32>,
        reason: &str,
    ) {
        let last = LastExit::of(rec, code, signal, reason);
        if let Err(e) = self.store.write_last(guard, self.name, &last) {
            self.journal(&format!("cannot record the exit: {e}"));
        }
    }

    fn sleep(&mut self, timeout: Option<Duration>) {
        let mut fds = vec![
            PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.pump.fifo().as_fd(), PollFlags::POLLIN),
        ];
        if let Some(server) = &self.server {
            fds.push(PollFd::new(server.pidfd.as_fd(), PollFlags::POLLIN));
        }
        fds.extend(
            self.clients
                .values()
                .map(|c| PollFd::new(c.as_fd(), PollFlags::POLLIN)),
        );
        let _ = poll(&mut fds, poll_timeout(timeout));
        // Drain pokes; many pokes between ticks collapse into one tick.
        let mut buf = [0u8; 256];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
    }
}

/// SIGTERM the group, then SIGKILL it after `timeout`; keep draining output
/// meanwhile so a server that logs on its way out never blocks on the pipe.
fn terminate(
    server: &mut Server,
    pump: &mut Pump,
    timeout: Duration,
) -> (Option<i32>, Option<i32>) {
    let _ = signal_group(&server.pidfd, server.id.pid, libc::SIGTERM);
    if !wait_exit(&server.pidfd, Some(pump), timeout) {
        let _ = signal_group(&server.pidfd, server.id.pid, libc::SIGKILL);
        wait_exit(&server.pidfd, Some(pump), KILL_WAIT);
    }
    pump.drain();
    server.reap()
}

fn poll_timeout(timeout: Option<Duration>) -> PollTimeout {
    match timeout {
        None => PollTimeout::NONE,
        // Round up, so we never wake just before a deadline and spin.
        Some(t) => {
            PollTimeout::try_from((t.as_micros().div_ceil(1000)).min(i32::MAX as u128) as i32)
                .unwrap_or(PollTimeout::MAX)
        }
    }
}

/// Wait until the process exits (pidfd readable) or the timeout passes,
/// copying its output to the log meanwhile.
fn wait_exit(fd: &PidFd, mut pump: Option<&mut Pump>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = vec![PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        if let Some(p) = &pump {
            fds.push(PollFd::new(p.fifo().as_fd(), PollFlags::POLLIN));
        }
        let result = poll(&mut fds, poll_timeout(Some(left)));
        let exited = fds[0].revents().is_some_and(|r| !r.is_empty());
        if let Some(p) = pump.as_deref_mut() {
            p.drain();
        }
        match result {
            _ if exited => return true,
            Ok(0) => return false,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {
                if Instant::now() >= deadline {
                    return false;
                }
            }
            Err(_) => return fd.has_exited(),
        }
    }
}

fn open_wake_fifo(store: &Store, name: &ServerName) -> Result<File> {
    let path = store.path(name, "wake");
    match nix::unistd::mkfifo(
        &path,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    ) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(Error::io(&path, "creating wake fifo", e.into())),
    }
    // Read-write so the FIFO never reports EOF when pokers come and go.
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| Error::io(&path, "opening wake fifo", e))
}

/// Wake the watcher of `name`, if any. Never blocks, never fails loudly: a
/// full FIFO already holds a pending wake-up, and a missing one has no reader.
pub fn poke(store: &Store, name: &ServerName) {
    let path = store.path(name, "wake");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
    {
        let _ = f.write(b"!");
    }
}

/// Keep the idle watcher's resident set to the code it really runs.
///
/// By default each page fault maps up to 64 KiB of neighbouring pages
/// ("fault-around"), so start-up leaves most of the binary and of libc
/// resident for a process that then idles for hours. We turn fault-around off
/// for our read-only file mappings (MADV_RANDOM) and drop the code pages
/// mapped so far (MADV_DONTNEED). That is safe only for executable mappings:
/// they are never written, so dropping them loses nothing and the pages
/// simply fault back in, one at a time, when they run again.
pub fn trim_resident_code() {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let path = fields.nth(3).unwrap_or("");
        if !path.starts_with('/') || perms.contains('w') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        let (addr, len) = (start as *mut libc::c_void, end - start);
        // SAFETY: the range is one of our own read-only file mappings;
        // DONTNEED is applied to unwritable code only (see above).
        unsafe {
            libc::madvise(addr, len, libc::MADV_RANDOM);
            if perms.contains('x') {
                libc::madvise(addr, len, libc::MADV_DONTNEED);
            }
        }
    }
}

fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto the standard descriptors we own.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
            libc::dup2(null.as_raw_fd(), 2);
        }
    }
}
