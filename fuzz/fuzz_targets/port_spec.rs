//! The port-spec parsers (`netnat publish` / `unpublish` arguments) must return an error, never
//! panic, on any input; what they accept must print back to something they accept again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use netnat::model::{HostPorts, Mapping, Subnet};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(m) = s.parse::<Mapping>() {
        let again: Mapping = m.to_string().parse().expect("a printed mapping parses again");
        assert_eq!(again, m);
        assert!(m.len() >= 1);
    }
    let _ = s.parse::<HostPorts>();
    let _ = s.parse::<Subnet>();
});
