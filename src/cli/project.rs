//! `use --all`, `unuse --all` and `exec`: a whole project, or a command
//! that holds servers for exactly as long as it runs.

use super::attach::{current_dir, on_port, shell_words, StartOptions};
use super::{interrupt, lifecycle, out, parse_name, EXIT_ERROR};
use clap::Args;
use sharedserver::process::ProcessId;
use sharedserver::project::{self, Member, Outcome};
use sharedserver::{config, Error, Lifecycle, ServerName};
use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct ExecArgs {
    /// The server to hold (from the config; see `config`)
    #[arg(value_parser = parse_name, required_unless_present = "all")]
    pub name: Option<ServerName>,
    /// Hold every server of the project's config, as `use --all` does
    #[arg(long, conflicts_with = "name")]
    pub all: bool,
    /// Free text stored with this client (shown by `info`)
    #[arg(long)]
    pub metadata: Option<String>,
    #[command(flatten)]
    pub start: StartOptions,
    /// The command to run, verbatim (no shell). It replaces this process,
    /// which is the client: the servers are held until it exits.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Servers to attach, and those that failed before any attach.
type Resolved = (Vec<Member>, Vec<(ServerName, Outcome)>);

/// Every server of the config visible from here, with the command-line
/// options laid over each. A definition that cannot be resolved fails on
/// its own line and leaves the others usable.
fn members(opts: &StartOptions) -> sharedserver::Result<Resolved> {
    if let Some(flag) = opts.single_server_only() {
        return Err(Error::Other(format!(
            "{flag} applies to one server; name the server instead of --all, or set it in the config"
        )));
    }
    let here = current_dir()?;
    let defs = config::all(&here)?;
    if defs.is_empty() {
        // Nothing to hold is not a failure: an agent's hook runs in every
        // project, most of which define no servers.
        note!(
            "sharedserver: no servers defined here (looked for {} in this directory and its parents, and for the user config)",
            config::PROJECT_FILE
        );
    }
    let mut members = Vec::new();
    let mut failed = Vec::new();
    for (name, def) in defs {
        let resolved = def.and_then(|def| Ok((opts.over(&def, &here)?, def)));
        match resolved {
            // Another host already launched it for this session.
            Ok((_, def)) if def.spec.skipped() => {}
            Ok((spec, def)) => members.push(Member {
                name: def.name,
                spec,
                lazy: def.spec.lazy,
            }),
            Err(e) => failed.push((ServerName::parse(&name)?, Outcome::Failed(e))),
        }
    }
    Ok((members, failed))
}

pub fn use_all(
    opts: &StartOptions,
    client: ProcessId,
    metadata: Option<&str>,
) -> sharedserver::Result<i32> {
    let (members, failed) = members(opts)?;
    let (outcomes, armed) = attach_all(&members, client, metadata)?;
    report(failed.into_iter().chain(outcomes).collect(), Out::Stdout).map_err(|e| {
        let names: Vec<&str> = armed.held.iter().map(|(n, _)| n.as_str()).collect();
        match names.is_empty() {
            true => e,
            false => out::after(e, || {
                format!("pid {} holds {}", client.pid, names.join(", "))
            }),
        }
    })
}

pub fn unuse_all(pid: u32) -> sharedserver::Result<i32> {
    let outcomes = project::unuse_all(&lifecycle()?, pid)?;
    if outcomes.is_empty() {
        say!("pid {pid} holds no server")?;
    }
    report(outcomes, Out::Stdout)
}

/// Attach, then replace this process with the command. The pid and its
/// start time survive `exec`, so the command itself is the client.
pub fn exec(args: ExecArgs) -> sharedserver::Result<i32> {
    let me = ProcessId::current();
    let (members, failed) = match &args.name {
        Some(name) => {
            let Some(start) = args.start.spec(name, vec![])? else {
                return Err(Error::Other(format!(
                    "no definition of '{name}' in the config (see `sharedserver config`); exec takes server commands from the config"
                )));
            };
            let member = Member {
                name: name.clone(),
                spec: start.spec,
                lazy: false,
            };
            (vec![member], vec![])
        }
        None => members(&args.start)?,
    };
    let (outcomes, armed) = attach_all(&members, me, args.metadata.as_deref())?;
    // Our stdout is the command's: keep it clean.
    let code = report(failed.into_iter().chain(outcomes).collect(), Out::Stderr)?;
    // The command gets the signals' default dispositions back.
    drop(armed);
    if code != 0 {
        release(me.pid);
        return Ok(code);
    }
    let err = std::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .exec();
    release(me.pid);
    note!(
        "sharedserver: cannot run {}: {err}",
        shell_words(&args.command[..1])
    );
    Ok(if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}

/// Drop what this process holds, before failing instead of running the
/// command (its death would drop it anyway; this makes it immediate).
fn release(pid: u32) {
    if let Ok(lc) = lifecycle() {
        let _ = project::unuse_all(&lc, pid);
    }
}

/// Run `project::use_all`, with one progress line on a terminal while
/// servers are still starting. A signal (Ctrl-C) cancels it and undoes
/// every attach it made, as an interrupted single `use` does (see
/// `interrupt`); the returned guard keeps doing so until it is dropped.
fn attach_all(
    members: &[Member],
    client: ProcessId,
    metadata: Option<&str>,
) -> sharedserver::Result<(Vec<(ServerName, Outcome)>, interrupt::Armed)> {
    let lc = lifecycle()?;
    interrupt::catch();
    let outcomes = use_all_showing_progress(&lc, members, client, metadata);
    let armed = interrupt::Armed {
        held: outcomes
            .iter()
            .filter_map(|(name, o)| Some((name.clone(), o.attached()?)))
            .collect(),
        lc,
        client: client.pid,
    };
    armed.check();
    Ok((outcomes, armed))
}

fn use_all_showing_progress(
    lc: &Lifecycle,
    members: &[Member],
    client: ProcessId,
    metadata: Option<&str>,
) -> Vec<(ServerName, Outcome)> {
    let pending = Mutex::new(members.iter().map(|m| m.name.clone()).collect::<Vec<_>>());
    let done = |name: &ServerName, _: &Outcome| {
        if let Ok(mut p) = pending.lock() {
            p.retain(|n| n != name);
        }
    };
    let cancelled = interrupt::caught;
    if !std::io::stderr().is_terminal() {
        return project::use_all(lc, members, client, metadata, &done, &cancelled);
    }
    let (finished, ticks) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        scope.spawn(|| show_progress(&pending, members.len(), ticks));
        let outcomes = project::use_all(lc, members, client, metadata, &done, &cancelled);
        drop(finished);
        outcomes
    })
}

