//! build.sh, the release build recipe, with stand-ins for cargo and cc that
//! record what they are asked to do (a real release build is covered by the
//! Neovim test of build.lua).
#![cfg(target_os = "linux")]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

const STATIC_FLAGS: &str = "-C target-feature=+crt-static -C relocation-model=static";

/// What the stand-in cargo does for `cargo rustc` (the static link).
enum Rustc {
    /// Links a binary that runs.
    Links,
    /// Links a binary that does not run.
    LinksBroken,
    /// Fails, as on a link error, or a compile error.
    Fails,
}

struct Setup {
    tmp: tempfile::TempDir,
}

impl Setup {
    /// A cargo that logs its arguments, and a cc that finds libc.a or not.
    fn new(rustc: Rustc, libc_a: bool) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let bin = dir.join("target/release/sharedserver");
        let rustc = match rustc {
            Rustc::Links => format!("printf '#!/bin/sh\\nexit 0\\n' > {}", bin.display()),
            Rustc::LinksBroken => format!("printf '#!/bin/sh\\nexit 1\\n' > {}", bin.display()),
            Rustc::Fails => "echo 'error[E0425]: cannot find value' >&2; exit 101".into(),
        };
        script(
            &dir.join("cargo"),
            &format!(
                "echo \"$PWD: $*\" >> {log}\n\
                 if [ -n \"${{FAKE_BUILD_FAILS:-}}\" ] && [ \"$1\" = build ] && [ \"${{5:-}}\" = --bin ]; then\n\
                   echo 'error[E0425]: cannot find value' >&2; exit 101\n\
                 fi\n\
                 if [ \"$1\" = rustc ]; then mkdir -p {rel}; {rustc}; chmod +x {bin}; fi\n\
                 exit 0",
                log = dir.join("calls").display(),
                rel = bin.parent().unwrap().display(),
                bin = bin.display(),
            ),
        );
        let found = if libc_a {
            std::fs::write(dir.join("libc.a"), "").unwrap();
            dir.join("libc.a").display().to_string()
        } else {
            "libc.a".into() // what cc prints when it finds no such file
        };
        script(&dir.join("cc"), &format!("echo {found}"));
        Setup { tmp }
    }

    fn run(&self, extra_env: &[(&str, &str)]) -> (Output, Vec<String>) {
        let dir = self.tmp.path();
        let out = Command::new("sh")
            .arg(Path::new(REPO).join("build.sh"))
            .current_dir(std::env::temp_dir()) // any cwd will do
            .env("CARGO", dir.join("cargo"))
            .env("CC", dir.join("cc"))
            .env("CARGO_TARGET_DIR", dir.join("target"))
            .env_remove("SHAREDSERVER_STATIC")
            .envs(extra_env.iter().copied())
            .output()
            .unwrap();
        let calls = std::fs::read_to_string(dir.join("calls")).unwrap_or_default();
        let calls = calls.replace(dir.to_str().unwrap(), "{tmp}");
        (out, calls.lines().map(str::to_owned).collect())
    }
}

fn script(path: &PathBuf, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The target dir every test names in CARGO_TARGET_DIR.
const TARGET: &str = "{tmp}/target";

fn lib() -> String {
    format!("{REPO}: build --release --target-dir {TARGET} --lib --features nvim")
}
fn static_bin() -> String {
    format!("{REPO}: rustc --release --target-dir {TARGET} --bin sharedserver -- {STATIC_FLAGS}")
}
fn dynamic_bin() -> String {
    format!("{REPO}: build --release --target-dir {TARGET} --bin sharedserver")
}

#[test]
fn build_sh_links_the_cli_statically_and_the_module_normally() {
    let (out, calls) = Setup::new(Rustc::Links, true).run(&[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(calls, [lib(), static_bin()]);
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[test]
fn build_sh_links_dynamically_without_a_static_c_library_and_says_so() {
    let (out, calls) = Setup::new(Rustc::Links, false).run(&[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(calls, [lib(), dynamic_bin()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no static C library") && err.contains("glibc-static"),
        "{err}"
    );
}

#[test]
fn build_sh_replaces_a_static_cli_that_does_not_run() {
    let (out, calls) = Setup::new(Rustc::LinksBroken, true).run(&[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(calls, [lib(), static_bin(), dynamic_bin()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not run here"), "{err}");
}

#[test]
fn build_sh_links_dynamically_when_the_static_link_fails() {
    let (out, calls) = Setup::new(Rustc::Fails, true).run(&[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(calls, [lib(), static_bin(), dynamic_bin()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("static link of the CLI failed"), "{err}");
}

#[test]
fn build_sh_fails_on_a_real_build_error() {
    let (out, calls) = Setup::new(Rustc::Fails, true).run(&[("FAKE_BUILD_FAILS", "1")]);
    assert_eq!(out.status.code(), Some(101), "{out:?}");
    assert_eq!(calls, [lib(), static_bin(), dynamic_bin()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error[E0425]"), "{err}");
}

#[test]
fn build_sh_builds_where_the_plugin_looks_whatever_cargo_is_configured_with() {
    let setup = Setup::new(Rustc::Links, true);
    let (out, calls) = setup.run(&[("CARGO_BUILD_TARGET_DIR", "/elsewhere")]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(calls, [lib(), static_bin()]);
    // Without CARGO_TARGET_DIR: the plugin's own target/.
    let out = Command::new("sh")
        .arg(Path::new(REPO).join("build.sh"))
        .env("CARGO", setup.tmp.path().join("cargo"))
        .env("SHAREDSERVER_STATIC", "0")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let calls = std::fs::read_to_string(setup.tmp.path().join("calls")).unwrap();
    assert!(
        calls.ends_with(&format!(
            "{REPO}: build --release --target-dir target --bin sharedserver\n"
        )),
        "{calls}"
    );
}

#[test]
fn build_sh_can_be_told_to_skip_the_static_link() {
    let (out, calls) = Setup::new(Rustc::Links, true).run(&[("SHAREDSERVER_STATIC", "0")]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(calls, [lib(), dynamic_bin()]);
}
