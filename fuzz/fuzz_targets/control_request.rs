#![no_main]
//! Fuzz target: see `veil_sim::fuzz::control_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    veil_sim::fuzz::control_request(data);
});
