//! Bad input, hostile state and crashes: each ends in a clear error or a
//! repair, never a panic, and never a signal to a process we did not start.

mod common;
use common::*;
use nix::sys::signal::Signal;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

const SOON: Duration = Duration::from_secs(5);

#[test]
fn traversal_names_are_refused_without_touching_the_filesystem() {
    let w = World::new();
    let outside = w.path("x.json");
    for bad in ["../x", "a/b", "", ".hidden", "a b", "/etc/passwd"] {
        let r = w.run(&["use", bad, "--", "sleep", "1000"]);
        assert_eq!(r.code(), 64, "{bad:?}: {}", r.stderr());
        assert!(
            r.stderr().contains("invalid server name"),
            "{bad:?}: {}",
            r.stderr()
        );
    }
    assert!(!outside.exists());
    assert!(
        !w.lockdir.exists(),
        "nothing was created for a refused name"
    );
}

#[test]
fn symlinked_record_is_refused_and_its_target_untouched() {
    let w = World::new();
    w.make_lockdir();
    let target = w.path("victim");
    std::fs::write(&target, "precious").unwrap();
    std::os::unix::fs::symlink(&target, w.record_path("s")).unwrap();
    for args in [
        &["info", "s"][..],
        &["use", "s", "--", "sleep", "1000"],
        &["unuse", "s"],
    ] {
        let r = w.run(args);
        assert_eq!(r.code(), 10, "{args:?}");
        assert!(r.stderr().contains("symlink"), "{args:?}: {}", r.stderr());
    }
    assert_eq!(read(&target), "precious");
    let r = w.ok(&["admin", "doctor"]);
    assert!(r.stdout().contains("removed symlink"), "{}", r.stdout());
    assert_eq!(read(&target), "precious");
    assert_eq!(w.check("s"), 2);
}

#[test]
fn lock_dir_open_to_others_is_refused_with_the_fix() {
    let w = World::new();
    w.make_lockdir();
    std::fs::set_permissions(&w.lockdir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let r = w.run(&["list"]);
    assert_eq!(r.code(), 10);
    assert!(r.stderr().contains("chmod 700"), "{}", r.stderr());
    assert!(r.stderr().contains(&*w.lockdir.to_string_lossy()));
}

#[test]
fn lock_dir_owned_by_someone_else_is_refused() {
    let w = World::new();
    w.make_lockdir();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&w.lockdir, Some(65534), None).unwrap();
    } else {
        // Not root: a directory we do not own is one we cannot create; use /.
        let r = w
            .cmd(&["list"])
            .env("SHAREDSERVER_LOCKDIR", "/")
            .output()
            .unwrap();
        assert!(!r.status.success());
        return;
    }
    let r = w.run(&["list"]);
    assert_eq!(r.code(), 10);
    assert!(r.stderr().contains("owned by uid 65534"), "{}", r.stderr());
}

#[test]
fn a_relative_or_dotted_lock_dir_is_refused_and_never_created() {
    let w = World::new();
    let dotted = format!("{}/../x", w.lockdir.display());
    for (dir, why) in [
        ("rel/dir", "it is relative"),
        (dotted.as_str(), "contains '..'"),
    ] {
        let out = w
            .cmd(&["use", "x", "--", "sleep", "1000"])
            .env("SHAREDSERVER_LOCKDIR", dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(10), "{err}");
        assert!(
            err.contains(why) && err.contains("plain absolute path"),
            "{err}"
        );
    }
    assert!(
        !w.path("rel").exists(),
        "nothing created in the working directory"
    );
}

#[test]
fn an_environment_variable_with_a_bad_value_is_refused_not_ignored() {
    let w = World::new();
    for (var, value, says) in [
        (
            "SHAREDSERVER_BACKEND",
            "Portable",
            "the only value it takes is 'portable'",
        ),
        (
            "SHAREDSERVER_LOCK_TIMEOUT",
            "soon",
            "SHAREDSERVER_LOCK_TIMEOUT",
        ),
    ] {
        let out = w.cmd(&["list"]).env(var, value).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{var}: {err}");
        assert!(err.contains(says), "{var}: {err}");
    }
}

