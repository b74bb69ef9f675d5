//! The attention plugins of `host-wasm/plugins`, built for wasm32-unknown-unknown by this
//! crate's build script: the useful ones (`misestimate`, `ensemble`) and one evil module per
//! misbehaviour (`evil_spin`, `evil_memory_bomb`, ...). Tests and benches take their bytes from
//! here, so plain `cargo test` builds what they load.

include!(concat!(env!("OUT_DIR"), "/modules.rs"));

/// The bytes of module `name` (say `"misestimate"` or `"evil_spin"`), or None when no such
/// module was built.
pub fn module(name: &str) -> Option<&'static [u8]> {
    MODULES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// The bytes of module `name`; a missing one panics with the names there are (for tests).
pub fn expect(name: &str) -> &'static [u8] {
    module(name).unwrap_or_else(|| {
        let names: Vec<&str> = MODULES.iter().map(|(n, _)| *n).collect();
        panic!("no plugin module {name:?}; built: {}", names.join(", "))
    })
}
