"""Resilience benchmarks: an upstream with a hidden capacity, and one with a per-minute limit.

Each compares Laneway with a naive setup measured in the same run: no limit, and retries without
a budget (what a client library's retry loop does).
Usage: python3 bench/resilience.py   (after `cargo build --release`)
"""

import json
import pathlib
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from admission import get_json, post
from common import start, stop_all

NAIVE = """
[retry]
max_attempts = 20
budget = { ratio = 10, min_per_second = 1000 }
backoff = { base = "10ms", max = "100ms" }
"""


def gateway(tmp, name, mock, lane_extra, extra=""):
    path = pathlib.Path(tmp) / f"{name}.toml"
    path.write_text(f"""{extra}
[[lane]]
name = "m"
url = "http://{mock}/v1"
queue = {{ max_len = 5000, timeout = "300s" }}
{lane_extra}
[[route]]
model = "mock-*"
lanes = ["m"]
""")
    _, addr, _ = start(["serve", "--config", str(path), "--listen", "127.0.0.1:0"], env={"RUST_LOG": "warn"})
    return addr


def run(addr, n, clients):
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        statuses = list(pool.map(lambda _: post(addr), range(n)))
    return time.perf_counter() - t0, statuses


def hidden_capacity(tmp):
    n, cap, latency = 600, 6, 0.1
    ideal = n / cap * latency
    for name, lane, extra in [("laneway (adaptive)", "adaptive = true", ""), ("naive", "", NAIVE)]:
        _, mock, _ = start(["mock", "--listen", "127.0.0.1:0", "--max-concurrent", str(cap),
                            "--latency-ms", str(int(latency * 1000))])
        gw = gateway(tmp, name.split()[0], mock, lane, extra)
        makespan, statuses = run(gw, n, 200)
        s = get_json(mock, "/mock/stats")
        print(f"hidden capacity {cap}, {n} requests, 200 clients: {name:18} makespan {makespan:6.2f} s "
              f"({makespan / ideal:.2f}x ideal {ideal:.1f} s), upstream 429s {s['rejected_429']} "
              f"({100 * s['rejected_429'] / s['requests']:.1f}% of {s['requests']} upstream requests), "
              f"client errors {sum(x != 200 for x in statuses)}")


def per_minute_limit(tmp):
    rpm, n = 1200, 1500
    rate = rpm / 60
    for name, lane, extra in [("laneway (rpm)", f"rpm = {rpm}", ""), ("naive", "", NAIVE)]:
        _, mock, _ = start(["mock", "--listen", "127.0.0.1:0", "--rpm", str(rpm), "--latency-ms", "20"])
        gw = gateway(tmp, name.split()[0] + "-rpm", mock, lane, extra)
        makespan, statuses = run(gw, n, 100)
        s = get_json(mock, "/mock/stats")
        # The first `rpm` requests fit the upstream's full bucket at once; the rest come at its rate.
        steady = (n - rpm) / max(makespan, 1e-9)
        print(f"upstream --rpm {rpm}, {n} requests: {name:14} makespan {makespan:6.2f} s, steady throughput "
              f"{steady:5.1f}/s = {100 * steady / rate:.0f}% of the limit ({rate:.0f}/s), upstream 429s "
              f"{s['rejected_429']} ({100 * s['rejected_429'] / s['requests']:.1f}% of {s['requests']}), "
              f"client errors {sum(x != 200 for x in statuses)}")


def main():
    tmp = tempfile.mkdtemp(prefix="laneway-res-")
    hidden_capacity(tmp)
    per_minute_limit(tmp)


try:
    main()
finally:
    stop_all()