#[test]
fn a_directory_as_the_command_pid_0_and_logs_of_nothing_get_their_own_words() {
    let w = World::new();
    let dir = w.tmp.path().to_str().unwrap().to_string();
    let r = w.run(&["use", "dd", "--", &dir]);
    assert_eq!(r.code(), 10);
    assert!(
        r.stderr().contains("is a directory, not a program"),
        "{}",
        r.stderr()
    );
    let r = w.run(&["use", "p0", "--pid", "0", "--", "sleep", "1000"]);
    assert_eq!(r.code(), 10);
    assert!(r.stderr().contains("0 is no process id"), "{}", r.stderr());
    assert_eq!(w.state("p0"), "stopped");
    // Free text and argv with control characters: escaped, one line each.
    let me = std::process::id().to_string();
    let meta = "evil\nclient: 1 since forged\x1b[31m";
    w.ok(&[
        "use",
        "cc",
        "--pid",
        &me,
        "--metadata",
        meta,
        "--",
        "sh",
        "-c",
        "sleep 1000\n",
    ]);
    let info = w.ok(&["info", "cc"]).stdout();
    assert!(
        info.contains(r"[evil\nclient: 1 since forged\x1b[31m]") && !info.contains('\x1b'),
        "{info}"
    );
    assert!(info.contains(r"sh -c $'sleep 1000\n'"), "{info}");
    w.ok(&["admin", "stop", "cc", "--force"]);
    // `use NAME` with no command, not running and not in any config.
    let r = w.run(&["use", "nosuch"]);
    assert_eq!(r.code(), 10);
    assert!(
        r.stderr().contains("no config file defines it") && r.stderr().contains("-- CMD"),
        "{}",
        r.stderr()
    );
    // The log of a name that never ran: an error, not an empty log.
    let r = w.run(&["logs", "p0"]);
    assert_eq!(r.code(), 10);
    assert!(r.stderr().contains("'p0' is not running"), "{}", r.stderr());
    // -n 0 asks for nothing, and gets nothing (not "nothing logged yet").
    w.ok(&["use", "quiet", "--pid", &me, "--", "sleep", "1000"]);
    let r = w.ok(&["logs", "quiet", "-n", "0"]);
    assert_eq!((r.stdout(), r.stderr()), (String::new(), String::new()));
    w.ok(&["admin", "stop", "quiet", "--force"]);
}

#[test]
fn new_lock_dir_is_private() {
    let w = World::new();
    w.ok(&["list"]);
    assert_eq!(std::fs::metadata(&w.lockdir).unwrap().mode() & 0o777, 0o700);
}

#[test]
fn argv_with_spaces_and_quotes_reaches_the_server_intact() {
    let mut w = World::new();
    let out = w.path("argv");
    let a = w.client().to_string();
    let script = "import sys, json, time\nopen(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))\ntime.sleep(1000)";
    let args = [
        "two words",
        "it's",
        "\"double\"",
        "$HOME",
        "*",
        "",
        "a\\b",
        "; rm -rf /",
    ];
    let mut cmd = vec!["use", "argv", "--pid", &a, "--", "python3", "-c", script];
    let out_s = out.to_string_lossy().into_owned();
    cmd.push(&out_s);
    cmd.extend(args);
    w.ok(&cmd);
    eventually(SOON, "server wrote its argv", || !read(&out).is_empty());
    let got: Vec<String> = serde_json::from_str(&read(&out)).unwrap();
    assert_eq!(got, args);
}

