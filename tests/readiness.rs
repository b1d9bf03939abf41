//! `use` returns a usable server: readiness probes, logs, restarts, config.

mod common;
use common::*;
use nix::sys::signal::Signal;
use std::time::Duration;

const SOON: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Python HTTP server that only starts listening once `gate` opens.
fn slow_http(port: u16, gate: &Gate) -> String {
    format!(
        "import http.server\nprint('warming up', flush=True)\n{}\n\
         http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler).serve_forever()",
        gate.py()
    )
}

#[test]
fn use_returns_only_once_an_http_server_answers() {
    let mut w = World::new();
    let port = free_port();
    let ready = format!("http://127.0.0.1:{port}/");
    let a = w.client().to_string();
    let gate = Gate::new(w.path("gate"));
    let script = slow_http(port, &gate);
    let first = w.spawn(&[
        "use", "web", "--pid", &a, "--ready", &ready, "--", "python3", "-c", &script,
    ]);
    eventually(SOON, "state starting is visible", || w.check("web") == 3);
    assert_eq!(w.state("web"), "starting");
    // A second client arriving while it starts waits too: it is attached,
    // and the server still starting, until the gate opens.
    let b = w.client().to_string();
    let second = w.spawn(&["use", "web", "--pid", &b]);
    eventually(SOON, "the second client attached while starting", || {
        let info = w.info("web");
        info["refcount"] == 2 && info["state"] == "starting"
    });
    gate.open();
    let second = second.wait_with_output().unwrap();
    assert_success(&second);
    let said = String::from_utf8_lossy(&second.stdout);
    assert!(said.contains("attached"), "{said}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "ready when use returns"
    );
    let out = first.wait_with_output().unwrap();
    assert_success(&out);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(
        String::from_utf8_lossy(&out.stderr).is_empty(),
        "no progress noise off a terminal"
    );
    let info = w.info("web");
    assert_eq!(
        (info["state"].as_str(), info["refcount"].as_u64()),
        (Some("active"), Some(2))
    );
    assert_eq!(info["ready"], ready.as_str());
}

