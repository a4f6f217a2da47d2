//! Command-line definitions (clap derive). The man pages and shell completions are generated from
//! these types, so they are the single source of the CLI's shape.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// `netnat --version`: the crate's version and the libraries it was built against (build.rs).
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\nbuilt against libnftnl ",
    env!("NETNAT_LIBNFTNL_VERSION"),
    ", libmnl ",
    env!("NETNAT_LIBMNL_VERSION")
);

#[derive(Parser, Debug)]
#[command(
    name = "netnat",
    version,
    long_version = LONG_VERSION,
    about = "Container networks on Linux with in-kernel NAT: bridges, veth endpoints, network namespaces, and published ports through nftables (no userland proxy)",
    long_about = None,
    after_help = "Exit status: 0 done, 1 runtime failure, 2 invalid input or usage.",
    after_long_help = "EXIT STATUS:
  0  Done, also when there was nothing to do (the command was already in effect)
  1  Runtime failure, e.g. not root, or the kernel refused a change
  2  Invalid input or usage, refused before anything was changed

FILES:
  /run/netnat/state.json  netnat's runtime record of its networks, sandboxes and ports (JSON)
  /run/netnat/state.json.damaged-SECONDS  A record that could not be read, kept by `recover` or `reset`
  /run/netnat/lock  Held with flock(2) for the whole of each command, so commands run one at a time
  /run/netns/NAME  The network namespace of sandbox NAME (the same place `ip netns` uses)

ENVIRONMENT:
  NETNAT_STATE_DIR  Directory of the runtime record and lock instead of /run/netnat (as --state-dir)"
)]
pub struct Cli {
    /// Directory of netnat's runtime record and lock
    #[arg(long, global = true, env = "NETNAT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, remove and list networks (a Linux bridge with a gateway address)
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Create, remove and list sandboxes (named network namespaces)
    #[command(subcommand)]
    Sandbox(SandboxCmd),
    /// Attach a sandbox to a network through a veth pair (an endpoint)
    Connect(ConnectArgs),
    /// Detach a sandbox from a network, removing its endpoint
    Disconnect {
        /// Network name
        network: String,
        /// Sandbox name
        sandbox: String,
    },
    /// Publish ports: the kernel forwards host ports to a container (nftables DNAT)
    Publish {
        /// [HOSTIP:|IFNAME:]HOSTPORT[-END]:CONTAINER:CONTAINERPORT[-END][/tcp|/udp|/sctp], IPv6
        /// addresses in brackets ([2001:db8::1]:8080:[fd00:16::2]:80); CONTAINER is an address or a
        /// sandbox name (SANDBOX or SANDBOX@NETWORK: every family of its endpoint). IFNAME binds the
        /// port to an interface: packets arriving on it, to any local address (eth0:8080:...)
        #[arg(required = true, value_name = "SPEC")]
        specs: Vec<String>,
        /// Only sources in CIDR may connect (repeat for more; IPv4 and IPv6 CIDRs apply to the
        /// mappings of their family). Other packets are dropped before DNAT and counted. Publishing
        /// a mapping again with another list replaces its list
        #[arg(long, value_name = "CIDR")]
        allow: Vec<String>,
        /// Switch a host port published to another target to this one, in one transaction:
        /// established TCP connections stay on the old target until they end, new connections
        /// and UDP flows go to the new one (without it, a taken host port is refused)
        #[arg(long)]
        replace: bool,
    },
    /// Stop publishing ports
    Unpublish {
        /// A SPEC as given to publish, or [HOSTIP:|IFNAME:]HOSTPORT[-END][/PROTO]; a bare HOSTPORT
        /// removes the every-address mappings of both families, 0.0.0.0:PORT or [::]:PORT those of one
        #[arg(required = true, value_name = "SPEC")]
        specs: Vec<String>,
    },
    /// List published ports, with packet and byte counters
    Ls {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Print netnat's nftables table in nft syntax, read back from the kernel
    Show {
        /// Include per-mapping packet and byte counters
        #[arg(long)]
        counters: bool,
    },
    /// Make the kernel match a configuration file: networks, sandboxes, endpoints and published ports
    Apply(ApplyArgs),
    /// Print what netnat has made as a configuration file that `apply` accepts
    Save,
    /// Re-program netnat's nftables table and sysctls from its record (e.g. after `nft flush ruleset`)
    Reload,
    /// Remove everything netnat created (bridges, veths, its namespaces, its nftables table) and nothing else
    Reset,
    /// Show or set what per-mapping counters count: connections (default, free) or packets (and bytes)
    #[command(long_about = COUNTING_ABOUT)]
    Counting {
        /// connections: each mapping counts the connections it translated, once per connection,
        /// where only a connection's first packet goes (no rule meets later packets). packets: also
        /// every packet and byte of them, both directions (one forward-chain rule per packet)
        #[arg(value_name = "MODE", value_parser = ["connections", "packets"])]
        mode: Option<String>,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Rebuild netnat's record from the kernel when it cannot be read (garbage, truncated, empty, from a newer netnat, or lost)
    #[command(
        long_about = "Rebuild netnat's record from the kernel when it cannot be read (garbage, truncated, empty, \
a format from a newer netnat, or missing while netnat's table, links or namespaces exist).

netnat marks what it makes in the kernel itself: bridges carry the interface alias netnat:network=NAME, \
the host ends of endpoints netnat:endpoint=NETWORK/SANDBOX, the lo of namespaces it created \
netnat:sandbox=NAME; published ports are the elements of table inet netnat, and each network's rules \
there say whether it is internal or masquerades. recover rebuilds networks, sandboxes, endpoints and \
mappings from these, keeps the damaged file beside the new one (state.json.damaged-SECONDS, never \
deleted) and says what the kernel could not tell (e.g. the value net.ipv4.ip_forward had before netnat). \
It changes nothing in the kernel. With a readable record it does nothing."
    )]
    Recover,
    /// Check the kernel against netnat's record: drift, conflicts with other firewalls, host settings, leftovers
    #[command(
        after_help = "Exit status: 0 no finding at or above --fail-on, 1 at least one, 2 the audit could not run.",
        after_long_help = AUDIT_IDS
    )]
    Audit(AuditArgs),
    /// Print networks, sandboxes and published ports as a Graphviz DOT graph
    Graph,
    /// Show what the kernel does with the packets of one port: every table, chain and rule they meet
    #[command(long_about = TRACE_ABOUT, after_long_help = TRACE_AFTER)]
    Trace(TraceArgs),
    /// Print per-mapping traffic counters and netnat's gauges in the Prometheus text format
    #[command(long_about = METRICS_ABOUT)]
    Metrics(MetricsArgs),
    /// Serve Docker's remote network driver API: `docker network create -d netnat`, `docker run -p`
    #[command(long_about = DOCKER_ABOUT)]
    DockerPlugin(DockerPluginArgs),
}

