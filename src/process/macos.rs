//! macOS: identity from `proc_pidinfo(PROC_PIDTBSDINFO)`, exit events from
//! kqueue (`EVFILT_PROC`/`NOTE_EXIT`). Only APIs that `libc` declares for
//! this target, so the code compiles by construction; it is built and tested
//! by the CI workflow, not on the development machines.

use super::Probe;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// What the OS says about `pid`: its start time (seconds and microseconds
/// since the epoch, as one number), dead (no such process, or a zombie), or
/// unknown (any other failure).
pub fn probe(pid: u32) -> Probe {
    // SAFETY: zeroed proc_bsdinfo is a valid out-buffer of the size we pass.
    let mut info: libc::proc_bsdinfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::proc_bsdinfo>() as libc::c_int;
    // SAFETY: the buffer is valid for `size` bytes.
    let n = unsafe {
        libc::proc_pidinfo(
            pid as libc::c_int,
            libc::PROC_PIDTBSDINFO,
            0,
            (&mut info as *mut libc::proc_bsdinfo).cast(),
            size,
        )
    };
    if n != size {
        return match io::Error::last_os_error().raw_os_error() {
            Some(libc::ESRCH) => Probe::Dead,
            _ => Probe::Unknown,
        };
    }
    if info.pbi_status == libc::SZOMB {
        return Probe::Dead;
    }
    Probe::Alive(info.pbi_start_tvsec * 1_000_000 + info.pbi_start_tvusec)
}

pub fn start_time(pid: u32) -> Option<u64> {
    match probe(pid) {
        Probe::Alive(t) => Some(t),
        _ => None,
    }
}

/// A pid on macOS always names a process (thread ids are another
/// namespace).
pub fn thread_group(pid: u32) -> io::Result<u32> {
    Ok(pid)
}

/// The environment a process started with (NUL-separated), from
/// `sysctl(KERN_PROCARGS2)`: argc, the executable path, padding, argv, then
/// the environment. Readable for our own user's processes.
pub fn environ(pid: u32) -> Option<Vec<u8>> {
    let mut mib = [libc::CTL_KERN, libc::KERN_PROCARGS2, pid as libc::c_int];
    let mut size: libc::size_t = 0;
    // SAFETY: a size query: no output buffer.
    let rc = unsafe {
        libc::sysctl(
            mib.as_mut_ptr(),
            3,
            std::ptr::null_mut(),
            &mut size,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc < 0 || size < 4 {
        return None;
    }
    let mut buf = vec![0u8; size];
    // SAFETY: the buffer is valid for `size` bytes.
    let rc = unsafe {
        libc::sysctl(
            mib.as_mut_ptr(),
            3,
            buf.as_mut_ptr().cast(),
            &mut size,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc < 0 || size < 4 {
        return None;
    }
    buf.truncate(size);
    let argc = i32::from_ne_bytes(buf[..4].try_into().ok()?);
    let mut rest = &buf[4..];
    // The executable path, then the NULs that pad it.
    rest = &rest[rest.iter().position(|&b| b == 0)?..];
    rest = &rest[rest.iter().position(|&b| b != 0)?..];
    for _ in 0..argc {
        rest = &rest[rest.iter().position(|&b| b == 0)? + 1..];
    }
    // The environment ends at the first empty string.
    let end = rest
        .windows(2)
        .position(|w| w == [0, 0])
        .map_or(rest.len(), |p| p + 1);
    Some(rest[..end].to_vec())
}

/// Thread states are not read on macOS: never idle, so a start-up check
/// runs its whole window.
pub fn tree_idle(_pid: u32) -> bool {
    false
}

/// A kqueue with one registration: the exit of one process. The queue
/// descriptor is readable once the event is pending.
#[derive(Debug)]
pub struct ExitQueue(OwnedFd);

impl ExitQueue {
    pub fn open(pid: u32) -> io::Result<ExitQueue> {
        // SAFETY: plain syscall; on success it returns a new owned fd.
        let kq = unsafe { libc::kqueue() };
        if kq < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: kq is a fresh descriptor we own.
        let queue = ExitQueue(unsafe { OwnedFd::from_raw_fd(kq) });
        // SAFETY: plain fcntl on our descriptor.
        unsafe { libc::fcntl(kq, libc::F_SETFD, libc::FD_CLOEXEC) };
        // SAFETY: zeroed kevent is valid; we fill in the fields we use.
        let mut change: libc::kevent = unsafe { std::mem::zeroed() };
        change.ident = pid as libc::uintptr_t;
        change.filter = libc::EVFILT_PROC;
        change.flags = libc::EV_ADD | libc::EV_ONESHOT;
        change.fflags = libc::NOTE_EXIT;
        // SAFETY: one valid change, no events requested.
        let rc = unsafe { libc::kevent(kq, &change, 1, std::ptr::null_mut(), 0, std::ptr::null()) };
        if rc < 0 {
            // ESRCH: already gone. The caller falls back to start-time
            // checks, which then say dead.
            return Err(io::Error::last_os_error());
        }
        Ok(queue)
    }

    /// True if the exit event is pending (non-blocking; does not consume it,
    /// so the queue stays readable and the answer stays true).
    pub fn fired(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }
}

impl AsFd for ExitQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for ExitQueue {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}
