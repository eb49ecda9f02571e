#!/usr/bin/env bash
# Requests per second of the library against its in-process zero-latency mock, through a base URL
# and through in-process lanes, over several rounds: one run of the throughput example takes about
# a second, and on a shared 2-core machine one second can be twice as fast as the next, so a single
# run says little. Prints the median, the spread and how many rounds reached the target.
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
for _ in $(seq 1 "$ROUNDS"); do
  "$BIN" "$N" "$C" | sed -nE 's/^(base URL|in-process lanes)[^:]*: [0-9]+ requests, ([0-9]+) failed, ([0-9]+) requests\/s, CPU ([0-9.]+) .*\(([0-9.]+) on.*/\1|\3|\4|\5|\2/p'
done >"$out"

for target in "base URL" "in-process lanes"; do
  grep "^$target|" "$out" | cut -d'|' -f2- | tr '|' ' ' | sort -n |
    awk -v name="$target" -v goal="$TARGET" '
      { r[NR] = $1; cpu += $2; own += $3; failed += $4; if ($1 >= goal) k++ }
      END {
        if (NR == 0) { print name ": no rounds"; exit }
        median = (r[int((NR + 1) / 2)] + r[int(NR / 2) + 1]) / 2
        printf "%s: median %d requests/s (min %d, max %d) over %d rounds, >= %d in %d; CPU %.1f us per request (%.1f on the run'"'"'s thread)\n",
          name, median, r[1], r[NR], NR, goal, k, cpu / NR, own / NR
        if (failed > 0) printf "%s: %d requests FAILED: the figures above do not count\n", name, failed
      }'
done
