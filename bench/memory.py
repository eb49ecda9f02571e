"""What waiting costs: 10,000 requests queued in the gateway, each on its own HTTP/1.1
connection (how clients wait), plus 1,000 streams running, against the gateway's RSS.

Two mocks: streams go to one that answers slowly (5 tokens per second, 2,000 tokens: each
stream runs for minutes) through an unlimited lane; the queued requests to one whose lane takes
one request at a time, the first of them held for ten minutes, so all the others wait.

Usage: python3 bench/memory.py [QUEUED [STREAMS]]   (after `cargo build --release`)
"""

import json
import pathlib
import resource
import socket
import sys
import tempfile
import time

from admission import get_json
from common import rss_kb, start, stop_all


def request(addr, model, stream):
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": 2000, "stream": stream})
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode()


def main():
    queued_n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    streams_n = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000
    need = queued_n + streams_n + 500
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < need:
        print(f"skipped: the open-file limit ({hard}) is below {need}")
        return
    # The gateway keeps a quarter of its descriptors for upstreams: give it all there are.
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    _, slow, _ = start(["mock", "--listen", "127.0.0.1:0", "--tokens-per-second", "5",
                        "--output-tokens", "2000"])
    _, held, _ = start(["mock", "--listen", "127.0.0.1:0", "--latency-ms", "600000"])
    tmp = tempfile.mkdtemp(prefix="laneway-mem-")
    path = pathlib.Path(tmp) / "memory.toml"
    path.write_text(f"""
[server]
admin_key = "bench"
max_connections = {need}

[[lane]]
name = "streams"
url = "http://{slow}/v1"

[[lane]]
name = "one"
url = "http://{held}/v1"
concurrency_limit = {{ max_concurrent_requests = 1 }}
queue = {{ max_len = {queued_n + 10}, timeout = "600s" }}

[[route]]
model = "stream-*"
lanes = ["streams"]

[[route]]
model = "mock-*"
lanes = ["one"]
""")
    proc, gw, _ = start(["serve", "--config", str(path), "--listen", "127.0.0.1:0"], env={"RUST_LOG": "warn"})
    time.sleep(0.3)
    idle = rss_kb(proc.pid)
    host, port = gw.split(":")
    socks = []
    stream_req = request(gw, "stream-1", True)
    for _ in range(streams_n):
        s = socket.create_connection((host, int(port)))
        s.sendall(stream_req)
        socks.append(s)
    # Every stream has sent its head and first chunk.
    for s in socks:
        s.settimeout(30)
        s.recv(4096)
    streaming = rss_kb(proc.pid)
    queue_req = request(gw, "mock-1", False)
    for _ in range(queued_n + 1):
        s = socket.create_connection((host, int(port)))
        s.sendall(queue_req)
        socks.append(s)
    deadline = time.time() + 120
    queued = 0
    while time.time() < deadline:
        queued = get_json(gw, "/admin/lanes/one", "bench")["queued"]
        if queued >= queued_n:
            break
        time.sleep(0.2)
    time.sleep(1)
    after = rss_kb(proc.pid)
    peak = rss_kb(proc.pid, "VmHWM")
    print(f"gateway RSS: idle {idle / 1024:.1f} MiB; {streams_n} streams running {streaming / 1024:.1f} MiB "
          f"({(streaming - idle) * 1024 / max(streams_n, 1):.0f} bytes each); plus {queued} queued on their own "
          f"connections {after / 1024:.1f} MiB ({(after - streaming) * 1024 / max(queued, 1):.0f} bytes each); "
          f"peak {peak / 1024:.1f} MiB; total {after / 1024 * 1.048576:.1f} MB")
    for s in socks:
        s.close()


try:
    main()
finally:
    stop_all()
