#!/usr/bin/env python3
"""Drives a chained CNI port-mapping plugin (netnat or portmap) the way a runtime does: one
process per request, CNI_* environment and the network configuration on stdin, inside a host's
network namespace. Prints timings; exits non-zero if any request failed.

    cnidrive.py [--mnt MNTNS] NETNS_PATH PLUGIN VERB FIRST COUNT PORTS_EACH PORT_BASE [options]
    cnidrive.py --portmap-layout FIRST COUNT PORT_BASE

    VERB       ADD, DEL, or ADDDEL (ADD then DEL of each container, each timed apart); PRINT
               prints the configuration of an ADD of container FIRST and runs nothing
    FIRST COUNT     containers c<FIRST> .. c<FIRST+COUNT-1>
    PORTS_EACH PORT_BASE   container i publishes PORTS_EACH host ports from
                           PORT_BASE + (i - FIRST) * PORTS_EACH, TCP, to its port 8080 and up
    --workers W     W parallel workers (worker w serves the containers w, w+W, ...); default 1
    --deadline S    start no request after S seconds (bounded loops); default 600
    --reps R        ADDDEL only: repeat the whole ADD/DEL R times
    --ip A.B.C.D    every container's address (default: one address per container, 10.88.100.2 on)
    --allow CIDR    allowFrom entry (netnat), repeatable
    --prev FILE --ctr ID   a real container (COUNT 1): prevResult is FILE (the bridge plugin's
                    answer), the container ID is ID and CNI_NETNS the sandbox of its eth0

--portmap-layout prints, for iptables-restore --noflush, the nat rules portmap 1.1.1 writes when
each container c<i> (i = FIRST ..) is added with one TCP mapping PORT_BASE + i - FIRST -> 8080
(snat on, the bridge's 10.88.0.0/16): its CNI-DN-<hash> chain of three rules and its jump from
CNI-HOSTPORT-DNAT. benches/cni.sh checks these lines against portmap's own for two containers
before it loads thousands of them this way.

Output: ADD and DEL: one line "DONE TOTAL_MS MEDIAN_MS" (requests completed, wall time from the
first start to the last end, median time of one request). ADDDEL: one line "ADD_MS DEL_MS" per
container and repetition.

The containers are synthetic: the prevResult each request carries is what the bridge plugin
would return for a container (interface eth0 in the sandbox CNI_NETNS, an address of the bridge's
subnet); the namespace itself is never made. Both plugins read the same prevResult and neither
enters the container's namespace on ADD or DEL, so the work timed is each plugin's own.
"""
import hashlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timecmd import CLONE_NEWNET, CLONE_NEWNS, enter  # noqa: E402

NETWORK = "benchnet"
CNI_PATH = "/usr/lib/cni"


def container_ip(i, fixed):
    return fixed or f"10.88.{100 + i // 250}.{i % 250 + 2}"


def request(plugin_type, verb, i, first, ports_each, port_base, ip, allow, real=None):
    """(environment, stdin) of one request for container c<i>, or for the real container
    real = (container ID, prevResult)."""
    if real:
        ctr, prev = real
        netns = next(f["sandbox"] for f in prev["interfaces"] if f.get("name") == "eth0" and f.get("sandbox"))
    else:
        ctr, netns = f"c{i}", f"/run/netns/c{i}"
        prev = {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": netns}],
            "ips": [{"address": f"{ip}/16", "interface": 0, "gateway": "10.88.0.1"}],
        }
    base = port_base + (i - first) * ports_each
    conf = {
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "type": plugin_type,
        "capabilities": {"portMappings": True},
        "runtimeConfig": {
            "portMappings": [
                {"hostPort": base + j, "containerPort": 8080 + j, "protocol": "tcp"} for j in range(ports_each)
            ]
        },
        "prevResult": prev,
    }
    if allow:
        conf["allowFrom"] = allow
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "CNI_PATH": CNI_PATH,
        "CNI_COMMAND": verb,
        "CNI_CONTAINERID": ctr,
        "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0",
    }
    if "NETNAT_STATE_DIR" in os.environ:
        env["NETNAT_STATE_DIR"] = os.environ["NETNAT_STATE_DIR"]
    return env, json.dumps(conf).encode()


