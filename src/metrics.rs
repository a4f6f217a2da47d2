//! `netnat metrics` (pure): what the audit observed, as the Prometheus text exposition format
//! (version 0.0.4). One series per published mapping and metric (a port range is one mapping,
//! never one series per port), so the number of series is 3 per mapping plus the gauges.
//!
//! Mappings with an allow list have one more series, `netnat_mapping_denied_packets_total`.

use crate::audit::{Observed, Report, Severity};
use crate::model::{Mapping, State};
use std::fmt::Write;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One metric: its name, help, type and samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricFamily {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: u64,
}

/// The labels of one mapping's series, in this order. The host side is an address (the
/// family's unspecified address for "every local address") or an interface (`host_if`, empty
/// otherwise); `network` and `container_id` are the CNI network and container for a port a CNI
/// container published.
pub fn mapping_labels(state: &State, m: &Mapping) -> Vec<(&'static str, String)> {
    let host: IpAddr = m.host_ip.unwrap_or(m.family().unspecified());
    let network = match state.owner_of(m) {
        Some(a) => a.network.clone(),
        None => state.network_of(m.container_ip).map(|n| n.name.clone()).unwrap_or_default(),
    };
    vec![
        ("protocol", m.protocol.to_string()),
        ("host_ip", host.to_string()),
        ("host_if", m.host_if.map(|i| i.to_string()).unwrap_or_default()),
        ("host_port", crate::model::range_text(m.host_port, m.host_port_end)),
        ("container_ip", m.container_ip.to_string()),
        ("container_port", crate::model::range_text(m.container_port, m.container_port_end)),
        ("network", network),
        ("container_id", container_id(state, m)),
    ]
}

/// The container a mapping was published for: a CNI attachment's container ID; empty for the
/// mappings of `netnat publish` or `apply`.
pub fn container_id(state: &State, m: &Mapping) -> String {
    state.owner_of(m).map(|a| a.container_id.clone()).unwrap_or_default()
}

/// Every metric, from the audit's observation and report (which hold the counters, the live
/// connections and the findings).
pub fn families(o: &Observed, report: &Report) -> Vec<MetricFamily> {
    let st = &o.state;
    let per_mapping = |f: &dyn Fn(&crate::audit::MappingReport) -> u64| -> Vec<Sample> {
        report.mappings.iter().map(|r| Sample { labels: mapping_labels(st, &r.mapping), value: f(r) }).collect()
    };
    let gauge = |name, help, value: usize| MetricFamily {
        name,
        help,
        kind: Kind::Gauge,
        samples: vec![Sample { labels: vec![], value: value as u64 }],
    };
    let errors = report.findings.iter().filter(|f| f.severity == Severity::Error).count();
    let mut fams = vec![MetricFamily {
        name: "netnat_mapping_connections_total",
        help: "Connections a published mapping translated (counted once each, at DNAT).",
        kind: Kind::Counter,
        samples: per_mapping(&|r| r.connections_total),
    }];
    // Packets and bytes are counted only with `counting = packets`: no series otherwise.
    if st.counting == crate::model::Counting::Packets {
        fams.push(MetricFamily {
            name: "netnat_mapping_packets_total",
            help: "Packets forwarded through a published mapping, both directions of every connection.",
            kind: Kind::Counter,
            samples: per_mapping(&|r| r.packets.unwrap_or(0)),
        });
        fams.push(MetricFamily {
            name: "netnat_mapping_bytes_total",
            help: "Bytes forwarded through a published mapping, both directions of every connection.",
            kind: Kind::Counter,
            samples: per_mapping(&|r| r.bytes.unwrap_or(0)),
        });
    }
    fams.extend([
        MetricFamily {
            name: "netnat_mapping_denied_packets_total",
            help: "New connections to a published mapping with an allow list, from sources not on it: dropped.",
            kind: Kind::Counter,
            samples: report
                .mappings
                .iter()
                .filter(|r| !r.allow.is_empty())
                .map(|r| Sample { labels: mapping_labels(st, &r.mapping), value: r.denied_packets })
                .collect(),
        },
        MetricFamily {
            name: "netnat_mapping_connections",
            help: "Live connections (conntrack entries) to a published mapping's host port.",
            kind: Kind::Gauge,
            samples: per_mapping(&|r| r.connections),
        },
        gauge("netnat_networks", "Networks netnat has made.", st.networks.len()),
        gauge("netnat_sandboxes", "Sandboxes (network namespaces) netnat knows.", st.sandboxes.len()),
        gauge("netnat_mappings", "Published mappings (a port range counts once).", st.mappings.len()),
        gauge(
            "netnat_audit_errors",
            "Error findings of netnat audit (drift, host settings, an unreadable record).",
            errors,
        ),
    ]);
    fams
}

