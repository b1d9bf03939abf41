//! Process identity: a pid alone is not a process, because pids are reused.
//! Every pid we store travels with the process's start time, and a process
//! counts as alive only while both still match. Nothing is ever signalled
//! unless its identity matches the record.
//!
//! Death needs proof: no such process (ENOENT, ESRCH), a zombie, or another
//! start time. Any other failure to look (descriptors exhausted, no memory)
//! answers "unknown", which every caller treats as alive: dropping a live
//! client would stop a server someone still uses.
//!
//! Files: `backend` chooses how exits are learned (pidfd or portable);
//! `handle` is the one handle type callers use on either; `linux` and
//! `macos` read start times (and hold pidfds, kqueues); `portable` is the
//! SIGCHLD self-pipe and the polling interval; `cache` keeps pidfds of
//! processes asked about often.

use serde::{Deserialize, Serialize};

pub mod backend;
mod cache;
mod handle;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "macos")]
mod macos;
mod portable;

#[cfg(target_os = "linux")]
use linux as os;
#[cfg(target_os = "macos")]
use macos as os;

pub use backend::Backend;
pub use handle::{poll_timeout, Handle, Served};
pub use portable::POLL_INTERVAL;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    /// Opaque start-time token (clock ticks since boot on Linux,
    /// microseconds since the epoch on macOS).
    pub start_time: u64,
}

impl ProcessId {
    /// The identity of the live process `pid`, if there is one.
    pub fn of(pid: u32) -> Option<ProcessId> {
        if pid == 0 || pid > i32::MAX as u32 {
            return None;
        }
        os::start_time(pid).map(|start_time| ProcessId { pid, start_time })
    }

    /// False only when `pid` is proven gone (see [`Liveness`]).
    pub fn of_alive_or_unknown(pid: u32) -> bool {
        !matches!(os::probe(pid), Probe::Dead)
    }

    pub fn current() -> ProcessId {
        cache::current()
    }

    /// True unless the process is proven dead: the pid is gone, a zombie,
    /// or belongs to a process that started at another time (a recycled pid
    /// is a different process and is dead to us). "Cannot tell" counts as
    /// alive (see the module comment).
    pub fn is_alive(&self) -> bool {
        cache::is_alive(self)
    }

    /// What /proc says now, without any cached descriptor.
    pub fn liveness(&self) -> Liveness {
        match os::probe(self.pid) {
            Probe::Alive(t) if t == self.start_time => Liveness::Alive,
            Probe::Alive(_) | Probe::Dead => Liveness::Dead,
            Probe::Unknown => Liveness::Unknown,
        }
    }

    /// The same check as [`is_alive`](Self::is_alive), always from /proc.
    pub fn is_alive_uncached(&self) -> bool {
        self.liveness() != Liveness::Dead
    }

    /// A handle that will always refer to this exact process, or `None` if
    /// the process is gone, the pid now belongs to another one, or its
    /// identity cannot be confirmed. Never for pid 1 or below: nothing we
    /// start is init.
    pub fn open(&self) -> Option<Handle> {
        Handle::open(self)
    }
}

/// What the OS says about a pid: its start time, or that it is dead (no
/// such process, or a zombie), or that we cannot tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Alive(u64),
    Dead,
    Unknown,
}

/// The three answers to "is this process alive?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Proven: no such pid, a zombie, or another start time.
    Dead,
    /// The check itself failed (e.g. EMFILE): keep the process, look later.
    Unknown,
}

