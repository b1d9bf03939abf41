//! The watcher: one detached process per server, the server's parent.
//!
//! It sleeps in a single `poll(2)` on: the server's pidfd (exit), one pidfd
//! per client (crash), and the name's wake FIFO (a CLI or Neovim changed the
//! record). The only timeout is a running grace period. An idle watcher
//! therefore never wakes and never writes.
//!
//! Each wake-up runs one `tick` under the name's lock: read the record,
//! settle it (see `Record::settle`), write it only if it changed, and act.

use crate::error::{Error, Result};
use crate::name::ServerName;
use crate::process::{signal_group, PidFd, ProcessId};
use crate::record::{now_ms, LastExit, Record, FORMAT, VERSION};
use crate::spawn::{self, Hello, Launch};
use crate::store::{Guard, Store};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

/// How long a fresh server must survive before `use` reports success. Long
/// enough to catch "exits at once" (bad flags, missing files), short enough
/// not to be felt.
pub const STARTUP_WINDOW: Duration = Duration::from_millis(50);
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
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| Error::Other(format!("watcher: reading launch spec: {e}")))?;
    let launch: Launch = serde_json::from_str(&input)
        .map_err(|e| Error::Other(format!("watcher: bad launch spec: {e}")))?;
    let wake = open_wake_fifo(&store, &name)?;

    let (server, hello) = match begin(&launch) {
        Ok(server) => {
            let hello = Hello::Ready {
                watcher: ProcessId::current(),
                server: server.id,
                started_at_ms: now_ms(),
            };
            (Some(server), hello)
        }
        Err(hello) => (None, hello),
    };
    let mut out = std::io::stdout();
    let line = serde_json::to_string(&hello).expect("hello serializes");
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
    detach_stdio();
    match server {
        Some(server) => supervise(&store, &name, server, wake),
        None => Ok(()),
    }
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

    /// SIGTERM the group, then SIGKILL it after `timeout`.
    fn terminate(&mut self, timeout: Duration) -> (Option<i32>, Option<i32>) {
        let _ = signal_group(&self.pidfd, self.id.pid, libc::SIGTERM);
        if !wait_readable(&self.pidfd, timeout) {
            let _ = signal_group(&self.pidfd, self.id.pid, libc::SIGKILL);
            wait_readable(&self.pidfd, KILL_WAIT);
        }
        self.reap()
    }
}

/// Start (or adopt) the server. Errors become the handshake's answer.
fn begin(launch: &Launch) -> std::result::Result<Server, Hello> {
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
    let mut child = spawn::server(launch).map_err(|e| Hello::SpawnFailed {
        message: e.to_string(),
    })?;
    let pid = child.id();
    // The child is unreaped, so neither its pid nor its identity can change.
    let id = ProcessId::of(pid).unwrap_or(ProcessId { pid, start_time: 0 });
    let pidfd = PidFd::open(pid).map_err(|e| Hello::SpawnFailed {
        message: format!("pidfd_open({pid}) failed: {e} (Linux 5.3 or newer is required)"),
    })?;
    if wait_readable(&pidfd, STARTUP_WINDOW) {
        let status = child.wait().ok();
        return Err(Hello::DiedAtStart {
            code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
        });
    }
    Ok(Server {
        id,
        pidfd,
        child: Some(child),
    })
}

