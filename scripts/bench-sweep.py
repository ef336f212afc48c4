#!/usr/bin/env python3
"""Throughput and p99 against offered load, for docs/BENCHMARKS.md.

For each offered rate: start a fresh `orderflow up` (embedded binder, SQLite, a new data
directory), run `orderflow bench --rate R --json` against it, stop it. Then a flat-out run.
Writes the reports to docs/bench-sweep.json and plots end-to-end throughput and create ->
PAID p99 against offered load to docs/bench-sweep.png (matplotlib: pip install matplotlib).

Usage: scripts/bench-sweep.py [--binary target/release/orderflow] [--config-dir DIR]
                              [--rates 100,200,400,600,800,1000] [--seconds 10]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "bench-sweep-token-0123456789"


def wait_ready(url, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"{url} not ready after {seconds} s")


def run(binary, config_dir, rate, count, concurrency):
    data = tempfile.mkdtemp(prefix="orderflow-sweep-")
    env = dict(os.environ, ORDERFLOW_ADMIN_TOKEN=TOKEN, ORDERFLOW_LOG="warn")
    up = [binary, "up", "--data-dir", data]
    if config_dir:
        up += ["--config-dir", config_dir]
    server = subprocess.Popen(up, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready("http://127.0.0.1:8081")
        bench = [binary, "bench", "--json", "--count", str(count), "--concurrency", str(concurrency),
                 "--scratch-dir", data, "--baseline-messages", "0"]
        if rate:
            bench += ["--rate", str(rate)]
        out = subprocess.run(bench, env=env, check=True, capture_output=True, text=True)
        return json.loads(out.stdout)
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(data, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    p.add_argument("--binary", default=os.path.join(target, "release/orderflow"))
    p.add_argument("--config-dir", default=os.path.join(ROOT, "docs/bench-config"))
    p.add_argument("--rates", default="100,200,400,600,800,1000")
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=64)
    args = p.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary}: build it first (cargo build --release -p orderflow) or give --binary")

    reports = []
    for rate in [int(r) for r in args.rates.split(",") if r]:
        print(f"offered {rate} orders/s for {args.seconds} s", file=sys.stderr)
        reports.append(run(args.binary, args.config_dir, rate, rate * args.seconds, args.concurrency))
    print("flat out", file=sys.stderr)
    flat = run(args.binary, args.config_dir, None, 5000, args.concurrency)
    reports.append(flat)
    with open(os.path.join(ROOT, "docs/bench-sweep.json"), "w") as f:
        json.dump(reports, f, indent=2)

    print(f"{'offered':>10} {'end to end':>12} {'create->PAID p99':>18}")
    for r in reports:
        offered = f"{r['offeredRate']:.0f}" if r["offeredRate"] else "flat out"
        print(f"{offered:>10} {r['endToEndRate']:>12.1f} {r['createToPaidMs']['p99']:>15.0f} ms")

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("matplotlib is missing (pip install matplotlib): the table above is the result")
    fixed = [r for r in reports if r["offeredRate"]]
    x = [r["offeredRate"] for r in fixed]
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax1.plot(x, [r["endToEndRate"] for r in fixed], "o-", color="tab:blue", label="end to end (orders/s)")
    ax1.axhline(flat["endToEndRate"], color="tab:blue", linestyle=":", label=f"flat out: {flat['endToEndRate']:.0f}/s")
    ax1.set_xlabel("offered load (orders/s)")
    ax1.set_ylabel("orders/s", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(x, [r["createToPaidMs"]["p99"] for r in fixed], "s--", color="tab:red", label="create -> PAID p99 (ms)")
    ax2.set_ylabel("p99 ms", color="tab:red")
    lines = ax1.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax1.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax1.legend(lines, labels, loc="upper left")
    ax1.set_title("orderflow, embedded binder + SQLite (fsync-durable), 2 cores")
    fig.tight_layout()
    fig.savefig(os.path.join(ROOT, "docs/bench-sweep.png"), dpi=110)
    print("wrote docs/bench-sweep.json and docs/bench-sweep.png", file=sys.stderr)


if __name__ == "__main__":
    main()
