//! A handle on one process: tells when it exits, and signals it only while
//! it is still the process we identified. Built on whichever backend this
//! process uses (see `backend.rs`).

use super::backend;
use super::{portable, Liveness, ProcessId};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Handle {
    id: ProcessId,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// Readable on exit; signals go to this exact process.
    #[cfg(target_os = "linux")]
    Pidfd(super::linux::PidFd),
    /// A kqueue holding one EVFILT_PROC/NOTE_EXIT registration: readable on
    /// exit.
    #[cfg(target_os = "macos")]
    Kqueue(super::macos::ExitQueue),
    /// Our own unreaped child; the SIGCHLD self-pipe wakes us on its exit.
    Child(BorrowedFd<'static>),
    /// No event: checked by pid + start time.
    Polled,
}

impl Handle {
    /// A handle on the live process `id`, or None if it is gone (or its pid
    /// now belongs to another process).
    pub fn open(id: &ProcessId) -> Option<Handle> {
        if id.pid <= 1 {
            return None;
        }
        let kind = match backend::current() {
            #[cfg(target_os = "linux")]
            backend::Backend::Pidfd => Kind::Pidfd(super::linux::PidFd::open(id.pid).ok()?),
            #[cfg(target_os = "macos")]
            _ => match super::macos::ExitQueue::open(id.pid) {
                Ok(q) => Kind::Kqueue(q),
                Err(_) => Kind::Polled,
            },
            #[cfg(not(target_os = "macos"))]
            _ => Kind::Polled,
        };
        // The handle pins the process (pidfd, kqueue registration), so
        // checking identity after opening closes the race where the pid is
        // recycled between our check and our open.
        (id.liveness() == Liveness::Alive).then_some(Handle { id: *id, kind })
    }

    /// A handle on our own freshly spawned, unreaped child. A child can
    /// always be watched through SIGCHLD, so a pidfd that cannot be opened
    /// now (descriptors exhausted) falls back to that. Fails only if neither
    /// works; the caller must then stop the child.
    pub fn child(child: &std::process::Child) -> io::Result<Handle> {
        let pid = child.id();
        // Unreaped, so neither its pid nor its identity can change.
        let id = ProcessId::of(pid).unwrap_or(ProcessId { pid, start_time: 0 });
        let kind = match backend::current() {
            #[cfg(target_os = "linux")]
            backend::Backend::Pidfd => match super::linux::PidFd::open(pid) {
                Ok(fd) => Kind::Pidfd(fd),
                Err(_) => Kind::Child(portable::child_exits()?),
            },
            _ => Kind::Child(portable::child_exits()?),
        };
        Ok(Handle { id, kind })
    }

    pub fn id(&self) -> ProcessId {
        self.id
    }

    /// A descriptor that becomes readable when the process (may have)
    /// exited, or None when it can only be checked every
    /// [`POLL_INTERVAL`](portable::POLL_INTERVAL). Readable is a hint:
    /// confirm with [`has_exited`](Handle::has_exited).
    pub fn exit_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.kind {
            #[cfg(target_os = "linux")]
            Kind::Pidfd(fd) => Some(fd.as_fd()),
            #[cfg(target_os = "macos")]
            Kind::Kqueue(q) => Some(q.as_fd()),
            Kind::Child(pipe) => Some(*pipe),
            Kind::Polled => None,
        }
    }

    /// True once the process has exited (non-blocking). Also re-arms the
    /// descriptor of [`exit_fd`](Handle::exit_fd) when it was a false alarm.
    pub fn has_exited(&self) -> bool {
        match &self.kind {
            #[cfg(target_os = "linux")]
            Kind::Pidfd(fd) => fd.has_exited(),
            #[cfg(target_os = "macos")]
            Kind::Kqueue(q) => q.fired() || !self.id.is_alive_uncached(),
            Kind::Child(pipe) => {
                portable::drain_child_exits(*pipe);
                // Our unreaped child keeps its pid, so a plain look (no
                // start time to compare) is exact: a zombie is dead. It
                // backs up waitid, whose WNOWAIT some systems honour poorly.
                portable::child_exited(self.id.pid)
                    || super::os::probe(self.id.pid) == super::Probe::Dead
            }
            Kind::Polled => !self.id.is_alive_uncached(),
        }
    }

    /// Signal the process itself.
    pub fn signal(&self, sig: libc::c_int) -> io::Result<()> {
        refuse_init(self.id.pid)?;
        match &self.kind {
            #[cfg(target_os = "linux")]
            Kind::Pidfd(fd) => fd.signal(sig),
            // Unreaped (the caller reaps only after its last signal): its
            // pid cannot have been reused.
            Kind::Child(_) => kill(self.id.pid as libc::pid_t, sig),
            // Check identity right before the signal: the closest a system
            // without pidfd gets to signalling exactly this process.
            _ if self.has_exited() => Ok(()),
            _ => kill(self.id.pid as libc::pid_t, sig),
        }
    }

    /// Signal every process in the group this process leads. The group id
    /// stays taken while its leader exists, so the leader's identity (the
    /// handle) vouches for the group.
    pub fn signal_group(&self, sig: libc::c_int) -> io::Result<()> {
        refuse_init(self.id.pid)?;
        // An exited but unreaped child still holds its group id, and the
        // rest of its group may live on: signal it.
        let leader_gone = match &self.kind {
            Kind::Child(_) => false,
            _ => self.has_exited(),
        };
        if leader_gone {
            return Ok(());
        }
        match kill(-(self.id.pid as libc::pid_t), sig) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other,
        }
    }

    /// Wait until the process exits or `timeout` passes; true if it exited.
    /// A caller waiting in the foreground looks at a process with no exit
    /// event more often than the watcher does: from 1 ms, backing off to
    /// 20 ms.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        self.wait_exit_serving(timeout, Duration::from_millis(20), None)
    }

    /// Wait until the process exits or `timeout` passes; true if it exited.
    /// Meanwhile `work` is served whenever its descriptor is readable (the
    /// watcher copies the server's output, so a server that logs on its way
    /// out never blocks on the pipe). A process with no exit event is looked
    /// at from 1 ms on, backing off to `max_pause`.
    pub fn wait_exit_serving(
        &self,
        timeout: Duration,
        max_pause: Duration,
        mut work: Option<&mut dyn Served>,
    ) -> bool {
        use nix::poll::{poll, PollFd, PollFlags};
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            if self.has_exited() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut fds = Vec::with_capacity(2);
            if let Some(w) = &work {
                fds.push(PollFd::new(w.fd(), PollFlags::POLLIN));
            }
            let step = match self.exit_fd() {
                Some(fd) => {
                    fds.push(PollFd::new(fd, PollFlags::POLLIN));
                    left
                }
                None => {
                    let step = left.min(pause);
                    pause = (pause * 2).min(max_pause);
                    step
                }
            };
            let _ = poll(&mut fds, poll_timeout(Some(step)));
            drop(fds);
            if let Some(w) = work.as_deref_mut() {
                w.serve();
            }
        }
    }
}

/// Work to keep doing while waiting for an exit (see
/// [`Handle::wait_exit_serving`]).
pub trait Served {
    /// Readable when there is work to do.
    fn fd(&self) -> BorrowedFd<'_>;
    fn serve(&mut self);
}

/// A poll(2) timeout from a duration, rounded up so that a caller never
/// wakes just before its deadline and spins.
pub fn poll_timeout(timeout: Option<Duration>) -> nix::poll::PollTimeout {
    use nix::poll::PollTimeout;
    match timeout {
        None => PollTimeout::NONE,
        Some(t) => {
            PollTimeout::try_from((t.as_micros().div_ceil(1000)).min(i32::MAX as u128) as i32)
                .unwrap_or(PollTimeout::MAX)
        }
    }
}

/// kill(-1) signals every process we may signal, and pid 1 is init: no
/// record, however forged, may lead us there.
fn refuse_init(pid: u32) -> io::Result<()> {
    if pid <= 1 || pid > i32::MAX as u32 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal pid {pid} (never init, never every process)"),
        ));
    }
    Ok(())
}

fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall.
    if unsafe { libc::kill(pid, sig) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
