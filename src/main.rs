//! The `sharedserver` binary: a thin clap front end over the library, and
//! (through the hidden `__watch` subcommand) the per-server watcher.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
