#!/usr/bin/env python3
"""What one CNI ADD and one DEL cost netnat with 10,000 mappings recorded, against none
(issue 24's "an ADD or DEL into 10,000 mappings <= 1.2 x into none").

    sudo scripts/cni-scale.py [NETNAT] [--n 10000] [--reps 15] [--attachments 1]

Runs itself again inside a throwaway network + mount namespace (a private tmpfs on /run: the
machine's own state is never touched). There, into an empty state and then into a state with N
mappings (one ADD per attachment: N mappings over ATTACHMENTS containers), it times REPS times a
single-mapping container's ADD and its DEL, one process each as a runtime runs the plugin, and
prints the medians and the ratios. Bounded: at most 50 reps and 300 s of timed requests.
"""
import json
import os
import statistics
import subprocess
import sys
import time


def request(netnat, verb, ctr, ip, maps):
    prev = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": f"/run/netns/{ctr}"}],
        "ips": [{"address": f"{ip}/16", "interface": 0}],
    }
    conf = {"cniVersion": "1.0.0", "name": "scale", "type": "netnat", "prevResult": prev,
            "runtimeConfig": {"portMappings": maps}}
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": verb, "CNI_CONTAINERID": ctr,
           "CNI_NETNS": f"/run/netns/{ctr}", "CNI_IFNAME": "eth0", "NETNAT_STATE_DIR": "/run/netnat"}
    t0 = time.perf_counter()
    out = subprocess.run([netnat], input=json.dumps(conf).encode(), env=env, capture_output=True)
    ms = (time.perf_counter() - t0) * 1000
    if out.returncode != 0:
        sys.exit(f"{verb} {ctr} failed: {out.stdout.decode()} {out.stderr.decode()}")
    return ms


def timed(netnat, reps, deadline):
    adds, dels = [], []
    for r in range(reps):
        if time.monotonic() > deadline:
            break
        m = [{"hostPort": 31000, "containerPort": 8080, "protocol": "tcp"}]
        adds.append(request(netnat, "ADD", f"probe{r}", "10.89.0.2", m))
        dels.append(request(netnat, "DEL", f"probe{r}", "10.89.0.2", m))
    return statistics.median(adds), statistics.median(dels)


def inside(netnat, n, reps, attachments):
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    deadline = time.monotonic() + 300
    reps = min(reps, 50)
    request(netnat, "ADD", "warm", "10.89.0.3", [{"hostPort": 1, "containerPort": 1, "protocol": "tcp"}])
    request(netnat, "DEL", "warm", "10.89.0.3", [])
    a0, d0 = timed(netnat, reps, deadline)
    per = n // attachments
    for c in range(attachments):
        maps = [{"hostPort": 20000 + c * per + k, "containerPort": 80, "protocol": "tcp"} for k in range(per)]
        request(netnat, "ADD", f"big{c}", f"10.88.{c // 250}.{c % 250 + 2}", maps)
    size = os.path.getsize("/run/netnat/state.json")
    a1, d1 = timed(netnat, reps, deadline)
    print(f"mappings recorded: 0 and {per * attachments} ({attachments} attachment(s)); record {size // 1024} KiB")
    print(f"ADD: {a0:.1f} ms into none, {a1:.1f} ms into {per * attachments}: {a1 / a0:.2f} x")
    print(f"DEL: {d0:.1f} ms into none, {d1:.1f} ms into {per * attachments}: {d1 / d0:.2f} x")


def main():
    args = sys.argv[1:]
    opt = {"--n": 10000, "--reps": 15, "--attachments": 1}
    netnat = "target/release/netnat"
    i = 0
    while i < len(args):
        if args[i] in opt:
            opt[args[i]] = int(args[i + 1])
            i += 2
        else:
            netnat = args[i]
            i += 1
    netnat = os.path.abspath(netnat)
    if os.environ.get("CNI_SCALE_INSIDE") == "1":
        inside(netnat, opt["--n"], opt["--reps"], opt["--attachments"])
        return
    cmd = ["unshare", "--net", "--mount", "--propagation", "private", sys.executable, os.path.abspath(__file__),
           netnat] + [str(x) for kv in opt.items() for x in kv]
    sys.exit(subprocess.run(cmd, env={**os.environ, "CNI_SCALE_INSIDE": "1"}).returncode)


if __name__ == "__main__":
    main()
