//! A whole project at once (`use --all`, `unuse --all`) and `exec`, through
//! the real binary.

mod common;
use common::*;
use std::time::Duration;

const SOON: Duration = Duration::from_secs(5);

/// Three servers: two eager, one lazy, all `sleep` with distinct arguments.
fn project(w: &World, extra: &str) {
    write_project(w, "", extra);
}

fn clients(w: &World, name: &str) -> Vec<u32> {
    client_pids(&w.info(name))
}

#[test]
fn use_all_starts_eager_servers_and_joins_lazy_ones_only_when_running() {
    let mut w = World::new();
    project(&w, "");
    let p = w.client();
    let out = w.ok(&["use", "--all", "--pid", &p.to_string()]).stdout();
    assert!(out.contains("started a (pid"), "{out}");
    assert!(out.contains("started b (pid"), "{out}");
    assert!(out.contains("skipped lazy (lazy, not running)"), "{out}");
    assert_eq!(out.lines().count(), 3, "one line per server: {out}");
    assert_eq!(clients(&w, "a"), [p]);
    assert_eq!(w.state("lazy"), "stopped");

    // Once the lazy one runs, the next project client joins it too.
    let q = w.client();
    w.ok(&["use", "lazy", "--pid", &q.to_string()]);
    let r = w.client();
    let out = w.ok(&["use", "--all", "--pid", &r.to_string()]).stdout();
    assert!(out.contains("attached to a (pid"), "{out}");
    assert!(out.contains("attached to lazy (pid"), "{out}");
    assert_eq!(w.info("b")["refcount"], 2);
    assert_eq!(w.info("lazy")["refcount"], 2);
}

#[test]
fn use_all_names_the_servers_that_failed_and_keeps_the_others() {
    let mut w = World::new();
    project(&w, r#", "broken": {"command": "false"}"#);
    let p = w.client();
    let r = w.run(&["use", "--all", "--pid", &p.to_string()]);
    assert_eq!(r.code(), 10, "{}", r.stderr());
    assert!(
        r.stderr()
            .contains("broken: server 'broken' exited at once"),
        "{}",
        r.stderr()
    );
    assert!(
        r.stderr().contains("1 of 4 servers failed: broken"),
        "{}",
        r.stderr()
    );
    assert_eq!(clients(&w, "a"), [p], "the others are attached");
    assert_eq!(clients(&w, "b"), [p]);
}

#[test]
fn use_all_refuses_a_command_and_single_server_options() {
    let w = World::new();
    project(&w, "");
    let r = w.run(&["use", "--all", "--", "sleep", "1"]);
    assert_eq!(r.code(), 10);
    assert!(r.stderr().contains("drop `-- CMD`"), "{}", r.stderr());
    let r = w.run(&["use", "--all", "--log-file", "x.log"]);
    assert_eq!(r.code(), 10);
    assert!(
        r.stderr().contains("--log-file applies to one server"),
        "{}",
        r.stderr()
    );
    let r = w.run(&["use", "a", "--all"]);
    assert_eq!(r.code(), 64, "NAME and --all conflict");
    let empty = World::new();
    let r = empty.run(&["use", "--all"]);
    assert_eq!(r.code(), 0, "nothing to hold is not a failure");
    assert!(r.stderr().contains("no servers defined"), "{}", r.stderr());
    assert_eq!(r.stdout(), "");
}

#[test]
fn unuse_all_detaches_from_every_server_the_client_holds_whatever_the_config() {
    let mut w = World::new();
    project(&w, "");
    let p = w.client();
    let other = w.client();
    let (ps, others) = (p.to_string(), other.to_string());
    w.ok(&["use", "--all", "--pid", &ps]);
    w.ok(&["use", "--all", "--pid", &others]);
    // Not in the config at all.
    w.ok(&[
        "use",
        "adhoc",
        "--pid",
        &ps,
        "--grace-period",
        "1h",
        "--",
        "sleep",
        "1003",
    ]);
    std::fs::remove_file(w.path(".sharedserver.json")).unwrap();

    let out = w.ok(&["unuse", "--all", "--pid", &ps]).stdout();
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "detached from a (refcount 1)",
            "detached from adhoc (refcount 0)",
            "detached from b (refcount 1)"
        ]
    );
    assert_eq!(clients(&w, "a"), [other]);
    assert_eq!(w.state("adhoc"), "grace");
    let out = w.ok(&["unuse", "--all", "--pid", &ps]).stdout();
    assert_eq!(out.trim(), format!("pid {p} holds no server"));
}

