//! The one test harness, shared by the integration tests, the Neovim tests
//! (`nvim`, `rpc`) and the benches: a private lock directory per test, the
//! real binary, client processes, and polling with a deadline.
#![allow(dead_code)]

pub mod nvim;
pub mod rpc;

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sharedserver");
pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A server script that ignores SIGTERM, so only SIGKILL stops it.
pub const IGNORES_TERM: &str = "trap '' TERM; while :; do sleep 0.05; done";

/// One test's world: its own lock directory and scratch space. Dropping it
/// kills every server the test left running.
pub struct World {
    pub tmp: tempfile::TempDir,
    pub lockdir: PathBuf,
    clients: Vec<Child>,
}

impl World {
    pub fn new() -> World {
        World::in_dir(&std::env::temp_dir())
    }

    /// A world on tmpfs (/dev/shm where there is one), like a real
    /// `$XDG_RUNTIME_DIR`: for benchmarks.
    pub fn on_tmpfs() -> World {
        let shm = Path::new("/dev/shm");
        World::in_dir(if shm.is_dir() { shm } else { Path::new("/tmp") })
    }

    fn in_dir(base: &Path) -> World {
        let tmp = tempfile::Builder::new()
            .prefix("ss-test-")
            .tempdir_in(base)
            .unwrap();
        let lockdir = tmp.path().join("lock");
        World {
            tmp,
            lockdir,
            clients: Vec::new(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// A command for the real binary, pointed at this world's lock dir.
    pub fn cmd(&self, args: &[&str]) -> Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("SHAREDSERVER_LOCKDIR", &self.lockdir)
            .current_dir(self.tmp.path())
            .stdin(Stdio::null());
        // As a command typed at a terminal has them: the suite itself may
        // run with SIGINT and SIGQUIT ignored (a background job of a
        // script), and the binary rightly keeps what it was given.
        // SAFETY: signal(2) is async-signal-safe, as pre_exec requires.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGQUIT, libc::SIG_DFL);
                Ok(())
            });
        }
        cmd
    }

    /// The real binary started in the background, its output captured
    /// (read it with `wait_with_output`).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sharedserver")
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run(self.cmd(args).output().expect("run sharedserver"))
    }

    /// Run and require success.
    pub fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code(), 0, "sharedserver {args:?} failed:\n{}", r.stderr());
        r
    }

    /// `use NAME --pid CLIENT OPTIONS... -- sleep 1000`, required to
    /// succeed: the plain server most tests start.
    pub fn use_sleep(&self, name: &str, client: &str, options: &[&str]) -> Run {
        let mut args = vec!["use", name, "--pid", client];
        args.extend_from_slice(options);
        args.extend(["--", "sleep", "1000"]);
        self.ok(&args)
    }

    /// `use NAME --pid CLIENT --ready READY -- SERVER...` for a server that
    /// passes its ready check only once `gate` opens: it is `starting`
    /// (`check` exits 3) until then, and `use` returns success after.
    pub fn use_through_gate(
        &self,
        name: &str,
        client: &str,
        ready: &str,
        gate: &Gate,
        server: &[&str],
        waiting: &str,
    ) {
        let mut args = vec!["use", name, "--pid", client, "--ready", ready, "--"];
        args.extend_from_slice(server);
        let user = self.cmd(&args).spawn().unwrap();
        eventually(Duration::from_secs(10), waiting, || self.check(name) == 3);
        gate.open();
        assert!(user.wait_with_output().unwrap().status.success());
    }

    /// A long-lived stand-in for a client (an editor, a script).
    pub fn client(&mut self) -> u32 {
        let child = Command::new("sleep")
            .arg("1000")
            .spawn()
            .expect("spawn client");
        let pid = child.id();
        self.clients.push(child);
        pid
    }

    /// SIGKILL a client created by `client()` and reap it.
    pub fn kill_client(&mut self, pid: u32) {
        if let Some(i) = self.clients.iter().position(|c| c.id() == pid) {
            let mut c = self.clients.remove(i);
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn info(&self, name: &str) -> Value {
        let r = self.ok(&["info", name, "--json"]);
        serde_json::from_str(&r.stdout()).expect("info --json is JSON")
    }

    pub fn state(&self, name: &str) -> String {
        self.info(name)["state"].as_str().unwrap().to_string()
    }

    pub fn check(&self, name: &str) -> i32 {
        self.run(&["check", name]).code()
    }

    /// The library's view of this world's lock dir.
    pub fn lifecycle(&self) -> sharedserver::Lifecycle {
        sharedserver::Lifecycle::new(
            sharedserver::Store::at(self.lockdir.clone()).unwrap(),
            Some(PathBuf::from(BIN)),
        )
    }

    pub fn record_path(&self, name: &str) -> PathBuf {
        self.lockdir.join(format!("{name}.json"))
    }

    pub fn make_lockdir(&self) {
        std::fs::create_dir_all(&self.lockdir).unwrap();
        std::fs::set_permissions(&self.lockdir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.lockdir) {
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                if let Some(name) = file.strip_suffix(".json") {
                    let _ = self.cmd(&["admin", "kill", name]).output();
                }
            }
        }
        for c in &mut self.clients {
            let _ = c.kill();
            let _ = c.wait();
        }
        kill_tagged(&self.lockdir);
    }
}

