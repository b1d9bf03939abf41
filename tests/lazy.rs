//! build.lua under the real lazy.nvim, in a real terminal (tmux): a full
//! build from the command line prints a readable trace, a rebuild started
//! from the Lazy window (with the plugin's details open) leaves Neovim idle
//! while cargo runs, and <C-c> in that window stops cargo. Also what only a
//! real terminal shows: the statusline drawn again when a server changes.
//!
//! lazy.nvim comes from $SHAREDSERVER_TEST_LAZY, else the shared fixture next
//! to the repository, else a clone of its `stable` branch into the target
//! dir. The build goes to `<target>/lazy-build`, kept between runs so only
//! the first run compiles the dependencies.
#![cfg(target_os = "linux")]

mod common;

use common::nvim::{clean_tree, lua_str, nvims, plugin_dir, profile_dir, NvimBin, Sandbox};
use common::{eventually, REPO};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A release build on a busy CI machine, dependencies included.
const BUILD_DEADLINE: Duration = Duration::from_secs(30 * 60);
/// Anything that does not compile.
const DEADLINE: Duration = Duration::from_secs(30);

/// The issue's targets for Neovim while cargo runs.
const MAX_CPU_SHARE: f64 = 0.10;
const MAX_RSS_MIB: f64 = 300.0;
/// "A readable progress trace": at most a few hundred lines for a full build.
const MAX_TRACE_LINES: usize = 300;

fn lazy_nvim() -> PathBuf {
    if let Some(dir) = std::env::var_os("SHAREDSERVER_TEST_LAZY").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let repo = Path::new(REPO);
    for up in [repo.join(".."), repo.join("../..")] {
        let dir = up.join("shared/fixtures/lazy.nvim");
        if dir.join("lua/lazy/init.lua").is_file() {
            return dir;
        }
    }
    let clone = profile_dir().parent().unwrap().join("lazy.nvim");
    if !clone.join("lua/lazy/init.lua").is_file() {
        let _ = std::fs::remove_dir_all(&clone);
        let st = Command::new("git")
            .args(["clone", "--quiet", "--depth", "1", "--branch", "stable"])
            .arg("https://github.com/folke/lazy.nvim")
            .arg(&clone)
            .status()
            .expect("run git");
        assert!(
            st.success(),
            "could not clone lazy.nvim; set SHAREDSERVER_TEST_LAZY to a lazy.nvim checkout"
        );
    }
    clone
}

/// lazy.nvim needs Neovim 0.10 (vim.uv).
fn nvim() -> &'static NvimBin {
    nvims()
        .iter()
        .find(|n| n.at_least(0, 10))
        .unwrap_or_else(|| {
            panic!(
                "lazy.nvim needs Neovim 0.10 or newer, and SHAREDSERVER_TEST_NVIM has none: \
             run tests/install-nvim and add the path it prints"
            )
        })
}

fn tmux_available() {
    let ok = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "tmux not found: install it (Debian/Ubuntu: apt-get install tmux; tests/run does this)"
    );
}

