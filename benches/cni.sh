# benches/cni.sh: netnat as a CNI plugin against Debian's portmap (containernetworking-plugins
# 1.1.1), both chained behind the same reference bridge plugin (issue 13). Sourced by
# benches/run.sh: it uses its namespaces, servers, wrk runs, round order and records.
#
# Every host C gets the bridge plugin's own cni0 (10.88.0.0/16, host-local IPAM, ipMasq,
# hairpin) and one real container s-C from a bridge ADD, running nginx. The plugins are run the
# way a runtime runs them (benches/cnidrive.py: CNI_* environment, config on stdin, one process
# per request, inside h-C) with the same config but for "type", snat left at its default (on).
# The many containers of the control-plane measurements are synthetic: their prevResult names
# eth0 in a sandbox and an address of cni0's subnet, as the bridge plugin's would, but no
# namespace or veth is made for them. A bridge ADD costs the same whichever plugin follows it,
# and neither plugin enters the container's namespace on ADD or DEL, so what is timed is each
# plugin's own work.
#
# Measured:
# - one ADD (and its DEL) carrying CNI_MAP mappings: netnat every round, portmap once (tens of
#   seconds), bounded by a timeout;
# - CNI_MANY containers with one mapping each, ADD then DEL, sequential and by 8 workers, in
#   blocks of CNI_BLOCK containers; netnat and portmap alternate block by block (order reversed
#   every other block), so a block's ratio is a paired measurement. portmap gets a time budget
#   per phase (CNI_PM_BUDGET s): blocks it did not reach are not measured, and the report says
#   how many containers it did (netnat always does all CNI_MANY);
# - one single-mapping ADD + DEL into a host with no mappings and into one with 10,000;
#   netnat's 10,000 come from one ADD of 9,999 mappings plus the real container's;
#   portmap's from 9,998 containers of one mapping each, loaded with iptables-restore in exactly
#   the layout portmap writes (checked line by line against portmap's own rules for two
#   containers first), plus the real container's: adding them one by one through portmap would
#   take hours (one ADD into 10,000 takes it seconds);
# - the new-connection rate to the real container's port, the last of 10,000 CNI-published ports
#   and the only one, with both plugins, in paired rounds.

CNI_DIR=/usr/lib/cni
PORTMAP=$CNI_DIR/portmap
if ((QUICK)); then
  CNI_MAP=50; CNI_MANY=20; CNI_BLOCK=10; CNI_PM_BUDGET=3; CNI_ROUNDS=2; CNI_CP_ROUNDS=2; CNI_PM10K=0
else
  CNI_MAP=1000; CNI_MANY=1000; CNI_BLOCK=25; CNI_PM_BUDGET=15; CNI_ROUNDS=6; CNI_CP_ROUNDS=8; CNI_PM10K=1
fi
CNI_MAP=${BENCH_CNI_MAP:-$CNI_MAP}
CNI_MANY=${BENCH_CNI_MANY:-$CNI_MANY}
CNI_PM_BUDGET=${BENCH_CNI_PM_BUDGET:-$CNI_PM_BUDGET}
CNI_ROUNDS=${BENCH_CNI_ROUNDS:-$CNI_ROUNDS}
CNI_PM10K=${BENCH_CNI_PM10K:-$CNI_PM10K}

# cnidrive C PLUGIN ARGS...: benches/cnidrive.py inside h-C (netnat keeps its record per host).
cnidrive() { local c=$1; shift; NETNAT_STATE_DIR=$STATE/$c/netnat python3 "$ROOT/benches/cnidrive.py" /run/netns/h-"$c" "$@"; }
plugin_of() { if [[ $1 == netnat ]]; then echo "$NETNAT"; else echo "$PORTMAP"; fi; } # netnat | portmap

cni_host() { # C SERVE: host h-C, the bridge plugin's cni0 with container s-C; SERVE: nginx in it
  local c=$1 ip
  host_up "$c"
  ip netns add s-"$c"
  mkdir -p "$STATE/$c/ipam"
  inside h-"$c" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin CNI_PATH=$CNI_DIR CNI_COMMAND=ADD CNI_CONTAINERID=s-"$c" \
    CNI_NETNS=/run/netns/s-"$c" CNI_IFNAME=eth0 $CNI_DIR/bridge >"$STATE/$c/prev.json" <<EOF || { log "$c: bridge ADD failed: $(cat "$STATE/$c/prev.json")"; return 1; }
{"cniVersion": "1.0.0", "name": "benchnet", "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
 "hairpinMode": true, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]],
 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$STATE/$c/ipam"}}
