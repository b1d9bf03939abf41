//! The Neovim native module, `require("sharedserver.native")`: a thin mlua
//! adapter over [`Lifecycle`] and [`ServerSpec`]. It holds no state logic of
//! its own; status, list, incref and decref run in Neovim's process without
//! spawning anything.
//!
//! Every export reports failure as `nil, message, retry` (one line, cause
//! and fix; `retry` is nil, or a [`Retry`] table when the failure passes and
//! the call should be made again from a timer), never as a Lua error: a raised Rust error reaches Lua as "runtime error"
//! with a stack traceback. lua/sharedserver/native.lua turns the pair into a
//! plain error for the plugin's own code.

mod enter;

use crate::config;
use crate::lifecycle::{AttachRequest, IfRunning, Lifecycle};
use crate::name::ServerName;
use crate::options::{OptionError, ServerSpec};
use crate::process::ProcessId;
use crate::store::Store;
use crate::Error;
use mlua::prelude::*;
use std::path::PathBuf;
use std::sync::Mutex;

/// Where `setup()` options came from, for error messages.
const SETUP: &str = "setup()";

/// The `sharedserver` binary that restores a lost watcher when no call
/// names one: the plugin's global `binary` option, set once by `set_binary`.
/// A server's own `binary` is passed to `start` and `incref` per call, so it
/// never leaks into other servers.
static DEFAULT_BINARY: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The store for the lock directory in effect. Checking the directory's
/// safety costs a few syscalls, so it is done once per directory per
/// process, not on every status call.
static STORE: Mutex<Option<Store>> = Mutex::new(None);

/// A failure as Lua sees it: the message of a `nil, message, retry`
/// return, and the retry table when the call should be made again later.
struct Failure(String, Option<Retry>);

/// A failure that passes: the editor never waits for one (the module waits
/// at most `EDITOR_LOCK_WAIT` for a lock and never for a stop), so the
/// Lua layer (lua/sharedserver/retry.lua) makes the call again from a timer.
/// Serialized as `{ kind = "lock_busy", holder = { pid, comm, stopped } }`.
#[derive(serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Retry {
    /// Another process holds the name's lock.
    LockBusy {
        holder: Option<crate::lockwait::Holder>,
    },
    /// The server is stopping; attach once it has stopped.
    Stopping,
}

impl Failure {
    fn msg(text: String) -> Failure {
        Failure(text, None)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let retry = match &e {
            Error::LockBusy { holder, .. } => Some(Retry::LockBusy {
                holder: holder.clone(),
            }),
            Error::Stopping(_) => Some(Retry::Stopping),
            _ => None,
        };
        Failure(e.to_string(), retry)
    }
}

impl From<LuaError> for Failure {
    fn from(e: LuaError) -> Failure {
        // Only conversions of our own values end up here; keep the first line.
        let text = e.to_string();
        Failure::msg(text.lines().next().unwrap_or_default().to_string())
    }
}

type Answer<T> = Result<T, Failure>;

fn lifecycle(binary: Option<PathBuf>) -> Answer<Lifecycle> {
    let dir = crate::lockdir::resolve();
    let cached = STORE
        .lock()
        .ok()
        .and_then(|s| s.clone())
        // Re-verified on every call (two stats): a directory removed by a
        // tmp cleaner or a logout is recreated safely instead of failing
        // every call until Neovim restarts.
        .filter(|s| s.dir() == dir && s.is_current());
    let store = match cached {
        Some(store) => store,
        None => {
            let store = Store::at(dir)?;
            if let Ok(mut slot) = STORE.lock() {
                *slot = Some(store.clone());
            }
            store
        }
    };
    let exe = binary.or_else(|| DEFAULT_BINARY.lock().ok().and_then(|b| b.clone()));
    // The editor never waits for a stop (nor, by the lock policy set at
    // load, for a lock): the Lua layer retries from a timer.
    Ok(Lifecycle::new(store, exe).without_waiting())
}

fn name(raw: &str) -> Answer<ServerName> {
    Ok(ServerName::parse(raw)?)
}

fn client(pid: Option<u32>) -> Answer<ProcessId> {
    match pid {
        None => Ok(ProcessId::current()),
        Some(pid) => ProcessId::of(pid)
            .ok_or_else(|| Failure::msg(format!("pid {pid} is not a running process"))),
    }
}

