#!/usr/bin/env bash
# The seed story, told by netnat: build "MyDocker0" with two containers (Container_ns1, Container_ns2),
# serve files from one, publish its port to an "external host" with in-kernel NAT (no userland
# proxy), show egress masquerade, then remove everything.
#
# It never touches this machine's network: it re-executes itself inside a new network and mount
# namespace with a private tmpfs on /run, so every link, namespace, sysctl and nftables table it
# makes lives and dies with that namespace. Run as root: `make demo` (or `bash scripts/demo.sh`
# after `make build`). Exits non-zero if any step fails. Every wait is bounded.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
NETNAT_BIN=${NETNAT_BIN:-$REPO/target/release/netnat}
DEMO_TIMEOUT=300 # seconds for the whole demo

# ---------------------------------------------------------------------------------------------
# Outside: check, snapshot the machine's namespace, re-execute isolated, compare the snapshot.
# ---------------------------------------------------------------------------------------------
if [[ -z ${NETNAT_DEMO_PARENT_NETNS:-} ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "demo: run as root (it creates network namespaces, inside a throwaway one)" >&2
        exit 1
    fi
    if [[ ! -x $NETNAT_BIN ]]; then
        echo "demo: $NETNAT_BIN not found; run \`make build\` first (or \`make demo\`)" >&2
        exit 1
    fi
    for tool in unshare ip nft ss curl python3 timeout; do
        command -v "$tool" >/dev/null || { echo "demo: $tool is missing; run \`make deps\`" >&2; exit 1; }
    done
    # What the demo must not change on this machine (read only).
    snapshot() {
        ip -o link show | sed 's/ qlen.*//'
        ip -o addr show
        ip route show
        ip netns list
        nft list tables
        sysctl -n net.ipv4.ip_forward
    }
    before=$(snapshot)
    export NETNAT_DEMO_PARENT_NETNS NETNAT_BIN
    NETNAT_DEMO_PARENT_NETNS=$(readlink /proc/self/ns/net)
    rc=0
    timeout --kill-after=10 "$DEMO_TIMEOUT" \
        unshare --net --mount --propagation private \
        bash -c 'mount -t tmpfs tmpfs /run && exec bash "$0" "$@"' "${BASH_SOURCE[0]}" "$@" || rc=$?
    after=$(snapshot)
    echo
    if [[ $before == "$after" ]]; then
        echo "== This machine's own namespace is as before the demo: links, addresses, routes, named namespaces,"
        echo "   nftables tables and net.ipv4.ip_forward."
    else
        echo "== WARNING: this machine's own namespace changed while the demo ran (something else on the machine?):"
        diff <(echo "$before") <(echo "$after") || true
    fi
    if [[ $rc -ne 0 ]]; then
        echo "demo: FAILED (exit $rc)" >&2
        exit "$rc"
    fi
    echo "demo: all steps passed"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# Inside the throwaway namespace from here on.
# ---------------------------------------------------------------------------------------------
if [[ $(readlink /proc/self/ns/net) == "$NETNAT_DEMO_PARENT_NETNS" ]]; then
    echo "demo: refusing to run: still in the machine's network namespace" >&2
    exit 1
fi

# `netnat ...` in this script is the binary under test; `say` prints a command, then runs it.
netnat() { "$NETNAT_BIN" "$@"; }
step=0
bold='' plain=''
if [[ -t 1 ]]; then bold=$'\033[1m' plain=$'\033[0m'; fi
heading() {
    step=$((step + 1))
    printf '\n%s== %d. %s%s\n' "$bold" "$step" "$*" "$plain"
}
say() {
    printf '\n$ %s\n' "$*"
    "$@"
}
# Like say, but the command's output goes to variable $1 (and is printed too).
say_into() {
    local -n into=$1
    shift
    printf '\n$ %s\n' "$*"
    into=$("$@") || return
    printf '%s\n' "$into"
}
fail() {
    echo "demo: FAILED: $*" >&2
    exit 1
}

WORK=$(mktemp -d /run/netnat-demo.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# Waits (at most ~10 s) until something listens on TCP port $2 inside namespace $1, on address
# $3 when given: two servers share port 8080 (one per family), and the first one listening says
# nothing about the other.
wait_listening() {
    local ns=$1 port=$2 addr=${3:-} filter i
    filter="sport = :$port"
    [[ -z $addr ]] || filter="src $addr and $filter"
    for i in $(seq 100); do
        if [[ -n $(ip netns exec "$ns" ss -Hltn "$filter") ]]; then
            return 0
        fi
        sleep 0.1
    done
    fail "nothing listens on port $port${addr:+ at $addr} in $ns after 10 s"
}

ip link set lo up

heading "A fresh network namespace stands in for the host: only a loopback interface, no firewall"
say ip -br link
say nft list tables

heading "Network MyDocker0: a Linux bridge with the gateway address (brctl addbr + ip addr add, in the seed), dual stack"
say netnat network create MyDocker0 --subnet 172.16.0.0/16 --gateway 172.16.1.254 --subnet fd00:16::/64
say ip -br addr show MyDocker0

heading "Sandboxes Container_ns1 and Container_ns2: a named namespace each, joined by a veth endpoint"
say netnat sandbox create Container_ns1 --network MyDocker0 --ip 172.16.1.1 --ip fd00:16::2
say netnat sandbox create Container_ns2 --network MyDocker0 --ip 172.16.1.2 --ip fd00:16::3
say netnat sandbox ls
say ip netns exec Container_ns1 ip -br addr
say ip netns exec Container_ns1 ip route
say bridge link show

heading "A file server in Container_ns1 on 172.16.1.1:8080 (the seed's testfileserver)"
mkdir -p "$WORK/files"
echo "hello from Container_ns1" >"$WORK/files/index.html"
printf '\n$ ip netns exec Container_ns1 python3 -m http.server 8080 --bind 172.16.1.1 &\n'
(cd "$WORK/files" && exec timeout 240 ip netns exec Container_ns1 python3 -m http.server 8080 --bind 172.16.1.1) \
    >"$WORK/fileserver.log" 2>&1 &
PIDS+=($!)
# The same files over IPv6 (http.server listens on one address per process).
(cd "$WORK/files" && exec timeout 240 ip netns exec Container_ns1 python3 -m http.server 8080 --bind fd00:16::2) \
    >"$WORK/fileserver6.log" 2>&1 &
PIDS+=($!)
wait_listening Container_ns1 8080 172.16.1.1
wait_listening Container_ns1 8080 "[fd00:16::2]"

heading "Container to container, across the bridge: Container_ns2 -> 172.16.1.1:8080"
say_into out ip netns exec Container_ns2 curl -sS --max-time 3 http://172.16.1.1:8080/ || fail "Container_ns2 cannot reach the file server"
[[ $out == *"hello from Container_ns1"* ]] || fail "unexpected answer: $out"

heading "An external host: namespace ext, linked to the host by a veth (host 198.51.100.1 and 2001:db8:1::1, ext .2 and ::2)"
say ip netns add ext
say ip link add veth-ext type veth peer name eth0 netns ext
say ip addr add 198.51.100.1/24 dev veth-ext
say ip addr add 2001:db8:1::1/64 dev veth-ext nodad
say ip link set veth-ext up
say ip -n ext addr add 198.51.100.2/24 dev eth0
say ip -n ext addr add 2001:db8:1::2/64 dev eth0 nodad
say ip -n ext link set eth0 up
say ip -n ext link set lo up
say ip -n ext -6 route add default via 2001:db8:1::1

heading "Publish host port 9090 to Container_ns1:8080, both families in one command (the seed ran a userland proxy here; netnat adds a map element per family)"
say netnat publish 9090:Container_ns1:8080
say_into out ip netns exec ext curl -sS --max-time 3 -g "http://[2001:db8:1::1]:9090/" || fail "ext cannot reach the published port over IPv6"
[[ $out == *"hello from Container_ns1"* ]] || fail "unexpected answer through the published port over IPv6: $out"
grep -q '^2001:db8:1::2 ' "$WORK/fileserver6.log" || fail "the IPv6 file server did not see 2001:db8:1::2"
say_into out ip netns exec ext curl -sS --max-time 3 http://198.51.100.1:9090/ || fail "ext cannot reach the published port"
[[ $out == *"hello from Container_ns1"* ]] || fail "unexpected answer through the published port: $out"
echo
echo "The file server saw the external host's own address (DNAT only, no proxy in between):"
tail -n 1 "$WORK/fileserver.log"
grep -q '^198\.51\.100\.2 ' "$WORK/fileserver.log" || fail "the file server did not see 198.51.100.2"

heading "No proxy: nothing on the host listens on 9090, and no netnat process is left running"
say ss -Hltnp
echo "(no listening TCP socket on the host)"
[[ -z $(ss -Hltn 'sport = :9090') ]] || fail "something listens on port 9090 on the host"
# Only processes in this demo's network namespace count (the machine may run other things).
say_procs() { pgrep -a --ns $$ --nslist net "$@" || true; }
printf '\n$ pgrep -a --ns $$ --nslist net -x netnat; pgrep -a --ns $$ --nslist net -f proxy\n'
procs=$(say_procs -x netnat; say_procs -f proxy)
[[ -z $procs ]] || fail "a netnat or proxy process is running: $procs"
echo "(none)"

heading "Egress: Container_ns1 connects out to ext; ext sees the host's address (masquerade)"
cat >"$WORK/whoami.py" <<'EOF'
# Answers every GET with the address the connection came from.
import http.server
import sys


class Whoami(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"ext saw a connection from {self.client_address[0]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), Whoami).serve_forever()
EOF
printf '\n$ ip netns exec ext python3 whoami.py 198.51.100.2 8000 &\n'
timeout 240 ip netns exec ext python3 "$WORK/whoami.py" 198.51.100.2 8000 >"$WORK/whoami.log" 2>&1 &
PIDS+=($!)
wait_listening ext 8000
say_into out ip netns exec Container_ns1 curl -sS --max-time 3 http://198.51.100.2:8000/ || fail "Container_ns1 cannot reach ext"
[[ $out == "ext saw a connection from 198.51.100.1" ]] || fail "egress was not masqueraded: $out"

heading "What is published, with the kernel's per-element counters"
say netnat ls
say netnat network ls

heading "The whole nftables table, read back from the kernel"
say netnat show

heading "Audit: what is exposed, and is anything wrong? (exit 0: nothing at warning or above)"
say netnat audit

heading "The same state as a file: netnat save (what rules/demo.toml says)"
say netnat save

heading "Declarative: reset, then rebuild everything from rules/demo.toml (what the boot unit runs)"
cleanup
PIDS=()
say netnat reset
say netnat apply --check -f "$REPO/rules/demo.toml"
say netnat apply --dry-run -f "$REPO/rules/demo.toml"
say netnat apply -f "$REPO/rules/demo.toml"
say_into out netnat apply -f "$REPO/rules/demo.toml"
[[ $out == *"no changes"* ]] || fail "a second apply changed something: $out"
(cd "$WORK/files" && exec timeout 120 ip netns exec Container_ns1 python3 -m http.server 8080 --bind 172.16.1.1) \
    >"$WORK/fileserver2.log" 2>&1 &
PIDS+=($!)
wait_listening Container_ns1 8080 172.16.1.1
say_into out ip netns exec ext curl -sS --max-time 3 http://198.51.100.1:9090/ || fail "ext cannot reach the port published by the file"
[[ $out == *"hello from Container_ns1"* ]] || fail "unexpected answer through the port published by the file: $out"

heading "Reset: remove everything netnat made, and nothing else"
cleanup
PIDS=()
say netnat reset
say ip link del veth-ext
say ip netns del ext
say ip -br link
say ip netns list
say nft list tables
[[ $(ip -o link show | wc -l) -eq 1 ]] || fail "links are left behind"
[[ -z $(ip netns list) ]] || fail "namespaces are left behind"
[[ -z $(nft list tables) ]] || fail "nftables tables are left behind"
say netnat ls
say netnat show
echo
echo "Done: the demo namespace is back to a lone loopback interface."
