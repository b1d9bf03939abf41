//! `admin ...`: manual control and repair. Here `--pid` defaults to this
//! process itself, as in the original tool (use `--pid` to name a client).

use super::attach::{self, ServerCommand, StartOptions};
use super::{client, lifecycle, parse_duration, parse_name};
use clap::Subcommand;
use sharedserver::process::ProcessId;
use sharedserver::{IfRunning, ServerName};
use std::time::Duration;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Start a server (fails if it is running) and attach --pid
    Start {
        /// The server's name: up to 64 letters, digits, '.', '_' and '-', from
        /// a letter or digit
        #[arg(value_parser = parse_name)]
        name: ServerName,
        /// Client to attach (default: this process, so the grace period starts at once)
        #[arg(long)]
        pid: Option<u32>,
        #[command(flatten)]
        start: StartOptions,
        #[command(flatten)]
        server: ServerCommand,
    },
    /// Stop a server: SIGTERM to its process group, SIGKILL after --timeout
    Stop {
        /// The server's name: up to 64 letters, digits, '.', '_' and '-', from
        /// a letter or digit
        #[arg(value_parser = parse_name)]
        name: ServerName,
        /// Stop even if clients are still attached
        #[arg(long)]
        force: bool,
        /// How long to wait after SIGTERM before SIGKILL
        #[arg(long, value_parser = parse_duration, default_value = "5s")]
        timeout: Duration,
    },
    /// Restart a running server in place: its clients stay attached
    /// (same pids, metadata and attach times) to the new process
    Restart {
        /// The server's name: up to 64 letters, digits, '.', '_' and '-', from
        /// a letter or digit
        #[arg(value_parser = parse_name)]
        name: ServerName,
        /// How long to wait after SIGTERM before SIGKILL
        #[arg(long, value_parser = parse_duration, default_value = "5s")]
        timeout: Duration,
    },
    /// Attach --pid to a running server (never starts one)
    Incref {
        /// The server's name: up to 64 letters, digits, '.', '_' and '-', from
        /// a letter or digit
        #[arg(value_parser = parse_name)]
        name: ServerName,
        /// Client to attach (default: this process)
        #[arg(long)]
        pid: Option<u32>,
        /// Free text stored with this client
        #[arg(long)]
        metadata: Option<String>,
    },
    /// Detach --pid from a server
    Decref {
        /// The server's name: up to 64 letters, digits, '.', '_' and '-', from
        /// a letter or digit
        #[arg(value_parser = parse_name)]
        name: ServerName,
        /// Client to detach (default: this process)
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Print the process backend and the recent operations on a server, with
    /// results and errors
    Debug {
        /// The server's name: up to 64 letters, digits, '.', '_' and '-', from
        /// a letter or digit
        #[arg(value_parser = parse_name)]
        name: ServerName,
    },
    /// Validate the lock directory and repair stale or damaged state (once:
    /// a second run finds all good and changes nothing). A record naming a
    /// process we did not start is set aside; the process is left alone
    Doctor {
        /// The server's name: up to 64 letters, digits, '.', '_' and '-', from
        /// a letter or digit
        #[arg(value_parser = parse_name)]
        name: Option<ServerName>,
    },
    /// SIGKILL the server's process group now and clean up
    Kill {
        /// The server's name: up to 64 letters, digits, '.', '_' and '-', from
        /// a letter or digit
        #[arg(value_parser = parse_name)]
        name: ServerName,
    },
}

pub fn run(cmd: AdminCommand) -> sharedserver::Result<i32> {
    let me = || ProcessId::current().pid;
    match cmd {
        AdminCommand::Start {
            name,
            pid,
            start,
            server,
        } => {
            let client = client(pid, me)?;
            let Some(start) = start.spec(&name, server.command)? else {
                return Err(sharedserver::Error::Other(
                    "admin start needs a command: `sharedserver admin start NAME -- CMD ARGS...`"
                        .into(),
                ));
            };
            attach::attach(
                name,
                client,
                start.metadata,
                Some(start.spec),
                IfRunning::Fail,
            )
        }
        AdminCommand::Incref {
            name,
            pid,
            metadata,
        } => attach::attach(name, client(pid, me)?, metadata, None, IfRunning::Attach),
        AdminCommand::Decref { name, pid } => attach::detach(&name, client_pid(pid)),
        AdminCommand::Stop {
            name,
            force,
            timeout,
        } => {
            let s = lifecycle()?.stop(&name, force, timeout)?;
            say!("stopped {}", s.name)?;
            Ok(0)
        }
        AdminCommand::Restart { name, timeout } => {
            let s = lifecycle()?.restart(&name, timeout)?;
            say!("restarted {} (pid {})", s.name, s.pid.unwrap_or(0))?;
            Ok(0)
        }
        AdminCommand::Kill { name } => {
            let s = lifecycle()?.kill(&name)?;
            say!("killed {}", s.name)?;
            Ok(0)
        }
        AdminCommand::Debug { name } => {
            let lc = lifecycle()?;
            let journal = lc.store.read_journal(&name)?;
            let watcher = match lc.store.read(&name) {
                Ok(Some(rec)) => rec
                    .backend
                    .map_or("not recorded".to_string(), |b| b.to_string()),
                _ => "none running".to_string(),
            };
            say!(
                "backend: {} (this process); {watcher} (the watcher)",
                sharedserver::process::backend::current()
            )?;
            if journal.is_empty() {
                say!("no operations recorded for {name}")?;
            } else {
                super::out::bytes(journal.as_bytes())?;
            }
            Ok(0)
        }
        AdminCommand::Doctor { name } => {
            let lc = lifecycle()?;
            let fixes = sharedserver::doctor::run(&lc, name.as_ref())?;
            // Which directory was checked: the default depends on the
            // environment ($XDG_RUNTIME_DIR, a tmpfs at /dev/shm).
            say!("lock directory: {}", lc.store.dir().display())?;
            if fixes.is_empty() {
                say!("{}: all good", lc.store.dir().display())?;
            }
            for fix in fixes {
                say!("{fix}")?;
            }
            Ok(0)
        }
    }
}

/// For decref a dead pid is fine: it may be exactly what we want to remove.
fn client_pid(pid: Option<u32>) -> u32 {
    pid.unwrap_or_else(std::process::id)
}
