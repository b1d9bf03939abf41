//! Fallback for systems without /proc and pidfd. Identity degrades to "the
//! pid exists" (start time 0), and waiting falls back to polling; the Linux
//! build is the supported one.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

pub fn start_time(pid: u32) -> Option<u64> {
    match probe(pid) {
        Probe::Alive(t) => Some(t),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Alive(u64),
    Dead,
    Unknown,
}

/// Only ESRCH proves death; EPERM means it exists but is not ours.
pub fn probe(pid: u32) -> Probe {
    // SAFETY: signal 0 only checks existence.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    match io::Error::last_os_error().raw_os_error() {
        _ if rc == 0 => Probe::Alive(0),
        Some(libc::EPERM) => Probe::Alive(0),
        Some(libc::ESRCH) => Probe::Dead,
        _ => Probe::Unknown,
    }
}

/// Without /proc there is no portable way to read it: nothing is tagged,
/// so nothing outside our own children is ever signalled.
pub fn environ(_pid: u32) -> Option<Vec<u8>> {
    None
}

/// Without /proc, threads cannot be named by a pid here anyway.
pub fn thread_group(pid: u32) -> io::Result<u32> {
    Ok(pid)
}

pub(super) fn refuse_init(pid: u32) -> io::Result<()> {
    if pid <= 1 || pid > i32::MAX as u32 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal pid {pid} (never init, never every process)"),
        ));
    }
    Ok(())
}

/// Without /proc the tree cannot be inspected: never idle, so a start-up
/// check runs its whole window.
pub fn tree_idle(_pid: u32) -> bool {
    false
}

#[derive(Debug)]
pub struct PidFd(OwnedFd, u32);

impl PidFd {
    pub fn open(_pid: u32) -> io::Result<PidFd> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "pidfd needs Linux 5.3+",
        ))
    }
    pub fn signal(&self, sig: libc::c_int) -> io::Result<()> {
        // SAFETY: plain syscall.
        if unsafe { libc::kill(self.1 as libc::pid_t, sig) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    pub fn has_exited(&self) -> bool {
        start_time(self.1).is_none()
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

pub fn signal_group(_leader: &PidFd, leader_pid: u32, sig: libc::c_int) -> io::Result<()> {
    refuse_init(leader_pid)?;
    // SAFETY: plain syscall.
    if unsafe { libc::kill(-(leader_pid as libc::pid_t), sig) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
