"""The Batch API under load: a 10,000-item batch at a shared rate limit, and what a running batch
does to interactive latency on the same lane.

Usage: python3 bench/batch.py [--items 10000]   (after `cargo build --release`)

1. Rate: a mock with `--rpm 6000` behind a lane with `rpm = 6000`; one batch of N items. Prints
   the items per minute between the first and the last answer (as a share of the limit), the
   mock's 429s and the gateway's RSS while the batch runs.
2. Interactive latency: a mock with 50 ms latency behind a lane with 4 slots; interactive
   requests from 4 clients, first alone, then while a large batch keeps every slot busy.
   Batch items wait below every interactive request, so an interactive request waits at most for
   one item to finish: the target is p99 within one item's service time (50 ms) of the p99 alone.
"""

import argparse
import http.client
import json
import pathlib
import statistics
import tempfile
import threading
import time
import urllib.request

from common import rss_kb, start, stop_all


def call(addr, method, path, body=None, content_type="application/json", key="sk-bench"):
    req = urllib.request.Request(f"http://{addr}{path}", data=body, method=method,
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def upload(addr, lines):
    boundary = "laneway-bench"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\r\n").encode()
    body += "".join(lines).encode() + f"\r\n--{boundary}--\r\n".encode()
    return call(addr, "POST", "/v1/files", body, f"multipart/form-data; boundary={boundary}")["id"]


def items(n, model="mock-1"):
    return [json.dumps({"custom_id": f"i{i}", "method": "POST", "url": "/v1/chat/completions",
                        "body": {"model": model, "max_tokens": 16,
                                 "messages": [{"role": "user", "content": f"item {i}"}]}}) + "\n"
            for i in range(n)]


def gateway(tmp, mock, lane):
    cfg = pathlib.Path(tmp) / "gw.toml"
    cfg.write_text(f"""
[storage]
path = "{tmp}/data"
[[lane]]
name = "m"
url = "http://{mock}/v1"
{lane}
[[route]]
model = "mock-*"
lanes = ["m"]
[[key]]
name = "bench"
key = "sk-bench"
""")
    return start(["serve", "--config", str(cfg), "--listen", "127.0.0.1:0"], cwd=tmp)


def mock_stats(mock):
    with urllib.request.urlopen(f"http://{mock}/mock/stats", timeout=10) as r:
        return json.loads(r.read())


def rate(n):
    with tempfile.TemporaryDirectory() as tmp:
        _, mock, _ = start(["mock", "--listen", "127.0.0.1:0", "--rpm", "6000"])
        gw, addr, _ = gateway(tmp, mock, "rpm = 6000")
        file = upload(addr, items(n))
        batch = call(addr, "POST", "/v1/batches", json.dumps(
            {"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"}).encode())
        t0 = time.perf_counter()
        rss = []
        after_bucket = None
        while True:
            b = call(addr, "GET", f"/v1/batches/{batch['id']}")
            done = b["request_counts"]["completed"] + b["request_counts"]["failed"]
            now = time.perf_counter()
            # The first minute's bucket is spent at once; the rate counts from there.
            if done >= 6000 and after_bucket is None:
                after_bucket = (now, done)
            rss.append((done, rss_kb(gw.pid)))
            if b["status"] in ("completed", "failed"):
                break
            time.sleep(0.25)
        took = now - t0
        ideal = max(0, n - 6000) / 100
        per_min = (n - after_bucket[1]) / (now - after_bucket[0]) * 60
        stats = mock_stats(mock)
        print(f"rate: {n} items in {took:.1f} s (ideal after the first full bucket: {ideal:.1f} s), "
              f"{per_min:.0f} items/min after the bucket = {per_min / 6000:.1%} of the limit of 6000; "
              f"status {b['status']}, failed {b['request_counts']['failed']}, upstream 429s {stats['rejected_429']}")
        marks = [rss[int(len(rss) * f)] for f in (0.1, 0.5, 0.9)] + [rss[-1]]
        print("  gateway RSS (items done: MiB): " + ", ".join(f"{d}: {kb / 1024:.1f}" for d, kb in marks)
              + f"; max {max(kb for _, kb in rss) / 1024:.1f} MiB")
        stop_all()


def interactive(addr, seconds):
    lat = []
    waits = []
    stop = time.perf_counter() + seconds

    def client():
        host, port = addr.split(":")
        c = http.client.HTTPConnection(host, int(port), timeout=60)
        body = json.dumps({"model": "mock-1", "messages": [{"role": "user", "content": "now"}]})
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            c.request("POST", "/v1/chat/completions", body,
                      {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"})
            r = c.getresponse()
            r.read()
            assert r.status == 200, r.status
            lat.append((time.perf_counter() - t0) * 1000)
            waits.append(int(r.getheader("x-laneway-queue-ms", "0")))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat.sort()
    waits.sort()
    return statistics.median(lat), lat[int(len(lat) * 0.99) - 1], len(lat), waits[int(len(waits) * 0.99) - 1]


def latency(seconds):
    with tempfile.TemporaryDirectory() as tmp:
        _, mock, _ = start(["mock", "--listen", "127.0.0.1:0", "--latency-ms", "50"])
        _, addr, _ = gateway(tmp, mock, "concurrency_limit = { max_concurrent_requests = 4 }")
        alone = interactive(addr, seconds)
        file = upload(addr, items(20000))
        batch = call(addr, "POST", "/v1/batches", json.dumps(
            {"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"}).encode())
        while call(addr, "GET", f"/v1/batches/{batch['id']}")["request_counts"]["completed"] < 20:
            time.sleep(0.1)
        during = interactive(addr, seconds)
        b = call(addr, "GET", f"/v1/batches/{batch['id']}")
        print(f"interactive latency, 4 clients, lane of 4 slots, upstream 50 ms ({seconds} s each):")
        print(f"  alone:          p50 {alone[0]:.1f} ms, p99 {alone[1]:.1f} ms, p99 wait for a slot "
              f"{alone[3]} ms ({alone[2]} requests)")
        print(f"  during a batch: p50 {during[0]:.1f} ms, p99 {during[1]:.1f} ms, p99 wait for a slot "
              f"{during[3]} ms ({during[2]} requests; the batch had {b['request_counts']['completed']} items done)")
        print(f"  added p99: {during[1] - alone[1]:.1f} ms (target: at most one item's service time, 50 ms)")
        stop_all()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=10000)
    ap.add_argument("--seconds", type=int, default=10)
    a = ap.parse_args()
    try:
        rate(a.items)
        latency(a.seconds)
    finally:
        stop_all()
