#!/usr/bin/env python3
"""Turns benches/run.sh's raw measurements into one table of medians, ratios and targets
(PASS/MISS), a Markdown summary and a plot. Usage: report.py RAW.tsv OUTDIR QUICK"""
import os
import statistics
import subprocess
import sys
from collections import defaultdict

raw, out, quick = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
vals = defaultdict(list)
for line in open(raw):
    metric, cfg, v = line.rstrip("\n").split("\t")
    try:
        vals[(metric, cfg)].append(float(v))
    except ValueError:
        pass


def med(metric, cfg):
    v = vals.get((metric, cfg))
    return statistics.median(v) if v else None


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


lines = []


def emit(s=""):
    print(s)
    lines.append(s)


def fmt(v, nd=1):
    if v is None:
        return "n/a"
    return f"{v:,.{nd}f}"


configs = ["direct", "netnat", "nft1", "iptables", "netavark", "socat", "dockerproxy"]
configs6 = ["direct6", "netnat6", "nft6"]
names = {
    "direct": "direct (no NAT)",
    "netnat": "netnat",
    "nft1": "hand nft, 1 rule",
    "iptables": "iptables-nft, Docker layout",
    "netavark": "netavark (Podman), iptables driver",
    "socat": "socat proxy",
    "dockerproxy": "docker-proxy",
    "direct6": "direct over IPv6 (no NAT)",
    "netnat6": "netnat over IPv6",
    "nft6": "hand nft ip6, 1 rule",
}


