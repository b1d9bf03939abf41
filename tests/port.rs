//! `port`: a free port found at start, or a fixed one checked first, given
//! to the server and shown to clients, through the real binary.

mod common;
use common::*;
use std::net::TcpListener;

/// A server that writes what it was given (its $PORT, an argument and an
/// env value, both `${PORT}` in the config) and stays up. Its ready check
/// uses `${PORT}` too, so it passes only if that was replaced as well.
fn project(w: &World, port: &str) {
    let seen = w.path("seen");
    std::fs::write(
        w.path(".sharedserver.json"),
        format!(
            r#"{{"servers": {{"web": {{
                "command": "sh",
                "args": ["-c", "echo \"$PORT $0 $URL\" > '{seen}'; exec sleep 1000", "${{PORT}}"],
                "env": {{"URL": "http://localhost:${{PORT}}/"}},
                "ready": "cmd:grep -q ' http://localhost:${{PORT}}/' '{seen}'",
                "port": {port},
                "gracePeriod": "1h"
            }}}}}}"#,
            seen = seen.display()
        ),
    )
    .unwrap();
}

#[test]
fn port_auto_is_found_at_start_given_to_the_server_and_shown_to_every_client() {
    let mut w = World::new();
    project(&w, r#""auto""#);
    let a = w.client().to_string();
    let out = w.ok(&["use", "web", "--pid", &a]).stdout();
    let port: u16 = w.ok(&["port", "web"]).stdout().trim().parse().unwrap();
    assert!(out.contains(&format!(", port {port})")), "{out}");
    assert_eq!(
        read(&w.path("seen")).trim(),
        format!("{port} {port} http://localhost:{port}/"),
        "$PORT, and ${{PORT}} in args and env"
    );
    let info = w.info("web");
    assert_eq!(info["port"], port);
    assert!(info["ready"].as_str().unwrap().contains(&port.to_string()));
    assert!(w
        .ok(&["info", "web"])
        .stdout()
        .contains(&format!("port:         {port}")),);
    // A later client reads the same port instead of guessing it.
    let b = w.client().to_string();
    let out = w.ok(&["use", "web", "--pid", &b]).stdout();
    assert!(out.contains(&format!("refcount 2, port {port})")), "{out}");
    assert!(
        !w.ok(&["use", "web", "--pid", &b])
            .stderr()
            .contains("warning"),
        "the spec with its port in place is what runs: no difference to warn of"
    );
}

#[test]
fn a_fixed_port_in_use_fails_the_start_with_a_clear_error_and_leaves_nothing() {
    let mut w = World::new();
    let held = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let busy = held.local_addr().unwrap().port();
    project(&w, &busy.to_string());
    let a = w.client().to_string();
    let r = w.run(&["use", "web", "--pid", &a]);
    assert_eq!(r.code(), 10);
    assert!(
        r.stderr().contains(&format!(
            "cannot start 'web': port {busy} is not free on 127.0.0.1"
        )),
        "{}",
        r.stderr()
    );
    assert_eq!(w.state("web"), "stopped");
    assert!(!w.path("seen").exists(), "the server never ran");

    // Free, it is used as given; --port on the command line overrides.
    drop(held);
    let r = w.ok(&["use", "web", "--pid", &a, "--port", &busy.to_string()]);
    assert!(
        r.stdout().contains(&format!("port {busy})")),
        "{}",
        r.stdout()
    );
    assert_eq!(w.ok(&["port", "web"]).stdout().trim(), busy.to_string());
}

#[test]
fn port_flag_works_without_a_config_and_port_explains_what_is_missing() {
    let mut w = World::new();
    let a = w.client().to_string();
    w.ok(&[
        "use",
        "p",
        "--pid",
        &a,
        "--port",
        "auto",
        "--",
        "sh",
        "-c",
        "exec sleep 1000",
        "${PORT}",
    ]);
    let port = w.ok(&["port", "p"]).stdout().trim().to_string();
    assert_eq!(w.info("p")["command"][3], port.as_str());

    w.ok(&["use", "noport", "--pid", &a, "--", "sleep", "1000"]);
    let r = w.run(&["port", "noport"]);
    assert_eq!(r.code(), 10);
    assert!(r.stderr().contains("has no port"), "{}", r.stderr());
    let r = w.run(&["port", "absent"]);
    assert_eq!(r.code(), 10);
    assert!(r.stderr().contains("not running"), "{}", r.stderr());
    let r = w.run(&["use", "q", "--port", "http", "--", "sleep", "1"]);
    assert_eq!(r.code(), 64);
    assert!(r.stderr().contains("invalid port"), "{}", r.stderr());

    // `${PORT}` in a readiness check needs a port to replace it: refused at
    // once, not after the whole ready timeout spent on the literal text.
    let r = w.run(&[
        "use",
        "r",
        "--pid",
        &a,
        "--ready",
        "tcp://localhost:${PORT}",
        "--",
        "sleep",
        "1000",
    ]);
    assert_eq!(r.code(), 10);
    assert!(
        r.stderr()
            .contains("ready: uses ${PORT}, but no port is set"),
        "{}",
        r.stderr()
    );
    assert_eq!(w.state("r"), "stopped");
}

#[test]
fn a_bad_port_in_a_config_names_the_file_and_the_key() {
    let w = World::new();
    std::fs::write(
        w.path(".sharedserver.json"),
        r#"{"servers": {"web": {"command": "sleep", "port": "eighty"}}}"#,
    )
    .unwrap();
    let r = w.run(&["use", "web"]);
    assert_eq!(r.code(), 10);
    assert!(
        r.stderr().contains("servers.web.port") && r.stderr().contains("invalid port"),
        "{}",
        r.stderr()
    );
    // Without a `port` key, ${PORT} is an ordinary variable, as before.
    std::fs::write(
        w.path(".sharedserver.json"),
        r#"{"servers": {"web": {"command": "sleep", "args": ["${PORT}"]}}}"#,
    )
    .unwrap();
    let r = w
        .cmd(&["config", "web"])
        .env_remove("PORT")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("${PORT} is not set"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
}
