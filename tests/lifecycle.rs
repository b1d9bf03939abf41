//! The lifecycle through the real binary: start, share, detach, grace, stop.

mod common;
use common::*;
use std::time::Duration;

const SOON: Duration = Duration::from_secs(5);

#[test]
fn concurrent_use_starts_exactly_one_server() {
    let mut w = World::new();
    let starts = w.path("starts");
    let script = format!("echo $$ >> '{}'; exec sleep 1000", starts.display());
    for round in 0..20 {
        let clients: Vec<u32> = (0..16).map(|_| w.client()).collect();
        let runs: Vec<_> = clients
            .iter()
            .map(|pid| {
                w.spawn(&[
                    "use",
                    "one",
                    "--pid",
                    &pid.to_string(),
                    "--",
                    "sh",
                    "-c",
                    &script,
                ])
            })
            .collect();
        for run in runs {
            let out = run.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let info = w.info("one");
        assert_eq!(
            info["refcount"], 16,
            "round {round}: every caller is counted"
        );
        assert_eq!(
            read(&starts).lines().count(),
            round + 1,
            "round {round}: exactly one start"
        );
        w.ok(&["admin", "stop", "one", "--force"]);
        for pid in clients {
            w.kill_client(pid);
        }
    }
}

#[test]
fn same_client_attached_twice_counts_once() {
    let mut w = World::new();
    let pid = w.client().to_string();
    w.ok(&["use", "s", "--pid", &pid, "--", "sleep", "1000"]);
    w.ok(&["use", "s", "--pid", &pid, "--", "sleep", "1000"]);
    assert_eq!(w.info("s")["refcount"], 1);
}

#[test]
fn killed_client_is_dropped_quickly() {
    let mut w = World::new();
    let a = w.client();
    let b = w.client();
    w.use_sleep("k", &a.to_string(), &["--grace-period", "1h"]);
    w.ok(&["use", "k", "--pid", &b.to_string()]);
    assert_eq!(w.info("k")["refcount"], 2);
    w.kill_client(a);
    // The watcher drops it from the record itself (pidfd), not just the view.
    let record = w.record_path("k");
    eventually(
        Duration::from_secs(2),
        "the watcher rewrites the record without the dead client",
        || !read(&record).contains(&format!("\"pid\": {a},")),
    );
    assert_eq!(w.info("k")["refcount"], 1);
    w.kill_client(b);
    eventually(
        Duration::from_secs(2),
        "grace starts when the last client dies",
        || w.check("k") == 1,
    );
}

#[test]
fn grace_period_expires_and_stops_the_server() {
    let w = World::new();
    let out = w.use_sleep(
        "g",
        &std::process::id().to_string(),
        &["--grace-period", "300ms"],
    );
    assert!(out.stdout().contains("started g"));
    let pid = pid_of(&w.info("g"));
    w.ok(&["unuse", "g", "--pid", &std::process::id().to_string()]);
    assert_eq!(w.check("g"), 1, "in grace right after the last detach");
    assert!(w.info("g")["grace_remaining_ms"].as_u64().unwrap() <= 300);
    eventually(SOON, "server stopped after grace", || {
        w.state("g") == "stopped"
    });
    assert!(!alive(pid), "server process is gone");
    let info = w.info("g");
    assert_eq!(info["last_exit"]["reason"], "grace period expired");
    assert_eq!(info["last_exit"]["signal"], 15);
}

#[test]
fn zero_grace_stops_at_once() {
    let w = World::new();
    let me = std::process::id().to_string();
    w.ok(&["use", "z", "--pid", &me, "--", "sleep", "1000"]);
    let pid = pid_of(&w.info("z"));
    w.ok(&["unuse", "z", "--pid", &me]);
    eventually(SOON, "stopped", || w.check("z") == 2 && !alive(pid));
}

#[test]
fn use_during_grace_cancels_it() {
    let mut w = World::new();
    let me = std::process::id().to_string();
    w.use_sleep("c", &me, &["--grace-period", "1h"]);
    let pid = pid_of(&w.info("c"));
    w.ok(&["unuse", "c", "--pid", &me]);
    assert_eq!(w.check("c"), 1);
    let other = w.client().to_string();
    w.ok(&["use", "c", "--pid", &other]);
    let info = w.info("c");
    assert_eq!(
        (info["state"].as_str(), pid_of(&info)),
        (Some("active"), pid)
    );
    assert!(info["grace_remaining_ms"].is_null());
}

#[test]
fn use_during_shutdown_waits_and_starts_a_fresh_server() {
    let mut w = World::new();
    // Takes ~0.5 s to shut down after SIGTERM.
    let slow = "trap 'sleep 0.5; exit 0' TERM; while :; do sleep 0.02; done";
    let a = w.client().to_string();
    w.ok(&["use", "d", "--pid", &a, "--", "sh", "-c", slow]);
    let old = pid_of(&w.info("d"));
    let stopper = w.cmd(&["admin", "stop", "d", "--force"]).spawn().unwrap();
    eventually(SOON, "server is stopping", || w.state("d") == "stopping");
    let b = w.client().to_string();
    let out = w.ok(&["use", "d", "--pid", &b, "--", "sh", "-c", slow]);
    assert!(
        out.stdout().contains("started d"),
        "a fresh start, not a rescue: {}",
        out.stdout()
    );
    let info = w.info("d");
    assert_ne!(pid_of(&info), old);
    assert!(!alive(old));
    assert_eq!(info["refcount"], 1);
    assert_eq!(info["clients"][0]["pid"].as_u64().unwrap().to_string(), b);
    assert!(stopper.wait_with_output().unwrap().status.success());
}

#[test]
fn server_crash_is_cleaned_up_with_its_exit_code() {
    let mut w = World::new();
    let a = w.client().to_string();
    // Started, then crashes when the test says so.
    let gate = Gate::new(w.path("gate"));
    let script = format!("{}; exit 3", gate.sh());
    w.ok(&["use", "x", "--pid", &a, "--", "sh", "-c", &script]);
    assert_eq!(w.check("x"), 0);
    gate.open();
    eventually(SOON, "record cleared after the crash", || {
        !w.record_path("x").exists()
    });
    assert_eq!(w.check("x"), 2);
    let info = w.info("x");
    assert_eq!(info["last_exit"]["code"], 3);
    assert_eq!(info["last_exit"]["reason"], "exited on its own");
    assert_eq!(info["last_exit"]["kind"], "exited");
}

#[test]
fn stop_refuses_while_clients_are_attached_unless_forced() {
    let mut w = World::new();
    let a = w.client().to_string();
    w.ok(&["use", "f", "--pid", &a, "--", "sleep", "1000"]);
    let r = w.run(&["admin", "stop", "f"]);
    assert_eq!(r.code(), 10);
    assert!(r.stderr().contains("--force"), "{}", r.stderr());
    assert_eq!(w.check("f"), 0);
    w.ok(&["admin", "stop", "f", "--force"]);
    assert_eq!(w.check("f"), 2, "stop returns once the server is gone");
}

#[test]
fn stop_escalates_to_sigkill_after_the_timeout() {
    let mut w = World::new();
    let a = w.client().to_string();
    w.ok(&["use", "t", "--pid", &a, "--", "sh", "-c", IGNORES_TERM]);
    let pid = pid_of(&w.info("t"));
    w.ok(&["admin", "stop", "t", "--force", "--timeout", "200ms"]);
    assert!(!alive(pid));
    assert_eq!(w.info("t")["last_exit"]["signal"], 9);
}

#[test]
fn kill_sigkills_the_whole_group() {
    let mut w = World::new();
    let a = w.client().to_string();
    let kid = w.path("kid");
    let script = format!("sleep 1000 & echo $! > '{}'; wait", kid.display());
    w.ok(&["use", "g", "--pid", &a, "--", "sh", "-c", &script]);
    eventually(SOON, "grandchild started", || {
        read(&kid).trim().parse::<u32>().is_ok()
    });
    let grandchild: u32 = read(&kid).trim().parse().unwrap();
    w.ok(&["admin", "kill", "g"]);
    assert_eq!(w.check("g"), 2);
    eventually(SOON, "grandchild killed with the group", || {
        !alive(grandchild)
    });
}

#[test]
fn different_command_warns_then_attaches() {
    let mut w = World::new();
    let a = w.client().to_string();
    let b = w.client().to_string();
    w.ok(&["use", "w", "--pid", &a, "--", "sleep", "1000"]);
    let r = w.ok(&["use", "w", "--pid", &b, "--", "sleep", "2000"]);
    assert!(
        r.stderr().contains("already runs with another command"),
        "{}",
        r.stderr()
    );
    assert_eq!(w.info("w")["refcount"], 2);
}

#[test]
fn joining_names_every_option_that_differs_once() {
    let mut w = World::new();
    let a = w.client().to_string();
    let b = w.client().to_string();
    let c = w.client().to_string();
    let other = w.path("elsewhere");
    std::fs::create_dir(&other).unwrap();
    let here = w.path("here");
    std::fs::create_dir(&here).unwrap();
    let start = |w: &mut World, pid: &str, dir: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["use", "w", "--pid", pid, "--cwd"];
        let dir = dir.to_str().unwrap().to_string();
        args.push(&dir);
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sleep", "1000"]);
        w.ok(&args)
    };
    start(&mut w, &a, &here, &["--grace-period", "5m", "--env", "A=1"]);
    // The same options: silence.
    let same = start(&mut w, &b, &here, &["--grace-period", "5m", "--env", "A=1"]);
    assert!(!same.stderr().contains("warning"), "{}", same.stderr());
    let r = start(&mut w, &c, &other, &["--env", "A=2", "--env", "B=x"]);
    let stderr = r.stderr();
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{}", r.stderr());
    let line = warnings[0];
    assert!(
        line.contains(&format!("working directory ({})", here.display()))
            && line.contains("environment (A, B)")
            && line.contains("grace period (5m)")
            && !line.contains("command ("),
        "{line}"
    );
    assert_eq!(w.info("w")["refcount"], 3);
    assert_eq!(
        w.info("w")["grace_period"],
        "5m",
        "the starter's grace period"
    );
}

