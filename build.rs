fn main() {
    // The CLI is started for every `use`, so its start-up cost is the
    // product's: a non-PIE executable has its internal pointers fixed at link
    // time instead of thousands of relocations at every start.
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rerun-if-changed=build.rs");
}
