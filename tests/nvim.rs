//! The Neovim face, tested for real: headless Neovims (every version in
//! $SHAREDSERVER_TEST_NVIM) load the plugin and the native module built by
//! this cargo invocation, and share real server processes through a private
//! lock directory per test.

mod common;

use common::nvim::{clean_tree, lua_str, nvims, plugin_dir, NvimBin, Sandbox, DEADLINE};
use common::{
    alive, assert_success, client_pids, eventually, read, signal, Gate, Sleeper, BIN, REPO,
};
use nix::sys::signal::Signal;
use serde_json::json;
use sharedserver::State;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A setup() call for servers given as Lua table fields, with every
/// notification on so tests can see what happened.
fn setup(servers: &str) -> String {
    format!(
        "require('sharedserver').setup({{ servers = {{ {servers} }}, \
         notify = {{ on_start = true, on_attach = true, on_stop = true, on_error = true }} }})"
    )
}

const WEB: &str = r#"web = { command = "sleep", args = { "1000" }, idle_timeout = "30s" }"#;
const WEB_LAZY: &str =
    r#"web = { command = "sleep", args = { "1000" }, idle_timeout = "30s", lazy = true }"#;

fn sorted(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v
}

/// `sleep 1000` started as `name` through the CLI, held by another process
/// (returned), with the options of [`WEB`].
fn running_elsewhere(sb: &Sandbox, name: &str) -> Sleeper {
    running_elsewhere_as(sb, name, &["--grace-period", "30s", "--", "sleep", "1000"])
}

/// [`running_elsewhere`] with these `use` options and command.
fn running_elsewhere_as(sb: &Sandbox, name: &str, args: &[&str]) -> Sleeper {
    let holder = Sleeper::new();
    let out = Command::new(BIN)
        .args(["use", name, "--pid", &holder.pid().to_string()])
        .args(args)
        .env("SHAREDSERVER_LOCKDIR", &sb.lockdir)
        .output()
        .unwrap();
    assert_success(&out);
    holder
}

/// The client pids in `name`'s record as written, sorted: unlike a status,
/// which leaves out the clients that are gone.
fn recorded_clients(sb: &Sandbox, name: &str) -> Vec<u32> {
    let text = read(&sb.lockdir.join(format!("{name}.json")));
    sorted(client_pids(&serde_json::from_str(&text).unwrap()))
}

/// SIGSTOP `name`'s watcher while it does not hold the name's lock (stopped
/// holding it, it would keep everyone else out).
fn stop_idle(sb: &Sandbox, name: &str, watcher: u32) {
    use std::os::fd::AsRawFd;
    let lock = std::fs::File::open(sb.lockdir.join(format!("{name}.lock"))).unwrap();
    eventually(
        DEADLINE,
        "the watcher stopped while its lock is free",
        || {
            signal(watcher, Signal::SIGSTOP);
            // A signal is delivered, not obeyed at once: until the watcher
            // is seen stopped (state T), it may still take the lock.
            let stopped = || {
                read(Path::new(&format!("/proc/{watcher}/stat")))
                    .rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
            };
            eventually(DEADLINE, "the watcher is stopped", stopped);
            // SAFETY: flock on a descriptor this frame owns.
            let free = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
            if free {
                // SAFETY: as above.
                unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_UN) };
                return Some(());
            }
            signal(watcher, Signal::SIGCONT);
            None
        },
    );
}

/// Init-file Lua that waits (15 s at most) until `name`'s record counts
/// `refs` clients, and stores whether it did in `vim.g.ahead`: setup()
/// joins running servers on a thread, before VimEnter. It reads the record
/// file itself: a status() call could take the lock (to restore a lost
/// watcher) and race the thread it watches.
fn wait_joined_ahead(name: &str, refs: usize) -> String {
    // 15 s: a loaded machine (the whole suite on 2 cores) needed more than
    // 5; it must stay under the harness's deadline for the Neovim to answer.
    format!(
        "vim.g.ahead = vim.wait(15000, function() \
         local f = io.open(os.getenv('SHAREDSERVER_LOCKDIR') .. '/{name}.json') \
         if not f then return false end \
         local ok, rec = pcall(vim.fn.json_decode, f:read('*a')) f:close() \
         return ok and #rec.clients == {refs} end, 1)"
    )
}

/// Run `f` once per Neovim under test, each with a fresh sandbox.
fn each_nvim(f: impl Fn(&Sandbox)) {
    for nv in nvims() {
        eprintln!("-- {}", nv.label());
        f(&Sandbox::new(nv));
    }
}