const DOCKER_ABOUT: &str = "\
Serve Docker's remote network driver API in the foreground, so that `docker network create -d netnat` \
makes netnat networks (Docker's IPAM still hands out subnets and addresses) and `docker run -p` publishes \
their ports through netnat's nftables maps: no docker-proxy, no Docker DNAT rule. Every request goes \
through the same operations as netnat's commands (lock, record, one nftables batch per change), so \
`netnat ls`, `audit`, `metrics`, `save` and `reset` see Docker's networks (named docker-ID) and ports \
(owned by the Docker endpoint). The process keeps nothing between requests: it can be restarted, or \
started by systemd's netnat-docker.socket on Docker's first request. Options of `docker network create -o`: \
netnat.allow=CIDR[,CIDR...], netnat.internal=true, netnat.masquerade=false, netnat.bridge=NAME, \
netnat.host_firewall=off. See docs/docker.md.";

#[derive(Args, Debug)]
pub struct DockerPluginArgs {
    /// The unix socket Docker finds the driver on (its name is the driver's name)
    #[arg(long, value_name = "PATH", default_value = crate::docker::DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

const TRACE_ABOUT: &str = "\
Show what the kernel does with the packets of one port: every table, chain and rule they meet, in \
every table on the host (netnat's, Docker's, firewalld's, ufw's, other iptables-nft tables, hand-written \
ones), both directions of each connection, the NAT translation, and the final verdict; then one line per \
connection saying where it went or why it did not arrive.

It uses nftables tracing: while it runs, netnat's table inet netnat holds four extra chains (trace-pre, \
trace-out, trace-pre-reply, trace-out-reply) whose rules set `meta nftrace set 1` on matching packets, and \
netnat listens to the kernel's trace events over netlink. It removes the chains when it stops: after \
--count packets, after --timeout seconds, or on Ctrl-C. Chains left by a trace that was killed are removed \
by the next netnat command that changes something, and `netnat audit` reports them meanwhile \
(trace.leftover). With no trace running there is no such chain: tracing costs nothing.

Requests are matched by their headers before any other chain (priority -350); replies by their \
connection (ct direction reply, the original port) just after conntrack (priority -199), so chains that run \
before conntrack on prerouting are not shown for replies.";

const TRACE_AFTER: &str = "\
EXAMPLES:
  netnat trace 9090  Requests to tcp port 9090 on any local address, and their replies
  netnat trace 198.51.100.1:5353/udp --from 203.0.113.0/24 --count 4  One address, one client network
  netnat trace 9090 --json  The same facts as JSON, printed at the end

EXIT STATUS:
  0  The trace ran (whether or not packets were seen or dropped)
  1  It could not run (not root, another trace is running, the kernel refused the chains)
  2  Invalid input";

const METRICS_ABOUT: &str = "\
Print the Prometheus text exposition format: per published mapping (a port range is one mapping) the \
packets and bytes forwarded (netnat_mapping_packets_total, netnat_mapping_bytes_total: the counters `netnat \
ls` shows, both directions) and the live connections (netnat_mapping_connections, from conntrack), labelled \
with protocol, host_ip, host_port, container_ip, container_port, network and container_id; and the gauges \
netnat_networks, netnat_sandboxes, netnat_mappings and netnat_audit_errors (error findings of `netnat audit`).

With --textfile DIR it writes DIR/netnat.prom atomically (a temporary file renamed over it) for node_exporter's \
textfile collector; netnat-metrics.timer does that every 15 s into /var/lib/prometheus/node-exporter.";

#[derive(Args, Debug)]
pub struct TraceArgs {
    /// [HOSTIP:]HOSTPORT[-END][/tcp|/udp|/sctp] (default tcp); without HOSTIP, every local address
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// Only packets from this address or network (ADDRESS or ADDRESS/PREFIX)
    #[arg(long, value_name = "CIDR")]
    pub from: Option<String>,
    /// Stop after this many packets (both directions count)
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub count: usize,
    /// Stop after this many seconds (at most a day)
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub timeout: u64,
    /// Print JSON at the end instead of text as packets come
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// Write DIR/netnat.prom atomically instead of printing (node_exporter's textfile collector)
    #[arg(long, value_name = "DIR")]
    pub textfile: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Also compare the record with this configuration file
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print JSON (see docs/audit-schema.json)
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when a finding is at or above this severity
    #[arg(long, value_enum, default_value_t = FailOn::Warning, value_name = "SEVERITY")]
    pub fail_on: FailOn,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOn {
    Info,
    Warning,
    Error,
}

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Create a network: a bridge with the gateway address, forwarding and NAT rules
    Create(NetworkCreateArgs),
    /// Remove a network (it must have no endpoints)
    Rm {
        /// Network name
        name: String,
    },
    /// List networks
    Ls {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct NetworkCreateArgs {
    /// Network name (also the bridge name unless --bridge is given)
    pub name: String,
    /// Subnet in CIDR form, e.g. 172.16.0.0/16 or fd00:16::/64; once per family for dual stack
    #[arg(long, value_name = "CIDR", required = true)]
    pub subnet: Vec<String>,
    /// Gateway address on the bridge, once per family (default: each subnet's first host address)
    #[arg(long, value_name = "IP")]
    pub gateway: Vec<String>,
    /// IPv6 egress and publishing: nat (masquerade, DNAT) or routed (no NAT: the subnet is
    /// routed to this host; published container ports are reachable at the container's address)
    #[arg(long, value_name = "MODE", default_value = "nat")]
    pub ipv6_mode: String,
    /// Bridge interface name (default: the network name)
    #[arg(long, value_name = "IFNAME")]
    pub bridge: Option<String>,
    /// Do not masquerade traffic leaving the host (no SNAT)
    #[arg(long)]
    pub no_masquerade: bool,
    /// No traffic to or from outside the bridge at all
    #[arg(long)]
    pub internal: bool,
    /// Open the host's firewall (firewalld, ufw, Docker's DOCKER-USER) for this network's bridge
    /// through that firewall's own hook: auto, or off to manage the host firewall yourself
    #[arg(long, value_name = "MODE", default_value = "auto")]
    pub host_firewall: String,
}

#[derive(Subcommand, Debug)]
pub enum SandboxCmd {
    /// Create a sandbox (a named network namespace at /run/netns/NAME), optionally connected to a network
    Create(SandboxCreateArgs),
    /// Remove a sandbox: its endpoints, and its namespace if netnat created it
    Rm {
        /// Sandbox name
        name: String,
    },
    /// List sandboxes and their endpoints
    Ls {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct SandboxCreateArgs {
    /// Sandbox name; an existing namespace of that name is adopted
    pub name: String,
    /// Connect it to this network
    #[arg(long, value_name = "NET")]
    pub network: Option<String>,
    /// Address on that network, once per family (default: the first free one of each)
    #[arg(long, value_name = "IP", requires = "network")]
    pub ip: Vec<String>,
    /// Interface name inside the sandbox (default: eth0, eth1, ...)
    #[arg(long, value_name = "IF", requires = "network")]
    pub ifname: Option<String>,
}

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// Network name
    pub network: String,
    /// Sandbox name
    pub sandbox: String,
    /// Address on the network, once per family (default: the first free one of each)
    #[arg(long, value_name = "IP")]
    pub ip: Vec<String>,
    /// Interface name inside the sandbox (default: eth0, eth1, ...)
    #[arg(long, value_name = "IF")]
    pub ifname: Option<String>,
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// Configuration file (TOML): [[network]], [[sandbox]] with [[sandbox.endpoint]], publish lists
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Only check the file, without touching the kernel: prints "ok", or every problem with its line (exit 2)
    #[arg(long)]
    pub check: bool,
    /// Print the steps (links, then nftables in nft syntax) without changing anything
    #[arg(long)]
    pub dry_run: bool,
    /// Also remove what netnat made that the file does not name (otherwise it is kept and reported)
    #[arg(long)]
    pub prune: bool,
}

/// The audit's finding ids, for `netnat audit --help` and its man page.
const AUDIT_IDS: &str = "\
Findings (id, severity: what):
  inventory.mapping              info     a published port: scope (any address, one address, loopback),
                                          who can reach it, target, packets and bytes forwarded, live
                                          connections
  exposure.bypasses-input-firewall
                                 warning  an input-hook firewall (ufw, firewalld, an inet filter input
                                          chain) drops what it does not accept, but a published port is
                                          reachable from any source (DNAT'd packets never meet input
                                          rules); restrict it with publish --allow
  drift.table-missing            error    table inet netnat is gone (e.g. after `nft flush ruleset`)
  drift.layout                   error    its chains or maps have another shape than netnat programs
  drift.rule                     error    a chain's rules differ from netnat's (a rule added or edited by hand)
  drift.element-missing          error    a published port's map element is missing
  drift.element-extra            error    a map element netnat did not make
  drift.element-changed          error    a map element points elsewhere than the record says
  drift.link-missing             error    a bridge or endpoint veth in the record is gone
  drift.config                   warning  with --config: a network, sandbox or port differs from the file
  conflict.forward-drop          warning  another table's forward chain drops container traffic: the rule that
                                          really decides it (never `ct state invalid drop`), with that
                                          firewall's own fix
  conflict.dnat                  warning  another table DNATs a host port netnat publishes (and which wins)
  conflict.legacy-iptables       warning  legacy iptables tables are in use; netlink cannot see their rules
  conflict.local-listener        warning  a local process listens on a published host port
  host.forwarding-off            error    IPv4 (or, with an IPv6 network, IPv6) forwarding is off while networks exist
  host.ra-ignored                warning  an interface takes router advertisements (accept_ra=1) but IPv6
                                          forwarding makes the kernel ignore them
  host.route-localnet-unguarded  error    route_localnet is on without netnat's 127.0.0.0/8 guard
  host.br-netfilter              info     bridged traffic traverses the IP hooks (br_netfilter)
  host.conntrack-full            warning  the conntrack table is over 80% full
  host.firewall-open             info     a host firewall lets a network through by netnat's entries (firewalld
                                          zone netnat, ufw route rules, DOCKER-USER rules)
  host.firewall-missing          warning  a host firewall runs without netnat's opening for a network (fix:
                                          `netnat reload`, or that firewall's own command)
  host.firewall-damaged          warning  netnat's opening in a host firewall is incomplete
  host.firewall-unreachable      warning  a host firewall runs but cannot be asked (firewalld not on D-Bus)
  state.unreadable               error    netnat's record cannot be read (the kernel is audited as it is;
                                          `netnat recover` rebuilds the record)
  leftover.veth                  warning  a netnat-named veth that is not recorded, or whose peer is gone
  leftover.netns                 warning  a namespace netnat made that no endpoint uses
  leftover.mapping-target        warning  a mapping whose container address is in no netnat network
  trace.leftover                 warning  the chains of a `netnat trace` that was killed (the next netnat
                                          command that changes something removes them)
  foreign.nat                    info     a NAT rule of another table, decoded (nft nat statements,
                                          iptables-nft DNAT/SNAT/MASQUERADE), or listed as not decoded

Exit status: 0 no finding at or above --fail-on, 1 at least one, 2 the audit could not run.";

const COUNTING_ABOUT: &str = "Show or set what netnat's per-mapping counters count (`netnat ls`, `audit`, `metrics`).

connections (the default): each published mapping counts the connections it translated. The count is \
kept by the mapping's element in the NAT map, which the kernel looks up only for a connection's first \
packet: no rule of netnat's meets the later packets of a connection, so the data path costs what one \
hand-written DNAT rule costs. Packets and bytes are not counted (`ls` shows -, `metrics` has no \
packets/bytes series).

packets: also every packet and byte of every connection, both directions, by one forward-chain rule \
every forwarded packet meets (a lookup of the connection mark set at DNAT time). Costs about 0.23 us per \
packet on the benchmark machine (BENCHMARKS.md).

The change is one nftables transaction; connection counters keep counting, packet and byte counters \
start at zero. The mode is recorded (and `netnat save` writes it as `counting = \"packets\"`).";

#[cfg(test)]
mod tests {
    /// Every finding id the audit can emit is in its help (and so its man page).
    #[test]
    fn every_audit_finding_id_is_documented() {
        // Every file of the audit except its tests (whose fixtures name ids too).
        let src = [
            include_str!("audit/mod.rs"),
            include_str!("audit/drift.rs"),
            include_str!("audit/exposure.rs"),
            include_str!("audit/foreign.rs"),
            include_str!("audit/host.rs"),
        ]
        .concat();
        let prefixes = ["inventory.", "drift.", "conflict.", "host.", "state.", "leftover.", "foreign.", "trace."];
        let ids: Vec<&str> = src
            .split('"')
            .filter(|s| prefixes.iter().any(|p| s.starts_with(p)))
            .filter(|s| s.chars().all(|c| c.is_ascii_lowercase() || c == '.' || c == '-'))
            .collect();
        assert!(ids.len() >= 20, "found only {ids:?}");
        for id in ids {
            assert!(super::AUDIT_IDS.contains(&format!("  {id} ")), "finding {id} is not documented in AUDIT_IDS");
        }
    }

    /// ... and in docs/audit.md and the JSON schema's list of ids, and those list no other.
    #[test]
    fn every_audit_finding_id_is_in_the_docs_and_schema() {
        let help: Vec<&str> = super::AUDIT_IDS
            .lines()
            .filter_map(|l| l.strip_prefix("  ")?.split_whitespace().next())
            .filter(|w| w.contains('.') && w.chars().all(|c| c.is_ascii_lowercase() || c == '.' || c == '-'))
            .collect();
        let schema: serde_json::Value = serde_json::from_str(include_str!("../docs/audit-schema.json")).unwrap();
        let listed: Vec<&str> = schema["properties"]["findings"]["items"]["properties"]["id"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let doc = include_str!("../docs/audit.md");
        for id in &help {
            assert!(listed.contains(id), "{id} is not in docs/audit-schema.json");
            assert!(doc.contains(&format!("`{id}`")), "{id} is not in docs/audit.md");
        }
        for id in &listed {
            assert!(help.contains(id), "docs/audit-schema.json lists {id}, which the audit does not emit");
        }
    }
}
