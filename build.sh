#!/bin/sh
# Release build of the Neovim module (target/release/libsharedserver.so) and
# the CLI (target/release/sharedserver). README's main job; build.lua (the
# lazy.nvim build step) and bench/run call it too. Runs from any cwd.
#
# The CLI is started once per `use`, so its start-up time is the product's.
# On Linux it is linked statically (no dynamic loader, no shared libraries to
# map and relocate), which makes it start about 25% faster. That needs the
# static C library (libc.a: Debian/Ubuntu `libc6-dev`, Fedora `glibc-static`);
# without it the CLI is linked dynamically and works the same, only slower.
# SHAREDSERVER_STATIC=0 skips the attempt.
#
# Environment: CARGO (default: cargo), plus anything cargo reads.
set -eu
cd "$(dirname "$0")"
cargo=${CARGO:-cargo}

# The module must stay a normal shared library, and cargo's static flag would
# also reach the proc-macros, so the library and the binary build separately.
"$cargo" build --release --lib

if [ "$(uname -s)" = Linux ] && [ "${SHAREDSERVER_STATIC:-1}" != 0 ]; then
    if "$cargo" rustc --release --bin sharedserver -- \
        -C target-feature=+crt-static -C relocation-model=static; then
        exit 0
    fi
    echo "build.sh: the static link of the CLI failed (is the static C library installed?); linking it dynamically instead" >&2
fi
exec "$cargo" build --release --bin sharedserver
