//! Fault injection: a watcher killed mid-grace, a CLI killed while it holds
//! a name's lock, a full and a read-only lock directory, a record truncated
//! to nothing. Each fault must end in a consistent state that the next
//! ordinary command (or `admin doctor`) recovers from, with a clear message.
//!
//! The mount tests (a tmpfs, a read-only bind mount) need root, so plain
//! `cargo test` leaves them out (`#[ignore = "needs root"]`); tests/run runs
//! them with `--ignored` when it runs as root, and they fail, saying so, when
//! asked for without root.
// Linux only: it reads /proc/locks and /proc/PID/wchan, and mounts file systems.
#![cfg(target_os = "linux")]

mod common;
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SOON: Duration = Duration::from_secs(10);

/// A server command that appends its pid to `starts`, so tests can count
/// starts and find every server ever started.
fn counted_server(starts: &Path) -> Vec<String> {
    let script = format!("echo $$ >> '{}'; exec sleep 1000", starts.display());
    vec!["sh".into(), "-c".into(), script]
}

fn started_pids(starts: &Path) -> Vec<u32> {
    read(starts)
        .lines()
        .map(|l| l.trim().parse().expect("a pid per line"))
        .collect()
}

fn use_args<'a>(
    name: &'a str,
    pid: &'a str,
    extra: &'a [&'a str],
    cmd: &'a [String],
) -> Vec<&'a str> {
    let mut args = vec!["use", name, "--pid", pid];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend(cmd.iter().map(String::as_str));
    args
}

/// The lines of /proc/locks that concern `pid`: held (`FLOCK`) or waited
/// for (`-> FLOCK`).
fn locks_of(pid: u32) -> Vec<String> {
    read(Path::new("/proc/locks"))
        .lines()
        .filter(|l| l.split_whitespace().any(|f| f == pid.to_string()))
        .map(str::to_string)
        .collect()
}

fn waits_on_a_lock(pid: u32) -> bool {
    locks_of(pid).iter().any(|l| l.contains("->"))
}

fn holds_a_lock(pid: u32) -> bool {
    locks_of(pid).iter().any(|l| !l.contains("->"))
}

/// Wait until the watcher of `name` sleeps in poll(2). After a `use` has
/// returned, that means it has run its first tick and knows the record, so
/// damage done to the record from now on is damage to a known record.
fn watcher_sleeps(w: &World, name: &str) {
    let watcher = watcher_of(&w.info(name));
    eventually(SOON, "the watcher sleeps in poll", || {
        read(Path::new(&format!("/proc/{watcher}/wchan"))).contains("poll")
    });
}