EOF
  ip=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ips"][0]["address"].split("/")[0])' "$STATE/$c/prev.json")
  if (($2)); then SRV=$ip servers "$c" 0 0; fi
}
cni_publish_real() { # C PLUGIN: the real container's 8080 on host port 29999
  cnidrive "$1" "$2" ADD 0 1 1 29999 --prev "$STATE/$1/prev.json" --ctr s-"$1" >/dev/null || return 1
  endpoints "$1" $HOST:29999
}
setup_cni() { # C = cni_N (netnat) | pm_N (portmap): N CNI-published ports, the measured one last
  local c=$1 n=${1##*_} plugin=$PORTMAP
  [[ ${1%_*} == cni ]] && plugin=$NETNAT
  cni_host "$c" 1 || return 1
  if ((n > 1)); then
    if [[ $plugin == "$NETNAT" ]]; then
      cnidrive "$c" "$NETNAT" ADD 0 1 $((n - 1)) 20000 >/dev/null || return 1
    else
      # c0 and c1 through portmap itself; their rules must be what --portmap-layout writes.
      cnidrive "$c" "$PORTMAP" ADD 0 2 1 20000 >/dev/null || return 1
      local mine gen
      mine=$(inside h-"$c" iptables-save -t nat | grep -E '^(:CNI-DN-|-A CNI-DN-|-A CNI-HOSTPORT-DNAT )' | sed 's/ \[[0-9]*:[0-9]*\]$/ [0:0]/' | sort)
      gen=$(python3 "$ROOT/benches/cnidrive.py" --portmap-layout 0 2 20000 | sort)
      if [[ $mine != "$gen" ]]; then
        log "$c: portmap's rules differ from the generated layout:"; diff <(echo "$mine") <(echo "$gen") >&2 || true
        return 1
      fi
      { echo '*nat'; python3 "$ROOT/benches/cnidrive.py" --portmap-layout 2 $((n - 3)) 20002; echo COMMIT; } |
        inside h-"$c" iptables-nft-restore --noflush || return 1
    fi
  fi
  cni_publish_real "$c" "$plugin"
}

# ---- the new-connection rate to the last of N CNI-published ports
CNI_DP=(cni_1 cni_10000 pm_1)
((CNI_PM10K)) && CNI_DP+=(pm_10000)
log "CNI: setting up ${CNI_DP[*]}"
record cni_param_map all 1 "$CNI_MAP"
record cni_param_many all 1 "$CNI_MANY"
record cni_param_block all 1 "$CNI_BLOCK"
record cni_param_budget_s all 1 "$CNI_PM_BUDGET"
ok=()
for c in "${CNI_DP[@]}"; do
  if setup_cni "$c" && ready "$c"; then ok+=("$c"); else log "configuration $c failed; left out"; fi
done
CNI_DP=("${ok[@]}")
log "CNI: data path, $CNI_ROUNDS rounds"
# perf during the runs, as in allow.sh.
: >"$PERFDIR/list"
for ((r = 1; r <= CNI_ROUNDS; r++)); do
  for c in $(order $r "${CNI_DP[@]}"); do measure_wrk "$c" nc $r 1 cni_nc "$c"; done
done
attribute_perf
stop_ns_processes

# ---- control plane: also hosts with nothing published, cn_0 (netnat) and pm_0 (portmap)
record_pair() { # METRIC CONFIG ROUND LINES: "ADD_MS DEL_MS" lines of cnidrive ADDDEL
  local line
  while read -r line; do
    [[ -n $line ]] || continue
    record "$1_add_ms" "$2" "$3" "${line% *}"
    record "$1_del_ms" "$2" "$3" "${line#* }"
  done <<<"$4"
}
cp_item() { # ITEM ROUND: one timed item of a control-plane round
  local x=$1 r=$2 out
  case $x in
    map_netnat)
      out=$(cnidrive cn_0 "$NETNAT" ADDDEL 0 1 "$CNI_MAP" 40000) && record_pair cni_map netnat "$r" "$out" ;;
    map_portmap)
      # Once, in the first round: tens of seconds. Bounded; after a timeout a DEL (untimed)
      # takes what it added.
      ((r == 1)) || return 0
      if out=$(timeout 240 python3 "$ROOT/benches/cnidrive.py" /run/netns/h-pm_0 "$PORTMAP" ADDDEL 0 1 "$CNI_MAP" 40000); then
        record_pair cni_map portmap "$r" "$out"
      else
        log "  portmap: one ADD of $CNI_MAP mappings did not finish in 240 s"
        cnidrive pm_0 "$PORTMAP" DEL 0 1 "$CNI_MAP" 40000 >/dev/null || true
      fi ;;
    into0_netnat) out=$(cnidrive cn_0 "$NETNAT" ADDDEL 30000 1 1 31000 --reps 3) && record_pair cni_into0 netnat "$r" "$out" ;;
    into0_portmap) out=$(cnidrive pm_0 "$PORTMAP" ADDDEL 30000 1 1 31000 --reps 3) && record_pair cni_into0 portmap "$r" "$out" ;;
    into10000_netnat)
      [[ " ${CNI_DP[*]} " == *" cni_10000 "* ]] || return 0
      out=$(cnidrive cni_10000 "$NETNAT" ADDDEL 30000 1 1 31000 --reps 3) && record_pair cni_into10000 netnat "$r" "$out" ;;
    into10000_portmap)
      # About 5 s an ADD: the first three rounds, one ADD each.
      ((r <= 3)) && [[ " ${CNI_DP[*]} " == *" pm_10000 "* ]] || return 0
      out=$(cnidrive pm_10000 "$PORTMAP" ADDDEL 30000 1 1 31000) && record_pair cni_into10000 portmap "$r" "$out" ;;
  esac
  [[ -n ${out:-} ]] || log "  CNI $x round $r failed"
}
for c in cn_0 pm_0; do cni_host "$c" 0 || log "$c: no host"; done
log "CNI: control plane, $CNI_CP_ROUNDS rounds"
for ((r = 1; r <= CNI_CP_ROUNDS; r++)); do
  for x in $(order $r map_netnat into0_netnat into10000_netnat into10000_portmap into0_portmap map_portmap); do
    cp_item "$x" $r
  done
  log "  CNI control plane round $r/$CNI_CP_ROUNDS done"
