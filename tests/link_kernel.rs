//! Real-kernel tests of netnat::link. Each one runs in its own throwaway network and mount
//! namespace (see common::run_isolated); nothing touches the machine's own namespace.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use netnat::link::{netns, sysctl, EndpointSpec, Links};

const GW: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 88, 0, 1));

fn endpoint<'a>(ns: &'a Path, host: &'a str, last: u8) -> EndpointSpec<'a> {
    EndpointSpec {
        bridge: "nnbr0",
        host_ifname: host,
        netns_path: ns.to_path_buf(),
        ifname: "eth0",
        addrs: vec![(Ipv4Addr::new(10, 88, 0, last).into(), 24)],
        gateways: vec![GW],
        default_route: true,
    }
}

fn in_ns(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    common::stdout("ip", &all)
}

/// A real connection through the bridge; TCP rather than ping, which this machine lacks.
/// Asserts the listener sees the sandbox's own address (nothing in between rewrites it).
fn assert_reaches(from: &Path, to: Option<&Path>, src: [u8; 4], dst: [u8; 4]) {
    let seen = common::tcp_probe(from, to, dst.into()).unwrap_or_else(|e| panic!("{from:?} -> {dst:?}: {e}"));
    assert_eq!(seen.ip(), std::net::IpAddr::from(src));
}

isolated!(bridge_is_created_idempotently, inner_bridge_is_created_idempotently, {
    let links = Links::open().unwrap();
    links.ensure_bridge("nnbr0", &[(GW, 24)]).unwrap();
    links.ensure_bridge("nnbr0", &[(GW, 24)]).unwrap();

    let br = links.link("nnbr0").unwrap().expect("bridge exists");
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert!(br.up);
    let on_br: Vec<_> =
        links.addrs().unwrap().into_iter().filter(|a| a.index == br.index && a.addr.is_ipv4()).collect();
    assert_eq!(on_br.len(), 1, "{on_br:?}");
    assert_eq!((on_br[0].addr, on_br[0].prefix, on_br[0].ifname.as_str()), (GW, 24, "nnbr0"));
    assert!(common::stdout("ip", &["-o", "addr", "show", "dev", "nnbr0"]).contains("10.88.0.1/24"));
});

isolated!(ensure_bridge_refuses_non_bridge, inner_ensure_bridge_refuses_non_bridge, {
    let links = Links::open().unwrap();
    let err = links.ensure_bridge("lo", &[(GW, 24)]).unwrap_err();
    assert!(format!("{err:#}").contains("not a bridge"), "{err:#}");
    assert!(!links.addrs().unwrap().iter().any(|a| a.addr == GW));
});

isolated!(netns_lifecycle, inner_netns_lifecycle, {
    assert!(netns::create("nn1").unwrap());
    assert!(!netns::create("nn1").unwrap());
    assert!(netns::exists("nn1"));
    assert_eq!(netns::list().unwrap(), vec!["nn1".to_string()]);
    assert!(common::stdout("ip", &["netns", "list"]).contains("nn1"));

    // A separate namespace: only its own loopback, none of ours.
    let inside = Links::open_in(&netns::path("nn1")).unwrap().links().unwrap();
    assert_eq!(inside.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["lo"]);

    assert!(netns::delete("nn1").unwrap());
    assert!(!netns::delete("nn1").unwrap());
    assert!(!netns::exists("nn1"));
    assert!(netns::list().unwrap().is_empty());
    assert!(!common::stdout("ip", &["netns", "list"]).contains("nn1"));
});

