#![no_main]
//! Fuzz target: see `veil_sim::fuzz::relay_datagram`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    veil_sim::fuzz::relay_datagram(data);
});