/// Kill a child we spawned and reap it.
fn kill_child(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

// --- the watcher killed mid-grace --------------------------------------------

#[test]
fn watcher_killed_mid_grace_then_use_rescues_the_same_server() {
    let mut w = World::new();
    let me = std::process::id().to_string();
    w.use_sleep("g", &me, &["--grace-period", "1h"]);
    w.ok(&["unuse", "g", "--pid", &me]);
    let info = w.info("g");
    assert_eq!(info["state"], "grace");
    let (server, watcher) = (pid_of(&info), watcher_of(&info));
    signal(watcher, Signal::SIGKILL);
    eventually(SOON, "watcher gone", || !alive(watcher));
    assert!(alive(server), "the server outlives its watcher");

    // An ordinary `use` (no command: it must not need one) attaches to the
    // orphaned server and restores supervision.
    let b = w.client();
    w.ok(&["use", "g", "--pid", &b.to_string()]);
    let info = w.info("g");
    assert_eq!(pid_of(&info), server, "the same server, not a second one");
    assert_eq!(info["state"], "active");
    assert_eq!(info["refcount"], 1);
    assert!(info["grace_remaining_ms"].is_null(), "grace was cancelled");
    let new_watcher = watcher_of(&info);
    assert_ne!(new_watcher, watcher);
    assert!(alive(new_watcher));

    // The new watcher supervises: the client's death starts the grace again.
    w.kill_client(b);
    eventually(SOON, "the new watcher noticed the dead client", || {
        read(&w.record_path("g")).contains("grace_until_ms\": 1")
    });
    assert_eq!(w.state("g"), "grace");
    assert!(alive(server));
}

#[test]
fn watcher_killed_mid_grace_lets_an_expired_grace_stop_the_server_on_the_next_command() {
    let w = World::new();
    let me = std::process::id().to_string();
    w.use_sleep("e", &me, &["--grace-period", "300ms"]);
    w.ok(&["unuse", "e", "--pid", &me]);
    let info = w.info("e");
    let (server, watcher) = (pid_of(&info), watcher_of(&info));
    let grace_left = Duration::from_millis(info["grace_remaining_ms"].as_u64().unwrap());
    let grace_end = std::time::Instant::now() + grace_left;
    signal(watcher, Signal::SIGKILL);
    eventually(SOON, "watcher gone", || !alive(watcher));
    // Nobody supervises now; let the grace period run out unattended.
    eventually(SOON, "the grace period is over", || {
        std::time::Instant::now() > grace_end
    });
    assert!(
        alive(server),
        "nothing stops an unsupervised server by itself"
    );
    // The next read-only command finds the dead watcher, and the watcher it
    // starts carries out the overdue stop.
    let code = w.check("e");
    assert!(
        code == 1 || code == 2,
        "check says grace or stopping, got {code}"
    );
    // `check` says 2 for stopping too: wait for the record to go.
    eventually(SOON, "the overdue stop happened", || {
        !alive(server) && w.state("e") == "stopped"
    });
    let info = w.info("e");
    assert_eq!(info["last_exit"]["pid"], server);
    let reason = info["last_exit"]["reason"].as_str().unwrap();
    assert!(reason.contains("grace"), "{reason}");
}

// --- a CLI killed while it holds the lock -------------------------------------

/// A child process that is SIGKILLed and reaped when dropped, so a failing
/// test never leaves a lock held (or a process stopped) behind.
struct Killed(Option<Child>);

impl Killed {
    fn id(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }
    fn kill(mut self) {
        kill_child(self.0.take().unwrap());
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(child) = self.0.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
            kill_child(child);
        }
    }
}