// Reads /proc: descriptors, cwd, session and parent.
#[cfg(target_os = "linux")]
#[test]
fn server_gets_env_cwd_log_and_no_inherited_descriptors() {
    let mut w = World::new();
    let a = w.client().to_string();
    let work = w.path("work");
    std::fs::create_dir(&work).unwrap();
    let log = w.path("server.log");
    // No pipeline: the shell would hold the pipe's descriptors meanwhile.
    let script =
        "echo \"cwd=$(pwd) greeting=$GREETING\"; ls /proc/$$/fd; echo end; exec sleep 1000";
    // The CLI runs with descriptor 7 open and inheritable; nothing may leak it.
    let mut cmd = w.cmd(&[
        "use",
        "e",
        "--pid",
        &a,
        "--env",
        "GREETING=hi there",
        "--cwd",
    ]);
    cmd.arg(&work)
        .arg("--log-file")
        .arg(&log)
        .args(["--", "sh", "-c", script]);
    let marker = w.path("leak-marker");
    std::fs::write(&marker, "").unwrap();
    let shell = format!(
        "exec 7<'{}'; exec {}",
        marker.display(),
        std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', "'\\''")))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let r = std::process::Command::new("sh")
        .args(["-c", &shell])
        .env("SHAREDSERVER_LOCKDIR", &w.lockdir)
        .output()
        .unwrap();
    assert_success(&r);
    eventually(SOON, "server logged", || read(&log).contains("end\n"));
    let text = read(&log);
    assert!(
        text.contains(&format!("cwd={} greeting=hi there", work.display())),
        "{text}"
    );
    let fds: Vec<&str> = text.lines().skip(1).take_while(|l| *l != "end").collect();
    assert_eq!(
        fds,
        ["0", "1", "2"],
        "server inherited extra descriptors: {text}"
    );
    let info = w.info("e");
    assert_eq!(info["log_file"], log.to_string_lossy().as_ref());
    // The watcher: own session, cwd /, parent of the server, only its own fds.
    let watcher = info["watcher_pid"].as_u64().unwrap();
    assert_eq!(
        std::fs::read_link(format!("/proc/{watcher}/cwd"))
            .unwrap()
            .to_string_lossy(),
        "/"
    );
    let stat = read(std::path::Path::new(&format!("/proc/{watcher}/stat")));
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    assert_eq!(
        fields[3],
        watcher.to_string(),
        "watcher leads its own session"
    );
    let server = pid_of(&info);
    let sstat = read(std::path::Path::new(&format!("/proc/{server}/stat")));
    let sfields: Vec<&str> = sstat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    assert_eq!(
        sfields[1],
        watcher.to_string(),
        "watcher is the server's parent"
    );
    assert_eq!(
        sfields[2],
        server.to_string(),
        "server leads its own process group"
    );
    let cmdline = read(std::path::Path::new(&format!("/proc/{watcher}/cmdline")));
    assert!(
        cmdline.starts_with("sharedserver-watcher\0__watch\0e"),
        "{cmdline:?}"
    );
    let watcher_fds: Vec<_> = std::fs::read_dir(format!("/proc/{watcher}/fd"))
        .unwrap()
        .flatten()
        .collect();
    // By target, not by number: the watcher's own descriptors (its SIGCHLD
    // pipe, under the portable backend) may well be numbered 7.
    for fd in watcher_fds {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        // By what it refers to: the watcher's own descriptors may take the
        // number 7 too (the lock directory handle shifts them up by one).
        assert_ne!(target, marker, "watcher inherited the caller's fd 7");
    }
}

#[test]
fn client_whose_start_time_does_not_match_is_not_counted() {
    let mut w = World::new();
    let a = w.client();
    let me = std::process::id();
    w.use_sleep("r", &a.to_string(), &["--grace-period", "1h"]);
    // Forge a second client: a live pid (this test) with the wrong start
    // time, as if the recorded process had died and its pid been reused.
    let path = w.record_path("r");
    let mut rec: serde_json::Value = serde_json::from_str(&read(&path)).unwrap();
    rec["clients"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "pid": me, "start_time": 1, "attached_at_ms": 0, "metadata": "impostor"
        }));
    std::fs::write(&path, serde_json::to_string(&rec).unwrap()).unwrap();
    let info = w.info("r");
    assert_eq!(info["refcount"], 1, "the recycled pid is not counted");
    w.kill_client(a);
    eventually(
        SOON,
        "grace begins: the impostor keeps nothing alive",
        || w.check("r") == 1,
    );
    assert!(alive(me), "and we were never signalled");
}

