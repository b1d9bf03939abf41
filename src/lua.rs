//! The Neovim native module, `require("sharedserver.native")`: a thin mlua
//! adapter over [`Lifecycle`]. It holds no state logic of its own; status,
//! list, incref and decref run in Neovim's process without spawning anything.

use crate::duration;
use crate::lifecycle::{AttachRequest, IfRunning, Lifecycle, StartSpec};
use crate::name::ServerName;
use crate::probe::ReadySpec;
use crate::process::ProcessId;
use crate::record::RestartPolicy;
use crate::store::Store;
use crate::Error;
use mlua::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// The `sharedserver` binary used to run watchers (set by `set_binary` or a
/// `start` spec). Only cold starts and watcher recovery need it.
static BINARY: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The store for the lock directory in effect. Checking the directory's
/// safety costs a few syscalls, so it is done once per directory per
/// process, not on every status call.
static STORE: Mutex<Option<Store>> = Mutex::new(None);

fn lifecycle() -> LuaResult<Lifecycle> {
    let dir = crate::lockdir::resolve();
    let cached = STORE
        .lock()
        .ok()
        .and_then(|s| s.clone())
        .filter(|s| s.dir() == dir);
    let store = match cached {
        Some(store) => store,
        None => {
            let store = Store::at(dir).map_err(lua_err)?;
            if let Ok(mut slot) = STORE.lock() {
                *slot = Some(store.clone());
            }
            store
        }
    };
    let exe = BINARY.lock().map(|b| b.clone()).unwrap_or(None);
    Ok(Lifecycle::new(store, exe))
}

fn lua_err(e: Error) -> LuaError {
    LuaError::RuntimeError(format!("sharedserver: {e}"))
}

fn name(raw: &str) -> LuaResult<ServerName> {
    ServerName::parse(raw).map_err(lua_err)
}

fn client(pid: Option<u32>) -> LuaResult<ProcessId> {
    match pid {
        None => Ok(ProcessId::current()),
        Some(pid) => crate::process::client(pid, false).map_err(lua_err),
    }
}

fn to_lua<T: serde::Serialize>(lua: &Lua, value: &T) -> LuaResult<LuaValue> {
    // Absent values become nil, not a null sentinel, so `if s.pid then` works.
    let opts = LuaSerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    lua.to_value_with(value, opts)
}

/// Options accepted by `start(name, spec)`.
#[derive(Default)]
struct Spec {
    command: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    working_dir: Option<PathBuf>,
    log_file: Option<PathBuf>,
    grace_period: Duration,
    binary: Option<PathBuf>,
    metadata: Option<String>,
    ready: Option<String>,
    ready_timeout: Duration,
    restart: Option<RestartPolicy>,
    startup_check: crate::lifecycle::StartupCheck,
}

/// A duration option: a string such as "30m", or a number of seconds.
fn duration_opt(
    t: &LuaTable,
    key: &str,
    bad: &dyn Fn(&str, &str) -> LuaError,
) -> LuaResult<Option<Duration>> {
    let want = "a duration string such as \"30s\", or a number of seconds";
    match t.get::<LuaValue>(key)? {
        LuaValue::Nil => Ok(None),
        LuaValue::Integer(n) if n >= 0 => Duration::from_secs(n as u64)
            .le(&duration::MAX)
            .then(|| Some(Duration::from_secs(n as u64)))
            .ok_or_else(|| bad(key, &format!("{want} (at most 100 years)"))),
        LuaValue::Number(n) if n >= 0.0 && n.is_finite() => Duration::try_from_secs_f64(n)
            .ok()
            .filter(|d| *d <= duration::MAX)
            .map(Some)
            .ok_or_else(|| bad(key, &format!("{want} (at most 100 years)"))),
        LuaValue::String(s) => match duration::parse(&s.to_str()?) {
            Ok(d) => Ok(Some(d)),
            Err(e) => Err(bad(key, &format!("{want} ({e})"))),
        },
        _ => Err(bad(key, want)),
    }
}

/// `startup_check`: "D" or "fixed:D" as the CLI reads it, or seconds.
fn startup_check_opt(
    t: &LuaTable,
    bad: &dyn Fn(&str, &str) -> LuaError,
) -> LuaResult<crate::lifecycle::StartupCheck> {
    use crate::lifecycle::StartupCheck;
    if let LuaValue::String(s) = t.get::<LuaValue>("startup_check")? {
        return StartupCheck::parse(&s.to_str()?).map_err(|e| {
            bad(
                "startup_check",
                &format!("a duration string such as \"50ms\" or \"fixed:2s\" ({e})"),
            )
        });
    }
    Ok(match duration_opt(t, "startup_check", bad)? {
        Some(window) => StartupCheck {
            window,
            fixed: false,
        },
        None => StartupCheck::DEFAULT,
    })
}