impl Killed {
    /// Start `sharedserver ARGS` (output captured) and return once it
    /// waits on a lock: a command queued behind a holder.
    fn queued(w: &World, args: &[&str], what: &str) -> Killed {
        let queued = Killed(Some(
            w.cmd(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ));
        let pid = queued.id();
        eventually(SOON, what, || waits_on_a_lock(pid));
        queued
    }
}

/// Whether some process holds (not merely waits for) a lock on `path`.
fn lock_held_on(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(path).unwrap().ino();
    read(Path::new("/proc/locks")).lines().any(|l| {
        !l.contains("->")
            && l.split_whitespace()
                .any(|f| f.rsplit(':').next() == Some(&ino.to_string()) && f.contains(':'))
    })
}

/// A helper that takes `<name>.lock` exactly as a CLI does (flock, exclusive)
/// and holds it until it is killed. Returns once the lock is held.
fn hold_lock(lock: &Path) -> Killed {
    let mut child = Command::new("sh")
        .args([
            "-c",
            "exec 9>>\"$1\" && flock -x 9 && echo locked && exec sleep 1000",
            "sh",
        ])
        .arg(lock)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let holder = Killed(Some(child));
    assert_eq!(line.trim(), "locked");
    assert!(lock_held_on(lock), "{}", read(Path::new("/proc/locks")));
    holder
}

#[test]
fn a_lock_holder_killed_by_sigkill_does_not_wedge_the_name() {
    let mut w = World::new();
    let a = w.client().to_string();
    w.ok(&["use", "h", "--pid", &a, "--", "sleep", "1000"]);
    let server = pid_of(&w.info("h"));
    let holder = hold_lock(&w.lockdir.join("h.lock"));

    // A real CLI now waits for the lock; it neither fails nor proceeds.
    let b = w.client().to_string();
    let mut waiting = Killed::queued(
        &w,
        &["use", "h", "--pid", &b],
        "the CLI queues on the name's lock",
    );
    // Read-only commands take no lock, so they still answer.
    assert_eq!(w.info("h")["refcount"], 1);

    // The holder dies without unlocking: the kernel releases the lock.
    holder.kill();
    let out = waiting.0.take().unwrap().wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the queued use proceeds: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = w.info("h");
    assert_eq!(
        (pid_of(&info), info["refcount"].as_u64()),
        (server, Some(2))
    );
    // And the name keeps working afterwards.
    w.ok(&["unuse", "h", "--pid", &b]);
    assert_eq!(w.info("h")["refcount"], 1);
}

#[test]
fn a_cli_killed_while_starting_a_server_leaves_exactly_one_supervised_server() {
    let mut w = World::new();
    let starts = w.path("starts");
    let cmd = counted_server(&starts);
    // The watcher creates the output FIFO before it starts the server, long
    // before the caller can write the record.
    let out_fifo = w.lockdir.join("c.out");
    let a = w.client().to_string();

    // Catch a cold `use` while it holds the lock inside the start handshake
    // (its watcher exists, the record does not yet), and freeze it there.
    let mut frozen = None;
    for _ in 0..20 {
        let mut first = w
            .cmd(&use_args("c", &a, &[], &cmd))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = first.id();
        let caught = loop {
            if out_fifo.exists() {
                signal(pid, Signal::SIGSTOP);
                break !w.record_path("c").exists() && holds_a_lock(pid);
            }
            if first.try_wait().unwrap().is_some() {
                break false;
            }
            std::thread::yield_now();
        };
        if caught {
            frozen = Some(Killed(Some(first)));
            break;
        }
        // Too late this time: undo and retry.
        signal(pid, Signal::SIGCONT);
        first.wait().unwrap();
        w.ok(&["admin", "kill", "c"]);
        eventually(SOON, "clean slate", || !out_fifo.exists());
    }
    let frozen = frozen.expect("caught a `use` inside its start handshake in 20 tries");
    let frozen_pid = frozen.id();

    // A second `use` queues behind the frozen one.
    let b = w.client().to_string();
    let mut second = Killed::queued(
        &w,
        &use_args("c", &b, &[], &cmd),
        "the second use waits on the lock",
    );

    // SIGKILL the frozen CLI while it holds the lock.
    frozen.kill();
    assert!(!alive(frozen_pid));
    let out = second.0.take().unwrap().wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the queued use succeeds: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Consistent: one record, one live server, the killed CLI's client is
    // not counted (its attach never completed), and the server the killed
    // CLI started is stopped by its own watcher, not left running.
    let info = w.info("c");
    let server = pid_of(&info);
    assert_eq!(info["refcount"], 1);
    assert_eq!(info["clients"][0]["pid"].as_u64(), Some(b.parse().unwrap()));
    assert!(alive(server));
    eventually(SOON, "every other server that was started is gone", || {
        started_pids(&starts)
            .into_iter()
            .all(|p| p == server || !alive(p))
    });
    let live: Vec<u32> = started_pids(&starts)
        .into_iter()
        .filter(|&p| alive(p))
        .collect();
    assert_eq!(live, vec![server], "exactly one server runs");
    // The journal says what happened to the orphan.
    let debug = w.ok(&["admin", "debug", "c"]).stdout();
    assert!(
        debug.contains("no record was written") || debug.contains("stopping it"),
        "{debug}"
    );
}

// --- a full lock directory -----------------------------------------------------

/// A filesystem mounted for one test, unmounted (lazily) when dropped, after
/// killing every server whose record lives on it.
struct Mounted {
    dir: PathBuf,
}

impl Mounted {
    fn run(args: &[&str]) -> Result<(), String> {
        let out = Command::new("mount")
            .args(args)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    fn need_root(what: &str, err: String) -> ! {
        panic!(
            "this fault test needs root to {what} (tests/run runs it as root; by hand: `sudo cargo test --test faults -- --ignored`): {err}"
        )
    }

    /// A tmpfs of `size` at `dir`, which becomes a private lock directory.
    fn tmpfs(dir: &Path, size: &str) -> Mounted {
        std::fs::create_dir_all(dir).unwrap();
        if let Err(e) = Mounted::run(&[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
            &dir.to_string_lossy(),
        ]) {
            Mounted::need_root("mount a small tmpfs", e);
        }
        Mounted {
            dir: dir.to_path_buf(),
        }
    }

    /// `dir` bind-mounted read-only over itself.
    fn read_only(dir: &Path) -> Mounted {
        let d = dir.to_string_lossy();
        if let Err(e) = Mounted::run(&["--bind", &d, &d]) {
            Mounted::need_root("bind-mount the lock directory", e);
        }
        let m = Mounted {
            dir: dir.to_path_buf(),
        };
        if let Err(e) = Mounted::run(&["-o", "remount,bind,ro", &d]) {
            Mounted::need_root("remount the lock directory read-only", e);
        }
        m
    }

    fn unmount(&mut self) {
        if self.dir.as_os_str().is_empty() {
            return;
        }
        let status = Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status()
            .expect("umount");
        assert!(status.success(), "umount {}", self.dir.display());
        self.dir = PathBuf::new();
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.dir.as_os_str().is_empty() {
            return;
        }
        let _ = std::fs::remove_file(self.dir.join("fill"));
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                if let Some(name) = file.strip_suffix(".json") {
                    let _ = Command::new(BIN)
                        .args(["admin", "kill", name])
                        .env("SHAREDSERVER_LOCKDIR", &self.dir)
                        .output();
                }
            }
        }
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Fill the filesystem holding `dir` to the last byte.
fn fill(dir: &Path) {
    let mut f = std::fs::File::create(dir.join("fill")).unwrap();
    let chunk = vec![b'x'; 4096];
    loop {
        if let Err(e) = f.write_all(&chunk) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            break;
        }
    }
    // Single bytes, in case a partial page is left.
    while f.write_all(b"x").is_ok() {}
}

fn assert_clear_failure(r: &Run, dir: &Path, cause: &str) {
    assert_eq!(
        r.code(),
        10,
        "fails with the runtime-error code: {}",
        r.stderr()
    );
    let err = r.stderr();
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&*dir.to_string_lossy()),
        "names the path: {err}"
    );
    assert!(err.contains(cause), "says why ({cause}): {err}");
}

