//! A hostile or broken environment: forged records, exhausted descriptors,
//! pids that are not clients, planted files. Each test reproduces the attack
//! with real processes (and, where a mistake could hurt the machine, inside
//! a pid namespace), and checks that nothing we did not start is signalled
//! and no live client is dropped.
//!
//! The tests that need root (pid and mount namespaces, device nodes) are
//! `#[ignore = "needs root"]`, so plain `cargo test` leaves them out;
//! tests/run runs them with `--ignored` as root, and asked for without root
//! they fail and say so.
// Linux only: it uses pid namespaces, thread ids and /proc.
#![cfg(target_os = "linux")]

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const SOON: Duration = Duration::from_secs(10);

fn record(w: &World, name: &str) -> Value {
    serde_json::from_str(&read(&w.record_path(name))).expect("record is JSON")
}

fn id(pid: u32) -> Value {
    json!({ "pid": pid, "start_time": start_time(pid) })
}

/// Run `script` as pid 1 of a new pid namespace (with its own /proc), with
/// the binary in $BIN and the lock dir in $SHAREDSERVER_LOCKDIR.
fn in_pid_namespace(w: &World, script: &str) -> Run {
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c", script])
        .env("BIN", BIN)
        .env("SHAREDSERVER_LOCKDIR", &w.lockdir)
        .current_dir(w.tmp.path())
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    let run = Run(out);
    assert!(
        !run.stderr().contains("unshare failed"),
        "this test needs root for a pid namespace: {}",
        run.stderr()
    );
    run
}

#[test]
#[ignore = "needs root"]
fn a_record_naming_pid_1_never_makes_kill_signal_every_process() {
    // kill(-1, SIGKILL) inside the namespace would take the bystander with it.
    let w = World::new();
    let run = in_pid_namespace(
        &w,
        r#"
        sleep 1000 & by=$!
        "$BIN" use real --pid $by -- sleep 1000 >/dev/null || exit 3
        st=$(cut -d' ' -f22 /proc/1/stat)
        rec="$SHAREDSERVER_LOCKDIR/real.json"
        sed -e '/"server"/,/}/ s/"pid": [0-9]*/"pid": 1/' \
            -e "/\"server\"/,/}/ s/\"start_time\": [0-9]*/\"start_time\": $st/" "$rec" > "$rec.new"
        mv "$rec.new" "$rec"
        grep -q '"pid": 1,' "$rec" || exit 4
        "$BIN" admin kill real
        kill -0 $by && echo bystander-alive
        "#,
    );
    assert!(
        run.stdout().contains("bystander-alive"),
        "stdout: {}\nstderr: {}",
        run.stdout(),
        run.stderr()
    );
}

#[test]
fn kill_and_recovery_never_signal_a_group_that_lacks_the_servers_tag() {
    let mut w = World::new();
    let c = w.client();
    w.use_sleep("real", &c.to_string(), &[]);
    let template = record(&w, "real");
    let victim = Sleeper::new();
    let unrelated_live = Sleeper::new();
    // A: the record's watcher is dead, so the next command adopts the
    // "server". B: its watcher looks alive, so kill signals at once.
    let dead_watcher = json!({ "pid": 999_999_999u32 / 4, "start_time": 1 });
    for (name, watcher) in [("a", dead_watcher), ("b", id(unrelated_live.pid()))] {
        let mut forged = template.clone();
        forged["name"] = json!(name);
        forged["server"] = id(victim.pid());
        forged["watcher"] = watcher;
        forged["watcher_is_parent"] = json!(false);
        std::fs::write(w.record_path(name), forged.to_string()).unwrap();
        let r = w.run(&["admin", "kill", name]);
        assert!(
            alive(victim.pid()),
            "{name}: admin kill signalled a group it never started: {}",
            r.stderr()
        );
        assert!(alive(unrelated_live.pid()));
    }
}

#[test]
fn a_thread_id_is_refused_as_a_client() {
    let w = World::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        // SAFETY: plain syscall.
        tx.send(unsafe { libc::gettid() } as u32).unwrap();
        let _ = stop_rx.recv();
    });
    let tid = rx.recv().unwrap().to_string();
    let r = w.run(&["use", "t", "--pid", &tid, "--", "sleep", "1000"]);
    stop_tx.send(()).unwrap();
    thread.join().unwrap();
    assert_ne!(r.code(), 0, "a thread was accepted as a client");
    assert!(
        r.stderr().contains("thread") && r.stderr().contains(&std::process::id().to_string()),
        "{}",
        r.stderr()
    );
    assert!(!w.record_path("t").exists());
}

