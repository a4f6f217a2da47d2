#!/usr/bin/env bash
# netnat benchmark suite: netnat against its peers, measured in one run, configurations
# interleaved (A B A B ...), medians and ratios printed as one table, targets as PASS/MISS.
#
#   benches/run.sh            full suite (~14 min on 2 cores)
#   benches/run.sh --quick    one short round of everything (~2-3 min)
#   BENCH_ONLY=control benches/run.sh   re-measure the control plane only, keeping the rest
#
# Everything runs inside a scratch network + mount namespace: the machine's own network is never
# touched, and traffic only goes to addresses in namespaces made here. Results: bench-results/.
set -euo pipefail

QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${BENCH_OUT:-$ROOT/bench-results}
TOOLS=$OUT/tools

if [[ -z "${NETNAT_BENCH_INNER:-}" ]]; then
  [[ $(id -u) == 0 ]] || { echo "benches/run.sh: run as root (it builds namespaces)" >&2; exit 2; }
  need=()
  for p in wrk iperf3 nginx-light gnuplot-nox socat nftables iptables time iproute2 conntrack netavark libnftnl-dev libmnl-dev pkg-config; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  if ((${#need[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  mkdir -p "$TOOLS"
  # docker-proxy comes from Debian's docker.io; only the one binary is extracted (no dockerd is
  # installed or started).
  if [[ ! -x $TOOLS/docker-proxy ]]; then
    (cd "$TOOLS" && apt-get download docker.io >/dev/null 2>&1 && dpkg-deb -x docker.io_*.deb pkg &&
      cp pkg/usr/sbin/docker-proxy . && rm -rf pkg docker.io_*.deb) || echo "note: docker-proxy unavailable; skipped"
  fi
  (cd "$ROOT" && cargo build --release --quiet)
  export NETNAT_BENCH_INNER=1
  exec unshare --net --mount --propagation private bash -c 'mount -t tmpfs tmpfs /run && exec "$0" "$@"' "$0" "$@"
fi

# ---------------- inside the scratch namespace ----------------
# cargo builds where CARGO_TARGET_DIR says, when it is set.
NETNAT=${CARGO_TARGET_DIR:-$ROOT/target}/release/netnat
export NETNAT_STATE_DIR=/run/netnat
if ((QUICK)); then ROUNDS=1; DUR=2; else ROUNDS=5; DUR=3; fi
RAW=$OUT/raw.tsv
if [[ ${BENCH_ONLY:-} == control && -f $RAW ]]; then
  grep -E '^(ka_|nc_|gbps|proxy_rss|scale_)' "$RAW" >"$RAW.keep" || true
  mv "$RAW.keep" "$RAW"
else
  : >"$RAW"
fi
HOST=198.51.100.1
EXT=198.51.100.2
SRV=172.16.1.1
# IPv6: documentation prefix between the external namespace and the host, ULA for the network.
HOST6=2001:db8::1
EXT6=2001:db8::2
SRV6=fd00:16::2
EXTNS=(ip netns exec ext)

ip link set lo up
ip netns add ext
ip link add veth-ext type veth peer name eth0 netns ext
ip addr add $HOST/24 dev veth-ext && ip link set veth-ext up
"${EXTNS[@]}" sh -c "ip addr add $EXT/24 dev eth0 && ip link set eth0 up && ip link set lo up"
# nodad: an address is usable at once instead of tentative for about a second.
ip -6 addr add $HOST6/64 dev veth-ext nodad
"${EXTNS[@]}" ip -6 addr add $EXT6/64 dev eth0 nodad
# The client may open many short connections: give it room.
"${EXTNS[@]}" sh -c 'echo "1024 65000" > /proc/sys/net/ipv4/ip_local_port_range; echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse'
echo 1 >/proc/sys/net/ipv4/tcp_tw_reuse

log() { printf '%s\n' "$*" >&2; }
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RAW"; } # metric config value

# --- topologies: the seed's (bridge MyDocker0 172.16.0.0/16, server sandbox srv 172.16.1.1) ---
# With V6=1 (set by the IPv6 configurations) both topologies are dual stack: the network also has
# fd00:16::/64 (gateway fd00:16::1) and srv also has $SRV6. The IPv4 configurations stay IPv4-only.
topo_netnat() {
  if ((${V6:-0})); then
    $NETNAT network create MyDocker0 --subnet 172.16.0.0/16 --gateway 172.16.1.254 --subnet fd00:16::/64 >/dev/null
    $NETNAT sandbox create srv --network MyDocker0 --ip $SRV --ip $SRV6 >/dev/null
  else
    $NETNAT network create MyDocker0 --subnet 172.16.0.0/16 --gateway 172.16.1.254 >/dev/null
    $NETNAT sandbox create srv --network MyDocker0 --ip $SRV >/dev/null
  fi
}
topo_hand() { # the same topology built by hand, for the peers
  ip link add MyDocker0 type bridge && ip addr add 172.16.1.254/16 dev MyDocker0 && ip link set MyDocker0 up
  ip netns add srv
  ip link add vsrv type veth peer name eth0 netns srv
  ip link set vsrv master MyDocker0 up
  ip netns exec srv sh -c "ip link set lo up; ip addr add $SRV/16 dev eth0; ip link set eth0 up; ip route add default via 172.16.1.254"
  echo 1 >/proc/sys/net/ipv4/ip_forward
  if ((${V6:-0})); then
    ip -6 addr add fd00:16::1/64 dev MyDocker0 nodad
    ip netns exec srv sh -c "echo 0 >/proc/sys/net/ipv6/conf/eth0/accept_ra; ip -6 addr add $SRV6/64 dev eth0 nodad; ip -6 route add default via fd00:16::1"
    echo 1 >/proc/sys/net/ipv6/conf/all/forwarding
  fi
}
teardown() {
  stop_servers
  if [[ -x $NETAVARK ]]; then teardown_netavark; fi
  $NETNAT reset >/dev/null 2>&1 || true
  nft list tables 2>/dev/null | grep -q . && nft flush ruleset
  iptables-nft -t nat -F 2>/dev/null || true
  ip link del MyDocker0 2>/dev/null || true
  ip link del vsrv 2>/dev/null || true
  ip netns del srv 2>/dev/null || true
  ip -n ext route del 172.16.0.0/16 2>/dev/null || true
  ip -n ext -6 route del fd00:16::/64 2>/dev/null || true
  pkill -x socat 2>/dev/null || true
  pkill -x docker-proxy 2>/dev/null || true
  # Every configuration starts with an empty conntrack table in this scratch namespace: the
  # TIME_WAIT entries of earlier runs would otherwise slow later configurations down.
  conntrack -F >/dev/null 2>&1 || true
  sleep 0.5
}

mkdir -p /run/bench
start_servers() {
  mkdir -p /run/bench
  cat >/run/bench/nginx.conf <<EOF
worker_processes 1;
pid /run/bench/nginx.pid;
error_log /run/bench/nginx.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000;
  server { listen $SRV:8080 reuseport backlog=4096;${V6:+ listen [$SRV6]:8080 reuseport backlog=4096;} location / { return 200 "ok\n"; } } }
EOF
  ip netns exec srv nginx -c /run/bench/nginx.conf
  # One iperf3 server per family: it binds one address.
  ip netns exec srv iperf3 -s -B $SRV -p 5201 -D --pidfile /run/bench/iperf.pid
  if ((${V6:-0})); then ip netns exec srv iperf3 -s -B $SRV6 -p 5201 -D --pidfile /run/bench/iperf6.pid; fi
  for _ in $(seq 50); do ip netns exec srv ss -Hltn | grep -q ":8080" && return 0; sleep 0.1; done
  log "server did not start"; return 1
}
stop_servers() {
  [[ -f /run/bench/nginx.pid ]] && kill "$(cat /run/bench/nginx.pid)" 2>/dev/null || true
  [[ -f /run/bench/iperf.pid ]] && kill "$(cat /run/bench/iperf.pid)" 2>/dev/null || true
  [[ -f /run/bench/iperf6.pid ]] && kill "$(cat /run/bench/iperf6.pid)" 2>/dev/null || true
  rm -f /run/bench/*.pid
  sleep 0.2
}

# --- the configurations: set up, then print "HOST:PORT" for HTTP and "HOST:PORT" for iperf ---
cfg_direct() { topo_hand; ip -n ext route add 172.16.0.0/16 via $HOST; start_servers; echo "$SRV:8080 $SRV:5201"; }
cfg_netnat() {
  topo_netnat; start_servers
  $NETNAT publish 9090:$SRV:8080 9201:$SRV:5201 >/dev/null
  echo "$HOST:9090 $HOST:9201"
}
cfg_nft1() { # the minimal hand-written DNAT: one rule per port, nothing else
  topo_hand; start_servers
  nft -f - <<EOF
table ip hand {
  chain pre {
    type nat hook prerouting priority dstnat;
    tcp dport 9090 dnat to $SRV:8080
    tcp dport 9201 dnat to $SRV:5201
  }
}
EOF
  echo "$HOST:9090 $HOST:9201"
}
cfg_iptables() { # Docker's layout, through iptables-nft
  topo_hand; start_servers
  local ipt=iptables-nft
  $ipt -t nat -N DOCKER
  $ipt -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
  $ipt -t nat -A POSTROUTING -s 172.16.0.0/16 ! -o MyDocker0 -j MASQUERADE
  for p in 8080:9090 5201:9201; do
    $ipt -t nat -A DOCKER ! -i MyDocker0 -p tcp --dport ${p#*:} -j DNAT --to-destination $SRV:${p%:*}
  done
  $ipt -N DOCKER; $ipt -N DOCKER-USER; $ipt -A DOCKER-USER -j RETURN
  $ipt -A FORWARD -j DOCKER-USER
  $ipt -A FORWARD -o MyDocker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
  $ipt -A FORWARD -o MyDocker0 -j DOCKER
  $ipt -A FORWARD -i MyDocker0 -j ACCEPT
  for p in 8080 5201; do $ipt -A DOCKER -d $SRV/32 ! -i MyDocker0 -o MyDocker0 -p tcp --dport $p -j ACCEPT; done
  echo "$HOST:9090 $HOST:9201"
}
cfg_socat() {
  topo_hand; start_servers
  socat TCP-LISTEN:9090,bind=$HOST,fork,reuseaddr,backlog=4096 TCP:$SRV:8080 >/dev/null 2>&1 &
  socat TCP-LISTEN:9201,bind=$HOST,fork,reuseaddr TCP:$SRV:5201 >/dev/null 2>&1 &
  sleep 0.3
  echo "$HOST:9090 $HOST:9201"
}
cfg_dockerproxy() {
  topo_hand; start_servers
  $TOOLS/docker-proxy -proto tcp -host-ip $HOST -host-port 9090 -container-ip $SRV -container-port 8080 3>/dev/null >/dev/null 2>&1 &
  $TOOLS/docker-proxy -proto tcp -host-ip $HOST -host-port 9201 -container-ip $SRV -container-port 5201 3>/dev/null >/dev/null 2>&1 &
  sleep 0.3
  echo "$HOST:9090 $HOST:9201"
}

# IPv6: the same three in-kernel paths, over IPv6 between the external namespace and the host.
# The first packets through a link that has just come up can be refused, so each waits until the
# client can open a connection (bounded) before it is measured.
ready6() { # [addr]:port -> until a TCP connection from ext succeeds, at most 5 s
  local h=${1%:*} p=${1##*:}
  h=${h#[}; h=${h%]}
  for _ in $(seq 50); do
    "${EXTNS[@]}" timeout 1 bash -c "exec 3<>/dev/tcp/$h/$p" 2>/dev/null && return 0
    sleep 0.1
  done
  log "[$h]:$p not reachable over IPv6"; return 1
}
cfg_direct6() { # the client routes the ULA subnet via the host's IPv6 address, no NAT
  local V6=1
  topo_hand; ip -n ext -6 route add fd00:16::/64 via $HOST6; start_servers
  ready6 "[$SRV6]:8080" && echo "[$SRV6]:8080 [$SRV6]:5201"
}
cfg_netnat6() {
  local V6=1
  topo_netnat; start_servers
  $NETNAT publish "9090:[$SRV6]:8080" "9201:[$SRV6]:5201" >/dev/null
  ready6 "[$HOST6]:9090" && echo "[$HOST6]:9090 [$HOST6]:9201"
}
cfg_nft6() { # the minimal hand-written ip6 DNAT: one rule per port, nothing else
  local V6=1
  topo_hand; start_servers
  nft -f - <<EOF
table ip6 handnat {
  chain pre {
    type nat hook prerouting priority dstnat;
    tcp dport 9090 dnat ip6 to [$SRV6]:8080
    tcp dport 9201 dnat ip6 to [$SRV6]:5201
  }
}
EOF
  ready6 "[$HOST6]:9090" && echo "[$HOST6]:9090 [$HOST6]:9201"
}

# Podman's netavark (Debian's package), driven directly with its JSON on stdin: same bridge name,
# subnet, gateway and container address as the others; its firewall driver is iptables.
NETAVARK=/usr/lib/podman/netavark
netavark_json() { # port mappings as "host:container ..." -> the setup/teardown input
  local maps=() m
  for m in "$@"; do
    maps+=("{\"host_ip\":\"\",\"container_port\":${m#*:},\"host_port\":${m%:*},\"range\":1,\"protocol\":\"tcp\"}")
  done
  local joined
  joined=$(IFS=,; echo "${maps[*]}")
  cat <<EOF
{"container_id":"$(printf 'b%.0s' {1..64})","container_name":"srv","port_mappings":[$joined],
 "networks":{"bench":{"static_ips":["$SRV"],"interface_name":"eth0"}},
 "network_info":{"bench":{"name":"bench","id":"$(printf 'a%.0s' {1..64})","driver":"bridge",
  "network_interface":"MyDocker0","subnets":[{"subnet":"172.16.0.0/16","gateway":"172.16.1.254"}],
  "ipv6_enabled":false,"internal":false,"dns_enabled":false,"ipam_options":{"driver":"host-local"}}}}
EOF
}
cfg_netavark() {
  ip netns add srv
  netavark_json 9090:8080 9201:5201 >/run/bench/netavark.json
  NETAVARK_FW=iptables $NETAVARK --config /run/bench/netavark setup /run/netns/srv </run/bench/netavark.json >/dev/null
  start_servers
  echo "$HOST:9090 $HOST:9201"
}
teardown_netavark() {
  [[ -f /run/bench/netavark.json ]] || return 0
  NETAVARK_FW=iptables $NETAVARK --config /run/bench/netavark teardown /run/netns/srv </run/bench/netavark.json >/dev/null 2>&1 || true
  rm -f /run/bench/netavark.json
}

# --- measurements (client in ext) ---
wrk_run() { # url extra-args... -> "req/s p99_ms"
  local url=$1; shift
  "${EXTNS[@]}" wrk -t1 -c32 -d${DUR}s --latency "$@" "http://$url/" 2>/dev/null | awk '
    /Requests\/sec/ {rps=$2}
    /^ +99%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; p99=v}
    END {printf "%s %s\n", rps+0, p99+0}'
}
iperf_run() { # host:port or [host6]:port -> Gbit/s
  local h=${1%:*}
  h=${h#[}; h=${h%]}
  "${EXTNS[@]}" iperf3 -c "$h" -p "${1##*:}" -t $DUR -J 2>/dev/null |
    python3 -c 'import json,sys; e=json.load(sys.stdin).get("end",{}); print(round(e.get("sum_received",{}).get("bits_per_second",0)/1e9,3))' || echo 0
}
rss_of() { # total RSS (KiB) of processes with this name
  ps -C "$1" -o rss= 2>/dev/null | awk '{s+=$1} END {print s+0}'
}

measure_datapath() {
  local cfg=$1 urls http ipf
  urls=$(cfg_$cfg) || { log "config $cfg failed"; teardown; return; }
  http=${urls% *}; ipf=${urls#* }
  read -r rps p99 < <(wrk_run "$http")
  record ka_rps "$cfg" "$rps"; record ka_p99 "$cfg" "$p99"
  read -r rps p99 < <(wrk_run "$http" -H "Connection: close")
  record nc_rps "$cfg" "$rps"; record nc_p99 "$cfg" "$p99"
  record gbps "$cfg" "$(iperf_run "$ipf")"
  case $cfg in
    socat) record proxy_rss_kib "$cfg" "$(rss_of socat)" ;;
    dockerproxy) record proxy_rss_kib "$cfg" "$(rss_of docker-proxy)" ;;
    *) record proxy_rss_kib "$cfg" 0 ;;
  esac
  log "  $cfg: $(grep -P "\t$cfg\t" "$RAW" | tail -6 | awk '{printf "%s=%s ", $1, $3}')"
  teardown
}

# Per-packet scaling: new-connection rate to the LAST published port with N mappings.
measure_scaling() {
  local layout=$1 n=$2 last=$((20000 + $2 - 1)) target=$HOST
  if [[ $layout == netnat ]]; then
    topo_netnat; start_servers
    if ((n > 1)); then $NETNAT publish "20000-$((last - 1)):$SRV:20000-$((last - 1))" >/dev/null; fi
    $NETNAT publish "$last:$SRV:8080" >/dev/null
  elif [[ $layout == netnat6 ]]; then # the same over IPv6: N IPv6 mappings, the target last
    local V6=1
    topo_netnat; start_servers
    if ((n > 1)); then $NETNAT publish "20000-$((last - 1)):[$SRV6]:20000-$((last - 1))" >/dev/null; fi
    $NETNAT publish "$last:[$SRV6]:8080" >/dev/null
    target=[$HOST6]
    ready6 "$target:$last" || true
  else # one rule per port, target last (the peers' layout)
    topo_hand; start_servers
    {
      echo "table ip hand {"
      echo "chain pre {"
      echo "type nat hook prerouting priority dstnat;"
      for ((p = 20000; p < last; p++)); do echo "tcp dport $p dnat to $SRV:$p"; done
      echo "tcp dport $last dnat to $SRV:8080"
      echo "}"
      echo "}"
    } | nft -f -
  fi
  read -r rps _ < <(wrk_run "$target:$last" -H "Connection: close")
  record "scale_nc_rps_$n" "$layout" "$rps"
  log "  $layout N=$n: $rps new connections/s"
  teardown
}

# Control plane: wall time (ms) and peak RSS (KiB) of one command, median of 5.
time_cmd() { # label config cmd...
  local label=$1 cfg=$2; shift 2
  local ts=() rss=0
  for _ in 1 2 3 4 5; do
    local t0 t1 m
    t0=$(date +%s%N)
    m=$(/usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1)
    t1=$(date +%s%N)
    ts+=($(((t1 - t0) / 1000)))
    ((m > rss)) && rss=$m
    "${UNDO[@]}" >/dev/null 2>&1 || true
  done
  local med
  med=$(printf '%s\n' "${ts[@]}" | sort -n | sed -n 3p)
  record "${label}_ms" "$cfg" "$(awk -v u="$med" 'BEGIN{printf "%.2f", u/1000}')"
  record "${label}_rss_kib" "$cfg" "$rss"
}

measure_control_plane() {
  local n
  for n in 0 1000 10000; do
    # netnat publish into a host with n mappings
    topo_netnat
    ((n > 0)) && $NETNAT publish "20000-$((20000 + n - 1)):$SRV:20000-$((20000 + n - 1))" >/dev/null
    UNDO=($NETNAT unpublish 9090)
    time_cmd "publish1_into_$n" netnat $NETNAT publish 9090:$SRV:8080
    teardown
    # nft add element into a map with n elements
    nft add table ip hand
    nft add map ip hand m '{ type inet_service : ipv4_addr . inet_service; }'
    if ((n > 0)); then
      { printf 'add element ip hand m { '; for ((p = 20000; p < 20000 + n; p++)); do printf '%d : %s . %d, ' $p $SRV $p; done; echo '}'; } | nft -f -
    fi
    UNDO=(nft delete element ip hand m '{ 9090 }')
    time_cmd "publish1_into_$n" nft_element nft add element ip hand m "{ 9090 : $SRV . 8080 }"
    # nft add rule into a chain with n rules
    nft add chain ip hand pre '{ type nat hook prerouting priority dstnat; }'
    if ((n > 0)); then
      { for ((p = 20000; p < 20000 + n; p++)); do echo "add rule ip hand pre tcp dport $p dnat to $SRV:$p"; done; } | nft -f -
    fi
    UNDO=(true)
    time_cmd "publish1_into_$n" nft_rule nft add rule ip hand pre tcp dport 9090 dnat to $SRV:8080
    nft flush ruleset
    # iptables -A into a chain with n rules
    if ((n > 0)); then
      { echo '*nat'; for ((p = 20000; p < 20000 + n; p++)); do echo "-A PREROUTING -p tcp --dport $p -j DNAT --to-destination $SRV:$p"; done; echo COMMIT; } | iptables-nft-restore
    fi
    UNDO=(iptables-nft -t nat -D PREROUTING -p tcp --dport 9090 -j DNAT --to-destination $SRV:8080)
    time_cmd "publish1_into_$n" iptables iptables-nft -t nat -A PREROUTING -p tcp --dport 9090 -j DNAT --to-destination $SRV:8080
    teardown
  done

  # 10,000 mappings at once through `netnat apply` (the network and sandbox already exist, so
  # only the mappings change), and their removal by applying the file without them.
  topo_netnat
  local base='[[network]]\nname = "MyDocker0"\nsubnet = "172.16.0.0/16"\ngateway = "172.16.1.254"\n[[sandbox]]\nname = "srv"\n[[sandbox.endpoint]]\nnetwork = "MyDocker0"\nip = "%s"\n'
  printf "$base" $SRV >/run/bench/none.toml
  { printf "$base" $SRV; printf 'publish = ["20000-29999:%s:20000-29999"]\n' $SRV; } >/run/bench/10k.toml
  $NETNAT apply -f /run/bench/none.toml >/dev/null
  UNDO=($NETNAT apply -f /run/bench/none.toml)
  time_cmd apply10k netnat $NETNAT apply -f /run/bench/10k.toml
  $NETNAT apply -f /run/bench/10k.toml >/dev/null
  UNDO=($NETNAT apply -f /run/bench/10k.toml)
  time_cmd remove10k netnat $NETNAT apply -f /run/bench/none.toml
  UNDO=(true)
  time_cmd ls_json_10k netnat $NETNAT ls --json
  # process time (user+sys) of ls --json on 10,000 mappings
  record ls_json_10k_cpu_s netnat "$(/usr/bin/time -f '%U %S' $NETNAT ls --json 2>&1 >/dev/null | tail -1 | awk '{print $1+$2}')"
  record audit_10k_cpu_s netnat "$( (/usr/bin/time -f '%U %S' $NETNAT audit --fail-on error >/dev/null) 2>&1 | tail -1 | awk '{print $1+$2}')"
  UNDO=(true)
  time_cmd audit_10k netnat $NETNAT audit --fail-on error
  teardown
  # nft -f loading the same kernel objects netnat loads: the NAT map and the counted traffic set.
  {
    printf 'table inet hand {\n map m {\n type inet_proto . inet_service : ipv4_addr . inet_service\n }\n'
    printf ' set c {\n type inet_proto . inet_service\n counter\n }\n}\n'
    printf 'add element inet hand m { '; for ((p = 20000; p < 30000; p++)); do printf 'tcp . %d : %s . %d, ' $p $SRV $p; done; echo '}'
    printf 'add element inet hand c { '; for ((p = 20000; p < 30000; p++)); do printf 'tcp . %d, ' $p; done; echo '}'
  } >/run/bench-10k.nft
  UNDO=(nft delete table inet hand)
  time_cmd apply10k nft_f nft -f /run/bench-10k.nft
  # For reference: the NAT map alone.
  {
    printf 'table inet hand {\n map m {\n type inet_proto . inet_service : ipv4_addr . inet_service\n }\n}\n'
    printf 'add element inet hand m { '; for ((p = 20000; p < 30000; p++)); do printf 'tcp . %d : %s . %d, ' $p $SRV $p; done; echo '}'
  } >/run/bench-10k-map.nft
  time_cmd apply10k nft_f_map_only nft -f /run/bench-10k-map.nft
  { echo '*nat'; for ((p = 20000; p < 30000; p++)); do echo "-A PREROUTING -p tcp --dport $p -j DNAT --to-destination $SRV:$p"; done; echo COMMIT; } >/run/bench-10k.ipt
  UNDO=(iptables-nft -t nat -F PREROUTING)
  time_cmd apply10k iptables_restore iptables-nft-restore /run/bench-10k.ipt
  teardown

  # 1,000 separate mappings: netavark's layout (rules per port) against one netnat apply.
  if [[ -x $NETAVARK ]] && ((!QUICK)); then
    ip netns add srv
    netavark_json $(for ((p = 30000; p < 31000; p++)); do printf '%d:%d ' $p $p; done) >/run/bench/netavark.json
    local t0 t1
    t0=$(date +%s%N)
    NETAVARK_FW=iptables $NETAVARK --config /run/bench/netavark setup /run/netns/srv </run/bench/netavark.json >/dev/null
    t1=$(date +%s%N)
    record map1000_setup_ms netavark $(((t1 - t0) / 1000000))
    t0=$(date +%s%N)
    teardown_netavark
    t1=$(date +%s%N)
    record map1000_teardown_ms netavark $(((t1 - t0) / 1000000))
    teardown
    {
      printf '[[network]]\nname = "MyDocker0"\nsubnet = "172.16.0.0/16"\ngateway = "172.16.1.254"\n'
      printf '[[sandbox]]\nname = "srv"\n[[sandbox.endpoint]]\nnetwork = "MyDocker0"\nip = "%s"\npublish = [' $SRV
      for ((p = 30000; p < 31000; p++)); do printf '"%d:%s:%d", ' $p $SRV $p; done
      printf ']\n'
    } >/run/bench/map1000.toml
    t0=$(date +%s%N)
    $NETNAT apply -f /run/bench/map1000.toml >/dev/null
    t1=$(date +%s%N)
    record map1000_setup_ms netnat $(((t1 - t0) / 1000000))
    t0=$(date +%s%N)
    $NETNAT reset >/dev/null
    t1=$(date +%s%N)
    record map1000_teardown_ms netnat $(((t1 - t0) / 1000000))
    teardown
  fi

  # A 1,000-port range: what is left running afterwards.
  topo_netnat; start_servers
  $NETNAT publish 30000-30999:$SRV:30000-30999 >/dev/null
  record range1000_procs netnat "$(pgrep -c -x netnat || true)"
  record range1000_rss_kib netnat 0
  teardown
  if [[ -x $TOOLS/docker-proxy ]]; then
    topo_hand; start_servers
    local t0 t1
    t0=$(date +%s%N)
    for ((p = 30000; p < 31000; p++)); do
      $TOOLS/docker-proxy -proto tcp -host-ip $HOST -host-port $p -container-ip $SRV -container-port $p 3>/dev/null &
    done
    for _ in $(seq 100); do (($(pgrep -c -x docker-proxy) >= 1000)) && break; sleep 0.1; done
    t1=$(date +%s%N)
    record range1000_procs dockerproxy "$(pgrep -c -x docker-proxy || true)"
    record range1000_rss_kib dockerproxy "$(rss_of docker-proxy)"
    record range1000_start_ms dockerproxy $(((t1 - t0) / 1000000))
    teardown
  fi
}

DATAPATH=(direct netnat nft1 iptables socat direct6 netnat6 nft6)
[[ -x $NETAVARK ]] && DATAPATH+=(netavark)
[[ -x $TOOLS/docker-proxy ]] && DATAPATH+=(dockerproxy)
[[ ${BENCH_ONLY:-} == control ]] && ROUNDS=0
for ((r = 1; r <= ROUNDS; r++)); do
  log "round $r/$ROUNDS: data path (interleaved)"
  for c in "${DATAPATH[@]}"; do measure_datapath "$c"; done
  log "round $r/$ROUNDS: per-packet scaling"
  for n in 1 100 1000 10000; do
    for layout in netnat rules netnat6; do measure_scaling $layout $n; done
  done
done
log "control plane"
measure_control_plane

python3 "$ROOT/benches/report.py" "$RAW" "$OUT" "$QUICK"