#[test]
#[ignore = "needs root"]
fn a_full_lock_dir_fails_clearly_and_recovers_when_space_returns() {
    let mut w = World::new();
    let mut mount = Mounted::tmpfs(&w.lockdir, "64k");
    let starts = w.path("starts");
    let cmd = counted_server(&starts);
    let (a, b, c) = (
        w.client().to_string(),
        w.client().to_string(),
        w.client().to_string(),
    );
    w.ok(&use_args("s", &a, &["--grace-period", "1h"], &cmd));
    w.ok(&["use", "s", "--pid", &b]);
    let server = pid_of(&w.info("s"));

    fill(&w.lockdir);

    // Attaching needs a record write: it fails, naming the file and the cause.
    let r = w.run(&["use", "s", "--pid", &c]);
    assert_clear_failure(&r, &w.lockdir, "No space left on device");
    assert!(r.stderr().contains("free some space"), "{}", r.stderr());
    let r = w.run(&["unuse", "s", "--pid", &b]);
    assert_clear_failure(&r, &w.lockdir, "No space left on device");
    // Nothing half-done: the record is intact and still readable.
    let info = w.info("s");
    assert_eq!(
        (pid_of(&info), info["refcount"].as_u64()),
        (server, Some(2))
    );

    // A cold start cannot record its server: it fails, and the server it
    // spawned is stopped rather than left running unrecorded.
    let other = w.path("other-starts");
    let r = w.run(&use_args("t", &a, &[], &counted_server(&other)));
    assert_clear_failure(&r, &w.lockdir, "No space left on device");
    eventually(SOON, "the unrecorded server is stopped", || {
        started_pids(&other).iter().all(|&p| !alive(p))
    });
    assert_eq!(w.check("t"), 2);

    // Space returns: everything works again, with the same server.
    std::fs::remove_file(w.lockdir.join("fill")).unwrap();
    w.ok(&["use", "s", "--pid", &c]);
    w.ok(&["unuse", "s", "--pid", &b]);
    let info = w.info("s");
    assert_eq!(pid_of(&info), server);
    assert_eq!(info["refcount"], 2);
    assert!(alive(watcher_of(&info)));
    assert_eq!(started_pids(&starts), vec![server], "no second server");
    w.ok(&use_args("t", &a, &[], &counted_server(&other)));
    assert_eq!(w.check("t"), 0);
    w.ok(&["admin", "kill", "t"]);
    w.ok(&["admin", "kill", "s"]);
    mount.unmount();
}