/// SIGKILL whatever still carries this world's lock-dir tag (a watcher or
/// server left behind by a test that removed its records, or its whole lock
/// dir), so no test leaks processes into the next.
#[cfg(target_os = "linux")]
fn kill_tagged(lockdir: &Path) {
    let tag = format!("SHAREDSERVER_LOCKDIR={}", lockdir.display());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let environ = std::fs::read(p.path().join("environ")).unwrap_or_default();
        if environ.split(|&b| b == 0).any(|v| v == tag.as_bytes())
            && pid != std::process::id() as i32
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn kill_tagged(_lockdir: &Path) {}

pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
}

/// A FIFO a test server waits at, so it stays where the test wants it
/// (starting, say) for as long as the test wants, with no sleep on either
/// side: the server blocks opening the FIFO until `open()` opens it too.
pub struct Gate {
    pub path: PathBuf,
}

impl Gate {
    /// A gate at `path` (in the test's scratch space).
    pub fn new(path: PathBuf) -> Gate {
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
        Gate { path }
    }

    /// A shell command that returns once the gate is open.
    pub fn sh(&self) -> String {
        format!(": < '{}'", self.path.display())
    }

    /// A Python statement that returns once the gate is open.
    pub fn py(&self) -> String {
        format!("open({:?}).close()", self.path.display().to_string())
    }

    /// Wait until the server is at the gate, then let it through.
    pub fn open(&self) {
        use std::os::unix::fs::OpenOptionsExt;
        eventually(
            Duration::from_secs(10),
            &format!("a server waiting at {}", self.path.display()),
            || {
                std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&self.path)
                    .ok()
            },
        );
    }
}

/// What a polled check gives: `bool` (holds or not yet), or `Option<T>`
/// (the value, once there is one).
pub trait Polled {
    type Value;
    fn ready(self) -> Option<Self::Value>;
}

impl Polled for bool {
    type Value = ();
    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Polled for Option<T> {
    type Value = T;
    fn ready(self) -> Option<T> {
        self
    }
}

/// Poll `check` until it holds (or gives a value), backing off from 1 ms to
/// 50 ms; fails the test saying `what` once `within` has passed.
pub fn eventually<P: Polled>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> P,
) -> P::Value {
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(v) = check().ready() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Whether `pid` runs; a zombie (exited, not yet reaped) counts as dead.
#[cfg(target_os = "linux")]
pub fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    matches!(state, Some(s) if s != 'Z' && s != 'X')
}

/// Without /proc (macOS): the library's own look (proc_pidinfo), which also
/// counts zombies as dead.
#[cfg(not(target_os = "linux"))]
pub fn alive(pid: u32) -> bool {
    sharedserver::process::ProcessId::of(pid).is_some()
}

/// The pid exists at all (a zombie too), on any Unix: "gone" means reaped.
pub fn exists(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A project config (`.sharedserver.json`): eager servers `a` and `b` and a
/// lazy one, each `sleep` with its own argument; `a_options` are added to
/// `a`'s entry (`, "key": value`), `extra` entries after the three.
pub fn write_project(w: &World, a_options: &str, extra: &str) {
    std::fs::write(
        w.path(".sharedserver.json"),
        format!(
            r#"{{"servers": {{
                "a": {{"command": "sleep", "args": ["1000"]{a_options}}},
                "b": {{"command": "sleep", "args": ["1001"], "grace_period": "1h"}},
                "lazy": {{"command": "sleep", "args": ["1002"], "lazy": true}}{extra}
            }}}}"#
        ),
    )
    .unwrap();
}

/// The pids of the clients in an `info --json` object, in its order.
pub fn client_pids(info: &Value) -> Vec<u32> {
    let clients = info["clients"].as_array().expect("info has clients");
    clients
        .iter()
        .map(|c| c["pid"].as_u64().expect("a client has a pid") as u32)
        .collect()
}

/// A `sleep 1000` of the test's own, in a process group of its own (so a
/// group kill aimed elsewhere never reaches it), killed and reaped when
/// dropped, also when the test fails (left alive, it would hold the test
/// harness's output open).
pub struct Sleeper(Child);

impl Sleeper {
    pub fn new() -> Sleeper {
        use std::os::unix::process::CommandExt;
        Sleeper(
            Command::new("sleep")
                .arg("1000")
                .process_group(0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Require that a finished process succeeded, showing its stderr if not.
#[track_caller]
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn pid_of(v: &Value) -> u32 {
    v["pid"].as_u64().expect("status has a pid") as u32
}

pub fn watcher_of(info: &Value) -> u32 {
    info["watcher_pid"]
        .as_u64()
        .expect("a running server has a watcher") as u32
}

/// Send `sig` to `pid`; the test fails if it cannot be sent.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)
        .unwrap_or_else(|e| panic!("kill -{sig} {pid}: {e}"));
}

/// Field 22 of /proc/PID/stat: when the process started, in clock ticks.
#[cfg(target_os = "linux")]
pub fn start_time(pid: u32) -> u64 {
    let stat = read(Path::new(&format!("/proc/{pid}/stat")));
    let after_name = &stat[stat.rfind(')').expect("stat has a name") + 1..];
    after_name
        .split_ascii_whitespace()
        .nth(19)
        .and_then(|t| t.parse().ok())
        .expect("stat has a start time")
}

/// The start time as the library reads it (proc_pidinfo on macOS).
#[cfg(not(target_os = "linux"))]
pub fn start_time(pid: u32) -> u64 {
    sharedserver::process::ProcessId::of(pid)
        .expect("process exists")
        .start_time
}
