//! Starting processes: the watcher (from the CLI or from Neovim) and the
//! server (from the watcher), plus the one-line handshake between them.
//!
//! The caller holds the name's lock for the whole handshake, which is what
//! makes concurrent `use` calls start exactly one server.

use crate::error::{Error, Result};
use crate::lockdir;
use crate::process::{Backend, ProcessId};
use crate::record::Record;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// What the caller sends the watcher on its stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: String,
    /// Where the watcher copies the server's output.
    pub log_file: String,
    /// Readiness spec, so a `log:` probe can watch output from the first byte.
    #[serde(default)]
    pub ready: Option<String>,
    /// How long the server must survive before the handshake says ready.
    #[serde(default)]
    pub startup_check_ms: u64,
    /// Wait out the whole check even once the server waits idle.
    #[serde(default)]
    pub startup_check_fixed: bool,
    /// Supervise this already-running server instead of starting one.
    pub adopt: Option<ProcessId>,
}

/// What the watcher answers on its stdout, as one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hello {
    Ready {
        watcher: ProcessId,
        server: ProcessId,
        started_at_ms: u64,
        /// The watcher's process backend.
        #[serde(default)]
        backend: Option<Backend>,
    },
    SpawnFailed {
        message: String,
    },
    DiedAtStart {
        /// The server's pid, for its exit record.
        pid: u32,
        /// Processes it left running (it daemonized); stopped since.
        #[serde(default)]
        left_behind: Vec<u32>,
        #[serde(flatten)]
        how: crate::exit::Termination,
    },
}

/// The caller's side of a watcher handshake. The watcher's answer is in
/// `hello`; once the caller has written the record it calls [`commit`], which
/// hands the watcher that record. A handshake dropped without a commit (the
/// caller failed, or died) makes the watcher stop the server it started, so a
/// server nobody has a record of never stays running.
///
/// [`commit`]: Handshake::commit
pub struct Handshake {
    pub hello: Hello,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

/// The watcher's second answer, to the commit: whether it supervises the
/// server now (its wake FIFO is open), or why not.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Supervising {
    Yes,
    No { message: String },
}

impl Handshake {
    /// Hand the watcher the record, and wait for it to confirm that
    /// supervision is set up: only then has a start succeeded. (A watcher
    /// that cannot supervise stops the server it started.)
    pub fn commit(mut self, rec: &Record) -> Result<()> {
        let json = serde_json::to_string(rec).expect("records serialize");
        crate::pipe::write_all(&mut self.stdin, format!("{json}\n").as_bytes())
            .map_err(|e| Error::Other(format!("handing the record to the watcher: {e}")))?;
        let mut line = String::new();
        let _ = self.stdout.read_line(&mut line);
        match serde_json::from_str::<Supervising>(line.trim()) {
            Ok(Supervising::Yes) => Ok(()),
            Ok(Supervising::No { message }) => Err(Error::Unsupervised(rec.name.clone(), message)),
            Err(_) => Err(Error::Unsupervised(
                rec.name.clone(),
                "the watcher exited before it confirmed supervision".into(),
            )),
        }
    }
}

/// Start a detached watcher and wait for its answer.
pub fn watcher(exe: &Path, lockdir: &Path, name: &str, launch: &Launch) -> Result<Handshake> {
    let mut cmd = Command::new(exe);
    cmd.arg0("sharedserver-watcher")
        .args(["__watch", name])
        .env(lockdir::ENV_VAR, lockdir)
        // Do not make the server believe it runs inside a Neovim terminal.
        .env_remove("NVIM")
        .env_remove("NVIM_LISTEN_ADDRESS")
        // A watcher started from inside a server is not part of it.
        .env_remove(NAME_VAR)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls (setsid, fork, _exit, fcntl).
    unsafe {
        cmd.pre_exec(|| {
            // Fork once more so the watcher is not our child: it is adopted
            // by init, and a long-lived caller (Neovim) never holds a zombie.
            // The grandchild then leads a new session of its own.
            match libc::fork() {
                -1 => return Err(std::io::Error::last_os_error()),
                0 => {}
                _ => libc::_exit(0),
            }
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            close_inherited_fds();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        let hint = match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE) => format!(
                "out of file descriptors (the limit is {}); raise it with `ulimit -n 1024`",
                fd_limit()
            ),
            Some(libc::ENOENT | libc::EACCES | libc::ENOEXEC) => {
                "the sharedserver binary runs the watcher; reinstall it or fix the path".into()
            }
            _ => "starting the watcher".into(),
        };
        Error::Spawn(exe.display().to_string(), format!("{e} ({hint})"))
    })?;
    let mut stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    // The direct child is the short-lived intermediate; reap it now.
    let _ = child.wait();
    let payload = serde_json::to_string(launch).expect("launch serializes");
    crate::pipe::write_all(&mut stdin, format!("{payload}\n").as_bytes())
        .map_err(|e| Error::Spawn(exe.display().to_string(), format!("watcher handshake: {e}")))?;
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .map_err(|e| Error::Spawn(exe.display().to_string(), format!("watcher handshake: {e}")))?;
    let hello = serde_json::from_str(line.trim()).map_err(|_| {
        Error::Spawn(
            exe.display().to_string(),
            format!(
                "the watcher exited without answering (see `sharedserver admin debug {name}`; is the binary the same version as the caller?)"
            ),
        )
    })?;
    Ok(Handshake {
        hello,
        stdin,
        stdout,
    })
}

/// The soft descriptor limit, for messages.
fn fd_limit() -> String {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or_else(|_| "unknown".into(), |(soft, _)| soft.to_string())
}

/// Mark every descriptor above stderr close-on-exec, so the child inherits
/// nothing by accident (Neovim, for one, leaks descriptors). Marking rather
/// than closing keeps std's exec-error pipe working.
pub(crate) fn close_inherited_fds() {
    #[cfg(target_os = "linux")]
    {
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        // SAFETY: plain syscall.
        let rc =
            unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) };
        if rc == 0 {
            return;
        }
    }
    for fd in 3..4096 {
        // SAFETY: fcntl on an arbitrary fd is harmless if it is not open.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// Start the server itself (called in the watcher): argv verbatim, its own
/// process group, stdin from /dev/null, stdout and stderr into `output`.
/// Set in every server's environment, with the lock directory, so that
/// `admin doctor` can still find a server whose record was destroyed.
pub const NAME_VAR: &str = "SHAREDSERVER_NAME";

pub fn server(
    launch: &Launch,
    output: std::fs::File,
    name: &str,
) -> std::io::Result<std::process::Child> {
    let (program, args) = launch
        .command
        .split_first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"))?;
    let (out, err) = (Stdio::from(output.try_clone()?), Stdio::from(output));
    if !Path::new(&launch.cwd).is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("working directory {} does not exist", launch.cwd),
        ));
    }
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env(NAME_VAR, name)
        .envs(&launch.env)
        .current_dir(&launch.cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    // SAFETY: close_inherited_fds only calls fcntl/syscall.
    unsafe {
        cmd.pre_exec(|| {
            close_inherited_fds();
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => std::io::Error::new(
            e.kind(),
            format!("command not found: {program} (check PATH, or use an absolute path)"),
        ),
        std::io::ErrorKind::PermissionDenied
            if program.contains('/') && std::path::Path::new(program).is_dir() =>
        {
            std::io::Error::new(e.kind(), format!("{program} is a directory, not a program"))
        }
        std::io::ErrorKind::PermissionDenied => std::io::Error::new(
            e.kind(),
            format!("{program} is not executable (check its permissions)"),
        ),
        _ => e,
    })
}
