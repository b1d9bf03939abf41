//! The editor's batches: `prepare` (from `setup()`: join the servers that
//! run, on a thread, while Neovim goes on starting), `enter` (VimEnter: take
//! those joins, start what does not run) and `leave` (VimLeave: detach).
//!
//! Why a thread: between the end of the user's init file and VimEnter,
//! Neovim spends several milliseconds on its own start-up (runtime files,
//! filetype detection), on one core. The joins take about as long again
//! (a lock, a record read and rewrite, a wake-up per server), and on a
//! second core they cost the start-up nothing (doc/PERFORMANCE.md, row 3).
//! A join is idempotent (a client is one pid), so whatever `enter` cannot
//! take from the thread it simply does again.

use super::{attached_to_lua, current_dir, json, lifecycle, request, to_lua, Answer, Failure};
use crate::lifecycle::{AttachRequest, Lifecycle};
use crate::options::OptionError;
use crate::{Attached, Error};
use mlua::prelude::*;
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;

/// One server of a batch, as plain data: a thread can own it, and `enter`
/// can tell whether a join made ahead was made for the same options.
#[derive(Clone, PartialEq)]
pub(super) struct Item {
    name: String,
    /// Its options, read from Lua (or why they do not read).
    spec: Result<serde_json::Value, OptionError>,
    /// Where they came from, for error messages (a config file's path).
    origin: Option<String>,
    binary: Binary,
    /// Attach only if it runs; never start it.
    lazy: bool,
}

/// Which sharedserver binary an item's watcher runs.
#[derive(Clone, PartialEq)]
enum Binary {
    /// `binary` absent: the module's default (`set_binary`).
    Default,
    /// Its own.
    Own(PathBuf),
    /// `binary = false`: its own option names no executable, and no other
    /// binary stands in for it (joined if it runs, else `no_binary`).
    None,
}

impl FromLua for Item {
    fn from_lua(value: LuaValue, lua: &Lua) -> LuaResult<Self> {
        let t = LuaTable::from_lua(value, lua)?;
        Ok(Item {
            name: t.get("name")?,
            spec: json(lua, t.get("spec")?),
            origin: t.get("origin")?,
            binary: match t.get::<LuaValue>("binary")? {
                LuaValue::Nil => Binary::Default,
                LuaValue::Boolean(false) => Binary::None,
                other => Binary::Own(PathBuf::from(String::from_lua(other, lua)?)),
            },
            lazy: t.get::<Option<bool>>("lazy")?.unwrap_or(false),
        })
    }
}

impl Item {
    fn lifecycle(&self, base: &Lifecycle) -> Lifecycle {
        match &self.binary {
            Binary::Default => base.clone(),
            Binary::Own(exe) => Lifecycle {
                watcher_exe: Some(exe.clone()),
                ..base.clone()
            },
            Binary::None => Lifecycle {
                watcher_exe: None,
                ..base.clone()
            },
        }
    }

    fn request(&self, cwd: &Path) -> Answer<AttachRequest> {
        request(cwd, &self.name, self.spec.clone(), self.origin.as_deref())
    }
}

/// What a join made ahead of `enter` came to.
enum Early {
    /// Joined (a join never starts a server): `enter` answers with this,
    /// unless the batch went stale.
    Joined(Box<Attached>),
    /// Not joined (not running, a refused spec, a busy lock, ...): `enter`
    /// does it itself.
    Not,
    /// The join panicked (a bug): maybe joined, so never left attached.
    Unknown,
}

impl Early {
    /// This process may hold a reference because of it.
    fn maybe_joined(&self) -> bool {
        !matches!(self, Early::Not)
    }
}

type Joins = Vec<(Item, Early)>;

/// The joins `prepare` is making, or made, for `enter` to take.
struct Ahead {
    joins: Pending,
    /// A call that changes servers (start, stop, incref, ...) ran since, so
    /// the joins may be out of date: `enter` makes its own.
    stale: bool,
}

enum Pending {
    Running(JoinHandle<Joins>),
    Done(Joins),
}

impl Pending {
    fn wait(self) -> Joins {
        match self {
            // Each item's panic is caught in the thread: join cannot fail.
            Pending::Running(thread) => thread.join().unwrap_or_default(),
            Pending::Done(joins) => joins,
        }
    }
}