isolated!(endpoints_talk_over_the_bridge, inner_endpoints_talk_over_the_bridge, {
    let links = Links::open().unwrap();
    links.ensure_bridge("nnbr0", &[(GW, 24)]).unwrap();
    for ns in ["nn1", "nn2"] {
        netns::create(ns).unwrap();
    }
    let (p1, p2) = (netns::path("nn1"), netns::path("nn2"));
    links.add_endpoint(&endpoint(&p1, "nnv1", 2)).unwrap();
    links.add_endpoint(&endpoint(&p2, "nnv2", 3)).unwrap();

    assert_reaches(&p1, Some(&p2), [10, 88, 0, 2], [10, 88, 0, 3]);
    assert_reaches(&p1, None, [10, 88, 0, 2], [10, 88, 0, 1]);
    assert!(in_ns("nn1", &["ip", "route", "show", "default"]).contains("via 10.88.0.1 dev eth0"));

    let br = links.link("nnbr0").unwrap().unwrap();
    let host = links.link("nnv1").unwrap().expect("host end exists");
    assert_eq!(host.kind.as_deref(), Some("veth"));
    assert_eq!(host.master, Some(br.index));
    assert!(host.up);
    assert!(host.link_netnsid.is_some() && host.peer_index.is_some(), "{host:?}");
    // /sys shows the machine's namespace here, so ask netlink through ip.
    assert!(common::stdout("ip", &["-d", "link", "show", "dev", "nnv1"]).contains("hairpin on"));

    // Second network for nn1: no default route of its own, the first one stays.
    links.ensure_bridge("nnbr1", &[(Ipv4Addr::new(10, 89, 0, 1).into(), 24)]).unwrap();
    let second = EndpointSpec {
        bridge: "nnbr1",
        ifname: "eth1",
        addrs: vec![(Ipv4Addr::new(10, 89, 0, 2).into(), 24)],
        gateways: vec![Ipv4Addr::new(10, 89, 0, 1).into()],
        default_route: false,
        ..endpoint(&p1, "nnv1b", 0)
    };
    links.add_endpoint(&second).unwrap();
    assert_reaches(&p1, None, [10, 89, 0, 2], [10, 89, 0, 1]);
    let default = in_ns("nn1", &["ip", "route", "show", "default"]);
    assert_eq!(default.lines().count(), 1, "{default}");
    assert!(default.contains("via 10.88.0.1"), "{default}");
});

isolated!(failed_endpoint_leaves_nothing, inner_failed_endpoint_leaves_nothing, {
    let links = Links::open().unwrap();
    netns::create("nn1").unwrap();
    let p1 = netns::path("nn1");
    let sandbox_names = || {
        let l = Links::open_in(&p1).unwrap().links().unwrap();
        l.into_iter().map(|l| l.name).collect::<Vec<_>>()
    };

    // Fails before anything is created: the bridge is missing.
    let err = links.add_endpoint(&endpoint(&p1, "nnv1", 2)).unwrap_err();
    assert!(format!("{err:#}").contains("nnbr0"), "{err:#}");
    assert!(links.link("nnv1").unwrap().is_none());
    assert_eq!(sandbox_names(), ["lo"]);

    // Fails after the pair exists: the gateway is outside the sandbox's subnet.
    links.ensure_bridge("nnbr0", &[(GW, 24)]).unwrap();
    let bad = EndpointSpec { gateways: vec![Ipv4Addr::new(192, 0, 2, 1).into()], ..endpoint(&p1, "nnv1", 2) };
    let err = links.add_endpoint(&bad).unwrap_err();
    assert!(format!("{err:#}").contains("default route"), "{err:#}");
    assert!(links.link("nnv1").unwrap().is_none());
    assert_eq!(sandbox_names(), ["lo"]);
});

isolated!(delete_link_is_idempotent, inner_delete_link_is_idempotent, {
    let links = Links::open().unwrap();
    links.ensure_bridge("nnbr0", &[(GW, 24)]).unwrap();
    assert!(links.delete_link("nnbr0").unwrap());
    assert!(!links.delete_link("nnbr0").unwrap());
    assert!(links.link("nnbr0").unwrap().is_none());
});

isolated!(sysctl_is_per_namespace, inner_sysctl_is_per_namespace, {
    sysctl::write("net/ipv4/ip_forward", "1").unwrap();
    assert_eq!(sysctl::read("net/ipv4/ip_forward").unwrap(), "1");
    assert!(sysctl::read("../etc/passwd").is_err());
});