#[test]
fn a_lock_dir_removed_while_neovim_runs_is_recreated_safely_on_the_next_call() {
    use std::os::unix::fs::PermissionsExt;
    each_nvim(|sb| {
        let mut nv = sb.nvim(&setup(WEB_LAZY));
        // The module has checked (and cached) the directory by now.
        nv.lua("return require('sharedserver').status('web').state");
        // A tmp cleaner, or a logout that empties $XDG_RUNTIME_DIR.
        std::fs::remove_dir_all(&sb.lockdir).unwrap();
        nv.lua("require('sharedserver').start('web') return true");
        let record = sb.lockdir.join("web.json");
        eventually(
            DEADLINE,
            "the server starts in a recreated lock dir",
            || record.exists().then_some(()),
        );
        let mode = std::fs::metadata(&sb.lockdir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(sb.status("web").refcount, 1);
    });
}

#[test]
fn two_instances_share_one_server() {
    each_nvim(|sb| {
        let mut a = sb.nvim(&setup(WEB));
        let mut b = sb.nvim(&setup(WEB));
        let clients = eventually(DEADLINE, "both Neovims attached", || {
            let c = sb.clients("web");
            (c.len() == 2).then_some(c)
        });
        assert_eq!(clients, sorted(vec![a.pid(), b.pid()]));
        let st = sb.status("web");
        assert_eq!(st.state, State::Active);
        assert_eq!(st.refcount, 2);
        let pid = st.pid.unwrap();
        for n in [&mut a, &mut b] {
            let seen = n.lua(
                "local s = require('sharedserver').status('web') \
                 return { pid = s.pid, refcount = s.refcount, attached = s.attached, running = s.running }",
            );
            assert_eq!(
                seen,
                json!({ "pid": pid, "refcount": 2, "attached": true, "running": true })
            );
        }
        // The first started it, the second only joined.
        assert!(a.notes().iter().any(|m| m.contains("started 'web'")));
        let b_notes = b.notes();
        assert!(
            !b_notes.iter().any(|m| m.contains("started")),
            "{b_notes:?}"
        );
        assert!(b_notes.iter().any(|m| m.contains("attached to 'web'")));
    });
}

#[test]
fn setup_joins_a_running_server_before_vimenter_and_vimenter_reports_that_join() {
    each_nvim(|sb| {
        let holder = running_elsewhere(sb, "web");
        let mut nv = sb.nvim(&format!("{}\n{}", setup(WEB), wait_joined_ahead("web", 2)));
        assert_eq!(nv.lua("return vim.g.ahead"), json!(true), "{}", nv.output());
        assert_eq!(sb.clients("web"), sorted(vec![holder.pid(), nv.pid()]));
        let seen = nv.lua(
            "local s = require('sharedserver').status('web') \
             return { attached = s.attached, refcount = s.refcount }",
        );
        assert_eq!(seen, json!({ "attached": true, "refcount": 2 }));
        let notes = nv.notes();
        assert!(
            notes.iter().any(|m| m.contains("attached to 'web'")),
            "{notes:?}"
        );
        assert!(!notes.iter().any(|m| m.contains("started")), "{notes:?}");
    });
}

#[test]
fn a_server_whose_watcher_was_killed_is_supervised_again_by_the_join_ahead() {
    each_nvim(|sb| {
        let holder = running_elsewhere(sb, "web");
        let st = sb.status("web");
        let (server, watcher) = (st.pid.unwrap(), st.watcher_pid.unwrap());
        signal(watcher, Signal::SIGKILL);
        eventually(DEADLINE, "the watcher gone", || {
            (!alive(watcher)).then_some(())
        });
        assert!(alive(server), "the server outlives its watcher");
        // The join thread finds the watcher gone and starts a new one
        // (the deepest path a join takes) before VimEnter.
        let mut nv = sb.nvim(&format!("{}\n{}", setup(WEB), wait_joined_ahead("web", 2)));
        let journal = std::fs::read_to_string(sb.lockdir.join("web.journal")).unwrap_or_default();
        assert_eq!(
            nv.lua("return vim.g.ahead"),
            json!(true),
            "{}\n{journal}",
            nv.output()
        );
        let st = sb.status("web");
        assert_eq!(st.pid, Some(server), "the same server, not a second one");
        let new_watcher = st.watcher_pid.unwrap();
        assert!(new_watcher != watcher && alive(new_watcher));
        assert_eq!(sb.clients("web"), sorted(vec![holder.pid(), nv.pid()]));
        // The new watcher supervises: this Neovim's exit is seen.
        let me = nv.pid();
        nv.kill9();
        eventually(
            DEADLINE,
            "the new watcher to drop the killed Neovim",
            || (!recorded_clients(sb, "web").contains(&me)).then_some(()),
        );
    });
}

#[test]
fn a_library_older_than_the_lua_code_is_named_not_a_nil_call() {
    each_nvim(|sb| {
        // A library built before `prepare` existed, with the same version
        // number (a `git pull` without a rebuild): setup() still works, and
        // VimEnter starts the server.
        let mut nv = sb.nvim(&format!(
            "require('sharedserver.loader').load().prepare = nil\n{}",
            setup(WEB)
        ));
        nv.wait_for(
            "the server started at VimEnter",
            "require('sharedserver').status('web').attached",
        );
        let answer = nv.lua(
            "local v, err = require('sharedserver.native').try('prepare', {}) \
             return { v = v, err = err }",
        );
        let err = answer["err"].as_str().unwrap_or_default();
        assert!(answer["v"].is_null(), "{answer}");
        assert!(
            err.contains("has no prepare()") && err.contains("rebuild it"),
            "{err}"
        );
    });
}

#[test]
fn neovim_quitting_before_vimenter_drops_what_setup_joined_ahead() {
    each_nvim(|sb| {
        let holder = running_elsewhere(sb, "web");
        // The watcher drops a client that exits, too: stopped, it cannot, so
        // only this Neovim's own VimLeave can give the reference back.
        let watcher = sb.status("web").watcher_pid.unwrap();
        stop_idle(sb, "web", watcher);
        let marks = sb.path("marks");
        let init = sb.path("quick.lua");
        std::fs::write(
            &init,
            format!(
                "vim.opt.rtp:prepend({plugin:?})\n{setup}\n{wait}\n\
                 local f = io.open({marks:?}, 'a') f:write(tostring(vim.g.ahead), ' ') f:close()\n\
                 vim.api.nvim_create_autocmd('VimEnter', {{ callback = function() \
                 local f = io.open({marks:?}, 'a') f:write('entered') f:close() end }})",
                plugin = plugin_dir().to_string_lossy(),
                setup = setup(WEB),
                wait = wait_joined_ahead("web", 2),
            ),
        )
        .unwrap();
        // `+qa` runs before VimEnter: the plugin never enters.
        let out = sb.headless(&init, &["+qa"]).output().unwrap();
        let clients = recorded_clients(sb, "web");
        signal(watcher, Signal::SIGCONT);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(std::fs::read_to_string(&marks).unwrap(), "true ");
        assert_eq!(clients, vec![holder.pid()]);
    });
}

#[test]
fn a_server_stopped_between_setup_and_vimenter_is_started_again_not_reported_joined() {
    each_nvim(|sb| {
        let _holder = running_elsewhere(sb, "web");
        let old = sb.status("web").pid.unwrap();
        let mut nv = sb.nvim(&format!(
            "{}\n{}\nrequire('sharedserver').stop('web', {{ force = true }})",
            setup(WEB),
            wait_joined_ahead("web", 2)
        ));
        assert_eq!(nv.lua("return vim.g.ahead"), json!(true), "{}", nv.output());
        // VimEnter made its own join (the one made ahead was out of date):
        // the server was stopping or gone, so it starts a new one.
        let st = eventually(DEADLINE, "a new server, with this Neovim attached", || {
            let st = sb.status("web");
            (st.state == State::Active && st.pid != Some(old)).then_some(st)
        });
        assert_eq!(
            st.clients.iter().map(|c| c.pid).collect::<Vec<_>>(),
            vec![nv.pid()]
        );
        nv.wait_for(
            "the plugin to see the new server",
            &format!("require('sharedserver').status('web').attached and require('sharedserver.state').servers.web.pid == {}", st.pid.unwrap()),
        );
        let notes = nv.notes();
        assert!(
            notes.iter().any(|m| m.contains("started 'web'")),
            "{notes:?}"
        );
    });
}

#[test]
fn quitting_one_leaves_one_reference_and_quitting_both_runs_the_grace_period_then_stops() {
    each_nvim(|sb| {
        let init = setup(r#"web = { command = "sleep", args = { "1000" }, idle_timeout = "2s" }"#);
        let a = sb.nvim(&init);
        let b = sb.nvim(&init);
        eventually(DEADLINE, "refcount 2", || {
            (sb.status("web").refcount == 2).then_some(())
        });
        let pid = sb.status("web").pid.unwrap();
        let b_pid = b.pid();

        let a_pid = a.pid();
        assert!(a.quit().success());
        // VimLeave detached in-process, before Neovim exited.
        let st = sb.status("web");
        assert_eq!(sb.clients("web"), vec![b_pid]);
        assert_eq!((st.state, st.refcount), (State::Active, 1));
        // The watcher journals the detach itself, after the burst of pokes
        // settles: poll for it rather than read once.
        eventually(DEADLINE, "the watcher to journal the detach", || {
            std::fs::read_to_string(sb.lockdir.join("web.journal"))
                .ok()
                .filter(|j| j.contains(&format!("client {a_pid} detached")))
        });

        assert!(b.quit().success());
        let st = sb.status("web");
        assert_eq!((st.state, st.refcount), (State::Grace, 0));
        assert!(alive(pid), "the server must survive its grace period");
        let graced = std::time::Instant::now();

        let st = eventually(DEADLINE, "the grace period to end the server", || {
            let st = sb.status("web");
            (st.state == State::Stopped).then_some(st)
        });
        assert!(graced.elapsed() >= std::time::Duration::from_millis(1500));
        assert_eq!(st.last_exit.unwrap().reason, "grace period expired");
        eventually(DEADLINE, "the server process to be gone", || {
            (!alive(pid)).then_some(())
        });
    });
}

#[test]
fn lazy_server_is_never_started_at_startup_but_joined_when_running_even_in_grace() {
    each_nvim(|sb| {
        let mut idle = sb.nvim(&setup(WEB_LAZY));
        assert_eq!(sb.status("web").state, State::Stopped);
        assert_eq!(
            idle.lua("return require('sharedserver').status('web').attached"),
            json!(false)
        );

        let eager = sb.nvim(&setup(WEB));
        eventually(DEADLINE, "the eager Neovim started it", || {
            (sb.clients("web") == vec![eager.pid()]).then_some(())
        });
        let joiner = sb.nvim(&setup(WEB_LAZY));
        eventually(DEADLINE, "the lazy Neovim joined", || {
            (sb.clients("web") == sorted(vec![eager.pid(), joiner.pid()])).then_some(())
        });

        assert!(eager.quit().success());
        assert!(joiner.quit().success());
        assert_eq!(sb.status("web").state, State::Grace);
        let late = sb.nvim(&setup(WEB_LAZY));
        eventually(DEADLINE, "a lazy Neovim joined during grace", || {
            (sb.clients("web") == vec![late.pid()]).then_some(())
        });
        assert_eq!(sb.status("web").state, State::Active);

        // The first lazy instance joins only when asked.
        idle.cmd("ServerStart web");
        assert_eq!(sb.clients("web"), sorted(vec![idle.pid(), late.pid()]));
    });
}

#[test]
fn attaching_to_a_running_server_spawns_no_process() {
    each_nvim(|sb| {
        let mut first = sb.nvim(&setup(WEB));
        eventually(DEADLINE, "started", || {
            (sb.status("web").refcount == 1).then_some(())
        });
        let before = sb.status("web");

        let mut second = sb.nvim(&setup(WEB));
        eventually(DEADLINE, "second attached", || {
            (sb.status("web").refcount == 2).then_some(())
        });
        // Everything a user does with a running server stays in-process.
        second.lua(
            "local ss = require('sharedserver') \
             ss.status('web') ss.status_all() ss.list()",
        );
        second.cmd("ServerStatus");
        second.cmd("ServerStatus web");
        second.cmd("ServerList");
        second.cmd("ServerStop web");
        second.cmd("ServerStart web");
        assert_eq!(second.spawns(), json!({}));
        // Even the cold start happened in native code, not through Lua.
        assert_eq!(first.spawns(), json!({}));

        let after = sb.status("web");
        assert_eq!(after.pid, before.pid);
        assert_eq!(after.watcher_pid, before.watcher_pid);
        assert_eq!(after.refcount, 2);
    });
}

#[test]
fn neovim_killed_with_sigkill_is_dropped_by_the_watcher() {
    each_nvim(|sb| {
        let a = sb.nvim(&setup(WEB));
        let b = sb.nvim(&setup(WEB));
        eventually(DEADLINE, "both attached", || {
            (sb.status("web").refcount == 2).then_some(())
        });
        let a_pid = a.pid();
        b.kill9();
        eventually(DEADLINE, "the watcher to drop the killed Neovim", || {
            (sb.clients("web") == vec![a_pid]).then_some(())
        });
        a.kill9();
        let st = eventually(DEADLINE, "the watcher to drop the last Neovim", || {
            let st = sb.status("web");
            (st.refcount == 0).then_some(st)
        });
        assert_eq!(st.state, State::Grace);
    });
}

/// Display column (0-based) where `word` starts in each line that has it.
fn columns(n: &mut common::nvim::Nvim, word: &str) -> Vec<i64> {
    let v = n.lua(&format!(
        "local out = {{}} \
         for _, l in ipairs(vim.api.nvim_buf_get_lines(0, 0, -1, false)) do \
           local i = l:find({w}, 1, true) \
           if i then out[#out + 1] = vim.fn.strdisplaywidth(l:sub(1, i - 1)) end \
         end return out",
        w = lua_str(word)
    ));
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn tokens(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

#[test]
fn status_window_lists_every_server_with_markers_and_refreshes() {
    each_nvim(|sb| {
        // An instance that leaves "gamma" in its grace period.
        let other = sb.nvim(&setup(
            r#"gamma = { command = "sleep", args = { "1000" }, idle_timeout = "60s" }"#,
        ));
        eventually(DEADLINE, "gamma started", || {
            (sb.status("gamma").refcount == 1).then_some(())
        });
        assert!(other.quit().success());
        let gamma = sb.status("gamma").pid.unwrap();

        let mut a = sb.nvim(&setup(
            r#"alpha = { command = "sleep", args = { "1000" }, idle_timeout = "30s" },
               beta = { command = "sleep", args = { "1000" }, lazy = true }"#,
        ));
        eventually(DEADLINE, "alpha started", || {
            (sb.status("alpha").refcount == 1).then_some(())
        });
        let alpha = sb.status("alpha").pid.unwrap();

        a.cmd("ServerStatus");
        assert_eq!(
            a.lua("return vim.api.nvim_win_get_config(0).relative"),
            json!("editor")
        );
        let lines = a.lines();
        assert_eq!(lines.len(), 7, "{lines:#?}");
        assert_eq!(
            tokens(&lines[0]),
            ["NAME", "STATUS", "PID", "REFS", "UPTIME"]
        );
        assert!(lines[1].trim().chars().all(|c| c == '─'), "{lines:#?}");
        let row = |i: usize| tokens(&lines[i]);
        let uptime = |t: &str| t.ends_with('s') && t[..t.len() - 1].parse::<u32>().is_ok();
        let r = row(2);
        assert_eq!(r[..5], ["●", "alpha", "active", &alpha.to_string(), "1"]);
        assert!(uptime(&r[5]) && r[6] == "[attached]", "{r:?}");
        assert_eq!(row(3), ["○", "beta", "stopped", "-", "-", "-", "[lazy]"]);
        let r = row(4);
        assert_eq!(r[..5], ["⏳", "gamma", "grace", &gamma.to_string(), "0"]);
        assert!(uptime(&r[5]) && r[6] == "[external]", "{r:?}");
        assert_eq!(lines[5].trim(), "");
        assert_eq!(lines[6].trim(), "q/<Esc> close");
        let groups = a.lua(
            "local ns = vim.api.nvim_create_namespace('sharedserver.status') local out = {} \
             for _, m in ipairs(vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })) do \
               out[#out + 1] = m[2] .. ':' .. m[4].hl_group end return out",
        );
        assert_eq!(
            groups,
            json!([
                "0:Title",
                "2:DiagnosticInfo",
                "3:Comment",
                "4:DiagnosticWarn",
                "6:Comment"
            ])
        );
        // Columns line up in display cells, whatever the marker's width.
        let status_col = columns(&mut a, "STATUS")[0];
        for word in ["active", "stopped", "grace"] {
            assert_eq!(columns(&mut a, word), vec![status_col], "column of {word}");
        }
        // Uptimes read as the CLI's `info` shows them.
        assert_eq!(
            a.lua("local d = require('sharedserver.status.view').duration; return { d(12), d(65), d(7500), d(3 * 86400 + 4 * 3600) }"),
            json!(["12s", "1m05s", "2h05m", "3d04h"])
        );

        // It refreshes while open: another instance starts beta.
        let starter = sb.nvim(&setup(r#"beta = { command = "sleep", args = { "1000" } }"#));
        eventually(DEADLINE, "the float to show beta running", || {
            let l = a.lines();
            let r = tokens(&l[3]);
            (r[..3] == ["●", "beta", "active"]).then_some(())
        });
        drop(starter);

        a.lua("vim.api.nvim_input('q')");
        a.wait_for("q closes the float", "#vim.api.nvim_list_wins() == 1");
        assert_eq!(
            a.lua("return require('sharedserver.status.window').current() == nil"),
            json!(true)
        );

        a.cmd("ServerStatus alpha");
        let detail = a.lines();
        let text = detail.join("\n");
        assert_eq!(tokens(&detail[0]), ["●", "alpha", "active", "[attached]"]);
        for want in [
            format!("pid          {alpha}"),
            "refcount     1".to_string(),
            "command      sleep 1000".to_string(),
            "grace period 30s".to_string(),
            format!("cwd          {}", sb.tmp.path().display()),
            "this nvim    attached".to_string(),
            format!("{}", a.pid()),
        ] {
            assert!(text.contains(&want), "missing {want:?} in\n{text}");
        }
        a.lua("vim.api.nvim_input('<Esc>')");
        a.wait_for("<Esc> closes the float", "#vim.api.nvim_list_wins() == 1");
    });
}

fn health(n: &mut common::nvim::Nvim) -> String {
    n.cmd("checkhealth sharedserver");
    n.lines().join("\n")
}

#[test]
fn checkhealth_reports_no_error_on_a_good_install() {
    each_nvim(|sb| {
        let mut a = sb.nvim(&setup(WEB));
        eventually(DEADLINE, "started", || {
            (sb.status("web").refcount == 1).then_some(())
        });
        let text = health(&mut a);
        let native = plugin_dir().join("lua/sharedserver/native.so");
        for want in [
            format!("loaded {} (version 0.1.0)", native.display()),
            format!("{BIN} (from $PATH), version 0.1.0"),
            format!(
                "{} is owned by you and closed to group and others",
                sb.lockdir.display()
            ),
            "'web' active".to_string(),
            "process backend: ".to_string(),
        ] {
            assert!(text.contains(&want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("ERROR"), "{text}");
        assert!(!text.contains("WARN"), "{text}");
    });
}

#[test]
fn checkhealth_reports_a_missing_binary_and_how_to_fix_it() {
    for global in [
        "/usr/local/bin/sharedserver",
        "/opt/homebrew/bin/sharedserver",
    ] {
        assert!(
            !Path::new(global).exists(),
            "{global} exists, so this machine cannot show a missing binary; remove it to run this test"
        );
    }
    each_nvim(|sb| {
        let mut sb_nobin = Sandbox::new(&sb.nvim);
        sb_nobin.hide_binary_from_path();
        let mut a = sb_nobin.nvim(&setup(WEB_LAZY));
        let text = health(&mut a);
        assert!(text.contains("ERROR"), "{text}");
        assert!(
            text.contains("the sharedserver binary was not found"),
            "{text}"
        );
        assert!(text.contains("sh build.sh"), "{text}");

        // A wrong `binary` option is reported as such, not replaced.
        let mut b = sb.nvim(
            "require('sharedserver').setup({ servers = {}, binary = '/nonexistent/sharedserver' })",
        );
        let text = health(&mut b);
        assert!(
            text.contains("the `binary` option points to /nonexistent/sharedserver"),
            "{text}"
        );
    });
}

#[test]
fn the_binary_is_found_in_cargo_target_dir_before_a_stale_target_dir() {
    each_nvim(|sb| {
        let mut sb_nobin = Sandbox::new(&sb.nvim);
        sb_nobin.hide_binary_from_path();
        let fresh = sb_nobin.path("cargo-target");
        // A plugin root whose target/ holds a build from before
        // $CARGO_TARGET_DIR was set.
        let root = sb_nobin.path("plugin-root");
        for dir in [fresh.join("release"), root.join("target/release")] {
            std::fs::create_dir_all(&dir).unwrap();
            std::os::unix::fs::symlink(BIN, dir.join("sharedserver")).unwrap();
        }
        sb_nobin.env.push((
            "CARGO_TARGET_DIR".into(),
            fresh.to_string_lossy().into_owned(),
        ));
        let mut a = sb_nobin.nvim("require('sharedserver').setup({ servers = {} })");
        let found = a.lua(&format!(
            "require('sharedserver.loader').root = {root:?}
             local p, s = require('sharedserver.binary').resolve() return {{ p, s }}"
        ));
        assert_eq!(
            found[0].as_str(),
            Some(fresh.join("release/sharedserver").to_str().unwrap()),
            "{found}"
        );
        assert!(
            found[1].as_str().unwrap().contains("CARGO_TARGET_DIR"),
            "{found}"
        );
        // Without the variable, the plugin's own target/ is next.
        let found = a.lua(
            "vim.env.CARGO_TARGET_DIR = nil
             return { require('sharedserver.binary').resolve() }",
        );
        assert_eq!(
            found[0].as_str(),
            Some(root.join("target/release/sharedserver").to_str().unwrap()),
            "{found}"
        );
    });
}

#[test]
fn checkhealth_reports_an_unsafe_lock_dir_and_how_to_fix_it() {
    use std::os::unix::fs::PermissionsExt;
    each_nvim(|sb| {
        let mut a = sb.nvim(&setup(WEB_LAZY));
        std::fs::set_permissions(&sb.lockdir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let text = health(&mut a);
        std::fs::set_permissions(&sb.lockdir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let dir = sb.lockdir.display();
        assert!(
            text.contains(&format!(
                "{dir} is unsafe: its mode is 755, open to group or others"
            )),
            "{text}"
        );
        assert!(text.contains(&format!("chmod 700 {dir}")), "{text}");
    });
}

#[test]
fn notifications_are_gated_each_by_its_own_flag() {
    each_nvim(|sb| {
        let init = format!(
            "require('sharedserver').setup({{ servers = {{ {WEB} }}, \
             notify = {{ on_start = false, on_attach = true, on_stop = false }} }})"
        );
        let mut a = sb.nvim(&init);
        eventually(DEADLINE, "started", || {
            (sb.status("web").refcount == 1).then_some(())
        });
        assert_eq!(a.notes(), Vec::<String>::new());
        let mut b = sb.nvim(&init);
        eventually(DEADLINE, "attached", || {
            (sb.status("web").refcount == 2).then_some(())
        });
        b.cmd("ServerStop web");
        assert_eq!(
            b.notes(),
            ["sharedserver: attached to 'web' (pid {}, refcount 2)"
                .replace("{}", &sb.status("web").pid.unwrap().to_string())]
        );
        // on_error is on by default: a failure is still reported.
        b.cmd("ServerStop web");
        let notes = b.notes();
        assert!(
            notes[1].contains("this Neovim is not attached to 'web'"),
            "{notes:#?}"
        );
    });
}

#[test]
fn a_server_that_fails_to_start_is_reported_with_its_log() {
    each_nvim(|sb| {
        let log = sb.path("broken.log");
        let mut a = sb.nvim(&setup(&format!(
            r#"broken = {{ command = "sh", args = {{ "-c", "echo 'no config file found' >&2; exit 4" }},
                          log_file = {log} }},
               missing = {{ command = "/nonexistent/program" }}"#,
            log = lua_str(log.to_str().unwrap())
        )));
        let notes = a.notes();
        let broken = notes
            .iter()
            .find(|m| m.contains("'broken'"))
            .unwrap_or_else(|| panic!("no error for 'broken' in {notes:#?}"));
        assert!(broken.contains("no config file found"), "{broken}");
        assert!(
            notes.iter().any(|m| m.contains("/nonexistent/program")),
            "{notes:#?}"
        );
        assert_eq!(sb.status("broken").state, State::Stopped);
        assert_eq!(
            a.lua("return { require('sharedserver').start('missing') }")[0],
            json!(false)
        );
        // The failed start left its trace: health and the float show it.
        let text = health(&mut a);
        assert!(
            text.contains("'broken' stopped after exit 4: exited at once with code 4"),
            "{text}"
        );
        assert!(text.contains("no config file found"), "{text}");
        let detail =
            a.lua("return table.concat(require('sharedserver.status').lines('broken'), '\\n')");
        let detail = detail.as_str().unwrap_or_default();
        assert!(
            detail.contains("exit 4") && detail.contains("no config file found"),
            "{detail}"
        );
    });
}

#[test]
fn on_start_and_on_exit_fire_with_the_right_arguments() {
    each_nvim(|sb| {
        let log = sb.path("crashy.log");
        let gate = Gate::new(sb.path("gate"));
        let init = setup(&format!(
            r#"web = {{ command = "sleep", args = {{ "1000" }},
                 on_start = function(pid) _G.web_started = pid end,
                 on_exit = function(code, exit) _G.web_exit = {{ code = code, reason = exit.reason }} end }},
               crashy = {{ command = "sh",
                 args = {{ "-c", "echo booting; echo 'fatal: port 8000 in use' >&2; {wait}; exit 3" }},
                 log_file = {log},
                 on_start = function(pid) _G.crashy_started = pid end,
                 on_exit = function(code) _G.crashy_code = code end }}"#,
            log = lua_str(log.to_str().unwrap()),
            wait = gate.sh(),
        ));
        let mut a = sb.nvim(&init);
        let web = eventually(DEADLINE, "web started", || sb.status("web").pid);
        assert_eq!(a.lua("return _G.web_started"), json!(web));

        // crashy dies once started: on_exit gets its code and the error
        // names it, with the last lines of its log.
        a.wait_for("crashy's on_start", "_G.crashy_started ~= nil");
        gate.open();
        a.wait_for("crashy's on_exit", "_G.crashy_code ~= nil");
        assert_eq!(a.lua("return _G.crashy_code"), json!(3));
        let last = sb.status("crashy").last_exit.unwrap();
        assert_eq!(last.how.code(), Some(3));
        assert_eq!(a.lua("return _G.crashy_started"), json!(last.pid));
        let notes = a.notes();
        let crash = notes
            .iter()
            .find(|m| m.contains("'crashy' died unexpectedly"))
            .unwrap_or_else(|| panic!("no crash notification in {notes:#?}"));
        assert!(crash.contains("fatal: port 8000 in use"), "{crash}");
        assert!(crash.contains("booting"), "{crash}");

        a.cmd("ServerStop! web");
        assert_eq!(
            a.lua("return _G.web_exit"),
            json!({ "code": 143, "reason": "stopped on request" })
        );
        assert_eq!(sb.status("web").state, State::Stopped);
    });
}

#[test]
fn working_dir_and_env_reach_the_server() {
    each_nvim(|sb| {
        let wd = sb.path("work dir");
        std::fs::create_dir(&wd).unwrap();
        let mut sb2 = Sandbox::new(&sb.nvim);
        sb2.env.push(("SS_INHERITED".into(), "from nvim".into()));
        let init = setup(&format!(
            r#"web = {{ command = "sh",
                 args = {{ "-c", "pwd > env.out; echo \"$SS_GREETING\" >> env.out; echo \"$SS_INHERITED\" >> env.out; exec sleep 1000" }},
                 working_dir = {wd}, env = {{ SS_GREETING = "hello from config" }} }}"#,
            wd = lua_str(wd.to_str().unwrap())
        ));
        let _a = sb2.nvim(&init);
        let out = wd.join("env.out");
        let lines = eventually(DEADLINE, "the server to write env.out", || {
            let text = std::fs::read_to_string(&out).ok()?;
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            (lines.len() == 3).then_some(lines)
        });
        assert_eq!(
            lines,
            [
                wd.canonicalize().unwrap().to_str().unwrap(),
                "hello from config",
                "from nvim"
            ]
        );
        assert_eq!(sb2.status("web").cwd.as_deref(), wd.to_str());
    });
}

#[test]
fn restart_replaces_the_process_and_keeps_every_client() {
    each_nvim(|sb| {
        let mut a = sb.nvim(&setup(WEB));
        let mut b = sb.nvim(&setup(WEB));
        eventually(DEADLINE, "both attached", || {
            (sb.status("web").refcount == 2).then_some(())
        });
        let before = sb.status("web");
        let old = before.pid.unwrap();
        a.cmd("ServerRestart web");
        let st = sb.status("web");
        let new = st.pid.unwrap();
        assert_ne!(new, old, "{:#?}", a.notes());
        assert!(!alive(old));
        assert_eq!(sb.clients("web"), sorted(vec![a.pid(), b.pid()]));
        let attached_at = |s: &sharedserver::Status| {
            s.clients
                .iter()
                .map(|c| c.attached_at.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(attached_at(&st), attached_at(&before), "attach times kept");
        b.wait_for(
            "b to follow the new process",
            &format!("require('sharedserver').status('web').pid == {new} and require('sharedserver').status('web').attached"),
        );
        // The other Neovim saw a restart, not a stop.
        let notes = b.notes();
        assert!(
            notes
                .iter()
                .any(|m| m.contains(&format!("'web' restarted (pid {new})"))),
            "{notes:#?}"
        );
        assert!(!notes.iter().any(|m| m.contains("stopped")), "{notes:#?}");
        assert_eq!(
            a.lua("return require('sharedserver').status('web').attached"),
            json!(true)
        );
    });
}

#[test]
fn server_stop_detaches_and_server_stop_bang_stops_it_for_everyone() {
    each_nvim(|sb| {
        let init = setup(&format!(
            "{WEB}, other = {{ command = 'sleep', args = {{ '1000' }}, idle_timeout = '30s' }}"
        ));
        let mut a = sb.nvim(&init);
        let mut b = sb.nvim(&init);
        eventually(DEADLINE, "both attached", || {
            (sb.status("web").refcount == 2).then_some(())
        });
        a.cmd("ServerStop web");
        assert_eq!(sb.clients("web"), vec![b.pid()]);
        assert_eq!(sb.status("web").state, State::Active);
        assert_eq!(
            a.lua("return require('sharedserver').status('web').attached"),
            json!(false)
        );

        a.cmd("ServerStop! web");
        assert_eq!(sb.status("web").state, State::Stopped);
        b.wait_for(
            "b to see web gone",
            "require('sharedserver').status('web').attached == false",
        );

        // :ServerStopAll detaches from everything; with ! it stops everything.
        eventually(DEADLINE, "other attached", || {
            (sb.status("other").refcount == 2).then_some(())
        });
        a.cmd("ServerStopAll");
        assert_eq!(sb.clients("other"), vec![b.pid()]);
        b.cmd("ServerStopAll!");
        assert_eq!(sb.status("other").state, State::Stopped);
    });
}

#[test]
fn commands_complete_server_names() {
    each_nvim(|sb| {
        let other = sb.nvim(&setup(
            r#"shell_tool = { command = "sleep", args = { "1000" }, idle_timeout = "30s" }"#,
        ));
        eventually(DEADLINE, "shell_tool started", || {
            (sb.status("shell_tool").refcount == 1).then_some(())
        });
        let mut a = sb.nvim(&setup(&format!(
            "{WEB_LAZY}, worker = {{ command = 'sleep', lazy = true }}"
        )));
        let complete = |n: &mut common::nvim::Nvim, line: &str| {
            n.lua(&format!(
                "return vim.fn.getcompletion({}, 'cmdline')",
                lua_str(line)
            ))
        };
        // Starting needs a configuration: only configured names.
        assert_eq!(complete(&mut a, "ServerStart "), json!(["web", "worker"]));
        assert_eq!(
            complete(&mut a, "ServerRestart w"),
            json!(["web", "worker"])
        );
        assert_eq!(complete(&mut a, "ServerStart wo"), json!(["worker"]));
        // Detaching: only what this Neovim is attached to (nothing here);
        // stopping for everyone (!) and status: any server in the lock dir.
        assert_eq!(complete(&mut a, "ServerStop "), json!([]));
        assert_eq!(
            complete(&mut a, "ServerStop! "),
            json!(["shell_tool", "web", "worker"])
        );
        assert_eq!(complete(&mut a, "ServerStatus sh"), json!(["shell_tool"]));
        a.cmd("ServerStart web");
        assert_eq!(complete(&mut a, "ServerStop "), json!(["web"]));
        // A name nobody knows is said to be unknown, not drawn as a server.
        let err = a.lua(
            "vim.v.errmsg = ''; local ok, e = pcall(vim.cmd, 'ServerStatus nosuch'); return ok and vim.v.errmsg or e",
        );
        assert!(
            err.as_str()
                .is_some_and(|e| e.contains("no server named 'nosuch'")),
            "{err}"
        );
        assert_eq!(a.lua("return #vim.api.nvim_list_wins()"), json!(1));
        // :ServerList prints the table without the float's key help.
        let listed = a.lua("return vim.api.nvim_exec('ServerList', true)");
        let listed = listed.as_str().unwrap_or_default();
        assert!(listed.contains("web"), "{listed}");
        assert!(!listed.contains("q/<Esc>"), "{listed}");
        drop(other);
    });
}

#[test]
fn setup_accepts_the_crate_the_plugin_and_the_single_server_forms() {
    each_nvim(|sb| {
        let list = "return require('sharedserver').list()";
        let mut crate_form = sb.nvim(
            "require('sharedserver').setup({ servers = { one = { command = 'sleep', lazy = true } }, commands = false })",
        );
        assert_eq!(crate_form.lua(list), json!(["one"]));
        assert_eq!(
            crate_form.lua("return vim.fn.exists(':ServerStatus')"),
            json!(0)
        );

        let mut plugin_form = sb.nvim(
            "require('sharedserver').setup({ two = { command = 'sleep', lazy = true } }, { notify = { on_start = false } })",
        );
        assert_eq!(plugin_form.lua(list), json!(["two"]));
        assert_eq!(
            plugin_form.lua("return vim.fn.exists(':ServerStatus')"),
            json!(2)
        );
        assert_eq!(
            plugin_form.lua("return require('sharedserver').options().notify"),
            json!({ "on_start": false, "on_attach": false, "on_stop": false, "on_error": true })
        );

        let mut single = sb.nvim(
            "require('sharedserver').setup({ command = 'sleep', args = { '1000' }, lazy = true })",
        );
        assert_eq!(single.lua(list), json!(["default"]));
        single.lua(
            "require('sharedserver').setup({ command = 'sleep', lazy = true }, { name = 'solo' })",
        );
        assert_eq!(single.lua(list), json!(["default", "solo"]));
        // A setup() after startup (lazy.nvim's VeryLazy) starts at once.
        single.lua(
            "require('sharedserver').setup({ late = { command = 'sleep', args = { '1000' } } })",
        );
        assert_eq!(sb.clients("late"), vec![single.pid()]);

        let err = single.lua(
            "local ok, err = pcall(require('sharedserver').setup, { servers = { bad = { args = {} } } }) return err",
        );
        assert_eq!(
            err,
            json!("sharedserver: setup(): servers.bad.command: missing: give the program to run")
        );
        // A failing call registers none of its servers and keeps the
        // options in force.
        let kept = single.lua(
            "local ss = require('sharedserver') \
             pcall(ss.setup, { servers = { good = { command = 'sleep', lazy = true }, bad = { args = {} } }, \
               notify = { on_start = false } }) \
             return { list = ss.list(), on_start = ss.options().notify.on_start }",
        );
        assert_eq!(
            kept,
            json!({ "list": ["default", "late", "solo"], "on_start": true })
        );
    });
}

#[test]
fn plugin_file_loads_nothing_until_a_command_runs() {
    each_nvim(|sb| {
        let mut a = sb.nvim("");
        assert_eq!(
            a.lua("return { loaded = package.loaded['sharedserver'] ~= nil, cmd = vim.fn.exists(':ServerStatus') }"),
            json!({ "loaded": false, "cmd": 2 })
        );
        a.cmd("ServerList");
        assert_eq!(
            a.lua("return package.loaded['sharedserver'] ~= nil"),
            json!(true)
        );
    });
}

#[test]
fn setup_after_the_plugin_file_keeps_its_commands_without_loading_commands_lua() {
    each_nvim(|sb| {
        // setup() after plugin/ ran (lazy.nvim's order): the commands it
        // defined stay, and commands.lua is not loaded for Neovim's start-up.
        let mut a = sb.nvim("");
        let probe = "return { loaded = package.loaded['sharedserver.commands'] ~= nil, \
                     cmd = vim.fn.exists(':ServerStatus') }";
        a.lua("require('sharedserver').setup({})");
        assert_eq!(a.lua(probe), json!({ "loaded": false, "cmd": 2 }));
        // Removed by `commands = false`, defined again by a later setup().
        a.lua("require('sharedserver').setup({ commands = false })");
        assert_eq!(a.lua(probe)["cmd"], json!(0));
        a.lua("require('sharedserver').setup({})");
        assert_eq!(a.lua(probe)["cmd"], json!(2));
    });
}

/// A copy of the test plugin, native module included, in the sandbox: for a
/// test that changes the plugin's files.
fn plugin_copy(sb: &Sandbox) -> PathBuf {
    let tree = sb.path("plugin");
    common::nvim::copy_tree(plugin_dir(), &tree);
    std::fs::copy(
        plugin_dir().join("lua/sharedserver/native.so"),
        tree.join("lua/sharedserver/native.so"),
    )
    .unwrap();
    tree
}

#[test]
fn lua_code_and_native_module_versions_must_match() {
    let lua =
        std::fs::read_to_string(Path::new(REPO).join("lua/sharedserver/version.lua")).unwrap();
    assert!(
        lua.contains(&format!("return \"{}\"", env!("CARGO_PKG_VERSION"))),
        "lua/sharedserver/version.lua must return the crate version:\n{lua}"
    );
    each_nvim(|sb| {
        // A plugin tree whose Lua claims another version refuses the library
        // and says what to run.
        let tree = plugin_copy(sb);
        std::fs::write(
            tree.join("lua/sharedserver/version.lua"),
            "return \"9.9.9\"\n",
        )
        .unwrap();
        let mut a = sb.nvim(&format!(
            "vim.opt.rtp:prepend({})",
            lua_str(tree.to_str().unwrap())
        ));
        let err = a.lua("local ok, err = pcall(require('sharedserver.loader').load) return err");
        let err = err.as_str().unwrap();
        assert!(
            err.contains("is version 0.1.0 but the Lua code is 9.9.9"),
            "{err}"
        );
        assert!(err.contains("nvim -l build.lua"), "{err}");
    });
}

fn build_with(
    nv: &NvimBin,
    tree: &Path,
    args: &[&str],
    home: Option<&Path>,
) -> std::process::Output {
    let mut cmd = Command::new(&nv.path);
    cmd.args(args)
        .current_dir(std::env::temp_dir())
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env("XDG_CONFIG_HOME", tree.join(".xdg"))
        .env("XDG_DATA_HOME", tree.join(".xdg"))
        .env("XDG_STATE_HOME", tree.join(".xdg"));
    if let Some(home) = home {
        cmd.env("HOME", home).env("PATH", "/usr/bin:/bin");
    }
    cmd.output().expect("run nvim")
}

#[test]
fn build_lua_builds_and_installs_the_native_module_from_a_clean_tree() {
    let tmp = tempfile::Builder::new()
        .prefix("ss-build-")
        .tempdir()
        .unwrap();
    let tree = tmp.path().join("sharedserver.nvim");
    std::fs::create_dir(&tree).unwrap();
    clean_tree(&tree);
    let build = tree.join("build.lua");
    let native = tree.join("lua/sharedserver/native.so");
    assert!(!native.exists() && !tree.join("target").exists());
    let build_s = build.to_str().unwrap();

    for (i, nv) in nvims().iter().enumerate() {
        // Neovim 0.7+: :luafile, from another cwd, which it must not change.
        let out = build_with(
            nv,
            &tree,
            &[
                "--headless",
                "-u",
                "NONE",
                "-i",
                "NONE",
                "-c",
                "let g:cwd0 = getcwd()",
                "-c",
                &format!("luafile {build_s}"),
                "-c",
                "if getcwd() !=# g:cwd0 | cquit 3 | endif",
                "-c",
                "qa!",
            ],
            None,
        );
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{}: build.lua failed:\n{log}",
            nv.label()
        );
        assert!(
            native.is_file(),
            "{}: no native.so after build:\n{log}",
            nv.label()
        );
        if i == 0 {
            assert!(log.contains("installed"), "{log}");
        }
        // The Lua modules compiled for this Neovim's start-up.
        assert!(
            log.contains("Lua modules into") && tree.join("bytecode/manifest.lua").is_file(),
            "{}: no bytecode after the build:\n{log}",
            nv.label()
        );
        // :help sharedserver works for a plugin built by hand.
        let tags = tree.join("doc/tags");
        assert!(
            std::fs::read_to_string(&tags).is_ok_and(|t| t.contains("sharedserver-build")),
            "{}: no {} after the build:\n{log}",
            nv.label(),
            tags.display()
        );
        std::fs::remove_file(&tags).unwrap();

        // Neovim 0.9+: nvim -l.
        if nv.at_least(0, 9) {
            std::fs::remove_file(&native).unwrap();
            let out = build_with(nv, &tree, &["-l", build_s], None);
            assert!(
                out.status.success() && native.is_file(),
                "nvim -l build.lua failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        // lazy.nvim's way: inside a coroutine, progress reported by yielding.
        std::fs::remove_file(&native).unwrap();
        let script = tmp.path().join("lazy.lua");
        std::fs::write(
            &script,
            format!(
                "local co = coroutine.create(assert(loadfile({b})))\n\
                 local msgs = {{}}\n\
                 while coroutine.status(co) ~= 'dead' do\n\
                   local ok, msg = coroutine.resume(co)\n\
                   if not ok then io.stderr:write('error: ' .. tostring(msg)) vim.cmd('cquit 2') end\n\
                   if msg then msgs[#msgs + 1] = msg end\n\
                   vim.wait(20)\n\
                 end\n\
                 for i = 2, #msgs do\n                   if msgs[i] == msgs[i - 1] then io.stderr:write('repeated: ' .. msgs[i]) vim.cmd('cquit 3') end\n                 end\n                 io.stdout:write('yielded ' .. #msgs .. ': ' .. table.concat(msgs, ' | ') .. '\\n')\n",
                b = lua_str(build_s)
            ),
        )
        .unwrap();
        let out = build_with(
            nv,
            &tree,
            &[
                "--headless",
                "-u",
                "NONE",
                "-i",
                "NONE",
                "-c",
                &format!("luafile {}", script.display()),
                "-c",
                "qa!",
            ],
            None,
        );
        let log = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && native.is_file(),
            "coroutine build failed:\n{log}"
        );
        assert!(
            log.contains("yielded") && log.contains("installed"),
            "{log}"
        );

        // The installed module loads, from that exact path.
        let check = format!(
            "lua vim.opt.rtp:prepend({t}) local l = require('sharedserver.loader') l.load() \
             io.stdout:write(l.loaded_path .. ' ' .. require('sharedserver.native').version())",
            t = lua_str(tree.to_str().unwrap())
        );
        let out = build_with(
            nv,
            &tree,
            &[
                "--headless",
                "-u",
                "NONE",
                "-i",
                "NONE",
                "-c",
                &check,
                "-c",
                "qa!",
            ],
            None,
        );
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains(&format!("{} 0.1.0", native.display())),
            "{}: {said}",
            nv.label()
        );
    }

    // Without cargo, it says what to install.
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let nv = &nvims()[0];
    // build.lua with only `home` to find cargo in; what it said.
    let build_in_home = || {
        let out = build_with(
            nv,
            &tree,
            &[
                "--headless",
                "-u",
                "NONE",
                "-i",
                "NONE",
                "-c",
                &format!("luafile {build_s}"),
                "-c",
                "qa!",
            ],
            Some(&home),
        );
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let said = build_in_home();
    assert!(said.contains("cargo was not found"), "{said}");

    // A failing build is reported with cargo's last lines, and installs
    // nothing (the module from the earlier builds stays as it was).
    let bin = home.join(".cargo/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(
        bin.join("cargo"),
        "#!/bin/sh\necho 'error[E0308]: mismatched types' >&2\n\
         echo 'error: could not compile `sharedserver`' >&2\nexit 101\n",
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("cargo"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let before = std::fs::metadata(&native).unwrap().modified().unwrap();
    let said = build_in_home();
    assert!(said.contains("failed (exit 101)"), "{said}");
    assert!(
        said.contains("mismatched types") && said.contains("could not compile"),
        "{said}"
    );
    assert_eq!(
        std::fs::metadata(&native).unwrap().modified().unwrap(),
        before
    );
}

#[test]
fn vimdoc_builds_its_tags_without_errors() {
    let tmp = tempfile::Builder::new()
        .prefix("ss-doc-")
        .tempdir()
        .unwrap();
    std::fs::copy(
        Path::new(REPO).join("doc/sharedserver.txt"),
        tmp.path().join("sharedserver.txt"),
    )
    .unwrap();
    for nv in nvims() {
        let out = Command::new(&nv.path)
            .args(["--headless", "-u", "NONE", "-i", "NONE", "-c"])
            .arg(format!("helptags {}", tmp.path().display()))
            .args(["-c", "qa!"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(said.trim().is_empty(), "{}: helptags: {said}", nv.label());
        let tags = std::fs::read_to_string(tmp.path().join("tags")).unwrap();
        for tag in [
            "sharedserver",
            "sharedserver-setup",
            ":ServerStatus",
            ":ServerLog",
            "sharedserver-health",
            "sharedserver-readiness",
            "sharedserver.statusline()",
            "User_SharedServerStatus",
        ] {
            assert!(
                tags.lines().any(|l| l.starts_with(&format!("{tag}\t"))),
                "no tag {tag}"
            );
        }
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Lua run before setup(): a libuv timer that counts its ticks (10 ms), to
/// show that the event loop keeps running.
const TICKER: &str = "_G.ticks = 0 \
     local t = vim.loop.new_timer() \
     t:start(10, 10, function() _G.ticks = _G.ticks + 1 end)";

#[test]
fn on_ready_fires_with_the_status_once_the_server_answers_and_the_editor_never_freezes() {
    each_nvim(|sb| {
        let port = free_port();
        let gate = Gate::new(sb.path("gate"));
        let init = format!(
            "{TICKER}\n{}",
            setup(&format!(
                r#"web = {{ command = "python3",
                     args = {{ "-c", "import http.server; {wait}; http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler).serve_forever()" }},
                     ready = "tcp://127.0.0.1:{port}",
                     on_start = function() _G.ticks_at_start = _G.ticks end,
                     on_ready = function(st)
                       _G.ready = {{ state = st.state, pid = st.pid, ready = st.ready, ticks = _G.ticks }}
                       _G.ready_calls = (_G.ready_calls or 0) + 1
                     end }}"#,
                wait = gate.py().replace('"', "\\\""),
            ))
        );
        let mut a = sb.nvim(&init);
        // Neovim answers this request while the server is still starting.
        let seen = a.lua(
            "return { state = require('sharedserver').status('web').state, \
                      line = require('sharedserver').statusline(), \
                      polling = require('sharedserver')._polling(), ready = _G.ready ~= nil }",
        );
        assert_eq!(
            seen,
            json!({ "state": "starting", "line": "web…", "polling": true, "ready": false })
        );
        // The event loop keeps running while the server starts.
        a.wait_for(
            "20 timer ticks while starting",
            "_G.ticks_at_start and _G.ticks - _G.ticks_at_start >= 20",
        );
        assert_eq!(a.lua("return _G.ready == nil"), json!(true));
        gate.open();
        a.wait_for("on_ready", "_G.ready ~= nil");
        let st = sb.status("web");
        assert_eq!(st.state, State::Active);
        let ready = a.lua("return _G.ready");
        assert_eq!(ready["state"], json!("active"));
        assert_eq!(ready["pid"], json!(st.pid.unwrap()));
        assert_eq!(ready["ready"], json!(format!("tcp://127.0.0.1:{port}")));
        // Once ready: no poll timer, on_ready ran once, the statusline says so.
        a.wait_for(
            "the poll timer to stop",
            "not require('sharedserver')._polling()",
        );
        assert_eq!(a.lua("return _G.ready_calls"), json!(1));
        assert_eq!(
            a.lua("return require('sharedserver').statusline()"),
            json!("web●")
        );
        let notes = a.notes();
        assert!(
            notes.iter().any(|m| m.contains(&format!(
                "started 'web' (pid {}), waiting for tcp://127.0.0.1:{port}",
                st.pid.unwrap()
            ))),
            "{notes:#?}"
        );
        assert!(
            notes.iter().any(|m| m.contains("'web' is ready")),
            "{notes:#?}"
        );

        // A second Neovim joins a ready server: on_ready at once, no timer.
        let mut b = sb.nvim(&init);
        assert_eq!(
            b.lua("return { _G.ready_calls, require('sharedserver')._polling() }"),
            json!([1, false])
        );
        assert_eq!(b.spawns(), json!({}));
    });
}

#[test]
fn a_server_that_never_becomes_ready_is_reported_with_its_log_tail() {
    each_nvim(|sb| {
        let port = free_port();
        let mut a = sb.nvim(&setup(&format!(
            r#"deaf = {{ command = "sh", args = {{ "-c", "echo 'binding to nothing at all'; exec sleep 1000" }},
                 ready = "tcp://127.0.0.1:{port}", ready_timeout = "1s",
                 on_ready = function() _G.ready = true end }}"#
        )));
        a.wait_for(
            "the readiness error",
            "vim.tbl_contains(vim.tbl_map(function(n) return n.msg:find('did not become ready', 1, true) ~= nil end, _G.notes), true)",
        );
        let notes = a.notes();
        let err = notes
            .iter()
            .find(|m| m.contains("did not become ready"))
            .unwrap();
        assert!(
            err.contains(&format!(
                "'deaf' did not become ready: not ready within 1s: waiting for tcp://127.0.0.1:{port}"
            )),
            "{err}"
        );
        assert!(err.contains("binding to nothing at all"), "{err}");
        assert!(
            err.contains(&sb.lockdir.join("deaf.log").display().to_string()),
            "{err}"
        );
        assert_eq!(sb.status("deaf").state, State::Stopped);
        assert_eq!(
            a.lua("return { _G.ready == nil, require('sharedserver')._polling(), require('sharedserver').statusline() }"),
            json!([true, false, ""])
        );
    });
}

#[test]
fn server_log_opens_the_servers_log_in_a_split() {
    each_nvim(|sb| {
        let custom = sb.path("own.log");
        let mut a = sb.nvim(&setup(&format!(
            r#"web = {{ command = "sh", args = {{ "-c", "echo hello from web; exec sleep 1000" }} }},
               own = {{ command = "sh", args = {{ "-c", "echo hello from own; exec sleep 1000" }},
                        log_file = {} }},
               never = {{ command = "sleep", lazy = true }}"#,
            lua_str(custom.to_str().unwrap())
        )));
        let default = sb.lockdir.join("web.log");
        for (file, text) in [(&default, "hello from web"), (&custom, "hello from own")] {
            eventually(DEADLINE, "the watcher to copy the output", || {
                std::fs::read_to_string(file)
                    .ok()
                    .filter(|t| t.contains(text))
            });
        }
        assert_eq!(
            a.lua("return vim.fn.getcompletion('ServerLog ', 'cmdline')"),
            json!(["never", "own", "web"])
        );
        a.cmd("ServerLog web");
        assert_eq!(a.lua("return #vim.api.nvim_list_wins()"), json!(2));
        assert_eq!(
            a.lua("return vim.api.nvim_buf_get_name(0)"),
            json!(default.to_str().unwrap())
        );
        assert!(a.lines().contains(&"hello from web".to_string()));
        a.cmd("ServerLog own");
        assert_eq!(
            a.lua("return vim.api.nvim_buf_get_name(0)"),
            json!(custom.to_str().unwrap())
        );
        let err = a.lua("return { require('sharedserver').open_log('never') }");
        assert_eq!(err[0], json!(false));
        let msg = err[1].as_str().unwrap();
        assert!(msg.contains("'never' has no log yet"), "{msg}");
        assert!(
            msg.contains(&sb.lockdir.join("never.log").display().to_string()),
            "{msg}"
        );
    });
}

#[test]
fn a_crash_under_a_restart_policy_is_notified_once_per_crash_from_lock_dir_events() {
    each_nvim(|sb| {
        let wd = sb.path("flaky");
        std::fs::create_dir(&wd).unwrap();
        let init = setup(&format!(
            r#"flaky = {{ command = "sh", working_dir = {wd},
                 args = {{ "-c", "if [ -e crashed ]; then exec sleep 1000; fi; touch crashed; sleep 0.3; exit 1" }},
                 restart = "on-failure:3",
                 on_ready = function(st) _G.ready_pids = _G.ready_pids or {{}} table.insert(_G.ready_pids, st.pid) end }},
               doomed = {{ command = "sh", args = {{ "-c", "echo doomed to fail; sleep 0.3; exit 7" }},
                 restart = "on-failure:2" }}"#,
            wd = lua_str(wd.to_str().unwrap())
        ));
        let mut a = sb.nvim(&init);
        let first = eventually(DEADLINE, "flaky started", || sb.status("flaky").pid);
        // flaky crashes once, comes back as a new process, and stays up.
        let second = eventually(DEADLINE, "flaky restarted", || {
            let st = sb.status("flaky");
            (st.state == State::Active && st.pid != Some(first)).then_some(st.pid.unwrap())
        });
        a.wait_for(
            "the crash notification",
            "vim.tbl_contains(vim.tbl_map(function(n) return n.msg end, _G.notes), \
             'sharedserver: \\'flaky\\' crashed (exit 1); restarting, attempt 1')",
        );
        a.wait_for(
            "Neovim to follow the new process",
            &format!("require('sharedserver').status('flaky').pid == {second} and #(_G.ready_pids or {{}}) == 2"),
        );
        // on_ready ran again, but a server without a ready check is never
        // announced as "ready" after its restart backoff.
        let notes = a.notes();
        assert!(!notes.iter().any(|m| m.contains("is ready")), "{notes:#?}");
        assert_eq!(a.lua("return _G.ready_pids"), json!([first, second]));
        assert_eq!(sb.clients("flaky"), vec![a.pid()]);

        // doomed crashes three times: two restarts, then it gives up.
        a.wait_for(
            "doomed to give up",
            "vim.tbl_contains(vim.tbl_map(function(n) return n.msg:find('gave up', 1, true) ~= nil end, _G.notes), true)",
        );
        let notes = a.notes();
        let doomed: Vec<&String> = notes.iter().filter(|m| m.contains("doomed")).collect();
        assert!(
            doomed
                .iter()
                .any(|m| m.as_str()
                    == "sharedserver: 'doomed' crashed (exit 7); restarting, attempt 1"),
            "{doomed:#?}"
        );
        assert!(
            doomed
                .iter()
                .any(|m| m.as_str()
                    == "sharedserver: 'doomed' crashed (exit 7); restarting, attempt 2"),
            "{doomed:#?}"
        );
        let gave_up = doomed.iter().find(|m| m.contains("gave up")).unwrap();
        assert!(
            gave_up.contains("'doomed' crashed (exit 7); gave up after 2 restarts"),
            "{gave_up}"
        );
        assert!(gave_up.contains("doomed to fail"), "{gave_up}");
        // Each crash once: no duplicates.
        assert_eq!(
            notes.iter().filter(|m| m.contains("crashed")).count(),
            4,
            "{notes:#?}"
        );
        // Detected from lock dir events: nothing spawned, no timer left.
        assert_eq!(a.spawns(), json!({}));
        a.wait_for("no poll timer", "not require('sharedserver')._polling()");
        assert_eq!(
            a.lua("return require('sharedserver').statusline()"),
            json!("flaky●")
        );
        // :checkhealth (which runs the binary) tells how doomed ended and how to read its log.
        let text = health(&mut a);
        assert!(
            text.contains("'doomed' stopped after exit 7: gave up after 2 restarts")
                && text.contains(":ServerLog doomed"),
            "{text}"
        );
    });
}

#[test]
fn project_servers_load_from_the_nearest_file_under_those_given_in_lua() {
    each_nvim(|sb| {
        let proj = sb.path("proj");
        let nested = proj.join("src/deep");
        std::fs::create_dir_all(&nested).unwrap();
        std::fs::write(
            proj.join(".sharedserver.json"),
            r#"{ "servers": {
                 "web": { "command": "sleep", "args": ["1111"] },
                 "db": { "command": "sleep", "args": ["2222"], "grace_period": "5m",
                         "env": { "DB_MODE": "test" }, "restart": "on-failure:2" },
                 "cache": { "command": "sleep", "args": ["3333"], "lazy": true }
               } }"#,
        )
        .unwrap();
        let user = sb.path("xdg/config/sharedserver");
        std::fs::create_dir_all(&user).unwrap();
        std::fs::write(
            user.join("servers.json"),
            r#"{ "servers": { "tool": { "command": "sleep", "args": ["4444"], "lazy": true },
                              "db": { "command": "sleep", "args": ["9999"] } } }"#,
        )
        .unwrap();
        let init = format!(
            "vim.cmd('cd ' .. vim.fn.fnameescape({}))\n\
             require('sharedserver').setup({{ servers = {{ \
               web = {{ command = 'sleep', args = {{ '5555' }}, idle_timeout = '30s' }} }}, project = true }})",
            lua_str(nested.to_str().unwrap())
        );
        let mut a = sb.nvim(&init);
        assert_eq!(
            a.lua("return require('sharedserver').list()"),
            json!(["cache", "db", "tool", "web"])
        );
        // Lua wins for web; the nearest file wins for db.
        assert_eq!(sb.status("web").command, ["sleep", "5555"]);
        let db = sb.status("db");
        assert_eq!(db.command, ["sleep", "2222"]);
        assert_eq!(db.grace_period.as_deref(), Some("5m"));
        assert_eq!(db.cwd.as_deref(), proj.to_str());
        assert_eq!(sb.clients("db"), vec![a.pid()]);
        assert_eq!(
            a.lua(
                "local c = require('sharedserver').config('db') \
                   return { c.grace_period, c.restart, c.env.DB_MODE, c.lazy }"
            ),
            json!(["5m", "on-failure:2", "test", false])
        );
        // Lazy ones are not started.
        assert_eq!(sb.status("cache").state, State::Stopped);
        assert_eq!(sb.status("tool").state, State::Stopped);

        // A broken file is one clear notification; Lua servers still start.
        let bad = sb.path("bad");
        std::fs::create_dir(&bad).unwrap();
        std::fs::write(
            bad.join(".sharedserver.json"),
            r#"{ "servers": { "x": { "command": "sleep", "colour": "red" } } }"#,
        )
        .unwrap();
        let mut b = sb.nvim(&format!(
            "vim.cmd('cd ' .. vim.fn.fnameescape({}))\n\
             require('sharedserver').setup({{ servers = {{ other = {{ command = 'sleep', args = {{ '1000' }} }} }}, project = true }})",
            lua_str(bad.to_str().unwrap())
        ));
        let notes = b.notes();
        let errors: Vec<&String> = notes
            .iter()
            .filter(|m| m.contains("project servers"))
            .collect();
        assert_eq!(errors.len(), 1, "{notes:#?}");
        assert!(
            errors[0].contains(&bad.join(".sharedserver.json").display().to_string())
                && errors[0].contains("colour"),
            "{}",
            errors[0]
        );
        // The broken entry is left out; the user-level file's servers and
        // the Lua ones still load.
        assert_eq!(
            b.lua("return require('sharedserver').list()"),
            json!(["db", "other", "tool"])
        );
        assert_eq!(sb.clients("other"), vec![b.pid()]);
    });
}

/// `init`, counting the User SharedServerStatus events in `_G.status_events`.
fn counting_status_events(init: &str) -> String {
    format!(
        "_G.status_events = 0 \
         vim.api.nvim_create_autocmd('User', {{ pattern = 'SharedServerStatus', \
           callback = function() _G.status_events = _G.status_events + 1 end }})\n{init}"
    )
}

#[test]
fn statusline_follows_attach_grace_and_stop_and_does_no_io() {
    each_nvim(|sb| {
        let init = counting_status_events(&setup(
            r#"web = { command = "sleep", args = { "1000" }, idle_timeout = "30s" },
               brief = { command = "sleep", args = { "1000" }, idle_timeout = "1s", lazy = true }"#,
        ));
        let mut a = sb.nvim(&init);
        let line =
            |a: &mut common::nvim::Nvim| a.lua("return require('sharedserver').statusline()");
        assert_eq!(line(&mut a), json!("web●"));
        let events =
            |a: &mut common::nvim::Nvim| a.lua("return _G.status_events").as_i64().unwrap();
        assert_eq!(events(&mut a), 1);

        a.cmd("ServerStart brief");
        assert_eq!(line(&mut a), json!("⚡2"));
        // Detached, brief keeps running in its grace period, then stops.
        a.cmd("ServerStop brief");
        assert_eq!(sb.status("brief").state, State::Grace);
        assert_eq!(line(&mut a), json!("⚡2"));
        a.wait_for(
            "brief's grace period to end",
            "require('sharedserver').statusline() == 'web●'",
        );
        // The plugin counts a stopping server as gone; the watcher may still
        // be finishing the stop.
        eventually(DEADLINE, "brief to be stopped", || {
            (sb.status("brief").state == State::Stopped).then_some(())
        });
        assert_eq!(events(&mut a), 3);

        // No I/O per call: every native function and file API is counted,
        // and the lock dir is made unreadable.
        a.lua(
            "_G.io_calls = 0 \
             local function count(t, k) local f = t[k] t[k] = function(...) _G.io_calls = _G.io_calls + 1 return f(...) end end \
             local n = require('sharedserver.loader').load() \
             for k, v in pairs(n) do if type(v) == 'function' then count(n, k) end end \
             for _, k in ipairs({ 'fs_stat', 'fs_open', 'fs_scandir', 'fs_lstat' }) do count(vim.loop, k) end \
             count(io, 'open')",
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sb.lockdir, std::fs::Permissions::from_mode(0o000)).unwrap();
        let seen = a.lua(
            "local out = {} for i = 1, 100 do out[i] = require('sharedserver').statusline() end \
             return { out[1], out[100], _G.io_calls }",
        );
        std::fs::set_permissions(&sb.lockdir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(seen, json!(["web●", "web●", 0]));

        a.cmd("ServerStop web");
        assert_eq!(line(&mut a), json!("web⏳"));
        a.cmd("ServerStop! web");
        assert_eq!(line(&mut a), json!(""));
        assert_eq!(events(&mut a), 5);
    });
}

#[test]
fn what_vimenter_says_is_shown_after_it_not_as_an_autocommand_error() {
    // An error shown inside an autocommand comes under an "Error detected
    // while processing VimEnter Autocommands" header and a prompt.
    each_nvim(|sb| {
        let init = format!(
            "{}\nvim.api.nvim_create_autocmd('VimEnter', {{ callback = function() \
               _G.said_in_vimenter = #_G.notes end }})",
            setup(
                r#"gone = { command = "no-such-program-here" },
                   web = { command = "sleep", args = { "1000" } },
                   www = { command = "sleep", args = { "1000" } }"#
            )
        );
        let mut a = sb.nvim(&init);
        a.wait_for("the start-up messages", "#_G.notes == 2");
        assert_eq!(a.lua("return _G.said_in_vimenter"), json!(0));
        failure_then_one_line_of_news(sb, &a.notes());
    });
}

/// The messages of a batch that started `web` and `www` and could not
/// start `gone`: the failure, then the plain news on one line (so no
/// prompt to press ENTER).
fn failure_then_one_line_of_news(sb: &Sandbox, notes: &[String]) {
    assert!(
        notes[0].contains("cannot start 'gone': command not found: no-such-program-here"),
        "{notes:#?}"
    );
    let pid = |name| sb.status(name).pid.unwrap();
    assert_eq!(
        notes[1],
        format!(
            "sharedserver: started 'web' (pid {}); started 'www' (pid {})",
            pid("web"),
            pid("www")
        )
    );
}

#[test]
fn servers_entered_together_at_startup_are_announced_once() {
    each_nvim(|sb| {
        let init = counting_status_events(&setup(
            r#"one = { command = "sleep", args = { "1000" } },
               two = { command = "sleep", args = { "1000" } },
               three = { command = "sleep", args = { "1000" } }"#,
        ));
        let mut a = sb.nvim(&init);
        assert_eq!(
            a.lua("return { require('sharedserver').statusline(), _G.status_events }"),
            json!(["⚡3", 1])
        );
    });
}

#[test]
fn restart_keeps_the_metadata_of_other_clients() {
    each_nvim(|sb| {
        let mut a = sb.nvim(&setup(WEB));
        eventually(DEADLINE, "started", || {
            (sb.status("web").refcount == 1).then_some(())
        });
        let mut script = Command::new("sleep").arg("1000").spawn().unwrap();
        a.lua(&format!(
            "require('sharedserver.native').incref('web', {}, 'deploy script')",
            script.id()
        ));
        a.cmd("ServerRestart web");
        let st = sb.status("web");
        let meta: Vec<(u32, Option<String>)> = st
            .clients
            .iter()
            .map(|c| (c.pid, c.metadata.clone()))
            .collect();
        assert!(
            meta.contains(&(script.id(), Some("deploy script".into()))),
            "{meta:?}"
        );
        assert!(meta.contains(&(a.pid(), Some("nvim".into()))), "{meta:?}");
        let _ = script.kill();
        let _ = script.wait();
    });
}

#[test]
fn native_options_and_config_errors_name_the_origin_the_server_and_the_key() {
    each_nvim(|sb| {
        let mut a = sb.nvim("");
        let err = |a: &mut common::nvim::Nvim, call: &str| {
            a.lua(&format!(
                "local n = require('sharedserver.native') \
                 local ok, err = pcall(function() return {call} end) return tostring(err)"
            ))
            .as_str()
            .unwrap_or("")
            .to_string()
        };
        for (call, want) in [
            (
                "n.start('x', { command = 'sleep', restart = 'sometimes' })",
                "sharedserver: setup(): servers.x.restart: invalid restart policy \"sometimes\"",
            ),
            (
                "n.start('x', { command = 'sleep', ready = 'tcp://nowhere' })",
                "sharedserver: setup(): servers.x.ready: invalid readiness spec \"tcp://nowhere\"",
            ),
            (
                "n.start('x', { command = 'sleep', ready_timeout = 'soon' })",
                "sharedserver: setup(): servers.x.ready_timeout: invalid duration \"soon\"",
            ),
            (
                "n.start('x', { command = 'sleep', startup_check = { 1 } })",
                "sharedserver: setup(): servers.x.startup_check: must be a duration",
            ),
            (
                "n.start('x', { command = 'sleep', gracePeriood = '1s' })",
                "sharedserver: setup(): servers.x.gracePeriood: unknown key (did you mean `grace_period`?)",
            ),
            (
                "n.start('x', { command = 'sleep', env = { ['A=B'] = 'c' } })",
                "sharedserver: setup(): servers.x.env.A=B: a variable name must be non-empty and contain no '='",
            ),
            (
                "n.start(string.rep('a', 65), { command = 'sleep' })",
                "sharedserver: setup(): servers: invalid server name",
            ),
        ] {
            let got = err(&mut a, call);
            assert!(got.starts_with(want), "{call}: {got}");
            assert!(
                !got.contains('\n') && !got.contains("runtime error"),
                "one clean line: {got}"
            );
        }
        let got = err(
            &mut a,
            "require('sharedserver').setup({ servers = { y = { command = 'sleep', restart = 'always' } } })",
        );
        assert!(
            got.starts_with("sharedserver: setup(): servers.y.restart: invalid restart policy"),
            "{got}"
        );
        // A name that is too long is refused by setup(), not at VimEnter.
        let got = err(
            &mut a,
            &format!(
                "require('sharedserver').setup({{ servers = {{ {} = {{ command = 'sleep' }} }} }})",
                "a".repeat(65)
            ),
        );
        assert!(got.contains("longer than 64"), "{got}");

        // The same value gets the same message from a config file (through
        // the CLI) and from setup(); only the origin differs.
        let dir = sb.path("cfg");
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join(".sharedserver.json");
        std::fs::write(
            &file,
            r#"{ "servers": { "z": { "command": "sleep", "gracePeriod": "5 parsecs" }, "ok": { "command": "sleep" } } }"#,
        )
        .unwrap();
        let from_setup = err(
            &mut a,
            "require('sharedserver').setup({ servers = { z = { command = 'sleep', gracePeriod = '5 parsecs' } } })",
        );
        let cli = Command::new(BIN)
            .args(["config", "z"])
            .current_dir(&dir)
            .env("SHAREDSERVER_LOCKDIR", &sb.lockdir)
            .env("XDG_CONFIG_HOME", sb.path("xdg/config"))
            .output()
            .unwrap();
        let from_cli = String::from_utf8_lossy(&cli.stderr).trim().to_string();
        let tail = "servers.z.grace_period: invalid duration \"5 parsecs\"";
        assert!(
            from_cli.starts_with(&format!("sharedserver: {}: {tail}", file.display())),
            "{from_cli}"
        );
        assert_eq!(
            from_setup.split_once(tail).map(|(_, rest)| rest),
            from_cli.split_once(tail).map(|(_, rest)| rest),
            "{from_setup} vs {from_cli}"
        );
        assert!(from_setup.starts_with(&format!("sharedserver: setup(): {tail}")));
        // One bad entry is reported; the others still read.
        let defs = a.lua(&format!(
            "return require('sharedserver.native').config({})",
            lua_str(dir.to_str().unwrap())
        ));
        let by_name = |n: &str| {
            defs.as_array()
                .unwrap()
                .iter()
                .find(|d| d["name"] == n)
                .unwrap()
                .clone()
        };
        assert!(
            by_name("z")["error"].as_str().unwrap().contains(tail),
            "{defs}"
        );
        assert_eq!(by_name("ok")["spec"]["command"], json!("sleep"));

        std::fs::write(
            &file,
            r#"{ "servers": { "z": { "command": "sleep", "args": ["1"], "ready": "tcp://127.0.0.1:9" } } }"#,
        )
        .unwrap();
        let def = a.lua(&format!(
            "return require('sharedserver.native').config({})[1]",
            lua_str(dir.to_str().unwrap())
        ));
        assert_eq!(def["name"], json!("z"));
        assert_eq!(def["spec"]["command"], json!("sleep"));
        assert_eq!(def["spec"]["args"], json!(["1"]));
        assert_eq!(def["source"], json!(file.to_str().unwrap()));
        assert_eq!(def["spec"]["working_dir"], json!(dir.to_str().unwrap()));
        assert_eq!(def["spec"]["ready"], json!("tcp://127.0.0.1:9"));
        assert_eq!(
            a.lua("return require('sharedserver.native').log_path('z')"),
            json!(sb.lockdir.join("z.log").to_str().unwrap())
        );
    });
}

#[test]
fn native_failures_reach_the_user_without_a_traceback() {
    each_nvim(|sb| {
        let mut a = sb.nvim(&setup(
            r#"missing = { command = "surely-not-a-command-xyz", lazy = true },
               quick = { command = "sh", args = { "-c", "exit 3" }, lazy = true }"#,
        ));
        let ret = a.lua(
            "local ss = require('sharedserver') \
             local _, missing = ss.start('missing') \
             local _, quick = ss.start('quick') \
             local _, stop = ss.stop('quick', { force = true }) \
             return { missing, quick, stop }",
        );
        a.cmd("silent! ServerStop! quick");
        let notes = a.notes();
        for text in ret
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .chain(notes.iter().cloned())
        {
            assert!(
                !text.contains("runtime error")
                    && !text.contains("traceback")
                    && !text.contains("[C]:"),
                "{text}"
            );
        }
        let msgs: Vec<&str> = ret
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap_or_default())
            .collect();
        assert!(msgs[0].contains("surely-not-a-command-xyz"), "{msgs:?}");
        assert!(msgs[1].contains("'quick'"), "{msgs:?}");
        assert!(
            msgs[2].contains("'quick' is not running") && !msgs[2].contains('\n'),
            "{msgs:?}"
        );
    });
}

#[test]
fn joining_a_server_started_with_other_options_warns_once() {
    each_nvim(|sb| {
        let _holder =
            running_elsewhere_as(sb, "web", &["--grace-period", "5m", "--", "sleep", "2000"]);
        let mut a = sb.nvim(&setup(WEB));
        assert_eq!(sb.status("web").refcount, 2);
        let notes = a.notes();
        let warnings: Vec<&String> = notes
            .iter()
            .filter(|m| m.contains("already runs with another"))
            .collect();
        assert_eq!(warnings.len(), 1, "{notes:#?}");
        assert!(
            warnings[0].contains("command (sleep 2000)")
                && warnings[0].contains("grace period (5m)"),
            "{}",
            warnings[0]
        );
    });
}

/// Every setup() example in README.md and doc/sharedserver.txt: Lua blocks
/// that call setup(), lazy.nvim specs (whose `opts` lazy.nvim passes to
/// setup()), and inline `setup(...)` spans. Each as a chunk of Lua.
fn setup_examples() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let as_chunk = |code: &str| -> Option<String> {
        let code = code.trim();
        if code.starts_with('{') && code.contains("opts") {
            // A lazy.nvim plugin spec: lazy.nvim calls setup(spec.opts).
            Some(format!(
                "local spec = {code}\nrequire('sharedserver').setup(spec.opts)"
            ))
        } else if code.starts_with("setup(") {
            Some(format!("require('sharedserver').{code}"))
        } else if code.contains("setup(") {
            Some(code.to_string())
        } else {
            None
        }
    };
    for (file, open, close) in [
        ("README.md", "```lua\n", "```"),
        ("doc/sharedserver.txt", ">lua\n", "\n<"),
    ] {
        let text = std::fs::read_to_string(Path::new(REPO).join(file)).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find(open) {
            let body = &rest[i + open.len()..];
            let end = body.find(close).unwrap_or(body.len());
            if let Some(chunk) = as_chunk(&body[..end]) {
                out.push((file.to_string(), chunk));
            }
            rest = &body[end..];
        }
        // Inline spans such as `setup({ project = true })`.
        for span in text.split('`').skip(1).step_by(2) {
            if span.starts_with("setup(") && span.ends_with(')') {
                out.push((file.to_string(), as_chunk(span).unwrap()));
            }
        }
    }
    out
}

#[test]
fn every_setup_example_in_the_docs_runs() {
    let mut examples = setup_examples();
    assert!(
        examples.len() >= 6
            && examples.iter().any(|(_, c)| c.contains("project = true"))
            && examples.iter().any(|(f, _)| f == "README.md"),
        "the extractor found too few examples: {examples:#?}"
    );
    // Options-only tables are the options form, never a list of servers.
    for chunk in [
        "require('sharedserver').setup({ notify = { on_attach = true } })",
        "require('sharedserver').setup({ commands = false })",
        "require('sharedserver').setup({ project = true, notify = { on_error = false } })",
    ] {
        examples.push(("options-only".into(), chunk.into()));
    }
    let nv = &nvims()[0];
    for (file, chunk) in &examples {
        // No binary: the examples' servers (redis-server, chroma, ...) are
        // never really started; setup() itself must accept every form.
        let mut sb = Sandbox::new(nv);
        sb.hide_binary_from_path();
        let mut a = sb.nvim(&format!(
            "_G.example_error = nil\n\
             local ok, err = pcall(function()\n{chunk}\nend)\n\
             if not ok then _G.example_error = tostring(err) end"
        ));
        assert_eq!(
            a.lua("return _G.example_error"),
            serde_json::Value::Null,
            "{file}: {chunk}"
        );
    }
}

#[test]
fn a_server_with_port_auto_shows_its_port_in_status_and_the_status_window() {
    each_nvim(|sb| {
        let mut a = sb.nvim(&setup(
            r#"web = { command = "sh", args = { "-c", "exec sleep 1000", "${PORT}" }, port = "auto", idle_timeout = "30s" }"#,
        ));
        let st = eventually(DEADLINE, "web started", || {
            let st = sb.status("web");
            (st.refcount == 1).then_some(st)
        });
        let port = st.port.expect("the status has the port");
        assert_eq!(st.command[3], port.to_string(), "${{PORT}} replaced");
        assert_eq!(
            a.lua("return require('sharedserver').status('web').port"),
            json!(port)
        );
        a.cmd("ServerStatus");
        let lines = a.lines();
        assert!(
            tokens(&lines[2]).ends_with(&["port".to_string(), port.to_string()]),
            "{lines:#?}"
        );
        a.cmd("close");
        a.cmd("ServerStatus web");
        let lines = a.lines();
        assert!(
            lines
                .iter()
                .any(|l| tokens(l) == ["port", &port.to_string()]),
            "{lines:#?}"
        );
    });
}

#[test]
fn setup_works_before_the_native_module_is_built() {
    each_nvim(|sb| {
        // A fresh install: lazy.nvim runs setup() before the first build.
        let tree = sb.path("plugin");
        common::nvim::copy_tree(plugin_dir(), &tree);
        let _ = std::fs::remove_file(tree.join("lua/sharedserver/native.so"));
        let mut a = sb.nvim(&format!(
            "vim.opt.rtp:prepend({})\n{}",
            lua_str(tree.to_str().unwrap()),
            setup(WEB)
        ));
        assert_eq!(
            a.lua("return require('sharedserver').list()"),
            json!(["web"])
        );
        let notes = a.notes();
        assert!(
            notes
                .iter()
                .any(|m| m.contains("native module not found") && m.contains("build")),
            "{notes:#?}"
        );
    });
}

/// A process that takes `name`'s lock and stops itself, as a `use` stopped
/// with the lock would; once resumed (SIGCONT), it exits and lets go.
fn stopped_lock_holder(sb: &Sandbox, name: &str) -> std::process::Child {
    let held = sb.path("held");
    let script = "import fcntl, os, signal, sys\n\
                  f = open(sys.argv[1], 'a')\n\
                  fcntl.flock(f, fcntl.LOCK_EX)\n\
                  open(sys.argv[2], 'w').close()\n\
                  os.kill(os.getpid(), signal.SIGSTOP)\n";
    let holder = Command::new("python3")
        .args(["-c", script])
        .arg(sb.lockdir.join(format!("{name}.lock")))
        .arg(&held)
        .spawn()
        .unwrap();
    eventually(DEADLINE, "the holder has the lock", || held.exists());
    holder
}

#[test]
fn a_stuck_lock_holder_never_freezes_the_editor_and_the_start_finishes_once_it_lets_go() {
    each_nvim(|sb| {
        let mut a = sb.nvim(&setup(
            r#"web = { command = "sleep", args = { "1000" }, lazy = true }"#,
        ));
        let mut holder = stopped_lock_holder(sb, "web");
        // The call returns at once (no status yet), and the editor answers
        // while the lock stays held: the start is retried from a timer.
        let ret =
            a.lua("local ok, st = require('sharedserver').start('web') return { ok, st == nil }");
        assert_eq!(ret, json!([true, true]));
        for _ in 0..3 {
            assert_eq!(a.lua("return vim.fn.getpid() > 0"), json!(true));
        }
        assert_eq!(
            a.lua("return require('sharedserver.native').status('web').state"),
            json!("stopped")
        );
        // Let go: the retry attaches.
        signal(holder.id(), Signal::SIGCONT);
        let _ = holder.wait();
        eventually(DEADLINE, "the retried start attached", || {
            a.lua("return require('sharedserver.native').status('web').refcount") == json!(1)
        });
        a.lua("require('sharedserver').stop('web', { force = true })");
    });
}

#[test]
fn a_lock_holder_that_never_lets_go_is_reported_once_naming_it() {
    each_nvim(|sb| {
        let mut a = sb.nvim(&setup(
            r#"web = { command = "sleep", args = { "1000" }, lazy = true }"#,
        ));
        let mut holder = stopped_lock_holder(sb, "web");
        // Give up sooner than the 30 s default.
        a.lua("require('sharedserver.retry').TOTAL_MS = 300");
        assert_eq!(
            a.lua("local ok, st = require('sharedserver').start('web') return { ok, st == nil }"),
            json!([true, true])
        );
        let want = format!("held by pid {}", holder.id());
        let notes = eventually(DEADLINE, "the give-up is reported", || {
            let notes = a.notes();
            notes.iter().any(|n| n.contains(&want)).then_some(notes)
        });
        let _ = holder.kill();
        let _ = holder.wait();
        let reports: Vec<&String> = notes.iter().filter(|n| n.contains(&want)).collect();
        assert_eq!(reports.len(), 1, "{notes:#?}");
        assert!(
            !reports[0].contains('\n') && reports[0].contains("which is stopped"),
            "{}",
            reports[0]
        );
        assert_eq!(
            a.lua("return require('sharedserver.native').status('web').state"),
            json!("stopped")
        );
    });
}

#[test]
fn attaching_during_a_slow_stop_never_freezes_the_editor_and_starts_afresh_after_it() {
    each_nvim(|sb| {
        let cli = |args: &[&str]| {
            let mut c = Command::new(BIN);
            c.args(args).env("SHAREDSERVER_LOCKDIR", &sb.lockdir);
            c
        };
        // A server that ignores SIGTERM: its stop lasts until the SIGKILL.
        let deaf = sb.path("deaf");
        let slow = "import signal, sys, time\n\
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n\
                    open(sys.argv[1], 'w').close()\n\
                    time.sleep(1000)\n";
        let _client = running_elsewhere_as(
            sb,
            "web",
            &["--", "python3", "-c", slow, deaf.to_str().unwrap()],
        );
        eventually(DEADLINE, "the server ignores SIGTERM", || deaf.exists());
        let old = sb.status("web").pid.unwrap();
        let mut stopper = cli(&["admin", "stop", "web", "--force", "--timeout", "10m"])
            .spawn()
            .unwrap();
        eventually(DEADLINE, "web is stopping", || {
            sb.status("web").state == State::Stopping
        });
        let mut a = sb.nvim(&setup(
            r#"web = { command = "sleep", args = { "1000" }, lazy = true }"#,
        ));
        // The start returns at once and the editor answers during the stop.
        let ret =
            a.lua("local ok, st = require('sharedserver').start('web') return { ok, st == nil }");
        assert_eq!(ret, json!([true, true]));
        for _ in 0..3 {
            assert_eq!(a.lua("return vim.fn.getpid() > 0"), json!(true));
        }
        assert_eq!(sb.status("web").state, State::Stopping);
        // The stop ends: the retried start starts the server afresh.
        let out = cli(&["admin", "kill", "web"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = stopper.wait();
        eventually(DEADLINE, "the retried start started web again", || {
            let st = sb.status("web");
            st.pid.is_some_and(|p| p != old) && st.clients.iter().any(|c| c.pid == a.pid())
        });
        a.lua("require('sharedserver').stop('web', { force = true })");
    });
}

#[test]
fn lua_modules_load_from_bytecode_only_while_their_source_is_unchanged() {
    each_nvim(|sb| {
        let tree = plugin_copy(sb);
        let init = format!("vim.opt.rtp:prepend({})", lua_str(tree.to_str().unwrap()));
        let probe = "require('sharedserver').setup({}) \
                     local c = require('sharedserver.compiled') \
                     return { loaded = vim.tbl_keys(c.loaded), root = require('sharedserver.loader').root, \
                              marker = require('sharedserver.config').marker }";
        let loaded = |v: &serde_json::Value, name: &str| {
            v["loaded"].as_array().unwrap().iter().any(|m| m == name)
        };

        // Not compiled: everything from source.
        let before = sb.nvim(&init).lua(probe);
        assert_eq!(before["loaded"], json!([]), "{before}");

        // build.lua's step, by the Neovim that will load it.
        let count = sb
            .nvim(&init)
            .lua("local n, err = require('sharedserver.compile').compile() return err or n");
        assert!(count.as_i64().is_some_and(|n| n > 20), "{count}");
        let after = sb.nvim(&init).lua(probe);
        for name in [
            "sharedserver.api",
            "sharedserver.config",
            "sharedserver.state",
        ] {
            assert!(loaded(&after, name), "{name} not from bytecode: {after}");
        }
        // The bytecode names its sources where they are: the root is right.
        assert_eq!(after["root"], json!(tree.to_str().unwrap()));

        // An edited source is loaded from source, never from stale bytecode.
        let config = tree.join("lua/sharedserver/config.lua");
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            text.replace("local M = {}", "local M = { marker = 1 }"),
        )
        .unwrap();
        let mut edited = sb.nvim(&init);
        let seen = edited.lua(probe);
        assert_eq!(seen["marker"], json!(1), "{seen}");
        assert!(!loaded(&seen, "sharedserver.config"), "{seen}");
        assert!(loaded(&seen, "sharedserver.api"), "{seen}");
        let text = health(&mut edited);
        assert!(text.contains("changed since the build"), "{text}");

        // Bytecode from another Lua (another Neovim) is never loaded.
        let manifest = tree.join("bytecode/manifest.lua");
        let m = std::fs::read_to_string(&manifest).unwrap();
        let lua_line = m
            .lines()
            .find(|l| l.contains("lua = "))
            .unwrap()
            .to_string();
        std::fs::write(&manifest, m.replace(&lua_line, "  lua = \"Lua 9.9\",")).unwrap();
        let other = sb.nvim(&init).lua(probe);
        assert_eq!(other["loaded"], json!([]), "{other}");
    });
}

#[test]
fn a_server_whose_own_binary_is_wrong_is_reported_never_started_but_joined_when_running() {
    const OWN_BAD: &str =
        r#"web = { command = "sleep", args = { "1000" }, binary = "/nonexistent/sharedserver" }"#;
    each_nvim(|sb| {
        // The global binary is found, but never stands in for a server's own.
        let mut a = sb.nvim(&setup(OWN_BAD));
        let notes = a.notes();
        assert!(
            notes.iter().any(|m| m.contains("cannot start 'web'")
                && m.contains("the `binary` option points to /nonexistent/sharedserver")),
            "{notes:#?}"
        );
        assert_eq!(sb.status("web").state, State::Stopped);

        // Running (started by another Neovim), it is joined: attaching needs
        // no binary.
        let starter = sb.nvim(&setup(WEB));
        eventually(DEADLINE, "started", || {
            (sb.clients("web") == vec![starter.pid()]).then_some(())
        });
        let joiner = sb.nvim(&setup(OWN_BAD));
        eventually(DEADLINE, "joined", || {
            (sb.clients("web") == sorted(vec![starter.pid(), joiner.pid()])).then_some(())
        });
    });
}

/// Lua defining `R(name)`: register and start a server that crashes (exit
/// 7) three times under `on-failure:2`, its on_exit arguments kept in
/// `_G.exits[name]`.
const CRASHER: &str = r#"_G.exits = {}
_G.R = function(name)
  local ss = require('sharedserver')
  ss.register(name, { command = "sh", args = { "-c", "sleep 0.5; exit 7" }, restart = "on-failure:2",
    on_exit = function(c, e) _G.exits[name] = tostring(c) .. " " .. tostring(e and e.kind) end })
  return ss.start(name)
end"#;

/// Wait until `name` has given up restarting (read from the lock dir, not
/// through Neovim, which may be blocked).
fn wait_gave_up(sb: &Sandbox, name: &str) {
    eventually(DEADLINE, &format!("'{name}' to give up"), || {
        let st = sb.status(name);
        (st.state == State::Stopped
            && st
                .last_exit
                .is_some_and(|l| l.kind == sharedserver::record::ExitKind::GaveUp))
        .then_some(())
    });
}

/// The messages about `name`, in order.
fn notes_about(a: &mut common::nvim::Nvim, name: &str) -> Vec<String> {
    let needle = format!("'{name}'");
    a.notes()
        .into_iter()
        .filter(|m| m.contains(&needle))
        .collect()
}

/// Start the crashing `c8`, then put a hit-enter prompt up through a UI (a
/// second connection to the first Neovim's socket): while it waits there,
/// Neovim runs no scheduled callback (but polls its event loop). Returns the
/// UI and how many notes there were before the prompt.
fn crash_behind_a_prompt(sb: &Sandbox, a: &mut common::nvim::Nvim) -> (common::rpc::Rpc, usize) {
    use common::rpc::{Rpc, Value};
    let mut ui = Rpc::connect(&sb.path("nvim0.sock"), DEADLINE).unwrap();
    ui.call(
        "nvim_ui_attach",
        vec![Value::from(80), Value::from(24), Value::Map(vec![])],
    )
    .unwrap();
    a.lua("R('c8')");
    let before = a.notes().len();
    ui.call(
        "nvim_input",
        vec![Value::from(":echo repeat('x', 300)<CR>")],
    )
    .unwrap();
    (ui, before)
}

#[test]
fn restarts_and_the_give_up_are_reported_after_a_hit_enter_prompt_held_neovim() {
    use common::rpc::Value;
    each_nvim(|sb| {
        let mut a = sb.nvim(&format!("{}\n{CRASHER}", setup("")));
        let (mut ui, _) = crash_behind_a_prompt(sb, &mut a);
        let mut blocked = || ui_mode(&mut ui) == ("r".to_string(), true);
        eventually(DEADLINE, "the hit-enter prompt", || blocked().then_some(()));
        wait_gave_up(sb, "c8");
        assert!(blocked(), "the prompt was still up when c8 gave up");
        ui.call("nvim_input", vec![Value::from("<CR>")]).unwrap();
        a.wait_for("on_exit", "_G.exits.c8 ~= nil");
        assert_eq!(a.lua("return _G.exits.c8"), json!("7 gave-up"));
        let notes: Vec<String> = notes_about(&mut a, "c8")
            .into_iter()
            .filter(|m| m.contains("crashed"))
            .collect();
        assert_eq!(notes.len(), 3, "{notes:#?}");
        assert_eq!(
            notes[0],
            "sharedserver: 'c8' crashed (exit 7); restarting, attempt 1"
        );
        assert_eq!(
            notes[1],
            "sharedserver: 'c8' crashed (exit 7); restarting, attempt 2"
        );
        assert!(
            notes[2].starts_with("sharedserver: 'c8' crashed (exit 7); gave up after 2 restarts"),
            "{notes:#?}"
        );

        // Blocked outright (its event loop too, so nothing is read until
        // the end): the give-up is still reported, with its code and kind.
        a.lua(
            "R('busy') local dir = os.getenv('SHAREDSERVER_LOCKDIR') \
             local deadline = os.time() + 20 \
             while not (vim.loop.fs_stat(dir .. '/busy.last') and not vim.loop.fs_stat(dir .. '/busy.json')) \
               and os.time() < deadline do vim.loop.sleep(20) end",
        );
        wait_gave_up(sb, "busy");
        a.wait_for("on_exit", "_G.exits.busy ~= nil");
        assert_eq!(a.lua("return _G.exits.busy"), json!("7 gave-up"));
        let notes = notes_about(&mut a, "busy");
        assert!(
            notes
                .last()
                .unwrap()
                .starts_with("sharedserver: 'busy' crashed (exit 7); gave up after 2 restarts"),
            "{notes:#?}"
        );
    });
}

/// Neovim's mode as (mode, blocking), asked on `ui` (a fast request,
/// answered even while Neovim waits at a prompt).
fn ui_mode(ui: &mut common::rpc::Rpc) -> (String, bool) {
    let v = ui.call("nvim_get_mode", vec![]).unwrap();
    let field = |k: &str| {
        v.as_map()
            .and_then(|m| m.iter().find(|(key, _)| key.as_str() == Some(k)))
            .map(|(_, v)| v.clone())
    };
    (
        field("mode")
            .and_then(|m| m.as_str().map(String::from))
            .unwrap_or_default(),
        field("blocking").and_then(|b| b.as_bool()).unwrap_or(false),
    )
}

/// Init-file Lua that runs `body` from a `User VeryLazy` autocommand (as
/// lazy.nvim's `event = "VeryLazy"` does, after VimEnter) and then keeps in
/// `_G.said_in_autocmd` how many messages were shown inside it.
fn very_lazy(body: &str) -> String {
    format!(
        "vim.api.nvim_create_autocmd('User', {{ pattern = 'VeryLazy', callback = function() \
           {body} _G.said_in_autocmd = #_G.notes end }})"
    )
}

#[test]
fn setup_from_lazy_nvims_very_lazy_event_reports_after_the_autocommand() {
    each_nvim(|sb| {
        let mut a = sb.nvim(&very_lazy(&setup(
            r#"gone = { command = "no-such-program-here" },
               web = { command = "sleep", args = { "1000" } },
               www = { command = "sleep", args = { "1000" } }"#,
        )));
        a.cmd("doautocmd User VeryLazy");
        a.wait_for("the messages", "#_G.notes == 2");
        assert_eq!(a.lua("return _G.said_in_autocmd"), json!(0));
        failure_then_one_line_of_news(sb, &a.notes());
    });
}

#[test]
fn one_cause_met_by_every_server_is_reported_once() {
    use std::os::unix::fs::PermissionsExt;
    let two = r#"web = { command = "sleep", args = { "1000" } },
                 www = { command = "sleep", args = { "1000" } }"#;
    let count = |notes: &[String], what: &str| notes.iter().filter(|m| m.contains(what)).count();
    each_nvim(|sb| {
        // An unsafe lock dir, met by both servers entered after VimEnter.
        std::fs::set_permissions(&sb.lockdir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut a = sb.nvim(&very_lazy(&setup(two)));
        a.cmd("doautocmd User VeryLazy");
        a.wait_for("the messages", "#_G.notes > 0");
        let notes = a.notes();
        std::fs::set_permissions(&sb.lockdir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(count(&notes, "unsafe lock directory"), 1, "{notes:#?}");
        assert_eq!(notes.len(), 1, "{notes:#?}");

        // No native module yet: met by the project files' reading and by
        // the servers' start, at VimEnter and after it.
        let tree = sb.path("plugin");
        common::nvim::copy_tree(plugin_dir(), &tree);
        let _ = std::fs::remove_file(tree.join("lua/sharedserver/native.so"));
        let rtp = format!("vim.opt.rtp:prepend({})", lua_str(tree.to_str().unwrap()));
        let with_project = setup(two).replace("servers =", "project = true, servers =");
        let mut b = sb.nvim(&format!("{rtp}\n{with_project}"));
        b.wait_for("the messages", "#_G.notes > 0");
        let notes = b.notes();
        assert_eq!(count(&notes, "native module not found"), 1, "{notes:#?}");
        assert_eq!(notes.len(), 1, "{notes:#?}");
        let mut c = sb.nvim(&format!("{rtp}\n{}", very_lazy(&with_project)));
        c.cmd("doautocmd User VeryLazy");
        c.wait_for("the messages", "#_G.notes > 0");
        let notes = c.notes();
        assert_eq!(count(&notes, "native module not found"), 1, "{notes:#?}");
        assert_eq!(notes.len(), 1, "{notes:#?}");
    });
}

#[test]
fn a_forced_stop_says_once_that_the_server_stopped() {
    each_nvim(|sb| {
        let mut a = sb.nvim(&setup(&format!(
            "{WEB}, other = {{ command = 'sleep', args = {{ '1000' }} }}, \
             third = {{ command = 'sleep', args = {{ '1000' }} }}"
        )));
        let before = a.notes().len();
        a.cmd("ServerStop! third");
        a.cmd("ServerStopAll!");
        let notes = a.notes()[before..].to_vec();
        for name in ["web", "other", "third"] {
            let about: Vec<&String> = notes
                .iter()
                .filter(|m| m.contains(&format!("'{name}'")))
                .collect();
            assert_eq!(about.len(), 1, "{notes:#?}");
            assert!(
                about[0].starts_with(&format!("sharedserver: stopped '{name}'")),
                "{notes:#?}"
            );
        }
    });
}

#[test]
fn a_server_neovim_does_not_know_is_named_in_neovim_terms() {
    each_nvim(|sb| {
        let mut a = sb.nvim(&setup(""));
        let said = a.lua("local _, err = require('sharedserver').start('../x') return err");
        assert_eq!(
            said,
            json!("no server named '../x' is configured (no servers are configured; add them to setup({ servers = ... }))")
        );
        for cmd in ["ServerStop! nosuch", "ServerStop nosuch"] {
            a.cmd(cmd);
            let last = a.notes().pop().unwrap();
            assert_eq!(
                last,
                "sharedserver: no server named 'nosuch' is running, and none is configured in this Neovim (:ServerStatus lists the servers)",
                "{cmd}"
            );
        }
        a.lua("require('sharedserver').register('web', { command = 'sleep', args = { '1000' }, lazy = true })");
        a.cmd("ServerStop! web");
        assert_eq!(
            a.notes().pop().unwrap(),
            "sharedserver: 'web' is not running (:ServerStart web starts it)"
        );
        let said = a.lua("local _, err = require('sharedserver').start('nosuch') return err");
        assert_eq!(
            said,
            json!("no server named 'nosuch' is configured (configured: web)")
        );
    });
}

#[test]
fn a_start_typed_at_a_hit_enter_prompt_comes_after_the_news_read_before_it() {
    use common::rpc::Value;
    each_nvim(|sb| {
        let mut a = sb.nvim(&format!("{}\n{CRASHER}", setup("")));
        let (mut ui, before) = crash_behind_a_prompt(sb, &mut a);
        eventually(DEADLINE, "the hit-enter prompt", || {
            (ui_mode(&mut ui) == ("r".to_string(), true)).then_some(())
        });
        wait_gave_up(sb, "c8");
        // Typed at the prompt, the start runs before the views of the
        // crashes (read while the prompt was up) are applied.
        ui.call("nvim_input", vec![Value::from(":ServerStart c8<CR>")])
            .unwrap();
        a.wait_for("the new start", "#_G.notes >= 5");
        let notes = a.notes()[before..before + 4].to_vec();
        let second = notes[3].clone();
        assert_eq!(
            notes[..2],
            [
                "sharedserver: 'c8' crashed (exit 7); restarting, attempt 1",
                "sharedserver: 'c8' crashed (exit 7); restarting, attempt 2",
            ],
            "{notes:#?}"
        );
        assert!(
            notes[2].starts_with("sharedserver: 'c8' crashed (exit 7); gave up after 2 restarts"),
            "{notes:#?}"
        );
        assert!(
            second.starts_with("sharedserver: started 'c8' (pid "),
            "{notes:#?}"
        );
        assert_eq!(a.lua("return _G.exits.c8"), json!("7 gave-up"));
        let pid = a.lua("return require('sharedserver').status('c8').pid");
        assert_eq!(second, format!("sharedserver: started 'c8' (pid {pid})"));
    });
}
