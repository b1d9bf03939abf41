//! Read-only commands: `list`, `info`, `check`.

use super::attach::shell_words;
use super::{lifecycle, parse_name, EXIT_ERROR};
use clap::Args;
use sharedserver::exit::ExitKind;
use sharedserver::{ServerName, State, Status};

#[derive(Args)]
pub struct ListArgs {
    /// Print a JSON array of status objects (schema in doc/ARCHITECTURE.md)
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct InfoArgs {
    /// The server's name: up to 64 letters, digits, '.', '_' and '-', from
    /// a letter or digit
    #[arg(value_parser = parse_name)]
    pub name: ServerName,
    /// Print a JSON status object (schema in doc/ARCHITECTURE.md)
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct PortArgs {
    /// The server's name: up to 64 letters, digits, '.', '_' and '-', from
    /// a letter or digit
    #[arg(value_parser = parse_name)]
    pub name: ServerName,
}

#[derive(Args)]
pub struct CheckArgs {
    /// The server's name: up to 64 letters, digits, '.', '_' and '-', from
    /// a letter or digit
    #[arg(value_parser = parse_name)]
    pub name: ServerName,
}

pub fn list(args: ListArgs) -> sharedserver::Result<i32> {
    let entries = lifecycle()?.list()?;
    let mut failed = false;
    let mut statuses = Vec::new();
    for (_, entry) in entries {
        match entry {
            Ok(s) if s.state != State::Stopped => statuses.push(s),
            Ok(_) => {}
            Err(e) => {
                failed = true;
                note!("sharedserver: {e}");
            }
        }
    }
    if args.json {
        say!(
            "{}",
            serde_json::to_string_pretty(&statuses).expect("status serializes")
        )?;
    } else if statuses.is_empty() {
        say!("no servers running")?;
    } else {
        say!(
            "{:<20} {:<9} {:>8} {:>4} {:>9}  COMMAND",
            "NAME",
            "STATE",
            "PID",
            "REFS",
            "UPTIME"
        )?;
        for s in &statuses {
            say!(
                "{:<20} {:<9} {:>8} {:>4} {:>9}  {}",
                s.name,
                s.state.as_str(),
                s.pid.map_or("-".into(), |p| p.to_string()),
                s.refcount,
                s.uptime_secs.map_or("-".into(), uptime),
                shell_words(&s.command)
            )?;
        }
    }
    Ok(if failed { EXIT_ERROR } else { 0 })
}

pub fn info(args: InfoArgs) -> sharedserver::Result<i32> {
    let s = lifecycle()?.status(&args.name)?;
    if args.json {
        say!(
            "{}",
            serde_json::to_string_pretty(&s).expect("status serializes")
        )?;
    } else {
        print_info(&s)?;
    }
    Ok(0)
}

/// Print the running server's port, for `curl localhost:$(sharedserver port web)`.
pub fn port(args: PortArgs) -> sharedserver::Result<i32> {
    let s = lifecycle()?.status(&args.name)?;
    if s.state == State::Stopped {
        return Err(sharedserver::Error::NotRunning(args.name.to_string()));
    }
    match s.port {
        Some(port) => {
            say!("{port}")?;
            Ok(0)
        }
        None => Err(sharedserver::Error::Other(format!(
            "server '{}' has no port: give it \"port\": \"auto\" (or a number) in its config, or start it with --port",
            args.name
        ))),
    }
}

pub fn check(args: CheckArgs) -> sharedserver::Result<i32> {
    let s = lifecycle()?.status(&args.name)?;
    Ok(match s.state {
        State::Active => 0,
        State::Grace => 1,
        State::Starting => 3,
        State::Stopped
            if s.last_exit
                .as_ref()
                .is_some_and(|l| l.kind == ExitKind::GaveUp) =>
        {
            4
        }
        State::Stopped | State::Stopping => 2,
    })
}

fn print_info(s: &Status) -> sharedserver::Result<()> {
    let row = |k: &str, v: String| say!("{:<13} {v}", format!("{k}:"));
    row("name", s.name.clone())?;
    row("state", s.state.as_str().to_string())?;
    if let Some(pid) = s.pid {
        row("pid", pid.to_string())?;
        row("refcount", s.refcount.to_string())?;
        if let Some(port) = s.port {
            row("port", port.to_string())?;
        }
        for c in &s.clients {
            let meta = c
                .metadata
                .as_deref()
                .map(|m| format!(" [{}]", sharedserver::status::printable(m)))
                .unwrap_or_default();
            row("client", format!("{} since {}{meta}", c.pid, c.attached_at))?;
        }
        row("command", shell_words(&s.command))?;
        if let Some(cwd) = &s.cwd {
            row("cwd", cwd.clone())?;
        }
        if let Some(g) = &s.grace_period {
            row("grace period", g.clone())?;
        }
        if let Some(ms) = s.grace_remaining_ms {
            row("stops in", uptime(ms / 1000))?;
        }
        if let Some(t) = &s.started_at {
            row("started at", t.clone())?;
        }
        if let Some(u) = s.uptime_secs {
            row("uptime", uptime(u))?;
        }
        if let Some(w) = s.watcher_pid {
            row("watcher pid", w.to_string())?;
        }
        if let Some(r) = &s.ready {
            row("ready when", r.clone())?;
        }
        if s.restarts > 0 {
            row("restarts", s.restarts.to_string())?;
        }
        row(
            "log file",
            s.log_file.clone().unwrap_or_else(|| "(none)".into()),
        )?;
    }
    if let Some(last) = &s.last_exit {
        row(
            "last exit",
            format!(
                "pid {} {} ({}) at {}",
                last.pid, last.how, last.reason, last.at
            ),
        )?;
        if let Some(tail) = &last.log_tail {
            row("last output", String::new())?;
            for line in tail.lines() {
                say!("  {line}")?;
            }
        }
    }
    Ok(())
}

/// "12s", "45m07s", "2h05m", "3d04h": the float's format too
/// (`status/view.lua`'s `duration`).
fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h:02}h"),
    }
}

#[cfg(test)]
mod tests {
    /// The float's `status/view.lua` `duration` gives the same strings
    /// (checked by the Neovim test of the status window).
    #[test]
    fn uptime_reads_the_same_as_in_the_float() {
        let got: Vec<String> = [12, 65, 7500, 3 * 86400 + 4 * 3600]
            .into_iter()
            .map(super::uptime)
            .collect();
        assert_eq!(got, ["12s", "1m05s", "2h05m", "3d04h"]);
    }
}
