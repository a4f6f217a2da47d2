//! The CNM vocabulary as plain data: Network, Sandbox, Endpoint, Mapping, and their validation.
//! No I/O here: every check that needs only the values lives in this module, so bad input is
//! refused before anything touches the kernel.
//!
//! Both address families go through the same types: an address is an `IpAddr`, a `Subnet` knows
//! its `Family`, a network has one `Pool` (subnet + gateway) per family, an endpoint one address
//! per pool, and a mapping's family is its container address's.

use std::fmt;

/// Invalid user input: the CLI exits with status 2 for these (runtime failures exit 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError(pub String);

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for InputError {}

macro_rules! invalid {
    ($($t:tt)*) => { return Err($crate::model::InputError(format!($($t)*))) };
}

pub type Valid<T> = Result<T, InputError>;

mod addresses;
mod handoff;
mod hostfw;
mod names;
mod ports;
mod state;
mod topology;

pub use addresses::{ip_bits, ip_from_bits, ip_text, parse_ip, Cidr, Family, Subnet};
pub use handoff::{Handoff, Owner};
pub use hostfw::{HostFirewallKind, HostFirewallMode, HostOpening};
pub use names::{check_ifname, check_name, host_ifname, IfName};
pub use ports::{allow_for, range_text, spec_parts, AllowList, HostPorts, Mapping, Proto, PublishSpec, Target};
pub use state::{held_by_both, Attachment, AttachmentId, Counting, State};
pub use topology::{one_or_many, pools_of, Endpoint, Ipv6Mode, Network, Pool, Sandbox};

/// Test fixtures shared by the unit tests of several modules.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{Endpoint, Network, Sandbox, State, Subnet};
    use std::net::IpAddr;

    pub(crate) fn net(name: &str, subnets: &[&str], gateways: &[&str]) -> Network {
        let s: Vec<Subnet> = subnets.iter().map(|s| s.parse().unwrap()).collect();
        let g: Vec<IpAddr> = gateways.iter().map(|g| g.parse().unwrap()).collect();
        Network::new(name, &s, &g, None).unwrap()
    }

    /// The seed's network MyDocker0 (172.16.0.0/16, gateway 172.16.1.254) with sandbox ns1 at
    /// 172.16.1.1, its host-side veth named `host_ifname`; no mappings.
    pub(crate) fn seed_state(host_ifname: &str) -> State {
        let mut st = State::default();
        let n = net("MyDocker0", &["172.16.0.0/16"], &["172.16.1.254"]);
        st.networks.insert(n.name.clone(), n);
        let ep = Endpoint {
            network: "MyDocker0".into(),
            ips: vec!["172.16.1.1".parse().unwrap()],
            ifname: "eth0".into(),
            host_ifname: host_ifname.into(),
        };
        st.sandboxes.insert("ns1".into(), Sandbox { name: "ns1".into(), created: true, endpoints: vec![ep] });
        st
    }
}

#[cfg(test)]
mod tests;
