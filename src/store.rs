//! The lock directory as a store of records.
//!
//! Layout, for a server named `NAME` (names cannot contain '/', cannot start
//! with '.', and every kind of file has its own final extension, so no name
//! can collide with another name's files):
//!
//! | file           | what                                   | lifetime               |
//! |----------------|----------------------------------------|------------------------|
//! | `NAME.lock`    | flock target for every state change    | never deleted          |
//! | `NAME.json`    | the record ([`Record`])                | while the server lives |
//! | `NAME.last`    | how the previous server ended          | until the next start   |
//! | `NAME.wake`    | FIFO the watcher sleeps on             | while the watcher runs |
//! | `NAME.out`     | FIFO of the server's output            | while the server runs  |
//! | `NAME.log`     | default log file                       | kept, rotated at 4 MiB |
//! | `NAME.journal` | bounded log of operations              | rotated at 64 KiB      |
//! | `.NAME.*.tmp`  | in-flight atomic writes                | renamed over the target|

use crate::error::{Error, Result};
use crate::lockdir;
use crate::name::ServerName;
use crate::record::{self, LastExit, Record};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const JOURNAL_LIMIT: u64 = 64 * 1024;

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// Holding this means holding the exclusive lock for one name. The lock file
/// is never deleted, so every process always locks the same inode.
#[derive(Debug)]
pub struct Guard {
    _file: File,
}

impl Store {
    /// The store at the resolved lock directory, created and checked.
    pub fn open() -> Result<Store> {
        Store::at(lockdir::resolve())
    }