#[test]
fn recycled_server_pid_is_never_signalled() {
    let mut w = World::new();
    let a = w.client();
    w.ok(&["use", "p", "--pid", &a.to_string(), "--", "sleep", "1000"]);
    // Kill the watcher, then point the record's server at a bystander with a
    // different start time (what a recycled pid looks like).
    let info = w.info("p");
    let watcher = watcher_of(&info);
    let real_server = pid_of(&info);
    signal(watcher, Signal::SIGKILL);
    eventually(SOON, "watcher gone", || !alive(watcher));
    // Start times tick every 10 ms, and `use` returns within a few: take a
    // bystander that started in a later tick than the server, as a recycled
    // pid would have.
    let bystander = loop {
        let b = w.client();
        if start_time(b) != start_time(real_server) {
            break b;
        }
    };
    let path = w.record_path("p");
    let mut rec: serde_json::Value = serde_json::from_str(&read(&path)).unwrap();
    rec["server"]["pid"] = bystander.into();
    std::fs::write(&path, serde_json::to_string(&rec).unwrap()).unwrap();
    assert_eq!(
        w.check("p"),
        2,
        "a pid with the wrong start time is not our server"
    );
    let r = w.run(&["admin", "kill", "p"]);
    assert_eq!(r.code(), 10, "{}", r.stdout());
    assert!(alive(bystander), "the bystander was not signalled");
    signal(real_server, Signal::SIGKILL);
}

#[test]
fn killed_watcher_is_replaced_by_the_next_command() {
    let mut w = World::new();
    let a = w.client();
    w.use_sleep("v", &a.to_string(), &["--grace-period", "200ms"]);
    let info = w.info("v");
    let (server, watcher) = (pid_of(&info), watcher_of(&info));
    signal(watcher, Signal::SIGKILL);
    eventually(SOON, "watcher gone", || !alive(watcher));
    assert!(alive(server), "the server outlives its watcher");
    let info = w.info("v");
    let new_watcher = watcher_of(&info);
    assert_ne!(new_watcher, watcher);
    assert!(alive(new_watcher), "info restored supervision");
    assert_eq!(pid_of(&info), server);
    // The new watcher really supervises: a client death leads to a stop.
    w.kill_client(a);
    eventually(SOON, "server stopped by the new watcher", || {
        !alive(server) && w.check("v") == 2
    });
    assert!(w
        .ok(&["admin", "debug", "v"])
        .stdout()
        .contains("new watcher"));
}

#[test]
fn corrupt_record_gives_a_clear_error_and_doctor_repairs_it() {
    let mut w = World::new();
    let a = w.client().to_string();
    w.ok(&["use", "bad", "--pid", &a, "--", "sleep", "1000"]);
    let server = pid_of(&w.info("bad"));
    let path = w.record_path("bad");
    let restores = || {
        w.ok(&["admin", "debug", "bad"])
            .stdout()
            .matches("restored it from memory")
            .count()
    };
    for (round, garbage) in ["", "{not json", "{\"format\": \"other\"}"]
        .into_iter()
        .enumerate()
    {
        std::fs::write(&path, garbage).unwrap();
        let r = w.run(&["info", "bad"]);
        // The watcher may already have noticed and restored it by itself;
        // if not, the error is clear and names the file and the fix.
        if r.code() != 0 {
            assert_eq!(r.code(), 10);
            assert!(
                r.stderr().contains(&*path.to_string_lossy()),
                "{}",
                r.stderr()
            );
            assert!(r.stderr().contains("admin doctor"), "{}", r.stderr());
            w.ok(&["admin", "doctor"]);
        }
        eventually(SOON, "the watcher restored the record", || {
            restores() > round
        });
        let info = w.info("bad");
        assert_eq!(
            (pid_of(&info), info["refcount"].as_u64()),
            (server, Some(1))
        );
    }
    assert!(alive(server), "repair never kills the server");
    // A damaged record with no watcher: doctor says what it found and did,
    // without the error's own advice to run doctor.
    std::fs::write(w.record_path("nobody"), "{not json").unwrap();
    let out = w.ok(&["admin", "doctor"]).stdout();
    assert!(
        out.contains("nobody: unreadable record") && !out.contains("to repair it"),
        "{out}"
    );
}

