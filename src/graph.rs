//! `netnat graph` (pure): the record as a Graphviz DOT graph. Networks (bridge, subnet, gateway),
//! sandboxes with their addresses, and every published port with its scope. The output depends
//! only on the record, in a fixed order, so it can be diffed and tested.

use crate::audit::Scope;
use crate::model::{Mapping, State};
use std::fmt::Write;

/// A DOT string literal: quotes and backslashes escaped; `\n` in labels is DOT's line break.
fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn label(lines: &[String]) -> String {
    q(&lines.join("\n")).replace('\n', "\\n")
}

fn range(a: u16, b: u16) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

fn port_id(m: &Mapping) -> String {
    format!("port:{}", m.host_spec())
}

pub fn dot(state: &State) -> String {
    let mut out = String::from("digraph netnat {\n\trankdir=LR;\n\tnode [fontname=\"monospace\"];\n");
    out += "\thost [shape=box3d, label=\"host\"];\n";
    for n in state.networks.values() {
        let mut lines = vec![format!("network {}", n.name), format!("bridge {}", n.bridge)];
        for pool in &n.pools {
            lines.push(format!("subnet {}", pool.subnet));
            lines.push(format!("gateway {}", pool.gateway));
        }
        if n.internal {
            lines.push("internal".into());
        } else if !n.masquerade {
            lines.push("no masquerade".into());
        }
        let _ = writeln!(out, "\t{} [shape=box, label={}];", q(&format!("net:{}", n.name)), label(&lines));
        let _ = writeln!(out, "\thost -> {} [dir=none];", q(&format!("net:{}", n.name)));
    }
    for s in state.sandboxes.values() {
        let mut lines = vec![format!("sandbox {}", s.name)];
        for e in &s.endpoints {
            lines.push(format!("{} {}", e.ifname, e.ips_text()));
        }
        let _ = writeln!(out, "\t{} [shape=ellipse, label={}];", q(&format!("sandbox:{}", s.name)), label(&lines));
        for e in &s.endpoints {
            let _ = writeln!(
                out,
                "\t{} -> {} [dir=none, label={}];",
                q(&format!("net:{}", e.network)),
                q(&format!("sandbox:{}", s.name)),
                label(&[format!("{} / {}", e.host_ifname, e.ifname)])
            );
        }
    }
    let mut maps = state.mappings.clone();
    maps.sort();
    let mut outside: Vec<std::net::IpAddr> = vec![];
    for m in &maps {
        let scope = Scope::of(m);
        let host = match (m.host_if, m.host_ip) {
            (Some(i), _) => format!("{i}:{}", range(m.host_port, m.host_port_end)),
            (None, Some(ip)) => format!("{ip}:{}", range(m.host_port, m.host_port_end)),
            (None, None) => format!("*:{}", range(m.host_port, m.host_port_end)),
        };
        let lines = vec![format!("{}/{}", host, m.protocol), scope.text().to_string()];
        let style = match scope {
            Scope::Any => "solid",
            Scope::Address => "dashed",
            Scope::Loopback => "dotted",
            Scope::Interface => "bold",
        };
        let _ = writeln!(out, "\t{} [shape=cds, style={style}, label={}];", q(&port_id(m)), label(&lines));
        let _ = writeln!(out, "\thost -> {};", q(&port_id(m)));
        let target = state
            .sandboxes
            .values()
            .find(|s| s.endpoints.iter().any(|e| e.has(m.container_ip)))
            .map(|s| format!("sandbox:{}", s.name))
            .or_else(|| state.network_of(m.container_ip).map(|n| format!("net:{}", n.name)))
            .unwrap_or_else(|| {
                if !outside.contains(&m.container_ip) {
                    outside.push(m.container_ip);
                }
                format!("ip:{}", m.container_ip)
            });
        let to = format!("{}:{}", m.container_ip, range(m.container_port, m.container_port_end));
        let _ = writeln!(out, "\t{} -> {} [label={}];", q(&port_id(m)), q(&target), label(&[to]));
    }
    for ip in outside {
        let lines = vec![ip.to_string(), "outside netnat's networks".into()];
        let _ = writeln!(out, "\t{} [shape=octagon, label={}];", q(&format!("ip:{ip}")), label(&lines));
    }
    out += "}\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_of_a_hand_built_state() {
        let mut st = crate::model::fixtures::seed_state("nn00000001");
        // Given out of order: the output is sorted.
        st.mappings.push("10.0.0.9:7000:192.0.2.5:70".parse().unwrap());
        st.mappings.push("127.0.0.1:5353:172.16.1.1:53/udp".parse().unwrap());
        st.mappings.push("9090:172.16.1.1:8080".parse().unwrap());
        let want = r#"digraph netnat {
	rankdir=LR;
	node [fontname="monospace"];
	host [shape=box3d, label="host"];
	"net:MyDocker0" [shape=box, label="network MyDocker0\nbridge MyDocker0\nsubnet 172.16.0.0/16\ngateway 172.16.1.254"];
	host -> "net:MyDocker0" [dir=none];
	"sandbox:ns1" [shape=ellipse, label="sandbox ns1\neth0 172.16.1.1"];
	"net:MyDocker0" -> "sandbox:ns1" [dir=none, label="nn00000001 / eth0"];
	"port:9090/tcp" [shape=cds, style=solid, label="*:9090/tcp\nany local address"];
	host -> "port:9090/tcp";
	"port:9090/tcp" -> "sandbox:ns1" [label="172.16.1.1:8080"];
	"port:10.0.0.9:7000/tcp" [shape=cds, style=dashed, label="10.0.0.9:7000/tcp\none address"];
	host -> "port:10.0.0.9:7000/tcp";
	"port:10.0.0.9:7000/tcp" -> "ip:192.0.2.5" [label="192.0.2.5:70"];
	"port:127.0.0.1:5353/udp" [shape=cds, style=dotted, label="127.0.0.1:5353/udp\nloopback only"];
	host -> "port:127.0.0.1:5353/udp";
	"port:127.0.0.1:5353/udp" -> "sandbox:ns1" [label="172.16.1.1:53"];
	"ip:192.0.2.5" [shape=octagon, label="192.0.2.5\noutside netnat's networks"];
}
"#;
        let got = dot(&st);
        assert_eq!(got, want, "got:\n{got}");
        let mut shuffled = st.clone();
        shuffled.mappings.reverse();
        assert_eq!(dot(&shuffled), got);
    }

    #[test]
    fn quotes_are_escaped() {
        assert_eq!(q(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