fn current_dir() -> Answer<PathBuf> {
    std::env::current_dir().map_err(|e| Error::io(".", "reading the current directory", e).into())
}

fn to_lua<T: serde::Serialize>(lua: &Lua, value: &T) -> Answer<LuaValue> {
    // Absent values become nil, not a null sentinel, so `if s.pid then` works.
    let opts = LuaSerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    Ok(lua.to_value_with(value, opts)?)
}

/// A Lua table as JSON, for [`ServerSpec::from_value`] (functions and other
/// non-data values are refused with the key's name).
fn json(lua: &Lua, v: LuaValue) -> Result<serde_json::Value, OptionError> {
    lua.from_value(v).map_err(|e| OptionError {
        key: String::new(),
        why: format!("must hold only strings, numbers, booleans and tables ({e})"),
    })
}

/// A server's options table, read by the one parser every origin uses.
fn spec_of(lua: &Lua, raw: &str, t: LuaValue, origin: &str) -> Answer<ServerSpec> {
    spec_from(raw, json(lua, t), origin)
}

/// A server's options, already read from Lua by [`json`].
fn spec_from(
    raw: &str,
    v: Result<serde_json::Value, OptionError>,
    origin: &str,
) -> Answer<ServerSpec> {
    let at = format!("servers.{raw}");
    name(raw).map_err(|Failure(why, _)| Failure::msg(format!("{origin}: servers: {why}")))?;
    v.and_then(|v| ServerSpec::from_value(&v))
        .map_err(|e| e.at(origin, &at).into())
}

/// Options of `start` and `incref` that are not the server's.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CallOpts {
    /// The sharedserver binary for this server's watcher.
    binary: Option<PathBuf>,
    /// Where the spec came from, for error messages (a config file's path).
    origin: Option<String>,
}

fn call_opts(lua: &Lua, v: Option<LuaValue>) -> Answer<CallOpts> {
    match v {
        None | Some(LuaValue::Nil) => Ok(CallOpts::default()),
        Some(v) => Ok(lua.from_value(v)?),
    }
}

fn version(_: &Lua, (): ()) -> Answer<&'static str> {
    Ok(crate::VERSION)
}

fn lockdir(_: &Lua, (): ()) -> Answer<String> {
    Ok(crate::lockdir::resolve().to_string_lossy().into_owned())
}

fn set_binary(_: &Lua, path: Option<String>) -> Answer<()> {
    if let Ok(mut b) = DEFAULT_BINARY.lock() {
        *b = path.map(PathBuf::from);
    }
    Ok(())
}

fn status(lua: &Lua, raw: String) -> Answer<LuaValue> {
    let status = lifecycle(None)?.status(&name(&raw)?)?;
    to_lua(lua, &status)
}

fn list(lua: &Lua, (): ()) -> Answer<LuaTable> {
    let out = lua.create_table()?;
    for (i, (name, status)) in lifecycle(None)?.list()?.into_iter().enumerate() {
        let item = match status {
            Ok(status) => to_lua(lua, &status)?,
            Err(e) => to_lua(
                lua,
                &serde_json::json!({
                    "name": name.as_str(), "state": "error", "error": e.to_string(),
                }),
            )?,
        };
        out.set(i + 1, item)?;
    }
    Ok(out)
}

/// Check a server's options without starting anything: the normalised
/// options (canonical keys, durations as text), or why they are wrong. The
/// editor starts what it configures, so a command is required.
fn spec(lua: &Lua, (raw, t, origin): (String, LuaValue, Option<String>)) -> Answer<LuaValue> {
    let origin = origin.as_deref().unwrap_or(SETUP);
    let spec = spec_of(lua, &raw, t, origin)?;
    spec.startable()
        .map_err(|e| e.at(origin, &format!("servers.{raw}")))?;
    to_lua(lua, &spec)
}

fn incref(
    lua: &Lua,
    (raw, pid, metadata, opts): (String, Option<u32>, Option<String>, Option<LuaValue>),
) -> Answer<LuaValue> {
    enter::before_change();
    let opts = call_opts(lua, opts)?;
    let req = AttachRequest {
        name: name(&raw)?,
        client: client(pid)?,
        metadata: Some(metadata.unwrap_or_else(|| "nvim".into())),
        start: None,
        if_running: IfRunning::Attach,
    };
    let attached = lifecycle(opts.binary)?.attach(&req)?;
    to_lua(lua, attached.status())
}