#[test]
#[ignore = "needs root"]
fn a_client_dying_while_the_lock_dir_is_full_is_accounted_for_once_space_returns() {
    let mut w = World::new();
    let mut mount = Mounted::tmpfs(&w.lockdir, "64k");
    let starts = w.path("starts");
    let cmd = counted_server(&starts);
    let a = w.client();
    let b = w.client();
    w.ok(&use_args(
        "d",
        &a.to_string(),
        &["--grace-period", "1h"],
        &cmd,
    ));
    w.ok(&["use", "d", "--pid", &b.to_string()]);
    let server = pid_of(&w.info("d"));

    fill(&w.lockdir);
    // The watcher cannot write the change. Whatever it does about that, a
    // reader either counts right or fails clearly, and the state must be
    // right once space returns.
    w.kill_client(a);
    let r = w.run(&["info", "d", "--json"]);
    if r.code() == 0 {
        let info: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
        assert_eq!(info["refcount"], 1, "readers never count a dead client");
    } else {
        assert_clear_failure(&r, &w.lockdir, "No space left on device");
    }
    std::fs::remove_file(w.lockdir.join("fill")).unwrap();

    // The first command after space returns restores supervision; its
    // answer must already leave out the client that died meanwhile.
    let info = w.info("d");
    assert_eq!(pid_of(&info), server);
    assert_eq!(info["refcount"], 1, "a dead client is not counted");
    eventually(SOON, "the record on disk drops the dead client", || {
        !read(&w.record_path("d")).contains(&format!("\"pid\": {a},"))
    });
    // Supervision works: the last client's death starts the grace period.
    w.kill_client(b);
    eventually(SOON, "the watcher moves it to grace", || {
        read(&w.record_path("d")).contains("grace_until_ms\": 1")
    });
    assert_eq!(started_pids(&starts), vec![server]);
    w.ok(&["admin", "kill", "d"]);
    mount.unmount();
}

// --- a read-only lock directory --------------------------------------------------

#[test]
#[ignore = "needs root"]
fn a_read_only_lock_dir_fails_clearly_and_recovers_when_writable_again() {
    let mut w = World::new();
    let a = w.client().to_string();
    let b = w.client().to_string();
    w.use_sleep("r", &a, &["--grace-period", "1h"]);
    let server = pid_of(&w.info("r"));

    let mut mount = Mounted::read_only(&w.lockdir);
    for args in [
        vec!["use", "r", "--pid", &b],
        vec!["unuse", "r", "--pid", &a],
        vec!["use", "fresh", "--pid", &a, "--", "sleep", "1000"],
    ] {
        let r = w.run(&args);
        assert_clear_failure(&r, &w.lockdir, "Read-only file system");
        assert!(
            r.stderr().contains("SHAREDSERVER_LOCKDIR"),
            "suggests the fix: {}",
            r.stderr()
        );
    }
    // Reading needs no write access.
    let info = w.info("r");
    assert_eq!(
        (pid_of(&info), info["refcount"].as_u64()),
        (server, Some(1))
    );
    assert_eq!(w.check("fresh"), 2);

    mount.unmount();
    w.ok(&["use", "r", "--pid", &b]);
    let info = w.info("r");
    assert_eq!(
        (pid_of(&info), info["refcount"].as_u64()),
        (server, Some(2))
    );
    w.ok(&["use", "fresh", "--pid", &a, "--", "sleep", "1000"]);
    assert_eq!(w.check("fresh"), 0);
}

