//! Host firewalls in the model: whether netnat opens them for a network (`HostFirewallMode`)
//! and, in the record, which firewall it opened for which network (`HostOpening`). The
//! integration itself is `crate::hostfw`.

use super::{InputError, Valid};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Whether netnat lets a network's traffic through the host's firewall by that firewall's own
/// hook (`network create --host-firewall`, TOML `host_firewall`); see `crate::hostfw`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostFirewallMode {
    /// Through firewalld, ufw and Docker, whichever runs.
    #[default]
    Auto,
    /// Never: the operator manages the host firewall (netnat only warns, with the fix).
    Off,
}

impl FromStr for HostFirewallMode {
    type Err = InputError;
    fn from_str(s: &str) -> Valid<HostFirewallMode> {
        match s {
            "auto" => Ok(HostFirewallMode::Auto),
            "off" => Ok(HostFirewallMode::Off),
            _ => invalid!("host firewall mode '{s}' is not one of auto, off"),
        }
    }
}

impl fmt::Display for HostFirewallMode {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            HostFirewallMode::Auto => "auto",
            HostFirewallMode::Off => "off",
        })
    }
}

/// A host firewall netnat can open through its own hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostFirewallKind {
    Firewalld,
    Ufw,
    Docker,
}

impl fmt::Display for HostFirewallKind {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            HostFirewallKind::Firewalld => "firewalld",
            HostFirewallKind::Ufw => "ufw",
            HostFirewallKind::Docker => "docker",
        })
    }
}

/// In the record: host firewall `firewall` lets the traffic of network `network` (bridge
/// `bridge`) through, by entries netnat added and marked as its own (`crate::hostfw` says which).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostOpening {
    pub firewall: HostFirewallKind,
    pub network: String,
    pub bridge: String,
}
