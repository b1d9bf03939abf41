#!/usr/bin/env python3
"""Whole-process benchmarks of sharedserver (doc/PERFORMANCE.md, issue 5).

Run through `bench/run`, which builds the release binary first. Each figure
is a median, compared with a baseline measured in the same run. The lock
directory is a fresh directory on tmpfs (/dev/shm), removed afterwards.

    bench/driver.py [--only 1,4,7] [--quick] [--json FILE]

Row 10 (`--only 10`, not part of the default run) measures the rows the
process backend affects under both backends, alternating run by run:
pidfd (the baseline) and portable (SHAREDSERVER_BACKEND=portable).
Row 13 (`--only 13`, not part of it either) is row 3's floor: the start
with plugins patched to do less and less of the real work.
"""

import argparse
import json
import shlex
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "sharedserver")
LIB = os.path.join(ROOT, "target", "release", "libsharedserver.so")
DEVNULL_ACTIONS = [
    (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
    (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
    (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0),
]
US = 1_000
MS = 1_000_000


def nvim_path():
    """The Neovim for rows 1-3: $SS_BENCH_NVIM (bench/run sets it), else the
    one on $PATH. It must be >= 0.9, which runs a script with `nvim -l`; an
    older one would open the script as a file and wait forever."""
    found = os.environ.get("SS_BENCH_NVIM") or shutil.which("nvim")
    if not found:
        sys.exit("bench: no nvim found: run bench/run, or set SS_BENCH_NVIM to Neovim >= 0.9")
    head = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
    version = re.match(r"NVIM v(\d+)\.(\d+)", head)
    if not version or (int(version[1]), int(version[2])) < (0, 9):
        first = head.splitlines()[0] if head else "no version"
        sys.exit(f"bench: {found} is {first}; the Neovim rows need >= 0.9 "
                 "(`nvim -l`): run bench/run, or set SS_BENCH_NVIM")
    return found


class Bench:
    def __init__(self, quick):
        self.quick = quick
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.tmp = tempfile.mkdtemp(prefix="ss-bench-", dir=base)
        self.lockdir = os.path.join(self.tmp, "lock")
        self.env = dict(os.environ, SHAREDSERVER_LOCKDIR=self.lockdir)
        self.children = []
        self.rows = []

    def n(self, full, quick):
        return quick if self.quick else full

    # --- processes ---------------------------------------------------------

    def spawn(self, argv, env=None, quiet=True):
        """posix_spawn: the cheapest way to start a process from Python."""
        return os.posix_spawnp(
            argv[0], argv, env or self.env, file_actions=DEVNULL_ACTIONS if quiet else []
        )

    def timed(self, argv, env=None, ok=(0,)):
        """Wall time in ns of one process, from spawn to reaped exit."""
        t0 = time.perf_counter_ns()
        pid = self.spawn(argv, env)
        _, status = os.waitpid(pid, 0)
        dt = time.perf_counter_ns() - t0
        code = os.waitstatus_to_exitcode(status)
        if code not in ok:
            raise RuntimeError(f"{argv} exited {code}")
        return dt

    def ss(self, *args, check=True):
        r = subprocess.run([BIN, *args], env=self.env, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"sharedserver {' '.join(args)}: {r.stderr.strip()}")
        return r

    def client(self):
        pid = self.spawn(["sleep", "1000"])
        self.children.append(pid)
        return pid

    def reap(self, pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        if pid in self.children:
            self.children.remove(pid)

    def info(self, name):
        return json.loads(self.ss("info", name, "--json").stdout)

    def start(self, name, holder, grace="1h"):
        self.ss("use", name, "--grace-period", grace, "--pid", str(holder), "--", "sleep", "1000")

    def cleanup(self):
        if os.path.isdir(self.lockdir):
            for f in os.listdir(self.lockdir):
                if f.endswith(".json"):
                    self.ss("admin", "kill", f[: -len(".json")], check=False)
        for pid in list(self.children):
            self.reap(pid)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- reporting ---------------------------------------------------------

    def row(self, num, what, median, baseline, target, met, unit="ns", note="", ratio=True):
        self.rows.append(
            dict(num=num, what=what, median=median, baseline=baseline, target=target,
                 met=met, unit=unit, note=note, ratio=ratio)
        )
        print(f"  [{num}] {what}: {fmt(median, unit)}"
              + (f" (baseline {fmt(baseline, unit)})" if baseline is not None else "")
              + f" -> {'met' if met else 'MISSED'} ({target})", flush=True)

    # --- the benchmarks ----------------------------------------------------

    def backends(self):
        """10: the backend-affected rows, pidfd (baseline) vs portable."""
        envs = {"pidfd": {k: v for k, v in self.env.items() if k != "SHAREDSERVER_BACKEND"}}
        envs["portable"] = dict(envs["pidfd"], SHAREDSERVER_BACKEND="portable")
        got = {b: {"cold": [], "stop": [], "dead": []} for b in envs}
        holder = self.client()

        def ss(env, *args):
            r = subprocess.run([BIN, *args], env=env, capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"sharedserver {' '.join(args)}: {r.stderr.strip()}")
            return r

        for b, env in envs.items():
            ss(env, "use", f"bb-dead-{b}", "--pid", str(holder), "--", "sleep", "1000")
            backend = json.loads(ss(env, "info", f"bb-dead-{b}", "--json").stdout)["backend"]
            assert backend == b, f"asked for {b}, the watcher runs {backend}"
        for i in range(self.n(25, 5)):
            for b, env in envs.items():  # alternate: drift hits both alike
                name = f"bb-cold-{b}-{i}"
                got[b]["cold"].append(self.timed(
                    [BIN, "use", name, "--pid", str(holder), "--", "sleep", "1000"], env))
                got[b]["stop"].append(self.timed([BIN, "admin", "stop", name, "--force"], env))
                record = os.path.join(self.lockdir, f"bb-dead-{b}.json")
                c = self.client()
                ss(env, "use", f"bb-dead-{b}", "--pid", str(c))
                got[b]["dead"].append(kill_until_dropped(c, record))
                self.reap(c)

        def wakeups(name, env, window):
            w = json.loads(ss(env, "info", name, "--json").stdout)["watcher_pid"]

            def ctx():
                st = open(f"/proc/{w}/status").read()
                f = dict(line.split(":", 1) for line in st.splitlines() if ":" in line)
                return int(f["voluntary_ctxt_switches"]) + int(f["nonvoluntary_ctxt_switches"])

            time.sleep(0.5)  # let the last command's wake-up pass
            c0 = ctx()
            time.sleep(window)
            return ctx() - c0

        window = self.n(10, 2)
        idle = {}
        for b, env in envs.items():
            # One client attached (bb-dead) and none (in a 1 h grace).
            ss(env, "use", f"bb-idle-{b}", "--grace-period", "1h", "--pid", str(holder),
               "--", "sleep", "1000")
            ss(env, "unuse", f"bb-idle-{b}", "--pid", str(holder))
            idle[b] = (wakeups(f"bb-idle-{b}", env, window),
                       wakeups(f"bb-dead-{b}", env, window))
            ss(env, "admin", "kill", f"bb-idle-{b}")
            ss(env, "admin", "kill", f"bb-dead-{b}")
        for key, what, target in (("cold", "cold `use` of `sleep 1000`", "≤ 10 ms"),
                                  ("stop", "`admin stop` (server exits on SIGTERM)", "≤ 20 ms"),
                                  ("dead", "dead client: SIGKILL → record rewritten", "≤ 20 ms"
                                   " (pidfd); ≤ 50 ms + tick (portable)")):
            mp = statistics.median(got["portable"][key])
            mb = statistics.median(got["pidfd"][key])
            limit = 60 * MS if key == "dead" else (10 if key == "cold" else 20) * MS
            self.row(10, f"{what}, portable (baseline: pidfd)", mp, mb, target, mp <= limit)
        self.row(10, f"idle watcher, no clients, over {window} s: wake-ups, portable (pidfd: "
                 f"{idle['pidfd'][0]})", idle["portable"][0], None, "0",
                 idle["portable"][0] == 0, unit="count")
        self.row(10, f"idle watcher, one client, over {window} s: wake-ups, portable (pidfd: "
                 f"{idle['pidfd'][1]})", idle["portable"][1], None,
                 f"≤ {int(window * 1000 / 50) + 5} (one per 50 ms)",
                 idle["portable"][1] <= window * 1000 / 50 + 5, unit="count")

    def native(self):
        """1 and 2: status() and incref/decref inside Neovim."""
        nvim = nvim_path()
        holder = self.client()
        self.start("bench-native", holder)
        out = subprocess.run(
            [nvim, "--headless", "--clean", "-l", os.path.join(ROOT, "bench", "native.lua"),
             LIB, BIN, "bench-native"],
            env=self.env, capture_output=True, text=True, check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        s, c = r["status_ns"], r["check_cli_ns"]
        self.row(1, "`native.status(name)` in Neovim, per call", s, c,
                 "≤ 20 µs and ≥ 50× faster", s <= 20 * US and c / s >= 50)
        p, cp = r["pair_ns"], r["cli_pair_ns"]
        self.row(2, "`native.incref` + `native.decref` pair in Neovim", p, cp,
                 "≤ 150 µs per pair", p <= 150 * US)
        self.ss("admin", "kill", "bench-native")

    # `+qa` runs before VimEnter, so the plugin's attach never happens in that
    # literal command. This form quits from a VimEnter autocmd queued after
    # the plugin's: a full attach (10 increfs) and detach.
    QUIT_AT_ENTER = "+autocmd VimEnter * ++once ++nested qa"

    def plugin_tree(self, nvim, name, patches=()):
        """A copy of the plugin as a user's build leaves it (the library as
        native.so, the bytecode build.lua compiles), with `patches` applied:
        (file under lua/sharedserver, old text, new text), each of which must
        apply, so that an experiment on code that has moved fails loudly."""
        plugin = os.path.join(self.tmp, name)
        os.makedirs(plugin)
        shutil.copytree(os.path.join(ROOT, "lua"), os.path.join(plugin, "lua"))
        shutil.copytree(os.path.join(ROOT, "plugin"), os.path.join(plugin, "plugin"))
        shutil.copy(LIB, os.path.join(plugin, "lua", "sharedserver", "native.so"))
        for file, old, new in patches:
            path = os.path.join(plugin, "lua", "sharedserver", file)
            text = open(path).read()
            assert text.count(old) == 1, f"bench: {file} no longer holds {old!r}"
            with open(path, "w") as f:
                f.write(text.replace(old, new))
        subprocess.run([nvim, "--headless", "-i", "NONE", "-u", "NONE", "--cmd", f"set rtp^={plugin}",
                        "-c", "lua assert(select(2, require('sharedserver.compile').compile()) == nil)",
                        "-c", "qa!"], env=self.env, check=True, capture_output=True)
        assert os.path.exists(os.path.join(plugin, "bytecode", "manifest.lua")), "bytecode not compiled"
        return plugin

    def startup_servers(self, plugin):
        """Start row 3's 10 servers (held by one client, so that Neovim
        joins them) and return the environment of its Neovim starts."""
        holder = self.client()
        for i in range(1, 11):
            self.start(f"bench-start-{i}", holder)
        xdg = os.path.join(self.tmp, "xdg")
        return dict(self.env, SS_BENCH_ROOT=plugin, SS_BENCH_BIN=BIN, SS_BENCH_SERVERS="10",
                    XDG_CONFIG_HOME=xdg + "/config", XDG_DATA_HOME=xdg + "/data",
                    XDG_STATE_HOME=xdg + "/state", XDG_CACHE_HOME=xdg + "/cache")

    def stop_startup_servers(self):
        for i in range(1, 11):
            self.ss("admin", "kill", f"bench-start-{i}")

    def paired(self, a_cmd, b_cmd, env, n):
        """A against B, run by run (A B A B ...), the ratio taken pair by
        pair: farm-bench --vs when it is installed, else the same pairing
        here. Returns the medians of A and B (ns), the wall ratio, and how
        it was measured."""
        farm = shutil.which("farm-bench")
        if farm:
            out = subprocess.run(
                [farm, "-n", str(n), "--timeout", "600", "--vs", " ".join(shlex.quote(w) for w in b_cmd),
                 "--", *a_cmd],
                env=env, capture_output=True, text=True, check=True).stdout
            med = {m.group(1): float(m.group(2)) for m in re.finditer(
                r"^(A wall s|B wall s|A/B wall|A/B cpu)\s+\S+\s+(\S+)", out, re.M)}
            return (med["A wall s"] * 1e9, med["B wall s"] * 1e9, med["A/B wall"],
                    f"farm-bench --vs, {n} pairs; cpu {med['A/B cpu']:.2f}×")
        pairs = []
        for _ in range(n):
            pairs.append((self.timed(a_cmd, env), self.timed(b_cmd, env)))
        ma = statistics.median(a for a, _ in pairs)
        mb = statistics.median(b for _, b in pairs)
        return ma, mb, statistics.median(a / b for a, b in pairs), f"{n} pairs"

    def startup(self):
        """3: Neovim startup with the plugin and 10 running servers."""
        nvim = nvim_path()
        plugin = self.plugin_tree(nvim, "plugin-root")
        env = self.startup_servers(plugin)
        with_plugin = os.path.join(ROOT, "bench", "startup_plugin.lua")
        without = os.path.join(ROOT, "bench", "startup_base.lua")

        def argv(init):
            return [nvim, "--headless", "-i", "NONE", "-u", init, self.QUIT_AT_ENTER]

        # Prove the plugin attaches in the full form (refcount 2 = holder + us).
        probe = os.path.join(self.tmp, "probe.json")
        self.timed(argv(with_plugin), dict(env, SS_BENCH_PROBE=probe))
        seen = json.load(open(probe))
        counts = seen["refcounts"]
        assert len(counts) == 10 and all(v == 2 for v in counts.values()), counts
        assert seen["bytecode"] > 0, "no module loaded from bytecode"
        for i in range(1, 11):
            assert self.info(f"bench-start-{i}")["refcount"] == 1, "Neovim detached on exit"
        ma, mb, ratio, how = self.paired(argv(with_plugin), argv(without), env, self.n(40, 8))
        self.row(3, "Neovim startup quitting from `VimEnter`, plugin attaching to 10 running "
                 "servers and detaching them", ma, mb, "≤ 1.15× (paired)", ratio <= 1.15,
                 ratio=False, note=f"paired median ratio {ratio:.2f}× ({how})")
        self.startup_phases(argv(with_plugin), argv(without), env)
        self.stop_startup_servers()

    def startup_floor(self):
        """13 (only when named): row 3's floor. The same start with plugins
        that do less and less of the real work (text patches of a copy of
        the Lua code), each paired against the start without the plugin:
        what the plugin costs before its first record operation."""
        nvim = nvim_path()
        enter = 'local answers, err = n.try("enter", items)'
        leave = 'pcall(require("sharedserver.native").leave, names)'
        no_prepare = ("start.lua", 'require("sharedserver.native").try("prepare", items)', "return")
        poke = ('for _, x in ipairs({LIST}) do local f = io.open(os.getenv("SHAREDSERVER_LOCKDIR") '
                '.. "/" .. (x.name or x) .. ".wake", "w"); f:write("!"); f:close() end')
        variants = [
            ("the Lua loaded, setup() with no servers (the library not opened)", "load", []),
            ("setup() with the 10 servers (library opened, options checked), VimEnter "
             "building its batch; no native join, detach or answer", "setup",
             [no_prepare, ("start.lua", enter, "local answers, err = {}, nil"),
              ("autocmds.lua", leave, "")]),
            ("the same, and one poke of each server's watcher at VimEnter and at VimLeave "
             "(no record written)", "pokes",
             [no_prepare, ("start.lua", enter, poke.replace("{LIST}", "items") + " local answers, err = {}, nil"),
              ("autocmds.lua", leave, poke.replace("{LIST}", "names"))]),
            ("the same, and each server's status read and handled as a join answer", "answers",
             [no_prepare,
              ("start.lua", enter, poke.replace("{LIST}", "items") + " local answers, err = {}, nil "
               'for _, it in ipairs(items) do answers[#answers + 1] = { name = it.name, '
               'outcome = "joined", status = n.status(it.name) } end'),
              ("autocmds.lua", leave, poke.replace("{LIST}", "names"))]),
            ("the plugin as it is", "real", []),
        ]
        without = [nvim, "--headless", "-i", "NONE", "-u", os.path.join(ROOT, "bench", "startup_base.lua"),
                   self.QUIT_AT_ENTER]
        plugin_init = os.path.join(ROOT, "bench", "startup_plugin.lua")
        load_init = os.path.join(self.tmp, "startup_load.lua")
        with open(load_init, "w") as f:
            f.write('vim.opt.runtimepath:prepend(os.getenv("SS_BENCH_ROOT"))\n'
                    'require("sharedserver").setup({ binary = os.getenv("SS_BENCH_BIN"), servers = {} })\n')
        env = None
        print("  [13] row 3's floor: each start paired against the start without the plugin")
        for label, name, patches in variants:
            plugin = self.plugin_tree(nvim, f"plugin-{name}", patches)
            if env is None:
                env = self.startup_servers(plugin)
            init = load_init if name == "load" else plugin_init
            cmd, venv = [nvim, "--headless", "-i", "NONE", "-u", init, self.QUIT_AT_ENTER], dict(env, SS_BENCH_ROOT=plugin)
            # A patch that broke the plugin would show as an error, not a ratio.
            once = subprocess.run(cmd, env=venv, capture_output=True, text=True)
            assert once.returncode == 0 and not (once.stdout + once.stderr).strip(), (name, once.stderr)
            _, _, ratio, how = self.paired(cmd, without, venv, self.n(100, 8))
            print(f"      {ratio:.2f}×  {label} ({how})", flush=True)
        self.stop_startup_servers()

    def startup_phases(self, a_cmd, b_cmd, env):
        """Where row 3's difference goes: the same two starts, in turn, with
        the clock read at each phase (bench/marks.lua) and around the
        process; medians of each phase and of its difference, pair by pair."""
        out = os.path.join(self.tmp, "marks.json")
        env = dict(env, SS_BENCH_MARKS=out)
        spans = [("exec to init", None, "init"), ("init (require, setup)", "init", "init_end"),
                 ("init end to VimEnter", "init_end", "enter"), ("VimEnter handlers", "enter", "enter_end"),
                 ("VimEnter end to VimLeave", "enter_end", "leave"), ("VimLeave handlers", "leave", "leave_end"),
                 ("VimLeave end to exit", "leave_end", None), ("whole process", None, None)]

        def run(cmd):
            t0 = time.monotonic_ns()
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            t1 = time.monotonic_ns()
            t = json.load(open(out))
            t[None] = None
            return [(t[b] if b else t1) - (t[a] if a else t0) for _, a, b in spans]

        pairs = [(run(a_cmd), run(b_cmd)) for _ in range(self.n(40, 8))]
        print("  [3] where the difference goes (median per phase, ms): phase | plugin | without | difference")
        for i, (label, _, _) in enumerate(spans):
            a = statistics.median(p[0][i] for p in pairs) / MS
            b = statistics.median(p[1][i] for p in pairs) / MS
            d = statistics.median(p[0][i] - p[1][i] for p in pairs) / MS
            print(f"      {label:26s} {a:7.2f} {b:7.2f} {d:+7.2f}", flush=True)

    def enter_starts(self):
        """12: `native.enter` starting 3 servers that do not run, against one."""
        nvim = nvim_path()
        out = subprocess.run(
            [nvim, "--headless", "--clean", "-l", os.path.join(ROOT, "bench", "enter.lua"),
             LIB, BIN, "3", str(self.n(15, 3))],
            env=self.env, capture_output=True, text=True, check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        many, one = r["many_ns"], r["one_ns"]
        self.row(12, "`native.enter` in Neovim starting 3 servers that do not run (baseline: "
                 "starting one)", many, one, "≤ 2× one (the starts overlap)", many <= 2 * one)

    def attach(self):
        """4: `use` attaching to a running server, against /bin/true."""
        holder = self.client()
        self.start("bench-attach", holder)
        me = str(os.getpid())
        argv = [BIN, "use", "bench-attach", "--pid", me, "--", "sleep", "1000"]
        a, b = [], []
        for _ in range(self.n(300, 40)):
            a.append(self.timed(argv))
            b.append(self.timed(["/bin/true"]))
        ma, mb = statistics.median(a), statistics.median(b)
        self.row(4, "CLI `use` attaching to a running server", ma, mb, "≤ 2× /bin/true",
                 ma <= 2 * mb)
        # Where the time goes: the binary's fixed cost, and a lock-free read.
        floor = statistics.median(self.timed([BIN, "--version"]) for _ in range(self.n(100, 20)))
        check = statistics.median(
            self.timed([BIN, "check", "bench-attach"]) for _ in range(self.n(100, 20)))
        print(f"      (for comparison: `sharedserver --version` {fmt(floor)}, "
              f"`check` {fmt(check)})")
        self.ss("admin", "kill", "bench-attach")

    def project(self):
        """11: `use --all` joining a project's 5 running servers, against one
        `use NAME` joining one of them (issue 15: <= 2x). Both read the
        project file; the driver runs them, alternating, from its directory."""
        proj = os.path.join(self.tmp, "project")
        os.makedirs(proj)
        names = [f"bench-all-{i}" for i in range(1, 6)]
        with open(os.path.join(proj, ".sharedserver.json"), "w") as f:
            json.dump({"servers": {n: {"command": "sleep", "args": ["1000"],
                                       "grace_period": "1h"} for n in names}}, f)
        holder = self.client()
        here = os.getcwd()
        os.chdir(proj)
        try:
            self.ss("use", "--all", "--pid", str(holder))
            me = str(os.getpid())
            a, b = [], []
            for _ in range(self.n(200, 30)):
                a.append(self.timed([BIN, "use", "--all", "--pid", me]))
                b.append(self.timed([BIN, "use", names[0], "--pid", me]))
            assert all(self.info(n)["refcount"] == 2 for n in names)
        finally:
            os.chdir(here)
        ma, mb = statistics.median(a), statistics.median(b)
        self.row(11, "CLI `use --all` joining a project's 5 running servers (baseline: `use NAME`, one)",
                 ma, mb, "≤ 2× one `use`", ma <= 2 * mb)
        for n in names:
            self.ss("admin", "kill", n)

    def cold(self):
        """5: cold `use` of `sleep 1000`, against spawning sleep directly."""
        holder = self.client()
        a, b = [], []
        for i in range(self.n(25, 5)):
            name = f"bench-cold-{i}"
            a.append(self.timed([BIN, "use", name, "--pid", str(holder), "--", "sleep", "1000"]))
            self.ss("admin", "kill", name)
            t0 = time.perf_counter_ns()
            pid = self.spawn(["sleep", "1000"])
            b.append(time.perf_counter_ns() - t0)
            self.reap(pid)
        ma, mb = statistics.median(a), statistics.median(b)
        self.row(5, "cold `use` of `sleep 1000`", ma, mb, "≤ 10 ms", ma <= 10 * MS,
                 note="default start-up check: until idle, at most 50 ms")
        # Where the rest goes: the same without the startup check, if the
        # binary has the option.
        if "--startup-check" in self.ss("use", "--help").stdout:
            a = []
            for i in range(self.n(25, 5)):
                name = f"bench-cold0-{i}"
                a.append(self.timed([BIN, "use", name, "--startup-check", "0s", "--pid",
                                     str(holder), "--", "sleep", "1000"]))
                self.ss("admin", "kill", name)
            m0 = statistics.median(a)
            self.row(5, "cold `use` of `sleep 1000`", m0, mb, "≤ 10 ms", m0 <= 10 * MS,
                     note="`--startup-check 0s`")

    def stop(self):
        """6: `admin stop` of a server that exits on SIGTERM."""
        holder = self.client()
        a = []
        for i in range(self.n(25, 5)):
            name = f"bench-stop-{i}"
            self.start(name, holder)
            a.append(self.timed([BIN, "admin", "stop", name, "--force"]))
            assert self.ss("check", name, check=False).returncode == 2
        ma = statistics.median(a)
        self.row(6, "`admin stop` (server exits on SIGTERM)", ma, None, "≤ 20 ms", ma <= 20 * MS)

    def dead_client(self):
        """7: SIGKILL a client; time until the record on disk drops it."""
        holder = self.client()
        self.start("bench-dead", holder)
        record = os.path.join(self.lockdir, "bench-dead.json")
        a = []
        for _ in range(self.n(50, 10)):
            c = self.client()
            self.ss("use", "bench-dead", "--pid", str(c))
            assert any(x["pid"] == c for x in json.load(open(record))["clients"])
            a.append(kill_until_dropped(c, record))
            self.reap(c)
        ma = statistics.median(a)
        self.row(7, "dead-client detection (SIGKILL → record rewritten)", ma, None, "≤ 20 ms",
                 ma <= 20 * MS)
        self.ss("admin", "kill", "bench-dead")

    def idle(self):
        """8: an idle watcher over 10 s: wake-ups, writes, RSS."""
        holder = self.client()
        self.start("bench-idle", holder)
        w = self.info("bench-idle")["watcher_pid"]

        def sample():
            st = open(f"/proc/{w}/status").read()
            fields = dict(line.split(":", 1) for line in st.splitlines() if ":" in line)
            io = dict(line.split(": ") for line in open(f"/proc/{w}/io").read().splitlines())
            ctx = int(fields["voluntary_ctxt_switches"]) + int(fields["nonvoluntary_ctxt_switches"])
            rss = int(fields["VmRSS"].split()[0])
            return ctx, int(io["syscw"]), int(io["write_bytes"]), rss

        time.sleep(0.5)  # let the start settle; this is a benchmark, not a test
        c0, w0, b0, _ = sample()
        time.sleep(self.n(10, 2))
        c1, w1, b1, rss = sample()
        wake, writes = c1 - c0, (w1 - w0) + (b1 - b0)
        self.row(8, f"idle watcher over {self.n(10, 2)} s: wake-ups", wake, None, "0", wake == 0,
                 unit="count")
        self.row(8, "idle watcher: write syscalls + bytes written", writes, None, "0",
                 writes == 0, unit="count")
        self.row(8, "idle watcher: RSS", rss * 1024, None, "≤ 3 MiB", rss <= 3 * 1024,
                 unit="bytes")
        self.ss("admin", "kill", "bench-idle")

    def many(self):
        """9: `list --json` with 200 servers; `info` with 1000 clients."""
        holder = self.client()
        servers = self.n(200, 20)
        for i in range(servers):
            self.start(f"bench-list-{i}", holder)
        a, b = [], []
        for _ in range(self.n(30, 5)):
            a.append(self.timed([BIN, "list", "--json"]))
            b.append(self.timed(["/bin/true"]))
        listed = json.loads(self.ss("list", "--json").stdout)
        assert len(listed) == servers, len(listed)
        ma, mb = statistics.median(a), statistics.median(b)
        self.row(9, f"`list --json` with {servers} servers", ma, mb, "≤ 20 ms", ma <= 20 * MS)
        for i in range(servers):
            self.ss("admin", "kill", f"bench-list-{i}")

        clients = self.n(1000, 100)
        self.start("bench-info", holder)
        for _ in range(clients - 1):
            self.ss("use", "bench-info", "--pid", str(self.client()))
        assert self.info("bench-info")["refcount"] == clients
        a, b = [], []
        for _ in range(self.n(30, 5)):
            a.append(self.timed([BIN, "info", "bench-info", "--json"]))
            b.append(self.timed(["/bin/true"]))
        ma, mb = statistics.median(a), statistics.median(b)
        self.row(9, f"`info --json` with {clients} clients", ma, mb, "≤ 20 ms", ma <= 20 * MS)
        w = self.info("bench-info")["watcher_pid"]
        fds = len(os.listdir(f"/proc/{w}/fd"))
        print(f"      (the watcher holds {fds} descriptors for {clients} clients)")
        self.ss("admin", "kill", "bench-info")
        for pid in list(self.children):
            if pid != holder:
                self.reap(pid)


def kill_until_dropped(pid, record):
    """SIGKILL client `pid`; ns until the record on disk no longer lists it."""
    t0 = time.perf_counter_ns()
    os.kill(pid, signal.SIGKILL)
    while True:
        try:
            with open(record) as f:
                rec = json.load(f)
        except (OSError, ValueError):
            continue
        if not any(x["pid"] == pid for x in rec["clients"]):
            return time.perf_counter_ns() - t0


def linkage(path):
    """'static' or 'dynamic': whether the ELF file asks for an interpreter."""
    import struct
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return "unknown"
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    types = (struct.unpack_from("<I", table, i * phentsize)[0] for i in range(phnum))
    return "dynamic" if 3 in types else "static"  # 3: PT_INTERP


def fmt(v, unit="ns"):
    if v is None:
        return "—"
    if unit == "count":
        return str(int(v))
    if unit == "bytes":
        return f"{v / 1024 / 1024:.2f} MiB"
    if v >= MS:
        return f"{v / MS:.2f} ms"
    return f"{v / US:.1f} µs"


def table(rows):
    out = ["| # | what | median | baseline | ratio | target | met? |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = ""
        if r["baseline"] and r["ratio"] and r["unit"] == "ns" and r["median"] > 0:
            q = r["baseline"] / r["median"]
            ratio = f"{q:.0f}× faster" if q >= 1.5 else f"{r['median'] / r['baseline']:.2f}×"
        what = r["what"] + (f" ({r['note']})" if r["note"] else "")
        out.append(f"| {r['num']} | {what} | {fmt(r['median'], r['unit'])} | "
                   f"{fmt(r['baseline'], r['unit'])} | {ratio} | {r['target']} | "
                   f"{'yes' if r['met'] else '**no**'} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", help="comma-separated benchmark numbers (1-13; 10 and 13 only if named)")
    ap.add_argument("--quick", action="store_true", help="few iterations: a smoke test")
    ap.add_argument("--json", help="also write the rows as JSON to this file")
    args = ap.parse_args()
    for f in (BIN, LIB):
        if not os.path.exists(f):
            sys.exit(f"bench: {f} is missing; run ./build.sh (bench/run does)")
    only = set(int(x) for x in args.only.split(",")) if args.only else set(range(1, 10)) | {11, 12}
    b = Bench(args.quick)
    steps = [((1, 2), b.native), ((3,), b.startup), ((4,), b.attach), ((5,), b.cold),
             ((6,), b.stop), ((7,), b.dead_client), ((8,), b.idle), ((9,), b.many),
             ((10,), b.backends), ((11,), b.project), ((12,), b.enter_starts), ((13,), b.startup_floor)]
    print(f"bench: lock dir {b.lockdir}; {os.cpu_count()} CPUs; binary {BIN} ({linkage(BIN)}); "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    try:
        for nums, fn in steps:
            if only & set(nums):
                fn()
    finally:
        b.cleanup()
    print(f"\nbench: load average at the end {os.getloadavg()[0]:.2f} "
          "(other work on the machine inflates every figure)\n")
    print(table(b.rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(b.rows, f, indent=2)
    missed = [r for r in b.rows if not r["met"]]
    print(f"\n{len(b.rows) - len(missed)} of {len(b.rows)} targets met.")


if __name__ == "__main__":
    main()