fn decref(lua: &Lua, (raw, pid): (String, Option<u32>)) -> Answer<LuaValue> {
    enter::before_change();
    let pid = pid.unwrap_or_else(std::process::id);
    let status = lifecycle(None)?.detach(&name(&raw)?, pid)?;
    to_lua(lua, &status)
}

/// Start the server from its options, or attach to it if it runs.
fn start(lua: &Lua, (raw, t, opts): (String, LuaValue, Option<LuaValue>)) -> Answer<LuaValue> {
    enter::before_change();
    let opts = call_opts(lua, opts)?;
    let req = request(&current_dir()?, &raw, json(lua, t), opts.origin.as_deref())?;
    let attached = lifecycle(opts.binary)?.attach(&req)?;
    attached_to_lua(lua, &attached)
}

/// This process's attach to `raw` with the options `v` (read from Lua by
/// [`json`]), read by the one parser every origin uses.
fn request(
    cwd: &std::path::Path,
    raw: &str,
    v: Result<serde_json::Value, OptionError>,
    origin: Option<&str>,
) -> Answer<AttachRequest> {
    let origin = origin.unwrap_or(SETUP);
    let spec = spec_from(raw, v, origin)?;
    let resolved = spec
        .resolve(cwd)
        .map_err(|e| e.at(origin, &format!("servers.{raw}")))?;
    Ok(AttachRequest {
        name: name(raw)?,
        client: ProcessId::current(),
        metadata: spec.metadata.or(Some("nvim".into())),
        start: Some(resolved),
        if_running: IfRunning::Attach,
    })
}

/// The status of an attach, with `started` and `warning` (see _meta.lua).
fn attached_to_lua(lua: &Lua, attached: &crate::Attached) -> Answer<LuaValue> {
    let status = to_lua(lua, attached.status())?;
    if let LuaValue::Table(t) = &status {
        t.set("started", matches!(attached, crate::Attached::Started(_)))?;
        t.set("warning", attached.warning())?;
    }
    Ok(status)
}

#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StopOpts {
    #[serde(default)]
    force: bool,
    timeout: Option<serde_json::Value>,
}

fn stop(lua: &Lua, (raw, opts): (String, Option<LuaValue>)) -> Answer<LuaValue> {
    enter::before_change();
    let opts: StopOpts = match opts {
        None | Some(LuaValue::Nil) => StopOpts::default(),
        Some(v) => lua
            .from_value(v)
            .map_err(|e| Failure::msg(format!("stop '{raw}': options: {e}")))?,
    };
    let timeout = timeout_opt(&format!("stop '{raw}'"), opts.timeout.as_ref())?;
    let status = lifecycle(None)?.stop(&name(&raw)?, opts.force, timeout)?;
    to_lua(lua, &status)
}

/// A timeout option (`stop`, `restart`): a duration string or seconds.
fn timeout_opt(what: &str, v: Option<&serde_json::Value>) -> Answer<std::time::Duration> {
    match v {
        None => Ok(crate::record::DEFAULT_STOP_TIMEOUT),
        Some(serde_json::Value::String(s)) => Ok(crate::duration::parse(s)?),
        Some(serde_json::Value::Number(n)) => n
            .as_f64()
            .and_then(|f| std::time::Duration::try_from_secs_f64(f).ok())
            .ok_or_else(|| Failure::msg(format!("{what}: timeout {n} is not a duration"))),
        Some(other) => Err(Failure::msg(format!(
            "{what}: timeout must be a duration such as \"5s\", not {other}"
        ))),
    }
}

#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartOpts {
    timeout: Option<serde_json::Value>,
}

/// `restart(name, { timeout = "5s" })`: restart the server in place; every
/// client stays attached to the new process (see `Lifecycle::restart`).
fn restart(lua: &Lua, (raw, opts): (String, Option<LuaValue>)) -> Answer<LuaValue> {
    enter::before_change();
    let what = format!("restart '{raw}'");
    let opts: RestartOpts = match opts {
        None | Some(LuaValue::Nil) => RestartOpts::default(),
        Some(v) => lua
            .from_value(v)
            .map_err(|e| Failure::msg(format!("{what}: options: {e}")))?,
    };
    let timeout = timeout_opt(&what, opts.timeout.as_ref())?;
    let status = lifecycle(None)?.restart(&name(&raw)?, timeout)?;
    to_lua(lua, &status)
}

