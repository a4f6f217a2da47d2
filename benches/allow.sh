# benches/allow.sh: the cost of allow lists (issue 14), sourced by benches/run.sh (it uses its
# namespaces, servers, wrk runs and records). New-connection rate to one mapping, paired rounds:
#   allow_open  9090 -> 172.16.1.1:8080 open to all, no allow list in the host at all (netnat's
#               allow rules are only loaded with the first list)
#   allow_100   the same mapping published with a 100-CIDR allow list (`publish --allow` x 100),
#               the client's address (198.51.100.2/32) the last of them
#   allow_many  ALLOW_N - 1 other mappings each with its own list of ALLOW_EACH CIDRs (one
#               `netnat apply -f` of TOML publish tables), then the measured mapping with the
#               same 100-CIDR list, published last
#   allow_unlisted  the same ALLOW_N - 1 listed mappings, then the measured mapping without a
#               list: what a port without a list pays for the other ports' lists
# Allow lists are checked in the NAT chains, which see the first packet of a connection only:
# the new-connection rate is where they can cost anything. Rows: allow_*.

if ((QUICK)); then ALLOW_N=500; ALLOW_ROUNDS=2; else ALLOW_N=10000; ALLOW_ROUNDS=6; fi
ALLOW_N=${BENCH_ALLOW_N:-$ALLOW_N}
ALLOW_EACH=${BENCH_ALLOW_EACH:-2}
ALLOW_ROUNDS=${BENCH_ALLOW_ROUNDS:-$ALLOW_ROUNDS}

allow_args() { # 99 networks without the client, then the client's own address
  local i
  for ((i = 0; i < 99; i++)); do printf -- '--allow 10.%d.%d.0/24 ' $((200 + i / 256)) $((i % 256)); done
  printf -- '--allow %s/32\n' $EXT
}
setup_allow() { # C: the seed's topology and nginx in s-C, then what configuration C publishes
  local c=$1 t0 t1
  host_up "$c"; topo_netnat "$c" 0; servers "$c" 0 0
  case $c in
    allow_open) nn "$c" publish 9090:$SRV:8080 ;;
    allow_100) nn "$c" publish 9090:$SRV:8080 $(allow_args) ;;
    allow_many | allow_unlisted)
      # Mapping m's list: ALLOW_EACH /32s of 10.0.0.0/8, none of them the client.
      python3 - "$ALLOW_N" "$ALLOW_EACH" $SRV >"$STATE/allow_many.toml" <<'EOF'
import sys
n, each, srv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
print("publish = [")
for m in range(n - 1):
    ips = [m * each + k for k in range(each)]
    cidrs = ", ".join(f'"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32"' for i in ips)
    print(f'  {{ spec = "{20000 + m}:{srv}:{20000 + m}", allow = [{cidrs}] }},')
print("]")
EOF
      t0=$(date +%s%N)
      nn "$c" apply -f "$STATE/allow_many.toml"
      t1=$(date +%s%N)
      [[ $c == allow_many ]] && record allow_apply_many_ms netnat 1 $(((t1 - t0) / 1000000))
      if [[ $c == allow_many ]]; then nn "$c" publish 9090:$SRV:8080 $(allow_args); else nn "$c" publish 9090:$SRV:8080; fi ;;
  esac
  endpoints "$c" $HOST:9090
}

log "allow lists: setting up (${ALLOW_N} mappings with a list of ${ALLOW_EACH} each)"
record allow_param_n all 1 "$ALLOW_N"
record allow_param_each all 1 "$ALLOW_EACH"
ok=()
for c in allow_open allow_100 allow_many allow_unlisted; do
  if setup_allow "$c" && ready "$c"; then ok+=("$c"); else log "configuration $c failed; left out"; fi
done
log "allow lists: $ALLOW_ROUNDS rounds"
# perf samples all CPUs during the runs (all rounds):
# the benchmark's CPU and netfilter's time per connection, and in which functions.
: >"$PERFDIR/list"
for ((r = 1; r <= ALLOW_ROUNDS; r++)); do
  for c in $(order $r "${ok[@]}"); do measure_wrk "$c" nc $r 1 allow_nc "$c"; done
done
attribute_perf
# The lists are enforced: a second address of the external host (198.51.100.3, in no list)
# connects to the open mapping but not to a listed one, whose denied-packet count grows.
for c in allow_open allow_100 allow_many allow_unlisted; do
  [[ " ${ok[*]} " == *" $c "* ]] || continue
  ip -n e-"$c" addr add 198.51.100.3/24 dev eth0
  refused=0
  inside e-"$c" timeout 3 socat -T1 - TCP:$HOST:9090,bind=198.51.100.3,connect-timeout=1 </dev/null >/dev/null 2>&1 || refused=1
  ip -n e-"$c" addr del 198.51.100.3/24 dev eth0
  d=$(NETNAT_STATE_DIR=$STATE/$c/netnat nsenter --mount="$STATE/$c/mnt" --net=/run/netns/h-"$c" "$NETNAT" ls --json |
    python3 -c 'import json,sys; print(next(m["denied_packets"] for m in json.load(sys.stdin) if m["host_port"] == 9090))')
  record allow_refused "$c" 1 "$refused"
  record allow_denied_packets "$c" 1 "$d"
done
stop_ns_processes
