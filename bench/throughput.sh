#!/usr/bin/env bash
# Requests per second of the library against its in-process zero-latency mock, through a base URL
# and through in-process lanes, over several rounds: one run of the throughput example takes about
# a second, and on a shared 2-core machine one second can be twice as fast as the next, so a single
# run says little. Prints the median, the spread and how many rounds reached the target, and each
# target's ratio to a baseline measured in the same round: hyper's own client, same mock, same
# concurrency.
# Usage: bench/throughput.sh [rounds] [requests] [concurrency]     (default 10 20000 256)
#        BIN=path/to/throughput bench/throughput.sh                 (another build)
#        TARGET=20000 bench/throughput.sh                           (the figure counted as reached)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-10}
N=${2:-20000}
C=${3:-256}
TARGET=${TARGET:-20000}
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p laneway-batch --example throughput
  BIN=target/release/examples/throughput
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT

# Each line of the example reads "<target>: N requests, F failed, R requests/s, CPU ...".
for round in $(seq 1 "$ROUNDS"); do
  "$BIN" "$N" "$C" | sed -nE "s/^(baseline|base URL|in-process lanes)[^:]*: [0-9]+ requests, ([0-9]+) failed, ([0-9]+) requests\/s, CPU ([0-9.]+) .*\(([0-9.]+) on.*/$round|\1|\3|\4|\5|\2/p"
done >"$out"

# Per target: median, spread, rounds at the target; and the median of each round's ratio to the
# baseline of that same round, the figure that does not move with the machine's speed.
python3 - "$out" "$TARGET" <<'PY'
import statistics as st, sys
rows = [l.strip().split("|") for l in open(sys.argv[1]) if l.strip()]
goal = float(sys.argv[2])
by = {}
for rnd, name, rps, cpu, own, failed in rows:
    by.setdefault(name, {})[rnd] = (float(rps), float(cpu), float(own), int(failed))
base = by.get("baseline", {})
for name in ("baseline", "base URL", "in-process lanes"):
    runs = by.get(name)
    if not runs:
        print(f"{name}: no rounds")
        continue
    rps = sorted(r[0] for r in runs.values())
    line = (f"{name}: median {st.median(rps):.0f} requests/s (min {rps[0]:.0f}, max {rps[-1]:.0f}) "
            f"over {len(rps)} rounds, >= {goal:.0f} in {sum(r >= goal for r in rps)}; "
            f"CPU {st.mean(r[1] for r in runs.values()):.1f} us per request "
            f"({st.mean(r[2] for r in runs.values()):.1f} on the run's thread)")
    ratios = [runs[k][0] / base[k][0] for k in runs if k in base and name != "baseline"]
    if ratios:
        line += f"; {st.median(ratios):.2f}x the baseline (min {min(ratios):.2f}, max {max(ratios):.2f})"
    print(line)
    failed = sum(r[3] for r in runs.values())
    if failed:
        print(f"{name}: {failed} requests FAILED: the figures above do not count")
PY
