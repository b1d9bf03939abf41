//! How long a process waits for a name's lock, and who holds it.
//!
//! A lock holder that is stuck (stopped with SIGSTOP, hung on a bad file
//! system) would otherwise block every other command on the name forever,
//! without a word. The policy is the process's: the CLI waits a bounded
//! time and says whom it waits for; the Neovim module waits a few
//! milliseconds at most (a lock still busy then is `Error::LockBusy`, and
//! its Lua layer retries from a timer, so the editor is never frozen); the
//! watcher waits as long as it takes (it must record what it saw, and has
//! no one to tell).

use crate::error::{Error, Result};
use std::fs::File;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How this process waits for a lock that another process holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Until it is free (the default; the watcher's).
    Forever,
    /// At most `limit` (the CLI's, and the Neovim module's few
    /// milliseconds, after which its Lua layer retries from a timer); after
    /// `notice`, say on stderr whom we wait for.
    Bounded {
        limit: Duration,
        notice: Option<Duration>,
    },
}

/// The CLI's: a start holds the lock for its start-up check (seconds), so a
/// holder still there after this long is stuck.
pub const CLI_LIMIT: Duration = Duration::from_secs(30);
/// Overrides `CLI_LIMIT` (a duration such as `5s`).
pub const ENV_VAR: &str = "SHAREDSERVER_LOCK_TIMEOUT";

static POLICY: OnceLock<Policy> = OnceLock::new();

thread_local! {
    /// A shorter limit for one operation (see `within`).
    static LIMIT: std::cell::Cell<Option<Duration>> = const { std::cell::Cell::new(None) };
}

/// Run `f` waiting at most `limit` for any lock, whatever the policy: for an
/// operation that has a way around a stuck holder (`admin kill`).
pub fn within<T>(limit: Duration, f: impl FnOnce() -> T) -> T {
    let before = LIMIT.with(|l| l.replace(Some(limit)));
    let out = f();
    LIMIT.with(|l| l.set(before));
    out
}

/// Set this process's policy, once, before the first lock.
pub fn set_policy(policy: Policy) {
    let _ = POLICY.set(policy);
}

/// The CLI's policy: `CLI_LIMIT` (or `$SHAREDSERVER_LOCK_TIMEOUT`), saying
/// whom it waits for after a second.
pub fn cli_policy() -> Result<Policy> {
    let limit = match std::env::var(ENV_VAR) {
        Ok(text) if !text.is_empty() => {
            crate::duration::parse(&text).map_err(|e| Error::Other(format!("{ENV_VAR}: {e}")))?
        }
        _ => CLI_LIMIT,
    };
    Ok(Policy::Bounded {
        limit,
        notice: Some(Duration::from_secs(1)),
    })
}

