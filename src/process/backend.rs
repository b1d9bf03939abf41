//! Which way this process learns that other processes exited, chosen once at
//! run time.
//!
//! - `pidfd` (Linux 5.3+): a descriptor per process that becomes readable on
//!   its exit and can be signalled without any pid-reuse race.
//! - `portable` (macOS, older Linux kernels, containers whose seccomp profile
//!   blocks `pidfd_open`): the watcher learns of its server's exit through
//!   SIGCHLD (it is the server's parent); other processes are checked by pid
//!   plus start time, or watched with kqueue where the OS has it.
//!
//! Linux uses pidfd when `pidfd_open` works and the portable backend
//! otherwise; it never fails for want of pidfd. `SHAREDSERVER_BACKEND=portable`
//! forces the portable backend (the test suite runs under both).

use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// The environment variable that forces a backend.
pub const ENV_VAR: &str = "SHAREDSERVER_BACKEND";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Pidfd,
    Portable,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Pidfd => "pidfd",
            Backend::Portable => "portable",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Refuse a `SHAREDSERVER_BACKEND` that names no backend, rather than
/// ignore it (the CLI checks it first thing; `current` never fails).
pub fn check_env() -> crate::error::Result<()> {
    match std::env::var(ENV_VAR) {
        Ok(v) if !v.is_empty() && v != "portable" => Err(crate::error::Error::Other(format!(
            "{ENV_VAR} is '{v}': the only value it takes is 'portable' (unset it for the default)"
        ))),
        _ => Ok(()),
    }
}

/// The backend of this process (decided on first use, then fixed).
pub fn current() -> Backend {
    static CHOSEN: OnceLock<Backend> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let forced = std::env::var(ENV_VAR).is_ok_and(|v| v == "portable");
        if !forced && pidfd_works() {
            Backend::Pidfd
        } else {
            Backend::Portable
        }
    })
}

#[cfg(target_os = "linux")]
fn pidfd_works() -> bool {
    super::linux::PidFd::open(std::process::id()).is_ok()
}

#[cfg(not(target_os = "linux"))]
fn pidfd_works() -> bool {
    false
}
