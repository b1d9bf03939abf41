//! One error type for the whole library. Every variant says what was being
//! done and to what, so a user reading one line on stderr knows where to look.

use std::fmt;
use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug)]
pub enum Error {
    /// A filesystem operation failed: (path, what we were doing, cause).
    Io(PathBuf, &'static str, io::Error),
    /// A server name that could escape or confuse the lock directory.
    BadName(String, &'static str),
    /// A duration string humantime could not parse.
    BadDuration(String, String),
    /// The lock directory exists but is not safe to use.
    UnsafeLockDir(PathBuf, String),
    /// A record that is not ours, not parseable, or from another version.
    CorruptRecord(PathBuf, String),
    /// A record path is a symlink: refused so nobody can redirect our writes.
    SymlinkRecord(PathBuf),
    /// A watcher runs but the record is gone, and it did not restore it.
    RecordMissing(String),
    /// A restart was asked of a server whose watcher is gone.
    NoWatcher(String),
    /// The record names a process that does not carry the server's tag:
    /// it is not ours, and is never signalled.
    /// `watched`: a watcher still listens for the name (and holds the
    /// server, one that wrote over its environment), so a stop still works.
    NotOurs {
        name: String,
        pid: u32,
        watched: bool,
    },
    /// A log file that cannot be one (a symlink, a FIFO, a socket): the
    /// path, and what it is plus how to fix it.
    BadLogFile(PathBuf, String),
    /// A wake or output file of the lock directory is not a FIFO.
    NotAFifo(PathBuf),
    /// A process could not be started: the program, and why.
    Spawn(String, String),
    /// The server's command could not be run (not found, not executable):
    /// the server's name, and why (which names the command).
    CommandFailed(String, String),
    /// The server started but died before `use` returned.
    DiedAtStart {
        name: String,
        detail: String,
        log_tail: Option<String>,
    },
    /// The named server is not running.
    NotRunning(String),
    /// `use NAME` with no command: not running, and no config file defines it.
    Undefined(String),
    /// The named server is running already (for `admin start`).
    AlreadyRunning(String, u32),
    /// A pid given to attach/detach is not a live process or not attached.
    BadClient(String, String),
    /// `admin stop` without `--force` while clients are still attached.
    InUse(String, usize),
    /// Waiting for something took longer than the deadline.
    Timeout(String, String),
    /// The caller gave up waiting for the server to be ready (an
    /// interrupted `use --all`).
    Cancelled(String),
    /// Starting (or re-supervising) needs the `sharedserver` binary, and
    /// none is known here.
    NoBinary,
    /// The server is not running and no command was given to start it.
    NoCommand(String),
    /// A running server's watcher is gone and cannot be restored here.
    LostWatcher(String),
    /// The server is being stopped (for an operation that needs it running).
    Stopping(String),
    /// A pid that cannot be a client: (the pid as the user gave it, why).
    BadPid(String, String),
    /// The watcher could not set up supervision of a new server (and
    /// stopped it): (name, why).
    Unsupervised(String, String),
    /// Signalling the server failed: (name, signal, cause).
    Signal(String, &'static str, io::Error),
    /// A bad server option: where it came from (a config file, `setup()`,
    /// a flag), the key path (`servers.web.grace_period`) and why.
    Options {
        origin: String,
        at: String,
        why: String,
    },
    /// The server's port could not be had: (name, why).
    Port(String, String),
    /// Another process held the name's lock for longer than this process
    /// waits (see `lockwait`).
    LockBusy {
        name: String,
        path: PathBuf,
        holder: Option<crate::lockwait::Holder>,
        waited: std::time::Duration,
    },
    /// Writing to standard output failed (a full disk; a closed pipe, which
    /// the CLI does not report): the cause, and what was done all the same,
    /// if anything (a `use` whose report fails still holds the server).
    Output(io::Error, Option<String>),
    /// Anything else, already phrased for the user.
    Other(String),
}

impl Error {
    /// The message without its advice to run `admin doctor`: for doctor's
    /// own report of what it found.
    pub fn without_doctor_advice(&self) -> String {
        match self {
            Error::CorruptRecord(path, why) => {
                format!("unreadable record {}: {why}", path.display())
            }
            e => e.to_string(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, doing: &'static str, err: io::Error) -> Self {
        Error::Io(path.into(), doing, err)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(path, doing, err) => {
                write!(f, "{doing} {}: {err}", path.display())?;
                // The lock directory can be moved; any other path is the
                // user's own (a log file, a working directory).
                let in_lockdir = path.starts_with(crate::lockdir::resolve());
                match err.raw_os_error() {
                    Some(libc::ENOSPC) => write!(f, " (free some space on that filesystem)"),
                    Some(libc::EMFILE | libc::ENFILE) => write!(
                        f,
                        " (out of file descriptors; raise the limit with `ulimit -n 1024`)"
                    ),
                    Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) if in_lockdir => {
                        write!(
                            f,
                            " (make the directory writable, or point SHAREDSERVER_LOCKDIR at one that is)"
                        )
                    }
                    Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) => {
                        write!(f, " (check its permissions, or choose another path)")
                    }
                    _ => Ok(()),
                }
            }
            Error::BadName(name, why) => write!(
                f,
                "invalid server name {name:?}: {why} (use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit)"
            ),
            Error::BadDuration(text, why) => write!(
                f,
                "invalid duration {text:?}: {why} (examples: 500ms, 30s, 5m, 2h30m, 0s)"
            ),
            Error::UnsafeLockDir(path, why) => {
                write!(f, "unsafe lock directory {}: {why}", path.display())
            }
            Error::CorruptRecord(..) => write!(
                f,
                "{} (run `sharedserver admin doctor` to repair it)",
                self.without_doctor_advice()
            ),
            Error::SymlinkRecord(path) => write!(
                f,
                "refusing to follow symlink {} (remove it; records are never symlinks)",
                path.display()
            ),
            Error::Spawn(program, why) => write!(f, "cannot start {program:?}: {why}"),
            Error::DiedAtStart { name, detail, log_tail } => {
                write!(f, "server '{name}' {detail}")?;
                if let Some(tail) = log_tail {
                    write!(f, "; last lines of its log:\n{tail}")?;
                }
                Ok(())
            }
            Error::NotRunning(name) => write!(
                f,
                "server '{name}' is not running (start it with `sharedserver use {name} -- CMD...`)"
            ),
            Error::Undefined(name) => write!(
                f,
                "server '{name}' is not running, and no config file defines it (see `sharedserver config`): give its command, `sharedserver use {name} -- CMD...`"
            ),
            Error::AlreadyRunning(name, pid) => write!(
                f,
                "server '{name}' is already running as pid {pid} (attach with `sharedserver use {name}`)"
            ),
            Error::BadClient(name, why) => write!(f, "server '{name}': {why}"),
            Error::InUse(name, n) => write!(
                f,
                "server '{name}' still has {n} attached client(s); pass --force to stop it anyway"
            ),
            Error::Timeout(name, what) => write!(f, "server '{name}': timed out {what}"),
            Error::Output(err, done) => {
                write!(f, "cannot write to standard output: {err}")?;
                match done {
                    Some(done) => write!(f, "; {done} all the same"),
                    None => Ok(()),
                }
            }
            Error::Cancelled(name) => {
                write!(f, "server '{name}': cancelled while waiting for readiness")
            }
            Error::NoBinary => f.write_str(
                "the sharedserver binary was not found (install it with `cargo install --path .`, or set the `binary` option)",
            ),
            Error::NoCommand(name) => write!(
                f,
                "server '{name}' is not running and no command was given (add `-- CMD ARGS...`)"
            ),
            Error::RecordMissing(name) => write!(
                f,
                "server '{name}' has a running watcher but no record; run `sharedserver admin doctor {name}`"
            ),
            Error::NoWatcher(name) => write!(
                f,
                "server '{name}' has no watcher to restart it (run `sharedserver admin doctor {name}`)"
            ),
            Error::NotOurs { name, pid, watched } => {
                let var = crate::spawn::NAME_VAR;
                write!(f, "server '{name}': pid {pid} does not carry this server's tag ({var}={name} in its environment")?;
                if *watched {
                    write!(f, "; the server may have written over it), so it is not signalled from here; its watcher holds it: stop it with `sharedserver admin stop {name} --force`")
                } else {
                    write!(f, "), so it was not started by sharedserver for this lock directory; not signalling it (run `sharedserver admin doctor {name}` to set the record aside)")
                }
            }
            Error::BadLogFile(path, why) => write!(f, "log file {} is {why}", path.display()),
            Error::NotAFifo(path) => write!(
                f,
                "{} is not a FIFO (something else was put there); run `sharedserver admin doctor`",
                path.display()
            ),
            Error::LostWatcher(name) => write!(
                f,
                "server '{name}' has lost its watcher and the sharedserver binary is unknown here, so supervision cannot be restored (set the `binary` option, or run `sharedserver admin doctor {name}`)"
            ),
            Error::LockBusy {
                name,
                path,
                holder,
                waited,
            } => {
                write!(
                    f,
                    "gave up after {} waiting for the lock on '{name}' ({}), held by ",
                    crate::duration::format(*waited),
                    path.display()
                )?;
                match holder {
                    Some(h) => write!(f, "{h}")?,
                    None => write!(f, "another process")?,
                }
                write!(
                    f,
                    "; if it is stuck, `sharedserver admin kill {name}` stops the server without the lock"
                )
            }
            Error::Stopping(name) => write!(
                f,
                "server '{name}' is stopping; start it again once it has stopped (`sharedserver use {name} -- CMD...`)"
            ),
            Error::BadPid(pid, why) => write!(f, "{pid}: {why}"),
            Error::Unsupervised(name, why) => write!(
                f,
                "server '{name}' was not started: its watcher cannot supervise it ({why}); run `sharedserver admin doctor {name}`"
            ),
            Error::Signal(name, sig, err) => write!(f, "server '{name}': {sig} failed: {err}"),
            Error::Options { origin, at, why } if at.is_empty() => write!(f, "{origin}: {why}"),
            Error::Options { origin, at, why } => write!(f, "{origin}: {at}: {why}"),
            Error::Port(name, why) | Error::CommandFailed(name, why) => {
                write!(f, "cannot start '{name}': {why}")
            }
            Error::Other(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(_, _, err) | Error::Signal(_, _, err) | Error::Output(err, _) => Some(err),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lockdir_hint_is_only_for_lockdir_paths() {
        let denied = || io::Error::from_raw_os_error(libc::EACCES);
        let inside = Error::io(crate::lockdir::resolve().join("x.log"), "opening", denied());
        let outside = Error::io("/nonexistent-place/x.log", "opening", denied());
        assert!(
            inside.to_string().contains("SHAREDSERVER_LOCKDIR"),
            "{inside}"
        );
        assert!(
            !outside.to_string().contains("SHAREDSERVER_LOCKDIR"),
            "{outside}"
        );
        let source = std::error::Error::source(&outside).map(|s| s.to_string());
        assert_eq!(source, Some(denied().to_string()));
    }
}