#[test]
fn exec_holds_the_server_exactly_while_the_command_runs() {
    let w = World::new();
    project(&w, "");
    let seen = w.path("seen");
    let go = w.path("go");
    // The command records its own pid and the server's clients, then waits
    // for the test, so the test can look while it runs.
    let script = format!(
        "echo $$ > '{seen}.pid'; '{BIN}' info b --json > '{seen}'; while [ ! -e '{go}' ]; do sleep 0.01; done; exit 3",
        seen = seen.display(),
        go = go.display(),
    );
    let mut child = w
        .cmd(&["exec", "b", "--", "sh", "-c", &script])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually(SOON, "the command ran", || !read(&seen).is_empty());
    let pid = read(&w.path("seen.pid")).trim().parse::<u32>().unwrap();
    assert_eq!(pid, child.id(), "exec kept the pid: no wrapper left");
    let info: serde_json::Value = serde_json::from_str(&read(&seen)).unwrap();
    assert_eq!(
        info["clients"][0]["pid"],
        child.id(),
        "the command is the client"
    );
    assert_eq!(w.info("b")["refcount"], 1);

    std::fs::write(&go, "").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "the command's exit code is ours");
    eventually(SOON, "the client dropped when the command exited", || {
        w.info("b")["refcount"] == 0
    });
}

#[test]
fn exec_all_holds_every_eager_server() {
    let w = World::new();
    project(&w, "");
    let r = w.ok(&[
        "exec",
        "--all",
        "--",
        "sh",
        "-c",
        &format!("'{BIN}' info a --json; '{BIN}' info b --json"),
    ]);
    // The command's stdout is its own; what exec says goes to stderr.
    let infos: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&r.stdout())
        .into_iter()
        .map(|v| v.unwrap())
        .collect();
    assert_eq!(infos.len(), 2, "stdout: {}", r.stdout());
    for info in &infos {
        assert_eq!(info["refcount"], 1, "{info}");
    }
    assert!(r.stderr().contains("started a"), "{}", r.stderr());
    // b has a grace period: it is still there, with no client.
    eventually(SOON, "the command's exit is noticed", || {
        w.info("b")["refcount"] == 0
    });
}

#[test]
fn exec_of_a_missing_command_lets_go_and_exits_127() {
    let w = World::new();
    project(&w, "");
    let r = w.run(&["exec", "b", "--", "/no/such/command"]);
    assert_eq!(r.code(), 127, "{}", r.stderr());
    assert!(
        r.stderr().contains("cannot run /no/such/command"),
        "{}",
        r.stderr()
    );
    assert_eq!(w.info("b")["refcount"], 0, "released before exiting");
    let r = w.run(&["exec", "nothere", "--", "true"]);
    assert_eq!(r.code(), 10);
    assert!(
        r.stderr().contains("no definition of 'nothere'"),
        "{}",
        r.stderr()
    );
}

/// The original product's files read as they are: `.sharedserver/servers.json`
/// with camelCase keys, a user-level file whose servers run in the caller's
/// directory, `skipIfEnv`, and an unrelated bad entry that breaks nothing.
#[test]
fn existing_configs_read_as_they_are() {
    let mut w = World::new();
    let proj = w.path("proj");
    let deep = proj.join("src");
    std::fs::create_dir_all(proj.join(".sharedserver")).unwrap();
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(
        proj.join(".sharedserver/servers.json"),
        r#"{"servers": {
            "cfg": {"command": "sleep", "args": ["1000"], "gracePeriod": "5m", "metadata": "agent"},
            "bad": {"command": "${SS_TEST_SURELY_UNSET_VAR}"},
            "other": {"command": "sleep", "args": ["1001"], "skipIfEnv": "SS_TEST_LAUNCHED"}
        }}"#,
    )
    .unwrap();
    let xdg = w.path("xdg");
    std::fs::create_dir_all(xdg.join("sharedserver")).unwrap();
    std::fs::write(
        xdg.join("sharedserver/servers.json"),
        r#"{"servers": {"user": {"command": "sleep", "args": ["1002"], "idleTimeout": 60}}}"#,
    )
    .unwrap();
    let run = |w: &World, args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = w.cmd(args);
        cmd.current_dir(&deep).env("XDG_CONFIG_HOME", &xdg);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let p = w.client().to_string();
    let r = run(&w, &["use", "cfg", "--pid", &p], &[]);
    assert_success(&r);
    let info = w.info("cfg");
    assert_eq!(info["grace_period"], "5m");
    assert_eq!(
        info["cwd"],
        proj.to_str().unwrap(),
        "the project's directory"
    );
    assert_eq!(info["clients"][0]["metadata"], "agent");

    let r = run(&w, &["use", "user", "--pid", &p], &[]);
    assert_success(&r);
    let info = w.info("user");
    assert_eq!(
        info["cwd"],
        deep.to_str().unwrap(),
        "the caller's directory"
    );
    assert_eq!(info["grace_period"], "1m");

    let r = run(&w, &["config", "bad"], &[]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success()
            && err.contains("servers.bad.command: ${SS_TEST_SURELY_UNSET_VAR} is not set"),
        "{err}"
    );

    // --all skips an entry whose skipIfEnv variable is set.
    let q = w.client().to_string();
    let r = run(
        &w,
        &["use", "--all", "--pid", &q],
        &[("SS_TEST_LAUNCHED", "1")],
    );
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(!out.contains("other"), "{out}");
    assert_eq!(w.state("other"), "stopped");
}

