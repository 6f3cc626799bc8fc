#!/usr/bin/env python3
"""scale-summary.py prints the tables of a scale.sh results directory.

    bench/peers/scale-summary.py OUT [BROKER NODES]

It reads OUT/{idle,broadcast,channels}-N.json for every N found and prints
three markdown tables: the idle run (connect phase, RSS per connection, per
node and in all), and the broadcast and channels runs (deliveries/s,
latency, CPU of the nodes and of the broker, the delivery checks), with the
CPU that other processes of the machine used during each run.
"""
import json
import os
import re
import sys


def ran(out, name):
    return os.path.exists(os.path.join(out, name + ".json"))


def load(out, name):
    try:
        with open(os.path.join(out, name + ".json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def g(d, *path):
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def num(v, fmt="{:,.0f}"):
    return "-" if v is None else fmt.format(v)


def main():
    out = sys.argv[1]
    broker = sys.argv[2] if len(sys.argv) > 2 else "?"
    nodes = sys.argv[3] if len(sys.argv) > 3 else "?"
    counts = sorted({int(m.group(2)) for f in os.listdir(out)
                     for m in [re.match(r"(idle|broadcast|channels|paced)-(\d+)\.json$", f)] if m})
    print(f"{nodes} nodes on {broker}, results in {out}")
    print()
    print("idle: subscribed connections held 60 s")
    print()
    print("| connections | connect phase | connect rate | RSS per connection (KiB) | nodes' RSS in all | RSS per node (MiB) | lost connections | other processes (cores) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for c in counts:
        if not ran(out, f"idle-{c}"):
            continue
        r = load(out, f"idle-{c}")
        if not r:
            print(f"| {c:,} | failed (no report) | | | | | | |")
            continue
        nodes_ = g(r, "server", "nodes") or []
        per_node = ", ".join(f'{n.get("rss_kib", 0) / 1024:.0f}' for n in nodes_)
        conn = g(r, "connect") or {}
        print(f'| {c:,} | {conn.get("connected", 0):,}/{conn.get("requested", 0):,} in {num(conn.get("elapsed_s"), "{:.1f}")} s'
              f' | {num(conn.get("rate_per_s"))}/s'
              f' | {num(g(r, "idle", "rss_per_conn_kib"), "{:.2f}")}'
              f' | {num((g(r, "idle", "rss_min_kib") or 0) / 1024, "{:,.0f}")} MiB'
              f' | {per_node} | {num(g(r, "idle", "lost_conns"))}'
              f' | {num(g(r, "machine", "other_cores"), "{:.2f}")} |')
    for kind, title in (("broadcast", "broadcast: one channel all connections subscribe to"),
                        ("channels", "channels: 10,000 channels, random publishes"),
                        ("paced", "paced: the broadcast at a fixed rate below saturation")):
        if not any(ran(out, f"{kind}-{c}") for c in counts):
            continue
        print()
        print(title)
        print()
        print("| connections | publications/s | deliveries/s | p50 (ms) | p99 (ms) | nodes' CPU (cores) | nodes' CPU per delivery (us) | broker CPU (cores) | broker CPU per publication (us) | lost / dup / out of order | lost connections | other processes (cores) |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for c in counts:
            if not ran(out, f"{kind}-{c}"):
                continue
            r = load(out, f"{kind}-{c}")
            if not r or not r.get("delivery"):
                print(f"| {c:,} | failed (no report) | | | | | | | | | | |")
                continue
            d = r["delivery"]
            pubs = g(r, "publish", "messages") or 0
            bcpu = g(r, "broker", "cpu", "total_s")
            per_pub = None if not pubs or bcpu is None else bcpu / pubs * 1e6
            print(f'| {c:,} | {num(g(r, "publish", "rate_per_s"), "{:,.1f}")} | {num(d.get("per_s"))}'
                  f' | {num(g(r, "latency", "p50_ms"), "{:.1f}")} | {num(g(r, "latency", "p99_ms"), "{:.1f}")}'
                  f' | {num(g(r, "server", "cpu", "cores"), "{:.2f}")} | {num(d.get("server_cpu_per_delivery_us"), "{:.2f}")}'
                  f' | {num(g(r, "broker", "cpu", "cores"), "{:.3f}")} | {num(per_pub, "{:.0f}")}'
                  f' | {d.get("lost", "-")} / {d.get("duplicates", "-")} / {d.get("out_of_order", "-")}'
                  f'{"" if d.get("drained", True) else " (not drained)"}'
                  f' | {num(d.get("lost_conns"))} | {num(g(r, "machine", "other_cores"), "{:.2f}")} |')


if __name__ == "__main__":
    main()