static AHEAD: Mutex<Option<Ahead>> = Mutex::new(None);

fn ahead() -> MutexGuard<'static, Option<Ahead>> {
    // Nothing panics while holding it; a poisoned slot is still sound.
    AHEAD.lock().unwrap_or_else(|e| e.into_inner())
}

/// The joins made ahead, waited for, and whether they went stale; `None`
/// when there are none.
fn take_ahead() -> Option<(Joins, bool)> {
    let taken = ahead().take()?;
    Some((taken.joins.wait(), taken.stale))
}

/// Before a call that changes a server: let the joins ahead finish first
/// (so the two never race on one name), and keep `enter` from trusting them.
pub(super) fn before_change() {
    let mut slot = ahead();
    if let Some(taken) = slot.take() {
        *slot = Some(Ahead {
            joins: Pending::Done(taken.joins.wait()),
            stale: true,
        });
    }
}

/// Detach this process from what `joins` may have joined, except the names
/// `keep` (those it holds for another reason). Failures are left to the
/// watcher, which drops this process when it exits.
fn undo(lc: &Lifecycle, joins: Joins, keep: impl Fn(&str) -> bool) {
    let pid = std::process::id();
    for (item, early) in joins {
        if early.maybe_joined() && !keep(&item.name) {
            if let Ok(name) = crate::ServerName::parse(&item.name) {
                let _ = lc.detach(&name, pid);
            }
        }
    }
}

/// `prepare({ item, ... })` (items as for `enter`): join, on a thread, the
/// servers of the list that run, for the `enter` to come. Returns at once.
/// A thread that cannot be made is no failure: `enter` does the work.
pub(super) fn prepare(_: &Lua, items: Vec<Item>) -> Answer<()> {
    let base = lifecycle(None)?;
    let cwd = current_dir()?;
    if let Some((earlier, _)) = take_ahead() {
        // setup() ran again: what it no longer lists is not ours to hold.
        let names: HashSet<String> = items.iter().map(|i| i.name.clone()).collect();
        undo(&base, earlier, |n| names.contains(n));
    }
    let work = move || -> Joins {
        items
            .into_iter()
            .map(|item| {
                let early = catch_unwind(AssertUnwindSafe(|| {
                    match item
                        .request(&cwd)
                        .map(|req| item.lifecycle(&base).join(&req))
                    {
                        Ok(Ok(joined)) => Early::Joined(Box::new(joined)),
                        _ => Early::Not,
                    }
                }))
                .unwrap_or(Early::Unknown);
                (item, early)
            })
            .collect()
    };
    if let Ok(thread) = std::thread::Builder::new()
        .name("sharedserver-join".into())
        // Small (see WORKER_STACK): a lost watcher's restart, the deepest
        // path a join takes, spawns a process and reads one JSON line.
        .stack_size(crate::fanout::WORKER_STACK)
        .spawn(work)
    {
        *ahead() = Some(Ahead {
            joins: Pending::Running(thread),
            stale: false,
        });
    }
    Ok(())
}

/// What `enter` did for one server: the decision, as data.
#[derive(serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    /// This call started the server.
    Started,
    /// It was running; this process is now one of its clients.
    Joined,
    /// A lazy server that is not running: left alone.
    NotRunning,
    /// Not running, and no sharedserver binary to start it with (the plugin
    /// says where it looked).
    NoBinary,
    /// See `error` (and `retry`, when it passes).
    Failed,
}

/// Put a failure into an `enter` result: `error`, and `retry` when it passes.
fn failed(lua: &Lua, t: &LuaTable, Failure(why, retry): Failure) -> Answer<Outcome> {
    t.set("error", why)?;
    if let Some(r) = retry {
        t.set("retry", to_lua(lua, &r)?)?;
    }
    Ok(Outcome::Failed)
}

/// Where an `enter` item stands after the joins.
enum Step {
    /// Its request was refused (a bad spec or name).
    Bad(Failure),
    /// Joined, or failed.
    Done(crate::Result<Attached>),
    /// Not running: to start, with this request.
    Start(Lifecycle, AttachRequest),
}

