//! `cargo run -p uniffi-bindgen -- generate --library target/debug/libveil_ffi.so --language kotlin --out-dir …`:
//! the generator of the same uniffi version as `veil-ffi`, so the bindings always match the
//! library's scaffolding.

fn main() {
    uniffi::uniffi_bindgen_main()
}