#[test]
fn the_cwd_is_shown_normalised() {
    let mut w = World::new();
    let a = w.client().to_string();
    let dir = w.path("proj");
    std::fs::create_dir(&dir).unwrap();
    w.cmd(&["use", "n", "--pid", &a, "--cwd", ".", "--", "sleep", "1000"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(w.info("n")["cwd"], dir.to_str().unwrap(), "no /proj/.");
}

#[test]
fn admin_start_refuses_a_running_server_and_incref_never_starts() {
    let mut w = World::new();
    let c = w.client().to_string();
    let r = w.run(&["admin", "incref", "n", "--pid", &c]);
    assert_eq!(r.code(), 10);
    assert!(r.stderr().contains("not running"), "{}", r.stderr());
    assert!(!w.record_path("n").exists());
    let a = w.client().to_string();
    w.ok(&["admin", "start", "n", "--pid", &a, "--", "sleep", "1000"]);
    let r = w.run(&["admin", "start", "n", "--", "sleep", "1000"]);
    assert!(r.stderr().contains("already running"), "{}", r.stderr());
    let b = w.client().to_string();
    w.ok(&["admin", "incref", "n", "--pid", &b]);
    assert_eq!(w.info("n")["refcount"], 2);
    w.ok(&["admin", "decref", "n", "--pid", &b]);
    assert_eq!(w.info("n")["refcount"], 1);
}

#[test]
fn check_reports_each_state_with_its_exit_code() {
    let w = World::new();
    let me = std::process::id().to_string();
    assert_eq!(w.check("q"), 2);
    w.use_sleep("q", &me, &["--grace-period", "1h"]);
    assert_eq!(w.check("q"), 0);
    w.ok(&["unuse", "q", "--pid", &me]);
    assert_eq!(w.check("q"), 1);
    // A bad name is a bad command line (64), never a state (0..=4).
    let bad = w.run(&["check", "../q"]);
    assert_eq!(bad.code(), 64, "{}", bad.stderr());
    assert!(
        bad.stderr().contains("invalid server name"),
        "{}",
        bad.stderr()
    );
    // A runtime error is 10: a lock dir that is a file.
    std::fs::create_dir_all(w.lockdir.parent().unwrap()).unwrap();
    let file = w.path("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let r = w
        .cmd(&["check", "q"])
        .env("SHAREDSERVER_LOCKDIR", &file)
        .output()
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(10),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
}

/// The keys of the key table under "## JSON status" in doc/ARCHITECTURE.md.
fn documented_json_keys() -> std::collections::BTreeSet<String> {
    let doc = read(&std::path::Path::new(REPO).join("doc/ARCHITECTURE.md"));
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("JSON status"))
        .expect("doc/ARCHITECTURE.md has a JSON status section");
    // The first table (the ones after it explain values, such as `kind`).
    let keys: std::collections::BTreeSet<String> = section
        .lines()
        .skip_while(|l| !l.starts_with("| key |"))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(key, _)| key.to_string())
        .collect();
    assert!(keys.len() >= 10, "too few keys found: {keys:?}");
    keys
}

#[test]
fn list_json_has_the_documented_keys() {
    let mut w = World::new();
    let a = w.client().to_string();
    w.use_sleep("l1", &a, &["--metadata", "editor"]);
    w.ok(&["use", "l2", "--pid", &a, "--", "sleep", "1000"]);
    let list: serde_json::Value =
        serde_json::from_str(&w.ok(&["list", "--json"]).stdout()).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    // Exactly the keys doc/ARCHITECTURE.md documents, in `list` and `info`.
    let documented = documented_json_keys();
    for (what, v) in [("list", &list[0]), ("info", &w.info("l1"))] {
        let keys: std::collections::BTreeSet<String> =
            v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, documented, "{what} --json vs doc/ARCHITECTURE.md");
    }
    assert_eq!(list[0]["clients"][0]["metadata"], "editor");
    assert!(list[0]["clients"][0]["attached_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(list[0]["command"], serde_json::json!(["sleep", "1000"]));
    assert!(humantime::parse_rfc3339(list[0]["started_at"].as_str().unwrap()).is_ok());
}

// Reads /proc: whether the old server is gone.
#[cfg(target_os = "linux")]
#[test]
fn admin_restart_keeps_every_client_as_it_was_and_records_a_restart() {
    let mut w = World::new();
    let (a, b) = (w.client().to_string(), w.client().to_string());
    w.ok(&["use", "r", "--pid", &a, "--", "sleep", "1000"]);
    w.ok(&["use", "r", "--pid", &b, "--metadata", "deploy script"]);
    let before = w.info("r");
    let old = before["pid"].as_u64().unwrap();
    let out = w.ok(&["admin", "restart", "r"]).stdout();
    let after = w.info("r");
    let new = after["pid"].as_u64().unwrap();
    assert_ne!(new, old, "{out}");
    assert!(out.contains(&format!("restarted r (pid {new})")), "{out}");
    // Same clients, unlabelled or not, with their original attach times.
    assert_eq!(after["clients"], before["clients"]);
    assert_eq!(after["state"], "active");
    assert_eq!(after["last_exit"]["kind"], "restarted");
    assert_eq!(after["last_exit"]["pid"], old);
    assert_eq!(after["restarts"], 0, "a requested restart is not a crash");
    let gone = !std::path::Path::new(&format!("/proc/{old}")).exists();
    assert!(gone, "the old process is gone");
    // A server that is not running cannot be restarted.
    let r = w.run(&["admin", "restart", "nosuch"]);
    assert_eq!(r.code(), 10);
    assert!(r.stderr().contains("is not running"), "{}", r.stderr());
}

/// A server that moves into its watcher's process group (as some launchers
/// do) is out of reach of a group signal: it is signalled by pid as well.
// Reads /proc: process groups and exits.
#[cfg(target_os = "linux")]
#[test]
fn a_server_that_leaves_its_process_group_can_be_stopped_and_killed() {
    let mut w = World::new();
    let leave = "use POSIX; POSIX::setpgid(0, getpgrp(getppid())) or die; sleep 1000";
    for (how, verb) in [("stop", "stopped"), ("kill", "killed")] {
        let c = w.client().to_string();
        w.ok(&["use", "p", "--pid", &c, "--", "perl", "-e", leave]);
        let pid = w.info("p")["pid"].as_u64().unwrap();
        let watcher = w.info("p")["watcher_pid"].as_u64().unwrap();
        eventually(SOON, "the server left its group", || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let pgid = stat
                .rsplit(')')
                .next()
                .and_then(|f| f.split_whitespace().nth(2));
            pgid == Some(&watcher.to_string())
        });
        let args: Vec<&str> = match how {
            "stop" => vec!["admin", "stop", "p", "--force", "--timeout", "10s"],
            _ => vec!["admin", "kill", "p"],
        };
        let out = w.ok(&args).stdout();
        assert!(out.contains(verb), "{out}");
        assert_eq!(w.state("p"), "stopped");
        let kind = &w.info("p")["last_exit"]["kind"];
        assert_eq!(kind, verb, "{how}");
        let gone = !exists(pid as u32);
        assert!(gone, "{how}: server pid {pid} still runs");
        w.kill_client(c.parse().unwrap());
    }
}

/// A failed start leaves files only a running server needs: doctor reports
/// and removes them, keeping the log and the last exit. Read-only queries
/// never create any.
#[test]
fn doctor_removes_the_leftovers_of_names_that_are_not_running_and_queries_create_nothing() {
    let w = World::new();
    let files = || lockdir_files(&w);
    for args in [
        vec!["info", "ghost"],
        vec!["info", "--json", "ghost"],
        vec!["list"],
        vec!["logs", "ghost"],
    ] {
        let _ = w.run(&args);
    }
    assert_eq!(w.check("ghost"), 2);
    assert_eq!(
        files(),
        Vec::<String>::new(),
        "read-only queries created files"
    );

    assert_eq!(w.run(&["use", "q", "--", "sh", "-c", "exit 3"]).code(), 10);
    let out = w.ok(&["admin", "doctor"]).stdout();
    assert!(
        out.contains("q: not running; removed its leftover"),
        "{out}"
    );
    assert!(out.contains("q.lock") && out.contains("q.journal"), "{out}");
    assert_eq!(files(), ["q.last", "q.log"]);
    assert!(w.ok(&["admin", "doctor"]).stdout().contains("all good"));
    assert_eq!(w.info("q")["last_exit"]["code"], 3, "the last exit is kept");
    // The name works as before.
    let c = w.run(&[
        "use",
        "q",
        "--pid",
        &std::process::id().to_string(),
        "--",
        "sleep",
        "1000",
    ]);
    assert_eq!(c.code(), 0, "{}", c.stderr());
    w.ok(&["admin", "stop", "q", "--force"]);
}

/// The files of the lock directory, sorted.
fn lockdir_files(w: &World) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&w.lockdir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Doctor repairs once: the runs after it find all good and create
/// nothing (taking a name's lock creates its lock file, which a name that
/// is not running does not keep), and a record set aside as corrupt
/// (`zz.json.corrupt-N`) is `zz`'s, not a server named `zz.json`.
#[test]
fn doctor_repairs_once_and_then_finds_all_good_and_creates_nothing() {
    let mut w = World::new();
    // A server stopped when its only client exited.
    let c = w.client();
    w.use_sleep("one", &c.to_string(), &[]);
    let watcher = watcher_of(&w.info("one"));
    w.kill_client(c);
    eventually(SOON, "one's watcher gone", || !alive(watcher));
    std::fs::write(w.lockdir.join("zz.json"), "garbage").unwrap();
    let first = w.ok(&["admin", "doctor"]).stdout();
    assert!(first.contains("zz: moved it to"), "{first}");
    let repaired = lockdir_files(&w);
    assert!(
        repaired.iter().any(|f| f.starts_with("zz.json.corrupt-")),
        "{repaired:?}"
    );
    for args in [
        &["admin", "doctor"][..],
        &["admin", "doctor"],
        &["admin", "doctor", "one"],
        &["admin", "doctor", "zz"],
        &["admin", "doctor"],
    ] {
        let out = w.ok(args).stdout();
        assert!(out.contains("all good"), "{args:?} after {first}: {out}");
        assert_eq!(lockdir_files(&w), repaired, "{args:?} changed files");
    }
}

/// `use` reports a start only once the watcher confirms that it supervises
/// the server; a watcher that cannot (here: a directory where its wake FIFO
/// goes) stops the server, and `use` fails saying why.
#[test]
fn use_fails_when_the_watcher_cannot_supervise_and_leaves_nothing_running() {
    let w = World::new();
    w.make_lockdir();
    std::fs::create_dir(w.lockdir.join("w.wake")).unwrap();
    let pidfile = w.path("server.pid");
    let script = format!("echo $$ > '{}'; exec sleep 1000", pidfile.display());
    let me = std::process::id().to_string();
    let r = w.run(&["use", "w", "--pid", &me, "--", "sh", "-c", &script]);
    assert_eq!(r.code(), 10, "{}", r.stdout());
    assert!(!r.stdout().contains("started"), "{}", r.stdout());
    assert!(r.stderr().contains("cannot supervise it"), "{}", r.stderr());
    assert!(r.stderr().contains("w.wake"), "{}", r.stderr());
    assert!(!w.record_path("w").exists());
    assert_eq!(w.state("w"), "stopped");
    let pid = read(&pidfile).trim().to_string();
    eventually(SOON, "the unsupervised server stopped", || {
        !exists(pid.parse().unwrap())
    });
    // doctor clears the way, and the name works again.
    w.ok(&["admin", "doctor"]);
    assert!(!w.lockdir.join("w.wake").exists());
    w.ok(&["use", "w", "--pid", &me, "--", "sleep", "1000"]);
    w.ok(&["admin", "stop", "w", "--force"]);
}

/// A server that daemonizes: after `first`, a child in a new session
/// (started through `how`) writes its pid to `child` and sleeps; the parent
/// waits busily until it has (a parent asleep would pass the start-up
/// check's idle test, and `use` would report a start before the exit), then
/// exits.
fn daemon_script(child: &std::path::Path, first: &str, how: &str) -> String {
    format!(
        "{first}setsid {how}sh -c 'echo $$ > \"{c}\"; exec sleep 1000' & \
         while [ ! -s '{c}' ]; do :; done; exit 0",
        c = child.display()
    )
}

/// `use` of a server that daemonizes at once, with a start-up window long
/// enough for a loaded machine (the busy parent ends it).
fn use_daemon(w: &World, name: &str, script: &str) -> Run {
    let me = std::process::id().to_string();
    let r = w.run(&[
        "use",
        name,
        "--pid",
        &me,
        "--startup-check",
        "20s",
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(r.code(), 10, "{}", r.stdout());
    assert!(r.stderr().contains("daemonized"), "{}", r.stderr());
    assert!(r.stderr().contains("--foreground"), "{}", r.stderr());
    r
}

/// Wait for the daemon's child to write its pid, then for it to be stopped.
fn daemon_stopped(child: &std::path::Path) {
    eventually(SOON, "the daemon wrote its pid", || {
        read(child).ends_with('\n')
    });
    let pid: u32 = read(child).trim().parse().unwrap();
    eventually(SOON, "the daemon's child stopped", || !exists(pid));
}

/// A server that daemonizes (its work goes on in a child of a new session,
/// out of reach of its process group) fails the start with a hint, and the
/// processes it left are stopped.
#[test]
fn a_server_that_daemonizes_fails_with_a_foreground_hint_and_leaves_nothing() {
    let w = World::new();
    let child = w.path("child.pid");
    use_daemon(&w, "dmn", &daemon_script(&child, "", ""));
    daemon_stopped(&child);
    assert_eq!(w.info("dmn")["last_exit"]["kind"], "daemonized");
}

/// The same, for a daemon that loses the tag in its environment (redis
/// writes its process title over it; `env -i` here): the watcher is its
/// subreaper, so it is found as an orphan all the same. At start-up, and
/// later, once the server ran for a while.
#[test]
fn a_daemon_without_the_tag_is_found_as_an_orphan_and_stopped() {
    let w = World::new();
    let me = std::process::id().to_string();
    let wipe = "env -i PATH=/usr/bin:/bin ";
    let child = w.path("child1.pid");
    use_daemon(&w, "dmn", &daemon_script(&child, "", wipe));
    daemon_stopped(&child);

    // Later: the server passes its start-up check, then daemonizes.
    let gate = w.path("go");
    let child = w.path("child2.pid");
    let first = format!("while [ ! -e '{}' ]; do sleep 0.01; done; ", gate.display());
    let script = daemon_script(&child, &first, wipe);
    w.ok(&["use", "late", "--pid", &me, "--", "sh", "-c", &script]);
    std::fs::write(&gate, "").unwrap();
    daemon_stopped(&child);
    eventually(SOON, "the exit was recorded", || {
        w.info("late")["last_exit"]["kind"] == "daemonized"
    });
}

/// What a server orphans while it runs becomes the watcher's child (it is
/// their subreaper): each one that exits is reaped, never left a zombie.
#[test]
fn the_orphans_a_server_leaves_while_it_runs_are_reaped() {
    let w = World::new();
    let me = std::process::id().to_string();
    let (go, end) = (w.path("go"), w.path("end"));
    let wait = |gate: &std::path::Path| {
        format!("while [ ! -e '{}' ]; do sleep 0.01; done", gate.display())
    };
    // Three subshells each leave a waiting shell behind and exit.
    let script = format!(
        "{}; for i in 1 2 3; do (sh -c \"{}\" &); done; exec sleep 1000",
        wait(&go),
        wait(&end)
    );
    w.ok(&["use", "orph", "--pid", &me, "--", "sh", "-c", &script]);
    let info = w.info("orph");
    let (server, watcher) = (pid_of(&info), watcher_of(&info));
    let children = || -> Vec<u32> {
        let tasks = std::fs::read_dir(format!("/proc/{watcher}/task")).unwrap();
        tasks
            .flatten()
            .flat_map(|t| {
                let list = read(&t.path().join("children"));
                let pids: Vec<u32> = list
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect();
                pids
            })
            .collect()
    };
    std::fs::write(&go, "").unwrap();
    eventually(SOON, "the three orphans came to the watcher", || {
        children().len() == 4
    });
    std::fs::write(&end, "").unwrap();
    eventually(SOON, "the orphans were reaped", || children() == [server]);
    assert_eq!(w.state("orph"), "active");
    w.ok(&["admin", "stop", "orph", "--force"]);
}
