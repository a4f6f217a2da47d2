//! The configuration-file parser and validator must report problems, never panic, on any input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(parsed) = netnat::config::load(s) {
        let _ = netnat::config::validate(&parsed);
        let _ = netnat::config::to_state(&parsed, &Default::default());
    }
});
