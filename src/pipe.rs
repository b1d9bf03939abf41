//! Writing into a pipe whose reader may be gone, without dying of it.
//!
//! A write to a pipe with no reader raises SIGPIPE, which kills any process
//! that has the signal at its default: the CLI does (so that
//! `sharedserver list | head -1` ends quietly), and so may a host that loads
//! the Neovim module. A poke meets a reader gone when the watcher exits
//! between the poker's open and its write; the handshake, when a new watcher
//! dies before the caller has written to its stdin. Here SIGPIPE is blocked for
//! the calling thread during the write, and one that the write raised is
//! consumed, so the caller sees an ordinary `EPIPE` error instead.

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
use std::io::{self, Write};

/// `write_all`, with a vanished reader reported as an error, never a signal.
pub fn write_all(w: &mut impl Write, buf: &[u8]) -> io::Result<()> {
    let mut pipe = SigSet::empty();
    pipe.add(Signal::SIGPIPE);
    let mut old = SigSet::empty();
    if pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&pipe), Some(&mut old)).is_err() {
        return w.write_all(buf);
    }
    let result = w.write_all(buf);
    // Were SIGPIPE blocked already, a pending one could be the host's own;
    // it was not, so a pending one now is the one this write raised.
    if !old.contains(Signal::SIGPIPE)
        && matches!(&result, Err(e) if e.kind() == io::ErrorKind::BrokenPipe)
    {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: plain libc call with a valid set and timeout.
        unsafe { libc::sigtimedwait(pipe.as_ref(), std::ptr::null_mut(), &zero) };
    }
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_without_reader_is_an_error_not_a_death() {
        // The default disposition, as in the CLI: an unhandled SIGPIPE would
        // end this test process.
        // SAFETY: signal() with a valid disposition.
        let old = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        let (reader, writer) = nix::unistd::pipe().unwrap();
        drop(reader);
        let mut writer = std::fs::File::from(writer);
        let err = write_all(&mut writer, b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        // SAFETY: sigpending fills the set we own.
        let pending = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigpending(&mut set);
            libc::sigismember(&set, libc::SIGPIPE) == 1
        };
        assert!(!pending, "the signal was consumed");
        // SAFETY: restores the disposition saved above.
        unsafe { libc::signal(libc::SIGPIPE, old) };
    }
}
