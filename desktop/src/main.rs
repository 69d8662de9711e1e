//! The Veil desktop app's binary (the library holds everything, for the tests).
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    veil_desktop::run();
}
