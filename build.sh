#!/bin/sh
# Release build of the Neovim module (target/release/libsharedserver.so, or
# .dylib on macOS, linked with `-undefined dynamic_lookup` by build.rs) and
# the CLI (target/release/sharedserver). README's main job; build.lua (the
# lazy.nvim build step) and bench/run call it too. Runs from any cwd.
#
# The CLI is started once per `use`, so its start-up time is the product's.
# On Linux it is linked statically (no dynamic loader, no shared libraries to
# map and relocate), which makes it start about 25% faster. That needs the
# static C library (libc.a: Debian/Ubuntu `libc6-dev`, Fedora `glibc-static`);
# without it, or if the static link fails or its binary does not run, the CLI
# is linked dynamically and works the same, only slower. SHAREDSERVER_STATIC=0 skips
# the attempt.
#
# Environment: CARGO (default: cargo), CC (default: cc), plus anything cargo
# reads.
set -eu
cd "$(dirname "$0")"
cargo=${CARGO:-cargo}
# Where build.lua and the plugin look for the results. Named on the command
# line, because that beats a target-dir from cargo's config or
# CARGO_BUILD_TARGET_DIR, which would put them somewhere else.
target_dir=${CARGO_TARGET_DIR:-target}

# The module must stay a normal shared library, and cargo's static flag would
# also reach the proc-macros, so the library and the binary build separately.
# The library with the `nvim` feature is the Neovim module; the CLI needs no Lua.
"$cargo" build --release --target-dir "$target_dir" --lib --features nvim

# The static C library, as the linker (cc, as for cargo) would find it.
has_static_libc() {
    [ -f "$(${CC:-cc} -print-file-name=libc.a 2>/dev/null)" ]
}

if [ "$(uname -s)" = Linux ] && [ "${SHAREDSERVER_STATIC:-1}" != 0 ]; then
    if has_static_libc; then
        # A static link can fail where a dynamic one works (a static library
        # missing besides libc.a), so a failure falls through to the dynamic
        # build; a real compile error fails that one too, and ends the build.
        if "$cargo" rustc --release --target-dir "$target_dir" --bin sharedserver -- \
            -C target-feature=+crt-static -C relocation-model=static; then
            # Keep it only if it runs.
            if "$target_dir/release/sharedserver" --version >/dev/null 2>&1; then
                exit 0
            fi
            echo "build.sh: the statically linked CLI does not run here; linking it dynamically instead" >&2
        else
            echo "build.sh: the static link of the CLI failed (see above); linking it dynamically instead" >&2
        fi
    else
        echo "build.sh: no static C library (libc.a: Debian/Ubuntu libc6-dev, Fedora glibc-static), so the CLI is linked dynamically; it works the same, but starts about 25% slower" >&2
    fi
fi
exec "$cargo" build --release --target-dir "$target_dir" --bin sharedserver
