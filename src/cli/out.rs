//! Standard output, for every command: what it prints goes through
//! [`write`] (the `say!` macro, `println!`'s twin). A write that fails (a
//! full disk) becomes one `Error::Output` for the caller to return, never
//! a panic in `println!`; a reader that went away (`| head -1`) ends the
//! process quietly (see `main`, and `report`). Standard error goes
//! through [`stderr`] (`note!`), which never panics either.

use sharedserver::{Error, Result};
use std::io::Write;

/// Write and flush (so that a failure is seen here, not lost at exit).
pub fn write(args: std::fmt::Arguments) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.flush())
        .map_err(|e| Error::Output(e, None))
}

/// Standard error, for messages and progress (the `note!` macro,
/// `eprintln!`'s twin): a write that fails (a full disk) is dropped, there
/// being nowhere left to say so, rather than panicking.
pub fn stderr(args: std::fmt::Arguments) {
    let _ = std::io::stderr().write_fmt(args);
}

/// [`write`] for bytes (a log's output, a completion script).
pub fn bytes(buf: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(buf)
        .and_then(|()| out.flush())
        .map_err(|e| Error::Output(e, None))
}

/// `e`, if it is a failed write, saying what was done all the same (what
/// the unprinted report was about).
pub fn after(e: Error, done: impl FnOnce() -> String) -> Error {
    match e {
        Error::Output(err, None) => Error::Output(err, Some(done())),
        e => e,
    }
}

/// How a command's error ends the process: one line on stderr and
/// `EXIT_ERROR`, except for a closed pipe, which ends it quietly as it
/// ends other Unix tools.
pub fn report(e: &Error) -> i32 {
    match e {
        Error::Output(err, _) if err.kind() == std::io::ErrorKind::BrokenPipe => {}
        _ => note!("sharedserver: {e}"),
    }
    super::EXIT_ERROR
}
