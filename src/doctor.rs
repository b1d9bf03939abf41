//! `admin doctor`: validate the lock directory and repair what crashes and
//! accidents leave behind. Every repair is reported in one line.

use crate::error::{Error, Result};
use crate::lifecycle::{poll_until, Lifecycle};
use crate::name::ServerName;
use crate::process::ProcessId;
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
        let Some((stem, ext)) = file.rsplit_once('.') else {
            continue;
        };
        let Ok(name) = ServerName::parse(stem) else {
            continue;
        };
        if only.is_some_and(|o| *o != name) {
            continue;
        }
        if let Some(fixed) = misplaced(store, &file, ext)? {
            report.push(fixed);
            continue;
        }
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
    if let Some(name) = only {
        names.insert(name.clone());
    }
    for name in &names {
        check_one(lc, name, &mut report)?;
    }
    // Files left by failed starts and stopped servers: a name that is not
    // running needs none of them (its log and last exit are kept).
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

/// The process-group leader whose environment says it is `name`'s server in
/// this lock directory (see `spawn::NAME_VAR`).
fn find_orphan(store: &Store, name: &ServerName) -> Option<ProcessId> {
    let want_name = format!("{}={name}", crate::spawn::NAME_VAR);
    let want_dir = format!("{}={}", crate::lockdir::ENV_VAR, store.dir().display());
    let tagged = |pid: u32| {
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            return false;
        };
        let vars: Vec<&[u8]> = environ.split(|&b| b == 0).collect();
        let has = |want: &str| vars.contains(&want.as_bytes());
        // Only the group leader: its children inherit the tag too.
        let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32)));
        has(&want_name) && has(&want_dir) && pgid.is_ok_and(|g| g.as_raw() as u32 == pid)
    };
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
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
        // The pid may have been reused since the first look. Hold a handle,
        // then look again: if the process is still alive afterwards, that
        // second look was at the very process the handle (and the returned
        // identity) refers to.
        let Some(id) = ProcessId::of(pid) else {
            continue;
        };
        let Some(fd) = id.open() else { continue };
        if tagged(pid) && !fd.has_exited() {
            return Some(id);
        }
    }
    None
}

/// Stop the orphan as its watcher would have (`process::terminate`).
fn stop_orphan(id: &ProcessId) {
    let Some(handle) = id.open() else { return };
    let timeout = crate::record::DEFAULT_STOP_TIMEOUT;
    crate::process::terminate(&handle, timeout, |t| handle.wait_exit(t));
}

fn check_one(lc: &Lifecycle, name: &ServerName, report: &mut Vec<String>) -> Result<()> {
    let store = &lc.store;
    let guard = store.lock(name)?;
    let before = match store.read(name) {
        Ok(rec) => rec,
        Err(e @ (Error::CorruptRecord(..) | Error::SymlinkRecord(..))) => {
            let path = store.record_path(name);
            let aside_ext = format!("json.corrupt-{}", now_ms());
            let aside = store.path(name, &aside_ext);
            store
                .rename_at(&format!("{name}.json"), &format!("{name}.{aside_ext}"))
                .map_err(|e| Error::io(&path, "moving aside", e))?;
            drop(guard);
            report.push(format!("{name}: {e}"));
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
            match find_orphan(store, name) {
                Some(id) => {
                    stop_orphan(&id);
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
    drop(guard);
    if before.is_some() {
        let repairs = lc.repair(name)?;
        report.extend(repairs.iter().map(|r| format!("{name}: {r}")));
    }
    Ok(())
}
