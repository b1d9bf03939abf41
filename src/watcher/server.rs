//! The server process as the watcher sees it: started (or adopted), waited
//! for, and stopped.

use super::orphans;
use crate::exit::Termination;
use crate::logs::Pump;
use crate::name::ServerName;
use crate::process::{Handle, ProcessId, Served, POLL_INTERVAL};
use crate::spawn::{self, Hello, Launch};
use crate::store::Store;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

/// The supervised server: a process handle always, the Child too when we
/// spawned it.
pub(super) struct Server {
    pub(super) id: ProcessId,
    pub(super) handle: Handle,
    pub(super) child: Option<std::process::Child>,
}

impl Server {
    pub(super) fn exited(&self) -> bool {
        self.handle.has_exited()
    }

    /// Exit code and signal, when we are the parent and can see them.
    ///
    /// Whatever is left of the server's process group dies with it (they
    /// would hold its ports and write into the next server's log). This is
    /// safe only before the reap: the unreaped leader keeps the group id
    /// from being reused.
    pub(super) fn reap(&mut self) -> Termination {
        if self.child.is_some() {
            // SAFETY: plain syscall on the group our unreaped child leads.
            unsafe { libc::kill(-(self.id.pid as libc::pid_t), libc::SIGKILL) };
        }
        // Never block in waitpid on a leader that has not exited (one stuck
        // in the kernel, or that SIGKILL has not reached yet): its status is
        // then unknown, and the zombie is reaped when the watcher exits.
        if !self.handle.has_exited() {
            return Termination::Unknown;
        }
        match self.child.as_mut().map(|c| c.wait()) {
            Some(Ok(status)) => Termination::of(status),
            _ => Termination::Unknown,
        }
    }
}

/// Start (or adopt) the server. Errors become the handshake's answer.
pub(super) fn begin(
    store: &Store,
    name: &ServerName,
    launch: &Launch,
    pump: &mut Pump,
) -> std::result::Result<Server, Hello> {
    if let Some(id) = launch.adopt {
        let handle = id.open().ok_or_else(|| Hello::SpawnFailed {
            message: format!("server pid {} exited before supervision resumed", id.pid),
        })?;
        // Adopting means we will signal its group one day: only a process
        // that carries this name's tag is ours (a record can be forged).
        if !crate::process::is_tagged_leader(id.pid, name.as_str(), store.dir()) {
            return Err(Hello::SpawnFailed {
                message: format!(
                    "pid {} is not this server (it lacks the {}={name} tag or does not lead its process group); refusing to supervise it",
                    id.pid,
                    spawn::NAME_VAR
                ),
            });
        }
        return Ok(Server {
            id,
            handle,
            child: None,
        });
    }
    let server =
        spawn_server(store, name, launch).map_err(|message| Hello::SpawnFailed { message })?;
    let window = Duration::from_millis(launch.startup_check_ms);
    if !window.is_zero() && died_at_start(&server, pump, window, launch.startup_check_fixed) {
        let mut server = server;
        let how = server.reap();
        pump.drain();
        let left_behind = stop_left_behind(store, name);
        return Err(Hello::DiedAtStart {
            pid: server.id.pid,
            how,
            left_behind,
        });
    }
    Ok(server)
}

/// How often the start-up check looks at the server's process tree.
const IDLE_SAMPLE: Duration = Duration::from_millis(1);

/// Wait out the start-up window; true if the server exited within it.
///
/// Unless `fixed`, the window ends early once the server's whole process
/// tree has been seen asleep in two samples in a row. A server that started
/// properly waits for work; one that fails at start-up (bad flags, port
/// taken, missing file) is usually busy until it exits. So `sleep 1000`
/// passes in about 2 ms, and the full window is only spent on servers that
/// are still busy starting. (One that sleeps before it fails passes: that is
/// what `fixed:` is for.)
fn died_at_start(server: &Server, pump: &mut Pump, window: Duration, fixed: bool) -> bool {
    if fixed {
        return wait_exit(&server.handle, Some(pump), window);
    }
    let deadline = Instant::now() + window;
    let mut idle_samples = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return server.exited();
        }
        if wait_exit(&server.handle, Some(pump), left.min(IDLE_SAMPLE)) {
            return true;
        }
        if crate::process::tree_idle(server.id.pid) {
            idle_samples += 1;
            if idle_samples == 2 {
                return server.exited();
            }
        } else {
            idle_samples = 0;
        }
    }
}