#[test]
fn tcp_probe_waits_for_the_listener() {
    let mut w = World::new();
    let port = free_port();
    let a = w.client().to_string();
    let gate = Gate::new(w.path("gate"));
    let script = slow_http(port, &gate);
    w.use_through_gate(
        "t",
        &a,
        &format!("tcp://127.0.0.1:{port}"),
        &gate,
        &["python3", "-c", &script],
        "starting, the port closed",
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
}

#[test]
fn log_probe_matches_a_line_of_output() {
    let mut w = World::new();
    let a = w.client().to_string();
    let flag = w.path("printed");
    let gate = Gate::new(w.path("gate"));
    let script = format!(
        // The flag is touched before the line: touched after it, `use` may
        // (rightly) return before the shell gets to it.
        "echo 'listening soon'; {}; touch '{}'; echo 'listening on port 4242'; exec sleep 1000",
        gate.sh(),
        flag.display()
    );
    w.use_through_gate(
        "l",
        &a,
        r"log:listening on port \d+",
        &gate,
        &["sh", "-c", &script],
        "starting, the line not yet printed",
    );
    assert!(
        flag.exists(),
        "use returned only after the line was printed"
    );
    assert_eq!(w.check("l"), 0);
}

#[test]
fn server_that_never_becomes_ready_fails_use_and_leaves_nothing() {
    let mut w = World::new();
    let a = w.client().to_string();
    let port = free_port();
    let r = w.run(&[
        "use",
        "never",
        "--pid",
        &a,
        "--ready",
        &format!("tcp://127.0.0.1:{port}"),
        "--ready-timeout",
        "400ms",
        "--",
        "sh",
        "-c",
        "echo still loading models; exec sleep 1000",
    ]);
    assert_eq!(r.code(), 10);
    assert!(
        r.stderr().contains("not ready within 400ms"),
        "{}",
        r.stderr()
    );
    assert!(
        r.stderr().contains("still loading models"),
        "log tail shown: {}",
        r.stderr()
    );
    assert!(!w.record_path("never").exists(), "no state left behind");
    let info = w.info("never");
    assert_eq!(info["state"], "stopped");
    assert!(
        !alive(info["last_exit"]["pid"].as_u64().unwrap() as u32),
        "server stopped"
    );
}

#[test]
fn server_dying_before_ready_fails_use_with_its_log() {
    let mut w = World::new();
    let a = w.client().to_string();
    // Started (past the start-up check), then dies before it is ready.
    let gate = Gate::new(w.path("gate"));
    let script = format!("{}; echo port taken >&2; exit 2", gate.sh());
    let user = w.spawn(&[
        "use",
        "dies",
        "--pid",
        &a,
        "--ready",
        "tcp://127.0.0.1:9",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    eventually(SOON, "starting", || w.check("dies") == 3);
    gate.open();
    let r = Run(user.wait_with_output().unwrap());
    assert_eq!(r.code(), 10);
    assert!(
        r.stderr().contains("exited before it was ready (exit 2)"),
        "{}",
        r.stderr()
    );
    assert!(r.stderr().contains("port taken"), "{}", r.stderr());
    assert!(!w.record_path("dies").exists());
}

#[test]
fn cmd_probe_runs_a_shell_command() {
    let mut w = World::new();
    let a = w.client().to_string();
    let marker = w.path("up");
    let gate = Gate::new(w.path("gate"));
    let script = format!(
        "{}; touch '{}'; exec sleep 1000",
        gate.sh(),
        marker.display()
    );
    w.use_through_gate(
        "c",
        &a,
        &format!("cmd:test -e '{}'", marker.display()),
        &gate,
        &["sh", "-c", &script],
        "starting, the probe failing",
    );
    assert!(marker.exists());
}

#[test]
fn every_server_has_a_log_and_logs_shows_it() {
    let mut w = World::new();
    let a = w.client().to_string();
    w.ok(&[
        "use",
        "lg",
        "--pid",
        &a,
        "--",
        "sh",
        "-c",
        "for i in 1 2 3; do echo line $i; done; echo oops >&2; exec sleep 1000",
    ]);
    let info = w.info("lg");
    let log = w.lockdir.join("lg.log");
    assert_eq!(info["log_file"], log.to_string_lossy().as_ref());
    eventually(SOON, "output reaches the log", || {
        read(&log).contains("oops")
    });
    let r = w.ok(&["logs", "lg", "-n", "2"]);
    assert_eq!(r.stdout().trim(), "line 3\noops");
}

#[test]
fn log_is_capped_with_rotation() {
    let mut w = World::new();
    let a = w.client().to_string();
    // 6 MiB of output, more than the 4 MiB cap.
    w.ok(&[
        "use",
        "big",
        "--pid",
        &a,
        "--",
        "sh",
        "-c",
        "yes 0123456789abcdef | head -c 6291456; echo done; exec sleep 1000",
    ]);
    let log = w.lockdir.join("big.log");
    let rotated = w.lockdir.join("big.log.1");
    eventually(SOON, "all output copied", || read(&log).ends_with("done\n"));
    assert!(rotated.exists(), "rotated file kept");
    assert!(std::fs::metadata(&log).unwrap().len() <= 4 * 1024 * 1024);
    assert!(std::fs::metadata(&rotated).unwrap().len() <= 4 * 1024 * 1024);
}

#[test]
fn crash_loop_restarts_with_backoff_then_gives_up() {
    let mut w = World::new();
    let a = w.client().to_string();
    let starts = w.path("starts");
    let script = format!("echo $$ >> '{}'; sleep 0.1; exit 1", starts.display());
    w.ok(&[
        "use",
        "loop",
        "--pid",
        &a,
        "--restart",
        "on-failure:3",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    eventually(Duration::from_secs(20), "gives up", || w.check("loop") == 4);
    assert_eq!(
        read(&starts).lines().count(),
        4,
        "first start plus 3 restarts"
    );
    let info = w.info("loop");
    let reason = info["last_exit"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("gave up after 3 restarts"), "{reason}");
    assert_eq!(info["last_exit"]["kind"], "gave-up");
    assert_eq!(w.check("loop"), 4, "check says it gave up");
    assert_eq!(info["last_exit"]["code"], 1);
}

#[test]
fn clients_stay_attached_across_a_restart() {
    let mut w = World::new();
    let a = w.client().to_string();
    let flag = w.path("crashed-once");
    // The first process crashes when the test opens the gate; the restarted
    // one stays up.
    let gate = Gate::new(w.path("gate"));
    let script = format!(
        "if [ -e '{0}' ]; then exec sleep 1000; fi; touch '{0}'; {1}; exit 3",
        flag.display(),
        gate.sh()
    );
    w.ok(&[
        "use",
        "rs",
        "--pid",
        &a,
        "--restart",
        "on-failure",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let first = pid_of(&w.info("rs"));
    gate.open();
    eventually(SOON, "restarted with a new pid", || {
        let i = w.info("rs");
        i["state"] == "active" && i["pid"].as_u64() != Some(first as u64)
    });
    let info = w.info("rs");
    assert_eq!(info["refcount"], 1);
    assert_eq!(info["restarts"], 1);
    assert_eq!(
        info["last_exit"]["code"], 3,
        "the crash is shown while running"
    );
    assert!(w.ok(&["info", "rs"]).stdout().contains("last exit"));
}

#[test]
fn use_without_a_command_reads_the_nearest_config() {
    let mut w = World::new();
    let proj = w.path("proj");
    let deep = proj.join("a/b");
    std::fs::create_dir_all(&deep).unwrap();
    let out = w.path("seen");
    std::fs::write(
        proj.join(".sharedserver.json"),
        format!(
            r#"{{"servers": {{"web": {{"command": "sh", "args": ["-c", "echo $GREETING > '{}'; exec sleep 1000"],
                "env": {{"GREETING": "hello ${{SS_TEST_WHO}}"}}, "grace_period": "5m"}}}}}}"#,
            out.display()
        ),
    )
    .unwrap();
    let a = w.client().to_string();
    let r = w
        .cmd(&["use", "web", "--pid", &a])
        .current_dir(&deep)
        .env("SS_TEST_WHO", "world")
        .output()
        .unwrap();
    assert_success(&r);
    eventually(SOON, "server ran with the config's env", || {
        read(&out).trim() == "hello world"
    });
    let info = w.info("web");
    assert_eq!(info["grace_period"], "5m");
    assert_eq!(
        info["cwd"],
        proj.to_string_lossy().as_ref(),
        "working_dir defaults to the file's directory"
    );
    let shown = w
        .cmd(&["config", "web"])
        .current_dir(&deep)
        .env("SS_TEST_WHO", "world")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains(".sharedserver.json") && shown.contains("hello world"),
        "{shown}"
    );
    // Unset variables and unknown keys are errors naming the file.
    let r = w
        .cmd(&["config", "web"])
        .current_dir(&deep)
        .env_remove("SS_TEST_WHO")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success() && err.contains("SS_TEST_WHO") && err.contains(".sharedserver.json"),
        "{err}"
    );
    std::fs::write(
        proj.join(".sharedserver.json"),
        r#"{"servers": {"web": {"command": "x", "colour": "red"}}}"#,
    )
    .unwrap();
    let r = w.cmd(&["config"]).current_dir(&deep).output().unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        r.status.code() == Some(10) && err.contains("colour") && err.contains("servers.web"),
        "{err}"
    );
}