/// The init.lua of a lazy.nvim user with this plugin as a `dir =` spec, plus
/// hooks that write, to `events`, when Neovim is up and what Neovim itself
/// cost during each build: CPU time without children (uv.getrusage) against
/// the wall time, peak resident size, and how the build task ended.
fn init_lua(lazy: &Path, tree: &Path, events: &Path, root: &Path) -> String {
    format!(
        r#"
vim.opt.rtp:prepend({lazy})
require("lazy").setup({{
  spec = {{ {{ dir = {tree}, name = "sharedserver" }} }},
  root = {root},
  lockfile = {root} .. "/lazy-lock.json",
  install = {{ missing = false }},
  checker = {{ enabled = false }},
  change_detection = {{ enabled = false }},
  rocks = {{ enabled = false }},
}})
local uv = vim.uv
local events = {events}
local function write(name, value)
  local f = assert(io.open(events .. "/" .. name .. ".tmp", "w"))
  f:write(vim.json.encode(value))
  f:close()
  assert(os.rename(events .. "/" .. name .. ".tmp", events .. "/" .. name))
end
local function cpu(r)
  return r.utime.sec + r.utime.usec / 1e6 + r.stime.sec + r.stime.usec / 1e6
end
local t0, r0
vim.api.nvim_create_autocmd("VimEnter", {{ callback = function() write("up", true) end }})
vim.api.nvim_create_autocmd("User", {{ pattern = "LazyBuildPre", callback = function()
  t0, r0 = uv.hrtime(), uv.getrusage()
  write("started", true)
end }})
vim.api.nvim_create_autocmd("User", {{ pattern = "LazyBuild", callback = function()
  local r = uv.getrusage()
  local task
  for _, t in ipairs(require("lazy.core.config").plugins.sharedserver._.tasks or {{}}) do
    if t.name == "build" then task = t end
  end
  write("built", {{
    wall = (uv.hrtime() - t0) / 1e9,
    cpu = cpu(r) - cpu(r0),
    maxrss_kib = r.maxrss,
    error = task and task:has_errors() and task:output(vim.log.levels.ERROR) or "",
    found_task = task ~= nil,
  }})
end }})
"#,
        lazy = lua_str(lazy.to_str().unwrap()),
        tree = lua_str(tree.to_str().unwrap()),
        root = lua_str(root.to_str().unwrap()),
        events = lua_str(events.to_str().unwrap()),
    )
}

/// Processes whose working directory is `dir` (build.sh, cargo, rustc).
fn procs_in(dir: &Path) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if std::fs::read_link(e.path().join("cwd")).is_ok_and(|c| c == dir) {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            found.push((pid, comm.trim().to_string()));
        }
    }
    found
}

/// A Neovim in its own tmux server (private socket); dropping it ends both.
struct Terminal {
    socket: PathBuf,
}

impl Terminal {
    fn start(socket: PathBuf, command: &str) -> Terminal {
        let st = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(["new-session", "-d", "-x", "160", "-y", "45", command])
            .status()
            .expect("run tmux");
        assert!(st.success(), "tmux new-session failed");
        Terminal { socket }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Type `keys` (tmux key names, such as "Enter" and "C-c").
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p"])
    }

    fn wait_screen(&self, what: &str, cond: impl Fn(&str) -> bool) {
        let deadline = std::time::Instant::now() + DEADLINE;
        let what = format!("{what} (the screen is printed above)");
        eventually(DEADLINE, &what, || {
            let screen = self.screen();
            let found = cond(&screen);
            if !found && std::time::Instant::now() >= deadline {
                eprintln!("the screen:\n{screen}");
            }
            found
        });
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        // Neovim gets SIGHUP; build.lua stops cargo on VimLeavePre.
        self.tmux(&["kill-server"]);
    }
}

fn read_event(events: &Path, name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(events.join(name)).ok()?;
    Some(serde_json::from_str(&text).expect("event file is JSON"))
}

/// Make cargo rebuild the crate (it compares modification times).
fn touch_source(tree: &Path) {
    let lib = tree.join("src/lib.rs");
    let text = std::fs::read(&lib).unwrap();
    std::fs::write(&lib, text).unwrap();
}