pub(super) fn spawn_server(
    store: &Store,
    name: &ServerName,
    launch: &Launch,
) -> std::result::Result<Server, String> {
    let output = Pump::server_end(store, name).map_err(|e| e.to_string())?;
    let mut child = spawn::server(launch, output, name.as_str()).map_err(|e| e.to_string())?;
    let handle = match crate::test_hooks::supervise_failure() {
        Some(injected) => Err(injected),
        None => Handle::child(&child),
    };
    match handle {
        Ok(handle) => Ok(Server {
            id: handle.id(),
            handle,
            child: Some(child),
        }),
        Err(e) => {
            // A server we cannot supervise must not outlive this error:
            // nobody would ever stop it. Its group id is safe to signal
            // while the unreaped leader holds it.
            let pid = child.id();
            // SAFETY: plain syscall on the group our unreaped child leads.
            unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
            Err(format!(
                "cannot supervise server pid {pid} ({e}); stopped it and its process group"
            ))
        }
    }
}

/// SIGTERM the group, then SIGKILL it after `timeout`; keep draining output
/// meanwhile so a server that logs on its way out never blocks on the pipe.
pub(super) fn terminate(server: &mut Server, pump: &mut Pump, timeout: Duration) -> Termination {
    let handle = &server.handle;
    crate::process::terminate(handle, timeout, |t| wait_exit(handle, Some(pump), t));
    pump.drain();
    server.reap()
}

/// Wait until the process exits or the timeout passes, copying its output
/// to the log meanwhile. A process with no exit event (an adopted server,
/// under the portable backend on Linux) is looked at from 1 ms on, backing
/// off to POLL_INTERVAL: a stop is worth the closer look.
pub(super) fn wait_exit(handle: &Handle, pump: Option<&mut Pump>, timeout: Duration) -> bool {
    handle.wait_exit_serving(timeout, POLL_INTERVAL, pump.map(|p| p as &mut dyn Served))
}

impl Served for Pump {
    fn fd(&self) -> BorrowedFd<'_> {
        self.fifo().as_fd()
    }

    fn serve(&mut self) {
        self.drain();
    }
}

/// After the server exited (and its probe, if any, was reaped): stop
/// whatever it left running. A server that daemonizes leaves its real work
/// in a child of a new session, out of reach of its group: found as an
/// orphan handed to us, or by the tag it carries. Returns their pids.
pub(super) fn stop_left_behind(store: &Store, name: &ServerName) -> Vec<u32> {
    let mut stopped: Vec<u32> = Vec::new();
    // Stopping an orphan can hand us its own children: look again, a few
    // times at most (each round stops at least one process).
    for _ in 0..LEFT_BEHIND_ROUNDS {
        let mut left = crate::process::tagged(name.as_str(), store.dir());
        for pid in orphans::list(&[]) {
            // A zombie has no identity (it exited): it is only reaped below.
            if let Some(id) = ProcessId::of(pid).filter(|id| !left.contains(id)) {
                left.push(id);
            }
        }
        left.retain(|id| !stopped.contains(&id.pid));
        if left.is_empty() {
            break;
        }
        for id in &left {
            if let Some(handle) = id.open() {
                let timeout = crate::record::DEFAULT_STOP_TIMEOUT;
                crate::process::terminate(&handle, timeout, |t| handle.wait_exit(t));
            }
            stopped.push(id.pid);
        }
        orphans::reap(&[]);
    }
    orphans::reap(&[]);
    stopped
}

/// How many times [`stop_left_behind`] looks for processes left running.
const LEFT_BEHIND_ROUNDS: usize = 4;
