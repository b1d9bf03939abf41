//! Linux: identity from /proc/<pid>/stat, waiting and signalling via pidfd.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Field 22 of /proc/<pid>/stat (starttime), or None if the process does not
/// exist or is a zombie.
pub fn start_time(pid: u32) -> Option<u64> {
    let mut buf = [0u8; 1024];
    let stat = read_small(&format!("/proc/{pid}/stat"), &mut buf)?;
    // The command name (field 2) may contain spaces and ')', so parse from
    // the last ')'. After it: state is field 3, starttime is field 22.
    let rest = &stat[stat.iter().rposition(|&b| b == b')')? + 1..];
    let rest = std::str::from_utf8(rest).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

fn read_small<'a>(path: &str, buf: &'a mut [u8]) -> Option<&'a [u8]> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(_) => return None,
        }
    }
    Some(&buf[..len])
}

/// A process descriptor: becomes readable when the process exits, and can be
/// signalled without any risk of hitting a recycled pid.
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    pub fn open(pid: u32) -> io::Result<PidFd> {
        // SAFETY: plain syscall; on success it returns a new owned fd.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // pidfd_open sets O_CLOEXEC itself.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    pub fn signal(&self, sig: libc::c_int) -> io::Result<()> {
        // SAFETY: the fd is valid for the life of self.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// True once the process has exited (non-blocking).
    pub fn has_exited(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Signal every process in the group led by `leader`. The caller holds a
/// pidfd for the leader (or is its unreaping parent), so the group id cannot
/// have been recycled: a group id stays taken while its leader exists.
pub fn signal_group(leader: &PidFd, leader_pid: u32, sig: libc::c_int) -> io::Result<()> {
    if leader.has_exited() {
        // Leader gone: signal only through the pidfd-safe path (a no-op now).
        return leader.signal(sig).or(Ok(()));
    }
    // SAFETY: plain syscall.
    let rc = unsafe { libc::kill(-(leader_pid as libc::pid_t), sig) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(err);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_start_time() {
        assert!(start_time(std::process::id()).is_some());
        assert!(start_time(u32::MAX / 2).is_none());
    }
}
