//! sharedserver: one server process shared by many clients.
//!
//! The library is the whole product; the `sharedserver` binary and the
//! Neovim module (`lua` module, in the cdylib with the `nvim` feature) are
//! thin adapters.
//!
//! - [`options`] and [`config`]: a server's options, from files, Lua and flags
//! - [`lockdir`]: where state lives and why it is safe to trust
//! - [`store`] and [`record`]: the records, their locking and state machine
//! - [`process`]: process identity (pid + start time), exit events (pidfd or
//!   the portable backend)
//! - [`lifecycle`]: attach, detach, stop, status: the API both faces use
//! - [`project`]: a whole project at once (`use --all`, `unuse --all`)
//! - [`watcher`] and [`spawn`]: the per-server supervisor process
//! - [`doctor`]: validation and repair

// One clear message instead of a wall of unresolved imports: the process
// layer needs Unix signals, process groups and either /proc or libproc.
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
compile_error!(
    "sharedserver supports Linux and macOS only: it needs Unix process groups, signals and a way to read a process's start time"
);

pub mod config;
pub mod doctor;
pub mod duration;
pub mod error;
pub mod exit;
pub(crate) mod fanout;
pub mod lifecycle;
pub(crate) mod lockdir;
pub mod lockwait;
pub mod logs;
#[cfg(feature = "nvim")]
mod lua;
pub(crate) mod name;
pub mod options;
pub(crate) mod pipe;
pub mod port;
pub mod probe;
pub mod process;
pub mod project;
pub mod record;
pub(crate) mod spawn;
pub mod status;
pub(crate) mod store;
#[doc(hidden)]
pub mod test_hooks;
pub mod watcher;

pub use error::{Error, Result};
pub use lifecycle::{AttachRequest, Attached, IfRunning, Lifecycle, StartSpec};
pub use name::ServerName;
pub use record::State;
pub use status::Status;
pub use store::Store;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