#[test]
fn command_not_found_fails_and_leaves_nothing() {
    let w = World::new();
    let r = w.run(&["use", "nf", "--", "/no/such/program", "x"]);
    assert_eq!(r.code(), 10);
    assert!(
        r.stderr()
            .contains("cannot start 'nf': command not found: /no/such/program"),
        "{}",
        r.stderr()
    );
    assert!(!w.record_path("nf").exists());
    assert_eq!(w.check("nf"), 2);
    let r = w.run(&["use", "nf", "--cwd", "/no/such/dir", "--", "sleep", "1"]);
    assert!(r.stderr().contains("/no/such/dir"), "{}", r.stderr());
}

#[test]
fn server_that_exits_at_once_fails_use_with_its_log() {
    let w = World::new();
    let log = w.path("boom.log");
    let fail = |says: &str| {
        let script = format!("echo {says} >&2; exit 7");
        let log = log.to_string_lossy();
        w.run(&["use", "boom", "--log-file", &log, "--", "sh", "-c", &script])
    };
    let r = fail("cannot bind port");
    assert_eq!(r.code(), 10);
    assert!(
        r.stderr().contains("exited at once with code 7"),
        "{}",
        r.stderr()
    );
    assert!(r.stderr().contains("cannot bind port"), "{}", r.stderr());
    assert!(!w.record_path("boom").exists());
    // The failed start leaves a trace for `info`, health and the float.
    let info = w.info("boom");
    assert_eq!(info["state"], "stopped");
    let last = &info["last_exit"];
    assert_eq!(
        (&last["kind"], &last["code"], &last["signal"]),
        (
            &"exited-at-start".into(),
            &7.into(),
            &serde_json::Value::Null
        ),
        "{info}"
    );
    assert!(
        last["log_tail"]
            .as_str()
            .is_some_and(|t| t.contains("cannot bind port")),
        "{info}"
    );
    let text = w.ok(&["info", "boom"]).stdout();
    assert!(
        text.contains("exit 7") && text.contains("cannot bind port"),
        "{text}"
    );
    // A second failed start shows its own lines, not the first one's, though
    // both went to the same log.
    let r = fail("no such config");
    assert!(r.stderr().contains("no such config"), "{}", r.stderr());
    assert!(!r.stderr().contains("cannot bind port"), "{}", r.stderr());
    assert!(
        read(&log).contains("cannot bind port"),
        "the log keeps both"
    );
}

#[test]
fn bad_command_lines_get_usage_errors() {
    let w = World::new();
    let r = w.run(&[
        "use",
        "x",
        "--grace-period",
        "5 parsecs",
        "--",
        "sleep",
        "1",
    ]);
    assert_eq!(r.code(), 64);
    assert!(
        r.stderr().contains("invalid duration") && r.stderr().contains("2h30m"),
        "{}",
        r.stderr()
    );
    let r = w.run(&["frobnicate"]);
    assert_eq!(r.code(), 64);
    assert!(r.stderr().contains("frobnicate"), "{}", r.stderr());
    let r = w.run(&["use", "x", "--env", "NOEQUALS", "--", "sleep", "1"]);
    assert_eq!(r.code(), 64);
    assert!(r.stderr().contains("KEY=VALUE"), "{}", r.stderr());
    let r = w.run(&["use", "x"]);
    assert_eq!(r.code(), 10);
    assert!(r.stderr().contains("-- CMD"), "{}", r.stderr());
}

#[test]
fn completion_scripts_are_generated() {
    let w = World::new();
    for shell in ["bash", "zsh", "fish"] {
        let r = w.ok(&["completion", shell]);
        assert!(r.stdout().contains("sharedserver"), "{shell}");
        assert!(r.stdout().contains("unuse"), "{shell}");
        // Every command but the hidden one the watcher runs as.
        assert!(!r.stdout().contains("__watch"), "{shell}");
    }
}

