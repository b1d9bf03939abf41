//! `use`, `unuse`, and the shared start options (also used by `admin start`).

use super::{client, interrupt, lifecycle, out, parse_duration, parse_env, parse_name};
use clap::Args;
use sharedserver::lifecycle::StartupCheck;
use sharedserver::options::ServerSpec;
use sharedserver::port::PortSpec;
use sharedserver::process::ProcessId;
use sharedserver::record::RestartPolicy;
use sharedserver::{config, AttachRequest, Attached, IfRunning, ServerName, StartSpec, State};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct StartOptions {
    /// How long to keep the server after the last client leaves (500ms, 30s, 5m, 2h30m; default 0s)
    #[arg(long, value_parser = parse_duration)]
    pub grace_period: Option<Duration>,
    /// Extra environment variable for the server (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Append the server's output to this file (default: NAME.log in the lock directory)
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Working directory for the server (default: the current directory; for a
    /// project config file's entry, the project's directory)
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// Return only once the server is ready: tcp://HOST:PORT, http://HOST:PORT/PATH,
    /// unix:///PATH, log:REGEX or cmd:SHELL-COMMAND
    #[arg(long, value_name = "SPEC", value_parser = parse_ready)]
    pub ready: Option<String>,
    /// How long to wait for --ready before stopping the server and failing
    #[arg(long, value_parser = parse_duration, value_name = "D")]
    pub ready_timeout: Option<Duration>,
    /// Restart policy: no, on-failure or on-failure:MAX (default MAX 5 within 60s)
    #[arg(long, value_name = "POLICY", value_parser = parse_restart)]
    pub restart: Option<RestartArg>,
    /// How long a new server must stay up for `use` to succeed (catches
    /// servers that exit at once). D: until its processes all wait idle, at
    /// most D. fixed:D: all of D, for servers that wait on the network or a
    /// timer before they fail. 0s returns on spawn. Default: 50ms
    #[arg(long, value_parser = parse_startup_check, value_name = "D|fixed:D")]
    pub startup_check: Option<StartupCheck>,
    /// A TCP port for the server: `auto` finds a free one on 127.0.0.1, a
    /// number is checked to be free first. The server gets it as $PORT, and
    /// '${PORT}' in its arguments, --env values and --ready is replaced by it
    #[arg(long, value_name = "auto|N", value_parser = parse_port)]
    pub port: Option<PortSpec>,
}

/// The trailing `-- CMD ARGS...` of `use` and `admin start`.
#[derive(Args)]
pub struct ServerCommand {
    /// The server command and its arguments, passed verbatim (no shell).
    /// Without it, NAME is looked up in the config files (see `config`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

fn parse_port(raw: &str) -> Result<PortSpec, String> {
    PortSpec::parse(raw)
}

fn parse_startup_check(raw: &str) -> Result<StartupCheck, String> {
    StartupCheck::parse(raw).map_err(|e| e.to_string())
}

fn parse_ready(raw: &str) -> Result<String, String> {
    sharedserver::probe::ReadySpec::parse(raw).map_err(|e| e.to_string())?;
    Ok(raw.to_string())
}

/// A parsed `--restart` (a newtype, because clap reads `Option<Option<_>>`
/// as "flag with optional value").
#[derive(Clone, Debug)]
pub struct RestartArg(Option<RestartPolicy>);

fn parse_restart(raw: &str) -> Result<RestartArg, String> {
    RestartPolicy::parse(raw).map(RestartArg)
}

/// What `use` starts when NAME is not running: the resolved spec, and the
/// client metadata its config entry gives (a `--metadata` flag wins).
pub struct Start {
    pub spec: StartSpec,
    pub metadata: Option<String>,
}

impl StartOptions {
    /// The flags (and `-- CMD ARGS`) as a [`ServerSpec`], to lay over a
    /// config entry.
    pub fn flags(&self, command: Vec<String>) -> ServerSpec {
        let mut words = command.into_iter();
        ServerSpec {
            command: words.next(),
            args: words.collect(),
            env: self.env.iter().cloned().collect(),
            working_dir: self.cwd.clone(),
            log_file: self.log_file.clone(),
            grace_period: self.grace_period,
            ready: self.ready.clone(),
            ready_timeout: self.ready_timeout,
            restart: self.restart.clone().map(|RestartArg(r)| r),
            startup_check: self.startup_check,
            port: self.port,
            ..ServerSpec::default()
        }
    }

    /// The start spec: `command` if given, else NAME's entry in the nearest
    /// config file with the flags on top. None: no command anywhere, so
    /// `use` can only join a running server.
    pub fn spec(
        &self,
        name: &ServerName,
        command: Vec<String>,
    ) -> sharedserver::Result<Option<Start>> {
        let here = current_dir()?;
        let flags = self.flags(command);
        if flags.command.is_some() {
            let spec = flags.resolve(&here).map_err(|e| e.at("command line", ""))?;
            return Ok(Some(Start {
                spec,
                metadata: None,
            }));
        }
        let Some(def) = config::lookup(name, &here)? else {
            return Ok(None);
        };
        Ok(Some(Start {
            spec: self.over(&def, &here)?,
            metadata: def.spec.metadata.clone(),
        }))
    }

    /// A config definition with the command-line options on top, resolved
    /// from `here` (the caller's directory).
    pub fn over(
        &self,
        def: &config::Definition,
        here: &std::path::Path,
    ) -> sharedserver::Result<StartSpec> {
        config::Definition {
            spec: def.spec.clone().overlay(self.flags(vec![])),
            ..def.clone()
        }
        .resolve(here)
    }

    /// Options that only make sense for one server, named for an error when
    /// they are given with `--all`.
    pub fn single_server_only(&self) -> Option<&'static str> {
        if self.log_file.is_some() {
            Some("--log-file")
        } else if self.cwd.is_some() {
            Some("--cwd")
        } else if self.ready.is_some() {
            Some("--ready")
        } else {
            None
        }
    }
}

pub fn current_dir() -> sharedserver::Result<PathBuf> {
    std::env::current_dir()
        .map_err(|e| sharedserver::Error::io(".", "reading the current directory", e))
}

#[derive(Args)]
pub struct UseArgs {
    /// The server's name: up to 64 letters, digits, '.', '_' and '-', from
    /// a letter or digit
    #[arg(value_parser = parse_name, required_unless_present = "all")]
    pub name: Option<ServerName>,
    /// Every server of the project's config: non-lazy ones are started if
    /// needed, lazy ones joined only if running. Ctrl-C undoes every attach
    /// it made, as for one server
    #[arg(long, conflicts_with = "name")]
    pub all: bool,
    /// Client process to attach (default: the caller, i.e. our parent process)
    #[arg(long)]
    pub pid: Option<u32>,
    /// Free text stored with this client (shown by `info`)
    #[arg(long)]
    pub metadata: Option<String>,
    #[command(flatten)]
    pub start: StartOptions,
    #[command(flatten)]
    pub server: ServerCommand,
}

#[derive(Args)]
pub struct UnuseArgs {
    /// The server's name: up to 64 letters, digits, '.', '_' and '-', from
    /// a letter or digit
    #[arg(value_parser = parse_name, required_unless_present = "all")]
    pub name: Option<ServerName>,
    /// Every server the client holds, whatever the current config says
    #[arg(long, conflicts_with = "name")]
    pub all: bool,
    /// Client process to detach (default: the caller, i.e. our parent process)
    #[arg(long)]
    pub pid: Option<u32>,
}

pub fn use_(args: UseArgs) -> sharedserver::Result<i32> {
    let client = client(args.pid, || nix::unistd::getppid().as_raw() as u32)?;
    let Some(name) = args.name else {
        if !args.server.command.is_empty() {
            return Err(sharedserver::Error::Other(
                "`use --all` takes its commands from the config; drop `-- CMD`, or name one server"
                    .into(),
            ));
        }
        return super::project::use_all(&args.start, client, args.metadata.as_deref());
    };
    let (spec, metadata) = match args.start.spec(&name, args.server.command)? {
        Some(start) => (Some(start.spec), args.metadata.or(start.metadata)),
        None => (None, args.metadata),
    };
    let defined = spec.is_some();
    attach(name, client, metadata, spec, IfRunning::Attach).map_err(|e| match e {
        // Nothing to start it with: say where a command could have come from.
        sharedserver::Error::NotRunning(name) if !defined => sharedserver::Error::Undefined(name),
        e => e,
    })
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
    let lc = lifecycle()?;
    interrupt::catch();
    let attached = lc.attach(&req)?;
    let mut s = attached.status().clone();
    let started = matches!(attached, Attached::Started(_));
    let armed = interrupt::Armed {
        lc: lc.clone(),
        client: req.client.pid,
        held: vec![(req.name.clone(), started)],
    };
    armed.check();
    if s.state == State::Starting {
        let what = s.ready.as_deref().unwrap_or("restart");
        s = wait_ready(&lc, &req.name, what, || armed.check())?;
    }
    let s = &s;
    let reported = match &attached {
        Attached::Started(_) => say!(
            "started {} (pid {}{})",
            s.name,
            s.pid.unwrap_or(0),
            on_port(s)
        ),
        Attached::Joined { .. } => {
            if let Some(warning) = attached.warning() {
                note!("sharedserver: warning: {warning}");
            }
            say!(
                "attached to {} (pid {}, refcount {}{})",
                s.name,
                s.pid.unwrap_or(0),
                s.refcount,
                on_port(s)
            )
        }
    };
    // The attach stands: the server runs and is held, as was asked.
    reported.map_err(|e| {
        out::after(e, || {
            format!("'{}' runs and pid {} holds it", s.name, req.client.pid)
        })
    })?;
    Ok(0)
}

/// Wait for readiness; on a terminal, show what we wait for and for how long.
/// `each_tick` runs on every look at the server.
fn wait_ready(
    lc: &sharedserver::Lifecycle,
    name: &ServerName,
    what: &str,
    each_tick: impl Fn(),
) -> sharedserver::Result<sharedserver::Status> {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    let mut shown = Duration::ZERO;
    let result = lc.wait_ready(name, |elapsed| {
        each_tick();
        if tty && elapsed >= shown + Duration::from_millis(100) {
            shown = elapsed;
            super::out::stderr(format_args!(
                "\r\x1b[2K{name}: waiting for {what} ({:.1}s)",
                elapsed.as_secs_f64()
            ));
        }
        std::ops::ControlFlow::Continue(())
    });
    if tty && !shown.is_zero() {
        super::out::stderr(format_args!("\r\x1b[2K"));
    }
    result
}

pub fn unuse(args: UnuseArgs) -> sharedserver::Result<i32> {
    // A dead pid is fine here: removing it may be exactly the point.
    let pid = args
        .pid
        .unwrap_or_else(|| nix::unistd::getppid().as_raw() as u32);
    match &args.name {
        Some(name) => detach(name, pid),
        None => super::project::unuse_all(pid),
    }
}

pub fn detach(name: &ServerName, pid: u32) -> sharedserver::Result<i32> {
    let s = lifecycle()?.detach(name, pid)?;
    say!("detached from {} (refcount {})", s.name, s.refcount)?;
    Ok(0)
}

pub use sharedserver::status::shell_words;

/// `, port N` for a server with a port, else nothing.
pub fn on_port(s: &sharedserver::Status) -> String {
    s.port.map(|p| format!(", port {p}")).unwrap_or_default()
}
