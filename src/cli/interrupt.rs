//! Ctrl-C (or SIGTERM, SIGHUP) while `use`, `use --all` or `exec` attaches:
//! the interrupted call undoes its own attaches, stops each server it
//! started that nobody else has joined, says so in one line per server,
//! then dies of the signal.

use sharedserver::record::DEFAULT_STOP_TIMEOUT;
use sharedserver::{Error, Lifecycle, ServerName};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// The signal that arrived (0: none). The handler only records it; the
/// waits act on it.
static CAUGHT: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    CAUGHT.store(sig, Ordering::SeqCst);
}

/// The dispositions [`catch`] replaced, restored when the guard goes (a
/// command `exec` runs keeps a SIGINT its caller ignored, as under `&` in a
/// script).
static BEFORE: [AtomicUsize; 3] = [const { AtomicUsize::new(libc::SIG_DFL) }; 3];

/// From now on the signals are caught (recorded for [`caught`] and
/// [`Armed::check`]) instead of ending the call. Called before attaching:
/// a record is visible to others before the attach returns, and a signal
/// that came meanwhile must still undo it, not end the call half done. A
/// signal the caller ignores stays ignored.
pub fn catch() {
    for (sig, before) in SIGNALS.into_iter().zip(&BEFORE) {
        // SAFETY: the handler only stores to an atomic.
        let old = unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
        if old == libc::SIG_IGN {
            // SAFETY: putting back the disposition we found.
            unsafe { libc::signal(sig, libc::SIG_IGN) };
        }
        if old != libc::SIG_ERR && old != on_signal as *const () as libc::sighandler_t {
            before.store(old, Ordering::SeqCst);
        }
    }
}

/// Whether one of the signals has arrived since [`catch`].
pub fn caught() -> bool {
    CAUGHT.load(Ordering::SeqCst) != 0
}

/// What an interrupted call must undo: the client it attached, and the
/// servers it attached it to, each with whether this call started it.
pub struct Armed {
    pub lc: Lifecycle,
    pub client: u32,
    pub held: Vec<(ServerName, bool)>,
}

impl Armed {
    /// If a signal came: undo the attaches, and die of the signal.
    pub fn check(&self) {
        let sig = CAUGHT.load(Ordering::SeqCst);
        if sig == 0 {
            return;
        }
        // Over the progress line, on a terminal.
        let clear = if std::io::stderr().is_terminal() {
            "\r\x1b[2K"
        } else {
            ""
        };
        for (name, started) in &self.held {
            let _ = self.lc.detach(name, self.client);
            let stopped = *started
                && match self.lc.stop(name, false, DEFAULT_STOP_TIMEOUT) {
                    Ok(_) => true,
                    // The detach already stopped it (no grace period).
                    Err(Error::NotRunning(_)) => true,
                    // Refused (InUse) when another client has joined meanwhile.
                    Err(_) => false,
                };
            note!(
                "{clear}sharedserver: interrupted; detached from '{name}'{}",
                if stopped { " and stopped it" } else { "" }
            );
        }
        if self.held.is_empty() {
            note!("{clear}sharedserver: interrupted; attached to nothing");
        }
        // SAFETY: restoring the default disposition, then dying of it.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
        std::process::exit(128 + sig);
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        // A signal between the last look and now still undoes the attaches.
        self.check();
        for (sig, before) in SIGNALS.into_iter().zip(&BEFORE) {
            // SAFETY: restoring the disposition `catch` found.
            unsafe { libc::signal(sig, before.load(Ordering::SeqCst)) };
        }
    }
}