#[test]
#[ignore = "needs root"]
fn init_is_refused_as_a_client_given_or_implied_and_the_message_names_pid() {
    let w = World::new();
    let r = w.run(&["use", "i", "--pid", "1", "--", "sleep", "1000"]);
    assert_ne!(r.code(), 0);
    assert!(r.stderr().contains("--pid"), "{}", r.stderr());
    assert!(!w.record_path("i").exists());
    // The caller's parent is init: as under `setsid -f`. In a namespace the
    // shell is init, so the CLI it runs has init as its parent.
    let run = in_pid_namespace(&w, r#""$BIN" use j -- sleep 1000; echo "rc=$?""#);
    assert!(!run.stdout().contains("rc=0"), "{}", run.stdout());
    assert!(run.stderr().contains("--pid"), "{}", run.stderr());
    assert!(!w.record_path("j").exists());
}

#[test]
fn running_out_of_descriptors_never_drops_a_live_client() {
    let mut w = World::new();
    let first = w.client();
    // The watcher inherits a hard limit of 20 descriptors.
    let script = format!("ulimit -n 20 && exec '{BIN}' use lost --pid {first} -- sleep 1000");
    let out = Command::new("sh")
        .args(["-c", &script])
        .env("SHAREDSERVER_LOCKDIR", &w.lockdir)
        .output()
        .unwrap();
    assert_success(&out);
    let mut clients = vec![first];
    for _ in 0..10 {
        let c = w.client();
        w.ok(&["use", "lost", "--pid", &c.to_string()]);
        clients.push(c);
    }
    let last = *clients.last().unwrap();
    let journal = w.lockdir.join("lost.journal");
    eventually(SOON, "the watcher has seen the last attach", || {
        read(&journal).contains(&format!("client {last} attached"))
    });
    let count = |w: &World| record(w, "lost")["clients"].as_array().unwrap().len();
    assert_eq!(count(&w), 11, "journal:\n{}", read(&journal));
    assert!(!read(&journal).contains("died"), "{}", read(&journal));
    // Clients over the budget are polled: a death is still noticed.
    w.kill_client(clients[5]);
    eventually(SOON, "the dead client is dropped", || count(&w) == 10);
    assert_eq!(w.state("lost"), "active");
}

/// Start `use` and wait for it with a deadline: a start that hangs fails
/// the test instead of hanging it.
fn run_bounded(w: &World, args: &[&str]) -> Run {
    let mut child = w
        .cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + SOON;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sharedserver {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Run(child.wait_with_output().unwrap())
}

/// A server that writes `bytes` bytes of output at once, then waits.
fn writes(bytes: u64) -> String {
    format!("head -c {bytes} /dev/zero | tr '\\0' a; exec sleep 1000")
}

#[test]
#[ignore = "needs root"]
fn a_device_as_log_file_is_written_but_never_rotated_or_replaced() {
    // A private null device, so a regression cannot destroy /dev/null.
    let mut w = World::new();
    let null = w.path("null");
    let made = Command::new("mknod")
        .args([null.to_str().unwrap(), "c", "1", "3"])
        .status()
        .unwrap();
    assert!(made.success(), "mknod needs root");
    let c = w.client().to_string();
    let script = writes(5 * 1024 * 1024);
    let log = null.to_str().unwrap();
    w.ok(&[
        "use",
        "n",
        "--pid",
        &c,
        "--log-file",
        log,
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let rotated = w.path("null.1");
    // The server writes 5 MiB; wait until the watcher has drained it all.
    let server = pid_of(&w.info("n"));
    eventually(SOON, "the server has written everything", || {
        read(Path::new(&format!("/proc/{server}/wchan"))) != "pipe_write"
            && read(Path::new(&format!("/proc/{server}/cmdline"))).starts_with("sleep")
    });
    w.ok(&["admin", "kill", "n"]);
    use std::os::unix::fs::FileTypeExt;
    let kind = std::fs::symlink_metadata(&null).unwrap().file_type();
    assert!(kind.is_char_device(), "the device was replaced: {kind:?}");
    assert!(!rotated.exists(), "the device was rotated away");
}

#[test]
fn a_symlink_or_fifo_as_log_file_is_refused_at_once_and_the_target_untouched() {
    let mut w = World::new();
    let victim = w.path("victim");
    std::fs::write(&victim, "precious").unwrap();
    let link = w.path("link.log");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let fifo = w.path("fifo.log");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let c = w.client().to_string();
    for (log, why) in [(&link, "symlink"), (&fifo, "FIFO")] {
        let log = log.to_str().unwrap();
        let r = run_bounded(
            &w,
            &[
                "use",
                "x",
                "--pid",
                &c,
                "--log-file",
                log,
                "--",
                "echo",
                "hi",
            ],
        );
        assert_ne!(r.code(), 0, "{log} accepted");
        assert!(
            r.stderr().contains(why) && r.stderr().contains(log),
            "{}",
            r.stderr()
        );
        assert!(!w.record_path("x").exists());
    }
    assert_eq!(read(&victim), "precious");
    // /dev/stdout is a symlink too; the message says what to do instead.
    let r = run_bounded(
        &w,
        &[
            "use",
            "x",
            "--pid",
            &c,
            "--log-file",
            "/dev/stdout",
            "--",
            "sleep",
            "1000",
        ],
    );
    assert!(r.stderr().contains("sharedserver logs"), "{}", r.stderr());
    assert!(!r.stderr().contains("version"), "{}", r.stderr());
}

#[test]
fn a_log_file_in_a_missing_directory_gets_a_private_directory() {
    let mut w = World::new();
    let c = w.client().to_string();
    let log = w.path("new/deeper/x.log");
    let log_s = log.to_str().unwrap();
    w.ok(&[
        "use",
        "m",
        "--pid",
        &c,
        "--log-file",
        log_s,
        "--",
        "sh",
        "-c",
        "echo hello; exec sleep 1000",
    ]);
    eventually(SOON, "the output reaches the log", || {
        read(&log).contains("hello")
    });
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(log.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(w.ok(&["logs", "m"]).stdout().contains("hello"));
}

#[test]
#[ignore = "needs root"]
fn a_log_that_cannot_be_rotated_is_truncated_in_place_and_says_why() {
    let mut w = World::new();
    let c = w.client().to_string();
    let log = w.path("big.log");
    std::fs::write(&log, "").unwrap();
    // A mount point cannot be renamed (EBUSY): rotation fails as it does in
    // a read-only directory. The mount lives in the watcher's own mount
    // namespace and goes away with it.
    let script = format!(
        r#"mount --bind "$LOG" "$LOG" && exec "$BIN" use big --pid {c} --log-file "$LOG" -- sh -c "{}""#,
        writes(6_000_000).replace('"', "\\\"")
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("BIN", BIN)
        .env("LOG", &log)
        .env("SHAREDSERVER_LOCKDIR", &w.lockdir)
        .output()
        .unwrap();
    assert_success(&out);
    let journal = w.lockdir.join("big.journal");
    eventually(SOON, "the journal says why the log was truncated", || {
        read(&journal).contains("truncated it in place")
    });
    let server = pid_of(&w.info("big"));
    eventually(SOON, "the server has written everything", || {
        read(Path::new(&format!("/proc/{server}/cmdline"))).starts_with("sleep")
    });
    w.ok(&["admin", "kill", "big"]);
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(size <= 4 * 1024 * 1024, "the log grew to {size} bytes");
    assert!(size > 0, "output after the truncation is kept");
}

#[test]
fn too_few_descriptors_to_start_a_watcher_says_so() {
    let mut w = World::new();
    let c = w.client();
    for limit in [5, 8, 11] {
        let script = format!("ulimit -n {limit} && exec '{BIN}' use few --pid {c} -- sleep 1000");
        let out = Command::new("sh")
            .args(["-c", &script])
            .env("SHAREDSERVER_LOCKDIR", &w.lockdir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            w.ok(&["admin", "kill", "few"]);
            continue; // enough after all on this system
        }
        assert!(
            err.contains("ulimit -n") && !err.contains("reinstall"),
            "limit {limit}: {err}"
        );
    }
}

#[test]
fn a_trailing_slash_or_dot_does_not_let_a_symlinked_lock_dir_through() {
    let w = World::new();
    let real = w.path("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let link = w.path("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    for suffix in ["", "/", "//", "/."] {
        let dir = format!("{}{suffix}", link.display());
        let r = Run(Command::new(BIN)
            .args(["list"])
            .env("SHAREDSERVER_LOCKDIR", &dir)
            .output()
            .unwrap());
        assert_ne!(r.code(), 0, "{dir} was accepted");
        assert!(r.stderr().contains("symlink"), "{dir}: {}", r.stderr());
    }
}

/// Swap two directories (`renameat2(RENAME_EXCHANGE)`) until told to stop.
fn swapper(
    a: &Path,
    b: &Path,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let (a, b) = (
        CString::new(a.as_os_str().as_bytes()).unwrap(),
        CString::new(b.as_os_str().as_bytes()).unwrap(),
    );
    std::thread::spawn(move || {
        let mut swaps = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            // SAFETY: plain syscall on two paths we own.
            let rc = unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    a.as_ptr(),
                    libc::AT_FDCWD,
                    b.as_ptr(),
                    libc::RENAME_EXCHANGE,
                )
            };
            assert_eq!(rc, 0, "renameat2: {}", std::io::Error::last_os_error());
            swaps += 1;
        }
        swaps
    })
}

#[test]
fn a_lock_dir_swapped_after_its_check_is_never_used() {
    // Another user who can write the lock dir's parent swaps in a forged
    // directory of their own, holding a record for a live "server".
    let mut w = World::new();
    w.make_lockdir();
    let forged = w.path("forged");
    std::fs::create_dir(&forged).unwrap();
    let c = w.client();
    w.use_sleep("template", &c.to_string(), &[]);
    let mut rec = record(&w, "template");
    w.ok(&["admin", "kill", "template"]);
    let (server, watcher) = (Sleeper::new(), Sleeper::new());
    rec["name"] = json!("foo");
    rec["server"] = id(server.pid());
    rec["watcher"] = id(watcher.pid());
    std::fs::write(forged.join("foo.json"), rec.to_string()).unwrap();
    std::os::unix::fs::chown(&forged, Some(65534), Some(65534)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swaps = swapper(&w.lockdir, &forged, stop.clone());
    let mut forged_reads = 0;
    for _ in 0..300 {
        let r = w.run(&["info", "foo", "--json"]);
        if r.stdout().contains("\"active\"") {
            forged_reads += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swaps.join().unwrap();
    if swaps % 2 == 1 {
        // An odd number of exchanges: put both back.
        let _ = std::fs::rename(&w.lockdir, w.path("tmp-swap"));
        let _ = std::fs::rename(&forged, &w.lockdir);
        let _ = std::fs::rename(w.path("tmp-swap"), &forged);
    }
    assert_eq!(forged_reads, 0, "a forged record was read ({swaps} swaps)");
    assert!(alive(server.pid()) && alive(watcher.pid()));
}

/// Run a command with a deadline (see `run_bounded`), any exit accepted.
fn bounded(w: &World, args: &[&str]) -> Run {
    run_bounded(w, args)
}

#[test]
fn special_files_planted_in_the_lock_dir_hang_nothing_and_doctor_removes_them() {
    let mut w = World::new();
    w.make_lockdir();
    let c = w.client().to_string();
    let fifo = |file: &str| {
        nix::unistd::mkfifo(&w.lockdir.join(file), nix::sys::stat::Mode::S_IRWXU).unwrap()
    };
    fifo("a.json");
    fifo("b.last");
    fifo("b.journal");
    fifo("b.log");
    std::fs::write(w.lockdir.join("d.wake"), "").unwrap();
    std::fs::create_dir(w.lockdir.join("e.wake")).unwrap();
    for args in [
        &["list"][..],
        &["info", "a"],
        &["check", "a"],
        &["info", "b"],
        &["check", "b"],
        &["logs", "b"],
        &["admin", "debug", "b"],
    ] {
        bounded(&w, args);
    }
    let r = bounded(&w, &["use", "a", "--pid", &c, "--", "sleep", "1000"]);
    assert!(r.stderr().contains("doctor"), "{}", r.stderr());
    let report = bounded(&w, &["admin", "doctor"]);
    assert_eq!(report.code(), 0, "{}", report.stderr());
    let out = report.stdout();
    for file in ["a.json", "b.last", "b.journal", "b.log", "d.wake", "e.wake"] {
        assert!(out.contains(file), "doctor did not fix {file}:\n{out}");
    }
    for name in ["a", "b", "d", "e"] {
        bounded(&w, &["use", name, "--pid", &c, "--", "sleep", "1000"]);
        assert_eq!(w.state(name), "active", "{name} after doctor");
    }
}

#[test]
fn doctor_for_one_name_removes_only_that_names_interrupted_writes() {
    let w = World::new();
    w.make_lockdir();
    // Writers that are gone: pids far beyond pid_max.
    let mine = w.lockdir.join(".a.json.999999999.0.tmp");
    let other = w.lockdir.join(".b.json.999999999.0.tmp");
    std::fs::write(&mine, "x").unwrap();
    std::fs::write(&other, "x").unwrap();
    w.ok(&["admin", "doctor", "a"]);
    assert!(!mine.exists(), "a's interrupted write stayed");
    assert!(other.exists(), "doctor a removed b's file");
}

/// The children of `pid` (as listed by its main thread).
fn children(pid: u32) -> Vec<u32> {
    read(Path::new(&format!("/proc/{pid}/task/{pid}/children")))
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

#[test]
fn doctor_stops_the_children_of_a_server_killed_with_its_watcher() {
    let mut w = World::new();
    let c = w.client().to_string();
    let script = "sleep 1000 & setsid sleep 1000 & wait";
    w.ok(&["use", "kids", "--pid", &c, "--", "sh", "-c", script]);
    let info = w.info("kids");
    let (server, watcher) = (pid_of(&info), watcher_of(&info));
    eventually(SOON, "the server started both children", || {
        children(server).len() == 2
    });
    let kids = children(server);
    signal(watcher, nix::sys::signal::Signal::SIGKILL);
    eventually(SOON, "the watcher is gone", || !alive(watcher));
    signal(server, nix::sys::signal::Signal::SIGKILL);
    eventually(SOON, "the server is gone", || !alive(server));
    assert!(kids.iter().all(|&k| alive(k)), "the children outlive both");
    let report = w.ok(&["admin", "doctor"]).stdout();
    for k in &kids {
        assert!(!alive(*k), "child {k} survived doctor:\n{report}");
        assert!(report.contains(&k.to_string()), "{report}");
    }
}

#[test]
#[ignore = "needs root"]
fn without_a_runtime_dir_the_lock_dir_is_on_dev_shm_when_it_is_a_tmpfs_else_in_tmp() {
    // Private mounts: a fresh /tmp, and /dev/shm as a tmpfs or as something
    // else (ramfs). doctor shows the directory it chose.
    let uid = nix::unistd::geteuid();
    for (shm, want) in [
        ("tmpfs", format!("/dev/shm/sharedserver-{uid}")),
        ("ramfs", format!("/tmp/sharedserver-{uid}")),
    ] {
        let script = format!(
            r#"mount -t tmpfs none /tmp && mount -t {shm} none /dev/shm && exec "$BIN" admin doctor"#
        );
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env("BIN", BIN)
            .env_remove("SHAREDSERVER_LOCKDIR")
            .env_remove("XDG_RUNTIME_DIR")
            .output()
            .unwrap();
        let run = Run(out);
        assert_eq!(run.code(), 0, "{shm}: {}", run.stderr());
        assert!(
            run.stdout().contains(&format!("lock directory: {want}\n")),
            "{shm}: {}",
            run.stdout()
        );
    }
}

#[test]
fn a_watcher_whose_lock_dir_is_removed_stops_its_server_and_leaves_without_spinning() {
    let mut w = World::new();
    let c = w.client();
    w.use_sleep("gone", &c.to_string(), &[]);
    let info = w.info("gone");
    let (server, watcher) = (pid_of(&info), watcher_of(&info));
    // A tmp cleaner (or a logout) removes the whole lock directory.
    std::fs::remove_dir_all(&w.lockdir).unwrap();
    // The next event (here: the client's death) finds no lock file. The
    // watcher used to retry at once, forever, at full speed; now it stops the
    // server nobody can reach by name any more, and exits.
    w.kill_client(c);
    eventually(SOON, "the watcher leaves", || !alive(watcher));
    assert!(!alive(server), "the unreachable server {server} still runs");
}

/// `args` with standard output on /dev/full (every write fails: ENOSPC).
fn to_full_disk(w: &World, args: &[&str]) -> Run {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    Run(w.cmd(args).stdout(full).output().unwrap())
}

#[test]
fn a_full_standard_output_is_one_error_line_never_a_panic() {
    let mut w = World::new();
    let p = w.client().to_string();
    w.use_sleep("other", &p, &[]);
    let full = "cannot write to standard output: No space left on device";
    for args in [
        &["list"][..],
        &["info", "other"],
        &["completion", "zsh"],
        &["--help"],
        &["admin", "debug", "other"],
    ] {
        let r = to_full_disk(&w, args);
        assert_eq!(r.code(), 10, "{args:?}: {}", r.stderr());
        assert!(r.stderr().contains(full), "{args:?}: {}", r.stderr());
        assert_eq!(r.stderr().lines().count(), 1, "{args:?}: {}", r.stderr());
    }
    // A `use` that cannot say so still holds what it attached.
    let q = w.client().to_string();
    let r = to_full_disk(&w, &["use", "full", "--pid", &q, "--", "sleep", "1000"]);
    assert_eq!(r.code(), 10, "{}", r.stderr());
    assert!(
        r.stderr().contains(&format!(
            "{full} (os error 28); 'full' runs and pid {q} holds it all the same"
        )),
        "{}",
        r.stderr()
    );
    assert_eq!(w.state("full"), "active");
    assert_eq!(client_pids(&w.info("full")), [q.parse::<u32>().unwrap()]);
    // Nor does a full standard error panic: the message is lost, the exit
    // code stays.
    let dev_full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = w
        .cmd(&["port", "nosuch"])
        .stderr(dev_full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(10));
}

#[test]
fn a_closed_pipe_on_standard_output_ends_quietly() {
    let mut w = World::new();
    let p = w.client().to_string();
    w.use_sleep("other", &p, &[]);
    for args in [&["list"][..], &["completion", "bash"], &["info", "other"]] {
        let (reader, writer) = nix::unistd::pipe().unwrap();
        drop(reader);
        let out = w.cmd(args).stdout(writer).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(err, "", "{args:?}");
    }
}

/// A record in good form whose server is a live process we never started
/// (no tag) and whose watcher is no watcher: stop and kill refuse at once,
/// pointing at doctor, and doctor sets the record aside, leaving the
/// process alone. Nothing we did not start is signalled.
#[test]
fn a_forged_record_is_refused_at_once_and_doctor_sets_it_aside() {
    let mut w = World::new();
    let c = w.client();
    w.use_sleep("real", &c.to_string(), &[]);
    let victim = Sleeper::new();
    let not_a_watcher = Sleeper::new();
    let mut forged = record(&w, "real");
    forged["name"] = json!("forged");
    forged["server"] = id(victim.pid());
    forged["watcher"] = id(not_a_watcher.pid());
    forged["watcher_is_parent"] = json!(false);
    std::fs::write(w.record_path("forged"), forged.to_string()).unwrap();
    for args in [
        &["admin", "stop", "forged", "--force"][..],
        &["admin", "kill", "forged"],
    ] {
        let r = w.run(args);
        assert_eq!(r.code(), 10, "{args:?}");
        assert!(
            r.stderr()
                .contains("run `sharedserver admin doctor forged`"),
            "{args:?}: {}",
            r.stderr()
        );
        assert!(
            record(&w, "forged")["stop"].is_null(),
            "{args:?} asked a stop"
        );
    }
    let out = w.ok(&["admin", "doctor", "forged"]).stdout();
    assert!(
        out.contains(&format!("its record names pid {}", victim.pid()))
            && out.contains("left the process alone"),
        "{out}"
    );
    assert!(!w.record_path("forged").exists());
    assert_eq!(w.state("forged"), "stopped");
    assert!(!w.ok(&["list"]).stdout().contains("forged"));
    assert!(w.ok(&["admin", "doctor"]).stdout().contains("all good"));
    assert!(alive(victim.pid()) && alive(not_a_watcher.pid()));
    assert_eq!(w.state("real"), "active");
}

/// A server we started that lost its tag (it wrote over its environment, as
/// some servers' process titles do) is still its watcher's: kill refuses
/// and says to stop it, doctor never sets its record aside, and the stop
/// works.
#[test]
fn a_server_that_lost_its_tag_is_stopped_through_its_watcher_never_set_aside() {
    let mut w = World::new();
    let c = w.client().to_string();
    let started = w.ok(&[
        "use",
        "untagged",
        "--pid",
        &c,
        "--",
        "env",
        "-u",
        "SHAREDSERVER_NAME",
        "sleep",
        "1000",
    ]);
    assert!(started.stdout().contains("started untagged"));
    let pid = pid_of(&w.info("untagged"));
    let r = w.run(&["admin", "kill", "untagged"]);
    assert_eq!(r.code(), 10);
    assert!(
        r.stderr()
            .contains("stop it with `sharedserver admin stop untagged --force`"),
        "{}",
        r.stderr()
    );
    let out = w.ok(&["admin", "doctor", "untagged"]).stdout();
    assert!(out.contains("all good"), "{out}");
    assert!(w.record_path("untagged").exists());
    w.ok(&["admin", "stop", "untagged", "--force"]);
    assert!(!alive(pid));
}
