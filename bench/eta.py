"""How good the ETA in `: queued position=N eta_ms=M` comments is: predicted against actual wait.

A lane of `slots` in front of a mock answering in `latency_ms`; first a warm-up so the lane has
measured its service time, then `n` streams at once. For each stream that waited, the first ETA it
heard is compared with the wait it really had (`queue_ms` in its `: lane=` comment).

    python3 bench/eta.py [n] [slots] [latency_ms]
"""

import concurrent.futures
import http.client
import json
import pathlib
import statistics
import sys
import tempfile

from common import start, PROCS


def stream(addr, i):
    host, port = addr.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=300)
    body = json.dumps({"model": "mock-1", "stream": True, "messages": [{"role": "user", "content": f"eta {i}"}]})
    c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    first_eta, waited = None, None
    for raw in r:
        line = raw.decode().strip()
        if line.startswith(": queued") and first_eta is None:
            first_eta = int(line.split("eta_ms=")[1])
        if line.startswith(": lane="):
            waited = int(line.split("queue_ms=")[1])
    return first_eta, waited


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    slots = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    latency = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    tmp = tempfile.mkdtemp(prefix="laneway-eta-")
    _, mock, _ = start(["mock", "--listen", "127.0.0.1:0", "--latency-ms", str(latency)])
    cfg = pathlib.Path(tmp) / "laneway.toml"
    cfg.write_text(f'[[lane]]\nname = "m"\nurl = "http://{mock}/v1"\n'
                   f'concurrency_limit = {{ max_concurrent_requests = {slots} }}\n'
                   f'queue = {{ max_len = 10000, timeout = "10m" }}\n'
                   '[[route]]\nmodel = "mock-*"\nlanes = ["m"]\n')
    _, gw, _ = start(["serve", "--config", str(cfg), "--listen", "127.0.0.1:0"])
    try:
        with concurrent.futures.ThreadPoolExecutor(slots) as pool:  # warm-up: no queue
            list(pool.map(lambda i: stream(gw, i), range(4 * slots)))
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            results = list(pool.map(lambda i: stream(gw, i), range(n)))
    finally:
        for p in PROCS:
            p.kill()
    pairs = [(eta, waited) for eta, waited in results if eta is not None and waited]
    errors = [abs(eta - waited) / waited for eta, waited in pairs if waited >= 100]
    print(f"{n} streams, {slots} slots, {latency} ms each: {len(pairs)} waited")
    if errors:
        within = sum(e <= 0.25 for e in errors) / len(errors)
        print(f"relative error of the first ETA: median {statistics.median(errors):.1%}, "
              f"p90 {sorted(errors)[int(0.9 * (len(errors) - 1))]:.1%}; within 25%: {within:.0%}")


if __name__ == "__main__":
    main()
