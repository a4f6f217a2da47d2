#!/usr/bin/env bash
# netnat benchmark suite: netnat against its peers, measured in one run as paired rounds.
#
#   benches/run.sh            full suite: 15 paired rounds of 1 s measurements, then the CNI and
#                             allow-list sections (benches/cni.sh, benches/allow.sh): ~23 min on 2 cores
#   benches/run.sh --quick    4 rounds, fewer configurations and no peers' control plane (~3.5 min;
#                             to check the suite, not for figures)
#   BENCH_ONLY=control benches/run.sh    re-measure the control plane only, keep the rest
#   BENCH_ONLY=datapath benches/run.sh   re-measure the data path only, keep the control plane
#   BENCH_ONLY=cni benches/run.sh        re-measure the CNI and allow-list sections only, keep the rest
#   BENCH_ROUNDS=N BENCH_DUR=S BENCH_CP_ROUNDS=N   override rounds, seconds per measurement,
#                                       control-plane rounds
#
# Why rounds: this 2-vCPU machine is shared, so one configuration's rate moves by 20-50 % from one
# minute to the next. Every configuration therefore gets its own host namespace, built once; a
# round then measures each configuration for a few seconds, one after the other, in an order that
# is reversed every other round (A B, B A, ...). Two configurations measured seconds apart in the
# same round see the same machine, so the ratio of the two is far steadier than either rate.
# report.py gives the median of the per-round ratios with a 95 % bootstrap interval.
#
# Kernel cost: during every keep-alive and new-connection run of the in-kernel paths, perf samples
# all CPUs (cpu-clock, kernel call chains); report.py attributes the samples of the benchmark's
# processes to netfilter, to the softirq network path and to netnat's chains, per 1,000 requests.
# Beside each rate: the machine's busy CPU time (/proc/stat, without idle and steal) per request.
#
# Everything runs inside a scratch network + mount namespace, and every configuration in network
# namespaces made here: the machine's own network is never touched, traffic only goes to
# addresses in these namespaces, and only processes inside them are ever stopped.
# Results: bench-results/ (results.md, raw.tsv, the plots).
set -euo pipefail

QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${BENCH_OUT:-$ROOT/bench-results}
TOOLS=$OUT/tools