/// The identity of a client process given by pid (`--pid`, or the caller),
/// refusing what can never leave: init, and threads (a thread id is not a
/// process, and its exit is never reported). `explicit` says whether the
/// user named the pid or we took the caller's parent.
pub fn client(pid: u32, explicit: bool) -> crate::Result<ProcessId> {
    use crate::Error;
    if pid == 0 && explicit {
        return Err(Error::BadPid(
            "--pid 0".into(),
            "0 is no process id; pass the pid of the process whose life should keep the server running".to_string(),
        ));
    }
    if pid <= 1 {
        return Err(if explicit {
            Error::BadPid(format!("--pid {pid}"), "init never exits, so the server would never stop; pass the pid of the process whose life should keep the server running".to_string())
        } else {
            Error::BadPid("the calling process's parent".into(), "it is init (pid 1), as under `setsid -f` or a daemon, so it never exits and the server would never stop; pass --pid with the process whose life should keep the server running".to_string())
        });
    }
    let flag = if explicit { "--pid " } else { "pid " };
    let bad = |why: String| Error::BadPid(format!("{flag}{pid}"), why);
    let Some(id) = ProcessId::of(pid) else {
        return Err(bad("no such running process".into()));
    };
    match os::thread_group(pid) {
        Ok(tgid) if tgid == pid => Ok(id),
        Ok(tgid) => Err(bad(format!(
            "it is a thread of process {tgid}, not a process (a thread's exit is never reported); pass --pid {tgid}"
        ))),
        Err(e) => Err(bad(format!("cannot tell whether it is a process ({e})"))),
    }
}

/// True when `pid` leads its own process group and carries the tag every
/// server we start carries: `SHAREDSERVER_NAME=name` and
/// `SHAREDSERVER_LOCKDIR=dir` in its environment. A record can be forged or
/// stale; the tag is what proves a process is this name's server before we
/// signal a group we do not hold as our child.
pub fn is_tagged_leader(pid: u32, name: &str, dir: &std::path::Path) -> bool {
    let leads = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32)))
        .is_ok_and(|g| g.as_raw() as u32 == pid);
    leads && has_tag(pid, name, dir)
}

/// Every live process (but this one) that carries `name`'s tag in `dir`:
/// what a server started, wherever it went (a daemon's child in a session
/// of its own, too). Only where process environments can be read (Linux).
pub fn tagged(name: &str, dir: &std::path::Path) -> Vec<ProcessId> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    let me = std::process::id();
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()))
        .filter(|&pid| pid != me && has_tag(pid, name, dir))
        .filter_map(ProcessId::of)
        .collect()
}

/// True when the environment of `pid` carries `name`'s tag in `dir`.
pub fn has_tag(pid: u32, name: &str, dir: &std::path::Path) -> bool {
    tag_of(pid, name, dir) == Some(true)
}

/// Whether `pid` carries `name`'s tag in `dir`: `None` when its environment
/// cannot be read (gone, or not readable here), so neither is known.
pub fn tag_of(pid: u32, name: &str, dir: &std::path::Path) -> Option<bool> {
    let environ = os::environ(pid)?;
    let want_name = format!("{}={name}", crate::spawn::NAME_VAR);
    let want_dir = format!("{}={}", crate::lockdir::ENV_VAR, dir.display());
    let mut found = (false, false);
    for var in environ.split(|&b| b == 0) {
        found.0 |= var == want_name.as_bytes();
        found.1 |= var == want_dir.as_bytes();
    }
    Some(found == (true, true))
}

/// The caller of the CLI: our parent process.
pub fn parent() -> Option<ProcessId> {
    ProcessId::of(nix::unistd::getppid().as_raw() as u32)
}

#[cfg(target_os = "linux")]
pub(crate) use linux::parent_of;
pub use os::tree_idle;
pub(crate) use portable::{child_exits, drain_child_exits};

/// After SIGKILL, how long to wait for a stopped server's leader to go.
pub const KILL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The one way a server is stopped (by its watcher, and by `admin doctor`
/// for an orphan): SIGTERM to its process group and to the leader itself (a
/// server that moved into another group is still reached), SIGKILL to both
/// if it is still there after `timeout`, then `KILL_WAIT` at most. `wait`
/// waits up to the given time for the leader's exit and says whether it
/// came (the watcher copies the server's output meanwhile; see
/// [`Handle::wait_exit`] for a plain wait). Returns true if the leader
/// exited.
pub fn terminate(
    leader: &Handle,
    timeout: std::time::Duration,
    mut wait: impl FnMut(std::time::Duration) -> bool,
) -> bool {
    let signal = |sig| {
        let _ = leader.signal_group(sig);
        let _ = leader.signal(sig);
    };
    signal(libc::SIGTERM);
    if wait(timeout) {
        return true;
    }
    signal(libc::SIGKILL);
    wait(KILL_WAIT)
}
