#![no_main]
//! Fuzz target: see `veil_sim::fuzz::node_script`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    veil_sim::fuzz::node_script(data);
});
