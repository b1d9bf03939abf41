//! `admin doctor`: validate the lock directory and repair what crashes and
//! accidents leave behind. Every repair is reported in one line.

use crate::error::{Error, Result};
use crate::lifecycle::{poll_until, Lifecycle};
use crate::name::ServerName;
use crate::process::{Handle, ProcessId};
use crate::record::now_ms;
use crate::store::Store;
use crate::watcher::poke_now;
use std::time::{Duration, Instant};

/// Check `only` (or every name) and return what was found and fixed.
pub fn run(lc: &Lifecycle, only: Option<&ServerName>) -> Result<Vec<String>> {
    let store = &lc.store;
    let mut report = Vec::new();
    let dir = store.dir().to_path_buf();
    let mut names = std::collections::BTreeSet::new();
    // Every name with a file of any kind here.
    let mut known = std::collections::BTreeSet::new();
    // Names with files that only a running server needs.
    let mut leftovers = std::collections::BTreeSet::new();
    for file in store.entries()? {
        if let Some(name) = leftover_of(&file).filter(|n| only.is_none_or(|o| o == n)) {
            leftovers.insert(name);
        }
        let path = dir.join(&file);
        if let Some(tmp) = file.strip_prefix('.').and_then(|f| f.strip_suffix(".tmp")) {
            // `.NAME.EXT.PID.N.tmp`: an interrupted atomic write, if PID is
            // gone. `doctor NAME` touches only NAME's.
            let mut parts = tmp.rsplitn(3, '.');
            let (_, writer, target) = (parts.next(), parts.next(), parts.next());
            let owner = target
                .and_then(|t| t.rsplit_once('.'))
                .and_then(|(stem, _)| ServerName::parse(stem).ok());
            if only.is_some_and(|o| owner.as_ref() != Some(o)) {
                continue;
            }
            let writer = writer.and_then(|p| p.parse::<u32>().ok());
            if writer.is_some_and(|pid| !ProcessId::of_alive_or_unknown(pid)) {
                let _ = store.unlink_at(&file);
                report.push(format!("removed interrupted write {}", path.display()));
            }
            continue;
        }
        let Some((name, ext)) = owner(&file) else {
            continue;
        };
        if only.is_some_and(|o| *o != name) {
            continue;
        }
        if let Some(fixed) = misplaced(store, &file, ext)? {
            report.push(fixed);
            continue;
        }
        if ext == SET_ASIDE {
            continue; // dealt with when it was set aside
        }
        known.insert(name.clone());
        if ext == "json" {
            if store
                .stat_at(&file)
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
            {
                store
                    .unlink_at(&file)
                    .map_err(|e| Error::io(&path, "removing symlink", e))?;
                report.push(format!(
                    "removed symlink {} (records are never symlinks)",
                    path.display()
                ));
                continue;
            }
            names.insert(name);
        }
    }
    // A name whose record is gone once checked (set aside, or cleared by
    // the repair) keeps no lock file either: see the leftovers below.
    leftovers.extend(names.iter().cloned());
    if let Some(name) = only {
        names.insert(name.clone());
    }
    for name in &names {
        check_one(lc, name, &mut report)?;
    }
    // Any name with files here may have left processes behind, also one
    // whose record another command already cleared.
    for name in names.union(&known) {
        stop_leftover_processes(store, name, &mut report)?;
    }
    // Files left by failed starts and stopped servers: a name that is not
    // running needs none of them (its log and last exit are kept). Removed
    // in the same run that finds them, so that the next run finds all good.
    for name in &leftovers {
        if matches!(store.read(name), Ok(None)) && !crate::watcher::listening(store, name) {
            let removed = store.remove_leftovers(name)?;
            if !removed.is_empty() {
                let files: Vec<String> = removed
                    .iter()
                    .filter_map(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
                    .collect();
                report.push(format!(
                    "{name}: not running; removed its leftover {} (its log and last exit are kept)",
                    files.join(", ")
                ));
            }
        }
    }
    Ok(report)
}

/// The extensions of the files a name has here (`logs.rs` adds `.1` to a
/// rotated log), the longer of two that end alike first.
const EXTENSIONS: [&str; 9] = [
    "journal.old",
    "log.1",
    "journal",
    "json",
    "last",
    "lock",
    "log",
    "wake",
    "out",
];

/// The extension `owner` gives a record set aside (`NAME.json.corrupt-MS`).
const SET_ASIDE: &str = "json.corrupt";

/// The name a file of the lock directory belongs to, and its extension
/// (one of [`EXTENSIONS`], or [`SET_ASIDE`]). A file that ends otherwise
/// belongs to no name: `zz.json.corrupt-5` is `zz`'s record set aside, not
/// a server `zz.json`.
fn owner(file: &str) -> Option<(ServerName, &'static str)> {
    if let Some((stem, ms)) = file.rsplit_once(".json.corrupt-") {
        return ms
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| ServerName::parse(stem).ok())
            .flatten()
            .map(|name| (name, SET_ASIDE));
    }
    EXTENSIONS.iter().find_map(|&ext| {
        let stem = file.strip_suffix(ext)?.strip_suffix('.')?;
        Some((ServerName::parse(stem).ok()?, ext))
    })
}

