#!/usr/bin/env python3
# Baseline load against a running `orderflow up`: N orders (product 1002) over HTTP from C
# concurrent clients; reports the create rate and latency, and the time until no order is
# PENDING. Usage: scripts/load.py N C   (raise stock first: PUT /api/admin/stock/1002).
# Targets 127.0.0.1 only and stops by itself after N orders.
import json, sys, time, threading, urllib.request
from concurrent.futures import ThreadPoolExecutor
N, C = int(sys.argv[1]), int(sys.argv[2])
base = "http://127.0.0.1:8081"
def post(i):
    body = json.dumps({"userId": 1 + i % 50, "items": [{"productId": 1002, "quantity": 1}]}).encode()
    t0 = time.perf_counter()
    r = urllib.request.urlopen(urllib.request.Request(base + "/api/orders", body, {"content-type": "application/json"}))
    return json.load(r)["orderNo"], time.perf_counter() - t0
t0 = time.perf_counter()
with ThreadPoolExecutor(C) as ex:
    res = list(ex.map(post, range(N)))
created = time.perf_counter() - t0
while True:
    m = urllib.request.urlopen(base + "/metrics").read().decode()
    pend = [l for l in m.splitlines() if l.startswith('orderflow_orders{status="PENDING"}')]
    if pend and float(pend[0].split()[-1]) == 0: break
    time.sleep(0.01)
done = time.perf_counter() - t0
lat = sorted(r[1] for r in res)
print(f"{N} orders, {C} clients: created in {created:.2f}s ({N/created:.0f}/s), all terminal in {done:.2f}s ({N/done:.0f} orders/s end to end); create p50 {lat[N//2]*1000:.1f} ms p99 {lat[int(N*.99)]*1000:.1f} ms")
