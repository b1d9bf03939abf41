fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" {
        // The CLI is started for every `use`, so its start-up cost is the
        // product's: a non-PIE executable has its internal pointers fixed at
        // link time instead of thousands of relocations at every start.
        // (macOS requires PIE on arm64.)
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    if os == "macos" {
        // The Neovim module's Lua symbols come from the Neovim that loads it;
        // macOS's linker wants that said, or it fails on every lua_* symbol.
        println!("cargo:rustc-cdylib-link-arg=-undefined");
        println!("cargo:rustc-cdylib-link-arg=dynamic_lookup");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