    pub fn at(dir: PathBuf) -> Result<Store> {
        lockdir::ensure(&dir)?;
        Ok(Store { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &ServerName, ext: &str) -> PathBuf {
        self.dir.join(format!("{name}.{ext}"))
    }

    pub fn record_path(&self, name: &ServerName) -> PathBuf {
        self.path(name, "json")
    }

    pub fn lock(&self, name: &ServerName) -> Result<Guard> {
        let path = self.path(name, "lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| nofollow_error(&path, "opening lock file", e))?;
        fs4::fs_std::FileExt::lock_exclusive(&file).map_err(|e| Error::io(&path, "locking", e))?;
        // `admin doctor` removes the lock file of a name that is not
        // running, holding its lock. Whoever waited on that file now holds
        // a lock nobody else will ask for: take the one at the path instead.
        if !still_at(&file, &path) {
            return self.lock(name);
        }
        Ok(Guard { _file: file })
    }

    /// Remove `name`'s files that only a running server needs (`.out`,
    /// `.wake`, `.journal`, `.lock`), keeping its log and last exit: for a
    /// name that is not running. Takes the lock; returns the files removed.
    pub fn remove_leftovers(&self, name: &ServerName) -> Result<Vec<PathBuf>> {
        let guard = self.lock(name)?;
        if self.read(name)?.is_some() || crate::watcher::listening(self, name) {
            return Ok(vec![]); // it started meanwhile
        }
        let mut removed = Vec::new();
        for ext in ["out", "wake", "journal", "journal.old", "lock"] {
            let path = self.path(name, ext);
            // (A directory planted there goes too, if it is empty.)
            let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
            let result = if is_dir {
                std::fs::remove_dir(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match result {
                Ok(()) => removed.push(path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path, "removing", e)),
            }
        }
        drop(guard);
        Ok(removed)
    }

    /// Read a record. Renames make writes atomic, so this never sees a torn
    /// record, and it needs no lock when the caller only wants a snapshot.
    pub fn read(&self, name: &ServerName) -> Result<Option<Record>> {
        let path = self.record_path(name);
        let Some(text) = read_nofollow(&path)? else {
            return Ok(None);
        };
        parse_record(&path, &text).map(Some)
    }

    pub fn write(&self, _lock: &Guard, name: &ServerName, rec: &Record) -> Result<()> {
        let json = serde_json::to_vec_pretty(rec).expect("records always serialize");
        self.write_atomic(&self.record_path(name), &json)
    }

    pub fn remove(&self, _lock: &Guard, name: &ServerName) -> Result<()> {
        for ext in ["json", "wake", "out"] {
            let path = self.path(name, ext);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path, "removing", e)),
            }
        }
        Ok(())
    }

    pub fn read_last(&self, name: &ServerName) -> Option<LastExit> {
        let text = read_nofollow(&self.path(name, "last")).ok()??;
        serde_json::from_str::<LastExit>(&text)
            .ok()
            .filter(|l| l.format == record::FORMAT)
    }

    pub fn write_last(&self, _lock: &Guard, name: &ServerName, last: &LastExit) -> Result<()> {
        let json = serde_json::to_vec_pretty(last).expect("exit records always serialize");
        self.write_atomic(&self.path(name, "last"), &json)
    }

    /// Names of every server that has a record (sorted). Files that are not
    /// records of a valid name are ignored, never touched.
    pub fn names(&self) -> Result<Vec<ServerName>> {
        let entries =
            std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, "listing", e))?;
        let mut names: Vec<ServerName> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let file = e.file_name().into_string().ok()?;
                ServerName::parse(file.strip_suffix(".json")?).ok()
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// Append one line to the name's journal (for `admin debug`). Best effort:
    /// a journal that cannot be written must never fail the operation.
    pub fn journal(&self, name: &ServerName, actor: &str, line: &str) {
        let path = self.path(name, "journal");
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.len() > JOURNAL_LIMIT) {
            let _ = std::fs::rename(&path, self.path(name, "journal.old"));
        }
        let entry = format!(
            "{} pid={} {actor}: {line}\n",
            record::rfc3339(record::now_ms()),
            std::process::id()
        );
        if let Ok(mut f) = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            let _ = f.write_all(entry.as_bytes());
        }
    }

    /// The journal's lines, oldest first (the rotated part included).
    pub fn read_journal(&self, name: &ServerName) -> Result<String> {
        let mut out = String::new();
        for ext in ["journal.old", "journal"] {
            if let Some(text) = read_nofollow(&self.path(name, ext))? {
                out.push_str(&text);
            }
        }
        Ok(out)
    }

    fn write_atomic(&self, target: &Path, bytes: &[u8]) -> Result<()> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let file_name = target.file_name().and_then(|n| n.to_str()).unwrap_or("x");
        let tmp = self.dir.join(format!(
            ".{file_name}.{}.{}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)
                .map_err(|e| Error::io(&tmp, "creating temporary file", e))?;
            f.write_all(bytes)
                .map_err(|e| Error::io(&tmp, "writing temporary file", e))?;
            // rename(2) replaces the name atomically; it never follows a
            // symlink at the target, it replaces the link itself.
            std::fs::rename(&tmp, target).map_err(|e| Error::io(target, "replacing", e))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

fn nofollow_error(path: &Path, doing: &'static str, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        Error::SymlinkRecord(path.to_path_buf())
    } else {
        Error::io(path, doing, e)
    }
}

/// Read a small file without following a symlink; None if it does not exist.
pub(crate) fn read_nofollow(path: &Path) -> Result<Option<String>> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(nofollow_error(path, "opening", e)),
    };
    // Plain reads into a buffer sized for a typical record: no fstat for a
    // size hint, which is one syscall too many on the status hot path.
    let mut bytes = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                bytes.extend_from_slice(&chunk[..n]);
                // A short read of a regular file means its end: skip the
                // extra read that would only return 0.
                if n < chunk.len() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::CorruptRecord(
                    path.to_path_buf(),
                    format!("cannot read it: {e}"),
                ))
            }
        }
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| Error::CorruptRecord(path.to_path_buf(), "not UTF-8 text".into()))
}

/// Parse and validate a record's text; every failure names the file.
pub fn parse_record(path: &Path, text: &str) -> Result<Record> {
    // The common case in one pass; the slower walk below only explains why
    // a record is bad.
    if let Ok(rec) = serde_json::from_str::<Record>(text) {
        if rec.format == record::FORMAT && rec.version == record::VERSION {
            return Ok(rec);
        }
    }
    let corrupt = |why: String| Error::CorruptRecord(path.to_path_buf(), why);
    if text.trim().is_empty() {
        return Err(corrupt("the file is empty".into()));
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| corrupt(format!("not valid JSON ({e})")))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(record::FORMAT) {
        return Err(corrupt(
            "not a sharedserver record (no \"format\" marker)".into(),
        ));
    }
    match value.get("version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(record::VERSION) => {}
        Some(v) => {
            return Err(corrupt(format!(
                "record format version {v}, this sharedserver reads version {}",
                record::VERSION
            )))
        }
        None => return Err(corrupt("no format version".into())),
    }
    serde_json::from_value(value).map_err(|e| corrupt(format!("unexpected layout ({e})")))
}

/// True while `path` still names the open `file` (not removed or replaced).
fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(open), Ok(named)) => open.ino() == named.ino() && open.dev() == named.dev(),
        _ => false,
    }
}