if [[ -z "${NETNAT_BENCH_INNER:-}" ]]; then
  [[ $(id -u) == 0 ]] || { echo "benches/run.sh: run as root (it builds namespaces)" >&2; exit 2; }
  need=()
  while read -r p; do
    [[ -z $p || $p == \#* ]] && continue
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
  done <"$ROOT/benches/deps"
  if ((${#need[@]})); then
    echo "benches/run.sh: installing ${need[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  mkdir -p "$TOOLS"
  # docker-proxy comes from Debian's docker.io; only the one binary is extracted (no dockerd is
  # installed or started).
  if [[ ! -x $TOOLS/docker-proxy ]]; then
    (cd "$TOOLS" && apt-get download docker.io >/dev/null 2>&1 && dpkg-deb -x docker.io_*.deb pkg &&
      cp pkg/usr/sbin/docker-proxy . && rm -rf pkg docker.io_*.deb) || echo "note: docker-proxy unavailable; skipped"
  fi
  (cd "$ROOT" && cargo build --profile profiling --quiet)
  export NETNAT_BENCH_INNER=1 BENCH_START=$(date +%s)
  # Mount namespaces are made on one CPU (NETNAT_BENCH_CPU, this one and every host's in host_up):
  # on Linux 6.18 a mount namespace made on another CPU than this scratch one can get a lower id
  # (ids seem to come in per-CPU batches), and unshare --mount=FILE's bind of it is then refused
  # as a loop (EINVAL). Measured here: scratch namespace on CPU 1 and hosts on CPU 0, 80 of 80
  # binds failed; both on one CPU, 0 of 160. Only the unshare is pinned: the suite itself runs on
  # every CPU it was given.
  cpus=$(taskset -pc $$ | awk -F': ' '{print $2}')
  export NETNAT_BENCH_CPU=${cpus%%[,-]*}
  exec taskset -c "$NETNAT_BENCH_CPU" unshare --net --mount --propagation private \
    taskset -c "$cpus" bash -c 'mount -t tmpfs tmpfs /run && exec "$0" "$@"' "$0" "$@"
fi

# ---------------- inside the scratch namespace ----------------
# cargo builds where CARGO_TARGET_DIR says, when it is set.
NETNAT=${CARGO_TARGET_DIR:-$ROOT/target}/profiling/netnat
TIMECMD=(python3 "$ROOT/benches/timecmd.py")
REPORT=$ROOT/benches/report.py
if ((QUICK)); then ROUNDS=4; DUR=1; CP_ROUNDS=5; else ROUNDS=15; DUR=1; CP_ROUNDS=15; fi
ROUNDS=${BENCH_ROUNDS:-$ROUNDS}
DUR=${BENCH_DUR:-$DUR}
CP_ROUNDS=${BENCH_CP_ROUNDS:-$CP_ROUNDS}
STATE=/run/bench
PERFDIR=$STATE/perf
# perf's cpu-clock sampling period: one sample per 0.5 ms of a CPU's time (2 kHz per CPU).
# Recording: kernel call chains only, no build-ids, no BPF side-band thread, only the tasks (not
# the mappings) of processes already running: perf then starts and stops in about 0.2 s.
PERF_PERIOD_NS=500000
PERF_REC=(perf record -q -e cpu-clock -g --kernel-callchains -B --no-bpf-event --synth=task)
# Reading: kernel symbols from /proc/kallsyms, and an empty symbol directory so that perf does not
# load the symbol tables of every program on the machine (user-space samples stay unnamed).
PERF_SCRIPT=(perf script --kallsyms=/proc/kallsyms --symfs="$STATE/nosymfs" -F comm,ip,sym)
mkdir -p "$OUT" "$STATE" "$PERFDIR" "$STATE/nosymfs"
RAW=$OUT/raw.tsv
# Control-plane metrics; BENCH_ONLY keeps the other kind's rows of the previous run.
CONTROL_RE='^(publish1_|apply10k|remove10k|ls_json|audit_10k|map1000|range1000|cp_)'
# The CNI and allow-list sections (benches/cni.sh, benches/allow.sh).
CNI_RE='^(cni_|allow_)'
case ${BENCH_ONLY:-} in
  control) { grep -Ev "$CONTROL_RE" "$RAW" || true; } >"$RAW.keep"; mv "$RAW.keep" "$RAW" ;;
  datapath) { grep -E "$CONTROL_RE|$CNI_RE" "$RAW" || true; } >"$RAW.keep"; mv "$RAW.keep" "$RAW" ;;
  cni) { grep -Ev "$CNI_RE" "$RAW" || true; } >"$RAW.keep"; mv "$RAW.keep" "$RAW" ;;
  *) : >"$RAW" ;;
esac
HOST=198.51.100.1
EXT=198.51.100.2
SRV=172.16.1.1
# IPv6: documentation prefix between the external namespace and the host, ULA for the network.
HOST6=2001:db8::1
EXT6=2001:db8::2
SRV6=fd00:16::2

log() { printf '[%4ds] %s\n' $((SECONDS)) "$*" >&2; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW"; } # metric config round value

# PIDs of the processes in these network namespaces (files under /run/netns*).
ns_pids() { # NSFILE...
  local f ids=()
  for f; do [[ -e $f ]] && ids+=("net:[$(stat -L -c %i "$f")]"); done
  ((${#ids[@]})) || return 0
  find /proc -mindepth 3 -maxdepth 3 -path '/proc/[0-9]*/ns/net' -printf '%h %l\n' 2>/dev/null |
    awk -v ids=" ${ids[*]} " 'index(ids, " " $2 " ") {split($1, p, "/"); print p[3]}'
}
# Every process this script leaves running lives in one of its namespaces: stop exactly those.
stop_ns_processes() {
  local pids=()
  mapfile -t pids < <(ns_pids /run/netns/* /run/netns-*/*)
  ((${#pids[@]})) || return 0
  kill "${pids[@]}" 2>/dev/null || true
  sleep 0.3
  kill -9 "${pids[@]}" 2>/dev/null || true
}
trap stop_ns_processes EXIT

# --- namespaces: for configuration C, host h-C, external host e-C and server s-C ---
# inside NS CMD...: run CMD in network namespace NS, a name under /run/netns or a path (nsenter
# keeps this mount namespace, so the namespaces made under /run/netns* stay visible here).
inside() { local ns=$1; shift; [[ $ns == /* ]] || ns=/run/netns/$ns; nsenter --net="$ns" "$@"; }
# netnat keeps one record per machine and takes the namespaces under /run/netns that carry its
# mark for its own: two netnat instances must not see each other's. So each host C also gets a
# mount namespace ($STATE/C/mnt) in which /run/netns is the directory /run/netns-C, a shared
# mount: the sandbox namespaces netnat makes there appear here as /run/netns-C/NAME.
nn() { local c=$1; shift; NETNAT_STATE_DIR=$STATE/$c/netnat nsenter --mount="$STATE/$c/mnt" --net=/run/netns/h-"$c" "$NETNAT" "$@" >/dev/null; }
srv() { if [[ -e /run/netns/s-$1 ]]; then echo /run/netns/s-"$1"; else echo /run/netns-"$1"/s-"$1"; fi; } # C -> server ns

host_up() { # C: h-C and e-C linked by a veth, 198.51.100.0/24 and 2001:db8::/64, as the seed's ext
  local c=$1
  mkdir -p "$STATE/$c" /run/netns-"$c"
  ip netns add h-"$c"
  mount --bind /run/netns-"$c" /run/netns-"$c"
  mount --make-shared /run/netns-"$c"
  touch "$STATE/$c/mnt"
  # On the scratch namespace's CPU (see NETNAT_BENCH_CPU above). unshare's bind of the new
  # namespace failed with EINVAL without that; a failed attempt leaves nothing behind, so it is
  # still tried again, a bounded number of times.
  local i
  for i in 1 2 3 4 5 6 7 8 9 10; do
    taskset -c "${NETNAT_BENCH_CPU:-0}" unshare --mount="$STATE/$c/mnt" --propagation unchanged sh -c "mount --make-private /run/netns && mount --bind /run/netns-$c /run/netns" 2>/dev/null && break
    ((i < 10)) || { log "$c: no mount namespace"; return 1; }
    sleep 0.1
  done
  ip netns add e-"$c"
  ip -n h-"$c" link set lo up
  ip -n e-"$c" link set lo up
  ip -n h-"$c" link add veth-ext type veth peer name eth0 netns e-"$c"
  ip -n h-"$c" addr add $HOST/24 dev veth-ext
  # nodad: an IPv6 address is usable at once instead of tentative for about a second.
  ip -n h-"$c" -6 addr add $HOST6/64 dev veth-ext nodad
  ip -n h-"$c" link set veth-ext up
  ip -n e-"$c" addr add $EXT/24 dev eth0
  ip -n e-"$c" -6 addr add $EXT6/64 dev eth0 nodad
  ip -n e-"$c" link set eth0 up
  # The client opens many short connections: give it room.
  inside e-"$c" sh -c 'echo "1024 65000" >/proc/sys/net/ipv4/ip_local_port_range; echo 1 >/proc/sys/net/ipv4/tcp_tw_reuse'
  inside h-"$c" sh -c 'echo 1 >/proc/sys/net/ipv4/tcp_tw_reuse'
}
# The seed's topology: bridge MyDocker0 172.16.0.0/16, server sandbox s-C at 172.16.1.1; with V6
# dual stack (fd00:16::/64, server also fd00:16::2).
topo_netnat() { # C V6
  if (($2)); then
    nn "$1" network create MyDocker0 --subnet 172.16.0.0/16 --gateway 172.16.1.254 --subnet fd00:16::/64
    nn "$1" sandbox create s-"$1" --network MyDocker0 --ip $SRV --ip $SRV6
  else
    nn "$1" network create MyDocker0 --subnet 172.16.0.0/16 --gateway 172.16.1.254
    nn "$1" sandbox create s-"$1" --network MyDocker0 --ip $SRV
  fi
}
topo_hand() { # C V6: the same topology built by hand, for the peers
  local c=$1 h=(ip -n h-$1) s=(ip -n s-$1)
  ip netns add s-"$c"
  "${h[@]}" link add MyDocker0 type bridge
  "${h[@]}" addr add 172.16.1.254/16 dev MyDocker0
  "${h[@]}" link set MyDocker0 up
  "${h[@]}" link add vsrv type veth peer name eth0 netns s-"$c"
  "${h[@]}" link set vsrv master MyDocker0 up
  "${s[@]}" link set lo up
  "${s[@]}" addr add $SRV/16 dev eth0
  "${s[@]}" link set eth0 up
  "${s[@]}" route add default via 172.16.1.254
  inside h-"$c" sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward'
  if (($2)); then
    "${h[@]}" -6 addr add fd00:16::1/64 dev MyDocker0 nodad
    inside s-"$c" sh -c 'echo 0 >/proc/sys/net/ipv6/conf/eth0/accept_ra'
    "${s[@]}" -6 addr add $SRV6/64 dev eth0 nodad
    "${s[@]}" -6 route add default via fd00:16::1
    inside h-"$c" sh -c 'echo 1 >/proc/sys/net/ipv6/conf/all/forwarding'
  fi
}
servers() { # C V6 IPERF: nginx (one worker) on 8080 and, with IPERF, iperf3 on 5201, in s-C
  local c=$1 v6=$2 d=$STATE/$1
  cat >"$d/nginx.conf" <<EOF
worker_processes 1;
pid $d/nginx.pid;
error_log $d/nginx.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000;
  server { listen $SRV:8080 reuseport backlog=4096;$( (($v6)) && echo " listen [$SRV6]:8080 reuseport backlog=4096;") location / { return 200 "ok\n"; } } }
EOF
  local s
  s=$(srv "$c")
  inside "$s" nginx -c "$d/nginx.conf"
  if (($3)); then
    # One iperf3 server per family: it binds one address.
    inside "$s" iperf3 -s -B $SRV -p 5201 -D --pidfile "$d/iperf.pid"
    if (($v6)); then inside "$s" iperf3 -s -B $SRV6 -p 5201 -D --pidfile "$d/iperf6.pid"; fi
  fi
  for _ in $(seq 50); do inside "$s" ss -Hltn | grep -q ":8080" && return 0; sleep 0.1; done
  log "$c: nginx did not start"
  return 1
}
endpoints() { echo "$2" >"$STATE/$1/http"; echo "${3:-}" >"$STATE/$1/iperf"; } # C HTTP [IPERF]

# The first packets through a link that has just come up can be refused (IPv6 most of all): wait,
# bounded, until the external host can open a connection.
ready() { # C
  local ep h p
  ep=$(<"$STATE/$1/http")
  h=${ep%:*}; p=${ep##*:}; h=${h#[}; h=${h%]}
  for _ in $(seq 50); do
    inside e-"$1" timeout 1 bash -c "exec 3<>/dev/tcp/$h/$p" 2>/dev/null && return 0
    sleep 0.1
  done
  log "$1: $ep not reachable from e-$1"
  return 1
}

# --- the data-path configurations, one host each ---
setup_direct() { # the client routes 172.16.0.0/16 via the host: no NAT at all
  host_up direct; topo_hand direct 0; ip -n e-direct route add 172.16.0.0/16 via $HOST
  servers direct 0 1; endpoints direct $SRV:8080 $SRV:5201
}
setup_netnat() {
  host_up netnat; topo_netnat netnat 0; servers netnat 0 1
  nn netnat publish 9090:$SRV:8080 9201:$SRV:5201
  endpoints netnat $HOST:9090 $HOST:9201
}
setup_nft1() { # the minimal hand-written DNAT: one rule per port, nothing else
  host_up nft1; topo_hand nft1 0; servers nft1 0 1
  inside h-nft1 nft -f - <<EOF
table ip hand {
  chain pre {
    type nat hook prerouting priority dstnat;
    tcp dport 9090 dnat to $SRV:8080
    tcp dport 9201 dnat to $SRV:5201
  }
}
EOF
  endpoints nft1 $HOST:9090 $HOST:9201
}
setup_iptables() { # Docker's layout, through iptables-nft
  host_up iptables; topo_hand iptables 0; servers iptables 0 1
  local ipt=(inside h-iptables iptables-nft) p
  "${ipt[@]}" -t nat -N DOCKER
  "${ipt[@]}" -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
  "${ipt[@]}" -t nat -A POSTROUTING -s 172.16.0.0/16 ! -o MyDocker0 -j MASQUERADE
  for p in 8080:9090 5201:9201; do
    "${ipt[@]}" -t nat -A DOCKER ! -i MyDocker0 -p tcp --dport ${p#*:} -j DNAT --to-destination $SRV:${p%:*}
  done
  "${ipt[@]}" -N DOCKER; "${ipt[@]}" -N DOCKER-USER; "${ipt[@]}" -A DOCKER-USER -j RETURN
  "${ipt[@]}" -A FORWARD -j DOCKER-USER
  "${ipt[@]}" -A FORWARD -o MyDocker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
  "${ipt[@]}" -A FORWARD -o MyDocker0 -j DOCKER
  "${ipt[@]}" -A FORWARD -i MyDocker0 -j ACCEPT
  for p in 8080 5201; do "${ipt[@]}" -A DOCKER -d $SRV/32 ! -i MyDocker0 -o MyDocker0 -p tcp --dport $p -j ACCEPT; done
  endpoints iptables $HOST:9090 $HOST:9201
}
setup_socat() { # the seed's userland proxy
  host_up socat; topo_hand socat 0; servers socat 0 1
  inside h-socat socat TCP-LISTEN:9090,bind=$HOST,fork,reuseaddr,backlog=4096 TCP:$SRV:8080 >/dev/null 2>&1 &
  inside h-socat socat TCP-LISTEN:9201,bind=$HOST,fork,reuseaddr TCP:$SRV:5201 >/dev/null 2>&1 &
  sleep 0.3
  endpoints socat $HOST:9090 $HOST:9201
}
setup_dockerproxy() {
  host_up dockerproxy; topo_hand dockerproxy 0; servers dockerproxy 0 1
  inside h-dockerproxy "$TOOLS/docker-proxy" -proto tcp -host-ip $HOST -host-port 9090 -container-ip $SRV -container-port 8080 3>/dev/null >/dev/null 2>&1 &
  inside h-dockerproxy "$TOOLS/docker-proxy" -proto tcp -host-ip $HOST -host-port 9201 -container-ip $SRV -container-port 5201 3>/dev/null >/dev/null 2>&1 &
  sleep 0.3
  endpoints dockerproxy $HOST:9090 $HOST:9201
}
# Podman's netavark (Debian's package), driven directly with its JSON on stdin: same bridge name,
# subnet, gateway and container address as the others; its firewall driver is iptables.
NETAVARK=/usr/lib/podman/netavark
netavark_json() { # server-namespace "host:container"... -> the setup/teardown input
  local sns=$1 maps=() m joined
  shift
  for m in "$@"; do
    maps+=("{\"host_ip\":\"\",\"container_port\":${m#*:},\"host_port\":${m%:*},\"range\":1,\"protocol\":\"tcp\"}")
  done
  joined=$(IFS=,; echo "${maps[*]}")
  cat <<EOF
{"container_id":"$(printf 'b%.0s' {1..64})","container_name":"$sns","port_mappings":[$joined],
 "networks":{"bench":{"static_ips":["$SRV"],"interface_name":"eth0"}},
 "network_info":{"bench":{"name":"bench","id":"$(printf 'a%.0s' {1..64})","driver":"bridge",
  "network_interface":"MyDocker0","subnets":[{"subnet":"172.16.0.0/16","gateway":"172.16.1.254"}],
  "ipv6_enabled":false,"internal":false,"dns_enabled":false,"ipam_options":{"driver":"host-local"}}}}
EOF
}
netavark() { # C setup|teardown: netavark in h-C for the container namespace s-C
  NETAVARK_FW=iptables inside h-"$1" $NETAVARK --config "$STATE/$1/netavark" "$2" /run/netns/s-"$1" <"$STATE/$1/netavark.json" >/dev/null
}
setup_netavark() {
  host_up netavark; ip netns add s-netavark
  netavark_json s-netavark 9090:8080 9201:5201 >"$STATE/netavark/netavark.json"
  netavark netavark setup
  servers netavark 0 1
  endpoints netavark $HOST:9090 $HOST:9201
}
# What netnat's rules cost, measured: netnat_noguard is netnat's own table with the guard chain
# (nat, prerouting -110, drops 127.0.0.0/8 from outside; a connection's first packet only) taken
# out by hand (in this host's namespace only). netnat_pkt is netnat with `netnat counting
# packets`: every packet counted per port by the forward chain's one rule (`ct mark . meta
# l4proto @fwd_any accept`), the cost of that option.
setup_netnat_noguard() {
  host_up netnat_noguard; topo_netnat netnat_noguard 0; servers netnat_noguard 0 1
  nn netnat_noguard publish 9090:$SRV:8080 9201:$SRV:5201
  inside h-netnat_noguard nft delete chain inet netnat guard
  endpoints netnat_noguard $HOST:9090 $HOST:9201
}
setup_netnat_pkt() {
  host_up netnat_pkt; topo_netnat netnat_pkt 0; servers netnat_pkt 0 1
  nn netnat_pkt counting packets >/dev/null
  nn netnat_pkt publish 9090:$SRV:8080 9201:$SRV:5201
  endpoints netnat_pkt $HOST:9090 $HOST:9201
}
# IPv6: the same three in-kernel paths, over IPv6 between the external namespace and the host.
setup_direct6() { # the client routes the ULA subnet via the host's IPv6 address, no NAT
  host_up direct6; topo_hand direct6 1; ip -n e-direct6 -6 route add fd00:16::/64 via $HOST6
  servers direct6 1 1; endpoints direct6 "[$SRV6]:8080" "[$SRV6]:5201"
}
setup_netnat6() { # dual stack, the port published on every local IPv6 address
  host_up netnat6; topo_netnat netnat6 1; servers netnat6 1 1
  nn netnat6 publish "9090:[$SRV6]:8080" "9201:[$SRV6]:5201"
  endpoints netnat6 "[$HOST6]:9090" "[$HOST6]:9201"
}
setup_nft6() { # the minimal hand-written ip6 DNAT: one rule per port, nothing else
  host_up nft6; topo_hand nft6 1; servers nft6 1 1
  inside h-nft6 nft -f - <<EOF
table ip6 handnat {
  chain pre {
    type nat hook prerouting priority dstnat;
    tcp dport 9090 dnat ip6 to [$SRV6]:8080
    tcp dport 9201 dnat ip6 to [$SRV6]:5201
  }
}
EOF
  endpoints nft6 "[$HOST6]:9090" "[$HOST6]:9201"
}
# Per-packet scaling: N published ports, the measured one (target port 8080) the LAST of them.
setup_scale() { # LAYOUT N, LAYOUT netnat | rules (one DNAT rule per port, the peers' layout) | netnat6
  local layout=$1 n=$2 c=$1_$2 last=$((20000 + $2 - 1)) p
  host_up "$c"
  case $layout in
    netnat)
      topo_netnat "$c" 0; servers "$c" 0 0
      if ((n > 1)); then nn "$c" publish "20000-$((last - 1)):$SRV:20000-$((last - 1))"; fi
      nn "$c" publish "$last:$SRV:8080"
      endpoints "$c" "$HOST:$last" ;;
    netnat6)
      topo_netnat "$c" 1; servers "$c" 1 0
      if ((n > 1)); then nn "$c" publish "20000-$((last - 1)):[$SRV6]:20000-$((last - 1))"; fi
      nn "$c" publish "$last:[$SRV6]:8080"
      endpoints "$c" "[$HOST6]:$last" ;;
    rules)
      topo_hand "$c" 0; servers "$c" 0 0
      {
        echo "table ip hand {"
        echo "chain pre {"
        echo "type nat hook prerouting priority dstnat;"
        for ((p = 20000; p < last; p++)); do echo "tcp dport $p dnat to $SRV:$p"; done
        echo "tcp dport $last dnat to $SRV:8080"
        echo "}"
        echo "}"
      } | inside h-"$c" nft -f -
      endpoints "$c" "$HOST:$last" ;;
  esac
}

# --- measurements (client in e-C) ---
# A run's CPU: the first line of /proc/stat read by the client's own shell just before and after
# the client (busy = user + nice + system + irq + softirq; steal and idle apart).
run_client() { # C STATFILE CMD...: CMD in e-C between two /proc/stat reads
  local c=$1 sf=$2
  shift 2
  inside e-"$c" bash -c 'head -1 /proc/stat >"$0"; "$@"; rc=$?; head -1 /proc/stat >>"$0"; exit $rc' "$sf" "$@"
}
record_stat() { # METRIC C ROUND STATFILE: busy and steal ms of the run
  local v
  v=$(awk 'NR==1 {for (i = 2; i <= 9; i++) a[i] = $i} NR==2 {b = ($2+$3+$4+$7+$8) - (a[2]+a[3]+a[4]+a[7]+a[8]); s = $9 - a[9]; print b * 10, s * 10}' "$4")
  record "$1_busy_ms" "$2" "$3" "${v% *}"
  record "$1_steal_ms" "$2" "$3" "${v#* }"
}
# The perf samples of the runs in $PERFDIR/list -> raw rows (METRIC_perf_*, METRIC_nfsym:*), after
# the last round, so that perf script's own CPU use disturbs no measurement.
attribute_perf() {
  log "attributing perf samples ($(wc -l <"$PERFDIR/list") runs)"
  local pf metric label r
  while read -r pf metric label r; do
    "${PERF_SCRIPT[@]}" -i "$pf" --comms wrk,nginx,ksoftirqd/0,ksoftirqd/1,swapper 2>/dev/null |
      python3 "$REPORT" --perf "$metric" "$label" "$r" $PERF_PERIOD_NS >>"$RAW"
    rm -f "$pf"
  done <"$PERFDIR/list"
  : >"$PERFDIR/list"
}
netnat_packets() { # C: packets netnat's per-port counters have seen (0 for other configurations)
  # Only `counting packets` counts packets (netnat_pkt); by default netnat counts connections.
  case $1 in
    netnat_pkt) NETNAT_STATE_DIR=$STATE/$1/netnat nsenter --mount="$STATE/$1/mnt" --net=/run/netns/h-"$1" "$NETNAT" ls --json |
      python3 -c 'import json,sys; print(sum(m["packets"] or 0 for m in json.load(sys.stdin)))' ;;
    *) echo 0 ;;
  esac
}
# wrk (one thread, 32 connections), keep-alive (ka) or one new connection per request (nc).
measure_wrk() { # C MODE ROUND PERF METRIC LABEL
  local c=$1 mode=$2 r=$3 perf=$4 metric=$5 label=$6 url args=() out pk0 pk1 sf=$STATE/stat pf
  url=$(<"$STATE/$c/http")
  [[ $mode == nc ]] && args=(-H "Connection: close")
  # Every run starts with an empty conntrack table: TIME_WAIT entries of earlier runs would slow
  # later ones down.
  inside h-"$c" conntrack -F >/dev/null 2>&1 || true
  local wrk=(wrk -t1 -c32 -d"${DUR}s" --latency "${args[@]}" "http://$url/")
  if ((perf)); then
    pk0=$(netnat_packets "$c")
    pf=$PERFDIR/$metric.$c.$r.data
    # -a: the packet path runs in softirq context on either CPU; kernel call chains only, no
    # build-ids (both keep perf's own start and stop short). Bounded by the client's duration.
    out=$(timeout $((DUR + 30)) "${PERF_REC[@]}" -a -c $PERF_PERIOD_NS -o "$pf" -- \
      bash -c "$(declare -f inside run_client); run_client \"\$@\"" _ "$c" "$sf" "${wrk[@]}" 2>/dev/null) || true
    pk1=$(netnat_packets "$c")
    echo "$pf $metric $label $r" >>"$PERFDIR/list"
    record "${metric}_pkts" "$label" "$r" $((pk1 - pk0))
  else
    out=$(timeout $((DUR + 30)) bash -c "$(declare -f inside run_client); run_client \"\$@\"" _ "$c" "$sf" "${wrk[@]}" 2>/dev/null) || true
  fi
  local rps p99 req
  read -r rps p99 req < <(awk '
    /Requests\/sec/ {rps=$2}
    / requests in / {req=$1}
    /^ +99%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; p99=v}
    END {printf "%s %s %s\n", rps+0, p99+0, req+0}' <<<"$out")
  if [[ $rps == 0 ]]; then log "  $label $mode round $r: no result"; return; fi
  record "${metric}_rps" "$label" "$r" "$rps"
  record "${metric}_p99" "$label" "$r" "$p99"
  record "${metric}_req" "$label" "$r" "$req"
  record_stat "$metric" "$label" "$r" "$sf"
}
measure_iperf() { # C ROUND: one TCP stream for DUR seconds
  local c=$1 r=$2 ep h out sf=$STATE/stat
  ep=$(<"$STATE/$c/iperf")
  h=${ep%:*}; h=${h#[}; h=${h%]}
  inside h-"$c" conntrack -F >/dev/null 2>&1 || true
  out=$(timeout $((DUR + 30)) bash -c "$(declare -f inside run_client); run_client \"\$@\"" _ "$c" "$sf" iperf3 -c "$h" -p "${ep##*:}" -t "$DUR" -J 2>/dev/null |
    python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum_received"]; print(e["bits_per_second"]/1e9, e["bytes"]*8/1e9)' 2>/dev/null) || true
  [[ -n $out ]] || { log "  $c iperf round $r: no result"; return; }
  record gbps "$c" "$r" "${out% *}"
  record gbps_gbit "$c" "$r" "${out#* }"
  record_stat gbps "$c" "$r" "$sf"
}
order() { # ROUND ITEM...: the items, reversed in even rounds (A B, B A, ...)
  local r=$1
  shift
  if ((r % 2)); then printf '%s\n' "$@"; else printf '%s\n' "$@" | tac; fi
}

# ---------------- the data path ----------------
# Neighbours in this order are the closest pairs: netnat next to the hand rule, to direct (one
# apart) and to netnat over IPv6; netnat over IPv6 next to the hand ip6 rule.
DATAPATH=(socat dockerproxy iptables netavark netnat_pkt netnat_noguard direct nft1 netnat netnat6 nft6 direct6)
SCALE=(rules_100 rules_1000 rules_1 rules_10000 netnat_10000 netnat_1 netnat_100 netnat_1000 netnat6_1 netnat6_10000)
if ((QUICK)); then
  DATAPATH=(direct nft1 netnat netnat6 nft6 direct6)
  SCALE=(rules_1 rules_10000 netnat_10000 netnat_1 netnat6_1 netnat6_10000)
fi
[[ -x $NETAVARK ]] || DATAPATH=("${DATAPATH[@]/netavark/}")
[[ -x $TOOLS/docker-proxy ]] || DATAPATH=("${DATAPATH[@]/dockerproxy/}")
# perf runs during the keep-alive and new-connection runs of these (direct, the hand rules,
# netnat and its two variants; IPv4 direct only), and during the scaling runs at 1 and 10,000.
PERFCFG=" direct nft1 netnat nft6 netnat6 netnat_noguard netnat_pkt netnat_1 netnat_10000 rules_1 rules_10000 "
((QUICK)) && PERFCFG=" direct nft1 netnat "
# Throughput is not measured for the two variants (the request runs show what they cost).
NOIPERF=" netnat_noguard netnat_pkt "

if [[ -z ${BENCH_ONLY:-} || $BENCH_ONLY == datapath ]]; then
  log "setting up ${#DATAPATH[@]} data-path and ${#SCALE[@]} scaling configurations"
  ok=()
  for c in ${DATAPATH[*]}; do
    if setup_"$c" && ready "$c"; then ok+=("$c"); else log "configuration $c failed; left out"; fi
  done
  DATAPATH=("${ok[@]}")
  ok=()
  for c in "${SCALE[@]}"; do
    if setup_scale "${c%_*}" "${c##*_}" && ready "$c"; then ok+=("$c"); else log "configuration $c failed; left out"; fi
  done
  SCALE=("${ok[@]}")
  : >"$PERFDIR/list"
  log "data path: $ROUNDS rounds of ${DUR} s measurements"
  for ((r = 1; r <= ROUNDS; r++)); do
    for mode in ka nc; do
      for c in $(order $r "${DATAPATH[@]}"); do
        p=0; [[ $PERFCFG == *" $c "* ]] && p=1
        measure_wrk "$c" $mode $r $p $mode "$c"
      done
    done
    for c in $(order $r "${DATAPATH[@]}"); do [[ $NOIPERF == *" $c "* ]] || measure_iperf "$c" $r; done
    for c in $(order $r "${SCALE[@]}"); do
      p=0; [[ $PERFCFG == *" $c "* ]] && p=1
      measure_wrk "$c" nc $r $p "scale_nc_${c##*_}" "${c%_*}"
    done
    log "round $r/$ROUNDS done"
  done
  # The perf samples are attributed after the last round, so that perf script's own CPU use does
  # not disturb any measurement.
  attribute_perf
  stop_ns_processes
  for n in $(ip netns list | awk '{print $1}'); do ip netns del "$n"; done
  for f in /run/netns-*/* "$STATE"/*/mnt; do umount "$f" && rm -f "$f"; done
fi

# ---------------- the control plane ----------------
# One command's wall time, user and system CPU time and peak RSS, inside h-C (with CP_REPS=N
# and CP_UNDO=shell command: N times, each followed by the untimed CP_UNDO).
cp_time() { # METRIC CONFIG C ROUND CMD...
  local metric=$1 cfg=$2 c=$3 r=$4 out opts=()
  shift 4
  [[ -n ${CP_UNDO:-} ]] && opts=(--reps "${CP_REPS:-1}" --undo "$CP_UNDO")
  if out=$(NETNAT_STATE_DIR=$STATE/$c/netnat "${TIMECMD[@]}" --mnt "$STATE/$c/mnt" "${opts[@]}" /run/netns/h-"$c" "$@"); then
    while read -r wall user sys rss; do
      record "${metric}_ms" "$cfg" "$r" "$wall"
      record "${metric}_user_ms" "$cfg" "$r" "$user"
      record "${metric}_sys_ms" "$cfg" "$r" "$sys"
      record "${metric}_rss_kib" "$cfg" "$r" "$rss"
    done <<<"$out"
  else
    log "  $metric $cfg round $r failed"
  fi
}
# Where one command's time goes: perf samples it (10 kHz, its own process only) into user space,
# the kernel's handling of the nftables batch (nfnetlink_rcv_batch) and the rest of the kernel.
cp_perf() { # METRIC CONFIG C ROUND CMD...
  local metric=$1 cfg=$2 c=$3 r=$4 pf=$PERFDIR/cp.data
  shift 4
  NETNAT_STATE_DIR=$STATE/$c/netnat timeout 60 "${PERF_REC[@]}" -c 100000 -o "$pf" -- \
    nsenter --mount="$STATE/$c/mnt" --net=/run/netns/h-"$c" "$@" >/dev/null 2>&1 || { log "  perf of $metric $cfg failed"; return; }
  "${PERF_SCRIPT[@]}" -i "$pf" --comms "$(basename "$1")" 2>/dev/null |
    python3 "$REPORT" --perfsplit "$metric" "$cfg" "$r" 100000 >>"$RAW"
  rm -f "$pf"
}

if [[ -z ${BENCH_ONLY:-} || $BENCH_ONLY == control ]]; then
  log "control plane: setting up"
  # publish one port into a host with N mappings, and its peers' equivalents with N entries
  for n in 0 1000 10000; do
    host_up cp$n; topo_netnat cp$n 0
    ((n > 0)) && nn cp$n publish "20000-$((20000 + n - 1)):$SRV:20000-$((20000 + n - 1))"
    host_up ce$n
    inside h-ce$n nft add table ip hand
    # Counted like netnat's NAT map elements (each counts its connections).
    inside h-ce$n nft add map ip hand m '{ type inet_service : ipv4_addr . inet_service; counter; }'
    if ((n > 0)); then
      { printf 'add element ip hand m { '; for ((p = 20000; p < 20000 + n; p++)); do printf '%d : %s . %d, ' $p $SRV $p; done; echo '}'; } | inside h-ce$n nft -f -
    fi
    host_up cr$n
    inside h-cr$n nft add table ip hand
    inside h-cr$n nft add chain ip hand pre '{ type nat hook prerouting priority dstnat; }'
    if ((n > 0)); then
      for ((p = 20000; p < 20000 + n; p++)); do echo "add rule ip hand pre tcp dport $p dnat to $SRV:$p"; done | inside h-cr$n nft -f -
    fi
    host_up ci$n
    if ((n > 0)); then
      { echo '*nat'; for ((p = 20000; p < 20000 + n; p++)); do echo "-A PREROUTING -p tcp --dport $p -j DNAT --to-destination $SRV:$p"; done; echo COMMIT; } | inside h-ci$n iptables-nft-restore
    fi
  done
  # 10,000 mappings at once through `netnat apply` (ca: the network and sandbox already exist, so
  # only the mappings change), against nft -f and iptables-restore of the same entries (cf).
  host_up ca; topo_netnat ca 0
  base='[[network]]\nname = "MyDocker0"\nsubnet = "172.16.0.0/16"\ngateway = "172.16.1.254"\n[[sandbox]]\nname = "s-ca"\n[[sandbox.endpoint]]\nnetwork = "MyDocker0"\nip = "%s"\n'
  printf "$base" $SRV >"$STATE/none.toml"
  { printf "$base" $SRV; printf 'publish = ["20000-29999:%s:20000-29999"]\n' $SRV; } >"$STATE/10k.toml"
  nn ca apply -f "$STATE/none.toml"
  host_up cf
  # The same kernel objects netnat loads: the NAT map, its elements counted (connections).
  {
    printf 'table inet hand {\n map m {\n type inet_proto . inet_service : ipv4_addr . inet_service\n counter\n }\n}\n'
    printf 'add element inet hand m { '; for ((p = 20000; p < 30000; p++)); do printf 'tcp . %d : %s . %d, ' $p $SRV $p; done; echo '}'
  } >"$STATE/10k.nft"
  {
    printf 'table inet hand {\n map m {\n type inet_proto . inet_service : ipv4_addr . inet_service\n }\n}\n'
    printf 'add element inet hand m { '; for ((p = 20000; p < 30000; p++)); do printf 'tcp . %d : %s . %d, ' $p $SRV $p; done; echo '}'
  } >"$STATE/10k-map.nft"
  { echo '*nat'; for ((p = 20000; p < 30000; p++)); do echo "-A PREROUTING -p tcp --dport $p -j DNAT --to-destination $SRV:$p"; done; echo COMMIT; } >"$STATE/10k.ipt"
  # 1,000 separate mappings (netavark's layout: one entry each) through one netnat apply.
  host_up m1k
  {
    printf '[[network]]\nname = "MyDocker0"\nsubnet = "172.16.0.0/16"\ngateway = "172.16.1.254"\n'
    printf '[[sandbox]]\nname = "s-m1k"\n[[sandbox.endpoint]]\nnetwork = "MyDocker0"\nip = "%s"\npublish = [' $SRV
    for ((p = 30000; p < 31000; p++)); do printf '"%d:%s:%d", ' $p $SRV $p; done
    printf ']\n'
  } >"$STATE/map1000.toml"

  log "control plane: $CP_ROUNDS rounds"
  # A command of a few milliseconds is at the mercy of the scheduler on a busy machine: each
  # round times it 3 times (report.py takes the median of a round's repetitions).
  CP=(netnat_0 netnat_1000 netnat_10000 element_10000 element_1000 element_0 rule_0 rule_1000 rule_10000 iptables_10000 iptables_1000 iptables_0)
  for ((r = 1; r <= CP_ROUNDS; r++)); do
    for x in $(order $r "${CP[@]}"); do
      n=${x##*_}
      case ${x%_*} in
        netnat)
          CP_REPS=3 CP_UNDO="$NETNAT unpublish 9090" cp_time publish1_into_$n netnat cp$n $r "$NETNAT" publish 9090:$SRV:8080 ;;
        element)
          CP_REPS=3 CP_UNDO="nft delete element ip hand m '{ 9090 }'" cp_time publish1_into_$n nft_element ce$n $r nft add element ip hand m "{ 9090 : $SRV . 8080 }" ;;
        rule)
          # Not undone: finding the new rule's handle would list the whole chain each time; the
          # chain grows by 3 rules a round.
          CP_REPS=3 CP_UNDO=true cp_time publish1_into_$n nft_rule cr$n $r nft add rule ip hand pre tcp dport 9090 dnat to $SRV:8080 ;;
        iptables)
          CP_REPS=3 CP_UNDO="iptables-nft -t nat -D PREROUTING -p tcp --dport 9090 -j DNAT --to-destination $SRV:8080" \
            cp_time publish1_into_$n iptables ci$n $r iptables-nft -t nat -A PREROUTING -p tcp --dport 9090 -j DNAT --to-destination $SRV:8080 ;;
      esac
    done
    ((r == 1)) && log "  round 1: publish timings done"
    APPLY=(netnat nft_f nft_f_map_only iptables_restore map1000)
    ((QUICK)) && APPLY=(netnat nft_f)
    for x in $(order $r "${APPLY[@]}"); do
      case $x in
        netnat)
          cp_time apply10k netnat ca $r "$NETNAT" apply -f "$STATE/10k.toml"
          cp_time ls_json_10k netnat ca $r "$NETNAT" ls --json
          cp_time audit_10k netnat ca $r "$NETNAT" audit --fail-on error
          cp_time remove10k netnat ca $r "$NETNAT" apply -f "$STATE/none.toml"
          cp_perf apply10k netnat ca $r "$NETNAT" apply -f "$STATE/10k.toml"
          nn ca apply -f "$STATE/none.toml" ;;
        nft_f)
          cp_time apply10k nft_f cf $r nft -f "$STATE/10k.nft"
          inside h-cf nft delete table inet hand
          cp_perf apply10k nft_f cf $r nft -f "$STATE/10k.nft"
          inside h-cf nft delete table inet hand ;;
        nft_f_map_only)
          cp_time apply10k nft_f_map_only cf $r nft -f "$STATE/10k-map.nft"
          inside h-cf nft delete table inet hand ;;
        iptables_restore)
          cp_time apply10k iptables_restore cf $r iptables-nft-restore "$STATE/10k.ipt"
          inside h-cf iptables-nft -t nat -F PREROUTING ;;
        map1000)
          cp_time map1000_setup netnat m1k $r "$NETNAT" apply -f "$STATE/map1000.toml"
          cp_time map1000_teardown netnat m1k $r "$NETNAT" reset ;;
      esac
    done
    log "  control plane round $r/$CP_ROUNDS done"
  done

  # 1,000 separate mappings through netavark: about 100 s to set up, so measured once, in the
  # full run only (its teardown, about 170 s more, is not measured: the namespace goes instead).
  if [[ -x $NETAVARK ]] && ((!QUICK)); then
    log "control plane: netavark with 1,000 mappings (about 100 s)"
    host_up nv; ip netns add s-nv
    netavark_json s-nv $(for ((p = 30000; p < 31000; p++)); do printf '%d:%d ' $p $p; done) >"$STATE/nv/netavark.json"
    t0=$(date +%s%N); netavark nv setup; t1=$(date +%s%N)
    record map1000_setup_ms netavark 1 $(((t1 - t0) / 1000000))
  fi

  # A 1,000-port range: what is left running afterwards. Counted in the namespaces of this
  # configuration only (ip netns pids), so that processes of anyone else on the machine are not.
  host_up range; topo_netnat range 0
  nn range publish 30000-30999:$SRV:30000-30999
  record range1000_procs netnat 1 "$(ns_pids /run/netns/h-range "$(srv range)" | wc -l)"
  if [[ -x $TOOLS/docker-proxy ]] && ((!QUICK)); then
    host_up dprange; topo_hand dprange 0
    t0=$(date +%s%N)
    for ((p = 30000; p < 31000; p++)); do
      inside h-dprange "$TOOLS/docker-proxy" -proto tcp -host-ip $HOST -host-port $p -container-ip $SRV -container-port $p 3>/dev/null >/dev/null 2>&1 &
    done
    for _ in $(seq 200); do (($(ns_pids /run/netns/h-dprange | wc -l) >= 1000)) && break; sleep 0.1; done
    t1=$(date +%s%N)
    mapfile -t pids < <(ns_pids /run/netns/h-dprange)
    record range1000_procs dockerproxy 1 ${#pids[@]}
    record range1000_rss_kib dockerproxy 1 "$(ps -o rss= -p "$(IFS=,; echo "${pids[*]}")" | awk '{s+=$1} END {print s+0}')"
    record range1000_start_ms dockerproxy 1 $(((t1 - t0) / 1000000))
  fi
  stop_ns_processes
fi

[[ -z ${BENCH_ONLY:-} || $BENCH_ONLY == cni ]] && source "$ROOT/benches/allow.sh"
[[ -z ${BENCH_ONLY:-} || $BENCH_ONLY == cni ]] && source "$ROOT/benches/cni.sh"

log "suite done: $(($(date +%s) - ${BENCH_START:-$(date +%s)})) s with the tools check and build, $SECONDS s of measurement"
python3 "$REPORT" "$RAW" "$OUT" "$QUICK"