/// `lockdir_check()`: `{ dir, exists, problem }` for `:checkhealth`, by the
/// library's own rule (`lockdir::verify`); never creates anything.
fn lockdir_check(lua: &Lua, (): ()) -> Answer<LuaTable> {
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

/// The config files' servers visible from `cwd`, as a list of
/// `{ name, source, scope, skipped, spec }`, or `{ name, source?, error }`
/// for an entry that does not read (the others stay usable).
fn config_(lua: &Lua, cwd: Option<String>) -> Answer<LuaValue> {
    let cwd = match cwd {
        Some(dir) => PathBuf::from(dir),
        None => current_dir()?,
    };
    let defs: Vec<serde_json::Value> = config::all(&cwd)?
        .into_iter()
        .map(|(name, def)| match def {
            Ok(def) => def.to_value(),
            Err(e) => serde_json::json!({ "name": name, "error": e.to_string() }),
        })
        .collect();
    to_lua(lua, &defs)
}

fn log_path(_: &Lua, raw: String) -> Answer<String> {
    let path = lifecycle(None)?.log_path(&name(&raw)?)?;
    Ok(path.to_string_lossy().into_owned())
}

fn backend(_: &Lua, (): ()) -> Answer<&'static str> {
    Ok(crate::process::backend::current().as_str())
}

/// Add `f` to the module as `key`, with failures as `nil, message, retry`.
fn export<A, R>(lua: &Lua, m: &LuaTable, key: &str, f: fn(&Lua, A) -> Answer<R>) -> LuaResult<()>
where
    A: FromLuaMulti + 'static,
    R: IntoLuaMulti + 'static,
{
    m.set(
        key,
        lua.create_function(move |lua, args: A| match f(lua, args) {
            Ok(value) => value.into_lua_multi(lua),
            Err(Failure(text, retry)) => {
                let retry = match retry {
                    Some(r) => to_lua(lua, &r).unwrap_or(LuaValue::Nil),
                    None => LuaValue::Nil,
                };
                (LuaValue::Nil, text, retry).into_lua_multi(lua)
            }
        })?,
    )
}

// skip_memory_check: mlua then creates strings and tables without a
// protected call each (the bulk of a status() call's cost). The only thing
// lost is a clean Lua error on out-of-memory, which Neovim cannot survive
// anyway.
/// The longest the editor waits for a name's lock.
const EDITOR_LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

#[mlua::lua_module(name = "sharedserver_native", skip_memory_check)]
fn sharedserver_native(lua: &Lua) -> LuaResult<LuaTable> {
    // A lock holder (stuck, or just busy) must never freeze the editor: a
    // lock still busy after a few milliseconds comes back as busy, and Lua
    // retries from a timer. The few milliseconds let the usual holder (a
    // watcher's tick, another editor's attach: well under a millisecond)
    // finish first, so a busy lock is rarely seen at all.
    crate::lockwait::set_policy(crate::lockwait::Policy::Bounded {
        limit: EDITOR_LOCK_WAIT,
        notice: None,
    });
    let m = lua.create_table()?;
    export(lua, &m, "version", version)?;
    export(lua, &m, "backend", backend)?;
    export(lua, &m, "lockdir", lockdir)?;
    export(lua, &m, "set_binary", set_binary)?;
    export(lua, &m, "status", status)?;
    export(lua, &m, "list", list)?;
    export(lua, &m, "spec", spec)?;
    export(lua, &m, "incref", incref)?;
    export(lua, &m, "decref", decref)?;
    export(lua, &m, "start", start)?;
    export(lua, &m, "prepare", enter::prepare)?;
    export(lua, &m, "enter", enter::enter)?;
    export(lua, &m, "leave", enter::leave)?;
    export(lua, &m, "stop", stop)?;
    export(lua, &m, "restart", restart)?;
    export(lua, &m, "lockdir_check", lockdir_check)?;
    export(lua, &m, "config", config_)?;
    export(lua, &m, "log_path", log_path)?;
    Ok(m)
}
