//! The server's orphans: processes it started and left behind (a daemon's
//! child in a session of its own, a grandchild whose parent exited).
//!
//! On Linux the watcher is their child subreaper, so they become its
//! children whatever they did to themselves. The tag in their environment
//! (see `process::tagged`) cannot find them all: redis, for one, writes its
//! process title over its environment, and took the tag with it. Our own
//! child is also the one process we may signal without a doubt about who it
//! is: its pid cannot be reused before we reap it.
//!
//! Elsewhere there is no subreaper: every function here then finds nothing,
//! and the tag stays the only way.

use std::os::fd::BorrowedFd;

/// Make this process the subreaper of everything it starts from now on.
/// Called once, before the server is spawned.
pub(super) fn adopt() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Our children that we did not spawn ourselves (`ours`: the server, a
/// running readiness probe): orphans handed to us.
pub(super) fn list(ours: &[u32]) -> Vec<u32> {
    children()
        .into_iter()
        .filter(|pid| !ours.contains(pid))
        .collect()
}

/// A descriptor that is readable once a child of ours exited (SIGCHLD),
/// for the watcher to sleep on: an orphan announces its exit no other way.
/// Only where there is a subreaper.
pub(super) fn exits() -> Option<BorrowedFd<'static>> {
    if cfg!(target_os = "linux") {
        crate::process::child_exits().ok()
    } else {
        None
    }
}

/// Reap the orphans that have exited, so that none piles up as a zombie
/// under a watcher that runs for months. Never touches `ours`, whose
/// status their own code collects.
pub(super) fn reap(ours: &[u32]) {
    if let Some(fd) = exits() {
        crate::process::drain_child_exits(fd);
    }
    for pid in list(ours) {
        reap_one(pid);
    }
}

/// Reap `pid` if it has exited (one of our orphans: see [`list`]).
pub(super) fn reap_one(pid: u32) {
    // SAFETY: plain syscall; WNOHANG never blocks.
    unsafe {
        libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG);
    }
}

#[cfg(target_os = "linux")]
fn children() -> Vec<u32> {
    // Each thread has its own list: an orphan goes to whichever thread of
    // the subreaper is alive.
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return vec![];
    };
    let mut pids = Vec::new();
    for task in tasks.flatten() {
        match std::fs::read_to_string(task.path().join("children")) {
            Ok(list) => pids.extend(
                list.split_ascii_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            ),
            // A kernel built without CONFIG_PROC_CHILDREN.
            Err(_) => return children_by_scan(),
        }
    }
    pids
}

/// Every process whose parent is this one, found in /proc (the slow way).
#[cfg(target_os = "linux")]
fn children_by_scan() -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()))
        .filter(|&pid| crate::process::parent_of(pid) == Some(me))
        .collect()
}

#[cfg(not(target_os = "linux"))]
fn children() -> Vec<u32> {
    vec![]
}