def datapath_table(cfgs, direct):
    emit("| configuration | Gbit/s | ratio | keep-alive req/s | ratio | p99 ms | new-conn req/s | ratio | p99 ms | proxy RSS KiB |")
    emit("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = {m: med(m, direct) for m in ("gbps", "ka_rps", "nc_rps")}
    for c in cfgs:
        if med("ka_rps", c) is None:
            continue
        emit(
            f"| {names[c]} | {fmt(med('gbps', c), 2)} | {fmt(ratio(med('gbps', c), base['gbps']), 2)} "
            f"| {fmt(med('ka_rps', c), 0)} | {fmt(ratio(med('ka_rps', c), base['ka_rps']), 2)} | {fmt(med('ka_p99', c), 2)} "
            f"| {fmt(med('nc_rps', c), 0)} | {fmt(ratio(med('nc_rps', c), base['nc_rps']), 2)} | {fmt(med('nc_p99', c), 2)} "
            f"| {fmt(med('proxy_rss_kib', c), 0)} |"
        )


emit("## Data path (client in the external namespace, medians)")
emit("")
datapath_table(configs, "direct")
emit("")
emit("Ratios are against the direct path measured in the same run.")
if any(med("ka_rps", c) is not None for c in configs6):
    emit("")
    emit("## Data path over IPv6 (same run, medians)")
    emit("")
    datapath_table(configs6, "direct6")
    emit("")
    emit("Ratios are against the direct path over IPv6 measured in the same run.")
emit("")
emit("Round-to-round spread ((max - min) / median) of each configuration, to read the ratios by:")
emit("")
emit("| configuration | Gbit/s | keep-alive req/s | new-conn req/s |")
emit("|---|---:|---:|---:|")


def spread(metric, cfg):
    v = vals.get((metric, cfg))
    if not v or len(v) < 2 or statistics.median(v) == 0:
        return "n/a"
    return f"{(max(v) - min(v)) / statistics.median(v) * 100:.0f}%"


for c in configs + configs6:
    if med("ka_rps", c) is not None:
        emit(f"| {names[c]} | {spread('gbps', c)} | {spread('ka_rps', c)} | {spread('nc_rps', c)} |")
emit("")

emit("## Per-packet scaling: new connections/s to the last published port")
emit("")
emit("| mappings | netnat (map) | one rule per port | netnat / rules | netnat over IPv6 (map) |")
emit("|---:|---:|---:|---:|---:|")
ns = [1, 100, 1000, 10000]
for n in ns:
    a, b = med(f"scale_nc_rps_{n}", "netnat"), med(f"scale_nc_rps_{n}", "rules")
    emit(f"| {n:,} | {fmt(a, 0)} | {fmt(b, 0)} | {fmt(ratio(a, b), 2)} | {fmt(med(f'scale_nc_rps_{n}', 'netnat6'), 0)} |")
emit("")

emit("## Control plane (wall time ms, median of 5; peak RSS KiB)")
emit("")
emit("| operation | netnat | nft add element | nft add rule | iptables -A |")
emit("|---|---:|---:|---:|---:|")
for n in (0, 1000, 10000):
    m = f"publish1_into_{n}_ms"
    emit(
        f"| publish 1 port into {n:,} | {fmt(med(m, 'netnat'), 2)} | {fmt(med(m, 'nft_element'), 2)} "
        f"| {fmt(med(m, 'nft_rule'), 2)} | {fmt(med(m, 'iptables'), 2)} |"
    )
emit("")
emit("| operation | netnat | nft -f, same elements | nft -f, NAT map only | iptables-restore |")
emit("|---|---:|---:|---:|---:|")
emit(f"| apply 10,000 mappings | {fmt(med('apply10k_ms', 'netnat'), 1)} | {fmt(med('apply10k_ms', 'nft_f'), 1)} | {fmt(med('apply10k_ms', 'nft_f_map_only'), 1)} | {fmt(med('apply10k_ms', 'iptables_restore'), 1)} |")
emit(f"| remove 10,000 mappings | {fmt(med('remove10k_ms', 'netnat'), 1)} | | | |")
emit("")
if med("map1000_setup_ms", "netavark") is not None:
    emit("| 1,000 separate mappings, ms | netnat apply | netavark |")
    emit("|---|---:|---:|")
    emit(f"| set up | {fmt(med('map1000_setup_ms', 'netnat'), 0)} | {fmt(med('map1000_setup_ms', 'netavark'), 0)} |")
    emit(f"| tear down | {fmt(med('map1000_teardown_ms', 'netnat'), 0)} | {fmt(med('map1000_teardown_ms', 'netavark'), 0)} |")
    emit("")
emit(
    f"1,000-port range: netnat leaves {fmt(med('range1000_procs', 'netnat'), 0)} processes; "
    f"docker-proxy runs {fmt(med('range1000_procs', 'dockerproxy'), 0)} processes using "
    f"{fmt((med('range1000_rss_kib', 'dockerproxy') or 0) / 1024, 0)} MiB RSS "
    f"(started in {fmt(med('range1000_start_ms', 'dockerproxy'), 0)} ms)."
)
emit("")

netnat_rss = max([max(v) for (m, c), v in vals.items() if c == "netnat" and m.endswith("_rss_kib") and v] or [0])
targets = [
    ("throughput >= 0.95 x direct", ratio(med("gbps", "netnat"), med("gbps", "direct")), 0.95, ">="),
    ("keep-alive req/s >= 0.97 x hand nft rule", ratio(med("ka_rps", "netnat"), med("ka_rps", "nft1")), 0.97, ">="),
    ("new-conn req/s >= 0.97 x hand nft rule", ratio(med("nc_rps", "netnat"), med("nc_rps", "nft1")), 0.97, ">="),
    ("new-conn req/s >= 1.6 x docker-proxy", ratio(med("nc_rps", "netnat"), med("nc_rps", "dockerproxy")), 1.6, ">="),
    ("new-conn at 10,000 mappings >= 0.95 x at 1", ratio(med("scale_nc_rps_10000", "netnat"), med("scale_nc_rps_1", "netnat")), 0.95, ">="),
    ("publish into 10,000 <= nft add element", ratio(med("publish1_into_10000_ms", "netnat"), med("publish1_into_10000_ms", "nft_element")), 1.0, "<="),
    ("publish into 10,000 <= 1.2 x into empty", ratio(med("publish1_into_10000_ms", "netnat"), med("publish1_into_0_ms", "netnat")), 1.2, "<="),
    ("1,000 separate mappings: >= 100 x faster than netavark", ratio(med("map1000_setup_ms", "netavark"), med("map1000_setup_ms", "netnat")), 100, ">="),
    ("apply 10,000 <= 0.5 x nft -f (same elements)", ratio(med("apply10k_ms", "netnat"), med("apply10k_ms", "nft_f")), 0.5, "<="),
    ("1,000-port range leaves 0 processes", med("range1000_procs", "netnat"), 0, "<="),
    ("netnat peak RSS < 20 MiB", netnat_rss / 1024, 20, "<"),
    ("ls --json on 10,000: < 0.2 s process time", med("ls_json_10k_cpu_s", "netnat"), 0.2, "<"),
    ("audit on 10,000: < 0.2 s process time", med("audit_10k_cpu_s", "netnat"), 0.2, "<"),
    ("IPv6 keep-alive req/s >= 0.97 x hand ip6 rule", ratio(med("ka_rps", "netnat6"), med("ka_rps", "nft6")), 0.97, ">="),
    ("IPv6 new-conn req/s >= 0.97 x hand ip6 rule", ratio(med("nc_rps", "netnat6"), med("nc_rps", "nft6")), 0.97, ">="),
    ("IPv6 new-conn at 10,000 mappings >= 0.95 x at 1", ratio(med("scale_nc_rps_10000", "netnat6"), med("scale_nc_rps_1", "netnat6")), 0.95, ">="),
]
rules_ratio = ratio(med("scale_nc_rps_10000", "rules"), med("scale_nc_rps_1", "rules"))
emit("## Targets")
emit("")
emit("| target | measured | result |")
emit("|---|---:|---|")
for name, v, lim, op in targets:
    if v is None:
        res = "n/a"
    else:
        ok = {">=": v >= lim, "<=": v <= lim, "<": v < lim}[op]
        res = "PASS" if ok else "MISS"
    emit(f"| {name} | {fmt(v, 2)} | {res} |")
emit("")
emit(f"One rule per port at 10,000 vs 1: {fmt(rules_ratio, 2)} (netnat: {fmt(targets[4][1], 2)}).")
if quick:
    emit("")
    emit("(--quick: one short round; use the full run for figures to quote.)")

os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")

dat = os.path.join(out, "scaling.dat")
with open(dat, "w") as f:
    for n in ns:
        f.write(
            f"{n} {med(f'scale_nc_rps_{n}', 'netnat') or 0} {med(f'scale_nc_rps_{n}', 'rules') or 0} "
            f"{med(f'scale_nc_rps_{n}', 'netnat6') or 0}\n"
        )
png = os.path.join(out, "scaling.png")
gp = f"""set terminal pngcairo size 800,480
set output '{png}'
set logscale x
set xlabel 'published mappings (target is the last one)'
set ylabel 'new connections per second'
set yrange [0:*]
set key bottom left
set grid
set title 'New-connection rate vs number of published ports'
plot '{dat}' using 1:2 with linespoints lw 2 title 'netnat (one map element per port)', \\
     '{dat}' using 1:3 with linespoints lw 2 title 'one DNAT rule per port (peers)', \\
     '{dat}' using 1:4 with linespoints lw 2 title 'netnat over IPv6 (one map element per port)'
"""
try:
    subprocess.run(["gnuplot"], input=gp.encode(), check=True)
    print(f"\nplot: {png}")
except (OSError, subprocess.CalledProcessError) as e:
    print(f"\n(no plot: {e})")
print(f"results: {os.path.join(out, 'results.md')}")