fn spec_from(name: &str, t: &LuaTable) -> LuaResult<Spec> {
    let bad = |key: &str, want: &str| {
        LuaError::RuntimeError(format!(
            "sharedserver: server '{name}': option `{key}` must be {want}"
        ))
    };
    let command: Option<String> = t.get("command").map_err(|_| bad("command", "a string"))?;
    let ready: Option<String> = t.get("ready").map_err(|_| {
        bad(
            "ready",
            "a readiness spec string such as \"tcp://127.0.0.1:8000\"",
        )
    })?;
    if let Some(spec) = &ready {
        ReadySpec::parse(spec).map_err(|e| {
            LuaError::RuntimeError(format!(
                "sharedserver: server '{name}': option `ready`: {e}"
            ))
        })?;
    }
    let restart = match t.get::<LuaValue>("restart")? {
        LuaValue::Nil | LuaValue::Boolean(false) => None,
        LuaValue::String(s) => RestartPolicy::parse(&s.to_str()?).map_err(|e| {
            LuaError::RuntimeError(format!(
                "sharedserver: server '{name}': option `restart`: {e}"
            ))
        })?,
        _ => {
            return Err(bad(
                "restart",
                "\"on-failure\", \"on-failure:MAX\" or \"no\"",
            ))
        }
    };
    Ok(Spec {
        command: command.ok_or_else(|| bad("command", "a string (the program to run)"))?,
        args: t
            .get::<Option<Vec<String>>>("args")
            .map_err(|_| bad("args", "a list of strings"))?
            .unwrap_or_default(),
        env: t
            .get::<Option<BTreeMap<String, String>>>("env")
            .map_err(|_| bad("env", "a table of string keys and values"))?
            .unwrap_or_default(),
        working_dir: t
            .get::<Option<String>>("working_dir")
            .map_err(|_| bad("working_dir", "a string"))?
            .map(PathBuf::from),
        log_file: t
            .get::<Option<String>>("log_file")
            .map_err(|_| bad("log_file", "a string"))?
            .map(PathBuf::from),
        grace_period: duration_opt(t, "grace_period", &bad)?.unwrap_or(Duration::ZERO),
        binary: t
            .get::<Option<String>>("binary")
            .map_err(|_| bad("binary", "a path string"))?
            .map(PathBuf::from),
        metadata: t
            .get::<Option<String>>("metadata")
            .map_err(|_| bad("metadata", "a string"))?,
        ready,
        ready_timeout: duration_opt(t, "ready_timeout", &bad)?
            .unwrap_or(crate::lifecycle::DEFAULT_READY_TIMEOUT),
        restart,
        startup_check: startup_check_opt(t, &bad)?,
    })
}

/// `restart(name, { timeout = "5s" })`: restart the server in place; every
/// client stays attached to the new process (see `Lifecycle::restart`).
fn restart(lua: &Lua, (raw, opts): (String, Option<LuaTable>)) -> LuaResult<LuaValue> {
    let bad = |key: &str, want: &str| {
        LuaError::RuntimeError(format!(
            "sharedserver: restart '{raw}': option `{key}` must be {want}"
        ))
    };
    let timeout = match &opts {
        Some(t) => duration_opt(t, "timeout", &bad)?,
        None => None,
    }
    .unwrap_or(crate::record::DEFAULT_STOP_TIMEOUT);
    let status = lifecycle()?
        .restart(&name(&raw)?, timeout)
        .map_err(lua_err)?;
    to_lua(lua, &status)
}

/// `lockdir_check()`: `{ dir, exists, problem }` for `:checkhealth`, by the
/// library's own rule (`lockdir::verify`); never creates anything.
fn lockdir_check(lua: &Lua, (): ()) -> LuaResult<LuaTable> {
    let dir = crate::lockdir::resolve();
    let t = lua.create_table()?;
    t.set("dir", dir.to_string_lossy().into_owned())?;
    let exists = std::fs::symlink_metadata(&dir).is_ok();
    t.set("exists", exists)?;
    if exists {
        match crate::lockdir::verify(&dir) {
            Ok(()) => {}
            Err(Error::UnsafeLockDir(_, why)) => t.set("problem", why)?,
            Err(e) => t.set("problem", e.to_string())?,
        }
    }
    Ok(t)
}