/// Redraw one line every 100 ms until `ticks` closes: how many servers are
/// ready, and which are still being waited for.
fn show_progress(pending: &Mutex<Vec<ServerName>>, total: usize, ticks: mpsc::Receiver<()>) {
    let started = Instant::now();
    let mut shown = false;
    while let Err(mpsc::RecvTimeoutError::Timeout) = ticks.recv_timeout(Duration::from_millis(100))
    {
        let Ok(waiting) = pending.lock().map(|p| p.clone()) else {
            break;
        };
        let names: Vec<&str> = waiting.iter().map(ServerName::as_str).collect();
        super::out::stderr(format_args!(
            "\r\x1b[2K{}/{total} ready; waiting for {} ({:.1}s)",
            total - waiting.len(),
            names.join(", "),
            started.elapsed().as_secs_f64()
        ));
        shown = true;
    }
    if shown {
        super::out::stderr(format_args!("\r\x1b[2K"));
    }
}

#[derive(Clone, Copy)]
enum Out {
    Stdout,
    Stderr,
}

/// One line per server; failures on stderr, then a summary naming them.
/// Returns the exit code.
fn report(outcomes: Vec<(ServerName, Outcome)>, out: Out) -> sharedserver::Result<i32> {
    let say = |line: String| match out {
        Out::Stdout => say!("{line}"),
        Out::Stderr => {
            note!("sharedserver: {line}");
            Ok(())
        }
    };
    let mut failed = Vec::new();
    for (name, outcome) in &outcomes {
        match outcome {
            Outcome::Started(s) => say(format!(
                "started {name} (pid {}{})",
                s.pid.unwrap_or(0),
                on_port(s)
            ))?,
            Outcome::Joined { status, warning } => {
                if let Some(warning) = warning {
                    note!("sharedserver: warning: {warning}");
                }
                say(format!(
                    "attached to {name} (pid {}, refcount {}{})",
                    status.pid.unwrap_or(0),
                    status.refcount,
                    on_port(status)
                ))?;
            }
            Outcome::SkippedLazy => say(format!("skipped {name} (lazy, not running)"))?,
            Outcome::Detached(s) => say(format!("detached from {name} (refcount {})", s.refcount))?,
            Outcome::Failed(e) => {
                note!("sharedserver: {name}: {e}");
                failed.push(name.as_str());
            }
            // Only after a signal, which ends the call before any report.
            Outcome::Cancelled { .. } => {
                note!("sharedserver: {name}: cancelled");
                failed.push(name.as_str());
            }
        }
    }
    if failed.is_empty() {
        return Ok(0);
    }
    note!(
        "sharedserver: {} of {} servers failed: {}",
        failed.len(),
        outcomes.len(),
        failed.join(", ")
    );
    Ok(EXIT_ERROR)
}
