//! Names: of networks and sandboxes, of interfaces (as the kernel accepts them), and netnat's
//! host-side veth names.

use super::Valid;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Interface names as the kernel accepts them (dev_valid_name): 1-15 bytes, no '/', ':' or
/// white space, not "." or "..".
pub fn check_ifname(name: &str, what: &str) -> Valid<()> {
    if name.is_empty() {
        invalid!("{what} must not be empty");
    }
    if name.len() > 15 {
        invalid!("{what} '{name}' is {} bytes long; Linux interface names are at most 15 bytes", name.len());
    }
    if name == "." || name == ".." {
        invalid!("{what} '{name}' is not a valid interface name");
    }
    if let Some(c) = name.chars().find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control()) {
        invalid!("{what} '{name}' contains {c:?}, which Linux interface names cannot contain");
    }
    Ok(())
}

/// Names of networks and sandboxes: they become file names (/run/netns/NAME) and defaults for
/// interface names, so keep them to a safe alphabet.
pub fn check_name(name: &str, what: &str) -> Valid<()> {
    if name.is_empty() {
        invalid!("{what} name must not be empty");
    }
    if name.len() > 64 {
        invalid!("{what} name '{name}' is longer than 64 bytes");
    }
    if name.starts_with('.') || name.starts_with('-') {
        invalid!("{what} name '{name}' must not start with '.' or '-'");
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c))) {
        invalid!("{what} name '{name}' contains {c:?}; use letters, digits, '_', '.' and '-'");
    }
    Ok(())
}

/// The host end of a veth: deterministic, at most 15 bytes, and unlikely to clash with anything
/// (`nn` + 8 hex digits of a hash of sandbox and network).
pub fn host_ifname(sandbox: &str, network: &str) -> String {
    // FNV-1a: tiny, stable across releases (std's hasher is not).
    let mut h: u32 = 0x811c9dc5;
    for b in sandbox.bytes().chain([0]).chain(network.bytes()) {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    format!("nn{h:08x}")
}

/// An interface name as the kernel and nftables' `ifname` type hold it: NUL-padded to 16 bytes
/// (IFNAMSIZ), so a mapping stays a small copyable value.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfName([u8; 16]);

impl IfName {
    pub fn new(name: &str) -> Valid<IfName> {
        check_ifname(name, "interface name")?;
        let mut b = [0u8; 16];
        b[..name.len()].copy_from_slice(name.as_bytes());
        Ok(IfName(b))
    }
    pub fn as_str(&self) -> &str {
        let n = self.0.iter().position(|c| *c == 0).unwrap_or(16);
        std::str::from_utf8(&self.0[..n]).unwrap_or("?")
    }
    /// The 16 bytes a `meta iifname` load puts in registers.
    pub fn bytes(&self) -> [u8; 16] {
        self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for IfName {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl Serialize for IfName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for IfName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        IfName::new(&s).map_err(serde::de::Error::custom)
    }
}
