//! The portable backend's two mechanisms, for systems without pidfd.
//!
//! - Our own children (the watcher's server): SIGCHLD writes a byte to a
//!   self-pipe, which the watcher polls with its other descriptors; a
//!   `waitid(WNOWAIT)` then tells whether this child is the one that exited
//!   without reaping it. An unreaped child keeps its pid and its process
//!   group id, so signalling it (or its group) is as safe as with a pidfd.
//! - Any other process (clients, an adopted server): checked by pid plus
//!   start time every [`POLL_INTERVAL`], and only while there is one to
//!   check (macOS watches them with kqueue instead, see `macos.rs`).

use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// How often a process that announces its exit by no event is checked
/// (pid + start time). Only while such a process is watched: an idle
/// watcher with no clients never wakes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Write end of the SIGCHLD self-pipe, for the signal handler.
static WRITE_END: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigchld(_: libc::c_int) {
    let fd = WRITE_END.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) and errno access are async-signal-safe; errno is
        // restored so the interrupted code never sees ours.
        unsafe {
            let saved = std::io::Error::last_os_error().raw_os_error();
            libc::write(fd, b"c".as_ptr().cast(), 1);
            if let Some(e) = saved {
                set_errno(e);
            }
        }
    }
}

#[cfg(target_os = "linux")]
unsafe fn set_errno(e: libc::c_int) {
    *libc::__errno_location() = e;
}

#[cfg(target_os = "macos")]
unsafe fn set_errno(e: libc::c_int) {
    *libc::__error() = e;
}

/// The read end of the SIGCHLD self-pipe: readable after any child of this
/// process exited. Installs the handler on first use, so only a process
/// that asks (the watcher) changes its SIGCHLD disposition.
pub fn child_exits() -> std::io::Result<BorrowedFd<'static>> {
    static READ_END: OnceLock<std::result::Result<RawFd, i32>> = OnceLock::new();
    let fd = READ_END
        .get_or_init(|| install().map_err(|e| e.raw_os_error().unwrap_or(libc::EINVAL)))
        .map_err(std::io::Error::from_raw_os_error)?;
    // SAFETY: the read end stays open for the life of the process.
    Ok(unsafe { BorrowedFd::borrow_raw(fd) })
}

fn install() -> std::io::Result<RawFd> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let mut fds = [0; 2];
    // SAFETY: plain syscalls on descriptors we just created.
    unsafe {
        if libc::pipe(fds.as_mut_ptr()) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        for fd in fds {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
    WRITE_END.store(fds[1], Ordering::Relaxed);
    let action = SigAction::new(
        SigHandler::Handler(on_sigchld),
        SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    // SAFETY: the handler only calls async-signal-safe functions.
    unsafe { sigaction(Signal::SIGCHLD, &action) }.map_err(std::io::Error::from)?;
    Ok(fds[0])
}

/// Empty the self-pipe (before looking at the children it announced).
pub fn drain_child_exits(fd: BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 64];
    // SAFETY: reading into our own buffer from a non-blocking pipe.
    while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

/// True once our child `pid` has exited, without reaping it (the caller
/// reaps it, after signalling what is left of its group).
pub fn child_exited(pid: u32) -> bool {
    // SAFETY: zeroed siginfo is a valid out-parameter.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: plain syscall with a valid out-pointer.
    let rc = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
    if rc < 0 {
        // ECHILD: not (or no longer) our child, so it has exited for us.
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD);
    }
    // SAFETY: waitid filled in the pid field (0 if nothing has exited).
    unsafe { info.si_pid() != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    /// The self-pipe turns readable when a child exits, and `child_exited`
    /// says so without reaping it (the pid stays ours until `wait`).
    #[test]
    fn sigchld_wakes_the_pipe_and_the_child_stays_unreaped() {
        let pipe = child_exits().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        let pid = child.id();
        drain_child_exits(pipe);
        assert!(!child_exited(pid), "a running child has not exited");
        child.kill().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !child_exited(pid) {
            assert!(std::time::Instant::now() < deadline, "exit never seen");
            let mut fds = [PollFd::new(pipe, PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(100u16));
            drain_child_exits(pipe);
        }
        assert!(child_exited(pid), "still exited: nothing reaped it");
        let status = child.wait().unwrap();
        assert!(!status.success(), "killed, and reaped only now");
    }
}
