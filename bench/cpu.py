"""CPU per proxied request: Laneway side by side with nginx, in one run.

Starts `laneway mock --latency-ms 0`, nginx in front of it (as bench/overhead.sh does) and one
or two Laneway builds; loads each with `wrk -c CONNS` (bench/post.lua) and, while the load
runs, counts the proxy's CPU time with `perf stat -e task-clock` (nginx: its master and
workers). CPU per request is that time over the requests wrk completed in the same window.
Targets are interleaved round by round; the medians are printed.

Usage: python3 bench/cpu.py [SECONDS [ROUNDS [CONNS]]]   (after `cargo build --release`)
  LANEWAY_BIN   the build to measure (default target/release/laneway)
  LANEWAY_BIN_B a second build, measured in the same rounds (for a before/after)
"""

import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import common
from common import BIN, ROOT, start, start_nginx, stop_all

SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
CONNS = int(sys.argv[3]) if len(sys.argv) > 3 else 64
# CPU time, then what each request costs in wake-ups and system calls.
EVENTS = ",".join(["task-clock", "context-switches"] + [f"syscalls:sys_enter_{c}" for c in (
    "epoll_wait", "epoll_pwait", "writev", "write", "sendto", "recvfrom", "read", "futex")])


def pids_of(pid):
    """The process and its children (nginx's workers)."""
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [str(pid), *kids]


def ticks(pids):
    """User and system CPU time of the processes so far, in clock ticks (/proc/PID/stat)."""
    user = system = 0
    for pid in pids:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        user, system = user + int(fields[11]), system + int(fields[12])
    return user, system


def measure(addr, pids):
    """Requests per second, CPU µs per request, and the share of it spent in the kernel, over
    the middle of one wrk run."""
    out = {}

    def load():
        out["wrk"] = subprocess.run(
            ["wrk", f"-t{min(2, CONNS)}", f"-c{CONNS}", f"-d{SECONDS}s", "-s", str(ROOT / "bench" / "post.lua"),
             f"http://{addr}/v1/chat/completions"], capture_output=True, text=True, check=True).stdout

    t = threading.Thread(target=load)
    t.start()
    time.sleep(0.5)
    window = SECONDS - 1
    before = ticks(pids)
    perf = subprocess.run(["perf", "stat", "-x,", "-e", EVENTS, "-p", ",".join(pids), "--", "sleep",
                           str(window)], capture_output=True, text=True)
    after = ticks(pids)
    t.join()
    user, system = after[0] - before[0], after[1] - before[1]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out["wrk"]).group(1))
    counts = {}
    for line in perf.stderr.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[0].replace(".", "").isdigit():
            counts[parts[2]] = float(parts[0])
    cpu_ms = counts["task-clock"]
    done = rps * window
    per = {e.split(":")[-1].removeprefix("sys_enter_"): counts.get(e, 0) / done for e in EVENTS.split(",")[1:]}
    return rps, cpu_ms * 1000 / done, system / max(user + system, 1), per


def main():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="laneway-cpu-"))
    _, mock, _ = start(["mock", "--listen", "127.0.0.1:0", "--latency-ms", "0"])
    nginx_proc, nginx = start_nginx(mock)
    (tmp / "laneway.toml").write_text(
        f'[[lane]]\nname = "mock"\nurl = "http://{mock}/v1"\n\n[[route]]\nmodel = "mock-*"\nlanes = ["mock"]\n')
    targets = {"nginx": (nginx, pids_of(nginx_proc.pid))}
    builds = {"laneway": BIN}
    if os.environ.get("LANEWAY_BIN_B"):
        builds = {"laneway A": BIN, "laneway B": os.environ["LANEWAY_BIN_B"]}
    for name, binary in builds.items():
        p = subprocess.Popen([binary, "serve", "--config", str(tmp / "laneway.toml"), "--listen", "127.0.0.1:0"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env={**os.environ, "RUST_LOG": "warn"})
        common.PROCS.append(p)
        addr = next(line for line in p.stdout if line.startswith("listening on http://")).strip()
        targets[name] = (addr.removeprefix("listening on http://"), [str(p.pid)])
    for addr, pids in targets.values():
        measure(addr, pids)  # warm-up: connections, pools, caches
    runs = {}
    for _ in range(ROUNDS):
        for name, (addr, pids) in targets.items():
            runs.setdefault(name, []).append(measure(addr, pids))
    print(f"CPU per proxied request, wrk -c{CONNS}, median of {ROUNDS} rounds of {SECONDS}s "
          f"(perf stat -e task-clock over the middle {SECONDS - 1}s)")
    base = statistics.median(r[1] for r in runs["nginx"])
    for name, rs in runs.items():
        rps = statistics.median(r[0] for r in rs)
        cpu = statistics.median(r[1] for r in rs)
        kernel = statistics.median(r[2] for r in rs)
        each = ", ".join(f"{r[1]:.1f}" for r in rs)
        print(f"{name:10} {rps:>9.0f} req/s  {cpu:6.1f} µs CPU per request ({cpu / base:.2f}× nginx; "
              f"{kernel:.0%} in the kernel; rounds {each})")
        calls = {k: statistics.median(r[3][k] for r in rs) for k in rs[0][3]}
        print("           per request: " + ", ".join(f"{k} {v:.2f}" for k, v in calls.items() if v >= 0.01))


try:
    main()
finally:
    stop_all()