/// Label values: backslash, double quote and newline escaped.
fn escape_value(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n").into()
}

/// The text exposition format: `# HELP` and `# TYPE` for each metric, then its samples.
pub fn render(fams: &[MetricFamily]) -> String {
    let mut out = String::new();
    for f in fams {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        // HELP text escapes backslash and newline only.
        let help = f.help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(out, "# HELP {} {help}\n# TYPE {} {kind}", f.name, f.name);
        for s in &f.samples {
            out += f.name;
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    let comma = if i > 0 { "," } else { "" };
                    let _ = write!(out, "{comma}{k}=\"{}\"", escape_value(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", s.value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{self, Observed};

    fn observed(mappings: &[&str]) -> Observed {
        let mut st = State::default();
        let n = crate::model::fixtures::net("MyDocker0", &["172.16.0.0/16", "fd00:16::/64"], &["172.16.1.254"]);
        st.networks.insert(n.name.clone(), n);
        st.mappings = mappings.iter().map(|m| m.parse().unwrap()).collect();
        let table = crate::ruleset::fake::live_after(&crate::ruleset::desired(&st), 3, 180);
        let connections = vec![2; st.mappings.len()];
        Observed { state: st, table: Some(table), connections, ..Observed::default() }
    }

    #[test]
    fn every_metric_has_help_and_type_and_counters_end_in_total() {
        let o = observed(&["9090:172.16.1.1:8080", "20000-20999:172.16.1.2:20000-20999/udp"]);
        let fams = families(&o, &audit::audit(&o));
        let text = render(&fams);
        for f in &fams {
            assert!(text.contains(&format!("# HELP {} ", f.name)), "{}", f.name);
            assert!(text.contains(&format!("# TYPE {} ", f.name)), "{}", f.name);
            assert_eq!(f.kind == Kind::Counter, f.name.ends_with("_total"), "{}", f.name);
        }
        // A range is one mapping: its ports' counters are summed into one series. Connections are
        // always counted; packets and bytes only with packet counting.
        assert!(text.contains(
            "netnat_mapping_connections_total{protocol=\"udp\",host_ip=\"0.0.0.0\",host_if=\"\",host_port=\"20000-20999\",container_ip=\
             \"172.16.1.2\",container_port=\"20000-20999\",network=\"MyDocker0\",container_id=\"\"} 3000\n"
        ));
        assert!(!text.contains("netnat_mapping_bytes_total"));
        let mut o = o;
        o.state.counting = crate::model::Counting::Packets;
        o.table = Some(crate::ruleset::fake::live_after(&crate::ruleset::desired(&o.state), 3, 180));
        let text = render(&families(&o, &audit::audit(&o)));
        assert!(text.contains(
            "netnat_mapping_bytes_total{protocol=\"udp\",host_ip=\"0.0.0.0\",host_if=\"\",host_port=\"20000-20999\",container_ip=\
             \"172.16.1.2\",container_port=\"20000-20999\",network=\"MyDocker0\",container_id=\"\"} 180000\n"
        ));
        assert!(text.contains(
            "netnat_mapping_packets_total{protocol=\"tcp\",host_ip=\"0.0.0.0\",host_if=\"\",host_port=\"9090\",container_ip=\
             \"172.16.1.1\",container_port=\"8080\",network=\"MyDocker0\",container_id=\"\"} 3\n"
        ));
        assert!(text.contains("netnat_mapping_connections{protocol=\"tcp\","));
        assert!(text.contains("# TYPE netnat_mapping_connections gauge\n"));
        assert!(text.contains("\nnetnat_networks 1\n") && text.contains("\nnetnat_sandboxes 0\n"), "{text}");
        assert!(text.contains("netnat_mappings 2\n"));
        // The fixture has no links: its bridge is missing (drift.link-missing, an error).
        let errors = audit::audit(&o).findings.iter().filter(|f| f.severity == Severity::Error).count();
        assert!(errors > 0);
        assert!(text.contains(&format!("netnat_audit_errors {errors}\n")), "{text}");
    }

    #[test]
    fn series_stay_bounded() {
        // 10,000 ports as one range and as 100 ranges: 2 series per mapping (connections counted and
        // live; no packets and bytes without packet counting), plus 4 gauges.
        for maps in [
            vec!["10000-19999:172.16.1.1:10000-19999".to_string()],
            (0..100)
                .map(|i| {
                    format!(
                        "{}-{}:172.16.1.1:{}-{}",
                        10000 + i * 100,
                        10099 + i * 100,
                        10000 + i * 100,
                        10099 + i * 100
                    )
                })
                .collect(),
        ] {
            let refs: Vec<&str> = maps.iter().map(String::as_str).collect();
            let o = observed(&refs);
            let text = render(&families(&o, &audit::audit(&o)));
            let series = text.lines().filter(|l| !l.starts_with('#')).count();
            assert_eq!(series, 2 * maps.len() + 4);
        }
    }

    #[test]
    fn allow_lists_interfaces_and_cni_containers_are_labelled() {
        let mut o = observed(&["9090:172.16.1.1:8080", "eth0:9091:172.16.1.1:80", "9092:10.88.0.2:80"]);
        let m = o.state.mappings[0];
        o.state.set_allow(&m, vec!["10.0.0.0/8".parse().unwrap()]);
        let cni = o.state.mappings[2];
        let a = crate::model::Attachment {
            network: "podman".into(),
            container_id: "c0ffee".into(),
            ifname: "eth0".into(),
            mappings: vec![cni],
            standby: vec![],
        };
        o.state.attachments.insert(a.id().key(), a);
        o.table = Some(crate::ruleset::fake::live_after(&crate::ruleset::desired(&o.state), 3, 180));
        let text = render(&families(&o, &audit::audit(&o)));
        // Only the mapping with a list has a denied series.
        assert_eq!(text.lines().filter(|l| l.starts_with("netnat_mapping_denied_packets_total{")).count(), 1, "{text}");
        assert!(text.contains(
            "netnat_mapping_denied_packets_total{protocol=\"tcp\",host_ip=\"0.0.0.0\",host_if=\"\",host_port=\"9090\""
        ));
        assert!(text.contains("host_if=\"eth0\",host_port=\"9091\""), "{text}");
        assert!(text.contains("network=\"podman\",container_id=\"c0ffee\"} "), "{text}");
    }

    #[test]
    fn ipv6_and_bound_addresses_and_escaping() {
        let o = observed(&["[2001:db8::1]:8080:[fd00:16::2]:80", "8081:[fd00:16::2]:80"]);
        let text = render(&families(&o, &audit::audit(&o)));
        assert!(
            text.contains("host_ip=\"2001:db8::1\",host_if=\"\",host_port=\"8080\",container_ip=\"fd00:16::2\""),
            "{text}"
        );
        assert!(text.contains("host_ip=\"::\",host_if=\"\",host_port=\"8081\""), "{text}");
        assert_eq!(escape_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let f = MetricFamily {
            name: "x",
            help: "a\\b\nc",
            kind: Kind::Gauge,
            samples: vec![Sample { labels: vec![("l", "v\"".into())], value: 1 }],
        };
        assert_eq!(render(&[f]), "# HELP x a\\\\b\\nc\n# TYPE x gauge\nx{l=\"v\\\"\"} 1\n");
    }

    #[test]
    fn audit_errors_are_counted() {
        let gauge = |o: &Observed| {
            let text = render(&families(o, &audit::audit(o)));
            let line = text.lines().find(|l| l.starts_with("netnat_audit_errors ")).unwrap().to_string();
            line.rsplit(' ').next().unwrap().parse::<usize>().unwrap()
        };
        let mut o = observed(&["9090:172.16.1.1:8080"]);
        let before = gauge(&o);
        o.table = None; // drift.table-missing: one more error
        assert_eq!(gauge(&o), before + 1);
    }
}
