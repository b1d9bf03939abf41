//! `use`, `unuse`, and the shared start options (also used by `admin start`).

use super::{client, lifecycle, parse_duration, parse_env, parse_name};
use clap::Args;
use sharedserver::process::{self, ProcessId};
use sharedserver::{AttachRequest, Attached, IfRunning, ServerName, StartSpec};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct StartOptions {
    /// How long to keep the server after the last client leaves (500ms, 30s, 5m, 2h30m)
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub grace_period: Duration,
    /// Extra environment variable for the server (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Append the server's stdout and stderr to this file (default: discarded)
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Working directory for the server (default: the current directory)
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// The server command and its arguments, passed verbatim (no shell)
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl StartOptions {
    pub fn spec(self) -> sharedserver::Result<Option<StartSpec>> {
        if self.command.is_empty() {
            return Ok(None);
        }
        let here = std::env::current_dir()
            .map_err(|e| sharedserver::Error::io(".", "reading the current directory", e))?;
        let absolute = |p: PathBuf| if p.is_absolute() { p } else { here.join(p) };
        Ok(Some(StartSpec {
            command: self.command,
            env: self.env.into_iter().collect(),
            cwd: absolute(self.cwd.clone().unwrap_or_else(|| here.clone())),
            log_file: self.log_file.map(absolute),
            grace_period: self.grace_period,
        }))
    }
}

#[derive(Args)]
pub struct UseArgs {
    #[arg(value_parser = parse_name)]
    pub name: ServerName,
    /// Client process to attach (default: the caller, i.e. our parent process)
    #[arg(long)]
    pub pid: Option<u32>,
    /// Free text stored with this client (shown by `info`)
    #[arg(long)]
    pub metadata: Option<String>,
    #[command(flatten)]
    pub start: StartOptions,
}

#[derive(Args)]
pub struct UnuseArgs {
    #[arg(value_parser = parse_name)]
    pub name: ServerName,
    /// Client process to detach (default: the caller, i.e. our parent process)
    #[arg(long)]
    pub pid: Option<u32>,
}

pub fn use_(args: UseArgs) -> sharedserver::Result<i32> {
    let client = client(args.pid, process::parent)?;
    attach(
        args.name,
        client,
        args.metadata,
        args.start.spec()?,
        IfRunning::Attach,
    )
}

pub fn attach(
    name: ServerName,
    client: ProcessId,
    metadata: Option<String>,
    start: Option<StartSpec>,
    if_running: IfRunning,
) -> sharedserver::Result<i32> {
    let req = AttachRequest {
        name,
        client,
        metadata,
        start,
        if_running,
    };
    let attached = lifecycle()?.attach(&req)?;
    let s = attached.status();
    match &attached {
        Attached::Started(_) => println!("started {} (pid {})", s.name, s.pid.unwrap_or(0)),
        Attached::Joined {
            command_differs, ..
        } => {
            if *command_differs {
                eprintln!(
                    "sharedserver: warning: '{}' is already running a different command ({}); attached to it anyway",
                    s.name,
                    shell_words(&s.command)
                );
            }
            println!(
                "attached to {} (pid {}, refcount {})",
                s.name,
                s.pid.unwrap_or(0),
                s.refcount
            );
        }
    }
    Ok(0)
}

pub fn unuse(args: UnuseArgs) -> sharedserver::Result<i32> {
    // A dead pid is fine here: removing it may be exactly the point.
    let pid = args
        .pid
        .unwrap_or_else(|| nix::unistd::getppid().as_raw() as u32);
    detach(&args.name, pid)
}

pub fn detach(name: &ServerName, pid: u32) -> sharedserver::Result<i32> {
    let s = lifecycle()?.detach(name, pid)?;
    println!("detached from {} (refcount {})", s.name, s.refcount);
    Ok(0)
}

/// argv rendered for humans: words with spaces or quotes are single-quoted.
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|w| {
            if !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
