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
    // A host that blocks SIGPIPE itself may have one pending already; that one
    // is the host's, and stays.
    let pending_before = sigpipe_pending();
    let result = w.write_all(buf);
    if !pending_before
        && matches!(&result, Err(e) if e.kind() == io::ErrorKind::BrokenPipe)
        && sigpipe_pending()
    {
        // It is pending, so this returns at once; sigwait is POSIX, unlike
        // sigtimedwait, which macOS lacks.
        let _ = pipe.wait();
    }
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    result
}

/// The wake and output files must be FIFOs: a regular file planted there
/// would read as "no watcher" forever, a device could block (doctor
/// removes either).
pub fn check_fifo(f: &std::fs::File, path: &std::path::Path) -> crate::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match f.metadata() {
        Ok(m) if m.file_type().is_fifo() => Ok(()),
        Ok(_) => Err(crate::Error::NotAFifo(path.to_path_buf())),
        Err(e) => Err(crate::Error::io(path, "inspecting", e)),
    }
}

fn sigpipe_pending() -> bool {
    // SAFETY: sigpending fills a set this frame owns; sigismember reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut set) == 0 && libc::sigismember(&set, libc::SIGPIPE) == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rust starts with SIGPIPE ignored, and an ignored signal is dropped
    /// rather than left pending. The disposition is process wide, so the
    /// tests that change it take turns.
    fn with_sigpipe(disposition: libc::sighandler_t, test: impl FnOnce()) {
        static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: signal() with a valid disposition.
        let old = unsafe { libc::signal(libc::SIGPIPE, disposition) };
        test();
        // SAFETY: restores the disposition saved above.
        unsafe { libc::signal(libc::SIGPIPE, old) };
    }

    fn broken_pipe() -> std::fs::File {
        let (reader, writer) = nix::unistd::pipe().unwrap();
        drop(reader);
        std::fs::File::from(writer)
    }

    #[test]
    fn a_pipe_without_reader_is_an_error_not_a_death() {
        // With the default disposition, as in the CLI, an unhandled SIGPIPE
        // would end this test process.
        with_sigpipe(libc::SIG_DFL, || {
            let err = write_all(&mut broken_pipe(), b"x").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
            assert!(!sigpipe_pending(), "the signal was consumed");
        });
    }

    #[test]
    fn a_host_that_blocks_sigpipe_gets_its_own_pending_one_and_not_ours() {
        // A handler that does nothing, so that a SIGPIPE elsewhere in this
        // test process kills nothing; and its own thread, because the mask
        // and thread-directed signals are per thread.
        extern "C" fn ignore(_: libc::c_int) {}
        let handler = ignore as extern "C" fn(libc::c_int) as libc::sighandler_t;
        with_sigpipe(handler, || {
            std::thread::spawn(host_with_sigpipe_blocked)
                .join()
                .unwrap()
        });
    }

    fn host_with_sigpipe_blocked() {
        {
            let mut pipe = SigSet::empty();
            pipe.add(Signal::SIGPIPE);
            pipe.thread_block().unwrap();
            let err = write_all(&mut broken_pipe(), b"x").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
            assert!(!sigpipe_pending(), "ours is not left for the host");
            // The host's own SIGPIPE, raised while blocked.
            let _ = broken_pipe().write(b"x");
            assert!(sigpipe_pending());
            let err = write_all(&mut broken_pipe(), b"x").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
            assert!(sigpipe_pending(), "the host's signal is left for the host");
            assert!(SigSet::thread_get_mask().unwrap().contains(Signal::SIGPIPE));
            pipe.wait().unwrap();
        }
    }
}
