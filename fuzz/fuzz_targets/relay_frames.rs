#![no_main]
//! Fuzz target: see `veil_sim::fuzz::relay_frames`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    veil_sim::fuzz::relay_frames(data);
});
