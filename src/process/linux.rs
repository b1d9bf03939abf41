//! Linux: identity from /proc/<pid>/stat, waiting and signalling via pidfd.

use super::Probe;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// What /proc says about `pid`: its start time (field 22 of stat), or that
/// it is dead (no such process, or a zombie), or that we cannot tell (any
/// other error: descriptors exhausted, memory, a permission we lack).
pub fn probe(pid: u32) -> Probe {
    let mut buf = [0u8; 1024];
    let stat = match read_small(&format!("/proc/{pid}/stat"), &mut buf) {
        Ok(stat) => stat,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => {
            return Probe::Dead
        }
        Err(_) => return Probe::Unknown,
    };
    let Some((state, mut fields)) = parse_stat(stat) else {
        return Probe::Unknown;
    };
    if state == "Z" || state == "X" {
        return Probe::Dead;
    }
    // After the state (field 3), starttime is field 22.
    match fields.nth(18).and_then(|t| t.parse().ok()) {
        Some(t) => Probe::Alive(t),
        None => Probe::Unknown,
    }
}

/// Field 22 of /proc/<pid>/stat (starttime), or None if the process does not
/// exist, is a zombie, or cannot be read.
pub fn start_time(pid: u32) -> Option<u64> {
    match probe(pid) {
        Probe::Alive(t) => Some(t),
        _ => None,
    }
}

/// The process (thread group) that thread `pid` belongs to: `pid` itself
/// for a process. /proc/TID exists for every thread, so the stat file alone
/// cannot tell a thread from a process.
pub fn thread_group(pid: u32) -> io::Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|t| t.trim().parse::<u32>().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Tgid line"))
}

/// The environment a process started with (NUL-separated), if readable.
pub fn environ(pid: u32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/environ")).ok()
}

/// The parent of `pid` (field 4 of its stat file), if it runs.
pub fn parent_of(pid: u32) -> Option<u32> {
    let mut buf = [0u8; 512];
    let (_, mut fields) = stat_fields(&format!("/proc/{pid}/stat"), &mut buf)?;
    fields.next()?.parse().ok()
}

/// The state letter (field 3) of a stat file, and the fields after it.
fn stat_fields<'a>(
    path: &str,
    buf: &'a mut [u8],
) -> Option<(&'a str, std::str::SplitAsciiWhitespace<'a>)> {
    parse_stat(read_small(path, buf).ok()?)
}

fn parse_stat(stat: &[u8]) -> Option<(&str, std::str::SplitAsciiWhitespace<'_>)> {
    // The command name (field 2) may contain spaces and ')', so parse from
    // the last ')'.
    let rest = &stat[stat.iter().rposition(|&b| b == b')')? + 1..];
    let mut fields = std::str::from_utf8(rest).ok()?.split_ascii_whitespace();
    Some((fields.next()?, fields))
}

/// Most threads a start-up check reads before it gives up on idleness
/// (every sample reads two files per thread).
const IDLE_SCAN_LIMIT: usize = 256;

/// True when every thread of `pid` and of all its descendants is asleep
/// (state S): the shape of a server that finished starting and now waits for
/// work. Anything else (running, in disk wait, stopped, a zombie child not
/// yet reaped, a tree too large to scan, a read that fails) answers false,
/// so a caller waiting for idleness only ever waits longer, never shorter.
pub fn tree_idle(pid: u32) -> bool {
    let mut pending = vec![pid];
    let mut threads = 0;
    while let Some(pid) = pending.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        for task in tasks {
            threads += 1;
            if threads > IDLE_SCAN_LIMIT {
                return false;
            }
            let Ok(task) = task else { return false };
            let dir = task.path();
            let mut buf = [0u8; 1024];
            match stat_fields(&format!("{}/stat", dir.display()), &mut buf) {
                Some(("S", _)) => {}
                _ => return false,
            }
            // Each thread lists the children it started itself.
            let Ok(children) = std::fs::read_to_string(dir.join("children")) else {
                return false;
            };
            for child in children.split_ascii_whitespace() {
                match child.parse() {
                    Ok(child) if pending.len() < IDLE_SCAN_LIMIT => pending.push(child),
                    _ => return false,
                }
            }
        }
    }
    true
}

fn read_small<'a>(path: &str, buf: &'a mut [u8]) -> io::Result<&'a [u8]> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            // These files are one line: once it has ended, a read for the
            // end of the file would only cost another system call.
            Ok(n) if buf[len + n - 1] == b'\n' => {
                len += n;
                break;
            }
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(&buf[..len])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_start_time() {
        assert!(start_time(std::process::id()).is_some());
        assert!(start_time(u32::MAX / 2).is_none());
    }

    /// Kills the process group it leads when the test ends, even by panic.
    struct Group(std::process::Child);

    impl Drop for Group {
        fn drop(&mut self) {
            // SAFETY: plain syscall on the group our unreaped child leads.
            unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }

    fn group(script: &str) -> Group {
        use std::os::unix::process::CommandExt;
        Group(
            std::process::Command::new("sh")
                .args(["-c", script])
                .process_group(0)
                .spawn()
                .unwrap(),
        )
    }

    #[test]
    fn a_sleeping_tree_is_idle_and_a_busy_one_is_not() {
        let sleeper = group("sleep 1000; :"); // sh waits for its child
        let spinner = group("while :; do :; done");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !tree_idle(sleeper.0.id()) {
            assert!(
                std::time::Instant::now() < deadline,
                "sh + sleep never idle"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // A busy loop is never asleep, however often we look.
        assert!((0..200).all(|_| !tree_idle(spinner.0.id())));
        assert!(!tree_idle(u32::MAX / 2), "a missing process is not idle");
    }
}
