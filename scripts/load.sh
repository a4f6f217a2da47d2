#!/usr/bin/env bash
# Bounded load test through a published port (reliability, issue 7 point 8):
#   - 1,000 concurrent keep-alive connections for 30 s (wrk), zero socket errors allowed;
#   - 100,000 short connections, one request each (ab), zero failures allowed;
#   - while the load runs, another port is unpublished: the load must not notice.
# Runs in a scratch network + mount namespace; traffic stays inside namespaces made here.
#   scripts/load.sh [--quick]     (--quick: 5 s and 10,000 connections)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1

if [[ -z "${NETNAT_LOAD_INNER:-}" ]]; then
  [[ $(id -u) == 0 ]] || { echo "scripts/load.sh: run as root" >&2; exit 2; }
  need=()
  for p in wrk apache2-utils nginx-light libnftnl-dev libmnl-dev pkg-config iproute2 nftables; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  if ((${#need[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  (cd "$ROOT" && cargo build --release --quiet)
  export NETNAT_LOAD_INNER=1
  exec unshare --net --mount --propagation private bash -c 'mount -t tmpfs tmpfs /run && exec "$0" "$@"' "$0" "$@"
fi

N=$ROOT/target/release/netnat
if ((QUICK)); then DUR=5; SHORT=10000; else DUR=30; SHORT=100000; fi
ulimit -n "$(ulimit -Hn)"  # wrk holds 1,000 sockets, nginx as many
ip link set lo up
ip netns add ext
ip link add veth-ext type veth peer name eth0 netns ext
ip addr add 198.51.100.1/24 dev veth-ext && ip link set veth-ext up
ip netns exec ext sh -c 'ip addr add 198.51.100.2/24 dev eth0; ip link set eth0 up; ip link set lo up;
  echo "1024 65000" > /proc/sys/net/ipv4/ip_local_port_range; echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse'

$N network create MyDocker0 --subnet 172.16.0.0/16 --gateway 172.16.1.254 >/dev/null
$N sandbox create Container_ns1 --network MyDocker0 --ip 172.16.1.1 >/dev/null
mkdir -p /run/load
cat >/run/load/nginx.conf <<'EOF'
worker_processes 1;
worker_rlimit_nofile 16384;
pid /run/load/nginx.pid;
error_log /run/load/nginx.err;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 100000000; keepalive_timeout 120s;
  server { listen 172.16.1.1:8080 backlog=8192; location / { return 200 "ok\n"; } } }
EOF
ip netns exec Container_ns1 sh -c 'echo 8192 > /proc/sys/net/core/somaxconn'
ip netns exec Container_ns1 nginx -c /run/load/nginx.conf
trap 'kill $(cat /run/load/nginx.pid) 2>/dev/null || true' EXIT
for _ in $(seq 50); do ip netns exec Container_ns1 ss -Hltn | grep -q :8080 && break; sleep 0.1; done
$N publish 9090:172.16.1.1:8080 9091:172.16.1.1:8080 >/dev/null

echo "== 1,000 concurrent keep-alive connections for ${DUR}s through 198.51.100.1:9090"
(sleep $((DUR / 2)) && $N unpublish 9091 >/dev/null && echo "   (unpublished 9091 during the load)") &
ip netns exec ext wrk -t2 -c1000 -d${DUR}s --timeout 10s http://198.51.100.1:9090/ | tee /run/load/wrk.txt
wait
if grep -q "Socket errors\|Non-2xx" /run/load/wrk.txt; then echo "FAIL: errors under load"; exit 1; fi

echo "== $SHORT short connections (one request each, 50 at a time)"
ip netns exec ext ab -q -n $SHORT -c 50 http://198.51.100.1:9090/ | tee /run/load/ab.txt | grep -E "Complete requests|Failed requests|Requests per second|Non-2xx"
failed=$(awk '/Failed requests/ {print $3}' /run/load/ab.txt)
complete=$(awk '/Complete requests/ {print $3}' /run/load/ab.txt)
if [[ "$failed" != 0 || "$complete" != "$SHORT" ]] || grep -q Non-2xx /run/load/ab.txt; then
  echo "FAIL: $failed failed, $complete of $SHORT completed"; exit 1
fi
echo "PASS: no failed connection; netnat ran no process during the load ($(pgrep -c -x netnat || true) running)"
