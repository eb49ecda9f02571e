"""Latency of a normal request while hostile connections are attached.

Starts the demo gateway (optionally under `ulimit -n N`), measures a normal chat completion over a
fresh connection (median of 50), then attaches SLOW connections that sent half a request head and
IDLE ones that sent nothing, and measures again. Prints both medians and the difference.

    python3 bench/hostile_clients.py [SLOW [IDLE [NOFILE]]]     # defaults: 500 2000 (no ulimit)
"""

import http.client
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

from common import BIN, PROCS, stop_all

SLOW = int(sys.argv[1]) if len(sys.argv) > 1 else 500
IDLE = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
NOFILE = int(sys.argv[3]) if len(sys.argv) > 3 else 0
BODY = json.dumps({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]})


def start_gateway():
    cmd = [BIN, "serve", "--listen", "127.0.0.1:0"]
    if NOFILE:
        cmd = ["bash", "-c", f'ulimit -n {NOFILE} && exec "$0" "$@"', *cmd]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         env={**os.environ, "RUST_LOG": "warn"})
    PROCS.append(p)
    for line in p.stdout:
        if line.startswith("listening on http://"):
            return line.strip().removeprefix("listening on http://")
    raise RuntimeError("the gateway did not start")


def one(host, port):
    t0 = time.perf_counter()
    c = http.client.HTTPConnection(host, port, timeout=30)
    c.request("POST", "/v1/chat/completions", BODY, {"Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    c.close()
    assert r.status == 200, r.status
    return (time.perf_counter() - t0) * 1000


def median_ms(host, port, n=50):
    return statistics.median(one(host, port) for _ in range(n))


def attach(host, port, idle, slow):
    held = []
    for i in range(idle + slow):
        try:
            s = socket.create_connection((host, port), timeout=5)
            if i >= idle:
                s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nx-slow: ")
            held.append(s)
        except OSError:
            pass
    return held


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, SLOW + IDLE + 256)), hard))
    addr = start_gateway()
    host, port = addr.split(":")
    port = int(port)
    try:
        usual = median_ms(host, port)
        held = attach(host, port, IDLE, SLOW)
        attacked = median_ms(host, port)
        limit = f"ulimit -n {NOFILE}" if NOFILE else "no ulimit"
        print(f"hostile clients ({limit}): {SLOW} slow-header + {IDLE} idle connections opened, "
              f"{len(held)} attached")
        print(f"normal request median: usual {usual:.2f} ms, under attack {attacked:.2f} ms, "
              f"difference {attacked - usual:+.2f} ms")
        for s in held:
            s.close()
    finally:
        stop_all()


if __name__ == "__main__":
    main()