/// The server name a file belongs to, if it is one that only a running
/// server needs (`NAME.out`, `.wake`, `.journal`, `.journal.old`, `.lock`).
fn leftover_of(file: &str) -> Option<ServerName> {
    [".journal.old", ".journal", ".out", ".wake", ".lock"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))
        .and_then(|stem| ServerName::parse(stem).ok())
}

/// A state file of the wrong kind (a FIFO at `NAME.json`, a regular file
/// or directory at `NAME.wake`...) hangs or confuses every command on that
/// name: remove it, and say what it was and what belongs there.
fn misplaced(store: &Store, file: &str, ext: &str) -> Result<Option<String>> {
    let want = match ext {
        "json" | "last" | "lock" | "journal" | "log" => libc::S_IFREG,
        "wake" | "out" => libc::S_IFIFO,
        _ if ext.starts_with("journal.") || ext.starts_with("json.") || ext == "log.1" => {
            libc::S_IFREG
        }
        _ => return Ok(None),
    };
    let Ok(st) = store.stat_at(file) else {
        return Ok(None);
    };
    let kind = st.st_mode & libc::S_IFMT;
    // Symlinks at a record are reported by the record check below.
    if kind == want || (ext == "json" && kind == libc::S_IFLNK) {
        return Ok(None);
    }
    let what = |k| match k {
        libc::S_IFREG => "a regular file",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symlink",
        libc::S_IFSOCK => "a socket",
        _ => "a device",
    };
    let path = store.dir().join(file);
    store
        .remove_at(file, kind == libc::S_IFDIR)
        .map_err(|e| Error::io(&path, "removing a misplaced file", e))?;
    Ok(Some(format!(
        "removed {} {} (it must be {})",
        what(kind),
        path.display(),
        what(want)
    )))
}

/// Every live process that carries `name`'s tag in this lock directory
/// (see `spawn::NAME_VAR`): the server and everything it started, which
/// inherit its environment, whatever group or session they moved to. Each
/// is held by a handle taken before a second look at its tag, so a pid
/// reused between the scan and the signal is never stopped.
fn tagged_processes(store: &Store, name: &ServerName) -> Vec<Handle> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    let tagged = |pid: u32| crate::process::has_tag(pid, name.as_str(), store.dir());
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || !tagged(pid) {
            continue;
        }
        let Some(handle) = ProcessId::of(pid).and_then(|id| id.open()) else {
            continue;
        };
        if tagged(pid) && !handle.has_exited() {
            found.push(handle);
        }
    }
    found
}

/// Stop them as a watcher stops a server: SIGTERM, then SIGKILL whatever
/// is left after the stop timeout. Returns their pids.
fn stop_tagged(handles: &[Handle]) -> Vec<u32> {
    for h in handles {
        let _ = h.signal(libc::SIGTERM);
    }
    let deadline = Instant::now() + crate::record::DEFAULT_STOP_TIMEOUT;
    for h in handles {
        h.wait_exit(deadline.saturating_duration_since(Instant::now()));
    }
    for h in handles.iter().filter(|h| !h.has_exited()) {
        let _ = h.signal(libc::SIGKILL);
        h.wait_exit(Duration::from_secs(5));
    }
    handles.iter().map(|h| h.id().pid).collect()
}

/// A name that is not running (no record, no watcher) owns no process: stop
/// any that still carry its tag, such as the children of a server that was
/// killed together with its watcher. Checked under the name's lock, so a
/// start in progress (whose record is not written yet) is never mistaken.
fn stop_leftover_processes(
    store: &Store,
    name: &ServerName,
    report: &mut Vec<String>,
) -> Result<()> {
    let not_running =
        || matches!(store.read(name), Ok(None)) && !crate::watcher::listening(store, name);
    // Taking the lock creates its file, which a name that is not running
    // does not keep: look without it first, so that doctor leaves a name
    // with nothing to stop as it was (a second run finds all good).
    if !not_running() || tagged_processes(store, name).is_empty() {
        return Ok(());
    }
    let lock_file = format!("{name}.lock");
    let had_lock = store.stat_at(&lock_file).is_ok();
    let _guard = store.lock(name)?;
    if !not_running() {
        return Ok(());
    }
    let handles = tagged_processes(store, name);
    if !had_lock {
        // (Under the lock, as `Store::remove_leftovers` removes it.)
        let _ = store.unlink_at(&lock_file);
    }
    if handles.is_empty() {
        return Ok(());
    }
    let pids = stop_tagged(&handles);
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    store.journal(
        name,
        "doctor",
        &format!(
            "stopped processes left by a server that is gone: {}",
            list.join(" ")
        ),
    );
    report.push(format!(
        "{name}: not running, but {} process(es) still carried its tag (left by a server killed with its watcher); stopped pid {}",
        pids.len(),
        list.join(", ")
    ));
    Ok(())
}

