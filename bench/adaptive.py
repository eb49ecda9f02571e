"""Adaptive concurrency against the real mock with a hidden capacity: the matrix the paused-time
tests in crates/admission/tests/adaptive_matrix.rs simulate, measured end to end.

For each cell: a lane with `adaptive = true` and no configured limit in front of
`laneway mock --max-concurrent C --latency-ms L`; N requests at once (one client thread each)
or at a steady 90% of what the upstream can serve; makespan against the ideal, the share of
upstream calls refused. The change cells halve and then restore the capacity during the run
(POST /mock/config) and report how long the lane's limit took to follow (GET /admin/lanes).

Usage: python3 bench/adaptive.py [--quick | --slow] [--cap N] [--burst] [--changes] [--rounds K] [--requests N]
(after `cargo build --release`). --quick runs the 50 ms cells only, --slow the 500 ms ones only
(about twelve minutes); --cap one capacity only; --burst the 500-at-once cells only (no steady
or change cells); --changes the change cells only; --rounds repeats each cell, for the spread between runs; --requests sets the
requests per cell (500 by default).
"""

import json
import math
import pathlib
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from admission import get_json, post
from common import start, stop_all

ADMIN = "bench-admin"


def gateway(tmp, name, mock, lane="adaptive = true"):
    path = pathlib.Path(tmp) / f"{name}.toml"
    path.write_text(f"""
[server]
admin_key = "{ADMIN}"

[retry]
max_attempts = 10
budget = {{ ratio = 0.5, min_per_second = 20 }}

[[lane]]
name = "m"
url = "http://{mock}/v1"
{lane}
queue = {{ max_len = 5000, timeout = "600s" }}

[[route]]
model = "mock-*"
lanes = ["m"]
""")
    _, addr, _ = start(["serve", "--config", str(path), "--listen", "127.0.0.1:0"], env={"RUST_LOG": "warn"})
    return addr


def set_capacity(mock, c):
    req = urllib.request.Request(f"http://{mock}/mock/config", data=json.dumps({"max_concurrent": c}).encode(),
                                 headers={"content-type": "application/json"}, method="POST")
    urllib.request.urlopen(req, timeout=10).read()


def lane_limit(gw):
    return get_json(gw, "/admin/lanes/m", admin=ADMIN).get("limit")


def cell(tmp, cap, latency_ms, n, steady=False, changes=(), oracle=False):
    _, mock, _ = start(["mock", "--listen", "127.0.0.1:0", "--max-concurrent", str(cap),
                        "--latency-ms", str(latency_ms)])
    lane = f"concurrency_limit = {{ max_concurrent_requests = {cap} }}" if oracle else "adaptive = true"
    gw = gateway(tmp, f"c{cap}-{latency_ms}-{steady}-{len(changes)}-{oracle}", mock, lane)
    post(gw)  # one request so the first connection is open; not counted below
    base = get_json(mock, "/mock/stats")
    latency = latency_ms / 1000
    interval = latency / (0.9 * cap)
    reactions = []

    def watch(t0):
        old = cap
        for at, new in changes:
            time.sleep(max(0.0, t0 + at - time.perf_counter()))
            set_capacity(mock, new)
            changed = time.perf_counter()
            while True:
                limit = lane_limit(gw) or 10**9
                if (limit <= new) if new < old else (limit * 4 >= new * 3):
                    break
                time.sleep(0.02)
            reactions.append(time.perf_counter() - changed)
            old = new

    t0 = time.perf_counter()
    watcher = threading.Thread(target=watch, args=(t0,))
    watcher.start()
    with ThreadPoolExecutor(min(n, 600)) as pool:
        futures = []
        for i in range(n):
            if steady:
                time.sleep(max(0.0, t0 + i * interval - time.perf_counter()))
            futures.append(pool.submit(post, gw, None, 900))
        statuses = [f.result() for f in futures]
    makespan = time.perf_counter() - t0
    watcher.join()
    s = get_json(mock, "/mock/stats")
    calls = s["requests"] - base["requests"]
    refused = s["rejected_429"] - base["rejected_429"]
    if steady:
        ideal = (n - 1) * interval + latency
    elif changes:
        work, t, c = n * latency, 0.0, cap
        for at, new in changes:
            if work <= (at - t) * c:
                break
            work -= (at - t) * c
            t, c = at, new
        ideal = t + work / c
    else:
        ideal = math.ceil(n / cap) * latency
    label = f"{'known limit' if oracle else 'adaptive   '} capacity {cap:>2}, {latency_ms:>3} ms, {'steady' if steady else 'burst '} {n}"
    if changes:
        label += " " + " ".join(f"→{c} at {a}s" for a, c in changes)
    print(f"{label}: makespan {makespan:7.2f} s = {makespan / ideal:.2f}× ideal {ideal:.2f} s, "
          f"{refused} of {calls} upstream calls refused ({100 * refused / max(calls, 1):.2f}%), "
          f"client errors {sum(x != 200 for x in statuses)}"
          + (f", reactions {', '.join(f'{r:.2f} s' for r in reactions)}" if changes else ""), flush=True)


def option(name, default):
    if name in sys.argv:
        return int(sys.argv[sys.argv.index(name) + 1])
    return default


def main():
    quick, slow, burst = "--quick" in sys.argv, "--slow" in sys.argv, "--burst" in sys.argv
    caps = [option("--cap", 0)] if "--cap" in sys.argv else [1, 2, 4, 16, 64]
    rounds = option("--rounds", 1)
    n = option("--requests", 500)
    tmp = tempfile.mkdtemp(prefix="laneway-adaptive-")
    changes_only = "--changes" in sys.argv
    for latency in [] if changes_only else [50] if quick else [500] if slow else [50, 500]:
        for cap in caps:
            for steady in [False] if burst else [False, True]:
                for _ in range(rounds):
                    # The same load through a lane told the capacity: what this machine and
                    # load generator reach at best, measured in the same run.
                    cell(tmp, cap, latency, n, steady, oracle=True)
                    cell(tmp, cap, latency, n, steady)
    if burst or "--cap" in sys.argv:
        return
    if not slow:
        # Halved and restored at capacities 2, 4 and 16 (the paused-time matrix's change cells).
        cell(tmp, 2, 50, 600, changes=((4, 1), (8, 2)))
        cell(tmp, 4, 50, 1200, changes=((4, 2), (8, 4)))
        cell(tmp, 16, 50, 2400, changes=((3, 8), (6, 16)))
    if not quick:
        cell(tmp, 64, 500, 2000, changes=((6, 32), (12, 64)))


try:
    main()
finally:
    stop_all()
