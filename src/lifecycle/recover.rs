//! Recovery: what the next command does about a dead watcher or a dead
//! server, and waiting for another process's stop to finish.

use super::Lifecycle;
use crate::duration;
use crate::error::{Error, Result};
use crate::name::ServerName;
use crate::record::{ExitKind, LastExit, Record, Termination};
use crate::spawn::{self, Hello, Launch};
use crate::store::Guard;
use std::time::{Duration, Instant};

impl Lifecycle {
    /// Read the record under the lock and repair what a crash left behind:
    /// a dead server's record is cleared; a live server whose watcher died
    /// gets a new watcher. Returns the record if a server is running.
    pub(crate) fn supervised(&self, guard: &Guard, name: &ServerName) -> Result<Option<Record>> {
        let Some(mut rec) = self.store.read(name)? else {
            return Ok(None);
        };
        let watcher_alive = rec.watcher.is_some_and(|w| w.is_alive());
        if watcher_alive {
            // A dead server under a live watcher is about to be cleaned up
            // (or restarted); callers see that through `dying`, and nothing
            // here is written back.
            return Ok(Some(rec));
        }
        if !rec.server.is_alive() {
            return self.clear_unsupervised(guard, name, &rec);
        }
        let Ok(exe) = self.exe() else {
            return Ok(Some(rec)); // cannot re-supervise from here; report as is
        };
        let launch = Launch {
            command: rec.command.clone(),
            env: rec.env.clone(),
            cwd: rec.cwd.clone(),
            log_file: crate::logs::path_for(
                &self.store,
                name,
                rec.log_file.as_deref().map(std::path::Path::new),
            )
            .to_string_lossy()
            .into_owned(),
            ready: rec.ready.clone(),
            startup_check_ms: 0,
            startup_check_fixed: false,
            adopt: Some(rec.server),
        };
        let handshake = spawn::watcher(&exe, self.store.dir(), name.as_str(), &launch)?;
        match handshake.hello.clone() {
            Hello::Ready {
                watcher, backend, ..
            } => {
                rec.watcher = Some(watcher);
                rec.backend = backend;
                rec.watcher_is_parent = false;
                self.store.write(guard, name, &rec)?;
                handshake.commit(&rec)?;
                self.store.journal(
                    name,
                    "recover",
                    &format!(
                        "watcher was gone; new watcher {} supervises pid {}",
                        watcher.pid, rec.server.pid
                    ),
                );
                Ok(Some(rec))
            }
            // It died while we were spawning its new watcher.
            _ => self.clear_unsupervised(guard, name, &rec),
        }
    }

    /// Whether `rec` names a server that is provably not ours: its process
    /// runs but lacks this name's tag (where environments can be read, see
    /// `process::tag_of`), and no watcher listens for the name. A forged
    /// record, or one whose pid was reused while nobody watched. Such a
    /// process is never signalled; doctor sets the record aside.
    pub fn not_ours(&self, name: &ServerName, rec: &Record) -> bool {
        let pid = rec.server.pid;
        rec.server.is_alive()
            && crate::process::tag_of(pid, name.as_str(), self.store.dir()) == Some(false)
            && !crate::watcher::listening(&self.store, name)
    }

    /// Repair what crashes left behind for `name`, under its lock: a dead
    /// server's record is cleared, a live server whose watcher died gets a
    /// new one, dead clients are dropped. Returns each repair made.
    pub fn repair(&self, name: &ServerName) -> Result<Vec<Repair>> {
        let guard = self.store.lock(name)?;
        let Some(before) = self.store.read(name)? else {
            return Ok(vec![]);
        };
        let mut repairs = Vec::new();
        let watcher_was_alive = before.watcher.is_some_and(|w| w.is_alive());
        let after = self.supervised(&guard, name)?;
        match &after {
            None => repairs.push(Repair::ClearedDeadServer {
                pid: before.server.pid,
            }),
            Some(rec) if !watcher_was_alive && rec.watcher != before.watcher => {
                repairs.push(Repair::RestoredWatcher {
                    pid: rec.server.pid,
                    watcher: rec.watcher.map_or(0, |w| w.pid),
                })
            }
            _ => {}
        }
        if let Some(mut rec) = after {
            let clients = rec.clients.len();
            if rec.settle(crate::record::now_ms(), |id| id.is_alive()) {
                self.store.write(&guard, name, &rec)?;
                let dropped = clients - rec.clients.len();
                if dropped > 0 {
                    repairs.push(Repair::DroppedClients(dropped));
                }
            }
            drop(guard);
            crate::watcher::poke_now(&self.store, name);
        }
        Ok(repairs)
    }

    pub(super) fn clear_unsupervised(
        &self,
        guard: &Guard,
        name: &ServerName,
        rec: &Record,
    ) -> Result<Option<Record>> {
        let reason = "exited while unsupervised (watcher was gone)";
        self.store.write_last(
            guard,
            name,
            &LastExit::of(rec, Termination::Unknown, ExitKind::Unsupervised, reason),
        )?;
        self.store.remove(guard, name)?;
        self.store.journal(
            name,
            "recover",
            "cleared record of a dead server whose watcher was gone",
        );
        Ok(None)
    }

    /// Wait until the record of `seen`'s server is gone (its stop finished),
    /// or its watcher died (so the caller's next lock pass can recover).
    pub(super) fn wait_gone(&self, name: &ServerName, seen: &Record) -> Result<()> {
        let budget = seen
            .stop
            .as_ref()
            .map_or(crate::record::DEFAULT_STOP_TIMEOUT, |s| {
                Duration::from_millis(s.timeout_ms)
            })
            + Duration::from_secs(10);
        let deadline = Instant::now() + budget;
        // Event-driven for the long part: the server's exit.
        if let Some(server) = seen.server.open() {
            server.wait_exit(deadline.saturating_duration_since(Instant::now()));
        }
        // Then the watcher's cleanup, which takes a moment after the exit.
        let gone = super::poll_until(Some(deadline), || {
            Ok(match self.store.read(name)? {
                Some(r) if r.server == seen.server => {
                    (!r.watcher.is_some_and(|w| w.is_alive())).then_some(())
                }
                _ => Some(()),
            })
        })?;
        if gone.is_some() {
            return Ok(());
        }
        Err(Error::Timeout(
            name.to_string(),
            format!(
                "waiting {} for the server to stop (force it with `sharedserver admin kill {name}`; see `sharedserver admin debug {name}`)",
                duration::format(budget)
            ),
        ))
    }
}

/// One repair made by [`Lifecycle::repair`]; displayed as `admin doctor`
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// The server was dead: its record was cleared.
    ClearedDeadServer { pid: u32 },
    /// The watcher was dead: a new one supervises the live server.
    RestoredWatcher { pid: u32, watcher: u32 },
    /// Clients that had died were dropped.
    DroppedClients(usize),
}

impl std::fmt::Display for Repair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Repair::ClearedDeadServer { pid } => {
                write!(f, "server pid {pid} was gone; cleared its record")
            }
            Repair::RestoredWatcher { pid, watcher } => write!(
                f,
                "watcher was gone; restored supervision of pid {pid} (new watcher {watcher})"
            ),
            Repair::DroppedClients(n) => write!(f, "dropped {n} dead client(s)"),
        }
    }
}