fn check_one(lc: &Lifecycle, name: &ServerName, report: &mut Vec<String>) -> Result<()> {
    let store = &lc.store;
    if store
        .stat_at(&format!("{name}.json"))
        .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
    {
        // No record: nothing to check, and no lock file to create.
        return Ok(());
    }
    let guard = store.lock(name)?;
    let before = match store.read(name) {
        Ok(rec) => rec,
        Err(e @ (Error::CorruptRecord(..) | Error::SymlinkRecord(..))) => {
            let aside = set_aside(store, name)?;
            drop(guard);
            report.push(format!("{name}: {}", e.without_doctor_advice()));
            report.push(format!("{name}: moved it to {}", aside.display()));
            // A live watcher keeps the record in memory and rewrites it.
            if crate::watcher::listening(store, name) {
                poke_now(store, name);
                let deadline = Instant::now() + Duration::from_secs(2);
                let restored = poll_until(Some(deadline), || {
                    Ok(matches!(store.read(name), Ok(Some(_))).then_some(()))
                })?;
                if restored.is_some() {
                    report.push(format!("{name}: its watcher restored a good record"));
                    return Ok(());
                }
            }
            if crate::watcher::listening(store, name) {
                report.push(format!(
                    "{name}: its watcher runs but has not restored the record yet; run `sharedserver admin doctor {name}` again"
                ));
                return Ok(());
            }
            // No watcher: the server, if any, is unsupervised and nobody knows
            // its clients. Find it by the tag every server carries and stop it,
            // so the next `use` starts a fresh one instead of a duplicate.
            let handles = tagged_processes(store, name);
            let leader = handles
                .iter()
                .map(Handle::id)
                .find(|id| crate::process::is_tagged_leader(id.pid, name.as_str(), store.dir()))
                .or_else(|| handles.first().map(Handle::id));
            match leader {
                Some(id) => {
                    stop_tagged(&handles);
                    let guard = store.lock(name)?;
                    let last = crate::record::LastExit::unrecorded(
                        name.as_str(),
                        id.pid,
                        crate::record::ExitKind::Orphaned,
                        "stopped by doctor: its record was unreadable and its watcher gone",
                    );
                    store.write_last(&guard, name, &last)?;
                    store.journal(
                        name,
                        "doctor",
                        &format!("stopped orphaned server pid {}", id.pid),
                    );
                    report.push(format!(
                        "{name}: no watcher was left; stopped the orphaned server pid {} (its clients were unknown)",
                        id.pid
                    ));
                }
                None => report.push(format!(
                    "{name}: no watcher was left, and no server of that name runs"
                )),
            }
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if let Some(rec) = before.as_ref().filter(|rec| lc.not_ours(name, rec)) {
        // Forged, or a pid reused while nobody watched: no stop or kill can
        // act on it, so it would show as running for ever.
        let aside = set_aside(store, name)?;
        drop(guard);
        let pid = rec.server.pid;
        report.push(format!(
            "{name}: its record names pid {pid}, which does not carry this server's tag ({}={name}), and no watcher runs for it: not a server we started; moved the record to {} and left the process alone",
            crate::spawn::NAME_VAR,
            aside.display()
        ));
        return Ok(());
    }
    drop(guard);
    if before.is_some() {
        let repairs = lc.repair(name)?;
        report.extend(repairs.iter().map(|r| format!("{name}: {r}")));
    }
    Ok(())
}

/// Move `name`'s record aside (`NAME.json.corrupt-MS`, so nothing is lost;
/// see `owner`), under the name's lock. Returns where it went.
fn set_aside(store: &Store, name: &ServerName) -> Result<std::path::PathBuf> {
    let ext = format!("{SET_ASIDE}-{}", now_ms());
    store
        .rename_at(&format!("{name}.json"), &format!("{name}.{ext}"))
        .map_err(|e| Error::io(store.record_path(name), "moving aside", e))?;
    Ok(store.path(name, &ext))
}
