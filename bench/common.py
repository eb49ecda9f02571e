"""Helpers shared by Laneway's benchmark scripts: start real processes on loopback, run wrk."""

import os
import pathlib
import re
import shutil
import socket
import subprocess
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIN = os.environ.get("LANEWAY_BIN", str(ROOT / "target" / "release" / "laneway"))
PROCS = []


def start(args, env=None, cwd=None):
    """Starts `laneway ARGS`; returns (process, address, seconds until it printed its address)."""
    t0 = time.perf_counter()
    p = subprocess.Popen([BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         env={**os.environ, **(env or {})}, cwd=cwd)
    PROCS.append(p)
    for line in p.stdout:
        if line.startswith("listening on http://"):
            ready = time.perf_counter() - t0
            return p, line.strip().removeprefix("listening on http://"), ready
    raise RuntimeError(f"laneway {args[0]} did not start")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(upstream):
    """nginx as a plain reverse proxy with upstream keep-alive: the floor for one extra hop."""
    tmp = tempfile.mkdtemp(prefix="laneway-nginx-")
    port = free_port()
    conf = f"""
worker_processes auto;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
user root;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  upstream mock {{ server {upstream}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""
    path = pathlib.Path(tmp) / "nginx.conf"
    path.write_text(conf)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    p = subprocess.Popen([nginx, "-p", tmp, "-c", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    PROCS.append(p)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return p, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("nginx did not start")


def stop_all():
    for p in PROCS:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def _ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url, connections, seconds, script=ROOT / "bench" / "post.lua"):
    """Runs wrk; returns requests/s, p50 ms, p99 ms and the non-2xx count."""
    threads = 1 if connections == 1 else 2
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict((p, _ms(v, u)) for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)$", out, re.M))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    nan = float("nan")  # no request finished (a peer too slow for the run): no percentiles
    return {"rps": rps, "p50": lat.get("50", nan), "p99": lat.get("99", nan),
            "non2xx": int(bad.group(1)) if bad else 0}


def rss_kb(pid, field="VmRSS"):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0