// --- a record truncated to zero bytes ---------------------------------------------

#[test]
fn a_truncated_record_fails_every_command_clearly_and_doctor_restores_it() {
    let mut w = World::new();
    let a = w.client().to_string();
    let b = w.client().to_string();
    w.ok(&["use", "z", "--pid", &a, "--", "sleep", "1000"]);
    w.ok(&["use", "fine", "--pid", &a, "--", "sleep", "1000"]);
    let server = pid_of(&w.info("z"));
    watcher_sleeps(&w, "z");
    let path = w.record_path("z");
    std::fs::File::create(&path).unwrap(); // truncate to 0 bytes

    for args in [
        vec!["info", "z"],
        vec!["use", "z", "--pid", &b],
        vec!["unuse", "z", "--pid", &a],
    ] {
        let r = w.run(&args);
        assert_clear_failure(&r, &path, "empty");
        assert!(
            r.stderr().contains("admin doctor"),
            "says how to repair: {}",
            r.stderr()
        );
    }
    // One bad record hides no other server.
    let r = w.run(&["list", "--json"]);
    assert_eq!(r.code(), 10, "list reports the bad record");
    assert!(
        r.stderr().contains(&*path.to_string_lossy()),
        "{}",
        r.stderr()
    );
    let listed: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "fine"));

    let fixed = w.ok(&["admin", "doctor"]).stdout();
    assert!(fixed.contains("restored"), "{fixed}");
    let info = w.info("z");
    assert_eq!(
        (pid_of(&info), info["refcount"].as_u64()),
        (server, Some(1))
    );
    assert!(std::fs::metadata(&path).unwrap().len() > 0);
    w.ok(&["use", "z", "--pid", &b]);
    assert_eq!(w.info("z")["refcount"], 2);
}

#[test]
fn a_truncated_record_is_rewritten_by_the_watcher_on_its_next_event() {
    let mut w = World::new();
    let a = w.client();
    w.use_sleep("y", &a.to_string(), &["--grace-period", "1h"]);
    let server = pid_of(&w.info("y"));
    watcher_sleeps(&w, "y");
    std::fs::File::create(w.record_path("y")).unwrap();
    // The client dies: the watcher wakes, finds the record unreadable, and
    // writes back what it knows, minus the dead client.
    w.kill_client(a);
    eventually(SOON, "the watcher rewrote the record", || {
        w.run(&["info", "y"]).code() == 0
    });
    let info = w.info("y");
    assert_eq!(
        (pid_of(&info), info["refcount"].as_u64()),
        (server, Some(0))
    );
    assert_eq!(info["state"], "grace", "the last client left: grace begins");
    assert!(alive(server));
    let debug = w.ok(&["admin", "debug", "y"]).stdout();
    assert!(debug.contains("restored it from memory"), "{debug}");
}

