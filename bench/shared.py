"""Shared limits through Redis: what the store adds per request, how many Redis calls a request
costs, and how far a shared limit overshoots with several replicas under load.

Usage: python3 bench/shared.py   (after `cargo build --release`; needs redis-server and wrk)
"""

import json
import pathlib
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request

from common import PROCS, ROOT, free_port, start, stop_all, wrk

KEY = ROOT / "bench" / "key.lua"


def redis():
    port = free_port()
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no"], stdout=subprocess.DEVNULL)
    PROCS.append(p)
    for _ in range(200):
        if cli(port, "PING") == "PONG":
            return port
        time.sleep(0.02)
    raise RuntimeError("redis-server did not start")


def cli(port, *args):
    r = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True)
    return r.stdout.strip()


def script_calls(port):
    """Round trips that ran a script (EVALSHA, and EVAL when a script was not cached yet)."""
    stats = cli(port, "INFO", "commandstats")
    return sum(int(n) for n in re.findall(r"cmdstat_eval(?:sha)?:calls=(\d+)", stats))


def gateway(tmp, name, mock, store, key_limits="", lane_limits="concurrency_limit = { max_concurrent_requests = 1000 }"):
    toml = f"""
[limits]
store = "{store}"
[[lane]]
name = "m"
url = "http://{mock}/v1"
{lane_limits}
[[route]]
model = "mock-*"
lanes = ["m"]
[[key]]
name = "bench"
key = "sk-bench"
{key_limits}
"""
    path = pathlib.Path(tmp) / f"{name}.toml"
    path.write_text(toml)
    _, addr, _ = start(["serve", "--config", str(path), "--listen", "127.0.0.1:0"], env={"RUST_LOG": "warn"})
    return addr


def latency(tmp, mock, port):
    print("== added latency: memory store vs Redis store (lane lease + rpm, key lease + rps)")
    limits = "concurrency_limit = { max_concurrent_requests = 1000 }\nrpm = 10000000"
    keyl = "concurrency_limit = { max_concurrent_requests = 1000 }\nrate_limit = { requests_per_second = 1000000, burst_size = 1000 }"
    mem = gateway(tmp, "mem", mock, "memory", keyl, limits)
    red = gateway(tmp, "red", mock, f"redis://127.0.0.1:{port}", keyl, limits)
    direct = f"http://{mock}/v1/chat/completions"
    rows = []
    for conns in (1, 64):
        best = {}
        for _ in range(2):  # interleaved rounds, medians of two would need three: keep the best
            for name, addr in (("direct", None), ("memory", mem), ("redis", red)):
                url = direct if addr is None else f"http://{addr}/v1/chat/completions"
                before = script_calls(port)
                r = wrk(url, conns, 5, KEY)
                calls = script_calls(port) - before
                r["calls_per_req"] = calls / max(1, r["rps"] * 5)
                if name not in best or r["p99"] < best[name]["p99"]:
                    best[name] = r
        for name in ("direct", "memory", "redis"):
            r = best[name]
            rows.append((conns, name, r))
            print(f"c={conns:<3} {name:<7} {r['rps']:>9.0f} req/s  p50 {r['p50']:.3f} ms  p99 {r['p99']:.3f} ms  "
                  f"non-2xx {r['non2xx']}  script calls/req {r['calls_per_req']:.2f}")
        print(f"c={conns:<3} redis adds {best['redis']['p99'] - best['memory']['p99']:+.3f} ms p99 over memory")
    return rows


def mock_get(mock, path):
    with urllib.request.urlopen(f"http://{mock}{path}", timeout=10) as r:
        return json.loads(r.read())


def mock_post(mock, path):
    req = urllib.request.Request(f"http://{mock}{path}", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def overshoot(tmp, mock, port, replicas, limit=50, seconds=10):
    cli(port, "FLUSHALL")
    store = f"redis://127.0.0.1:{port}"
    keyl = f"rate_limit = {{ requests_per_second = {limit}, burst_size = 1 }}"
    addrs = [gateway(tmp, f"r{replicas}-{i}", mock, store, keyl) for i in range(replicas)]
    time.sleep(1)
    results = [None] * replicas

    def load(i):
        results[i] = wrk(f"http://{addrs[i]}/v1/chat/completions", 16, seconds, KEY)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(replicas)]
    # What passed the shared limit is what reached the upstream: the mock counts it.
    mock_post(mock, "/mock/reset")
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    per_s = mock_get(mock, "/mock/stats")["requests"] / took
    refused = sum(r["non2xx"] for r in results)
    print(f"{replicas} replicas, shared {limit} rps, 16 connections each for {seconds} s: "
          f"{per_s:.1f} accepted/s upstream ({(per_s / limit - 1) * 100:+.1f}% of the limit), "
          f"{refused} refused with 429")
    return per_s


def main():
    for tool in ("redis-server", "wrk"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed (apt-get install {tool})")
    tmp = tempfile.mkdtemp(prefix="laneway-shared-")
    try:
        port = redis()
        _, mock, _ = start(["mock", "--listen", "127.0.0.1:0"])
        latency(tmp, mock, port)
        print("== overshoot of a shared key limit")
        for n in (2, 4):
            overshoot(tmp, mock, port, n)
    finally:
        stop_all()


if __name__ == "__main__":
    main()
