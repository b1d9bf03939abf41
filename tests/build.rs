//! build.sh, the release build recipe, with a stand-in cargo that records
//! what it is asked to do (a real release build is covered by the Neovim
//! test of build.lua).

use std::path::Path;
use std::process::Command;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A cargo that logs its arguments and fails `rustc` when told to.
fn fake_cargo(dir: &Path, fail_rustc: bool) -> std::path::PathBuf {
    let path = dir.join("cargo");
    let fail = if fail_rustc {
        "[ \"$1\" = rustc ] && { echo 'error: unable to find library -lc' >&2; exit 101; }"
    } else {
        ""
    };
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"$PWD: $*\" >> {log}\n{fail}\nexit 0\n",
            log = dir.join("calls").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

fn build_sh(cargo: &Path, extra_env: &[(&str, &str)]) -> (std::process::Output, Vec<String>) {
    let out = Command::new("sh")
        .arg(Path::new(REPO).join("build.sh"))
        .current_dir(std::env::temp_dir()) // any cwd will do
        .env("CARGO", cargo)
        .envs(extra_env.iter().copied())
        .output()
        .unwrap();
    let calls = std::fs::read_to_string(cargo.with_file_name("calls")).unwrap_or_default();
    (out, calls.lines().map(str::to_owned).collect())
}

#[test]
fn build_sh_links_the_cli_statically_and_builds_the_module_normally() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, calls) = build_sh(&fake_cargo(tmp.path(), false), &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        calls,
        [
            format!("{REPO}: build --release --lib"),
            format!(
                "{REPO}: rustc --release --bin sharedserver -- \
                 -C target-feature=+crt-static -C relocation-model=static"
            ),
        ]
    );
}

#[test]
fn build_sh_falls_back_to_a_dynamic_cli_when_the_static_link_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, calls) = build_sh(&fake_cargo(tmp.path(), true), &[]);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("linking it dynamically instead"), "{err}");
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(
        calls[2],
        format!("{REPO}: build --release --bin sharedserver")
    );
}

#[test]
fn build_sh_can_be_told_to_skip_the_static_link() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, calls) = build_sh(
        &fake_cargo(tmp.path(), false),
        &[("SHAREDSERVER_STATIC", "0")],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        calls,
        [
            format!("{REPO}: build --release --lib"),
            format!("{REPO}: build --release --bin sharedserver"),
        ]
    );
}