#[test]
fn a_truncated_record_with_a_dead_watcher_is_moved_aside_and_the_name_is_usable_again() {
    let w = World::new();
    let a = std::process::id().to_string();
    w.ok(&["use", "x", "--pid", &a, "--", "sleep", "1000"]);
    let info = w.info("x");
    let (server, watcher) = (pid_of(&info), watcher_of(&info));
    signal(watcher, Signal::SIGKILL);
    eventually(SOON, "watcher gone", || !alive(watcher));
    let path = w.record_path("x");
    std::fs::File::create(&path).unwrap();

    let r = w.run(&["info", "x"]);
    assert_clear_failure(&r, &path, "empty");
    let report = w.ok(&["admin", "doctor", "x"]).stdout();
    assert!(report.contains("moved it to"), "{report}");
    assert!(
        report.contains(&format!("stopped the orphaned server pid {server}")),
        "finds the orphan by its tag and stops it: {report}"
    );
    assert!(!alive(server), "no unsupervised server is left running");
    let aside: Vec<_> = std::fs::read_dir(&w.lockdir)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("x.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "the bad file is kept, not deleted");
    assert_eq!(w.check("x"), 2);
    w.ok(&["use", "x", "--pid", &a, "--", "sleep", "1000"]);
    assert_eq!(w.check("x"), 0);
    assert_ne!(
        pid_of(&w.info("x")),
        server,
        "a fresh server, not a duplicate"
    );
}

// --- a stuck lock holder ----------------------------------------------------

/// A process that takes `name`'s lock, says so by creating `held`, and
/// stops itself (SIGSTOP), as a `use` stopped with the lock would be.
fn stuck_lock_holder(w: &World, name: &str, held: &Path) -> KilledOnDrop {
    let script = "import fcntl, os, signal, sys\n\
                  f = open(sys.argv[1], 'a')\n\
                  fcntl.flock(f, fcntl.LOCK_EX)\n\
                  open(sys.argv[2], 'w').close()\n\
                  os.kill(os.getpid(), signal.SIGSTOP)\n\
                  os.read(0, 1)\n";
    let child = Command::new("python3")
        .args(["-c", script])
        .arg(w.lockdir.join(format!("{name}.lock")))
        .arg(held)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let child = KilledOnDrop(child);
    eventually(SOON, "the holder has the lock", || held.exists());
    child
}

/// A child process that is killed (and reaped) even when the test fails.
struct KilledOnDrop(Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_stuck_lock_holder_is_named_and_admin_kill_works_anyway() {
    let mut w = World::new();
    let a = w.client().to_string();
    // With a restart policy, which a kill on request must not trigger.
    w.use_sleep(
        "held",
        &a,
        &["--grace-period", "1h", "--restart", "on-failure"],
    );
    let server = pid_of(&w.info("held"));
    let holder = stuck_lock_holder(&w, "held", &w.path("holding"));
    let holder_pid = holder.0.id();
    eventually(SOON, "the holder stopped", || {
        read(Path::new(&format!("/proc/{holder_pid}/stat")))
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
    });

    // A command on the name waits a bounded time, saying whom for.
    let r = Run(w
        .cmd(&["unuse", "held", "--pid", &a])
        .env("SHAREDSERVER_LOCK_TIMEOUT", "2s")
        .output()
        .unwrap());
    assert_eq!(r.code(), 10, "{}", r.stderr());
    let who = format!("held by pid {holder_pid} (python3), which is stopped");
    let err = r.stderr();
    assert!(
        err.contains(&format!("waiting up to 2s for the lock on 'held', {who}")),
        "{err}"
    );
    assert!(
        err.contains("gave up after 2s waiting for the lock on 'held'")
            && err.contains(&who)
            && err.contains("`sharedserver admin kill held`"),
        "{err}"
    );

    // admin kill does not need the lock.
    w.ok(&["admin", "kill", "held"]);
    eventually(SOON, "the server killed", || !alive(server));

    // Once the holder goes, the watcher records the end: a kill on
    // request (the kill told it so), not a crash to restart.
    drop(holder);
    eventually(SOON, "the record cleared", || w.state("held") == "stopped");
    let last = &w.info("held")["last_exit"];
    assert_eq!(last["signal"], 9);
    assert_eq!(last["kind"], "killed", "{last}");
    assert_eq!(last["reason"], "killed on request", "{last}");
}