fn supervise(store: &Store, name: &ServerName, mut server: Server, wake: File) -> Result<()> {
    let me = ProcessId::current();
    // The last record we saw and wrote: used to restore a damaged record.
    let mut known: Option<Record> = None;
    let mut clients: HashMap<ProcessId, PidFd> = HashMap::new();
    loop {
        let guard = store.lock(name)?;
        let (mut rec, mut dirty) = match store.read(name) {
            Ok(Some(r)) if r.server == server.id && r.watcher == Some(me) => (r, false),
            Ok(Some(r)) if r.server == server.id => {
                store.journal(
                    name,
                    "watcher",
                    &format!("superseded by watcher {:?}", r.watcher),
                );
                return Ok(());
            }
            other => match &known {
                Some(good) => {
                    let what = match other {
                        Err(e) => format!("record unreadable ({e})"),
                        Ok(None) => "record missing".to_string(),
                        Ok(Some(_)) => "record names another server".to_string(),
                    };
                    store.journal(name, "watcher", &format!("{what}; restored it from memory"));
                    (good.clone(), true)
                }
                None => {
                    // The caller died between the handshake and writing the
                    // record: nobody knows this server exists. Stop it.
                    drop(guard);
                    store.journal(
                        name,
                        "watcher",
                        "no record was written for the new server; stopping it",
                    );
                    server.terminate(crate::record::DEFAULT_STOP_TIMEOUT);
                    return Ok(());
                }
            },
        };
        if server.exited() {
            let (code, signal) = server.reap();
            let reason = match &rec.stop {
                Some(stop) => stop.reason.clone(),
                None => "exited on its own".to_string(),
            };
            return finish(store, &guard, name, &rec, code, signal, &reason);
        }
        dirty |= rec.settle(now_ms(), |id| id.is_alive());
        if dirty {
            store.write(&guard, name, &rec)?;
        }
        known = Some(rec.clone());
        if let Some(stop) = rec.stop.clone() {
            store.journal(
                name,
                "watcher",
                &format!("stopping pid {}: {}", server.id.pid, stop.reason),
            );
            drop(guard);
            let (code, signal) = server.terminate(Duration::from_millis(stop.timeout_ms));
            let guard = store.lock(name)?;
            // Clean only if the record is still about this server.
            let current = store.read(name).ok().flatten();
            if current.as_ref().map_or(true, |r| r.server == server.id) {
                return finish(store, &guard, name, &rec, code, signal, &stop.reason);
            }
            return Ok(());
        }
        // Keep exactly one pidfd per recorded client.
        clients.retain(|id, _| rec.clients.iter().any(|c| c.id == *id));
        let mut unwatchable = false;
        let mut died = false;
        for c in &rec.clients {
            if clients.contains_key(&c.id) {
                continue;
            }
            match c.id.open() {
                Some(fd) => {
                    clients.insert(c.id, fd);
                }
                None if c.id.is_alive() => unwatchable = true,
                None => died = true,
            }
        }
        drop(guard);
        if died {
            continue;
        }
        let mut timeout = rec
            .grace_until_ms
            .map(|until| Duration::from_millis(until.saturating_sub(now_ms())));
        if unwatchable {
            // No pidfd on this system: fall back to checking once a second.
            timeout =
                Some(timeout.map_or(Duration::from_secs(1), |t| t.min(Duration::from_secs(1))));
        }
        sleep_until_event(&wake, &server.pidfd, clients.values(), timeout);
    }
}

fn finish(
    store: &Store,
    guard: &Guard,
    name: &ServerName,
    rec: &Record,
    code: Option<i32>,
    signal: Option<i32>,
    reason: &str,
) -> Result<()> {
    store.remove(guard, name)?;
    let last = LastExit {
        format: FORMAT.into(),
        version: VERSION,
        name: name.to_string(),
        pid: rec.server.pid,
        command: rec.command.clone(),
        code,
        signal,
        reason: reason.to_string(),
        at_ms: now_ms(),
    };
    store.write_last(guard, name, &last)?;
    store.journal(
        name,
        "watcher",
        &format!(
            "server pid {} ended ({reason}); code={code:?} signal={signal:?}",
            rec.server.pid
        ),
    );
    Ok(())
}

fn sleep_until_event<'a>(
    wake: &File,
    server: &PidFd,
    clients: impl Iterator<Item = &'a PidFd>,
    timeout: Option<Duration>,
) {
    let mut fds = vec![
        PollFd::new(wake.as_fd(), PollFlags::POLLIN),
        PollFd::new(server.as_fd(), PollFlags::POLLIN),
    ];
    fds.extend(clients.map(|c| PollFd::new(c.as_fd(), PollFlags::POLLIN)));
    let timeout = match timeout {
        None => PollTimeout::NONE,
        Some(t) => PollTimeout::try_from(t.as_millis().min(i32::MAX as u128) as i32 + 1)
            .unwrap_or(PollTimeout::MAX),
    };
    let _ = poll(&mut fds, timeout);
    // Drain pokes; many pokes between ticks collapse into one tick.
    let mut buf = [0u8; 256];
    while matches!((&*wake).read(&mut buf), Ok(n) if n > 0) {}
}

/// Wait until the pidfd is readable (process exited) or the timeout passes.
fn wait_readable(fd: &PidFd, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(n) if n > 0 => return true,
            Ok(_) => return false,
            Err(nix::errno::Errno::EINTR) => continue,
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