#[test]
fn startup_check_ends_once_the_server_waits_idle_unless_fixed() {
    // With an hour-long check, `use` still returns at once: `sh` waiting on
    // `sleep` is a whole process tree asleep, which is what a started server
    // looks like. (Were the check not to end, `use` would wait the 2 s and
    // then fail with the exit: this test cannot pass by waiting.)
    let mut w = World::new();
    let a = w.client().to_string();
    let naps = ["sh", "-c", "sleep 2; exit 3"];
    let mut args = vec!["use", "napper", "--pid", &a, "--startup-check", "1h", "--"];
    args.extend(naps);
    let r = w.run(&args);
    assert_eq!(r.code(), 0, "{}", r.stderr());
    eventually(SOON, "the later exit is recorded", || {
        w.state("napper") == "stopped"
    });
    assert_eq!(w.info("napper")["last_exit"]["code"], 3);

    // fixed: waits out the whole window, so the same exit fails `use`.
    let naps = ["sh", "-c", "sleep 0.2; exit 3"];
    let mut args = vec!["use", "fixed", "--startup-check", "fixed:1h", "--"];
    args.extend(naps);
    let r = w.run(&args);
    assert_eq!(r.code(), 10);
    assert!(
        r.stderr().contains("exited at once with code 3"),
        "{}",
        r.stderr()
    );
    assert!(!w.record_path("fixed").exists());

    let r = w.run(&["use", "x", "--startup-check", "fixed:soon", "--", "true"]);
    assert_eq!(r.code(), 64);
    assert!(r.stderr().contains("fixed:2s"), "{}", r.stderr());
}

#[test]
fn startup_check_holds_a_busy_server_past_the_first_moments() {
    // Busy for about 0.2 s (never asleep, so past the old fixed 50 ms
    // window), then failing: still "at once".
    let w = World::new();
    let r = w.run(&[
        "use",
        "busy",
        "--startup-check",
        "1h",
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 150000 ]; do i=$((i+1)); done; exit 9",
    ]);
    assert_eq!(r.code(), 10);
    assert!(
        r.stderr().contains("exited at once with code 9"),
        "{}",
        r.stderr()
    );
    assert!(!w.record_path("busy").exists());
}

#[test]
fn startup_check_zero_returns_on_spawn_and_the_exit_is_still_recorded() {
    let mut w = World::new();
    let a = w.client().to_string();
    let r = w.run(&[
        "use",
        "quick",
        "--pid",
        &a,
        "--startup-check",
        "0s",
        "--",
        "sh",
        "-c",
        "exit 5",
    ]);
    assert_eq!(r.code(), 0, "{}", r.stderr());
    eventually(SOON, "the exit is noticed", || {
        w.state("quick") == "stopped"
    });
    assert_eq!(w.info("quick")["last_exit"]["code"], 5);
}

#[test]
fn admin_debug_shows_operations_failures_and_the_watchers_actions() {
    let mut w = World::new();
    let me = std::process::id().to_string();
    w.ok(&["use", "dbg", "--pid", &me, "--", "sleep", "1000"]);
    let doomed = w.client();
    w.ok(&[
        "use",
        "dbg",
        "--pid",
        &doomed.to_string(),
        "--metadata",
        "editor",
    ]);
    let journal = w.lockdir.join("dbg.journal");
    eventually(SOON, "the watcher journals the attach", || {
        read(&journal).contains(&format!("client {doomed} attached [editor] (refcount 2)"))
    });
    w.kill_client(doomed);
    eventually(SOON, "the watcher journals the death", || {
        read(&journal).contains(&format!("client {doomed} died (refcount 1)"))
    });
    assert_eq!(w.run(&["unuse", "dbg", "--pid", "1"]).code(), 10);
    w.ok(&["unuse", "dbg", "--pid", &me]);
    eventually(SOON, "stopped", || w.state("dbg") == "stopped");
    let log = w.ok(&["admin", "debug", "dbg"]).stdout();
    for expected in [
        "started pid",
        "pid 1 is not attached",
        &format!("client {me} detached (refcount 0)"),
        "stopping pid",
        "ended (last client left)",
    ] {
        assert!(log.contains(expected), "missing {expected:?} in:\n{log}");
    }
}

