//! Server output. Every server has a log (by default `NAME.log` in the lock
//! directory). The server writes into a FIFO (`NAME.out`) that the watcher
//! drains into the log file, rotating it at [`LOG_CAP`] into `FILE.1`.
//!
//! The server's end of the FIFO is opened read-write, so it always has a
//! reader: if the watcher dies, the server is never killed by SIGPIPE; its
//! writes wait in the pipe until the replacement watcher drains them.
//!
//! The log path is the user's, possibly in a shared directory, and the
//! watcher may run as root. So it is never followed through a symlink, never
//! created over something that exists, and only a regular file is ever
//! rotated: `--log-file /dev/null` stays a device. A FIFO or socket is
//! refused (the watcher would block on it). If rotation fails, the file is
//! truncated in place, and if even that fails copying stops: either way the
//! journal says why, and the log never grows past the cap.

use crate::error::{Error, Result};
use crate::name::ServerName;
use crate::store::Store;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Size at which the log is rotated (one previous file is kept).
pub const LOG_CAP: u64 = 4 * 1024 * 1024;

/// Where `name`'s output goes: the log file chosen for it (`--log-file`,
/// `log_file`, or as its record or last exit says), else `NAME.log` in the
/// lock directory. The one place that decides it.
pub fn path_for(store: &Store, name: &ServerName, chosen: Option<&Path>) -> PathBuf {
    chosen.map_or_else(|| store.path(name, "log"), Path::to_path_buf)
}

/// The watcher's side of the output FIFO, copying into the log file.
pub struct Pump {
    fifo: File,
    path: PathBuf,
    out: Option<File>,
    /// Only a regular file is rotated (or truncated).
    regular: bool,
    size: u64,
    store: Store,
    name: ServerName,
    /// Bytes of an unfinished line, kept for `log:` readiness matching.
    partial: Vec<u8>,
    matcher: Option<regex::Regex>,
    pub matched: bool,
}

impl Pump {
    pub fn open(
        store: &Store,
        name: &ServerName,
        log: &Path,
        matcher: Option<regex::Regex>,
    ) -> Result<Pump> {
        let fifo_path = store.path(name, "out");
        store
            .mkfifo_at(&format!("{name}.out"))
            .map_err(|e| Error::io(&fifo_path, "creating output fifo", e))?;
        let (out, regular) = open_log_in(store, log)?;
        let size = out.metadata().map_or(0, |m| m.len());
        let fifo = open_fifo(store, name, true)?;
        Ok(Pump {
            fifo,
            path: log.to_path_buf(),
            out: Some(out),
            regular,
            size,
            store: store.clone(),
            name: name.clone(),
            partial: Vec::new(),
            matcher,
            matched: false,
        })
    }

    /// A descriptor for the server's stdout and stderr.
    pub fn server_end(store: &Store, name: &ServerName) -> Result<File> {
        open_fifo(store, name, false)
    }

    pub fn fifo(&self) -> &File {
        &self.fifo
    }

    /// Copy whatever is waiting in the FIFO to the log. Never blocks.
    pub fn drain(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match (&self.fifo).read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => self.write(&buf[..n]),
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.regular && self.size + bytes.len() as u64 > LOG_CAP {
            self.rotate();
        }
        if let Some(out) = &mut self.out {
            if out.write_all(bytes).is_ok() {
                self.size += bytes.len() as u64;
            }
        }
        if let Some(re) = &self.matcher {
            if !self.matched {
                self.partial.extend_from_slice(bytes);
                let text = String::from_utf8_lossy(&self.partial);
                self.matched = text.lines().any(|l| re.is_match(l));
                // Keep only the unfinished last line.
                if let Some(i) = self.partial.iter().rposition(|&b| b == b'\n') {
                    self.partial.drain(..=i);
                }
                if self.partial.len() > 64 * 1024 {
                    self.partial.clear();
                }
            }
        }
    }

    /// Move the full log to `FILE.1` and start a new one. If that fails
    /// (a read-only or full directory, a file replaced by something else),
    /// truncate the open file in place; if even that fails, stop copying.
    /// The journal says which, once per failure.
    fn rotate(&mut self) {
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(".1");
        let renamed = match in_store(&self.store, &self.path) {
            Some(file) => self.store.rename_at(file, &format!("{file}.1")),
            None => std::fs::rename(&self.path, &rotated),
        };
        let why = match renamed {
            Ok(()) => match open_log_in(&self.store, &self.path) {
                Ok((out, regular)) => {
                    self.out = Some(out);
                    self.regular = regular;
                    self.size = 0;
                    return;
                }
                Err(e) => e.to_string(),
            },
            Err(e) => format!("renaming it to {}: {e}", Path::new(&rotated).display()),
        };
        let truncated = self
            .out
            .as_ref()
            .map(|f| f.set_len(0))
            .unwrap_or_else(|| Err(std::io::ErrorKind::NotFound.into()));
        let line = match truncated {
            Ok(()) => {
                self.size = 0;
                format!(
                    "cannot rotate the log {} ({why}); truncated it in place instead",
                    self.path.display()
                )
            }
            Err(e) => {
                self.out = None;
                format!(
                    "cannot rotate the log {} ({why}) nor truncate it ({e}); no longer copying the server's output",
                    self.path.display()
                )
            }
        };
        self.store.journal(&self.name, "watcher", &line);
    }
}

/// Open (or create) a log file for appending without following a symlink,
/// creating nothing over an existing file, and never blocking: a FIFO
/// without a reader fails at once. Returns the file and whether it is a
/// regular file (only those are rotated).
pub fn open_log(path: &Path) -> Result<(File, bool)> {
    open_log_with(path, |extra| {
        let mut o = OpenOptions::new();
        o.append(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK | extra);
        if extra & libc::O_CREAT != 0 {
            o.create_new(true).mode(0o600);
        }
        o.open(path)
    })
}