/// Take the exclusive lock on `file` (the lock file at `path`, for `name`).
pub fn acquire(file: &File, path: &Path, name: &str) -> Result<()> {
    match fs4::fs_std::FileExt::try_lock_exclusive(file) {
        Ok(true) => return Ok(()),
        Ok(false) => {}
        Err(e) => return Err(Error::io(path, "locking", e)),
    }
    let policy = match LIMIT.with(|l| l.get()) {
        Some(limit) => Policy::Bounded {
            limit,
            notice: None,
        },
        None => POLICY.get().copied().unwrap_or(Policy::Forever),
    };
    let (limit, notice) = match policy {
        Policy::Forever => {
            return fs4::fs_std::FileExt::lock_exclusive(file)
                .map_err(|e| Error::io(path, "locking", e));
        }
        Policy::Bounded { limit, notice } => (limit, notice),
    };
    // A thread blocks in flock on a second descriptor of the same open file
    // (so the lock it gets is ours too): the wait costs nothing and ends the
    // moment the lock is free, and we stop waiting when the time is up. An
    // abandoned waiter that gets the lock later drops it at once.
    let waiter = file
        .try_clone()
        .map_err(|e| Error::io(path, "locking", e))?;
    let abandoned = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let abandoned = abandoned.clone();
        std::thread::spawn(move || {
            let got = fs4::fs_std::FileExt::lock_exclusive(&waiter);
            if !abandoned.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = tx.send(got);
            }
        });
    }
    let start = Instant::now();
    let mut told = false;
    loop {
        let until = match notice {
            Some(n) if !told && n < limit => n,
            _ => limit,
        };
        match rx.recv_timeout(until.saturating_sub(start.elapsed())) {
            Ok(got) => {
                if told {
                    note(format_args!("sharedserver: got the lock on '{name}'"));
                }
                return got.map_err(|e| Error::io(path, "locking", e));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::io(
                    path,
                    "locking",
                    std::io::Error::other("the waiting thread ended"),
                ));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if until < limit => {
                told = true;
                let who = Holder::of(file).map_or("another process".into(), |h| h.to_string());
                note(format_args!(
                    "sharedserver: waiting up to {} for the lock on '{name}', held by {who}",
                    crate::duration::format(limit)
                ));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                abandoned.store(true, std::sync::atomic::Ordering::SeqCst);
                // It may have come just now.
                if let Ok(got) = rx.try_recv() {
                    return got.map_err(|e| Error::io(path, "locking", e));
                }
                return Err(Error::LockBusy {
                    name: name.to_string(),
                    path: path.to_path_buf(),
                    holder: Holder::of(file),
                    waited: limit,
                });
            }
        }
    }
}

/// The process holding a lock, as far as it can be found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Holder {
    pub pid: u32,
    /// Its command name, when readable.
    pub comm: Option<String>,
    /// Stopped by a signal (SIGSTOP, Ctrl-Z) or a debugger.
    pub stopped: bool,
}

impl Holder {
    /// Who holds the flock on `file`: from /proc/locks (Linux only).
    pub fn of(file: &File) -> Option<Holder> {
        use std::os::unix::fs::MetadataExt;
        let ino = file.metadata().ok()?.ino();
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        let pid = holder_in(&locks, ino)?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|c| c.trim().to_string());
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        Some(Holder {
            pid,
            comm,
            stopped: matches!(state, Some('T' | 't')),
        })
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {}", self.pid)?;
        if let Some(comm) = &self.comm {
            write!(f, " ({comm})")?;
        }
        if self.stopped {
            write!(
                f,
                ", which is stopped (`kill -CONT {}` resumes it)",
                self.pid
            )?;
        }
        Ok(())
    }
}

/// The pid holding (not waiting for) the lock on inode `ino`, in the text
/// of /proc/locks: `1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF`.
fn holder_in(locks: &str, ino: u64) -> Option<u32> {
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Waiters are marked `->` after the number.
        if fields.get(1) == Some(&"->") {
            return None;
        }
        let dev_ino = fields.get(5)?;
        let (_, i) = dev_ino.rsplit_once(':')?;
        (i.parse::<u64>().ok()? == ino).then(|| fields.get(4)?.parse().ok())?
    })
}

/// One line on stderr for the person waiting; dropped if stderr cannot
/// be written (`eprintln!` would panic).
fn note(line: std::fmt::Arguments) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_read_from_proc_locks_and_waiters_are_skipped() {
        let locks = "1: FLOCK  ADVISORY  WRITE 4242 00:2a:77 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 4343 00:2a:77 0 EOF\n\
                     2: POSIX  ADVISORY  WRITE 99 08:01:12 0 EOF\n";
        assert_eq!(holder_in(locks, 77), Some(4242));
        assert_eq!(holder_in(locks, 12), Some(99));
        assert_eq!(holder_in(locks, 5), None);
        let waiters_only = "1: -> FLOCK  ADVISORY  WRITE 4343 00:2a:77 0 EOF\n";
        assert_eq!(holder_in(waiters_only, 77), None);
    }
}
