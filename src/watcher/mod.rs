//! The watcher: one detached process per server, the server's parent.
//!
//! It sleeps in a single `poll(2)` on: the server's pidfd (exit), one pidfd
//! per client (crash), the name's wake FIFO (a CLI or Neovim changed the
//! record) and the server's output FIFO (log lines to copy). The only
//! timeouts are deadlines: a grace period, a restart backoff, the next
//! readiness probe. An idle watcher therefore never wakes and never writes.
//!
//! Each wake-up runs one tick under the name's lock: read the record, settle
//! it (see `Record::settle`), write it only if it changed, and act.
//!
//! Files: this one starts a watcher (the handshake); `wake` is the wake
//! FIFO's protocol (callers poke, the watcher sleeps on it); `server`
//! starts, waits for and stops the server process; `orphans` takes in and
//! reaps what the server leaves behind; `readiness` runs the ready check;
//! `supervise` is the loop; `resident` keeps an idle watcher small.

mod clients;
mod orphans;
mod readiness;
mod resident;
mod server;
mod supervise;
mod wake;

pub use resident::trim_resident_code;
pub use wake::poke;
pub(crate) use wake::{listening, poke_killed, poke_now};

use crate::error::{Error, Result};
use crate::logs::Pump;
use crate::name::ServerName;
use crate::probe::ReadySpec;
use crate::process::ProcessId;
use crate::record::{now_ms, Record, DEFAULT_STOP_TIMEOUT};
use crate::spawn::{Hello, Launch, Supervising};
use crate::store::Store;
use server::{begin, terminate};
use std::io::{BufRead, Write};
use supervise::Watcher;
use wake::Wake;

/// Entry point of `sharedserver __watch NAME`. Returns the exit code.
pub fn main(raw_name: &str) -> i32 {
    match watch(raw_name) {
        Ok(()) => 0,
        Err(e) => {
            if let (Ok(store), Ok(name)) = (Store::open(), ServerName::parse(raw_name)) {
                store.journal(&name, "watcher", &format!("error: {e}"));
            }
            1
        }
    }
}

fn watch(raw_name: &str) -> Result<()> {
    let name = ServerName::parse(raw_name)?;
    let store = Store::open()?;
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|e| Error::Other(format!("watcher: reading launch spec: {e}")))?;
    let launch: Launch = serde_json::from_str(&line)
        .map_err(|e| Error::Other(format!("watcher: bad launch spec: {e}")))?;
    let ready = launch.ready.as_deref().map(ReadySpec::parse).transpose()?;
    let matcher = ready.as_ref().and_then(|r| r.log_regex().cloned());
    let mut out = std::io::stdout();
    let mut pump = match Pump::open(&store, &name, launch.log_file.as_ref(), matcher) {
        Ok(pump) => pump,
        Err(e) => {
            // Answer with the reason: a caller left without an answer can
            // only guess (and used to guess "another version").
            let hello = Hello::SpawnFailed {
                message: e.to_string(),
            };
            let line = serde_json::to_string(&hello).expect("hello serializes");
            let _ = writeln!(out, "{line}").and_then(|_| out.flush());
            return Err(e);
        }
    };

    // Before the server exists, so that all it leaves behind comes to us.
    orphans::adopt();
    let started = begin(&store, &name, &launch, &mut pump);
    let hello = match &started {
        Ok(server) => Hello::Ready {
            watcher: ProcessId::current(),
            server: server.id,
            started_at_ms: now_ms(),
            backend: Some(crate::process::backend::current()),
        },
        Err(hello) => hello.clone(),
    };
    let line = serde_json::to_string(&hello).expect("hello serializes");
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
    let Ok(mut server) = started else {
        detach_stdio();
        return Ok(());
    };
    // The caller now writes the record and hands it to us. If it fails or
    // dies first, nobody knows this server exists: stop it (unless we were
    // only adopting a server someone else started).
    let mut commit = String::new();
    let _ = input.read_line(&mut commit);
    drop(input);
    let Ok(known) = serde_json::from_str::<Record>(commit.trim()) else {
        detach_stdio();
        if launch.adopt.is_none() {
            store.journal(
                &name,
                "watcher",
                "the caller never recorded the new server; stopping it",
            );
            terminate(&mut server, &mut pump, DEFAULT_STOP_TIMEOUT);
        }
        return Ok(());
    };
    // Only a committed watcher listens on the wake FIFO: callers take a
    // reader there as proof that a watcher owns the name.
    // Then confirm: the caller reports a start only once we supervise it.
    let opened = Wake::open(&store, &name);
    let answer = match &opened {
        Ok(_) => Supervising::Yes,
        Err(e) => Supervising::No {
            message: e.to_string(),
        },
    };
    let line = serde_json::to_string(&answer).expect("answer serializes");
    let _ = crate::pipe::write_all(&mut out, format!("{line}\n").as_bytes());
    let _ = out.flush();
    detach_stdio();
    let wake = match opened {
        Ok(wake) => wake,
        Err(e) => {
            store.journal(
                &name,
                "watcher",
                &format!("{e}; stopping the server it cannot supervise"),
            );
            if launch.adopt.is_none() {
                terminate(&mut server, &mut pump, DEFAULT_STOP_TIMEOUT);
            }
            return Err(e);
        }
    };
    trim_resident_code();
    raise_fd_limit();
    Watcher::new(&store, &name, launch, server, wake, pump, known).run()
}

/// One pidfd per client: lift the soft descriptor limit to the hard one so
/// a server with a thousand clients is still watched by events.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto the standard descriptors we own.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
            libc::dup2(null.as_raw_fd(), 2);
        }
    }
}