/// `enter({ { name, spec, lazy?, binary?, origin? }, ... })` (`binary`: a
/// path, or `false` for none at all, see [`Binary`]): attach to
/// every server of the list in one call (starting the plain ones that do
/// not run, joining the lazy ones that do). Returns one table per item, in
/// order, `{ name, outcome, status?, error?, retry? }`; a failure of one
/// server never stops the others. One call instead of one per server: the
/// lock dir is checked once and the plugin's start-up crosses into the
/// library once (doc/PERFORMANCE.md, row 3).
///
/// A server that `prepare` joined for the same options is taken from it.
/// The others are joined here in turn (a join takes microseconds: a thread
/// each would cost more than it saves). Those that must be started get a
/// thread each, so that their start-up checks overlap, as `use --all`
/// does: the editor waits for the slowest start, not for their sum.
pub(super) fn enter(lua: &Lua, items: Vec<Item>) -> Answer<LuaTable> {
    let base = lifecycle(None)?;
    let cwd = current_dir()?;
    let (mut early, stale) = take_ahead().unwrap_or_default();
    let steps: Vec<Step> = items
        .iter()
        .map(|item| {
            if !stale {
                let made = early
                    .iter()
                    .position(|(e, done)| e == item && matches!(done, Early::Joined(_)));
                if let Some((_, Early::Joined(joined))) = made.map(|i| early.swap_remove(i)) {
                    return Step::Done(Ok(*joined));
                }
            }
            let lc = item.lifecycle(&base);
            match item.request(&cwd) {
                Err(f) => Step::Bad(f),
                Ok(req) => match lc.join(&req) {
                    Err(Error::NotRunning(_)) if !item.lazy => Step::Start(lc, req),
                    joined => Step::Done(joined),
                },
            }
        })
        .collect();
    let mut started = {
        let starts: Vec<(&Lifecycle, &AttachRequest)> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Start(lc, req) => Some((lc, req)),
                _ => None,
            })
            .collect();
        crate::fanout::each(&starts, |(lc, req)| lc.attach(req)).into_iter()
    };
    let mut attached = HashSet::new();
    let out = lua.create_table_with_capacity(items.len(), 0)?;
    for (i, (item, step)) in items.iter().zip(steps).enumerate() {
        let t = lua.create_table()?;
        t.set("name", item.name.as_str())?;
        let result = match step {
            Step::Bad(f) => Err(f),
            Step::Done(joined) => Ok(joined),
            Step::Start(..) => Ok(started.next().flatten().unwrap_or_else(|| {
                Err(Error::Other(format!(
                    "starting '{}' failed unexpectedly (a bug: please report it)",
                    item.name
                )))
            })),
        };
        let outcome = match result {
            Ok(Ok(done)) => {
                t.set("status", attached_to_lua(lua, &done)?)?;
                attached.insert(item.name.as_str());
                match done {
                    Attached::Started(_) => Outcome::Started,
                    Attached::Joined { .. } => Outcome::Joined,
                }
            }
            Ok(Err(Error::NotRunning(_))) if item.lazy => Outcome::NotRunning,
            Ok(Err(e @ Error::NoBinary)) => {
                t.set("error", e.to_string())?;
                Outcome::NoBinary
            }
            Ok(Err(e)) => failed(lua, &t, e.into())?,
            Err(f) => failed(lua, &t, f)?,
        };
        t.set("outcome", to_lua(lua, &outcome)?)?;
        out.set(i + 1, t)?;
    }
    // Joined ahead but not answered here (no longer listed, or listed with
    // other options that failed): not ours to hold.
    undo(&base, early, |n| attached.contains(n));
    Ok(out)
}

/// `leave({ name, ... })`: detach this process from each server, in one
/// call (VimLeave), and from what `prepare` joined for an `enter` that
/// never came (Neovim quit first). Returns the messages of the detaches
/// that failed; a busy lock is not waited for (the watcher drops this
/// process once it exits).
pub(super) fn leave(_: &Lua, names: Vec<String>) -> Answer<Vec<String>> {
    let early = take_ahead();
    if names.is_empty() && early.is_none() {
        return Ok(Vec::new());
    }
    let lc = lifecycle(None)?;
    let pid = std::process::id();
    let mut failed = Vec::new();
    for raw in &names {
        let done = super::name(raw).and_then(|n| Ok(lc.detach(&n, pid)?));
        if let Err(Failure(why, _)) = done {
            failed.push(why);
        }
    }
    if let Some((joins, _)) = early {
        undo(&lc, joins, |n| names.iter().any(|m| m == n));
    }
    Ok(failed)
}