#[test]
fn lazy_build_waits_for_cargo_without_spinning_neovim_and_can_be_aborted() {
    tmux_available();
    let nv = nvim();
    let lazy = lazy_nvim();
    let tmp = tempfile::Builder::new()
        .prefix("ss-lazy-")
        .tempdir()
        .unwrap();
    let tree = tmp.path().join("sharedserver.nvim");
    std::fs::create_dir(&tree).unwrap();
    clean_tree(&tree);
    let events = tmp.path().join("events");
    std::fs::create_dir(&events).unwrap();
    let xdg = tmp.path().join("xdg");
    let init = tmp.path().join("init.lua");
    std::fs::write(
        &init,
        init_lua(&lazy, &tree, &events, &tmp.path().join("lazy")),
    )
    .unwrap();
    let target = profile_dir().parent().unwrap().join("lazy-build");
    let env: Vec<(&str, &Path)> = vec![
        ("XDG_CONFIG_HOME", &xdg),
        ("XDG_DATA_HOME", &xdg),
        ("XDG_STATE_HOME", &xdg),
        ("XDG_CACHE_HOME", &xdg),
        ("CARGO_TARGET_DIR", &target),
    ];
    let native = tree.join("lua/sharedserver/native.so");

    // 1. From the command line: a full build (on a fresh target dir) prints
    // a short trace, one line per step, not one per event-loop pass.
    let out = Command::new(&nv.path)
        .args(["--headless", "-u"])
        .arg(&init)
        .args(["+Lazy! build sharedserver", "+qa"])
        .envs(env.iter().copied())
        .current_dir(tmp.path())
        .output()
        .expect("run nvim");
    let trace =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "Lazy! build failed:\n{trace}");
    let built = read_event(&events, "built").expect("LazyBuild fired");
    assert_eq!(built["error"], "", "the build task failed:\n{trace}");
    assert!(native.is_file(), "no native.so after Lazy! build:\n{trace}");
    let lines: Vec<&str> = trace.lines().collect();
    assert!(
        lines.len() <= MAX_TRACE_LINES,
        "Lazy! build printed {} lines (at most {MAX_TRACE_LINES}):\n{trace}",
        lines.len()
    );
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for l in &lines {
        *seen.entry(l).or_default() += 1;
    }
    // "Compiling sharedserver" comes once for the module and once for the CLI.
    let (line, most) = seen.iter().max_by_key(|(_, n)| **n).unwrap();
    assert!(*most <= 3, "{line:?} printed {most} times:\n{trace}");
    // :help works for this dir= install.
    let tags = std::fs::read_to_string(tree.join("doc/tags")).expect("doc/tags after the build");
    assert!(tags.contains("sharedserver-build"), "{tags}");

    // 2. In a terminal: a rebuild from the Lazy window, with the plugin's
    // details (its task log) open, costs Neovim itself almost nothing.
    touch_source(&tree);
    std::fs::remove_file(events.join("built")).unwrap();
    let mut command = String::from("env");
    for (k, v) in &env {
        command += &format!(" {k}='{}'", v.display());
    }
    command += &format!(" '{}' -u '{}'", nv.path.display(), init.display());
    let term = Terminal::start(tmp.path().join("tmux.sock"), &command);
    eventually(DEADLINE, "Neovim's VimEnter in tmux", || {
        read_event(&events, "up")
    });
    std::fs::remove_file(events.join("started")).unwrap();
    term.keys(&[":Lazy build sharedserver", "Enter"]);
    eventually(DEADLINE, "LazyBuildPre", || read_event(&events, "started"));
    // The window's buttons, not the command line (which also reads
    // "build sharedserver" as it is typed): keys sent before the window is
    // up would be lost.
    term.wait_screen("the build in the Lazy window", |s| {
        s.contains("Install (I)") && s.contains("sharedserver")
    });
    term.keys(&["/sharedserver", "Enter", "Enter"]);
    term.wait_screen("the plugin's details with the build task", |s| {
        s.contains("[task] build")
    });
    let built = eventually(BUILD_DEADLINE, "the rebuild (LazyBuild)", || {
        read_event(&events, "built")
    });
    assert_eq!(built["error"], "", "the rebuild failed:\n{}", term.screen());
    let wall = built["wall"].as_f64().unwrap();
    let cpu = built["cpu"].as_f64().unwrap();
    let rss_mib = built["maxrss_kib"].as_f64().unwrap() / 1024.0;
    eprintln!("rebuild from the Lazy UI: {wall:.1}s wall, Neovim's own CPU {cpu:.3}s, peak RSS {rss_mib:.0} MiB");
    assert!(
        cpu <= MAX_CPU_SHARE * wall,
        "Neovim used {cpu:.2}s of CPU during a {wall:.1}s rebuild (at most {:.0}%)",
        MAX_CPU_SHARE * 100.0
    );
    assert!(
        rss_mib < MAX_RSS_MIB,
        "Neovim's peak RSS was {rss_mib:.0} MiB"
    );
    term.wait_screen("the finished build in the Lazy window", |s| {
        s.contains("installed")
    });

    // 3. <C-c> in the Lazy window stops build.sh, cargo and rustc, and
    // installs nothing.
    touch_source(&tree);
    let before = std::fs::metadata(&native).unwrap().modified().unwrap();
    std::fs::remove_file(events.join("built")).unwrap();
    term.keys(&[":Lazy build sharedserver", "Enter"]);
    eventually(DEADLINE, "cargo running for the rebuild", || {
        procs_in(&tree)
            .iter()
            .any(|(_, comm)| comm == "cargo" || comm == "rustc")
            .then_some(())
    });
    term.keys(&["C-c"]);
    let built = eventually(DEADLINE, "the aborted build's end (LazyBuild)", || {
        read_event(&events, "built")
    });
    let error = built["error"].as_str().unwrap();
    assert!(error.contains("aborted"), "{error}");
    eventually(DEADLINE, "build.sh, cargo and rustc to exit", || {
        procs_in(&tree).is_empty().then_some(())
    });
    assert_eq!(
        std::fs::metadata(&native).unwrap().modified().unwrap(),
        before,
        "an aborted build installed a module"
    );
}

