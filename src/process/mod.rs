//! Process identity: a pid alone is not a process, because pids are reused.
//! Every pid we store travels with the process's start time, and a process
//! counts as alive only while both still match. Nothing is ever signalled
//! unless its identity matches the record.

use serde::{Deserialize, Serialize};

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as os;
#[cfg(not(target_os = "linux"))]
mod other;
#[cfg(not(target_os = "linux"))]
use other as os;

pub use os::PidFd;

mod cache;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    /// Opaque start-time token (clock ticks since boot on Linux).
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

    pub fn current() -> ProcessId {
        cache::current()
    }

    /// Alive means: the pid exists, is not a zombie, and started when we
    /// recorded it. A recycled pid is a different process and is dead to us.
    pub fn is_alive(&self) -> bool {
        cache::is_alive(self)
    }

    /// The same check, always from /proc (no cached descriptor).
    fn is_alive_uncached(&self) -> bool {
        os::start_time(self.pid) == Some(self.start_time)
    }

    /// Open a descriptor that will always refer to this exact process, or
    /// `None` if the process is gone or the pid now belongs to another one.
    pub fn open(&self) -> Option<PidFd> {
        let fd = PidFd::open(self.pid).ok()?;
        // The fd pins the process; checking identity after opening closes the
        // race where the pid is recycled between our check and our open.
        self.is_alive_uncached().then_some(fd)
    }
}

/// The caller of the CLI: our parent process.
pub fn parent() -> Option<ProcessId> {
    ProcessId::of(nix::unistd::getppid().as_raw() as u32)
}

pub use os::{signal_group, tree_idle};
