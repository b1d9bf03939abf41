//! Argument parsing and dispatch. Each group of subcommands lives in its own
//! file; none of them holds state logic, they only call the library.
//! Output goes through `say!` and `note!` (see `out`), never `println!` or
//! `eprintln!`, which panic when the write fails: clippy holds us to it.
#![deny(clippy::print_stdout, clippy::print_stderr)]

/// `println!` to standard output, returning `sharedserver::Result<()>`
/// instead of panicking when the write fails (see `out`).
macro_rules! say {
    () => {
        $crate::cli::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` that never panics: a message that cannot be written is
/// dropped (see `out::stderr`).
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::cli::out::stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod admin;
mod attach;
mod files;
mod interrupt;
mod out;
mod project;
mod show;

use clap::{Parser, Subcommand};
use sharedserver::{Lifecycle, ServerName, Store};
use std::time::Duration;

/// Exit code for runtime errors (`check` uses 0-3 for states).
pub const EXIT_ERROR: i32 = 10;
/// Exit code for bad command lines (clap errors).
pub const EXIT_USAGE: i32 = 64;

#[derive(Parser)]
#[command(
    name = "sharedserver",
    version,
    about = "Share one server process between many clients, with reference counting",
    long_about = "Share one server process between many clients (editors, scripts, tools).\n\
        Each client takes a reference with `use` and drops it with `unuse` (or by exiting).\n\
        When the last reference goes, the server is stopped after its grace period.\n\n\
        State lives in $SHAREDSERVER_LOCKDIR (an absolute path), else\n\
        $XDG_RUNTIME_DIR/sharedserver, else /dev/shm/sharedserver-<uid> on Linux\n\
        when /dev/shm is a tmpfs, else /tmp/sharedserver-<uid> (mode 0700, owned\n\
        by you).\n\n\
        Process exits are watched with pidfds (Linux 5.3+), else by the portable\n\
        backend (SIGCHLD, and a 50 ms check of clients while any are attached);\n\
        SHAREDSERVER_BACKEND=portable forces it. `admin debug` says which runs.",
    after_help = "Exit codes: 0 success; 10 runtime error (standard output that cannot\n\
        be written is one); 64 bad command line.\n\
        `check` exits 0 active, 1 grace, 2 stopped or stopping, 3 starting,\n\
        4 stopped after giving up on restarts, 10 on error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to a server, starting it if it is not running
    ///
    /// Interrupted (Ctrl-C, SIGTERM, SIGHUP) before it is done, it undoes
    /// its attaches and stops each server it started that no other client
    /// holds, one line per server, then dies of the signal.
    Use(attach::UseArgs),
    /// Detach from a server; the last detach starts its grace period
    Unuse(attach::UnuseArgs),
    /// Hold servers while a command runs: attach, then become the command
    Exec(project::ExecArgs),
    /// Show every running server
    List(show::ListArgs),
    /// Show one server in detail
    Info(show::InfoArgs),
    /// Print a running server's TCP port (its `port` option)
    Port(show::PortArgs),
    /// Exit 0 if active, 1 in grace, 2 if stopped or stopping, 3 if starting,
    /// 4 if stopped after giving up on restarts (10 on error)
    Check(show::CheckArgs),
    /// Show a server's output (its log file)
    Logs(files::LogsArgs),
    /// Print server definitions from the config files (.sharedserver.json,
    /// .sharedserver/servers.json, ~/.config/sharedserver/servers.json)
    Config(files::ConfigArgs),
    /// Print a shell completion script
    Completion {
        /// bash, zsh, fish (also elvish, powershell)
        shell: clap_complete::Shell,
    },
    /// Troubleshooting and manual control
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    #[command(name = "__watch", hide = true)]
    Watch { name: String },
}

/// A usage error as one line (errors are one line, see README): clap's
/// "error: " and its closing pointer to --help go, since we name --help
/// ourselves; what spans lines (a list of missing arguments, the usage, a
/// regular expression's caret) is joined with "; ".
fn one_line(text: &str) -> String {
    let mut line = String::new();
    let parts = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .map(|l| l.strip_prefix("error: ").unwrap_or(l));
    for part in parts {
        if !line.is_empty() {
            // "...were not provided:" introduces what follows it.
            line.push_str(if line.ends_with(':') { " " } else { "; " });
        }
        line.push_str(part);
    }
    format!("{line} (see --help)")
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            note!("sharedserver: {}", one_line(&e.to_string()));
            return EXIT_USAGE;
        }
        // --help, --version: our output like any other.
        Err(e) => {
            return match e.print() {
                Ok(()) => 0,
                Err(err) => out::report(&sharedserver::Error::Output(err, None)),
            }
        }
    };
    if !matches!(cli.command, Command::Watch { .. }) {
        // A stuck lock holder must not block a command forever.
        let policy = sharedserver::process::backend::check_env()
            .and_then(|()| sharedserver::lockwait::cli_policy());
        match policy {
            Ok(policy) => sharedserver::lockwait::set_policy(policy),
            Err(e) => {
                note!("sharedserver: {e}");
                return EXIT_USAGE;
            }
        }
    }
    let result = match cli.command {
        Command::Watch { name } => return sharedserver::watcher::main(&name),
        Command::Completion { shell } => {
            // Rebuilt from the visible subcommands: the generators offer a
            // hidden one (the watcher's __watch) all the same.
            let full = <Cli as clap::CommandFactory>::command();
            let mut cmd = clap::Command::new("sharedserver")
                .args(full.get_arguments().cloned())
                .subcommands(full.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "sharedserver", &mut script);
            out::bytes(&script).map(|()| 0)
        }
        Command::Use(args) => attach::use_(args),
        Command::Unuse(args) => attach::unuse(args),
        Command::Exec(args) => project::exec(args),
        Command::List(args) => show::list(args),
        Command::Info(args) => show::info(args),
        Command::Port(args) => show::port(args),
        Command::Check(args) => show::check(args),
        Command::Logs(args) => files::logs(args),
        Command::Config(args) => files::show_config(args),
        Command::Admin(cmd) => admin::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => out::report(&e),
    }
}

/// The library's front door, with this binary as the watcher executable.
pub fn lifecycle() -> sharedserver::Result<Lifecycle> {
    let exe = std::env::current_exe().ok();
    Ok(Lifecycle::new(Store::open()?, exe))
}

pub fn parse_name(raw: &str) -> Result<ServerName, String> {
    ServerName::parse(raw).map_err(|e| e.to_string())
}

pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    sharedserver::duration::parse(raw).map_err(|e| e.to_string())
}

pub fn parse_env(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {raw:?}")),
    }
}

/// Resolve `--pid` (or the default client): a live process that can exit,
/// or a clear error saying why not (see `process::client`).
pub fn client(
    pid: Option<u32>,
    default: impl FnOnce() -> u32,
) -> sharedserver::Result<sharedserver::process::ProcessId> {
    match pid {
        Some(pid) => sharedserver::process::client(pid, true),
        None => sharedserver::process::client(default(), false),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_usage_error_is_one_line() {
        let text = "error: the following required arguments were not provided:\n  <NAME>\n\nUsage: sharedserver use <NAME>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            super::one_line(text),
            "the following required arguments were not provided: <NAME>; Usage: sharedserver use <NAME> (see --help)"
        );
    }
}
