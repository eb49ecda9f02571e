#!/usr/bin/env bash
# Instructions per request of the library's throughput example, counted by callgrind: a figure
# that does not move with the machine's load, for comparing two builds where requests per second
# swing by 2x from run to run. Each target runs at two sizes and the totals are differenced, so
# start-up and the building of the request list drop out.
# Usage: bench/instructions.sh [url|lanes ...]     (default: both)
#        BIN=path/to/throughput bench/instructions.sh lanes   (an older build, side by side)
# Counts are user-space instructions only; the kernel's share (the loopback sockets) is not in
# them. "run's thread" is the thread that drives the run; "others" are the runtime's workers,
# which here serve the in-process mock.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq valgrind
fi
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p laneway-batch --example throughput
  BIN=target/release/examples/throughput
fi
N1=${N1:-2000}
N2=${N2:-4000}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Prints "RUN_THREAD ALL" instruction totals for one run of N requests.
count() {
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out/cg.$1.$2" \
    "$BIN" "$2" 256 "$1" >/dev/null 2>&1
  local main all
  main=$(grep -h '^summary' "$out/cg.$1.$2-01" | awk '{print $2}')
  all=$(cat "$out"/cg."$1"."$2"-* | grep '^summary' | awk '{s += $2} END {print s}')
  echo "$main $all"
}

for mode in "${@:-url lanes}"; do
  for m in $mode; do
    read -r m1 a1 < <(count "$m" "$N1")
    read -r m2 a2 < <(count "$m" "$N2")
    d=$((N2 - N1))
    echo "$m: $(((a2 - a1) / d)) instructions per request," \
      "$(((m2 - m1) / d)) on the run's thread, $(((a2 - a1 - m2 + m1) / d)) on the others"
  done
done
