//! Where state lives, and why it is safe to trust.
//!
//! Resolution: `$SHAREDSERVER_LOCKDIR`, else `$XDG_RUNTIME_DIR/sharedserver`,
//! else (Linux) `/dev/shm/sharedserver-<uid>` when /dev/shm is a tmpfs, else
//! `/tmp/sharedserver-<uid>`. Every state change is an atomic rename, which
//! costs about 200 µs on a disk-backed /tmp and a few µs in memory, so a
//! memory filesystem is preferred when the runtime dir is missing
//! (containers, SSH sessions without logind, CI). The directory is created 0700 by the mkdir
//! call itself (no window where it is wider), and an existing one is refused
//! unless it is ours and closed to group and others: anyone who can write
//! there could forge a record and make us signal an arbitrary process.
//!
//! The check is made on an open handle, never on the path: a path that
//! passed a check can be swapped (`renameat2(RENAME_EXCHANGE)`) by anyone who
//! can write its parent. So the directory is opened once (O_DIRECTORY |
//! O_NOFOLLOW), the handle is checked with fstat, and the store does every
//! later access relative to it (openat, renameat, mkfifoat, unlinkat).

use crate::error::{Error, Result};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

pub const ENV_VAR: &str = "SHAREDSERVER_LOCKDIR";

/// The directory we would use, without touching the filesystem.
pub fn resolve() -> PathBuf {
    if let Some(dir) = std::env::var_os(ENV_VAR).filter(|v| !v.is_empty()) {
        // Kept relative, to be refused (see `check_path`).
        return normalize(Path::new(&dir));
    }
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        return normalize(&absolute(PathBuf::from(runtime).join("sharedserver")));
    }
    let uid = nix::unistd::geteuid();
    if shm_is_tmpfs() {
        return PathBuf::from(format!("/dev/shm/sharedserver-{uid}"));
    }
    PathBuf::from(format!("/tmp/sharedserver-{uid}"))
}

/// True when /dev/shm exists and is a tmpfs (it is on most Linux systems;
/// a container may lack it, or mount something else there).
#[cfg(target_os = "linux")]
fn shm_is_tmpfs() -> bool {
    nix::sys::statfs::statfs("/dev/shm")
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

#[cfg(not(target_os = "linux"))]
fn shm_is_tmpfs() -> bool {
    false
}

fn absolute(path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        return path;
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(&path))
        .unwrap_or(path)
}

/// Drop trailing slashes and `.` components. A trailing slash (`/tmp/x/`)
/// or `/.` makes the kernel resolve the last name as a directory, following
/// a symlink even under O_NOFOLLOW: without this, `x -> elsewhere` passes.
fn normalize(path: &Path) -> PathBuf {
    path.components().collect()
}

/// The path alone: absolute (a relative one would give each working
/// directory a lock directory, and a copy of every server, of its own) and
/// without `..`.
fn check_path(dir: &Path) -> Result<()> {
    let refuse = |why: &str| {
        Err(Error::UnsafeLockDir(
            dir.to_path_buf(),
            format!("{why}; set {ENV_VAR} to a plain absolute path"),
        ))
    };
    if dir.is_relative() {
        return refuse("it is relative, so each working directory would have its own");
    }
    if dir.components().any(|c| c == Component::ParentDir) {
        return refuse("it contains '..'");
    }
    Ok(())
}

/// Create the directory if needed, open it once, and check the handle (not
/// the path, which another user could swap after the check): a real
/// directory, owned by us, closed to group and others. Every later access
/// goes through the returned descriptor.
pub fn ensure(dir: &Path) -> Result<OwnedFd> {
    let dir = &normalize(dir);
    check_path(dir)?;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Parent missing (e.g. a nested SHAREDSERVER_LOCKDIR): make the
            // parents with default permissions, then the leaf itself 0700.
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::io(parent, "creating parent of lock directory", e))?;
            }
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(dir, "creating lock directory", e)),
            }
        }
        Err(e) => return Err(Error::io(dir, "creating lock directory", e)),
    }
    open_verified(dir)
}

/// Open an existing lock directory and check the handle (see [`ensure`]).
pub fn open_verified(dir: &Path) -> Result<OwnedFd> {
    check_path(dir)?;
    let unsafe_dir = |why: String| Error::UnsafeLockDir(dir.to_path_buf(), why);
    let fd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| match e.raw_os_error() {
            // O_NOFOLLOW | O_DIRECTORY on a symlink gives ENOTDIR.
            Some(libc::ELOOP | libc::ENOTDIR)
                if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) =>
            {
                unsafe_dir(format!(
                    "it is a symlink; remove it (`rm {}`) or set {ENV_VAR} to a real directory",
                    dir.display()
                ))
            }
            Some(libc::ELOOP | libc::ENOTDIR) => unsafe_dir(format!(
                "it is not a directory; remove it or set {ENV_VAR} to another path"
            )),
            _ => Error::io(dir, "opening lock directory", e),
        })?;
    let meta = fd
        .metadata()
        .map_err(|e| Error::io(dir, "inspecting lock directory", e))?;
    if !meta.is_dir() {
        return Err(unsafe_dir(format!(
            "it is not a directory; remove it or set {ENV_VAR} to another path"
        )));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "it is owned by uid {} but you are uid {me}; set {ENV_VAR} to a directory you own",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(unsafe_dir(format!(
            "its mode is {mode:03o}, open to group or others; run `chmod 700 {}`",
            dir.display()
        )));
    }
    Ok(fd.into())
}

/// Check an existing directory by the same rule, without creating anything
/// (for `:checkhealth`).
#[cfg_attr(not(feature = "nvim"), allow(dead_code))]
pub fn verify(dir: &Path) -> Result<()> {
    open_verified(&normalize(dir)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ss-lockdir-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn creates_private_directory() {
        let dir = scratch("create");
        ensure(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_group_writable_directory_and_names_the_fix() {
        let dir = scratch("wide");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o775)).unwrap();
        let err = ensure(&dir).unwrap_err().to_string();
        assert!(
            err.contains("chmod 700") && err.contains(&*dir.to_string_lossy()),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
