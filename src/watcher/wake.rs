//! The wake FIFO (`NAME.wake`), both sides of it. Callers that changed a
//! record poke it; the watcher sleeps on it. A reader on it is the proof
//! that a watcher owns the name (see [`listening`]).

use crate::error::{Error, Result};
use crate::name::ServerName;
use crate::store::Store;
use nix::poll::{poll, PollFd};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

/// The byte a poke writes: routine changes may be coalesced, urgent not.
const ROUTINE: u8 = b'!';
const URGENT: u8 = b'S';
/// Urgent too: `admin kill` killed the server without the lock (a stuck
/// holder had it), so it could not record why. See [`poke_killed`].
const KILLED: u8 = b'K';
/// A burst of pokes ends after this much quiet...
const POKE_QUIET: Duration = Duration::from_millis(2);
/// ...or after this long in all, whichever comes first.
const POKE_MAX: Duration = Duration::from_millis(20);

/// True if a watcher runs for `name`: it holds the wake FIFO open for
/// reading, and opening a FIFO to write without blocking fails (ENXIO)
/// exactly when nobody reads it. Needs no record and cannot be fooled by a
/// recycled pid.
pub fn listening(store: &Store, name: &ServerName) -> bool {
    use std::os::unix::fs::FileTypeExt;
    open_writer(store, name).is_ok_and(|f| f.metadata().is_ok_and(|m| m.file_type().is_fifo()))
}

/// Wake the watcher of `name`, if any. Never blocks, never fails loudly: a
/// full FIFO already holds a pending wake-up, and a missing one has no reader.
pub fn poke(store: &Store, name: &ServerName) {
    send(store, name, ROUTINE);
}

/// Wake the watcher for something that must not wait for a burst of pokes
/// to end (a stop request, a repair).
pub fn poke_now(store: &Store, name: &ServerName) {
    send(store, name, URGENT);
}

/// Tell the watcher that the SIGKILL about to reach its server is a kill on
/// request: its exit must be recorded as such, and never restarted.
pub fn poke_killed(store: &Store, name: &ServerName) {
    send(store, name, KILLED);
}

/// Write-only, so that `listening` stays exact: a poker holding a read end
/// would look like a watcher.
fn open_writer(store: &Store, name: &ServerName) -> std::io::Result<File> {
    store.open_at(
        &format!("{name}.wake"),
        libc::O_WRONLY | libc::O_NONBLOCK,
        0,
    )
}

fn send(store: &Store, name: &ServerName, byte: u8) {
    // The watcher may exit between our open and our write, hence
    // pipe::write_all.
    if let Ok(mut f) = open_writer(store, name) {
        let _ = crate::pipe::write_all(&mut f, &[byte]);
    }
}

/// The watcher's end.
pub(super) struct Wake(File, std::cell::Cell<bool>);

impl Wake {
    /// Create the FIFO if needed and open it to read. Only a committed
    /// watcher does this: callers take a reader as proof of ownership.
    pub(super) fn open(store: &Store, name: &ServerName) -> Result<Wake> {
        let file = format!("{name}.wake");
        let path = store.path(name, "wake");
        store
            .mkfifo_at(&file)
            .map_err(|e| Error::io(&path, "creating wake fifo", e))?;
        // Read-write so the FIFO never reports EOF when pokers come and go.
        let fifo = store
            .open_at(&file, libc::O_RDWR | libc::O_NONBLOCK, 0)
            .map_err(|e| Error::io(&path, "opening wake fifo", e))?;
        crate::pipe::check_fifo(&fifo, &path)?;
        Ok(Wake(fifo, std::cell::Cell::new(false)))
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// Many pokes between ticks collapse into one tick. Returns true if
    /// one of them was urgent.
    fn drain(&self) -> bool {
        let mut buf = [0u8; 256];
        let mut urgent = false;
        while let Ok(n @ 1..) = (&self.0).read(&mut buf) {
            let killed = buf[..n].contains(&KILLED);
            self.1.set(self.1.get() || killed);
            urgent |= killed || buf[..n].contains(&URGENT);
        }
        urgent
    }

    /// Whether a [`poke_killed`] came since the last call.
    pub(super) fn take_killed(&self) -> bool {
        self.1.replace(false)
    }

    /// After a `poll` on `fds` (whose first entry is this FIFO) returned.
    ///
    /// A poke means a client changed the record, and the record is
    /// already settled by that client. Callers often come in bursts (an
    /// attach and a detach, or many editors at once), and a tick per
    /// poke would only compete with them for the lock. So a poke alone
    /// waits for the burst to end: until no poke for POKE_QUIET, or
    /// POKE_MAX at most. A process exit or server output never waits.
    pub(super) fn coalesce(&self, fds: &mut [PollFd]) {
        let only_poked = |fds: &[PollFd]| {
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            ready(&fds[0]) && !fds[1..].iter().any(ready)
        };
        let burst_end = Instant::now() + POKE_MAX;
        while only_poked(fds) {
            if self.drain() {
                return; // an urgent poke: tick now
            }
            let left = burst_end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let quiet = crate::process::poll_timeout(Some(left.min(POKE_QUIET)));
            if !matches!(poll(fds, quiet), Ok(n) if n > 0) {
                break;
            }
        }
        self.drain();
    }
}
