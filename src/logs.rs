//! Server output. Every server has a log (by default `NAME.log` in the lock
//! directory). The server writes into a FIFO (`NAME.out`) that the watcher
//! drains into the log file, rotating it at [`LOG_CAP`] into `FILE.1`.
//!
//! The server's end of the FIFO is opened read-write, so it always has a
//! reader: if the watcher dies, the server is never killed by SIGPIPE; its
//! writes wait in the pipe until the replacement watcher drains them.

use crate::error::{Error, Result};
use crate::name::ServerName;
use crate::store::Store;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Size at which the log is rotated (one previous file is kept).
pub const LOG_CAP: u64 = 4 * 1024 * 1024;

pub fn default_path(store: &Store, name: &ServerName) -> PathBuf {
    store.path(name, "log")
}

/// The watcher's side of the output FIFO, copying into the log file.
pub struct Pump {
    fifo: File,
    path: PathBuf,
    out: Option<File>,
    size: u64,
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
        match nix::unistd::mkfifo(
            &fifo_path,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        ) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(Error::io(&fifo_path, "creating output fifo", e.into())),
        }
        let fifo = open_fifo(&fifo_path, true)?;
        let mut pump = Pump {
            fifo,
            path: log.to_path_buf(),
            out: None,
            size: 0,
            partial: Vec::new(),
            matcher,
            matched: false,
        };
        pump.reopen();
        Ok(pump)
    }

    /// A descriptor for the server's stdout and stderr.
    pub fn server_end(store: &Store, name: &ServerName) -> Result<File> {
        open_fifo(&store.path(name, "out"), false)
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
        if self.size + bytes.len() as u64 > LOG_CAP {
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            let _ = std::fs::rename(&self.path, rotated);
            self.reopen();
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

    fn reopen(&mut self) {
        self.out = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&self.path)
            .ok();
        self.size = self
            .out
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
    }
}

fn open_fifo(path: &Path, nonblocking: bool) -> Result<File> {
    let mut flags = libc::O_NOFOLLOW | libc::O_CLOEXEC;
    if nonblocking {
        flags |= libc::O_NONBLOCK;
    }
    // Read-write on both ends: neither side ever sees EOF or SIGPIPE.
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| Error::io(path, "opening output fifo", e))
}

/// The last `lines` lines of a log file (looking into the rotated file too).
pub fn tail(path: &Path, lines: usize) -> Option<String> {
    let mut rotated = path.to_path_buf().into_os_string();
    rotated.push(".1");
    let mut text = Vec::new();
    for p in [PathBuf::from(rotated), path.to_path_buf()] {
        if let Ok(bytes) = std::fs::read(&p) {
            text.extend_from_slice(&bytes[bytes.len().saturating_sub(256 * 1024)..]);
        }
    }
    let text = String::from_utf8_lossy(&text);
    let tail: Vec<&str> = text.lines().rev().take(lines).collect();
    (!tail.is_empty()).then(|| tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
}
