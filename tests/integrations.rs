//! The agent plugins in integrations/, run by the real hosts from the npm
//! registry (tests/install-npm puts them in .tools/npm): Claude Code loads
//! integrations/claude with `--plugin-dir` and runs its hooks itself;
//! OpenCode loads integrations/opencode from a project's .opencode/plugins.
//! Neither host reaches a model: Claude Code is pointed at a closed loopback
//! port (it keeps retrying, which is a live session), and OpenCode only
//! bootstraps a project, which is when it loads plugins.

mod common;
use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Hosts start slowly (a 250 MB binary, config loading).
const HOST: Duration = Duration::from_secs(90);
const SOON: Duration = Duration::from_secs(10);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// node_modules with the hosts: $SHAREDSERVER_TEST_NPM, else .tools/npm.
fn npm() -> PathBuf {
    let dir = std::env::var_os("SHAREDSERVER_TEST_NPM")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".tools/npm/node_modules"));
    assert!(
        dir.join(".bin/claude").exists() && dir.join(".bin/opencode").exists(),
        "Claude Code and OpenCode are not installed in {}: run tests/install-npm (or tests/run), or point SHAREDSERVER_TEST_NPM at a node_modules that has them",
        dir.display()
    );
    dir
}

/// Two eager servers with a long grace period (so what the test sees is
/// the refcount, not a stop) and a lazy one, plus `extra` entries.
fn project(w: &World, extra: &str) {
    write_project(w, r#", "grace_period": "1h""#, extra);
}

fn clients(w: &World, name: &str) -> Vec<u32> {
    client_pids(&w.info(name))
}

/// A host process, killed (and reaped) if the test ends early.
struct Host(Child);

impl Host {
    fn pid(&self) -> u32 {
        self.0.id()
    }
    fn wait_exit(&mut self) {
        eventually(SOON, "the host exited", || {
            self.0.try_wait().unwrap().is_some()
        });
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Environment shared by both hosts: this world's lock dir, the binary
/// under test, a private HOME, and no traffic beyond this machine.
fn host_env(cmd: &mut Command, w: &World) {
    let home = w.path("home");
    std::fs::create_dir_all(&home).unwrap();
    cmd.current_dir(w.tmp.path())
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("SHAREDSERVER_LOCKDIR", &w.lockdir)
        .env("SHAREDSERVER_BIN", BIN)
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("OPENCODE_DISABLE_AUTOUPDATE", "1")
        .env("OPENCODE_DISABLE_MODELS_FETCH", "1")
        .env("OPENCODE_DISABLE_SHARE", "1")
        .env("OPENCODE_DISABLE_LSP_DOWNLOAD", "1")
        .stdin(Stdio::null());
}

/// `claude ARGS` in this world, and its output.
fn claude_cli(w: &World, args: &[&str]) -> String {
    let mut cmd = Command::new(npm().join(".bin/claude"));
    host_env(&mut cmd, w);
    let out = cmd.args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "claude {args:?}: {text}");
    text
}

/// `claude -p`: a real session, whose model requests go to a closed
/// loopback port, so it stays alive retrying until it is stopped.
fn claude(w: &World, n: usize) -> Host {
    let mut cmd = Command::new(npm().join(".bin/claude"));
    host_env(&mut cmd, w);
    cmd.args(["-p", "hello"])
        .env("ANTHROPIC_API_KEY", "sk-ant-test-not-a-key")
        .env("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
        .stdout(std::fs::File::create(w.path(&format!("claude{n}.out"))).unwrap())
        .stderr(std::fs::File::create(w.path(&format!("claude{n}.err"))).unwrap());
    Host(cmd.spawn().expect("start claude"))
}

#[test]
fn claude_plugin_and_marketplace_pass_the_real_validator() {
    let w = World::new();
    let root = repo();
    for dir in [root.join("integrations/claude"), root.clone()] {
        let text = claude_cli(
            &w,
            &["plugin", "validate", "--strict", dir.to_str().unwrap()],
        );
        assert!(text.contains("Validation passed"), "{text}");
    }
}

#[test]
fn claude_sessions_hold_the_servers_until_they_end_or_die() {
    let w = World::new();
    project(&w, "");
    // Installed as the README says: this checkout as a marketplace.
    claude_cli(
        &w,
        &["plugin", "marketplace", "add", repo().to_str().unwrap()],
    );
    claude_cli(&w, &["plugin", "install", "sharedserver@sharedserver"]);
    let mut ending = claude(&w, 1);
    let dying = claude(&w, 2);
    let attached = |host: &Host| {
        let pid = host.pid();
        eventually(HOST, "a Claude Code session attached itself", || {
            w.state("a") != "stopped" && clients(&w, "a").contains(&pid)
        });
    };
    attached(&ending);
    attached(&dying);
    assert_eq!(w.info("a")["refcount"], 2);
    assert_eq!(w.info("b")["refcount"], 2);
    assert_eq!(w.state("lazy"), "stopped", "lazy servers are not started");
    let meta = w.info("a")["clients"][0]["metadata"].clone();
    assert!(meta.as_str().unwrap().starts_with("claude-code "), "{meta}");

    // A crashed session never runs SessionEnd: dead-client detection drops it.
    let dead = dying.pid();
    signal(dead, Signal::SIGKILL);
    drop(dying);
    eventually(SOON, "the killed session was dropped", || {
        clients(&w, "a") == [ending.pid()]
    });
    let journal = w.ok(&["admin", "debug", "a"]).stdout();
    assert!(
        journal.contains(&format!("client {dead} died")),
        "{journal}"
    );

    // A session that ends runs SessionEnd, which lets go (before it exits).
    let pid = ending.pid();
    signal(pid, Signal::SIGTERM);
    ending.wait_exit();
    eventually(SOON, "the ended session let go", || {
        w.info("a")["refcount"] == 0 && w.info("b")["refcount"] == 0
    });
    let journal = w.ok(&["admin", "debug", "b"]).stdout();
    assert!(
        journal.contains(&format!("client {pid} detached")),
        "SessionEnd detached it: {journal}"
    );
}

/// Run the hook as Claude Code does for `event`: exec form (no shell), the
/// event as its argument, the JSON input on stdin and the host's variables.
fn run_hook(w: &World, plugin: &Path, event: &str, env: &[(&str, &str)]) -> (i32, Value, String) {
    run_hook_input(w, plugin, event, "other", env)
}

/// run_hook, with SessionEnd's `reason` (Claude Code sends "clear" for /clear).
fn run_hook_input(
    w: &World,
    plugin: &Path,
    event: &str,
    reason: &str,
    env: &[(&str, &str)],
) -> (i32, Value, String) {
    let input = format!(
        r#"{{"session_id":"s-1","transcript_path":"/dev/null","cwd":"{}","hook_event_name":"{event}","source":"startup","reason":"{reason}"}}"#,
        w.tmp.path().display()
    );
    let mut cmd = Command::new(plugin.join("hooks/sharedserver-hook"));
    cmd.arg(event)
        .current_dir(w.tmp.path())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", w.path("home"))
        .env("SHAREDSERVER_LOCKDIR", &w.lockdir)
        .env("CLAUDE_PROJECT_DIR", w.tmp.path())
        .env("CLAUDE_PLUGIN_ROOT", plugin)
        .env("CLAUDE_CODE_SESSION_ID", "s-1")
        .env("TMPDIR", w.path("tmp"))
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::fs::create_dir_all(w.path("tmp")).unwrap();
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("hook output is not JSON ({e}): {stdout}"))
    };
    (
        out.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn claude_hook_reports_failures_as_a_system_message_and_never_blocks() {
    let w = World::new();
    project(&w, r#", "broken": {"command": "false"}"#);
    std::fs::create_dir_all(w.path("home")).unwrap();
    let plugin = repo().join("integrations/claude");
    let (code, out, err) = run_hook(&w, &plugin, "SessionStart", &[("SHAREDSERVER_BIN", BIN)]);
    assert_eq!(code, 0, "never blocks the session: {err}");
    let msg = out["systemMessage"]
        .as_str()
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        msg.contains("broken: server 'broken' exited at once")
            && msg.contains("1 of 4 servers failed: broken"),
        "{msg}"
    );
    // The others were attached all the same, and the model is told of them;
    // the session is our test process.
    let context = out["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        context.contains("started a") && context.contains("started b"),
        "{context}"
    );
    assert_eq!(clients(&w, "a"), [std::process::id()]);
    // /clear ends one session and starts the next in the same process: the
    // hold stays (letting go would stop and restart every server).
    let bin = [("SHAREDSERVER_BIN", BIN)];
    let (code, out, _) = run_hook_input(&w, &plugin, "SessionEnd", "clear", &bin);
    assert_eq!((code, out), (0, Value::Null));
    assert_eq!(
        clients(&w, "a"),
        [std::process::id()],
        "/clear kept the hold"
    );
    let (code, out, _) = run_hook(&w, &plugin, "SessionEnd", &bin);
    assert_eq!((code, out), (0, Value::Null));
    assert_eq!(w.info("a")["refcount"], 0, "SessionEnd let go");

    // A copy outside the repository, with no binary anywhere: one line
    // saying how to install it.
    let copy = w.path("plugin");
    assert!(Command::new("cp")
        .arg("-R")
        .arg(&plugin)
        .arg(&copy)
        .status()
        .unwrap()
        .success());
    let (code, out, _) = run_hook(&w, &copy, "SessionStart", &[]);
    assert_eq!(code, 0);
    let msg = out["systemMessage"].as_str().unwrap();
    assert!(
        msg.contains("binary not found") && msg.contains("cargo install"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");
    let (_, out, _) = run_hook(
        &w,
        &copy,
        "SessionStart",
        &[("SHAREDSERVER_BIN", "/no/such/bin")],
    );
    let msg = out["systemMessage"].as_str().unwrap();
    assert!(msg.contains("/no/such/bin"), "{msg}");

    // Found on $PATH; on success the model is told what runs.
    let bin_dir = w.path("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink(BIN, bin_dir.join("sharedserver")).unwrap();
    let path = format!("{}:/usr/bin:/bin", bin_dir.display());
    std::fs::write(
        w.path(".sharedserver.json"),
        r#"{"servers": {"a": {"command": "sleep", "args": ["1000"], "grace_period": "1h"}}}"#,
    )
    .unwrap();
    let (code, out, _) = run_hook(&w, &copy, "SessionStart", &[("PATH", &path)]);
    assert_eq!(code, 0);
    let context = out["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap_or_else(|| panic!("{out}"));
    assert!(context.contains("attached to a"), "{context}");
    assert_eq!(clients(&w, "a"), [std::process::id()]);

    // The binary that the Neovim plugin's lazy.nvim build step made is
    // found too (a marketplace install runs a copy of the hook).
    let data = w.path("data");
    let built = data.join("nvim/lazy/sharedserver/target/release");
    std::fs::create_dir_all(&built).unwrap();
    std::os::unix::fs::symlink(BIN, built.join("sharedserver")).unwrap();
    let xdg = [("XDG_DATA_HOME", data.to_str().unwrap())];
    let (code, out, _) = run_hook(&w, &copy, "SessionStart", &xdg);
    assert_eq!(code, 0);
    assert!(
        out["hookSpecificOutput"]["additionalContext"]
            .as_str()
            .is_some_and(|c| c.contains("attached to a")),
        "{out}"
    );
}

#[test]
fn claude_hook_waits_a_bounded_time_and_the_start_goes_on_in_the_background() {
    let w = World::new();
    let flag = w.path("ready-flag");
    std::fs::write(
        w.path(".sharedserver.json"),
        format!(
            r#"{{"servers": {{"slow": {{"command": "sleep", "args": ["1000"], "grace_period": "1h",
                "ready": "cmd:test -e '{}'", "ready_timeout": "2m"}}}}}}"#,
            flag.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(w.path("home")).unwrap();
    let plugin = repo().join("integrations/claude");
    let env = [("SHAREDSERVER_BIN", BIN), ("SHAREDSERVER_HOOK_WAIT", "1")];
    let (code, out, err) = run_hook(&w, &plugin, "SessionStart", &env);
    assert_eq!(code, 0, "{err}");
    let msg = out["systemMessage"]
        .as_str()
        .unwrap_or_else(|| panic!("{out}"));
    assert!(msg.contains("still starting after 1s"), "{msg}");
    assert!(
        out["hookSpecificOutput"]["additionalContext"]
            .as_str()
            .is_some_and(|c| c.contains("sharedserver list")),
        "{out}"
    );
    // Still held for the session, and it gets ready once it can.
    assert_eq!(w.state("slow"), "starting");
    assert_eq!(clients(&w, "slow"), [std::process::id()]);
    std::fs::write(&flag, "").unwrap();
    eventually(SOON, "the server got ready", || w.state("slow") == "active");
    assert_eq!(clients(&w, "slow"), [std::process::id()]);
    // The background start cleans up after itself.
    eventually(SOON, "the hook's scratch directory was removed", || {
        std::fs::read_dir(w.path("tmp"))
            .map(|d| d.count() == 0)
            .unwrap_or(true)
    });

    let bad = [
        ("SHAREDSERVER_BIN", BIN),
        ("SHAREDSERVER_HOOK_WAIT", "soon"),
    ];
    let (code, out, _) = run_hook(&w, &plugin, "SessionStart", &bad);
    assert_eq!(code, 0);
    let msg = out["systemMessage"].as_str().unwrap_or_default();
    assert!(msg.contains("SHAREDSERVER_HOOK_WAIT is 'soon'"), "{msg}");
}

/// `opencode serve` for this world's project, with the plugin linked into
/// .opencode/plugins as a user would. OpenCode installs @opencode-ai/plugin
/// into each config directory unless a lock file says it is there: give it
/// the one tests/install-npm made, so the test needs no network.
fn opencode(w: &World) -> (Host, u16) {
    opencode_with(w, &[])
}

/// opencode(), with more (or other) environment variables.
fn opencode_with(w: &World, env: &[(&str, &str)]) -> (Host, u16) {
    let npm = npm();
    let tools = npm.parent().unwrap();
    let plugins = w.path(".opencode/plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::os::unix::fs::symlink(
        repo().join("integrations/opencode/sharedserver.js"),
        plugins.join("sharedserver.js"),
    )
    .unwrap();
    for dir in [w.path(".opencode"), w.path("home/.config/opencode")] {
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(tools.join(file), dir.join(file)).unwrap();
        }
        std::os::unix::fs::symlink(&npm, dir.join("node_modules")).unwrap();
    }
    let log = w.path("opencode.log");
    let mut cmd = Command::new(npm.join(".bin/opencode"));
    host_env(&mut cmd, w);
    cmd.envs(env.iter().copied())
        .args([
            "serve",
            "--hostname",
            "127.0.0.1",
            "--port",
            "0",
            "--print-logs",
        ])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(w.path("opencode.err")).unwrap());
    let host = Host(cmd.spawn().expect("start opencode"));
    let mut port = 0;
    eventually(HOST, "OpenCode listens", || {
        let text = read(&log) + &read(&w.path("opencode.err"));
        port = text
            .split("listening on http://127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        port != 0
    });
    (host, port)
}

/// Ask OpenCode about `dir`: it bootstraps the project, loading its plugins.
fn open_project(port: u16, dir: &Path) {
    let encoded: String = dir
        .to_string_lossy()
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(HOST)).unwrap();
    write!(
        conn,
        "GET /config?directory={encoded} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    // Read the head, then Content-Length bytes: the server keeps the
    // connection open whatever the request says.
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let complete = |reply: &[u8]| {
        let text = String::from_utf8_lossy(reply);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>())
            })
            .and_then(|v| v.ok());
        length.is_some_and(|n| body.len() >= n)
    };
    while !complete(&reply) {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "OpenCode did not open the project ({e}): {}",
                String::from_utf8_lossy(&reply)
            ),
        }
    }
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