/// `cmd` as one shell command line (for tmux): its environment, then argv.
fn shell_line(cmd: &Command) -> String {
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
    // env takes its options (-u) before the first assignment.
    let mut words = vec!["env".to_string()];
    let envs: Vec<_> = cmd.get_envs().collect();
    for (key, value) in &envs {
        if value.is_none() {
            words.push(format!("-u {}", key.to_string_lossy()));
        }
    }
    for (key, value) in &envs {
        if let Some(v) = value {
            words.push(format!("{}={}", key.to_string_lossy(), quote(v)));
        }
    }
    words.push(quote(cmd.get_program()));
    words.extend(cmd.get_args().map(quote));
    format!(
        "cd {} && {}",
        quote(cmd.get_current_dir().unwrap().as_os_str()),
        words.join(" ")
    )
}

#[test]
fn the_statusline_is_drawn_again_when_a_server_becomes_ready() {
    tmux_available();
    let sb = Sandbox::new(nvim());
    let flag = sb.path("ready-flag");
    let init = sb.path("init.lua");
    std::fs::write(
        &init,
        format!(
            r#"vim.opt.rtp:prepend({plugin})
require("sharedserver").setup({{ servers = {{ web = {{
  command = "sleep", args = {{ "1000" }}, ready = "cmd:test -e " .. {flag},
}} }} }})
vim.o.laststatus = 2
vim.o.statusline = "[%{{v:lua.require'sharedserver'.statusline()}}]"
"#,
            plugin = lua_str(plugin_dir().to_str().unwrap()),
            flag = lua_str(flag.to_str().unwrap()),
        ),
    )
    .unwrap();
    let cmd = sb.command(&["-u", init.to_str().unwrap(), "-i", "NONE", "-n"]);
    let term = Terminal::start(sb.path("tmux.sock"), &shell_line(&cmd));
    term.wait_screen("the statusline says web is starting", |s| {
        s.contains("[web…]")
    });
    // Nothing is typed from here on: only the plugin can have the
    // statusline drawn again.
    std::fs::write(&flag, "").unwrap();
    term.wait_screen("the statusline says web is active", |s| {
        s.contains("[web●]")
    });
}
