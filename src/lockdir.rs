//! Where state lives, and why it is safe to trust.
//!
//! Resolution: `$SHAREDSERVER_LOCKDIR`, else `$XDG_RUNTIME_DIR/sharedserver`,
//! else `/tmp/sharedserver-<uid>`. The directory is created 0700 by the mkdir
//! call itself (no window where it is wider), and an existing one is refused
//! unless it is ours and closed to group and others: anyone who can write
//! there could forge a record and make us signal an arbitrary process.

use crate::error::{Error, Result};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

pub const ENV_VAR: &str = "SHAREDSERVER_LOCKDIR";

/// The directory we would use, without touching the filesystem.
pub fn resolve() -> PathBuf {
    if let Some(dir) = std::env::var_os(ENV_VAR).filter(|v| !v.is_empty()) {
        return absolute(PathBuf::from(dir));
    }
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        return absolute(PathBuf::from(runtime).join("sharedserver"));
    }
    PathBuf::from(format!("/tmp/sharedserver-{}", nix::unistd::geteuid()))
}

fn absolute(path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        return path;
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(&path))
        .unwrap_or(path)
}

/// Create the directory if needed and check that it is safe to use.
pub fn ensure(dir: &Path) -> Result<()> {
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
    verify(dir)
}

/// Check an existing directory: a real directory, owned by us, mode 0700.
pub fn verify(dir: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| Error::io(dir, "inspecting lock directory", e))?;
    let unsafe_dir = |why: String| Err(Error::UnsafeLockDir(dir.to_path_buf(), why));
    if meta.file_type().is_symlink() {
        return unsafe_dir(format!(
            "it is a symlink; remove it (`rm {}`) or set {ENV_VAR} to a real directory",
            dir.display()
        ));
    }
    if !meta.is_dir() {
        return unsafe_dir(format!(
            "it is not a directory; remove it or set {ENV_VAR} to another path"
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return unsafe_dir(format!(
            "it is owned by uid {} but you are uid {me}; set {ENV_VAR} to a directory you own",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return unsafe_dir(format!(
            "its mode is {mode:03o}, open to group or others; run `chmod 700 {}`",
            dir.display()
        ));
    }
    Ok(())
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