#[test]
fn opencode_plugin_attaches_opencode_itself_and_reports_failures() {
    let w = World::new();
    project(&w, r#", "broken": {"command": "false"}"#);
    let (host, port) = opencode(&w);
    let keep = w.path("opencode.log");
    let opened = std::panic::catch_unwind(|| open_project(port, w.tmp.path()));
    if let Err(e) = opened {
        eprintln!("{}{}", read(&keep), read(&w.path("opencode.err")));
        std::panic::resume_unwind(e);
    }
    let pid = host.pid();
    eventually(HOST, "OpenCode's plugin attached OpenCode", || {
        w.state("b") != "stopped" && clients(&w, "a") == [pid] && clients(&w, "b") == [pid]
    });
    assert_eq!(w.info("a")["clients"][0]["metadata"], "opencode");
    assert_eq!(w.state("lazy"), "stopped");
    // The failure reaches OpenCode's log (and its TUI as a toast).
    eventually(SOON, "the failure is in OpenCode's log", || {
        let log = read(&w.path("opencode.log")) + &read(&w.path("opencode.err"));
        log.contains("sharedserver: broken: server 'broken' exited at once")
    });

    signal(pid, Signal::SIGKILL);
    drop(host);
    eventually(SOON, "OpenCode's death dropped it", || {
        w.info("a")["refcount"] == 0 && w.info("b")["refcount"] == 0
    });
}

#[test]
fn opencode_starts_all_the_same_when_the_binary_is_missing() {
    let w = World::new();
    project(&w, "");
    // Awaiting the failure's toast while OpenCode started used to hang it.
    let (_host, port) = opencode_with(&w, &[("SHAREDSERVER_BIN", "/no/such/sharedserver")]);
    open_project(port, w.tmp.path());
    eventually(SOON, "the failure is in OpenCode's log", || {
        let log = read(&w.path("opencode.log")) + &read(&w.path("opencode.err"));
        log.contains("sharedserver: $SHAREDSERVER_BIN is /no/such/sharedserver")
    });
    assert_eq!(w.state("a"), "stopped");
}

/// The plugin's hooks, called as OpenCode calls them, with a client whose
/// toasts never answer (as while OpenCode starts): what node prints.
fn opencode_plugin_in_node(w: &World, script: &str) -> String {
    let plugin = repo().join("integrations/opencode/sharedserver.js");
    let code = format!(
        r#"
const {{ SharedServer }} = await import({plugin:?});
const toasts = [], logs = [];
const client = {{
  tui: {{ showToast: (r) => {{ toasts.push(r.body.message); return new Promise(() => {{}}); }} }},
  app: {{ log: (r) => {{ logs.push(r.body.message); return new Promise(() => {{}}); }} }},
}};
const hooks = await SharedServer({{ client, directory: {dir:?} }});
const until = async (what, ok) => {{
  for (let i = 0; i < 1000 && !ok(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!ok()) throw new Error("timed out waiting for " + what);
}};
{script}
"#,
        plugin = plugin.display().to_string(),
        dir = w.tmp.path().display().to_string(),
    );
    let mut cmd = Command::new("node");
    cmd.args(["--input-type=module", "-e", &code])
        .env("SHAREDSERVER_LOCKDIR", &w.lockdir)
        .env("SHAREDSERVER_BIN", BIN);
    let out = cmd.output().expect("run node");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "node: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn opencode_plugin_tells_the_model_what_runs_and_holds_toasts_for_the_tui() {
    let w = World::new();
    project(&w, r#", "broken": {"command": "false"}"#);
    let out = opencode_plugin_in_node(
        &w,
        r#"
await until("the failure", () => logs.length > 0);
console.log("toasts before any session: " + toasts.length);
await hooks.event({ event: { type: "session.created", properties: {} } });
console.log("toasts after: " + JSON.stringify(toasts));
const output = { system: [] };
await hooks["experimental.chat.system.transform"]({}, output);
console.log("system: " + JSON.stringify(output.system));
"#,
    );
    assert!(out.contains("toasts before any session: 0"), "{out}");
    assert!(
        out.contains("toasts after: [\"sharedserver: broken: server 'broken' exited at once"),
        "{out}"
    );
    assert!(
        out.contains("Shared servers for this project (sharedserver):")
            && out.contains("started a")
            && out.contains("started b"),
        "{out}"
    );
}