// skip_memory_check: mlua then creates strings and tables without a
// protected call each (the bulk of a status() call's cost). The only thing
// lost is a clean Lua error on out-of-memory, which Neovim cannot survive
// anyway.
#[mlua::lua_module(name = "sharedserver_native", skip_memory_check)]
fn sharedserver_native(lua: &Lua) -> LuaResult<LuaTable> {
    let m = lua.create_table()?;
    m.set("version", lua.create_function(|_, ()| Ok(crate::VERSION))?)?;
    m.set(
        "backend",
        lua.create_function(|_, ()| Ok(crate::process::backend::current().as_str()))?,
    )?;
    m.set(
        "lockdir",
        lua.create_function(|_, ()| Ok(crate::lockdir::resolve().to_string_lossy().into_owned()))?,
    )?;
    m.set(
        "set_binary",
        lua.create_function(|_, path: Option<String>| {
            if let Ok(mut b) = BINARY.lock() {
                *b = path.map(PathBuf::from);
            }
            Ok(())
        })?,
    )?;
    m.set(
        "status",
        lua.create_function(|lua, raw: String| {
            let status = lifecycle()?.status(&name(&raw)?).map_err(lua_err)?;
            to_lua(lua, &status)
        })?,
    )?;
    m.set(
        "list",
        lua.create_function(|lua, ()| {
            let out = lua.create_table()?;
            let entries = lifecycle()?.list().map_err(lua_err)?;
            for (i, (name, status)) in entries.into_iter().enumerate() {
                let item = match status {
                    Ok(status) => to_lua(lua, &status)?,
                    Err(e) => {
                        let t = lua.create_table()?;
                        t.set("name", name.as_str())?;
                        t.set("state", "error")?;
                        t.set("error", e.to_string())?;
                        LuaValue::Table(t)
                    }
                };
                out.set(i + 1, item)?;
            }
            Ok(out)
        })?,
    )?;
    m.set(
        "incref",
        lua.create_function(
            |lua, (raw, pid, metadata): (String, Option<u32>, Option<String>)| {
                let req = AttachRequest {
                    name: name(&raw)?,
                    client: client(pid)?,
                    metadata: Some(metadata.unwrap_or_else(|| "nvim".into())),
                    start: None,
                    if_running: IfRunning::Attach,
                };
                let attached = lifecycle()?.attach(&req).map_err(lua_err)?;
                to_lua(lua, attached.status())
            },
        )?,
    )?;
    m.set(
        "decref",
        lua.create_function(|lua, (raw, pid): (String, Option<u32>)| {
            let pid = pid.unwrap_or_else(std::process::id);
            let status = lifecycle()?.detach(&name(&raw)?, pid).map_err(lua_err)?;
            to_lua(lua, &status)
        })?,
    )?;
    m.set(
        "start",
        lua.create_function(|lua, (raw, spec): (String, LuaTable)| {
            let name = name(&raw)?;
            let spec = spec_from(&raw, &spec)?;
            if let Some(bin) = &spec.binary {
                if let Ok(mut b) = BINARY.lock() {
                    *b = Some(bin.clone());
                }
            }
            let cwd = match spec.working_dir {
                Some(dir) => dir,
                None => std::env::current_dir()
                    .map_err(|e| lua_err(Error::io(".", "reading the current directory", e)))?,
            };
            let mut command = vec![spec.command];
            command.extend(spec.args);
            let req = AttachRequest {
                name,
                client: ProcessId::current(),
                metadata: spec.metadata.or(Some("nvim".into())),
                start: Some(StartSpec {
                    command,
                    env: spec.env,
                    cwd,
                    log_file: spec.log_file,
                    grace_period: spec.grace_period,
                    ready: spec.ready,
                    ready_timeout: spec.ready_timeout,
                    restart: spec.restart,
                    startup_check: spec.startup_check,
                }),
                if_running: IfRunning::Attach,
            };
            let attached = lifecycle()?.attach(&req).map_err(lua_err)?;
            let status = to_lua(lua, attached.status())?;
            if let LuaValue::Table(t) = &status {
                t.set("started", matches!(attached, crate::Attached::Started(_)))?;
            }
            Ok(status)
        })?,
    )?;
    m.set(
        "stop",
        lua.create_function(|lua, (raw, opts): (String, Option<LuaTable>)| {
            let force = match &opts {
                Some(t) => t.get::<Option<bool>>("force")?.unwrap_or(false),
                None => false,
            };
            let bad = |key: &str, want: &str| {
                LuaError::RuntimeError(format!(
                    "sharedserver: stop '{raw}': option `{key}` must be {want}"
                ))
            };
            let timeout = match &opts {
                Some(t) => duration_opt(t, "timeout", &bad)?,
                None => None,
            }
            .unwrap_or(crate::record::DEFAULT_STOP_TIMEOUT);
            let status = lifecycle()?
                .stop(&name(&raw)?, force, timeout)
                .map_err(lua_err)?;
            to_lua(lua, &status)
        })?,
    )?;
    m.set("restart", lua.create_function(restart)?)?;
    m.set("lockdir_check", lua.create_function(lockdir_check)?)?;
    m.set(
        "config",
        lua.create_function(|lua, cwd: Option<String>| {
            let cwd = match cwd {
                Some(dir) => PathBuf::from(dir),
                None => std::env::current_dir()
                    .map_err(|e| lua_err(Error::io(".", "reading the current directory", e)))?,
            };
            let defs = crate::config::all(&cwd).map_err(lua_err)?;
            to_lua(lua, &defs)
        })?,
    )?;
    m.set(
        "log_path",
        lua.create_function(|_, raw: String| {
            let path = lifecycle()?.log_path(&name(&raw)?).map_err(lua_err)?;
            Ok(path.to_string_lossy().into_owned())
        })?,
    )?;
    Ok(m)
}