#[test]
fn logs_of_a_stopped_server_are_still_found() {
    let mut w = World::new();
    let a = w.client().to_string();
    let log = w.path("custom.log");
    let log_s = log.to_string_lossy().into_owned();
    w.ok(&[
        "use",
        "gone",
        "--pid",
        &a,
        "--log-file",
        &log_s,
        "--startup-check",
        "0s",
        "--",
        "sh",
        "-c",
        "echo last words; exit 4",
    ]);
    eventually(SOON, "stopped", || w.state("gone") == "stopped");
    let info = w.info("gone");
    assert_eq!(info["log_file"], log_s.as_str());
    assert_eq!(w.ok(&["logs", "gone"]).stdout().trim(), "last words");
}

/// A pseudo-terminal pair: (master, slave). Linux only (ptsname_r).
#[cfg(target_os = "linux")]
fn pty() -> (std::fs::File, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain libc calls; each returned fd is checked and owned once.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(master >= 0, "posix_openpt failed");
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
        // Close-on-exec: clients other tests spawn meanwhile must not hold it.
        let slave = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(slave >= 0, "opening the pty's slave failed");
        (
            std::fs::File::from_raw_fd(master),
            std::os::fd::OwnedFd::from_raw_fd(slave),
        )
    }
}

#[cfg(target_os = "linux")]
#[test]
fn on_a_terminal_use_shows_what_it_waits_for_then_clears_the_line() {
    use std::io::Read;
    let mut w = World::new();
    let a = w.client().to_string();
    let gate = Gate::new(w.path("gate"));
    let script = format!("{}; echo READY; exec sleep 1000", gate.sh());
    let args = [
        "use",
        "slow",
        "--pid",
        &a,
        "--ready",
        "log:READY",
        "--",
        "sh",
        "-c",
        &script,
    ];
    let (mut master, slave) = pty();
    let mut user = w
        .cmd(&args)
        .stderr(std::process::Stdio::from(slave))
        .spawn()
        .unwrap();
    // The server waits at the gate until the line is shown.
    let shown = "\r\x1b[2Kslow: waiting for log:READY (";
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(shown) {
        match master.read(&mut buf) {
            Ok(n @ 1..) => seen.extend_from_slice(&buf[..n]),
            _ => panic!("the terminal closed before: {shown:?}"),
        }
    }
    gate.open();
    assert!(user.wait().unwrap().success());
    // Every slave end is closed now, so reading ends (EIO) after the data.
    while let Ok(n @ 1..) = master.read(&mut buf) {
        seen.extend_from_slice(&buf[..n]);
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.contains(shown), "{seen:?}");
    assert!(seen.ends_with("\r\x1b[2K"), "the line is cleared: {seen:?}");

    // The same wait with stderr not a terminal prints nothing at all.
    w.ok(&["admin", "stop", "slow", "--force"]);
    let user = w
        .cmd(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually(SOON, "starting", || w.check("slow") == 3);
    gate.open();
    let r = Run(user.wait_with_output().unwrap());
    assert_eq!(r.code(), 0, "{}", r.stderr());
    assert_eq!(r.stderr(), "");
}

/// A `log:` check is the new process's own: after a crash and restart, the
/// old process's matching line does not make the new one ready.
#[test]
fn a_log_ready_match_is_reset_by_each_restart() {
    let mut w = World::new();
    let a = w.client().to_string();
    let (crashed, go) = (w.path("crashed"), w.path("go"));
    let script = format!(
        "if [ -e '{c}' ]; then while [ ! -e '{g}' ]; do sleep 0.05; done; echo READY; exec sleep 1000; fi; \
         echo READY; touch '{c}'; sleep 0.2; exit 1",
        c = crashed.display(),
        g = go.display()
    );
    w.ok(&[
        "use",
        "relog",
        "--pid",
        &a,
        "--ready",
        "log:READY",
        "--restart",
        "on-failure",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let first = w.info("relog")["pid"].as_u64().unwrap();
    let second = eventually(SOON, "the restart", || {
        let info = w.info("relog");
        info["pid"].as_u64().filter(|p| *p != first)
    });
    assert_eq!(
        w.state("relog"),
        "starting",
        "pid {second} has not said READY"
    );
    assert_eq!(w.check("relog"), 3);
    std::fs::write(&go, "").unwrap();
    eventually(SOON, "ready once it says so", || {
        w.state("relog") == "active"
    });
}

/// A `use` that started `name` and waits for a readiness that never comes.
fn waiting_use(w: &mut World, name: &str) -> std::process::Child {
    let a = w.client().to_string();
    let user = w.spawn(&[
        "use",
        name,
        "--pid",
        &a,
        "--ready",
        "log:NEVER",
        "--",
        "sleep",
        "1000",
    ]);
    eventually(SOON, "starting, waiting for readiness", || {
        w.check(name) == 3
    });
    user
}

/// A `use` waiting for readiness, interrupted by `sig`, and how it ended.
fn interrupted_use(w: &mut World, name: &str, sig: Signal) -> std::process::Output {
    let user = waiting_use(w, name);
    signal(user.id(), sig);
    user.wait_with_output().unwrap()
}

#[test]
fn an_interrupted_use_undoes_its_attach_and_stops_the_server_it_started() {
    use std::os::unix::process::ExitStatusExt;
    let mut w = World::new();
    let out = interrupted_use(&mut w, "int", Signal::SIGINT);
    assert_eq!(out.status.signal(), Some(libc::SIGINT), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("interrupted; detached from 'int' and stopped it"),
        "{err}"
    );
    let info = w.info("int");
    assert_eq!(info["state"], "stopped");
    assert!(!alive(info["last_exit"]["pid"].as_u64().unwrap() as u32));
    assert!(!w.record_path("int").exists());
}

#[test]
fn an_interrupted_use_leaves_a_server_another_client_joined() {
    use std::os::unix::process::ExitStatusExt;
    let mut w = World::new();
    let b = w.client();
    // b joins while the first `use` waits; its own `use` waits too, so it
    // runs in the background.
    let first = waiting_use(&mut w, "j");
    let mut second = w
        .cmd(&["use", "j", "--pid", &b.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually(SOON, "both attached", || w.info("j")["refcount"] == 2);
    signal(first.id(), Signal::SIGTERM);
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGTERM), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("interrupted; detached from 'j'"), "{err}");
    assert!(!err.contains("stopped it"), "{err}");
    let info = w.info("j");
    assert_eq!(info["state"], "starting");
    assert_eq!(info["refcount"], 1);
    assert_eq!(info["clients"][0]["pid"], b);
    signal(second.id(), Signal::SIGKILL);
    let _ = second.wait();
}

/// A `cmd:` probe that runs long never keeps the watcher from its work: a
/// stop, then a kill, are carried out while one runs, and the probe goes
/// with the server.
#[test]
fn a_long_cmd_probe_never_blocks_a_stop_or_a_kill() {
    let mut w = World::new();
    let marker = w.path("probe-pids");
    // The probe records its pid, then runs for 40 s.
    let probe = format!("cmd:echo $$ >> '{}'; exec sleep 40", marker.display());
    for verb in ["stop", "kill"] {
        let a = w.client().to_string();
        let starter = w
            .cmd(&[
                "use",
                "slowprobe",
                "--pid",
                &a,
                "--ready",
                &probe,
                "--",
                "sleep",
                "1000",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        eventually(SOON, "the probe runs", || read(&marker).lines().count() > 0);
        let args: Vec<&str> = match verb {
            "stop" => vec!["admin", "stop", "slowprobe", "--force"],
            _ => vec!["admin", "kill", "slowprobe"],
        };
        let r = w.run(&args);
        assert_eq!(r.code(), 0, "{verb}: {}", r.stderr());
        assert_eq!(w.state("slowprobe"), "stopped", "{verb}");
        let _ = starter.wait_with_output();
        let probes: Vec<u32> = read(&marker)
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect();
        eventually(SOON, "the probe went with the server", || {
            probes.iter().all(|p| !exists(*p))
        });
        std::fs::remove_file(&marker).unwrap();
        w.kill_client(a.parse().unwrap());
    }
}

/// `cmd:` probes run where the server runs, with its environment.
#[test]
fn a_cmd_probe_runs_in_the_servers_directory_with_its_environment() {
    let mut w = World::new();
    let a = w.client().to_string();
    let dir = w.path("srv");
    std::fs::create_dir(&dir).unwrap();
    let starter = w.spawn(&[
        "use",
        "here",
        "--pid",
        &a,
        "--cwd",
        &dir.to_string_lossy(),
        "--env",
        "PROBE_WANT=yes",
        "--ready",
        "cmd:test -f marker && test \"$PROBE_WANT\" = yes",
        "--",
        "sleep",
        "1000",
    ]);
    eventually(SOON, "starting", || w.state("here") == "starting");
    std::fs::write(dir.join("marker"), "").unwrap();
    let out = starter.wait_with_output().unwrap();
    assert_success(&out);
    assert_eq!(w.state("here"), "active");
}