#[test]
fn a_hanging_cmd_probe_is_bounded_by_the_ready_timeout_and_never_holds_the_lock() {
    let mut w = World::new();
    let a = w.client().to_string();
    let starter = w.spawn(&[
        "use",
        "hang",
        "--pid",
        &a,
        "--ready",
        "cmd:sleep 30",
        "--ready-timeout",
        "1s",
        "--",
        "sleep",
        "1000",
    ]);
    eventually(SOON, "starting", || w.state("hang") == "starting");
    // Commands that need the lock still get it while the probe runs: this
    // one attaches, waits for readiness like any `use`, and shares the
    // verdict (it would hang for 30 s if the probe held the lock).
    let b = w.client().to_string();
    let r = w.run(&["admin", "incref", "hang", "--pid", &b]);
    assert!(r.stderr().contains("not ready within 1s"), "{}", r.stderr());
    let out = starter.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not ready within 1s"),
        "{err}"
    );
    assert_eq!(w.state("hang"), "stopped");
}

#[test]
fn a_missing_record_under_a_live_watcher_never_leads_to_a_second_server() {
    let mut w = World::new();
    let a = w.client().to_string();
    w.ok(&["use", "one", "--pid", &a, "--", "sleep", "1000"]);
    let server = pid_of(&w.info("one"));
    std::fs::remove_file(w.record_path("one")).unwrap();
    let b = w.client().to_string();
    let r = w.ok(&["use", "one", "--pid", &b, "--", "sleep", "1000"]);
    assert!(r.stdout().contains("attached"), "{}", r.stdout());
    let info = w.info("one");
    assert_eq!(
        (pid_of(&info), info["refcount"].as_u64()),
        (server, Some(2))
    );
}

#[test]
fn kill_does_not_wait_for_a_pending_graceful_stop() {
    let mut w = World::new();
    let a = w.client().to_string();
    w.ok(&[
        "use",
        "stubborn",
        "--pid",
        &a,
        "--",
        "sh",
        "-c",
        IGNORES_TERM,
    ]);
    let server = pid_of(&w.info("stubborn"));
    let stopper = w
        .cmd(&["admin", "stop", "stubborn", "--force", "--timeout", "1h"])
        .spawn()
        .unwrap();
    eventually(SOON, "stopping", || w.state("stubborn") == "stopping");
    w.ok(&["admin", "kill", "stubborn"]);
    assert!(!alive(server));
    assert!(kill_child_ok(stopper));
}

fn kill_child_ok(child: std::process::Child) -> bool {
    child.wait_with_output().is_ok_and(|o| o.status.success())
}

#[test]
fn processes_left_in_the_servers_group_end_with_it() {
    let mut w = World::new();
    let a = w.client().to_string();
    let kid = w.path("kid");
    let script = format!(
        "(trap '' TERM; exec sleep 1003) & echo $! > '{}'; wait",
        kid.display()
    );
    w.ok(&["use", "grp", "--pid", &a, "--", "sh", "-c", &script]);
    eventually(SOON, "child started", || {
        read(&kid).trim().parse::<u32>().is_ok()
    });
    let child: u32 = read(&kid).trim().parse().unwrap();
    w.ok(&["admin", "stop", "grp", "--force", "--timeout", "300ms"]);
    eventually(SOON, "the TERM-proof child is gone too", || !alive(child));
}

#[test]
fn an_absurd_timestamp_in_a_record_is_no_panic() {
    let mut w = World::new();
    let a = w.client().to_string();
    w.ok(&["use", "ts", "--pid", &a, "--", "sleep", "1000"]);
    let path = w.record_path("ts");
    let mut rec: serde_json::Value = serde_json::from_str(&read(&path)).unwrap();
    rec["started_at_ms"] = 300_000_000_000_000u64.into();
    std::fs::write(&path, serde_json::to_string(&rec).unwrap()).unwrap();
    // Shown, clamped to the largest time RFC 3339 can say.
    let r = w.run(&["info", "ts", "--json"]);
    assert_eq!(r.code(), 0, "{}", r.stderr());
    assert_eq!(r.stderr(), "");
    let info: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    assert_eq!(info["state"], "active");
    assert_eq!(info["started_at"], "9999-12-31T23:59:59Z");
}

#[test]
fn a_closed_stdout_ends_the_cli_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let w = World::new();
    // A pipe whose reader is gone before the CLI starts: its first write
    // fails, every time.
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    let out = w
        .cmd(&["completion", "bash"])
        .stdout(std::process::Stdio::from(writer))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    // As `head` would end it: SIGPIPE, not an error message or a panic.
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
