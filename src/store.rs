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
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const JOURNAL_LIMIT: u64 = 64 * 1024;

/// The lock directory, by path (for messages and for the tag servers carry)
/// and by the descriptor checked when it was opened. Every file access goes
/// through the descriptor (see `lockdir`), so swapping the path afterwards
/// changes nothing we read, write, rename or signal.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    fd: Arc<OwnedFd>,
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
        let fd = lockdir::ensure(&dir)?;
        let dir = dir.components().collect();
        Ok(Store {
            dir,
            fd: Arc::new(fd),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A file's path, for messages (and for log paths handed to others).
    pub fn path(&self, name: &ServerName, ext: &str) -> PathBuf {
        self.dir.join(file_name(name, ext))
    }

    /// True while the directory we hold is still the one at our path: not
    /// removed (a tmp cleaner, a logout), not replaced. A long-lived caller
    /// (Neovim) checks this before using a cached store, and opens the
    /// directory afresh (recreating it safely) when it is not.
    pub fn is_current(&self) -> bool {
        let Ok(held) = fstat(self.fd.as_raw_fd()) else {
            return false;
        };
        let Ok(now) = std::fs::symlink_metadata(&self.dir) else {
            return false;
        };
        held.st_nlink > 0 && st_dev(&held) == now.dev() && held.st_ino == now.ino()
    }

    /// Open `file` in the lock directory (never following a symlink, never
    /// blocking on a FIFO).
    pub fn open_at(
        &self,
        file: &str,
        flags: libc::c_int,
        mode: libc::mode_t,
    ) -> std::io::Result<File> {
        let c = cstr(file)?;
        let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: plain syscall; on success it returns a new owned fd.
        let fd =
            unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), flags, mode as libc::c_uint) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just returned to us.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Create a FIFO (0600) in the lock directory; an existing one is fine.
    pub fn mkfifo_at(&self, file: &str) -> std::io::Result<()> {
        let c = cstr(file)?;
        // SAFETY: plain syscall.
        if unsafe { libc::mkfifoat(self.fd.as_raw_fd(), c.as_ptr(), 0o600) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Remove `file` from the lock directory; a missing one is fine.
    pub fn unlink_at(&self, file: &str) -> std::io::Result<()> {
        let c = cstr(file)?;
        // SAFETY: plain syscall.
        if unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(e);
            }
        }
        Ok(())
    }

    /// True while `file` in the lock directory still names the open file
    /// whose metadata is `open` (not removed or replaced).
    fn still_at(&self, open: &std::fs::Metadata, file: &str) -> bool {
        match self.stat_at(file) {
            Ok(named) => open.ino() == named.st_ino && open.dev() == st_dev(&named),
            Err(_) => false,
        }
    }

    /// Remove `file`, or the empty directory `file` when `dir` is set.
    pub fn remove_at(&self, file: &str, dir: bool) -> std::io::Result<()> {
        let c = cstr(file)?;
        let flags = if dir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: plain syscall.
        if unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), flags) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Rename within the lock directory (replaces `to`, never follows it).
    pub fn rename_at(&self, from: &str, to: &str) -> std::io::Result<()> {
        let (f, t) = (cstr(from)?, cstr(to)?);
        let fd = self.fd.as_raw_fd();
        // SAFETY: plain syscall.
        if unsafe { libc::renameat(fd, f.as_ptr(), fd, t.as_ptr()) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// lstat of `file` in the lock directory.
    pub fn stat_at(&self, file: &str) -> std::io::Result<libc::stat> {
        let c = cstr(file)?;
        // SAFETY: zeroed stat is a valid out-buffer; plain syscall.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(st)
    }

    /// The names of the files in the lock directory.
    pub fn entries(&self) -> Result<Vec<String>> {
        let err = |e: std::io::Error| Error::io(&self.dir, "listing", e);
        // A fresh descriptor for the same directory: readdir consumes it.
        let dir = self
            .open_at(".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .map_err(err)?;
        let fd: OwnedFd = dir.into();
        // SAFETY: fdopendir takes ownership of the descriptor on success.
        let dirp = unsafe { libc::fdopendir(fd.as_raw_fd()) };
        if dirp.is_null() {
            return Err(err(std::io::Error::last_os_error()));
        }
        std::mem::forget(fd);
        let mut out = Vec::new();
        loop {
            // SAFETY: dirp is a valid DIR* until closedir.
            let ent = unsafe { libc::readdir(dirp) };
            if ent.is_null() {
                break;
            }
            // SAFETY: d_name is NUL-terminated.
            let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
            if let Ok(name) = name.to_str() {
                if name != "." && name != ".." {
                    out.push(name.to_string());
                }
            }
        }
        // SAFETY: closes the DIR* and its descriptor.
        unsafe { libc::closedir(dirp) };
        Ok(out)
    }

    pub fn record_path(&self, name: &ServerName) -> PathBuf {
        self.path(name, "json")
    }

    pub fn lock(&self, name: &ServerName) -> Result<Guard> {
        let path = self.path(name, "lock");
        let file = self
            .open_at(
                &file_name(name, "lock"),
                libc::O_RDWR | libc::O_CREAT | libc::O_NONBLOCK,
                0o600,
            )
            .map_err(|e| nofollow_error(&path, "opening lock file", e))?;
        crate::lockwait::acquire(&file, &path, name.as_str())?;
        // One look at the file, after the lock, for two checks: that it is a
        // regular file (nothing planted there), and that it is still the
        // one at the path. `admin doctor` removes the lock file of a name
        // that is not running, holding its lock. Whoever waited on that file
        // now holds a lock nobody else will ask for: take the one at the
        // path instead.
        let open = regular(&file, &path)?;
        if !self.still_at(&open, &file_name(name, "lock")) {
            return self.lock(name);
        }
        Ok(Guard { _file: file })
    }

    /// Remove `name`'s files that only a running server needs (`.out`,
    /// `.wake`, `.journal`, `.lock`), keeping its log and last exit: for a
    /// name that is not running. Takes the lock; returns the files removed.
    pub fn remove_leftovers(&self, name: &ServerName) -> Result<Vec<PathBuf>> {
        // Taking the lock creates its file: not one to report as left over.
        let had_lock = self.stat_at(&file_name(name, "lock")).is_ok();
        let guard = self.lock(name)?;
        if self.read(name)?.is_some() || crate::watcher::listening(self, name) {
            return Ok(vec![]); // it started meanwhile
        }
        let mut removed = Vec::new();
        for ext in ["out", "wake", "journal", "journal.old", "lock"] {
            let path = self.path(name, ext);
            // (A directory planted there goes too, if it is empty.)
            let file = file_name(name, ext);
            let is_dir = self
                .stat_at(&file)
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
            match self.remove_at(&file, is_dir) {
                Ok(()) if ext == "lock" && !had_lock => {}
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
        let Some(text) = self.read_file(&file_name(name, "json"))? else {
            return Ok(None);
        };
        parse_record(&path, &text).map(Some)
    }

    pub fn write(&self, _lock: &Guard, name: &ServerName, rec: &Record) -> Result<()> {
        let json = serde_json::to_vec_pretty(rec).expect("records always serialize");
        self.write_atomic(&file_name(name, "json"), &json)
    }

    pub fn remove(&self, _lock: &Guard, name: &ServerName) -> Result<()> {
        for ext in ["json", "wake", "out"] {
            self.unlink_at(&file_name(name, ext))
                .map_err(|e| Error::io(self.path(name, ext), "removing", e))?;
        }
        Ok(())
    }

    pub fn read_last(&self, name: &ServerName) -> Option<LastExit> {
        let text = self.read_file(&file_name(name, "last")).ok()??;
        serde_json::from_str::<LastExit>(&text)
            .ok()
            .filter(|l| l.format == record::FORMAT)
    }

    pub fn write_last(&self, _lock: &Guard, name: &ServerName, last: &LastExit) -> Result<()> {
        let json = serde_json::to_vec_pretty(last).expect("exit records always serialize");
        self.write_atomic(&file_name(name, "last"), &json)
    }

    /// Names of every server that has a record (sorted). Files that are not
    /// records of a valid name are ignored, never touched.
    pub fn names(&self) -> Result<Vec<ServerName>> {
        let mut names: Vec<ServerName> = self
            .entries()?
            .into_iter()
            .filter_map(|file| ServerName::parse(file.strip_suffix(".json")?).ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Append one line to the name's journal (for `admin debug`). Best effort:
    /// a journal that cannot be written must never fail the operation.
    pub fn journal(&self, name: &ServerName, actor: &str, line: &str) {
        let file = file_name(name, "journal");
        if self
            .stat_at(&file)
            .is_ok_and(|st| st.st_size as u64 > JOURNAL_LIMIT)
        {
            let _ = self.rename_at(&file, &file_name(name, "journal.old"));
        }
        let entry = format!(
            "{} pid={} {actor}: {line}\n",
            record::rfc3339(record::now_ms()),
            std::process::id()
        );
        let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_NONBLOCK;
        if let Ok(mut f) = self.open_at(&file, flags, 0o600) {
            // Only into a regular file: never a planted FIFO or device.
            if f.metadata().is_ok_and(|m| m.is_file()) {
                let _ = f.write_all(entry.as_bytes());
            }
        }
    }

    /// The journal's lines, oldest first (the rotated part included).
    pub fn read_journal(&self, name: &ServerName) -> Result<String> {
        let mut out = String::new();
        for ext in ["journal.old", "journal"] {
            if let Some(text) = self.read_file(&file_name(name, ext))? {
                out.push_str(&text);
            }
        }
        Ok(out)
    }

    fn write_atomic(&self, target: &str, bytes: &[u8]) -> Result<()> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp = format!(
            ".{target}.{}.{}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let tmp_path = self.dir.join(&tmp);
        let result = (|| {
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
            let mut f = self
                .open_at(&tmp, flags, 0o600)
                .map_err(|e| Error::io(&tmp_path, "creating temporary file", e))?;
            f.write_all(bytes)
                .map_err(|e| Error::io(&tmp_path, "writing temporary file", e))?;
            // rename(2) replaces the name atomically; it never follows a
            // symlink at the target, it replaces the link itself.
            self.rename_at(&tmp, target)
                .map_err(|e| Error::io(self.dir.join(target), "replacing", e))
        })();
        if result.is_err() {
            let _ = self.unlink_at(&tmp);
        }
        result
    }

    /// Read a small state file without following a symlink, without
    /// blocking on a planted FIFO, and only if it is a regular file; None if
    /// it does not exist.
    pub(crate) fn read_file(&self, file: &str) -> Result<Option<String>> {
        let path = self.dir.join(file);
        match self.open_at(file, libc::O_RDONLY | libc::O_NONBLOCK, 0) {
            Ok(f) => {
                regular(&f, &path)?;
                read_all(f, &path).map(Some)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(nofollow_error(&path, "opening", e)),
        }
    }
}

/// `NAME.ext`: the one place a name becomes a file name.
fn file_name(name: &ServerName, ext: &str) -> String {
    format!("{name}.{ext}")
}

fn cstr(file: &str) -> std::io::Result<CString> {
    CString::new(file).map_err(|_| std::io::ErrorKind::InvalidInput.into())
}

fn fstat(fd: libc::c_int) -> std::io::Result<libc::stat> {
    // SAFETY: zeroed stat is a valid out-buffer; plain syscall.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

/// State files are regular files: a FIFO, device or directory planted under
/// a state file's name is refused with a clear message (doctor removes it).
fn regular(f: &File, path: &Path) -> Result<std::fs::Metadata> {
    match f.metadata() {
        Ok(m) if m.is_file() => Ok(m),
        Ok(_) => Err(Error::CorruptRecord(
            path.to_path_buf(),
            "not a regular file (something else was put there)".into(),
        )),
        Err(e) => Err(Error::io(path, "inspecting", e)),
    }
}

fn nofollow_error(path: &Path, doing: &'static str, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        Error::SymlinkRecord(path.to_path_buf())
    } else {
        Error::io(path, doing, e)
    }
}

/// Read a small file we opened (without following a symlink).
fn read_all(mut file: File, path: &Path) -> Result<String> {
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

/// The device of a stat, as std's metadata reports it (`st_dev` is `i32`
/// on macOS, `u64` on Linux).
#[allow(clippy::unnecessary_cast)]
fn st_dev(st: &libc::stat) -> u64 {
    st.st_dev as u64
}
