//! Objects netnat makes for another program through its driver API (Docker's remote network
//! driver): who owns them (`Owner`), and endpoints whose sandbox that program owns (`Handoff`).

use super::{one_or_many, Network, State};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// Who asked for an object through a driver API and its ID there (Docker's network or endpoint
/// ID): the front door finds its objects by it, and `ls`, `network ls`, `audit` and `metrics`
/// show it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    /// The program: `docker`.
    pub by: String,
    pub id: String,
    /// The options it gave (Docker's `-o KEY=VALUE`), kept for the requests that follow.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

impl Owner {
    pub fn new(by: &str, id: &str) -> Owner {
        Owner { by: by.into(), id: id.into(), options: BTreeMap::new() }
    }
    /// Whether this is `by`'s object `id` (whatever its options).
    pub fn is(&self, by: &str, id: &str) -> bool {
        self.by == by && self.id == id
    }
    /// `docker/ID`: the key of a handoff in the record.
    pub fn key(&self) -> String {
        format!("{}/{}", self.by, self.id)
    }
    /// The ID's first 12 characters, as `docker ps` shows IDs.
    pub fn short(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} endpoint {}", self.by, self.short())
    }
}

/// An endpoint whose sandbox belongs to another program (a Docker container): netnat makes the
/// veth pair with its host end on the network's bridge and leaves the other end in the host
/// namespace; the program moves it into its sandbox, renames and addresses it (Docker's IPAM
/// chose `ips`). The pair exists while `sandbox` is set (Docker's Join to Leave).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handoff {
    pub owner: Owner,
    pub network: String,
    #[serde(rename = "ip", with = "one_or_many")]
    pub ips: Vec<IpAddr>,
    /// The host end (named like every netnat veth, see `host_ifname`).
    pub host_ifname: String,
    /// The other end's name until the owner renames it.
    pub peer_ifname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The owner's sandbox while joined (Docker's SandboxKey, a namespace path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

impl State {
    pub fn handoffs_on<'a>(&'a self, network: &'a str) -> impl Iterator<Item = &'a Handoff> + 'a {
        self.handoffs.values().filter(move |h| h.network == network)
    }

    /// The network `by` made as `id` (Docker's network ID).
    pub fn network_owned_by(&self, by: &str, id: &str) -> Option<&Network> {
        self.networks.values().find(|n| n.owner.as_ref().is_some_and(|o| o.is(by, id)))
    }
}
