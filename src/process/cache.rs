//! Liveness from descriptors we already hold.
//!
//! Reading /proc/PID/stat costs about 10 µs, because the kernel formats the
//! whole line. Long-lived callers (Neovim, the watcher) ask about the same few
//! processes again and again, so after the first check we keep a pidfd for a
//! live process. From then on "alive" is a zero-timeout poll on it, which
//! costs about 1 µs. A pidfd refers to one process for good, so the answer
//! is as exact as the /proc check, and a recycled pid cannot fool it.

use super::backend::{self, Backend};
use super::{Handle, ProcessId};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// Upper bound on cached descriptors; dead ones are dropped first.
const CAPACITY: usize = 512;

fn cache() -> &'static Mutex<HashMap<ProcessId, Handle>> {
    static CACHE: OnceLock<Mutex<HashMap<ProcessId, Handle>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

pub(super) fn is_alive(id: &ProcessId) -> bool {
    // Only a pidfd answers faster than a fresh look; the portable handles
    // would look anyway.
    if backend::current() != Backend::Pidfd {
        return id.is_alive_uncached();
    }
    let Ok(mut cache) = cache().lock() else {
        return id.is_alive_uncached();
    };
    if let Some(fd) = cache.get(id) {
        if !fd.has_exited() {
            return true;
        }
        cache.remove(id);
        return false;
    }
    // Opening checks identity after the descriptor exists: it then provably
    // refers to the process that has the recorded start time.
    let Some(fd) = Handle::open(id) else {
        return id.is_alive_uncached(); // gone, or no descriptor to spare
    };
    if cache.len() >= CAPACITY {
        cache.retain(|_, fd| !fd.has_exited());
        if cache.len() >= CAPACITY {
            cache.clear();
        }
    }
    cache.insert(*id, fd);
    true
}

/// This process's identity, read once per process (a forked child has
/// another pid, so it reads its own).
pub(super) fn current() -> ProcessId {
    static CURRENT: Mutex<Option<ProcessId>> = Mutex::new(None);
    let pid = std::process::id();
    if let Ok(mut cached) = CURRENT.lock() {
        if let Some(id) = cached.filter(|c| c.pid == pid) {
            return id;
        }
        let id = ProcessId::of(pid).unwrap_or(ProcessId { pid, start_time: 0 });
        *cached = Some(id);
        return id;
    }
    ProcessId::of(pid).unwrap_or(ProcessId { pid, start_time: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_process_turns_dead_when_it_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        let id = ProcessId::of(child.id()).unwrap();
        assert!(is_alive(&id));
        assert!(is_alive(&id), "second answer from the cached pidfd");
        let impostor = ProcessId {
            start_time: id.start_time + 1,
            ..id
        };
        assert!(!is_alive(&impostor), "same pid, other start time");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!is_alive(&id));
    }
}
