//! The `sharedserver` binary: a thin clap front end over the library, and
//! (through the hidden `__watch` subcommand) the per-server watcher.

mod cli;

fn main() {
    // The watcher lives long and idles, so it skips argument parsing and
    // asks the kernel to map only the code pages it really touches.
    let mut args = std::env::args_os().skip(1);
    if let (Some(cmd), Some(name), None) = (args.next(), args.next(), args.next()) {
        if cmd == "__watch" {
            sharedserver::watcher::trim_resident_code();
            std::process::exit(sharedserver::watcher::main(&name.to_string_lossy()));
        }
    }
    // A CLI whose reader went away (`sharedserver list | head -1`) should
    // end quietly, as Unix tools do, not panic in println!. (The watcher
    // above keeps SIGPIPE ignored: it must outlive a caller that died.)
    // SAFETY: setting a signal disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    std::process::exit(cli::main());
}
