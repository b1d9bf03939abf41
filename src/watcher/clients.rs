//! The watcher's hold on the server's clients: one exit handle per recorded
//! client (a pidfd, or a kqueue on macOS) while the descriptor budget lasts,
//! and how their changes read in the journal.

use crate::process::{Handle, ProcessId};
use crate::record::{Client, Record};
use std::collections::HashMap;
use std::time::Duration;

/// How often clients without a handle (over the descriptor budget, or one
/// that could not be opened) are checked by polling instead.
pub(super) const POLL_UNWATCHED: Duration = Duration::from_secs(1);
/// Descriptors kept free for everything but client handles: the record, the
/// lock, /proc reads, probes, log rotation.
const FD_RESERVE: u64 = 32;

pub(super) struct Clients {
    held: HashMap<ProcessId, Handle>,
    /// Most client descriptors we hold (from RLIMIT_NOFILE); the rest are
    /// polled.
    budget: usize,
    /// Recorded clients we hold no handle for, checked every POLL_UNWATCHED.
    unwatched: usize,
}

impl Clients {
    pub(super) fn new() -> Self {
        Clients {
            held: HashMap::new(),
            budget: fd_budget(),
            unwatched: 0,
        }
    }

    /// Keep exactly one handle per client of `rec`. Returns true if one of
    /// them is already dead (the caller should tick again at once).
    pub(super) fn watch(&mut self, rec: &Record) -> bool {
        self.held
            .retain(|id, _| rec.clients.iter().any(|c| c.id == *id));
        let mut died = false;
        self.unwatched = 0;
        for c in &rec.clients {
            if self.held.contains_key(&c.id) {
                continue;
            }
            let with_fd = self.held.values().filter(|h| h.exit_fd().is_some());
            let handle = (with_fd.count() < self.budget)
                .then(|| c.id.open())
                .flatten();
            match handle {
                Some(handle) => {
                    self.held.insert(c.id, handle);
                }
                None if !c.id.is_alive_uncached() => died = true,
                // Alive, or not provably dead (EMFILE): keep it and poll.
                None => self.unwatched += 1,
            }
        }
        died
    }

    /// Whether client `id` still runs. One we hold a handle for is judged by
    /// it (exact, even if its pid was reused); any other only when /proc
    /// proves it dead.
    pub(super) fn alive(&self, id: &ProcessId) -> bool {
        match self.held.get(id) {
            Some(handle) => !handle.has_exited(),
            None => id.is_alive_uncached(),
        }
    }

    /// The handles to wait on.
    pub(super) fn handles(&self) -> impl Iterator<Item = &Handle> {
        self.held.values()
    }

    /// How long the watcher may sleep for their sake: POLL_UNWATCHED while
    /// some have no handle, else as long as it likes.
    pub(super) fn poll_interval(&self) -> Option<Duration> {
        (self.unwatched > 0).then_some(POLL_UNWATCHED)
    }
}

/// The journal lines for how the clients changed: `known` (as last
/// written), `as_read` (attached and detached by callers since) and `now`
/// (dead ones pruned just now). The watcher sees every change, so callers
/// need not log their own.
pub(super) fn changes(known: &[Client], as_read: &[Client], now: &Record) -> Vec<String> {
    let had = |list: &[Client], c: &Client| list.iter().any(|o| o.id == c.id);
    let n = now.clients.len();
    let mut lines = Vec::new();
    for c in as_read.iter().filter(|c| !had(known, c)) {
        let meta = c
            .metadata
            .as_deref()
            .map(|m| format!(" [{m}]"))
            .unwrap_or_default();
        lines.push(format!("client {} attached{meta} (refcount {n})", c.id.pid));
    }
    for c in known.iter().filter(|c| !had(as_read, c)) {
        lines.push(format!("client {} detached (refcount {n})", c.id.pid));
    }
    for c in as_read.iter().filter(|c| !had(&now.clients, c)) {
        lines.push(format!("client {} died (refcount {n})", c.id.pid));
    }
    lines
}

/// How many client handles fit under the soft descriptor limit (raised to
/// the hard one at watcher start), keeping FD_RESERVE free.
fn fd_budget() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft);
    soft.saturating_sub(FD_RESERVE).min(usize::MAX as u64) as usize
}