def portmap_layout(first, count, port_base):
    """portmap's nat rules for containers c<first> .. (see the module's doc): chains first."""
    decl, rules, jumps = [], [], []
    for i in range(first, first + count):
        # portmap names a container's chain "CNI-DN-" + sha512(network name + container ID),
        # cut to iptables' 28 characters (utils.MustFormatChainNameWithPrefix).
        chain = ("CNI-DN-" + hashlib.sha512(f"{NETWORK}c{i}".encode()).hexdigest())[:28]
        port = port_base + i - first
        decl.append(f":{chain} - [0:0]")
        rules += [f"-A {chain} -s 10.88.0.0/16 -p tcp -m tcp --dport {port} -j CNI-HOSTPORT-SETMARK",
                  f"-A {chain} -s 127.0.0.1/32 -p tcp -m tcp --dport {port} -j CNI-HOSTPORT-SETMARK",
                  f"-A {chain} -p tcp -m tcp --dport {port} -j DNAT --to-destination {container_ip(i, None)}:8080"]
        jumps.append(f'-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"{NETWORK}\\" id: \\"c{i}\\"" '
                     f"-m multiport --dports {port} -j {chain}")
    return decl + rules + jumps


def run_one(plugin, env, stdin):
    """One plugin process -> wall ms; raises with the plugin's answer when it fails."""
    t0 = time.monotonic_ns()
    p = subprocess.run([plugin], input=stdin, env=env, capture_output=True)
    t1 = time.monotonic_ns()
    if p.returncode != 0:
        raise RuntimeError(f"{env['CNI_COMMAND']} {env['CNI_CONTAINERID']}: exit {p.returncode}: "
                           f"{p.stdout.decode(errors='replace')[:300]} {p.stderr.decode(errors='replace')[:300]}")
    return (t1 - t0) / 1e6


def main():
    args = sys.argv[1:]
    if args[:1] == ["--portmap-layout"] and len(args) == 4:
        print("\n".join(portmap_layout(int(args[1]), int(args[2]), int(args[3]))))
        return
    namespaces = []
    if args[:1] == ["--mnt"]:
        namespaces.append((args[1], CLONE_NEWNS))
        args = args[2:]
    opts = {"--workers": "1", "--deadline": "600", "--reps": "1", "--ip": None, "--prev": None, "--ctr": None}
    allow = []
    pos = []
    while args:
        a = args.pop(0)
        if a == "--allow":
            allow.append(args.pop(0))
        elif a in opts:
            opts[a] = args.pop(0)
        else:
            pos.append(a)
    if len(pos) != 7:
        sys.exit(__doc__)
    netns, plugin, verb, first, count, ports_each, port_base = pos
    first, count, ports_each, port_base = int(first), int(count), int(ports_each), int(port_base)
    workers, deadline, reps = int(opts["--workers"]), float(opts["--deadline"]), int(opts["--reps"])
    plugin_type = os.path.basename(plugin)
    real = None
    if opts["--prev"]:
        with open(opts["--prev"]) as f:
            real = (opts["--ctr"] or "ctr", json.load(f))
    namespaces.insert(0, (netns, CLONE_NEWNET))
    enter(namespaces)

    def req(v, i):
        return request(plugin_type, v, i, first, ports_each, port_base, container_ip(i, opts["--ip"]), allow, real)

    if verb == "PRINT":
        print(req("ADD", first)[1].decode())
        return
    if verb == "ADDDEL":
        for _ in range(reps):
            for i in range(first, first + count):
                a = run_one(plugin, *req("ADD", i))
                d = run_one(plugin, *req("DEL", i))
                print(f"{a:.3f} {d:.3f}", flush=True)
        return

    stop_at = time.monotonic() + deadline
    times, errors = [], []
    lock = threading.Lock()

    def worker(w):
        for i in range(first + w, first + count, workers):
            if time.monotonic() >= stop_at or errors:
                return
            try:
                ms = run_one(plugin, *req(verb, i))
            except RuntimeError as e:
                with lock:
                    errors.append(str(e))
                return
            with lock:
                times.append(ms)

    t0 = time.monotonic_ns()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = (time.monotonic_ns() - t0) / 1e6
    if errors:
        sys.exit(f"cnidrive: {errors[0]}")
    print(f"{len(times)} {total:.3f} {statistics.median(times) if times else 0:.3f}")


if __name__ == "__main__":
    main()