/// [`open_log`], but a log in the lock directory (the default `NAME.log`)
/// is opened through the store's verified descriptor, like every state file.
fn open_log_in(store: &Store, path: &Path) -> Result<(File, bool)> {
    let file = in_store(store, path);
    match file {
        Some(file) => open_log_with(path, |extra| {
            let excl = if extra & libc::O_CREAT != 0 {
                libc::O_EXCL
            } else {
                0
            };
            store.open_at(
                file,
                libc::O_WRONLY | libc::O_APPEND | libc::O_NONBLOCK | extra | excl,
                0o600,
            )
        }),
        None => open_log(path),
    }
}

/// The file name of `path` when it lies directly in the lock directory.
fn in_store<'a>(store: &Store, path: &'a Path) -> Option<&'a str> {
    (path.parent() == Some(store.dir()))
        .then(|| path.file_name()?.to_str())
        .flatten()
}

fn open_log_with(
    path: &Path,
    open: impl Fn(libc::c_int) -> std::io::Result<File>,
) -> Result<(File, bool)> {
    // Existing target first, without O_CREAT; create only if it is absent.
    let file = match open(0) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match open(libc::O_CREAT) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => open(0),
            other => other,
        },
        other => other,
    };
    let file = file.map_err(|e| log_error(path, e))?;
    let kind = file
        .metadata()
        .map_err(|e| Error::io(path, "inspecting log file", e))?
        .file_type();
    use std::os::unix::fs::FileTypeExt;
    if !(kind.is_file() || kind.is_char_device()) {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file or device"
        };
        return Err(Error::BadLogFile(
            path.to_path_buf(),
            format!("{what}; the watcher would block on it (give a regular file, or /dev/null)"),
        ));
    }
    // Blocking writes from here on (a terminal or device may be slow).
    set_blocking(&file);
    Ok((file, kind.is_file()))
}

fn log_error(path: &Path, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) => Error::BadLogFile(
            path.to_path_buf(),
            format!(
                "a symlink; logs are never written through one (give the real path{})",
                if ["/dev/std", "/dev/fd/", "/proc/self/fd/"]
                    .iter()
                    .any(|p| path.to_string_lossy().starts_with(p))
                {
                    ": the server outlives this command, so its output cannot go to this terminal; read it with `sharedserver logs -f NAME`"
                } else {
                    ""
                }
            ),
        ),
        Some(libc::ENXIO) => Error::BadLogFile(
            path.to_path_buf(),
            "a FIFO; the watcher would block on it (give a regular file, or /dev/null)".into(),
        ),
        _ => Error::io(path, "opening log file", e),
    }
}

/// Make sure a log file can be opened before anything starts: its
/// directory is created (0700) when missing, and the file itself must be
/// something `open_log` accepts. The error names the path and the reason.
pub fn prepare(store: &Store, path: &Path) -> Result<()> {
    if in_store(store, path).is_some() {
        return open_log_in(store, path).map(|_| ());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io(dir, "creating the log file's directory", e))?;
        }
    }
    open_log(path).map(|_| ())
}

fn open_fifo(store: &Store, name: &ServerName, nonblocking: bool) -> Result<File> {
    let path = store.path(name, "out");
    // O_NONBLOCK for the open itself, so a planted regular file or device
    // never blocks us; the server's end is made blocking again below.
    // Read-write on both ends: neither side ever sees EOF or SIGPIPE.
    let f = store
        .open_at(&format!("{name}.out"), libc::O_RDWR | libc::O_NONBLOCK, 0)
        .map_err(|e| Error::io(&path, "opening output fifo", e))?;
    crate::pipe::check_fifo(&f, &path)?;
    if !nonblocking {
        set_blocking(&f);
    }
    Ok(f)
}

fn set_blocking(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let fd = f.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
}

/// A log file opened for reading, if it is a regular file: opening a FIFO
/// planted at its path must not hang `logs`.
pub fn open_for_reading(path: &Path) -> Option<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    f.metadata().is_ok_and(|m| m.is_file()).then_some(f)
}

/// The last `lines` lines a run wrote to a log that was `start` bytes long
/// when it began. (Rotated since, or shorter: the plain [`tail`].)
pub fn tail_since(path: &Path, lines: usize, start: u64) -> Option<String> {
    let mut bytes = Vec::new();
    let mut f = open_for_reading(path)?;
    let len = f.metadata().ok()?.len();
    if len < start {
        return tail(path, lines);
    }
    let from = start.max(len.saturating_sub(256 * 1024));
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(from)).ok()?;
    f.read_to_end(&mut bytes).ok()?;
    last_lines(&bytes, lines)
}

/// The last `lines` lines of a log file (looking into the rotated file too).
pub fn tail(path: &Path, lines: usize) -> Option<String> {
    let mut rotated = path.to_path_buf().into_os_string();
    rotated.push(".1");
    let mut text = Vec::new();
    for p in [PathBuf::from(rotated), path.to_path_buf()] {
        let mut bytes = Vec::new();
        if open_for_reading(&p).is_some_and(|mut f| f.read_to_end(&mut bytes).is_ok()) {
            text.extend_from_slice(&bytes[bytes.len().saturating_sub(256 * 1024)..]);
        }
    }
    last_lines(&text, lines)
}

fn last_lines(bytes: &[u8], lines: usize) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let tail: Vec<&str> = text.lines().rev().take(lines).collect();
    (!tail.is_empty()).then(|| tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
}