/// A project whose `slow` server stays `starting` until the test creates
/// its flag file, beside a quick `quick` and a `shared` one.
fn project_with_a_slow_server(w: &World) -> std::path::PathBuf {
    let flag = w.path("FLAG");
    std::fs::write(
        w.path(".sharedserver.json"),
        format!(
            r#"{{"servers": {{
                "slow": {{"command": "sleep", "args": ["1000"], "ready": "cmd:test -e '{}'"}},
                "quick": {{"command": "sleep", "args": ["1001"]}},
                "shared": {{"command": "sleep", "args": ["1002"]}}
            }}}}"#,
            flag.display()
        ),
    )
    .unwrap();
    flag
}

/// `use --all` (or `exec --all`) interrupted while `slow` starts: it undoes
/// every attach it made, stops what it started, and leaves `shared`, which
/// another client held first, running for that client.
fn interrupted_all(exec: bool, sig: nix::sys::signal::Signal) {
    use std::os::unix::process::ExitStatusExt;
    let mut w = World::new();
    project_with_a_slow_server(&w);
    let other = w.client();
    w.ok(&["use", "shared", "--pid", &other.to_string()]);
    let client = w.client().to_string();
    let all = match exec {
        true => w.spawn(&["exec", "--all", "--", "sleep", "1000"]),
        false => w.spawn(&["use", "--all", "--pid", &client]),
    };
    eventually(SOON, "quick and shared joined, slow starting", || {
        w.info("quick")["refcount"] == 1
            && w.info("shared")["refcount"] == 2
            && w.check("slow") == 3
    });
    signal(all.id(), sig);
    let out = all.wait_with_output().unwrap();
    assert_eq!(out.status.signal(), Some(sig as i32), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for line in [
        "interrupted; detached from 'slow' and stopped it",
        "interrupted; detached from 'quick' and stopped it",
    ] {
        assert!(err.contains(line), "{line}: {err}");
    }
    assert!(
        err.contains("interrupted; detached from 'shared'\n"),
        "{err}"
    );
    for name in ["slow", "quick"] {
        eventually(SOON, &format!("{name} stopped"), || {
            w.state(name) == "stopped"
        });
    }
    assert_eq!(clients(&w, "shared"), [other]);
}

#[test]
fn an_interrupted_use_all_undoes_every_attach_it_made() {
    interrupted_all(false, nix::sys::signal::Signal::SIGINT);
}

#[test]
fn an_interrupted_exec_all_undoes_every_attach_it_made() {
    interrupted_all(true, nix::sys::signal::Signal::SIGTERM);
}

/// exec catches Ctrl-C only while it attaches: the command it becomes gets
/// the dispositions exec was given, an ignored SIGINT (as under `&` in a
/// script) included.
#[test]
#[cfg(target_os = "linux")]
fn exec_hands_its_command_the_signal_dispositions_it_was_given() {
    let w = World::new();
    project(&w, "");
    let script =
        format!("trap '' INT; exec '{BIN}' exec --all -- sh -c 'grep SigIgn /proc/$$/status'");
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .env("SHAREDSERVER_LOCKDIR", &w.lockdir)
        .current_dir(w.tmp.path())
        .output()
        .unwrap();
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let mask = text
        .split_whitespace()
        .nth(1)
        .and_then(|m| u64::from_str_radix(m, 16).ok())
        .unwrap_or_else(|| panic!("no SigIgn line: {text}"));
    assert_ne!(
        mask & (1 << (libc::SIGINT - 1)),
        0,
        "SIGINT no longer ignored: {text}"
    );
    assert_eq!(
        mask & (1 << (libc::SIGTERM - 1)),
        0,
        "SIGTERM ignored: {text}"
    );
}
