//! Process backends (pidfd and portable) through the real binary: which one
//! runs, that the portable one watches clients only while there are any, and
//! that a server the watcher cannot supervise is never left behind.

mod common;
use common::*;
use std::time::Duration;

const SOON: Duration = Duration::from_secs(5);

/// What this test process would choose; the binary inherits our
/// environment, so it chooses the same (tests/run runs the suite once more
/// with SHAREDSERVER_BACKEND=portable).
fn expected() -> &'static str {
    sharedserver::process::backend::current().as_str()
}

#[test]
fn info_json_and_admin_debug_name_the_backend() {
    let mut w = World::new();
    let c = w.client();
    w.ok(&["use", "b", "--pid", &c.to_string(), "--", "sleep", "1000"]);
    assert_eq!(w.info("b")["backend"], expected());
    let debug = w.ok(&["admin", "debug", "b"]).stdout();
    let want = format!("backend: {0} (this process); {0} (the watcher)", expected());
    assert!(debug.starts_with(&want), "{debug}");
    w.ok(&["admin", "stop", "b", "--force"]);
}

#[test]
fn shared_server_backend_portable_forces_the_portable_backend() {
    let mut w = World::new();
    let c = w.client();
    let out = w
        .cmd(&["use", "p", "--pid", &c.to_string(), "--", "sleep", "1000"])
        .env("SHAREDSERVER_BACKEND", "portable")
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(w.info("p")["backend"], "portable");
    // Dead clients are still dropped, by the 50 ms check.
    w.kill_client(c);
    eventually(SOON, "the dead client dropped", || {
        w.info("p")["refcount"] == 0
    });
    w.ok(&["admin", "stop", "p", "--force"]);
}

/// If the watcher cannot supervise the server it just started (here an
/// injected failure, in life `pidfd_open` refused), it stops the server and
/// its whole process group before it reports the error; nothing is left
/// running that no record knows of.
#[test]
fn a_server_that_cannot_be_supervised_is_stopped_before_the_error() {
    let mut w = World::new();
    let c = w.client();
    let pids = w.path("pids");
    // The server and a child in its group both write their pids first.
    let script = format!(
        "sleep 1000 & echo $! >> '{0}'; echo $$ >> '{0}'; wait",
        pids.display()
    );
    let out = w
        .cmd(&[
            "use",
            "leak",
            "--pid",
            &c.to_string(),
            "--",
            "sh",
            "-c",
            &script,
        ])
        .env(sharedserver::test_hooks::FAIL_SUPERVISE, "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot supervise server pid"), "{err}");
    assert!(err.contains("stopped it and its process group"), "{err}");
    let server: u32 = err
        .split("cannot supervise server pid ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .expect("the error names the server pid");
    assert!(!alive(server), "server {server} left running");
    // Whatever of the group got as far as writing its pid is gone too.
    for pid in read(&pids).lines().filter_map(|l| l.parse::<u32>().ok()) {
        eventually(SOON, "the server's group gone", || !alive(pid));
    }
    assert_eq!(w.check("leak"), 2, "no record of it either");
}

/// Voluntary plus involuntary context switches of `pid`: a wake-up counter.
#[cfg(target_os = "linux")]
fn wakeups(pid: u32) -> u64 {
    read(std::path::Path::new(&format!("/proc/{pid}/status")))
        .lines()
        .filter(|l| l.contains("ctxt_switches:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// The portable backend polls clients only while some are attached: with
/// none, the watcher sleeps until an event, whichever backend runs.
#[cfg(target_os = "linux")]
#[test]
fn an_idle_watcher_without_clients_never_wakes_under_the_portable_backend() {
    let mut w = World::new();
    let c = w.client();
    let out = w
        .cmd(&[
            "use",
            "idle",
            "--pid",
            &c.to_string(),
            "--grace-period",
            "1h",
            "--",
        ])
        .args(["sleep", "1000"])
        .env("SHAREDSERVER_BACKEND", "portable")
        .output()
        .unwrap();
    assert_success(&out);
    let watcher = watcher_of(&w.info("idle"));
    // With a client: it looks every 50 ms.
    let before = wakeups(watcher);
    eventually(SOON, "the watcher polls its client", || {
        wakeups(watcher) >= before + 3
    });
    w.ok(&["unuse", "idle", "--pid", &c.to_string()]);
    eventually(SOON, "in grace", || w.state("idle") == "grace");
    // Settle: the detach's own wake-up may still be under way.
    let mut last = wakeups(watcher);
    eventually(SOON, "the watcher goes quiet", || {
        std::thread::sleep(Duration::from_millis(100));
        let now = wakeups(watcher);
        std::mem::replace(&mut last, now) == now
    });
    // A window several poll intervals long: not one wake-up.
    let quiet = wakeups(watcher);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(wakeups(watcher), quiet, "idle watcher woke up");
    w.ok(&["admin", "stop", "idle", "--force"]);
}
