"""Admission benchmarks: scheduling efficiency, fairness between keys, memory of a deep queue.

Usage: python3 bench/admission.py   (after `cargo build --release`)
"""

import http.client
import json
import pathlib
import resource
import socket
import tempfile
import threading
import time

from common import rss_kb, start, stop_all

BODY = json.dumps({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16})


def post(addr, key=None, timeout=120):
    host, port = addr.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    c.request("POST", "/v1/chat/completions", BODY, headers)
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


def get_json(addr, path, admin=None):
    host, port = addr.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request("GET", path, headers={"Authorization": f"Bearer {admin}"} if admin else {})
    v = json.loads(c.getresponse().read())
    c.close()
    return v


def gateway(tmp, toml, name):
    path = pathlib.Path(tmp) / f"{name}.toml"
    path.write_text(toml)
    proc, addr, _ = start(["serve", "--config", str(path), "--listen", "127.0.0.1:0"], env={"RUST_LOG": "warn"})
    return proc, addr


def fire(n, fn):
    results = [None] * n
    def run(i):
        results[i] = fn(i)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def scheduling(tmp):
    _, mock, _ = start(["mock", "--listen", "127.0.0.1:0", "--max-concurrent", "8", "--latency-ms", "100"])
    _, gw = gateway(tmp, f"""
[[lane]]
name = "m"
url = "http://{mock}/v1"
concurrency_limit = {{ max_concurrent_requests = 8 }}
queue = {{ max_len = 1000, timeout = "60s" }}
[[route]]
model = "mock-*"
lanes = ["m"]
""", "sched")
    t0 = time.perf_counter()
    statuses = fire(400, lambda i: post(gw))
    makespan = time.perf_counter() - t0
    stats = get_json(mock, "/mock/stats")
    ideal = 400 / 8 * 0.100
    print(f"scheduling: 400 requests, lane capacity 8, upstream 100 ms: makespan {makespan:.2f} s, "
          f"ideal {ideal:.2f} s, ratio {makespan / ideal:.3f}; upstream 429s {stats['rejected_429']}, "
          f"max in flight {stats['max_in_flight']}, non-200 to clients {sum(s != 200 for s in statuses)}")


def fairness(tmp):
    _, mock, _ = start(["mock", "--listen", "127.0.0.1:0", "--latency-ms", "20"])
    keys = "".join(f'[[key]]\nname = "k{i}"\nkey = "sk-{i}"\non_limit = "queue"\n' for i in range(4))
    _, gw = gateway(tmp, f"""
[[lane]]
name = "m"
url = "http://{mock}/v1"
concurrency_limit = {{ max_concurrent_requests = 4 }}
queue = {{ max_len = 5000, timeout = "120s" }}
[[route]]
model = "mock-*"
lanes = ["m"]
{keys}""", "fair")
    done = []
    lock = threading.Lock()
    # Key k0 floods twice as hard as the others; fair queueing must still give equal shares.
    per_key = [200, 100, 100, 100]
    jobs = [k for k, n in enumerate(per_key) for _ in range(n)]
    def one(i):
        k = jobs[i]
        post(gw, f"sk-{k}")
        with lock:
            done.append(k)
    fire(len(jobs), one)
    window = done[: 4 * 100 - 40]  # while every key still has a backlog
    counts = [window.count(k) for k in range(4)]
    jain = sum(counts) ** 2 / (4 * sum(c * c for c in counts))
    print(f"fairness: 4 equal-weight keys (one sending 2x) on a lane of 4: served while contended {counts}, "
          f"Jain's index {jain:.3f}")


def deep_queue(tmp, n=10_000):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, n + 1000)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < n + 200:
        print(f"deep queue: skipped, the open-file limit ({hard}) is below {n + 200}")
        return
    _, mock, _ = start(["mock", "--listen", "127.0.0.1:0", "--latency-ms", "600000"])
    proc, gw = gateway(tmp, f"""
[server]
admin_key = "bench"
[[lane]]
name = "m"
url = "http://{mock}/v1"
concurrency_limit = {{ max_concurrent_requests = 1 }}
queue = {{ max_len = {n + 10}, timeout = "600s" }}
[[route]]
model = "mock-*"
lanes = ["m"]
""", "deep")
    time.sleep(0.3)
    before = rss_kb(proc.pid)
    host, port = gw.split(":")
    req = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {gw}\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(BODY)}\r\n\r\n{BODY}").encode()
    socks = []
    for _ in range(n + 1):
        s = socket.create_connection((host, int(port)))
        s.sendall(req)
        socks.append(s)
    deadline = time.time() + 60
    queued = 0
    while time.time() < deadline:
        queued = get_json(gw, "/admin/lanes", "bench")[0]["queued"]
        if queued >= n:
            break
        time.sleep(0.2)
    after = rss_kb(proc.pid)
    print(f"deep queue: {queued} requests queued (+1 running); gateway RSS {before / 1024:.1f} MiB -> "
          f"{after / 1024:.1f} MiB: {(after - before) / 1024:.1f} MiB for the queue "
          f"({(after - before) * 1024 / max(queued, 1):.0f} bytes per queued request, connection included)")
    for s in socks:
        s.close()


def main():
    tmp = tempfile.mkdtemp(prefix="laneway-adm-")
    scheduling(tmp)
    fairness(tmp)
    deep_queue(tmp)


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
