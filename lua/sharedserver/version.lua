-- The version of the Lua code. It must equal the crate version in Cargo.toml,
-- which the native module reports; the loader and :checkhealth compare them.
return "0.1.0"