done
# Where one netnat ADD spends its time, into 10,000 and into none (perf, its own process: user
# space, the nftables batch in the kernel, the rest of the kernel).
cnidrive cn_0 "$NETNAT" PRINT 30000 1 1 31000 >"$STATE/probe.json"
for c in cn_0 cni_10000; do
  [[ -e /run/netns/h-$c ]] || continue
  CNI_COMMAND=ADD CNI_CONTAINERID=c30000 CNI_NETNS=/run/netns/c30000 CNI_IFNAME=eth0 CNI_PATH=$CNI_DIR \
    cp_perf cni_add_$([[ $c == cn_0 ]] && echo into0 || echo into10000) netnat "$c" 1 "$NETNAT" <"$STATE/probe.json"
  cnidrive "$c" "$NETNAT" DEL 30000 1 1 31000 >/dev/null
  # The whole record: state.json and the attachment files (claims are empty files). An ADD
  # reads state.json, its own attachment and those claimed on its host ports and address.
  record cni_record_bytes netnat_$([[ $c == cn_0 ]] && echo 0 || echo 10000) 1 \
    "$(cat "$STATE/$c/netnat/state.json" "$STATE/$c/netnat"/attachments/*.json 2>/dev/null | wc -c)"
done

# ---- CNI_MANY containers, one mapping each: ADD then DEL, sequential and by 8 workers, in
# blocks that alternate between the plugins (cn_0 and pm_0 are empty again here). Container i
# publishes host port 41000 + i; the parallel phase uses containers CNI_MANY and up.
log "CNI: $CNI_MANY containers, blocks of $CNI_BLOCK (portmap: $CNI_PM_BUDGET s per phase)"
for phase in seq par; do
  workers=1 first=0
  [[ $phase == par ]] && workers=8 first=$CNI_MANY
  pm_added=0 # containers portmap added in this phase (the first ones), which its DEL then takes
  for verb in ADD DEL; do
    pm_spent=0 # ms portmap used in this phase and verb
    for ((b = 0; b < CNI_MANY / CNI_BLOCK; b++)); do
      s=$((first + b * CNI_BLOCK))
      for x in $(order $((b + 1)) netnat portmap); do
        h=cn_0 count=$CNI_BLOCK
        if [[ $x == portmap ]]; then
          # Whole blocks only, while its budget lasts (a phase may overrun it by one block).
          h=pm_0
          [[ $verb == DEL ]] && count=$((pm_added - s + first < CNI_BLOCK ? pm_added - s + first : CNI_BLOCK))
          ((pm_spent < CNI_PM_BUDGET * 1000 && count > 0)) || continue
        fi
        # --deadline: a hard bound on one block, whichever plugin.
        if ! out=$(cnidrive $h "$(plugin_of $x)" $verb $s $count 1 $((41000 + s)) --workers $workers --deadline 120); then
          log "  $x $phase $verb block $((b + 1)) failed"; continue
        fi
        read -r n ms _ <<<"$out"
        record "cni_${phase}_${verb,,}_ms" $x $((b + 1)) "$ms"
        record "cni_${phase}_${verb,,}_n" $x $((b + 1)) "$n"
        if [[ $x == portmap ]]; then
          pm_spent=$((pm_spent + ${ms%.*}))
          [[ $verb == ADD ]] && pm_added=$((pm_added + n))
        fi
      done
    done
    log "  $phase $verb done"
  done
done
stop_ns_processes
