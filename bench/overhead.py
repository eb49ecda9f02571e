"""Overhead of one extra hop: direct to the mock, through nginx, through Laneway.

Everything runs on this machine in the same run, so the ratios are meaningful even where the
absolute numbers depend on the hardware.
"""

import http.client
import json
import statistics
import sys
import tempfile
import time
import pathlib

from common import BIN, rss_kb, start, start_nginx, stop_all, wrk

ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
SECONDS = int(ARGS[0]) if ARGS else 5
ROUNDS = int(ARGS[1]) if len(ARGS) > 1 else 3
LIMITS = "--limits" in sys.argv
# Onwards and LiteLLM beside nginx and Laneway (installed into bench/.cache on first use).
PEERS = "--peers" in sys.argv
# A client key configured and sent by every request (bench/key.lua, to every target alike).
KEY = "--key" in sys.argv
# The request log on: one line per request on stderr (discarded here, but formatted and written).
LOG = "--log" in sys.argv
SCRIPT = pathlib.Path(__file__).resolve().parent / ("key.lua" if KEY else "post.lua")


def first_chunk_ms(addr, n=200):
    """Median time from sending a streaming request to its first body bytes."""
    host, port = addr.split(":")
    conn = http.client.HTTPConnection(host, int(port))
    body = json.dumps({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        headers = {"Content-Type": "application/json"}
        if KEY:
            headers["Authorization"] = "Bearer sk-bench"
        conn.request("POST", "/v1/chat/completions", body, headers)
        r = conn.getresponse()
        r.read1(1)
        times.append((time.perf_counter() - t0) * 1000)
        r.read()
    conn.close()
    return statistics.median(times)


def main():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="laneway-bench-"))
    _, mock, _ = start(["mock", "--listen", "127.0.0.1:0", "--latency-ms", "0", "--tokens-per-second", "1000"])
    _, nginx = start_nginx(mock)
    limits = ""
    if LIMITS:
        # Limits configured but never hit: measures the cost of admission bookkeeping.
        limits = ("concurrency_limit = { max_concurrent_requests = 100000 }\n"
                  "rate_limit = { requests_per_second = 1000000, burst_size = 1000000 }\n"
                  "rpm = 100000000\ntpm = 100000000000\n")
    key = '[[key]]\nname = "bench"\nkey = "sk-bench"\n' if KEY else ""
    (tmp / "laneway.toml").write_text(
        f'[[lane]]\nname = "mock"\nurl = "http://{mock}/v1"\n{limits}\n[[route]]\nmodel = "mock-*"\nlanes = ["mock"]\n{key}')
    gw_proc, gw, ready_s = start(["serve", "--config", str(tmp / "laneway.toml"), "--listen", "127.0.0.1:0"],
                                 env={"RUST_LOG": "warn,laneway::request=info" if LOG else "warn"})
    time.sleep(0.5)
    idle_rss = rss_kb(gw_proc.pid)

    targets = {"direct": mock, "nginx": nginx, "laneway": gw}
    if PEERS:
        import peers
        for name in peers.install():
            targets[name] = getattr(peers, f"start_{name}")(mock, tmp)
    # Rounds interleave the targets so that a noisy moment on this shared machine hits all of
    # them alike; each figure is the median over the rounds.
    runs = {}
    for c in (1, 64):
        for name, addr in targets.items():
            wrk(f"http://{addr}/v1/chat/completions", c, 1, SCRIPT)  # warm-up: connections, pools, caches
        for _ in range(ROUNDS):
            for name, addr in targets.items():
                runs.setdefault((name, c), []).append(wrk(f"http://{addr}/v1/chat/completions", c, SECONDS, SCRIPT))
    results = {k: {f: statistics.median(r[f] for r in v) for f in ("rps", "p50", "p99", "non2xx")}
               for k, v in runs.items()}
    load_rss = rss_kb(gw_proc.pid, "VmHWM")
    ttfc = {name: first_chunk_ms(addr) for name, addr in targets.items()}

    print(f"laneway overhead benchmark: median of {ROUNDS} rounds of {SECONDS}s, limits configured: {LIMITS}, "
          f"key: {KEY}, request log: {LOG}")
    print(f"{'target':8} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>7}")
    for (name, c), r in results.items():
        print(f"{name:8} {c:>4} {r['rps']:>9.0f} {r['p50']:>8.3f} {r['p99']:>8.3f} {r['non2xx']:>7.0f}")
    for c in (1, 64):
        d, n, l = results[("direct", c)], results[("nginx", c)], results[("laneway", c)]
        add = {k: (results[(k, c)]["p50"] - d["p50"], results[(k, c)]["p99"] - d["p99"]) for k in ("nginx", "laneway")}
        print(f"c={c}: added p50/p99 ms  nginx {add['nginx'][0]:.3f}/{add['nginx'][1]:.3f}  "
              f"laneway {add['laneway'][0]:.3f}/{add['laneway'][1]:.3f}")
        ratio_p99 = add["laneway"][1] / add["nginx"][1] if add["nginx"][1] > 0 else float("nan")
        print(f"c={c}: laneway/nginx added p99 {ratio_p99:.2f}x  throughput {l['rps'] / n['rps']:.2f}x "
              f"(laneway {l['rps']:.0f} req/s, nginx {n['rps']:.0f}, direct {d['rps']:.0f})")
    print(f"streaming first chunk median ms: direct {ttfc['direct']:.3f}  nginx {ttfc['nginx']:.3f}  "
          f"laneway {ttfc['laneway']:.3f}  (laneway adds {ttfc['laneway'] - ttfc['direct']:.3f})")
    for peer in [t for t in targets if t not in ("direct", "nginx", "laneway")]:
        for c in (1, 64):
            p, l = results[(peer, c)], results[("laneway", c)]
            print(f"c={c}: laneway vs {peer}: throughput {l['rps'] / p['rps']:.2f}x "
                  f"(laneway {l['rps']:.0f} req/s, {peer} {p['rps']:.0f}), p99 {l['p99']:.3f} ms vs {p['p99']:.3f} ms")
    print(f"laneway RSS: idle {idle_rss / 1024:.1f} MiB, peak under load {load_rss / 1024:.1f} MiB; "
          f"start to ready {ready_s * 1000:.1f} ms")


try:
    main()
finally:
    stop_all()
